//! `import`: CloudTrail events into the `audit` table, from what CloudTrail tooling writes:
//! delivery files (`{"Records": [...]}`), JSON arrays of events, and JSON Lines (`.json`,
//! `.jsonl`, `.ndjson`, gzipped or not).
//!
//! Each event's original JSON text is sent as it is (the `eventjson` column keeps it byte for
//! byte; `--fill-missing-ids` adds an `eventID` to events without one). Batch ids are derived
//! from the batch's content, so running the same import twice within the server's idempotency
//! window changes nothing, and after it the server's event-id de-duplication still stores each
//! event once. The summary tells stored events, duplicates (an event with the same `eventID`
//! is already stored) and refusals (grouped by reason) apart.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use watchtrail_proto::v1::{AuditRecord, PutAuditEventsRequest};

use super::client::{Client, ConnectionArgs};

/// Records per request (CloudTrail Lake's PutAuditEvents limit).
const BATCH_RECORDS: usize = 100;
/// Bytes of JSON per request, under the 1 MiB request limit with room for framing.
const BATCH_BYTES: usize = 1_000_000;
/// Requests in flight at once.
const CONCURRENCY: usize = 4;

/// Flags of `import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Files or directories (searched recursively for `.json`, `.jsonl` and `.ndjson`,
    /// gzipped or not).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Give events without an `eventID` one derived from their JSON text (the same text always
    /// gets the same id, so a re-import stores them once); without it they are refused.
    #[arg(long)]
    pub fill_missing_ids: bool,
    /// Validate CloudTrail's digest files against the log files before importing, with these
    /// public keys (the JSON `aws cloudtrail list-public-keys` prints). Each digest's signature
    /// is read from `<digest file>.sig` (its S3 object's `x-amz-meta-signature`).
    #[arg(long)]
    pub aws_public_keys: Option<PathBuf>,
    /// With --aws-public-keys: import log files whose hash does not match their digest too.
    #[arg(long, requires = "aws_public_keys")]
    pub import_changed: bool,
}

/// A top-level JSON object that may be a delivery file.
#[derive(Deserialize)]
struct MaybeDelivery<'a> {
    #[serde(rename = "Records", borrow, default)]
    records: Option<Vec<&'a RawValue>>,
}

/// Where a record came from, to report refusals.
#[derive(Debug, Clone)]
struct Origin {
    file: PathBuf,
    index: usize,
}

/// The CloudTrail delivery files under the given paths, sorted, and the digest files
/// (`CloudTrail-Digest/`, which hold hashes and signatures, not events) passed over.
///
/// # Errors
/// A path that does not exist or cannot be read.
pub fn find_files(paths: &[PathBuf]) -> anyhow::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir)
            .with_context(|| format!("cannot read directory {}", dir.display()))?
        {
            let path = entry
                .with_context(|| format!("cannot read directory {}", dir.display()))?
                .path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if is_cloudtrail_file(&path) {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else if p.exists() {
            out.push(p.clone());
        } else {
            bail!("{} does not exist", p.display());
        }
    }
    let (mut digests, mut out): (Vec<PathBuf>, Vec<PathBuf>) =
        out.into_iter().partition(|p| is_digest_file(p));
    out.sort();
    digests.sort();
    Ok((out, digests))
}

/// Whether `p` is a CloudTrail digest file: under a `CloudTrail-Digest` directory, or named
/// `..._CloudTrail-Digest_...` as CloudTrail names them.
fn is_digest_file(p: &Path) -> bool {
    p.components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(|c| c.contains("CloudTrail-Digest"))
    })
}

fn is_cloudtrail_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(name);
    [".json", ".jsonl", ".ndjson"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// Reads a file, gunzipping `.gz` (or anything that starts with the gzip magic).
///
/// # Errors
/// I/O or decompression errors, naming the file.
pub fn read_file(path: &Path) -> anyhow::Result<String> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 8);
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .with_context(|| format!("{}: not valid gzip", path.display()))?;
        out
    } else {
        raw
    };
    String::from_utf8(bytes).with_context(|| format!("{}: not UTF-8", path.display()))
}

/// Splits a file's text into its event records (raw JSON, in order). The text is a sequence of
/// JSON values (one, or one a line): a delivery file's object takes its `Records`, an array
/// takes its elements, any other object is one event.
///
/// # Errors
/// Malformed JSON (with line and column), or a value that is neither an object nor an array.
pub fn records_of<'a>(path: &Path, text: &'a str) -> anyhow::Result<Vec<&'a RawValue>> {
    let mut out = Vec::new();
    let values = serde_json::Deserializer::from_str(text).into_iter::<&'a RawValue>();
    for value in values {
        let value = value.map_err(|e| {
            anyhow::anyhow!(
                "{}: not CloudTrail JSON (a delivery file, an array of events or JSON Lines): \
                 line {} column {}: {e}",
                path.display(),
                e.line(),
                e.column()
            )
        })?;
        let text = value.get();
        if text.starts_with('[') {
            let items: Vec<&'a RawValue> = serde_json::from_str(text)
                .with_context(|| format!("{}: an array of events", path.display()))?;
            out.extend(items);
        } else if text.starts_with('{') {
            let d: MaybeDelivery<'a> = serde_json::from_str(text)
                .with_context(|| format!("{}: an event or a delivery file", path.display()))?;
            match d.records {
                Some(records) => out.extend(records),
                None => out.push(value),
            }
        } else {
            bail!(
                "{}: expected an event object, an array of events or {{\"Records\": [...]}}, \
                 found `{}`",
                path.display(),
                text.chars().take(40).collect::<String>()
            );
        }
    }
    Ok(out)
}

/// The event's JSON with an `eventID` derived from its text when it has none (or an empty
/// one); `None` when it has one.
///
/// # Errors
/// An event that is not a JSON object.
pub fn with_derived_id(raw: &str) -> anyhow::Result<Option<String>> {
    let mut event: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(raw).context("an event must be a JSON object")?;
    if event
        .get("eventID")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|id| !id.is_empty())
    {
        return Ok(None);
    }
    // A version 8 UUID ("made by its writer's own rule") from the text's SHA-256: the same
    // text always gets the same id.
    let digest = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    let id = uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string();
    event.insert("eventID".into(), serde_json::Value::String(id));
    Ok(Some(serde_json::Value::Object(event).to_string()))
}

fn content_id(records: &[AuditRecord]) -> String {
    use std::hash::{Hash, Hasher};
    let mut a = std::collections::hash_map::DefaultHasher::new();
    let mut b = std::collections::hash_map::DefaultHasher::new();
    0xa5u8.hash(&mut b);
    for r in records {
        r.json.hash(&mut a);
        r.json.hash(&mut b);
    }
    format!("import-{:016x}{:016x}", a.finish(), b.finish())
}

/// Parses `records[N]` at the start of a status message.
fn refused_index(message: &str) -> Option<usize> {
    message
        .strip_prefix("records[")?
        .split(']')
        .next()?
        .parse()
        .ok()
}

/// What became of the events of one batch.
#[derive(Debug, Default)]
struct Outcome {
    /// Stored as new rows.
    stored: u64,
    /// Not stored again: an event with the same `eventID` already is (or the whole batch was
    /// imported before, within the server's idempotency window).
    duplicates: u64,
    /// Refused, with where each came from and why.
    refused: Vec<(Origin, String)>,
}

/// Sends one batch; a record the server refuses is set aside with its reason, the rest resent.
async fn send_batch(
    client: &Client,
    mut batch: Vec<(AuditRecord, Origin)>,
) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    while !batch.is_empty() {
        let records: Vec<AuditRecord> = batch.iter().map(|(r, _)| r.clone()).collect();
        let req = PutAuditEventsRequest {
            idempotency_id: content_id(&records),
            records,
        };
        match client
            .call(req, |mut c, r| async move { c.put_audit_events(r).await })
            .await
        {
            Ok(resp) => {
                if resp.duplicate {
                    out.duplicates += resp.accepted;
                } else {
                    out.duplicates += resp.duplicate_events;
                    out.stored += resp.accepted.saturating_sub(resp.duplicate_events);
                }
                return Ok(out);
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                let Some(i) = refused_index(status.message()).filter(|i| *i < batch.len()) else {
                    bail!("server refused a batch: {}", status.message());
                };
                let (_, origin) = batch.remove(i);
                let reason = status
                    .message()
                    .split_once(']')
                    .map_or(status.message(), |(_, d)| d)
                    .trim_start_matches('.')
                    .to_string();
                out.refused.push((origin, reason));
            }
            Err(status) => bail!("server error: {} ({:?})", status.message(), status.code()),
        }
    }
    Ok(out)
}

/// The refusals grouped by reason, most frequent first, each with its first place.
fn refusal_summary(refused: &[(Origin, String)]) -> Vec<(String, usize, String)> {
    let mut groups: Vec<(String, usize, String)> = Vec::new();
    for (origin, reason) in refused {
        match groups.iter_mut().find(|g| g.0 == *reason) {
            Some(g) => g.1 += 1,
            None => groups.push((
                reason.clone(),
                1,
                format!("{} record {}", origin.file.display(), origin.index),
            )),
        }
    }
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    groups
}

/// Runs `import`.
///
/// # Errors
/// Unreadable or malformed files, refused events, or a server that refuses or stays
/// unreachable. Files before the failure stay imported; a re-run skips them (same batch ids,
/// same event ids).
pub async fn import(conn: &ConnectionArgs, a: ImportArgs) -> anyhow::Result<()> {
    let client = Client::connect(conn)?;
    let (mut files, digests) = find_files(&a.paths)?;
    match &a.aws_public_keys {
        Some(keys) => {
            if digests.is_empty() {
                bail!(
                    "--aws-public-keys: no CloudTrail digest files (CloudTrail-Digest/) under the given paths"
                );
            }
            let v = crate::aws_digests::validate(&digests, &files, keys)?;
            print!("{}", v.summary());
            if !v.changed.is_empty() && !a.import_changed {
                println!(
                    "not importing {} log files whose content is not what their digest lists (--import-changed imports them)",
                    v.changed.len()
                );
                files.retain(|f| !v.changed.contains(f));
            }
        }
        None if !digests.is_empty() => eprintln!(
            "skipped {} CloudTrail digest files (hashes and signatures, not events; --aws-public-keys checks them)",
            digests.len()
        ),
        None => {}
    }
    if files.is_empty() {
        bail!("no .json, .jsonl or .ndjson files found (gzipped or not)");
    }
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} files, {msg} [{elapsed_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (mut events, mut filled) = (0u64, 0u64);
    let mut total = Outcome::default();
    for path in &files {
        let text = read_file(path)?;
        let records = records_of(path, &text)?;
        events += records.len() as u64;
        let mut batches: Vec<Vec<(AuditRecord, Origin)>> = Vec::new();
        let mut current = Vec::new();
        let mut bytes = 0;
        for (index, raw) in records.into_iter().enumerate() {
            let mut json = raw.get().to_string();
            if a.fill_missing_ids
                && let Some(with_id) = with_derived_id(&json)
                    .with_context(|| format!("{} record {index}", path.display()))?
            {
                json = with_id;
                filled += 1;
            }
            if !current.is_empty()
                && (current.len() == BATCH_RECORDS || bytes + json.len() + 16 > BATCH_BYTES)
            {
                batches.push(std::mem::take(&mut current));
                bytes = 0;
            }
            bytes += json.len() + 16;
            current.push((
                AuditRecord { json },
                Origin {
                    file: path.clone(),
                    index,
                },
            ));
        }
        if !current.is_empty() {
            batches.push(current);
        }
        let mut results =
            futures::stream::iter(batches.into_iter().map(|b| send_batch(&client, b)))
                .buffer_unordered(CONCURRENCY);
        while let Some(r) = results.next().await {
            let o = r?;
            total.stored += o.stored;
            total.duplicates += o.duplicates;
            total.refused.extend(o.refused);
        }
        bar.inc(1);
        bar.set_message(format!("{} events stored", total.stored));
    }
    bar.finish_and_clear();
    let refused = total.refused.len();
    eprintln!(
        "{events} events read from {} files: {} stored, {} duplicates (an event with the same \
         eventID is already stored), {refused} refused{}",
        files.len(),
        total.stored,
        total.duplicates,
        if filled > 0 {
            format!("; {filled} given a derived eventID")
        } else {
            String::new()
        }
    );
    for (reason, n, first) in refusal_summary(&total.refused) {
        eprintln!("  refused {n}: {reason} (first: {first})");
    }
    if refused > 0 {
        bail!("{refused} events were refused");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn reads_plain_and_gzipped_delivery_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = r#"{"Records":[{"eventID":"a","eventTime":"2023-07-10T11:40:13Z"},{"eventID":"b", "x": [1, 2]}]}"#;
        std::fs::create_dir_all(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("one.json"), body).expect("write");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(body.as_bytes()).expect("gzip");
        std::fs::write(
            dir.path().join("sub/two.json.gz"),
            gz.finish().expect("gzip"),
        )
        .expect("write");
        std::fs::write(dir.path().join("notes.txt"), "ignored").expect("write");
        // A trail bucket's digest files are passed over and counted.
        let digest_dir = dir
            .path()
            .join("AWSLogs/123456789012/CloudTrail-Digest/us-east-1");
        std::fs::create_dir_all(&digest_dir).expect("mkdir");
        std::fs::write(
            digest_dir.join(
                "123456789012_CloudTrail-Digest_us-east-1_t_us-east-1_20230710T114013Z.json.gz",
            ),
            b"{\"digestStartTime\": \"2023-07-10T10:40:13Z\"}",
        )
        .expect("write");
        let (files, digests) = find_files(&[dir.path().to_path_buf()]).expect("walk");
        assert_eq!(files.len(), 2);
        assert_eq!(digests.len(), 1);
        for f in &files {
            let text = read_file(f).expect("read");
            let recs = records_of(f, &text).expect("parse");
            assert_eq!(recs.len(), 2);
            assert_eq!(
                recs[1].get(),
                r#"{"eventID":"b", "x": [1, 2]}"#,
                "original text kept"
            );
        }
    }

    #[test]
    fn malformed_files_name_the_position() {
        let p = Path::new("bad.json");
        let e = records_of(p, "{\"Records\": [\n{]}").expect_err("malformed");
        assert!(e.to_string().contains("line 2"), "{e}");
        assert_eq!(
            refused_index("records[17].eventTime: is required"),
            Some(17)
        );
        assert_eq!(refused_index("idempotency_id: bad"), None);
    }

    #[test]
    fn batch_ids_depend_only_on_content() {
        let r = |s: &str| AuditRecord { json: s.into() };
        assert_eq!(content_id(&[r("a"), r("b")]), content_id(&[r("a"), r("b")]));
        assert_ne!(content_id(&[r("a"), r("b")]), content_id(&[r("b"), r("a")]));
    }
}
