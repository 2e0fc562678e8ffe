//! Parquet encoding of table data: one place decides compression, encodings and row groups.

use arrow::array::RecordBatch;
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::Result;
use crate::store::FileStats;
use crate::tables::TableKind;

/// Rows per Parquet row group: large enough for good compression, small enough to prune.
pub const ROW_GROUP_ROWS: usize = 1 << 20;

/// Writer settings for a table kind: ZSTD everywhere, delta-encoded timestamps, dictionaries
/// for the low-cardinality columns (the default), page statistics for pruning.
pub fn writer_properties(kind: TableKind) -> WriterProperties {
    let time = ColumnPath::from(kind.time_column());
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_column_dictionary_enabled(time.clone(), false)
        .set_column_encoding(time, Encoding::DELTA_BINARY_PACKED);
    if kind == TableKind::Logs {
        let ingest = ColumnPath::from("ingest_time");
        b = b
            .set_column_dictionary_enabled(ingest.clone(), false)
            .set_column_encoding(ingest, Encoding::DELTA_BINARY_PACKED);
    }
    b.build()
}

/// Sorts rows by the kind's natural order (logs: group, stream, time; audit: event source,
/// event name, time). Metrics arrive sorted from their buffer.
///
/// # Errors
/// Arrow errors (a broken invariant: the columns exist and are sortable).
pub fn sort_batch(kind: TableKind, batch: &RecordBatch) -> Result<RecordBatch> {
    let keys: &[&str] = match kind {
        TableKind::Logs => &["log_group", "log_stream", "time"],
        TableKind::Audit => &["eventsource", "eventname", "eventtime"],
        TableKind::Metrics => &["namespace", "metric_name", "time"],
        TableKind::AlarmHistory | TableKind::WebhookDeliveries => &["alarm_name", "time"],
    };
    let columns: Vec<SortColumn> = keys
        .iter()
        .filter_map(|k| batch.column_by_name(k))
        .map(|c| SortColumn {
            values: std::sync::Arc::clone(c),
            options: None,
        })
        .collect();
    let indices = lexsort_to_indices(&columns, None)?;
    Ok(take_record_batch(batch, &indices)?)
}

/// Streams batches (already in storage order) into one Parquet file, tracking the statistics
/// Delta's `add` action wants.
pub struct ParquetEncoder {
    kind: TableKind,
    writer: ArrowWriter<Vec<u8>>,
    stats: FileStats,
}

impl std::fmt::Debug for ParquetEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetEncoder")
            .field("kind", &self.kind)
            .field("rows", &self.stats.num_records)
            .finish()
    }
}

impl ParquetEncoder {
    /// Starts a file for a table kind.
    ///
    /// # Errors
    /// Parquet errors (a broken invariant: the schema is valid).
    pub fn new(kind: TableKind) -> Result<Self> {
        Ok(Self {
            kind,
            writer: ArrowWriter::try_new(Vec::new(), kind.schema(), Some(writer_properties(kind)))?,
            stats: FileStats::default(),
        })
    }

    /// Appends a batch.
    ///
    /// # Errors
    /// Arrow or Parquet errors.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.stats.record(self.kind, batch);
        self.writer.write(batch)?;
        Ok(())
    }

    /// Finishes the file: its bytes and statistics.
    ///
    /// # Errors
    /// Parquet errors.
    pub fn finish(self) -> Result<(Bytes, FileStats)> {
        let bytes = self.writer.into_inner()?;
        Ok((Bytes::from(bytes), self.stats))
    }
}
