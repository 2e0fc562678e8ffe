//! Watchtrail's own audit trail: every control-plane call, every query, every audit import and
//! every refused call becomes a CloudTrail-shaped event in the caller's `audit` table
//! (`eventsource = 'watchtrail'`), so the questions asked of CloudTrail can be asked of
//! Watchtrail itself, and the CIS alarms fire on it.
//!
//! Events are queued without waiting and written in batches through the same WAL as any
//! ingest (one batch per tenant at most every [`BATCH_INTERVAL`]), so a call never waits on an
//! fsync of its own record. The queue holds [`QUEUE`] events; past that, events are dropped and
//! counted (`watchtrail_self_audit_dropped_total`), never blocking a caller. At shutdown the
//! queue is written before the last flush.
//!
//! A refused call whose key is unknown or unreadable is recorded in the `default` tenant (the
//! operator's); one whose key id is known, in that key's tenant.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use watchtrail_proto::DEFAULT_TENANT;
use watchtrail_proto::v1::{AuditRecord, PutAuditEventsRequest};
use watchtrail_query::keys::Role;

use crate::ingest::Ingest;
use crate::metrics::Metrics;

/// Events waiting to be written, at most.
pub const QUEUE: usize = 10_000;
/// Longest wait before a queued event is written.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(200);
/// The `eventsource` of Watchtrail's own events.
pub const EVENT_SOURCE: &str = "watchtrail";

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
    /// The call as one CloudTrail record.
    pub fn to_event(&self, now: chrono::DateTime<chrono::Utc>) -> Value {
        let id = uuid::Uuid::new_v4().to_string();
        let mut v = json!({
            "eventVersion": "1.09",
            "userIdentity": self.caller.identity(),
            "eventTime": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "eventSource": EVENT_SOURCE,
            "eventName": self.event_name,
            "awsRegion": "local",
            "sourceIPAddress": self.source_ip.map_or_else(|| "unknown".to_string(), |ip| ip.to_string()),
            "userAgent": self.user_agent.as_deref().unwrap_or(""),
            "requestParameters": self.request_parameters,
            "requestID": id,
            "eventID": id,
            "readOnly": self.read_only,
            "eventType": "AwsApiCall",
            "managementEvent": true,
            "recipientAccountId": self.caller.tenant(),
            "eventCategory": "Management",
        });
        if let Some((code, message)) = &self.error {
            v["errorCode"] = Value::String(code.clone());
            v["errorMessage"] = Value::String(message.clone());
        }
        v
    }
}

/// The queue of calls to record. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SelfAudit {
    tx: Option<mpsc::Sender<(String, String)>>,
    metrics: Arc<Metrics>,
}

impl SelfAudit {
    /// A trail that records nothing (`--no-self-audit`).
    pub fn off(metrics: Arc<Metrics>) -> Self {
        Self { tx: None, metrics }
    }

    /// A trail that writes through `ingest`; the writer task runs until `stop`, then writes
    /// what is queued and returns.
    pub fn start(
        ingest: Ingest,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write_loop(rx, ingest, Arc::clone(&metrics), stop));
        (
            Self {
                tx: Some(tx),
                metrics,
            },
            task,
        )
    }

    /// Queues a call; never waits.
    pub fn record(&self, call: &Call) {
        let Some(tx) = &self.tx else {
            return;
        };
        let event = call.to_event(chrono::Utc::now()).to_string();
        if tx
            .try_send((call.caller.tenant().to_string(), event))
            .is_err()
        {
            self.metrics.self_audit_dropped.inc();
        }
    }
}

async fn write_loop(
    mut rx: mpsc::Receiver<(String, String)>,
    ingest: Ingest,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    loop {
        let mut batch: HashMap<String, Vec<String>> = HashMap::new();
        let first = tokio::select! {
            e = rx.recv() => e,
            () = stop.cancelled() => None,
        };
        let Some((tenant, event)) = first else {
            break;
        };
        batch.entry(tenant).or_default().push(event);
        let deadline = tokio::time::Instant::now() + BATCH_INTERVAL;
        while let Ok(Some((tenant, event))) = tokio::time::timeout_at(deadline, rx.recv()).await {
            batch.entry(tenant).or_default().push(event);
            if batch.values().map(Vec::len).sum::<usize>() >= 1000 {
                break;
            }
        }
        write(&ingest, &metrics, batch).await;
    }
    // Shutdown: whatever is queued still goes in, before the final flush.
    rx.close();
    let mut batch: HashMap<String, Vec<String>> = HashMap::new();
    while let Ok((tenant, event)) = rx.try_recv() {
        batch.entry(tenant).or_default().push(event);
    }
    write(&ingest, &metrics, batch).await;
}

async fn write(ingest: &Ingest, metrics: &Metrics, batch: HashMap<String, Vec<String>>) {
    for (tenant, events) in batch {
        for chunk in events.chunks(crate::ingest::limits::MAX_AUDIT_RECORDS) {
            let n = chunk.len() as u64;
            let req = PutAuditEventsRequest {
                idempotency_id: format!("self-audit-{}", uuid::Uuid::new_v4().simple()),
                records: chunk
                    .iter()
                    .map(|json| AuditRecord { json: json.clone() })
                    .collect(),
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
}
