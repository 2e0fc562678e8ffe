//! What a query reads: the committed files of a table version plus rows not yet committed.
//!
//! A [`SnapshotSource`] hands out one [`TableSnapshot`] per table per query. The server's source
//! takes the file list and the buffered rows under one lock, so a row is in exactly one of them
//! while a flush is committing; the CLI's [`StoreSource`] reads committed files only.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use watchtrail_storage::store::Storage;
pub use watchtrail_storage::table_files::{DataFile, TableFiles};

use crate::error::Result;
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
