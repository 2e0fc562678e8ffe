//! Watchtrail's own audit trail: every control-plane call, every query, every audit import and
//! every refused call becomes a CloudTrail-shaped event in the caller's `audit` table
//! (`eventsource = 'watchtrail'`), so the questions asked of CloudTrail can be asked of
//! Watchtrail itself, and the CIS alarms fire on it.
//!
//! Events are queued without waiting and written in batches through the same WAL as any
//! ingest (one batch per tenant at most every [`BATCH_INTERVAL`], cut at [`MAX_AUDIT_RECORDS`]
//! events or [`BATCH_BYTES`]), so a call never waits on an fsync of its own record. The queue
//! holds [`QUEUE`] events; past that, events are dropped and counted
//! (`watchtrail_self_audit_dropped_total`), never blocking a caller. At shutdown the queue is
//! written before the last flush. A query's start is the exception: [`SelfAudit::record_now`]
//! writes it through the WAL before the query runs, so even a query that takes the process down
//! leaves its trace.
//!
//! Nothing a caller sends can make its own event unwritable: every field that comes from the
//! caller is cut to [`MAX_FIELD_BYTES`] (a query's SQL to [`MAX_SQL_BYTES`]) before the event is
//! built, with the cut fields named in `additionalEventData.truncatedFields`; an event that
//! fails validation all the same is dropped alone and counted
//! (`watchtrail_self_audit_invalid_total`). Refusals of callers that did not authenticate are
//! recorded one by one up to [`REFUSALS_PER_WINDOW`] per source address and
//! [`REFUSAL_WINDOW`]; the rest of the window's refusals from that address become one
//! `RefusedCallsSummary` event with their count.
//!
//! A refused call whose key is unknown or unreadable is recorded in the `default` tenant (the
//! operator's); one whose key id is known, in that key's tenant.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use watchtrail_proto::DEFAULT_TENANT;
use watchtrail_proto::v1::{AuditRecord, PutAuditEventsRequest};
use watchtrail_query::limits::{MAX_AUDIT_RECORD_BYTES, MAX_AUDIT_RECORDS};
use watchtrail_storage::keys::Role;

use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::wal::lock;

/// Events waiting to be written, at most.
pub const QUEUE: usize = 10_000;
/// Longest wait before a queued event is written.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(200);
/// Most bytes of events in one write (the audit request limit is 1 MiB).
pub const BATCH_BYTES: usize = 512 * 1024;
/// The `eventsource` of Watchtrail's own events.
pub const EVENT_SOURCE: &str = "watchtrail";
/// Longest text kept of one field that comes from a caller (user agent, names, parameters,
/// error messages).
pub const MAX_FIELD_BYTES: usize = 2_048;
/// Longest SQL text of a query kept in its event.
pub const MAX_SQL_BYTES: usize = 64 * 1024;
/// Largest event; past it the request parameters are replaced by a note of their size.
pub const MAX_EVENT_BYTES: usize = MAX_AUDIT_RECORD_BYTES / 2;
/// Refusals of unauthenticated callers recorded one by one per source address and window.
pub const REFUSALS_PER_WINDOW: u32 = 10;
/// The window of [`REFUSALS_PER_WINDOW`].
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);
/// Source addresses tracked at once; refusals from further addresses share one summary.
const MAX_TRACKED_SOURCES: usize = 4_096;

/// Who made a call, as the trail records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An authenticated key (or, with `--auth none`, the tenant the header named).
    Key {
        /// Its tenant.
        tenant: String,
        /// Its id (`None` with `--auth none`).
        key_id: Option<String>,
        /// Its role.
        role: Role,
    },
    /// A caller that did not authenticate: the key id it presented, if one could be read,
    /// and the tenant of that id, if it is known.
    Anonymous {
        /// The presented key id.
        key_id: Option<String>,
        /// The tenant of that key id.
        tenant: Option<String>,
    },
}

impl Caller {
    /// The tenant whose trail records the call.
    pub fn tenant(&self) -> &str {
        match self {
            Caller::Key { tenant, .. } => tenant,
            Caller::Anonymous { tenant, .. } => tenant.as_deref().unwrap_or(DEFAULT_TENANT),
        }
    }

    fn identity(&self) -> Value {
        match self {
            Caller::Key {
                tenant,
                key_id,
                role,
            } => {
                let id = key_id.as_deref().unwrap_or("none");
                json!({
                    "type": "WatchtrailApiKey",
                    "principalId": id,
                    "arn": format!("arn:watchtrail:iam::{tenant}:key/{id}"),
                    "accountId": tenant,
                    "accessKeyId": id,
                    "userName": role.as_str(),
                    "sessionContext": {"sessionIssuer": {
                        "type": "Role",
                        "principalId": id,
                        "arn": format!("arn:watchtrail:iam::{tenant}:role/{role}"),
                        "accountId": tenant,
                        "userName": role.as_str(),
                    }},
                })
            }
            Caller::Anonymous { key_id, tenant } => json!({
                "type": "Anonymous",
                "principalId": key_id,
                "accountId": tenant,
                "accessKeyId": key_id,
            }),
        }
    }
}

/// One call, as the trail records it.
#[derive(Debug, Clone)]
pub struct Call {
    /// `Query`, `PutAlarm`, `CreateKey`, ...
    pub event_name: &'static str,
    /// Whether the call only reads.
    pub read_only: bool,
    /// Who.
    pub caller: Caller,
    /// From where.
    pub source_ip: Option<IpAddr>,
    /// With what.
    pub user_agent: Option<String>,
    /// The parameters (the SQL of a query; names from the path; never a secret).
    pub request_parameters: Value,
    /// `errorCode` and `errorMessage` of a refused or failed call.
    pub error: Option<(String, String)>,
}

impl Call {
    /// The call as one CloudTrail record, every caller-supplied field cut to its bound (see the
    /// module docs), so the record always passes the audit table's limits.
    pub fn to_event(&self, now: chrono::DateTime<chrono::Utc>) -> Value {
        let id = uuid::Uuid::new_v4().to_string();
        self.to_event_with_id(now, &id)
    }

    /// As [`Call::to_event`], with a given request and event id.
    pub fn to_event_with_id(&self, now: chrono::DateTime<chrono::Utc>, id: &str) -> Value {
        let mut cut = Vec::new();
        let mut params = self.request_parameters.clone();
        truncate_strings(&mut params, "requestParameters", &mut cut);
        let user_agent = truncate(
            self.user_agent.as_deref().unwrap_or(""),
            MAX_FIELD_BYTES,
            "userAgent",
            &mut cut,
        );
        let mut identity = self.caller.identity();
        truncate_strings(&mut identity, "userIdentity", &mut cut);
        let mut v = json!({
            "eventVersion": "1.09",
            "userIdentity": identity,
            "eventTime": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "eventSource": EVENT_SOURCE,
            "eventName": self.event_name,
            "awsRegion": "local",
            "sourceIPAddress": self.source_ip.map_or_else(|| "unknown".to_string(), |ip| ip.to_string()),
            "userAgent": user_agent,
            "requestParameters": params,
            "requestID": id,
            "eventID": id,
            "readOnly": self.read_only,
            "eventType": "AwsApiCall",
            "managementEvent": true,
            "recipientAccountId": self.caller.tenant(),
            "eventCategory": "Management",
        });
        if let Some((code, message)) = &self.error {
            v["errorCode"] = Value::String(truncate(code, MAX_FIELD_BYTES, "errorCode", &mut cut));
            v["errorMessage"] =
                Value::String(truncate(message, MAX_FIELD_BYTES, "errorMessage", &mut cut));
        }
        let size = v.to_string().len();
        if size > MAX_EVENT_BYTES {
            v["requestParameters"] = json!({
                "omitted": format!("{size} bytes of request parameters, over the {MAX_EVENT_BYTES}-byte event limit"),
            });
            cut.push("requestParameters".to_string());
        }
        if !cut.is_empty() {
            v["additionalEventData"] = json!({ "truncatedFields": cut });
        }
        v
    }
}

/// `text` cut to at most `max` bytes at a character boundary, with a note of its full size;
/// `field` is added to `cut` when it was cut.
fn truncate(text: &str, max: usize, field: &str, cut: &mut Vec<String>) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    cut.push(field.to_string());
    format!("{}...[truncated from {} bytes]", &text[..end], text.len())
}

/// Cuts every string in `v` (keys included) to its bound: a query's `sql` to
/// [`MAX_SQL_BYTES`], anything else to [`MAX_FIELD_BYTES`]. Depth is bounded by the JSON parser
/// that built `v` (128 levels).
fn truncate_strings(v: &mut Value, path: &str, cut: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            let max = if path.ends_with(".sql") {
                MAX_SQL_BYTES
            } else {
                MAX_FIELD_BYTES
            };
            if s.len() > max {
                *s = truncate(s, max, path, cut);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                truncate_strings(item, &format!("{path}[{i}]"), cut);
            }
        }
        Value::Object(map) => {
            let entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
            for (key, mut value) in entries {
                let key = truncate(&key, MAX_FIELD_BYTES, &format!("{path} key"), cut);
                truncate_strings(&mut value, &format!("{path}.{key}"), cut);
                map.insert(key, value);
            }
        }
        _ => {}
    }
}

/// Refusals of unauthenticated callers, per source address, in the current window.
#[derive(Debug, Default)]
struct Refusals {
    sources: HashMap<Option<IpAddr>, SourceWindow>,
}

#[derive(Debug)]
struct SourceWindow {
    started: Instant,
    recorded: u32,
    suppressed: u64,
    /// The last suppressed call, the model of the summary event.
    last: Option<Call>,
}

impl Refusals {
    /// Whether this refusal is recorded on its own (`true`) or only counted.
    fn admit(&mut self, call: &Call, now: Instant) -> bool {
        let key = if self.sources.len() >= MAX_TRACKED_SOURCES
            && !self.sources.contains_key(&call.source_ip)
        {
            None
        } else {
            call.source_ip
        };
        let w = self.sources.entry(key).or_insert_with(|| SourceWindow {
            started: now,
            recorded: 0,
            suppressed: 0,
            last: None,
        });
        if w.recorded < REFUSALS_PER_WINDOW {
            w.recorded += 1;
            return true;
        }
        w.suppressed += 1;
        w.last = Some(call.clone());
        false
    }

    /// The summaries of windows that ended by `now` (all of them when `all`), as events.
    fn take_ended(&mut self, now: Instant, all: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.sources.retain(|_, w| {
            let ended = all || now.duration_since(w.started) >= REFUSAL_WINDOW;
            if !ended {
                return true;
            }
            if let Some(mut call) = w.last.take() {
                let seconds = now.duration_since(w.started).as_secs();
                call.event_name = "RefusedCallsSummary";
                call.request_parameters = json!({
                    "refusedCalls": w.suppressed,
                    "windowSeconds": seconds,
                    "recordedOneByOne": w.recorded,
                });
                let tenant = call.caller.tenant().to_string();
                out.push((tenant, call.to_event(chrono::Utc::now()).to_string()));
            }
            false
        });
        out
    }
}

/// The queue of calls to record. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SelfAudit {
    tx: Option<mpsc::Sender<(String, String)>>,
    ingest: Option<Ingest>,
    refusals: Arc<Mutex<Refusals>>,
    metrics: Arc<Metrics>,
}

impl SelfAudit {
    /// A trail that records nothing (`--no-self-audit`).
    pub fn off(metrics: Arc<Metrics>) -> Self {
        Self {
            tx: None,
            ingest: None,
            refusals: Arc::default(),
            metrics,
        }
    }

    /// A trail that writes through `ingest`; the writer task runs until `stop`, then writes
    /// what is queued and returns.
    pub fn start(
        ingest: Ingest,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let refusals: Arc<Mutex<Refusals>> = Arc::default();
        let task = tokio::spawn(write_loop(
            rx,
            ingest.clone(),
            Arc::clone(&refusals),
            Arc::clone(&metrics),
            stop,
        ));
        (
            Self {
                tx: Some(tx),
                ingest: Some(ingest),
                refusals,
                metrics,
            },
            task,
        )
    }

    /// Queues a call; never waits. A refusal of an unauthenticated caller past the per-address
    /// allowance is only counted, into the address's summary event.
    pub fn record(&self, call: &Call) {
        let Some(tx) = &self.tx else {
            return;
        };
        if matches!(call.caller, Caller::Anonymous { .. })
            && call.error.is_some()
            && !lock(&self.refusals).admit(call, Instant::now())
        {
            self.metrics.self_audit_summarised.inc();
            return;
        }
        let event = call.to_event(chrono::Utc::now()).to_string();
        if tx
            .try_send((call.caller.tenant().to_string(), event))
            .is_err()
        {
            self.metrics.self_audit_dropped.inc();
        }
    }

    /// Writes a call through the WAL and returns once it is durable, for records that must
    /// exist before the call does its work (a query's start). Returns the event id.
    ///
    /// # Errors
    /// The WAL refused the record; the call should not go ahead.
    pub async fn record_now(&self, call: &Call) -> Result<String, String> {
        let id = uuid::Uuid::new_v4().to_string();
        let Some(ingest) = &self.ingest else {
            return Ok(id);
        };
        let event = call.to_event_with_id(chrono::Utc::now(), &id).to_string();
        let req = PutAuditEventsRequest {
            idempotency_id: format!("self-audit-{}", uuid::Uuid::new_v4().simple()),
            records: vec![AuditRecord { json: event }],
        };
        match ingest.put_self_audit(call.caller.tenant(), req).await {
            Ok(_) => {
                self.metrics.self_audit_events.inc();
                Ok(id)
            }
            Err(e) => {
                self.metrics.self_audit_dropped.inc();
                Err(e.to_string())
            }
        }
    }
}

type Batch = HashMap<String, Vec<String>>;

async fn write_loop(
    mut rx: mpsc::Receiver<(String, String)>,
    ingest: Ingest,
    refusals: Arc<Mutex<Refusals>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut batch: Batch = HashMap::new();
        let first = tokio::select! {
            e = rx.recv() => match e {
                Some(e) => Some(e),
                None => break,
            },
            _ = tick.tick() => None,
            () = stop.cancelled() => break,
        };
        for (tenant, event) in lock(&refusals).take_ended(Instant::now(), false) {
            batch.entry(tenant).or_default().push(event);
        }
        if let Some((tenant, event)) = first {
            let mut bytes = event.len();
            batch.entry(tenant).or_default().push(event);
            let deadline = tokio::time::Instant::now() + BATCH_INTERVAL;
            while let Ok(Some((tenant, event))) = tokio::time::timeout_at(deadline, rx.recv()).await
            {
                bytes += event.len();
                batch.entry(tenant).or_default().push(event);
                if batch.values().map(Vec::len).sum::<usize>() >= 1000 || bytes >= 4 * BATCH_BYTES {
                    break;
                }
            }
        }
        write(&ingest, &metrics, batch).await;
    }
    // Shutdown: whatever is queued still goes in, before the final flush.
    rx.close();
    let mut batch: Batch = HashMap::new();
    while let Ok((tenant, event)) = rx.try_recv() {
        batch.entry(tenant).or_default().push(event);
    }
    for (tenant, event) in lock(&refusals).take_ended(Instant::now(), true) {
        batch.entry(tenant).or_default().push(event);
    }
    write(&ingest, &metrics, batch).await;
}

/// Cuts `events` into requests of at most [`MAX_AUDIT_RECORDS`] events and [`BATCH_BYTES`].
fn requests(events: Vec<String>) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut bytes = 0;
    for e in events {
        let full = out
            .last()
            .is_none_or(|r| r.len() >= MAX_AUDIT_RECORDS || bytes + e.len() > BATCH_BYTES);
        if full {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += e.len();
        if let Some(r) = out.last_mut() {
            r.push(e);
        }
    }
    out
}

async fn write(ingest: &Ingest, metrics: &Metrics, batch: Batch) {
    for (tenant, events) in batch {
        // Each event is checked alone first, so one bad event never takes its batch with it.
        let events: Vec<String> = events
            .into_iter()
            .filter(|json| {
                let ok = json.len() <= MAX_AUDIT_RECORD_BYTES
                    && watchtrail_query::cloudtrail::parse_event(json).is_ok();
                if !ok {
                    warn!(tenant = %tenant, bytes = json.len(), "self-audit event failed validation; dropped");
                    metrics.self_audit_invalid.inc();
                }
                ok
            })
            .collect();
        for chunk in requests(events) {
            let n = chunk.len() as u64;
            let req = PutAuditEventsRequest {
                idempotency_id: format!("self-audit-{}", uuid::Uuid::new_v4().simple()),
                records: chunk.into_iter().map(|json| AuditRecord { json }).collect(),
            };
            let mut delay = Duration::from_millis(100);
            let mut attempt = 0;
            loop {
                match ingest.put_self_audit(&tenant, req.clone()).await {
                    Ok(_) => {
                        metrics.self_audit_events.add(n);
                        break;
                    }
                    Err(e) if attempt < 5 => {
                        attempt += 1;
                        warn!(error = %e, tenant = %tenant, "self-audit write failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(e) => {
                        warn!(error = %e, tenant = %tenant, events = n, "self-audit events dropped");
                        metrics.self_audit_dropped.add(n);
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denied_call_is_a_cloudtrail_record_with_an_error_code() {
        let call = Call {
            event_name: "Query",
            read_only: true,
            caller: Caller::Anonymous {
                key_id: Some("0123456789abcdef".into()),
                tenant: None,
            },
            source_ip: Some("127.0.0.1".parse().unwrap()),
            user_agent: Some("curl/8".into()),
            request_parameters: json!({"sql": "SELECT 1"}),
            error: Some(("AccessDenied".into(), "no key".into())),
        };
        let v = call.to_event(chrono::Utc::now());
        assert_eq!(call.caller.tenant(), "default");
        // The ingest path's own parser takes it, with every field where Athena has it.
        let e = crate::ingest::audit_json::parse_event(&v.to_string()).unwrap();
        assert_eq!(e.row["eventsource"], "watchtrail");
        assert_eq!(e.row["eventname"], "Query");
        assert_eq!(e.row["errorcode"], "AccessDenied");
        assert_eq!(e.row["sourceipaddress"], "127.0.0.1");
        assert_eq!(e.row["useridentity"]["accesskeyid"], "0123456789abcdef");
        assert_eq!(v["eventSource"], "watchtrail");
        assert_eq!(v["requestParameters"]["sql"], "SELECT 1");
    }

    #[test]
    fn a_key_caller_names_its_tenant_id_and_role() {
        let caller = Caller::Key {
            tenant: "acme".into(),
            key_id: Some("00112233aabbccdd".into()),
            role: Role::Admin,
        };
        let v = Call {
            event_name: "PutAlarm",
            read_only: false,
            caller: caller.clone(),
            source_ip: None,
            user_agent: None,
            request_parameters: json!({"alarmName": "a"}),
            error: None,
        }
        .to_event(chrono::Utc::now());
        assert_eq!(caller.tenant(), "acme");
        assert_eq!(v["userIdentity"]["accessKeyId"], "00112233aabbccdd");
        assert_eq!(
            v["userIdentity"]["sessionContext"]["sessionIssuer"]["userName"],
            "admin"
        );
        assert_eq!(v["recipientAccountId"], "acme");
        assert!(v.get("errorCode").is_none());
    }

    fn anonymous_refusal(ip: &str) -> Call {
        Call {
            event_name: "Query",
            read_only: true,
            caller: Caller::Anonymous {
                key_id: None,
                tenant: None,
            },
            source_ip: Some(ip.parse().unwrap()),
            user_agent: None,
            request_parameters: Value::Null,
            error: Some(("AccessDenied".into(), "no key".into())),
        }
    }

    #[test]
    fn caller_fields_of_any_size_are_cut_and_the_event_stays_valid() {
        let huge = "u".repeat(300 * 1024);
        let call = Call {
            event_name: "CreateKey",
            read_only: false,
            caller: Caller::Key {
                tenant: "acme".into(),
                key_id: Some("00112233aabbccdd".into()),
                role: Role::Admin,
            },
            source_ip: None,
            user_agent: Some(huge.clone()),
            request_parameters: json!({
                "sql": "s".repeat(1 << 20),
                "description": huge.clone(),
                huge.clone(): "a key as long as the user agent",
                "many": vec![huge.clone(); 200],
            }),
            error: Some(("ValidationException".into(), huge.clone())),
        };
        let v = call.to_event(chrono::Utc::now());
        let text = v.to_string();
        assert!(text.len() <= MAX_EVENT_BYTES, "{} bytes", text.len());
        // The ingest path takes it: the event cannot be refused for its size.
        let e = crate::ingest::audit_json::parse_event(&text).unwrap();
        assert_eq!(e.row["eventname"], "CreateKey");
        let ua = v["userAgent"].as_str().unwrap();
        assert!(
            ua.len() < MAX_FIELD_BYTES + 64 && ua.contains("truncated from 307200 bytes"),
            "{ua}"
        );
        let cut = v["additionalEventData"]["truncatedFields"]
            .as_array()
            .unwrap();
        assert!(cut.iter().any(|f| f == "userAgent"), "{cut:?}");
        assert!(cut.iter().any(|f| f == "errorMessage"), "{cut:?}");

        // Parameters that fit keep the SQL up to its own, larger bound.
        let q = Call {
            request_parameters: json!({"sql": "x".repeat(100_000)}),
            user_agent: None,
            error: None,
            ..call
        }
        .to_event(chrono::Utc::now());
        let sql = q["requestParameters"]["sql"].as_str().unwrap();
        assert!(sql.starts_with(&"x".repeat(MAX_SQL_BYTES)), "{}", sql.len());
        assert!(sql.ends_with("[truncated from 100000 bytes]"));
    }

    #[test]
    fn unauthenticated_refusals_past_the_allowance_fold_into_one_summary_per_address() {
        let mut r = Refusals::default();
        let t0 = Instant::now();
        let admitted = (0..1_000)
            .filter(|_| r.admit(&anonymous_refusal("192.0.2.1"), t0))
            .count();
        assert_eq!(admitted, REFUSALS_PER_WINDOW as usize);
        // Another address has its own allowance.
        assert!(r.admit(&anonymous_refusal("192.0.2.2"), t0));
        // Nothing is summarised before the window ends.
        assert!(r.take_ended(t0 + Duration::from_secs(1), false).is_empty());
        let ended = r.take_ended(t0 + REFUSAL_WINDOW, false);
        assert_eq!(ended.len(), 1, "only the address with suppressed refusals");
        let (tenant, event) = &ended[0];
        assert_eq!(tenant, "default");
        let v: Value = serde_json::from_str(event).unwrap();
        assert_eq!(v["eventName"], "RefusedCallsSummary");
        assert_eq!(v["sourceIPAddress"], "192.0.2.1");
        assert_eq!(
            v["requestParameters"]["refusedCalls"],
            1_000 - REFUSALS_PER_WINDOW as u64
        );
        assert_eq!(v["errorCode"], "AccessDenied");
        // A new window starts afresh.
        assert!(r.admit(&anonymous_refusal("192.0.2.1"), t0 + REFUSAL_WINDOW));
    }

    #[test]
    fn requests_are_cut_by_count_and_by_bytes() {
        let small = vec!["e".to_string(); 250];
        let counts: Vec<usize> = requests(small).iter().map(Vec::len).collect();
        assert_eq!(counts, vec![100, 100, 50]);
        let big = vec!["b".repeat(200 * 1024); 5];
        let sizes: Vec<usize> = requests(big).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }
}
