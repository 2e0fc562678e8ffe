//! Control documents on object storage: one JSON document per alarm, alarm state, metric
//! filter, destination, pending notification and log-group retention policy, under
//! `<root>/<tenant>/_control/<kind>/`, and leases (the alarm evaluator's, each table's
//! compactor's) under `<root>/_control/`.
//!
//! Nothing lives only in a server's memory: any server answers the API from these documents,
//! and the one holding the lease evaluates.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt as _;
use object_store::path::{Path, PathPart};
use object_store::{
    ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, UpdateVersion,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::{debug, warn};
use watchtrail_model::tables::validate_tenant;

use crate::error::{Error, Result};

/// The kinds of control document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Doc {
    /// An alarm definition.
    Alarm,
    /// An alarm's state.
    State,
    /// A metric filter.
    Filter,
    /// A webhook destination.
    Destination,
    /// A notification not yet delivered.
    Outbox,
    /// A log group's retention policy (CloudWatch's `PutRetentionPolicy`).
    LogRetention,
    /// A log group made by `CreateLogGroup` (groups also exist by their events).
    LogGroup,
}

impl Doc {
    fn dir(self) -> &'static str {
        match self {
            Doc::Alarm => "alarms",
            Doc::State => "alarm-state",
            Doc::Filter => "metric-filters",
            Doc::Destination => "destinations",
            Doc::Outbox => "outbox",
            Doc::LogRetention => "log-retention",
            Doc::LogGroup => "log-groups",
        }
    }

    const ALL: [Doc; 7] = [
        Doc::Alarm,
        Doc::State,
        Doc::Filter,
        Doc::Destination,
        Doc::Outbox,
        Doc::LogRetention,
        Doc::LogGroup,
    ];

    fn from_dir(dir: &str) -> Option<Doc> {
        Self::ALL.into_iter().find(|d| d.dir() == dir)
    }
}

const CONTROL: &str = "_control";

fn storage_error(e: object_store::Error) -> Error {
    Error::ObjectStore(e)
}

/// Reads and writes control documents.
#[derive(Debug, Clone)]
pub struct ControlStore {
    store: Arc<dyn ObjectStore>,
    base: Path,
}

impl ControlStore {
    /// Documents under `base` of `store`.
    pub fn new(store: Arc<dyn ObjectStore>, base: Path) -> Self {
        Self { store, base }
    }

    fn dir(&self, tenant: &str, doc: Doc) -> Path {
        self.base.clone().join(tenant).join(CONTROL).join(doc.dir())
    }

    /// The path of one document. Names are percent-encoded into one path segment, so no name
    /// can reach outside its directory.
    pub fn path(&self, tenant: &str, doc: Doc, name: &str) -> Path {
        self.dir(tenant, doc)
            .join(PathPart::from(format!("{name}.json").as_str()))
    }

    /// Writes a document.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn put<T: Serialize>(
        &self,
        tenant: &str,
        doc: Doc,
        name: &str,
        value: &T,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::Internal(e.to_string()))?;
        self.store
            .put(&self.path(tenant, doc, name), PutPayload::from(bytes))
            .await
            .map_err(storage_error)?;
        Ok(())
    }

    /// Reads a document; `None` when there is none.
    ///
    /// # Errors
    /// Storage errors; a document that does not parse.
    pub async fn get<T: DeserializeOwned>(
        &self,
        tenant: &str,
        doc: Doc,
        name: &str,
    ) -> Result<Option<T>> {
        let path = self.path(tenant, doc, name);
        match self.store.get(&path).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(storage_error)?;
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| Error::Internal(format!("{path}: {e}")))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage_error(e)),
        }
    }

    /// Deletes a document; whether it existed.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn delete(&self, tenant: &str, doc: Doc, name: &str) -> Result<bool> {
        let path = self.path(tenant, doc, name);
        match self.store.head(&path).await {
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(storage_error(e)),
            Ok(_) => {}
        }
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(storage_error(e)),
        }
    }

    /// Every document of one kind of a tenant, parsed; documents that do not parse are skipped
    /// with a warning.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list<T: DeserializeOwned>(&self, tenant: &str, doc: Doc) -> Result<Vec<T>> {
        let metas: Vec<_> = self
            .store
            .list(Some(&self.dir(tenant, doc)))
            .try_collect()
            .await
            .map_err(storage_error)?;
        let mut out = Vec::with_capacity(metas.len());
        for meta in metas {
            let bytes = match self.store.get(&meta.location).await {
                Ok(r) => r.bytes().await.map_err(storage_error)?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(storage_error(e)),
            };
            match serde_json::from_slice(&bytes) {
                Ok(v) => out.push(v),
                Err(e) => {
                    warn!(path = %meta.location, error = %e, "skipping a control document that does not parse")
                }
            }
        }
        Ok(out)
    }

    /// The tenants that have a control directory.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn tenants(&self) -> Result<Vec<String>> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.base))
            .await
            .map_err(storage_error)?;
        let mut out = Vec::new();
        for prefix in listed.common_prefixes {
            let Some(name) = prefix.filename() else {
                continue;
            };
            if validate_tenant(name).is_ok() {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }
}

/// A cached view of every control document, refreshed by listing and re-reading only what
/// changed (by ETag, or size and modification time where the store has no ETag).
#[derive(Debug, Default)]
pub struct DocCache {
    docs: HashMap<Path, (String, Value)>,
}

/// One tenant's documents, by kind.
pub type TenantDocs = HashMap<Doc, Vec<Value>>;

impl DocCache {
    /// Lists every tenant's control documents and returns them parsed, reading from storage
    /// only the documents that changed since the last call.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn refresh(&mut self, control: &ControlStore) -> Result<HashMap<String, TenantDocs>> {
        let mut seen = HashMap::new();
        let mut out: HashMap<String, TenantDocs> = HashMap::new();
        for tenant in control.tenants().await? {
            let prefix = control.base.clone().join(tenant.as_str()).join(CONTROL);
            let metas: Vec<_> = control
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(storage_error)?;
            for meta in metas {
                let Some(doc) = meta
                    .location
                    .prefix_match(&prefix)
                    .and_then(|mut parts| parts.next())
                    .and_then(|p| Doc::from_dir(p.as_ref()))
                else {
                    continue;
                };
                let tag = meta.e_tag.clone().unwrap_or_else(|| {
                    format!(
                        "{}-{}",
                        meta.size,
                        meta.last_modified.timestamp_nanos_opt().unwrap_or(0)
                    )
                });
                let value = match self.docs.get(&meta.location) {
                    Some((t, v)) if *t == tag => v.clone(),
                    _ => {
                        let bytes = match control.store.get(&meta.location).await {
                            Ok(r) => r.bytes().await.map_err(storage_error)?,
                            Err(object_store::Error::NotFound { .. }) => continue,
                            Err(e) => return Err(storage_error(e)),
                        };
                        match serde_json::from_slice::<Value>(&bytes) {
                            Ok(v) => v,
                            Err(e) => {
                                warn!(path = %meta.location, error = %e, "skipping a control document that does not parse");
                                continue;
                            }
                        }
                    }
                };
                seen.insert(meta.location.clone(), (tag, value.clone()));
                out.entry(tenant.clone())
                    .or_default()
                    .entry(doc)
                    .or_default()
                    .push(value);
            }
        }
        self.docs = seen;
        Ok(out)
    }
}

/// The evaluator's lease: a document naming its holder and expiry, taken and renewed with
/// conditional writes, so at most one server evaluates alarms and sends notifications.
#[derive(Debug)]
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    path: Path,
    holder: String,
    ttl: Duration,
    /// The store is a local directory, which has no compare-and-swap.
    local: bool,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LeaseDoc {
    holder: String,
    expires_ms: i64,
}

impl Lease {
    /// A lease at `<base>/_control/alarm-evaluator.lease` for `holder`. `local` says the store
    /// is a local directory, where a renewal may overwrite without compare-and-swap.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        base: &Path,
        holder: String,
        ttl: Duration,
        local: bool,
    ) -> Self {
        Self::named(store, base, "alarm-evaluator", holder, ttl, local)
    }

    /// A lease at `<base>/_control/<name>.lease` (the compactor of one table, for example).
    pub fn named(
        store: Arc<dyn ObjectStore>,
        base: &Path,
        name: &str,
        holder: String,
        ttl: Duration,
        local: bool,
    ) -> Self {
        Self {
            store,
            path: base
                .clone()
                .join(CONTROL)
                .join(format!("{name}.lease").as_str()),
            holder,
            ttl,
            local,
        }
    }

    fn doc(&self) -> PutPayload {
        let doc = LeaseDoc {
            holder: self.holder.clone(),
            expires_ms: chrono::Utc::now().timestamp_millis() + self.ttl.as_millis() as i64,
        };
        PutPayload::from(serde_json::to_vec(&doc).unwrap_or_default())
    }

    /// Takes or renews the lease; whether this server holds it now.
    pub async fn acquire(&self) -> bool {
        match self.try_acquire().await {
            Ok(held) => held,
            Err(e) => {
                warn!(error = %e, lease = %self.path, "lease check failed");
                false
            }
        }
    }

    async fn try_acquire(&self) -> Result<bool> {
        let current = match self.store.get(&self.path).await {
            Ok(r) => {
                let meta = r.meta.clone();
                let bytes = r.bytes().await.map_err(storage_error)?;
                Some((meta, serde_json::from_slice::<LeaseDoc>(&bytes).ok()))
            }
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(storage_error(e)),
        };
        let Some((meta, doc)) = current else {
            let opts = PutOptions::from(PutMode::Create);
            return match self.store.put_opts(&self.path, self.doc(), opts).await {
                Ok(_) => {
                    debug!(holder = %self.holder, lease = %self.path, "took the lease");
                    Ok(true)
                }
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => Ok(false),
                Err(e) => Err(storage_error(e)),
            };
        };
        let now = chrono::Utc::now().timestamp_millis();
        let mine = doc.as_ref().is_some_and(|d| d.holder == self.holder);
        let expired = doc.as_ref().is_none_or(|d| d.expires_ms < now);
        if !mine && !expired {
            return Ok(false);
        }
        let opts = PutOptions::from(PutMode::Update(UpdateVersion {
            e_tag: meta.e_tag.clone(),
            version: meta.version.clone(),
        }));
        match self.store.put_opts(&self.path, self.doc(), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(object_store::Error::NotImplemented { .. }) if self.local => {
                // A local directory has no compare-and-swap; it is one machine's store, so the
                // servers sharing it are on one host and a plain overwrite is as good.
                self.store
                    .put(&self.path, self.doc())
                    .await
                    .map_err(storage_error)?;
                Ok(true)
            }
            Err(object_store::Error::NotImplemented { .. }) => Err(Error::Unavailable(
                "the object store refuses conditional writes, which the leases (alarm evaluator, \
                 compactors) need (for S3-compatible stores, leave AWS_CONDITIONAL_PUT unset or set it to etag)"
                    .into(),
            )),
            Err(e) => Err(storage_error(e)),
        }
    }

    /// Gives the lease up (on shutdown), so another server takes over at once.
    pub async fn release(&self) {
        if let Ok(r) = self.store.get(&self.path).await
            && let Ok(bytes) = r.bytes().await
            && serde_json::from_slice::<LeaseDoc>(&bytes).is_ok_and(|d| d.holder == self.holder)
        {
            let _ = self.store.delete(&self.path).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_and_takeover_after_expiry() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let base = Path::default();
        let ttl = Duration::from_millis(300);
        let a = Lease::new(Arc::clone(&store), &base, "a".into(), ttl, false);
        let b = Lease::new(Arc::clone(&store), &base, "b".into(), ttl, false);
        assert!(a.acquire().await, "the first taker gets the lease");
        assert!(!b.acquire().await, "a live lease is not taken");
        assert!(a.acquire().await, "the holder renews");
        assert!(!b.acquire().await);
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        assert!(b.acquire().await, "an expired lease is taken over");
        assert!(!a.acquire().await, "the old holder has lost it");
        b.release().await;
        assert!(a.acquire().await, "a released lease is free at once");
    }

    #[tokio::test]
    async fn names_cannot_escape_their_directory() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let control = ControlStore::new(Arc::clone(&store), Path::from("root"));
        for name in ["../../other/_control/alarms/x", "a/b", "..", "."] {
            let p = control.path("t1", Doc::Alarm, name);
            assert!(
                p.as_ref().starts_with("root/t1/_control/alarms/"),
                "{name} -> {p}"
            );
            assert_eq!(p.parts().count(), 5, "{name} -> {p}");
            control
                .put("t1", Doc::Alarm, name, &serde_json::json!({"n": name}))
                .await
                .expect("put");
            let back: Option<Value> = control.get("t1", Doc::Alarm, name).await.expect("get");
            assert_eq!(back, Some(serde_json::json!({"n": name})));
        }
        assert!(
            control
                .list::<Value>("other", Doc::Alarm)
                .await
                .expect("list")
                .is_empty()
        );
    }
}
