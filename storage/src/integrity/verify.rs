//! `verify`: checks every digest of a tenant (signature, key, chain, sequence, coverage) and
//! recomputes what each covers from the table, naming every difference.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt as _;
use watchtrail_model::tables::TableKind;

use super::digest::{
    Digest, DigestKind, DigestStore, PublicKeyDoc, format_time, parse_time, sha256_hex,
};
use super::hash::{EventHash, merkle_root};
use super::manifest;
use super::window::{WINDOW_MS, files_in, window_events, window_of};
use crate::error::Result;
use crate::store::Storage;
use crate::table_files::TableFiles;

/// What to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The tenant.
    pub tenant: String,
    /// Windows from (ms); `None`: from the first.
    pub start_ms: Option<i64>,
    /// Windows before (ms); `None`: up to now.
    pub end_ms: Option<i64>,
    /// Only keys with these fingerprints are trusted (`None`: every key published in the store).
    pub trusted_keys: Option<Vec<String>>,
    /// The digester's delay: a window is due its digest this long after it ends (plus a grace
    /// of one more window).
    pub delay_ms: i64,
    /// Now.
    pub now_ms: i64,
}

/// One thing that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Finding {
    /// A digest whose bytes do not parse or are not its canonical form.
    DigestAltered { object: String, reason: String },
    /// A digest stored under another sequence's name, or out of order.
    DigestReordered { object: String, sequence: u64 },
    /// A sequence number with no digest.
    DigestMissing { sequence: u64 },
    /// A window that should have a digest and has none.
    WindowWithoutDigest { window: String },
    /// A digest whose previous-digest fields do not match the digest before it.
    ChainBroken { object: String, reason: String },
    /// A digest signed by a key that is not published (or not trusted).
    UnknownKey { object: String, fingerprint: String },
    /// A signature that does not verify.
    SignatureInvalid { object: String },
    /// Signed by a key outside its validity period.
    KeyNotValid { object: String, fingerprint: String },
    /// A manifest that is missing or does not match its digest.
    ManifestAltered { object: String, reason: String },
    /// A data file that cannot be read.
    FileUnreadable { path: String, reason: String },
    /// A covered event whose stored row differs.
    EventChanged { event_id: String, window: String },
    /// A covered event that is no longer stored.
    EventRemoved { event_id: String, window: String },
    /// A stored event that no digest covers, in a window that should be covered.
    EventAdded { event_id: String, window: String },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::DigestAltered { object, reason } => {
                write!(f, "Digest {object} INVALID: altered ({reason})")
            }
            Finding::DigestReordered { object, sequence } => write!(
                f,
                "Digest {object} INVALID: reordered (it holds sequence {sequence})"
            ),
            Finding::DigestMissing { sequence } => write!(
                f,
                "Digest {} INVALID: missing from the chain",
                Digest::object_name(*sequence)
            ),
            Finding::WindowWithoutDigest { window } => {
                write!(f, "Window {window} INVALID: no digest covers it")
            }
            Finding::ChainBroken { object, reason } => {
                write!(f, "Digest {object} INVALID: broken chain ({reason})")
            }
            Finding::UnknownKey {
                object,
                fingerprint,
            } => write!(
                f,
                "Digest {object} INVALID: signed by an unknown key {fingerprint}"
            ),
            Finding::SignatureInvalid { object } => {
                write!(f, "Digest {object} INVALID: signature not valid")
            }
            Finding::KeyNotValid {
                object,
                fingerprint,
            } => write!(
                f,
                "Digest {object} INVALID: key {fingerprint} was not valid when it was written"
            ),
            Finding::ManifestAltered { object, reason } => {
                write!(f, "Manifest {object} INVALID: {reason}")
            }
            Finding::FileUnreadable { path, reason } => {
                write!(f, "File {path} INVALID: cannot be read ({reason})")
            }
            Finding::EventChanged { event_id, window } => {
                write!(f, "Event {event_id} ({window}) INVALID: changed")
            }
            Finding::EventRemoved { event_id, window } => {
                write!(f, "Event {event_id} ({window}) INVALID: removed")
            }
            Finding::EventAdded { event_id, window } => write!(
                f,
                "Event {event_id} ({window}) INVALID: added (no digest covers it)"
            ),
        }
    }
}

/// The outcome.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Digests read.
    pub digests: u64,
    /// Digests that passed every check.
    pub digests_valid: u64,
    /// Stored events compared.
    pub events: u64,
    /// Stored events a digest covers unchanged.
    pub events_valid: u64,
    /// Events stored in windows not yet due a digest.
    pub events_pending: u64,
    /// The first and last window examined.
    pub windows: Option<(i64, i64)>,
    /// Everything that does not hold, sorted.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether everything holds.
    pub fn is_valid(&self) -> bool {
        self.findings.is_empty()
    }

    /// The summary `watchtrail verify` prints, in the shape of `aws cloudtrail validate-logs`.
    pub fn summary(&self, start_ms: Option<i64>, end_ms: Option<i64>) -> String {
        use std::fmt::Write as _;
        let t = |ms: Option<i64>, none: &str| ms.map_or_else(|| none.to_string(), format_time);
        let mut out = format!(
            "Results requested for {} to {}\n",
            t(start_ms, "the first window"),
            t(end_ms, "now")
        );
        match self.windows {
            Some((a, b)) => {
                let _ = writeln!(
                    out,
                    "Results found for {} to {}:\n",
                    format_time(a),
                    format_time(b + WINDOW_MS)
                );
            }
            None => out.push_str("No audit windows found\n\n"),
        }
        for f in &self.findings {
            let _ = writeln!(out, "{f}");
        }
        if !self.findings.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(out, "{}/{} digests valid", self.digests_valid, self.digests);
        let _ = write!(
            out,
            "{}/{} events valid",
            self.events_valid,
            self.events - self.events_pending
        );
        if self.events_pending > 0 {
            let _ = write!(
                out,
                " ({} more in windows not yet due a digest)",
                self.events_pending
            );
        }
        out.push('\n');
        out
    }

    /// The report as JSON (what the server answers).
    pub fn to_json(&self, start_ms: Option<i64>, end_ms: Option<i64>) -> serde_json::Value {
        serde_json::json!({
            "valid": self.is_valid(),
            "digests": self.digests,
            "digestsValid": self.digests_valid,
            "events": self.events,
            "eventsValid": self.events_valid,
            "eventsPending": self.events_pending,
            "findings": self.findings.iter().map(|f| serde_json::json!({
                "kind": f.kind(),
                "message": f.to_string(),
            })).collect::<Vec<_>>(),
            "summary": self.summary(start_ms, end_ms),
        })
    }
}

impl Finding {
    /// The finding's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::DigestAltered { .. } => "DigestAltered",
            Finding::DigestReordered { .. } => "DigestReordered",
            Finding::DigestMissing { .. } => "DigestMissing",
            Finding::WindowWithoutDigest { .. } => "WindowWithoutDigest",
            Finding::ChainBroken { .. } => "ChainBroken",
            Finding::UnknownKey { .. } => "UnknownKey",
            Finding::SignatureInvalid { .. } => "SignatureInvalid",
            Finding::KeyNotValid { .. } => "KeyNotValid",
            Finding::ManifestAltered { .. } => "ManifestAltered",
            Finding::FileUnreadable { .. } => "FileUnreadable",
            Finding::EventChanged { .. } => "EventChanged",
            Finding::EventRemoved { .. } => "EventRemoved",
            Finding::EventAdded { .. } => "EventAdded",
        }
    }
}

struct Read {
    object: String,
    digest: Digest,
}

/// Verifies a tenant's digests and events.
///
/// # Errors
/// Storage errors (not findings: a store that cannot be read proves nothing either way).
pub async fn verify(storage: &Storage, o: &VerifyOptions) -> Result<Report> {
    let store = DigestStore::new(storage);
    let tenant = &o.tenant;
    let mut keys: HashMap<String, PublicKeyDoc> = store
        .public_keys()
        .await?
        .into_iter()
        .map(|k| (k.fingerprint.clone(), k))
        .collect();
    if let Some(trusted) = &o.trusted_keys {
        keys.retain(|f, _| trusted.contains(f));
    }
    let mut report = Report::default();
    let mut findings = Vec::new();
    let names = store.list(tenant).await?;
    let mut read: Vec<Read> = Vec::new();
    // The previous digest's object name, SHA-256 and signature: what the next one must name.
    let mut prev: Option<(String, String, String)> = None;
    let mut expected = 0u64;
    for name in names.iter().filter(|n| n.ends_with(".json")) {
        report.digests += 1;
        let Some(bytes) = store.get(tenant, name).await? else {
            continue;
        };
        let mut ok = true;
        let d = match Digest::parse(&bytes) {
            Ok(d) => d,
            Err(reason) => {
                findings.push(Finding::DigestAltered {
                    object: name.clone(),
                    reason,
                });
                // The next digest's link to this one is judged against these bytes (and the
                // signature they hold, if any can be read).
                let signature = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["signature"].as_str().map(str::to_string))
                    .unwrap_or_default();
                prev = Some((name.clone(), sha256_hex(&bytes), signature));
                expected += 1;
                continue;
            }
        };
        if Digest::object_name(d.sequence) != *name || d.sequence < expected {
            findings.push(Finding::DigestReordered {
                object: name.clone(),
                sequence: d.sequence,
            });
            ok = false;
        } else {
            for missing in expected..d.sequence {
                findings.push(Finding::DigestMissing { sequence: missing });
            }
        }
        expected = d.sequence.max(expected) + 1;
        let link = match &prev {
            None if d.sequence == 0 => (None, None, None),
            None => (Some(String::new()), None, None),
            Some((pn, ph, ps)) => (Some(pn.clone()), Some(ph.clone()), Some(ps.clone())),
        };
        let chain_ok = d.previous_digest_object == link.0
            && d.previous_digest_hash == link.1
            && d.previous_digest_signature == link.2;
        if !chain_ok {
            findings.push(Finding::ChainBroken {
                object: name.clone(),
                reason: match &prev {
                    Some((pn, ..)) => format!("it does not name {pn} as the digest before it"),
                    None => "the first digest present names a previous one".into(),
                },
            });
            ok = false;
        }
        match keys.get(&d.public_key_fingerprint) {
            None => {
                findings.push(Finding::UnknownKey {
                    object: name.clone(),
                    fingerprint: d.public_key_fingerprint.clone(),
                });
                ok = false;
            }
            Some(k) if !k.verifies(&d.signed_bytes(), &d.signature) => {
                findings.push(Finding::SignatureInvalid {
                    object: name.clone(),
                });
                ok = false;
            }
            Some(k) if !k.valid_at(&d.created_time) => {
                findings.push(Finding::KeyNotValid {
                    object: name.clone(),
                    fingerprint: d.public_key_fingerprint.clone(),
                });
                ok = false;
            }
            Some(_) => {}
        }
        if ok {
            report.digests_valid += 1;
        }
        prev = Some((name.clone(), sha256_hex(&bytes), d.signature.clone()));
        read.push(Read {
            object: name.clone(),
            digest: d,
        });
    }

    // The latest digest of each window.
    let mut latest: BTreeMap<i64, &Read> = BTreeMap::new();
    for r in &read {
        if let Some(w) = parse_time(&r.digest.window_start) {
            let e = latest.entry(w).or_insert(r);
            if r.digest.sequence >= e.digest.sequence {
                *e = r;
            }
        }
    }
    let in_range =
        |w: i64| o.start_ms.is_none_or(|s| w + WINDOW_MS > s) && o.end_ms.is_none_or(|e| w < e);
    // A window is due its digest once it ended, the delay passed, and one more window for
    // the digester's pace.
    let due = |w: i64| w + 2 * WINDOW_MS + o.delay_ms <= o.now_ms;
    let coverage_start = read
        .first()
        .and_then(|r| parse_time(&r.digest.coverage_start));
    if let Some(cs) = coverage_start {
        let mut w = cs;
        while due(w) {
            if in_range(w) && !latest.contains_key(&w) {
                findings.push(Finding::WindowWithoutDigest {
                    window: format_time(w),
                });
            }
            w += WINDOW_MS;
        }
    }

    // The events of every window that has a digest or stored rows.
    let files = match storage.open_table(tenant, TableKind::Audit).await? {
        Some(t) => TableFiles::from_table(storage, tenant, TableKind::Audit, &t, None).await?,
        None => TableFiles::default(),
    };
    let mut windows: std::collections::BTreeSet<i64> =
        latest.keys().copied().filter(|w| in_range(*w)).collect();
    for f in &files.files {
        if let Some((lo, hi)) = f.time_range {
            let mut w = window_of(lo.div_euclid(1000));
            while w <= hi.div_euclid(1000) {
                if in_range(w) {
                    windows.insert(w);
                }
                w += WINDOW_MS;
            }
        }
    }
    // Windows are read and hashed a few at a time (one per core), compared in order.
    let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
    let files_ref = &files;
    let mut reads = futures::stream::iter(windows.iter().copied().map(|w| async move {
        let inside = files_in(files_ref, w, w + WINDOW_MS);
        window_events(storage, &inside, w, w + WINDOW_MS)
            .await
            .map(|r| (w, r))
    }))
    .buffered(parallel);
    while let Some(read) = reads.next().await {
        let (w, (stored, bad)) = read?;
        report.windows = Some(match report.windows {
            None => (w, w),
            Some((a, b)) => (a.min(w), b.max(w)),
        });
        for b in bad {
            findings.push(Finding::FileUnreadable {
                path: b.path,
                reason: b.reason,
            });
        }
        report.events += stored.len() as u64;
        let window = format_time(w);
        let covered: Option<Vec<EventHash>> = match latest.get(&w) {
            None => None,
            Some(r) => match covered_events(&store, tenant, r).await? {
                Ok(c) => Some(c),
                Err(reason) => {
                    findings.push(Finding::ManifestAltered {
                        object: Digest::manifest_name(r.digest.sequence),
                        reason,
                    });
                    // Without its manifest a window's events cannot be matched.
                    continue;
                }
            },
        };
        let Some(covered) = covered else {
            // No digest yet: pending while the window is not due, else uncovered.
            if due(w) && coverage_start.is_some_and(|cs| w >= cs) {
                for e in &stored {
                    findings.push(Finding::EventAdded {
                        event_id: e.event_id.clone(),
                        window: window.clone(),
                    });
                }
            } else {
                report.events_pending += stored.len() as u64;
            }
            continue;
        };
        let mut by_id: HashMap<&str, Vec<&[u8; 32]>> = HashMap::new();
        for c in &covered {
            by_id.entry(c.event_id.as_str()).or_default().push(&c.hash);
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for e in &stored {
            match by_id.get(e.event_id.as_str()) {
                Some(hs) if hs.contains(&&e.hash) => {
                    *seen.entry(e.event_id.as_str()).or_default() += 1;
                    report.events_valid += 1;
                }
                Some(_) => {
                    *seen.entry(e.event_id.as_str()).or_default() += 1;
                    findings.push(Finding::EventChanged {
                        event_id: e.event_id.clone(),
                        window: window.clone(),
                    });
                }
                None => findings.push(Finding::EventAdded {
                    event_id: e.event_id.clone(),
                    window: window.clone(),
                }),
            }
        }
        for (id, hs) in &by_id {
            let found = seen.get(id).copied().unwrap_or(0);
            for _ in found..hs.len() {
                findings.push(Finding::EventRemoved {
                    event_id: (*id).to_string(),
                    window: window.clone(),
                });
            }
        }
    }
    findings.sort();
    findings.dedup();
    report.findings = findings;
    Ok(report)
}

/// The events a digest's manifest lists, checked against the digest.
async fn covered_events(
    store: &DigestStore,
    tenant: &str,
    r: &Read,
) -> Result<std::result::Result<Vec<EventHash>, String>> {
    if r.digest.kind == DigestKind::Retention {
        return Ok(Ok(Vec::new()));
    }
    let name = Digest::manifest_name(r.digest.sequence);
    let Some(bytes) = store.get(tenant, &name).await? else {
        return Ok(Err("missing".into()));
    };
    if sha256_hex(&bytes) != r.digest.manifest_hash {
        return Ok(Err(format!("its hash is not the one {} records", r.object)));
    }
    let events = match manifest::decode(&bytes) {
        Ok(e) => e,
        Err(e) => return Ok(Err(e)),
    };
    let hashes: Vec<[u8; 32]> = events.iter().map(|e| e.hash).collect();
    if hex::encode(merkle_root(&hashes)) != r.digest.merkle_root
        || events.len() as u64 != r.digest.event_count
    {
        return Ok(Err(format!(
            "its events are not the ones {} records",
            r.object
        )));
    }
    Ok(Ok(events))
}
