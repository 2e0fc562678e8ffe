use std::sync::Arc;

use arrow::array::{
    Float64Array, Int32Array, MapBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};

use object_store::ObjectStoreExt as _;

use super::*;

const HOUR_US: i64 = 3_600_000_000;

fn file(path: &str, size: u64, lo: i64, hi: i64) -> DataFile {
    DataFile {
        path: Path::from(path),
        size,
        rows: Some(1),
        time_range: Some((lo, hi)),
        group_range: None,
    }
}

/// The active files of tenant `t`'s metrics table, as a reader sees them.
async fn active_files(storage: &Storage) -> TableFiles {
    let table = storage
        .open_table("t", TableKind::Metrics)
        .await
        .expect("open")
        .expect("table");
    TableFiles::from_table(storage, "t", TableKind::Metrics, &table, None)
        .await
        .expect("files")
}

#[test]
fn small_files_of_settled_windows_are_grouped_by_window() {
    let policy = Policy {
        target_bytes: 1000,
        ..Policy::default()
    };
    let now = 10 * HOUR_US + 30 * 60_000_000; // 10:30
    let files = vec![
        file("a", 10, HOUR_US, HOUR_US + 5),             // window 1
        file("b", 10, HOUR_US + 10, 3 * HOUR_US),        // window 1 (by its earliest row)
        file("c", 900, HOUR_US + 20, HOUR_US + 30),      // window 1 but already large
        file("d", 10, 2 * HOUR_US, 2 * HOUR_US + 1),     // window 2, alone
        file("e", 10, 9 * HOUR_US, 9 * HOUR_US + 1),     // window 9 ended 30 min ago, settle 10 min
        file("f", 10, 9 * HOUR_US + 5, 9 * HOUR_US + 9), // window 9
        file("g", 10, 10 * HOUR_US, 10 * HOUR_US + 1),   // window 10: not over yet
        file("h", 10, 10 * HOUR_US + 2, 10 * HOUR_US + 3),
    ];
    let plan = plan_compaction(&files, &policy, TableKind::Metrics, now);
    let names: Vec<Vec<String>> = plan
        .iter()
        .map(|g| g.files.iter().map(|f| f.path.to_string()).collect())
        .collect();
    // b spans windows 1 to 3, so d (window 2) joins a and b; e and f share window 9; window 10
    // is not over yet.
    assert_eq!(names, vec![vec!["a", "b", "d"], vec!["e", "f"]]);
    // A lone file is rewritten only when it spans windows.
    let lone = [file("x", 10, HOUR_US, HOUR_US + 1)];
    assert!(plan_compaction(&lone, &policy, TableKind::Metrics, now).is_empty());
    let mixed = [file("y", 10, HOUR_US, 2 * HOUR_US + 1)];
    assert_eq!(
        plan_compaction(&mixed, &policy, TableKind::Metrics, now).len(),
        1
    );
}

#[test]
fn retention_takes_files_whose_every_row_is_too_old() {
    let now = 100 * HOUR_US;
    let files = vec![
        file("old", 1, 10 * HOUR_US, 20 * HOUR_US),
        file("straddles", 1, 20 * HOUR_US, 80 * HOUR_US),
        file("new", 1, 90 * HOUR_US, 95 * HOUR_US),
    ];
    let gone = plan_retention(&files, Duration::from_secs(50 * 3600), now);
    assert_eq!(
        gone.iter().map(|f| f.path.to_string()).collect::<Vec<_>>(),
        vec!["old"]
    );
}

fn metrics_batch(series: &[(&str, &str)], times: &[i64]) -> RecordBatch {
    let n = series.len() * times.len();
    let names_of_map = arrow::array::MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    };
    let mut dims = MapBuilder::new(
        Some(names_of_map),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut names = Vec::new();
    let mut ts = Vec::new();
    let mut values = Vec::new();
    for (i, (k, v)) in series.iter().enumerate() {
        for t in times {
            dims.keys().append_value(k);
            dims.values().append_value(v);
            dims.append(true).expect("map");
            names.push("cpu");
            ts.push(*t);
            values.push(i as f64 + *t as f64);
        }
    }
    let schema = TableKind::Metrics.schema();
    let dims = dims.finish();
    let columns: Vec<arrow::array::ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> arrow::array::ArrayRef {
            match f.name().as_str() {
                "namespace" => Arc::new(StringArray::from(vec!["App"; n])),
                "metric_name" => Arc::new(StringArray::from(names.clone())),
                "dimensions" => Arc::new(dims.clone()),
                "time" => {
                    Arc::new(TimestampMicrosecondArray::from(ts.clone()).with_timezone("UTC"))
                }
                "value" => Arc::new(Float64Array::from(values.clone())),
                "unit" => Arc::new(StringArray::from(vec!["None"; n])),
                "storage_resolution" => Arc::new(Int32Array::from(vec![60; n])),
                _ => arrow::array::new_null_array(f.data_type(), n),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).expect("batch")
}

#[tokio::test]
async fn compaction_keeps_every_row_and_swaps_files_in_one_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::from_url(&format!("file://{}", dir.path().display())).expect("storage");
    let base = 5 * HOUR_US;
    for i in 0..6 {
        let times: Vec<i64> = (0..50).map(|j| base + (i * 50 + j) * 1_000_000).collect();
        let batch = metrics_batch(&[("host", "a"), ("host", "b")], &times);
        storage
            .append_batch("t", TableKind::Metrics, &batch)
            .await
            .expect("append");
    }
    let policy = Policy::default();
    let before = storage
        .read_table("t", TableKind::Metrics)
        .await
        .expect("read");
    let rows_before: usize = before.iter().map(RecordBatch::num_rows).sum();
    let stats = run_table(&storage, "t", TableKind::Metrics, &policy)
        .await
        .expect("pass");
    assert_eq!((stats.windows, stats.files_in, stats.files_out), (1, 6, 1));
    let files = active_files(&storage).await;
    assert_eq!(files.files.len(), 1);
    assert_eq!(files.rows(), rows_before as u64);
    let after = storage
        .read_table("t", TableKind::Metrics)
        .await
        .expect("read");
    let rows_after: usize = after.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows_after, rows_before);
    // Sorted by series, then time: all of host=a before host=b.
    let values: Vec<f64> = after
        .iter()
        .flat_map(|b| {
            b.column_by_name("value")
                .map(|c| {
                    arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(c)
                        .values()
                        .to_vec()
                })
                .unwrap_or_default()
        })
        .collect();
    // host=a has even values, host=b odd ones (see metrics_batch): one series after the other.
    let half = values.len() / 2;
    assert!(
        values[..half].iter().all(|v| *v as i64 % 2 == 0),
        "host=a first"
    );
    assert!(
        values[half..].iter().all(|v| *v as i64 % 2 == 1),
        "then host=b"
    );
    assert!(
        values[..half].windows(2).all(|w| w[0] <= w[1]),
        "each series in time order"
    );
    // A second pass has nothing left to do.
    let again = run_table(&storage, "t", TableKind::Metrics, &policy)
        .await
        .expect("pass");
    assert_eq!(again.windows, 0);
    // The replaced files stay until the grace period is over, then go.
    let parquet = |d: &std::path::Path| {
        std::fs::read_dir(d.join("t/metrics"))
            .expect("dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
            })
            .count()
    };
    assert_eq!(parquet(dir.path()), 7);
    assert_eq!(
        vacuum(&storage, "t", TableKind::Metrics, Duration::from_secs(3600))
            .await
            .expect("vacuum"),
        0
    );
    assert_eq!(parquet(dir.path()), 7);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        vacuum(&storage, "t", TableKind::Metrics, Duration::ZERO)
            .await
            .expect("vacuum"),
        6
    );
    assert_eq!(parquet(dir.path()), 1);
}

#[tokio::test]
async fn retention_drops_old_windows_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::from_url(&format!("file://{}", dir.path().display())).expect("storage");
    let now = chrono::Utc::now().timestamp_micros();
    let old: Vec<i64> = (0..10).map(|i| now - 48 * HOUR_US + i).collect();
    let new: Vec<i64> = (0..10).map(|i| now - HOUR_US + i).collect();
    storage
        .append_batch("t", TableKind::Metrics, &metrics_batch(&[("h", "a")], &old))
        .await
        .expect("append");
    storage
        .append_batch("t", TableKind::Metrics, &metrics_batch(&[("h", "a")], &new))
        .await
        .expect("append");
    let mut policy = Policy::default();
    policy
        .retention
        .insert(TableKind::Metrics, Duration::from_secs(24 * 3600));
    let stats = run_table(&storage, "t", TableKind::Metrics, &policy)
        .await
        .expect("pass");
    assert_eq!(stats.expired, 1);
    let rows: usize = storage
        .read_table("t", TableKind::Metrics)
        .await
        .expect("read")
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert_eq!(rows, 10);
}

#[tokio::test]
async fn files_that_span_windows_are_split_by_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::from_url(&format!("file://{}", dir.path().display())).expect("storage");
    // Each file holds rows of three windows, as a flush of backfilled data does.
    for i in 0..3 {
        let times: Vec<i64> = (0..3)
            .flat_map(|h| (0..10).map(move |j| (5 + h) * HOUR_US + i * 100 + j))
            .collect();
        storage
            .append_batch(
                "t",
                TableKind::Metrics,
                &metrics_batch(&[("host", "a")], &times),
            )
            .await
            .expect("append");
    }
    let stats = run_table(&storage, "t", TableKind::Metrics, &Policy::default())
        .await
        .expect("pass");
    assert_eq!((stats.files_in, stats.files_out), (3, 3));
    let files = active_files(&storage).await;
    let mut windows: Vec<(i64, i64, u64)> = files
        .files
        .iter()
        .map(|f| {
            let (lo, hi) = f.time_range.expect("range");
            (lo / HOUR_US, hi / HOUR_US, f.rows.unwrap_or(0))
        })
        .collect();
    windows.sort_unstable();
    assert_eq!(
        windows,
        vec![(5, 5, 30), (6, 6, 30), (7, 7, 30)],
        "one file per window, every row kept"
    );
    // Nothing left to do: each window has one file.
    assert_eq!(
        run_table(&storage, "t", TableKind::Metrics, &Policy::default())
            .await
            .expect("pass")
            .files_in,
        0
    );
}

#[tokio::test]
async fn commits_write_a_checkpoint_every_hundred_versions() {
    // Opening a long-lived table stays fast only with checkpoints; Delta's post-commit hook
    // writes them, and this test guards that the commits we make keep it on.
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::from_url(&format!("file://{}", dir.path().display())).expect("storage");
    let now = chrono::Utc::now().timestamp_micros();
    let mut table = storage
        .open_or_create_table("t", TableKind::Metrics)
        .await
        .expect("table");
    for i in 0..100 {
        let batch = metrics_batch(&[("h", "a")], &[now - i]);
        storage
            .append_batch_to(&mut table, "t", TableKind::Metrics, &batch, None)
            .await
            .expect("append");
    }
    let path = storage
        .table_path("t", TableKind::Metrics)
        .join("_delta_log")
        .join("_last_checkpoint");
    let bytes = storage
        .object_store()
        .get(&path)
        .await
        .expect("a checkpoint")
        .bytes()
        .await
        .expect("read");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert!(
        v["version"].as_i64().is_some_and(|v| v >= 90),
        "checkpoint at {v}"
    );
    let files = active_files(&storage).await;
    assert_eq!(files.files.len(), 100);
}

const MINUTE_US: i64 = 60_000_000;
const DAY_US: i64 = 24 * HOUR_US;

fn tiered() -> Policy {
    Policy {
        tiers: Tier::cloudwatch(Duration::from_secs(3600)),
        ..Policy::default()
    }
}

#[test]
fn tiers_plan_rollups_by_age_whatever_the_file_size() {
    let policy = Policy {
        target_bytes: 1000,
        ..tiered()
    };
    let now = 400 * DAY_US;
    let hour_ago = now - HOUR_US;
    let files = vec![
        // Raw, large and 4 hours old: rolled up to one minute alone.
        file("raw-large", 5000, now - 5 * HOUR_US, now - 4 * HOUR_US - 1),
        // Raw and an hour old: still full resolution.
        file("raw-recent", 10, hour_ago - 10, hour_ago),
        // Already at one minute and 4 hours old: nothing to do.
        file(
            "part-rollup-60s-a.zstd.parquet",
            10,
            now - 10 * HOUR_US,
            now - 10 * HOUR_US + 1,
        ),
        // Two one-minute files of one day 20 days ago: five minutes, one day window.
        file(
            "part-rollup-60s-b.zstd.parquet",
            10,
            now - 20 * DAY_US,
            now - 20 * DAY_US + 1,
        ),
        file(
            "part-rollup-60s-c.zstd.parquet",
            5000,
            now - 20 * DAY_US + 2 * HOUR_US,
            now - 20 * DAY_US + 2 * HOUR_US + 1,
        ),
        // 100 days old at five minutes: one hour.
        file(
            "part-rollup-300s-d.zstd.parquet",
            5000,
            now - 100 * DAY_US,
            now - 100 * DAY_US + 1,
        ),
        // 100 days old and already hourly: done.
        file(
            "part-rollup-3600s-e.zstd.parquet",
            10,
            now - 101 * DAY_US,
            now - 101 * DAY_US + 1,
        ),
    ];
    let plan = plan_compaction(&files, &policy, TableKind::Metrics, now);
    let got: Vec<(Vec<String>, Option<u64>, u64)> = plan
        .iter()
        .map(|r| {
            (
                r.files.iter().map(|f| f.path.to_string()).collect(),
                r.rollup.map(|p| p.as_secs()),
                r.window.as_secs(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (vec!["raw-large".into()], Some(60), 3600),
            (
                vec![
                    "part-rollup-60s-b.zstd.parquet".into(),
                    "part-rollup-60s-c.zstd.parquet".into()
                ],
                Some(300),
                86_400
            ),
            (
                vec!["part-rollup-300s-d.zstd.parquet".into()],
                Some(3600),
                86_400
            ),
        ]
    );
    // Tiers are for metrics only.
    assert!(plan_compaction(&files, &policy, TableKind::Logs, now).is_empty());
    assert_eq!(
        rollup_period_of(&Path::from("t/metrics/part-rollup-300s-x.zstd.parquet")),
        Some(Duration::from_secs(300))
    );
    assert_eq!(
        rollup_period_of(&Path::from("part-compact-x.zstd.parquet")),
        None
    );
}

#[test]
fn tier_lists_are_checked() {
    let hour = Duration::from_secs(3600);
    assert!(Tier::validate(&Tier::cloudwatch(hour), hour).is_ok());
    let mut t = Tier::cloudwatch(hour);
    t[1].period = Duration::from_secs(7); // does not divide a day, nor is it a multiple of 60
    assert!(Tier::validate(&t, hour).is_err());
    let mut t = Tier::cloudwatch(hour);
    t.swap(0, 1);
    assert!(Tier::validate(&t, hour).is_err(), "ages must grow");
    let mut t = Tier::cloudwatch(hour);
    t[0].window = Duration::from_secs(1800);
    assert!(
        Tier::validate(&t, hour).is_err(),
        "windows are multiples of the compaction window"
    );
}

/// Rows of one namespace over several series with values that make float sums inexact, and a
/// statistic-set row among them.
fn varied_metrics(times: &[i64]) -> RecordBatch {
    let raw = metrics_batch(&[("host", "a"), ("host", "b"), ("host", "c")], times);
    // Spread the values: v -> v * 0.37 + sin(v), so no two are alike.
    let values = raw
        .column_by_name("value")
        .map(|c| {
            arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(c)
                .values()
                .iter()
                .map(|v| (v / 1e6) * 0.37 + (v / 1e6).sin())
                .collect::<Vec<f64>>()
        })
        .unwrap_or_default();
    let n = values.len();
    let mut cols = raw.columns().to_vec();
    let schema = raw.schema();
    let idx = |name: &str| schema.index_of(name).expect("column");
    // Every seventh row is a statistic set (count 3, sum 3v, min v-1, max v+1).
    let set = |i: usize| i % 7 == 3;
    cols[idx("value")] = Arc::new(Float64Array::from(
        (0..n)
            .map(|i| (!set(i)).then_some(values[i]))
            .collect::<Vec<_>>(),
    ));
    for (name, f) in [
        ("sample_count", (|_v: f64| 3.0) as fn(f64) -> f64),
        ("sum", |v| 3.0 * v),
        ("min", |v| v - 1.0),
        ("max", |v| v + 1.0),
    ] {
        cols[idx(name)] = Arc::new(Float64Array::from(
            (0..n)
                .map(|i| set(i).then(|| f(values[i])))
                .collect::<Vec<_>>(),
        ));
    }
    let mut res = vec![60; n];
    for (i, r) in res.iter_mut().enumerate() {
        if i % 2 == 0 {
            *r = 1;
        }
    }
    cols[idx("storage_resolution")] = Arc::new(Int32Array::from(res));
    RecordBatch::try_new(schema, cols).expect("batch")
}

/// GetMetricStatistics' five statistics per series and hour, as rows of numbers.
async fn hourly_statistics(storage: &Storage) -> Vec<(String, i64, [f64; 5])> {
    use arrow::array::{Array as _, AsArray as _};
    // Plain DataFusion over the table's active files (the SQL engine is a crate above this one).
    let ctx = SessionContext::new();
    let url = url::Url::parse("watchtrail-test://store").expect("url");
    ctx.register_object_store(&url, storage.object_store());
    let table = storage
        .open_table("t", TableKind::Metrics)
        .await
        .expect("open")
        .expect("table");
    let files = TableFiles::from_table(storage, "t", TableKind::Metrics, &table, None)
        .await
        .expect("files");
    let paths: Vec<String> = files
        .files
        .iter()
        .map(|f| format!("watchtrail-test://store/{}", f.path))
        .collect();
    let schema = TableKind::Metrics.schema();
    let df = ctx
        .read_parquet(paths, ParquetReadOptions::default().schema(&schema))
        .await
        .expect("read");
    ctx.register_table("metrics", df.into_view())
        .expect("register");
    let r = ctx
        .sql(
            "SELECT dimensions['host'] AS host, \
               CAST(date_bin(interval '1 hour', time, timestamp '1970-01-01T00:00:00Z') AS BIGINT) AS hour, \
               sum(coalesce(sample_count, 1)) AS samplecount, sum(coalesce(sum, value)) AS sum, \
               sum(coalesce(sum, value)) / sum(coalesce(sample_count, 1)) AS average, \
               min(coalesce(min, value)) AS minimum, max(coalesce(max, value)) AS maximum \
             FROM metrics GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .await
        .expect("statistics")
        .collect()
        .await
        .expect("rows");
    let mut out = Vec::new();
    for b in &r {
        let host = b.column(0).as_string::<i32>();
        let hour = b.column(1).as_primitive::<arrow::datatypes::Int64Type>();
        let f = |c: usize, i: usize| {
            let a = b.column(c).as_primitive::<arrow::datatypes::Float64Type>();
            assert!(!a.is_null(i));
            a.value(i)
        };
        for i in 0..b.num_rows() {
            out.push((
                host.value(i).to_string(),
                hour.value(i),
                [f(2, i), f(3, i), f(4, i), f(5, i), f(6, i)],
            ));
        }
    }
    out
}

#[tokio::test]
async fn statistics_over_rollups_equal_statistics_over_the_raw_points() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::from_url(&format!("file://{}", dir.path().display())).expect("storage");
    let now = chrono::Utc::now().timestamp_micros();
    let this_hour = now - now.rem_euclid(HOUR_US);
    // Points every 10 s over two hours of each age: 5 hours, 20 days and 80 days ago (every
    // tier), plus the last hour, which stays raw. Two files per hour.
    for age in [5 * HOUR_US, 20 * DAY_US, 80 * DAY_US, 0] {
        let start = this_hour - age - 2 * HOUR_US;
        for half in 0..4 {
            let times: Vec<i64> = (0..180)
                .map(|j| start + half * 30 * MINUTE_US + j * 10_000_000 + 1234)
                .collect();
            storage
                .append_batch("t", TableKind::Metrics, &varied_metrics(&times))
                .await
                .expect("append");
        }
    }
    let raw_rows = active_files(&storage).await.rows();
    let before = hourly_statistics(&storage).await;
    // The first pass takes each file to the tier its age calls for.
    let stats = run_table(&storage, "t", TableKind::Metrics, &tiered())
        .await
        .expect("pass");
    assert!(stats.rolled_up >= 3, "{stats:?}");
    let files = active_files(&storage).await;
    let mut periods: Vec<Option<u64>> = files
        .files
        .iter()
        .map(|f| rollup_period_of(&f.path).map(|p| p.as_secs()))
        .collect();
    periods.sort_unstable();
    periods.dedup();
    assert_eq!(periods, vec![None, Some(60), Some(300), Some(3600)]);
    // Two hours of three series: raw in the last hours, then 120 one-minute sets, 24
    // five-minute sets and 2 hourly sets per series.
    assert_eq!(raw_rows, 4 * 4 * 180 * 3);
    assert_eq!(files.rows(), 4 * 180 * 3 + (120 + 24 + 2) * 3);
    // A rollup row is a statistic set stamped at the start of its period.
    let batches = storage
        .read_table("t", TableKind::Metrics)
        .await
        .expect("read");
    for b in &batches {
        let ts = arrow::array::AsArray::as_primitive::<arrow::datatypes::TimestampMicrosecondType>(
            b.column_by_name("time").expect("time"),
        );
        let value = b.column_by_name("value").expect("value");
        for i in 0..b.num_rows() {
            let t = ts.value(i);
            if t < this_hour - 3 * HOUR_US {
                assert_eq!(
                    t.rem_euclid(MINUTE_US),
                    0,
                    "an old row at {t} is not on a minute"
                );
                assert!(arrow::array::Array::is_null(value, i));
            }
        }
    }
    // Every statistic of every series and hour is what the raw points gave.
    let after = hourly_statistics(&storage).await;
    assert_same_statistics(&before, &after);
    // Nothing is left to do, and another pass changes nothing.
    let again = run_table(&storage, "t", TableKind::Metrics, &tiered())
        .await
        .expect("pass");
    assert_eq!((again.windows, again.rolled_up), (0, 0), "{again:?}");
    assert_same_statistics(&after, &hourly_statistics(&storage).await);
}

/// Equal series and hours, and statistics equal up to float summation order (parallel
/// aggregation adds in no fixed order).
fn assert_same_statistics(before: &[(String, i64, [f64; 5])], after: &[(String, i64, [f64; 5])]) {
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(after) {
        assert_eq!((&b.0, b.1), (&a.0, a.1));
        for k in 0..5 {
            let (x, y) = (b.2[k], a.2[k]);
            assert!(
                (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                "{} hour {} statistic {k}: raw {x} vs rolled up {y}",
                b.0,
                b.1
            );
        }
    }
}

fn logs_batch(groups: &[&str], times: &[i64]) -> RecordBatch {
    let schema = TableKind::Logs.schema();
    let mut g = Vec::new();
    let mut t = Vec::new();
    for group in groups {
        for time in times {
            g.push(*group);
            t.push(*time);
        }
    }
    let n = g.len();
    let columns: Vec<arrow::array::ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> arrow::array::ArrayRef {
            match f.name().as_str() {
                "time" | "ingest_time" => {
                    Arc::new(TimestampMicrosecondArray::from(t.clone()).with_timezone("UTC"))
                }
                "log_group" => Arc::new(StringArray::from(g.clone())),
                "log_stream" => Arc::new(StringArray::from(vec!["s"; n])),
                "message" => Arc::new(StringArray::from(vec!["hello"; n])),
                _ => arrow::array::new_null_array(f.data_type(), n),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).expect("batch")
}

async fn rows_per_group(storage: &Storage) -> BTreeMap<String, usize> {
    use arrow::array::AsArray as _;
    let mut out = BTreeMap::new();
    for b in storage
        .read_table("t", TableKind::Logs)
        .await
        .expect("read")
    {
        let g = b
            .column_by_name("log_group")
            .expect("group")
            .as_string::<i32>();
        for i in 0..b.num_rows() {
            *out.entry(g.value(i).to_string()).or_insert(0) += 1;
        }
    }
    out
}

#[tokio::test]
async fn log_groups_keep_their_own_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::from_url(&format!("file://{}", dir.path().display())).expect("storage");
    let now = chrono::Utc::now().timestamp_micros();
    // Three groups in every file: 10 days old, 2 days old, and new.
    for age in [10 * DAY_US, 2 * DAY_US, 0] {
        let times: Vec<i64> = (0..5).map(|i| now - age - HOUR_US + i).collect();
        storage
            .append_batch(
                "t",
                TableKind::Logs,
                &logs_batch(&["/app", "/audit", "/debug"], &times),
            )
            .await
            .expect("append");
    }
    // The files record which groups they hold.
    let table = storage
        .open_table("t", TableKind::Logs)
        .await
        .expect("open")
        .expect("table");
    let files = TableFiles::from_table(&storage, "t", TableKind::Logs, &table, None)
        .await
        .expect("files");
    assert!(
        files
            .files
            .iter()
            .all(|f| f.group_range == Some(("/app".to_string(), "/debug".to_string())))
    );
    // /debug keeps 1 day, /audit 30 days, everything else the kind's 7 days.
    let mut policy = Policy::default();
    policy
        .retention
        .insert(TableKind::Logs, Duration::from_secs(7 * 86_400));
    let groups: BTreeMap<String, Duration> = [
        ("/debug".to_string(), Duration::from_secs(86_400)),
        ("/audit".to_string(), Duration::from_secs(30 * 86_400)),
        // A group in no file: it must not make any file be rewritten.
        ("/zzz".to_string(), Duration::from_secs(86_400)),
    ]
    .into();
    let stats = run_table_with(&storage, "t", TableKind::Logs, &policy, &groups)
        .await
        .expect("pass");
    assert_eq!(
        stats.expired, 2,
        "the 10-day and 2-day files were cut: {stats:?}"
    );
    let rows = rows_per_group(&storage).await;
    // /app: 10-day-old rows past the 7-day default; /debug: only today's; /audit: all.
    assert_eq!(rows.get("/app"), Some(&10));
    assert_eq!(rows.get("/debug"), Some(&5));
    assert_eq!(rows.get("/audit"), Some(&15));
    // A second pass finds nothing more to cut.
    let again = run_table_with(&storage, "t", TableKind::Logs, &policy, &groups)
        .await
        .expect("pass");
    assert_eq!(again.expired, 0, "{again:?}");
    // Once /audit's policy is gone, its old rows follow the 7-day default, and the 10-day
    // file, which held nothing else any more, goes whole.
    let groups: BTreeMap<String, Duration> =
        [("/debug".to_string(), Duration::from_secs(86_400))].into();
    run_table_with(&storage, "t", TableKind::Logs, &policy, &groups)
        .await
        .expect("pass");
    let rows = rows_per_group(&storage).await;
    assert_eq!(rows.get("/audit"), Some(&10));
    assert_eq!(rows.get("/app"), Some(&10));
}

#[test]
fn group_retention_plans_cuts_only_where_a_group_may_be() {
    let now = 100 * DAY_US;
    let mut f = file("a", 10, now - 10 * DAY_US, now - 10 * DAY_US + 1);
    f.group_range = Some(("/b".into(), "/d".into()));
    let groups: BTreeMap<String, Duration> = [
        ("/a".to_string(), Duration::from_secs(86_400)),
        ("/c".to_string(), Duration::from_secs(86_400)),
        ("/e".to_string(), Duration::from_secs(86_400)),
    ]
    .into();
    let (whole, cut) =
        plan_log_group_retention(&[f.clone()], None, &groups, Duration::from_secs(3600), now);
    assert!(whole.is_empty());
    assert_eq!(cut.len(), 1);
    let drop = cut[0].drop.as_ref().expect("a cut");
    let names: Vec<&str> = drop.groups.iter().map(|(g, _)| g.as_str()).collect();
    assert_eq!(names, vec!["/c"], "only the group in the file's range");
    assert_eq!(
        drop.groups[0].1,
        now - DAY_US,
        "the group keeps its last day of windows"
    );
    assert_eq!(drop.others, None);
    // Default past too and no named group kept in range: the file goes whole.
    let (whole, cut) = plan_log_group_retention(
        &[f],
        Some(Duration::from_secs(86_400)),
        &groups,
        Duration::from_secs(3600),
        now,
    );
    assert_eq!((whole.len(), cut.len()), (1, 0));
}

#[tokio::test]
async fn an_append_from_an_older_snapshot_commits_after_a_rollup_removed_files() {
    // The flusher appends from the table state it last saw. A rollup or retention commit in
    // between removes files with dataChange: true; a blind append must not conflict with it.
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::from_url(&format!("file://{}", dir.path().display())).expect("storage");
    let now = chrono::Utc::now().timestamp_micros();
    let old: Vec<i64> = (0..10).map(|i| now - 5 * HOUR_US + i * 1_000_000).collect();
    storage
        .append_batch("t", TableKind::Metrics, &metrics_batch(&[("h", "a")], &old))
        .await
        .expect("append");
    let mut stale = storage
        .open_table("t", TableKind::Metrics)
        .await
        .expect("open")
        .expect("table");
    let stats = run_table(&storage, "t", TableKind::Metrics, &tiered())
        .await
        .expect("pass");
    assert_eq!(stats.rolled_up, 1);
    storage
        .append_batch_to(
            &mut stale,
            "t",
            TableKind::Metrics,
            &metrics_batch(&[("h", "b")], &[now]),
            None,
        )
        .await
        .expect("an append commits after a concurrent rollup");
    assert_eq!(active_files(&storage).await.files.len(), 2);
}
