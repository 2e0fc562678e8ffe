//! CloudWatch Logs operations: `PutLogEvents`, `GetLogEvents`, `FilterLogEvents`.

use arrow::array::{Array as _, AsArray as _, RecordBatch};
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use watchtrail_proto::v1::{LogEvent, PutLogEventsRequest};
use watchtrail_query::cloudwatch::lit;
use watchtrail_query::pattern::FilterPattern;

use super::error::{AwsError, Kind};
use super::value::{Input, V};
use super::{Ctx, ingest_error};

/// Most events a `GetLogEvents` or `FilterLogEvents` answer holds (CloudWatch Logs' limit).
pub const MAX_EVENTS: i64 = 10_000;

/// `log_events[3].timestamp_ms` as CloudWatch Logs names it: `logEvents[3].timestamp`.
fn logs_field(field: &str) -> String {
    field
        .replace("log_events", "logEvents")
        .replace("timestamp_ms", "timestamp")
        .replace("log_group_name", "logGroupName")
        .replace("log_stream_name", "logStreamName")
}

fn group_name<'a>(input: &Input<'a>) -> Result<String, AwsError> {
    match (input.str("logGroupName")?, input.str("logGroupIdentifier")?) {
        (Some(n), _) => Ok(n.to_string()),
        // An ARN names the group after `log-group:`.
        (None, Some(id)) => Ok(id
            .split_once(":log-group:")
            .map_or(id, |(_, g)| g.trim_end_matches(":*"))
            .to_string()),
        (None, None) => Err(AwsError::missing("logGroupName")),
    }
}

/// `PutLogEvents`: in the WAL before the answer; events too old or too new are left out and
/// reported in `rejectedLogEventsInfo`, as CloudWatch Logs does.
///
/// # Errors
/// A rule of the batch broken (order, size, span), named.
pub async fn put_log_events(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let input = &ctx.input;
    let group = group_name(input)?;
    let stream = input.req_str("logStreamName")?.to_string();
    let items = input.list("logEvents")?;
    let mut events = Vec::with_capacity(items.len());
    for item in &items {
        let e = item.object()?;
        events.push(LogEvent {
            timestamp_ms: e
                .i64("timestamp")?
                .ok_or_else(|| AwsError::missing(format!("{}.timestamp", item.field)))?,
            message: e
                .str("message")?
                .ok_or_else(|| AwsError::missing(format!("{}.message", item.field)))?
                .to_string(),
        });
    }
    let req = PutLogEventsRequest {
        idempotency_id: format!("aws-{}", uuid::Uuid::new_v4()),
        log_group_name: group,
        log_stream_name: stream,
        log_events: events,
        origin: None,
    };
    let resp = ctx
        .state
        .ingest
        .put_logs(&ctx.principal.tenant, req)
        .await
        .map_err(|e| ingest_error(&e, logs_field))?;
    let mut too_old: Option<i64> = None;
    let mut too_new: Option<i64> = None;
    for r in &resp.rejected {
        let i = i64::from(r.index);
        if r.reason.contains("past") {
            too_old = Some(too_old.map_or(i, |o| o.max(i)));
        } else {
            too_new = Some(too_new.map_or(i, |n| n.min(i)));
        }
    }
    let rejected = if too_old.is_some() || too_new.is_some() {
        V::object(vec![
            ("tooOldLogEventEndIndex", too_old.map_or(V::Null, V::Int)),
            ("tooNewLogEventStartIndex", too_new.map_or(V::Null, V::Int)),
        ])
    } else {
        V::Null
    };
    Ok(V::object(vec![
        (
            "nextSequenceToken",
            V::Str(format!("{:056}", resp.accepted)),
        ),
        ("rejectedLogEventsInfo", rejected),
    ]))
}

fn limit_of(input: &Input<'_>) -> Result<i64, AwsError> {
    match input.i64("limit")? {
        None => Ok(MAX_EVENTS),
        Some(l) if (1..=MAX_EVENTS).contains(&l) => Ok(l),
        Some(l) => Err(AwsError::invalid(
            "limit",
            format!("{l} is not from 1 to {MAX_EVENTS}"),
        )),
    }
}

fn time_filters(input: &Input<'_>) -> Result<Vec<String>, AwsError> {
    let mut out = Vec::new();
    if let Some(s) = input.i64("startTime")? {
        out.push(format!("time >= to_timestamp_millis({s})"));
    }
    if let Some(e) = input.i64("endTime")? {
        out.push(format!("time < to_timestamp_millis({e})"));
    }
    Ok(out)
}

/// One event row of an answer.
struct Row {
    stream: String,
    time_ms: i64,
    ingest_ms: i64,
    message: String,
}

fn rows(batches: &[RecordBatch]) -> Result<Vec<Row>, AwsError> {
    let bad = |e: arrow::error::ArrowError| AwsError::new(Kind::Internal, e.to_string());
    let ts = watchtrail_query::tables::timestamp_type();
    let mut out = Vec::new();
    for b in batches {
        let stream = arrow::compute::cast(b.column(0), &DataType::Utf8).map_err(bad)?;
        let time = arrow::compute::cast(b.column(1), &ts).map_err(bad)?;
        let ingest = arrow::compute::cast(b.column(2), &ts).map_err(bad)?;
        let message = arrow::compute::cast(b.column(3), &DataType::Utf8).map_err(bad)?;
        let (stream, time, ingest, message) = (
            stream.as_string::<i32>(),
            time.as_primitive::<TimestampMicrosecondType>(),
            ingest.as_primitive::<TimestampMicrosecondType>(),
            message.as_string::<i32>(),
        );
        for i in 0..b.num_rows() {
            out.push(Row {
                stream: stream.value(i).to_string(),
                time_ms: time.value(i) / 1000,
                ingest_ms: if ingest.is_null(i) {
                    0
                } else {
                    ingest.value(i) / 1000
                },
                message: message.value(i).to_string(),
            });
        }
    }
    Ok(out)
}

fn count_of(batches: &[RecordBatch]) -> i64 {
    batches
        .first()
        .and_then(|b| arrow::compute::cast(b.column(0), &DataType::Int64).ok())
        .map_or(0, |c| {
            c.as_primitive::<arrow::datatypes::Int64Type>().value(0)
        })
}

const ORDER: &str = "ORDER BY time, ingest_time, message";

/// `GetLogEvents`: one stream's events in time order, newest page first unless
/// `startFromHead`, with forward and backward tokens (`f/<position>`, `b/<position>`).
///
/// # Errors
/// A missing stream name, a bad token or limit.
pub async fn get_log_events(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let input = &ctx.input;
    let group = group_name(input)?;
    let stream = input.req_str("logStreamName")?;
    let limit = limit_of(input)?;
    let mut filters = vec![
        format!("log_group = {}", lit(&group)),
        format!("log_stream = {}", lit(stream)),
    ];
    filters.extend(time_filters(input)?);
    let filter = filters.join(" AND ");
    let token = input.str("nextToken")?;
    let parse = |t: &str, p: &str| {
        t.strip_prefix(p)
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                AwsError::invalid(
                    "nextToken",
                    format!("`{t}` is not a token from a previous answer"),
                )
            })
    };
    // The window [start, end) of positions this page covers.
    let (start, end) = match token {
        Some(t) if t.starts_with("f/") => {
            let s = parse(t, "f/")?;
            (s, s + limit)
        }
        Some(t) if t.starts_with("b/") => {
            let e = parse(t, "b/")?;
            ((e - limit).max(0), e)
        }
        Some(t) => {
            return Err(AwsError::invalid(
                "nextToken",
                format!("`{t}` is not a token from a previous answer"),
            ));
        }
        None if input.bool("startFromHead")?.unwrap_or(false) => (0, limit),
        None => {
            let total = count_of(
                &ctx.sql(&format!("SELECT count(*) FROM logs WHERE {filter}"))
                    .await?,
            );
            ((total - limit).max(0), total)
        }
    };
    let got = rows(
        &ctx.sql(&format!(
            "SELECT log_stream, time, ingest_time, message FROM logs WHERE {filter} {ORDER} \
             LIMIT {} OFFSET {start}",
            end - start
        ))
        .await?,
    )?;
    let last = start + got.len() as i64;
    let events = got
        .into_iter()
        .map(|r| {
            V::object(vec![
                ("timestamp", V::Int(r.time_ms)),
                ("message", V::Str(r.message)),
                ("ingestionTime", V::Int(r.ingest_ms)),
            ])
        })
        .collect();
    Ok(V::object(vec![
        ("events", V::List(events)),
        ("nextForwardToken", V::Str(format!("f/{last}"))),
        ("nextBackwardToken", V::Str(format!("b/{start}"))),
    ]))
}

/// `FilterLogEvents`: events of a group (some streams, or streams by prefix) that match a
/// filter pattern, in time order, paged by `nextToken`.
///
/// # Errors
/// A bad pattern (its position named), token or limit.
pub async fn filter_log_events(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let input = &ctx.input;
    let group = group_name(input)?;
    let limit = limit_of(input)?;
    let mut filters = vec![format!("log_group = {}", lit(&group))];
    filters.extend(time_filters(input)?);
    let streams = input.str_list("logStreamNames")?;
    let prefix = input.str("logStreamNamePrefix")?;
    if !streams.is_empty() && prefix.is_some() {
        return Err(AwsError::invalid(
            "logStreamNamePrefix",
            "give logStreamNames or logStreamNamePrefix, not both",
        ));
    }
    if streams.len() > 100 {
        return Err(AwsError::invalid("logStreamNames", "at most 100 streams"));
    }
    if !streams.is_empty() {
        filters.push(format!(
            "log_stream IN ({})",
            streams
                .iter()
                .map(|s| lit(s))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(p) = prefix {
        filters.push(format!("starts_with(log_stream, {})", lit(p)));
    }
    if let Some(p) = input.str("filterPattern")?.filter(|p| !p.trim().is_empty()) {
        FilterPattern::parse(p).map_err(|e| AwsError::invalid("filterPattern", e))?;
        filters.push(format!("filter_pattern_match({}, message)", lit(p)));
    }
    let offset = super::page_offset(input, "nextToken")?;
    let mut got = rows(
        &ctx.sql(&format!(
            "SELECT log_stream, time, ingest_time, message FROM logs WHERE {} \
             ORDER BY time, log_stream, ingest_time, message LIMIT {} OFFSET {offset}",
            filters.join(" AND "),
            limit + 1
        ))
        .await?,
    )?;
    let more = got.len() as i64 > limit;
    got.truncate(limit as usize);
    let events = got
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            V::object(vec![
                ("logStreamName", V::Str(r.stream)),
                ("timestamp", V::Int(r.time_ms)),
                ("message", V::Str(r.message)),
                ("ingestionTime", V::Int(r.ingest_ms)),
                (
                    "eventId",
                    V::Str(format!("{:020}{:016}", r.time_ms, offset + i)),
                ),
            ])
        })
        .collect();
    Ok(V::object(vec![
        ("events", V::List(events)),
        (
            "nextToken",
            super::next_token(more, offset + limit as usize),
        ),
    ]))
}

/// Most groups, streams or filters one answer holds (CloudWatch Logs' limit).
const MAX_PAGE: i64 = 50;

fn page_of(input: &Input<'_>) -> Result<(usize, usize), AwsError> {
    let limit = match input.i64("limit")? {
        None => MAX_PAGE,
        Some(l) if (1..=MAX_PAGE).contains(&l) => l,
        Some(l) => {
            return Err(AwsError::invalid(
                "limit",
                format!("{l} is not from 1 to {MAX_PAGE}"),
            ));
        }
    };
    let offset = super::page_offset(input, "nextToken")?;
    Ok((offset, limit as usize))
}

fn paged(key: &str, items: Vec<V>, offset: usize, limit: usize) -> V {
    let more = items.len() > offset + limit;
    let page: Vec<V> = items.into_iter().skip(offset).take(limit).collect();
    V::object(vec![
        (key, V::List(page)),
        ("nextToken", super::next_token(more, offset + limit)),
    ])
}

fn server_error(e: &crate::error::Error) -> AwsError {
    ingest_error(e, str::to_string)
}

fn group_arn(ctx: &Ctx<'_>, group: &str) -> String {
    format!(
        "arn:aws:logs:{}:{}:log-group:{group}",
        ctx.state.region, ctx.principal.tenant
    )
}

/// `CreateLogGroup`.
///
/// # Errors
/// A bad name; a group that exists.
pub async fn create_log_group(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let name = ctx.input.req_str("logGroupName")?;
    let created = crate::log_groups::create(
        &ctx.state.control,
        &ctx.state.engine,
        &ctx.principal.tenant,
        name,
        chrono::Utc::now().timestamp_millis(),
    )
    .await
    .map_err(|e| server_error(&e))?;
    if !created {
        return Err(AwsError::new(
            Kind::Exists,
            format!("The specified log group already exists: {name}"),
        ));
    }
    Ok(V::Struct(Vec::new()))
}

/// `CreateLogStream`: streams exist by their events, so this checks the names only.
///
/// # Errors
/// A bad name.
pub async fn create_log_stream(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let group = group_name(&ctx.input)?;
    let stream = ctx.input.req_str("logStreamName")?;
    crate::ingest::validate::check_log_group("logGroupName", &group)
        .and_then(|()| crate::ingest::validate::check_log_stream("logStreamName", stream))
        .map_err(|e| server_error(&e.into()))?;
    Ok(V::Struct(Vec::new()))
}

/// `DescribeLogGroups`.
///
/// # Errors
/// A bad page size or token.
pub async fn describe_log_groups(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let input = &ctx.input;
    let prefix = input.str("logGroupNamePrefix")?.unwrap_or("");
    let (offset, limit) = page_of(input)?;
    let filters = ctx.filters().await?;
    let groups = {
        let _slot = ctx.slot().await?;
        crate::log_groups::describe(
            &ctx.state.control,
            &ctx.state.engine,
            &ctx.principal.tenant,
            prefix,
        )
        .await
        .map_err(|e| server_error(&e))?
    };
    let items = groups
        .into_iter()
        .map(|g| {
            let arn = group_arn(ctx, &g.name);
            let count = filters
                .iter()
                .filter(|f| f.log_group_name == g.name)
                .count();
            V::object(vec![
                ("logGroupName", V::Str(g.name)),
                ("creationTime", g.creation_time_ms.map_or(V::Null, V::Int)),
                (
                    "retentionInDays",
                    g.retention_in_days
                        .map_or(V::Null, |d| V::Int(i64::from(d))),
                ),
                ("metricFilterCount", V::Int(count as i64)),
                ("arn", V::Str(format!("{arn}:*"))),
                ("logGroupArn", V::Str(arn)),
                ("storedBytes", V::Null),
            ])
        })
        .collect();
    Ok(paged("logGroups", items, offset, limit))
}

/// `DescribeLogStreams`: the streams of a group from its events.
///
/// # Errors
/// A missing group name, a bad order, page size or token.
pub async fn describe_log_streams(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let input = &ctx.input;
    let group = group_name(input)?;
    let (offset, limit) = page_of(input)?;
    let by_time = match input.str("orderBy")? {
        None | Some("LogStreamName") => false,
        Some("LastEventTime") => true,
        Some(o) => {
            return Err(AwsError::invalid(
                "orderBy",
                format!("`{o}` is not LogStreamName or LastEventTime"),
            ));
        }
    };
    let prefix = input.str("logStreamNamePrefix")?;
    if by_time && prefix.is_some() {
        return Err(AwsError::invalid(
            "logStreamNamePrefix",
            "cannot be given with orderBy LastEventTime",
        ));
    }
    let desc = if input.bool("descending")?.unwrap_or(false) {
        "DESC"
    } else {
        "ASC"
    };
    let mut filters = vec![format!("log_group = {}", lit(&group))];
    if let Some(p) = prefix {
        filters.push(format!("starts_with(log_stream, {})", lit(p)));
    }
    let order = if by_time { "last_us" } else { "log_stream" };
    let batches = ctx
        .sql(&format!(
            "SELECT log_stream, CAST(min(time) AS BIGINT) AS first_us, \
             CAST(max(time) AS BIGINT) AS last_us, CAST(max(ingest_time) AS BIGINT) AS ingest_us \
             FROM logs WHERE {} GROUP BY log_stream ORDER BY {order} {desc}, log_stream \
             LIMIT {} OFFSET {offset}",
            filters.join(" AND "),
            limit + 1
        ))
        .await?;
    let mut items = Vec::new();
    for b in &batches {
        let name = arrow::compute::cast(b.column(0), &DataType::Utf8)
            .map_err(|e| AwsError::new(Kind::Internal, e.to_string()))?;
        let name = name.as_string::<i32>();
        let int = |c: usize| {
            b.column(c)
                .as_primitive_opt::<arrow::datatypes::Int64Type>()
        };
        let (Some(first), Some(last), Some(ingest)) = (int(1), int(2), int(3)) else {
            return Err(AwsError::new(Kind::Internal, "unexpected stream columns"));
        };
        for i in 0..b.num_rows() {
            let ms = |a: &arrow::array::Int64Array| {
                if a.is_null(i) {
                    V::Null
                } else {
                    V::Int(a.value(i) / 1000)
                }
            };
            items.push(V::object(vec![
                ("logStreamName", V::Str(name.value(i).to_string())),
                ("creationTime", ms(first)),
                ("firstEventTimestamp", ms(first)),
                ("lastEventTimestamp", ms(last)),
                ("lastIngestionTime", ms(ingest)),
                (
                    "arn",
                    V::Str(format!(
                        "{}:log-stream:{}",
                        group_arn(ctx, &group),
                        name.value(i)
                    )),
                ),
            ]));
        }
    }
    // The SQL already skipped `offset` rows.
    let more = items.len() > limit;
    items.truncate(limit);
    Ok(V::object(vec![
        ("logStreams", V::List(items)),
        ("nextToken", super::next_token(more, offset + limit)),
    ]))
}

/// `PutRetentionPolicy`.
///
/// # Errors
/// A bad group name or number of days.
pub async fn put_retention_policy(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let group = group_name(&ctx.input)?;
    crate::ingest::validate::check_log_group("logGroupName", &group)
        .map_err(|e| server_error(&e.into()))?;
    let days = ctx
        .input
        .i64("retentionInDays")?
        .ok_or_else(|| AwsError::missing("retentionInDays"))?;
    let days = crate::log_groups::check_retention(days).map_err(|e| server_error(&e))?;
    let policy = crate::lifecycle::RetentionPolicy {
        log_group_name: group.clone(),
        retention_in_days: days,
    };
    ctx.state
        .control
        .put(
            &ctx.principal.tenant,
            watchtrail_storage::control::Doc::LogRetention,
            &group,
            &policy,
        )
        .await
        .map_err(|e| server_error(&e.into()))?;
    Ok(V::Struct(Vec::new()))
}

/// `DeleteRetentionPolicy`.
///
/// # Errors
/// A group without a policy of its own.
pub async fn delete_retention_policy(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let group = group_name(&ctx.input)?;
    let deleted = ctx
        .state
        .control
        .delete(
            &ctx.principal.tenant,
            watchtrail_storage::control::Doc::LogRetention,
            &group,
        )
        .await
        .map_err(|e| server_error(&e.into()))?;
    if !deleted {
        return Err(AwsError::new(
            Kind::NotFound,
            format!("log group `{group}` has no retention policy"),
        ));
    }
    Ok(V::Struct(Vec::new()))
}

/// `PutMetricFilter`: the same definition and limits as `/v1/metric-filters`.
///
/// # Errors
/// A definition CloudWatch Logs would refuse, named.
pub async fn put_metric_filter(ctx: &Ctx<'_>, input: &V) -> Result<V, AwsError> {
    let f = watchtrail_query::alarm::MetricFilter::from_value(input.to_json())
        .map_err(|e| AwsError::invalid(&e.field, &e.reason))?;
    ctx.state
        .alarms
        .put_filter(&ctx.principal.tenant, &f)
        .await
        .map_err(super::alarms::api_error)?;
    Ok(V::Struct(Vec::new()))
}

/// `DescribeMetricFilters`.
///
/// # Errors
/// A bad page size or token.
pub async fn describe_metric_filters(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let input = &ctx.input;
    let (offset, limit) = page_of(input)?;
    let group = input.str("logGroupName")?;
    let prefix = input.str("filterNamePrefix")?.unwrap_or("");
    let metric = input.str("metricName")?;
    let namespace = input.str("metricNamespace")?;
    let all = ctx.filters().await?;
    let items = all
        .iter()
        .filter(|f| group.is_none_or(|g| f.log_group_name == g))
        .filter(|f| f.filter_name.starts_with(prefix))
        .filter(|f| {
            f.metric_transformations.iter().any(|t| {
                metric.is_none_or(|m| t.metric_name == m)
                    && namespace.is_none_or(|n| t.metric_namespace == n)
            })
        })
        .map(|f| super::alarms::answer_value(&serde_json::to_value(f).unwrap_or_default(), ""))
        .collect();
    Ok(paged("metricFilters", items, offset, limit))
}

/// `DeleteMetricFilter`.
///
/// # Errors
/// An unknown filter.
pub async fn delete_metric_filter(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let group = group_name(&ctx.input)?;
    let name = ctx.input.req_str("filterName")?;
    let all = ctx.filters().await?;
    if !all
        .iter()
        .any(|f| f.filter_name == name && f.log_group_name == group)
    {
        return Err(AwsError::new(
            Kind::NotFound,
            format!("The specified metric filter `{name}` of `{group}` does not exist."),
        ));
    }
    ctx.state
        .alarms
        .delete_filter(&ctx.principal.tenant, name)
        .await
        .map_err(super::alarms::api_error)?;
    Ok(V::Struct(Vec::new()))
}

/// `TestMetricFilter`: which of up to 50 messages a pattern matches.
///
/// # Errors
/// A bad pattern (its position named), too many messages.
pub async fn test_metric_filter(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let input = &ctx.input;
    let pattern = input.req_str("filterPattern")?;
    let p = FilterPattern::parse(pattern).map_err(|e| AwsError::invalid("filterPattern", e))?;
    let messages = input.str_list("logEventMessages")?;
    if messages.is_empty() || messages.len() > 50 {
        return Err(AwsError::invalid("logEventMessages", "1 to 50 messages"));
    }
    let matches = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| p.matches(m))
        .map(|(i, m)| {
            V::object(vec![
                ("eventNumber", V::Int(i as i64 + 1)),
                ("eventMessage", V::Str((*m).to_string())),
                ("extractedValues", V::Map(Vec::new())),
            ])
        })
        .collect();
    Ok(V::object(vec![("matches", V::List(matches))]))
}
