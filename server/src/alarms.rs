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
//! - [`store`]: control documents and the lease.
//! - [`evaluate`]: the SQL of an alarm and one evaluation.
//! - [`webhook`]: destinations, payloads, signatures.
//! - [`history`]: rows of the two tables.

pub mod egress;
pub mod evaluate;
pub mod history;
pub mod store;
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
use watchtrail_query::store::Storage;
use watchtrail_query::tables::TableKind;

use self::history::{DeliveryRow, HistoryRow};
use self::store::{ControlStore, Doc, DocCache, Lease};
use self::webhook::{Attempt, Destination, OutboxEntry, Transition};
use crate::error::{Error, Result};

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

    // -- the API ---------------------------------------------------------------------------

    /// Creates or replaces an alarm. A new alarm starts in INSUFFICIENT_DATA; an update keeps
    /// the state. Whether it was created.
    ///
    /// # Errors
    /// A refused definition, storage errors.
    pub async fn put_alarm(&self, tenant: &str, def: AlarmDefinition) -> Result<bool, ApiError> {
        let now = now_ms();
        let name = def.alarm_name.clone();
        let existing: Option<AlarmDoc> = self.control.get(tenant, Doc::Alarm, &name).await?;
        let created = existing.is_none();
        let doc = AlarmDoc {
            created_ms: existing.as_ref().map_or(now, |d| d.created_ms),
            updated_ms: now,
            definition: def.clone(),
        };
        self.control.put(tenant, Doc::Alarm, &name, &doc).await?;
        if self
            .control
            .get::<StateDoc>(tenant, Doc::State, &name)
            .await?
            .is_none()
        {
            self.control
                .put(tenant, Doc::State, &name, &StateDoc::initial(&name, now))
                .await?;
        }
        let what = if created { "created" } else { "updated" };
        self.append_history(tenant, &[config_history(&def, what, now)], None)
            .await?;
        self.wake.notify_one();
        Ok(created)
    }

    async fn alarm_doc(&self, tenant: &str, name: &str) -> Result<AlarmDoc, ApiError> {
        self.control
            .get::<AlarmDoc>(tenant, Doc::Alarm, name)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("alarm `{name}` does not exist")))
    }

    /// One alarm with its state, shaped like DescribeAlarms' `MetricAlarms` items.
    ///
    /// # Errors
    /// Not found, storage errors.
    pub async fn describe_alarm(&self, tenant: &str, name: &str) -> Result<Value, ApiError> {
        let doc = self.alarm_doc(tenant, name).await?;
        let state = self
            .control
            .get::<StateDoc>(tenant, Doc::State, name)
            .await?;
        Ok(describe(tenant, &doc, state.as_ref()))
    }

    /// Every alarm of the tenant, optionally only names with `prefix` and in `state`.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn describe_alarms(
        &self,
        tenant: &str,
        prefix: Option<&str>,
        state: Option<AlarmState>,
    ) -> Result<Vec<Value>, ApiError> {
        let docs: Vec<AlarmDoc> = self.control.list(tenant, Doc::Alarm).await?;
        let states: HashMap<String, StateDoc> = self
            .control
            .list::<StateDoc>(tenant, Doc::State)
            .await?
            .into_iter()
            .map(|s| (s.alarm_name.clone(), s))
            .collect();
        let mut out: Vec<(String, Value)> = docs
            .iter()
            .filter(|d| prefix.is_none_or(|p| d.definition.alarm_name.starts_with(p)))
            .filter(|d| {
                state.is_none_or(|s| {
                    states
                        .get(&d.definition.alarm_name)
                        .map_or(AlarmState::InsufficientData, |st| st.state)
                        == s
                })
            })
            .map(|d| {
                (
                    d.definition.alarm_name.clone(),
                    describe(tenant, d, states.get(&d.definition.alarm_name)),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, v)| v).collect())
    }

    /// Deletes an alarm (its history stays).
    ///
    /// # Errors
    /// Not found, storage errors.
    pub async fn delete_alarm(&self, tenant: &str, name: &str) -> Result<(), ApiError> {
        let doc = self.alarm_doc(tenant, name).await?;
        self.control.delete(tenant, Doc::Alarm, name).await?;
        self.control.delete(tenant, Doc::State, name).await?;
        self.append_history(
            tenant,
            &[config_history(&doc.definition, "deleted", now_ms())],
            None,
        )
        .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// SetAlarmState: forces a state until the next evaluation; a change notifies as usual.
    ///
    /// # Errors
    /// Not found, storage errors.
    pub async fn set_state(
        &self,
        tenant: &str,
        name: &str,
        state: AlarmState,
        reason: String,
        reason_data: Value,
    ) -> Result<(), ApiError> {
        let doc = self.alarm_doc(tenant, name).await?;
        let now = now_ms();
        let current = self
            .control
            .get::<StateDoc>(tenant, Doc::State, name)
            .await?
            .unwrap_or_else(|| StateDoc::initial(name, now));
        let change = transition_change(
            &doc.definition,
            &current,
            state,
            reason,
            reason_data,
            now,
            None,
            &["set-state", &now.to_string()],
            tenant,
        );
        self.apply(tenant, vec![change], None).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Creates or replaces a metric filter.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn put_filter(&self, tenant: &str, f: &MetricFilter) -> Result<(), ApiError> {
        self.control
            .put(tenant, Doc::Filter, &f.filter_name, f)
            .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// The control documents this service reads and writes.
    pub fn control(&self) -> &ControlStore {
        &self.control
    }

    /// Every metric filter of the tenant.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list_filters(&self, tenant: &str) -> Result<Vec<MetricFilter>, ApiError> {
        let mut v: Vec<MetricFilter> = self.control.list(tenant, Doc::Filter).await?;
        v.sort_by(|a, b| a.filter_name.cmp(&b.filter_name));
        Ok(v)
    }

    /// Deletes a metric filter.
    ///
    /// # Errors
    /// Not found, storage errors.
    pub async fn delete_filter(&self, tenant: &str, name: &str) -> Result<(), ApiError> {
        if !self.control.delete(tenant, Doc::Filter, name).await? {
            return Err(ApiError::NotFound(format!(
                "metric filter `{name}` does not exist"
            )));
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Creates or replaces a destination.
    ///
    /// # Errors
    /// A refused destination, storage errors.
    pub async fn put_destination(&self, tenant: &str, d: &Destination) -> Result<(), ApiError> {
        d.validate()?;
        if let Ok(u) = url::Url::parse(&d.url)
            && let Err(reason) = self.config.egress.check_url(&u)
        {
            return Err(ApiError::Invalid(
                watchtrail_query::alarm::DefinitionError {
                    field: "Url".into(),
                    reason,
                },
            ));
        }
        self.control
            .put(tenant, Doc::Destination, &d.name, d)
            .await?;
        Ok(())
    }

    /// Every destination of the tenant, secrets hidden.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list_destinations(
        &self,
        tenant: &str,
        admin: bool,
    ) -> Result<Vec<Value>, ApiError> {
        let mut v: Vec<Destination> = self.control.list(tenant, Doc::Destination).await?;
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v.iter().map(|d| d.redacted(admin)).collect())
    }

    /// Deletes a destination.
    ///
    /// # Errors
    /// Not found, storage errors.
    pub async fn delete_destination(&self, tenant: &str, name: &str) -> Result<(), ApiError> {
        if !self.control.delete(tenant, Doc::Destination, name).await? {
            return Err(ApiError::NotFound(format!(
                "destination `{name}` does not exist"
            )));
        }
        Ok(())
    }

    /// DescribeAlarmHistory, newest first, from the `alarm_history` table.
    ///
    /// # Errors
    /// Query errors.
    pub async fn history(
        &self,
        tenant: &str,
        name: Option<&str>,
        item_type: Option<&str>,
        max: usize,
    ) -> Result<Vec<Value>, ApiError> {
        let lit = evaluate::lit;
        let mut conds = vec!["true".to_string()];
        if let Some(n) = name {
            conds.push(format!("alarm_name = {}", lit(n)));
        }
        if let Some(t) = item_type {
            conds.push(format!("history_item_type = {}", lit(t)));
        }
        let sql = format!(
            "SELECT alarm_name AS \"AlarmName\", 'MetricAlarm' AS \"AlarmType\", \
             time AS \"Timestamp\", history_item_type AS \"HistoryItemType\", \
             summary AS \"HistorySummary\", history_data AS \"HistoryData\" \
             FROM alarm_history WHERE {} ORDER BY time DESC LIMIT {max}",
            conds.join(" AND ")
        );
        let result = self.engine.collect(tenant, &sql).await?;
        let bytes = watchtrail_query::output::json_rows(&result.batches)?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Server(Error::Internal(e.to_string())))
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

    // -- the evaluator -----------------------------------------------------------------------

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

    async fn load(&self, cache: &mut DocCache) -> Result<BTreeMap<String, TenantView>> {
        let docs = cache.refresh(&self.control).await?;
        let mut out = BTreeMap::new();
        for (tenant, kinds) in docs {
            let mut view = TenantView::default();
            for v in kinds.get(&Doc::Alarm).into_iter().flatten() {
                if let Ok(d) = serde_json::from_value::<AlarmDoc>(v.clone()) {
                    view.alarms.insert(d.definition.alarm_name.clone(), d);
                }
            }
            for v in kinds.get(&Doc::State).into_iter().flatten() {
                if let Ok(s) = serde_json::from_value::<StateDoc>(v.clone()) {
                    view.states.insert(s.alarm_name.clone(), s);
                }
            }
            for v in kinds.get(&Doc::Filter).into_iter().flatten() {
                if let Ok(f) = serde_json::from_value::<MetricFilter>(v.clone()) {
                    view.filters.push(f);
                }
            }
            out.insert(tenant, view);
        }
        Ok(out)
    }

    async fn evaluate_loop(&self, stop: CancellationToken) {
        let delay = self.config.delay.as_millis() as i64;
        let mut next_end = (now_ms() - delay).div_euclid(STEP_MS) * STEP_MS + STEP_MS;
        let mut cache = DocCache::default();
        let mut view = BTreeMap::new();
        let mut loaded_at: Option<tokio::time::Instant> = None;
        let mut lease_at: Option<tokio::time::Instant> = None;
        let renew = self.config.lease_ttl / 3;
        loop {
            if lease_at.is_none_or(|t| t.elapsed() >= renew) {
                let held = self.lease.acquire().await;
                if held != self.is_evaluator() {
                    info!(held, "alarm evaluator lease changed hands");
                }
                self.holding.store(held, Ordering::Relaxed);
                lease_at = Some(tokio::time::Instant::now());
                if held {
                    self.outbox_wake.notify_one();
                }
            }
            let held = self.is_evaluator();
            if held && loaded_at.is_none_or(|t| t.elapsed() >= self.config.refresh) {
                match self.load(&mut cache).await {
                    Ok(v) => view = v,
                    Err(e) => warn!(error = %e, "cannot reload alarm definitions"),
                }
                loaded_at = Some(tokio::time::Instant::now());
            }
            let now = now_ms();
            if now >= next_end + delay {
                if held {
                    self.evaluate_boundary(&mut view, next_end).await;
                }
                next_end += STEP_MS;
                // After a long pause (suspended host, slow storage), skip to the latest boundary.
                let latest = (now - delay).div_euclid(STEP_MS) * STEP_MS;
                if next_end < latest {
                    next_end = latest;
                }
                continue;
            }
            let until_tick = Duration::from_millis((next_end + delay - now).max(1) as u64);
            let sleep = until_tick.min(renew).min(self.config.refresh);
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(sleep) => {}
                () = self.wake.notified() => { loaded_at = None; }
            }
        }
    }

    async fn evaluate_boundary(&self, view: &mut BTreeMap<String, TenantView>, end_ms: i64) {
        let started = std::time::Instant::now();
        self.evaluate_tenants(view, end_ms).await;
        self.metrics
            .alarm_boundary_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    async fn evaluate_tenants(&self, view: &mut BTreeMap<String, TenantView>, end_ms: i64) {
        for (tenant, t) in view.iter_mut() {
            let due: Vec<&AlarmDoc> = t
                .alarms
                .values()
                .filter(|a| a.definition.period < 60 || end_ms % 60_000 == 0)
                .collect();
            if due.is_empty() {
                continue;
            }
            let jobs: Vec<(AlarmDefinition, StateDoc, Vec<MetricFilter>)> =
                due.into_iter()
                    .map(|a| {
                        let def = &a.definition;
                        let current =
                            t.states.get(&def.alarm_name).cloned().unwrap_or_else(|| {
                                StateDoc::initial(&def.alarm_name, a.created_ms)
                            });
                        let matching = t
                            .filters
                            .iter()
                            .filter(|f| {
                                def.query.is_none()
                                    && f.transformation().is_some_and(|tr| {
                                        Some(&tr.metric_namespace) == def.namespace.as_ref()
                                            && Some(&tr.metric_name) == def.metric_name.as_ref()
                                    })
                            })
                            .cloned()
                            .collect();
                        (def.clone(), current, matching)
                    })
                    .collect();
            // Alarms in one namespace that differ only in metric name and dimension values share
            // one query.
            let mut singles = Vec::new();
            let mut groups: BTreeMap<String, Vec<(AlarmDefinition, StateDoc)>> = BTreeMap::new();
            for (def, current, matching) in jobs {
                match evaluate::group_key(&def) {
                    Some(k) if matching.is_empty() => {
                        groups.entry(k).or_default().push((def, current));
                    }
                    _ => singles.push((def, current, matching)),
                }
            }
            let mut work: Vec<futures::future::BoxFuture<'_, Vec<Outcome>>> = Vec::new();
            for (_, group) in groups {
                if group.len() == 1 {
                    let (def, current) = group.into_iter().next().expect("one member");
                    singles.push((def, current, Vec::new()));
                    continue;
                }
                let engine = self.engine.clone();
                let tenant = tenant.clone();
                work.push(Box::pin(async move {
                    let members: Vec<(&AlarmDefinition, AlarmState)> =
                        group.iter().map(|(d, c)| (d, c.state)).collect();
                    let results =
                        evaluate::evaluate_group(&engine, &tenant, &members, end_ms).await;
                    group
                        .into_iter()
                        .zip(results)
                        .map(|((d, c), r)| (d, c, r))
                        .collect()
                }));
            }
            for (def, current, matching) in singles {
                let engine = self.engine.clone();
                let tenant = tenant.clone();
                work.push(Box::pin(async move {
                    let refs: Vec<&MetricFilter> = matching.iter().collect();
                    let result =
                        evaluate::evaluate(&engine, &tenant, &def, &refs, current.state, end_ms)
                            .await;
                    vec![(def, current, result)]
                }));
            }
            let results: Vec<Outcome> = futures::stream::iter(work)
                .buffer_unordered(EVALUATION_CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .flatten()
                .collect();
            let now = now_ms();
            let mut changes = Vec::new();
            for (def, current, result) in results {
                self.metrics.alarm_evaluations.inc();
                let end_key = end_ms.to_string();
                match result {
                    Ok(ev) => {
                        let Some(decision) = ev.decision else {
                            continue;
                        };
                        if decision.state != current.state {
                            let reason = decision.reason(&ev.rule, &ev.points, current.state);
                            let data = decision.reason_data(
                                &ev.rule,
                                &ev.points,
                                &def.statistic_name(),
                                def.period,
                                now,
                            );
                            changes.push(transition_change(
                                &def,
                                &current,
                                decision.state,
                                reason,
                                data,
                                now,
                                None,
                                &[&end_key],
                                tenant,
                            ));
                        } else if current.evaluation_state.is_some() {
                            changes.push(evaluation_state_change(def, &current, None, None, now));
                        }
                    }
                    Err(e) => {
                        self.metrics.alarm_evaluation_failures.inc();
                        debug!(tenant, alarm = %def.alarm_name, error = %e, "alarm evaluation failed");
                        // A failure never counts as OK: an OK alarm can no longer vouch for
                        // itself; an ALARM is not resolved without evidence.
                        let target = if current.state == AlarmState::Ok {
                            AlarmState::InsufficientData
                        } else {
                            current.state
                        };
                        let reason = format!("Evaluation failed: {e}");
                        if target != current.state {
                            changes.push(transition_change(
                                &def,
                                &current,
                                target,
                                reason,
                                json!({"version": "1.0", "error": e}),
                                now,
                                Some("EVALUATION_ERROR"),
                                &[&end_key],
                                tenant,
                            ));
                        } else if current.evaluation_state.is_none() {
                            changes.push(evaluation_state_change(
                                def,
                                &current,
                                Some("EVALUATION_ERROR"),
                                Some(reason),
                                now,
                            ));
                        }
                    }
                }
            }
            if changes.is_empty() {
                continue;
            }
            let states: Vec<StateDoc> = changes.iter().map(|c| c.state.clone()).collect();
            let transitions = changes.iter().filter(|c| c.transition.is_some()).count();
            match self.apply(tenant, changes, Some(end_ms)).await {
                Ok(()) => {
                    self.metrics.alarm_transitions.add(transitions as u64);
                    for s in states {
                        t.states.insert(s.alarm_name.clone(), s);
                    }
                }
                Err(e) => {
                    warn!(tenant, error = %e, "cannot record alarm state changes; the boundary is evaluated again")
                }
            }
        }
    }

    // -- the outbox --------------------------------------------------------------------------

    async fn deliver_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut queue: HashMap<String, OutboxEntry> = HashMap::new();
        let mut loaded_at: Option<tokio::time::Instant> = None;
        loop {
            if !self.is_evaluator() {
                queue.clear();
                loaded_at = None;
            } else {
                if loaded_at.is_none_or(|t| t.elapsed() >= self.config.refresh) {
                    match self.load_outbox().await {
                        Ok(entries) => {
                            for e in entries {
                                queue.entry(e.id.clone()).or_insert(e);
                            }
                        }
                        Err(e) => warn!(error = %e, "cannot read the notification outbox"),
                    }
                    loaded_at = Some(tokio::time::Instant::now());
                }
                let now = now_ms();
                let due: Vec<OutboxEntry> = queue
                    .values()
                    .filter(|e| e.next_attempt_ms <= now)
                    .cloned()
                    .collect();
                if !due.is_empty() {
                    let results: Vec<_> = futures::stream::iter(due)
                        .map(|e| {
                            let this = Arc::clone(&self);
                            async move { this.attempt(e).await }
                        })
                        .buffer_unordered(DELIVERY_CONCURRENCY)
                        .collect()
                        .await;
                    let mut rows: BTreeMap<String, Vec<DeliveryRow>> = BTreeMap::new();
                    for (entry, row, keep) in results {
                        if row.outcome == "delivered" {
                            self.metrics.notifications_delivered.inc();
                        } else {
                            self.metrics.notification_failures.inc();
                        }
                        rows.entry(entry.tenant.clone()).or_default().push(row);
                        if keep {
                            queue.insert(entry.id.clone(), entry);
                        } else {
                            queue.remove(&entry.id);
                        }
                    }
                    for (tenant, rows) in rows {
                        let actions: Vec<HistoryRow> =
                            rows.iter().filter_map(action_history).collect();
                        if let Err(e) = self.append_history(&tenant, &actions, None).await {
                            warn!(tenant, error = %e, "cannot record alarm actions in the history");
                        }
                        let appended = match history::deliveries_batch(&rows) {
                            Ok(b) => self
                                .storage
                                .append_batch(&tenant, TableKind::WebhookDeliveries, &b)
                                .await
                                .map(|_| ())
                                .map_err(Error::from),
                            Err(e) => Err(e),
                        };
                        if let Err(e) = appended {
                            warn!(tenant, error = %e, "cannot record webhook deliveries");
                        }
                    }
                    continue;
                }
            }
            let next = queue.values().map(|e| e.next_attempt_ms).min();
            let sleep = next
                .map(|t| Duration::from_millis((t - now_ms()).clamp(10, 1000) as u64))
                .unwrap_or(Duration::from_secs(1));
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(sleep) => {}
                () = self.outbox_wake.notified() => { loaded_at = None; }
            }
        }
    }

    async fn load_outbox(&self) -> Result<Vec<OutboxEntry>> {
        let mut out = Vec::new();
        for tenant in self.control.tenants().await? {
            out.extend(
                self.control
                    .list::<OutboxEntry>(&tenant, Doc::Outbox)
                    .await?,
            );
        }
        Ok(out)
    }

    /// One delivery attempt: the entry (updated), its row, and whether it stays queued.
    async fn attempt(&self, mut entry: OutboxEntry) -> (OutboxEntry, DeliveryRow, bool) {
        let started = std::time::Instant::now();
        let dest_name = webhook::action_destination(&entry.action).to_string();
        let dest = self
            .control
            .get::<Destination>(&entry.tenant, Doc::Destination, &dest_name)
            .await;
        entry.attempts += 1;
        let mut row = DeliveryRow {
            at_ms: now_ms(),
            delivery_id: entry.id.clone(),
            alarm_name: entry.alarm.alarm_name.clone(),
            destination: entry.action.clone(),
            url: None,
            new_state: entry.transition.new_state.to_string(),
            attempt: entry.attempts as i32,
            outcome: "delivered",
            status_code: None,
            error: None,
            duration_ms: 0,
        };
        let attempt = match dest {
            Ok(Some(d)) => {
                // Tables are read with `read` keys: no credential from the URL goes in.
                row.url = Some(webhook::redacted_url(&d.url));
                match url::Url::parse(&d.url).map(|u| self.config.egress.check_url(&u)) {
                    Ok(Err(why)) => Attempt::Rejected(0, why),
                    _ => webhook::send(&self.http, &d, &entry, self.config.webhook_timeout).await,
                }
            }
            Ok(None) => {
                row.outcome = "undeliverable";
                row.error = Some(format!("no destination named `{dest_name}`"));
                let _ = self
                    .control
                    .delete(&entry.tenant, Doc::Outbox, &entry.id)
                    .await;
                row.duration_ms = started.elapsed().as_millis() as i64;
                return (entry, row, false);
            }
            Err(e) => Attempt::Retry(None, format!("cannot read destination `{dest_name}`: {e}")),
        };
        row.at_ms = now_ms();
        row.duration_ms = started.elapsed().as_millis() as i64;
        let keep = match attempt {
            Attempt::Delivered(code) => {
                row.status_code = Some(i32::from(code));
                false
            }
            Attempt::Rejected(code, why) => {
                row.outcome = "rejected";
                row.status_code = Some(i32::from(code));
                row.error = Some(why);
                false
            }
            Attempt::Retry(code, why) => {
                row.status_code = code.map(i32::from);
                row.error = Some(why);
                let age = now_ms() - entry.created_ms;
                if age >= self.config.webhook_max_age.as_millis() as i64 {
                    row.outcome = "expired";
                    false
                } else {
                    row.outcome = "retrying";
                    let wait = webhook::backoff(
                        &entry.id,
                        entry.attempts,
                        self.config.retry_base,
                        self.config.retry_max,
                    );
                    entry.next_attempt_ms = now_ms() + wait.as_millis() as i64;
                    if let Err(e) = self
                        .control
                        .put(&entry.tenant, Doc::Outbox, &entry.id, &entry)
                        .await
                    {
                        warn!(error = %e, "cannot update a notification in the outbox");
                    }
                    true
                }
            }
        };
        if !keep
            && let Err(e) = self
                .control
                .delete(&entry.tenant, Doc::Outbox, &entry.id)
                .await
        {
            warn!(error = %e, "cannot remove a finished notification from the outbox");
        }
        (entry, row, keep)
    }
}

/// A change of the evaluation state only (the alarm's state stays, nothing is notified).
fn evaluation_state_change(
    def: AlarmDefinition,
    current: &StateDoc,
    evaluation_state: Option<&str>,
    reason: Option<String>,
    now: i64,
) -> Change {
    let mut state = current.clone();
    state.evaluation_state = evaluation_state.map(str::to_string);
    if let Some(r) = reason {
        state.reason = r;
    }
    state.updated_ms = now;
    Change {
        def,
        state,
        transition: None,
    }
}

/// A change of `current` to `new`.
#[allow(clippy::too_many_arguments)]
fn transition_change(
    def: &AlarmDefinition,
    current: &StateDoc,
    new: AlarmState,
    reason: String,
    reason_data: Value,
    now: i64,
    evaluation_state: Option<&str>,
    key: &[&str],
    tenant: &str,
) -> Change {
    let mut reason: String = reason.chars().take(1023).collect();
    if reason.is_empty() {
        reason = "(no reason given)".into();
    }
    let state = StateDoc {
        alarm_name: def.alarm_name.clone(),
        state: new,
        reason: reason.clone(),
        reason_data: reason_data.clone(),
        updated_ms: now,
        transitioned_ms: if new == current.state {
            current.transitioned_ms
        } else {
            now
        },
        evaluation_state: evaluation_state.map(str::to_string),
    };
    let transition = (new != current.state).then(|| {
        let t = Transition {
            old_state: current.state,
            old_reason: current.reason.clone(),
            old_ms: current.transitioned_ms,
            new_state: new,
            reason,
            reason_data,
            at_ms: now,
        };
        let mut parts = vec![tenant, def.alarm_name.as_str(), new.as_str()];
        parts.extend_from_slice(key);
        (t, parts.join("/"))
    });
    Change {
        def: def.clone(),
        state,
        transition,
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
