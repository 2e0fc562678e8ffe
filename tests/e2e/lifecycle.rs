//! Compaction, retention and vacuum on a live server: counts stay exact while they run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use watchtrail_e2e::{ServerOptions, TestServer, grpc_query, scalar_i64, wait_for};
use watchtrail_proto::v1::{Dimension, MetricSeries, PutMetricDataRequest};
use watchtrail_query::engine::TableFiles;
use watchtrail_query::store::Storage;
use watchtrail_query::tables::TableKind;

use super::chrono_now_ms;

const HOUR_MS: i64 = 3_600_000;

fn series(host: &str, times: Vec<i64>) -> MetricSeries {
    MetricSeries {
        namespace: "Life".into(),
        metric_name: "load".into(),
        dimensions: vec![Dimension {
            name: "host".into(),
            value: host.into(),
        }],
        unit: "Count".into(),
        storage_resolution: 60,
        values: times.iter().map(|t| (*t % 1000) as f64).collect(),
        timestamps_ms: times,
        statistic_points: Vec::new(),
    }
}

/// Files per one-hour window of the committed metrics table.
async fn files_per_window(store: &str) -> BTreeMap<i64, usize> {
    let storage = Storage::from_url(store).expect("storage");
    let Some(table) = storage
        .open_table("default", TableKind::Metrics)
        .await
        .expect("open")
    else {
        return BTreeMap::new();
    };
    let files = TableFiles::from_table(&storage, "default", TableKind::Metrics, &table, None)
        .await
        .expect("files");
    let mut out = BTreeMap::new();
    for f in files.files {
        if let Some((lo, _)) = f.time_range {
            *out.entry(lo.div_euclid(HOUR_MS * 1000)).or_insert(0) += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_retention_keep_counts_exact_under_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = ServerOptions::local(dir.path()).with_args(&[
        "--compaction-interval",
        "1s",
        "--compaction-settle",
        "0s",
        "--compaction-target",
        "64M",
        "--query-timeout",
        "2s",
        "--vacuum-grace",
        "3s",
        "--retention-metrics",
        "2d",
    ]);
    let server = TestServer::start(opts.clone()).await;
    let mut client = server.client().await;
    let now = chrono_now_ms();
    let this_hour = now - now.rem_euclid(HOUR_MS);
    // Old data, past the 2-day retention (CloudWatch takes points up to two weeks old).
    let old: Vec<i64> = (0..100)
        .map(|i| now - 5 * 24 * HOUR_MS + i * 1000)
        .collect();
    client
        .put_metric_data(PutMetricDataRequest {
            idempotency_id: "old".into(),
            metric_data: Vec::new(),
            series: vec![series("old", old)],
        })
        .await
        .expect("old points");
    // Committed on its own, so that no file mixes it with the live windows.
    let store = opts.store.clone();
    wait_for("the old points committed", Duration::from_secs(30), || {
        let store = store.clone();
        async move { (!files_per_window(&store).await.is_empty()).then_some(()) }
    })
    .await;
    // Writers fill the six finished hours before this one, a little per request, so that each
    // window collects many small files; a reader counts all the while.
    let acked = Arc::new(AtomicI64::new(0));
    let sent = Arc::new(AtomicI64::new(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    let writer = {
        let (acked, sent) = (Arc::clone(&acked), Arc::clone(&sent));
        let mut client = server.client().await;
        tokio::spawn(async move {
            let mut round = 0i64;
            while Instant::now() < deadline {
                let series: Vec<MetricSeries> = (1..=6)
                    .map(|h| {
                        let base = this_hour - h * HOUR_MS;
                        series(
                            "live",
                            (0..20).map(|i| base + (round * 20 + i) % HOUR_MS).collect(),
                        )
                    })
                    .collect();
                let n: i64 = series.iter().map(|s| s.values.len() as i64).sum();
                sent.fetch_add(n, Ordering::SeqCst);
                let resp = client
                    .put_metric_data(PutMetricDataRequest {
                        idempotency_id: format!("live-{round}"),
                        metric_data: Vec::new(),
                        series,
                    })
                    .await
                    .expect("put")
                    .into_inner();
                assert_eq!(resp.accepted as i64, n);
                acked.fetch_add(n, Ordering::SeqCst);
                round += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let live = "SELECT count(*) FROM metrics WHERE dimensions['host'] = 'live'";
    let mut reads = 0;
    while !writer.is_finished() {
        let before = acked.load(Ordering::SeqCst);
        let (rows, _) = grpc_query(server.grpc, "default", live)
            .await
            .unwrap_or_else(|e| panic!("a query failed while compaction ran: {e}"));
        let after = sent.load(Ordering::SeqCst);
        let got = scalar_i64(&rows, 0);
        assert!(
            before <= got && got <= after,
            "count {got} outside [{before}, {after}]"
        );
        reads += 1;
    }
    writer.await.expect("writer");
    let total = acked.load(Ordering::SeqCst);
    // Compaction ends with one file per window; retention removed the old window whole.
    let store = opts.store.clone();
    let settled = Instant::now() + Duration::from_secs(60);
    let windows = loop {
        let w = files_per_window(&store).await;
        if w.len() == 6 && w.values().all(|n| *n == 1) {
            break w;
        }
        assert!(
            Instant::now() < settled,
            "files per window never came to one: {w:?}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(windows.len(), 6, "{windows:?}");
    let (rows, _) = grpc_query(server.grpc, "default", live)
        .await
        .expect("count");
    assert_eq!(scalar_i64(&rows, 0), total);
    let (rows, _) = grpc_query(
        server.grpc,
        "default",
        "SELECT count(*) FROM metrics WHERE dimensions['host'] = 'old'",
    )
    .await
    .expect("old");
    assert_eq!(scalar_i64(&rows, 0), 0, "retention dropped the old window");
    // After the grace period the replaced files are gone from storage too.
    let table_dir = dir.path().join("store/default/metrics");
    wait_for("vacuum", Duration::from_secs(30), || {
        let table_dir = table_dir.clone();
        async move {
            let n = std::fs::read_dir(&table_dir)
                .ok()?
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
                })
                .count();
            (n == 6).then_some(())
        }
    })
    .await;
    let (_, metrics) = server.http_get("/metrics").await;
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        counter("watchtrail_compaction_files_in_total") > 6,
        "{metrics}"
    );
    assert!(counter("watchtrail_retention_files_removed_total") >= 1);
    assert!(counter("watchtrail_vacuum_files_deleted_total") > 0);
    println!("{reads} exact reads while compacting; {total} points; {windows:?}");
}
