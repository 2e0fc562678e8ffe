//! `watchtrail-bench compaction`: a day of TSBS cpu-only data ingested with one flush per 10 s
//! of data (the files a day of live ingest with 10 s flushes leaves), then compacted: file
//! count, query latency before and after, compaction throughput and CPU.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use watchtrail_query::deltalake::arrow;
use watchtrail_query::deltalake::arrow::array::{
    ArrayRef, Float64Array, Int32Array, MapBuilder, MapFieldNames, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondArray,
};
use watchtrail_query::engine::TableFiles;
use watchtrail_query::lifecycle::{self, Policy};
use watchtrail_query::store::Storage;
use watchtrail_query::tables::TableKind;

use super::query::{median, time_watchtrail, tsbs_cases};
use super::{client, cpu_seconds, start_server, stop_server};

const HOUR_MS: i64 = 3_600_000;

async fn table_files(store: &str) -> anyhow::Result<TableFiles> {
    let storage = Storage::from_url(store)?;
    let table = storage
        .open_table("default", TableKind::Metrics)
        .await?
        .context("no metrics table")?;
    Ok(TableFiles::from_table(&storage, "default", TableKind::Metrics, &table, None).await?)
}

/// One 10 s tick of every host's ten fields, as a batch of the metrics table.
fn tick_batch(
    hosts: &mut [super::Host],
    rng: &mut super::Rng,
    ts_ms: i64,
) -> anyhow::Result<RecordBatch> {
    let schema = TableKind::Metrics.schema();
    let names = MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    };
    let mut dims = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
    let mut metric = StringBuilder::new();
    let mut values = Vec::new();
    for h in hosts.iter_mut() {
        for (f, v) in h.values.iter_mut().enumerate() {
            *v = (*v + rng.step()).clamp(0.0, 100.0);
            values.push(v.trunc());
            metric.append_value(super::FIELDS[f]);
            for (k, tv) in &h.tags {
                dims.keys().append_value(k);
                dims.values().append_value(tv);
            }
            dims.append(true)?;
        }
    }
    let n = values.len();
    let dims = dims.finish();
    let metric = metric.finish();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.name().as_str() {
                "namespace" => Arc::new(StringArray::from(vec!["cpu"; n])),
                "metric_name" => Arc::new(metric.clone()),
                "dimensions" => Arc::new(dims.clone()),
                "time" => Arc::new(
                    TimestampMicrosecondArray::from(vec![ts_ms * 1000; n]).with_timezone("UTC"),
                ),
                "value" => Arc::new(Float64Array::from(values.clone())),
                "unit" => Arc::new(StringArray::from(vec!["Percent"; n])),
                "storage_resolution" => Arc::new(Int32Array::from(vec![60; n])),
                _ => arrow::array::new_null_array(f.data_type(), n),
            }
        })
        .collect();
    Ok(RecordBatch::try_new(schema, columns)?)
}

pub(crate) async fn bench_compaction(
    hosts_n: usize,
    hours: u64,
    runs: usize,
) -> anyhow::Result<()> {
    let now = super::now_ms();
    // The day ends at the last full hour, so that every window is over and can be compacted.
    let end = now - now.rem_euclid(HOUR_MS);
    let start = end - hours as i64 * HOUR_MS;
    let dir = tempfile::tempdir()?;
    let store = format!("file://{}", dir.path().join("store").display());
    let storage = Storage::from_url(&store)?;
    // One commit per 10 s of data, each a file the way the flusher writes it (sorted, ZSTD):
    // the table a day of live ingest with 10 s flushes leaves.
    let mut rng = super::Rng(0x2545_f491_4f6c_dd1d);
    let mut hosts = super::hosts(hosts_n, &mut rng);
    let mut table = storage
        .open_or_create_table("default", TableKind::Metrics)
        .await?;
    let ticks = hours as i64 * 360;
    let started = Instant::now();
    let mut points = 0u64;
    for t in 0..ticks {
        let batch = tick_batch(&mut hosts, &mut rng, start + t * 10_000)?;
        points += batch.num_rows() as u64;
        storage
            .append_batch_to(&mut table, "default", TableKind::Metrics, &batch, None)
            .await?;
        if t % 1000 == 999 {
            eprintln!(
                "{} of {ticks} files ({:.0} s)",
                t + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let n = ticks;
    let before = table_files(&store).await?;
    let bytes_before: u64 = before.files.iter().map(|f| f.size).sum();
    eprintln!(
        "{} files, {:.1} MB; timing queries",
        before.files.len(),
        bytes_before as f64 / 1e6
    );

    let cases = tsbs_cases(start, end, hosts_n, 3);
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
        "\n{points} points, {hosts_n} hosts, {hours} h; {n} files written in {:.0} s\n",
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
