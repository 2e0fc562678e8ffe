//! `watchtrail-bench compaction`: a day of TSBS cpu-only data ingested with one flush per 10 s
//! of data (the files a day of live ingest with 10 s flushes leaves), then compacted: file
//! count, query latency before and after, compaction throughput and CPU; and
//! `watchtrail-bench rollup`: the same day taken through the three resolution tiers, with
//! rows, bytes, throughput and CPU of each rollup pass, statistics checked equal to the raw
//! points' and query latency at each tier.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use watchtrail_query::tables::TableKind;
use watchtrail_storage::deltalake::arrow;
use watchtrail_storage::deltalake::arrow::array::{
    ArrayRef, Float64Array, Int32Array, MapBuilder, MapFieldNames, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondArray,
};
use watchtrail_storage::lifecycle::{self, Policy, Tier};
use watchtrail_storage::store::Storage;
use watchtrail_storage::table_files::TableFiles;

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
                // The namespace the TSBS query shapes ask for (see `query::tsbs_cases`).
                "namespace" => Arc::new(StringArray::from(vec!["TSBS"; n])),
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

/// An empty metrics table and the hosts whose points fill it, for the hours that ended at the
/// last full `align` (an hour, or a day for the one-day windows of the coarse tiers), so that
/// every window is over and can be compacted.
struct Day {
    start: i64,
    end: i64,
    dir: tempfile::TempDir,
    store: String,
    storage: Storage,
    rng: super::Rng,
    hosts: Vec<super::Host>,
    table: watchtrail_storage::deltalake::DeltaTable,
}

impl Day {
    async fn new(hosts_n: usize, hours: u64, align_ms: i64) -> anyhow::Result<Self> {
        let now = super::now_ms();
        let end = now - now.rem_euclid(align_ms);
        let dir = tempfile::tempdir()?;
        let store = format!("file://{}", dir.path().join("store").display());
        let storage = Storage::from_url(&store)?;
        let mut rng = super::Rng(0x2545_f491_4f6c_dd1d);
        let hosts = super::hosts(hosts_n, &mut rng);
        let table = storage
            .open_or_create_table("default", TableKind::Metrics)
            .await?;
        Ok(Self {
            start: end - hours as i64 * HOUR_MS,
            end,
            dir,
            store,
            storage,
            rng,
            hosts,
            table,
        })
    }
}

pub(crate) async fn bench_compaction(
    hosts_n: usize,
    hours: u64,
    runs: usize,
) -> anyhow::Result<()> {
    let Day {
        start,
        end,
        dir,
        store,
        storage,
        mut rng,
        mut hosts,
        mut table,
    } = Day::new(hosts_n, hours, HOUR_MS).await?;
    let ticks = hours as i64 * 360;
    let started = Instant::now();
    let mut points = 0u64;
    // One file per tick, committed an hour (360 files) at a time: the files are what a day of
    // 10 s flushes leaves; the commits are batched because their cost grows with the table's
    // file count, which is a different measurement (see docs/benchmarks.md).
    let mut pending = Vec::new();
    for t in 0..ticks {
        let batch = tick_batch(&mut hosts, &mut rng, start + t * 10_000)?;
        points += batch.num_rows() as u64;
        pending.push(batch);
        if pending.len() == 360 || t == ticks - 1 {
            storage
                .append_files_to(&mut table, "default", TableKind::Metrics, &pending)
                .await?;
            pending.clear();
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

/// GetMetricStatistics-shaped questions over the day, in the statistic-set form that reads raw
/// points and rollups alike: (name, SQL).
fn statistics_cases(start: i64, end: i64) -> Vec<(&'static str, String)> {
    let range =
        format!("time >= to_timestamp_millis({start}) AND time < to_timestamp_millis({end})");
    let stats = "sum(coalesce(sample_count, 1)) AS n, sum(coalesce(sum, value)) AS s, \
                 min(coalesce(min, value)) AS lo, max(coalesce(max, value)) AS hi";
    vec![
        (
            "one host, hourly, one metric",
            format!(
                "SELECT date_bin(interval '1 hour', time, timestamp '1970-01-01T00:00:00Z') AS t, {stats} \
                 FROM metrics WHERE metric_name = 'usage_user' AND dimensions['hostname'] = 'host_7' \
                 AND {range} GROUP BY 1 ORDER BY 1"
            ),
        ),
        (
            "every host, hourly, one metric",
            format!(
                "SELECT dimensions['hostname'] AS h, date_bin(interval '1 hour', time, timestamp '1970-01-01T00:00:00Z') AS t, {stats} \
                 FROM metrics WHERE metric_name = 'usage_user' AND {range} GROUP BY 1, 2 ORDER BY 1, 2"
            ),
        ),
        (
            "every series, the whole day",
            format!(
                "SELECT metric_name, dimensions['hostname'] AS h, {stats} \
                 FROM metrics WHERE {range} GROUP BY 1, 2 ORDER BY 1, 2"
            ),
        ),
    ]
}

/// Runs each case `runs` times in process; the median milliseconds and the answer (as text,
/// sums rounded to 9 significant digits so that summation order does not show).
async fn time_statistics(
    engine: &watchtrail_query::engine::Engine,
    cases: &[(&'static str, String)],
    runs: usize,
) -> anyhow::Result<Vec<(f64, Vec<String>)>> {
    use watchtrail_storage::deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut out = Vec::new();
    for (_, sql) in cases {
        let mut ms = Vec::new();
        let mut answer = Vec::new();
        for _ in 0..runs.max(1) {
            let t = Instant::now();
            let r = engine.collect("default", sql).await?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            answer.clear();
            for b in &r.batches {
                let opts = FormatOptions::default();
                let cols: Vec<ArrayFormatter<'_>> = b
                    .columns()
                    .iter()
                    .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
                    .collect::<Result<_, _>>()?;
                for i in 0..b.num_rows() {
                    let row: Vec<String> = cols
                        .iter()
                        .map(|c| {
                            let v = c.value(i).to_string();
                            v.parse::<f64>().map_or(v, |x| format!("{x:.9e}"))
                        })
                        .collect();
                    answer.push(row.join(","));
                }
            }
        }
        out.push((median(ms), answer));
    }
    Ok(out)
}

pub(crate) async fn bench_rollup(hosts_n: usize, hours: u64, runs: usize) -> anyhow::Result<()> {
    let Day {
        start,
        end,
        dir: _dir,
        store,
        storage,
        mut rng,
        mut hosts,
        mut table,
    } = Day::new(hosts_n, hours, 24 * HOUR_MS).await?;
    // One file per hour of 10 s points (what compaction leaves of a day of live ingest).
    let mut points = 0u64;
    for h in 0..hours as i64 {
        let mut batches = Vec::new();
        for t in 0..360 {
            batches.push(tick_batch(
                &mut hosts,
                &mut rng,
                start + h * HOUR_MS + t * 10_000,
            )?);
        }
        let batch = arrow::compute::concat_batches(&TableKind::Metrics.schema(), &batches)?;
        points += batch.num_rows() as u64;
        storage
            .append_batch_to(&mut table, "default", TableKind::Metrics, &batch, None)
            .await?;
    }
    let engine = watchtrail_query::engine::Engine::for_store(
        &storage,
        watchtrail_query::engine::EngineConfig::default(),
    );
    let cases = statistics_cases(start, end);
    let raw_files = table_files(&store).await?;
    let mut rows = vec![(
        "raw 10 s points".to_string(),
        raw_files.rows(),
        raw_files.files.len(),
        raw_files.files.iter().map(|f| f.size).sum::<u64>(),
        None::<(f64, f64, f64)>,
    )];
    let baseline = time_statistics(&engine, &cases, runs).await?;
    let mut timings = vec![baseline.clone()];
    // Each pass takes the whole day one tier further (the ages are shrunk to seconds so the
    // data, which ended at the last midnight, qualifies for all three).
    let day = Duration::from_secs(86_400);
    let hour = Duration::from_secs(3600);
    let all = [
        Tier {
            after: Duration::ZERO,
            period: Duration::from_secs(60),
            window: hour,
        },
        Tier {
            after: Duration::from_secs(1),
            period: Duration::from_secs(300),
            window: day,
        },
        Tier {
            after: Duration::from_secs(2),
            period: hour,
            window: day,
        },
    ];
    let pid = std::process::id();
    let mut equal = true;
    for k in 1..=all.len() {
        let policy = Policy {
            settle: Duration::ZERO,
            tiers: all[..k].to_vec(),
            ..Policy::default()
        };
        let cpu0 = cpu_seconds(pid);
        let t0 = Instant::now();
        let s = lifecycle::run_table(&storage, "default", TableKind::Metrics, &policy).await?;
        let took = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid) - cpu0;
        let files = table_files(&store).await?;
        rows.push((
            format!("{} s statistic sets", all[k - 1].period.as_secs()),
            files.rows(),
            files.files.len(),
            files.files.iter().map(|f| f.size).sum(),
            Some((took, s.bytes_in as f64 / 1e6 / took, cpu)),
        ));
        let t = time_statistics(&engine, &cases, runs).await?;
        for (i, (_, answer)) in t.iter().enumerate() {
            if *answer != baseline[i].1 {
                equal = false;
                eprintln!(
                    "tier {k}: `{}` differs from the raw points' answer",
                    cases[i].0
                );
            }
        }
        timings.push(t);
    }
    println!(
        "\n{points} points, {hosts_n} hosts, {hours} h, peak RSS of the process {:.0} MiB\n",
        super::peak_rss_mib(pid)
    );
    println!(
        "| data | rows | files | MB | bytes/point | pass (s) | MB/s read | CPU-s |\n|---|---|---|---|---|---|---|---|"
    );
    for (label, r, f, b, pass) in &rows {
        let (took, mbs, cpu) = pass.map_or(("".into(), "".into(), "".into()), |(t, m, c)| {
            (format!("{t:.1}"), format!("{m:.1}"), format!("{c:.1}"))
        });
        println!(
            "| {label} | {r} | {f} | {:.2} | {:.3} | {took} | {mbs} | {cpu} |",
            *b as f64 / 1e6,
            *b as f64 / points as f64
        );
    }
    println!("\n| question (median ms) | raw | 60 s | 300 s | 3600 s |\n|---|---|---|---|---|");
    for (i, (name, _)) in cases.iter().enumerate() {
        let cells: Vec<String> = timings.iter().map(|t| format!("{:.1}", t[i].0)).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    println!(
        "\nanswers at every tier equal the raw points' (to 9 significant digits): {}",
        if equal { "yes" } else { "NO" }
    );
    if !equal {
        anyhow::bail!("rolled-up statistics differ from the raw points'");
    }
    Ok(())
}
