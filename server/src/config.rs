//! Server flags (each with a `WATCHTRAIL_*` twin) and the validated [`ServerConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use watchtrail_query::tables::TableKind;
pub use watchtrail_query::units::{parse_bytes, parse_duration};
use watchtrail_storage::store::ObjectStoreArgs;

use crate::ingest::flush::FlushConfig;
use crate::wal::WalConfig;

/// `watchtrail-server`: ingest, store and serve metrics, logs and audit events.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "watchtrail-server", version, about, args_override_self = true)]
pub struct ServerArgs {
    #[command(flatten)]
    pub store: ObjectStoreArgs,

    /// Directory of the write-ahead log (local disk; acknowledged writes live here until they
    /// are committed to the store).
    #[arg(
        long,
        env = "WATCHTRAIL_WAL_DIR",
        default_value = "./watchtrail-data/wal"
    )]
    pub wal_dir: PathBuf,

    /// Address of the gRPC ingest port.
    #[arg(long, env = "WATCHTRAIL_GRPC_ADDR", default_value = "127.0.0.1:7601")]
    pub grpc_addr: SocketAddr,

    /// Address of the HTTP port (/healthz, /metrics).
    #[arg(long, env = "WATCHTRAIL_HTTP_ADDR", default_value = "127.0.0.1:7602")]
    pub http_addr: SocketAddr,

    /// Disk budget of the write-ahead log. Past it (object storage unreachable for long),
    /// ingest answers UNAVAILABLE until flushing catches up. Suffixes K, M, G.
    #[arg(long, env = "WATCHTRAIL_WAL_MAX_BYTES", default_value = "1G", value_parser = parse_bytes)]
    pub wal_max_bytes: u64,

    /// Size at which a WAL segment is closed and a new one started.
    #[arg(long, env = "WATCHTRAIL_WAL_SEGMENT_BYTES", default_value = "64M", value_parser = parse_bytes, hide = true)]
    pub wal_segment_bytes: u64,

    /// Flush a table's buffered rows once they take this much memory.
    #[arg(long, env = "WATCHTRAIL_FLUSH_MAX_BYTES", default_value = "128M", value_parser = parse_bytes)]
    pub flush_max_bytes: u64,

    /// Flush a table's buffered rows once the oldest is this old (e.g. 500ms, 10s, 5m).
    #[arg(long, env = "WATCHTRAIL_FLUSH_MAX_AGE", default_value = "60s", value_parser = parse_duration)]
    pub flush_max_age: Duration,

    /// Flush the largest tables while all buffers together take more than this.
    #[arg(long, env = "WATCHTRAIL_BUFFER_MAX_BYTES", default_value = "256M", value_parser = parse_bytes)]
    pub buffer_max_bytes: u64,

    /// How long an idempotency id is remembered: a retry within it is applied once.
    #[arg(long, env = "WATCHTRAIL_IDEMPOTENCY_WINDOW", default_value = "1h", value_parser = parse_duration)]
    pub idempotency_window: Duration,

    /// How long shutdown waits for buffered rows to commit (the WAL keeps the rest).
    #[arg(long, env = "WATCHTRAIL_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Memory one query may use for joins, sorts and aggregations before it spills or fails.
    #[arg(long, env = "WATCHTRAIL_QUERY_MEMORY_LIMIT", default_value = "1G", value_parser = parse_bytes)]
    pub query_memory_limit: u64,

    /// How long one query may run before it is stopped with an error.
    /// Memory all running queries may hold together (each also within
    /// --query-memory-limit); a query that would cross it fails with 429 / RESOURCE_EXHAUSTED.
    #[arg(long, env = "WATCHTRAIL_QUERY_MEMORY_BUDGET", default_value = "4G", value_parser = parse_bytes)]
    pub query_memory_budget: u64,

    /// Largest answer of one HTTP query once encoded (JSON, CSV, Arrow); past it 413
    /// `QueryResultTooLarge` (use a LIMIT, or the gRPC stream).
    #[arg(long, env = "WATCHTRAIL_QUERY_MAX_ANSWER_BYTES", default_value = "256M", value_parser = parse_bytes)]
    pub query_max_answer_bytes: u64,

    #[arg(long, env = "WATCHTRAIL_QUERY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub query_timeout: Duration,

    /// Queries one tenant may run at a time; more wait up to --query-queue-wait for a slot,
    /// then get RESOURCE_EXHAUSTED (HTTP 429).
    #[arg(long, env = "WATCHTRAIL_TENANT_QUERY_CONCURRENCY", default_value_t = 8)]
    pub tenant_query_concurrency: usize,

    /// How long a query waits for one of its tenant's slots.
    #[arg(long, env = "WATCHTRAIL_QUERY_QUEUE_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub query_queue_wait: Duration,

    /// HTTP connections open at once; past it the server stops accepting until one closes.
    #[arg(long, env = "WATCHTRAIL_MAX_HTTP_CONNECTIONS", default_value_t = 1024)]
    pub max_http_connections: usize,

    /// gRPC connections open at once (one per agent, typically); past it the server stops
    /// accepting until one closes. Keep `ulimit -n` above this plus the HTTP limit.
    #[arg(
        long,
        env = "WATCHTRAIL_MAX_GRPC_CONNECTIONS",
        default_value_t = 10_000
    )]
    pub max_grpc_connections: usize,

    /// Connections one source address may hold open at once on each port; past it its new
    /// connections are closed at once, so one address cannot take every slot. Raise it when a
    /// load balancer or NAT puts many clients behind one address.
    #[arg(
        long,
        env = "WATCHTRAIL_MAX_CONNECTIONS_PER_SOURCE",
        default_value_t = 256
    )]
    pub max_connections_per_source: usize,

    /// HTTP/2 streams one gRPC connection may have open at once.
    #[arg(long, env = "WATCHTRAIL_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,

    /// Threads that run queries (apart from ingest). Default: one per core.
    #[arg(long, env = "WATCHTRAIL_QUERY_THREADS")]
    pub query_threads: Option<usize>,

    /// Late-data delay: an alarm period is evaluated this long after it ends.
    #[arg(long, env = "WATCHTRAIL_ALARM_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub alarm_delay: Duration,

    /// How often alarm, filter and destination definitions are reloaded from object storage
    /// (changes made through this server apply at once).
    #[arg(long, env = "WATCHTRAIL_ALARM_REFRESH", default_value = "10s", value_parser = parse_duration)]
    pub alarm_refresh: Duration,

    /// How long the alarm evaluator's lease lasts without renewal; with several servers, another
    /// one takes over this long after the evaluator dies.
    #[arg(long, env = "WATCHTRAIL_ALARM_LEASE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub alarm_lease_ttl: Duration,

    /// Do not evaluate alarms or send notifications on this server (the API still works).
    #[arg(long, env = "WATCHTRAIL_NO_ALARMS")]
    pub no_alarms: bool,

    /// How long one webhook request may take.
    #[arg(long, env = "WATCHTRAIL_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,

    /// How long a notification is retried before it is given up.
    #[arg(long, env = "WATCHTRAIL_WEBHOOK_MAX_AGE", default_value = "24h", value_parser = parse_duration)]
    pub webhook_max_age: Duration,

    /// First retry delay of a failed webhook; it doubles per attempt up to --webhook-retry-max.
    #[arg(long, env = "WATCHTRAIL_WEBHOOK_RETRY_BASE", default_value = "1s", value_parser = parse_duration)]
    pub webhook_retry_base: Duration,

    /// Longest delay between two attempts of one webhook.
    #[arg(long, env = "WATCHTRAIL_WEBHOOK_RETRY_MAX", default_value = "5m", value_parser = parse_duration)]
    pub webhook_retry_max: Duration,

    /// Private networks webhooks may reach (comma-separated CIDRs, e.g. `10.0.0.0/8,127.0.0.1`).
    /// Without it, destinations on loopback, private, link-local (the cloud metadata address)
    /// and reserved addresses are refused.
    #[arg(long, env = "WATCHTRAIL_WEBHOOK_ALLOW_NETWORKS", default_value = "")]
    pub webhook_allow_networks: String,

    /// Log filter (RUST_LOG syntax).
    #[arg(long, env = "WATCHTRAIL_LOG", default_value = "info")]
    pub log_filter: String,

    /// All-in-one: also run `watchtrail-agent` (from next to this binary) on this host,
    /// shipping its metrics and /var/log to this server; stopped before the server drains.
    #[arg(long, env = "WATCHTRAIL_WITH_AGENT")]
    pub agent: bool,

    /// The agent's configuration for `--agent`; without it one is written next to the WAL
    /// directory (host metrics every 10 s, /var/log/*.log, syslog and messages).
    #[arg(long, requires = "agent")]
    pub agent_config: Option<PathBuf>,

    /// Turn off compaction, retention and vacuum on this server (others sharing the store may
    /// still run them).
    #[arg(long, env = "WATCHTRAIL_NO_COMPACTION")]
    pub no_compaction: bool,

    /// The AWS master key (64 hex digits) that the SigV4 secrets of keys with AWS credentials
    /// derive from; created with mode 0600 when absent. Every server of one store needs the
    /// same file; keep it outside the bucket. Default: `aws-master.key` next to the WAL
    /// directory.
    #[arg(long, env = "WATCHTRAIL_AWS_MASTER_KEY")]
    pub aws_master_key: Option<PathBuf>,

    /// The region AWS-signed calls must be scoped to (what clients pass as `--region`).
    #[arg(long, env = "WATCHTRAIL_AWS_REGION", default_value = "us-east-1")]
    pub aws_region: String,

    /// The Ed25519 key (PKCS#8) that signs audit digests; created with mode 0600 when absent.
    /// Keep it outside the bucket. Default: `audit-signing.key` next to the WAL directory.
    #[arg(long, env = "WATCHTRAIL_AUDIT_SIGNING_KEY")]
    pub audit_signing_key: Option<PathBuf>,

    /// A window's audit digest is written this long after the window ends.
    #[arg(long, env = "WATCHTRAIL_AUDIT_DIGEST_DELAY", default_value = "15m", value_parser = parse_duration)]
    pub audit_digest_delay: Duration,

    /// How often the digester looks for closed windows and late events.
    #[arg(long, env = "WATCHTRAIL_AUDIT_DIGEST_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub audit_digest_interval: Duration,

    /// Do not write audit digests on this server (another server sharing the store may).
    #[arg(long, env = "WATCHTRAIL_NO_AUDIT_DIGESTS")]
    pub no_audit_digests: bool,

    /// How often each table is compacted, expired and vacuumed.
    #[arg(long, env = "WATCHTRAIL_COMPACTION_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub compaction_interval: Duration,

    /// Time window of compaction and retention: files of different windows are never merged,
    /// and retention drops whole windows.
    #[arg(long, env = "WATCHTRAIL_COMPACTION_WINDOW", default_value = "1h", value_parser = parse_duration)]
    pub compaction_window: Duration,

    /// Size of a compacted file; files under half of it are merged.
    #[arg(long, env = "WATCHTRAIL_COMPACTION_TARGET", default_value = "256M", value_parser = parse_bytes)]
    pub compaction_target: u64,

    /// A window is compacted once it ended this long ago (late data has arrived by then).
    #[arg(long, env = "WATCHTRAIL_COMPACTION_SETTLE", default_value = "10m", value_parser = parse_duration)]
    pub compaction_settle: Duration,

    /// Memory one compaction may use before it spills to disk.
    #[arg(long, env = "WATCHTRAIL_COMPACTION_MEMORY", default_value = "512M", value_parser = parse_bytes)]
    pub compaction_memory: u64,

    /// Replaced and expired files are deleted this long after they left the table; longer
    /// than --query-timeout, so no query loses a file it is reading.
    #[arg(long, env = "WATCHTRAIL_VACUUM_GRACE", default_value = "1h", value_parser = parse_duration)]
    pub vacuum_grace: Duration,

    /// Retention of `metrics`: `never`, or days (`15d`, `455d`). CloudWatch keeps metrics
    /// 455 days (15 months).
    #[arg(long, env = "WATCHTRAIL_RETENTION_METRICS", default_value = "455d", value_parser = parse_metric_retention)]
    pub retention_metrics: Retention,

    /// Resolution tiers of `metrics`, as `AGE:PERIOD[:WINDOW]` items: rows older than AGE are
    /// kept as statistic sets (SampleCount, Sum, Minimum, Maximum) of PERIOD, in files of one
    /// WINDOW each (default: --compaction-window). The default is CloudWatch's: one-minute
    /// sets after 3 hours, five-minute sets after 15 days, hourly sets after 63 days. `none`
    /// keeps every point as it came.
    #[arg(long, env = "WATCHTRAIL_METRIC_TIERS", default_value = "3h:1m,15d:5m:1d,63d:1h:1d", value_parser = parse_tiers)]
    pub metric_tiers: TierList,

    /// Retention of `logs`: `never` or one of CloudWatch Logs' values (1d, 3d, 5d, 7d, 14d,
    /// 30d, 60d, 90d, 120d, 150d, 180d, 365d, 400d, 545d, 731d, 1096d, 1827d, ... 3653d).
    #[arg(long, env = "WATCHTRAIL_RETENTION_LOGS", default_value = "never", value_parser = parse_log_retention)]
    pub retention_logs: Retention,

    /// Retention of `audit` (kept apart from logs; CloudTrail Lake's default is to keep
    /// events): `never` or one of the CloudWatch Logs values.
    #[arg(long, env = "WATCHTRAIL_RETENTION_AUDIT", default_value = "never", value_parser = parse_log_retention)]
    pub retention_audit: Retention,

    /// TLS certificate chain (PEM) for both ports; with --tls-key, the server speaks only TLS.
    #[arg(long, env = "WATCHTRAIL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The certificate's private key (PEM).
    #[arg(long, env = "WATCHTRAIL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// A CA (PEM): clients must present a certificate it signed (mutual TLS).
    #[arg(long, env = "WATCHTRAIL_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// `keys`: every call needs an API key (`authorization: Bearer wt_...`) that names its
    /// tenant and role. `none`: no keys, the `x-watchtrail-tenant` header picks the tenant and
    /// every caller may do everything; only for a trusted network.
    #[arg(long, env = "WATCHTRAIL_AUTH", value_enum, default_value = "keys")]
    pub auth: crate::auth::AuthMode,

    /// Do not record control-plane calls, queries, audit imports and refused calls as
    /// CloudTrail events (`eventsource = 'watchtrail'`) in the caller's `audit` table.
    #[arg(long, env = "WATCHTRAIL_NO_SELF_AUDIT")]
    pub no_self_audit: bool,

    /// Where the token of the first admin key is written (mode 0600) when the store has no API
    /// key yet. Default: `admin.key` next to the WAL directory.
    #[arg(long, env = "WATCHTRAIL_ADMIN_KEY_FILE")]
    pub admin_key_file: Option<PathBuf>,

    /// Write the bound gRPC and HTTP addresses to this file, one per line (tests bind port 0).
    #[arg(long, hide = true)]
    pub listen_addr_file: Option<PathBuf>,
}

/// Resolution tiers as written: (age, period, window if given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierList(pub Vec<(Duration, Duration, Option<Duration>)>);

fn parse_tiers(s: &str) -> Result<TierList, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(TierList(Vec::new()));
    }
    s.split(',')
        .enumerate()
        .map(|(i, item)| {
            let parts: Vec<&str> = item.trim().split(':').collect();
            let field = |j: usize| {
                parse_duration(parts[j]).map_err(|e| format!("tier {} (`{item}`): {e}", i + 1))
            };
            match parts.len() {
                2 => Ok((field(0)?, field(1)?, None)),
                3 => Ok((field(0)?, field(1)?, Some(field(2)?))),
                _ => Err(format!(
                    "tier {} (`{item}`) is not AGE:PERIOD or AGE:PERIOD:WINDOW, like 3h:1m",
                    i + 1
                )),
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(TierList)
}

/// How long a table keeps data: `None` is forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

fn parse_days(s: &str) -> Result<Option<u32>, String> {
    if s.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let days = s
        .strip_suffix('d')
        .and_then(|d| d.parse::<u32>().ok())
        .filter(|d| *d > 0)
        .ok_or_else(|| format!("`{s}` is not `never` or a number of days like 30d"))?;
    Ok(Some(days))
}

fn parse_metric_retention(s: &str) -> Result<Retention, String> {
    Ok(Retention(
        parse_days(s)?.map(|d| Duration::from_secs(u64::from(d) * 86_400)),
    ))
}

fn parse_log_retention(s: &str) -> Result<Retention, String> {
    match parse_days(s)? {
        None => Ok(Retention(None)),
        Some(d) if watchtrail_storage::lifecycle::RETENTION_DAYS.contains(&d) => {
            Ok(Retention(Some(Duration::from_secs(u64::from(d) * 86_400))))
        }
        Some(d) => Err(format!(
            "{d} days is not a CloudWatch Logs retention; one of {:?} days, or never",
            watchtrail_storage::lifecycle::RETENTION_DAYS
        )),
    }
}

/// The validated configuration `serve` runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The `--store` URL.
    pub store_url: String,
    /// The write-ahead log.
    pub wal: WalConfig,
    /// Flush thresholds.
    pub flush: FlushConfig,
    /// Shutdown drain limit.
    pub shutdown_timeout: Duration,
    /// Query limits.
    pub engine: watchtrail_query::engine::EngineConfig,
    /// Threads of the query runtime.
    pub query_threads: usize,
    /// The alarm evaluator and the notification outbox.
    pub alarms: crate::alarms::AlarmConfig,
    /// Compaction, retention and vacuum.
    pub lifecycle: crate::lifecycle::LifecycleConfig,
    /// API keys.
    pub auth: crate::auth::AuthConfig,
    /// TLS, when on.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Whether Watchtrail's own calls are recorded in the audit tables.
    pub self_audit: bool,
    /// Queries one tenant may run at a time.
    pub tenant_query_concurrency: usize,
    /// How long a query waits for a slot.
    pub query_queue_wait: Duration,
    /// HTTP/2 streams per gRPC connection.
    pub max_concurrent_streams: u32,
    /// HTTP connections open at once.
    pub max_http_connections: usize,
    /// gRPC connections open at once.
    pub max_grpc_connections: usize,
    /// Largest encoded HTTP query answer.
    pub query_max_answer_bytes: usize,
    /// Connections one source address may hold on each port.
    pub max_connections_per_source: usize,
    /// Signed audit digests.
    pub digests: crate::digests::DigestConfig,
    /// `--aws-master-key` (resolved).
    pub aws_master_key: PathBuf,
    /// `--aws-region`.
    pub aws_region: String,
}

/// The directory of the server's local files besides the WAL (the first admin key, the
/// all-in-one agent's state): the WAL directory's parent, or the WAL directory itself when it
/// has none.
pub fn data_dir(wal_dir: &std::path::Path) -> PathBuf {
    wal_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| wal_dir.to_path_buf(), std::path::Path::to_path_buf)
}

impl ServerArgs {
    /// Checks the flags and builds the typed configuration.
    ///
    /// # Errors
    /// A flag combination that cannot work, named.
    pub fn validate(&self) -> Result<ServerConfig, String> {
        if self.wal_segment_bytes == 0 || self.wal_segment_bytes > self.wal_max_bytes {
            return Err("--wal-segment-bytes must be between 1 and --wal-max-bytes".into());
        }
        if self.flush_max_age.is_zero() {
            return Err("--flush-max-age must be greater than zero".into());
        }
        if self.query_timeout.is_zero() {
            return Err("--query-timeout must be greater than zero".into());
        }
        if self.tenant_query_concurrency == 0
            || self.max_concurrent_streams == 0
            || self.max_http_connections == 0
            || self.max_grpc_connections == 0
            || self.max_connections_per_source == 0
        {
            return Err(
                "--tenant-query-concurrency, --max-concurrent-streams, --max-http-connections, --max-grpc-connections and --max-connections-per-source must be at least 1".into(),
            );
        }
        if self.query_memory_limit < (1 << 20) {
            return Err("--query-memory-limit must be at least 1M".into());
        }
        if self.query_memory_budget < self.query_memory_limit {
            return Err(format!(
                "--query-memory-budget ({}) must be at least --query-memory-limit ({}): it is \
                 what all queries together may hold",
                self.query_memory_budget, self.query_memory_limit
            ));
        }
        if self.audit_digest_interval.is_zero() {
            return Err("--audit-digest-interval must be greater than zero".into());
        }
        if self.query_max_answer_bytes < 1024 {
            return Err("--query-max-answer-bytes must be at least 1K".into());
        }
        if self.alarm_refresh.is_zero() || self.alarm_lease_ttl < Duration::from_secs(2) {
            return Err(
                "--alarm-refresh must be positive and --alarm-lease-ttl at least 2s".into(),
            );
        }
        if self.webhook_retry_base.is_zero() || self.webhook_retry_max < self.webhook_retry_base {
            return Err(
                "--webhook-retry-base must be positive and at most --webhook-retry-max".into(),
            );
        }
        if self.compaction_interval.is_zero() || self.compaction_window < Duration::from_secs(60) {
            return Err(
                "--compaction-interval must be positive and --compaction-window at least 1m".into(),
            );
        }
        if self.compaction_target < (1 << 20) || self.compaction_memory < (16 << 20) {
            return Err(
                "--compaction-target must be at least 1M and --compaction-memory at least 16M"
                    .into(),
            );
        }
        if self.vacuum_grace <= self.query_timeout {
            return Err(format!(
                "--vacuum-grace ({:?}) must be longer than --query-timeout ({:?}), or a query could lose a file it is reading",
                self.vacuum_grace, self.query_timeout
            ));
        }
        let tiers: Vec<watchtrail_storage::lifecycle::Tier> = self
            .metric_tiers
            .0
            .iter()
            .map(
                |(after, period, window)| watchtrail_storage::lifecycle::Tier {
                    after: *after,
                    period: *period,
                    window: window.unwrap_or(self.compaction_window),
                },
            )
            .collect();
        watchtrail_storage::lifecycle::Tier::validate(&tiers, self.compaction_window)
            .map_err(|e| format!("--metric-tiers: {e}"))?;
        if let (Some(last), Some(keep)) = (tiers.last(), self.retention_metrics.0)
            && keep <= last.after
        {
            return Err(format!(
                "--retention-metrics ({} days) must be longer than the age of the last tier ({:?})",
                keep.as_secs() / 86_400,
                last.after
            ));
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let query_threads = self.query_threads.unwrap_or(cores).max(1);
        Ok(ServerConfig {
            engine: watchtrail_query::engine::EngineConfig {
                memory_limit: self.query_memory_limit as usize,
                timeout: self.query_timeout,
                target_partitions: query_threads,
                total_memory_limit: Some(self.query_memory_budget as usize),
            },
            query_max_answer_bytes: self.query_max_answer_bytes as usize,
            query_threads,
            store_url: self.store.store.clone(),
            wal: WalConfig {
                dir: self.wal_dir.clone(),
                max_bytes: self.wal_max_bytes,
                segment_bytes: self.wal_segment_bytes,
                idempotency_window: self.idempotency_window,
                fsync: true,
            },
            flush: FlushConfig {
                max_bytes: self.flush_max_bytes as usize,
                max_age: self.flush_max_age,
                total_max_bytes: self.buffer_max_bytes as usize,
            },
            shutdown_timeout: self.shutdown_timeout,
            self_audit: !self.no_self_audit,
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(crate::tls::TlsConfig {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.tls_client_ca.clone(),
                }),
                _ => None,
            },
            tenant_query_concurrency: self.tenant_query_concurrency,
            query_queue_wait: self.query_queue_wait,
            max_concurrent_streams: self.max_concurrent_streams,
            max_http_connections: self.max_http_connections,
            max_grpc_connections: self.max_grpc_connections,
            max_connections_per_source: self.max_connections_per_source,
            auth: crate::auth::AuthConfig {
                mode: self.auth,
                admin_key_file: self
                    .admin_key_file
                    .clone()
                    .unwrap_or_else(|| data_dir(&self.wal_dir).join("admin.key")),
                agent_key_file: (self.agent && self.auth == crate::auth::AuthMode::Keys)
                    .then(|| data_dir(&self.wal_dir).join("agent.key")),
                ready: tokio_util::sync::CancellationToken::new(),
            },
            alarms: crate::alarms::AlarmConfig {
                enabled: !self.no_alarms,
                delay: self.alarm_delay,
                refresh: self.alarm_refresh,
                lease_ttl: self.alarm_lease_ttl,
                webhook_timeout: self.webhook_timeout,
                webhook_max_age: self.webhook_max_age,
                retry_base: self.webhook_retry_base,
                retry_max: self.webhook_retry_max,
                egress: crate::alarms::egress::Egress::parse(&self.webhook_allow_networks)
                    .map_err(|e| format!("--webhook-allow-networks: {e}"))?,
            },
            aws_master_key: self
                .aws_master_key
                .clone()
                .unwrap_or_else(|| data_dir(&self.wal_dir).join("aws-master.key")),
            aws_region: {
                let r = self.aws_region.trim();
                if r.is_empty()
                    || r.len() > 64
                    || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Err(format!(
                        "--aws-region: `{r}` is not a region name such as us-east-1"
                    ));
                }
                r.to_string()
            },
            digests: crate::digests::DigestConfig {
                enabled: !self.no_audit_digests,
                key_file: self
                    .audit_signing_key
                    .clone()
                    .unwrap_or_else(|| data_dir(&self.wal_dir).join("audit-signing.key")),
                delay: self.audit_digest_delay,
                interval: self.audit_digest_interval,
                retention: self.retention_audit.0,
            },
            lifecycle: crate::lifecycle::LifecycleConfig {
                enabled: !self.no_compaction,
                interval: self.compaction_interval,
                policy: watchtrail_storage::lifecycle::Policy {
                    window: self.compaction_window,
                    target_bytes: self.compaction_target,
                    settle: self.compaction_settle,
                    memory_limit: self.compaction_memory as usize,
                    grace: self.vacuum_grace,
                    retention: [
                        (TableKind::Metrics, self.retention_metrics.0),
                        (TableKind::Logs, self.retention_logs.0),
                        (TableKind::Audit, self.retention_audit.0),
                    ]
                    .into_iter()
                    .filter_map(|(k, r)| Some((k, r?)))
                    .collect(),
                    tiers,
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use watchtrail_storage::lifecycle::Tier;

    use super::*;

    fn config(args: &[&str]) -> Result<ServerConfig, String> {
        let argv = std::iter::once("watchtrail-server").chain(args.iter().copied());
        ServerArgs::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .validate()
    }

    #[test]
    fn metric_tiers_default_to_cloudwatch_and_are_checked() {
        let c = config(&[]).expect("defaults");
        let hour = Duration::from_secs(3600);
        assert_eq!(c.lifecycle.policy.tiers, Tier::cloudwatch(hour));
        assert_eq!(
            c.lifecycle.policy.retention.get(&TableKind::Metrics),
            Some(&Duration::from_secs(455 * 86_400))
        );
        let none = config(&["--metric-tiers", "none"]).expect("none");
        assert!(none.lifecycle.policy.tiers.is_empty());
        let custom = config(&["--metric-tiers", "1h:1m,2d:10m:1d"]).expect("custom");
        assert_eq!(
            custom.lifecycle.policy.tiers[1].window,
            Duration::from_secs(86_400)
        );
        assert_eq!(custom.lifecycle.policy.tiers[0].window, hour);
        for (bad, why) in [
            ("3h", "not AGE:PERIOD"),
            ("3h:7m", "divide the window"),
            ("1d:5m,3h:1m", "grow"),
            ("3h:x", "tier 1"),
        ] {
            let e = config(&["--metric-tiers", bad]).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = config(&["--retention-metrics", "30d"]).expect_err("shorter than the last tier");
        assert!(e.contains("--retention-metrics"), "{e}");
        assert!(config(&["--retention-metrics", "30d", "--metric-tiers", "3h:1m"]).is_ok());
    }
}
