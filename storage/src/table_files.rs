//! The committed files of a table version, read from its Delta log with the statistics each
//! `add` action recorded (rows, time range, log-group range): what queries prune by and what the
//! lifecycle plans from.

use deltalake::DeltaTable;
use object_store::path::Path;
use watchtrail_model::tables::TableKind;

use crate::error::Result;
use crate::store::{LOG_GROUP, Storage};

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
pub(crate) fn parse_stats(
    stats: Option<&str>,
    time_col: &str,
) -> (Option<u64>, Option<(i64, i64)>) {
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
}
