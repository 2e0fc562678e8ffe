//! Server flags (each with a `WATCHTRAIL_*` twin) and the validated [`ServerConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use watchtrail_query::store::ObjectStoreArgs;
pub use watchtrail_query::units::{parse_bytes, parse_duration};

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
    #[arg(long, env = "WATCHTRAIL_QUERY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub query_timeout: Duration,

    /// Threads that run queries (apart from ingest). Default: one per core.
    #[arg(long, env = "WATCHTRAIL_QUERY_THREADS")]
    pub query_threads: Option<usize>,

    /// Log filter (RUST_LOG syntax).
    #[arg(long, env = "WATCHTRAIL_LOG", default_value = "info")]
    pub log_filter: String,

    /// Write the bound gRPC and HTTP addresses to this file, one per line (tests bind port 0).
    #[arg(long, hide = true)]
    pub listen_addr_file: Option<PathBuf>,
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
        if self.query_memory_limit < (1 << 20) {
            return Err("--query-memory-limit must be at least 1M".into());
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let query_threads = self.query_threads.unwrap_or(cores).max(1);
        Ok(ServerConfig {
            engine: watchtrail_query::engine::EngineConfig {
                memory_limit: self.query_memory_limit as usize,
                timeout: self.query_timeout,
                target_partitions: query_threads,
            },
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
        })
    }
}
