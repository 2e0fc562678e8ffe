//! Signed audit digests: the signing key, its publication, and the digester loop (one server of
//! a cluster, by lease). What a digest is and how it is verified: `watchtrail_storage::integrity`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use watchtrail_storage::control::{ControlStore, Lease};
use watchtrail_storage::integrity::digest::{DigestStore, Signer};
use watchtrail_storage::integrity::digester::Digester;
use watchtrail_storage::store::Storage;

use crate::metrics::Metrics;
use crate::wal::now_ms;

/// Settings of the digests.
#[derive(Debug, Clone)]
pub struct DigestConfig {
    /// Whether this server writes digests.
    pub enabled: bool,
    /// The signing key's file.
    pub key_file: PathBuf,
    /// A window is digested this long after it ends.
    pub delay: Duration,
    /// Pass interval.
    pub interval: Duration,
    /// The audit table's retention, when it has one.
    pub retention: Option<Duration>,
}

/// Loads (or creates) the signing key and publishes its public half.
///
/// # Errors
/// The key file cannot be read or written; the store cannot take the public key.
pub async fn prepare(
    config: &DigestConfig,
    storage: &Storage,
    holder: &str,
) -> crate::Result<Option<Arc<Signer>>> {
    if !config.enabled {
        return Ok(None);
    }
    let signer = Arc::new(Signer::load_or_create(&config.key_file)?);
    DigestStore::new(storage)
        .publish(&signer, holder, now_ms())
        .await?;
    info!(fingerprint = signer.fingerprint(), key = %config.key_file.display(), "audit digests are signed with this key");
    Ok(Some(signer))
}

/// Runs digester passes until `stop`, while this server holds the digester lease.
pub async fn run(
    storage: Storage,
    config: DigestConfig,
    signer: Arc<Signer>,
    holder: String,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let control = ControlStore::new(storage.object_store(), storage.base_path().clone());
    let local = storage.base_url().scheme() == "file";
    let ttl = (config.interval * 3).max(Duration::from_secs(30));
    let lease = Lease::named(
        storage.object_store(),
        storage.base_path(),
        "audit-digester",
        holder,
        ttl,
        local,
    );
    let digester = Digester::new(storage, signer, config.delay);
    let mut held = false;
    loop {
        let now_held = lease.acquire().await;
        if now_held != held {
            info!(held = now_held, "audit digester lease changed hands");
            // Another server may have extended the chains meanwhile.
            digester.forget();
            held = now_held;
        }
        if held {
            match control.tenants().await {
                Ok(tenants) => {
                    for tenant in tenants {
                        if stop.is_cancelled() {
                            return;
                        }
                        match digester.pass(&tenant, now_ms(), config.retention).await {
                            Ok(r) => {
                                metrics.audit_digests_written.add(r.written);
                                metrics
                                    .audit_digest_mismatches
                                    .add(r.mismatched.len() as u64);
                            }
                            Err(e) => {
                                metrics.audit_digest_failures.inc();
                                warn!(%tenant, error = %e, "audit digester pass failed; retried next interval");
                            }
                        }
                    }
                }
                Err(e) => warn!(error = %e, "audit digester: cannot list tenants"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(config.interval) => {}
            () = stop.cancelled() => return,
        }
    }
}
