//! Log files: globs expanded again and again, every matching file tailed by its identity
//! (device and inode) rather than its name, so that rotation by rename and by copytruncate lose
//! nothing and read nothing twice.
//!
//! Lines become events (multi-line joining by a start pattern, long lines cut or split, invalid
//! UTF-8 replaced), events become `PutLogEvents` batches, and each batch is appended to the
//! [`crate::spool::Spool`] together with the file offset just past its last line: that offset is the file's
//! checkpoint, so a restart resumes exactly after the last batch written.
//!
//! A file's position is `file:<glob>:<dev>:<inode>` in the spool, with its path and a
//! fingerprint (CRC of its first bytes) that tells a reused inode or a rewritten file from the
//! one that was being read.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prost::Message as _;
use regex::Regex;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};
use watchtrail_proto::v1::{LogEvent, LogOrigin, PutLogEventsRequest};

use crate::config::{FileConfig, LongLines, StartPosition};
use crate::spool::{Kind, Position};
use crate::timefmt::TimeFormat;
use crate::{Context, now_ms};

// CloudWatch Logs' batch limits (reference section 3), as the server enforces them.
use watchtrail_model::limits::{
    LOG_EVENT_OVERHEAD as EVENT_OVERHEAD, MAX_LOG_BATCH_BYTES as MAX_BATCH_BYTES,
    MAX_LOG_BATCH_SPAN_MS as MAX_BATCH_SPAN_MS, MAX_LOG_EVENTS as MAX_BATCH_EVENTS,
};
/// Bytes at the start of a file that identify it.
const FINGERPRINT_BYTES: u64 = 256;
/// Bytes read from one file per poll before the others get their turn.
const READ_PER_POLL: u64 = 4 << 20;
/// How long the tailer waits before taking something as complete.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    /// A multi-line event is complete when no line has joined it for this long.
    pub multi_line: Duration,
    /// A last line without a newline is taken as it is after this long without growth.
    pub partial_line: Duration,
    /// A file renamed out of the glob or deleted is read until it has not grown for this long.
    pub rotated: Duration,
}

impl Default for Waits {
    fn default() -> Self {
        Self {
            multi_line: Duration::from_secs(1),
            partial_line: Duration::from_secs(5),
            rotated: Duration::from_secs(5),
        }
    }
}
const TRUNCATED_MARK: &str = "[Truncated...]";
/// Compressed files (rotated logs are often compressed) are never tailed.
const SKIPPED_EXTENSIONS: [&str; 6] = ["gz", "zip", "bz2", "xz", "zst", "lz4"];

/// A file's checkpoint, as kept in the spool.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileState {
    path: PathBuf,
    offset: u64,
    fp_len: u64,
    fp_crc: u32,
    /// The file's name when it was found (for `{file_name}` after a rename).
    name: String,
}

#[derive(Debug)]
struct Pending {
    text: Vec<u8>,
    end: u64,
    updated: Instant,
    truncated: bool,
}

#[derive(Debug)]
struct Tailer {
    key: String,
    path: PathBuf,
    name: String,
    file: File,
    group: String,
    stream: String,
    read_pos: u64,
    fp_len: u64,
    fp_crc: u32,
    partial: Vec<u8>,
    partial_truncated: bool,
    pending: Option<Pending>,
    batch: Vec<LogEvent>,
    batch_bytes: usize,
    batch_started: Option<Instant>,
    batch_span: (i64, i64),
    /// Offset just past the last line that is in the batch (or was skipped).
    batch_end: u64,
    /// Offset written to the spool.
    committed: u64,
    /// The spool does not have this file's current position yet.
    unrecorded: bool,
    last_growth: Instant,
    /// No longer matched by the glob (renamed away or deleted): read to the end, then closed.
    gone_since: Option<Instant>,
}

/// One `[[logs.files]]` entry and the files it currently tails.
#[derive(Debug)]
pub struct FileSource {
    index: usize,
    config: FileConfig,
    ctx: Arc<Context>,
    start: Option<Regex>,
    timestamp: Option<TimeFormat>,
    filters: Vec<(bool, Regex)>,
    tailers: HashMap<(u64, u64), Tailer>,
    /// Files present at the very first start follow `start_position`; later ones are new.
    first_start: bool,
    flush_interval: Duration,
    waits: Waits,
    buf: Vec<u8>,
}

fn fingerprint(file: &File, len: u64) -> std::io::Result<(u64, u32)> {
    let n = len.min(FINGERPRINT_BYTES);
    let mut buf = vec![0u8; n as usize];
    file.read_exact_at(&mut buf, 0)?;
    Ok((n, crc32fast::hash(&buf)))
}

/// The CloudWatch agent's default log group: the path up to its last dot.
fn default_group(path: &Path) -> String {
    let p = path.to_string_lossy();
    let name_start = p.rfind('/').map_or(0, |i| i + 1);
    match p[name_start..].rfind('.') {
        Some(dot) if dot > 0 => p[..name_start + dot].to_string(),
        _ => p.into_owned(),
    }
}

/// Replaces what CloudWatch does not allow in a log group name.
fn clean_group(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-/.#".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(512)
        .collect();
    if out.is_empty() { "_".into() } else { out }
}

fn clean_stream(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| if c == ':' || c == '*' { '_' } else { c })
        .take(512)
        .collect();
    if out.is_empty() { "_".into() } else { out }
}

/// Largest cut at or below `max` that does not split a UTF-8 character.
fn char_boundary(bytes: &[u8], max: usize) -> usize {
    let mut cut = max.min(bytes.len());
    let floor = cut.saturating_sub(3);
    while cut > floor && cut < bytes.len() && (bytes[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    if cut == 0 { max.min(bytes.len()) } else { cut }
}

impl FileSource {
    /// Compiles one file entry (already validated by [`crate::config::Config::validate`]).
    pub fn new(
        index: usize,
        config: FileConfig,
        ctx: Arc<Context>,
        flush_interval: Duration,
    ) -> anyhow::Result<Self> {
        let timestamp = config
            .timestamp_format
            .as_deref()
            .map(|f| TimeFormat::parse(f, config.timezone == crate::config::Timezone::Utc))
            .transpose()
            .map_err(anyhow::Error::msg)?;
        let start = match config.multi_line_start_pattern.as_deref() {
            None => None,
            Some("{timestamp_format}") => timestamp
                .as_ref()
                .map(|t| Regex::new(t.pattern()))
                .transpose()?,
            Some(p) => Some(Regex::new(p)?),
        };
        let filters = config
            .filters
            .iter()
            .map(|f| Ok((f.kind == "include", Regex::new(&f.expression)?)))
            .collect::<anyhow::Result<_>>()?;
        let init_key = format!("glob:{}", config.path);
        let first_start = ctx.spool.position(&init_key).is_none();
        if first_start {
            ctx.spool.append(
                Kind::Logs,
                0,
                vec![Position {
                    key: init_key,
                    state: "1".into(),
                }],
                |_| Vec::new(),
            )?;
        }
        let mut source = Self {
            index,
            config,
            ctx,
            start,
            timestamp,
            filters,
            tailers: HashMap::new(),
            first_start,
            flush_interval,
            waits: Waits::default(),
            buf: Vec::new(),
        };
        source.resume_rotated();
        Ok(source)
    }

    fn key(&self, id: (u64, u64)) -> String {
        format!("file:{}:{}:{}", self.config.path, id.0, id.1)
    }

    /// After a restart: files with a checkpoint that the glob no longer matches (rotated by
    /// rename while the agent was down) are looked for next to where they were, and finished.
    fn resume_rotated(&mut self) {
        let prefix = format!("file:{}:", self.config.path);
        let matched: Vec<(u64, u64)> = self.matches().into_iter().map(|(_, id, _)| id).collect();
        for (key, state) in self.ctx.spool.positions() {
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            let mut it = rest.split(':').map(str::parse::<u64>);
            let (Some(Ok(dev)), Some(Ok(ino))) = (it.next(), it.next()) else {
                continue;
            };
            if matched.contains(&(dev, ino)) {
                continue;
            }
            let Ok(state) = serde_json::from_str::<FileState>(&state) else {
                self.ctx.spool.forget(&key);
                continue;
            };
            let found = state.path.parent().and_then(|dir| {
                std::fs::read_dir(dir)
                    .ok()?
                    .filter_map(Result::ok)
                    .find_map(|e| {
                        let m = e.metadata().ok()?;
                        (m.is_file() && (m.dev(), m.ino()) == (dev, ino)).then(|| e.path())
                    })
            });
            match found {
                Some(path) => {
                    info!(path = %path.display(), offset = state.offset, "finishing a file rotated while the agent was down");
                    if let Some(mut t) = self.open_tailer(&path, (dev, ino)) {
                        t.gone_since = Some(Instant::now());
                        self.tailers.insert((dev, ino), t);
                    }
                }
                None => self.ctx.spool.forget(&key),
            }
        }
    }

    /// Files the glob matches now, with their identity and size.
    fn matches(&self) -> Vec<(PathBuf, (u64, u64), u64)> {
        let Ok(paths) = glob::glob(&crate::config::normalize_glob(&self.config.path)) else {
            return Vec::new();
        };
        paths
            .filter_map(Result::ok)
            .filter(|p| {
                !p.extension()
                    .is_some_and(|e| SKIPPED_EXTENSIONS.iter().any(|s| e == *s))
            })
            .filter_map(|p| {
                // A link is taken only when the configuration says so. Its identity is the
                // link's own when it is not followed, so a file swapped for a link between this
                // and the open never matches that identity and is not read.
                let m = if self.config.follow_symlinks {
                    std::fs::metadata(&p).ok()?
                } else {
                    std::fs::symlink_metadata(&p).ok()?
                };
                m.is_file().then(|| (p, (m.dev(), m.ino()), m.len()))
            })
            .collect()
    }

    fn expand(&self, template: &str, path: &Path, name: &str) -> String {
        template
            .replace("{hostname}", &self.ctx.hostname)
            .replace("{local_hostname}", &self.ctx.hostname)
            .replace("{instance_id}", &self.ctx.hostname)
            .replace("{ip_address}", &self.ctx.ip_address)
            .replace("{file_name}", name)
            .replace("{file_path}", &path.to_string_lossy())
    }

    /// Opens a file for tailing, from its checkpoint when it has one.
    fn open_tailer(&mut self, path: &Path, id: (u64, u64)) -> Option<Tailer> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot open log file");
                return None;
            }
        };
        let meta = file.metadata().ok()?;
        if (meta.dev(), meta.ino()) != id {
            return None; // replaced between the glob and the open: the next scan sees it
        }
        let size = meta.len();
        let key = self.key(id);
        let saved = self
            .ctx
            .spool
            .position(&key)
            .and_then(|s| serde_json::from_str::<FileState>(&s).ok());
        let mut name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut resumed = false;
        let offset = match &saved {
            Some(state) => {
                let same = state.offset <= size
                    && fingerprint(&file, state.fp_len)
                        .is_ok_and(|fp| fp == (state.fp_len, state.fp_crc));
                if same {
                    name.clone_from(&state.name);
                    resumed = true;
                    state.offset
                } else {
                    info!(path = %path.display(), "file replaced or truncated since its checkpoint; reading it from the start");
                    0
                }
            }
            None if self.first_start && self.config.start_position == StartPosition::End => size,
            None => 0,
        };
        let (fp_len, fp_crc) = fingerprint(&file, size).ok()?;
        let group = match &self.config.log_group {
            Some(t) => self.expand(t, path, &name),
            None => default_group(path),
        };
        let stream = self.expand(
            self.config.log_stream.as_deref().unwrap_or("{hostname}"),
            path,
            &name,
        );
        debug!(path = %path.display(), offset, "tailing");
        Some(Tailer {
            key,
            path: path.to_path_buf(),
            name,
            file,
            group: clean_group(&group),
            stream: clean_stream(&stream),
            read_pos: offset,
            fp_len,
            fp_crc,
            partial: Vec::new(),
            partial_truncated: false,
            pending: None,
            batch: Vec::new(),
            batch_bytes: 0,
            batch_started: None,
            batch_span: (i64::MAX, i64::MIN),
            batch_end: offset,
            committed: offset,
            unrecorded: !resumed,
            last_growth: Instant::now(),
            gone_since: None,
        })
    }

    /// Expands the glob: new files are opened, files no longer matched are finished.
    pub fn scan(&mut self) {
        let found = self.matches();
        for (path, id, _) in &found {
            if let Some(t) = self.tailers.get_mut(id) {
                t.path.clone_from(path);
                t.gone_since = None;
                continue;
            }
            if let Some(t) = self.open_tailer(path, *id) {
                self.tailers.insert(*id, t);
            }
        }
        let now = Instant::now();
        for (id, t) in &mut self.tailers {
            if t.gone_since.is_none() && !found.iter().any(|f| f.1 == *id) {
                debug!(path = %t.path.display(), "no longer matched (rotated or deleted); reading it to the end");
                t.gone_since = Some(now);
            }
        }
        self.first_start = false;
        self.ctx
            .stats
            .files_tailed
            .store(self.tailers.len() as u64, Ordering::Relaxed);
    }

    /// Reads what every file has gained; returns true when a file has more than was read.
    pub fn poll(&mut self) -> bool {
        let mut more = false;
        let ids: Vec<(u64, u64)> = self.tailers.keys().copied().collect();
        for id in ids {
            let Some(mut t) = self.tailers.remove(&id) else {
                continue;
            };
            match self.poll_one(&mut t) {
                Ok(has_more) => {
                    more |= has_more;
                    let finished = !has_more
                        && t.gone_since
                            .is_some_and(|g| g.elapsed() >= self.waits.rotated)
                        && t.last_growth.elapsed() >= self.waits.rotated;
                    if finished {
                        if let Err(e) = self.finish(&mut t) {
                            warn!(path = %t.path.display(), error = %e, "cannot write the last batch of a rotated file; will retry");
                            self.tailers.insert(id, t);
                        } else {
                            debug!(path = %t.path.display(), "done with a rotated file");
                            self.ctx.spool.forget(&t.key);
                        }
                    } else {
                        self.tailers.insert(id, t);
                    }
                }
                Err(e) => {
                    warn!(path = %t.path.display(), error = %e, "error reading log file; will retry");
                    self.tailers.insert(id, t);
                }
            }
        }
        self.ctx
            .stats
            .files_tailed
            .store(self.tailers.len() as u64, Ordering::Relaxed);
        more
    }

    fn poll_one(&mut self, t: &mut Tailer) -> anyhow::Result<bool> {
        let result = self.read_new(t);
        if result.is_err() {
            // A batch could not be written: forget what was read after the last batch that was,
            // and read it again next time.
            t.read_pos = t.committed;
            t.batch_end = t.committed;
            t.partial.clear();
            t.partial_truncated = false;
            t.pending = None;
            t.batch.clear();
            t.batch_bytes = 0;
            t.batch_started = None;
            t.batch_span = (i64::MAX, i64::MIN);
        }
        result
    }

    fn read_new(&mut self, t: &mut Tailer) -> anyhow::Result<bool> {
        let size = t.file.metadata()?.len();
        let changed_fp = if size != t.read_pos && t.fp_len > 0 {
            fingerprint(&t.file, t.fp_len)
                .map(|fp| fp != (t.fp_len, t.fp_crc))
                .unwrap_or(false)
        } else {
            false
        };
        if size < t.read_pos || changed_fp {
            info!(path = %t.path.display(), size, offset = t.read_pos, "file truncated (copytruncate?); reading it from the start");
            self.flush_partial(t);
            self.emit_pending(t)?;
            self.flush_batch(t)?;
            t.read_pos = 0;
            t.batch_end = 0;
            (t.fp_len, t.fp_crc) = (0, 0);
            t.unrecorded = true;
        }
        if t.fp_len < FINGERPRINT_BYTES && size > t.fp_len {
            (t.fp_len, t.fp_crc) = fingerprint(&t.file, size)?;
        }
        let mut read = 0u64;
        let now = Instant::now();
        while t.read_pos < size && read < READ_PER_POLL {
            let want = (size - t.read_pos).min(256 << 10) as usize;
            self.buf.resize(want, 0);
            let n = t.file.read_at(&mut self.buf[..want], t.read_pos)?;
            if n == 0 {
                break;
            }
            let chunk = std::mem::take(&mut self.buf);
            self.consume(t, &chunk[..n])?;
            self.buf = chunk;
            t.read_pos += n as u64;
            read += n as u64;
            t.last_growth = now;
        }
        self.ctx
            .stats
            .file_bytes_read
            .fetch_add(read, Ordering::Relaxed);
        let more = t.read_pos < size;
        if !more {
            let idle = t.last_growth.elapsed();
            let w = self.waits;
            if !t.partial.is_empty()
                && (idle >= w.partial_line || t.gone_since.is_some_and(|_| idle >= w.rotated))
            {
                self.flush_partial(t);
            }
            if t.pending
                .as_ref()
                .is_some_and(|p| p.updated.elapsed() >= w.multi_line)
            {
                self.emit_pending(t)?;
            }
        }
        let due = t
            .batch_started
            .is_some_and(|s| s.elapsed() >= self.flush_interval);
        let moved = t.batch.is_empty()
            && (t.batch_end != t.committed || t.unrecorded)
            && t.pending.is_none()
            && t.partial.is_empty();
        if due || moved {
            self.flush_batch(t)?;
        }
        Ok(more)
    }

    /// Splits a chunk into lines.
    fn consume(&mut self, t: &mut Tailer, chunk: &[u8]) -> anyhow::Result<()> {
        let mut start = 0;
        let base = t.read_pos;
        while let Some(i) = memchr::memchr(b'\n', &chunk[start..]) {
            self.push_partial(t, &chunk[start..start + i], base + (start as u64))?;
            let end = base + (start + i + 1) as u64;
            self.complete_line(t, end)?;
            start += i + 1;
        }
        self.push_partial(t, &chunk[start..], base + start as u64)
    }

    /// Adds bytes to the line being read, cutting or splitting it at `max_event_bytes`.
    fn push_partial(
        &mut self,
        t: &mut Tailer,
        mut bytes: &[u8],
        mut at: u64,
    ) -> anyhow::Result<()> {
        let max = self.config.max_event_bytes;
        if t.partial_truncated {
            // The rest of a line already cut is skipped until its newline.
            return Ok(());
        }
        loop {
            let room = max.saturating_sub(t.partial.len());
            if bytes.len() <= room {
                t.partial.extend_from_slice(bytes);
                return Ok(());
            }
            match self.config.long_lines {
                LongLines::Truncate => {
                    if !t.partial_truncated {
                        let mut all = std::mem::take(&mut t.partial);
                        all.extend_from_slice(&bytes[..room]);
                        let cut = char_boundary(&all, max);
                        all.truncate(cut);
                        t.partial = all;
                        t.partial_truncated = true;
                        self.ctx
                            .stats
                            .lines_truncated
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(());
                }
                LongLines::Split => {
                    let mut all = std::mem::take(&mut t.partial);
                    let before = all.len();
                    all.extend_from_slice(&bytes[..room]);
                    let cut = char_boundary(&all, max).max(before);
                    let taken = cut.saturating_sub(before);
                    all.truncate(cut);
                    t.partial = all;
                    self.ctx
                        .stats
                        .lines_truncated
                        .fetch_add(1, Ordering::Relaxed);
                    at += taken as u64;
                    bytes = &bytes[taken..];
                    // The piece ends mid-line: its checkpoint is the byte after it.
                    self.complete_line(t, at)?;
                }
            }
        }
    }

    /// A line is complete (its bytes are in `partial`): joins it into the event being built.
    fn complete_line(&mut self, t: &mut Tailer, end: u64) -> anyhow::Result<()> {
        let mut line = std::mem::take(&mut t.partial);
        let truncated = std::mem::replace(&mut t.partial_truncated, false);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        self.ctx.stats.lines_read.fetch_add(1, Ordering::Relaxed);
        let starts = match &self.start {
            Some(re) => re.is_match(&String::from_utf8_lossy(&line)),
            None => line.first().is_some_and(|b| !b.is_ascii_whitespace()),
        };
        let now = Instant::now();
        let max = self.config.max_event_bytes;
        // A continuation line joins the event being built, unless splitting asks for a new one.
        let joined = match t.pending.as_mut() {
            Some(p) if !starts => {
                let fits = p.text.len() + 1 + line.len() <= max;
                let truncate = !fits && self.config.long_lines == LongLines::Truncate;
                if fits || truncate {
                    let room = max.saturating_sub(p.text.len() + 1);
                    if fits || room > 0 {
                        let take = if fits {
                            line.len()
                        } else {
                            char_boundary(&line, room)
                        };
                        p.text.push(b'\n');
                        p.text.extend_from_slice(&line[..take]);
                    }
                    p.truncated |= truncate || truncated;
                    p.end = end;
                    p.updated = now;
                }
                fits || truncate
            }
            _ => false,
        };
        if !joined {
            self.emit_pending(t)?;
            t.pending = Some(Pending {
                text: line,
                end,
                updated: now,
                truncated,
            });
        }
        Ok(())
    }

    /// Takes a last line that has no newline yet (idle file, or a file being finished).
    fn flush_partial(&mut self, t: &mut Tailer) {
        if t.partial.is_empty() {
            return;
        }
        let end = t.read_pos;
        if let Err(e) = self.complete_line(t, end) {
            warn!(error = %e, "cannot write a batch");
        }
    }

    /// The event being built is complete: filter it, time it, batch it.
    fn emit_pending(&mut self, t: &mut Tailer) -> anyhow::Result<()> {
        let Some(p) = t.pending.take() else {
            return Ok(());
        };
        let mut message = match String::from_utf8(p.text) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        let keep = !message.trim().is_empty()
            && self
                .filters
                .iter()
                .all(|(include, re)| re.is_match(&message) == *include);
        if !keep {
            // Nothing to send, but the checkpoint moves past it.
            t.batch_end = p.end;
            return Ok(());
        }
        if p.truncated {
            message.push_str(TRUNCATED_MARK);
        }
        let now = now_ms();
        let ts = self
            .timestamp
            .as_ref()
            .and_then(|f| f.find(&message, now))
            .unwrap_or(now);
        let size = message.len() + EVENT_OVERHEAD;
        let span = (t.batch_span.0.min(ts), t.batch_span.1.max(ts));
        if !t.batch.is_empty()
            && (t.batch.len() >= MAX_BATCH_EVENTS
                || t.batch_bytes + size > MAX_BATCH_BYTES
                || span.1 - span.0 > MAX_BATCH_SPAN_MS)
        {
            self.flush_batch(t)?;
        }
        t.batch.push(LogEvent {
            timestamp_ms: ts,
            message,
        });
        t.batch_bytes += size;
        t.batch_span = (t.batch_span.0.min(ts), t.batch_span.1.max(ts));
        t.batch_started.get_or_insert_with(Instant::now);
        t.batch_end = p.end;
        self.ctx.stats.log_events.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Appends the batch and the file's new offset to the spool.
    fn flush_batch(&mut self, t: &mut Tailer) -> anyhow::Result<()> {
        if t.batch.is_empty() && t.batch_end == t.committed && !t.unrecorded {
            return Ok(());
        }
        let state = FileState {
            path: t.path.clone(),
            offset: t.batch_end,
            fp_len: t.fp_len,
            fp_crc: t.fp_crc,
            name: t.name.clone(),
        };
        let mut events = std::mem::take(&mut t.batch);
        events.sort_by_key(|e| e.timestamp_ms);
        let items = events.len() as u64;
        let agent = &self.ctx.agent_id;
        let origin = LogOrigin {
            host: self.ctx.hostname.clone(),
            file_path: t.path.to_string_lossy().into_owned(),
        };
        let (group, stream) = (t.group.clone(), t.stream.clone());
        let position = Position {
            key: t.key.clone(),
            state: serde_json::to_string(&state)?,
        };
        let result = self
            .ctx
            .spool
            .append(Kind::Logs, items, vec![position], |seq| {
                if events.is_empty() {
                    return Vec::new();
                }
                vec![
                    PutLogEventsRequest {
                        idempotency_id: format!("{agent}-{seq}-0"),
                        log_group_name: group,
                        log_stream_name: stream,
                        log_events: std::mem::take(&mut events),
                        origin: Some(origin),
                    }
                    .encode_to_vec(),
                ]
            });
        result?;
        t.committed = t.batch_end;
        t.unrecorded = false;
        t.batch_bytes = 0;
        t.batch_started = None;
        t.batch_span = (i64::MAX, i64::MIN);
        Ok(())
    }

    /// Writes out everything read from a file (shutdown, or a rotated file that is done).
    fn finish(&mut self, t: &mut Tailer) -> anyhow::Result<()> {
        if t.gone_since.is_some() {
            self.flush_partial(t);
        }
        self.emit_pending(t)?;
        self.flush_batch(t)
    }

    /// Writes every batch out, with the event being joined (on shutdown). A line without its
    /// newline yet is read again at the next start.
    pub fn flush_all(&mut self) {
        let ids: Vec<(u64, u64)> = self.tailers.keys().copied().collect();
        for id in ids {
            if let Some(mut t) = self.tailers.remove(&id) {
                if let Err(e) = self
                    .emit_pending(&mut t)
                    .and_then(|()| self.flush_batch(&mut t))
                {
                    warn!(path = %t.path.display(), error = %e, "cannot write the last batch");
                }
                self.tailers.insert(id, t);
            }
        }
    }

    /// Changes the waits (tests use zero).
    pub fn set_waits(&mut self, waits: Waits) {
        self.waits = waits;
    }

    /// The entry's position in the configuration.
    pub fn index(&self) -> usize {
        self.index
    }
}

#[cfg(test)]
mod tests;
