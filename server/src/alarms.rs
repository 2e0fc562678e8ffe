//! Alarms: definitions and state on object storage, the evaluator (one per cluster, by lease),
//! `alarm_history`, and the notification outbox with its webhook deliveries.
//!
//! # How a state change travels
//! 1. The evaluator wakes at every 10 s boundary plus the late-data delay, reloads changed
//!    documents, and evaluates the alarms due at that boundary (periods under a minute every
//!    10 s, longer ones every minute) through the SQL engine.
//! 2. For every alarm whose state changes, in this order: the `alarm_history` rows are committed
//!    (once: the commit carries the boundary as an application transaction), the outbox
//!    documents are written (ids derived from the alarm, boundary and state, so a re-run writes
//!    the same ones), then the new state document. A crash anywhere re-runs the boundary with the
//!    same outcome and no duplicate.
//! 3. The outbox worker posts each notification, retries with backoff on 5xx, 429 and network
//!    errors until `--webhook-max-age`, records every attempt in `webhook_deliveries`, and
//!    deletes the document once it is delivered or refused.
//!
//! # Layout
//! - this file: the [`AlarmService`], its configuration and documents, and how changes are
//!   recorded (history, outbox, state).
//! - `api`: the calls the HTTP routes make (alarms, filters, destinations, history).
//! - `defaults`: metric filters' default values, put for each closed minute.
//! - `evaluator`: the evaluation loop at each boundary, while holding the lease.
//! - `outbox`: the delivery loop of pending notifications.
//! - [`egress`]: which addresses webhooks may reach.
//! - control documents and leases: `watchtrail_storage::control`.
//! - [`evaluate`]: the SQL of an alarm and one evaluation.
//! - [`webhook`]: destinations, payloads, signatures.
//! - [`history`]: rows of the two tables.

mod api;
mod defaults;
pub mod egress;
pub mod evaluate;
mod evaluator;
pub mod history;
mod outbox;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use watchtrail_query::alarm::{AlarmDefinition, AlarmState, DefinitionError, MetricFilter};
use watchtrail_query::engine::Engine;
use watchtrail_query::tables::TableKind;
use watchtrail_storage::store::Storage;

use self::history::{DeliveryRow, HistoryRow};
use self::webhook::{Attempt, Destination, OutboxEntry, Transition};
use crate::error::{Error, Result};
use watchtrail_storage::control::{ControlStore, Doc, DocCache, Lease};

/// Evaluation boundaries are this far apart.
const STEP_MS: i64 = 10_000;
/// Application id of the evaluator's `alarm_history` commits.
const HISTORY_APP_ID: &str = "watchtrail-alarm-evaluator";
/// Notifications posted at once.
const DELIVERY_CONCURRENCY: usize = 8;
/// Alarms evaluated at once.
const EVALUATION_CONCURRENCY: usize = 4;

/// Settings of the evaluator and the outbox.
#[derive(Debug, Clone)]
pub struct AlarmConfig {
    /// Whether this server may evaluate and deliver.
    pub enabled: bool,
    /// Late-data delay.
    pub delay: Duration,
    /// Reload interval of the documents.
    pub refresh: Duration,
    /// Lease lifetime.
    pub lease_ttl: Duration,
    /// One webhook request's limit.
    pub webhook_timeout: Duration,
    /// How long a notification is retried.
    pub webhook_max_age: Duration,
    /// First retry delay.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Where webhooks may go.
    pub egress: egress::Egress,
}

impl Default for AlarmConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            delay: Duration::from_secs(5),
            refresh: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(30),
            webhook_timeout: Duration::from_secs(10),
            webhook_max_age: Duration::from_secs(24 * 3600),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            egress: egress::Egress::default(),
        }
    }
}

/// A stored alarm definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlarmDoc {
    /// The definition.
    pub definition: AlarmDefinition,
    /// Created, epoch milliseconds.
    pub created_ms: i64,
    /// Last configuration change, epoch milliseconds.
    pub updated_ms: i64,
}

/// A stored alarm state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateDoc {
    /// The alarm.
    pub alarm_name: String,
    /// Its state.
    pub state: AlarmState,
    /// StateReason.
    pub reason: String,
    /// StateReasonData.
    pub reason_data: Value,
    /// Last change of the state or the evaluation state.
    pub updated_ms: i64,
    /// Last change of the state.
    pub transitioned_ms: i64,
    /// `EVALUATION_ERROR` while the alarm's query fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation_state: Option<String>,
}

impl StateDoc {
    fn initial(name: &str, now: i64) -> Self {
        Self {
            alarm_name: name.to_string(),
            state: AlarmState::InsufficientData,
            reason: "Unchecked: Initial alarm creation".into(),
            reason_data: Value::Null,
            updated_ms: now,
            transitioned_ms: now,
            evaluation_state: None,
        }
    }
}

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A definition that is refused.
    #[error("{0}")]
    Invalid(#[from] DefinitionError),
    /// No such alarm, filter or destination.
    #[error("{0}")]
    NotFound(String),
    /// Storage or query trouble.
    #[error(transparent)]
    Server(#[from] Error),
}

impl From<watchtrail_query::Error> for ApiError {
    fn from(e: watchtrail_query::Error) -> Self {
        ApiError::Server(Error::Query(e))
    }
}

impl From<watchtrail_storage::Error> for ApiError {
    fn from(e: watchtrail_storage::Error) -> Self {
        ApiError::Server(e.into())
    }
}

/// One state change to record.
#[derive(Debug, Clone)]
struct Change {
    def: AlarmDefinition,
    state: StateDoc,
    transition: Option<(Transition, String)>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn state_history(name: &str, t: &Transition) -> HistoryRow {
    HistoryRow {
        at_ms: t.at_ms,
        alarm_name: name.to_string(),
        item_type: "StateUpdate",
        summary: format!("Alarm updated from {} to {}", t.old_state, t.new_state),
        old_state: Some(t.old_state.to_string()),
        new_state: Some(t.new_state.to_string()),
        reason: Some(t.reason.clone()),
        reason_data: (!t.reason_data.is_null()).then(|| t.reason_data.to_string()),
        history_data: json!({
            "version": "1.0",
            "oldState": {"stateValue": t.old_state, "stateReason": t.old_reason},
            "newState": {"stateValue": t.new_state, "stateReason": t.reason, "stateReasonData": t.reason_data},
        })
        .to_string(),
    }
}

fn config_history(def: &AlarmDefinition, what: &str, at_ms: i64) -> HistoryRow {
    HistoryRow {
        at_ms,
        alarm_name: def.alarm_name.clone(),
        item_type: "ConfigurationUpdate",
        summary: format!("Alarm \"{}\" {what}", def.alarm_name),
        old_state: None,
        new_state: None,
        reason: None,
        reason_data: None,
        history_data: json!({"version": "1.0", "type": what, "updatedAlarm": def}).to_string(),
    }
}

/// The `Action` history item of a finished delivery (none while it is still being retried).
fn action_history(row: &DeliveryRow) -> Option<HistoryRow> {
    let summary = match row.outcome {
        "delivered" => format!("Successfully executed action {}", row.destination),
        "retrying" => return None,
        _ => format!("Failed to execute action {}", row.destination),
    };
    Some(HistoryRow {
        at_ms: row.at_ms,
        alarm_name: row.alarm_name.clone(),
        item_type: "Action",
        summary,
        old_state: None,
        new_state: Some(row.new_state.clone()),
        reason: row.error.clone(),
        reason_data: None,
        history_data: json!({
            "actionState": if row.outcome == "delivered" { "Succeeded" } else { "Failed" },
            "notificationResource": row.destination,
            "deliveryId": row.delivery_id,
            "outcome": row.outcome,
            "attempts": row.attempt,
            "statusCode": row.status_code,
            "error": row.error,
        })
        .to_string(),
    })
}

fn stable_id(parts: &[&str]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, parts.join("\u{1f}").as_bytes());
    hex::encode(&d.as_ref()[..16])
}

/// One alarm's evaluation: its definition, its state before, and the outcome.
type Outcome = (
    AlarmDefinition,
    StateDoc,
    Result<evaluate::Evaluated, String>,
);

/// What the evaluator knows of one tenant.
#[derive(Debug, Default)]
struct TenantView {
    alarms: BTreeMap<String, AlarmDoc>,
    states: HashMap<String, StateDoc>,
    filters: Vec<MetricFilter>,
}

/// The alarm subsystem of one server.
#[derive(Debug)]
pub struct AlarmService {
    control: ControlStore,
    storage: Storage,
    /// Where the points of filters' default values are put, and whose filter cache a change
    /// here refreshes.
    ingest: crate::ingest::Ingest,
    engine: Engine,
    config: AlarmConfig,
    lease: Lease,
    holding: AtomicBool,
    wake: Notify,
    outbox_wake: Notify,
    http: reqwest::Client,
    metrics: Arc<crate::metrics::Metrics>,
}

impl AlarmService {
    /// The subsystem over `storage`, querying through `engine`; `holder` names this server in
    /// the lease.
    ///
    /// # Errors
    /// The webhook HTTP client cannot be built (its TLS roots, say); there is no falling back
    /// to a client without the egress guard.
    pub fn new(
        storage: Storage,
        ingest: crate::ingest::Ingest,
        engine: Engine,
        config: AlarmConfig,
        holder: String,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> crate::Result<Self> {
        // Names resolve through the egress guard, and no proxy stands between it and the
        // address it checked.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(egress::GuardedResolver::new(Arc::new(
                config.egress.clone(),
            ))))
            .build()
            .map_err(|e| crate::Error::Internal(format!("webhook HTTP client: {e}")))?;
        let control = ControlStore::new(storage.object_store(), storage.base_path().clone());
        let lease = Lease::new(
            storage.object_store(),
            storage.base_path(),
            holder,
            config.lease_ttl,
            storage.base_url().scheme() == "file",
        );
        Ok(Self {
            control,
            storage,
            ingest,
            engine,
            config,
            lease,
            holding: AtomicBool::new(false),
            wake: Notify::new(),
            outbox_wake: Notify::new(),
            http,
            metrics,
        })
    }

    /// Whether this server holds the evaluator lease.
    pub fn is_evaluator(&self) -> bool {
        self.holding.load(Ordering::Relaxed)
    }

    /// The control documents this service reads and writes.
    pub fn control(&self) -> &ControlStore {
        &self.control
    }

    // -- recording changes -------------------------------------------------------------------

    async fn append_history(
        &self,
        tenant: &str,
        rows: &[HistoryRow],
        txn: Option<i64>,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = history::history_batch(rows)?;
        match txn {
            Some(v) => {
                self.storage
                    .append_once(
                        tenant,
                        TableKind::AlarmHistory,
                        &batch,
                        (HISTORY_APP_ID.into(), v),
                    )
                    .await?;
            }
            None => {
                self.storage
                    .append_batch(tenant, TableKind::AlarmHistory, &batch)
                    .await?;
            }
        }
        Ok(())
    }

    /// Records changes: history first (once per `txn`), then the outbox, then the states.
    async fn apply(&self, tenant: &str, changes: Vec<Change>, txn: Option<i64>) -> Result<()> {
        let rows: Vec<HistoryRow> = changes
            .iter()
            .filter_map(|c| {
                c.transition
                    .as_ref()
                    .map(|(t, _)| state_history(&c.def.alarm_name, t))
            })
            .collect();
        self.append_history(tenant, &rows, txn).await?;
        let mut queued = false;
        for c in &changes {
            let Some((t, key)) = &c.transition else {
                continue;
            };
            if !c.def.actions_enabled {
                continue;
            }
            for action in c.def.actions_for(t.new_state) {
                let id = stable_id(&[tenant, &c.def.alarm_name, key, action]);
                let entry = OutboxEntry {
                    id: id.clone(),
                    tenant: tenant.to_string(),
                    action: action.clone(),
                    alarm: c.def.clone(),
                    transition: t.clone(),
                    created_ms: t.at_ms,
                    attempts: 0,
                    next_attempt_ms: 0,
                };
                self.control.put(tenant, Doc::Outbox, &id, &entry).await?;
                queued = true;
            }
        }
        for c in &changes {
            self.control
                .put(tenant, Doc::State, &c.def.alarm_name, &c.state)
                .await?;
        }
        if queued {
            self.outbox_wake.notify_one();
        }
        Ok(())
    }

    /// Runs the evaluator and the outbox worker until `stop`; they work only while this server
    /// holds the lease.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        if !self.config.enabled {
            return;
        }
        let worker = tokio::spawn(Arc::clone(&self).deliver_loop(stop.clone()));
        self.evaluate_loop(stop).await;
        let _ = worker.await;
        if self.is_evaluator() {
            self.lease.release().await;
        }
    }
}

fn iso(ms: i64) -> String {
    watchtrail_query::alarm::rule::cloudwatch_time(ms)
}

/// DescribeAlarms' view of an alarm.
fn describe(tenant: &str, doc: &AlarmDoc, state: Option<&StateDoc>) -> Value {
    let mut v = serde_json::to_value(&doc.definition).unwrap_or(Value::Null);
    let initial;
    let state = match state {
        Some(s) => s,
        None => {
            initial = StateDoc::initial(&doc.definition.alarm_name, doc.created_ms);
            &initial
        }
    };
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "AlarmArn".into(),
            json!(webhook::alarm_arn(tenant, &doc.definition.alarm_name)),
        );
        o.insert(
            "AlarmConfigurationUpdatedTimestamp".into(),
            json!(iso(doc.updated_ms)),
        );
        o.insert("StateValue".into(), json!(state.state));
        o.insert("StateReason".into(), json!(state.reason));
        if !state.reason_data.is_null() {
            o.insert(
                "StateReasonData".into(),
                json!(state.reason_data.to_string()),
            );
        }
        o.insert("StateUpdatedTimestamp".into(), json!(iso(state.updated_ms)));
        o.insert(
            "StateTransitionedTimestamp".into(),
            json!(iso(state.transitioned_ms)),
        );
        if let Some(e) = &state.evaluation_state {
            o.insert("EvaluationState".into(), json!(e));
        }
    }
    v
}
