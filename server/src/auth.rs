//! Who is calling: API keys checked on every gRPC and HTTP call, and the role each call needs.
//!
//! With `--auth keys` (the default) a call carries `authorization: Bearer wt_<id>_<secret>`;
//! the key names the tenant, and a tenant header that names another one is refused. With
//! `--auth none` (a trusted network only) the `x-watchtrail-tenant` header picks the tenant and
//! every call may do everything.
//!
//! Keys are read from the store ([`KeyStore`]) into a cache that is listed again every
//! [`REFRESH`]; an id the cache does not know is looked up at once (a key just made on another
//! server works on its first call). Such lookups run one at a time and an absent id is
//! remembered for [`ABSENT_TTL`], so a flood of made-up ids cannot become a flood of storage
//! reads. A key revoked on this server
//! stops working at once; one revoked on another server within [`REFRESH`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use watchtrail_proto::{DEFAULT_TENANT, TENANT_HEADER};
use watchtrail_query::tables::validate_tenant;
use watchtrail_storage::keys::{KeyRecord, KeyStore, Role, parse_token};
use watchtrail_storage::store::Storage;

use crate::self_audit::{Call, Caller, SelfAudit};

/// How often the key cache is listed again.
pub const REFRESH: Duration = Duration::from_secs(10);
/// How long an id found absent from the store is answered as absent without a new lookup.
pub const ABSENT_TTL: Duration = Duration::from_secs(1);
/// Ids remembered as absent, at most.
const MAX_ABSENT: usize = 10_000;

/// `--auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every call needs an API key.
    Keys,
    /// No keys: the tenant header picks the tenant (trusted networks only).
    None,
}

/// The authentication settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Keys or none.
    pub mode: AuthMode,
    /// Where the first admin key's token is written when the store has no key yet.
    pub admin_key_file: PathBuf,
    /// Where the all-in-one agent's ingest key is kept (`--agent`), if any.
    pub agent_key_file: Option<PathBuf>,
    /// Cancelled once [`Auth::bootstrap`] has run: the key files are current.
    pub ready: CancellationToken,
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tenant every part of the call is confined to.
    pub tenant: String,
    /// What the caller may do.
    pub role: Role,
    /// The key's public id (`None` with `--auth none`).
    pub key_id: Option<String>,
}

/// The `user-agent` of a gRPC request.
pub fn grpc_user_agent<T>(req: &tonic::Request<T>) -> Option<String> {
    req.metadata()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl Principal {
    /// The caller as the trail records it.
    pub fn caller(&self) -> Caller {
        Caller::Key {
            tenant: self.tenant.clone(),
            key_id: self.key_id.clone(),
            role: self.role,
        }
    }

    /// Ok when the caller's role allows `needed`.
    ///
    /// # Errors
    /// [`Denied::Forbidden`] naming both roles.
    pub fn require(&self, needed: Role) -> Result<(), Denied> {
        if self.role.allows(needed) {
            Ok(())
        } else {
            Err(Denied::Forbidden(format!(
                "this call needs a key with role `{needed}` (or `admin`); key {} has role `{}`",
                self.key_id.as_deref().unwrap_or("-"),
                self.role
            )))
        }
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No key, a malformed one, or one that is not (or no longer) valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid key whose role or tenant does not allow the call.
    #[error("{0}")]
    Forbidden(String),
    /// A malformed header.
    #[error("{0}")]
    Invalid(String),
    /// Keys could not be read from the store.
    #[error("{0}")]
    Unavailable(String),
}

impl From<Denied> for tonic::Status {
    fn from(d: Denied) -> Self {
        crate::error::denied_answer(&d).status()
    }
}

#[derive(Debug)]
struct Cache {
    keys: HashMap<String, KeyRecord>,
}

/// Checks API keys.
#[derive(Debug, Clone)]
pub struct Auth {
    mode: AuthMode,
    keys: KeyStore,
    cache: Arc<RwLock<Cache>>,
    absent: Arc<tokio::sync::Mutex<HashMap<String, Instant>>>,
}

impl Auth {
    /// An authenticator over the keys of `storage`; lists them once (when the store does not
    /// answer, keys are looked up one by one until the next refresh lists them).
    pub async fn new(storage: &Storage, mode: AuthMode) -> Self {
        let keys = KeyStore::new(storage.object_store(), storage.base_path());
        let auth = Self {
            mode,
            keys,
            cache: Arc::new(RwLock::new(Cache {
                keys: HashMap::new(),
            })),
            absent: Arc::default(),
        };
        if mode == AuthMode::Keys
            && let Err(e) = auth.reload().await
        {
            warn!(error = %e, "starting with no cached API key");
        }
        auth
    }

    /// The mode.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The key store.
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    async fn reload(&self) -> Result<(), Denied> {
        let listed = self
            .keys
            .list()
            .await
            .map_err(|e| Denied::Unavailable(format!("cannot read API keys: {e}")))?;
        let keys = listed.into_iter().map(|k| (k.key_id.clone(), k)).collect();
        if let Ok(mut c) = self.cache.write() {
            c.keys = keys;
        }
        Ok(())
    }

    /// Lists the keys again every [`REFRESH`] until `stop`.
    pub async fn refresh_loop(self, stop: CancellationToken) {
        if self.mode != AuthMode::Keys {
            return;
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(REFRESH) => {}
                () = stop.cancelled() => return,
            }
            if let Err(e) = self.reload().await {
                warn!(error = %e, "keeping the cached API keys");
            }
        }
    }

    /// Adds a key this server just made to the cache.
    pub fn remember(&self, record: KeyRecord) {
        if let Ok(mut c) = self.cache.write() {
            c.keys.insert(record.key_id.clone(), record);
        }
    }

    /// Drops a key this server just revoked from the cache.
    pub fn forget(&self, key_id: &str) {
        if let Ok(mut c) = self.cache.write() {
            c.keys.remove(key_id);
        }
    }

    /// The key `key_id` (from the cache, else the store), if it exists.
    ///
    /// # Errors
    /// Keys could not be read from the store.
    pub async fn record(&self, key_id: &str) -> Result<Option<KeyRecord>, Denied> {
        match self.cached(key_id) {
            Some(r) => Ok(Some(r)),
            None => self.look_up(key_id).await,
        }
    }

    fn cached(&self, key_id: &str) -> Option<KeyRecord> {
        self.cache.read().ok()?.keys.get(key_id).cloned()
    }

    /// Looks up an id the cache does not know. Lookups run one at a time, and an id found
    /// absent is not looked up again for [`ABSENT_TTL`], so made-up ids cost at most one
    /// storage read each and never more than one at once.
    async fn look_up(&self, key_id: &str) -> Result<Option<KeyRecord>, Denied> {
        let mut absent = self.absent.lock().await;
        if let Some(k) = self.cached(key_id) {
            return Ok(Some(k));
        }
        if absent.get(key_id).is_some_and(|t| t.elapsed() < ABSENT_TTL) {
            return Ok(None);
        }
        let found = self
            .keys
            .get(key_id)
            .await
            .map_err(|e| Denied::Unavailable(format!("cannot read API keys: {e}")))?;
        match &found {
            Some(k) => {
                absent.remove(key_id);
                self.remember(k.clone());
            }
            None => {
                if absent.len() >= MAX_ABSENT {
                    absent.clear();
                }
                absent.insert(key_id.to_string(), Instant::now());
            }
        }
        Ok(found)
    }

    /// The caller of a request with this `authorization` value and tenant header.
    ///
    /// # Errors
    /// [`Denied::Unauthenticated`] for a missing, malformed or unknown key or a wrong secret;
    /// [`Denied::Forbidden`] for a tenant header naming another tenant.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        tenant_header: Option<&str>,
    ) -> Result<Principal, Denied> {
        let tenant_header = tenant_header.map(str::trim).filter(|t| !t.is_empty());
        if let Some(t) = tenant_header {
            validate_tenant(t).map_err(|e| Denied::Invalid(format!("{TENANT_HEADER}: {e}")))?;
        }
        if self.mode == AuthMode::None {
            return Ok(Principal {
                tenant: tenant_header.unwrap_or(DEFAULT_TENANT).to_string(),
                role: Role::Admin,
                key_id: None,
            });
        }
        let Some(value) = authorization else {
            return Err(Denied::Unauthenticated(
                "authorization: an API key is required (`authorization: Bearer wt_...`)".into(),
            ));
        };
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| {
                Denied::Unauthenticated("authorization: expected `Bearer <API key>`".into())
            })?
            .trim();
        let token = parse_token(token)
            .map_err(|e| Denied::Unauthenticated(format!("authorization: {e}")))?;
        let record = match self.cached(token.key_id) {
            Some(r) => Some(r),
            None => self.look_up(token.key_id).await?,
        };
        let Some(record) = record.filter(|r| r.verify(token.secret)) else {
            return Err(Denied::Unauthenticated(format!(
                "authorization: API key {} is not valid (unknown, revoked or wrong secret)",
                token.key_id
            )));
        };
        if let Some(t) = tenant_header
            && t != record.tenant
        {
            return Err(Denied::Forbidden(format!(
                "{TENANT_HEADER}: key {} belongs to another tenant than `{t}`",
                record.key_id
            )));
        }
        Ok(Principal {
            tenant: record.tenant,
            role: record.role,
            key_id: Some(record.key_id),
        })
    }

    /// Authenticates and checks the role in one step; on refusal, also who the trail should
    /// name as the caller.
    ///
    /// # Errors
    /// The refusal and the caller as [`Auth::refused_caller`] names it (or the key, when only
    /// its role fell short).
    pub async fn authorize(
        &self,
        authorization: Option<&str>,
        tenant_header: Option<&str>,
        needed: Role,
    ) -> Result<Principal, (Denied, Caller)> {
        match self.authenticate(authorization, tenant_header).await {
            Ok(p) => match p.require(needed) {
                Ok(()) => Ok(p),
                Err(d) => Err((d, p.caller())),
            },
            Err(d) => Err((d, self.refused_caller(authorization))),
        }
    }

    /// The caller of a refused call: the key id it presented, if any could be read, and that
    /// key's tenant, if this server knows the id.
    pub fn refused_caller(&self, authorization: Option<&str>) -> Caller {
        let key_id = authorization
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .and_then(|t| parse_token(t.trim()).ok())
            .map(|t| t.key_id.to_string());
        let tenant = key_id
            .as_deref()
            .and_then(|id| self.cached(id))
            .map(|k| k.tenant);
        Caller::Anonymous { key_id, tenant }
    }

    /// The caller of a gRPC request, who must be allowed `needed`; a refusal is recorded in
    /// the trail as `event_name`.
    ///
    /// # Errors
    /// UNAUTHENTICATED or PERMISSION_DENIED.
    pub async fn grpc<T>(
        &self,
        req: &tonic::Request<T>,
        needed: Role,
        trail: &SelfAudit,
        event_name: &'static str,
    ) -> Result<Principal, tonic::Status> {
        let md = req.metadata();
        let text = |name: &str| -> Result<Option<&str>, tonic::Status> {
            md.get(name)
                .map(|v| {
                    v.to_str().map_err(|_| {
                        tonic::Status::invalid_argument(format!("{name}: must be ASCII"))
                    })
                })
                .transpose()
        };
        let authorization = text("authorization")?;
        match self
            .authorize(authorization, text(TENANT_HEADER)?, needed)
            .await
        {
            Ok(p) => Ok(p),
            Err((d, caller)) => {
                trail.record(&Call {
                    event_name,
                    read_only: needed == Role::Read,
                    caller,
                    source_ip: req.remote_addr().map(|a| a.ip()),
                    user_agent: grpc_user_agent(req),
                    request_parameters: serde_json::Value::Null,
                    error: Some(("AccessDenied".into(), d.to_string())),
                });
                Err(d.into())
            }
        }
    }

    /// With `--auth keys`: when the store has no key at all, makes an admin key for the
    /// `default` tenant and writes its token to `admin_key_file` (mode 0600); with `--agent`,
    /// makes sure `agent_key_file` holds a valid ingest key of `default`.
    ///
    /// # Errors
    /// Storage errors; files that cannot be written.
    pub async fn bootstrap(&self, config: &AuthConfig) -> anyhow::Result<()> {
        if self.mode != AuthMode::Keys {
            return Ok(());
        }
        if self.keys.list().await?.is_empty() {
            let (record, token) = self
                .keys
                .create(
                    DEFAULT_TENANT,
                    Role::Admin,
                    "first admin key, made at first start",
                )
                .await?;
            write_secret(&config.admin_key_file, &token)?;
            info!(
                key_id = %record.key_id,
                file = %config.admin_key_file.display(),
                "the store had no API key: made an admin key for tenant `default`; its token is in the file"
            );
            self.remember(record);
        }
        if let Some(path) = &config.agent_key_file {
            let current = std::fs::read_to_string(path).ok();
            let valid = match current.as_deref().map(str::trim).map(parse_token) {
                Some(Ok(t)) => self
                    .keys
                    .get(t.key_id)
                    .await?
                    .is_some_and(|k| k.verify(t.secret) && k.role.allows(Role::Ingest)),
                _ => false,
            };
            if !valid {
                let (record, token) = self
                    .keys
                    .create(DEFAULT_TENANT, Role::Ingest, "all-in-one agent (--agent)")
                    .await?;
                write_secret(path, &token)?;
                info!(key_id = %record.key_id, "made an ingest key for the all-in-one agent");
                self.remember(record);
            }
        }
        Ok(())
    }
}

/// Writes a token to a file only its owner can read.
fn write_secret(path: &Path, token: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        watchtrail_storage::store::create_private_dir(dir, false)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(format!("{token}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn auth() -> (Auth, Storage) {
        let storage = Storage::in_memory(Arc::new(object_store::memory::InMemory::new()));
        (Auth::new(&storage, AuthMode::Keys).await, storage)
    }

    fn bearer(t: &str) -> String {
        format!("Bearer {t}")
    }

    #[tokio::test]
    async fn a_key_names_its_tenant_and_role() {
        let (auth, _) = auth().await;
        let (_, token) = auth.keys().create("acme", Role::Read, "").await.unwrap();
        let p = auth
            .authenticate(Some(&bearer(&token)), None)
            .await
            .unwrap();
        assert_eq!((p.tenant.as_str(), p.role), ("acme", Role::Read));
        // Its own tenant named in the header is fine; another one is refused.
        assert!(
            auth.authenticate(Some(&bearer(&token)), Some("acme"))
                .await
                .is_ok()
        );
        assert!(matches!(
            auth.authenticate(Some(&bearer(&token)), Some("other"))
                .await,
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(p.require(Role::Ingest), Err(Denied::Forbidden(_))));
        assert!(p.require(Role::Read).is_ok());
    }

    #[tokio::test]
    async fn missing_malformed_wrong_and_revoked_keys_are_unauthenticated() {
        let (auth, _) = auth().await;
        let (record, token) = auth.keys().create("acme", Role::Admin, "").await.unwrap();
        let wrong = format!(
            "{}{}",
            &token[..token.len() - 1],
            if token.ends_with('0') { '1' } else { '0' }
        );
        for value in [
            None,
            Some("Basic abc".to_string()),
            Some(bearer("wt_nope")),
            Some(bearer(&wrong)),
        ] {
            let r = auth.authenticate(value.as_deref(), None).await;
            assert!(
                matches!(r, Err(Denied::Unauthenticated(_))),
                "{value:?}: {r:?}"
            );
            if let Err(e) = r {
                assert!(
                    !e.to_string().contains(&token[20..]),
                    "the secret leaked: {e}"
                );
            }
        }
        assert!(auth.authenticate(Some(&bearer(&token)), None).await.is_ok());
        auth.keys().revoke(&record.key_id).await.unwrap();
        auth.forget(&record.key_id);
        assert!(matches!(
            auth.authenticate(Some(&bearer(&token)), None).await,
            Err(Denied::Unauthenticated(_))
        ));
    }

    #[tokio::test]
    async fn a_key_made_elsewhere_works_on_its_first_call() {
        let (auth, storage) = auth().await;
        // Another server (or `watchtrail keys create --store`) writes the key.
        let elsewhere = KeyStore::new(storage.object_store(), storage.base_path());
        let (_, token) = elsewhere.create("acme", Role::Ingest, "").await.unwrap();
        let p = auth
            .authenticate(Some(&bearer(&token)), None)
            .await
            .unwrap();
        assert_eq!(p.role, Role::Ingest);
    }

    #[tokio::test]
    async fn no_auth_takes_the_tenant_header() {
        let storage = Storage::in_memory(Arc::new(object_store::memory::InMemory::new()));
        let auth = Auth::new(&storage, AuthMode::None).await;
        let p = auth.authenticate(None, Some("acme")).await.unwrap();
        assert_eq!((p.tenant.as_str(), p.role), ("acme", Role::Admin));
        assert_eq!(
            auth.authenticate(None, None).await.unwrap().tenant,
            "default"
        );
        assert!(auth.authenticate(None, Some("../x")).await.is_err());
    }

    #[tokio::test]
    async fn bootstrap_makes_one_admin_key_and_a_lasting_agent_key() {
        let (auth, _) = auth().await;
        let dir = tempfile::tempdir().unwrap();
        let config = AuthConfig {
            mode: AuthMode::Keys,
            admin_key_file: dir.path().join("admin.key"),
            agent_key_file: Some(dir.path().join("agent.key")),
            ready: CancellationToken::new(),
        };
        auth.bootstrap(&config).await.unwrap();
        let admin = std::fs::read_to_string(&config.admin_key_file).unwrap();
        let p = auth
            .authenticate(Some(&bearer(admin.trim())), None)
            .await
            .unwrap();
        assert_eq!((p.tenant.as_str(), p.role), ("default", Role::Admin));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&config.admin_key_file)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        let agent = std::fs::read_to_string(dir.path().join("agent.key")).unwrap();
        // A second start keeps both: no second admin key, the same agent key.
        auth.bootstrap(&config).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&config.admin_key_file).unwrap(),
            admin
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("agent.key")).unwrap(),
            agent
        );
        assert_eq!(auth.keys().list().await.unwrap().len(), 2);
        let p = auth
            .authenticate(Some(&bearer(agent.trim())), None)
            .await
            .unwrap();
        assert_eq!(p.role, Role::Ingest);
    }
}
