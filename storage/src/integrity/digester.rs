//! The digester: writes each tenant's digests. One server of a cluster runs it (by lease).
//!
//! Each pass:
//! 1. every hour window that closed (its end plus the delay is past) since digesting began gets
//!    a digest, empty or not;
//! 2. every earlier window that a commit since the last pass added files to is read again: a
//!    window with no digest yet (imported history) gets one; a window whose events now are a
//!    strict superset of what its latest digest covers (late events) gets a follow-up; the same
//!    set (compaction rewrote it) gets nothing; a window whose covered events changed or went
//!    missing gets **no** digest, so that the digester never blesses a tampered store: the pass
//!    reports it, and `verify` names it;
//! 3. with a retention, a window past it whose events are gone gets a retention digest.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use watchtrail_model::tables::TableKind;

use super::digest::{Digest, DigestKind, DigestStore, Signer, format_time, parse_time, sha256_hex};
use super::hash::{EventHash, merkle_root};
use super::manifest;
use super::window::{WINDOW_MS, files_in, window_events, window_of};
use object_store::ObjectStoreExt as _;

use crate::error::{Error, Result};
use crate::store::Storage;
use crate::table_files::TableFiles;

/// The latest digest of a window.
#[derive(Debug, Clone)]
struct Latest {
    sequence: u64,
    count: u64,
    root: String,
    kind: DigestKind,
}

/// A tenant's chain as the digester knows it.
#[derive(Debug, Clone)]
struct Chain {
    next_sequence: u64,
    /// Name, hash and signature of the newest digest.
    last: Option<(String, String, String)>,
    coverage_start: i64,
    next_live: i64,
    windows: BTreeMap<i64, Latest>,
}

/// Progress kept between passes (not evidence: losing it means re-reading windows).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Progress {
    table_version: Option<i64>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Digests written.
    pub written: u64,
    /// Windows whose events no longer match their digest (not digested again).
    pub mismatched: Vec<String>,
}

/// Writes digests for tenants.
#[derive(Debug)]
pub struct Digester {
    storage: Storage,
    digests: DigestStore,
    signer: std::sync::Arc<Signer>,
    delay: Duration,
    chains: Mutex<HashMap<String, Chain>>,
}

impl Digester {
    /// A digester writing to `storage`, signing with `signer`, closing a window `delay` after
    /// its end.
    pub fn new(storage: Storage, signer: std::sync::Arc<Signer>, delay: Duration) -> Self {
        Self {
            digests: DigestStore::new(&storage),
            storage,
            signer,
            delay,
            chains: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets what it knows of the chains (after the lease changed hands).
    pub fn forget(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Chain>> {
        self.chains
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn chain(&self, tenant: &str, now_ms: i64) -> Result<Chain> {
        if let Some(c) = self.lock().get(tenant) {
            return Ok(c.clone());
        }
        let mut chain = Chain {
            next_sequence: 0,
            last: None,
            coverage_start: window_of(now_ms),
            next_live: window_of(now_ms),
            windows: BTreeMap::new(),
        };
        for name in self.digests.list(tenant).await? {
            let Some(seq) = name
                .strip_suffix(".json")
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let Some(bytes) = self.digests.get(tenant, &name).await? else {
                continue;
            };
            let d = Digest::parse(&bytes).map_err(|e| {
                Error::Internal(format!(
                    "audit digest {tenant}/{name} is damaged ({e}); run `watchtrail verify`"
                ))
            })?;
            if d.sequence != seq || seq != chain.next_sequence {
                return Err(Error::Internal(format!(
                    "audit digest chain of {tenant} is broken at {name}; run `watchtrail verify`"
                )));
            }
            let start = parse_time(&d.window_start).unwrap_or_default();
            if seq == 0 {
                chain.coverage_start = parse_time(&d.coverage_start).unwrap_or(start);
                chain.next_live = chain.coverage_start;
            }
            if start >= chain.coverage_start && start + WINDOW_MS > chain.next_live {
                chain.next_live = start + WINDOW_MS;
            }
            chain.windows.insert(
                start,
                Latest {
                    sequence: seq,
                    count: d.event_count,
                    root: d.merkle_root.clone(),
                    kind: d.kind,
                },
            );
            chain.last = Some((name, sha256_hex(&bytes), d.signature));
            chain.next_sequence = seq + 1;
        }
        Ok(chain)
    }

    fn progress_path(&self, tenant: &str) -> object_store::path::Path {
        self.storage
            .base_path()
            .clone()
            .join(tenant)
            .join("_control")
            .join("audit-digester.json")
    }

    async fn progress(&self, tenant: &str) -> Result<Progress> {
        match self
            .storage
            .object_store()
            .get(&self.progress_path(tenant))
            .await
        {
            Ok(r) => Ok(serde_json::from_slice(&r.bytes().await?).unwrap_or_default()),
            Err(object_store::Error::NotFound { .. }) => Ok(Progress::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// One pass over a tenant (see the module documentation).
    ///
    /// # Errors
    /// Storage errors, a damaged chain, a file that cannot be read.
    pub async fn pass(
        &self,
        tenant: &str,
        now_ms: i64,
        retention: Option<Duration>,
    ) -> Result<PassReport> {
        let mut chain = self.chain(tenant, now_ms).await?;
        let mut report = PassReport::default();
        let table = self.storage.open_table(tenant, TableKind::Audit).await?;
        let files = match &table {
            Some(t) => {
                TableFiles::from_table(&self.storage, tenant, TableKind::Audit, t, None).await?
            }
            None => TableFiles::default(),
        };
        let progress = self.progress(tenant).await?;
        let result = self
            .pass_inner(
                tenant,
                now_ms,
                retention,
                &mut chain,
                &files,
                &progress,
                &mut report,
            )
            .await;
        // What was written stays known even when the pass stopped part way.
        self.lock().insert(tenant.to_string(), chain);
        result?;
        if files.version != progress.table_version {
            let bytes = serde_json::to_vec(&Progress {
                table_version: files.version,
            })
            .unwrap_or_default();
            self.storage
                .object_store()
                .put(&self.progress_path(tenant), bytes.into())
                .await?;
        }
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)]
    async fn pass_inner(
        &self,
        tenant: &str,
        now_ms: i64,
        retention: Option<Duration>,
        chain: &mut Chain,
        files: &TableFiles,
        progress: &Progress,
        report: &mut PassReport,
    ) -> Result<()> {
        let delay = i64::try_from(self.delay.as_millis()).unwrap_or(i64::MAX);
        // 2. Windows that commits since the last pass touched, before the live ones; then
        // 1. closed windows since digesting began. Read and hashed a window per core, written
        // in order.
        let touched = self
            .touched_windows(tenant, files, progress.table_version)
            .await?;
        let next_live = chain.next_live;
        let mut jobs: Vec<(i64, bool)> = touched
            .into_iter()
            .filter(|w| *w < next_live)
            .map(|w| (w, false))
            .collect();
        let mut w = next_live;
        while w.saturating_add(WINDOW_MS).saturating_add(delay) <= now_ms {
            jobs.push((w, true));
            w += WINDOW_MS;
        }
        let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
        let storage = &self.storage;
        let windows: Vec<i64> = jobs.iter().map(|(w, _)| *w).collect();
        let mut reads = futures::stream::iter(windows.into_iter().map(|w| async move {
            let inside = files_in(files, w, w + WINDOW_MS);
            window_events(storage, &inside, w, w + WINDOW_MS).await
        }))
        .buffered(parallel);
        for &(w, live) in &jobs {
            let read = reads
                .next()
                .await
                .ok_or_else(|| Error::Internal("a window read went missing".into()))??;
            self.window(tenant, chain, w, read, now_ms, live, report)
                .await?;
            if live {
                chain.next_live = w + WINDOW_MS;
            }
        }
        // 3. Windows that retention emptied.
        if let Some(r) = retention {
            let cutoff = now_ms - i64::try_from(r.as_millis()).unwrap_or(i64::MAX);
            let due: Vec<i64> = chain
                .windows
                .iter()
                .filter(|(w, l)| {
                    **w + WINDOW_MS <= cutoff && l.count > 0 && l.kind != DigestKind::Retention
                })
                .map(|(w, _)| *w)
                .collect();
            for w in due {
                if files_in(files, w, w + WINDOW_MS).is_empty() {
                    self.write(tenant, chain, w, DigestKind::Retention, &[], now_ms)
                        .await?;
                    report.written += 1;
                }
            }
        }
        Ok(())
    }

    /// Windows holding rows of files added since `since` (all windows with files when `None`).
    async fn touched_windows(
        &self,
        tenant: &str,
        files: &TableFiles,
        since: Option<i64>,
    ) -> Result<BTreeSet<i64>> {
        let mut out = BTreeSet::new();
        let add_range = |range: Option<(i64, i64)>, out: &mut BTreeSet<i64>| {
            if let Some((lo, hi)) = range {
                let mut w = window_of(lo.div_euclid(1000));
                while w <= hi.div_euclid(1000) {
                    out.insert(w);
                    w += WINDOW_MS;
                }
            }
        };
        let (Some(current), Some(since)) = (files.version, since) else {
            for f in &files.files {
                add_range(f.time_range, &mut out);
            }
            return Ok(out);
        };
        let log = self
            .storage
            .table_path(tenant, TableKind::Audit)
            .join("_delta_log");
        for v in (since + 1)..=current {
            let path = log.clone().join(format!("{v:020}.json"));
            let bytes = match self.storage.object_store().get(&path).await {
                Ok(r) => r.bytes().await?,
                // Cleaned up already: read every file's range instead.
                Err(object_store::Error::NotFound { .. }) => {
                    for f in &files.files {
                        add_range(f.time_range, &mut out);
                    }
                    return Ok(out);
                }
                Err(e) => return Err(e.into()),
            };
            for line in bytes.split(|b| *b == b'\n') {
                let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else {
                    continue;
                };
                if let Some(stats) = action["add"]["stats"].as_str() {
                    let (_, range) = crate::table_files::parse_stats(Some(stats), "eventtime");
                    add_range(range, &mut out);
                }
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn window(
        &self,
        tenant: &str,
        chain: &mut Chain,
        w: i64,
        (events, bad): (Vec<EventHash>, Vec<super::window::Unreadable>),
        now_ms: i64,
        live: bool,
        report: &mut PassReport,
    ) -> Result<()> {
        if let Some(b) = bad.first() {
            if chain.windows.contains_key(&w) {
                // A digested window whose file is gone or damaged: tampering or loss, not a
                // transient failure.
                report.mismatched.push(format_time(w));
                tracing::error!(
                    %tenant, window = %format_time(w), file = %b.path, reason = %b.reason,
                    "a file of a digested audit window cannot be read; not digesting it again; run `watchtrail verify`"
                );
                return Ok(());
            }
            return Err(Error::Internal(format!(
                "audit file {} cannot be read ({}); the window {} is not digested; run `watchtrail verify`",
                b.path,
                b.reason,
                format_time(w)
            )));
        }
        let hashes: Vec<[u8; 32]> = events.iter().map(|e| e.hash).collect();
        let root = hex::encode(merkle_root(&hashes));
        let kind = match chain.windows.get(&w) {
            None if events.is_empty() && !live => return Ok(()),
            None => DigestKind::Window,
            Some(l) if l.root == root => return Ok(()),
            Some(l) => {
                let covered = self.covered(tenant, l.sequence).await?;
                let now: HashSet<[u8; 32]> = hashes.iter().copied().collect();
                if covered.iter().all(|h| now.contains(h)) {
                    DigestKind::FollowUp
                } else {
                    report.mismatched.push(format_time(w));
                    tracing::error!(
                        %tenant, window = %format_time(w),
                        "audit events of a digested window changed or went missing; not digesting it again; run `watchtrail verify`"
                    );
                    return Ok(());
                }
            }
        };
        self.write(tenant, chain, w, kind, &events, now_ms).await?;
        report.written += 1;
        Ok(())
    }

    async fn covered(&self, tenant: &str, sequence: u64) -> Result<Vec<[u8; 32]>> {
        let name = Digest::manifest_name(sequence);
        let bytes = self.digests.get(tenant, &name).await?.ok_or_else(|| {
            Error::Internal(format!(
                "audit manifest {tenant}/{name} is missing; run `watchtrail verify`"
            ))
        })?;
        let events = manifest::decode(&bytes).map_err(|e| {
            Error::Internal(format!("audit manifest {tenant}/{name} is damaged ({e})"))
        })?;
        Ok(events.into_iter().map(|e| e.hash).collect())
    }

    async fn write(
        &self,
        tenant: &str,
        chain: &mut Chain,
        w: i64,
        kind: DigestKind,
        events: &[EventHash],
        now_ms: i64,
    ) -> Result<()> {
        let seq = chain.next_sequence;
        let manifest = manifest::encode(events)?;
        let hashes: Vec<[u8; 32]> = events.iter().map(|e| e.hash).collect();
        let times = events.iter().map(|e| e.time_us.div_euclid(1000));
        let mut d = Digest {
            digest_version: 1,
            tenant: tenant.to_string(),
            sequence: seq,
            kind,
            window_start: format_time(w),
            window_end: format_time(w + WINDOW_MS),
            created_time: format_time(now_ms),
            coverage_start: format_time(chain.coverage_start),
            event_count: events.len() as u64,
            oldest_event_time: times.clone().min().map(format_time),
            newest_event_time: times.max().map(format_time),
            merkle_root: hex::encode(merkle_root(&hashes)),
            hash_format: 1,
            manifest_hash: sha256_hex(&manifest),
            previous_digest_object: chain.last.as_ref().map(|l| l.0.clone()),
            previous_digest_hash: chain.last.as_ref().map(|l| l.1.clone()),
            previous_digest_signature: chain.last.as_ref().map(|l| l.2.clone()),
            public_key_fingerprint: String::new(),
            signature_algorithm: String::new(),
            signature: String::new(),
        };
        self.signer.sign(&mut d);
        let bytes = d.to_bytes();
        let name = Digest::object_name(seq);
        // The manifest may already be there from a pass that died before its digest: same
        // sequence, written again only if absent; the digest's hash names the right one.
        let manifest_name = Digest::manifest_name(seq);
        if !self
            .digests
            .create(tenant, &manifest_name, manifest.clone())
            .await?
        {
            let held = self.digests.get(tenant, &manifest_name).await?;
            if held.as_deref() != Some(manifest.as_slice()) {
                self.digests
                    .overwrite(tenant, &manifest_name, manifest)
                    .await?;
            }
        }
        if !self.digests.create(tenant, &name, bytes.clone()).await? {
            self.lock().remove(tenant);
            return Err(Error::Unavailable(format!(
                "audit digest {tenant}/{name} was written by another server; the chain is read again"
            )));
        }
        chain.windows.insert(
            w,
            Latest {
                sequence: seq,
                count: d.event_count,
                root: d.merkle_root.clone(),
                kind,
            },
        );
        chain.last = Some((name, sha256_hex(&bytes), d.signature));
        chain.next_sequence = seq + 1;
        Ok(())
    }
}
