//! The tables are open Delta Lake: Python `deltalake` + `pyarrow` read what the server wrote and
//! agree with Watchtrail's own answers.

use std::process::Command;

use serde_json::Value;
use watchtrail_e2e::{ServerOptions, TestServer, bin_path, python};
use watchtrail_proto::v1::{Dimension, MetricSeries, PutMetricDataRequest};

use super::{chrono_now_ms, log_batch};

fn sql_json(store: &str, sql: &str) -> Value {
    let out = Command::new(bin_path("watchtrail"))
        .args(["query", "--store", store, "--format", "json", sql])
        .output()
        .expect("run watchtrail query");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json answer")
}

#[tokio::test]
async fn python_deltalake_reads_what_watchtrail_wrote() {
    let python = python();
    let dir = tempfile::tempdir().expect("tempdir");
    // The subject is the CloudTrail data itself: no Watchtrail events of its own beside it.
    let opts = ServerOptions::local(dir.path()).with_args(&["--no-self-audit"]);
    let mut server = TestServer::start(opts.clone()).await;
    let mut client = server.client().await;
    let now = chrono_now_ms();
    for s in 0..5 {
        client
            .put_metric_data(PutMetricDataRequest {
                idempotency_id: format!("m{s}"),
                metric_data: vec![],
                series: vec![MetricSeries {
                    namespace: "Open".into(),
                    metric_name: "v".into(),
                    dimensions: vec![Dimension {
                        name: "s".into(),
                        value: s.to_string(),
                    }],
                    unit: "Count".into(),
                    storage_resolution: 60,
                    timestamps_ms: (0..100).map(|i| now - 600_000 + i * 1000).collect(),
                    values: (0..100)
                        .map(|i| f64::from(i) * 0.5 + f64::from(s))
                        .collect(),
                    statistic_points: vec![],
                }],
            })
            .await
            .expect("put metrics");
    }
    for b in 0..3 {
        client
            .put_log_events(log_batch(&format!("open-{b}"), 200))
            .await
            .expect("put logs");
    }
    super::import_fixtures(&server);
    server.stop().await;

    let root = opts.store.trim_start_matches("file://").to_string();
    let py = Command::new(&python)
        .arg(watchtrail_e2e::manifest_dir().join("python/read_tables.py"))
        .args([&root, "default"])
        .output()
        .expect("run python");
    assert!(
        py.status.success(),
        "python reader failed: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let theirs: Value = serde_json::from_slice(&py.stdout).expect("python json");

    let store = &opts.store;
    let m = &sql_json(
        store,
        "SELECT count(*) AS n, sum(value) AS s, CAST(max(time) AS BIGINT) AS t, \
         count(DISTINCT dimensions['s']) AS series FROM metrics",
    )[0];
    assert_eq!(theirs["metrics_rows"], m["n"]);
    assert_eq!(theirs["metrics_value_sum"].as_f64(), m["s"].as_f64());
    assert_eq!(theirs["metrics_max_time_us"], m["t"]);
    assert_eq!(theirs["metrics_series"], m["series"]);

    let l = &sql_json(
        store,
        "SELECT count(*) AS n, sum(octet_length(message)) AS b FROM logs",
    )[0];
    assert_eq!(theirs["logs_rows"], l["n"]);
    assert_eq!(theirs["logs_message_bytes"], l["b"]);

    let a = &sql_json(
        store,
        "SELECT count(*) AS n, count(DISTINCT eventid) AS d, \
         count(*) FILTER (WHERE errorcode = 'AccessDenied') AS denied FROM audit",
    )[0];
    assert_eq!(theirs["audit_rows"], a["n"]);
    assert_eq!(theirs["audit_rows"], 2900);
    assert_eq!(theirs["audit_distinct_eventids"], a["d"]);
    assert_eq!(theirs["audit_denied"], a["denied"]);
    let by_name = sql_json(
        store,
        "SELECT eventname AS k, count(*) AS n FROM audit GROUP BY 1",
    );
    let ours: serde_json::Map<String, Value> = by_name
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["k"].as_str().unwrap_or("<null>").to_string(),
                r["n"].clone(),
            )
        })
        .collect();
    assert_eq!(theirs["audit_by_eventname"], Value::Object(ours));
}
