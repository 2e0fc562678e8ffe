//! CloudTrail's own digest files, checked before an import of a trail bucket copy: each digest's
//! RSA signature (SHA256withRSA over CloudTrail's string to sign), the chain of digests, and
//! the SHA-256 of every log file a digest lists, against the local copy.
//!
//! The signature of a digest file lives in the S3 object's metadata (`x-amz-meta-signature`),
//! which `aws s3 sync` does not copy: it is read from `<digest file>.sig` (hex) next to each
//! digest. The public keys are the JSON `aws cloudtrail list-public-keys` prints.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde::Deserialize;
use watchtrail_storage::integrity::digest::sha256_hex;

use crate::import::read_file;

/// One key of `list-public-keys`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PublicKey {
    /// Base64 DER (PKCS#1).
    value: String,
    fingerprint: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PublicKeys {
    public_key_list: Vec<PublicKey>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DigestDoc {
    digest_end_time: String,
    digest_s3_bucket: String,
    digest_s3_object: String,
    #[serde(default)]
    digest_public_key_fingerprint: Option<String>,
    #[serde(default)]
    previous_digest_s3_object: Option<String>,
    #[serde(default)]
    previous_digest_hash_value: Option<String>,
    #[serde(default)]
    previous_digest_signature: Option<String>,
    #[serde(default)]
    log_files: Vec<LogFile>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogFile {
    s3_object: String,
    hash_value: String,
}

/// What the check found.
#[derive(Debug, Default)]
pub struct Validation {
    /// Digest files read.
    pub digests: u64,
    /// Digests whose signature and chain hold.
    pub digests_valid: u64,
    /// Log files the digests list.
    pub log_files: u64,
    /// Listed log files present with the listed hash.
    pub log_files_valid: u64,
    /// What does not validate, one line each.
    pub findings: Vec<String>,
    /// Local log files whose content is not what their digest lists: not to be imported.
    pub changed: HashSet<PathBuf>,
}

/// Checks the digest files among `digests` against the log files among `logs`.
///
/// # Errors
/// A key file that cannot be read or parsed.
pub fn validate(
    digests: &[PathBuf],
    logs: &[PathBuf],
    keys_file: &Path,
) -> anyhow::Result<Validation> {
    let keys: PublicKeys = serde_json::from_str(
        &std::fs::read_to_string(keys_file)
            .with_context(|| format!("--aws-public-keys {}", keys_file.display()))?,
    )
    .with_context(|| {
        format!(
            "--aws-public-keys {}: not the JSON of `aws cloudtrail list-public-keys`",
            keys_file.display()
        )
    })?;
    let keys: HashMap<String, Vec<u8>> = keys
        .public_key_list
        .into_iter()
        .filter_map(|k| {
            let der = base64::engine::general_purpose::STANDARD
                .decode(k.value.trim())
                .ok()?;
            Some((k.fingerprint.to_ascii_lowercase(), der))
        })
        .collect();
    let mut v = Validation::default();
    // Every digest: its text, document, signature, by S3 key.
    let mut read: BTreeMap<String, (PathBuf, String, DigestDoc, Option<String>)> = BTreeMap::new();
    for path in digests {
        v.digests += 1;
        let text = match read_file(path) {
            Ok(t) => t,
            Err(e) => {
                v.findings.push(format!(
                    "Digest {} INVALID: cannot be read ({e:#})",
                    path.display()
                ));
                continue;
            }
        };
        let doc: DigestDoc = match serde_json::from_str(&text) {
            Ok(d) => d,
            Err(e) => {
                v.findings.push(format!(
                    "Digest {} INVALID: not a digest ({e})",
                    path.display()
                ));
                continue;
            }
        };
        let mut sig_path = path.as_os_str().to_owned();
        sig_path.push(".sig");
        let sig = std::fs::read_to_string(PathBuf::from(sig_path))
            .ok()
            .map(|s| s.trim().to_ascii_lowercase());
        read.insert(doc.digest_s3_object.clone(), (path.clone(), text, doc, sig));
    }
    // Local log files by file name (CloudTrail's names are unique).
    let by_name: HashMap<&str, &PathBuf> = logs
        .iter()
        .filter_map(|p| Some((p.file_name()?.to_str()?, p)))
        .collect();
    let mut listed: HashSet<&str> = HashSet::new();
    for (key, (path, text, doc, sig)) in &read {
        let mut ok = true;
        let name = path.display();
        match sig {
            None => {
                v.findings.push(format!(
                    "Digest {name} INVALID: no signature (save the object's x-amz-meta-signature as {name}.sig)"
                ));
                ok = false;
            }
            Some(sig) => {
                let fp = doc
                    .digest_public_key_fingerprint
                    .clone()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let to_sign = format!(
                    "{}\n{}/{}\n{}\n{}",
                    doc.digest_end_time,
                    doc.digest_s3_bucket,
                    doc.digest_s3_object,
                    sha256_hex(text.as_bytes()),
                    doc.previous_digest_signature.as_deref().unwrap_or("null")
                );
                match (keys.get(&fp), hex::decode(sig)) {
                    (None, _) => {
                        v.findings.push(format!(
                            "Digest {name} INVALID: signed by a key not in --aws-public-keys ({fp})"
                        ));
                        ok = false;
                    }
                    (Some(_), Err(_)) => {
                        v.findings
                            .push(format!("Digest {name} INVALID: its .sig is not hex"));
                        ok = false;
                    }
                    (Some(der), Ok(sig)) => {
                        if UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)
                            .verify(to_sign.as_bytes(), &sig)
                            .is_err()
                        {
                            v.findings
                                .push(format!("Digest {name} INVALID: signature not valid"));
                            ok = false;
                        }
                    }
                }
            }
        }
        if let Some(prev_key) = &doc.previous_digest_s3_object {
            match read.get(prev_key) {
                None => {
                    v.findings.push(format!(
                        "Digest {name} INVALID: the previous digest {prev_key} is missing"
                    ));
                    ok = false;
                }
                Some((_, prev_text, _, prev_sig)) => {
                    let hash_ok = doc
                        .previous_digest_hash_value
                        .as_deref()
                        .map(str::to_ascii_lowercase)
                        == Some(sha256_hex(prev_text.as_bytes()));
                    let sig_ok = prev_sig.is_none()
                        || doc
                            .previous_digest_signature
                            .as_deref()
                            .map(str::to_ascii_lowercase)
                            == *prev_sig;
                    if !hash_ok || !sig_ok {
                        v.findings.push(format!(
                            "Digest {name} INVALID: broken chain (the previous digest {prev_key} is not the one it names)"
                        ));
                        ok = false;
                    }
                }
            }
        }
        if ok {
            v.digests_valid += 1;
        }
        for lf in &doc.log_files {
            v.log_files += 1;
            let file_name = lf.s3_object.rsplit('/').next().unwrap_or(&lf.s3_object);
            listed.insert(file_name);
            let Some(local) = by_name.get(file_name) else {
                v.findings.push(format!(
                    "Log file {} INVALID: listed in digest {key} and missing",
                    lf.s3_object
                ));
                continue;
            };
            match read_file(local) {
                Ok(t) if sha256_hex(t.as_bytes()) == lf.hash_value.to_ascii_lowercase() => {
                    v.log_files_valid += 1;
                }
                Ok(_) => {
                    v.findings.push(format!(
                        "Log file {} INVALID: changed (its hash is not the one digest {key} lists)",
                        local.display()
                    ));
                    v.changed.insert((*local).clone());
                }
                Err(e) => {
                    v.findings.push(format!(
                        "Log file {} INVALID: cannot be read ({e:#})",
                        local.display()
                    ));
                    v.changed.insert((*local).clone());
                }
            }
        }
    }
    if !read.is_empty() {
        for p in logs {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if !listed.contains(name) {
                v.findings.push(format!(
                    "Log file {} INVALID: no digest lists it",
                    p.display()
                ));
            }
        }
    }
    Ok(v)
}

impl Validation {
    /// The summary printed before importing.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            out.push_str(f);
            out.push('\n');
        }
        out.push_str(&format!(
            "{}/{} CloudTrail digests valid\n{}/{} log files valid\n",
            self.digests_valid, self.digests, self.log_files_valid, self.log_files
        ));
        out
    }
}
