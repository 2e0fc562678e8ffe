//! The AWS door driven by the real clients: boto3 (CBOR, JSON and Query protocols through
//! botocore's own serializers and signer) and the `aws` CLI, against a real server; what they
//! put is read back through SQL, and every call is in the caller's trail.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use watchtrail_e2e::{ServerOptions, TestServer, python, sql_count};

/// Makes a key with AWS credentials through the CLI; its profile text.
async fn aws_key(server: &TestServer, role: &str, profile: &str) -> String {
    let out = server
        .cli()
        .args([
            "keys",
            "create",
            "--role",
            role,
            "--aws-credentials",
            "--profile",
            profile,
        ])
        .output()
        .await
        .expect("watchtrail keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn aws_env(cmd: &mut Command, credentials: &Path) {
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_SHARED_CREDENTIALS_FILE", credentials)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true");
}

/// Runs the venv's `aws` CLI against the server; its JSON answer.
fn aws_cli(server: &TestServer, credentials: &Path, args: &[&str]) -> Value {
    let mut cmd = Command::new(python().with_file_name("aws"));
    cmd.args([
        "--endpoint-url",
        &format!("http://{}", server.http),
        "--region",
        "us-east-1",
    ])
    .args(args);
    aws_env(&mut cmd, credentials);
    let out = cmd.output().expect("aws");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("aws json")
}

fn scenario(server: &TestServer, credentials: &Path, name: &str) -> Value {
    let script = watchtrail_e2e::manifest_dir().join("python/aws_clients.py");
    let mut cmd = Command::new(python());
    cmd.arg(&script)
        .arg(format!("http://{}", server.http))
        .arg(name);
    aws_env(&mut cmd, credentials);
    let out = cmd.output().expect("python");
    assert!(
        out.status.success(),
        "{name}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{name}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test]
async fn boto3_and_the_aws_cli_speak_cloudwatch_logs_and_cloudtrail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(ServerOptions::local(dir.path())).await;
    let credentials = dir.path().join("credentials");
    let profiles = format!(
        "{}\n{}",
        aws_key(&server, "admin", "default").await,
        aws_key(&server, "read", "reader").await
    );
    assert!(
        profiles.contains("[default]\naws_access_key_id = WTAK"),
        "{profiles}"
    );
    assert!(profiles.contains("aws_secret_access_key = "), "{profiles}");
    std::fs::write(&credentials, &profiles).expect("write credentials");

    // CloudWatch, in CBOR (boto3's default), JSON and Query.
    let cw = scenario(&server, &credentials, "cloudwatch");
    // 1,000 datums over 10 hosts: each host has 100 values, i % 100 for i = 3, 13, ...
    let h3 = &cw["latency_h3"][0];
    assert_eq!(h3["SampleCount"], 100.0, "{cw}");
    assert_eq!(
        h3["Sum"],
        (0..100).map(|k| (3 + 10 * k) % 100).sum::<i64>() as f64
    );
    assert_eq!(h3["Minimum"], 3.0);
    assert_eq!(h3["Maximum"], 93.0);
    assert_eq!(h3["Unit"], "Milliseconds");
    assert_eq!(
        cw["latency_h3_p50"].as_array().map(Vec::len),
        Some(1),
        "{cw}"
    );
    // Values/Counts: 1 + 2 + 3 * 2 = 9 over 4 samples, read through Query and JSON alike.
    for proto in ["query", "json"] {
        assert_eq!(cw[format!("stats_{proto}")][0]["Sum"], 9.0, "{proto}: {cw}");
        assert_eq!(
            cw[format!("stats_{proto}")][0]["SampleCount"],
            4.0,
            "{proto}: {cw}"
        );
        assert_eq!(
            cw[format!("invalid_{proto}")]["code"],
            "InvalidParameterValue",
            "{proto}: {cw}"
        );
        assert!(
            cw[format!("invalid_{proto}")]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Period")),
            "{cw}"
        );
    }
    assert_eq!(
        cw["listed"],
        serde_json::json!(["Batch", "Latency", "Requests", "Via-json", "Via-query"]),
        "{cw}"
    );
    // 10 Latency series plus four others.
    assert_eq!(cw["listed_count"], 14, "{cw}");
    assert_eq!(cw["recent"], 14, "{cw}");
    assert_eq!(cw["by_dimension"], 1, "{cw}");
    assert_eq!(cw["invalid_cbor"]["code"], "InvalidParameterValue", "{cw}");
    assert!(
        cw["invalid_cbor"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("MetricData.member.1.Unit")),
        "{cw}"
    );
    assert_eq!(cw["bad_token"]["code"], "InvalidNextToken", "{cw}");
    assert_eq!(cw["reader_put"]["code"], "AccessDenied", "{cw}");
    assert_eq!(cw["reader_list"], 14, "{cw}");
    // The same points through SQL: 1,000 + 3 (Values) + 1 (StatisticValues) + 2 (protocols).
    assert_eq!(
        sql_count(
            &server,
            "SELECT count(*) FROM metrics WHERE namespace = 'Boto'"
        )
        .await,
        1006
    );

    // CloudWatch alarms, through CBOR and Query.
    let al = scenario(&server, &credentials, "alarms");
    assert_eq!(
        al["paged"],
        serde_json::json!(["boto-high", "boto-low"]),
        "{al}"
    );
    assert_eq!(al["high"]["Threshold"], 50.0, "{al}");
    assert_eq!(al["high"]["Period"], 60, "{al}");
    assert_eq!(al["high"]["Statistic"], "Maximum", "{al}");
    assert_eq!(al["high"]["StateValue"], "INSUFFICIENT_DATA", "{al}");
    assert_eq!(al["high_updated_is_time"], true, "{al}");
    assert_eq!(
        al["low"],
        serde_json::json!([{"Threshold": 1.5, "ActionsEnabled": false}]),
        "{al}"
    );
    assert_eq!(al["in_alarm"], serde_json::json!(["boto-high"]), "{al}");
    assert_eq!(
        al["history"][0], "Alarm updated from INSUFFICIENT_DATA to ALARM",
        "{al}"
    );
    assert_eq!(al["delete_unknown"]["code"], "ResourceNotFound", "{al}");
    assert_eq!(al["disabled"], false, "{al}");
    assert_eq!(al["disable_unknown"]["code"], "ResourceNotFound", "{al}");
    assert_eq!(al["enabled"], true, "{al}");
    // Both alarms watch Latency{Host=h3}; none watches Latency without dimensions.
    assert_eq!(
        al["for_metric"],
        serde_json::json!(["boto-high", "boto-low"]),
        "{al}"
    );
    assert_eq!(al["for_other_metric"], 0, "{al}");
    assert_eq!(al["after_delete"], serde_json::json!(["boto-high"]), "{al}");
    assert_eq!(al["bad_operator"]["code"], "InvalidParameterValue", "{al}");
    assert!(
        al["bad_operator"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ComparisonOperator")),
        "{al}"
    );
    assert_eq!(al["reader_put"]["code"], "AccessDenied", "{al}");

    // CloudWatch Logs.
    let logs = scenario(&server, &credentials, "logs");
    assert_eq!(logs["put"]["rejected"], Value::Null, "{logs}");
    assert_eq!(logs["put_old"]["tooOldLogEventEndIndex"], 0, "{logs}");
    assert_eq!(
        logs["unordered"]["code"], "InvalidParameterException",
        "{logs}"
    );
    let lines: Vec<String> = (0..50)
        .map(|i| format!("line {i} {}", if i % 10 == 0 { "ERROR" } else { "ok" }))
        .collect();
    assert_eq!(logs["tail"], serde_json::json!(lines[30..]), "{logs}");
    assert_eq!(logs["backwards"], serde_json::json!(lines), "{logs}");
    assert_eq!(logs["forward"], serde_json::json!(lines), "{logs}");
    assert_eq!(logs["forward_end"]["events"], 0, "{logs}");
    assert_eq!(logs["forward_end"]["same"], true, "{logs}");
    let errors: Vec<Value> = (0..5)
        .map(|k| serde_json::json!(["s1", format!("line {} ERROR", k * 10)]))
        .collect();
    assert_eq!(logs["filtered"], Value::Array(errors), "{logs}");
    assert_eq!(
        logs["bad_pattern"]["code"], "InvalidParameterException",
        "{logs}"
    );
    assert_eq!(
        sql_count(
            &server,
            "SELECT count(*) FROM logs WHERE log_group = '/boto/app'"
        )
        .await,
        51
    );

    // Log groups, streams, retention and metric filters.
    let la = scenario(&server, &credentials, "log_admin");
    assert_eq!(
        la["create_again"]["code"], "ResourceAlreadyExistsException",
        "{la}"
    );
    assert_eq!(
        la["create_with_events"]["code"], "ResourceAlreadyExistsException",
        "{la}"
    );
    assert_eq!(la["bad_group"]["code"], "InvalidParameterException", "{la}");
    assert_eq!(
        la["bad_retention"]["code"], "InvalidParameterException",
        "{la}"
    );
    assert_eq!(
        la["groups"],
        serde_json::json!([["/boto/app", null, true], ["/boto/made", 7, true]]),
        "{la}"
    );
    assert_eq!(
        la["delete_retention_again"]["code"], "ResourceNotFoundException",
        "{la}"
    );
    assert_eq!(la["streams"], serde_json::json!(["s1", "s2"]), "{la}");
    assert_eq!(la["filters"], serde_json::json!(["errors"]), "{la}");
    assert_eq!(la["filter_count"], serde_json::json!([1]), "{la}");
    assert_eq!(la["tested"], serde_json::json!([1, 3]), "{la}");
    assert_eq!(
        la["bad_filter"]["code"], "InvalidParameterException",
        "{la}"
    );
    assert_eq!(la["filters_after"], 0, "{la}");
    assert_eq!(
        la["delete_filter_again"]["code"], "ResourceNotFoundException",
        "{la}"
    );
    assert_eq!(la["reader_create"]["code"], "AccessDeniedException", "{la}");
    // The filter made a metric from the event that came while it existed.
    assert_eq!(
        sql_count(
            &server,
            "SELECT count(*) FROM metrics WHERE namespace = 'BotoLogs' AND metric_name = 'Errors'",
        )
        .await,
        1
    );

    // CloudTrail: the PutMetricData calls above are in the trail, found by LookupEvents.
    let trail = scenario(&server, &credentials, "cloudtrail");
    let recorded = sql_count(
        &server,
        "SELECT count(*) FROM audit WHERE eventsource = 'watchtrail' AND eventname = 'PutMetricData'",
    )
    .await;
    assert!(recorded >= 6, "{recorded}");
    assert_eq!(trail["lookups"], recorded, "{trail}");
    assert_eq!(trail["first"]["EventName"], "PutMetricData", "{trail}");
    assert_eq!(trail["first"]["record"], "PutMetricData", "{trail}");
    assert_eq!(trail["first"]["ReadOnly"], "false", "{trail}");
    assert_eq!(
        trail["two_attributes"]["code"], "InvalidLookupAttributesException",
        "{trail}"
    );
    // Refused calls are in the trail too, with their error code.
    assert!(
        sql_count(
            &server,
            "SELECT count(*) FROM audit WHERE eventname = 'PutMetricData' AND errorcode = 'AccessDenied'",
        )
        .await
            >= 1
    );

    // Signatures: region, service, clock skew, presigned expiry, none at all.
    let sig = scenario(&server, &credentials, "signatures");
    assert_eq!(
        sig["wrong_region"]["code"], "SignatureDoesNotMatch",
        "{sig}"
    );
    assert!(
        sig["wrong_region"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("'eu-west-1'")),
        "{sig}"
    );
    assert_eq!(sig["wrong_service"]["status"], 400, "{sig}");
    assert!(
        sig["wrong_service"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("InvalidSignatureException") && b.contains("'logs'")),
        "{sig}"
    );
    assert_eq!(sig["skewed"]["code"], "SignatureDoesNotMatch", "{sig}");
    assert!(
        sig["skewed"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Signature expired")),
        "{sig}"
    );
    assert_eq!(sig["presigned_fresh"]["status"], 200, "{sig}");
    assert!(
        sig["presigned_fresh"]["body"].as_str().is_some_and(
            |b| b.contains("<ListMetricsResponse") && b.contains("<Namespace>Boto</Namespace>")
        ),
        "{sig}"
    );
    assert_eq!(sig["presigned_expired"]["status"], 403, "{sig}");
    assert!(
        sig["presigned_expired"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("Request has expired")),
        "{sig}"
    );
    assert_eq!(sig["unsigned"]["status"], 403, "{sig}");
    assert!(
        sig["unsigned"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("MissingAuthenticationToken")),
        "{sig}"
    );

    // The aws CLI, unchanged but for --endpoint-url.
    let listed = aws_cli(
        &server,
        &credentials,
        &[
            "cloudwatch",
            "list-metrics",
            "--namespace",
            "Boto",
            "--metric-name",
            "Requests",
        ],
    );
    assert_eq!(listed["Metrics"][0]["MetricName"], "Requests", "{listed}");
    let found = aws_cli(
        &server,
        &credentials,
        &[
            "logs",
            "filter-log-events",
            "--log-group-name",
            "/boto/app",
            "--filter-pattern",
            "ERROR",
        ],
    );
    // The five of the logs scenario and the one the log_admin scenario added.
    assert_eq!(found["events"].as_array().map(Vec::len), Some(6), "{found}");
}
