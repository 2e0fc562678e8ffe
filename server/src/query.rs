//! SQL inside the server: committed files and buffered rows as one snapshot per table.
//!
//! The file list a query reads and the buffered chunks it reads are taken under the buffer lock,
//! and a chunk is read only if the file list's WAL progress (`committed_seq`, the version of
//! this server's application transaction) does not cover it. A flush swaps its chunk for the new
//! file list under the same lock, so a row is never read twice or missed while it commits.
//! Commits by others (other servers, compaction) are picked up within [`REFRESH`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use watchtrail_query::engine::{SnapshotSource, TableFiles, TableSnapshot};
use watchtrail_query::tables::TableKind;
use watchtrail_storage::deltalake::DeltaTable;
use watchtrail_storage::store::Storage;

use crate::ingest::buffer::{BufferHandle, TableKey};
use crate::wal::lock;

/// How stale a table's file list may be before a query reloads it from the table log.
pub const REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Cached {
    table: Option<DeltaTable>,
    refreshed: Option<Instant>,
}

/// The server's [`SnapshotSource`].
#[derive(Debug)]
pub struct ServerSource {
    storage: Storage,
    buffers: BufferHandle,
    app_id: String,
    tables: Mutex<HashMap<TableKey, Arc<tokio::sync::Mutex<Cached>>>>,
}

impl ServerSource {
    /// A source over `storage` and this server's buffers; `app_id` is the flusher's
    /// application-transaction id.
    pub fn new(storage: Storage, buffers: BufferHandle, app_id: String) -> Self {
        Self {
            storage,
            buffers,
            app_id,
            tables: Mutex::new(HashMap::new()),
        }
    }

    /// Reloads the table's file list if it is older than [`REFRESH`].
    async fn refreshed(&self, key: &TableKey) -> watchtrail_query::Result<Option<Arc<TableFiles>>> {
        let entry = Arc::clone(lock(&self.tables).entry(key.clone()).or_default());
        let mut cached = entry.lock().await;
        if cached.refreshed.is_some_and(|t| t.elapsed() < REFRESH) {
            return Ok(None);
        }
        match &mut cached.table {
            Some(t) => t
                .update_incremental(None)
                .await
                .map_err(watchtrail_storage::Error::from)?,
            None => cached.table = self.storage.open_table(&key.tenant, key.kind).await?,
        }
        cached.refreshed = Some(Instant::now());
        match &cached.table {
            Some(t) => Ok(Some(Arc::new(
                TableFiles::from_table(&self.storage, &key.tenant, key.kind, t, Some(&self.app_id))
                    .await?,
            ))),
            None => Ok(None),
        }
    }
}

#[async_trait::async_trait]
impl SnapshotSource for ServerSource {
    async fn snapshot(
        &self,
        tenant: &str,
        kind: TableKind,
    ) -> watchtrail_query::Result<TableSnapshot> {
        let key = TableKey {
            tenant: tenant.to_string(),
            kind,
        };
        let loaded = self.refreshed(&key).await?;
        Ok(lock(&self.buffers.inner).query_snapshot(&key, loaded))
    }
}

/// At most so many queries of one tenant at a time, so that one tenant's dashboards cannot
/// take every query thread from the others. A query over the limit waits up to
/// `--query-queue-wait` for a slot, then is refused (RESOURCE_EXHAUSTED / 429).
#[derive(Debug, Clone)]
pub struct QueryGate {
    limit: usize,
    wait: Duration,
    tenants: Arc<Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>>,
}

impl QueryGate {
    /// `limit` queries per tenant (at least 1), waiting up to `wait` for a slot.
    pub fn new(limit: usize, wait: Duration) -> Self {
        Self {
            limit: limit.max(1),
            wait,
            tenants: Arc::default(),
        }
    }

    /// How long a query waits for a slot before it is refused.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// A slot for one query of `tenant`, held until the permit is dropped.
    ///
    /// # Errors
    /// The tenant's slots stayed taken for the whole wait; the message says how many.
    pub async fn enter(&self, tenant: &str) -> Result<tokio::sync::OwnedSemaphorePermit, String> {
        let sem = {
            let mut t = lock(&self.tenants);
            Arc::clone(
                t.entry(tenant.to_string())
                    .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.limit))),
            )
        };
        match tokio::time::timeout(self.wait, sem.acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(format!(
                "tenant `{tenant}` already runs {} queries (--tenant-query-concurrency); retry when one ends",
                self.limit
            )),
        }
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;

    #[tokio::test]
    async fn a_tenant_gets_its_slots_and_no_more_and_others_are_not_held_up() {
        let gate = QueryGate::new(2, Duration::from_millis(50));
        let a = gate.enter("acme").await.unwrap();
        let _b = gate.enter("acme").await.unwrap();
        let refused = gate.enter("acme").await.unwrap_err();
        assert!(refused.contains("2 queries"), "{refused}");
        // Another tenant is not affected.
        let _c = gate.enter("other").await.unwrap();
        // A slot given back is taken again.
        drop(a);
        assert!(gate.enter("acme").await.is_ok());
    }
}
