//! Flushing: buffered rows → Parquet → object storage → Delta commit → WAL truncation.
//!
//! Each commit carries the application transaction `(watchtrail-wal-<server id>, last seq)`, in
//! the same atomic commit as its files. After a crash, replay skips every WAL record at or below
//! that version, and a retry after an ambiguous failure (the commit may have landed) checks it
//! first, so rows reach a table exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use watchtrail_storage::deltalake::DeltaTable;
use watchtrail_storage::store::{self, Storage};
use watchtrail_storage::table_files::TableFiles;
use watchtrail_storage::write;

use watchtrail_query::tables::TableKind;

use super::buffer::{BufferHandle, Chunk, TableKey};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::wal::{Wal, lock};

/// When buffered rows become files.
#[derive(Debug, Clone)]
pub struct FlushConfig {
    /// Flush a table once its buffered rows take this much memory.
    pub max_bytes: usize,
    /// Flush a table once its oldest buffered row is this old.
    pub max_age: Duration,
    /// Flush the largest tables while all buffers together exceed this.
    pub total_max_bytes: usize,
}

/// The application id under which a WAL records its progress in each table.
pub fn app_id(server_id: &str) -> String {
    format!("watchtrail-wal-{server_id}")
}

/// Writes buffered rows to tables in the background.
pub struct Flusher {
    buffers: BufferHandle,
    storage: Storage,
    wal: Wal,
    metrics: Arc<Metrics>,
    config: FlushConfig,
    tables: HashMap<TableKey, DeltaTable>,
    retry_at: HashMap<TableKey, (Instant, Duration)>,
    app_id: String,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Flusher {
    /// A flusher for these buffers.
    pub fn new(
        buffers: BufferHandle,
        storage: Storage,
        wal: Wal,
        metrics: Arc<Metrics>,
        config: FlushConfig,
    ) -> Self {
        let app_id = app_id(wal.server_id());
        Self {
            buffers,
            storage,
            wal,
            metrics,
            config,
            tables: HashMap::new(),
            retry_at: HashMap::new(),
            app_id,
        }
    }

    /// Flushes due tables until `shutdown`, then flushes everything (retrying while storage
    /// answers, up to `drain_timeout`).
    pub async fn run(mut self, shutdown: CancellationToken, drain_timeout: Duration) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => break,
            }
            self.flush_due(false).await;
        }
        info!("flushing all buffered rows before shutdown");
        let deadline = Instant::now() + drain_timeout;
        loop {
            self.retry_at.clear();
            self.flush_due(true).await;
            let left = lock(&self.buffers.inner).rows();
            if left == 0 {
                info!("all rows committed");
                break;
            }
            if Instant::now() > deadline {
                warn!(
                    rows = left,
                    "shutdown drain timed out; the rows stay in the write-ahead log and are replayed on start"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Flushes every table that is due (all of them with `force`), then truncates the WAL.
    pub async fn flush_due(&mut self, force: bool) {
        let due = self.due_tables(force);
        for key in due {
            if let Some((at, _)) = self.retry_at.get(&key)
                && Instant::now() < *at
            {
                continue;
            }
            match self.flush_table(&key).await {
                Ok(()) => {
                    self.retry_at.remove(&key);
                }
                Err(e) => {
                    self.metrics.flush_failures.inc();
                    let backoff = self
                        .retry_at
                        .get(&key)
                        .map_or(Duration::from_millis(500), |(_, b)| {
                            (*b * 2).min(Duration::from_secs(30))
                        });
                    warn!(tenant = %key.tenant, table = %key.kind, error = %e, retry_in = ?backoff, "flush failed");
                    self.retry_at
                        .insert(key.clone(), (Instant::now() + backoff, backoff));
                    // A failed commit may have landed; reload the table before the next try.
                    self.tables.remove(&key);
                }
            }
        }
        let below = lock(&self.buffers.inner).min_uncommitted_seq();
        match self.wal.truncate_below(below) {
            Ok(0) => {}
            Ok(n) => debug!(segments = n, below, "write-ahead log truncated"),
            Err(e) => warn!(error = %e, "write-ahead log truncation failed"),
        }
        self.metrics.wal_bytes.set(self.wal.total_bytes());
        self.metrics
            .buffered_rows
            .set(lock(&self.buffers.inner).rows() as u64);
    }

    fn due_tables(&self, force: bool) -> Vec<TableKey> {
        let b = lock(&self.buffers.inner);
        let mut due: Vec<TableKey> = b
            .tables
            .iter()
            .filter(|(_, t)| {
                t.flushing.is_some()
                    || (t.pending.rows > 0
                        && (force
                            || t.pending.bytes >= self.config.max_bytes
                            || t.pending
                                .since
                                .is_some_and(|s| s.elapsed() >= self.config.max_age)))
            })
            .map(|(k, _)| k.clone())
            .collect();
        if b.bytes() > self.config.total_max_bytes {
            let mut by_size: Vec<(&TableKey, usize)> =
                b.tables.iter().map(|(k, t)| (k, t.pending.bytes)).collect();
            by_size.sort_by_key(|(_, s)| std::cmp::Reverse(*s));
            if let Some((k, _)) = by_size.first()
                && !due.contains(k)
            {
                due.push((*k).clone());
            }
        }
        due
    }

    async fn table(&mut self, key: &TableKey) -> Result<&mut DeltaTable> {
        if !self.tables.contains_key(key) {
            let t = self
                .storage
                .open_or_create_table(&key.tenant, key.kind)
                .await?;
            self.tables.insert(key.clone(), t);
        }
        Ok(self.tables.get_mut(key).expect("inserted above"))
    }

    /// The file list of the table as just committed, holding every row up to WAL seq `seq`.
    async fn committed_files(&mut self, key: &TableKey, seq: i64) -> Result<Arc<TableFiles>> {
        let storage = self.storage.clone();
        let table = self.table(key).await?;
        let mut files =
            TableFiles::from_table(&storage, &key.tenant, key.kind, table, None).await?;
        files.committed_seq = Some(seq);
        Ok(Arc::new(files))
    }

    /// Flushes one table; a logs or audit chunk whose events made metric-filter points first
    /// waits for the tenant's metrics table to commit them, so a crash can never leave the
    /// events committed and their points lost (replay would not see them again).
    async fn flush_table(&mut self, key: &TableKey) -> Result<()> {
        if key.kind != TableKind::Metrics {
            let metrics = TableKey {
                tenant: key.tenant.clone(),
                kind: TableKind::Metrics,
            };
            // Two rounds at most: a metrics chunk already being written, then the pending one.
            for _ in 0..3 {
                let behind = {
                    let b = lock(&self.buffers.inner);
                    let Some(through) = b.tables.get(key).and_then(|t| {
                        t.flushing
                            .as_ref()
                            .map_or(t.pending.derived_through, |f| f.derived_through)
                    }) else {
                        break;
                    };
                    b.tables.get(&metrics).is_some_and(|m| {
                        m.flushing
                            .as_ref()
                            .and_then(|f| f.first_seq)
                            .or(m.pending.first_seq)
                            .is_some_and(|first| first <= through)
                    })
                };
                if !behind {
                    break;
                }
                self.flush_one(&metrics).await?;
            }
        }
        self.flush_one(key).await
    }

    async fn flush_one(&mut self, key: &TableKey) -> Result<()> {
        let chunk: Arc<Chunk> = {
            let mut b = lock(&self.buffers.inner);
            match b.tables.get(key).and_then(|t| t.flushing.clone()) {
                Some(c) => c,
                None => match b.freeze(key) {
                    Some(c) => c,
                    None => return Ok(()),
                },
            }
        };
        let started = Instant::now();
        let last_seq = chunk.last_seq as i64;
        let app_id = self.app_id.clone();
        // A retry after an ambiguous failure: the commit may already be in the table.
        let table = self.table(key).await?;
        table
            .update_incremental(None)
            .await
            .map_err(watchtrail_storage::Error::from)?;
        if let Some(v) = store::transaction_version(table, &app_id)
            .await?
            .filter(|v| *v >= last_seq)
        {
            info!(tenant = %key.tenant, table = %key.kind, last_seq, "flush was already committed");
            let files = self.committed_files(key, v).await?;
            lock(&self.buffers.inner).committed(key, Some(files));
            return Ok(());
        }
        let kind = key.kind;
        let encode_chunk = Arc::clone(&chunk);
        let encoded = tokio::task::spawn_blocking(move || encode_chunk.encode(kind))
            .await
            .map_err(|e| crate::error::Error::Internal(format!("encoder task failed: {e}")))??;
        let first = chunk.first_seq.unwrap_or_default();
        let mut written = Vec::with_capacity(encoded.len());
        for (bytes, stats) in encoded {
            let name = write::file_name(&format!("{first:020}"));
            let file = write::put(&self.storage, &key.tenant, kind, name, bytes, stats).await;
            match file {
                Ok(f) => written.push(f),
                Err(e) => {
                    write::discard(&self.storage, &key.tenant, kind, &written).await;
                    return Err(e.into());
                }
            }
        }
        let size: u64 = written.iter().map(|f| f.size).sum();
        let rows: u64 = written.iter().map(|f| f.stats.num_records as u64).sum();
        // Every file of the chunk lands in one commit, with the WAL position it covers.
        let n_files = written.len() as u64;
        let table = self.table(key).await?;
        let version = write::commit_append(table, kind, &written, Some((app_id, last_seq))).await?;
        let files = self.committed_files(key, last_seq).await?;
        lock(&self.buffers.inner).committed(key, Some(files));
        self.metrics.files_committed.add(n_files);
        self.metrics.bytes_committed.add(size);
        self.metrics.rows_committed.add(rows);
        self.metrics
            .flush_seconds
            .observe(started.elapsed().as_secs_f64());
        debug!(
            tenant = %key.tenant, table = %kind, rows, files = n_files, bytes = size, version,
            elapsed_ms = started.elapsed().as_millis() as u64, "flushed"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use watchtrail_proto::v1::{AuditRecord, PutAuditEventsRequest};
    use watchtrail_query::alarm::MetricFilter;

    use super::*;
    use crate::ingest::buffer::Parts;
    use crate::ingest::derive::TenantFilters;
    use crate::wal::{WalConfig, WalRecord};

    /// The audit chunk of a record whose events made metric points commits only after the
    /// metrics table holds them: a crash between the two commits then leaves the points
    /// committed and the events in the WAL, never the other way round.
    #[tokio::test]
    async fn events_commit_after_the_metric_points_they_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::default());
        let buffers = BufferHandle::new(Arc::clone(&metrics));
        let (wal, _) = Wal::open(
            WalConfig {
                dir: dir.path().to_path_buf(),
                max_bytes: 1 << 30,
                segment_bytes: 1 << 20,
                idempotency_window: Duration::from_secs(3600),
                fsync: false,
            },
            Arc::new(buffers.clone()),
            Arc::clone(&metrics),
        )
        .expect("wal");
        let storage = Storage::from_url("memory://").expect("storage");
        let filters = TenantFilters::new(
            "t",
            vec![
                MetricFilter::from_value(serde_json::json!({
                    "filterName": "all", "filterPattern": "", "logGroupName": "audit",
                    "metricTransformations": [{"metricName": "Events", "metricNamespace": "Sec",
                        "metricValue": "1"}]
                }))
                .expect("filter"),
            ],
        );
        let records: Vec<AuditRecord> = (0..3)
            .map(|i| AuditRecord {
                json: format!(
                    r#"{{"eventID":"e{i}","eventTime":"2023-07-10T11:40:13Z","eventSource":"s3.amazonaws.com"}}"#
                ),
            })
            .collect();
        let derived = filters.derive("audit", records.iter().map(|r| (1, r.json.as_str())));
        buffers.apply_parts(
            WalRecord {
                seq: 5,
                tenant: "t".into(),
                kind: u32::from(TableKind::Audit.tag()),
                audit: Some(PutAuditEventsRequest {
                    idempotency_id: "a".into(),
                    records,
                }),
                derived,
                ..Default::default()
            },
            None,
            Parts::ALL,
        );
        let mut flusher = Flusher::new(
            buffers.clone(),
            storage.clone(),
            wal.clone(),
            Arc::clone(&metrics),
            FlushConfig {
                max_bytes: 1 << 30,
                max_age: Duration::from_secs(3600),
                total_max_bytes: 1 << 30,
            },
        );
        let audit = TableKey {
            tenant: "t".into(),
            kind: TableKind::Audit,
        };
        flusher.flush_table(&audit).await.expect("flush");
        let app = app_id(wal.server_id());
        for kind in [TableKind::Metrics, TableKind::Audit] {
            let table = storage
                .open_table("t", kind)
                .await
                .expect("open")
                .unwrap_or_else(|| panic!("{kind} was committed"));
            assert_eq!(
                store::transaction_version(&table, &app).await.expect("txn"),
                Some(5),
                "{kind}"
            );
        }
        assert_eq!(lock(&buffers.inner).rows(), 0);
    }
}
