//! The ingest path: validate → write-ahead log (group commit) → memory buffer → flush to tables.
//!
//! # Layout
//! - [`limits`], [`validate`]: the CloudWatch/CloudTrail limits and the request checks, with
//!   the canonical form stored in the WAL (they live in `watchtrail_query`, so the fuzz targets
//!   build them without the server).
//! - [`audit_json`]: CloudTrail JSON → `audit` rows and batches.
//! - [`buffer`]: durable-but-uncommitted rows per table.
//! - [`flush`]: rows → Parquet → Delta commit → WAL truncation.

pub mod audit_json;
pub mod buffer;
pub mod derive;
pub mod flush;
#[cfg(test)]
mod robustness;
pub use watchtrail_query::{limits, validate};

use std::collections::HashMap;
use std::sync::Arc;

use tracing::info;
use watchtrail_proto::v1::{
    IngestResponse, PutAuditEventsRequest, PutLogEventsRequest, PutMetricDataRequest,
};
use watchtrail_query::alarm::AUDIT_LOG_GROUP;
use watchtrail_query::tables::TableKind;
use watchtrail_storage::store::{self, Storage};

use crate::error::Result;
use crate::metrics::Metrics;
use crate::wal::{Replay, Wal, WalRecord, now_ms};
use buffer::BufferHandle;

/// Work a request handler did that the WAL writer can reuse when it applies the record.
#[derive(Debug)]
pub enum Prepared {
    /// Parsed CloudTrail events (parsing once, in the handler's task, keeps the writer fast).
    Audit(Vec<audit_json::AuditEvent>),
}

/// Accepts validated requests into the WAL.
#[derive(Debug, Clone)]
pub struct Ingest {
    wal: Wal,
    metrics: Arc<Metrics>,
    buffers: BufferHandle,
    storage: Storage,
    filters: Arc<derive::Filters>,
}

impl Ingest {
    /// An ingest front for this WAL.
    pub fn new(wal: Wal, metrics: Arc<Metrics>, buffers: BufferHandle, storage: Storage) -> Self {
        let control = watchtrail_storage::control::ControlStore::new(
            storage.object_store(),
            storage.base_path().clone(),
        );
        Self {
            wal,
            metrics,
            buffers,
            storage,
            filters: Arc::new(derive::Filters::new(control, derive::FILTER_TTL)),
        }
    }

    /// The metric filters applied at ingest (the alarm API forgets a tenant's after a change).
    pub fn filters(&self) -> &Arc<derive::Filters> {
        &self.filters
    }

    fn count(&self, kind: TableKind, accepted: u64, rejected: usize) {
        self.metrics.records_accepted.get(kind).add(accepted);
        self.metrics.records_rejected.get(kind).add(rejected as u64);
    }

    fn record(
        tenant: &str,
        kind: TableKind,
        id: &str,
        accepted: u64,
        rejected: Vec<watchtrail_proto::v1::RejectedItem>,
        received_ms: i64,
    ) -> WalRecord {
        WalRecord {
            seq: 0,
            tenant: tenant.to_string(),
            kind: u32::from(kind.tag()),
            idempotency_id: id.to_string(),
            received_ms,
            accepted,
            rejected,
            ..Default::default()
        }
    }

    /// Validates and durably stores metric data.
    ///
    /// # Errors
    /// Validation errors, or UNAVAILABLE when the WAL cannot take it.
    pub async fn put_metrics(
        &self,
        tenant: &str,
        req: PutMetricDataRequest,
    ) -> Result<IngestResponse> {
        self.put_metrics_with(tenant, req, false).await
    }

    /// As [`Ingest::put_metrics`], but one refused datum refuses the whole request before
    /// anything is written (CloudWatch's `PutMetricData` rule).
    ///
    /// # Errors
    /// The first refused datum, named; validation errors; UNAVAILABLE when the WAL cannot take it.
    pub async fn put_metrics_all_or_nothing(
        &self,
        tenant: &str,
        req: PutMetricDataRequest,
    ) -> Result<IngestResponse> {
        self.put_metrics_with(tenant, req, true).await
    }

    async fn put_metrics_with(
        &self,
        tenant: &str,
        req: PutMetricDataRequest,
        all_or_nothing: bool,
    ) -> Result<IngestResponse> {
        let now = now_ms();
        let points: usize = req.metric_data.len()
            + req
                .series
                .iter()
                .map(|s| s.values.len() + s.statistic_points.len())
                .sum::<usize>();
        let v = validate::validate_metrics(req, now)
            .inspect_err(|_| self.count(TableKind::Metrics, 0, points))?;
        if all_or_nothing && let Some(r) = v.rejected.first() {
            self.count(TableKind::Metrics, 0, points);
            return Err(crate::error::Error::InvalidArgument {
                field: r.field.clone(),
                reason: r.reason.clone(),
            });
        }
        let mut rec = Self::record(
            tenant,
            TableKind::Metrics,
            &v.canonical.idempotency_id,
            v.accepted,
            v.rejected,
            now,
        );
        let rejected = rec.rejected.len();
        rec.metrics = Some(v.canonical);
        let resp = self.wal.append(rec, None).await?;
        if !resp.duplicate {
            self.count(TableKind::Metrics, resp.accepted, rejected);
        }
        Ok(resp)
    }

    /// Validates and durably stores log events.
    ///
    /// # Errors
    /// Validation errors, or UNAVAILABLE when the WAL cannot take it.
    pub async fn put_logs(&self, tenant: &str, req: PutLogEventsRequest) -> Result<IngestResponse> {
        let now = now_ms();
        let n = req.log_events.len();
        let v =
            validate::validate_logs(req, now).inspect_err(|_| self.count(TableKind::Logs, 0, n))?;
        let mut rec = Self::record(
            tenant,
            TableKind::Logs,
            &v.canonical.idempotency_id,
            v.accepted,
            v.rejected,
            now,
        );
        let rejected = rec.rejected.len();
        let filters = self.filters.tenant(tenant).await;
        if filters.reads(&v.canonical.log_group_name) {
            rec.derived = filters.derive(
                &v.canonical.log_group_name,
                v.canonical
                    .log_events
                    .iter()
                    .map(|e| (e.timestamp_ms, e.message.as_str())),
            );
        }
        rec.logs = Some(v.canonical);
        let resp = self.wal.append(rec, None).await?;
        if !resp.duplicate {
            self.count(TableKind::Logs, resp.accepted, rejected);
        }
        Ok(resp)
    }

    /// Validates and durably stores audit events.
    ///
    /// # Errors
    /// Validation errors, or UNAVAILABLE when the WAL cannot take it.
    pub async fn put_audit(
        &self,
        tenant: &str,
        req: PutAuditEventsRequest,
    ) -> Result<IngestResponse> {
        self.put_audit_with(tenant, req, false).await
    }

    /// [`Ingest::put_audit`] for the server's own audit trail, which may use the WAL's reserve
    /// (see [`crate::wal::Wal::append_reserved`]).
    ///
    /// # Errors
    /// As [`Ingest::put_audit`].
    pub async fn put_self_audit(
        &self,
        tenant: &str,
        req: PutAuditEventsRequest,
    ) -> Result<IngestResponse> {
        self.put_audit_with(tenant, req, true).await
    }

    async fn put_audit_with(
        &self,
        tenant: &str,
        req: PutAuditEventsRequest,
        reserved: bool,
    ) -> Result<IngestResponse> {
        let now = now_ms();
        let n = req.records.len();
        let v =
            validate::validate_audit(req).inspect_err(|_| self.count(TableKind::Audit, 0, n))?;
        self.buffers
            .ensure_audit_ids(&self.storage, tenant)
            .await
            .map_err(|e| {
                crate::error::Error::Unavailable(format!("cannot read the audit table: {e}"))
            })?;
        let parsed: Vec<(audit_json::AuditEvent, &str)> = v
            .canonical
            .records
            .iter()
            .filter_map(|r| {
                audit_json::parse_event(&r.json)
                    .ok()
                    .map(|e| (e, r.json.as_str()))
            })
            .collect();
        let filters = self.filters.tenant(tenant).await;
        let derived = if filters.reads(AUDIT_LOG_GROUP) {
            filters.derive(
                AUDIT_LOG_GROUP,
                parsed
                    .iter()
                    .map(|(e, json)| (e.event_time_us.div_euclid(1000), *json)),
            )
        } else {
            None
        };
        let events: Vec<audit_json::AuditEvent> = parsed.into_iter().map(|(e, _)| e).collect();
        // Only the server writes its own trail: an event that arrives through any ingest door
        // (gRPC, the agent's intake, an import) may not read as one of the server's.
        if !reserved
            && let Some(i) = events.iter().position(|e| {
                e.row["eventsource"].as_str().is_some_and(|s| {
                    s.trim()
                        .eq_ignore_ascii_case(crate::self_audit::EVENT_SOURCE)
                })
            })
        {
            self.count(TableKind::Audit, 0, n);
            return Err(crate::error::Error::InvalidArgument {
                field: format!("records[{i}].eventSource"),
                reason: format!(
                    "`{}` is reserved for the server's own events and cannot be ingested",
                    crate::self_audit::EVENT_SOURCE
                ),
            });
        }
        let mut rec = Self::record(
            tenant,
            TableKind::Audit,
            &v.canonical.idempotency_id,
            v.accepted,
            v.rejected,
            now,
        );
        rec.audit = Some(v.canonical);
        rec.server_event = reserved;
        rec.derived = derived;
        let prepared = Some(Prepared::Audit(events));
        let resp = match reserved {
            true => self.wal.append_reserved(rec, prepared).await?,
            false => self.wal.append(rec, prepared).await?,
        };
        if !resp.duplicate {
            self.count(TableKind::Audit, resp.accepted, 0);
        }
        Ok(resp)
    }
}

/// Applies replayed WAL records to the buffers, skipping those each table already holds.
///
/// Needs the tables' commit logs, so it waits for object storage (retrying) when it is down:
/// applying without knowing could store rows twice.
///
/// # Errors
/// Only when the shutdown signal arrives while storage is still unreachable.
pub async fn replay(
    replay: Replay,
    buffers: &BufferHandle,
    storage: &Storage,
    server_id: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<()> {
    let app = flush::app_id(server_id);
    let mut committed: HashMap<(String, TableKind), i64> = HashMap::new();
    let (mut applied, mut skipped) = (0usize, 0usize);
    for record in replay.records {
        let Some(kind) = TableKind::from_tag(record.kind as u8) else {
            buffers.skip(record.seq);
            continue;
        };
        let mut is_new = async |kind: TableKind| -> Result<bool> {
            let key = (record.tenant.clone(), kind);
            let version = match committed.get(&key) {
                Some(v) => *v,
                None => {
                    let v = committed_version(storage, &key.0, kind, &app, shutdown).await?;
                    committed.insert(key, v);
                    v
                }
            };
            Ok(record.seq as i64 > version)
        };
        let main = is_new(kind).await?;
        // The metrics that metric filters made from this record have their own table.
        let derived = record.derived.is_some() && is_new(TableKind::Metrics).await?;
        if !main && !derived {
            buffers.skip(record.seq);
            skipped += 1;
        } else {
            if main && kind == TableKind::Audit {
                wait_for_storage(shutdown, || {
                    buffers.ensure_audit_ids(storage, &record.tenant)
                })
                .await?;
            }
            buffers.apply_parts(record, None, buffer::Parts { main, derived });
            applied += 1;
        }
    }
    info!(applied, skipped, "write-ahead log replayed");
    Ok(())
}

async fn wait_for_storage<F, Fut>(
    shutdown: &tokio_util::sync::CancellationToken,
    mut attempt: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), watchtrail_storage::Error>>,
{
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "storage unreachable during replay; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return Err(crate::error::Error::Unavailable("shut down during replay".into())),
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}

async fn committed_version(
    storage: &Storage,
    tenant: &str,
    kind: TableKind,
    app: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<i64> {
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        let attempt = async {
            match storage.open_table(tenant, kind).await? {
                Some(t) => Ok::<_, watchtrail_storage::Error>(
                    store::transaction_version(&t, app).await?.unwrap_or(-1),
                ),
                None => Ok(-1),
            }
        };
        match attempt.await {
            Ok(v) => return Ok(v),
            Err(e) => {
                tracing::warn!(%tenant, table = %kind, error = %e, "cannot read the table to replay the write-ahead log; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return Err(crate::error::Error::Unavailable("shut down during replay".into())),
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}
