//! Compaction, rollups, retention and vacuum on a live server: counts stay exact while they
//! run; log groups keep retentions of their own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use watchtrail_e2e::{
    ServerOptions, TestServer, bin_path, grpc_query, scalar_i64, sql_count, wait_for,
};
use watchtrail_proto::v1::{
    Dimension, LogEvent, MetricSeries, PutLogEventsRequest, PutMetricDataRequest,
};
use watchtrail_query::tables::TableKind;
use watchtrail_storage::store::Storage;
use watchtrail_storage::table_files::TableFiles;

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
        // One-minute statistic sets after 3 hours: the live windows 4-6 hours back are
        // rolled up while the writer still adds to them.
        "--metric-tiers",
        "3h:1m",
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
    // Samples, not rows: a rollup turns many rows into one statistic set of the same count.
    let live = "SELECT CAST(sum(coalesce(sample_count, 1)) AS BIGINT) FROM metrics \
                WHERE dimensions['host'] = 'live'";
    let mut reads = 0;
    while !writer.is_finished() {
        let before = acked.load(Ordering::SeqCst);
        let (rows, _) = grpc_query(server.grpc, &server.key, live)
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
    // Compaction ends with one file per window, the windows past 3 hours hold only statistic
    // sets, and retention removed the old window whole.
    let store = opts.store.clone();
    let settled = Instant::now() + Duration::from_secs(60);
    let rolled_cutoff = this_hour - 4 * HOUR_MS;
    let raw_left = format!(
        "SELECT count(*) FROM metrics WHERE value IS NOT NULL \
         AND time < to_timestamp_millis({rolled_cutoff})"
    );
    let windows = loop {
        let w = files_per_window(&store).await;
        let raw_old = grpc_query(server.grpc, &server.key, &raw_left)
            .await
            .map(|(rows, _)| scalar_i64(&rows, 0));
        if w.len() == 6 && w.values().all(|n| *n == 1) && raw_old.ok() == Some(0) {
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
    let (rows, _) = grpc_query(server.grpc, &server.key, live)
        .await
        .expect("count");
    assert_eq!(scalar_i64(&rows, 0), total);
    let (rows, _) = grpc_query(
        server.grpc,
        &server.key,
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
    assert!(
        counter("watchtrail_rollup_rewrites_total") >= 2,
        "{metrics}"
    );
    // The rolled windows hold one statistic set per minute that had points: the writer's
    // points all fall in the first seconds of their hour.
    let (rows, _) = grpc_query(
        server.grpc,
        &server.key,
        &format!(
            "SELECT count(*) FROM metrics WHERE dimensions['host'] = 'live' \
             AND time < to_timestamp_millis({rolled_cutoff})"
        ),
    )
    .await
    .expect("rolled rows");
    assert!(
        (2..=4).contains(&scalar_i64(&rows, 0)),
        "{} rows in the two rolled windows",
        scalar_i64(&rows, 0)
    );
    assert!(counter("watchtrail_vacuum_files_deleted_total") > 0);
    println!("{reads} exact reads while compacting; {total} points; {windows:?}");
}

fn log_events(id: &str, group: &str, times: &[i64]) -> PutLogEventsRequest {
    PutLogEventsRequest {
        idempotency_id: id.into(),
        log_group_name: group.into(),
        log_stream_name: "s".into(),
        log_events: times
            .iter()
            .map(|t| LogEvent {
                timestamp_ms: *t,
                message: format!("{group} at {t}"),
            })
            .collect(),
        origin: None,
    }
}

fn logs_cli(server: &TestServer, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin_path("watchtrail"))
        .env("WATCHTRAIL_API_KEY", &server.key)
        .args(["--http", &format!("http://{}", server.http)])
        .arg("logs")
        .args(args)
        .output()
        .expect("run watchtrail logs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_groups_keep_retentions_of_their_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = ServerOptions::local(dir.path()).with_args(&[
        "--compaction-interval",
        "1s",
        "--compaction-settle",
        "0s",
        "--retention-logs",
        "7d",
        "--flush-max-age",
        "1s",
    ]);
    let server = TestServer::start(opts).await;
    let mut client = server.client().await;
    let now = chrono_now_ms();
    let day = 24 * HOUR_MS;
    // Three days old and new, in two groups; one request per group and age, so each lands
    // in a flush of its own or shares one: either way the files hold both groups.
    let old: Vec<i64> = (0..20).map(|i| now - 3 * day + i).collect();
    let new: Vec<i64> = (0..20).map(|i| now - 1000 + i).collect();
    for (id, group, times) in [
        ("a-old", "/svc/api", &old),
        ("b-old", "/svc/debug", &old),
        ("a-new", "/svc/api", &new),
        ("b-new", "/svc/debug", &new),
    ] {
        let r = client
            .put_log_events(log_events(id, group, times))
            .await
            .expect("put")
            .into_inner();
        assert_eq!(r.accepted, 20);
    }
    // A refused value names the field, in the CLI and over HTTP.
    let out = logs_cli(
        &server,
        &[
            "put-retention-policy",
            "--log-group-name",
            "/svc/debug",
            "--retention-in-days",
            "2",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--retention-in-days"));
    let a = server
        .send(
            "PUT",
            "/v1/log-groups/%2Fsvc%2Fdebug/retention",
            &[],
            br#"{"retentionInDays": 2}"#,
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.json()["error"]["field"],
        "retentionInDays",
        "{}",
        a.text()
    );
    let a = server
        .send(
            "PUT",
            "/v1/log-groups/..%2Fother/retention",
            &[],
            br#"{"retentionInDays": 1}"#,
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text());
    // /svc/debug keeps one day: its three-day-old events go, /svc/api's stay (7 days).
    let out = logs_cli(
        &server,
        &[
            "put-retention-policy",
            "--log-group-name",
            "/svc/debug",
            "--retention-in-days",
            "1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count = |group: &str| format!("SELECT count(*) FROM logs WHERE log_group = '{group}'");
    wait_for(
        "the old /svc/debug events to go",
        Duration::from_secs(60),
        || async { (sql_count(&server, &count("/svc/debug")).await == 20).then_some(()) },
    )
    .await;
    assert_eq!(sql_count(&server, &count("/svc/api")).await, 40);
    let old_debug = format!(
        "SELECT count(*) FROM logs WHERE log_group = '/svc/debug' AND time < to_timestamp_millis({})",
        now - day
    );
    assert_eq!(sql_count(&server, &old_debug).await, 0);
    // describe-log-groups shows both groups, and the policy.
    let out = logs_cli(
        &server,
        &["describe-log-groups", "--log-group-name-prefix", "/svc/"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let groups = v["logGroups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2, "{v}");
    assert_eq!(groups[0]["logGroupName"], "/svc/api");
    assert!(groups[0].get("retentionInDays").is_none());
    assert_eq!(groups[0]["storedEvents"], 40);
    assert_eq!(groups[1]["logGroupName"], "/svc/debug");
    assert_eq!(groups[1]["retentionInDays"], 1);
    // Deleting the policy puts the group back under --retention-logs; a second delete is 404.
    let out = logs_cli(
        &server,
        &["delete-retention-policy", "--log-group-name", "/svc/debug"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = logs_cli(
        &server,
        &["delete-retention-policy", "--log-group-name", "/svc/debug"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
}
