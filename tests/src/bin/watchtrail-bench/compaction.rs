//! `watchtrail-bench compaction`: a day of TSBS cpu-only data ingested with one flush per 10 s
//! of data (the files a day of live ingest with 10 s flushes leaves), then compacted: file
//! count, query latency before and after, compaction throughput and CPU.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use watchtrail_query::engine::TableFiles;
use watchtrail_query::lifecycle::{self, Policy};
use watchtrail_query::store::Storage;
use watchtrail_query::tables::TableKind;

use super::query::{median, time_watchtrail, tsbs_cases};
use super::{client, cpu_seconds, start_server, stop_server, tsbs};

const HOUR_MS: i64 = 3_600_000;

async fn counter(http: &str, name: &str) -> u64 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut s) = tokio::net::TcpStream::connect(http).await else {
        return 0;
    };
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body).await;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

async fn table_files(store: &str) -> anyhow::Result<TableFiles> {
    let storage = Storage::from_url(store)?;
    let table = storage
        .open_table("default", TableKind::Metrics)
        .await?
        .context("no metrics table")?;
    Ok(TableFiles::from_table(&storage, "default", TableKind::Metrics, &table, None).await?)
}

pub(crate) async fn bench_compaction(hosts: usize, hours: u64, runs: usize) -> anyhow::Result<()> {
    let now = super::now_ms();
    // The day ends at the last full hour, so that every window is over and can be compacted.
    let end = now - now.rem_euclid(HOUR_MS);
    eprintln!(
        "generating TSBS cpu-only data: {hosts} hosts, {hours} h at 10 s, one request per 10 s tick"
    );
    let (requests, _, points) = tsbs(hosts, hours, end, false, (1, hosts));
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path(), &["--flush-max-bytes", "1", "--no-compaction"])?;
    let mut c = client(&server.grpc).await?;
    let started = Instant::now();
    // One request per 10 s of data, each waited for until its flush is committed: one file per
    // 10 s, as live ingest with 10 s flushes leaves them.
    let n = requests.len() as u64;
    for (i, r) in requests.into_iter().enumerate() {
        c.put_metric_data(r).await.context("put_metric_data")?;
        let want = i as u64 + 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        while counter(&server.http, "watchtrail_flush_files_committed_total").await < want {
            if Instant::now() > deadline {
                bail!("flush {want} of {n} did not commit");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if i % 1000 == 999 {
            eprintln!(
                "{} of {n} flushes ({:.0} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let store = format!("file://{}", server.store.display());
    stop_server(server)?;
    let before = table_files(&store).await?;
    let bytes_before: u64 = before.files.iter().map(|f| f.size).sum();
    eprintln!(
        "{} files, {:.1} MB; timing queries",
        before.files.len(),
        bytes_before as f64 / 1e6
    );

    let start = end - hours as i64 * HOUR_MS;
    let cases = tsbs_cases(start, end, hosts, 3);
    let time_queries = |label: &'static str| {
        let dir = dir.path().to_path_buf();
        let cases = &cases;
        async move {
            let server = start_server(&dir, &["--no-compaction"])?;
            let _ = client(&server.grpc).await?;
            let t = time_watchtrail(&server.grpc, cases, runs).await?;
            stop_server(server)?;
            eprintln!("queries timed ({label})");
            anyhow::Ok(t)
        }
    };
    let q_before = time_queries("before").await?;

    let storage = Storage::from_url(&store)?;
    let policy = Policy {
        settle: Duration::ZERO,
        ..Policy::default()
    };
    let pid = std::process::id();
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let stats = lifecycle::run_table(&storage, "default", TableKind::Metrics, &policy).await?;
    let took = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let peak = super::peak_rss_mib(pid);
    let after = table_files(&store).await?;
    let bytes_after: u64 = after.files.iter().map(|f| f.size).sum();
    let q_after = time_queries("after").await?;

    println!(
        "\n{points} points, {hosts} hosts, {hours} h; {n} flushes in {:.0} s\n",
        started.elapsed().as_secs_f64()
    );
    println!("| | files | MB | bytes/point |\n|---|---|---|---|");
    println!(
        "| before compaction | {} | {:.1} | {:.3} |",
        before.files.len(),
        bytes_before as f64 / 1e6,
        bytes_before as f64 / points as f64
    );
    println!(
        "| after compaction | {} | {:.1} | {:.3} |",
        after.files.len(),
        bytes_after as f64 / 1e6,
        bytes_after as f64 / points as f64
    );
    println!(
        "\ncompaction: {} windows, {} files into {}, {:.1} s, {:.1} MB/s read, {:.1} CPU-s ({:.0}% of one core), peak RSS of the process {peak:.0} MiB\n",
        stats.windows,
        stats.files_in,
        stats.files_out,
        took,
        stats.bytes_in as f64 / 1e6 / took,
        cpu,
        cpu / took * 100.0
    );
    println!(
        "| query | before (ms, median) | after (ms, median) | files scanned before | after |\n|---|---|---|---|---|"
    );
    let mut shapes: Vec<&str> = Vec::new();
    for c in &cases {
        if !shapes.contains(&c.shape) {
            shapes.push(c.shape);
        }
    }
    for shape in shapes {
        let idx: Vec<usize> = cases
            .iter()
            .enumerate()
            .filter(|(_, c)| c.shape == shape)
            .map(|(i, _)| i)
            .collect();
        let med = |t: &[super::query::Timing]| {
            median(idx.iter().flat_map(|i| t[*i].ms.clone()).collect())
        };
        let files = |t: &[super::query::Timing]| {
            idx.iter()
                .filter_map(|i| t[*i].stats.as_ref().map(|s| s.files_scanned))
                .max()
                .unwrap_or(0)
        };
        println!(
            "| {shape} | {:.1} | {:.1} | {} | {} |",
            med(&q_before),
            med(&q_after),
            files(&q_before),
            files(&q_after)
        );
    }
    Ok(())
}
