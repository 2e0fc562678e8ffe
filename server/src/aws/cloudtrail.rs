//! CloudTrail's `LookupEvents` over the tenant's `audit` table.

use arrow::array::{Array as _, AsArray as _};
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use watchtrail_query::cloudwatch::lit;

use super::Ctx;
use super::error::{AwsError, Kind};
use super::value::V;

/// The most events one answer holds (CloudTrail's limit).
pub const MAX_RESULTS: i64 = 50;
/// How far back a lookup without `StartTime` reaches (CloudTrail's event history).
pub const LOOKBACK_DAYS: i64 = 90;

fn invalid_attribute(message: impl Into<String>) -> AwsError {
    AwsError::coded(
        Kind::Invalid,
        400,
        "InvalidLookupAttributesException",
        message,
    )
}

/// `LookupEvents`: at most one lookup attribute, a time range (90 days back by default), newest
/// first, `MaxResults` up to 50 a page with `NextToken`; each event carries its record as the
/// `CloudTrailEvent` JSON string.
///
/// # Errors
/// A bad attribute, time range, page size or token, each with CloudTrail's exception.
pub async fn lookup_events(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let input = &ctx.input;
    let attrs = input.list("LookupAttributes")?;
    if attrs.len() > 1 {
        return Err(invalid_attribute(
            "LookupAttributes: only one attribute may be given",
        ));
    }
    let mut filters = Vec::new();
    for item in &attrs {
        let a = item.object()?;
        let key = a.req_str("AttributeKey")?;
        let value = a.req_str("AttributeValue")?;
        if value.is_empty() || value.len() > 2000 {
            return Err(invalid_attribute(format!(
                "{}.AttributeValue: 1 to 2000 characters",
                item.field
            )));
        }
        let v = lit(value);
        filters.push(match key {
            "EventId" => format!("eventid = {v}"),
            "EventName" => format!("eventname = {v}"),
            "EventSource" => format!("eventsource = {v}"),
            "Username" => format!("useridentity.username = {v}"),
            "AccessKeyId" => format!("useridentity.accesskeyid = {v}"),
            "ReadOnly" => match value {
                "true" | "false" => format!("readonly = {value}"),
                _ => {
                    return Err(invalid_attribute(format!(
                        "{}.AttributeValue: ReadOnly is true or false",
                        item.field
                    )));
                }
            },
            // Resources are a list of structures; their type and name are looked for in the
            // record's text as JSON strings.
            "ResourceType" | "ResourceName" => {
                let quoted = serde_json::Value::String(value.to_string()).to_string();
                format!("strpos(eventjson, {}) > 0", lit(&quoted))
            }
            other => {
                return Err(invalid_attribute(format!(
                    "{}.AttributeKey: `{other}` is not one of EventId, EventName, ReadOnly, \
                     Username, ResourceType, ResourceName, EventSource, AccessKeyId",
                    item.field
                )));
            }
        });
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let start = input
        .time_ms("StartTime")?
        .unwrap_or(now_ms - LOOKBACK_DAYS * 86_400_000);
    let end = input.time_ms("EndTime")?.unwrap_or(now_ms);
    if end < start {
        return Err(AwsError::coded(
            Kind::Invalid,
            400,
            "InvalidTimeRangeException",
            "EndTime: must not be before StartTime",
        ));
    }
    filters.push(format!("eventtime >= to_timestamp_millis({start})"));
    filters.push(format!("eventtime <= to_timestamp_millis({end})"));
    if let Some(c) = input.str("EventCategory")?
        && c != "insight"
    {
        return Err(AwsError::coded(
            Kind::Invalid,
            400,
            "InvalidEventCategoryException",
            format!("EventCategory: `{c}` is not insight"),
        ));
    }
    let max = match input.i64("MaxResults")? {
        None => MAX_RESULTS,
        Some(m) if (1..=MAX_RESULTS).contains(&m) => m,
        Some(m) => {
            return Err(AwsError::coded(
                Kind::Invalid,
                400,
                "InvalidMaxResultsException",
                format!("MaxResults: {m} is not from 1 to {MAX_RESULTS}"),
            ));
        }
    };
    let offset = match input.str("NextToken")? {
        None => 0,
        Some(t) => t
            .strip_prefix("wt1-")
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                AwsError::new(
                    Kind::BadToken,
                    format!("NextToken: `{t}` is not a token from a previous answer"),
                )
            })?,
    };
    let sql = format!(
        "SELECT eventid, eventname, readonly, useridentity.accesskeyid, eventtime, eventsource, \
         useridentity.username, eventjson FROM audit WHERE {} \
         ORDER BY eventtime DESC, eventid LIMIT {} OFFSET {offset}",
        filters.join(" AND "),
        max + 1
    );
    let batches = ctx.sql(&sql).await?;
    let bad = |e: arrow::error::ArrowError| AwsError::new(Kind::Internal, e.to_string());
    let mut events = Vec::new();
    for b in &batches {
        let text = |c: usize| arrow::compute::cast(b.column(c), &DataType::Utf8).map_err(bad);
        let (id, name, key, source, user, json) =
            (text(0)?, text(1)?, text(3)?, text(5)?, text(6)?, text(7)?);
        let time = arrow::compute::cast(b.column(4), &watchtrail_query::tables::timestamp_type())
            .map_err(bad)?;
        let time = time.as_primitive::<TimestampMicrosecondType>();
        let ro = b.column(2).as_boolean_opt();
        let s = |a: &arrow::array::ArrayRef, i: usize| {
            let a = a.as_string::<i32>();
            if a.is_null(i) {
                V::Null
            } else {
                V::Str(a.value(i).to_string())
            }
        };
        for i in 0..b.num_rows() {
            let record: serde_json::Value =
                serde_json::from_str(json.as_string::<i32>().value(i)).unwrap_or_default();
            let resources = record
                .get("resources")
                .and_then(|r| r.as_array())
                .map(|rs| {
                    V::List(
                        rs.iter()
                            .map(|r| {
                                V::object(vec![
                                    (
                                        "ResourceType",
                                        V::opt_str(r.get("type").and_then(|t| t.as_str())),
                                    ),
                                    (
                                        "ResourceName",
                                        V::opt_str(r.get("ARN").and_then(|t| t.as_str())),
                                    ),
                                ])
                            })
                            .collect(),
                    )
                })
                .unwrap_or(V::Null);
            events.push(V::object(vec![
                ("EventId", s(&id, i)),
                ("EventName", s(&name, i)),
                (
                    "ReadOnly",
                    ro.filter(|r| !r.is_null(i))
                        .map_or(V::Null, |r| V::Str(r.value(i).to_string())),
                ),
                ("AccessKeyId", s(&key, i)),
                (
                    "EventTime",
                    if time.is_null(i) {
                        V::Null
                    } else {
                        V::Time(time.value(i) as f64 / 1e6)
                    },
                ),
                ("EventSource", s(&source, i)),
                ("Username", s(&user, i)),
                ("Resources", resources),
                ("CloudTrailEvent", s(&json, i)),
            ]));
        }
    }
    let more = events.len() as i64 > max;
    events.truncate(max as usize);
    Ok(V::object(vec![
        ("Events", V::List(events)),
        (
            "NextToken",
            if more {
                V::Str(format!("wt1-{}", offset + max))
            } else {
                V::Null
            },
        ),
    ]))
}
