use std::sync::Arc;

use arrow::array::{
    Float64Array, Int32Array, MapBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};

use super::*;

const HOUR_US: i64 = 3_600_000_000;

fn file(path: &str, size: u64, lo: i64, hi: i64) -> DataFile {
    DataFile {
        path: Path::from(path),
        size,
        rows: Some(1),
        time_range: Some((lo, hi)),
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
    let plan = plan_compaction(&files, &policy, now);
    let names: Vec<Vec<String>> = plan
        .iter()
        .map(|g| g.iter().map(|f| f.path.to_string()).collect())
        .collect();
    // b spans windows 1 to 3, so d (window 2) joins a and b; e and f share window 9; window 10
    // is not over yet.
    assert_eq!(names, vec![vec!["a", "b", "d"], vec!["e", "f"]]);
    // A lone file is rewritten only when it spans windows.
    let lone = [file("x", 10, HOUR_US, HOUR_US + 1)];
    assert!(plan_compaction(&lone, &policy, now).is_empty());
    let mixed = [file("y", 10, HOUR_US, 2 * HOUR_US + 1)];
    assert_eq!(plan_compaction(&mixed, &policy, now).len(), 1);
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
