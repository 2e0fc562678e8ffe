//! Digest documents, the keys that sign them, and where both live.
//!
//! - `<root>/<tenant>/_audit_digests/<sequence:012>.json`: one digest, pretty JSON in the
//!   field order of [`Digest`]; its signature is Ed25519 over the same document serialized
//!   with `signature` empty. Any byte changed, added or removed makes it "altered".
//! - `<root>/<tenant>/_audit_digests/<sequence:012>.manifest`: the events it covers.
//! - `<root>/_control/audit-keys/<fingerprint>.json`: the public keys, with their validity.
//!
//! The private key is a PKCS#8 file outside the bucket, created with mode 0600 at first start.

use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Storage;

/// The directory of a tenant's digests, under the tenant.
pub const DIGEST_DIR: &str = "_audit_digests";
/// The directory of the public keys, under the root's `_control`.
pub const KEY_DIR: &str = "audit-keys";
/// The only signature algorithm written.
pub const ALGORITHM: &str = "Ed25519";

/// What a digest records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DigestKind {
    /// The first digest of a window.
    Window,
    /// A later digest of a window that received late events: covers all of them.
    FollowUp,
    /// The window's events were removed by retention.
    Retention,
}

/// One signed digest: the exact set of a tenant's audit events in one hour window, chained to
/// the digest before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Digest {
    /// Format version (1).
    pub digest_version: u32,
    /// The tenant.
    pub tenant: String,
    /// Position in the tenant's chain, from 0.
    pub sequence: u64,
    /// What it records.
    pub kind: DigestKind,
    /// The window's start (inclusive), RFC 3339 UTC.
    pub window_start: String,
    /// The window's end (exclusive).
    pub window_end: String,
    /// When it was written.
    pub created_time: String,
    /// Every window from this hour on has a digest (earlier ones only when they hold events).
    pub coverage_start: String,
    /// Events covered.
    pub event_count: u64,
    /// The oldest covered event's time, if any.
    pub oldest_event_time: Option<String>,
    /// The newest covered event's time, if any.
    pub newest_event_time: Option<String>,
    /// Hex Merkle root of the covered events' hashes (see `hash::merkle_root`).
    pub merkle_root: String,
    /// Row hash format (1).
    pub hash_format: u32,
    /// Hex SHA-256 of the manifest object.
    pub manifest_hash: String,
    /// The previous digest's object name, `None` for the first.
    pub previous_digest_object: Option<String>,
    /// Hex SHA-256 of the previous digest's bytes.
    pub previous_digest_hash: Option<String>,
    /// The previous digest's signature.
    pub previous_digest_signature: Option<String>,
    /// Hex SHA-256 of the signing public key.
    pub public_key_fingerprint: String,
    /// Always `Ed25519`.
    pub signature_algorithm: String,
    /// Hex signature over the document with this field empty.
    pub signature: String,
}

impl Digest {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signature.clear();
        serde_json::to_vec_pretty(&unsigned).unwrap_or_default()
    }

    /// The document as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Reads a stored document; `Err` says why it is not one (a finding).
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        let d: Digest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if d.to_bytes() != bytes {
            return Err("its bytes are not the document's canonical form".into());
        }
        Ok(d)
    }

    /// The object name of a digest (under the tenant's digest directory).
    pub fn object_name(sequence: u64) -> String {
        format!("{sequence:012}.json")
    }

    /// The object name of its manifest.
    pub fn manifest_name(sequence: u64) -> String {
        format!("{sequence:012}.manifest")
    }
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// The key a server signs digests with.
pub struct Signer {
    key: Ed25519KeyPair,
    fingerprint: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Reads the PKCS#8 key at `path`, or creates one there (mode 0600) when there is none.
    ///
    /// # Errors
    /// A file that cannot be read, written or parsed as an Ed25519 PKCS#8 key.
    pub fn load_or_create(path: &FsPath) -> Result<Self> {
        let io = |e: std::io::Error| {
            Error::Unavailable(format!("audit signing key {}: {e}", path.display()))
        };
        let bytes = crate::store::read_or_create_private_file(path, || {
            let rng = ring::rand::SystemRandom::new();
            Ed25519KeyPair::generate_pkcs8(&rng)
                .map(|doc| doc.as_ref().to_vec())
                .map_err(|e| Error::Internal(format!("generating a signing key: {e}")))
        })
        .map_err(io)?;
        Self::from_pkcs8(&bytes).map_err(|e| {
            Error::Unavailable(format!(
                "audit signing key {}: not an Ed25519 PKCS#8 key: {e}",
                path.display()
            ))
        })
    }

    /// A signer from PKCS#8 bytes.
    ///
    /// # Errors
    /// Bytes that are not an Ed25519 PKCS#8 key.
    pub fn from_pkcs8(bytes: &[u8]) -> std::result::Result<Self, String> {
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes).map_err(|e| e.to_string())?;
        let fingerprint = sha256_hex(key.public_key().as_ref());
        Ok(Self { key, fingerprint })
    }

    /// Hex SHA-256 of the public key.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The public key bytes.
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// Fills in the fingerprint, algorithm and signature.
    pub fn sign(&self, d: &mut Digest) {
        d.public_key_fingerprint = self.fingerprint.clone();
        d.signature_algorithm = ALGORITHM.to_string();
        d.signature = hex::encode(self.key.sign(&d.signed_bytes()).as_ref());
    }
}

/// A published public key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeyDoc {
    /// Hex SHA-256 of the key.
    pub fingerprint: String,
    /// `Ed25519`.
    pub algorithm: String,
    /// Hex public key.
    pub public_key: String,
    /// From when it signs (RFC 3339).
    pub valid_from: String,
    /// Until when it signed; `None` while it is in use.
    pub valid_to: Option<String>,
    /// The server that holds it.
    pub holder: String,
}

impl PublicKeyDoc {
    /// Whether `signature` over `message` is this key's.
    pub fn verifies(&self, message: &[u8], signature: &str) -> bool {
        let (Ok(key), Ok(sig)) = (hex::decode(&self.public_key), hex::decode(signature)) else {
            return false;
        };
        sha256_hex(&key) == self.fingerprint
            && UnparsedPublicKey::new(&ED25519, key)
                .verify(message, &sig)
                .is_ok()
    }

    /// Whether a digest created at `time` (RFC 3339) falls in the key's validity.
    pub fn valid_at(&self, time: &str) -> bool {
        let (Some(t), Some(from)) = (parse_time(time), parse_time(&self.valid_from)) else {
            return false;
        };
        t >= from
            && self
                .valid_to
                .as_deref()
                .is_none_or(|to| parse_time(to).is_some_and(|to| t <= to))
    }
}

/// RFC 3339 UTC, seconds.
pub fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// Milliseconds of an RFC 3339 time.
pub fn parse_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The digests and keys of a store.
#[derive(Debug, Clone)]
pub struct DigestStore {
    store: Arc<dyn ObjectStore>,
    base: Path,
}

impl DigestStore {
    /// The digests of `storage`.
    pub fn new(storage: &Storage) -> Self {
        Self {
            store: storage.object_store(),
            base: storage.base_path().clone(),
        }
    }

    /// The path of an object in a tenant's digest directory.
    pub fn path(&self, tenant: &str, name: &str) -> Path {
        self.base.clone().join(tenant).join(DIGEST_DIR).join(name)
    }

    /// Object names in a tenant's digest directory, sorted.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list(&self, tenant: &str) -> Result<Vec<String>> {
        let dir = self.base.clone().join(tenant).join(DIGEST_DIR);
        let mut names: Vec<String> = self
            .store
            .list(Some(&dir))
            .map_ok(|m| m.location.filename().unwrap_or_default().to_string())
            .try_collect()
            .await?;
        names.sort();
        Ok(names)
    }

    /// An object's bytes, `None` when it is not there.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn get(&self, tenant: &str, name: &str) -> Result<Option<Bytes>> {
        match self.store.get(&self.path(tenant, name)).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a new object; never replaces one (`false` when it exists).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn create(&self, tenant: &str, name: &str, bytes: Vec<u8>) -> Result<bool> {
        let opts = PutOptions::from(PutMode::Create);
        match self
            .store
            .put_opts(&self.path(tenant, name), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces an object (a manifest no digest names yet).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn overwrite(&self, tenant: &str, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put(&self.path(tenant, name), PutPayload::from(bytes))
            .await?;
        Ok(())
    }

    fn key_path(&self, fingerprint: &str) -> Path {
        self.base
            .clone()
            .join("_control")
            .join(KEY_DIR)
            .join(format!("{fingerprint}.json"))
    }

    /// Every published public key.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn public_keys(&self) -> Result<Vec<PublicKeyDoc>> {
        let dir = self.base.clone().join("_control").join(KEY_DIR);
        let metas: Vec<_> = self.store.list(Some(&dir)).try_collect().await?;
        let mut out = Vec::new();
        for m in metas {
            let bytes = match self.store.get(&m.location).await {
                Ok(r) => r.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            if let Ok(k) = serde_json::from_slice::<PublicKeyDoc>(&bytes) {
                out.push(k);
            }
        }
        out.sort_by(|a, b| a.valid_from.cmp(&b.valid_from));
        Ok(out)
    }

    /// Publishes `signer`'s key for `holder`; a key the same holder published before and still
    /// marked current is closed (`validTo` now): that is a rotation.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn publish(&self, signer: &Signer, holder: &str, now_ms: i64) -> Result<()> {
        let now = format_time(now_ms);
        for mut old in self.public_keys().await? {
            if old.holder == holder
                && old.valid_to.is_none()
                && old.fingerprint != signer.fingerprint
            {
                old.valid_to = Some(now.clone());
                let bytes = serde_json::to_vec_pretty(&old).unwrap_or_default();
                self.store
                    .put(&self.key_path(&old.fingerprint), PutPayload::from(bytes))
                    .await?;
            }
        }
        let doc = PublicKeyDoc {
            fingerprint: signer.fingerprint.clone(),
            algorithm: ALGORITHM.to_string(),
            public_key: hex::encode(signer.public_key()),
            valid_from: now,
            valid_to: None,
            holder: holder.to_string(),
        };
        let bytes = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        let opts = PutOptions::from(PutMode::Create);
        match self
            .store
            .put_opts(
                &self.key_path(&signer.fingerprint),
                PutPayload::from(bytes),
                opts,
            )
            .await
        {
            Ok(_)
            | Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        Digest {
            digest_version: 1,
            tenant: "t".into(),
            sequence: 3,
            kind: DigestKind::Window,
            window_start: format_time(0),
            window_end: format_time(3_600_000),
            created_time: format_time(4_000_000),
            coverage_start: format_time(0),
            event_count: 0,
            oldest_event_time: None,
            newest_event_time: None,
            merkle_root: String::new(),
            hash_format: 1,
            manifest_hash: String::new(),
            previous_digest_object: None,
            previous_digest_hash: None,
            previous_digest_signature: None,
            public_key_fingerprint: String::new(),
            signature_algorithm: String::new(),
            signature: String::new(),
        }
    }

    #[test]
    fn a_signed_digest_verifies_and_any_change_breaks_it() {
        let signer = Signer::from_pkcs8(
            Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .expect("key")
                .as_ref(),
        )
        .expect("signer");
        let mut d = digest();
        signer.sign(&mut d);
        let key = PublicKeyDoc {
            fingerprint: signer.fingerprint().to_string(),
            algorithm: ALGORITHM.into(),
            public_key: hex::encode(signer.public_key()),
            valid_from: format_time(0),
            valid_to: None,
            holder: "s".into(),
        };
        let bytes = d.to_bytes();
        let back = Digest::parse(&bytes).expect("parses");
        assert!(key.verifies(&back.signed_bytes(), &back.signature));
        let mut changed = back.clone();
        changed.event_count = 1;
        assert!(!key.verifies(&changed.signed_bytes(), &changed.signature));
        // Whitespace alone is an alteration too.
        let mut spaced = bytes.clone();
        spaced.push(b'\n');
        assert!(Digest::parse(&spaced).is_err());
        assert!(key.valid_at(&d.created_time));
        let closed = PublicKeyDoc {
            valid_to: Some(format_time(1_000)),
            ..key
        };
        assert!(!closed.valid_at(&d.created_time));
    }

    #[test]
    fn the_key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/audit.key");
        let a = Signer::load_or_create(&path).expect("create");
        let b = Signer::load_or_create(&path).expect("load");
        assert_eq!(a.fingerprint(), b.fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"junk").expect("write");
        assert!(Signer::load_or_create(&path).is_err());
    }
}
