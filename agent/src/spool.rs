//! The agent's durable state: an on-disk buffer of ready-to-send requests, and the position of
//! every source, kept together so that one cannot run ahead of the other.
//!
//! A source (a tailed file, the CloudTrail directory, the audit intake, the metrics collector)
//! turns what it read into whole requests and appends them as one [`Record`], together with its
//! new position (for a file: the offset just past the last line in the record). The record is
//! written and synced before anything else happens, so after a crash a source resumes exactly
//! after the last record it appended: nothing is read twice and nothing is skipped.
//!
//! The sender reads records in order and acknowledges each once the server has accepted it.
//! Every request carries an idempotency id fixed when the record was written
//! (`<agent id>-<seq>-<i>`), so resending a record after a crash is a no-op on the server.
//!
//! # Files (under `<state dir>/buffer`)
//! - `<first seq>.seg`: records, each framed as `u32 length, u32 crc32, body` (little endian).
//!   A torn or corrupt tail (a crash mid-write) is cut off when the spool is opened.
//! - `acked`: the highest sequence number the server has accepted.
//! - `positions.json`: source positions as of a sequence number, written (atomically) before any
//!   segment is deleted; positions of later records are read back from the segments.
//!
//! The buffer is bounded: past `max_bytes` the oldest segment is dropped, its unsent records
//! counted as dropped and logged.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use prost::Message as _;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::stats::Stats;

/// What kind of requests a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `PutMetricDataRequest`s.
    Metrics = 1,
    /// `PutLogEventsRequest`s.
    Logs = 2,
    /// `PutAuditEventsRequest`s.
    Audit = 3,
}

impl Kind {
    fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Metrics,
            2 => Self::Logs,
            3 => Self::Audit,
            _ => return None,
        })
    }
}

/// One source position carried by a record: `key` is the source's name (for a file,
/// `file:<dev>:<inode>`), `state` its serialized position; an empty state forgets the key.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Position {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub state: String,
}

/// One durable unit: encoded requests of one kind, and the source positions they advance to.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(uint32, tag = "2")]
    pub kind: u32,
    /// Encoded requests, idempotency ids already set.
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub payloads: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "4")]
    pub positions: Vec<Position>,
    /// Items (datapoints, log events, audit records) in the payloads, for accounting.
    #[prost(uint64, tag = "5")]
    pub items: u64,
}

impl Record {
    /// The kind of the payloads, if known.
    pub fn kind(&self) -> Option<Kind> {
        Kind::from_u32(self.kind)
    }
}

/// Sizing and durability of the buffer.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Bytes on disk past which the oldest records are dropped.
    pub max_bytes: u64,
    /// Sync every record to disk before it counts as written (survives power loss, not only a
    /// crash of the agent).
    pub sync: bool,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    /// Sequence numbers and item counts of the records in it.
    records: Vec<(u64, u64)>,
    bytes: u64,
    path: PathBuf,
}

impl Segment {
    fn last_seq(&self) -> Option<u64> {
        self.records.last().map(|r| r.0)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    seq: u64,
    positions: BTreeMap<String, String>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: SpoolOptions,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    writer: Option<File>,
    acked_file: File,
    next_seq: u64,
    acked: u64,
    positions: BTreeMap<String, String>,
    total_bytes: u64,
}

/// Where the sender is in the buffer.
#[derive(Debug, Default)]
pub struct Cursor {
    /// The next sequence number wanted.
    seq: u64,
    segment_first: u64,
    offset: u64,
    file: Option<File>,
}

/// The durable buffer and the source positions. Shared by every source and the sender.
#[derive(Debug)]
pub struct Spool {
    inner: Mutex<Inner>,
    /// Woken when a record is appended (or dropped).
    pub appended: tokio::sync::Notify,
    stats: Arc<Stats>,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

const FRAME_HEADER: usize = 8;
/// A record larger than this is refused when written and treated as corruption when read.
pub const MAX_RECORD_BYTES: usize = 256 << 20;

/// Reads one frame at the reader's position: `Ok(None)` at a clean end, `Err` for a torn or
/// corrupt frame.
fn read_frame(r: &mut impl io::Read) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; FRAME_HEADER];
    let mut got = 0;
    while got < FRAME_HEADER {
        let n = r.read(&mut header[got..])?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "torn frame header",
                ))
            };
        }
        got += n;
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    if crc32fast::hash(&body) != crc {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame checksum mismatch",
        ));
    }
    Ok(Some(body))
}

/// Writes a frame's header and body in one system call where the kernel allows.
fn write_frame(w: &mut File, header: &[u8], body: &[u8]) -> io::Result<()> {
    let mut bufs = [io::IoSlice::new(header), io::IoSlice::new(body)];
    let mut slices: &mut [io::IoSlice<'_>] = &mut bufs;
    while !slices.is_empty() {
        let n = w.write_vectored(slices)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        io::IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

impl Spool {
    /// Opens (or creates) the buffer under `dir`, cutting off a torn tail and reading back the
    /// positions of every record written.
    pub fn open(dir: &Path, options: SpoolOptions, stats: Arc<Stats>) -> io::Result<Self> {
        create_private_dir(dir)?;
        let checkpoint: Checkpoint = match fs::read(dir.join("positions.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", dir.join("positions.json").display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Checkpoint::default(),
            Err(e) => return Err(e),
        };
        let acked_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("acked"))?;
        let mut acked = 0u64;
        let mut buf = [0u8; 12];
        if acked_file.read_exact_at(&mut buf, 0).is_ok() {
            let seq = u64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
            let crc = u32::from_le_bytes(buf[8..].try_into().unwrap_or_default());
            if crc32fast::hash(&buf[..8]) == crc {
                acked = seq;
            } else {
                warn!("buffer: unreadable ack mark; unacknowledged records will be resent");
            }
        }
        let mut firsts: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut positions = checkpoint.positions;
        let mut segments = VecDeque::new();
        let mut max_seq = checkpoint.seq.max(acked);
        let mut total_bytes = 0;
        for first in firsts {
            let path = segment_path(dir, first);
            let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
            let mut reader = io::BufReader::new(&mut file);
            let mut records = Vec::new();
            let mut good = 0u64;
            loop {
                match read_frame(&mut reader) {
                    Ok(Some(body)) => {
                        let Ok(record) = Record::decode(body.as_slice()) else {
                            warn!(segment = %path.display(), "buffer: undecodable record; cutting the segment here");
                            break;
                        };
                        good += (FRAME_HEADER + body.len()) as u64;
                        if record.seq > checkpoint.seq {
                            for p in &record.positions {
                                if p.state.is_empty() {
                                    positions.remove(&p.key);
                                } else {
                                    positions.insert(p.key.clone(), p.state.clone());
                                }
                            }
                        }
                        max_seq = max_seq.max(record.seq);
                        records.push((record.seq, record.items));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        warn!(segment = %path.display(), error = %e, "buffer: torn record at the end (a crash mid-write); cutting it off");
                        break;
                    }
                }
            }
            drop(reader);
            if file.metadata()?.len() != good {
                file.set_len(good)?;
                file.sync_all()?;
            }
            if records.is_empty() {
                fs::remove_file(&path)?;
                continue;
            }
            total_bytes += good;
            segments.push_back(Segment {
                first_seq: first,
                records,
                bytes: good,
                path,
            });
        }
        let segment_bytes = (options.max_bytes / 8).clamp(64 << 10, 8 << 20);
        let inner = Inner {
            dir: dir.to_path_buf(),
            options,
            segment_bytes,
            segments,
            writer: None,
            acked_file,
            next_seq: max_seq + 1,
            acked,
            positions,
            total_bytes,
        };
        let spool = Self {
            inner: Mutex::new(inner),
            appended: tokio::sync::Notify::new(),
            stats,
        };
        {
            let mut inner = spool.lock();
            let pending: u64 = inner
                .segments
                .iter()
                .flat_map(|s| &s.records)
                .filter(|r| r.0 > acked)
                .count() as u64;
            if pending > 0 {
                info!(
                    records = pending,
                    bytes = inner.total_bytes,
                    "buffer: resuming with unsent records"
                );
            }
            spool.release_acked(&mut inner)?;
            spool
                .stats
                .buffer_bytes
                .store(inner.total_bytes, Ordering::Relaxed);
        }
        Ok(spool)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The position of every source, as of the last record written.
    pub fn positions(&self) -> BTreeMap<String, String> {
        self.lock().positions.clone()
    }

    /// The position of one source.
    pub fn position(&self, key: &str) -> Option<String> {
        self.lock().positions.get(key).cloned()
    }

    /// Forgets a source's position (a file that is gone); the next checkpoint leaves it out.
    pub fn forget(&self, key: &str) {
        self.lock().positions.remove(key);
    }

    /// Bytes of records on disk.
    pub fn bytes(&self) -> u64 {
        self.lock().total_bytes
    }

    /// Appends a record and syncs it; returns its sequence number. `payloads` are built by
    /// `build` from the idempotency prefix of the record (`<agent>-<seq>`).
    pub fn append(
        &self,
        kind: Kind,
        items: u64,
        positions: Vec<Position>,
        build: impl FnOnce(u64) -> Vec<Vec<u8>>,
    ) -> io::Result<u64> {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        let record = Record {
            seq,
            kind: kind as u32,
            payloads: build(seq),
            positions,
            items,
        };
        let body = record.encode_to_vec();
        if body.len() > MAX_RECORD_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "record of {} bytes is larger than {MAX_RECORD_BYTES}",
                    body.len()
                ),
            ));
        }
        let need_new = match inner.segments.back() {
            None => true,
            Some(s) => inner.writer.is_none() || s.bytes >= inner.segment_bytes,
        };
        if need_new {
            let path = segment_path(&inner.dir, seq);
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            if inner.options.sync {
                sync_dir(&inner.dir)?;
            }
            inner.writer = Some(file);
            inner.segments.push_back(Segment {
                first_seq: seq,
                records: Vec::new(),
                bytes: 0,
                path,
            });
        }
        let mut header = [0u8; FRAME_HEADER];
        header[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&crc32fast::hash(&body).to_le_bytes());
        let frame_len = (FRAME_HEADER + body.len()) as u64;
        let sync = inner.options.sync;
        let Some(writer) = inner.writer.as_mut() else {
            return Err(io::Error::other("buffer writer missing"));
        };
        let written = write_frame(writer, &header, &body);
        if let Err(e) = written.and_then(|()| if sync { writer.sync_data() } else { Ok(()) }) {
            // The segment may now end in a torn frame: start a new one for the next record (the
            // torn tail is cut off at the next start).
            inner.writer = None;
            return Err(e);
        }
        inner.next_seq += 1;
        for p in record.positions {
            if p.state.is_empty() {
                inner.positions.remove(&p.key);
            } else {
                inner.positions.insert(p.key, p.state);
            }
        }
        if let Some(s) = inner.segments.back_mut() {
            s.records.push((seq, items));
            s.bytes += frame_len;
        }
        inner.total_bytes += frame_len;
        self.enforce_budget(&mut inner)?;
        self.stats
            .buffer_bytes
            .store(inner.total_bytes, Ordering::Relaxed);
        drop(inner);
        self.appended.notify_one();
        Ok(seq)
    }

    /// Drops the oldest segments while the buffer is over budget (never the one being written).
    fn enforce_budget(&self, inner: &mut Inner) -> io::Result<()> {
        while inner.total_bytes > inner.options.max_bytes && inner.segments.len() > 1 {
            Self::write_checkpoint(inner)?;
            let Some(seg) = inner.segments.pop_front() else {
                break;
            };
            let acked = inner.acked;
            let (records, items) = seg
                .records
                .iter()
                .filter(|r| r.0 > acked)
                .fold((0u64, 0u64), |(n, i), r| (n + 1, i + r.1));
            fs::remove_file(&seg.path)?;
            inner.total_bytes -= seg.bytes;
            if let Some(last) = seg.last_seq() {
                inner.acked = inner.acked.max(last);
            }
            Self::write_acked(inner)?;
            if records > 0 {
                self.stats
                    .dropped_records
                    .fetch_add(records, Ordering::Relaxed);
                self.stats.dropped_items.fetch_add(items, Ordering::Relaxed);
                warn!(
                    records,
                    items,
                    bytes = seg.bytes,
                    max_bytes = inner.options.max_bytes,
                    "buffer full: dropped the oldest unsent records"
                );
            }
        }
        Ok(())
    }

    fn write_acked(inner: &mut Inner) -> io::Result<()> {
        let mut buf = [0u8; 12];
        buf[..8].copy_from_slice(&inner.acked.to_le_bytes());
        let crc = crc32fast::hash(&buf[..8]);
        buf[8..].copy_from_slice(&crc.to_le_bytes());
        inner.acked_file.write_all_at(&buf, 0)
    }

    /// Persists every source position as of the last record written, so that segments can go.
    fn write_checkpoint(inner: &Inner) -> io::Result<()> {
        let checkpoint = Checkpoint {
            seq: inner.next_seq - 1,
            positions: inner.positions.clone(),
        };
        let bytes = serde_json::to_vec(&checkpoint).map_err(io::Error::other)?;
        let tmp = inner.dir.join("positions.json.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, inner.dir.join("positions.json"))?;
        sync_dir(&inner.dir)
    }

    /// Persists the positions now (on shutdown, so a restart does not rescan the segments).
    pub fn checkpoint(&self) -> io::Result<()> {
        Self::write_checkpoint(&self.lock())
    }

    /// Records that the server accepted every record up to `seq`; deletes segments that hold
    /// nothing unsent.
    pub fn ack(&self, seq: u64) -> io::Result<()> {
        let mut inner = self.lock();
        if seq <= inner.acked {
            return Ok(());
        }
        inner.acked = seq;
        Self::write_acked(&mut inner)?;
        self.release_acked(&mut inner)?;
        self.stats
            .buffer_bytes
            .store(inner.total_bytes, Ordering::Relaxed);
        Ok(())
    }

    fn release_acked(&self, inner: &mut Inner) -> io::Result<()> {
        let acked = inner.acked;
        let done = |s: &Segment| s.last_seq().is_some_and(|l| l <= acked);
        let removable = inner.segments.iter().take_while(|s| done(s)).count();
        if removable == inner.segments.len() {
            // Everything is delivered: the segment being written goes too, and the next record
            // starts a new one, so an idle agent holds no data on disk.
            inner.writer = None;
        }
        if removable == 0 {
            return Ok(());
        }
        Self::write_checkpoint(inner)?;
        for _ in 0..removable {
            if let Some(seg) = inner.segments.pop_front() {
                fs::remove_file(&seg.path)?;
                inner.total_bytes -= seg.bytes;
            }
        }
        Ok(())
    }

    /// The next record after the cursor that the server has not accepted yet, if any.
    pub fn next(&self, cursor: &mut Cursor) -> io::Result<Option<Record>> {
        let inner = self.lock();
        if cursor.seq <= inner.acked {
            cursor.seq = inner.acked + 1;
            cursor.file = None;
        }
        loop {
            if cursor.seq >= inner.next_seq {
                return Ok(None);
            }
            let Some(seg) = inner
                .segments
                .iter()
                .find(|s| s.last_seq().is_some_and(|l| l >= cursor.seq))
            else {
                return Ok(None);
            };
            if cursor.file.is_none() || cursor.segment_first != seg.first_seq {
                cursor.file = Some(File::open(&seg.path)?);
                cursor.segment_first = seg.first_seq;
                cursor.offset = 0;
            }
            let Some(file) = cursor.file.as_mut() else {
                return Ok(None);
            };
            file.seek(SeekFrom::Start(cursor.offset))?;
            let is_last = inner
                .segments
                .back()
                .is_some_and(|s| s.first_seq == seg.first_seq);
            let mut reader = io::BufReader::new(file);
            let body = match read_frame(&mut reader) {
                Ok(Some(body)) => body,
                // The end of the segment being written: wait here for more.
                Ok(None) if is_last => return Ok(None),
                // The end of an older segment, or a tail torn by a failed write: go on with
                // the next segment.
                Ok(None) | Err(_) if !is_last => {
                    cursor.file = None;
                    cursor.seq = seg.last_seq().map_or(cursor.seq, |l| l + 1).max(cursor.seq);
                    continue;
                }
                Ok(None) => return Ok(None),
                Err(e) => return Err(e),
            };
            cursor.offset += (FRAME_HEADER + body.len()) as u64;
            let record = Record::decode(body.as_slice())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if record.seq < cursor.seq {
                continue;
            }
            cursor.seq = record.seq + 1;
            return Ok(Some(record));
        }
    }

    /// Whether a record is gone (acknowledged, or dropped to keep the budget).
    pub fn is_done(&self, seq: u64) -> bool {
        self.lock().acked >= seq
    }

    /// Records written but not yet accepted by the server.
    pub fn pending(&self) -> u64 {
        let inner = self.lock();
        inner.next_seq - 1 - inner.acked.min(inner.next_seq - 1)
    }
}

/// Creates `path` and its parents and makes `path` readable by its owner alone (0700): the
/// buffer and checkpoints hold log lines and audit records no other local user may read.
///
/// # Errors
/// The directory cannot be created or its mode set.
pub(crate) fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
