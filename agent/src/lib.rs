//! The Watchtrail host agent: host metrics, log files and audit records, shipped to the server
//! over gRPC, exactly once.
//!
//! # How data flows
//! Sources run on one collector thread and turn what they read into whole requests:
//! [`host`] samples `/proc`, [`tail`] follows log files, [`cloudtrail`] reads delivery files,
//! and the local API ([`intake`]) takes audit events from applications. Every batch is appended
//! to the [`spool`] (the on-disk buffer) together with the source's new position, in one synced
//! write. The sender ([`ship`]) reads the spool in order and sends each request with an
//! idempotency id fixed when it was written, so a crash anywhere repeats nothing and loses
//! nothing.
//!
//! # Layout
//! - [`config`]: the TOML configuration and the CloudWatch agent's JSON.
//! - [`spool`], [`ship`]: the buffer and the sender.
//! - [`host`], [`tail`], [`timefmt`], [`audit`], [`cloudtrail`], [`intake`]: the sources.
//! - [`stats`]: the agent's own counters.

pub mod audit;
pub mod cloudtrail;
pub mod config;
pub mod host;
pub mod intake;
pub mod ship;
pub mod spool;
pub mod stats;
pub mod tail;
pub mod timefmt;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use prost::Message as _;
use tracing::{info, warn};
use watchtrail_proto::v1::{Dimension, MetricDatum, PutMetricDataRequest, metric_datum};

use crate::config::Config;
use crate::spool::{Kind, Spool, SpoolOptions};
use crate::stats::Stats;

/// What every part of the agent shares.
#[derive(Debug)]
pub struct Context {
    /// The durable buffer and source positions.
    pub spool: Spool,
    /// Counters.
    pub stats: Arc<Stats>,
    /// This agent's id: the prefix of every idempotency id.
    pub agent_id: String,
    /// The `host` dimension and `{hostname}`.
    pub hostname: String,
    /// `{ip_address}`: the first IPv4 address that is not loopback.
    pub ip_address: String,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The machine's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The first IPv4 address of an interface that is up and not loopback.
fn ip_address() -> String {
    let mut out = String::from("127.0.0.1");
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `addrs` with a list we free below.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return out;
    }
    let mut cur = addrs;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_flags & (libc::IFF_LOOPBACK as u32) != 0 {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr.
        if i32::from(unsafe { (*ifa.ifa_addr).sa_family }) == libc::AF_INET {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            out = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).to_string();
            break;
        }
    }
    // SAFETY: `addrs` came from getifaddrs.
    unsafe { libc::freeifaddrs(addrs) };
    out
}

/// This agent's id, made once and kept in the state directory.
fn agent_id(state_dir: &Path) -> anyhow::Result<String> {
    let path = state_dir.join("agent-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty()
            && id.len() <= 64
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Ok(id.to_string());
        }
    }
    let id = audit::random_id();
    let tmp = state_dir.join("agent-id.tmp");
    std::fs::write(&tmp, &id)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

/// Builds the shared context: state directory, agent id, spool.
pub fn context(config: &Config) -> anyhow::Result<Arc<Context>> {
    crate::spool::create_private_dir(&config.state_dir)
        .with_context(|| format!("state_dir: cannot create {}", config.state_dir.display()))?;
    let stats = Arc::new(Stats::default());
    let spool = Spool::open(
        &config.state_dir.join("buffer"),
        SpoolOptions {
            max_bytes: config.buffer.max_bytes,
            sync: config.buffer.sync,
        },
        Arc::clone(&stats),
    )
    .with_context(|| {
        format!(
            "state_dir: cannot open the buffer in {}",
            config.state_dir.display()
        )
    })?;
    Ok(Arc::new(Context {
        spool,
        stats,
        agent_id: agent_id(&config.state_dir)?,
        hostname: config.hostname.clone().unwrap_or_else(hostname),
        ip_address: ip_address(),
    }))
}

/// Turns host metrics into requests of at most 1,000 datapoints.
pub fn metric_requests(
    config: &Config,
    host: &str,
    data: &[host::Datum],
    timestamp_ms: i64,
) -> Vec<Vec<MetricDatum>> {
    let resolution = if config.metrics.interval < Duration::from_secs(60) {
        1
    } else {
        60
    };
    let datums: Vec<MetricDatum> = data
        .iter()
        .filter(|d| config.metrics.wants(&d.name))
        .filter(|d| {
            config.metrics.per_cpu
                || d.dimensions
                    .iter()
                    .all(|(k, v)| k != "cpu" || v == "cpu-total")
        })
        .map(|d| {
            let mut dimensions: Vec<Dimension> = d
                .dimensions
                .iter()
                .map(|(name, value)| Dimension {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect();
            if !config.omit_hostname {
                dimensions.insert(
                    0,
                    Dimension {
                        name: "host".into(),
                        value: host.to_string(),
                    },
                );
            }
            MetricDatum {
                namespace: config.metrics.namespace.clone(),
                metric_name: d.name.clone(),
                dimensions,
                timestamp_ms,
                data: Some(metric_datum::Data::Value(d.value)),
                unit: d.unit.to_string(),
                storage_resolution: resolution,
            }
        })
        .collect();
    datums.chunks(1000).map(<[MetricDatum]>::to_vec).collect()
}

/// Keeps the agent's memory small on glibc: one malloc arena for its few threads (not one per
/// thread), and freed memory handed back to the system.
pub fn limit_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn trim_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory at the top of the heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The collector thread: files, host metrics and the CloudTrail directory, until `stop`.
pub fn collect(config: &Config, ctx: &Arc<Context>, stop: &AtomicBool) -> anyhow::Result<()> {
    let mut files = config
        .logs
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            tail::FileSource::new(i, f.clone(), Arc::clone(ctx), config.logs.flush_interval)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut trail = config
        .audit
        .cloudtrail_dir
        .clone()
        .map(|d| cloudtrail::CloudTrailDir::new(d, Arc::clone(ctx)));
    let procfs = host::ProcFs::default();
    let interval = config.metrics.interval;
    let mut prev: Option<host::Sample> = None;
    // Metrics are taken on interval boundaries, as the CloudWatch agent does.
    let mut next_metrics = Instant::now();
    let mut next_scan = Instant::now();
    let mut next_log = Instant::now() + Duration::from_secs(60);
    let mut next_trim = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let now = Instant::now();
        if now >= next_scan {
            for f in &mut files {
                f.scan();
            }
            if let Some(t) = &mut trail {
                t.scan();
            }
            next_scan = now + config.logs.scan_interval;
        }
        let mut more = false;
        for f in &mut files {
            more |= f.poll();
        }
        if config.metrics.enabled && now >= next_metrics && !stopping {
            let sample = procfs.sample();
            let ts = now_ms();
            let ts = ts - ts % (interval.as_millis().max(1) as i64);
            let data = host::metrics(prev.as_ref(), &sample);
            prev = Some(sample);
            let requests = metric_requests(config, &ctx.hostname, &data, ts);
            let items: usize = requests.iter().map(Vec::len).sum();
            if items > 0 {
                let agent = &ctx.agent_id;
                let r = ctx
                    .spool
                    .append(Kind::Metrics, items as u64, Vec::new(), |seq| {
                        requests
                            .into_iter()
                            .enumerate()
                            .map(|(i, metric_data)| {
                                PutMetricDataRequest {
                                    idempotency_id: format!("{agent}-{seq}-{i}"),
                                    metric_data,
                                    series: Vec::new(),
                                }
                                .encode_to_vec()
                            })
                            .collect()
                    });
                match r {
                    Ok(_) => {
                        ctx.stats
                            .datapoints
                            .fetch_add(items as u64, Ordering::Relaxed);
                    }
                    Err(e) => warn!(error = %e, "cannot buffer host metrics"),
                }
            }
            let step = interval.as_millis().max(1) as u64;
            let wall = now_ms() as u64;
            next_metrics = now + Duration::from_millis(step - wall % step);
        }
        if now >= next_log {
            info!(stats = %ctx.stats.summary(), "agent counters");
            next_log = now + Duration::from_secs(60);
        }
        if now >= next_trim {
            trim_malloc();
            next_trim = now + Duration::from_secs(10);
        }
        if stopping {
            for f in &mut files {
                f.flush_all();
            }
            if let Err(e) = ctx.spool.checkpoint() {
                warn!(error = %e, "cannot save positions at shutdown");
            }
            return Ok(());
        }
        if !more {
            std::thread::sleep(config.logs.poll_interval);
        }
    }
}
