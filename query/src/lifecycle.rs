//! Data lifecycle: compaction of small files per time window, retention by whole windows, and
//! deletion of replaced files after a grace period.
//!
//! - **Windows.** Time is cut into windows (`window` long, aligned to the epoch). A flushed
//!   file may hold rows of several windows (late or backfilled data); compaction rewrites rows
//!   window by window, so that every file it writes holds one window only.
//! - **Compaction.** Small files (under half the target) of windows that ended at least
//!   `settle` ago are grouped: files that share a window belong to the same group. A group of
//!   two or more files, or a single file that spans windows, is rewritten. Its rows are sorted
//!   by window, then in the table's storage order, by DataFusion within a memory limit (it
//!   spills to disk past it), and written as one file per window (or several of about
//!   `target_bytes`). One Delta commit removes the inputs and adds the outputs, both with
//!   `dataChange: false`, so a reader sees the old files or the new ones, never both.
//! - **Retention.** A file whose latest time is older than the kind's retention is removed (a
//!   Delta `remove` with `dataChange: true`).
//! - **Checkpoints** need nothing here: every commit runs Delta's post-commit hook, which writes
//!   a checkpoint every 100 commits (`delta.checkpointInterval`) and drops commit files past
//!   the log retention, so opening a table stays fast however long it lives.
//! - **Vacuum.** Removed files stay in storage until `grace` has passed, so a query that
//!   listed them before the commit still reads them. Then they are deleted, using only the
//!   table log (Delta's "lite" vacuum), never a listing of the bucket.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext, col, lit};
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Remove};
use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::DeltaOperation;
use futures::StreamExt as _;
use object_store::ObjectStoreExt as _;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use tracing::{debug, info, warn};

use crate::engine::{DataFile, TableFiles};
use crate::error::{Error, Result};
use crate::store::{FileStats, Storage, add_action};
use crate::tables::TableKind;

/// How tables are kept.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Width of a time window.
    pub window: Duration,
    /// Size of a compacted file.
    pub target_bytes: u64,
    /// A window is compacted once it ended this long ago (late data has arrived by then).
    pub settle: Duration,
    /// Memory a compaction may use before it spills to disk.
    pub memory_limit: usize,
    /// Replaced and expired files are deleted this long after their removal.
    pub grace: Duration,
    /// Retention per kind; `None` keeps data forever.
    pub retention: BTreeMap<TableKind, Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(3600),
            target_bytes: 256 << 20,
            settle: Duration::from_secs(600),
            memory_limit: 512 << 20,
            grace: Duration::from_secs(3600),
            retention: BTreeMap::new(),
        }
    }
}

/// The retention periods CloudWatch Logs accepts, in days.
pub const RETENTION_DAYS: [u32; 21] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827, 2192, 2557, 2922, 3288,
    3653,
];

/// What one pass over a table did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Windows compacted.
    pub windows: usize,
    /// Files merged away.
    pub files_in: usize,
    /// Files written.
    pub files_out: usize,
    /// Bytes of the merged files.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Files removed by retention.
    pub expired: usize,
}

fn window_of(time_us: i64, window: Duration) -> i64 {
    let w = (window.as_micros() as i64).max(1);
    time_us.div_euclid(w) * w
}

/// Groups of small files to rewrite, oldest first: files that share a window are in one
/// group; a group is worth rewriting when it has two files or one that spans windows.
pub fn plan_compaction(files: &[DataFile], policy: &Policy, now_us: i64) -> Vec<Vec<DataFile>> {
    let small = policy.target_bytes / 2;
    let w = (policy.window.as_micros() as i64).max(1);
    let settle = policy.settle.as_micros() as i64;
    let mut candidates: Vec<(i64, i64, DataFile)> = files
        .iter()
        .filter(|f| f.size < small)
        .filter_map(|f| {
            let (lo, hi) = f.time_range?;
            let (first, last) = (window_of(lo, policy.window), window_of(hi, policy.window));
            // Every window the file touches must be over.
            (last + w + settle <= now_us).then(|| (first, last, f.clone()))
        })
        .collect();
    candidates.sort_by_key(|c| (c.0, c.1));
    let mut groups: Vec<(i64, Vec<DataFile>, bool)> = Vec::new();
    for (first, last, f) in candidates {
        let spans = first != last;
        match groups.last_mut() {
            Some((end, g, mixed)) if first <= *end => {
                *end = (*end).max(last);
                *mixed |= spans;
                g.push(f);
            }
            _ => groups.push((last, vec![f], spans)),
        }
    }
    groups
        .into_iter()
        .filter(|(_, g, mixed)| g.len() >= 2 || *mixed)
        .map(|(_, g, _)| g)
        .collect()
}

/// Files whose every row is older than the kind's retention.
pub fn plan_retention(files: &[DataFile], retention: Duration, now_us: i64) -> Vec<DataFile> {
    let cutoff = now_us - retention.as_micros() as i64;
    files
        .iter()
        .filter(|f| f.time_range.is_some_and(|(_, hi)| hi < cutoff))
        .cloned()
        .collect()
}

/// The sort order of a compacted file: series (or group and stream, or source and name), then
/// time, as the flusher writes them.
fn sort_exprs(kind: TableKind, window: Duration) -> Vec<datafusion::logical_expr::SortExpr> {
    use datafusion::functions_nested::expr_fn::{array_to_string, map_values};
    let asc = |e: datafusion::prelude::Expr| e.sort(true, false);
    let window_us = (window.as_micros() as i64).max(1);
    let window_key =
        datafusion::prelude::cast(col(kind.time_column()), arrow::datatypes::DataType::Int64)
            / lit(window_us);
    let mut keys = vec![asc(window_key)];
    keys.extend(match kind {
        TableKind::Metrics => vec![
            asc(col("namespace")),
            asc(col("metric_name")),
            asc(array_to_string(map_values(col("dimensions")), lit("\u{1}"))),
            asc(col("time")),
        ],
        TableKind::Logs => vec![
            asc(col("log_group")),
            asc(col("log_stream")),
            asc(col("time")),
        ],
        TableKind::Audit => vec![
            asc(col("eventsource")),
            asc(col("eventname")),
            asc(col("eventtime")),
        ],
        TableKind::AlarmHistory | TableKind::WebhookDeliveries => {
            vec![asc(col("alarm_name")), asc(col("time"))]
        }
    });
    keys
}

/// Splits a batch sorted by window into runs of one window each.
fn window_runs(
    batch: &arrow::array::RecordBatch,
    kind: TableKind,
    window: Duration,
) -> Result<Vec<(i64, arrow::array::RecordBatch)>> {
    let Some(c) = batch.column_by_name(kind.time_column()) else {
        return Err(Error::Internal("compaction lost the time column".into()));
    };
    let ts = arrow::array::AsArray::as_primitive::<arrow::datatypes::TimestampMicrosecondType>(c);
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=ts.len() {
        let end_of_run =
            i == ts.len() || window_of(ts.value(i), window) != window_of(ts.value(start), window);
        if end_of_run {
            out.push((
                window_of(ts.value(start), window),
                batch.slice(start, i - start),
            ));
            start = i;
        }
    }
    Ok(out)
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

fn remove_action(rel: String, size: u64, data_change: bool) -> Action {
    Action::Remove(Remove {
        path: rel,
        data_change,
        deletion_timestamp: Some(chrono::Utc::now().timestamp_millis()),
        extended_file_metadata: Some(true),
        size: i64::try_from(size).ok(),
        partition_values: Some(Default::default()),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
    })
}

async fn commit(
    table: &mut DeltaTable,
    actions: Vec<Action>,
    operation: DeltaOperation,
) -> Result<i64> {
    let snapshot = table.snapshot()?.clone();
    let finalized = CommitBuilder::default()
        .with_actions(actions)
        .build(Some(&snapshot), table.log_store(), operation)
        .await?;
    table.update_incremental(None).await?;
    Ok(finalized.version() as i64)
}

/// Rewrites `inputs` as files of one window each (and about the target size at most), and
/// swaps them in with one commit. Outputs already written are deleted when the commit fails.
///
/// # Errors
/// Storage, Parquet or DataFusion errors, or a commit that conflicted with another.
pub async fn compact(
    storage: &Storage,
    tenant: &str,
    kind: TableKind,
    table: &mut DeltaTable,
    inputs: &[DataFile],
    policy: &Policy,
) -> Result<PassStats> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(policy.memory_limit, 1.0)
        .build_arc()?;
    let config = SessionConfig::new().with_target_partitions(1);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let url = url::Url::parse("watchtrail-compact://store")
        .map_err(|e| Error::Internal(e.to_string()))?;
    ctx.register_object_store(&url, storage.object_store());
    let paths: Vec<String> = inputs
        .iter()
        .map(|f| format!("watchtrail-compact://store/{}", f.path))
        .collect();
    let schema = kind.schema();
    let df = ctx
        .read_parquet(paths, ParquetReadOptions::default().schema(&schema))
        .await?
        .sort(sort_exprs(kind, policy.window))?;
    let mut stream = df.execute_stream().await?;
    let table_root = storage.table_path(tenant, kind);
    let props = crate::files::writer_properties(kind);
    let mut written: Vec<(String, u64, FileStats)> = Vec::new();
    let mut current: Option<(String, AsyncArrowWriter<BufWriter>, FileStats, i64)> = None;
    // Closes the open file and notes its size for the commit.
    let finish = |name: String, writer: AsyncArrowWriter<BufWriter>, stats: FileStats| async {
        writer.close().await?;
        let size = storage
            .object_store()
            .head(&table_root.clone().join(name.as_str()))
            .await?
            .size;
        Ok::<_, Error>((name, size, stats))
    };
    let result: Result<()> = async {
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            // The compacted rows keep the table's schema exactly.
            let batch = batch.with_schema(Arc::clone(&schema))?;
            for (window, run) in window_runs(&batch, kind, policy.window)? {
                let roll = current.as_ref().is_some_and(|c| {
                    c.3 != window || c.1.bytes_written() as u64 >= policy.target_bytes
                });
                if roll && let Some((name, writer, stats, _)) = current.take() {
                    written.push(finish(name, writer, stats).await?);
                }
                let (_, writer, stats, _) = match current.as_mut() {
                    Some(c) => c,
                    None => {
                        let name = format!(
                            "part-compact-{}.zstd.parquet",
                            uuid::Uuid::new_v4().simple()
                        );
                        let path = table_root.clone().join(name.as_str());
                        let w = BufWriter::new(storage.object_store(), path);
                        let writer =
                            AsyncArrowWriter::try_new(w, Arc::clone(&schema), Some(props.clone()))?;
                        current.insert((name, writer, FileStats::default(), window))
                    }
                };
                stats.record(kind, &run);
                writer.write(&run).await?;
            }
        }
        if let Some((name, writer, stats, _)) = current.take() {
            written.push(finish(name, writer, stats).await?);
        }
        Ok(())
    }
    .await;
    let cleanup = |written: &Vec<(String, u64, FileStats)>| {
        let store = storage.object_store();
        let paths: Vec<Path> = written
            .iter()
            .map(|(n, _, _)| table_root.clone().join(n.as_str()))
            .collect();
        async move {
            for p in paths {
                let _ = store.delete(&p).await;
            }
        }
    };
    if let Err(e) = result {
        cleanup(&written).await;
        return Err(e);
    }
    let in_rows: i64 = inputs.iter().filter_map(|f| f.rows).map(|r| r as i64).sum();
    let out_rows: i64 = written.iter().map(|w| w.2.num_records).sum();
    if inputs.iter().all(|f| f.rows.is_some()) && in_rows != out_rows {
        cleanup(&written).await;
        return Err(Error::Internal(format!(
            "compaction read {out_rows} rows from files that hold {in_rows}; nothing committed"
        )));
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut actions = Vec::new();
    for f in inputs {
        actions.push(remove_action(
            relative(&table_root, &f.path)?,
            f.size,
            false,
        ));
    }
    for (name, size, stats) in &written {
        let mut add = add_action(kind, name.clone(), *size as i64, now, stats);
        add.data_change = false;
        actions.push(Action::Add(add));
    }
    let op = DeltaOperation::Optimize {
        predicate: None,
        target_size: policy.target_bytes as i64,
    };
    if let Err(e) = commit(table, actions, op).await {
        cleanup(&written).await;
        return Err(e);
    }
    Ok(PassStats {
        windows: 1,
        files_in: inputs.len(),
        files_out: written.len(),
        bytes_in: inputs.iter().map(|f| f.size).sum(),
        bytes_out: written.iter().map(|w| w.1).sum(),
        expired: 0,
    })
}

/// Removes expired files with one commit.
///
/// # Errors
/// Storage or commit errors.
pub async fn expire(
    storage: &Storage,
    tenant: &str,
    kind: TableKind,
    table: &mut DeltaTable,
    files: &[DataFile],
    cutoff_us: i64,
) -> Result<usize> {
    if files.is_empty() {
        return Ok(0);
    }
    let root = storage.table_path(tenant, kind);
    let actions = files
        .iter()
        .map(|f| Ok(remove_action(relative(&root, &f.path)?, f.size, true)))
        .collect::<Result<Vec<_>>>()?;
    let op = DeltaOperation::Delete {
        predicate: Some(format!(
            "{} < '{}'",
            kind.time_column(),
            crate::store::format_micros(cutoff_us)
        )),
    };
    commit(table, actions, op).await?;
    Ok(files.len())
}

/// Compacts and expires one table by the policy; returns what was done.
///
/// # Errors
/// Storage errors while loading the table; a failing window is logged and skipped.
pub async fn run_table(
    storage: &Storage,
    tenant: &str,
    kind: TableKind,
    policy: &Policy,
) -> Result<PassStats> {
    let Some(mut table) = storage.open_table(tenant, kind).await? else {
        return Ok(PassStats::default());
    };
    let now_us = chrono::Utc::now().timestamp_micros();
    let mut stats = PassStats::default();
    if let Some(retention) = policy.retention.get(&kind) {
        let files = TableFiles::from_table(storage, tenant, kind, &table, None).await?;
        let old = plan_retention(&files.files, *retention, now_us);
        let cutoff = now_us - retention.as_micros() as i64;
        stats.expired = expire(storage, tenant, kind, &mut table, &old, cutoff).await?;
        if stats.expired > 0 {
            info!(
                tenant,
                table = kind.name(),
                files = stats.expired,
                "retention removed expired files"
            );
        }
    }
    let files = TableFiles::from_table(storage, tenant, kind, &table, None).await?;
    for group in plan_compaction(&files.files, policy, now_us) {
        match compact(storage, tenant, kind, &mut table, &group, policy).await {
            Ok(s) => {
                debug!(
                    tenant,
                    table = kind.name(),
                    files_in = s.files_in,
                    files_out = s.files_out,
                    "compacted a window"
                );
                stats.windows += 1;
                stats.files_in += s.files_in;
                stats.files_out += s.files_out;
                stats.bytes_in += s.bytes_in;
                stats.bytes_out += s.bytes_out;
            }
            Err(e) => {
                warn!(tenant, table = kind.name(), error = %e, "compaction of a window failed; it is tried again next pass");
                table.update_incremental(None).await?;
            }
        }
    }
    Ok(stats)
}

/// Deletes files removed more than `grace` ago; returns how many.
///
/// # Errors
/// Storage or commit errors.
pub async fn vacuum(
    storage: &Storage,
    tenant: &str,
    kind: TableKind,
    grace: Duration,
) -> Result<usize> {
    let Some(table) = storage.open_table(tenant, kind).await? else {
        return Ok(0);
    };
    let retention =
        chrono::Duration::from_std(grace).map_err(|e| Error::Internal(e.to_string()))?;
    let (_, metrics) = table
        .vacuum()
        .with_mode(VacuumMode::Lite)
        .with_retention_period(retention)
        .with_enforce_retention_duration(false)
        .await?;
    Ok(metrics.files_deleted.len())
}

#[cfg(test)]
mod tests;
