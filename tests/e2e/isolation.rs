//! Tenant isolation: a tenant with its own keys tries to reach another tenant's data and
//! configuration through every door it has, and gets nothing.

use std::time::Duration;

use serde_json::{Value, json};
use watchtrail_e2e::{ServerOptions, TestServer, ingest_client, wait_for};
use watchtrail_proto::v1::{LogEvent, PutLogEventsRequest};

use super::{chrono_now_ms, log_batch};

async fn query(server: &TestServer, key: &str, sql: &str) -> (u16, Value) {
    let body = json!({ "sql": sql }).to_string();
    let a = server
        .send_as(key, "POST", "/v1/query", body.as_bytes())
        .await;
    let v = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
    (a.status, v)
}

async fn send(server: &TestServer, key: &str, method: &str, path: &str, body: &Value) -> u16 {
    let body = body.to_string();
    server
        .send_as(key, method, path, body.as_bytes())
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_reaches_nothing_of_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(ServerOptions::local(dir.path()).with_quick_alarms()).await;
    let victim = server.key.clone();
    let eve = server.create_key("eve", "admin").await;
    let store_dir = dir.path().join("store");

    // The victim's secrets: log lines, an alarm, a destination.
    let mut c = server.client().await;
    c.put_log_events(log_batch("victim-secret", 3))
        .await
        .expect("victim writes");
    assert_eq!(
        send(
            &server,
            &victim,
            "PUT",
            "/v1/destinations/pager",
            &json!({"Url": "http://127.0.0.1:9/victim", "Secret": "victim-hook-secret"}),
        )
        .await,
        200
    );
    let alarm = json!({
        "Namespace": "App", "MetricName": "Errors", "Statistic": "Sum", "Period": 10,
        "EvaluationPeriods": 1, "Threshold": 1, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "notBreaching"
    });
    assert_eq!(
        send(&server, &victim, "PUT", "/v1/alarms/victim-alarm", &alarm).await,
        201
    );
    wait_for("the victim's rows", Duration::from_secs(10), || async {
        let (_, v) = query(&server, &victim, "SELECT count(*) AS n FROM logs").await;
        (v["rows"][0]["n"] == 3).then_some(())
    })
    .await;

    // A log group named like a path out of her tenant is refused, naming the field; one named
    // like the victim's table is only a name, in eve's own table.
    let now = chrono_now_ms();
    let events = |group: &str, id: &str| PutLogEventsRequest {
        idempotency_id: id.into(),
        log_group_name: group.into(),
        log_stream_name: "victim".into(),
        log_events: vec![LogEvent {
            timestamp_ms: now,
            message: "eve was here".into(),
        }],
        origin: None,
    };
    let err = ingest_client(server.grpc, &eve)
        .put_log_events(events("../../default/logs", "eve-0"))
        .await
        .expect_err("a `..` group");
    assert!(err.message().starts_with("log_group_name:"), "{err}");
    let r = ingest_client(server.grpc, &eve)
        .put_log_events(events("/default/logs", "eve-1"))
        .await
        .expect("eve writes")
        .into_inner();
    assert_eq!(r.accepted, 1);
    wait_for("eve's row", Duration::from_secs(10), || async {
        let (_, v) = query(&server, &eve, "SELECT count(*) AS n FROM logs").await;
        (v["rows"][0]["n"] == 1).then_some(())
    })
    .await;
    let (_, v) = query(&server, &victim, "SELECT count(*) AS n FROM logs").await;
    assert_eq!(v["rows"][0]["n"], 3, "eve's row reached the victim's table");
    assert!(
        !store_dir.join("default/logs/../../default").exists()
            && std::fs::read_dir(&store_dir)
                .expect("store")
                .filter_map(Result::ok)
                .all(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n == "default" || n == "eve" || n == "_control"
                }),
        "a path outside the tenants' prefixes was written"
    );

    // SQL: every way of naming another tenant's table, catalog, schema or file.
    let escapes = [
        "SELECT count(*) FROM default.logs",
        "SELECT count(*) FROM \"default\".logs",
        "SELECT count(*) FROM datafusion.default.logs",
        "SELECT count(*) FROM watchtrail.default.logs",
        "SELECT * FROM 'file:///etc/passwd'",
        &format!("SELECT * FROM '{}/default/logs'", store_dir.display()),
        &format!(
            "SELECT * FROM read_parquet('{}/default/logs')",
            store_dir.display()
        ),
        &format!(
            "CREATE EXTERNAL TABLE stolen STORED AS DELTATABLE LOCATION '{}/default/logs'",
            store_dir.display()
        ),
        "COPY (SELECT 1) TO '/tmp/eve.csv'",
        "SET datafusion.catalog.information_schema = true",
    ];
    for sql in escapes {
        let (status, v) = query(&server, &eve, sql).await;
        let text = v.to_string();
        assert!(
            status != 200 || !text.contains("victim-secret"),
            "{sql}: answered with the victim's rows: {text}"
        );
        assert_ne!(status, 200, "{sql}: answered {text}");
    }
    // What eve can list is hers: information_schema and SHOW name her own tables only.
    for sql in [
        "SELECT table_catalog, table_schema, table_name FROM information_schema.tables \
         WHERE table_schema <> 'information_schema'",
        "SHOW TABLES",
    ] {
        let (status, v) = query(&server, &eve, sql).await;
        assert_eq!(status, 200, "{sql}: {v}");
        let rows = v["rows"].as_array().cloned().unwrap_or_default();
        let names: Vec<String> = rows
            .iter()
            .filter(|r| r["table_schema"] != "information_schema")
            .filter_map(|r| r["table_name"].as_str().map(str::to_string))
            .collect();
        assert!(
            !names.is_empty()
                && names.iter().all(|n| {
                    [
                        "metrics",
                        "logs",
                        "audit",
                        "alarm_history",
                        "webhook_deliveries",
                    ]
                    .contains(&n.as_str())
                }),
            "{sql}: {names:?}"
        );
        let text = v.to_string();
        assert!(
            !text.contains("\"default\""),
            "{sql}: names the victim: {text}"
        );
    }
    // Even a join of everything eve has sees only eve's row.
    let (_, v) = query(
        &server,
        &eve,
        "SELECT count(*) AS n FROM logs WHERE message LIKE '%victim%'",
    )
    .await;
    assert_eq!(v["rows"][0]["n"], 0);

    // Configuration: eve sees none of the victim's alarms or destinations, and her names
    // with dots and slashes stay inside her own documents.
    let a = server.send_as(&eve, "GET", "/v1/alarms", b"").await;
    assert_eq!(a.status, 200);
    assert!(!a.text().contains("victim-alarm"), "{}", a.text());
    let a = server.send_as(&eve, "GET", "/v1/destinations", b"").await;
    assert!(!a.text().contains("pager") && !a.text().contains("victim-hook-secret"));
    for path in [
        "/v1/alarms/victim-alarm",
        "/v1/alarms/victim-alarm/history",
        "/v1/alarms/..%2F..%2Fdefault%2F_control%2Falarms%2Fvictim-alarm",
    ] {
        let a = server.send_as(&eve, "GET", path, b"").await;
        assert!(
            a.status == 404 || (a.status == 200 && !a.text().contains("Errors")),
            "{path}: {} {}",
            a.status,
            a.text()
        );
    }
    assert_eq!(
        send(
            &server,
            &eve,
            "DELETE",
            "/v1/alarms/victim-alarm",
            &json!({})
        )
        .await,
        404
    );
    assert_eq!(
        send(
            &server,
            &eve,
            "PUT",
            "/v1/alarms/victim-alarm/state",
            &json!({"StateValue": "ALARM", "StateReason": "eve"}),
        )
        .await,
        404
    );
    let traversal = json!({"Url": "http://127.0.0.1:9/eve"});
    let status = send(
        &server,
        &eve,
        "PUT",
        "/v1/destinations/..%2F..%2Fdefault%2F_control%2Fdestinations%2Fpager",
        &traversal,
    )
    .await;
    assert!(status == 200 || status == 400, "{status}");

    // An alarm of eve's on the victim's metric names and an SQL alarm over "everything" see
    // only eve's data: the victim's breaching points leave them OK.
    let mut c = server.client().await;
    c.put_metric_data(watchtrail_proto::v1::PutMetricDataRequest {
        idempotency_id: "victim-errors".into(),
        metric_data: vec![watchtrail_proto::v1::MetricDatum {
            namespace: "App".into(),
            metric_name: "Errors".into(),
            dimensions: vec![],
            timestamp_ms: chrono_now_ms(),
            data: Some(watchtrail_proto::v1::metric_datum::Data::Value(100.0)),
            unit: String::new(),
            storage_resolution: 60,
        }],
        series: vec![],
    })
    .await
    .expect("victim metrics");
    assert_eq!(
        send(&server, &eve, "PUT", "/v1/alarms/copycat", &alarm).await,
        201
    );
    let sql_alarm = json!({
        "Query": "SELECT time, value FROM metrics WHERE metric_name = 'Errors'",
        "Statistic": "Sum", "Period": 10, "EvaluationPeriods": 1, "Threshold": 1,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold", "TreatMissingData": "notBreaching"
    });
    assert_eq!(
        send(&server, &eve, "PUT", "/v1/alarms/sql-copycat", &sql_alarm).await,
        201
    );
    server
        .wait_alarm_state("victim-alarm", "ALARM", Duration::from_secs(40))
        .await;
    for name in ["copycat", "sql-copycat"] {
        let a = server
            .send_as(&eve, "GET", &format!("/v1/alarms/{name}"), b"")
            .await;
        assert_ne!(a.json()["StateValue"], "ALARM", "{name}: {}", a.text());
    }
    // The victim's destination is untouched.
    let a = server.send("GET", "/v1/destinations", &[], b"").await;
    assert!(
        a.text().contains("http://127.0.0.1:9/victim"),
        "{}",
        a.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_no_private_address_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = ServerOptions::local(dir.path()).with_quick_alarms();
    // This server keeps the default policy: no private network is allowed.
    if let Some(i) = opts
        .args
        .iter()
        .position(|a| a == "--webhook-allow-networks")
    {
        opts.args.drain(i..i + 2);
    }
    let server = TestServer::start(opts).await;
    let receiver = watchtrail_e2e::receiver::Receiver::start("s").await;
    let port = receiver
        .url()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    // Address literals are refused when saved, naming the field.
    for url in [
        receiver.url(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::1]:9/hook".to_string(),
        "http://10.0.0.1/hook".to_string(),
    ] {
        let a = server
            .send(
                "PUT",
                "/v1/destinations/inside",
                &[],
                json!({ "Url": url }).to_string().as_bytes(),
            )
            .await;
        assert_eq!(a.status, 400, "{url}: {}", a.text());
        assert!(a.text().contains("Url"), "{}", a.text());
    }
    // A name that resolves to loopback is saved, but its delivery is refused at connect time
    // and never retried; the receiver hears nothing.
    let url = format!("http://localhost:{port}");
    server
        .send_ok(
            "PUT",
            "/v1/destinations/sneaky",
            json!({ "Url": url }).to_string().as_bytes(),
        )
        .await;
    let alarm = json!({
        "Namespace": "App", "MetricName": "Errors", "Statistic": "Sum", "Period": 10,
        "EvaluationPeriods": 1, "Threshold": 1, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "notBreaching", "AlarmActions": ["sneaky"]
    });
    let a = server
        .send("PUT", "/v1/alarms/a", &[], alarm.to_string().as_bytes())
        .await;
    assert_eq!(a.status, 201, "{}", a.text());
    server
        .send_ok(
            "PUT",
            "/v1/alarms/a/state",
            br#"{"StateValue": "ALARM", "StateReason": "egress test"}"#,
        )
        .await;
    let row = wait_for("the refused delivery", Duration::from_secs(30), || async {
        let v = server
            .http_query(
                "SELECT outcome, error FROM webhook_deliveries",
                "application/json",
            )
            .await
            .json();
        v["rows"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["outcome"] != "retrying").cloned())
    })
    .await;
    assert!(
        row["error"]
            .as_str()
            .is_some_and(|e| e.contains("localhost")),
        "{row}"
    );
    assert!(receiver.received().is_empty(), "a webhook reached loopback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_cannot_take_every_query_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(ServerOptions::local(dir.path()).with_args(&[
        "--tenant-query-concurrency",
        "1",
        "--query-queue-wait",
        "300ms",
        "--query-timeout",
        "4s",
    ]))
    .await;
    let other = server.create_key("other", "read").await;
    // A query that runs until its timeout holds the default tenant's only slot.
    let slow = {
        let (grpc, key) = (server.grpc, server.key.clone());
        tokio::spawn(async move {
            watchtrail_e2e::grpc_query(
                grpc,
                &key,
                "SELECT count(*) FROM range(1, 30000) a CROSS JOIN range(1, 30000) b CROSS JOIN range(1, 100) c",
            )
            .await
        })
    };
    // Once the slow query holds the slot, the tenant's next query is refused.
    let (status, v) = watchtrail_e2e::wait_for(
        "the slow query to hold the tenant's only slot",
        Duration::from_secs(3),
        || async {
            let (status, v) = query(&server, &server.key, "SELECT 1 AS one").await;
            (status == 429).then_some((status, v))
        },
    )
    .await;
    assert_eq!(status, 429, "{v}");
    assert!(v.to_string().contains("tenant-query-concurrency"), "{v}");
    let err = watchtrail_e2e::grpc_query(server.grpc, &server.key, "SELECT 1")
        .await
        .expect_err("over the limit");
    assert_eq!(err.code(), watchtrail_proto::tonic::Code::ResourceExhausted);
    // Another tenant is served meanwhile.
    let (status, v) = query(&server, &other, "SELECT 1 AS one").await;
    assert_eq!(status, 200, "{v}");
    // Once the slow one ends (its timeout), the slot is free again.
    let _ = slow.await;
    let (status, _) = query(&server, &server.key, "SELECT 1 AS one").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_over_the_limit_wait_for_one_to_close() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(
        ServerOptions::local(dir.path()).with_args(&["--max-http-connections", "2"]),
    )
    .await;
    // Two idle connections take both slots.
    let first = tokio::net::TcpStream::connect(server.http)
        .await
        .expect("connect");
    let _second = tokio::net::TcpStream::connect(server.http)
        .await
        .expect("connect");
    // Both are accepted before the third tries.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A third is not served while they stay open...
    let mut third = tokio::net::TcpStream::connect(server.http)
        .await
        .expect("connect");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let early = tokio::time::timeout(Duration::from_secs(1), third.read_to_end(&mut buf)).await;
    assert!(
        early.is_err(),
        "answered over the limit: {}",
        String::from_utf8_lossy(&buf)
    );
    // ...and is once one of them closes.
    drop(first);
    tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut buf))
        .await
        .expect("served after a slot freed")
        .expect("read");
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
}

#[tokio::test]
async fn grpc_connections_over_the_limit_wait_for_one_to_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(
        ServerOptions::local(dir.path()).with_args(&["--max-grpc-connections", "2"]),
    )
    .await;
    // Two idle connections take both slots (the start-up health check's has closed by now).
    let first = tokio::net::TcpStream::connect(server.grpc)
        .await
        .expect("connect");
    let _second = tokio::net::TcpStream::connect(server.grpc)
        .await
        .expect("connect");
    // Both are accepted before the third tries.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A third client is not served while they stay open...
    let third = tokio::spawn({
        let server_grpc = server.endpoint();
        async move {
            let ch = server_grpc.connect().await.expect("connect");
            watchtrail_e2e::grpc_health(ch).await
        }
    });
    // A negative check: the third is still waiting a second later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!third.is_finished(), "served over the limit");
    // ...and is once one of them closes.
    drop(first);
    let serving = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("served after a slot freed")
        .expect("task");
    assert!(serving, "health check answered SERVING");
    assert!(server.grpc_serving().await, "the server serves on");
}
