//! CloudTrail event JSON → rows shaped like the `audit` table.
//!
//! The `audit` schema drives the projection: each schema field is looked up in the event by a
//! case-insensitive key match (`userIdentity` → `useridentity`, `ARN` → `arn`), scalars become
//! strings where the schema says string, and nested JSON the schema keeps as text
//! (`requestParameters`, ...) is serialised back to JSON text. The projected rows then always
//! decode into the schema, so one odd record can never fail a batch at flush time.
//!
//! Needs no SQL engine: the fuzz targets build it alone (`default-features = false`).

use arrow_schema::{DataType, Field};
use serde_json::{Map, Value};

use crate::tables::TableKind;

/// Why an event was refused: the JSON path inside the record and the reason.
pub type ParseError = crate::FieldError;

/// A parsed event: its projected row and its identity.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// `eventID`.
    pub event_id: String,
    /// `eventTime` in microseconds since the epoch.
    pub event_time_us: i64,
    /// The row, shaped like the `audit` schema.
    pub row: Value,
}

fn err(field: &str, reason: impl Into<String>) -> ParseError {
    ParseError::new(field, reason)
}

/// Parses and checks one CloudTrail event.
///
/// # Errors
/// Malformed JSON (with line and column), a non-object, a missing or malformed `eventTime` or
/// `eventID`.
pub fn parse_event(json: &str) -> Result<AuditEvent, ParseError> {
    let value: Value = serde_json::from_str(json).map_err(|e| {
        err(
            "",
            format!(
                "malformed JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(err("", "an event must be a JSON object"));
    };
    let event_time = get_ci(&obj, "eventtime").ok_or_else(|| err(".eventTime", "is required"))?;
    let Value::String(event_time) = event_time else {
        return Err(err(
            ".eventTime",
            "must be a string like 2023-07-10T11:40:13Z",
        ));
    };
    let parsed = chrono::DateTime::parse_from_rfc3339(event_time).map_err(|e| {
        err(
            ".eventTime",
            format!("`{event_time}` is not an RFC 3339 time: {e}"),
        )
    })?;
    let event_time_us = parsed.timestamp_micros();
    let event_id = match get_ci(&obj, "eventid") {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= 1024 => id.clone(),
        Some(_) => {
            return Err(err(
                ".eventID",
                "must be a non-empty string of at most 1024 bytes",
            ));
        }
        None => return Err(err(".eventID", "is required")),
    };
    let schema = TableKind::Audit.schema();
    let mut row = Map::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let v = match field.name().as_str() {
            "eventtime" => Value::String(
                chrono::DateTime::from_timestamp_micros(event_time_us)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                    .unwrap_or_default(),
            ),
            "eventjson" => Value::String(json.to_string()),
            // Never from the event: only the server's write path marks its own events.
            crate::tables::SERVER_EVENT_COLUMN => Value::Bool(false),
            name => get_ci(&obj, name).map_or(Value::Null, |v| project(v, field)),
        };
        row.insert(field.name().clone(), v);
    }
    Ok(AuditEvent {
        event_id,
        event_time_us,
        row: Value::Object(row),
    })
}

/// Looks a key up case-insensitively (exact match first: it is by far the common case).
fn get_ci<'a>(obj: &'a Map<String, Value>, lower: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(lower))
        .map(|(_, v)| v)
}

/// Projects a JSON value onto the Arrow type of `field`, so that decoding cannot fail.
fn project(v: &Value, field: &Field) -> Value {
    match (field.data_type(), v) {
        (_, Value::Null) => Value::Null,
        (DataType::Utf8, Value::String(s)) => Value::String(s.clone()),
        (DataType::Utf8, other) => Value::String(other.to_string()),
        (DataType::Boolean, Value::Bool(b)) => Value::Bool(*b),
        (DataType::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("true") => {
            Value::Bool(true)
        }
        (DataType::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("false") => {
            Value::Bool(false)
        }
        (DataType::Struct(fields), Value::Object(obj)) => {
            let mut out = Map::with_capacity(fields.len());
            for f in fields {
                if let Some(x) = get_ci(obj, f.name()) {
                    out.insert(f.name().clone(), project(x, f));
                }
            }
            Value::Object(out)
        }
        (DataType::List(item), Value::Array(items)) => {
            Value::Array(items.iter().map(|x| project(x, item)).collect())
        }
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_and_position_of_errors() {
        let e = parse_event("{\"eventID\": \"x\",\n \"eventTime\": }").expect_err("malformed");
        assert!(e.reason.contains("line 2"), "{e:?}");
        let e = parse_event(r#"{"eventID":"x"}"#).expect_err("no time");
        assert_eq!(e.field, ".eventTime");
        let e = parse_event(r#"{"eventID":"x","eventTime":"yesterday"}"#).expect_err("bad time");
        assert_eq!(e.field, ".eventTime");
        let e = parse_event(r#"{"eventTime":"2023-07-10T11:40:13Z"}"#).expect_err("no id");
        assert_eq!(e.field, ".eventID");
        let e = parse_event("[1]").expect_err("not an object");
        assert!(e.reason.contains("object"));
    }

    #[test]
    fn an_event_cannot_mark_itself_as_the_servers_own() {
        for key in ["serverevent", "serverEvent", "SERVEREVENT"] {
            let json =
                format!(r#"{{"eventID":"x","eventTime":"2023-07-10T11:40:13Z","{key}":true}}"#);
            let e = parse_event(&json).expect("valid");
            assert_eq!(e.row[crate::tables::SERVER_EVENT_COLUMN], false, "{key}");
        }
    }
}
