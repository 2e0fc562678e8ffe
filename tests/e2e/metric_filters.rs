//! Metric filters make real metrics: in `metrics`, listable, from their creation on, exactly
//! once across crashes, with their default value, and backfilled on request.

use std::time::Duration;

use serde_json::{Value, json};
use watchtrail_e2e::{ServerOptions, TestServer, now_ms};
use watchtrail_proto::v1::{LogEvent, PutLogEventsRequest};

async fn put_filter(server: &TestServer, filter: &Value) {
    let name = filter["filterName"].as_str().expect("name");
    let a = server
        .send(
            "PUT",
            &format!("/v1/metric-filters/{name}"),
            &[],
            filter.to_string().as_bytes(),
        )
        .await;
    assert!(a.status == 200 || a.status == 201, "{}", a.text());
}

async fn put_lines(server: &TestServer, id: &str, group: &str, lines: &[(i64, &str)]) {
    let mut client = server.client().await;
    let resp = client
        .put_log_events(PutLogEventsRequest {
            idempotency_id: id.into(),
            log_group_name: group.into(),
            log_stream_name: "s".into(),
            log_events: lines
                .iter()
                .map(|(t, m)| LogEvent {
                    timestamp_ms: *t,
                    message: (*m).to_string(),
                })
                .collect(),
            origin: None,
        })
        .await
        .expect("put log events")
        .into_inner();
    assert_eq!(resp.accepted, lines.len() as u64);
}

/// Rows of a query as JSON objects.
async fn rows(server: &TestServer, sql: &str) -> Vec<Value> {
    let a = server.http_query(sql, "application/json").await;
    assert_eq!(a.status, 200, "{sql}: {}", a.text());
    a.json()["rows"].as_array().cloned().unwrap_or_default()
}

/// `(path, points, sum, unit)` of the Latency metric per Path.
async fn latency(server: &TestServer) -> Vec<(String, i64, f64, String)> {
    rows(
        server,
        "SELECT dimensions['Path'] AS path, count(*) AS n, sum(value) AS total, min(unit) AS unit \
         FROM metrics WHERE namespace = 'App' AND metric_name = 'Latency' GROUP BY 1 ORDER BY 1",
    )
    .await
    .iter()
    .map(|r| {
        (
            r["path"].as_str().unwrap_or_default().to_string(),
            r["n"].as_i64().unwrap_or(-1),
            r["total"].as_f64().unwrap_or(f64::NAN),
            r["unit"].as_str().unwrap_or_default().to_string(),
        )
    })
    .collect()
}

fn latency_filter() -> Value {
    json!({
        "filterName": "latency",
        "filterPattern": "{ $.latency > 0 }",
        "logGroupName": "app",
        "metricTransformations": [{
            "metricName": "Latency", "metricNamespace": "App", "metricValue": "$.latency",
            "unit": "Milliseconds", "dimensions": {"Path": "$.path"}
        }]
    })
}

async fn run(cmd: &mut tokio::process::Command) -> String {
    let out = cmd.output().await.expect("run the CLI");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_filter_publishes_its_metric_from_creation_and_backfills_on_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = TestServer::start(ServerOptions::local(dir.path())).await;
    let t = now_ms() - 60_000;
    put_lines(
        &server,
        "before",
        "app",
        &[
            (t, r#"{"latency": 10, "path": "/a"}"#),
            (t + 1, r#"{"latency": 12, "path": "/a"}"#),
        ],
    )
    .await;
    put_filter(&server, &latency_filter()).await;
    let described = server
        .send("GET", "/v1/metric-filters", &[], b"")
        .await
        .json();
    let created = described["metricFilters"][0]["creationTime"]
        .as_i64()
        .expect("creationTime");
    assert!(created >= t, "{described}");
    put_lines(
        &server,
        "after",
        "app",
        &[
            (t + 2, r#"{"latency": 20, "path": "/a"}"#),
            (t + 3, r#"{"latency": 30, "path": "/b"}"#),
            // No datum: no path (a dimension), a value that is no number, not JSON, no match.
            (t + 4, r#"{"latency": 40}"#),
            (t + 5, r#"{"latency": "slow", "path": "/a"}"#),
            (t + 6, "latency 50 /a"),
            (t + 7, r#"{"latency": 0, "path": "/a"}"#),
        ],
    )
    .await;
    // Points are in `metrics` at once, with the filter's unit and dimensions; the events from
    // before the filter made none.
    let ms = "Milliseconds".to_string();
    assert_eq!(
        latency(&server).await,
        vec![
            ("/a".into(), 1, 20.0, ms.clone()),
            ("/b".into(), 1, 30.0, ms.clone())
        ]
    );
    let listed: Value =
        serde_json::from_str(&run(server.cli().args(["list-metrics", "--namespace", "App"])).await)
            .expect("list-metrics JSON");
    let mut paths: Vec<&str> = listed["Metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .map(|m| {
            assert_eq!(m["MetricName"], "Latency");
            m["Dimensions"][0]["Value"].as_str().unwrap_or_default()
        })
        .collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/a", "/b"], "{listed}");

    // The backfill counts the two events from before the creation, and only those; run again,
    // it sends the same batches, which are applied once.
    let start = chrono::DateTime::from_timestamp_millis(t - 60_000)
        .expect("time")
        .to_rfc3339();
    for _ in 0..2 {
        let out = run(server.cli().args([
            "metric-filters",
            "backfill",
            "latency",
            "--start-time",
            &start,
        ]))
        .await;
        assert!(
            out.contains("2 points stored from 2 matching events"),
            "{out}"
        );
    }
    assert_eq!(
        latency(&server).await,
        vec![
            ("/a".into(), 3, 42.0, ms.clone()),
            ("/b".into(), 1, 30.0, ms.clone())
        ]
    );
    let refused = server
        .cli()
        .args(["metric-filters", "backfill", "nope", "--start-time", &start])
        .output()
        .await
        .expect("run");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("`nope` does not exist"));

    // Committed and read back after a restart: the same points.
    server.stop().await;
    server.start_again().await;
    assert_eq!(
        latency(&server).await,
        vec![
            ("/a".into(), 3, 42.0, ms.clone()),
            ("/b".into(), 1, 30.0, ms)
        ]
    );
    server.stop().await;
}

/// Points still only in the WAL when the server dies are replayed once; after a clean stop
/// they are committed once.
#[tokio::test]
async fn points_survive_a_crash_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ServerOptions::local(dir.path()).with_args(&["--flush-max-age", "1h"]);
    let mut server = TestServer::start(options).await;
    put_filter(&server, &latency_filter()).await;
    let t = now_ms();
    let lines: Vec<(i64, String)> = (0..50)
        .map(|i| {
            (
                t + i,
                format!(r#"{{"latency": {i}, "path": "/p{}"}}"#, i % 2),
            )
        })
        .collect();
    let refs: Vec<(i64, &str)> = lines.iter().map(|(t, m)| (*t, m.as_str())).collect();
    put_lines(&server, "batch", "app", &refs).await;
    let expect = vec![
        // Latency 0 does not match `> 0`.
        (
            "/p0".to_string(),
            24,
            (0..50).step_by(2).sum::<i64>() as f64,
            "Milliseconds".to_string(),
        ),
        (
            "/p1".to_string(),
            25,
            (1..50).step_by(2).sum::<i64>() as f64,
            "Milliseconds".to_string(),
        ),
    ];
    assert_eq!(latency(&server).await, expect);
    server.kill9().await;
    server.start_again().await;
    assert_eq!(latency(&server).await, expect);
    // Drained to the tables on a clean stop, read from them after.
    server.stop().await;
    server.start_again().await;
    assert_eq!(latency(&server).await, expect);
    server.stop().await;
}

/// `defaultValue`: a minute in which the log group had events and none matched gets one
/// point of the default; a minute with a match gets none.
#[tokio::test]
async fn a_default_value_fills_minutes_with_events_but_no_match() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ServerOptions::local(dir.path()).with_quick_alarms();
    let mut server = TestServer::start(options).await;
    for (name, group) in [("quiet", "quiet"), ("busy", "busy")] {
        put_filter(
            &server,
            &json!({
                "filterName": name, "filterPattern": "ERROR", "logGroupName": group,
                "metricTransformations": [{"metricName": name, "metricNamespace": "Defaults",
                    "metricValue": "1", "defaultValue": 0, "unit": "Count"}]
            }),
        )
        .await;
    }
    // The evaluator closes, at each minute boundary, the minute that ended a minute before:
    // events in the middle of that minute.
    let next_boundary = (now_ms() / 60_000 + 1) * 60_000;
    let minute = next_boundary - 120_000;
    put_lines(&server, "q", "quiet", &[(minute + 30_000, "all fine")]).await;
    put_lines(
        &server,
        "b",
        "busy",
        &[(minute + 30_000, "all fine"), (minute + 31_000, "ERROR x")],
    )
    .await;
    let sql = "SELECT metric_name AS m, CAST(time AS BIGINT) AS t, value AS v, unit AS u \
               FROM metrics WHERE namespace = 'Defaults' ORDER BY 1, 2";
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let got = loop {
        let r = rows(&server, sql).await;
        if r.iter().any(|r| r["m"] == "quiet") {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no default value for the quiet minute after 90 s: {r:?}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let quiet: Vec<&Value> = got.iter().filter(|r| r["m"] == "quiet").collect();
    assert_eq!(quiet.len(), 1, "{got:?}");
    assert_eq!(quiet[0]["v"], 0.0);
    assert_eq!(quiet[0]["u"], "Count");
    // `time` is microseconds: the point stands at the start of the minute.
    assert_eq!(quiet[0]["t"].as_i64(), Some(minute * 1000), "{got:?}");
    // The busy minute has its match and no default.
    let busy: Vec<&Value> = got.iter().filter(|r| r["m"] == "busy").collect();
    assert_eq!(busy.len(), 1, "{got:?}");
    assert_eq!(busy[0]["v"], 1.0);
    server.stop().await;
}

/// CloudWatch's limit: 100 metric filters per log group. The 101st is refused by name; a
/// replacement of one of the 100, or a filter of another group, is not.
#[tokio::test]
async fn a_log_group_takes_at_most_a_hundred_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = TestServer::start(ServerOptions::local(dir.path())).await;
    let filter = |name: &str, group: &str| {
        json!({
            "filterName": name, "filterPattern": "ERROR", "logGroupName": group,
            "metricTransformations": [{"metricName": name, "metricNamespace": "Many",
                "metricValue": "1"}]
        })
    };
    for i in 0..100 {
        put_filter(&server, &filter(&format!("f{i}"), "app")).await;
    }
    let refused = server
        .send(
            "PUT",
            "/v1/metric-filters/f100",
            &[],
            filter("f100", "app").to_string().as_bytes(),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused.text().contains("logGroupName") && refused.text().contains("at most 100"),
        "{}",
        refused.text()
    );
    put_filter(&server, &filter("f7", "app")).await;
    put_filter(&server, &filter("f100", "other")).await;
    // Every filter of the group counts a matching line once.
    put_lines(&server, "one", "app", &[(now_ms(), "ERROR once")]).await;
    let a = server
        .http_query(
            "SELECT count(DISTINCT metric_name) AS n, count(*) AS points FROM metrics WHERE namespace = 'Many'",
            "application/json",
        )
        .await;
    assert_eq!(a.json()["rows"][0]["n"], 100, "{}", a.text());
    assert_eq!(a.json()["rows"][0]["points"], 100, "{}", a.text());
    server.stop().await;
}
