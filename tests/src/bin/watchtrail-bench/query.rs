//! `watchtrail-bench query`: SQL latency over TSBS cpu-only data and synthetic CloudTrail events,
//! with DuckDB asking the same questions over the same Parquet files in the same run.
//!
//! The TSBS data (100 hosts × 3 days at 10 s by default: 25.9 M points) and the audit events are
//! ingested through a release server over gRPC and flushed by a graceful stop; a fresh server then
//! answers the queries over gRPC (Arrow IPC), and a Python process runs them in DuckDB over the
//! files that the Delta log lists as active.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use watchtrail_proto::tonic;
use watchtrail_proto::tonic::codec::CompressionEncoding;
use watchtrail_proto::tonic::transport::Channel;
use watchtrail_proto::v1::query_response::Payload;
use watchtrail_proto::v1::query_service_client::QueryServiceClient;
use watchtrail_proto::v1::{AuditRecord, PutAuditEventsRequest, QueryRequest, QueryStats};
use watchtrail_storage::deltalake::arrow;

use super::{
    FIELDS, HOSTS_PER_REQUEST, Rng, TICK_MS, TICKS_PER_REQUEST, client, now_ms, start_server,
    stop_server, tsbs,
};

const HOUR_MS: i64 = 3_600_000;
const TENANT: &str = "default";

/// Options of the query benchmark.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Hosts of the TSBS cpu-only data.
    #[arg(long, default_value_t = 100)]
    pub(crate) hosts: usize,
    /// Hours of data.
    #[arg(long, default_value_t = 72)]
    pub(crate) hours: u64,
    /// CloudTrail events for the audit queries.
    #[arg(long, default_value_t = 10_000_000)]
    pub(crate) audit_events: u64,
    /// Random instances of each query shape (hosts and windows drawn like TSBS does).
    #[arg(long, default_value_t = 5)]
    pub(crate) instances: usize,
    /// Timed runs of each instance, after one warm-up run.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// The Python with DuckDB (default: $WATCHTRAIL_PYTHON, else the venv under ~/.cache).
    #[arg(long, default_value_t = default_python())]
    pub(crate) python: String,
    /// Requests in flight while loading (the global `--concurrency`).
    #[arg(skip)]
    pub(crate) concurrency: usize,
    /// Keep the server's data here (for profiling afterwards) instead of a temporary directory.
    #[arg(long)]
    pub(crate) keep: Option<std::path::PathBuf>,
}

fn default_python() -> String {
    std::env::var("WATCHTRAIL_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/watchtrail-venv/bin/python")
    })
}

/// One query instance, as the same SQL text for both engines.
pub(crate) struct Case {
    pub(crate) shape: &'static str,
    pub(crate) sql: String,
}

/// RFC 3339 UTC, to the second: a literal both DataFusion and DuckDB compare with timestamps.
fn ts(ms: i64) -> String {
    let full = watchtrail_storage::store::format_micros(ms * 1000);
    format!("{}Z", &full[..19])
}

fn pick_hosts(rng: &mut Rng, n: usize, hosts: usize) -> String {
    let mut chosen: Vec<usize> = Vec::new();
    while chosen.len() < n.min(hosts) {
        let h = rng.below(hosts as u64) as usize;
        if !chosen.contains(&h) {
            chosen.push(h);
        }
    }
    chosen
        .iter()
        .map(|h| format!("'host_{h}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A random window of `len` milliseconds inside `[start, end)`, aligned to the minute.
fn window(rng: &mut Rng, start: i64, end: i64, len: i64) -> (i64, i64) {
    let slack = ((end - start - len) / 60_000).max(1) as u64;
    let s = start + rng.below(slack) as i64 * 60_000;
    (s, s + len)
}

fn pivot(agg: &str, fields: &[&str], alias: &str) -> String {
    fields
        .iter()
        .map(|f| format!("{agg}(value) FILTER (WHERE metric_name = '{f}') AS {alias}_{f}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn in_list(fields: &[&str]) -> String {
    fields
        .iter()
        .map(|f| format!("'{f}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The TSBS cpu-only query shapes of the issue, written for the long `metrics` table: one row
/// per (series, time), the TSBS field in `metric_name`, the TSBS tags in `dimensions`.
pub(crate) fn tsbs_cases(start: i64, end: i64, hosts: usize, instances: usize) -> Vec<Case> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut cases = Vec::new();
    for _ in 0..instances {
        let (s, e) = window(&mut rng, start, end, HOUR_MS);
        cases.push(Case {
            shape: "single-groupby-1-1-1",
            sql: format!(
                "SELECT date_trunc('minute', time) AS minute, max(value) AS max_usage_user \
                 FROM metrics WHERE namespace = 'TSBS' AND metric_name = 'usage_user' \
                 AND dimensions['hostname'] IN ({}) AND time >= '{}' AND time < '{}' \
                 GROUP BY 1 ORDER BY 1",
                pick_hosts(&mut rng, 1, hosts),
                ts(s),
                ts(e)
            ),
        });
        let (s, e) = window(&mut rng, start, end, HOUR_MS);
        cases.push(Case {
            shape: "single-groupby-5-8-1",
            sql: format!(
                "SELECT date_trunc('minute', time) AS minute, {} FROM metrics \
                 WHERE namespace = 'TSBS' AND metric_name IN ({}) \
                 AND dimensions['hostname'] IN ({}) AND time >= '{}' AND time < '{}' \
                 GROUP BY 1 ORDER BY 1",
                pivot("max", &FIELDS[..5], "max"),
                in_list(&FIELDS[..5]),
                pick_hosts(&mut rng, 8, hosts),
                ts(s),
                ts(e)
            ),
        });
        let (s, e) = window(&mut rng, start, end, 8 * HOUR_MS);
        cases.push(Case {
            shape: "cpu-max-all-8",
            sql: format!(
                "SELECT date_trunc('hour', time) AS hour, {} FROM metrics \
                 WHERE namespace = 'TSBS' AND dimensions['hostname'] IN ({}) \
                 AND time >= '{}' AND time < '{}' GROUP BY 1 ORDER BY 1",
                pivot("max", &FIELDS, "max"),
                pick_hosts(&mut rng, 8, hosts),
                ts(s),
                ts(e)
            ),
        });
        let (s, e) = window(&mut rng, start, end, 12 * HOUR_MS);
        cases.push(Case {
            shape: "double-groupby-all",
            sql: format!(
                "SELECT date_trunc('hour', time) AS hour, dimensions['hostname'] AS hostname, {} \
                 FROM metrics WHERE namespace = 'TSBS' AND time >= '{}' AND time < '{}' \
                 GROUP BY 1, 2 ORDER BY 1, 2",
                pivot("avg", &FIELDS, "mean"),
                ts(s),
                ts(e)
            ),
        });
        let (s, e) = window(&mut rng, start, end, 12 * HOUR_MS);
        cases.push(Case {
            shape: "high-cpu-1",
            sql: format!(
                "SELECT time, {} FROM metrics WHERE namespace = 'TSBS' \
                 AND dimensions['hostname'] IN ({}) AND time >= '{}' AND time < '{}' \
                 GROUP BY time HAVING max(value) FILTER (WHERE metric_name = 'usage_user') > 90 \
                 ORDER BY time",
                pivot("max", &FIELDS, "v"),
                pick_hosts(&mut rng, 1, hosts),
                ts(s),
                ts(e)
            ),
        });
        let (_, e) = window(&mut rng, start, end, 0);
        cases.push(Case {
            shape: "groupby-orderby-limit",
            sql: format!(
                "SELECT date_trunc('minute', time) AS minute, max(value) AS max_usage_user \
                 FROM metrics WHERE namespace = 'TSBS' AND metric_name = 'usage_user' \
                 AND time < '{}' GROUP BY 1 ORDER BY 1 DESC LIMIT 5",
                ts(e)
            ),
        });
    }
    cases.push(Case {
        shape: "lastpoint",
        sql: "SELECT DISTINCT ON (dimensions['hostname'], metric_name) \
              dimensions['hostname'] AS hostname, metric_name, time, value \
              FROM metrics WHERE namespace = 'TSBS' \
              ORDER BY dimensions['hostname'], metric_name, time DESC"
            .to_string(),
    });
    cases
}

/// API calls of the synthetic trail, the first ones far more frequent than the last.
const EVENTS: [(&str, &str); 24] = [
    ("s3.amazonaws.com", "GetObject"),
    ("s3.amazonaws.com", "PutObject"),
    ("sts.amazonaws.com", "AssumeRole"),
    ("ec2.amazonaws.com", "DescribeInstances"),
    ("kms.amazonaws.com", "Decrypt"),
    ("logs.amazonaws.com", "PutLogEvents"),
    ("dynamodb.amazonaws.com", "GetItem"),
    ("lambda.amazonaws.com", "Invoke"),
    ("iam.amazonaws.com", "ListRoles"),
    ("s3.amazonaws.com", "ListBuckets"),
    ("ec2.amazonaws.com", "DescribeSecurityGroups"),
    ("cloudtrail.amazonaws.com", "LookupEvents"),
    ("ec2.amazonaws.com", "RunInstances"),
    ("ec2.amazonaws.com", "TerminateInstances"),
    ("iam.amazonaws.com", "CreateAccessKey"),
    ("signin.amazonaws.com", "ConsoleLogin"),
    ("ec2.amazonaws.com", "AuthorizeSecurityGroupIngress"),
    ("iam.amazonaws.com", "AttachUserPolicy"),
    ("s3.amazonaws.com", "PutBucketPolicy"),
    ("kms.amazonaws.com", "ScheduleKeyDeletion"),
    ("iam.amazonaws.com", "DeleteUser"),
    ("cloudtrail.amazonaws.com", "StopLogging"),
    ("s3.amazonaws.com", "DeleteBucketPolicy"),
    ("config.amazonaws.com", "StopConfigurationRecorder"),
];

/// One synthetic CloudTrail event (about 700 bytes), the shape of a real management event.
pub(crate) fn audit_event(rng: &mut Rng, seq: u64, time_ms: i64) -> String {
    // Zipf-like: event k is chosen with weight 1 / (k + 1).
    let r = rng.below(1_000_000) as f64 / 1_000_000.0 * 3.776; // H(24) ≈ 3.776
    let mut acc = 0.0;
    let mut k = EVENTS.len() - 1;
    for i in 0..EVENTS.len() {
        acc += 1.0 / (i as f64 + 1.0);
        if r < acc {
            k = i;
            break;
        }
    }
    let (source, name) = EVENTS[k];
    let user = rng.below(200);
    let ip = rng.below(1000);
    let denied = rng.below(50) == 0;
    let error = if denied {
        r#","errorCode":"AccessDenied","errorMessage":"User is not authorized to perform this operation""#
    } else {
        ""
    };
    format!(
        r#"{{"eventVersion":"1.08","userIdentity":{{"type":"IAMUser","principalId":"AIDA{user:016X}","arn":"arn:aws:iam::123456789012:user/user{user}","accountId":"123456789012","accessKeyId":"AKIA{user:016X}","userName":"user{user}"}},"eventTime":"{}","eventSource":"{source}","eventName":"{name}","awsRegion":"us-east-1","sourceIPAddress":"198.51.{}.{}","userAgent":"aws-cli/2.15.0 Python/3.11.6 Linux/6.1.0 exe/x86_64.debian.12","requestParameters":{{"bucketName":"bucket-{}","key":"object-{}"}},"responseElements":null{error},"requestID":"{:016X}","eventID":"{:08x}-0000-4000-8000-{:012x}","readOnly":{},"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"123456789012","eventCategory":"Management"}}"#,
        ts(time_ms),
        ip / 250,
        ip % 250,
        rng.below(40),
        rng.below(100_000),
        rng.next(),
        (seq >> 48) as u32,
        seq & 0xffff_ffff_ffff,
        name.starts_with("Get") || name.starts_with("Describe") || name.starts_with("List"),
    )
}

/// The audit questions: who called a rare API in a given hour; calls per API over a whole day.
fn audit_cases(start: i64, end: i64, instances: usize) -> Vec<Case> {
    let mut rng = Rng(0x51_7cc1_b727_220a);
    let mut cases = Vec::new();
    for i in 0..instances {
        let hour_start = start + (rng.below(((end - start) / HOUR_MS - 1) as u64) as i64) * HOUR_MS;
        let (_, name) = EVENTS[12 + i % 12];
        cases.push(Case {
            shape: "audit: who called X in this hour",
            sql: format!(
                "SELECT useridentity.arn AS who, sourceipaddress, eventtime FROM audit \
                 WHERE eventname = '{name}' AND eventtime >= '{}' AND eventtime < '{}' \
                 ORDER BY eventtime",
                ts(hour_start),
                ts(hour_start + HOUR_MS)
            ),
        });
        let day_start =
            start + (rng.below(((end - start) / HOUR_MS - 24).max(1) as u64) as i64) * HOUR_MS;
        cases.push(Case {
            shape: "audit: calls per API over a day",
            sql: format!(
                "SELECT eventname, count(*) AS calls FROM audit \
                 WHERE eventtime >= '{}' AND eventtime < '{}' GROUP BY eventname \
                 ORDER BY calls DESC, eventname",
                ts(day_start),
                ts(day_start + 24 * HOUR_MS)
            ),
        });
    }
    cases
}

async fn ingest_audit(
    grpc: &str,
    events: u64,
    start: i64,
    end: i64,
    concurrency: usize,
) -> anyhow::Result<u64> {
    let c = client(grpc).await?;
    let per_request = 100u64;
    let requests = events.div_ceil(per_request);
    let step = (end - start) as f64 / events as f64;
    let mut rng = Rng(0x2f69_3a5d_1e7b_c401);
    let gen_requests = (0..requests).map(move |r| {
        let records = (r * per_request..((r + 1) * per_request).min(events))
            .map(|seq| AuditRecord {
                json: audit_event(&mut rng, seq, start + (seq as f64 * step) as i64),
            })
            .collect();
        PutAuditEventsRequest {
            idempotency_id: format!("audit-bench-{r}"),
            records,
        }
    });
    let mut results = futures::stream::iter(gen_requests.map(|req| {
        let c = c.clone();
        async move {
            crate::retrying(|| {
                let (mut c, req) = (c.clone(), req.clone());
                async move { c.put_audit_events(req).await }
            })
            .await
            .map(|r| r.into_inner().accepted)
        }
    }))
    .buffer_unordered(concurrency);
    let mut acked = 0;
    while let Some(r) = results.next().await {
        acked += r.context("put_audit_events")?;
    }
    crate::report_retries("audit ingest");
    Ok(acked)
}

pub(crate) struct Timing {
    pub(crate) ms: Vec<f64>,
    pub(crate) rows: usize,
    pub(crate) stats: Option<QueryStats>,
}

/// Runs one query over an open connection: the time from request to the last decoded batch.
async fn run_watchtrail(
    client: &mut QueryServiceClient<Channel>,
    sql: &str,
) -> anyhow::Result<(f64, usize, QueryStats)> {
    let started = Instant::now();
    let mut req = tonic::Request::new(QueryRequest {
        sql: sql.to_string(),
    });
    req.metadata_mut()
        .insert("authorization", super::bearer().parse()?);
    let mut stream = client
        .query(req)
        .await
        .with_context(|| sql.to_string())?
        .into_inner();
    let mut ipc = Vec::new();
    let mut stats = None;
    while let Some(m) = stream.message().await.with_context(|| sql.to_string())? {
        match m.payload {
            Some(Payload::ArrowIpc(b)) => ipc.extend_from_slice(&b),
            Some(Payload::Stats(s)) => stats = Some(s),
            None => {}
        }
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)?;
    let mut rows = 0;
    for b in reader {
        rows += b?.num_rows();
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok((ms, rows, stats.context("no stats message")?))
}

pub(crate) async fn time_watchtrail(
    grpc: &str,
    cases: &[Case],
    runs: usize,
) -> anyhow::Result<Vec<Timing>> {
    let ch = Channel::from_shared(grpc.to_string())?.connect().await?;
    let mut client = QueryServiceClient::new(ch)
        .max_decoding_message_size(256 << 20)
        .accept_compressed(CompressionEncoding::Zstd);
    let mut out = Vec::new();
    for case in cases {
        let (_, rows, stats) = run_watchtrail(&mut client, &case.sql).await?;
        let mut ms = Vec::new();
        for _ in 0..runs {
            ms.push(run_watchtrail(&mut client, &case.sql).await?.0);
        }
        out.push(Timing {
            ms,
            rows,
            stats: Some(stats),
        });
    }
    Ok(out)
}

/// Runs the cases in DuckDB (Python) over the active Parquet files of the given tables.
fn time_duckdb(
    python: &str,
    tables: &BTreeMap<&str, String>,
    cases: &[Case],
    runs: usize,
) -> anyhow::Result<Vec<Timing>> {
    let script = watchtrail_e2e::manifest_dir().join("python/duckdb_bench.py");
    let spec = serde_json::json!({
        "tables": tables,
        "queries": cases.iter().map(|c| c.sql.as_str()).collect::<Vec<_>>(),
        "runs": runs,
    });
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .inspect(crate::track)
        .with_context(|| format!("start {python} {}", script.display()))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(spec.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "DuckDB run failed ({}); is duckdb installed for {python}?",
            out.status
        );
    }
    let answers: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    answers
        .iter()
        .map(|a| {
            Ok(Timing {
                ms: a["ms"]
                    .as_array()
                    .context("ms")?
                    .iter()
                    .filter_map(serde_json::Value::as_f64)
                    .collect(),
                rows: a["rows"].as_u64().context("rows")? as usize,
                stats: None,
            })
        })
        .collect()
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Prints one Markdown row per query shape: medians of both engines and Watchtrail's statistics.
fn report(cases: &[Case], ours: &[Timing], duck: &[Timing]) -> anyhow::Result<()> {
    let mut shapes: Vec<&str> = Vec::new();
    for c in cases {
        if !shapes.contains(&c.shape) {
            shapes.push(c.shape);
        }
    }
    println!(
        "| query | Watchtrail median ms | DuckDB median ms | ratio | rows | files scanned / total | MB read |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for shape in shapes {
        let idx: Vec<usize> = (0..cases.len())
            .filter(|&i| cases[i].shape == shape)
            .collect();
        for &i in &idx {
            if ours[i].rows != duck[i].rows {
                bail!(
                    "row counts differ for {shape}: Watchtrail {} DuckDB {}\n{}",
                    ours[i].rows,
                    duck[i].rows,
                    cases[i].sql
                );
            }
        }
        let w = median(idx.iter().flat_map(|&i| ours[i].ms.clone()).collect());
        let d = median(idx.iter().flat_map(|&i| duck[i].ms.clone()).collect());
        let rows: usize = idx.iter().map(|&i| ours[i].rows).sum::<usize>() / idx.len();
        let (mut scanned, mut total, mut bytes) = (0u64, 0u64, 0u64);
        for &i in &idx {
            if let Some(s) = &ours[i].stats {
                scanned += s.files_scanned;
                total += s.files_total;
                bytes += s.bytes_scanned;
            }
        }
        let n = idx.len() as u64;
        println!(
            "| {shape} | {w:.1} | {d:.1} | {:.2} | {rows} | {} / {} | {:.1} |",
            w / d,
            scanned / n,
            total / n,
            bytes as f64 / n as f64 / 1e6
        );
    }
    Ok(())
}

pub(crate) async fn bench_query(o: Options) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = match &o.keep {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.as_path()
        }
        None => temp.path(),
    };
    let end = now_ms() / HOUR_MS * HOUR_MS;
    let start = end - o.hours as i64 * HOUR_MS;

    eprintln!(
        "generating TSBS cpu-only data: {} hosts, {} h at 10 s",
        o.hosts, o.hours
    );
    let (requests, _, points) = tsbs(
        o.hosts,
        o.hours,
        end,
        false,
        (TICKS_PER_REQUEST, HOSTS_PER_REQUEST),
    );
    let server = start_server(dir, &[])?;
    let c = client(&server.grpc).await?;
    let started = Instant::now();
    let mut results = futures::stream::iter(requests.into_iter().map(|r| {
        let c = c.clone();
        async move {
            crate::retrying(|| {
                let (mut c, r) = (c.clone(), r.clone());
                async move { c.put_metric_data(r).await }
            })
            .await
            .map(|r| r.into_inner().accepted)
        }
    }))
    .buffer_unordered(o.concurrency);
    let mut acked = 0u64;
    while let Some(r) = results.next().await {
        acked += r.context("put_metric_data")?;
    }
    crate::report_retries("metrics ingest");
    eprintln!(
        "ingested {acked} of {points} points in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if acked != points {
        bail!("acked {acked} of {points}");
    }
    let started = Instant::now();
    let audit_acked = if o.audit_events == 0 {
        0
    } else {
        ingest_audit(&server.grpc, o.audit_events, start, end, o.concurrency).await?
    };
    eprintln!(
        "ingested {audit_acked} audit events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if audit_acked != o.audit_events {
        bail!("acked {audit_acked} of {} audit events", o.audit_events);
    }
    let store = server.store.clone();
    stop_server(server)?;

    // A fresh server: nothing buffered, every row read from the committed files.
    let server = start_server(dir, &[])?;
    std::thread::sleep(Duration::from_millis(500));
    let tables: BTreeMap<&str, String> = ["metrics", "audit"]
        .into_iter()
        .filter(|t| *t == "metrics" || o.audit_events > 0)
        .map(|t| (t, store.join(TENANT).join(t).display().to_string()))
        .collect();

    let mut cases = tsbs_cases(start, end, o.hosts, o.instances);
    let tsbs_n = cases.len();
    if o.audit_events > 0 {
        cases.extend(audit_cases(start, end, o.instances));
    }
    eprintln!(
        "running {} queries × {} runs in Watchtrail",
        cases.len(),
        o.runs
    );
    let ours = time_watchtrail(&server.grpc, &cases, o.runs).await?;
    stop_server(server)?;
    if !crate::python_peer(&o.python, "duckdb")? {
        return Ok(());
    }
    eprintln!("running the same queries in DuckDB");
    let duck = time_duckdb(&o.python, &tables, &cases, o.runs)?;

    println!(
        "TSBS cpu-only: {} hosts, {} h at {} s: {points} points; audit: {} events; {} instances × {} runs per shape",
        o.hosts,
        o.hours,
        TICK_MS / 1000,
        o.audit_events,
        o.instances,
        o.runs
    );
    report(&cases[..tsbs_n], &ours[..tsbs_n], &duck[..tsbs_n])?;
    if o.audit_events > 0 {
        report(&cases[tsbs_n..], &ours[tsbs_n..], &duck[tsbs_n..])?;
    }
    Ok(())
}
