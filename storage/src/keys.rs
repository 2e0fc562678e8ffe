//! API keys: tokens bound to one tenant and one role, stored only as salted hashes.
//!
//! A token reads `wt_<key id>_<secret>`: the key id (16 hex digits) is public and names the
//! key in lists, logs and the audit trail; the secret (64 hex digits, 256 random bits) is shown
//! once, when the key is created, and never stored. What is stored, one JSON document per key
//! under `<root>/_control/keys/<key id>.json`, is HMAC-SHA256 of the secret keyed by a random
//! salt of the key's own, so a leaked bucket gives no usable token and checking a token takes
//! constant time.
//!
//! Keys live outside every tenant's prefix (tenant names cannot start with `_`), so no tenant's
//! data path can reach them.

use std::fmt;
use std::sync::Arc;

use futures::TryStreamExt as _;
use object_store::path::{Path, PathPart};
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use watchtrail_model::tables::validate_tenant;

/// The prefix every token starts with, so that secret scanners can find leaked ones.
pub const TOKEN_PREFIX: &str = "wt_";
const KEY_ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;
const SALT_BYTES: usize = 16;
/// The longest description a key may carry.
pub const MAX_DESCRIPTION: usize = 256;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Write metrics, logs and audit events (agents, importers).
    Ingest,
    /// Query, and read alarms, history, filters, destinations and log groups.
    Read,
    /// Everything in its tenant: ingest, read, and manage alarms, filters, destinations,
    /// retention and keys.
    Admin,
}

impl Role {
    /// Whether a key of this role may do what needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }

    /// The role's name as flags and documents spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    ///
    /// # Errors
    /// A name that is none of `ingest`, `read`, `admin`.
    pub fn parse(s: &str) -> std::result::Result<Role, String> {
        match s {
            "ingest" => Ok(Role::Ingest),
            "read" => Ok(Role::Read),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "role `{other}` is not one of `ingest`, `read`, `admin`"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored key: who it is for and how to check its secret. Never holds the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The public id (16 hex digits).
    pub key_id: String,
    /// The tenant the key is bound to.
    pub tenant: String,
    /// What it may do.
    pub role: Role,
    /// Free text: who or what holds the key.
    #[serde(default)]
    pub description: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// The salt, hex.
    salt: String,
    /// HMAC-SHA256(salt, secret), hex.
    hash: String,
    /// Whether AWS credentials (an access key id and a SigV4 secret derived from the server's
    /// AWS master key, see [`AwsMaster`]) were issued for the key: only then do AWS-signed
    /// calls with its access key id authenticate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub aws: bool,
}

impl KeyRecord {
    /// Whether `secret` (the part of a token after the key id) is this key's, in constant time.
    pub fn verify(&self, secret: &str) -> bool {
        let (Ok(salt), Ok(tag)) = (hex::decode(&self.salt), hex::decode(&self.hash)) else {
            return false;
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salt);
        ring::hmac::verify(&key, secret.as_bytes(), &tag).is_ok()
    }

    /// The record as lists show it: everything but the salt and hash.
    pub fn public(&self) -> serde_json::Value {
        serde_json::json!({
            "keyId": self.key_id,
            "tenant": self.tenant,
            "role": self.role,
            "description": self.description,
            "created": self.created,
            "awsAccessKeyId": self.aws.then(|| access_key_id(&self.key_id)),
        })
    }
}

/// The prefix of the AWS access key ids of Watchtrail keys.
pub const ACCESS_KEY_PREFIX: &str = "WTAK";
const AWS_SECRET_CONTEXT: &[u8] = b"watchtrail-sigv4-secret-v1:";

/// A key's AWS access key id: `WTAK` and the key id in upper case (20 characters, as AWS's).
pub fn access_key_id(key_id: &str) -> String {
    format!("{ACCESS_KEY_PREFIX}{}", key_id.to_ascii_uppercase())
}

/// The key id an AWS access key id names, if it is one of Watchtrail's.
pub fn key_id_of_access_key(access_key_id: &str) -> Option<String> {
    let hex = access_key_id.strip_prefix(ACCESS_KEY_PREFIX)?;
    (hex.len() == KEY_ID_BYTES * 2 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// The server's AWS master key: SigV4 needs the verifier to hold the signing secret, and the
/// bucket must hold no secret in clear, so each key's AWS secret is derived from this master key
/// and the key id (HMAC-SHA256), shown once when the key is made, and recomputed when a signed
/// call arrives. The master key is a file outside the bucket (0600); every server of one store
/// needs the same file. Replacing it invalidates every AWS secret issued with it.
pub struct AwsMaster {
    key: ring::hmac::Key,
}

impl fmt::Debug for AwsMaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AwsMaster(<hidden>)")
    }
}

impl AwsMaster {
    /// The master key of this many random bytes (hex in its file).
    const BYTES: usize = 32;

    /// Reads the master key from `path`, or creates it there (mode 0600) when there is none.
    ///
    /// # Errors
    /// A file that cannot be read or made, or does not hold 64 hex digits.
    pub fn load_or_create(path: &std::path::Path) -> Result<Self> {
        let bytes = crate::store::read_or_create_private_file(path, || {
            random_hex(&SystemRandom::new(), Self::BYTES).map(String::into_bytes)
        })
        .map_err(|e| Error::Unavailable(format!("AWS master key {}: {e}", path.display())))?;
        let text = String::from_utf8_lossy(&bytes);
        let raw = hex::decode(text.trim())
            .ok()
            .filter(|b| b.len() == Self::BYTES)
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "AWS master key {}: expected {} hex digits",
                    path.display(),
                    Self::BYTES * 2
                ))
            })?;
        Ok(Self::from_bytes(&raw))
    }

    /// A master key from its bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes),
        }
    }

    /// The AWS secret access key of `key_id`: 40 characters of base64, as AWS's.
    pub fn secret_for(&self, key_id: &str) -> String {
        use base64::Engine as _;
        let mut msg = AWS_SECRET_CONTEXT.to_vec();
        msg.extend_from_slice(key_id.as_bytes());
        let tag = ring::hmac::sign(&self.key, &msg);
        base64::engine::general_purpose::STANDARD.encode(&tag.as_ref()[..30])
    }
}

/// A token split into its key id and secret. Its `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token<'a> {
    /// The key id.
    pub key_id: &'a str,
    /// The secret.
    pub secret: &'a str,
}

impl fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("key_id", &self.key_id)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// Splits a token. The error never repeats the token.
///
/// # Errors
/// Anything that is not `wt_` + 16 hex digits + `_` + 64 hex digits.
pub fn parse_token(token: &str) -> std::result::Result<Token<'_>, &'static str> {
    let rest = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or("an API key starts with `wt_`")?;
    let (key_id, secret) = rest
        .split_once('_')
        .ok_or("an API key reads wt_<key id>_<secret>")?;
    let hex_of = |s: &str, n: usize| s.len() == n * 2 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex_of(key_id, KEY_ID_BYTES) || !hex_of(secret, SECRET_BYTES) {
        return Err("an API key reads wt_<16 hex digits>_<64 hex digits>");
    }
    Ok(Token { key_id, secret })
}

/// The key documents of one store.
#[derive(Debug, Clone)]
pub struct KeyStore {
    store: Arc<dyn ObjectStore>,
    dir: Path,
}

fn random_hex(rng: &SystemRandom, n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    rng.fill(&mut buf)
        .map_err(|_| Error::Internal("the system random generator failed".into()))?;
    Ok(hex::encode(buf))
}

impl KeyStore {
    /// Keys under `base` of `store`.
    pub fn new(store: Arc<dyn ObjectStore>, base: &Path) -> Self {
        Self {
            store,
            dir: base.clone().join("_control").join("keys"),
        }
    }

    fn path(&self, key_id: &str) -> Path {
        self.dir
            .clone()
            .join(PathPart::from(format!("{key_id}.json").as_str()))
    }

    /// Creates a key; returns its record and the token, which exists only in this answer.
    ///
    /// # Errors
    /// A bad tenant name or description; storage errors.
    pub async fn create(
        &self,
        tenant: &str,
        role: Role,
        description: &str,
    ) -> Result<(KeyRecord, String)> {
        self.create_with(tenant, role, description, false).await
    }

    /// As [`KeyStore::create`]; with `aws`, the key also takes AWS-signed calls (the caller
    /// shows its derived secret, see [`AwsMaster`]).
    ///
    /// # Errors
    /// A bad tenant name or description; storage errors.
    pub async fn create_with(
        &self,
        tenant: &str,
        role: Role,
        description: &str,
        aws: bool,
    ) -> Result<(KeyRecord, String)> {
        validate_tenant(tenant).map_err(Error::InvalidTenant)?;
        if description.len() > MAX_DESCRIPTION || description.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "description: at most {MAX_DESCRIPTION} bytes and no control characters"
            )));
        }
        let rng = SystemRandom::new();
        let key_id = random_hex(&rng, KEY_ID_BYTES)?;
        let secret = random_hex(&rng, SECRET_BYTES)?;
        let salt = random_hex(&rng, SALT_BYTES)?;
        let salt_bytes = hex::decode(&salt).map_err(|e| Error::Internal(e.to_string()))?;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salt_bytes);
        let hash = hex::encode(ring::hmac::sign(&key, secret.as_bytes()).as_ref());
        let record = KeyRecord {
            key_id: key_id.clone(),
            tenant: tenant.to_string(),
            role,
            description: description.to_string(),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            salt,
            hash,
            aws,
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| Error::Internal(e.to_string()))?;
        // A key id that already exists (2^-64 a pair) is refused by the store, never replaced.
        self.store
            .put_opts(
                &self.path(&key_id),
                PutPayload::from(bytes),
                PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                },
            )
            .await?;
        Ok((record, format!("{TOKEN_PREFIX}{key_id}_{secret}")))
    }

    /// One key; `None` when there is none (revoked or never made).
    ///
    /// # Errors
    /// Storage errors; a document that does not parse.
    pub async fn get(&self, key_id: &str) -> Result<Option<KeyRecord>> {
        let path = self.path(key_id);
        match self.store.get(&path).await {
            Ok(r) => {
                let bytes = r.bytes().await?;
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| Error::Internal(format!("{path}: {e}")))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every key of every tenant, by key id; documents that do not parse are skipped.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list(&self) -> Result<Vec<KeyRecord>> {
        let metas: Vec<_> = self.store.list(Some(&self.dir)).try_collect().await?;
        let mut out = Vec::with_capacity(metas.len());
        for meta in metas {
            let bytes = match self.store.get(&meta.location).await {
                Ok(r) => r.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            match serde_json::from_slice::<KeyRecord>(&bytes) {
                Ok(k) => out.push(k),
                Err(e) => {
                    tracing::warn!(path = %meta.location, error = %e, "skipping a key document that does not parse");
                }
            }
        }
        out.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        Ok(out)
    }

    /// Revokes (deletes) a key; whether it existed.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn revoke(&self, key_id: &str) -> Result<bool> {
        let path = self.path(key_id);
        match self.store.head(&path).await {
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> KeyStore {
        KeyStore::new(
            Arc::new(object_store::memory::InMemory::new()),
            &Path::from("root"),
        )
    }

    #[tokio::test]
    async fn a_created_token_verifies_and_nothing_else_does() {
        let keys = store();
        let (record, token) = keys.create("acme", Role::Read, "dashboards").await.unwrap();
        let t = parse_token(&token).unwrap();
        assert_eq!(t.key_id, record.key_id);
        let stored = keys.get(t.key_id).await.unwrap().unwrap();
        assert_eq!(stored, record);
        assert!(stored.verify(t.secret));
        // One changed digit of the secret fails.
        let mut wrong = t.secret.to_string();
        let last = if wrong.ends_with('0') { "1" } else { "0" };
        wrong.replace_range(wrong.len() - 1.., last);
        assert!(!stored.verify(&wrong));
        // The secret is nowhere in what was stored.
        let doc = serde_json::to_string(&stored).unwrap();
        assert!(!doc.contains(t.secret), "{doc}");
        assert!(!format!("{t:?}").contains(t.secret));
    }

    #[tokio::test]
    async fn two_keys_of_one_secret_space_get_different_salts() {
        let keys = store();
        let (a, _) = keys.create("acme", Role::Admin, "").await.unwrap();
        let (b, _) = keys.create("acme", Role::Admin, "").await.unwrap();
        assert_ne!(a.key_id, b.key_id);
        assert_ne!(a.salt, b.salt);
        assert_eq!(keys.list().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn revoked_keys_are_gone() {
        let keys = store();
        let (a, _) = keys.create("acme", Role::Ingest, "agent").await.unwrap();
        assert!(keys.revoke(&a.key_id).await.unwrap());
        assert!(!keys.revoke(&a.key_id).await.unwrap());
        assert_eq!(keys.get(&a.key_id).await.unwrap(), None);
        assert!(keys.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn bad_tenants_and_descriptions_are_refused() {
        let keys = store();
        assert!(keys.create("../other", Role::Read, "").await.is_err());
        assert!(keys.create("_control", Role::Read, "").await.is_err());
        assert!(keys.create("acme", Role::Read, "a\nb").await.is_err());
        assert!(keys.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn aws_credentials_are_derived_and_map_back_to_their_key() {
        let keys = store();
        let (plain, _) = keys.create("acme", Role::Read, "").await.unwrap();
        let (aws, _) = keys
            .create_with("acme", Role::Ingest, "", true)
            .await
            .unwrap();
        assert!(!plain.aws && aws.aws);
        assert!(keys.get(&aws.key_id).await.unwrap().unwrap().aws);
        let id = access_key_id(&aws.key_id);
        assert_eq!(id.len(), 20);
        assert_eq!(key_id_of_access_key(&id), Some(aws.key_id.clone()));
        assert_eq!(key_id_of_access_key("AKIAIOSFODNN7EXAMPLE"), None);
        assert_eq!(key_id_of_access_key("WTAK0123"), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aws-master.key");
        let m1 = AwsMaster::load_or_create(&path).unwrap();
        let m2 = AwsMaster::load_or_create(&path).unwrap();
        let s = m1.secret_for(&aws.key_id);
        assert_eq!(s.len(), 40);
        assert_eq!(
            s,
            m2.secret_for(&aws.key_id),
            "the file is read back, not remade"
        );
        assert_ne!(s, m1.secret_for(&plain.key_id));
        assert_ne!(s, AwsMaster::from_bytes(&[7; 32]).secret_for(&aws.key_id));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "short").unwrap();
        assert!(AwsMaster::load_or_create(&path).is_err());
    }

    #[test]
    fn malformed_tokens_are_refused_without_echoing_them() {
        for bad in [
            "",
            "Bearer x",
            "wt_",
            "wt_0123456789abcdef",
            "wt_0123456789abcde_0000000000000000000000000000000000000000000000000000000000000000",
            "wt_0123456789abcdef_000000000000000000000000000000000000000000000000000000000000000g",
            "xx_0123456789abcdef_0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            let e = parse_token(bad).unwrap_err();
            assert!(bad.len() < 4 || !e.contains(bad), "{e}");
        }
        let ok =
            "wt_0123456789abcdef_0000000000000000000000000000000000000000000000000000000000000000";
        assert_eq!(parse_token(ok).unwrap().key_id, "0123456789abcdef");
    }

    #[test]
    fn admin_allows_everything_and_the_others_only_themselves() {
        use Role::*;
        for needed in [Ingest, Read, Admin] {
            assert!(Admin.allows(needed));
        }
        assert!(Read.allows(Read) && !Read.allows(Ingest) && !Read.allows(Admin));
        assert!(Ingest.allows(Ingest) && !Ingest.allows(Read) && !Ingest.allows(Admin));
        assert_eq!(Role::parse("read"), Ok(Read));
        assert!(Role::parse("root").is_err());
    }
}
