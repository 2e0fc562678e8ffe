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

use crate::error::{Error, Result};
use crate::store::{FileStats, LOG_GROUP, Storage, add_action};
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

/// A resolution tier: metric rows older than `after` are kept as statistic sets of `period`,
/// in files of one `window` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// Age at which rows move to this tier.
    pub after: Duration,
    /// Width of one statistic set.
    pub period: Duration,
    /// Width of the time window of this tier's files.
    pub window: Duration,
}

impl Tier {
    /// CloudWatch's tiers: finer than a minute for 3 hours, one minute for 15 days, five
    /// minutes for 63 days, then one hour (kept 455 days by the default retention). The
    /// one-minute tier keeps the compaction window; the coarser ones use one-day windows.
    pub fn cloudwatch(window: Duration) -> Vec<Tier> {
        const HOUR: u64 = 3600;
        const DAY: u64 = 24 * HOUR;
        vec![
            Tier {
                after: Duration::from_secs(3 * HOUR),
                period: Duration::from_secs(60),
                window,
            },
            Tier {
                after: Duration::from_secs(15 * DAY),
                period: Duration::from_secs(300),
                window: Duration::from_secs(DAY).max(window),
            },
            Tier {
                after: Duration::from_secs(63 * DAY),
                period: Duration::from_secs(HOUR),
                window: Duration::from_secs(DAY).max(window),
            },
        ]
    }

    /// Checks a list of tiers against the compaction window: ages and periods grow, each
    /// period is at least a second and divides its window, and each window is a multiple of
    /// the compaction window and of the one before it.
    ///
    /// # Errors
    /// The first rule broken, in words.
    pub fn validate(tiers: &[Tier], window: Duration) -> std::result::Result<(), String> {
        let mut prev: Option<&Tier> = None;
        for (i, t) in tiers.iter().enumerate() {
            let (p, w) = (t.period.as_micros(), t.window.as_micros());
            if t.period < Duration::from_secs(1) || w == 0 || w % p != 0 {
                return Err(format!(
                    "tier {}: the period ({:?}) must be at least 1s and divide the window ({:?})",
                    i + 1,
                    t.period,
                    t.window
                ));
            }
            if w % window.as_micros().max(1) != 0 {
                return Err(format!(
                    "tier {}: the window ({:?}) must be a multiple of the compaction window ({window:?})",
                    i + 1,
                    t.window
                ));
            }
            if let Some(prev) = prev
                && (t.after <= prev.after
                    || t.period <= prev.period
                    || t.period.as_micros() % prev.period.as_micros() != 0
                    || w % prev.window.as_micros() != 0)
            {
                return Err(format!(
                    "tier {}: age and period must grow tier by tier, each period a multiple of the one before and each window a multiple of the one before",
                    i + 1
                ));
            }
            prev = Some(t);
        }
        Ok(())
    }
}

/// The prefix of a rolled-up file's name; the period in seconds follows, then `s-`.
const ROLLUP_PREFIX: &str = "part-rollup-";

/// The period a file was rolled up to, read from its name; `None` for a file of raw points.
pub fn rollup_period_of(path: &Path) -> Option<Duration> {
    let rest = path.filename()?.strip_prefix(ROLLUP_PREFIX)?;
    let (secs, _) = rest.split_once("s-")?;
    secs.parse().ok().map(Duration::from_secs)
}

/// The coarsest tier that every row up to `hi` belongs to: its whole window ended `after` ago.
fn tier_for(hi: i64, tiers: &[Tier], now_us: i64) -> Option<usize> {
    tiers.iter().rposition(|t| {
        let w = (t.window.as_micros() as i64).max(1);
        window_of(hi, t.window) + w <= now_us - t.after.as_micros() as i64
    })
}

/// Rows of some log groups that a rewrite leaves out: those of the windows that are wholly
/// past the group's retention.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupDrop {
    /// Groups with a retention of their own, each with the start of its first window kept
    /// (µs): the group's rows before it go.
    pub groups: Vec<(String, i64)>,
    /// Groups without a retention of their own follow the kind's: all but these named ones
    /// lose their rows before the time given.
    pub others: Option<(Vec<String>, i64)>,
}

impl GroupDrop {
    /// The rows that go, as a predicate on `log_group` and time.
    fn predicate(&self) -> Expr {
        let before = |t: i64| {
            col("time").lt(lit(ScalarValue::TimestampMicrosecond(
                Some(t),
                Some(watchtrail_model::tables::UTC.into()),
            )))
        };
        let mut e = lit(false);
        for (g, t) in &self.groups {
            e = e.or(col(LOG_GROUP).eq(lit(g.as_str())).and(before(*t)));
        }
        if let Some((named, t)) = &self.others {
            let others = if named.is_empty() {
                lit(true)
            } else {
                let names = named.iter().map(|g| lit(g.as_str())).collect();
                col(LOG_GROUP).in_list(names, true)
            };
            e = e.or(others.and(before(*t)));
        }
        e
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

/// The retention periods CloudWatch Logs' `PutRetentionPolicy` accepts, in days.
pub const RETENTION_DAYS: [u32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
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
    /// Files removed by retention, or cut down to the log groups still kept.
    pub expired: usize,
    /// Rewrites that rolled metrics up to a coarser tier.
    pub rolled_up: usize,
}

fn window_of(time_us: i64, window: Duration) -> i64 {
    let w = (window.as_micros() as i64).max(1);
    time_us.div_euclid(w) * w
}

/// Groups of files to rewrite, oldest first: small files that share a window are in one
/// group, and so are metric files whose rows are old enough for a coarser tier than the one
/// they are at, whatever their size. A group is worth rewriting when it has two files, one
/// that spans windows, or one that needs a rollup. Windows and rollup periods are the tier's
/// where one applies.
pub fn plan_compaction(
    files: &[DataFile],
    policy: &Policy,
    kind: TableKind,
    now_us: i64,
) -> Vec<Rewrite> {
    let small = policy.target_bytes / 2;
    let settle = policy.settle.as_micros() as i64;
    let tiers: &[Tier] = if kind == TableKind::Metrics {
        &policy.tiers
    } else {
        &[]
    };
    // (tier, first window, last window, needs a rollup, file)
    let mut candidates: Vec<(Option<usize>, i64, i64, bool, DataFile)> = files
        .iter()
        .filter_map(|f| {
            let (lo, hi) = f.time_range?;
            let tier = tier_for(hi, tiers, now_us);
            let needs_rollup =
                tier.is_some_and(|t| rollup_period_of(&f.path).is_none_or(|p| p < tiers[t].period));
            if f.size >= small && !needs_rollup {
                return None;
            }
            let window = tier.map_or(policy.window, |t| tiers[t].window);
            let w = (window.as_micros() as i64).max(1);
            let (first, last) = (window_of(lo, window), window_of(hi, window));
            // Every window the file touches must be over.
            (last + w + settle <= now_us).then(|| (tier, first, last, needs_rollup, f.clone()))
        })
        .collect();
    candidates.sort_by_key(|c| (c.0, c.1, c.2));
    // (tier, last window, files, spans windows or needs a rollup)
    let mut groups: Vec<(Option<usize>, i64, Vec<DataFile>, bool)> = Vec::new();
    for (tier, first, last, needs_rollup, f) in candidates {
        let forced = first != last || needs_rollup;
        match groups.last_mut() {
            Some((t, end, g, must)) if *t == tier && first <= *end => {
                *end = (*end).max(last);
                *must |= forced;
                g.push(f);
            }
            _ => groups.push((tier, last, vec![f], forced)),
        }
    }
    groups
        .into_iter()
        .filter(|(_, _, g, must)| g.len() >= 2 || *must)
        .map(|(tier, _, files, _)| Rewrite {
            files,
            window: tier.map_or(policy.window, |t| tiers[t].window),
            rollup: tier.map(|t| tiers[t].period),
            drop: None,
        })
        .collect()
}

/// What retention does to a logs table whose groups may have retentions of their own:
/// files to drop whole (every row is past its group's retention), and files to rewrite
/// without the rows of windows wholly past a group's retention. `default` is the kind's
/// retention, for groups without one of their own.
pub fn plan_log_group_retention(
    files: &[DataFile],
    default: Option<Duration>,
    groups: &BTreeMap<String, Duration>,
    window: Duration,
    now_us: i64,
) -> (Vec<DataFile>, Vec<Rewrite>) {
    // Rows before this time are in windows that ended a retention ago.
    let first_kept = |r: Duration| window_of(now_us - r.as_micros() as i64, window);
    let default_kept = default.map(first_kept);
    let (mut whole, mut cut) = (Vec::new(), Vec::new());
    for f in files {
        let Some((lo, hi)) = f.time_range else {
            continue;
        };
        let named: Vec<(String, i64)> = groups
            .iter()
            .filter(|(g, _)| {
                f.group_range
                    .as_ref()
                    .is_none_or(|(a, b)| a <= *g && *g <= b)
            })
            .map(|(g, r)| (g.clone(), first_kept(*r)))
            .collect();
        if default_kept.is_some_and(|k| hi < k) && named.iter().all(|(_, k)| hi < *k) {
            whole.push(f.clone());
            continue;
        }
        let gone: Vec<(String, i64)> = named.into_iter().filter(|(_, k)| lo < *k).collect();
        let others = default_kept
            .filter(|k| lo < *k)
            .map(|k| (groups.keys().cloned().collect(), k));
        if gone.is_empty() && others.is_none() {
            continue;
        }
        cut.push(Rewrite {
            files: vec![f.clone()],
            window,
            rollup: None,
            drop: Some(GroupDrop {
                groups: gone,
                others,
            }),
        });
    }
    (whole, cut)
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

/// The rows of a rollup: statistic sets per series and `period`, stamped with the start of
/// the period, in the table's column order. A raw sample `v` counts as the set (1, v, v, v).
fn rollup_frame(df: DataFrame, period: Duration) -> Result<DataFrame> {
    use datafusion::functions::expr_fn::{coalesce, date_bin};
    use datafusion::functions_aggregate::expr_fn::{max, min, sum};
    let stride = lit(ScalarValue::new_interval_mdn(
        0,
        0,
        i64::try_from(period.as_nanos()).unwrap_or(i64::MAX),
    ));
    let origin = lit(ScalarValue::TimestampMicrosecond(
        Some(0),
        Some(watchtrail_model::tables::UTC.into()),
    ));
    let df = df
        .aggregate(
            vec![
                col("namespace"),
                col("metric_name"),
                col("dimensions"),
                col("unit"),
                // date_bin answers in nanoseconds; the table keeps microseconds.
                datafusion::prelude::cast(
                    date_bin(stride, col("time"), origin),
                    watchtrail_model::tables::timestamp_type(),
                )
                .alias("time"),
            ],
            vec![
                sum(coalesce(vec![col("sample_count"), lit(1.0)])).alias("sample_count"),
                sum(coalesce(vec![col("sum"), col("value")])).alias("sum"),
                min(coalesce(vec![col("min"), col("value")])).alias("min"),
                max(coalesce(vec![col("max"), col("value")])).alias("max"),
            ],
        )?
        .select(vec![
            col("namespace"),
            col("metric_name"),
            col("dimensions"),
            col("time"),
            lit(ScalarValue::Float64(None)).alias("value"),
            col("unit"),
            col("sample_count"),
            col("sum"),
            col("min"),
            col("max"),
            lit(60i32).alias("storage_resolution"),
        ])?;
    Ok(df)
}

/// What a rewrite must keep: rows, or (for a rollup) samples. Read from the inputs when the
/// rewrite drops or aggregates rows, else taken from the commit statistics.
async fn expected_weight(
    ctx: &SessionContext,
    paths: &[String],
    kind: TableKind,
    rewrite: &Rewrite,
) -> Result<Option<f64>> {
    use datafusion::functions::expr_fn::coalesce;
    use datafusion::functions_aggregate::expr_fn::{count, sum};
    if rewrite.rollup.is_none() && rewrite.drop.is_none() {
        let files = &rewrite.files;
        return Ok(files
            .iter()
            .all(|f| f.rows.is_some())
            .then(|| files.iter().filter_map(|f| f.rows).sum::<u64>() as f64));
    }
    let mut df = ctx
        .read_parquet(
            paths.to_vec(),
            ParquetReadOptions::default().schema(&kind.schema()),
        )
        .await?;
    if let Some(drop) = &rewrite.drop {
        df = df.filter(drop.predicate().is_not_true())?;
    }
    let measure = match rewrite.rollup {
        Some(_) => sum(coalesce(vec![col("sample_count"), lit(1.0)])),
        None => datafusion::prelude::cast(count(lit(1)), arrow::datatypes::DataType::Float64),
    };
    let batches = df
        .aggregate(vec![], vec![measure.alias("w")])?
        .collect()
        .await?;
    let total = batches.first().filter(|b| b.num_rows() == 1).map(|b| {
        let c = b.column(0);
        let a = arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(c);
        if arrow::array::Array::is_null(a, 0) {
            0.0
        } else {
            a.value(0)
        }
    });
    Ok(total)
}

/// What the rows of a written batch weigh: samples for a rollup, else rows.
fn batch_weight(batch: &arrow::array::RecordBatch, rollup: bool) -> f64 {
    if !rollup {
        return batch.num_rows() as f64;
    }
    batch
        .column_by_name("sample_count")
        .map(|c| {
            let a = arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(c);
            arrow::compute::sum(a).unwrap_or(0.0)
        })
        .unwrap_or(0.0)
}

/// Rewrites the files of `rewrite` as files of one window each (and about the target size at
/// most), leaving out dropped log groups and rolling metrics up where it says so, and swaps
/// them in with one commit. Outputs already written are deleted when the commit fails.
///
/// # Errors
/// Storage, Parquet or DataFusion errors, a rewrite that would not keep every row (or
/// sample) it should, or a commit that conflicted with another.
pub async fn compact(
    storage: &Storage,
    tenant: &str,
    kind: TableKind,
    table: &mut DeltaTable,
    rewrite: &Rewrite,
    policy: &Policy,
) -> Result<PassStats> {
    let inputs = &rewrite.files;
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
    let expected = expected_weight(&ctx, &paths, kind, rewrite).await?;
    let input_rows: Option<u64> = inputs.iter().map(|f| f.rows).sum();
    if rewrite.drop.is_some()
        && rewrite.rollup.is_none()
        && expected.is_some()
        && expected == input_rows.map(|r| r as f64)
    {
        // None of the groups to drop is in these files (their range only said it could be).
        return Ok(PassStats::default());
    }
    let mut df = ctx
        .read_parquet(paths, ParquetReadOptions::default().schema(&schema))
        .await?;
    if let Some(drop) = &rewrite.drop {
        df = df.filter(drop.predicate().is_not_true())?;
    }
    let rollup = rewrite.rollup.filter(|_| kind == TableKind::Metrics);
    if let Some(period) = rollup {
        df = rollup_frame(df, period)?;
    }
    let mut stream = df
        .sort(sort_exprs(kind, rewrite.window))?
        .execute_stream()
        .await?;
    let table_root = storage.table_path(tenant, kind);
    let props = crate::files::writer_properties(kind);
    let mut written: Vec<(String, u64, FileStats)> = Vec::new();
    let mut weight = 0.0;
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
            // The rewritten rows keep the table's schema exactly (nullability included).
            let batch =
                arrow::array::RecordBatch::try_new(Arc::clone(&schema), batch.columns().to_vec())?;
            weight += batch_weight(&batch, rollup.is_some());
            for (window, run) in window_runs(&batch, kind, rewrite.window)? {
                let roll = current.as_ref().is_some_and(|c| {
                    c.3 != window || c.1.bytes_written() as u64 >= policy.target_bytes
                });
                if roll && let Some((name, writer, stats, _)) = current.take() {
                    written.push(finish(name, writer, stats).await?);
                }
                let (_, writer, stats, _) = match current.as_mut() {
                    Some(c) => c,
                    None => {
                        let id = uuid::Uuid::new_v4().simple();
                        let name = match rollup {
                            Some(p) => format!("{ROLLUP_PREFIX}{}s-{id}.zstd.parquet", p.as_secs()),
                            None => format!("part-compact-{id}.zstd.parquet"),
                        };
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
    if let Some(expected) = expected
        && (weight - expected).abs() > 1e-9 * expected.abs().max(1.0)
    {
        cleanup(&written).await;
        let what = if rollup.is_some() { "samples" } else { "rows" };
        return Err(Error::Internal(format!(
            "a rewrite of {} files wrote {weight} {what} where {expected} were expected; nothing committed",
            inputs.len()
        )));
    }
    let now = chrono::Utc::now().timestamp_millis();
    // Only a plain merge leaves the data as it was; a rollup or a cut changes it.
    let data_change = rollup.is_some() || rewrite.drop.is_some();
    let mut actions = Vec::new();
    for f in inputs {
        actions.push(remove_action(
            relative(&table_root, &f.path)?,
            f.size,
            data_change,
        ));
    }
    for (name, size, stats) in &written {
        let mut add = add_action(kind, name.clone(), *size as i64, now, stats);
        add.data_change = data_change;
        actions.push(Action::Add(add));
    }
    let op = match (&rollup, &rewrite.drop) {
        (Some(p), _) => DeltaOperation::Update {
            predicate: Some(format!("rollup to statistic sets of {} s", p.as_secs())),
        },
        (None, Some(_)) => DeltaOperation::Delete {
            predicate: Some("log groups past their retention".into()),
        },
        (None, None) => DeltaOperation::Optimize {
            predicate: None,
            target_size: policy.target_bytes as i64,
        },
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
        rolled_up: usize::from(rollup.is_some()),
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
