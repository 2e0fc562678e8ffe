//! A watched directory of CloudTrail delivery files (`.json` and `.json.gz`, any depth), each
//! delivered once, across restarts too: a file's records and the mark that it is done go into
//! one spool record, so a crash leaves either both or neither.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tracing::{debug, warn};

use crate::Context;
use crate::audit::{self, AuditError};

/// A file younger than this that does not parse may still be being written: it is tried again.
const SETTLE: Duration = Duration::from_secs(30);

/// The directory and what is known about it.
#[derive(Debug)]
pub struct CloudTrailDir {
    dir: PathBuf,
    ctx: Arc<Context>,
    scans: u64,
}

/// Every this many scans, the marks of files that are gone are forgotten, so the positions do
/// not grow with every file ever delivered.
const PRUNE_EVERY: u64 = 120;

fn key(path: &Path) -> String {
    format!("cloudtrail:{}", path.display())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let Ok(ft) = e.file_type() else {
            continue;
        };
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        // Digest files (under `CloudTrail-Digest/`) hold signatures, not events.
        if name.contains("CloudTrail-Digest") {
            continue;
        }
        if ft.is_dir() {
            walk(&path, out);
        } else if ft.is_file() && (name.ends_with(".json") || name.ends_with(".json.gz")) {
            out.push(path);
        }
    }
}

impl CloudTrailDir {
    /// Watches `dir`.
    pub fn new(dir: PathBuf, ctx: Arc<Context>) -> Self {
        Self { dir, ctx, scans: 0 }
    }

    /// Reads every file not read before; returns how many were read.
    pub fn scan(&mut self) -> usize {
        let mut files = Vec::new();
        walk(&self.dir, &mut files);
        files.sort();
        if self.scans.is_multiple_of(PRUNE_EVERY) {
            self.prune();
        }
        self.scans += 1;
        let mut done = 0;
        for path in files {
            let k = key(&path);
            if self.ctx.spool.position(&k).is_some() {
                continue;
            }
            match self.read_file(&path) {
                Ok(()) => done += 1,
                Err(e) => {
                    let young = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| SystemTime::now().duration_since(m).ok())
                        .is_none_or(|age| age < SETTLE);
                    if young {
                        debug!(path = %path.display(), error = %e, "CloudTrail file not readable yet; trying again later");
                        continue;
                    }
                    warn!(path = %path.display(), error = %e, "CloudTrail file cannot be read; skipped for good");
                    self.ctx
                        .stats
                        .cloudtrail_failed
                        .fetch_add(1, Ordering::Relaxed);
                    let mark = vec![crate::spool::Position {
                        key: k,
                        state: format!("failed: {e}"),
                    }];
                    if let Err(e) =
                        self.ctx
                            .spool
                            .append(crate::spool::Kind::Audit, 0, mark, |_| Vec::new())
                    {
                        warn!(error = %e, "cannot write to the buffer");
                        return done;
                    }
                }
            }
        }
        done
    }

    /// Forgets the marks of files that no longer exist (deleted after delivery).
    fn prune(&self) {
        for key in self.ctx.spool.positions().into_keys() {
            if let Some(path) = key.strip_prefix("cloudtrail:")
                && !Path::new(path).exists()
            {
                self.ctx.spool.forget(&key);
            }
        }
    }

    fn read_file(&self, path: &Path) -> Result<(), AuditError> {
        let bytes = std::fs::read(path).map_err(|e| AuditError::new("", e.to_string()))?;
        let text = if path.extension().is_some_and(|e| e == "gz") {
            let mut out = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::MultiGzDecoder::new(bytes.as_slice()),
                &mut out,
            )
            .map_err(|e| AuditError::new("", format!("not gzip: {e}")))?;
            out
        } else {
            bytes
        };
        let events = audit::parse_events(&text)?;
        let n = events.len() as u64;
        audit::spool_events(
            &self.ctx,
            events,
            vec![crate::spool::Position {
                key: key(path),
                state: "done".into(),
            }],
        )
        .map_err(|e| AuditError::new("", format!("cannot write to the buffer: {e}")))?;
        self.ctx
            .stats
            .cloudtrail_files
            .fetch_add(1, Ordering::Relaxed);
        debug!(path = %path.display(), events = n, "CloudTrail file read");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_files_of_a_trail_bucket_are_passed_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("AWSLogs/1/CloudTrail/us-east-1/2023/07/10");
        let digests = dir
            .path()
            .join("AWSLogs/1/CloudTrail-Digest/us-east-1/2023/07/10");
        std::fs::create_dir_all(&logs).expect("mkdir");
        std::fs::create_dir_all(&digests).expect("mkdir");
        std::fs::write(logs.join("1_CloudTrail_us-east-1_x.json.gz"), b"").expect("write");
        std::fs::write(
            digests.join("1_CloudTrail-Digest_us-east-1_t_x.json.gz"),
            b"",
        )
        .expect("write");
        std::fs::write(logs.join("notes.txt"), b"").expect("write");
        let mut found = Vec::new();
        walk(dir.path(), &mut found);
        assert_eq!(found, vec![logs.join("1_CloudTrail_us-east-1_x.json.gz")]);
    }
}
