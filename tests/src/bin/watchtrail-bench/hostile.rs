//! `watchtrail-bench hostile`: another tenant's `SELECT 1` latency while one tenant runs
//! hostile queries (CPU-heavy scalars, huge cross joins, caller-sized functions) as fast as its
//! slots allow. Prints the latency with and without the hostile load.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The hostile statements, taken in turn.
const HOSTILE: &[&str] = &[
    "SELECT sum(levenshtein(concat(repeat('a', 9000), CAST(value AS VARCHAR)), repeat('b', 9000))) FROM range(1, 1000000)",
    "SELECT count(*) FROM range(1, 100000) a CROSS JOIN range(1, 100000) b CROSS JOIN range(1, 1000) c",
    "SELECT length(repeat(arrow_cast('x', 'LargeUtf8'), 100000000000))",
    "SELECT max(length(regexp_replace(repeat('ab', 50000), '(a|b)+', repeat('c', 100), 'g'))) FROM range(1, 100000)",
];

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Hostile queries running at once.
    #[arg(long, default_value_t = 8)]
    pub(crate) hostile: usize,
    /// How long the hostile load runs, in seconds.
    #[arg(long, default_value_t = 60)]
    pub(crate) seconds: u64,
    /// The server's `--query-timeout`, in seconds.
    #[arg(long = "query-timeout", default_value_t = 10)]
    pub(crate) timeout_s: u64,
}

/// Sends one query with `key`; answers the HTTP status.
async fn query(addr: &str, key: &str, sql: &str) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = serde_json::json!({ "sql": sql }).to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!(
            "POST /v1/query HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    Ok(String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

fn make_key(store: &Path, tenant: &str) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let cli = exe.parent().context("exe dir")?.join("watchtrail");
    let out = Command::new(&cli)
        .args(["keys", "create", "--store"])
        .arg(format!("file://{}", store.display()))
        .args(["--tenant", tenant, "--role", "read"])
        .output()
        .with_context(|| {
            format!(
                "{} (cargo build --release -p watchtrail-cli)",
                cli.display()
            )
        })?;
    if !out.status.success() {
        bail!("keys create: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `SELECT 1` latencies (ms) of `key` for `d`, one query at a time every 50 ms; and how many
/// were not answered 200.
async fn probe(addr: &str, key: &str, d: Duration) -> (Vec<f64>, u64) {
    let mut lat = Vec::new();
    let mut failed = 0;
    let end = Instant::now() + d;
    while Instant::now() < end {
        let t = Instant::now();
        match query(addr, key, "SELECT 1 AS one").await {
            Ok(200) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
            _ => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lat.sort_by(f64::total_cmp);
    (lat, failed)
}

fn report(name: &str, lat: &[f64], failed: u64) {
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {failed} |",
        lat.len(),
        percentile(lat, 0.5),
        percentile(lat, 0.95),
        percentile(lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
    );
}

pub(crate) async fn bench_hostile(o: Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let timeout = format!("{}s", o.timeout_s);
    let server = super::start_server(dir.path(), &["--query-timeout", &timeout])?;
    let pid = server.child.id();
    let good = make_key(&server.store, "good")?;
    let evil = make_key(&server.store, "evil")?;
    let addr = server.http.clone();
    println!(
        "hostile tenant: {} queries at once for {} s (--query-timeout {timeout}); other tenant: SELECT 1 every 50 ms\n",
        o.hostile, o.seconds
    );
    println!(
        "| phase | answered | p50 ms | p95 ms | p99 ms | max ms | not 200 |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let (lat, failed) = probe(&addr, &good, Duration::from_secs(5)).await;
    report("idle", &lat, failed);

    let stop = Arc::new(AtomicBool::new(false));
    let statuses: Arc<[AtomicU64; 6]> = Arc::new(Default::default());
    let mut hostile = Vec::new();
    for i in 0..o.hostile {
        let (stop, statuses, addr, evil) = (
            Arc::clone(&stop),
            Arc::clone(&statuses),
            addr.clone(),
            evil.clone(),
        );
        hostile.push(tokio::spawn(async move {
            let mut n = i;
            while !stop.load(Ordering::Relaxed) {
                let code = query(&addr, &evil, HOSTILE[n % HOSTILE.len()])
                    .await
                    .unwrap_or(0);
                let slot = match code {
                    200 => 0,
                    400 => 1,
                    429 => 2,
                    504 => 3,
                    0 => 5,
                    _ => 4,
                };
                statuses[slot].fetch_add(1, Ordering::Relaxed);
                n += o.hostile;
            }
        }));
    }
    let cpu0 = super::cpu_seconds(pid);
    let started = Instant::now();
    let (lat, failed) = probe(&addr, &good, Duration::from_secs(o.seconds)).await;
    let cpu = (super::cpu_seconds(pid) - cpu0) / started.elapsed().as_secs_f64();
    report("under hostile load", &lat, failed);
    stop.store(true, Ordering::Relaxed);
    for h in hostile {
        let _ = h.await;
    }
    let (lat, failed) = probe(&addr, &good, Duration::from_secs(5)).await;
    report("after", &lat, failed);
    let s: Vec<u64> = statuses.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    println!(
        "\nhostile answers: {} ok, {} 400, {} 429, {} 504, {} other, {} failed to connect; server CPU {:.2} cores under load",
        s[0], s[1], s[2], s[3], s[4], s[5], cpu
    );
    let peak = super::stop_server(server)?;
    println!("server peak RSS {peak:.0} MiB; it stayed up");
    Ok(())
}
