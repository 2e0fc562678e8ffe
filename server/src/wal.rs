//! The write-ahead log: where a request becomes durable before it is acknowledged.
//!
//! Layout under `--wal-dir`:
//! - `server-id`: this WAL's identity; it names the Delta application transaction that records
//!   which WAL entries a table already holds (`watchtrail-wal-<id>`).
//! - `wal-<first seq>.log`: segments of framed records `[len u32][crc32 u32][WalRecord]`.
//! - `ids-<last seq>.bin`: the idempotency ids of deleted segments, kept for the window.
//!
//! One thread owns the open segment. It takes every request waiting in its queue, appends them
//! all, calls `fdatasync` once (group commit), then applies them to the memory buffer and
//! answers. A torn record at the tail of the last segment (a crash mid-write) was never
//! acknowledged; replay stops there and the file is cut back.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};
use watchtrail_proto::v1::{
    IngestResponse, PutAuditEventsRequest, PutLogEventsRequest, PutMetricDataRequest, RejectedItem,
};

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// One durable request, in canonical (validated) form.
#[derive(Clone, PartialEq, Message)]
pub struct WalRecord {
    /// Position in the log; strictly increasing.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(string, tag = "2")]
    pub tenant: String,
    /// The table kind's tag ([`watchtrail_query::tables::TableKind::tag`]).
    #[prost(uint32, tag = "3")]
    pub kind: u32,
    #[prost(string, tag = "4")]
    pub idempotency_id: String,
    /// When the server received it (ms since the epoch): the logs' `ingest_time`.
    #[prost(int64, tag = "5")]
    pub received_ms: i64,
    #[prost(uint64, tag = "6")]
    pub accepted: u64,
    #[prost(message, repeated, tag = "7")]
    pub rejected: Vec<RejectedItem>,
    #[prost(message, optional, tag = "8")]
    pub metrics: Option<PutMetricDataRequest>,
    #[prost(message, optional, tag = "9")]
    pub logs: Option<PutLogEventsRequest>,
    #[prost(message, optional, tag = "10")]
    pub audit: Option<PutAuditEventsRequest>,
    /// The audit events are the server's own trail (their `serverevent` column is true).
    #[prost(bool, tag = "11")]
    pub server_event: bool,
    /// The datapoints metric filters made from this record's log events or audit records.
    #[prost(message, optional, tag = "12")]
    pub derived: Option<crate::ingest::derive::Derived>,
}

impl WalRecord {
    /// The answer a client gets for this record (also for a retry with the same id).
    pub fn response(&self, duplicate: bool) -> IngestResponse {
        IngestResponse {
            accepted: self.accepted,
            rejected: self.rejected.clone(),
            duplicate,
            duplicate_events: 0,
        }
    }

    fn dedup_key(&self) -> DedupKey {
        DedupKey {
            tenant: self.tenant.clone(),
            kind: self.kind,
            id: self.idempotency_id.clone(),
        }
    }
}

/// What the idempotency index remembers per id.
#[derive(Clone, PartialEq, Message)]
struct IdEntry {
    #[prost(string, tag = "1")]
    tenant: String,
    #[prost(uint32, tag = "2")]
    kind: u32,
    #[prost(string, tag = "3")]
    id: String,
    #[prost(uint64, tag = "4")]
    seq: u64,
    #[prost(int64, tag = "5")]
    received_ms: i64,
    #[prost(message, optional, tag = "6")]
    response: Option<IngestResponse>,
}

#[derive(Clone, PartialEq, Message)]
struct IdsFile {
    #[prost(message, repeated, tag = "1")]
    entries: Vec<IdEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DedupKey {
    tenant: String,
    kind: u32,
    id: String,
}

#[derive(Debug, Clone)]
struct DedupValue {
    seq: u64,
    received_ms: i64,
    response: IngestResponse,
}

/// Idempotency ids seen within the window, with the answer each got.
#[derive(Debug, Default)]
struct DedupIndex {
    map: HashMap<DedupKey, DedupValue>,
}

impl DedupIndex {
    fn prune(&mut self, now_ms: i64, window: Duration) {
        let cutoff = now_ms - window.as_millis() as i64;
        self.map.retain(|_, v| v.received_ms >= cutoff);
    }
}

/// Receives records once they are durable; the memory buffer implements it.
pub trait Applier: Send + Sync + 'static {
    /// Applies a durable record. `prepared` is what the request handler already computed.
    /// Returns how many of its audit events were already stored (by `eventID`) and dropped.
    fn apply(&self, record: WalRecord, prepared: Option<crate::ingest::Prepared>) -> u64;
}

/// Settings of the write-ahead log.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Directory of segments.
    pub dir: PathBuf,
    /// Refuse new requests (UNAVAILABLE) once the segments hold this many bytes.
    pub max_bytes: u64,
    /// Start a new segment past this size.
    pub segment_bytes: u64,
    /// How long an idempotency id is remembered.
    pub idempotency_window: Duration,
    /// Call fdatasync (tests of non-durable paths may turn it off; the server never does).
    pub fsync: bool,
}

struct Pending {
    record: WalRecord,
    /// `record` encoded without its `seq` (zero, so absent), on the caller's task: the one
    /// writer thread only appends the seq field (see [`with_seq`]) and copies.
    payload: Vec<u8>,
    prepared: Option<crate::ingest::Prepared>,
    reply: oneshot::Sender<Result<IngestResponse>>,
    /// May use the reserve beyond the budget (see [`Wal::append_reserved`]).
    reserved: bool,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    last_seq: u64,
    path: PathBuf,
    bytes: u64,
}

/// Shared view of the segments, for truncation by the flusher.
#[derive(Debug, Default)]
struct Segments {
    closed: Vec<Segment>,
    open_bytes: u64,
}

impl Segments {
    fn total_bytes(&self) -> u64 {
        self.closed.iter().map(|s| s.bytes).sum::<u64>() + self.open_bytes
    }
}

/// Handle to the WAL: append (with group commit) and truncate.
#[derive(Clone)]
pub struct Wal {
    tx: mpsc::Sender<Pending>,
    segments: Arc<Mutex<Segments>>,
    dedup: Arc<Mutex<DedupIndex>>,
    config: Arc<WalConfig>,
    server_id: Arc<str>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.config.dir)
            .finish_non_exhaustive()
    }
}

/// What replay found in the log, in order.
#[derive(Debug)]
pub struct Replay {
    /// Records not yet deleted, oldest first.
    pub records: Vec<WalRecord>,
}

impl Wal {
    /// Opens (or creates) the WAL, reads every record back, and starts the writer thread.
    /// The caller applies the replayed records, then starts serving.
    ///
    /// # Errors
    /// I/O errors, or a corrupt record anywhere but at the tail of the last segment.
    pub fn open(
        config: WalConfig,
        applier: Arc<dyn Applier>,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, Replay)> {
        watchtrail_storage::store::create_private_dir(&config.dir, true)
            .map_err(|e| Error::io(&config.dir, e))?;
        let server_id = read_or_create_server_id(&config.dir)?;
        let now = now_ms();
        let mut dedup = DedupIndex::default();
        load_ids_files(&config, &mut dedup, now)?;

        let mut paths: Vec<(u64, PathBuf)> = list_numbered(&config.dir, "wal-", ".log")?;
        paths.sort();
        let mut records = Vec::new();
        let mut segments = Segments::default();
        let last_index = paths.len().checked_sub(1);
        for (i, (first_seq, path)) in paths.iter().enumerate() {
            let is_last = Some(i) == last_index;
            let (mut recs, valid_len) = read_segment(path, is_last)?;
            let last_seq = recs.last().map_or(first_seq.saturating_sub(1), |r| r.seq);
            for r in &recs {
                dedup.map.insert(
                    r.dedup_key(),
                    DedupValue {
                        seq: r.seq,
                        received_ms: r.received_ms,
                        response: r.response(true),
                    },
                );
            }
            records.append(&mut recs);
            segments.closed.push(Segment {
                first_seq: *first_seq,
                last_seq,
                path: path.clone(),
                bytes: valid_len,
            });
        }
        dedup.prune(now, config.idempotency_window);
        let next_seq = records.last().map_or_else(
            || segments.closed.last().map_or(1, |s| s.last_seq + 1),
            |r| r.seq + 1,
        );
        // A segment that starts at `next_seq` holds no records (a server stopped before writing
        // to it): it is the file the writer appends to next, so it must not be listed as closed,
        // or truncation would delete the file being written and its records with it.
        segments.closed.retain(|s| s.first_seq != next_seq);
        info!(
            dir = %config.dir.display(),
            records = records.len(),
            segments = segments.closed.len(),
            next_seq,
            "write-ahead log opened"
        );
        // Always write into a fresh segment; the old ones are truncated once their rows commit.
        let open = open_segment(&config.dir, next_seq)?;
        let segments = Arc::new(Mutex::new(segments));
        let dedup = Arc::new(Mutex::new(dedup));
        let config = Arc::new(config);
        let (tx, rx) = mpsc::channel::<Pending>(4096);
        let writer = Writer {
            rx,
            file: open.0,
            segment: Segment {
                first_seq: next_seq,
                last_seq: next_seq - 1,
                path: open.1,
                bytes: 0,
            },
            next_seq,
            segments: Arc::clone(&segments),
            dedup: Arc::clone(&dedup),
            config: Arc::clone(&config),
            applier,
            metrics,
        };
        std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::io(&config.dir, e))?;
        Ok((
            Self {
                tx,
                segments,
                dedup,
                config,
                server_id: server_id.into(),
            },
            Replay { records },
        ))
    }

    /// This WAL's identity (stable across restarts).
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// Appends a record; resolves once it is fsynced and applied, or once its idempotency id is
    /// found to be a duplicate.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the log is over its byte budget or shutting down.
    pub async fn append(
        &self,
        record: WalRecord,
        prepared: Option<crate::ingest::Prepared>,
    ) -> Result<IngestResponse> {
        self.append_with(record, prepared, false).await
    }

    /// Appends a record the server writes about itself (its self-audit trail), which may also
    /// use a reserve of a sixteenth of the budget beyond it. When clients fill the log, their
    /// requests are refused, and each refusal is itself an audited call; without the reserve
    /// those records would compete with the clients' retries for the same room and be lost.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the reserve is used up too, or the log is shutting down.
    pub async fn append_reserved(
        &self,
        record: WalRecord,
        prepared: Option<crate::ingest::Prepared>,
    ) -> Result<IngestResponse> {
        self.append_with(record, prepared, true).await
    }

    async fn append_with(
        &self,
        record: WalRecord,
        prepared: Option<crate::ingest::Prepared>,
        reserved: bool,
    ) -> Result<IngestResponse> {
        let (reply, rx) = oneshot::channel();
        let mut record = record;
        record.seq = 0;
        // Room for the seq field the writer appends, so that it never reallocates the payload.
        let mut payload = Vec::with_capacity(record.encoded_len() + SEQ_FIELD_MAX_BYTES);
        record.encode_raw(&mut payload);
        self.tx
            .send(Pending {
                record,
                payload,
                prepared,
                reply,
                reserved,
            })
            .await
            .map_err(|_| Error::Unavailable("server is shutting down".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("write-ahead log writer stopped".into()))?
    }

    /// Bytes in all segments.
    pub fn total_bytes(&self) -> u64 {
        lock(&self.segments).total_bytes()
    }

    /// Deletes every closed segment whose records all have `seq < below` (they are committed to
    /// their tables), keeping their idempotency ids in an `ids-*.bin` file for the window.
    ///
    /// # Errors
    /// I/O errors while writing the ids file; the segment is kept then.
    pub fn truncate_below(&self, below: u64) -> Result<usize> {
        let doomed: Vec<Segment> = {
            let mut segs = lock(&self.segments);
            let (gone, keep): (Vec<_>, Vec<_>) =
                segs.closed.drain(..).partition(|s| s.last_seq < below);
            segs.closed = keep;
            gone
        };
        let mut deleted = 0;
        for seg in doomed {
            let entries: Vec<IdEntry> = {
                let dedup = lock(&self.dedup);
                dedup
                    .map
                    .iter()
                    .filter(|(_, v)| v.seq >= seg.first_seq && v.seq <= seg.last_seq)
                    .map(|(k, v)| IdEntry {
                        tenant: k.tenant.clone(),
                        kind: k.kind,
                        id: k.id.clone(),
                        seq: v.seq,
                        received_ms: v.received_ms,
                        response: Some(v.response.clone()),
                    })
                    .collect()
            };
            if !entries.is_empty() {
                let path = self
                    .config
                    .dir
                    .join(format!("ids-{:020}.bin", seg.last_seq));
                write_atomically(&path, &IdsFile { entries }.encode_to_vec())?;
            }
            fs::remove_file(&seg.path).map_err(|e| Error::io(&seg.path, e))?;
            deleted += 1;
        }
        if deleted > 0 {
            sync_dir(&self.config.dir)?;
            self.prune_ids_files()?;
        }
        Ok(deleted)
    }

    fn prune_ids_files(&self) -> Result<()> {
        let cutoff = now_ms() - self.config.idempotency_window.as_millis() as i64;
        for (_, path) in list_numbered(&self.config.dir, "ids-", ".bin")? {
            let newest = fs::read(&path)
                .ok()
                .and_then(|b| IdsFile::decode(b.as_slice()).ok())
                .and_then(|f| f.entries.iter().map(|e| e.received_ms).max());
            if newest.is_none_or(|t| t < cutoff) {
                fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(())
    }
}

struct Writer {
    rx: mpsc::Receiver<Pending>,
    file: File,
    segment: Segment,
    next_seq: u64,
    segments: Arc<Mutex<Segments>>,
    dedup: Arc<Mutex<DedupIndex>>,
    config: Arc<WalConfig>,
    applier: Arc<dyn Applier>,
    metrics: Arc<Metrics>,
}

/// Bytes of field 1 as a varint: one key byte and at most ten of value.
const SEQ_FIELD_MAX_BYTES: usize = 11;

/// A record encoded without its seq, completed with it: protobuf keeps the last occurrence of a
/// scalar field, so appending field 1 to the encoding equals encoding the record with that seq
/// (a unit test holds the two byte-for-byte equivalent on decode).
fn with_seq(mut payload: Vec<u8>, seq: u64) -> Vec<u8> {
    prost::encoding::uint64::encode(1, &seq, &mut payload);
    payload
}

/// Most bytes one group commit gathers before it syncs.
const GROUP_MAX_BYTES: usize = 16 << 20;

impl Writer {
    fn run(mut self) {
        let mut last_prune = Instant::now();
        while let Some(first) = self.rx.blocking_recv() {
            let mut group = vec![first];
            let mut approx = 0usize;
            while approx < GROUP_MAX_BYTES {
                match self.rx.try_recv() {
                    Ok(p) => {
                        approx += p.payload.len();
                        group.push(p);
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(group);
            if last_prune.elapsed() > Duration::from_secs(10) {
                lock(&self.dedup).prune(now_ms(), self.config.idempotency_window);
                last_prune = Instant::now();
            }
        }
        info!("write-ahead log writer stopped");
    }

    fn commit_group(&mut self, group: Vec<Pending>) {
        let started = Instant::now();
        let mut buf = Vec::new();
        let mut written: Vec<Pending> = Vec::with_capacity(group.len());
        let mut duplicates: Vec<(Pending, Option<IngestResponse>)> = Vec::new();
        let budget_used = lock(&self.segments).total_bytes();
        {
            let dedup = lock(&self.dedup);
            for mut p in group {
                let key = p.record.dedup_key();
                if let Some(prev) = dedup.map.get(&key) {
                    let resp = prev.response.clone();
                    duplicates.push((p, Some(resp)));
                    continue;
                }
                if written.iter().any(|w| w.record.dedup_key() == key) {
                    // Same id twice in one group: answer the second after the first is durable.
                    duplicates.push((p, None));
                    continue;
                }
                let limit = match p.reserved {
                    true => self.config.max_bytes + self.config.max_bytes / 16,
                    false => self.config.max_bytes,
                };
                if budget_used + buf.len() as u64 >= limit {
                    self.metrics.wal_full_rejections.inc();
                    let _ = p.reply.send(Err(Error::Unavailable(
                        "write-ahead log is full (is object storage reachable?); retry later"
                            .into(),
                    )));
                    continue;
                }
                p.record.seq = self.next_seq;
                self.next_seq += 1;
                let payload = with_seq(std::mem::take(&mut p.payload), p.record.seq);
                buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
                buf.extend_from_slice(&payload);
                written.push(p);
            }
        }
        if !written.is_empty() {
            if let Err(e) = self.write_and_sync(&buf) {
                error!(error = %e, "write-ahead log append failed; refusing the group");
                // The bytes may be half on disk: start a new segment so replay never reads past
                // the damage into records written later.
                self.next_seq = written.first().map_or(self.next_seq, |p| p.record.seq);
                let _ = self.file.set_len(self.segment.bytes);
                let _ = self.rotate();
                for p in written {
                    let _ = p
                        .reply
                        .send(Err(Error::Unavailable(format!("write-ahead log: {e}"))));
                }
                for (p, _) in duplicates {
                    let _ = p.reply.send(Err(Error::Unavailable(
                        "write-ahead log append failed".into(),
                    )));
                }
                return;
            }
            self.segment.bytes += buf.len() as u64;
            self.segment.last_seq = self.next_seq - 1;
            lock(&self.segments).open_bytes = self.segment.bytes;
            self.metrics
                .wal_fsync_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        let mut responses: HashMap<DedupKey, IngestResponse> = HashMap::new();
        for p in written {
            let mut response = p.record.response(false);
            let mut again = p.record.response(true);
            let key = p.record.dedup_key();
            let (seq, received_ms) = (p.record.seq, p.record.received_ms);
            let duplicate_events = self.applier.apply(p.record, p.prepared);
            response.duplicate_events = duplicate_events;
            again.duplicate_events = duplicate_events;
            lock(&self.dedup).map.insert(
                key.clone(),
                DedupValue {
                    seq,
                    received_ms,
                    response: again,
                },
            );
            responses.insert(key, response.clone());
            let _ = p.reply.send(Ok(response));
        }
        for (p, resp) in duplicates {
            let resp = resp
                .or_else(|| {
                    let key = p.record.dedup_key();
                    lock(&self.dedup).map.get(&key).map(|v| v.response.clone())
                })
                .map(|mut r| {
                    r.duplicate = true;
                    r
                });
            self.metrics.duplicate_requests.inc();
            let _ = p.reply.send(resp.ok_or_else(|| {
                Error::Unavailable(
                    "the first request with this idempotency id failed; retry".into(),
                )
            }));
        }
        if self.segment.bytes >= self.config.segment_bytes
            && let Err(e) = self.rotate()
        {
            warn!(error = %e, "failed to start a new write-ahead log segment");
        }
    }

    fn write_and_sync(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.file.write_all(buf)?;
        if self.config.fsync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        let (file, path) = open_segment(&self.config.dir, self.next_seq)?;
        let old = std::mem::replace(
            &mut self.segment,
            Segment {
                first_seq: self.next_seq,
                last_seq: self.next_seq - 1,
                path,
                bytes: 0,
            },
        );
        self.file = file;
        let mut segs = lock(&self.segments);
        segs.open_bytes = 0;
        if old.path == self.segment.path {
            // The same empty file again (a failed append rewound `next_seq`): keep writing to it.
        } else if old.bytes > 0 {
            segs.closed.push(old);
        } else {
            drop(segs);
            let _ = fs::remove_file(&old.path);
        }
        Ok(())
    }
}

/// Reads a segment's records. Returns them and the length of the valid prefix.
fn read_segment(path: &Path, is_last: bool) -> Result<(Vec<WalRecord>, u64)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut records = Vec::new();
    let mut offset = 0u64;
    let mut header = [0u8; 8];
    let mut payload = Vec::new();
    loop {
        if offset == len {
            break;
        }
        let torn = |offset: u64, what: &str| -> Result<(Vec<WalRecord>, u64)> {
            Err(Error::Internal(format!(
                "write-ahead log segment {} is corrupt at byte {offset}: {what}",
                path.display()
            )))
        };
        let step = (|| -> std::io::Result<Option<&'static str>> {
            if len - offset < 8 {
                return Ok(Some("truncated header"));
            }
            reader.read_exact(&mut header)?;
            let n = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if n > len - offset - 8 {
                return Ok(Some("truncated record"));
            }
            payload.resize(n as usize, 0);
            reader.read_exact(&mut payload)?;
            if crc32fast::hash(&payload) != crc {
                return Ok(Some("checksum mismatch"));
            }
            Ok(None)
        })()
        .map_err(|e| Error::io(path, e))?;
        if let Some(what) = step {
            if is_last {
                warn!(path = %path.display(), offset, what, "cutting a torn tail off the write-ahead log");
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::io(path, e))?;
                f.set_len(offset).map_err(|e| Error::io(path, e))?;
                f.sync_all().map_err(|e| Error::io(path, e))?;
                break;
            }
            return torn(offset, what);
        }
        let record = match WalRecord::decode(payload.as_slice()) {
            Ok(r) => r,
            Err(e) => return torn(offset, &format!("undecodable record: {e}")),
        };
        offset += 8 + payload.len() as u64;
        records.push(record);
    }
    Ok((records, offset))
}

fn open_segment(dir: &Path, first_seq: u64) -> Result<(File, PathBuf)> {
    let path = dir.join(format!("wal-{first_seq:020}.log"));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)?;
    Ok((file, path))
}

fn list_numbered(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(suffix))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((n, entry.path()));
        }
    }
    Ok(out)
}

fn load_ids_files(config: &WalConfig, dedup: &mut DedupIndex, now: i64) -> Result<()> {
    for (_, path) in list_numbered(&config.dir, "ids-", ".bin")? {
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let Ok(file) = IdsFile::decode(bytes.as_slice()) else {
            warn!(path = %path.display(), "ignoring an unreadable idempotency file");
            continue;
        };
        for e in file.entries {
            let mut response = e.response.unwrap_or_default();
            response.duplicate = true;
            dedup.map.insert(
                DedupKey {
                    tenant: e.tenant,
                    kind: e.kind,
                    id: e.id,
                },
                DedupValue {
                    seq: e.seq,
                    received_ms: e.received_ms,
                    response,
                },
            );
        }
    }
    dedup.prune(now, config.idempotency_window);
    Ok(())
}

fn read_or_create_server_id(dir: &Path) -> Result<String> {
    let path = dir.join("server-id");
    match fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            write_atomically(&path, id.as_bytes())?;
            Ok(id)
        }
    }
}

/// Writes a file so that a crash leaves either the old or the new content.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the data are plain
/// maps and counters that stay consistent between statements).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
