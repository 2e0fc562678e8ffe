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
    ArrayRef, Float64Builder, Int32Builder, MapBuilder, MapFieldNames, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use tracing::warn;
use watchtrail_proto::v1::{MetricSeries, PutLogEventsRequest};
use watchtrail_query::engine::{
    BufferedBatches, BufferedRows, TableFiles, TableSnapshot, TimeRange,
};
use watchtrail_query::files::ParquetEncoder;
use watchtrail_query::store::FileStats;
use watchtrail_query::tables::{TableKind, UTC};

use super::Prepared;
use super::audit_json::{self, AuditEvent};
use crate::metrics::Metrics;
use crate::wal::{Applier, WalRecord, lock};

/// Rows of one metrics chunk handed to the Parquet encoder at a time.
const METRICS_BATCH_ROWS: usize = 64 * 1024;
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

/// The identity of a metric series (dimensions sorted by name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    namespace: String,
    metric_name: String,
    dimensions: Vec<(String, String)>,
    unit: String,
    storage_resolution: i32,
}

#[derive(Debug, Clone, Copy)]
struct MetricRow {
    series: u32,
    time_us: i64,
    /// `[value]` for raw samples; `[count, sum, min, max]` for statistic sets.
    kind_stats: Option<u32>,
    value: f64,
}

/// Interned series and their points.
#[derive(Debug, Default)]
pub struct MetricsChunk {
    series: Vec<Arc<SeriesKey>>,
    index: HashMap<Arc<SeriesKey>, u32>,
    rows: Vec<MetricRow>,
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
                time_us: ts * 1000,
                kind_stats: None,
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
                time_us: p.timestamp_ms * 1000,
                kind_stats: Some(idx),
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
        for r in &self.rows {
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
        self.rows.capacity() * std::mem::size_of::<MetricRow>()
            + self.stats.capacity() * 32
            + self.key_bytes
    }

    /// Encodes the chunk as Parquet, sorted by series then time, one slice of rows at a time
    /// so that memory holds only the compact rows and one Arrow batch.
    ///
    /// # Errors
    /// Arrow or Parquet errors (a broken invariant: the builders match the schema).
    fn encode(&self, enc: &mut ParquetEncoder) -> Result<(), watchtrail_query::Error> {
        for batch in self.sorted_batches() {
            enc.write(&batch?)?;
        }
        Ok(())
    }

    /// The rows as record batches sorted by series then time, built lazily.
    pub fn sorted_batches(
        &self,
    ) -> impl Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>> + '_ {
        let mut order: Vec<u32> = (0..self.series.len() as u32).collect();
        order.sort_by(|a, b| self.series[*a as usize].cmp(&self.series[*b as usize]));
        let mut rank = vec![0u32; order.len()];
        for (r, &s) in order.iter().enumerate() {
            rank[s as usize] = r as u32;
        }
        let order = sort_by_rank_then_time(&self.rows, &rank);
        let n = order.len();
        (0..n).step_by(METRICS_BATCH_ROWS).map(move |start| {
            let slice = &order[start..(start + METRICS_BATCH_ROWS).min(n)];
            self.build_batch(slice.iter().map(|&i| &self.rows[i as usize]))
        })
    }

    fn build_batch<'a>(
        &self,
        rows: impl ExactSizeIterator<Item = &'a MetricRow>,
    ) -> Result<RecordBatch, arrow::error::ArrowError> {
        let n = rows.len();
        let mut namespace = StringBuilder::with_capacity(n, n * 8);
        let mut metric_name = StringBuilder::with_capacity(n, n * 8);
        let mut dims = MapBuilder::new(
            Some(MapFieldNames {
                entry: "key_value".into(),
                key: "key".into(),
                value: "value".into(),
            }),
            StringBuilder::new(),
            StringBuilder::new(),
        );
        let mut time = TimestampMicrosecondBuilder::with_capacity(n).with_timezone(UTC);
        let mut value = Float64Builder::with_capacity(n);
        let mut unit = StringBuilder::with_capacity(n, n * 4);
        let mut count = Float64Builder::with_capacity(n);
        let mut sum = Float64Builder::with_capacity(n);
        let mut min = Float64Builder::with_capacity(n);
        let mut max = Float64Builder::with_capacity(n);
        let mut resolution = Int32Builder::with_capacity(n);
        for r in rows {
            let s = &self.series[r.series as usize];
            namespace.append_value(&s.namespace);
            metric_name.append_value(&s.metric_name);
            for (k, v) in &s.dimensions {
                dims.keys().append_value(k);
                dims.values().append_value(v);
            }
            dims.append(true)?;
            time.append_value(r.time_us);
            unit.append_value(&s.unit);
            resolution.append_value(s.storage_resolution);
            match r.kind_stats {
                None => {
                    value.append_value(r.value);
                    count.append_null();
                    sum.append_null();
                    min.append_null();
                    max.append_null();
                }
                Some(i) => {
                    let [c, su, mi, ma] = self.stats[i as usize];
                    value.append_null();
                    count.append_value(c);
                    sum.append_value(su);
                    min.append_value(mi);
                    max.append_value(ma);
                }
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(namespace.finish()),
            Arc::new(metric_name.finish()),
            Arc::new(dims.finish()),
            Arc::new(time.finish()),
            Arc::new(value.finish()),
            Arc::new(unit.finish()),
            Arc::new(count.finish()),
            Arc::new(sum.finish()),
            Arc::new(min.finish()),
            Arc::new(max.finish()),
            Arc::new(resolution.finish()),
        ];
        RecordBatch::try_new(TableKind::Metrics.schema(), columns)
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
fn sort_by_rank_then_time(rows: &[MetricRow], rank: &[u32]) -> Vec<u32> {
    let mut start = vec![0usize; rank.len() + 1];
    for r in rows {
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
        if !run.is_sorted_by_key(|&i| rows[i as usize].time_us) {
            run.sort_by_key(|&i| rows[i as usize].time_us);
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
        }
    }

    /// Encodes the chunk as one Parquet file in storage order.
    ///
    /// # Errors
    /// Arrow or Parquet errors (a broken invariant).
    pub fn encode(
        &self,
        kind: TableKind,
    ) -> Result<(bytes::Bytes, FileStats), watchtrail_query::Error> {
        let mut enc = ParquetEncoder::new(kind)?;
        match &self.data {
            ChunkData::Metrics(m) => m.encode(&mut enc)?,
            ChunkData::Batches(b) => {
                for batch in watchtrail_query::files::in_storage_order(kind, b)? {
                    enc.write(&batch)?;
                }
            }
        }
        enc.finish()
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

    fn apply(&mut self, record: WalRecord, prepared: Option<Prepared>) -> usize {
        let seq = record.seq;
        self.applied_seq = self.applied_seq.max(seq);
        let Some(kind) = TableKind::from_tag(record.kind as u8) else {
            warn!(
                seq,
                kind = record.kind,
                "skipping a WAL record of unknown kind"
            );
            return 0;
        };
        let tenant = record.tenant.clone();
        let added = match kind {
            TableKind::Metrics => {
                let Some(req) = record.metrics else { return 0 };
                let table = self.table(&tenant, kind);
                let ChunkData::Metrics(m) = &mut table.pending.data else {
                    return 0;
                };
                let mut rows = 0;
                for s in req.series {
                    rows += m.push_series(s);
                }
                let bytes = m.bytes();
                table.pending.bytes = bytes;
                rows
            }
            TableKind::Logs => {
                let Some(req) = record.logs else { return 0 };
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
            TableKind::Audit => {
                let events: Vec<AuditEvent> = match prepared {
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
                let seen = self.seen_audit.entry(tenant.clone()).or_default();
                let fresh: Vec<&serde_json::Value> = events
                    .iter()
                    .filter(|e| seen.insert(&e.event_id))
                    .map(|e| &e.row)
                    .collect();
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
        if added > 0 {
            let table = self.table(&tenant, kind);
            let p = &mut table.pending;
            p.first_seq.get_or_insert(seq);
            p.last_seq = seq;
            p.rows += added;
            p.since.get_or_insert_with(Instant::now);
        }
        added
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
        storage: &watchtrail_query::store::Storage,
        tenant: &str,
    ) -> Result<(), watchtrail_query::Error> {
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

impl Applier for BufferHandle {
    fn apply(&self, record: WalRecord, prepared: Option<Prepared>) {
        let mut b = lock(&self.inner);
        b.apply(record, prepared);
        self.metrics.buffered_rows.set(b.rows() as u64);
    }
}

#[cfg(test)]
mod tests;
