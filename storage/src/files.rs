//! Parquet encoding of table data: one place decides compression, encodings and row groups.

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use arrow::row::{RowConverter, SortField};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::Result;
use crate::store::FileStats;
use watchtrail_model::tables::TableKind;

/// Rows per Parquet row group: large enough for good compression, small enough to prune.
pub const ROW_GROUP_ROWS: usize = 1 << 20;

/// Writer settings for a table kind: ZSTD everywhere, delta-encoded timestamps, dictionaries
/// for the low-cardinality columns (the default), page statistics for pruning.
///
/// Two kinds of column are left out of the defaults, because they cost the writer a comparison
/// or a hash per value and give a reader nothing: the `dimensions` map's keys and values get no
/// statistics (no engine prunes on the min and max of a map entry), and free text (`message`,
/// `eventjson`) gets neither statistics nor a dictionary (nearly every value is new, so the
/// dictionary only fills up and falls back to plain).
pub fn writer_properties(kind: TableKind) -> WriterProperties {
    let time = ColumnPath::from(kind.time_column());
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_column_dictionary_enabled(time.clone(), false)
        .set_column_encoding(time, Encoding::DELTA_BINARY_PACKED);
    match kind {
        TableKind::Metrics => {
            // Metric rows are small: the writer checks page sizes once per mini-batch, and
            // 1,024 rows (the default) made that bookkeeping a visible part of a flush.
            b = b.set_write_batch_size(8192);
            // Floats: byte-stream-split (each byte of the eight in a stream of its own) lets
            // ZSTD find the slow-moving exponent and high mantissa bytes. On TSBS's values it
            // stores 0.46 bytes a value, against 0.65 with a dictionary.
            for col in ["value", "sum", "min", "max"] {
                let path = ColumnPath::from(col);
                b = b
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::BYTE_STREAM_SPLIT);
            }
            for leaf in ["key", "value"] {
                let path =
                    ColumnPath::new(vec!["dimensions".into(), "key_value".into(), leaf.into()]);
                b = b.set_column_statistics_enabled(path, EnabledStatistics::None);
            }
        }
        TableKind::Logs => {
            let ingest = ColumnPath::from("ingest_time");
            b = b
                .set_column_dictionary_enabled(ingest.clone(), false)
                .set_column_encoding(ingest, Encoding::DELTA_BINARY_PACKED);
            b = free_text(b, "message");
        }
        TableKind::Audit => b = free_text(b, "eventjson"),
        TableKind::AlarmHistory | TableKind::WebhookDeliveries => {}
    }
    b.build()
}

fn free_text(
    b: parquet::file::properties::WriterPropertiesBuilder,
    column: &str,
) -> parquet::file::properties::WriterPropertiesBuilder {
    let path = ColumnPath::from(column);
    b.set_column_dictionary_enabled(path.clone(), false)
        .set_column_statistics_enabled(path, EnabledStatistics::None)
}

/// The columns of a kind's storage order (logs: group, stream, time; audit: event source,
/// event name, time).
fn sort_keys(kind: TableKind) -> &'static [&'static str] {
    match kind {
        TableKind::Logs => &["log_group", "log_stream", "time"],
        TableKind::Audit => &["eventsource", "eventname", "eventtime"],
        TableKind::Metrics => &["namespace", "metric_name", "time"],
        TableKind::AlarmHistory | TableKind::WebhookDeliveries => &["alarm_name", "time"],
    }
}

fn key_columns(kind: TableKind, batch: &RecordBatch) -> Vec<ArrayRef> {
    sort_keys(kind)
        .iter()
        .filter_map(|k| batch.column_by_name(k))
        .map(std::sync::Arc::clone)
        .collect()
}

/// Sorts rows by the kind's storage order. Metrics arrive sorted from their buffer.
///
/// # Errors
/// Arrow errors (a broken invariant: the columns exist and are sortable).
pub fn sort_batch(kind: TableKind, batch: &RecordBatch) -> Result<RecordBatch> {
    let columns: Vec<SortColumn> = key_columns(kind, batch)
        .into_iter()
        .map(|values| SortColumn {
            values,
            options: None,
        })
        .collect();
    let indices = lexsort_to_indices(&columns, None)?;
    Ok(take_record_batch(batch, &indices)?)
}

/// `batches` in the kind's storage order, copying as little as it can.
///
/// Logs usually come in already ordered: a request is one stream, its events in time order, and
/// a stream's requests follow each other in time. When each batch is sorted and the batches,
/// ordered by their first row, do not overlap, they are returned in that order as they are (no
/// row is copied; the memory a flush needs stays the buffer's own). Otherwise, all rows are
/// concatenated and sorted.
///
/// # Errors
/// Arrow errors (a broken invariant: the columns exist and are sortable).
pub fn in_storage_order(kind: TableKind, batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let fields: Vec<SortField> = key_columns(kind, first)
        .iter()
        .map(|c| SortField::new(c.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields)?;
    // Per batch: whether it is sorted, and its first and last keys in the row format.
    let mut spans = Vec::with_capacity(batches.len());
    let mut ordered = true;
    for (i, b) in batches.iter().enumerate() {
        if b.num_rows() == 0 {
            continue;
        }
        let rows = converter.convert_columns(&key_columns(kind, b))?;
        let sorted = (1..rows.num_rows()).all(|r| rows.row(r - 1) <= rows.row(r));
        if !sorted {
            ordered = false;
            break;
        }
        let first = rows.row(0).owned();
        let last = rows.row(rows.num_rows() - 1).owned();
        spans.push((first, last, i));
    }
    if ordered {
        spans.sort_by(|a, b| a.0.cmp(&b.0));
        ordered = spans.windows(2).all(|w| w[0].1 <= w[1].0);
    }
    if ordered {
        return Ok(spans
            .into_iter()
            .map(|(_, _, i)| batches[i].clone())
            .collect());
    }
    let all = arrow::compute::concat_batches(&first.schema(), batches)?;
    Ok(vec![sort_batch(kind, &all)?])
}

/// The time window flushed files are cut by: the compaction window, so that a file never holds
/// rows of two windows and its time statistics stay tight.
pub const FILE_WINDOW_US: i64 = 3_600_000_000;

/// Windows beyond this many in one chunk (an import of long history in no particular order)
/// are not split further: the rest share the last file rather than making a small file per
/// hour of years. Compaction merges them later.
pub const MAX_FILES_PER_FLUSH: usize = 16;

/// `batches` cut into groups by [`FILE_WINDOW_US`] windows of the kind's time column, in window
/// order; one group (the batches as they are) when every row falls in one window.
///
/// A chunk of live data spans a minute or two, so this is nearly always one group. It matters
/// when rows of very different times meet in one chunk: an import of last week's CloudTrail
/// files next to the self-audit events of that very import, stamped now. In one file, those
/// would make its time range cover the whole week, and no query could prune it.
///
/// A batch whose rows all fall in one window moves whole; a mixed one is cut with one `take`
/// per window it touches, so the cost is one pass over the rows whatever the window count.
///
/// # Errors
/// Arrow errors (a broken invariant: the time column exists and is a timestamp).
pub fn split_by_window(kind: TableKind, batches: &[RecordBatch]) -> Result<Vec<Vec<RecordBatch>>> {
    use arrow::array::{AsArray as _, UInt32Array};
    use arrow::datatypes::TimestampMicrosecondType;
    let column = kind.time_column();
    let window_of = |t: i64| t.div_euclid(FILE_WINDOW_US);
    let times = |b: &RecordBatch| {
        b.column_by_name(column)
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>().cloned())
            .ok_or_else(|| crate::Error::Invalid(format!("{column} is not a timestamp column")))
    };
    // First and last window of each batch: one min/max pass; rows are looked at one by one
    // only in a batch that spans windows.
    let mut spans = Vec::with_capacity(batches.len());
    let mut windows = std::collections::BTreeSet::new();
    for b in batches {
        let t = times(b)?;
        let span = arrow::compute::min(&t)
            .zip(arrow::compute::max(&t))
            .map(|(lo, hi)| (window_of(lo), window_of(hi)));
        match span {
            Some((lo, hi)) if lo == hi => {
                windows.insert(lo);
            }
            Some(_) => windows.extend(t.values().iter().map(|&x| window_of(x))),
            None => {}
        }
        spans.push((t, span));
    }
    if windows.len() <= 1 {
        return Ok(vec![batches.to_vec()]);
    }
    let windows: Vec<i64> = windows.into_iter().collect();
    let groups = windows.len().min(MAX_FILES_PER_FLUSH);
    // The group of a window: its rank, the overflow sharing the last group.
    let group_of = |w: i64| {
        windows
            .binary_search(&w)
            .unwrap_or_else(|i| i)
            .min(groups - 1)
    };
    let mut out: Vec<Vec<RecordBatch>> = vec![Vec::new(); groups];
    let mut picks: Vec<Vec<u32>> = vec![Vec::new(); groups];
    for (b, (t, span)) in batches.iter().zip(spans) {
        let Some((lo, hi)) = span else { continue };
        // Groups are monotonic in time: equal at both ends, equal throughout.
        if group_of(lo) == group_of(hi) {
            out[group_of(lo)].push(b.clone());
            continue;
        }
        for (row, &x) in t.values().iter().enumerate() {
            picks[group_of(window_of(x))].push(row as u32);
        }
        for (g, rows) in picks.iter_mut().enumerate() {
            if !rows.is_empty() {
                let indices = UInt32Array::from(std::mem::take(rows));
                out[g].push(arrow::compute::take_record_batch(b, &indices)?);
            }
        }
    }
    Ok(out.into_iter().filter(|g| !g.is_empty()).collect())
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, AsArray, StringArray, TimestampMicrosecondArray};

    use super::*;

    /// A log batch of one stream with these times (messages name stream and time).
    fn logs(stream: &str, times: &[i64]) -> RecordBatch {
        let n = times.len();
        let ts = || Arc::new(TimestampMicrosecondArray::from(times.to_vec()).with_timezone("UTC"));
        let text = |f: &dyn Fn(i64) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(times.iter().map(|&t| f(t))))
        };
        RecordBatch::try_new(
            TableKind::Logs.schema(),
            vec![
                ts(),
                ts(),
                text(&|_| "/app".to_string()),
                text(&|_| stream.to_string()),
                text(&|t| format!("{stream}@{t}")),
                Arc::new(StringArray::new_null(n)),
                Arc::new(StringArray::new_null(n)),
            ],
        )
        .expect("batch")
    }

    fn messages(batches: &[RecordBatch]) -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| {
                let m = b
                    .column_by_name("message")
                    .expect("message")
                    .as_string::<i32>();
                (0..m.len())
                    .map(|i| m.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn ordered_streams_are_reordered_without_copying_rows() {
        // Two streams' requests interleaved as they arrived, each in time order.
        let input = vec![
            logs("b", &[1, 2]),
            logs("a", &[5, 6]),
            logs("b", &[3, 9]),
            logs("a", &[7]),
        ];
        let out = in_storage_order(TableKind::Logs, &input).expect("order");
        assert_eq!(
            messages(&out),
            ["a@5", "a@6", "a@7", "b@1", "b@2", "b@3", "b@9"]
        );
        assert_eq!(out.len(), 4, "the batches themselves, not one merged copy");
        let same = |o: &RecordBatch, i: &RecordBatch| {
            o.column_by_name("message").expect("m").to_data().buffers()[1].as_ptr()
                == i.column_by_name("message").expect("m").to_data().buffers()[1].as_ptr()
        };
        assert!(same(&out[0], &input[1]) && same(&out[3], &input[2]));
    }

    #[test]
    fn rows_of_different_hours_are_cut_into_one_group_per_window() {
        let hour = FILE_WINDOW_US;
        // One batch within the first hour, one mixing the first and the third hour.
        let input = vec![logs("a", &[1, 2]), logs("b", &[3, 2 * hour + 5, 4])];
        let groups = split_by_window(TableKind::Logs, &input).expect("split");
        assert_eq!(groups.len(), 2);
        assert_eq!(messages(&groups[0]), ["a@1", "a@2", "b@3", "b@4"]);
        assert_eq!(messages(&groups[1]), [format!("b@{}", 2 * hour + 5)]);
        // One window: the batches as they are.
        let one = split_by_window(TableKind::Logs, &input[..1]).expect("split");
        assert_eq!(one.len(), 1);
        assert_eq!(messages(&one[0]), ["a@1", "a@2"]);
        // Long history shares the last group past the cap; no row is lost.
        let times: Vec<i64> = (0..100).map(|h| h * hour).collect();
        let many = split_by_window(TableKind::Logs, &[logs("c", &times)]).expect("split");
        assert_eq!(many.len(), MAX_FILES_PER_FLUSH);
        let rows: usize = many.iter().flatten().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 100);
        assert_eq!(many[0].iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
    }

    #[test]
    fn overlapping_or_unsorted_batches_are_sorted_as_a_whole() {
        let overlapping = vec![logs("a", &[1, 5]), logs("a", &[3, 4])];
        let out = in_storage_order(TableKind::Logs, &overlapping).expect("order");
        assert_eq!(messages(&out), ["a@1", "a@3", "a@4", "a@5"]);
        let unsorted = vec![logs("a", &[2, 1]), logs("b", &[0])];
        let out = in_storage_order(TableKind::Logs, &unsorted).expect("order");
        assert_eq!(messages(&out), ["a@1", "a@2", "b@0"]);
        assert!(
            in_storage_order(TableKind::Logs, &[])
                .expect("empty")
                .is_empty()
        );
    }
}
