//! The lifecycle task: every `--compaction-interval`, each table of each tenant is expired,
//! compacted and vacuumed ([`watchtrail_storage::lifecycle`]) by the one server holding that
//! table's lease (`_control/compactor-<tenant>-<table>.lease`), so servers sharing a store
//! never compact the same table at once. Log groups' own retention policies are read from
//! `<tenant>/_control/log-retention/` at each pass.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use watchtrail_query::tables::TableKind;
use watchtrail_storage::lifecycle::{self, Policy};
use watchtrail_storage::store::Storage;

use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;
use watchtrail_storage::control::{ControlStore, Doc, Lease};

/// What the lifecycle task does, and how often.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// Run at all on this server.
    pub enabled: bool,
    /// Time between passes.
    pub interval: Duration,
    /// Windows, sizes, grace and retention.
    pub policy: Policy,
}

/// A log group's retention, as CloudWatch's `PutRetentionPolicy` sets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionPolicy {
    /// The log group.
    pub log_group_name: String,
    /// Days to keep its events: one of [`lifecycle::RETENTION_DAYS`].
    pub retention_in_days: u32,
}

/// The log groups of `tenant` that have a retention of their own.
///
/// # Errors
/// Storage errors.
pub async fn log_group_retention(
    control: &ControlStore,
    tenant: &str,
) -> crate::error::Result<BTreeMap<String, Duration>> {
    let docs: Vec<RetentionPolicy> = control.list(tenant, Doc::LogRetention).await?;
    Ok(docs
        .into_iter()
        .filter(|d| lifecycle::RETENTION_DAYS.contains(&d.retention_in_days))
        .map(|d| {
            (
                d.log_group_name,
                Duration::from_secs(u64::from(d.retention_in_days) * 86_400),
            )
        })
        .collect())
}

/// Runs passes until `stop`.
pub async fn run(
    storage: Storage,
    config: LifecycleConfig,
    holder: String,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    if !config.enabled {
        return;
    }
    let control = ControlStore::new(storage.object_store(), storage.base_path().clone());
    let local = storage.base_url().scheme() == "file";
    // A lease outlives a pass comfortably; a holder that dies frees it within this.
    let ttl = (config.interval * 3).max(Duration::from_secs(300));
    let mut last_vacuum: HashMap<(String, TableKind), Instant> = HashMap::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(config.interval) => {}
            () = stop.cancelled() => return,
        }
        let tenants = match control.tenants().await {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "lifecycle: cannot list tenants");
                continue;
            }
        };
        for tenant in tenants {
            for kind in TableKind::ALL {
                if stop.is_cancelled() {
                    return;
                }
                let name = format!("compactor-{tenant}-{}", kind.name());
                let lease = Lease::named(
                    storage.object_store(),
                    storage.base_path(),
                    &name,
                    holder.clone(),
                    ttl,
                    local,
                );
                if !lease.acquire().await {
                    continue;
                }
                let groups = match kind {
                    TableKind::Logs => match log_group_retention(&control, &tenant).await {
                        Ok(g) => g,
                        Err(e) => {
                            // Without the groups' own policies, the kind's retention could
                            // drop a group kept longer: skip the table this pass.
                            metrics.lifecycle_failures.inc();
                            warn!(tenant, error = %e, "lifecycle: cannot read log group retention policies");
                            continue;
                        }
                    },
                    _ => BTreeMap::new(),
                };
                match lifecycle::run_table_with(&storage, &tenant, kind, &config.policy, &groups)
                    .await
                {
                    Ok(s) => {
                        metrics.compaction_windows.add(s.windows as u64);
                        metrics.compaction_files_in.add(s.files_in as u64);
                        metrics.compaction_files_out.add(s.files_out as u64);
                        metrics.compaction_bytes_in.add(s.bytes_in);
                        metrics.compaction_bytes_out.add(s.bytes_out);
                        metrics.retention_files_removed.add(s.expired as u64);
                        metrics.rollup_rewrites.add(s.rolled_up as u64);
                        if s.windows > 0 {
                            info!(
                                tenant,
                                table = kind.name(),
                                windows = s.windows,
                                files_in = s.files_in,
                                files_out = s.files_out,
                                mb_in = s.bytes_in / 1_000_000,
                                mb_out = s.bytes_out / 1_000_000,
                                "compacted"
                            );
                        }
                    }
                    Err(e) => {
                        metrics.lifecycle_failures.inc();
                        warn!(tenant, table = kind.name(), error = %e, "lifecycle pass failed; retried next interval");
                        continue;
                    }
                }
                // Vacuum at most twice per grace period: each run adds two commits to the log.
                let key = (tenant.clone(), kind);
                let due = last_vacuum
                    .get(&key)
                    .is_none_or(|t| t.elapsed() >= config.policy.grace / 2);
                if due {
                    last_vacuum.insert(key, Instant::now());
                    match lifecycle::vacuum(&storage, &tenant, kind, config.policy.grace).await {
                        Ok(n) => metrics.vacuum_files_deleted.add(n as u64),
                        Err(e) => {
                            metrics.lifecycle_failures.inc();
                            warn!(tenant, table = kind.name(), error = %e, "vacuum failed; retried later");
                        }
                    }
                }
            }
        }
    }
}
