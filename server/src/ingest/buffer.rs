//! Rows that are durable in the WAL but not yet committed to a table.
//!
//! Each (tenant, kind) has a `pending` chunk that new records extend, and at most one `flushing`
//! chunk being written. One flush at a time per table keeps commits in WAL order, which is what
//! lets the Delta application transaction (`txn`) record "everything up to seq N is in".
//!
//! Metric series are interned: a point costs a series number, a time and a value, however many
//! dimensions its series has.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::{
    ArrayRef, Float64Array, Int32Array, MapArray, NullBufferBuilder, RecordBatch, StringArray,
    StringBuilder, StructArray, TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::DataType;
use tracing::warn;
use watchtrail_proto::v1::{MetricSeries, PutLogEventsRequest};
use watchtrail_query::engine::{
    BufferedBatches, BufferedRows, TableFiles, TableSnapshot, TimeRange,
};
use watchtrail_query::tables::{TableKind, UTC};
use watchtrail_storage::files::{ParquetEncoder, ROW_GROUP_ROWS};
use watchtrail_storage::metrics_file::{MetricsFileWriter, PointColumns, SeriesKey};
use watchtrail_storage::store::FileStats;

use super::Prepared;
use super::audit_json::{self, AuditEvent};
use crate::metrics::Metrics;
use crate::wal::{Applier, WalRecord, lock};

/// Rows of one metrics chunk handed to the Parquet encoder at a time.
const METRICS_BATCH_ROWS: usize = 64 * 1024;
/// Bound on the bytes of one string column of a metrics batch (Arrow's 32-bit offsets end at
/// 2 GiB; 30 dimensions of 1,024-character values reach that well before 64 Ki rows).
const BATCH_STRING_BYTES: usize = 256 << 20;
/// Threads a large metrics chunk is encoded on, at most.
const MAX_ENCODE_THREADS: usize = 8;
/// Rows per file below which a metrics chunk is not cut across threads.
const MIN_ROWS_PER_PART: usize = 1 << 20;
/// What applying one WAL record did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Rows added to the buffer.
    pub rows: usize,
    /// Audit events dropped because an event with their `eventID` is already stored.
    pub duplicates: u64,
}

/// Which parts of a WAL record to apply: its own table's rows (`main`) and the metric points
/// its metric filters made (`derived`). Replay applies only what each table does not hold yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    /// The rows of the record's own table.
    pub main: bool,
    /// The points of [`WalRecord::derived`], into the tenant's `metrics`.
    pub derived: bool,
}

impl Parts {
    /// Everything (a live record).
    pub const ALL: Parts = Parts {
        main: true,
        derived: true,
    };
}

/// Audit event ids remembered per tenant to store CloudTrail's duplicate deliveries once.
const AUDIT_DEDUP_CAPACITY: usize = 4_000_000;

/// A table of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableKey {
    /// The tenant.
    pub tenant: String,
    /// The table kind.
    pub kind: TableKind,
}

/// Bytes of the strings one row of a series carries.
fn string_bytes(key: &SeriesKey) -> usize {
    key.namespace.len()
        + key.metric_name.len()
        + key.unit.len()
        + key
            .dimensions
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

/// One point: 24 bytes, whatever its series carries.
#[derive(Debug, Clone, Copy)]
struct MetricRow {
    series: u32,
    /// Index of the point's `[count, sum, min, max]` in the chunk's statistic sets, or
    /// [`RAW_SAMPLE`] for a raw sample (whose value is `value`).
    stats: u32,
    time_us: i64,
    value: f64,
}

/// [`MetricRow::stats`] of a raw sample.
const RAW_SAMPLE: u32 = u32::MAX;

/// log2 of the rows in one block of [`Rows`].
const ROW_BLOCK_SHIFT: u32 = 16;
const ROW_BLOCK: usize = 1 << ROW_BLOCK_SHIFT;

/// A chunk's points in fixed blocks of [`ROW_BLOCK`] rows (1.5 MiB), not one growing vector:
/// a growing vector is copied each time it doubles, holds up to twice what it needs, and under
/// some allocators its old copies linger in the process's memory long after it moved.
#[derive(Debug, Default, Clone)]
struct Rows {
    blocks: Vec<Vec<MetricRow>>,
    len: usize,
}

impl Rows {
    fn push(&mut self, row: MetricRow) {
        match self.blocks.last_mut() {
            Some(b) if b.len() < ROW_BLOCK => b.push(row),
            _ => {
                let mut b = Vec::with_capacity(ROW_BLOCK);
                b.push(row);
                self.blocks.push(b);
            }
        }
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }

    /// The row at position `i` (arrival order); `i < len`.
    fn get(&self, i: u32) -> &MetricRow {
        &self.blocks[(i >> ROW_BLOCK_SHIFT) as usize][i as usize & (ROW_BLOCK - 1)]
    }

    fn iter(&self) -> impl Iterator<Item = &MetricRow> {
        self.blocks.iter().flatten()
    }

    /// Bytes allocated for rows.
    fn bytes(&self) -> usize {
        self.blocks.len() * ROW_BLOCK * std::mem::size_of::<MetricRow>()
    }
}

/// Interned series and their points.
#[derive(Debug, Default)]
pub struct MetricsChunk {
    series: Vec<Arc<SeriesKey>>,
    index: HashMap<Arc<SeriesKey>, u32>,
    rows: Rows,
    stats: Vec<[f64; 4]>,
    key_bytes: usize,
}

impl MetricsChunk {
    fn intern(&mut self, s: &mut MetricSeries) -> u32 {
        let mut dims: Vec<(String, String)> =
            s.dimensions.drain(..).map(|d| (d.name, d.value)).collect();
        dims.sort();
        let key = SeriesKey {
            namespace: std::mem::take(&mut s.namespace),
            metric_name: std::mem::take(&mut s.metric_name),
            dimensions: dims,
            unit: std::mem::take(&mut s.unit),
            storage_resolution: s.storage_resolution,
        };
        if let Some(&id) = self.index.get(&key) {
            return id;
        }
        let id = self.series.len() as u32;
        self.key_bytes += key.namespace.len()
            + key.metric_name.len()
            + key.unit.len()
            + key
                .dimensions
                .iter()
                .map(|(a, b)| a.len() + b.len() + 48)
                .sum::<usize>()
            + 128;
        let key = Arc::new(key);
        self.series.push(Arc::clone(&key));
        self.index.insert(key, id);
        id
    }

    fn push_series(&mut self, mut s: MetricSeries) -> usize {
        let id = self.intern(&mut s);
        let before = self.rows.len();
        for (&ts, &v) in s.timestamps_ms.iter().zip(&s.values) {
            self.rows.push(MetricRow {
                series: id,
                stats: RAW_SAMPLE,
                time_us: ts * 1000,
                value: v,
            });
        }
        for p in s.statistic_points {
            let Some(st) = p.statistic_values else {
                continue;
            };
            let idx = self.stats.len() as u32;
            self.stats
                .push([st.sample_count, st.sum, st.minimum, st.maximum]);
            self.rows.push(MetricRow {
                series: id,
                stats: idx,
                time_us: p.timestamp_ms * 1000,
                value: f64::NAN,
            });
        }
        self.rows.len() - before
    }

    /// A copy of the rows for a query (the series keys are shared, not copied).
    fn query_copy(&self) -> MetricsChunk {
        MetricsChunk {
            series: self.series.clone(),
            index: HashMap::new(),
            rows: self.rows.clone(),
            stats: self.stats.clone(),
            key_bytes: 0,
        }
    }

    /// The rows whose time is in `range`, in arrival order.
    fn batches_in(&self, range: TimeRange) -> Result<Vec<RecordBatch>, arrow::error::ArrowError> {
        let mut out = Vec::new();
        let mut picked: Vec<MetricRow> =
            Vec::with_capacity(METRICS_BATCH_ROWS.min(self.rows.len()));
        for r in self.rows.iter() {
            if range.contains(r.time_us) {
                picked.push(*r);
                if picked.len() == METRICS_BATCH_ROWS {
                    out.push(self.build_batch(picked.iter())?);
                    picked.clear();
                }
            }
        }
        if !picked.is_empty() {
            out.push(self.build_batch(picked.iter())?);
        }
        Ok(out)
    }

    fn bytes(&self) -> usize {
        self.rows.bytes() + self.stats.capacity() * 32 + self.key_bytes
    }

    /// Row positions in storage order: series (by namespace, name, dimensions, ...), then time.
    fn storage_order(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.series.len() as u32).collect();
        order.sort_by(|a, b| self.series[*a as usize].cmp(&self.series[*b as usize]));
        let mut rank = vec![0u32; order.len()];
        for (r, &s) in order.iter().enumerate() {
            rank[s as usize] = r as u32;
        }
        sort_by_rank_then_time(&self.rows, &rank)
    }

    /// Rows per Arrow batch: [`METRICS_BATCH_ROWS`], fewer when the series carry so many long
    /// dimensions that a batch's strings would pass [`BATCH_STRING_BYTES`].
    fn batch_rows(&self) -> usize {
        let widest = self
            .series
            .iter()
            .map(|s| string_bytes(s))
            .max()
            .unwrap_or(1)
            .max(1);
        (BATCH_STRING_BYTES / widest).clamp(1, METRICS_BATCH_ROWS)
    }

    /// The rows as record batches sorted by series then time, built lazily.
    pub fn sorted_batches(
        &self,
    ) -> impl Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>> + '_ {
        let order = self.storage_order();
        let step = self.batch_rows();
        let n = order.len();
        (0..n).step_by(step).map(move |start| {
            let slice = &order[start..(start + step).min(n)];
            self.build_batch(slice.iter().map(|&i| self.rows.get(i)))
        })
    }

    /// Encodes the chunk as Parquet files in storage order. The series' strings are written
    /// from the interned series (see [`MetricsFileWriter`]), the points one slice of rows at a
    /// time, so that memory holds only the compact rows and a slice of point columns per encoder.
    ///
    /// A chunk of at least `2 * min_rows` rows is cut into up to `parts` files at series
    /// boundaries, encoded on as many threads: the encoder is CPU-bound, and a large chunk
    /// would otherwise keep one core busy while the others idle. Smaller chunks make one file.
    ///
    /// # Errors
    /// Arrow or Parquet errors (a broken invariant: the builders match the schema).
    fn encode_files(
        &self,
        parts: usize,
        min_rows: usize,
    ) -> Result<Vec<(bytes::Bytes, FileStats)>, watchtrail_storage::Error> {
        let order = self.storage_order();
        let encode =
            |slice: &[u32]| -> Result<(bytes::Bytes, FileStats), watchtrail_storage::Error> {
                let mut file = MetricsFileWriter::new()?;
                let mut rows = Vec::with_capacity(METRICS_BATCH_ROWS.min(slice.len()));
                for group in slice.chunks(ROW_GROUP_ROWS) {
                    let runs = series_runs(group.iter().map(|&i| self.rows.get(i).series));
                    let mut row_group = file.row_group(&self.series, &runs)?;
                    for part in group.chunks(METRICS_BATCH_ROWS) {
                        rows.clear();
                        rows.extend(part.iter().map(|&i| self.rows.get(i)));
                        row_group.write_points(&self.point_columns(&rows))?;
                    }
                    file.write_row_group(row_group)?;
                }
                file.finish()
            };
        let bounds = self.part_bounds(&order, parts, min_rows);
        if bounds.len() <= 2 {
            return Ok(vec![encode(&order)?]);
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = bounds
                .windows(2)
                .map(|w| {
                    let slice = &order[w[0]..w[1]];
                    scope.spawn(move || encode(slice))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().map_err(|_| {
                        watchtrail_storage::Error::Internal(
                            "a Parquet encoder thread panicked".into(),
                        )
                    })?
                })
                .collect()
        })
    }

    /// Cut points of `order` (storage order) into at most `parts` runs of at least `min_rows`
    /// rows each, every cut moved forward to the next series boundary so that a series' points
    /// stay in one file. Returns `[0, .., len]`.
    fn part_bounds(&self, order: &[u32], parts: usize, min_rows: usize) -> Vec<usize> {
        let n = order.len();
        let parts = parts.min(n / min_rows.max(1)).max(1);
        let mut bounds = vec![0];
        for p in 1..parts {
            let mut cut = (n * p / parts).max(bounds.last().copied().unwrap_or(0));
            while cut > 0
                && cut < n
                && self.rows.get(order[cut]).series == self.rows.get(order[cut - 1]).series
            {
                cut += 1;
            }
            if cut - bounds.last().copied().unwrap_or(0) >= min_rows && n - cut >= min_rows {
                bounds.push(cut);
            }
        }
        bounds.push(n);
        bounds
    }

    /// The per-row columns of `rows` (time, value, statistic sets, resolution).
    fn point_columns(&self, rows: &[&MetricRow]) -> PointColumns {
        let n = rows.len();
        let mut time: Vec<i64> = Vec::with_capacity(n);
        let mut value: Vec<f64> = Vec::with_capacity(n);
        let mut value_valid = NullBufferBuilder::new(n);
        let mut resolution: Vec<i32> = Vec::with_capacity(n);
        // (row, statistic set) of the statistic-set rows; usually none.
        let mut stat_rows: Vec<(usize, u32)> = Vec::new();
        let mut last: Option<(u32, i32)> = None;
        for (i, r) in rows.iter().enumerate() {
            time.push(r.time_us);
            if r.stats == RAW_SAMPLE {
                value.push(r.value);
                value_valid.append_non_null();
            } else {
                stat_rows.push((i, r.stats));
                value.push(0.0);
                value_valid.append_null();
            }
            let res = match last {
                Some((s, res)) if s == r.series => res,
                _ => {
                    let res = self.series[r.series as usize].storage_resolution;
                    last = Some((r.series, res));
                    res
                }
            };
            resolution.push(res);
        }
        let stat_column = |j: usize| -> ArrayRef {
            if stat_rows.is_empty() {
                return Arc::new(Float64Array::new_null(n));
            }
            let mut column: Vec<Option<f64>> = vec![None; n];
            for &(row, i) in &stat_rows {
                column[row] = Some(self.stats[i as usize][j]);
            }
            Arc::new(Float64Array::from(column))
        };
        PointColumns {
            time: Arc::new(TimestampMicrosecondArray::from(time).with_timezone(UTC)),
            value: Arc::new(Float64Array::new(
                ScalarBuffer::from(value),
                value_valid.finish(),
            )),
            sample_count: stat_column(0),
            sum: stat_column(1),
            min: stat_column(2),
            max: stat_column(3),
            storage_resolution: Arc::new(Int32Array::from(resolution)),
        }
    }

    /// One Arrow batch of `rows`, for SQL over the buffer. The rows come in runs of one series
    /// (storage order, or arrival order, where a request's series carries many points), and a
    /// run's strings are the same on every row: they are copied as whole blocks, not appended
    /// value by value.
    fn build_batch<'a>(
        &self,
        rows: impl ExactSizeIterator<Item = &'a MetricRow>,
    ) -> Result<RecordBatch, arrow::error::ArrowError> {
        let rows: Vec<&MetricRow> = rows.collect();
        let n = rows.len();
        let points = self.point_columns(&rows);
        let mut namespace = Strings::with_capacity(n, n * 8);
        let mut metric_name = Strings::with_capacity(n, n * 12);
        let mut unit = Strings::with_capacity(n, n * 8);
        let mut keys = Strings::with_capacity(n * 10, n * 60);
        let mut values = Strings::with_capacity(n * 10, n * 60);
        let mut entries: Vec<i32> = Vec::with_capacity(n + 1);
        entries.push(0);
        let mut key_block = Vec::new();
        let mut value_block = Vec::new();
        let (mut key_lens, mut value_lens) = (Vec::new(), Vec::new());
        for (series, len) in series_runs(rows.iter().map(|r| r.series)) {
            let s = &self.series[series as usize];
            let len = len as usize;
            namespace.push_repeated(s.namespace.as_bytes(), len);
            metric_name.push_repeated(s.metric_name.as_bytes(), len);
            unit.push_repeated(s.unit.as_bytes(), len);
            key_block.clear();
            value_block.clear();
            key_lens.clear();
            value_lens.clear();
            for (k, v) in &s.dimensions {
                key_block.extend_from_slice(k.as_bytes());
                key_lens.push(k.len());
                value_block.extend_from_slice(v.as_bytes());
                value_lens.push(v.len());
            }
            keys.push_block_repeated(&key_block, &key_lens, len);
            values.push_block_repeated(&value_block, &value_lens, len);
            let dims = s.dimensions.len() as i32;
            let mut at = entries.last().copied().unwrap_or(0);
            for _ in 0..len {
                at += dims;
                entries.push(at);
            }
        }
        if keys.bytes.len() > i32::MAX as usize || values.bytes.len() > i32::MAX as usize {
            return Err(arrow::error::ArrowError::ComputeError(
                "a metrics batch's dimension strings passed 2 GiB".into(),
            ));
        }
        let DataType::Map(entry_field, _) = TableKind::Metrics
            .schema()
            .field_with_name("dimensions")?
            .data_type()
            .clone()
        else {
            return Err(arrow::error::ArrowError::SchemaError(
                "metrics.dimensions is not a map".into(),
            ));
        };
        let DataType::Struct(entry_fields) = entry_field.data_type().clone() else {
            return Err(arrow::error::ArrowError::SchemaError(
                "metrics.dimensions entries are not a struct".into(),
            ));
        };
        let entries_array = StructArray::try_new(
            entry_fields,
            vec![Arc::new(keys.finish()?), Arc::new(values.finish()?)],
            None,
        )?;
        let dims = MapArray::try_new(
            entry_field,
            OffsetBuffer::new(ScalarBuffer::from(entries)),
            entries_array,
            None,
            false,
        )?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(namespace.finish()?),
            Arc::new(metric_name.finish()?),
            Arc::new(dims),
            points.time,
            points.value,
            Arc::new(unit.finish()?),
            points.sample_count,
            points.sum,
            points.min,
            points.max,
            points.storage_resolution,
        ];
        RecordBatch::try_new(TableKind::Metrics.schema(), columns)
    }
}

/// `(series, rows)` for each run of equal series numbers.
fn series_runs(series: impl Iterator<Item = u32>) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for s in series {
        match runs.last_mut() {
            Some((last, n)) if *last == s => *n += 1,
            _ => runs.push((s, 1)),
        }
    }
    runs
}

/// A string column under construction: offsets and bytes, without the per-value bookkeeping
/// of a builder (no null bitmap: these columns have no nulls).
struct Strings {
    offsets: Vec<i32>,
    bytes: Vec<u8>,
}

impl Strings {
    fn with_capacity(values: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(values + 1);
        offsets.push(0);
        Self {
            offsets,
            bytes: Vec::with_capacity(bytes),
        }
    }

    /// Appends `s`, `times` times.
    fn push_repeated(&mut self, s: &[u8], times: usize) {
        self.push_block_repeated(s, &[s.len()], times);
    }

    /// Appends the strings of lengths `lens` laid end to end in `block`, `times` times over.
    fn push_block_repeated(&mut self, block: &[u8], lens: &[usize], times: usize) {
        self.bytes.reserve(block.len() * times);
        self.offsets.reserve(lens.len() * times);
        for _ in 0..times {
            let mut at = self.bytes.len();
            self.bytes.extend_from_slice(block);
            for &l in lens {
                at += l;
                // Truncation is caught before `finish` (the 2 GiB check of the batch).
                self.offsets.push(at as i32);
            }
        }
    }

    fn finish(self) -> Result<StringArray, arrow::error::ArrowError> {
        let end = self.offsets.last().copied().unwrap_or(0);
        if end < 0 || end as usize != self.bytes.len() {
            return Err(arrow::error::ArrowError::ComputeError(format!(
                "string offsets end at {end}, not at the {} bytes written",
                self.bytes.len()
            )));
        }
        // SAFETY: every byte was appended from a `&str` (`SeriesKey`'s strings) as a whole
        // value, so the bytes are valid UTF-8 and each offset, computed from those strings'
        // lengths and increasing, falls on a value boundary; the last offset is the length
        // of the bytes (checked above). Checking it all again per batch was 5 % of a flush.
        Ok(unsafe {
            StringArray::new_unchecked(
                OffsetBuffer::new_unchecked(ScalarBuffer::from(self.offsets)),
                Buffer::from_vec(self.bytes),
                None,
            )
        })
    }
}

impl BufferedRows for MetricsChunk {
    fn batches(&self, range: TimeRange) -> watchtrail_query::Result<Vec<RecordBatch>> {
        Ok(self.batches_in(range)?)
    }
}

/// A frozen chunk, read by queries while it is being flushed.
#[derive(Debug)]
struct FrozenRows(Arc<Chunk>);

impl BufferedRows for FrozenRows {
    fn batches(&self, range: TimeRange) -> watchtrail_query::Result<Vec<RecordBatch>> {
        match &self.0.data {
            ChunkData::Metrics(m) => Ok(m.batches_in(range)?),
            ChunkData::Batches(b) => Ok(b.clone()),
        }
    }
}

/// The positions of `rows` ordered by their series' rank, then time: a counting sort on the
/// rank (one pass to count, one to place), then a sort of each series' run only where it is not
/// already in time order (points mostly arrive in order, so this is usually a check). Positions
/// (4 bytes a row) rather than a sorted copy of the rows (24), to keep a flush's memory small.
fn sort_by_rank_then_time(rows: &Rows, rank: &[u32]) -> Vec<u32> {
    let mut start = vec![0usize; rank.len() + 1];
    for r in rows.iter() {
        start[rank[r.series as usize] as usize + 1] += 1;
    }
    for i in 1..start.len() {
        start[i] += start[i - 1];
    }
    let bounds = start.clone();
    let mut out = vec![0u32; rows.len()];
    for (i, r) in rows.iter().enumerate() {
        let slot = &mut start[rank[r.series as usize] as usize];
        out[*slot] = i as u32;
        *slot += 1;
    }
    for w in bounds.windows(2) {
        let run = &mut out[w[0]..w[1]];
        if !run.is_sorted_by_key(|&i| rows.get(i).time_us) {
            run.sort_by_key(|&i| rows.get(i).time_us);
        }
    }
    out
}

/// The rows of a chunk.
#[derive(Debug)]
pub enum ChunkData {
    /// Interned metric points.
    Metrics(MetricsChunk),
    /// Log or audit rows, as they arrived.
    Batches(Vec<RecordBatch>),
}

/// Rows from a contiguous run of WAL records of one table.
#[derive(Debug)]
pub struct Chunk {
    /// The rows.
    pub data: ChunkData,
    /// Lowest WAL seq with rows in this chunk.
    pub first_seq: Option<u64>,
    /// Highest WAL seq applied to this chunk.
    pub last_seq: u64,
    /// Row count.
    pub rows: usize,
    /// Approximate memory.
    pub bytes: usize,
    /// When the first row arrived.
    pub since: Option<Instant>,
    /// Highest WAL seq of this (logs or audit) chunk whose metric-filter points went to the
    /// tenant's metrics buffer: the chunk commits only after those points did.
    pub derived_through: Option<u64>,
}

impl Chunk {
    fn new(kind: TableKind) -> Self {
        Self {
            data: match kind {
                TableKind::Metrics => ChunkData::Metrics(MetricsChunk::default()),
                _ => ChunkData::Batches(Vec::new()),
            },
            first_seq: None,
            last_seq: 0,
            rows: 0,
            bytes: 0,
            since: None,
            derived_through: None,
        }
    }

    /// Encodes the chunk as Parquet files in storage order: for logs and audit one per hour
    /// window its rows fall in (nearly always one; see
    /// [`watchtrail_storage::files::split_by_window`]), for a large metrics chunk one per core
    /// (see `MetricsChunk::encode_files`).
    ///
    /// # Errors
    /// Arrow or Parquet errors (a broken invariant).
    pub fn encode(
        &self,
        kind: TableKind,
    ) -> Result<Vec<(bytes::Bytes, FileStats)>, watchtrail_storage::Error> {
        match &self.data {
            ChunkData::Metrics(m) => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                m.encode_files(cores.min(MAX_ENCODE_THREADS), MIN_ROWS_PER_PART)
            }
            ChunkData::Batches(b) => {
                let mut files = Vec::new();
                for group in watchtrail_storage::files::split_by_window(kind, b)? {
                    let mut enc = ParquetEncoder::new(kind)?;
                    for batch in watchtrail_storage::files::in_storage_order(kind, &group)? {
                        enc.write(&batch)?;
                    }
                    files.push(enc.finish()?);
                }
                Ok(files)
            }
        }
    }
}

/// Pending and flushing rows of one table.
#[derive(Debug)]
pub struct TableBuffer {
    /// Rows accumulating.
    pub pending: Chunk,
    /// Rows being written and committed (still readable until the commit lands).
    pub flushing: Option<Arc<Chunk>>,
}

/// Event ids of recent audit events, bounded, oldest forgotten first.
#[derive(Debug, Default)]
struct SeenIds {
    set: HashSet<u128>,
    order: VecDeque<u128>,
}

impl SeenIds {
    /// Returns true when the id is new (and remembers it).
    fn insert(&mut self, id: &str) -> bool {
        let h = hash128(id);
        if !self.set.insert(h) {
            return false;
        }
        self.order.push_back(h);
        if self.order.len() > AUDIT_DEDUP_CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

fn hash128(s: &str) -> u128 {
    use std::hash::{BuildHasher, Hasher};
    // Two independent 64-bit SipHash keys give a 128-bit fingerprint: collisions (which would
    // drop a real event) are out of reach at any realistic event count.
    let mut a =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    a.write(s.as_bytes());
    let mut b =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    b.write_u8(0x5a);
    b.write(s.as_bytes());
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// All buffered rows of this server.
#[derive(Debug, Default)]
pub struct Buffers {
    /// Per table.
    pub tables: BTreeMap<TableKey, TableBuffer>,
    seen_audit: HashMap<String, SeenIds>,
    audit_loaded: HashSet<String>,
    /// Highest WAL seq applied (or skipped as already committed).
    pub applied_seq: u64,
    /// The newest committed file list known per table, kept under the same lock as the rows so
    /// that a query sees each row exactly once while a flush commits.
    committed_files: HashMap<TableKey, Arc<TableFiles>>,
}

impl Buffers {
    /// The lowest WAL seq whose rows are not yet committed; every record below it may go.
    pub fn min_uncommitted_seq(&self) -> u64 {
        self.tables
            .values()
            .flat_map(|t| {
                [
                    t.flushing.as_ref().and_then(|f| f.first_seq),
                    t.pending.first_seq,
                ]
            })
            .flatten()
            .min()
            .unwrap_or(self.applied_seq + 1)
            .min(self.applied_seq + 1)
    }

    /// Rows held in memory.
    pub fn rows(&self) -> usize {
        self.tables
            .values()
            .map(|t| t.pending.rows + t.flushing.as_ref().map_or(0, |f| f.rows))
            .sum()
    }

    /// Bytes held in memory.
    pub fn bytes(&self) -> usize {
        self.tables
            .values()
            .map(|t| t.pending.bytes + t.flushing.as_ref().map_or(0, |f| f.bytes))
            .sum()
    }

    /// Remembers audit event ids already stored (read back from the table).
    pub fn remember_audit_ids<'a>(&mut self, tenant: &str, ids: impl IntoIterator<Item = &'a str>) {
        let seen = self.seen_audit.entry(tenant.to_string()).or_default();
        for id in ids {
            seen.insert(id);
        }
        self.audit_loaded.insert(tenant.to_string());
    }

    /// Whether the tenant's committed audit ids were loaded from storage already.
    pub fn audit_ids_loaded(&self, tenant: &str) -> bool {
        self.audit_loaded.contains(tenant)
    }

    fn apply(
        &mut self,
        mut record: WalRecord,
        prepared: Option<Prepared>,
        parts: Parts,
    ) -> Applied {
        let seq = record.seq;
        let derived = record.derived.take().filter(|_| parts.derived);
        let mut fresh_events: Option<Vec<bool>> = None;
        self.applied_seq = self.applied_seq.max(seq);
        let Some(kind) = TableKind::from_tag(record.kind as u8) else {
            warn!(
                seq,
                kind = record.kind,
                "skipping a WAL record of unknown kind"
            );
            return Applied::default();
        };
        let tenant = record.tenant.clone();
        let mut duplicates = 0;
        let added = match kind {
            TableKind::Metrics => {
                let Some(req) = record.metrics else {
                    return Applied::default();
                };
                let table = self.table(&tenant, kind);
                let ChunkData::Metrics(m) = &mut table.pending.data else {
                    return Applied::default();
                };
                let mut rows = 0;
                for s in req.series {
                    rows += m.push_series(s);
                }
                let bytes = m.bytes();
                table.pending.bytes = bytes;
                rows
            }
            TableKind::Logs if !parts.main => 0,
            TableKind::Logs => {
                let Some(req) = record.logs else {
                    return Applied::default();
                };
                match logs_batch(&req, record.received_ms) {
                    Ok(batch) => self.push_batch(&tenant, kind, batch),
                    Err(e) => {
                        warn!(seq, error = %e, "failed to build log rows");
                        0
                    }
                }
            }
            // Written by the alarm evaluator straight to storage; `from_tag` never yields them.
            TableKind::AlarmHistory | TableKind::WebhookDeliveries => 0,
            TableKind::Audit if !parts.main => 0,
            TableKind::Audit => {
                let server_event = record.server_event;
                let mut events: Vec<AuditEvent> = match prepared {
                    Some(Prepared::Audit(events)) => events,
                    None => record
                        .audit
                        .map(|a| {
                            a.records
                                .iter()
                                .filter_map(|r| audit_json::parse_event(&r.json).ok())
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                if server_event {
                    for e in &mut events {
                        e.row[watchtrail_query::tables::SERVER_EVENT_COLUMN] =
                            serde_json::Value::Bool(true);
                    }
                }
                let seen = self.seen_audit.entry(tenant.clone()).or_default();
                let mask: Vec<bool> = events.iter().map(|e| seen.insert(&e.event_id)).collect();
                let fresh: Vec<&serde_json::Value> = events
                    .iter()
                    .zip(&mask)
                    .filter(|(_, fresh)| **fresh)
                    .map(|(e, _)| &e.row)
                    .collect();
                fresh_events = Some(mask);
                duplicates = (events.len() - fresh.len()) as u64;
                if fresh.is_empty() {
                    0
                } else {
                    match audit_json::rows_to_batch(&fresh) {
                        Ok(batch) => self.push_batch(&tenant, kind, batch),
                        Err(e) => {
                            warn!(seq, error = %e, "failed to build audit rows");
                            0
                        }
                    }
                }
            }
        };
        let mut derived_rows = 0;
        if let Some(d) = derived {
            // A duplicate audit event makes no points; without the record's own part (its rows
            // are committed, the points not) every event's points count.
            let keep = |e: u32| {
                fresh_events
                    .as_ref()
                    .is_none_or(|m| m.get(e as usize).copied().unwrap_or(false))
            };
            let table = self.table(&tenant, TableKind::Metrics);
            if let ChunkData::Metrics(m) = &mut table.pending.data {
                for s in d.into_series(keep) {
                    derived_rows += m.push_series(s);
                }
                table.pending.bytes = m.bytes();
            }
            if derived_rows > 0 {
                Self::extend(&mut table.pending, seq, derived_rows);
            }
        }
        if added > 0 {
            let table = self.table(&tenant, kind);
            Self::extend(&mut table.pending, seq, added);
            if derived_rows > 0 {
                table.pending.derived_through = Some(seq);
            }
        }
        Applied {
            rows: added,
            duplicates,
        }
    }

    fn extend(p: &mut Chunk, seq: u64, rows: usize) {
        p.first_seq.get_or_insert(seq);
        p.last_seq = seq;
        p.rows += rows;
        p.since.get_or_insert_with(Instant::now);
    }

    fn push_batch(&mut self, tenant: &str, kind: TableKind, batch: RecordBatch) -> usize {
        let rows = batch.num_rows();
        let table = self.table(tenant, kind);
        table.pending.bytes += batch.get_array_memory_size();
        if let ChunkData::Batches(b) = &mut table.pending.data {
            b.push(batch);
        }
        rows
    }

    fn table(&mut self, tenant: &str, kind: TableKind) -> &mut TableBuffer {
        self.tables
            .entry(TableKey {
                tenant: tenant.to_string(),
                kind,
            })
            .or_insert_with(|| TableBuffer {
                pending: Chunk::new(kind),
                flushing: None,
            })
    }

    /// Moves a table's pending rows into its flushing slot, unless a flush is under way.
    pub fn freeze(&mut self, key: &TableKey) -> Option<Arc<Chunk>> {
        let table = self.tables.get_mut(key)?;
        if table.flushing.is_some() || table.pending.rows == 0 {
            return None;
        }
        let chunk = Arc::new(std::mem::replace(&mut table.pending, Chunk::new(key.kind)));
        table.flushing = Some(Arc::clone(&chunk));
        Some(chunk)
    }

    /// Forgets a committed flushing chunk and installs the file list that now holds its rows.
    pub fn committed(&mut self, key: &TableKey, files: Option<Arc<TableFiles>>) {
        if let Some(t) = self.tables.get_mut(key) {
            t.flushing = None;
        }
        if let Some(files) = files {
            self.install_files(key, files);
        }
    }

    /// Keeps `files` as the table's committed file list if it is newer than the one held.
    fn install_files(&mut self, key: &TableKey, files: Arc<TableFiles>) -> Arc<TableFiles> {
        match self.committed_files.get(key) {
            Some(held) if held.version >= files.version => Arc::clone(held),
            _ => {
                self.committed_files.insert(key.clone(), Arc::clone(&files));
                files
            }
        }
    }

    /// The committed file list held for a table, if any.
    pub fn committed_files(&self, key: &TableKey) -> Option<Arc<TableFiles>> {
        self.committed_files.get(key).cloned()
    }

    /// What a query reads of a table: the newest committed file list (`loaded` if it is newer
    /// than the one held) and every buffered chunk whose rows that list does not hold.
    pub fn query_snapshot(
        &mut self,
        key: &TableKey,
        loaded: Option<Arc<TableFiles>>,
    ) -> TableSnapshot {
        let files = match loaded {
            Some(f) => self.install_files(key, f),
            None => self.committed_files(key).unwrap_or_default(),
        };
        let committed = files.committed_seq.unwrap_or(-1);
        let mut buffered: Vec<Arc<dyn BufferedRows>> = Vec::new();
        if let Some(t) = self.tables.get(key) {
            if let Some(f) = &t.flushing
                && f.last_seq as i64 > committed
            {
                buffered.push(Arc::new(FrozenRows(Arc::clone(f))));
            }
            let p = &t.pending;
            if p.rows > 0 && p.last_seq as i64 > committed {
                match &p.data {
                    ChunkData::Metrics(m) => buffered.push(Arc::new(m.query_copy())),
                    ChunkData::Batches(b) => buffered.push(Arc::new(BufferedBatches(b.clone()))),
                }
            }
        }
        TableSnapshot { files, buffered }
    }
}

/// The log rows of one request.
fn logs_batch(
    req: &PutLogEventsRequest,
    received_ms: i64,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = req.log_events.len();
    let bytes: usize = req.log_events.iter().map(|e| e.message.len()).sum();
    let mut time = TimestampMicrosecondBuilder::with_capacity(n).with_timezone(UTC);
    let mut ingest = TimestampMicrosecondBuilder::with_capacity(n).with_timezone(UTC);
    let mut group = StringBuilder::with_capacity(n, n * req.log_group_name.len());
    let mut stream = StringBuilder::with_capacity(n, n * req.log_stream_name.len());
    let mut message = StringBuilder::with_capacity(n, bytes);
    let mut host = StringBuilder::new();
    let mut file = StringBuilder::new();
    let origin = req.origin.as_ref();
    let host_v = origin.map(|o| o.host.as_str()).filter(|s| !s.is_empty());
    let file_v = origin
        .map(|o| o.file_path.as_str())
        .filter(|s| !s.is_empty());
    for e in &req.log_events {
        time.append_value(e.timestamp_ms * 1000);
        ingest.append_value(received_ms * 1000);
        group.append_value(&req.log_group_name);
        stream.append_value(&req.log_stream_name);
        message.append_value(&e.message);
        host.append_option(host_v);
        file.append_option(file_v);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(ingest.finish()),
        Arc::new(group.finish()),
        Arc::new(stream.finish()),
        Arc::new(message.finish()),
        Arc::new(host.finish()),
        Arc::new(file.finish()),
    ];
    RecordBatch::try_new(TableKind::Logs.schema(), columns)
}

/// The buffers behind a mutex, applying durable WAL records.
#[derive(Debug, Clone)]
pub struct BufferHandle {
    /// The buffers.
    pub inner: Arc<Mutex<Buffers>>,
    metrics: Arc<Metrics>,
}

impl BufferHandle {
    /// Empty buffers.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Buffers::default())),
            metrics,
        }
    }

    /// Records that `seq` needs no applying (its rows are committed already).
    pub fn skip(&self, seq: u64) {
        let mut b = lock(&self.inner);
        b.applied_seq = b.applied_seq.max(seq);
    }
}

impl BufferHandle {
    /// Makes sure the tenant's committed audit event ids are known before any of its audit
    /// records is applied, so a duplicate of a stored event is dropped, across restarts too.
    ///
    /// # Errors
    /// Storage errors reading the table.
    pub async fn ensure_audit_ids(
        &self,
        storage: &watchtrail_storage::store::Storage,
        tenant: &str,
    ) -> Result<(), watchtrail_storage::Error> {
        if lock(&self.inner).audit_ids_loaded(tenant) {
            return Ok(());
        }
        let batches = storage
            .read_table_columns(tenant, TableKind::Audit, Some(&["eventid"]))
            .await?;
        let mut b = lock(&self.inner);
        if b.audit_ids_loaded(tenant) {
            return Ok(());
        }
        let mut ids = Vec::new();
        for batch in &batches {
            if let Some(col) = batch.column_by_name("eventid") {
                let col = arrow::array::AsArray::as_string::<i32>(col.as_ref());
                ids.extend(col.iter().flatten());
            }
        }
        tracing::info!(%tenant, events = ids.len(), "loaded stored audit event ids");
        b.remember_audit_ids(tenant, ids);
        Ok(())
    }
}

impl BufferHandle {
    /// Applies some parts of a record (replay; see [`Parts`]).
    pub fn apply_parts(&self, record: WalRecord, prepared: Option<Prepared>, parts: Parts) -> u64 {
        let mut b = lock(&self.inner);
        let applied = b.apply(record, prepared, parts);
        self.metrics.buffered_rows.set(b.rows() as u64);
        applied.duplicates
    }
}

impl Applier for BufferHandle {
    fn apply(&self, record: WalRecord, prepared: Option<Prepared>) -> u64 {
        self.apply_parts(record, prepared, Parts::ALL)
    }
}

#[cfg(test)]
mod tests;
