//! `watchtrail-bench agent`: what the agent costs a host, beside prometheus-node-exporter and
//! collectd collecting host metrics at the same interval in the same run; and how many log
//! lines per second it tails and ships to a server.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::{cpu_seconds, start_server, stop_server};

/// What to run.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Seconds of the measurement window.
    #[arg(long, default_value_t = 120)]
    pub(crate) seconds: u64,
    /// Host metrics interval for all three collectors, in seconds.
    #[arg(long = "interval", default_value_t = 60)]
    pub(crate) interval_s: u64,
    /// Log lines appended per second during the window.
    #[arg(long, default_value_t = 1000)]
    pub(crate) lines_per_sec: u64,
    /// Lines for the throughput run (0 skips it).
    #[arg(long, default_value_t = 2_000_000)]
    pub(crate) throughput_lines: u64,
    /// Skip node_exporter and collectd.
    #[arg(long)]
    pub(crate) no_peers: bool,
    /// Skip the footprint run.
    #[arg(long)]
    pub(crate) throughput_only: bool,
}

/// Fails at once when the agent's log says the server refuses it for good or for its key (a
/// benchmark that cannot send must not wait out its timeout).
fn refused_fast(agent_dir: &Path) -> anyhow::Result<()> {
    let log = std::fs::read_to_string(agent_dir.join("agent.log")).unwrap_or_default();
    for line in log.lines() {
        if [
            "Unauthenticated",
            "PermissionDenied",
            "refused a request for good",
        ]
        .iter()
        .any(|m| line.contains(m))
        {
            bail!("the server refuses the agent: {line}");
        }
    }
    Ok(())
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let bin = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .join(name);
    if !bin.exists() {
        bail!("{} is missing: cargo build --release --bins", bin.display());
    }
    Ok(bin)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(dir: &Path, config: &str) -> anyhow::Result<Killed> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("agent.toml");
    std::fs::write(&path, config)?;
    let child = Command::new(sibling("watchtrail-agent")?)
        .arg("--config")
        .arg(&path)
        .args(["--log", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log"))?)
        .spawn()
        .inspect(crate::track)
        .context("start watchtrail-agent")?;
    Ok(Killed(child))
}

async fn get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    Some(buf)
}

async fn counter(addr: &str, name: &str) -> Option<u64> {
    get(addr, "/metrics")
        .await?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Appends lines at a steady rate until `stop`.
fn writer(
    path: PathBuf,
    per_sec: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<u64> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let start = Instant::now();
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * per_sec as f64) as u64;
        let mut buf = String::new();
        while n < due {
            buf.push_str(&format!(
                "2026-11-23T10:00:00.000Z INFO request id={n} method=GET path=/api/v1/items status=200 ms=12\n"
            ));
            n += 1;
        }
        f.write_all(buf.as_bytes())?;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(n)
}

struct Measured {
    name: String,
    cpu_pct: f64,
    rss: f64,
    hwm: f64,
}

async fn footprint(o: &Options, dir: &Path) -> anyhow::Result<Vec<Measured>> {
    let server = start_server(&dir.join("server"), &["--flush-max-age", "10s"])?;
    let http_port = free_port()?;
    let log = dir.join("app.log");
    std::fs::write(&log, "")?;
    // The default configuration, plus one log file and the interval of this run.
    let config = format!(
        "server = \"{}\"\napi_key_file = \"{}\"\nstate_dir = \"{}\"\nhttp_addr = \"127.0.0.1:{http_port}\"\n[metrics]\ninterval = \"{}s\"\n\
         [[logs.files]]\npath = \"{}\"\nlog_group = \"/bench/app\"\n",
        server.grpc,
        dir.join("server/admin.key").display(),
        dir.join("agent-state").display(),
        o.interval_s,
        log.display()
    );
    let agent = start_agent(&dir.join("agent"), &config)?;
    let mut peers: Vec<(String, Killed)> = Vec::new();
    let mut node_port = 0;
    if !o.no_peers {
        node_port = free_port()?;
        let ne = Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{node_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .inspect(crate::track)
            .context("prometheus-node-exporter (apt-get install prometheus-node-exporter)")?;
        peers.push((
            "prometheus-node-exporter, scraped every interval".into(),
            Killed(ne),
        ));
        let cd = dir.join("collectd");
        std::fs::create_dir_all(&cd)?;
        let conf = cd.join("collectd.conf");
        std::fs::write(
            &conf,
            format!(
                "BaseDir \"{d}\"\nPIDFile \"{d}/collectd.pid\"\nInterval {}\nTypesDB \"/usr/share/collectd/types.db\"\n\
                 LoadPlugin cpu\nLoadPlugin memory\nLoadPlugin swap\nLoadPlugin df\nLoadPlugin disk\nLoadPlugin interface\n\
                 LoadPlugin processes\nLoadPlugin tcpconns\nLoadPlugin csv\n<Plugin csv>\n  DataDir \"{d}/csv\"\n</Plugin>\n",
                o.interval_s,
                d = cd.display()
            ),
        )?;
        let c = Command::new("collectd")
            .arg("-f")
            .arg("-C")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .inspect(crate::track)
            .context("collectd (apt-get install collectd-core)")?;
        peers.push((
            "collectd (cpu, memory, swap, df, disk, interface, processes, tcpconns, csv)".into(),
            Killed(c),
        ));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = {
        let (log, per_sec, stop) = (log.clone(), o.lines_per_sec, std::sync::Arc::clone(&stop));
        std::thread::spawn(move || writer(log, per_sec, stop))
    };
    // Warm up: two intervals, so every collector has taken its first samples.
    let warm = Duration::from_secs(o.interval_s * 2).max(Duration::from_secs(10));
    let scrape = |port: u16| async move {
        if port != 0 {
            let _ = get(&format!("127.0.0.1:{port}"), "/metrics").await;
        }
    };
    let t0 = Instant::now();
    while t0.elapsed() < warm {
        scrape(node_port).await;
        tokio::time::sleep(Duration::from_secs(o.interval_s)).await;
    }
    let mut pids: Vec<(String, u32)> = vec![(
        format!(
            "watchtrail-agent (default config, {} lines/s)",
            o.lines_per_sec
        ),
        agent.0.id(),
    )];
    pids.extend(peers.iter().map(|(n, k)| (n.clone(), k.0.id())));
    let cpu0: Vec<f64> = pids.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let start = Instant::now();
    let mut next = Instant::now();
    while start.elapsed() < Duration::from_secs(o.seconds) {
        if Instant::now() >= next {
            scrape(node_port).await;
            next += Duration::from_secs(o.interval_s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let out = pids
        .iter()
        .zip(cpu0)
        .map(|((name, pid), c0)| Measured {
            name: name.clone(),
            cpu_pct: (cpu_seconds(*pid) - c0) / elapsed * 100.0,
            rss: rss_mib(*pid, "VmRSS:"),
            hwm: rss_mib(*pid, "VmHWM:"),
        })
        .collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = w.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    let sent = counter(
        &format!("127.0.0.1:{http_port}"),
        "watchtrail_agent_log_events_total",
    )
    .await
    .unwrap_or(0);
    println!("lines written {written}, log events read by the agent {sent}");
    drop(agent);
    drop(peers);
    stop_server(server)?;
    Ok(out)
}

async fn throughput(lines: u64, dir: &Path) -> anyhow::Result<(f64, f64, f64)> {
    let log = dir.join("big.log");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&log)?);
        for n in 0..lines {
            writeln!(
                f,
                "2026-11-23T10:00:00.000Z INFO request id={n} method=GET path=/api/v1/items status=200 ms=12"
            )?;
        }
    }
    let bytes = std::fs::metadata(&log)?.len();
    let server = start_server(&dir.join("tserver"), &["--flush-max-age", "10s"])?;
    let http_port = free_port()?;
    let config = format!(
        "server = \"{}\"\napi_key_file = \"{}\"\nstate_dir = \"{}\"\nhttp_addr = \"127.0.0.1:{http_port}\"\n[metrics]\nenabled = false\n\
         [[logs.files]]\npath = \"{}\"\nlog_group = \"/bench/big\"\nstart_position = \"beginning\"\n",
        server.grpc,
        dir.join("tserver/admin.key").display(),
        dir.join("tagent-state").display(),
        log.display()
    );
    let started = Instant::now();
    let agent = start_agent(&dir.join("tagent"), &config)?;
    let addr = format!("127.0.0.1:{http_port}");
    loop {
        if counter(&addr, "watchtrail_agent_items_sent_total")
            .await
            .unwrap_or(0)
            >= lines
        {
            break;
        }
        refused_fast(&dir.join("tagent"))?;
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the agent did not ship {lines} lines within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(agent.0.id());
    let hwm = rss_mib(agent.0.id(), "VmHWM:");
    drop(agent);
    stop_server(server)?;
    println!(
        "throughput: {lines} lines ({:.0} MB) in {secs:.2} s; agent CPU {cpu:.2} s, peak RSS {hwm:.1} MiB",
        bytes as f64 / 1e6
    );
    Ok((
        lines as f64 / secs,
        bytes as f64 / 1e6 / secs,
        cpu / secs * 100.0,
    ))
}

pub(crate) async fn bench_agent(o: Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    if !o.throughput_only {
        let rows = footprint(&o, dir.path()).await?;
        println!(
            "\n| collector, {} s interval, {} s window | CPU (% of one core) | RSS (MiB) | peak RSS (MiB) |\n|---|---|---|---|",
            o.interval_s, o.seconds
        );
        for r in &rows {
            println!(
                "| {} | {:.2} | {:.1} | {:.1} |",
                r.name, r.cpu_pct, r.rss, r.hwm
            );
        }
    }
    if o.throughput_lines > 0 {
        let (lps, mbps, cpu) = throughput(o.throughput_lines, dir.path()).await?;
        println!(
            "\n| log throughput | lines/s | MB/s | agent CPU (% of one core) |\n|---|---|---|---|\n| {} lines tailed and shipped | {lps:.0} | {mbps:.1} | {cpu:.0} |",
            o.throughput_lines
        );
    }
    Ok(())
}
