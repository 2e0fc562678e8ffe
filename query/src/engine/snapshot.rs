//! What a query reads: the committed files of a table version plus rows not yet committed.
//!
//! A [`SnapshotSource`] hands out one [`TableSnapshot`] per table per query. The server's source
//! takes the file list and the buffered rows under one lock, so a row is in exactly one of them
//! while a flush is committing; the CLI's [`StoreSource`] reads committed files only.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use deltalake::DeltaTable;
use object_store::path::Path;

use crate::error::Result;
use crate::store::{LOG_GROUP, Storage};
use crate::tables::TableKind;

/// An inclusive range of microseconds since the epoch; `None` ends are open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// Lowest time a row may have.
    pub min: Option<i64>,
    /// Highest time a row may have.
    pub max: Option<i64>,
}

impl TimeRange {
    /// The range that contains everything.
    pub const ALL: TimeRange = TimeRange {
        min: None,
        max: None,
    };

    /// Whether `[lo, hi]` overlaps this range.
    pub fn overlaps(&self, lo: i64, hi: i64) -> bool {
        self.min.is_none_or(|m| hi >= m) && self.max.is_none_or(|m| lo <= m)
    }

    /// Whether `t` is inside the range.
    pub fn contains(&self, t: i64) -> bool {
        self.overlaps(t, t)
    }

    /// Narrows the lower end.
    pub fn at_least(&mut self, t: i64) {
        self.min = Some(self.min.map_or(t, |m| m.max(t)));
    }

    /// Narrows the upper end.
    pub fn at_most(&mut self, t: i64) {
        self.max = Some(self.max.map_or(t, |m| m.min(t)));
    }

    /// Whether no time can be in the range.
    pub fn is_empty(&self) -> bool {
        matches!((self.min, self.max), (Some(a), Some(b)) if a > b)
    }
}

/// One committed data file.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Path inside the store's root.
    pub path: Path,
    /// Size in bytes.
    pub size: u64,
    /// Row count, when the commit recorded it.
    pub rows: Option<u64>,
    /// Minimum and maximum of the table's time column, when the commit recorded them.
    pub time_range: Option<(i64, i64)>,
    /// Logs: the least and greatest log group, when the commit recorded them.
    pub group_range: Option<(String, String)>,
}

/// The data files of one table version.
#[derive(Debug, Clone, Default)]
pub struct TableFiles {
    /// The Delta version; `None` when the table does not exist yet.
    pub version: Option<i64>,
    /// The active files.
    pub files: Vec<DataFile>,
    /// The version of the reading server's application transaction (its WAL progress): rows
    /// with a WAL seq at or below it are in `files`.
    pub committed_seq: Option<i64>,
}

impl TableFiles {
    /// The files of a loaded table, reading each file's statistics from its `add` action.
    /// With `app_id`, also the version of that application transaction.
    ///
    /// # Errors
    /// A table log that cannot be read.
    pub async fn from_table(
        storage: &Storage,
        tenant: &str,
        kind: TableKind,
        table: &DeltaTable,
        app_id: Option<&str>,
    ) -> Result<Self> {
        let state = table.snapshot()?;
        let log = state.snapshot().try_log_data()?;
        let root = storage.table_path(tenant, kind);
        let time_col = kind.time_column();
        let files = log
            .iter()
            .map(|f| {
                let stats = f.stats();
                let (rows, time_range) = parse_stats(stats.as_deref(), time_col);
                let group_range = match kind {
                    TableKind::Logs => parse_string_range(stats.as_deref(), LOG_GROUP),
                    _ => None,
                };
                let rel = f.object_store_path();
                DataFile {
                    path: Path::from_iter(root.parts().chain(rel.parts())),
                    size: u64::try_from(f.size()).unwrap_or_default(),
                    rows,
                    time_range,
                    group_range,
                }
            })
            .collect();
        let committed_seq = match app_id {
            Some(id) => crate::store::transaction_version(table, id).await?,
            None => None,
        };
        Ok(Self {
            version: table.version().and_then(|v| i64::try_from(v).ok()),
            files,
            committed_seq,
        })
    }

    /// Total rows recorded in the files' statistics.
    pub fn rows(&self) -> u64 {
        self.files.iter().filter_map(|f| f.rows).sum()
    }
}

/// Reads a string column's `minValues`/`maxValues` from a Delta stats JSON.
fn parse_string_range(stats: Option<&str>, column: &str) -> Option<(String, String)> {
    let v = serde_json::from_str::<serde_json::Value>(stats?).ok()?;
    let get = |key: &str| Some(v.get(key)?.get(column)?.as_str()?.to_string());
    Some((get("minValues")?, get("maxValues")?))
}

/// Reads `numRecords` and the time column's `minValues`/`maxValues` from a Delta stats JSON.
fn parse_stats(stats: Option<&str>, time_col: &str) -> (Option<u64>, Option<(i64, i64)>) {
    let Some(v) = stats.and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok()) else {
        return (None, None);
    };
    let rows = v.get("numRecords").and_then(serde_json::Value::as_u64);
    let ts = |key: &str| {
        v.get(key)
            .and_then(|m| m.get(time_col))
            .and_then(serde_json::Value::as_str)
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.timestamp_micros())
    };
    let range = match (ts("minValues"), ts("maxValues")) {
        // Delta truncates timestamp statistics to milliseconds: widen the upper end to cover it.
        (Some(lo), Some(hi)) => Some((lo, hi.saturating_add(999))),
        _ => None,
    };
    (rows, range)
}

/// Rows of a table held in memory, not yet in any committed file.
pub trait BufferedRows: fmt::Debug + Send + Sync {
    /// The rows (at least those whose time is in `range`), in the table's schema.
    ///
    /// # Errors
    /// Arrow errors building the batches (a broken invariant).
    fn batches(&self, range: TimeRange) -> Result<Vec<RecordBatch>>;
}

/// Rows already in Arrow form.
#[derive(Debug, Clone)]
pub struct BufferedBatches(pub Vec<RecordBatch>);

impl BufferedRows for BufferedBatches {
    fn batches(&self, _range: TimeRange) -> Result<Vec<RecordBatch>> {
        Ok(self.0.clone())
    }
}

/// Everything one query reads of one table.
#[derive(Debug, Clone, Default)]
pub struct TableSnapshot {
    /// Committed files.
    pub files: Arc<TableFiles>,
    /// Rows not yet committed (none outside the server).
    pub buffered: Vec<Arc<dyn BufferedRows>>,
}

/// Hands out table snapshots to queries.
#[async_trait::async_trait]
pub trait SnapshotSource: fmt::Debug + Send + Sync {
    /// The current snapshot of a tenant's table.
    ///
    /// # Errors
    /// Storage errors.
    async fn snapshot(&self, tenant: &str, kind: TableKind) -> Result<TableSnapshot>;
}

/// Committed files straight from the store: what the CLI reads with `--store`.
#[derive(Debug, Clone)]
pub struct StoreSource {
    storage: Storage,
}

impl StoreSource {
    /// A source over `storage`.
    pub fn new(storage: Storage) -> Self {
        Self { storage }
    }
}

#[async_trait::async_trait]
impl SnapshotSource for StoreSource {
    async fn snapshot(&self, tenant: &str, kind: TableKind) -> Result<TableSnapshot> {
        let files = match self.storage.open_table(tenant, kind).await? {
            Some(table) => {
                TableFiles::from_table(&self.storage, tenant, kind, &table, None).await?
            }
            None => TableFiles::default(),
        };
        Ok(TableSnapshot {
            files: Arc::new(files),
            buffered: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_give_rows_and_a_widened_time_range() {
        let (rows, range) = parse_stats(
            Some(
                r#"{"numRecords":3,"minValues":{"time":"2024-01-01T00:00:00.000Z"},"maxValues":{"time":"2024-01-01T00:00:01.000Z"}}"#,
            ),
            "time",
        );
        assert_eq!(rows, Some(3));
        assert_eq!(range, Some((1_704_067_200_000_000, 1_704_067_201_000_999)));
        assert_eq!(parse_stats(Some("{}"), "time"), (None, None));
        assert_eq!(parse_stats(None, "time"), (None, None));
    }

    #[test]
    fn stats_give_the_log_group_range() {
        let stats =
            r#"{"numRecords":3,"minValues":{"log_group":"/a"},"maxValues":{"log_group":"/z"}}"#;
        assert_eq!(
            parse_string_range(Some(stats), "log_group"),
            Some(("/a".to_string(), "/z".to_string()))
        );
        assert_eq!(parse_string_range(Some("{}"), "log_group"), None);
    }

    #[test]
    fn ranges_overlap_inclusively() {
        let r = TimeRange {
            min: Some(10),
            max: Some(20),
        };
        assert!(r.overlaps(20, 30));
        assert!(r.overlaps(0, 10));
        assert!(!r.overlaps(21, 30));
        assert!(!r.overlaps(0, 9));
        assert!(TimeRange::ALL.overlaps(i64::MIN, i64::MIN));
        let mut e = r;
        e.at_least(25);
        assert!(e.is_empty());
    }
}
