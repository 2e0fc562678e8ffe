//! Audit records from applications and CloudTrail files: one CloudTrail-shaped JSON event, an
//! array of them, or a delivery file's `{"Records": [...]}`. Each event keeps its original JSON
//! text; an event without an `eventID` gets a random one, so the server can store it once.

use std::sync::atomic::Ordering;

use prost::Message as _;
use serde_json::Value;
use serde_json::value::RawValue;
use watchtrail_proto::v1::{AuditRecord, PutAuditEventsRequest};

use crate::Context;
use crate::spool::{Kind, Position};

use watchtrail_model::limits::{
    MAX_AUDIT_RECORD_BYTES as MAX_RECORD_BYTES, MAX_AUDIT_RECORDS as MAX_RECORDS,
    MAX_AUDIT_REQUEST_BYTES, MAX_IDEMPOTENCY_ID_LEN,
};

/// The server's request limit less room for the idempotency id; each record is counted with
/// its protobuf framing (at most 8 bytes), so a request never crosses the limit.
const MAX_REQUEST_BYTES: usize = MAX_AUDIT_REQUEST_BYTES - MAX_IDEMPOTENCY_ID_LEN - 8;

/// Why input was refused: the JSON path of the culprit (e.g. `Records[3].eventTime`) and the
/// reason.
pub type AuditError = watchtrail_model::FieldError;

/// A random UUID (version 4).
pub fn random_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The `eventSource` of the server's own trail, which no ingested event may claim.
const RESERVED_EVENT_SOURCE: &str = "watchtrail";

fn check_event(raw: &RawValue, at: &str) -> Result<String, AuditError> {
    let text = raw.get();
    if text.len() > MAX_RECORD_BYTES {
        return Err(AuditError::new(
            at,
            format!("event is {} bytes; at most {MAX_RECORD_BYTES}", text.len()),
        ));
    }
    let v: Value = serde_json::from_str(text).map_err(|e| AuditError::new(at, e.to_string()))?;
    let Value::Object(mut obj) = v else {
        return Err(AuditError::new(at, "an event must be a JSON object"));
    };
    // The server refuses a batch holding one (its own trail's source): refuse the event here,
    // where the caller still hears about it, rather than lose its batch later.
    if obj
        .get("eventSource")
        .and_then(Value::as_str)
        .is_some_and(|s| s.trim().eq_ignore_ascii_case(RESERVED_EVENT_SOURCE))
    {
        return Err(AuditError::new(
            format!("{at}.eventSource"),
            format!("`{RESERVED_EVENT_SOURCE}` is reserved for the server's own events"),
        ));
    }
    // An event without an id gets one, so that the server stores it once however often it is
    // sent; the original text is kept otherwise.
    let text = if obj.keys().any(|k| k.eq_ignore_ascii_case("eventid")) {
        text.to_string()
    } else {
        obj.insert("eventID".into(), Value::String(random_id()));
        serde_json::to_string(&obj).map_err(|e| AuditError::new(at, e.to_string()))?
    };
    // What a valid event is, the server's own parser says.
    watchtrail_model::cloudtrail::parse_event(&text)
        .map_err(|e| AuditError::new(format!("{at}{}", e.field), e.reason))?;
    Ok(text)
}

fn position(e: &serde_json::Error) -> String {
    format!("line {}, column {}", e.line(), e.column())
}

/// Reads one event, an array of events, or `{"Records": [...]}`; answers each event's JSON.
pub fn parse_events(bytes: &[u8]) -> Result<Vec<String>, AuditError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| AuditError::new("", format!("not UTF-8 at byte {}", e.valid_up_to())))?;
    let trimmed = text.trim_start();
    let mut out = Vec::new();
    if trimmed.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(text)
            .map_err(|e| AuditError::new("", format!("malformed JSON at {}: {e}", position(&e))))?;
        for (i, raw) in items.iter().enumerate() {
            out.push(check_event(raw, &format!("[{i}]"))?);
        }
        return Ok(out);
    }
    #[derive(serde::Deserialize)]
    struct Delivery<'a> {
        #[serde(rename = "Records", borrow)]
        records: Option<Vec<&'a RawValue>>,
    }
    let raw: &RawValue = serde_json::from_str(text)
        .map_err(|e| AuditError::new("", format!("malformed JSON at {}: {e}", position(&e))))?;
    if !raw.get().starts_with('{') {
        return Err(AuditError::new(
            "",
            "expected an event object, an array of events or {\"Records\": [...]}",
        ));
    }
    let delivery: Delivery<'_> = serde_json::from_str(raw.get())
        .map_err(|e| AuditError::new("Records", format!("must be an array of events: {e}")))?;
    match delivery.records {
        Some(records) => {
            for (i, raw) in records.iter().enumerate() {
                out.push(check_event(raw, &format!("Records[{i}]"))?);
            }
        }
        None => out.push(check_event(raw, "")?),
    }
    Ok(out)
}

/// Appends events (in requests within the server's limits) and positions as one spool record.
pub fn spool_events(
    ctx: &Context,
    events: Vec<String>,
    positions: Vec<Position>,
) -> std::io::Result<u64> {
    let n = events.len() as u64;
    let mut groups: Vec<Vec<AuditRecord>> = Vec::new();
    let mut bytes = 0;
    for json in events {
        let size = json.len() + 8;
        match groups.last_mut() {
            Some(g) if g.len() < MAX_RECORDS && bytes + size <= MAX_REQUEST_BYTES => {
                bytes += size;
                g.push(AuditRecord { json });
            }
            _ => {
                bytes = size;
                groups.push(vec![AuditRecord { json }]);
            }
        }
    }
    let agent = &ctx.agent_id;
    let seq = ctx.spool.append(Kind::Audit, n, positions, |seq| {
        groups
            .into_iter()
            .enumerate()
            .map(|(i, records)| {
                PutAuditEventsRequest {
                    idempotency_id: format!("{agent}-{seq}-{i}"),
                    records,
                }
                .encode_to_vec()
            })
            .collect()
    })?;
    ctx.stats.audit_received.fetch_add(n, Ordering::Relaxed);
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EV: &str = r#"{"eventVersion":"1.08","eventTime":"2023-07-10T11:40:13Z","eventSource":"s3.amazonaws.com","eventName":"DeleteBucketPolicy","eventID":"e-1"}"#;

    #[test]
    fn three_shapes_are_accepted_and_the_original_text_kept() {
        assert_eq!(parse_events(EV.as_bytes()), Ok(vec![EV.to_string()]));
        let arr = format!("[{EV}, {EV}]");
        assert_eq!(parse_events(arr.as_bytes()).map(|v| v.len()), Ok(2));
        let del = format!(r#"{{"Records": [{EV}]}}"#);
        assert_eq!(parse_events(del.as_bytes()), Ok(vec![EV.to_string()]));
    }

    #[test]
    fn events_claiming_the_servers_own_source_are_refused_by_position() {
        let forged = EV.replace("s3.amazonaws.com", " Watchtrail");
        let e = parse_events(format!("[{EV}, {forged}]").as_bytes()).expect_err("forged");
        assert_eq!(e.field, "[1].eventSource", "{e}");
        assert!(e.reason.contains("reserved"), "{e}");
    }

    #[test]
    fn a_missing_event_id_is_filled_in() {
        let ev = r#"{"eventTime":"2023-07-10T11:40:13Z","eventName":"X"}"#;
        let got = parse_events(ev.as_bytes()).expect("valid");
        let v: Value = serde_json::from_str(&got[0]).expect("json");
        assert_eq!(v["eventID"].as_str().map(str::len), Some(36));
        assert_eq!(v["eventName"], "X");
    }

    #[test]
    fn malformed_input_is_refused_naming_the_place() {
        let e = parse_events(b"{\"eventTime\": ").expect_err("truncated");
        assert!(e.reason.contains("line 1, column"), "{e}");
        let e = parse_events(
            br#"{"Records":[{"eventTime":"2023-07-10T11:40:13Z"}, {"eventName":"x"}]}"#,
        )
        .expect_err("no time");
        assert_eq!(e.field, "Records[1].eventTime");
        let e = parse_events(br#"[1]"#).expect_err("not an object");
        assert_eq!(e.field, "[0]");
        let e = parse_events(br#"{"eventTime":"yesterday","eventID":"x"}"#).expect_err("bad time");
        assert_eq!(e.field, ".eventTime");
        let e = parse_events(br#""text""#).expect_err("a string");
        assert!(e.reason.contains("expected an event object"));
        let big = format!(
            r#"{{"eventTime":"2023-07-10T11:40:13Z","eventID":"x","p":"{}"}}"#,
            "a".repeat(MAX_RECORD_BYTES)
        );
        assert!(
            parse_events(big.as_bytes())
                .expect_err("big")
                .reason
                .contains("at most 262144")
        );
    }
}
