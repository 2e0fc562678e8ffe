//! Hostile callers: statements and functions that would crash the server, inputs that would
//! blind its trail, and ingest that would forge it.

use std::time::Duration;

use watchtrail_e2e::{ServerOptions, TestServer, http_get, http_send, wait_for};
use watchtrail_proto::v1::{AuditRecord, PutAuditEventsRequest};

/// The server's own events, with the fields these tests look at.
async fn own_events(server: &TestServer, filter: &str) -> Vec<serde_json::Value> {
    let sql = format!(
        "SELECT eventname, errorcode, useragent, requestid, \
         CAST(requestparameters AS VARCHAR) AS params, additionaleventdata AS extra \
         FROM audit WHERE eventsource = 'watchtrail' AND {filter}"
    );
    let a = server.http_query(&sql, "application/json").await;
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()["rows"].as_array().cloned().unwrap_or_default()
}

fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_queries_are_refused_recorded_first_and_the_server_stays_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(ServerOptions::local(dir.path())).await;
    let read = server.create_key("default", "read").await;
    let ask = |sql: String| {
        let read = read.clone();
        let server = &server;
        async move {
            let body = serde_json::json!({ "sql": sql }).to_string();
            server
                .send_as(&read, "POST", "/v1/query", body.as_bytes())
                .await
        }
    };
    // 2,000 terms: once a stack overflow that aborted the process.
    let deep = format!("SELECT {} AS n", vec!["1"; 2_000].join("+"));
    let a = ask(deep).await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.text().contains("500 levels"), "{}", a.text());
    // 100 GB asked of one function: once an aborting allocation.
    let a =
        ask("SELECT length(repeat(arrow_cast('x','LargeUtf8'), 100000000000)) AS n".into()).await;
    assert_eq!(a.status, 429, "{}", a.text());
    assert!(a.text().contains("memory limit"), "{}", a.text());
    // The server answers on.
    let a = ask("SELECT 41 + 1 AS n".into()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["rows"][0]["n"], 42);

    // Each query's start is in the trail, and so is its outcome, under the same SQL.
    let rows = wait_for("the queries' outcomes", Duration::from_secs(20), || async {
        let rows = own_events(&server, "eventname IN ('StartQuery', 'Query')").await;
        let outcomes = rows.iter().filter(|r| r["eventname"] == "Query").count();
        (outcomes >= 3).then_some(rows)
    })
    .await;
    for (sql_part, code) in [
        ("1+1+1", "InvalidQuery"),
        ("repeat(", "QueryMemoryLimitExceeded"),
    ] {
        let with = |name: &str| {
            rows.iter()
                .filter(|r| r["eventname"] == name)
                .filter(|r| r["params"].as_str().is_some_and(|p| p.contains(sql_part)))
                .cloned()
                .collect::<Vec<_>>()
        };
        let started = with("StartQuery");
        assert_eq!(started.len(), 1, "{rows:#?}");
        assert!(started[0]["errorcode"].is_null());
        let ended = with("Query");
        assert_eq!(ended.len(), 1, "{rows:#?}");
        assert_eq!(ended[0]["errorcode"], code, "{rows:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_admin_action_goes_unrecorded_whatever_its_inputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(ServerOptions::local(dir.path())).await;
    // A 300 KB User-Agent and a long description on a key creation: the key is made, and so
    // is its event, with the user agent cut and the cut named.
    let ua = format!("User-Agent: {}", "u".repeat(300 * 1024));
    let body = serde_json::json!({ "role": "read", "description": "made with a long user agent" });
    let a = server
        .send("POST", "/v1/keys", &[&ua], body.to_string().as_bytes())
        .await;
    assert!((200..300).contains(&a.status), "{} {}", a.status, a.text());
    // A refused one, with a 1 MB description, is recorded too.
    let body = serde_json::json!({ "role": "admin", "description": "d".repeat(1 << 20) });
    let a = server
        .send("POST", "/v1/keys", &[&ua], body.to_string().as_bytes())
        .await;
    assert_eq!(a.status, 400, "{}", a.text());
    // And a flood of unauthenticated calls with long headers does not crowd it out.
    for _ in 0..200 {
        let a = http_send(server.http, "GET", "/v1/alarms", &[&ua], b"").await;
        assert_eq!(a.status, 401);
    }
    let rows = wait_for("the CreateKey events", Duration::from_secs(20), || async {
        let rows = own_events(&server, "eventname = 'CreateKey'").await;
        (rows.len() >= 2).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        let ua_kept = row["useragent"].as_str().expect("useragent");
        assert!(ua_kept.len() < 4096, "{} bytes", ua_kept.len());
        assert!(
            ua_kept.contains("truncated from 307212 bytes")
                || ua_kept.contains("truncated from 307200 bytes"),
            "{ua_kept:.100}"
        );
        assert!(
            row["extra"]
                .as_str()
                .is_some_and(|e| e.contains("userAgent")),
            "{row:?}"
        );
    }
    assert_eq!(
        rows.iter().filter(|r| r["errorcode"].is_null()).count(),
        1,
        "{rows:?}"
    );
    let refused = rows
        .iter()
        .find(|r| !r["errorcode"].is_null())
        .expect("the refused one");
    assert!(
        refused["params"]
            .as_str()
            .is_some_and(|p| p.contains("truncated from 1048576 bytes")),
        "{refused:?}"
    );

    // The refusals: a few one by one, the rest counted; none dropped.
    let refused = wait_for("the first refusals", Duration::from_secs(20), || async {
        let rows = own_events(&server, "eventname = 'DescribeAlarms'").await;
        (rows.len() >= 10).then_some(rows)
    })
    .await;
    assert_eq!(refused.len(), 10, "one by one up to the allowance");
    let (_, m) = http_get(server.http, "/metrics").await;
    assert_eq!(metric(&m, "watchtrail_self_audit_dropped_total"), 0, "{m}");
    assert_eq!(metric(&m, "watchtrail_self_audit_invalid_total"), 0, "{m}");
    assert_eq!(
        metric(&m, "watchtrail_self_audit_summarised_total") + refused.len() as u64,
        200,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_cannot_forge_the_servers_own_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(ServerOptions::local(dir.path())).await;
    let ingest = server.create_key("default", "ingest").await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let forged = format!(
        r#"{{"eventVersion":"1.09","eventTime":"{now}","eventID":"forged-1","eventSource":"watchtrail","eventName":"CreateKey"}}"#
    );
    let real = format!(
        r#"{{"eventVersion":"1.09","eventTime":"{now}","eventID":"real-1","eventSource":"s3.amazonaws.com","eventName":"GetObject"}}"#
    );
    let err = watchtrail_e2e::ingest_client(server.grpc, &ingest)
        .put_audit_events(PutAuditEventsRequest {
            idempotency_id: "forge-1".into(),
            records: vec![AuditRecord { json: real }, AuditRecord { json: forged }],
        })
        .await
        .expect_err("a forged event");
    assert_eq!(err.code(), watchtrail_proto::tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("records[1].eventSource"),
        "{}",
        err.message()
    );
    let a = server
        .http_query(
            "SELECT count(*) AS n FROM audit WHERE eventid LIKE 'forged%'",
            "application/json",
        )
        .await;
    assert_eq!(a.json()["rows"][0]["n"], 0);

    // An event that claims the mark in its JSON is stored unmarked; the server's own are marked.
    let claims = format!(
        r#"{{"eventVersion":"1.09","eventTime":"{now}","eventID":"claims-1","eventSource":"s3.amazonaws.com","eventName":"GetObject","serverEvent":true,"serverevent":true}}"#
    );
    watchtrail_e2e::ingest_client(server.grpc, &ingest)
        .put_audit_events(PutAuditEventsRequest {
            idempotency_id: "claims-1".into(),
            records: vec![AuditRecord { json: claims }],
        })
        .await
        .expect("an ordinary event");
    let rows = wait_for("the import's own event", Duration::from_secs(20), || async {
        let a = server
            .http_query(
                "SELECT eventsource, eventname, serverevent FROM audit ORDER BY eventsource, eventname",
                "application/json",
            )
            .await;
        let rows = a.json()["rows"].as_array().cloned().unwrap_or_default();
        rows.iter()
            .any(|r| r["eventname"] == "PutAuditEvents")
            .then_some(rows)
    })
    .await;
    for r in &rows {
        let own = r["eventsource"] == "watchtrail";
        assert_eq!(r["serverevent"], own, "{r}");
    }
    assert!(
        rows.iter().any(|r| r["eventname"] == "GetObject"),
        "{rows:?}"
    );
}

/// Reads until the server closes the connection; how long that took, or `None` if it did not
/// within `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt as _;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_all)
        .await
        .ok()
        .map(|()| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_slow_and_crowding_connections_lose_their_slots() {
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpStream;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(ServerOptions::local(dir.path()).with_args(&[
        "--max-http-connections",
        "4",
        "--max-grpc-connections",
        "4",
        "--max-connections-per-source",
        "3",
    ]))
    .await;
    // One address past its share: the fourth connection is closed at once.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.http).await.expect("connect"));
    }
    let mut fourth = TcpStream::connect(server.http).await.expect("connect");
    assert!(
        closed_within(&mut fourth, Duration::from_secs(3))
            .await
            .is_some(),
        "a fourth connection from one address was kept"
    );
    // A silent one, one that trickles half a request head, and an idle gRPC socket: each is
    // closed after the header or first-bytes timeout, not held forever.
    let mut silent = held.pop().expect("held");
    let mut slow = held.pop().expect("held");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut grpc_idle = TcpStream::connect(server.grpc).await.expect("connect");
    let started = std::time::Instant::now();
    for (what, s) in [
        ("silent", &mut silent),
        ("slow", &mut slow),
        ("gRPC idle", &mut grpc_idle),
    ] {
        closed_within(s, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("the {what} connection was held past 20 s"));
        let t = started.elapsed();
        assert!(
            t >= Duration::from_secs(5),
            "{what} closed too early: {t:?}"
        );
    }
    // The slots came back: a plain request is answered.
    let (status, body) = http_get(server.http, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    assert!(server.grpc_serving().await);
}
