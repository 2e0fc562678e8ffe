//! `watchtrail list-metrics` and `get-metric-statistics` against a running server, with
//! CloudWatch's answers: the reference's statistics vector, exact dimension matching, pagination.

use std::process::Command;

use serde_json::Value;
use watchtrail_e2e::{ServerOptions, TestServer, bin_path};
use watchtrail_proto::v1::{
    Dimension, MetricDatum, PutMetricDataRequest, StatisticSet, metric_datum,
};

use super::chrono_now_ms;

fn datum(dims: &[(&str, &str)], ts: i64, data: metric_datum::Data) -> MetricDatum {
    MetricDatum {
        namespace: "App".into(),
        metric_name: "Latency".into(),
        dimensions: dims
            .iter()
            .map(|(n, v)| Dimension {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect(),
        timestamp_ms: ts,
        data: Some(data),
        unit: "Milliseconds".into(),
        storage_resolution: 60,
    }
}

fn cli(server: &TestServer, args: &[&str]) -> Value {
    let out = Command::new(bin_path("watchtrail"))
        .env("WATCHTRAIL_API_KEY", &server.key)
        .args(["--server", &format!("http://{}", server.grpc)])
        .args(args)
        .output()
        .expect("run watchtrail");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// Milliseconds since the epoch as RFC 3339 (UTC, whole seconds).
fn iso(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a calendar date (proleptic Gregorian).
fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[tokio::test]
async fn cloudwatch_commands_answer_like_cloudwatch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(ServerOptions::local(dir.path())).await;
    let mut client = server.client().await;
    // A whole minute a few minutes ago, so the period is fully in the past.
    let t0 = (chrono_now_ms() / 60_000 - 5) * 60_000;
    let i1 = [("InstanceId", "i-1")];
    let data = vec![
        // The reference's vector 2, 4, 5: two raw values and one statistic set.
        datum(&i1, t0 + 1000, metric_datum::Data::Value(2.0)),
        datum(&i1, t0 + 2000, metric_datum::Data::Value(4.0)),
        datum(
            &i1,
            t0 + 3000,
            metric_datum::Data::StatisticValues(StatisticSet {
                sample_count: 1.0,
                sum: 5.0,
                minimum: 5.0,
                maximum: 5.0,
            }),
        ),
        // The next minute, and two other metrics that must not be mixed in.
        datum(&i1, t0 + 61_000, metric_datum::Data::Value(10.0)),
        datum(
            &[("InstanceId", "i-1"), ("Az", "a")],
            t0 + 1000,
            metric_datum::Data::Value(100.0),
        ),
        datum(
            &[("InstanceId", "i-2")],
            t0 + 1000,
            metric_datum::Data::Value(1000.0),
        ),
    ];
    let resp = client
        .put_metric_data(PutMetricDataRequest {
            idempotency_id: "cw".into(),
            metric_data: data,
            series: vec![],
        })
        .await
        .expect("put")
        .into_inner();
    assert_eq!(resp.accepted, 6);

    let (start, end) = (iso(t0), iso(t0 + 120_000));
    let stats = cli(
        &server,
        &[
            "get-metric-statistics",
            "--namespace",
            "App",
            "--metric-name",
            "Latency",
            "--dimensions",
            "Name=InstanceId,Value=i-1",
            "--start-time",
            &start,
            "--end-time",
            &end,
            "--period",
            "60",
            "--statistics",
            "SampleCount",
            "Sum",
            "Average",
            "Minimum",
            "Maximum",
        ],
    );
    assert_eq!(stats["Label"], "Latency");
    let points = stats["Datapoints"].as_array().expect("datapoints");
    assert_eq!(points.len(), 2, "{stats}");
    let p = &points[0];
    assert_eq!(p["Timestamp"], start.as_str());
    assert_eq!(p["SampleCount"], 3.0);
    assert_eq!(p["Sum"], 11.0);
    assert_eq!(p["Average"], 3.6666666666666665);
    assert_eq!(p["Minimum"], 2.0);
    assert_eq!(p["Maximum"], 5.0);
    assert_eq!(p["Unit"], "Milliseconds");
    assert_eq!(points[1]["Sum"], 10.0);

    let pct = cli(
        &server,
        &[
            "get-metric-statistics",
            "--namespace",
            "App",
            "--metric-name",
            "Latency",
            "--dimensions",
            "Name=InstanceId,Value=i-2",
            "--start-time",
            &start,
            "--end-time",
            &end,
            "--period",
            "120",
            "--extended-statistics",
            "p99",
        ],
    );
    assert_eq!(
        pct["Datapoints"][0]["ExtendedStatistics"]["p99"], 1000.0,
        "{pct}"
    );

    let all = cli(&server, &["list-metrics", "--namespace", "App"]);
    assert_eq!(all["Metrics"].as_array().map(Vec::len), Some(3), "{all}");
    let filtered = cli(
        &server,
        &["list-metrics", "--dimensions", "Name=InstanceId,Value=i-1"],
    );
    assert_eq!(
        filtered["Metrics"].as_array().map(Vec::len),
        Some(2),
        "{filtered}"
    );
    let any_az = cli(&server, &["list-metrics", "--dimensions", "Name=Az"]);
    assert_eq!(
        any_az["Metrics"].as_array().map(Vec::len),
        Some(1),
        "{any_az}"
    );
    assert_eq!(
        any_az["Metrics"][0]["Dimensions"],
        serde_json::json!([{"Name": "Az", "Value": "a"}, {"Name": "InstanceId", "Value": "i-1"}])
    );

    let page1 = cli(&server, &["list-metrics", "--max-items", "2"]);
    assert_eq!(page1["Metrics"].as_array().map(Vec::len), Some(2));
    let token = page1["NextToken"].as_str().expect("a NextToken");
    let page2 = cli(
        &server,
        &[
            "list-metrics",
            "--max-items",
            "2",
            "--starting-token",
            token,
        ],
    );
    assert_eq!(page2["Metrics"].as_array().map(Vec::len), Some(1));
    assert!(page2.get("NextToken").is_none());
    let mut seen: Vec<String> = page1["Metrics"]
        .as_array()
        .into_iter()
        .chain(page2["Metrics"].as_array())
        .flatten()
        .map(|m| m["Dimensions"].to_string())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "pages overlap: {seen:?}");
}
