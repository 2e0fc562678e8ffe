//! `watchtrail-bench`: ingest and query benchmarks against a release `watchtrail-server` it starts itself,
//! with VictoriaMetrics and `zstd` measured in the same run as peers.
//!
//! ```text
//! cargo build --release -p watchtrail-server -p watchtrail-e2e --bin watchtrail-bench
//! target/release/watchtrail-bench metrics --hosts 100 --hours 24
//! target/release/watchtrail-bench logs --loghub ../shared/testdata/loghub --megabytes 256
//! target/release/watchtrail-bench query --hosts 100 --hours 72 --audit-events 10000000
//! target/release/watchtrail-bench alarms --rounds 5 --alarms 1000
//! target/release/watchtrail-bench hostile --hostile 8 --seconds 60
//! ```

mod agent;
mod alarms;
mod compaction;
mod digests;
mod hostile;
mod query;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use watchtrail_proto::tonic;
use watchtrail_proto::tonic::codec::CompressionEncoding;
use watchtrail_proto::tonic::transport::Channel;
use watchtrail_proto::v1::ingest_service_client::IngestServiceClient;
use watchtrail_proto::v1::{
    Dimension, LogEvent, MetricSeries, PutLogEventsRequest, PutMetricDataRequest,
};

const REGIONS: [&str; 9] = [
    "us-east-1",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "sa-east-1",
];
const FIELDS: [&str; 10] = [
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_irq",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
];
const TICK_MS: i64 = 10_000;
/// Ticks per series per request (keeps a request under the 1 MB limit with 500 series).
const TICKS_PER_REQUEST: usize = 60;
const HOSTS_PER_REQUEST: usize = 50;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// An approximately normal step (sum of uniforms).
    fn step(&mut self) -> f64 {
        (0..4)
            .map(|_| (self.next() % 1_000_000) as f64 / 1_000_000.0)
            .sum::<f64>()
            - 2.0
    }
}

struct Host {
    tags: Vec<(String, String)>,
    values: [f64; 10],
}

fn hosts(n: usize, rng: &mut Rng) -> Vec<Host> {
    (0..n)
        .map(|i| {
            let region = REGIONS[rng.below(9) as usize];
            let tags = vec![
                ("hostname".into(), format!("host_{i}")),
                ("region".into(), region.into()),
                (
                    "datacenter".into(),
                    format!("{region}{}", ["a", "b", "c"][rng.below(3) as usize]),
                ),
                ("rack".into(), rng.below(100).to_string()),
                (
                    "os".into(),
                    ["Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"][rng.below(3) as usize].into(),
                ),
                ("arch".into(), ["x64", "x86"][rng.below(2) as usize].into()),
                (
                    "team".into(),
                    ["SF", "NYC", "LON", "CHI"][rng.below(4) as usize].into(),
                ),
                ("service".into(), rng.below(20).to_string()),
                ("service_version".into(), rng.below(2).to_string()),
                (
                    "service_environment".into(),
                    ["production", "staging", "test"][rng.below(3) as usize].into(),
                ),
            ];
            let mut values = [0.0; 10];
            for v in &mut values {
                *v = rng.below(101) as f64;
            }
            Host { tags, values }
        })
        .collect()
}

/// The whole data set as requests plus, with `lines`, the same points as Influx line protocol in
/// the same order. The data ends just before `end` (a multiple of 10 s, in milliseconds).
fn tsbs(
    hosts_n: usize,
    hours: u64,
    end: i64,
    lines_too: bool,
    (ticks_per_request, hosts_per_request): (usize, usize),
) -> (Vec<PutMetricDataRequest>, Vec<String>, u64) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut hs = hosts(hosts_n, &mut rng);
    let ticks = (hours * 360) as usize;
    let start = end - ticks as i64 * TICK_MS;
    let mut requests = Vec::new();
    let mut lines = Vec::new();
    let mut points = 0u64;
    for t0 in (0..ticks).step_by(ticks_per_request) {
        let t1 = (t0 + ticks_per_request).min(ticks);
        for group in (0..hosts_n).step_by(hosts_per_request) {
            let mut series = Vec::new();
            let mut body = String::new();
            for h in &mut hs[group..(group + hosts_per_request).min(hosts_n)] {
                let mut per_field: Vec<(Vec<i64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); 10];
                let tagstr: String = h.tags.iter().map(|(k, v)| format!(",{k}={v}")).collect();
                for t in t0..t1 {
                    let ts = start + t as i64 * TICK_MS;
                    let mut fields = Vec::new();
                    for (f, v) in h.values.iter_mut().enumerate() {
                        *v = (*v + rng.step()).clamp(0.0, 100.0);
                        let iv = v.trunc();
                        per_field[f].0.push(ts);
                        per_field[f].1.push(iv);
                        if lines_too {
                            fields.push(format!("{}={iv}", FIELDS[f]));
                        }
                    }
                    if lines_too {
                        body.push_str(&format!(
                            "cpu{tagstr} {} {}\n",
                            fields.join(","),
                            ts * 1_000_000
                        ));
                    }
                }
                for (f, (ts, vs)) in per_field.into_iter().enumerate() {
                    points += vs.len() as u64;
                    series.push(MetricSeries {
                        namespace: "TSBS".into(),
                        metric_name: FIELDS[f].into(),
                        dimensions: h
                            .tags
                            .iter()
                            .map(|(k, v)| Dimension {
                                name: k.clone(),
                                value: v.clone(),
                            })
                            .collect(),
                        unit: "Percent".into(),
                        storage_resolution: 60,
                        timestamps_ms: ts,
                        values: vs,
                        statistic_points: vec![],
                    });
                }
            }
            requests.push(PutMetricDataRequest {
                idempotency_id: format!("tsbs-{t0}-{group}"),
                metric_data: vec![],
                series,
            });
            if lines_too {
                lines.push(body);
            }
        }
    }
    (requests, lines, points)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Every file under `dir`, recursively, whose name ends with `suffix`.
fn files_under(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                files.push(p);
            }
        }
    }
    files
}

fn dir_bytes(dir: &Path, suffix: &str) -> u64 {
    files_under(dir, suffix)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Peak resident set (VmHWM) of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            Some((rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

/// The admin key of the server the bench runs now (one server at a time), read from the file
/// the server writes at its first start.
static KEY: std::sync::RwLock<String> = std::sync::RwLock::new(String::new());

/// `Bearer <key>` of the current server.
fn bearer() -> String {
    format!(
        "Bearer {}",
        KEY.read().map(|k| k.clone()).unwrap_or_default()
    )
}

/// Adds the current server's key to every call of a client.
#[derive(Clone)]
struct Auth(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

type Ingest = IngestServiceClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

struct Server {
    child: Child,
    grpc: String,
    http: String,
    store: PathBuf,
}

fn start_server(dir: &Path, extra: &[&str]) -> anyhow::Result<Server> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("exe dir")?.join("watchtrail-server");
    if !bin.exists() {
        bail!(
            "{} is missing: cargo build --release -p watchtrail-server",
            bin.display()
        );
    }
    std::fs::create_dir_all(dir)?;
    let addr_file = dir.join("addr");
    // A server started before in the same directory left its (now stale) addresses here.
    let _ = std::fs::remove_file(&addr_file);
    let store = dir.join("store");
    let child = Command::new(bin)
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .arg("--wal-dir")
        .arg(dir.join("wal"))
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--log-filter",
            "warn",
        ])
        .arg("--listen-addr-file")
        .arg(&addr_file)
        .args(extra)
        .stdin(Stdio::null())
        .spawn()
        .inspect(crate::track)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The addresses are written as soon as the ports are bound; the first admin key a
        // moment later, once the key store has been checked.
        if let Ok(t) = std::fs::read_to_string(&addr_file)
            && let [g, h, ..] = t.lines().collect::<Vec<_>>()[..]
            && let Ok(key) = std::fs::read_to_string(dir.join("admin.key"))
            && key.trim().len() > 3
        {
            if let Ok(mut k) = KEY.write() {
                *k = key.trim().to_string();
            }
            return Ok(Server {
                child,
                grpc: format!("http://{g}"),
                http: h.to_string(),
                store,
            });
        }
        if Instant::now() > deadline {
            bail!("server did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Server {
    /// A server the benchmark did not stop (it failed first) is killed, never left running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether this is a smoke run (`--smoke`).
static SMOKE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the peer program `name` can be run: true when it is on the PATH; in a smoke run a
/// missing peer is skipped with a printed reason, in a real run it is an error.
pub(crate) fn peer(name: &str, install: &str) -> anyhow::Result<bool> {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name)).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    });
    if found {
        Ok(true)
    } else if SMOKE.load(std::sync::atomic::Ordering::Relaxed) {
        println!("smoke run: skipping {name}, which is not installed ({install})");
        Ok(false)
    } else {
        bail!("{name} is not installed ({install}); it is this benchmark's peer")
    }
}

/// Whether `python` can import `module` (DuckDB, the query benchmark's peer); a smoke run skips
/// a missing one with a printed reason, a real run fails.
pub(crate) fn python_peer(python: &str, module: &str) -> anyhow::Result<bool> {
    let ok = Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(true)
    } else if SMOKE.load(std::sync::atomic::Ordering::Relaxed) {
        println!(
            "smoke run: skipping {module}, which {python} cannot import (scripts/bench installs it)"
        );
        Ok(false)
    } else {
        bail!(
            "{python} cannot import {module} (scripts/bench installs it); it is this benchmark's peer"
        )
    }
}

/// Every process a benchmark started, by pid: stopped when the benchmark is interrupted.
static CHILDREN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Records a process the benchmark started (`.spawn().inspect(crate::track)`).
pub(crate) fn track(child: &Child) {
    if let Ok(mut c) = CHILDREN.lock() {
        c.push(child.id());
    }
}

/// Sends SIGTERM to every tracked process that is still this benchmark's child (a pid whose
/// parent is not us was reaped and may belong to someone else now).
fn stop_children() {
    let me = std::process::id().to_string();
    let pids = CHILDREN.lock().map(|c| c.clone()).unwrap_or_default();
    for pid in pids {
        let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.to_string();
                rest.split_whitespace().nth(1).map(str::to_string)
            });
        if parent.as_deref() == Some(me.as_str()) {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

/// Stops the server with SIGTERM and waits for its drain; answers its peak RSS in MiB over its
/// whole life, the drain included (sampled until it exits).
fn stop_server(mut s: Server) -> anyhow::Result<f64> {
    let pid = s.child.id();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let mut peak = peak_rss_mib(pid);
    let status = loop {
        if let Some(status) = s.child.try_wait()? {
            break status;
        }
        peak = peak.max(peak_rss_mib(pid));
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        bail!("server exited with {status}");
    }
    Ok(peak)
}

/// Compressed bytes per column path over every Parquet file under `dir`, largest first, with
/// the total row count.
fn column_sizes(dir: &Path) -> anyhow::Result<(u64, Vec<(String, u64)>)> {
    use watchtrail_storage::deltalake::parquet::file::reader::{
        FileReader as _, SerializedFileReader,
    };
    let files = files_under(dir, ".parquet");
    let mut rows = 0u64;
    let mut sizes: std::collections::BTreeMap<String, u64> = Default::default();
    for f in files {
        let reader = SerializedFileReader::new(std::fs::File::open(&f)?)?;
        let meta = reader.metadata();
        rows += meta.file_metadata().num_rows() as u64;
        for rg in meta.row_groups() {
            for c in rg.columns() {
                *sizes.entry(c.column_path().string()).or_default() += c.compressed_size() as u64;
            }
        }
    }
    let mut sizes: Vec<(String, u64)> = sizes.into_iter().collect();
    sizes.sort_by_key(|s| std::cmp::Reverse(s.1));
    Ok((rows, sizes))
}

fn print_column_sizes(dir: &Path) -> anyhow::Result<()> {
    let (rows, sizes) = column_sizes(dir)?;
    println!("\n| column | bytes | bytes/row |\n|---|---:|---:|");
    for (name, bytes) in sizes {
        println!(
            "| `{name}` | {bytes} | {:.3} |",
            bytes as f64 / rows.max(1) as f64
        );
    }
    Ok(())
}

/// UNAVAILABLE answers retried by [`retrying`], for the report.
static UNAVAILABLE_RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sends `call` again while the server answers UNAVAILABLE, with backoff from 20 ms to 1 s:
/// it says so while its write-ahead log is at its disk budget, and a client is meant to retry
/// the same request (the same idempotency id, so nothing is applied twice).
pub(crate) async fn retrying<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut wait = Duration::from_millis(20);
    let started = Instant::now();
    loop {
        match call().await {
            // A WAL at its budget drains as the server flushes; one that stays there for a
            // minute will not, and the benchmark says so instead of waiting forever.
            Err(s)
                if s.code() == tonic::Code::Unavailable
                    && started.elapsed() < Duration::from_secs(60) =>
            {
                UNAVAILABLE_RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            Err(s) if s.code() == tonic::Code::Unavailable => {
                return Err(tonic::Status::unavailable(format!(
                    "refused as unavailable for a minute (a WAL at its budget that does not drain?): {}",
                    s.message()
                )));
            }
            other => return other,
        }
    }
}

/// Prints (to stderr) how many requests were retried after UNAVAILABLE, if any.
pub(crate) fn report_retries(what: &str) {
    let n = UNAVAILABLE_RETRIES.swap(0, std::sync::atomic::Ordering::Relaxed);
    if n > 0 {
        eprintln!("{what}: {n} requests answered UNAVAILABLE (WAL at its budget) and were retried");
    }
}

/// Whether ingest requests go zstd-compressed (`--zstd`). Off by default: the peers are fed
/// uncompressed over loopback too, and on 2 cores the client's compression and the server's
/// decompression take CPU from the system under test.
static ZSTD_REQUESTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

async fn client(url: &str) -> anyhow::Result<Ingest> {
    let auth = Auth(bearer().parse().context("key header")?);
    for _ in 0..100 {
        if let Ok(ch) = Channel::from_shared(url.to_string())?.connect().await {
            let c =
                IngestServiceClient::with_interceptor(ch, auth).max_decoding_message_size(16 << 20);
            return Ok(
                if ZSTD_REQUESTS.load(std::sync::atomic::Ordering::Relaxed) {
                    c.send_compressed(CompressionEncoding::Zstd)
                } else {
                    c
                },
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("cannot connect to {url}")
}

async fn http_post(addr: &str, path: &str, body: &[u8]) -> anyhow::Result<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", bearer(), body.len()).as_bytes()).await?;
    s.write_all(body).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    Ok(text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

async fn bench_metrics(hosts_n: usize, hours: u64, concurrency: usize) -> anyhow::Result<()> {
    eprintln!("generating TSBS cpu-only data: {hosts_n} hosts, {hours} h at 10 s");
    let (requests, lines, points) = tsbs(
        hosts_n,
        hours,
        now_ms() / TICK_MS * TICK_MS,
        true,
        (TICKS_PER_REQUEST, HOSTS_PER_REQUEST),
    );
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path(), &[])?;
    let pid = server.child.id();
    let c = client(&server.grpc).await?;
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    let mut results = futures::stream::iter(requests.into_iter().map(|r| {
        let c = c.clone();
        async move {
            retrying(|| {
                let (mut c, r) = (c.clone(), r.clone());
                async move { c.put_metric_data(r).await }
            })
            .await
            .map(|r| r.into_inner().accepted)
        }
    }))
    .buffer_unordered(concurrency);
    let mut acked = 0u64;
    while let Some(r) = results.next().await {
        acked += r.context("put_metric_data")?;
    }
    let ingest = started.elapsed();
    report_retries("metrics ingest");
    let cpu = cpu_seconds(pid) - cpu0;
    let flush_started = Instant::now();
    let store = server.store.clone();
    let rss = stop_server(server)?;
    let drain = flush_started.elapsed();
    let bytes = dir_bytes(&store, ".parquet");
    // Sustained: every point acknowledged *and* committed to the table, over the whole time.
    println!(
        "| Watchtrail | {points} | {:.0} | {:.2} | {:.0} | {:.1} | {:.3} | {rss:.0} | {:.1} |",
        acked as f64 / ingest.as_secs_f64(),
        ingest.as_secs_f64(),
        points as f64 / (ingest + drain).as_secs_f64(),
        drain.as_secs_f64(),
        bytes as f64 / points as f64,
        cpu,
    );
    print_column_sizes(&store)?;
    if acked != points {
        bail!("acked {acked} of {points}");
    }

    if !peer("victoria-metrics", "apt-get install victoria-metrics")? {
        return Ok(());
    }
    // VictoriaMetrics, fed the same points as Influx line protocol by one sequential client.
    let vm_dir = tempfile::tempdir()?;
    let port = {
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut vm = Command::new("victoria-metrics")
        .arg(format!("-storageDataPath={}", vm_dir.path().display()))
        .args([
            "-retentionPeriod=100y",
            &format!("-httpListenAddr={addr}"),
            "-loggerLevel=ERROR",
        ])
        .stdin(Stdio::null())
        .spawn()
        .inspect(crate::track)
        .context("start victoria-metrics (apt-get install victoria-metrics)")?;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let vm_pid = vm.id();
    let cpu0 = cpu_seconds(vm_pid);
    let started = Instant::now();
    for body in &lines {
        let status = http_post(&addr, "/write", body.as_bytes()).await?;
        if status / 100 != 2 {
            bail!("victoria-metrics answered {status}");
        }
    }
    let vm_ingest = started.elapsed();
    let vm_cpu = cpu_seconds(vm_pid) - cpu0;
    let _ = http_post(&addr, "/internal/force_flush", b"").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let vm_rss = peak_rss_mib(vm_pid);
    let vm_bytes = dir_bytes(vm_dir.path(), "");
    let _ = vm.kill();
    let _ = vm.wait();
    println!(
        "| VictoriaMetrics 1.79 | {points} | {:.0} | {:.2} | {:.3} | {vm_rss:.0} | {vm_cpu:.1} | whole data dir |",
        points as f64 / vm_ingest.as_secs_f64(),
        vm_ingest.as_secs_f64(),
        vm_bytes as f64 / points as f64
    );
    Ok(())
}

fn loghub_lines(root: &Path, megabytes: usize) -> anyhow::Result<Vec<String>> {
    let mut base = Vec::new();
    if !root.is_dir() && SMOKE.load(std::sync::atomic::Ordering::Relaxed) {
        println!(
            "smoke run: no loghub corpus at {}; sending generated lines",
            root.display()
        );
        base = (0..5_000)
            .map(|i| {
                format!(
                    "2026-12-03T10:{:02}:{:02}Z INFO worker-{} request id={i} path=/api/v1/items/{} status={} ms={}",
                    i / 60 % 60,
                    i % 60,
                    i % 7,
                    i % 97,
                    [200, 200, 200, 404, 500][i % 5],
                    i % 250
                )
            })
            .collect();
    }
    let entries = if base.is_empty() {
        std::fs::read_dir(root)
            .with_context(|| format!("read {}", root.display()))?
            .collect::<Vec<_>>()
    } else {
        Vec::new()
    };
    for e in entries {
        let dir = e?.path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir)? {
            let p = f?.path();
            if p.to_string_lossy().ends_with(".log") {
                let bytes = std::fs::read(&p)?;
                base.extend(
                    String::from_utf8_lossy(&bytes)
                        .lines()
                        .filter(|l| !l.is_empty())
                        .map(str::to_string),
                );
            }
        }
    }
    if base.is_empty() {
        bail!("no .log files under {}", root.display());
    }
    let mut out = Vec::new();
    let mut total = 0;
    while total < megabytes << 20 {
        for l in &base {
            total += l.len() + 1;
            out.push(l.clone());
        }
    }
    Ok(out)
}

async fn bench_logs(root: &Path, megabytes: usize, concurrency: usize) -> anyhow::Result<()> {
    let lines = loghub_lines(root, megabytes)?;
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let mut requests = Vec::new();
    let mut batch = Vec::new();
    let mut size = 0;
    let ts = now_ms();
    for l in &lines {
        if batch.len() == 10_000 || size + l.len() + 26 > 1_000_000 {
            requests.push(std::mem::take(&mut batch));
            size = 0;
        }
        size += l.len() + 26;
        batch.push(LogEvent {
            timestamp_ms: ts,
            message: l.clone(),
        });
    }
    requests.push(batch);
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path(), &[])?;
    let pid = server.child.id();
    let c = client(&server.grpc).await?;
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    let mut results = futures::stream::iter(requests.into_iter().enumerate().map(|(i, events)| {
        let mut c = c.clone();
        async move {
            c.put_log_events(PutLogEventsRequest {
                idempotency_id: format!("logs-{i}"),
                log_group_name: "/bench/loghub".into(),
                log_stream_name: "all".into(),
                log_events: events,
                origin: None,
            })
            .await
            .map(|r| r.into_inner().accepted)
        }
    }))
    .buffer_unordered(concurrency);
    let mut acked = 0;
    while let Some(r) = results.next().await {
        acked += r.context("put_log_events")?;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds(pid) - cpu0;
    let drain_started = Instant::now();
    let store = server.store.clone();
    let rss = stop_server(server)?;
    let drain = drain_started.elapsed();
    let stored = dir_bytes(&store, ".parquet");
    // Sustained: acknowledged and committed, over the whole time.
    println!(
        "| Watchtrail `PutLogEvents`, fsync on | {:.0} MB | {acked} | {:.1} | {:.1} | {:.1} s | {:.1} MB | {rss:.0} MiB | {cpu:.1} |",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        bytes as f64 / 1e6 / (elapsed + drain).as_secs_f64(),
        drain.as_secs_f64(),
        stored as f64 / 1e6,
    );
    print_column_sizes(&store)?;
    if !peer("zstd", "apt-get install zstd")? {
        return Ok(());
    }
    let raw = dir.path().join("raw.log");
    std::fs::write(&raw, lines.join("\n"))?;
    let started = Instant::now();
    let status = Command::new("zstd")
        .args(["-3", "-T1", "-q", "-f", "-o"])
        .arg(dir.path().join("raw.zst"))
        .arg(&raw)
        .status()?;
    if !status.success() {
        bail!("zstd failed");
    }
    println!(
        "| zstd -3 -T1, same bytes | {:.0} MB | | {:.1} | | | | | |",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Watchtrail's benchmarks, each beside its peer in the same run where it has one. Build in
/// release mode first (`scripts/bench` does it). Every subcommand also runs at sizes small
/// enough for seconds, which `./scripts/test` uses, so that a benchmark that stops working
/// fails CI.
#[derive(Debug, clap::Parser)]
#[command(name = "watchtrail-bench")]
struct Cli {
    /// Ingest requests in flight at once.
    #[arg(long, global = true, default_value_t = 8)]
    concurrency: usize,
    /// Send ingest requests zstd-compressed.
    #[arg(long, global = true)]
    zstd: bool,
    /// Sizes that run in seconds (what `./scripts/test` runs); a peer that is not installed is
    /// skipped with a printed reason (in a real run it is an error).
    #[arg(long, global = true)]
    smoke: bool,
    #[command(subcommand)]
    bench: Bench,
}

/// Sizes shared by the metric benchmarks.
#[derive(Debug, clap::Args)]
struct Tsbs {
    /// Hosts of the TSBS cpu-only data.
    #[arg(long, default_value_t = 100)]
    hosts: usize,
    /// Hours of data.
    #[arg(long, default_value_t = 24)]
    hours: u64,
}

#[derive(Debug, clap::Subcommand)]
enum Bench {
    /// Metrics ingest beside VictoriaMetrics: points/s, bytes/point, peak RSS.
    Metrics {
        #[command(flatten)]
        tsbs: Tsbs,
    },
    /// Logs ingest of a loghub corpus beside `zstd -3`.
    Logs {
        /// The loghub corpus directory.
        #[arg(long, default_value = "../shared/testdata/loghub")]
        loghub: PathBuf,
        /// Megabytes of log lines to send.
        #[arg(long, default_value_t = 256)]
        megabytes: usize,
    },
    /// TSBS and audit queries beside DuckDB over the same files.
    Query(query::Options),
    /// Alarm latency beside vmalert + Alertmanager, and the CPU of many alarms.
    Alarms(alarms::Options),
    /// Compaction of a day of small flushes.
    Compaction {
        #[command(flatten)]
        tsbs: Tsbs,
        /// Timed runs.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Rollups of a day of points into resolution tiers.
    Rollup {
        #[command(flatten)]
        tsbs: Tsbs,
        /// Timed runs.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The agent's footprint beside node_exporter and collectd, and its log throughput.
    Agent(agent::Options),
    /// Other tenants' queries while hostile ones run.
    Hostile(hostile::Options),
    /// Digesting and verifying a day of audit events.
    Digests(digests::Options),
}

impl Bench {
    /// The same benchmark at sizes that run in seconds.
    fn smoke(self) -> Bench {
        let tsbs = || Tsbs { hosts: 2, hours: 1 };
        match self {
            Bench::Metrics { .. } => Bench::Metrics { tsbs: tsbs() },
            Bench::Logs { loghub, .. } => Bench::Logs {
                loghub,
                megabytes: 1,
            },
            Bench::Query(o) => Bench::Query(query::Options {
                hosts: 2,
                hours: 2,
                audit_events: 2_000,
                instances: 1,
                runs: 1,
                ..o
            }),
            Bench::Alarms(o) => Bench::Alarms(alarms::Options {
                rounds: 1,
                alarms: 5,
                cpu_window: 2,
                warmup: 1,
                settle: 2,
                ..o
            }),
            Bench::Compaction { .. } => Bench::Compaction {
                tsbs: tsbs(),
                runs: 1,
            },
            Bench::Rollup { .. } => Bench::Rollup {
                tsbs: tsbs(),
                runs: 1,
            },
            Bench::Agent(o) => Bench::Agent(agent::Options {
                seconds: 3,
                interval_s: 1,
                lines_per_sec: 50,
                throughput_lines: 1_000,
                ..o
            }),
            Bench::Digests(_) => Bench::Digests(digests::Options {
                events: 20_000,
                hours: 4,
            }),
            Bench::Hostile(_) => Bench::Hostile(hostile::Options {
                hostile: 2,
                seconds: 3,
                timeout_s: 2,
            }),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = <Cli as clap::Parser>::parse();
    // Interrupted (Ctrl-C, or SIGTERM from a CI timeout): stop what was started, then exit.
    tokio::spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("interrupted: stopping the processes this benchmark started");
        stop_children();
        std::process::exit(130);
    });
    ZSTD_REQUESTS.store(cli.zstd, std::sync::atomic::Ordering::Relaxed);
    SMOKE.store(cli.smoke, std::sync::atomic::Ordering::Relaxed);
    let bench = if cli.smoke {
        cli.bench.smoke()
    } else {
        cli.bench
    };
    let concurrency = cli.concurrency;
    let result = match bench {
        Bench::Metrics { tsbs } => bench_metrics(tsbs.hosts, tsbs.hours, concurrency).await,
        Bench::Logs { loghub, megabytes } => bench_logs(&loghub, megabytes, concurrency).await,
        Bench::Query(mut o) => {
            o.concurrency = concurrency;
            query::bench_query(o).await
        }
        Bench::Alarms(mut o) => {
            if !o.no_peer {
                let vm = peer("victoria-metrics", "apt-get install victoria-metrics")?;
                let vmalert = peer("vmalert", "apt-get install victoria-metrics")?;
                let am = peer(
                    "prometheus-alertmanager",
                    "apt-get install prometheus-alertmanager",
                )?;
                o.no_peer = !(vm && vmalert && am);
            }
            alarms::bench_alarms(o).await
        }
        Bench::Digests(o) => digests::bench(o).await,
        Bench::Compaction { tsbs, runs } => {
            compaction::bench_compaction(tsbs.hosts, tsbs.hours, runs).await
        }
        Bench::Rollup { tsbs, runs } => {
            compaction::bench_rollup(tsbs.hosts, tsbs.hours, runs).await
        }
        Bench::Agent(mut o) => {
            if !o.no_peers {
                let ne = peer(
                    "prometheus-node-exporter",
                    "apt-get install prometheus-node-exporter",
                )?;
                let cd = peer("collectd", "apt-get install collectd")?;
                o.no_peers = !(ne && cd);
            }
            agent::bench_agent(o).await
        }
        Bench::Hostile(o) => hostile::bench_hostile(o).await,
    };
    if result.is_err() {
        // Failed part-way: nothing it started outlives it.
        stop_children();
    }
    result
}
