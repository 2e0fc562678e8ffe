//! `watchtrail-bench alarms`: how long from the end of a breaching 10 s period to the webhook
//! arriving, for Watchtrail and for vmalert + Alertmanager on the same data in the same run; and
//! how much CPU 1,000 alarms on 60 s periods cost the server.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use watchtrail_e2e::receiver::Receiver;
use watchtrail_proto::v1::{Dimension, MetricDatum, PutMetricDataRequest, metric_datum};

use super::{client, cpu_seconds, now_ms, start_server, stop_server};

const PERIOD_MS: i64 = 10_000;

/// What to run.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Breach rounds per system.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: usize,
    /// Alarms for the CPU measurement.
    #[arg(long, default_value_t = 1000)]
    pub(crate) alarms: usize,
    /// Seconds of each CPU measurement window.
    #[arg(long, default_value_t = 120)]
    pub(crate) cpu_window: u64,
    /// Late-data delay given to both systems, in seconds.
    #[arg(long = "delay", default_value_t = 1)]
    pub(crate) delay_s: u64,
    /// Skip vmalert and Alertmanager.
    #[arg(long)]
    pub(crate) no_peer: bool,
    /// Skip the latency rounds (CPU only).
    #[arg(long)]
    pub(crate) cpu_only: bool,
    /// Every alarm on its own metric (no two alarms can share a query).
    #[arg(long)]
    pub(crate) distinct: bool,
    /// Seconds of ingest before the CPU baseline is taken.
    #[arg(long, default_value_t = 20)]
    pub(crate) warmup: u64,
    /// Seconds between creating the alarms and measuring (one minute boundary and more).
    #[arg(long, default_value_t = 70)]
    pub(crate) settle: u64,
}

async fn http(addr: &str, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            super::bearer(),
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

async fn put_json(addr: &str, path: &str, v: &Value) -> anyhow::Result<()> {
    let (code, body) = http(addr, "PUT", path, &v.to_string()).await?;
    if !(200..300).contains(&code) {
        bail!("PUT {path}: HTTP {code}: {body}");
    }
    Ok(())
}

fn period_end(ts_ms: i64) -> i64 {
    (ts_ms.div_euclid(PERIOD_MS) + 1) * PERIOD_MS
}

/// Sleeps until the wall clock is 2 s into a 10 s period, so that a point written now lies well
/// inside its period.
async fn align() {
    let into = now_ms().rem_euclid(PERIOD_MS);
    let wait = (2_000 - into).rem_euclid(PERIOD_MS);
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
}

fn summary(name: &str, v: &mut [f64]) -> String {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return format!("{name}: no samples");
    }
    let median = v[v.len() / 2];
    format!(
        "{name}: n={} min {:.0} ms, median {:.0} ms, max {:.0} ms",
        v.len(),
        v[0],
        median,
        v[v.len() - 1]
    )
}

/// Rounds of breach → notification through Watchtrail.
async fn watchtrail_latency(o: &Options, dir: &Path) -> anyhow::Result<Vec<f64>> {
    let receiver = Receiver::start("bench").await;
    let delay = format!("{}s", o.delay_s);
    // The receiver listens on 127.0.0.1, which the egress guard refuses unless allowed.
    let server = start_server(
        dir,
        &[
            "--alarm-delay",
            &delay,
            "--log-filter",
            "warn",
            "--webhook-allow-networks",
            "127.0.0.1",
        ],
    )?;
    let mut grpc = client(&server.grpc).await?;
    put_json(
        &server.http,
        "/v1/destinations/pager",
        &json!({"Url": receiver.url(), "Secret": "bench"}),
    )
    .await?;
    put_json(
        &server.http,
        "/v1/alarms/latency",
        &json!({
            "Namespace": "Bench", "MetricName": "Errors", "Statistic": "Maximum", "Period": 10,
            "EvaluationPeriods": 1, "Threshold": 5, "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching", "AlarmActions": ["pager"], "OKActions": ["pager"]
        }),
    )
    .await?;
    let mut out = Vec::new();
    for round in 0..o.rounds {
        // Wait for OK (the previous breach has left the window).
        for _ in 0..600 {
            let (_, body) = http(&server.http, "GET", "/v1/alarms/latency", "").await?;
            if body.contains("\"StateValue\":\"OK\"") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        align().await;
        let ts = now_ms();
        let seen = receiver.received().len();
        grpc.put_metric_data(PutMetricDataRequest {
            idempotency_id: format!("breach-{round}"),
            metric_data: vec![MetricDatum {
                namespace: "Bench".into(),
                metric_name: "Errors".into(),
                dimensions: vec![],
                timestamp_ms: ts,
                data: Some(metric_datum::Data::Value(50.0)),
                unit: "Count".into(),
                storage_resolution: 1,
            }],
            series: vec![],
        })
        .await?;
        let end = period_end(ts);
        let mut got = None;
        for _ in 0..600 {
            if let Some(r) = receiver.received()[seen..]
                .iter()
                .find(|r| r.body["detail"]["state"]["value"] == "ALARM")
            {
                got = Some(r.at_ms);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let at = got.context("no ALARM notification within 12 s")?;
        let ms = (at - end) as f64;
        println!("  watchtrail round {round}: notified {ms:.0} ms after the period ended");
        out.push(ms);
    }
    stop_server(server)?;
    Ok(out)
}

struct Peers {
    children: Vec<Child>,
}

impl Drop for Peers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn wait_http(addr: &str, path: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        if let Ok((200, _)) = http(addr, "GET", path, "").await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{addr}{path} did not come up")
}

/// Rounds of breach → notification through VictoriaMetrics, vmalert and Alertmanager.
async fn vmalert_latency(o: &Options, dir: &Path) -> anyhow::Result<Vec<f64>> {
    let receiver = Receiver::start("bench").await;
    let (vm, vma, am) = ("127.0.0.1:18428", "127.0.0.1:18880", "127.0.0.1:19093");
    std::fs::write(
        dir.join("am.yml"),
        format!(
            "route:\n  receiver: hook\n  group_by: ['alertname']\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: {}\n        send_resolved: true\n",
            receiver.url()
        ),
    )?;
    std::fs::write(
        dir.join("rules.yml"),
        "groups:\n  - name: bench\n    interval: 10s\n    rules:\n      - alert: Latency\n        expr: max_over_time(bench_errors[10s]) > 5\n",
    )?;
    let quiet = || Stdio::null();
    let mut peers = Peers {
        children: Vec::new(),
    };
    peers.children.push(
        Command::new("victoria-metrics")
            .args([
                &format!("-storageDataPath={}", dir.join("vm").display()),
                &format!("-httpListenAddr={vm}"),
                &format!("-search.latencyOffset={}s", o.delay_s),
                "-search.disableCache",
                "-loggerLevel=ERROR",
            ])
            .stdout(quiet())
            .stderr(quiet())
            .spawn()
            .inspect(crate::track)
            .context("start victoria-metrics (apt-get install victoria-metrics)")?,
    );
    peers.children.push(
        Command::new("prometheus-alertmanager")
            .args([
                &format!("--config.file={}", dir.join("am.yml").display()),
                &format!("--storage.path={}", dir.join("am").display()),
                &format!("--web.listen-address={am}"),
                "--cluster.listen-address=",
                "--log.level=error",
            ])
            .stdout(quiet())
            .stderr(quiet())
            .spawn()
            .inspect(crate::track)
            .context("start prometheus-alertmanager (apt-get install prometheus-alertmanager)")?,
    );
    wait_http(vm, "/health").await?;
    wait_http(am, "/-/ready").await?;
    peers.children.push(
        Command::new("vmalert")
            .args([
                &format!("-rule={}", dir.join("rules.yml").display()),
                &format!("-datasource.url=http://{vm}"),
                &format!("-notifier.url=http://{am}"),
                &format!("-httpListenAddr={vma}"),
                "-evaluationInterval=10s",
                "-loggerLevel=ERROR",
            ])
            .stdout(quiet())
            .stderr(quiet())
            .spawn()
            .inspect(crate::track)
            .context("start vmalert")?,
    );
    wait_http(vma, "/health").await?;
    let mut out = Vec::new();
    for round in 0..o.rounds {
        // Wait until nothing fires (the last breach has been resolved).
        for _ in 0..600 {
            let r = receiver.received();
            if r.last().is_none_or(|x| x.body["status"] == "resolved") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        align().await;
        let ts = now_ms();
        let seen = receiver.received().len();
        let line = format!("bench_errors 50 {ts}\n");
        let (code, body) = http(vm, "POST", "/api/v1/import/prometheus", &line).await?;
        if !(200..300).contains(&code) {
            bail!("VictoriaMetrics import: HTTP {code}: {body}");
        }
        let end = period_end(ts);
        let mut got = None;
        for _ in 0..1500 {
            if let Some(r) = receiver.received()[seen..]
                .iter()
                .find(|r| r.body["status"] == "firing")
            {
                got = Some(r.at_ms);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let at = got.context("no firing notification from vmalert + Alertmanager within 30 s")?;
        let ms = (at - end) as f64;
        println!("  vmalert round {round}: notified {ms:.0} ms after the period ended");
        out.push(ms);
    }
    Ok(out)
}

/// CPU of the server with ingest only, then with `alarms` alarms on 60 s periods.
async fn alarm_cpu(o: &Options, dir: &Path) -> anyhow::Result<()> {
    let server = start_server(dir, &["--log-filter", "warn"])?;
    let pid = server.child.id();
    let grpc_url = server.grpc.clone();
    let hosts = o.alarms;
    let distinct = o.distinct;
    let metric = move |h: usize| {
        if distinct {
            format!("cpu_usage_active_h{h}")
        } else {
            "cpu_usage_active".to_string()
        }
    };
    // An agent fleet: one point per host every 10 s.
    let feeder = tokio::spawn(async move {
        let Ok(mut grpc) = client(&grpc_url).await else {
            return;
        };
        let mut i = 0u64;
        loop {
            let now = now_ms();
            let data: Vec<MetricDatum> = (0..hosts)
                .map(|h| MetricDatum {
                    namespace: "Bench".into(),
                    metric_name: metric(h),
                    dimensions: vec![Dimension {
                        name: "host".into(),
                        value: format!("h{h}"),
                    }],
                    timestamp_ms: now,
                    data: Some(metric_datum::Data::Value(
                        ((h * 7 + i as usize) % 100) as f64,
                    )),
                    unit: "Percent".into(),
                    storage_resolution: 60,
                })
                .collect();
            for (c, chunk) in data.chunks(1000).enumerate() {
                let _ = grpc
                    .put_metric_data(PutMetricDataRequest {
                        idempotency_id: format!("fleet-{i}-{c}"),
                        metric_data: chunk.to_vec(),
                        series: vec![],
                    })
                    .await;
            }
            i += 1;
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    });
    let window = Duration::from_secs(o.cpu_window);
    tokio::time::sleep(Duration::from_secs(o.warmup)).await;
    let c0 = cpu_seconds(pid);
    tokio::time::sleep(window).await;
    let base = (cpu_seconds(pid) - c0) / window.as_secs_f64();
    println!("  ingest only: {:.1}% of one core", base * 100.0);
    for h in 0..o.alarms {
        put_json(
            &server.http,
            &format!("/v1/alarms/cpu-h{h}"),
            &json!({
                "Namespace": "Bench", "MetricName": metric(h),
                "Dimensions": [{"Name": "host", "Value": format!("h{h}")}],
                "Statistic": "Average", "Period": 60, "EvaluationPeriods": 5, "DatapointsToAlarm": 3,
                "Threshold": 90, "ComparisonOperator": "GreaterThanThreshold"
            }),
        )
        .await?;
    }
    // One full minute to load and evaluate them once, then measure.
    tokio::time::sleep(Duration::from_secs(o.settle)).await;
    let (_, m0) = http(&server.http, "GET", "/metrics", "").await?;
    let c1 = cpu_seconds(pid);
    tokio::time::sleep(window).await;
    let with = (cpu_seconds(pid) - c1) / window.as_secs_f64();
    let (_, m1) = http(&server.http, "GET", "/metrics", "").await?;
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let evals = metric(&m1, "watchtrail_alarm_evaluations_total")
        - metric(&m0, "watchtrail_alarm_evaluations_total");
    let boundary_s = metric(&m1, "watchtrail_alarm_boundary_seconds_sum")
        - metric(&m0, "watchtrail_alarm_boundary_seconds_sum");
    let boundaries = metric(&m1, "watchtrail_alarm_boundary_seconds_count")
        - metric(&m0, "watchtrail_alarm_boundary_seconds_count");
    println!(
        "  with {} alarms: {:.1}% of one core; alarms' share {:.1}% of one core; \
         {evals:.0} evaluations in {}s; {:.2} s of wall time per minute boundary",
        o.alarms,
        with * 100.0,
        (with - base) * 100.0,
        o.cpu_window,
        if boundaries > 0.0 {
            boundary_s / boundaries * 6.0
        } else {
            0.0
        },
    );
    feeder.abort();
    stop_server(server)?;
    Ok(())
}

/// Runs the alarm benchmark.
///
/// # Errors
/// A system that does not start or never notifies.
pub(crate) async fn bench_alarms(o: Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    if o.cpu_only {
        println!(
            "alarm cost: {} alarms, Period 60, 1 point per alarm's series every 10 s{}",
            o.alarms,
            if o.distinct {
                ", each alarm on its own metric"
            } else {
                ""
            }
        );
        return alarm_cpu(&o, &dir.path().join("cpu")).await;
    }
    println!(
        "alarm latency: end of the breaching 10 s period → webhook received, delay {} s, {} rounds",
        o.delay_s, o.rounds
    );
    let mut ours = watchtrail_latency(&o, &dir.path().join("wt")).await?;
    let mut theirs = if o.no_peer {
        Vec::new()
    } else {
        let d = dir.path().join("vm");
        std::fs::create_dir_all(&d)?;
        vmalert_latency(&o, &d).await?
    };
    println!("{}", summary("watchtrail", &mut ours));
    if !o.no_peer {
        println!("{}", summary("vmalert + alertmanager", &mut theirs));
    }
    println!(
        "alarm cost: {} alarms, Period 60, 1 point per alarm's series every 10 s",
        o.alarms
    );
    alarm_cpu(&o, &dir.path().join("cpu")).await?;
    Ok(())
}
