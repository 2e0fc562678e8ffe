//! SQL against a running server: one consistent snapshot of files and buffer while flushes
//! commit, the HTTP and gRPC APIs, limits, and the CLI.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use watchtrail_e2e::{ServerOptions, TestServer, bin_path, grpc_query, scalar_i64};
use watchtrail_proto::tonic::Code;
use watchtrail_proto::v1::{Dimension, MetricSeries, PutMetricDataRequest};
use watchtrail_storage::deltalake::arrow;

use super::{chrono_now_ms, log_batch};

/// Writers ingest logs and metrics while flushes commit every few hundred milliseconds; a
/// reader counts in a tight loop. Every count must include everything acknowledged before the
/// query started (nothing missed, visible at once) and nothing more than was sent before it
/// ended, with no row twice.
#[tokio::test]
async fn counts_stay_exact_while_ingesting_and_flushing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = ServerOptions::local(dir.path()).with_args(&["--flush-max-age", "200ms"]);
    let server = TestServer::start(opts).await;
    let grpc = server.grpc;
    let key = server.key.clone();
    let acked_logs = Arc::new(AtomicI64::new(0));
    let sent_logs = Arc::new(AtomicI64::new(0));
    let acked_points = Arc::new(AtomicI64::new(0));
    let sent_points = Arc::new(AtomicI64::new(0));
    let deadline = Instant::now() + Duration::from_secs(8);

    let mut writers = Vec::new();
    for w in 0..2 {
        let mut client = server.client().await;
        let (acked_logs, sent_logs) = (Arc::clone(&acked_logs), Arc::clone(&sent_logs));
        let (acked_points, sent_points) = (Arc::clone(&acked_points), Arc::clone(&sent_points));
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while Instant::now() < deadline {
                let n = 50;
                sent_logs.fetch_add(n, Ordering::SeqCst);
                let resp = client
                    .put_log_events(log_batch(&format!("w{w}-{i}"), n as usize))
                    .await
                    .expect("put logs")
                    .into_inner();
                assert_eq!(resp.accepted, n as u64);
                acked_logs.fetch_add(n, Ordering::SeqCst);

                let now = chrono_now_ms();
                let points = 40;
                sent_points.fetch_add(points, Ordering::SeqCst);
                let series = MetricSeries {
                    namespace: "E2E".into(),
                    metric_name: "load".into(),
                    dimensions: vec![Dimension {
                        name: "writer".into(),
                        value: format!("w{w}"),
                    }],
                    unit: "Count".into(),
                    storage_resolution: 1,
                    // Unique timestamps per writer: w, batch i, point j.
                    timestamps_ms: (0..points).map(|j| now - 60_000 + j).collect(),
                    values: (0..points).map(|j| j as f64).collect(),
                    statistic_points: vec![],
                };
                let resp = client
                    .put_metric_data(PutMetricDataRequest {
                        idempotency_id: format!("m-w{w}-{i}"),
                        metric_data: vec![],
                        series: vec![series],
                    })
                    .await
                    .expect("put metrics")
                    .into_inner();
                assert_eq!(resp.accepted, points as u64);
                acked_points.fetch_add(points, Ordering::SeqCst);
                i += 1;
            }
        }));
    }

    let mut queries = 0;
    let mut flushed_seen = false;
    while Instant::now() < deadline {
        let floor_logs = acked_logs.load(Ordering::SeqCst);
        let floor_points = acked_points.load(Ordering::SeqCst);
        let (rows, stats) = grpc_query(
            grpc,
            &key,
            "SELECT (SELECT count(*) FROM logs) AS logs, \
             (SELECT count(DISTINCT message) FROM logs) AS distinct_logs, \
             (SELECT count(*) FROM metrics) AS points",
        )
        .await
        .expect("query");
        let ceil_logs = sent_logs.load(Ordering::SeqCst);
        let ceil_points = sent_points.load(Ordering::SeqCst);
        let (logs, distinct, points) = (
            scalar_i64(&rows, 0),
            scalar_i64(&rows, 1),
            scalar_i64(&rows, 2),
        );
        assert_eq!(logs, distinct, "a log row was read twice");
        assert!(
            (floor_logs..=ceil_logs).contains(&logs),
            "logs: saw {logs}, acked {floor_logs}, sent {ceil_logs}"
        );
        assert!(
            (floor_points..=ceil_points).contains(&points),
            "metrics: saw {points}, acked {floor_points}, sent {ceil_points}"
        );
        flushed_seen |= stats.files_scanned > 0 && stats.buffered_rows_scanned > 0;
        queries += 1;
    }
    for w in writers {
        w.await.expect("writer");
    }
    assert!(queries >= 5, "only {queries} queries ran");
    assert!(
        flushed_seen,
        "no query read committed files and buffered rows together"
    );
    // Once the writers are done, every acknowledged point is there exactly once.
    let (rows, _) = grpc_query(grpc, &key, "SELECT count(*) FROM metrics")
        .await
        .expect("query");
    assert_eq!(scalar_i64(&rows, 0), acked_points.load(Ordering::SeqCst));
}

#[tokio::test]
async fn http_api_answers_in_every_format_and_maps_errors_to_statuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = ServerOptions::local(dir.path()).with_args(&[
        "--query-timeout",
        "2s",
        "--query-memory-limit",
        "8M",
    ]);
    let server = TestServer::start(opts).await;
    let mut client = server.client().await;
    client
        .put_log_events(log_batch("h1", 3))
        .await
        .expect("put logs");

    let sql = "SELECT log_group, count(*) AS n FROM logs GROUP BY log_group";
    let json = server.http_query(sql, "application/json").await;
    assert_eq!(json.status, 200, "{}", json.text());
    let v = json.json();
    assert_eq!(v["rows"][0]["n"], 3, "{v}");
    assert_eq!(v["columns"][1]["name"], "n");
    assert_eq!(v["stats"]["buffered_rows_scanned"], 3);
    assert!(json.headers.contains_key("x-watchtrail-query-stats"));

    let csv = server.http_query(sql, "text/csv").await;
    assert_eq!(csv.status, 200);
    assert!(csv.text().starts_with("log_group,n\n"), "{}", csv.text());
    assert!(csv.text().ends_with(",3\n"), "{}", csv.text());

    let nd = server.http_query(sql, "application/x-ndjson").await;
    assert_eq!(nd.text().lines().count(), 1);

    let ipc = server
        .http_query(sql, "application/vnd.apache.arrow.stream")
        .await;
    assert_eq!(ipc.status, 200);
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc.body), None)
        .expect("arrow stream");
    let n: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(n, 1);

    let bad = server.http_query("SELEC nope", "application/json").await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("SELEC"),
        "{}",
        bad.text()
    );
    let unknown = server
        .http_query("SELECT nope FROM logs", "application/json")
        .await;
    assert_eq!(unknown.status, 400);
    assert!(unknown.text().contains("nope"), "{}", unknown.text());
    let write = server
        .http_query("DROP TABLE logs", "application/json")
        .await;
    assert_eq!(write.status, 403, "{}", write.text());

    let started = Instant::now();
    let slow = server
        .http_query(
            "SELECT count(*) FROM range(1, 30000) a CROSS JOIN range(1, 30000) b CROSS JOIN range(1, 100) c",
            "application/json",
        )
        .await;
    assert_eq!(slow.status, 504, "{}", slow.text());
    assert!(started.elapsed() < Duration::from_secs(15));
    let big = server
        .http_query(
            "SELECT count(*) FROM range(1, 5000000) a JOIN range(1, 5000000) b ON a.value = b.value",
            "application/json",
        )
        .await;
    assert_eq!(big.status, 429, "{}", big.text());

    // Everyone else is still served.
    let (status, _) = server.http_get("/healthz").await;
    assert_eq!(status, 200);
    let again = server.http_query(sql, "application/json").await;
    assert_eq!(again.status, 200);

    // The same limits over gRPC.
    let err = grpc_query(server.grpc, &server.key, "DELETE FROM logs")
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = grpc_query(server.grpc, &server.key, "SELECT x FROM nowhere")
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn cli_queries_a_server_and_a_store_in_every_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = ServerOptions::local(dir.path());
    let mut server = TestServer::start(opts.clone()).await;
    let key = server.key.clone();
    let mut client = server.client().await;
    client
        .put_log_events(log_batch("c1", 4))
        .await
        .expect("put logs");
    let cli = |args: &[&str]| {
        let out = Command::new(bin_path("watchtrail"))
            .env("WATCHTRAIL_API_KEY", &key)
            .args(args)
            .output()
            .expect("run watchtrail");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let server_url = format!("http://{}", server.grpc);
    let sql = "SELECT count(*) AS n FROM logs";
    let (out, err) = cli(&["--server", &server_url, "query", sql, "--stats"]);
    assert!(out.contains("| 4 |"), "{out}");
    assert!(err.contains("1 rows"), "{err}");
    let (out, _) = cli(&["--server", &server_url, "query", "--format", "csv", sql]);
    assert_eq!(out, "n\n4\n");
    let (out, _) = cli(&["--server", &server_url, "query", "--format", "json", sql]);
    assert_eq!(out.trim(), r#"[{"n":4}]"#);
    let (out, _) = cli(&["--server", &server_url, "query", "--format", "ndjson", sql]);
    assert_eq!(out.trim(), r#"{"n":4}"#);

    server.stop().await;
    let store = opts.store.clone();
    let (out, _) = cli(&["query", "--store", &store, "--format", "csv", sql]);
    assert_eq!(out, "n\n4\n");

    let bad = Command::new(bin_path("watchtrail"))
        .args([
            "query",
            "--store",
            &store,
            "INSERT INTO logs SELECT * FROM logs",
        ])
        .output()
        .expect("run watchtrail");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("read-only"));
}
