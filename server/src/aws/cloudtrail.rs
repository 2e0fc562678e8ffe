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
    let offset = super::page_offset(input, "NextToken")?;
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
        ("NextToken", super::next_token(more, offset + max as usize)),
    ]))
}

/// Tables a Lake query may name as they are; any other name after `FROM`/`JOIN` is an event
/// data store id (or ARN) and means the tenant's `audit` table.
const TABLES: &[&str] = &[
    "audit",
    "logs",
    "metrics",
    "alarm_history",
    "webhook_deliveries",
];

/// A CloudTrail Lake statement with its event data store ids replaced by `audit`.
pub fn lake_sql(statement: &str) -> String {
    let b = statement.as_bytes();
    let mut out = String::with_capacity(statement.len());
    let mut i = 0;
    let mut last_word = String::new();
    while i < b.len() {
        let c = b[i] as char;
        if c == '\'' {
            // A string literal, copied whole ('' is an escaped quote).
            let start = i;
            i += 1;
            while i < b.len() && !(b[i] == b'\'' && b.get(i + 1) != Some(&b'\'')) {
                i += if b[i] == b'\'' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
            out.push_str(&statement[start..i]);
            last_word.clear();
            continue;
        }
        if c.is_ascii_whitespace() {
            out.push(c);
            i += 1;
            continue;
        }
        let ident = |j: usize| {
            let ch = b[j];
            ch.is_ascii_alphanumeric() || matches!(ch, b'_' | b'-' | b':' | b'/' | b'$' | b'.')
        };
        let quoted = c == '"' || c == '`';
        if quoted || ident(i) {
            let start = i;
            if quoted {
                i += 1;
                while i < b.len() && b[i] != c as u8 {
                    i += 1;
                }
                i = (i + 1).min(b.len());
            } else {
                while i < b.len() && ident(i) {
                    i += 1;
                }
            }
            let token = &statement[start..i];
            let name = token.trim_matches(|ch| ch == '"' || ch == '`');
            let after_from =
                last_word.eq_ignore_ascii_case("from") || last_word.eq_ignore_ascii_case("join");
            if after_from && !TABLES.iter().any(|t| t.eq_ignore_ascii_case(name)) {
                out.push_str("audit");
            } else {
                out.push_str(token);
            }
            last_word = name.to_string();
            continue;
        }
        out.push(c);
        last_word.clear();
        i += c.len_utf8().max(1);
        // Multi-byte characters: copy the rest of the character.
        while i < b.len() && !statement.is_char_boundary(i) {
            i += 1;
        }
    }
    out
}

/// Lake query results kept for `GetQueryResults` (per server, for an hour, at most 100).
#[derive(Debug, Default)]
pub struct LakeQueries {
    queries: std::sync::Mutex<std::collections::VecDeque<LakeQuery>>,
}

#[derive(Debug, Clone)]
struct LakeQuery {
    id: String,
    tenant: String,
    statement: String,
    rows: Vec<V>,
    created_ms: i64,
    millis: i64,
}

const KEPT: usize = 100;
const KEPT_MS: i64 = 3_600_000;

impl LakeQueries {
    fn put(&self, q: LakeQuery) {
        if let Ok(mut all) = self.queries.lock() {
            all.retain(|o| q.created_ms - o.created_ms < KEPT_MS);
            while all.len() >= KEPT {
                all.pop_front();
            }
            all.push_back(q);
        }
    }

    fn get(&self, tenant: &str, id: &str) -> Option<LakeQuery> {
        self.queries
            .lock()
            .ok()?
            .iter()
            .find(|q| q.id == id && q.tenant == tenant)
            .cloned()
    }
}

/// The caller's kept query named by `QueryId`.
fn query_of(ctx: &Ctx<'_>) -> Result<LakeQuery, AwsError> {
    let id = ctx.input.req_str("QueryId")?;
    ctx.state
        .lake
        .get(&ctx.principal.tenant, id)
        .ok_or_else(|| not_found(id))
}

fn not_found(id: &str) -> AwsError {
    AwsError::coded(
        Kind::NotFound,
        400,
        "QueryIdNotFoundException",
        format!(
            "QueryId: no query `{id}` (results are kept for an hour on the server that ran it)"
        ),
    )
}

/// CloudTrail Lake `StartQuery`: the statement runs at once (event data store ids mean the
/// tenant's `audit` table) and its rows are kept for `GetQueryResults`.
///
/// # Errors
/// A statement that does not run (`InvalidQueryStatementException`).
pub async fn start_query(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let statement = ctx.input.req_str("QueryStatement")?;
    if ctx.input.has("DeliveryS3Uri") {
        return Err(AwsError::invalid(
            "DeliveryS3Uri",
            "results are not delivered to S3 here",
        ));
    }
    let started = std::time::Instant::now();
    let batches = ctx.sql(&lake_sql(statement)).await.map_err(|e| {
        if e.kind == Kind::Invalid {
            AwsError::coded(
                Kind::Invalid,
                400,
                "InvalidQueryStatementException",
                e.message,
            )
        } else {
            e
        }
    })?;
    let mut rows = Vec::new();
    for b in &batches {
        let schema = b.schema();
        for i in 0..b.num_rows() {
            let row = schema
                .fields()
                .iter()
                .zip(b.columns())
                .map(|(f, c)| {
                    let v = if c.is_null(i) {
                        V::Null
                    } else {
                        V::Str(
                            arrow::util::display::array_value_to_string(c, i).unwrap_or_default(),
                        )
                    };
                    V::Map(vec![(f.name().clone(), v)])
                })
                .collect();
            rows.push(V::List(row));
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    ctx.state.lake.put(LakeQuery {
        id: id.clone(),
        tenant: ctx.principal.tenant.clone(),
        statement: statement.to_string(),
        rows,
        created_ms: chrono::Utc::now().timestamp_millis(),
        millis: started.elapsed().as_millis() as i64,
    });
    Ok(V::object(vec![("QueryId", V::Str(id))]))
}

/// CloudTrail Lake `GetQueryResults`: a page of rows (`MaxQueryResults` up to 1,000).
///
/// # Errors
/// An unknown query id, a bad page size or token.
pub async fn get_query_results(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let q = query_of(ctx)?;
    let max = match ctx.input.i64("MaxQueryResults")? {
        None => 1000,
        Some(m) if (1..=1000).contains(&m) => m as usize,
        Some(m) => {
            return Err(AwsError::coded(
                Kind::Invalid,
                400,
                "InvalidMaxResultsException",
                format!("MaxQueryResults: {m} is not from 1 to 1000"),
            ));
        }
    };
    let offset = super::page_offset(&ctx.input, "NextToken")?;
    let total = q.rows.len();
    let page: Vec<V> = q.rows.into_iter().skip(offset).take(max).collect();
    let next = super::next_token(total > offset + max, offset + max);
    Ok(V::object(vec![
        ("QueryStatus", V::Str("FINISHED".into())),
        (
            "QueryStatistics",
            V::object(vec![
                ("ResultsCount", V::Int(page.len() as i64)),
                ("TotalResultsCount", V::Int(total as i64)),
            ]),
        ),
        ("QueryResultRows", V::List(page)),
        ("NextToken", next),
    ]))
}

/// CloudTrail Lake `DescribeQuery`.
///
/// # Errors
/// An unknown query id.
pub async fn describe_query(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let q = query_of(ctx)?;
    Ok(V::object(vec![
        ("QueryId", V::Str(q.id)),
        ("QueryString", V::Str(q.statement)),
        ("QueryStatus", V::Str("FINISHED".into())),
        (
            "QueryStatistics",
            V::object(vec![
                ("EventsMatched", V::Int(q.rows.len() as i64)),
                ("ExecutionTimeInMillis", V::Int(q.millis)),
                ("CreationTime", V::Time(q.created_ms as f64 / 1000.0)),
            ]),
        ),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_data_store_ids_become_the_audit_table() {
        assert_eq!(
            lake_sql(
                "SELECT eventName, count(*) FROM 0123abcd-0123-4567-89ab-0123456789ab WHERE eventTime > '2024-01-01' GROUP BY 1"
            ),
            "SELECT eventName, count(*) FROM audit WHERE eventTime > '2024-01-01' GROUP BY 1"
        );
        assert_eq!(
            lake_sql(
                "select * from \"arn:aws:cloudtrail:us-east-1:123:eventdatastore/abc\" e join EDS2 f on e.eventid = f.eventid"
            ),
            "select * from audit e join audit f on e.eventid = f.eventid"
        );
        // Our own tables, subqueries and strings mentioning FROM stay as they are.
        assert_eq!(
            lake_sql("SELECT 'from x' FROM (SELECT * FROM logs) WHERE a = 'it''s FROM y'"),
            "SELECT 'from x' FROM (SELECT * FROM logs) WHERE a = 'it''s FROM y'"
        );
        assert_eq!(lake_sql("SELECT 1 FROM metrics"), "SELECT 1 FROM metrics");
        assert_eq!(lake_sql("SELECT 'é' FROM x"), "SELECT 'é' FROM audit");
    }
}
