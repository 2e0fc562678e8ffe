//! Server flags (each with a `WATCHTRAIL_*` twin) and the validated [`ServerConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use watchtrail_query::store::ObjectStoreArgs;

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
        Ok(ServerConfig {
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

/// Parses `512`, `64K`, `128M`, `1G` (powers of 1024).
///
/// # Errors
/// Anything else.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{s}` is not a size like 512, 64K, 128M or 1G"))
}

/// Parses `250ms`, `10s`, `5m`, `1h`.
///
/// # Errors
/// Anything else.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("`{s}` is not a duration like 250ms, 10s, 5m or 1h");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let n: u64 = s[..split].parse().map_err(|_| bad())?;
    match &s[split..] {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("512"), Ok(512));
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }
}
