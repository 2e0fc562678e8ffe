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
//! - **Resolution tiers** (metrics). As in CloudWatch, rows older than a tier's age are kept
//!   only as statistic sets of the tier's period (by default: after 3 hours, one-minute sets;
//!   after 15 days, five-minute sets; after 63 days, one-hour sets). A rollup sums SampleCount
//!   and Sum and keeps Minimum and Maximum, so every statistic but percentiles stays exact, and
//!   it replaces the finer rows in the same table: queries over old ranges read the coarser
//!   rows with no change. Coarse tiers have wider windows (a day), so a year of hourly data is
//!   a few hundred files, not thousands. A rolled-up file says its period in its name
//!   (`part-rollup-300s-...`), so a pass knows what is left to do from the table log alone.
//! - **Retention.** A file whose latest time is older than the kind's retention is removed (a
//!   Delta `remove` with `dataChange: true`). Log groups can have retentions of their own
//!   (CloudWatch's `PutRetentionPolicy`): the rows of a group whose retention has passed are
//!   cut out of the files that hold them (the table log records each logs file's least and
//!   greatest group), and a file is dropped whole once none of its groups is kept.
//! - **Checkpoints** need nothing here: every commit runs Delta's post-commit hook, which writes
//!   a checkpoint every 100 commits (`delta.checkpointInterval`) and drops commit files past
//!   the log retention, so opening a table stays fast however long it lives.
//! - **Vacuum.** Removed files stay in storage until `grace` has passed, so a query that
//!   listed them before the commit still reads them. Then they are deleted, using only the
//!   table log (Delta's "lite" vacuum), never a listing of the bucket.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::ScalarValue;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{
    DataFrame, Expr, ParquetReadOptions, SessionConfig, SessionContext, col, lit,
};
use deltalake::DeltaTable;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::DeltaOperation;
use futures::StreamExt as _;
use object_store::path::Path;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::store::{LOG_GROUP, Storage};
use crate::table_files::{DataFile, TableFiles};
use watchtrail_model::tables::TableKind;

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
    /// Resolution tiers of `metrics`, finest first; empty keeps every point as it came.
    pub tiers: Vec<Tier>,
}

impl Default for Policy {
    /// One-hour windows, 256 MB files, no retention and no resolution tiers.
    fn default() -> Self {
        Self {
            window: Duration::from_secs(3600),
            target_bytes: 256 << 20,
            settle: Duration::from_secs(600),
            memory_limit: 512 << 20,
            grace: Duration::from_secs(3600),
            retention: BTreeMap::new(),
            tiers: Vec::new(),
        }
    }
}

/// One rewrite of a group of files: their rows, less any dropped log groups, aggregated to a
/// tier's period where one applies, sorted and written as one file per window.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// The input files.
    pub files: Vec<DataFile>,
    /// The window of the output files.
    pub window: Duration,
    /// Metrics: aggregate into statistic sets of this period.
    pub rollup: Option<Duration>,
    /// Logs: rows to leave out.
    pub drop: Option<GroupDrop>,
}

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
    /// Files removed by retention, or cut down to the log groups still kept.
    pub expired: usize,
    /// Rewrites that rolled metrics up to a coarser tier.
    pub rolled_up: usize,
}

fn window_of(time_us: i64, window: Duration) -> i64 {
    let w = (window.as_micros() as i64).max(1);
    time_us.div_euclid(w) * w
}

/// Compacts, rolls up and expires one table by the policy; returns what was done.
///
/// # Errors
/// Storage errors while loading the table; a failing window is logged and skipped.
pub async fn run_table(
    storage: &Storage,
    tenant: &str,
    kind: TableKind,
    policy: &Policy,
) -> Result<PassStats> {
    run_table_with(storage, tenant, kind, policy, &BTreeMap::new()).await
}

/// As [`run_table`], with the retentions of single log groups (CloudWatch's
/// `PutRetentionPolicy`), which take the place of the kind's retention for those groups.
///
/// # Errors
/// Storage errors while loading the table; a failing window is logged and skipped.
pub async fn run_table_with(
    storage: &Storage,
    tenant: &str,
    kind: TableKind,
    policy: &Policy,
    log_groups: &BTreeMap<String, Duration>,
) -> Result<PassStats> {
    let Some(mut table) = storage.open_table(tenant, kind).await? else {
        return Ok(PassStats::default());
    };
    let now_us = chrono::Utc::now().timestamp_micros();
    let mut stats = PassStats::default();
    let retention = policy.retention.get(&kind).copied();
    let mut rewrites = Vec::new();
    if kind == TableKind::Logs && !log_groups.is_empty() {
        let files = TableFiles::from_table(storage, tenant, kind, &table, None).await?;
        let (whole, cut) =
            plan_log_group_retention(&files.files, retention, log_groups, policy.window, now_us);
        let cutoff = now_us - retention.unwrap_or_default().as_micros() as i64;
        stats.expired = expire(storage, tenant, kind, &mut table, &whole, cutoff).await?;
        rewrites.extend(cut);
    } else if let Some(retention) = retention {
        let files = TableFiles::from_table(storage, tenant, kind, &table, None).await?;
        let old = plan_retention(&files.files, retention, now_us);
        let cutoff = now_us - retention.as_micros() as i64;
        stats.expired = expire(storage, tenant, kind, &mut table, &old, cutoff).await?;
    }
    if stats.expired > 0 {
        info!(
            tenant,
            table = kind.name(),
            files = stats.expired,
            "retention removed expired files"
        );
    }
    // Files cut by a group's retention are left out of this pass's compaction plan; the
    // next pass merges what is left of them.
    let cut: std::collections::HashSet<Path> = rewrites
        .iter()
        .flat_map(|r| r.files.iter().map(|f| f.path.clone()))
        .collect();
    let files = TableFiles::from_table(storage, tenant, kind, &table, None).await?;
    let rest: Vec<DataFile> = files
        .files
        .into_iter()
        .filter(|f| !cut.contains(&f.path))
        .collect();
    rewrites.extend(plan_compaction(&rest, policy, kind, now_us));
    for rewrite in rewrites {
        match compact(storage, tenant, kind, &mut table, &rewrite, policy).await {
            Ok(s) => {
                debug!(
                    tenant,
                    table = kind.name(),
                    files_in = s.files_in,
                    files_out = s.files_out,
                    rollup_s = rewrite.rollup.map(|p| p.as_secs()),
                    "rewrote a window"
                );
                if rewrite.drop.is_some() {
                    stats.expired += s.files_in;
                    continue;
                }
                stats.windows += s.windows;
                stats.files_in += s.files_in;
                stats.files_out += s.files_out;
                stats.bytes_in += s.bytes_in;
                stats.bytes_out += s.bytes_out;
                stats.rolled_up += s.rolled_up;
            }
            Err(e) => {
                warn!(tenant, table = kind.name(), error = %e, "compaction of a window failed; it is tried again next pass");
                table.update_incremental(None).await?;
            }
        }
    }
    Ok(stats)
}

mod compact;
mod retention;
mod rollup;
mod vacuum;

pub use compact::{compact, plan_compaction};
pub use retention::{GroupDrop, RETENTION_DAYS, expire, plan_log_group_retention, plan_retention};
use rollup::*;
pub use rollup::{Tier, rollup_period_of};
pub use vacuum::vacuum;

#[cfg(test)]
mod tests;
