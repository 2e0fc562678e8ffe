//! The one way data reaches a table: a file is encoded (by [`crate::files`] or
//! [`crate::metrics_file`]), put under the table's directory, and named in one Delta commit.
//! The server's flush, compaction, rollups, retention and the tools all write through here, so
//! file names, statistics in `add` actions and commit semantics are the same for every file.
//!
//! - [`put`] stores an encoded file; [`StreamingFile`] writes one too large to hold in memory.
//! - [`commit_append`] adds files (with the writer's WAL position as an application
//!   transaction, so a retried flush lands once).
//! - [`commit_rewrite`] removes files and adds their replacements atomically (compaction,
//!   rollups, retention), and [`discard`] deletes files whose commit failed.

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Remove, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use object_store::ObjectStoreExt as _;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::file::properties::WriterProperties;
use watchtrail_model::tables::TableKind;

use crate::error::{Error, Result};
use crate::store::{FileStats, LOG_GROUP, Storage, format_micros};
use crate::table_files::DataFile;

/// A file written under a table and not yet committed.
#[derive(Debug, Clone)]
pub struct NewFile {
    /// Its path inside the table (what the `add` action names).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// What the `add` action records about its rows.
    pub stats: FileStats,
}

/// A new data file's name: `part-<label>-<random>.zstd.parquet`. The label says who wrote it
/// (a flush's first WAL position, `compact`, `rollup-300s`, `tool`).
pub fn file_name(label: &str) -> String {
    format!(
        "part-{label}-{}.zstd.parquet",
        uuid::Uuid::new_v4().simple()
    )
}

/// Stores an encoded file as `name` under the tenant's table.
///
/// # Errors
/// Storage errors.
pub async fn put(
    storage: &Storage,
    tenant: &str,
    kind: TableKind,
    name: String,
    bytes: Bytes,
    stats: FileStats,
) -> Result<NewFile> {
    let size = bytes.len() as u64;
    storage
        .object_store()
        .put(
            &storage.table_path(tenant, kind).join(name.as_str()),
            object_store::PutPayload::from_bytes(bytes),
        )
        .await?;
    Ok(NewFile { name, size, stats })
}

/// A file written batch by batch straight to storage (a multipart upload), for rewrites whose
/// output does not fit in memory.
pub struct StreamingFile {
    name: String,
    path: Path,
    writer: AsyncArrowWriter<BufWriter>,
    stats: FileStats,
    kind: TableKind,
}

impl fmt::Debug for StreamingFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamingFile")
            .field("path", &self.path)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl StreamingFile {
    /// Starts the file `name` under the tenant's table, in the table's schema.
    ///
    /// # Errors
    /// Parquet errors.
    pub fn create(
        storage: &Storage,
        tenant: &str,
        kind: TableKind,
        name: String,
        props: WriterProperties,
    ) -> Result<Self> {
        let path = storage.table_path(tenant, kind).join(name.as_str());
        let sink = BufWriter::new(storage.object_store(), path.clone());
        let writer = AsyncArrowWriter::try_new(sink, kind.schema(), Some(props))?;
        Ok(Self {
            name,
            path,
            writer,
            stats: FileStats::default(),
            kind,
        })
    }

    /// Appends rows (in the table's schema and storage order).
    ///
    /// # Errors
    /// Parquet or storage errors.
    pub async fn write(&mut self, batch: &arrow::array::RecordBatch) -> Result<()> {
        self.stats.record(self.kind, batch);
        self.writer.write(batch).await?;
        Ok(())
    }

    /// Bytes written so far (encoded, before the footer).
    pub fn bytes_written(&self) -> u64 {
        self.writer.bytes_written() as u64
    }

    /// Writes the footer and completes the upload.
    ///
    /// # Errors
    /// Parquet or storage errors.
    pub async fn finish(self, storage: &Storage) -> Result<NewFile> {
        self.writer.close().await?;
        let size = storage.object_store().head(&self.path).await?.size;
        Ok(NewFile {
            name: self.name,
            size,
            stats: self.stats,
        })
    }
}

/// Deletes files that were written but will not be committed (best effort: a file left
/// behind is named by no commit, so no reader sees it).
pub async fn discard(storage: &Storage, tenant: &str, kind: TableKind, files: &[NewFile]) {
    let root = storage.table_path(tenant, kind);
    let store = storage.object_store();
    for f in files {
        let _ = store.delete(&root.clone().join(f.name.as_str())).await;
    }
}

/// Commits files already put under the table, recording `txn` as the application transaction
/// `(app_id, version)` in the same atomic commit. The new table version.
///
/// # Errors
/// Storage errors, or a conflict that persisted through the retries.
pub async fn commit_append(
    table: &mut DeltaTable,
    kind: TableKind,
    files: &[NewFile],
    txn: Option<(String, i64)>,
) -> Result<i64> {
    let now = chrono::Utc::now().timestamp_millis();
    let actions = files
        .iter()
        .map(|f| Action::Add(add_action(kind, f, now, true)))
        .collect();
    let mut props = CommitProperties::default();
    if let Some((app_id, version)) = txn {
        props = props.with_application_transaction(Transaction::new(app_id, version));
    }
    let operation = DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: None,
        // An append reads nothing. Without a read predicate Delta's conflict checker takes it
        // to have read every file, and fails it whenever a concurrent rollup or retention
        // commit removes one (`ConcurrentDeleteRead`); `false` says "no file", the truth.
        predicate: Some("false".into()),
    };
    commit(table, props, actions, operation).await
}

/// Removes `removed` and adds `added` in one commit of the table at `table_root`
/// ([`Storage::table_path`]), so a reader sees the old files or the new ones, never both. `data_change` says whether the rows changed (a rollup or a cut) or only
/// their files (a merge). The new table version.
///
/// # Errors
/// A file outside the table; storage errors or a conflict.
pub async fn commit_rewrite(
    table_root: &Path,
    kind: TableKind,
    table: &mut DeltaTable,
    removed: &[DataFile],
    added: &[NewFile],
    data_change: bool,
    operation: DeltaOperation,
) -> Result<i64> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut actions = Vec::with_capacity(removed.len() + added.len());
    for f in removed {
        actions.push(remove_action(
            relative(table_root, &f.path)?,
            f.size,
            data_change,
            now,
        ));
    }
    for f in added {
        actions.push(Action::Add(add_action(kind, f, now, data_change)));
    }
    commit(table, CommitProperties::default(), actions, operation).await
}

async fn commit(
    table: &mut DeltaTable,
    props: CommitProperties,
    actions: Vec<Action>,
    operation: DeltaOperation,
) -> Result<i64> {
    let snapshot = table.snapshot()?.clone();
    let finalized = CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(&snapshot), table.log_store(), operation)
        .await?;
    table.update_incremental(None).await?;
    Ok(finalized.version() as i64)
}

/// The `add` action of a new file, with the statistics readers prune by.
fn add_action(
    kind: TableKind,
    file: &NewFile,
    modification_time_ms: i64,
    data_change: bool,
) -> Add {
    let stats = &file.stats;
    let mut json = serde_json::json!({ "numRecords": stats.num_records });
    if let Some((min, max)) = stats.time_range {
        let col = kind.time_column();
        json["minValues"] = serde_json::json!({ col: format_micros(min) });
        json["maxValues"] = serde_json::json!({ col: format_micros(max) });
        json["nullCount"] = serde_json::json!({ col: 0 });
    }
    if let Some((lo, hi)) = &stats.group_range {
        json["minValues"][LOG_GROUP] = serde_json::json!(lo);
        json["maxValues"][LOG_GROUP] = serde_json::json!(hi);
    }
    Add {
        path: file.name.clone(),
        partition_values: HashMap::new(),
        size: i64::try_from(file.size).unwrap_or(i64::MAX),
        modification_time: modification_time_ms,
        data_change,
        stats: Some(json.to_string()),
        ..Default::default()
    }
}

fn remove_action(rel: String, size: u64, data_change: bool, now_ms: i64) -> Action {
    Action::Remove(Remove {
        path: rel,
        data_change,
        deletion_timestamp: Some(now_ms),
        extended_file_metadata: Some(true),
        size: i64::try_from(size).ok(),
        partition_values: Some(Default::default()),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
    })
}

/// A file's path inside its table (what `add` and `remove` actions name).
fn relative(table_root: &Path, file: &Path) -> Result<String> {
    let root: Vec<_> = table_root.parts().collect();
    let parts: Vec<_> = file.parts().collect();
    if parts.len() <= root.len() || parts[..root.len()] != root[..] {
        return Err(Error::Internal(format!(
            "file {file} is not inside table {table_root}"
        )));
    }
    Ok(parts[root.len()..]
        .iter()
        .map(|p| p.as_ref().to_string())
        .collect::<Vec<_>>()
        .join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_inside_their_table() {
        let root = Path::from("t/metrics");
        assert_eq!(
            relative(&root, &Path::from("t/metrics/part-a.parquet")).ok(),
            Some("part-a.parquet".to_string())
        );
        assert!(relative(&root, &Path::from("t/logs/part-a.parquet")).is_err());
        assert!(relative(&root, &root).is_err());
    }

    #[test]
    fn add_actions_carry_the_statistics_readers_prune_by() {
        let file = NewFile {
            name: file_name("test"),
            size: 10,
            stats: FileStats {
                num_records: 3,
                time_range: Some((0, 1_000_000)),
                group_range: Some(("/a".into(), "/z".into())),
            },
        };
        assert!(file.name.starts_with("part-test-") && file.name.ends_with(".zstd.parquet"));
        let add = add_action(TableKind::Logs, &file, 5, false);
        assert!(!add.data_change);
        let stats: serde_json::Value =
            serde_json::from_str(add.stats.as_deref().unwrap_or_default()).expect("json");
        assert_eq!(stats["numRecords"], 3);
        assert_eq!(stats["minValues"][LOG_GROUP], "/a");
        assert_eq!(stats["maxValues"]["time"], "1970-01-01T00:00:01.000000Z");
    }
}
