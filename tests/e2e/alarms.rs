//! Alarms end to end: real server processes, a real HTTP receiver that checks signatures,
//! outages of the receiver and SIGKILL of the server.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{Value, json};
use watchtrail_e2e::receiver::Receiver;
use watchtrail_e2e::{HttpAnswer, ServerOptions, TestServer, wait_for};
use watchtrail_proto::v1::{
    AuditRecord, MetricDatum, PutAuditEventsRequest, PutMetricDataRequest, metric_datum,
};

use super::chrono_now_ms;

const SECRET: &str = "e2e-shared-secret";

/// Flags that make alarms quick to test: a short late-data delay, fast reloads and retries.
fn fast(opts: ServerOptions) -> ServerOptions {
    opts.with_args(&[
        "--alarm-delay",
        "1s",
        "--alarm-refresh",
        "1s",
        "--alarm-lease-ttl",
        "3s",
        "--webhook-retry-base",
        "200ms",
        "--webhook-retry-max",
        "1s",
    ])
}

async fn put(server: &TestServer, path: &str, body: &Value) -> HttpAnswer {
    server
        .send("PUT", path, &[], body.to_string().as_bytes())
        .await
}

async fn get(server: &TestServer, path: &str) -> HttpAnswer {
    server.send("GET", path, &[], b"").await
}

async fn put_errors(server: &TestServer, id: &str, value: f64) {
    let mut client = server.client().await;
    client
        .put_metric_data(PutMetricDataRequest {
            idempotency_id: id.into(),
            metric_data: vec![MetricDatum {
                namespace: "App".into(),
                metric_name: "Errors".into(),
                dimensions: vec![],
                timestamp_ms: chrono_now_ms(),
                data: Some(metric_datum::Data::Value(value)),
                unit: "Count".into(),
                storage_resolution: 1,
            }],
            series: vec![],
        })
        .await
        .expect("put metric");
}

/// Delivered notifications, by idempotency key: (state announced, signature ok).
fn delivered(r: &Receiver) -> HashMap<String, (String, bool)> {
    r.received()
        .into_iter()
        .filter(|x| x.status == 200)
        .filter_map(|x| {
            let key = x.headers.get("idempotency-key")?.clone();
            let state = x.body["detail"]["state"]["value"].as_str()?.to_string();
            Some((key, (state, x.signature_ok)))
        })
        .collect()
}

#[tokio::test]
async fn definitions_are_checked_listed_and_kept_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = TestServer::start(fast(ServerOptions::local(dir.path()))).await;
    let good = json!({
        "Namespace": "App", "MetricName": "Errors", "Statistic": "Sum", "Period": 60,
        "EvaluationPeriods": 2, "Threshold": 5, "ComparisonOperator": "GreaterThanThreshold"
    });
    let mut bad = good.clone();
    bad["Period"] = json!(45);
    let a = put(&server, "/v1/alarms/bad", &bad).await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(a.json()["error"]["field"], "Period");
    let mut bad = good.clone();
    bad["ComparisonOperator"] = json!("Bigger");
    assert_eq!(
        put(&server, "/v1/alarms/bad", &bad).await.json()["error"]["field"],
        "ComparisonOperator"
    );
    let mut named = good.clone();
    named["AlarmName"] = json!("other");
    assert_eq!(put(&server, "/v1/alarms/errors", &named).await.status, 400);

    let a = put(&server, "/v1/alarms/errors%2Fhigh", &good).await;
    assert_eq!(a.status, 201, "{}", a.text());
    assert_eq!(
        put(&server, "/v1/alarms/errors%2Fhigh", &good).await.status,
        200
    );
    let described = get(&server, "/v1/alarms/errors%2Fhigh").await.json();
    assert_eq!(described["AlarmName"], "errors/high");
    assert_eq!(described["StateValue"], "INSUFFICIENT_DATA");
    assert_eq!(
        described["StateReason"],
        "Unchecked: Initial alarm creation"
    );

    let filter = json!({
        "filterPattern": "{ $.errorCode = \"AccessDenied*\" }", "logGroupName": "audit",
        "metricTransformations": [{"metricName": "Denied", "metricNamespace": "Sec", "metricValue": "1"}]
    });
    assert_eq!(
        put(&server, "/v1/metric-filters/denied", &filter)
            .await
            .status,
        200
    );
    let mut broken = filter.clone();
    broken["filterPattern"] = json!("{ $.errorCode = ");
    let a = put(&server, "/v1/metric-filters/broken", &broken).await;
    assert_eq!(a.status, 400);
    assert!(
        a.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("at position 17"),
        "{}",
        a.text()
    );

    server.restart().await;
    let list = get(&server, "/v1/alarms").await.json();
    let names: Vec<&str> = list["MetricAlarms"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|a| a["AlarmName"].as_str())
        .collect();
    assert_eq!(names, ["errors/high"]);
    let filters = get(&server, "/v1/metric-filters").await.json();
    assert_eq!(filters["metricFilters"][0]["filterName"], "denied");

    assert_eq!(
        server
            .send("DELETE", "/v1/alarms/errors%2Fhigh", &[], b"")
            .await
            .status,
        200
    );
    assert_eq!(get(&server, "/v1/alarms/errors%2Fhigh").await.status, 404);
    assert_eq!(
        server
            .send("DELETE", "/v1/alarms/errors%2Fhigh", &[], b"")
            .await
            .status,
        404
    );
    let history = get(
        &server,
        "/v1/alarms/errors%2Fhigh/history?HistoryItemType=ConfigurationUpdate",
    )
    .await;
    let summaries: Vec<String> = history.json()["AlarmHistoryItems"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["HistorySummary"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        summaries,
        [
            "Alarm \"errors/high\" deleted",
            "Alarm \"errors/high\" updated",
            "Alarm \"errors/high\" created"
        ]
    );
    server.stop().await;
}

/// The whole path: a metric breaches, the alarm fires, the receiver gets a signed notification;
/// the receiver goes down, the alarm recovers, the server is killed and restarted, the receiver
/// comes back: every state change is delivered exactly once and recorded.
#[tokio::test]
async fn state_changes_reach_a_signed_webhook_through_outages_and_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut receiver = Receiver::start(SECRET).await;
    let mut server = TestServer::start(fast(ServerOptions::local(dir.path()))).await;
    let dest = json!({"Url": receiver.url(), "Secret": SECRET, "Headers": {"X-Team": "sre"}});
    assert_eq!(
        put(&server, "/v1/destinations/oncall", &dest).await.status,
        200
    );
    let listed = get(&server, "/v1/destinations").await.json();
    assert_eq!(listed["Destinations"][0]["Secret"], "********");
    let alarm = json!({
        "Namespace": "App", "MetricName": "Errors", "Statistic": "Maximum", "Period": 10,
        "EvaluationPeriods": 1, "Threshold": 5, "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching",
        "AlarmActions": ["oncall"],
        "OKActions": ["arn:aws:sns:us-east-1:123456789012:oncall"]
    });
    assert_eq!(put(&server, "/v1/alarms/errors", &alarm).await.status, 201);

    // No data, notBreaching: INSUFFICIENT_DATA -> OK.
    server
        .wait_alarm_state("errors", "OK", Duration::from_secs(30))
        .await;
    // A breaching point: OK -> ALARM within one 10 s period plus the delay.
    put_errors(&server, "breach-1", 50.0).await;
    server
        .wait_alarm_state("errors", "ALARM", Duration::from_secs(30))
        .await;
    let got = wait_for(
        "the ALARM notification",
        Duration::from_secs(15),
        || async {
            let d = delivered(&receiver);
            d.values().any(|(s, _)| s == "ALARM").then_some(d)
        },
    )
    .await;
    assert!(
        got.values().all(|(_, sig)| *sig),
        "a signature did not verify"
    );
    let alarm_note = receiver
        .received()
        .into_iter()
        .find(|r| r.body["detail"]["state"]["value"] == "ALARM")
        .expect("alarm notification");
    assert_eq!(
        alarm_note.headers.get("x-team").map(String::as_str),
        Some("sre")
    );
    let body = &alarm_note.body;
    assert_eq!(body["detail-type"], "CloudWatch Alarm State Change");
    assert_eq!(body["detail"]["alarmName"], "errors");
    assert_eq!(body["detail"]["previousState"]["value"], "OK");
    let reason = body["detail"]["state"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("Threshold Crossed: 1 out of the last 1 datapoints [50.0 (")
            && reason.ends_with("was greater than the threshold (5.0) (minimum 1 datapoint for OK -> ALARM transition)."),
        "{reason}"
    );
    let data: Value =
        serde_json::from_str(body["detail"]["state"]["reasonData"].as_str().unwrap_or(""))
            .expect("reason data");
    assert_eq!(data["recentDatapoints"], json!([50.0]));
    assert_eq!(
        body["detail"]["configuration"]["metrics"][0]["metricStat"]["stat"],
        "Maximum"
    );

    // The receiver goes down; the alarm recovers (no more data, notBreaching) and the OK
    // notification fails and waits in the outbox. The breaching point stays in the evaluation
    // range (N + 2 = 3 periods) for 30 s after the ALARM, so the wait allows twice that.
    receiver.go_down();
    server
        .wait_alarm_state("errors", "OK", Duration::from_secs(60))
        .await;
    wait_for(
        "a failed delivery attempt to be recorded",
        Duration::from_secs(20),
        || async {
            let a = server
                .http_query(
                    "SELECT count(*) AS n FROM webhook_deliveries WHERE outcome = 'retrying'",
                    "application/json",
                )
                .await;
            (a.status == 200 && a.json()["rows"][0]["n"].as_i64().unwrap_or(0) > 0).then_some(())
        },
    )
    .await;
    // The server dies while the notification is pending, and comes back.
    server.kill9().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server = TestServer::start(server.options.clone()).await;
    // The receiver answers 503 for a while (retried), then comes back healthy.
    receiver.come_back().await;
    receiver.answer_with(503);
    wait_for("a 503 to be retried", Duration::from_secs(20), || async {
        (receiver
            .received()
            .iter()
            .filter(|r| r.status == 503)
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    receiver.answer_with(200);
    let got = wait_for(
        "the OK notification after the outage",
        Duration::from_secs(30),
        || async {
            let d = delivered(&receiver);
            (d.values().filter(|(s, _)| s == "OK").count() >= 2).then_some(d)
        },
    )
    .await;
    assert!(
        got.values().all(|(_, sig)| *sig),
        "a signature did not verify"
    );

    // Every StateUpdate in the history was delivered exactly once (by idempotency key: retries
    // of one notification share it), and nothing else was.
    let history = get(
        &server,
        "/v1/alarms/errors/history?HistoryItemType=StateUpdate",
    )
    .await
    .json();
    let transitions: Vec<String> = history["AlarmHistoryItems"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["HistorySummary"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        transitions,
        [
            "Alarm updated from ALARM to OK",
            "Alarm updated from OK to ALARM",
            "Alarm updated from INSUFFICIENT_DATA to OK"
        ]
    );
    wait_for(
        "the three notifications",
        Duration::from_secs(30),
        || async { (delivered(&receiver).len() >= 3).then_some(()) },
    )
    .await;
    let d = delivered(&receiver);
    let states: Vec<&str> = {
        let mut v: Vec<&str> = d.values().map(|(s, _)| s.as_str()).collect();
        v.sort_unstable();
        v
    };
    assert_eq!(states, ["ALARM", "OK", "OK"], "{d:?}");
    let keys: BTreeSet<&String> = d.keys().collect();
    assert_eq!(keys.len(), 3);
    let outbox_left = std::fs::read_dir(dir.path().join("store/default/_control/outbox"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(
        outbox_left, 0,
        "the outbox is empty once everything is delivered"
    );
    server.stop().await;
}

/// SQL alarms and metric filters over the audit trail: the 14 CIS patterns as shipped, with
/// 10 s periods so the test is quick.
#[tokio::test]
async fn cis_metric_filters_and_sql_alarms_fire_on_audit_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(fast(ServerOptions::local(dir.path()))).await;
    let examples = watchtrail_e2e::manifest_dir().join("../examples/alarms/cis");
    let mut names = Vec::new();
    for kind in ["filters", "alarms"] {
        let mut files: Vec<_> = std::fs::read_dir(examples.join(kind))
            .expect("examples")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        for f in files {
            let mut v: Value =
                serde_json::from_str(&std::fs::read_to_string(&f).expect("read")).expect("json");
            let path = if kind == "filters" {
                format!(
                    "/v1/metric-filters/{}",
                    v["filterName"].as_str().expect("name")
                )
            } else {
                v["Period"] = json!(10);
                let name = v["AlarmName"].as_str().expect("name").to_string();
                names.push(name.clone());
                format!("/v1/alarms/{name}")
            };
            let a = put(&server, &path, &v).await;
            assert!(a.status == 200 || a.status == 201, "{path}: {}", a.text());
        }
    }
    assert_eq!(names.len(), 14);
    let sql_alarm = json!({
        "Query": "SELECT eventtime AS time, 1 AS value FROM audit WHERE eventname = 'DeleteBucketPolicy' AND eventtime >= $start",
        "Statistic": "Sum", "Period": 10, "EvaluationPeriods": 1, "Threshold": 2,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold", "TreatMissingData": "notBreaching"
    });
    assert_eq!(
        put(&server, "/v1/alarms/bucket-policy-deletes", &sql_alarm)
            .await
            .status,
        201
    );
    let broken = json!({
        "Query": "SELECT eventtime AS time, no_such_column AS value FROM audit",
        "Statistic": "Sum", "Period": 10, "EvaluationPeriods": 1, "Threshold": 1,
        "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching"
    });
    assert_eq!(
        put(&server, "/v1/alarms/broken-sql", &broken).await.status,
        201
    );
    for n in &names {
        server
            .wait_alarm_state(n, "OK", Duration::from_secs(30))
            .await;
    }
    // One event that each CIS pattern matches, and two that none does; all in one period.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ev = |i: usize, body: &str| {
        format!(
            r#"{{"eventVersion":"1.08","eventTime":"{now}","eventID":"cis-{i}","awsRegion":"us-east-1",{body}}}"#
        )
    };
    let bodies = [
        r#""eventSource":"iam.amazonaws.com","eventName":"ListUsers","eventType":"AwsApiCall","userIdentity":{"type":"Root"}"#,
        r#""eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","errorCode":"Client.UnauthorizedOperation","userIdentity":{"type":"IAMUser"}"#,
        r#""eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin","eventType":"AwsConsoleSignIn","userIdentity":{"type":"IAMUser"},"responseElements":{"ConsoleLogin":"Success"},"additionalEventData":{"MFAUsed":"No"}"#,
        r#""eventSource":"iam.amazonaws.com","eventName":"PutUserPolicy","userIdentity":{"type":"IAMUser"}"#,
        r#""eventSource":"cloudtrail.amazonaws.com","eventName":"StopLogging","userIdentity":{"type":"IAMUser"}"#,
        r#""eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin","errorMessage":"Failed authentication","userIdentity":{"type":"IAMUser"},"responseElements":{"ConsoleLogin":"Failure"},"additionalEventData":{"MFAUsed":"Yes"}"#,
        r#""eventSource":"kms.amazonaws.com","eventName":"ScheduleKeyDeletion","userIdentity":{"type":"IAMUser"}"#,
        r#""eventSource":"s3.amazonaws.com","eventName":"DeleteBucketPolicy","userIdentity":{"type":"IAMUser"}"#,
        r#""eventSource":"config.amazonaws.com","eventName":"StopConfigurationRecorder","userIdentity":{"type":"IAMUser"}"#,
        r#""eventSource":"ec2.amazonaws.com","eventName":"AuthorizeSecurityGroupIngress","userIdentity":{"type":"IAMUser"}"#,
        r#""eventSource":"ec2.amazonaws.com","eventName":"CreateNetworkAclEntry","userIdentity":{"type":"IAMUser"}"#,
        r#""eventSource":"ec2.amazonaws.com","eventName":"AttachInternetGateway","userIdentity":{"type":"IAMUser"}"#,
        r#""eventSource":"ec2.amazonaws.com","eventName":"CreateRoute","userIdentity":{"type":"IAMUser"}"#,
        r#""eventSource":"ec2.amazonaws.com","eventName":"CreateVpc","userIdentity":{"type":"IAMUser"}"#,
        r#""eventSource":"s3.amazonaws.com","eventName":"DeleteBucketPolicy","userIdentity":{"type":"IAMUser"}"#,
        r#""eventSource":"s3.amazonaws.com","eventName":"GetObject","userIdentity":{"type":"IAMUser"}"#,
    ];
    let records = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| AuditRecord { json: ev(i, b) })
        .collect();
    let mut client = server.client().await;
    let resp = client
        .put_audit_events(PutAuditEventsRequest {
            idempotency_id: "cis".into(),
            records,
        })
        .await
        .expect("put audit")
        .into_inner();
    assert_eq!(resp.accepted, bodies.len() as u64);
    for n in &names {
        server
            .wait_alarm_state(n, "ALARM", Duration::from_secs(30))
            .await;
    }
    server
        .wait_alarm_state("bucket-policy-deletes", "ALARM", Duration::from_secs(30))
        .await;
    // The filters' metrics are real metrics: each of the 14 has points in `metrics`, one per
    // matching event. Each of the first 14 events matches one pattern, the second
    // DeleteBucketPolicy makes a 15th point, GetObject none.
    let a = server
        .http_query(
            "SELECT metric_name, count(*) AS n FROM metrics \
             WHERE namespace = 'CISBenchmark' AND value = 1 GROUP BY 1 ORDER BY 1",
            "application/json",
        )
        .await;
    let rows = a.json()["rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 14, "{}", a.text());
    let total: i64 = rows.iter().filter_map(|r| r["n"].as_i64()).sum();
    assert_eq!(total, 15, "{}", a.text());
    let broken = get(&server, "/v1/alarms/broken-sql").await.json();
    assert_eq!(broken["StateValue"], "INSUFFICIENT_DATA");
    assert_eq!(broken["EvaluationState"], "EVALUATION_ERROR", "{broken}");
    assert!(
        broken["StateReason"]
            .as_str()
            .unwrap_or("")
            .contains("no_such_column"),
        "{broken}"
    );
    let _ = server;
}

fn cli(server: &TestServer, args: &[&str]) -> std::process::Output {
    std::process::Command::new(watchtrail_e2e::bin_path("watchtrail"))
        .env("WATCHTRAIL_API_KEY", &server.key)
        .args(["--http", &format!("http://{}", server.http)])
        .args(args)
        .output()
        .expect("run watchtrail")
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The CLI loads the shipped CIS set, lists it, forces a state to test a notification, shows
/// the history and deletes; a broken TOML definition is refused naming the field.
#[tokio::test]
async fn the_cli_manages_alarms_filters_and_destinations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start(SECRET).await;
    let server = TestServer::start(fast(ServerOptions::local(dir.path()))).await;
    let cis = watchtrail_e2e::manifest_dir().join("../examples/alarms/cis");
    let url = receiver.url();
    ok(&cli(
        &server,
        &[
            "destinations",
            "put",
            "security",
            "--url",
            &url,
            "--secret",
            SECRET,
            "--header",
            "X-Team=sec",
        ],
    ));
    let listed = ok(&cli(&server, &["destinations", "list"]));
    assert!(
        listed.contains("\"security\"") && !listed.contains(SECRET),
        "{listed}"
    );
    let filters_dir = cis.join("filters");
    let out = ok(&cli(
        &server,
        &[
            "metric-filters",
            "put",
            "--file",
            filters_dir.to_str().expect("path"),
        ],
    ));
    assert_eq!(out.lines().count(), 14, "{out}");
    let alarms_dir = cis.join("alarms");
    let out = ok(&cli(
        &server,
        &[
            "alarms",
            "put",
            "--file",
            alarms_dir.to_str().expect("path"),
        ],
    ));
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("created alarm CIS-"))
            .count(),
        14,
        "{out}"
    );
    let table = ok(&cli(
        &server,
        &["alarms", "list", "--alarm-name-prefix", "CIS-Root"],
    ));
    assert!(
        table.contains("CIS-RootAccountUsage")
            && table.contains("Sum CISBenchmark/RootAccountUsage"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 2, "{table}");

    ok(&cli(
        &server,
        &[
            "alarms",
            "set-state",
            "CIS-RootAccountUsage",
            "--state-value",
            "ALARM",
            "--state-reason",
            "testing the pager",
        ],
    ));
    let note = wait_for(
        "the forced ALARM notification",
        Duration::from_secs(15),
        || async {
            receiver
                .received()
                .into_iter()
                .find(|r| r.body["detail"]["state"]["value"] == "ALARM")
        },
    )
    .await;
    assert!(note.signature_ok);
    assert_eq!(note.body["detail"]["state"]["reason"], "testing the pager");
    assert_eq!(note.headers.get("x-team").map(String::as_str), Some("sec"));
    let history = ok(&cli(
        &server,
        &[
            "alarms",
            "history",
            "CIS-RootAccountUsage",
            "--history-item-type",
            "StateUpdate",
        ],
    ));
    assert!(history.contains("to ALARM"), "{history}");
    let described: Value = serde_json::from_str(&ok(&cli(
        &server,
        &["alarms", "describe", "CIS-RootAccountUsage"],
    )))
    .expect("json");
    assert_eq!(described["Namespace"], "CISBenchmark");
    let actions = wait_for(
        "the Action history item",
        Duration::from_secs(10),
        || async {
            let h = ok(&cli(
                &server,
                &[
                    "alarms",
                    "history",
                    "CIS-RootAccountUsage",
                    "--history-item-type",
                    "Action",
                ],
            ));
            h.contains("Successfully executed action security")
                .then_some(h)
        },
    )
    .await;
    assert!(actions.contains("Succeeded"), "{actions}");

    // A receiver that refuses (4xx other than 429) is not retried.
    receiver.answer_with(400);
    // The CIS alarms notify on ALARM only: back to OK quietly, then ALARM again.
    for state in ["OK", "ALARM"] {
        ok(&cli(
            &server,
            &[
                "alarms",
                "set-state",
                "CIS-RootAccountUsage",
                "--state-value",
                state,
                "--state-reason",
                "refused",
            ],
        ));
    }
    wait_for("the refused attempt", Duration::from_secs(10), || async {
        (receiver
            .received()
            .iter()
            .filter(|r| r.status == 400)
            .count()
            == 1)
            .then_some(())
    })
    .await;
    // A negative check: no retry of the refused delivery comes within the retry backoff.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        receiver
            .received()
            .iter()
            .filter(|r| r.status == 400)
            .count(),
        1,
        "a 400 is final"
    );
    let rejected = server
        .http_query(
            "SELECT outcome, status_code FROM webhook_deliveries WHERE outcome = 'rejected'",
            "application/json",
        )
        .await
        .json();
    assert_eq!(rejected["rows"][0]["status_code"], 400, "{rejected}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "AlarmName = \"x\"\nNamespace = \"N\"\nMetricName = \"M\"\nStatistic = \"Sum\"\nPeriod = 45\nEvaluationPeriods = 1\nThreshold = 1.0\nComparisonOperator = \"GreaterThanThreshold\"\n",
    )
    .expect("write");
    let out = cli(
        &server,
        &["alarms", "put", "--file", bad.to_str().expect("path")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Period") && err.contains("10, 20, 30 or a multiple of 60"),
        "{err}"
    );

    ok(&cli(&server, &["alarms", "delete", "CIS-RootAccountUsage"]));
    let out = cli(&server, &["alarms", "describe", "CIS-RootAccountUsage"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 404"));
    ok(&cli(
        &server,
        &["metric-filters", "delete", "CIS-RootAccountUsage"],
    ));
    let left = ok(&cli(&server, &["metric-filters", "list"]));
    assert!(
        !left.contains("CIS-RootAccountUsage") && left.contains("CIS-VPCChanges"),
        "{left}"
    );
}

/// Waits until the servers between them have evaluated alarms `rounds` more times than now:
/// the clock a "nothing more happened" check is read against, instead of a fixed sleep.
async fn wait_evaluations(servers: &[&TestServer], rounds: u64) {
    const NAME: &str = "watchtrail_alarm_evaluations_total";
    let mut before = 0;
    for s in servers {
        before += s.counter(NAME).await;
    }
    wait_for(
        &format!("{rounds} more alarm evaluations"),
        Duration::from_secs(60),
        || async {
            let mut now = 0;
            for s in servers {
                now += s.counter(NAME).await;
            }
            (now >= before + rounds).then_some(())
        },
    )
    .await;
}

async fn is_evaluator(server: &TestServer) -> bool {
    let (_, body) = server.http_get("/metrics").await;
    body.contains("watchtrail_alarm_evaluator 1")
}

/// Two servers on one store: one evaluates and notifies; when it dies the other takes over,
/// and no notification is sent twice.
#[tokio::test]
async fn with_two_servers_one_evaluates_and_the_other_takes_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start(SECRET).await;
    let a_opts = fast(ServerOptions::local(dir.path()));
    let mut b_opts = a_opts.clone();
    b_opts.wal_dir = dir.path().join("wal-b");
    let mut a = TestServer::start(a_opts).await;
    let mut b = TestServer::start(b_opts).await;
    let dest = json!({"Url": receiver.url(), "Secret": SECRET});
    assert_eq!(put(&a, "/v1/destinations/oncall", &dest).await.status, 200);
    let alarm = json!({
        "Namespace": "App", "MetricName": "Errors", "Statistic": "Maximum", "Period": 10,
        "EvaluationPeriods": 1, "Threshold": 5, "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "breaching", "AlarmActions": ["oncall"], "OKActions": ["oncall"]
    });
    // Made through B, evaluated by whichever holds the lease.
    assert_eq!(put(&b, "/v1/alarms/errors", &alarm).await.status, 201);
    a.wait_alarm_state("errors", "ALARM", Duration::from_secs(30))
        .await;
    let holders = wait_for("exactly one evaluator", Duration::from_secs(10), || async {
        let (ha, hb) = (is_evaluator(&a).await, is_evaluator(&b).await);
        (ha != hb).then_some(ha)
    })
    .await;
    wait_for(
        "the ALARM notification",
        Duration::from_secs(15),
        || async { (delivered(&receiver).len() == 1).then_some(()) },
    )
    .await;
    // Two more boundaries: still exactly one notification.
    wait_evaluations(&[&a, &b], 2).await;
    assert_eq!(delivered(&receiver).len(), 1, "{:?}", delivered(&receiver));

    // The evaluator dies; the other server takes the lease once it expires.
    let (dead, alive) = if holders {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    dead.kill9().await;
    wait_for(
        "the survivor to take the lease",
        Duration::from_secs(15),
        || async { is_evaluator(alive).await.then_some(()) },
    )
    .await;
    // Data below the threshold in every period from now on: ALARM -> OK, notified once.
    let feeder = {
        let mut client = watchtrail_e2e::ingest_client(alive.grpc, &alive.key);
        tokio::spawn(async move {
            for i in 0..60 {
                let _ = client
                    .put_metric_data(PutMetricDataRequest {
                        idempotency_id: format!("calm-{i}"),
                        metric_data: vec![MetricDatum {
                            namespace: "App".into(),
                            metric_name: "Errors".into(),
                            dimensions: vec![],
                            timestamp_ms: chrono_now_ms(),
                            data: Some(metric_datum::Data::Value(1.0)),
                            unit: "Count".into(),
                            storage_resolution: 1,
                        }],
                        series: vec![],
                    })
                    .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    alive
        .wait_alarm_state("errors", "OK", Duration::from_secs(40))
        .await;
    wait_for("the OK notification", Duration::from_secs(15), || async {
        (delivered(&receiver).len() == 2).then_some(())
    })
    .await;
    feeder.abort();
    let states: BTreeSet<String> = delivered(&receiver).into_values().map(|(s, _)| s).collect();
    assert_eq!(
        states,
        BTreeSet::from(["ALARM".to_string(), "OK".to_string()])
    );
    let history = get(
        alive,
        "/v1/alarms/errors/history?HistoryItemType=StateUpdate",
    )
    .await
    .json();
    assert_eq!(
        history["AlarmHistoryItems"].as_array().map(Vec::len),
        Some(2),
        "{history}"
    );
    alive.stop().await;
}

/// The same on S3 (moto enforces the conditional writes the lease is taken with).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_the_lease_admits_one_evaluator() {
    let moto = watchtrail_e2e::Moto::start().await;
    moto.create_bucket("alarms").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start(SECRET).await;
    let mut a_opts = fast(ServerOptions::local(dir.path()));
    a_opts.store = "s3://alarms/e2e".into();
    a_opts.env = watchtrail_e2e::Moto::env(moto.addr);
    let mut b_opts = a_opts.clone();
    b_opts.wal_dir = dir.path().join("wal-b");
    let mut a = TestServer::start(a_opts).await;
    let mut b = TestServer::start(b_opts).await;
    let dest = json!({"Url": receiver.url(), "Secret": SECRET, "Format": "alertmanager"});
    assert_eq!(put(&a, "/v1/destinations/oncall", &dest).await.status, 200);
    let alarm = json!({
        "Namespace": "App", "MetricName": "Errors", "Statistic": "Sum", "Period": 10,
        "EvaluationPeriods": 1, "Threshold": 5, "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "breaching", "AlarmActions": ["oncall"]
    });
    assert_eq!(put(&a, "/v1/alarms/errors", &alarm).await.status, 201);
    b.wait_alarm_state("errors", "ALARM", Duration::from_secs(40))
        .await;
    wait_for("exactly one evaluator", Duration::from_secs(10), || async {
        (is_evaluator(&a).await != is_evaluator(&b).await).then_some(())
    })
    .await;
    let first = wait_for(
        "the firing notification",
        Duration::from_secs(20),
        || async { receiver.received().into_iter().find(|r| r.status == 200) },
    )
    .await;
    assert!(first.signature_ok);
    assert_eq!(first.body["status"], "firing");
    assert_eq!(first.body["alerts"][0]["labels"]["alertname"], "errors");
    wait_evaluations(&[&a, &b], 2).await;
    assert_eq!(receiver.received().len(), 1, "one notification, one sender");
    a.stop().await;
    b.stop().await;
    moto.stop().await;
}

/// Alarms in one namespace that differ only in metric name and dimension values are evaluated
/// by one grouped query; each still sees exactly its own series.
#[tokio::test]
async fn alarms_sharing_a_metric_see_only_their_own_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(fast(ServerOptions::local(dir.path()))).await;
    for (name, metric, host, periods) in [
        ("g-h1", "Latency", "h1", 1),
        ("g-h2", "Latency", "h2", 1),
        ("g-h3", "Latency", "h3", 1),
        ("g2-h1", "Latency", "h1", 2),
        ("q-h2", "Queue", "h2", 1),
    ] {
        let alarm = json!({
            "Namespace": "App", "MetricName": metric, "Dimensions": [{"Name": "host", "Value": host}],
            "Statistic": "Average", "Period": 10, "EvaluationPeriods": periods, "DatapointsToAlarm": 1,
            "Threshold": 100, "ComparisonOperator": "GreaterThanThreshold"
        });
        assert_eq!(
            put(&server, &format!("/v1/alarms/{name}"), &alarm)
                .await
                .status,
            201
        );
    }
    let mut client = server.client().await;
    let now = chrono_now_ms();
    let datum = |metric: &str, dims: &[(&str, &str)], v: f64| MetricDatum {
        namespace: "App".into(),
        metric_name: metric.into(),
        dimensions: dims
            .iter()
            .map(|(n, v)| watchtrail_proto::v1::Dimension {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect(),
        timestamp_ms: now,
        data: Some(metric_datum::Data::Value(v)),
        unit: "Milliseconds".into(),
        storage_resolution: 1,
    };
    client
        .put_metric_data(PutMetricDataRequest {
            idempotency_id: "grouped".into(),
            metric_data: vec![
                datum("Latency", &[("host", "h1")], 500.0),
                datum("Latency", &[("host", "h2")], 5.0),
                datum("Latency", &[("host", "h4")], 900.0),
                // Another dimension set: a different metric for CloudWatch, never h2's.
                datum("Latency", &[("host", "h2"), ("az", "a")], 900.0),
                datum("Queue", &[("host", "h2")], 300.0),
            ],
            series: vec![],
        })
        .await
        .expect("put metrics");
    server
        .wait_alarm_state("g-h1", "ALARM", Duration::from_secs(30))
        .await;
    server
        .wait_alarm_state("g2-h1", "ALARM", Duration::from_secs(30))
        .await;
    server
        .wait_alarm_state("g-h2", "OK", Duration::from_secs(30))
        .await;
    server
        .wait_alarm_state("q-h2", "ALARM", Duration::from_secs(30))
        .await;
    let h3 = get(&server, "/v1/alarms/g-h3").await.json();
    assert_eq!(h3["StateValue"], "INSUFFICIENT_DATA", "{h3}");
    let reason = get(&server, "/v1/alarms/g-h2").await.json()["StateReason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(reason.contains("[5.0 ("), "{reason}");
}
