//! API keys end to end: a real server, the real CLI, every door (gRPC ingest, gRPC query,
//! HTTP query, the alarm and key APIs), every role.

use std::process::Output;

use watchtrail_e2e::{ServerOptions, TestServer, grpc_query, http_send, ingest_client, wait_for};
use watchtrail_proto::tonic::Code;

use super::log_batch;

fn keys_cli(server: &TestServer, key: &str, args: &[&str]) -> Output {
    std::process::Command::new(watchtrail_e2e::bin_path("watchtrail"))
        .env("WATCHTRAIL_API_KEY", key)
        .env_remove("WATCHTRAIL_TENANT")
        .args(["--http", &format!("http://{}", server.http), "keys"])
        .args(args)
        .output()
        .expect("run watchtrail keys")
}

fn token_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The secret part of a token (what must never show anywhere).
fn secret(token: &str) -> &str {
    token.rsplit('_').next().unwrap_or(token)
}

async fn http_status(
    server: &TestServer,
    key: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> u16 {
    server
        .send_as(key.unwrap_or_default(), method, path, body.as_bytes())
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_roles_guard_every_door() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(ServerOptions::local(dir.path())).await;
    // The first start made an admin key and wrote it where only its owner can read it.
    let admin_file = dir.path().join("admin.key");
    let admin = std::fs::read_to_string(&admin_file).expect("admin.key");
    assert_eq!(admin.trim(), server.key);
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&admin_file)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "admin.key is readable by others: {mode:o}");
    }
    let ingest = token_of(&keys_cli(
        &server,
        &server.key,
        &["create", "--role", "ingest", "--description", "agents"],
    ));
    let read = token_of(&keys_cli(
        &server,
        &server.key,
        &["create", "--role", "read"],
    ));

    // gRPC ingest: no key, a wrong secret, a read key: refused; an ingest key: accepted.
    let bare = watchtrail_proto::v1::ingest_service_client::IngestServiceClient::new(
        watchtrail_proto::tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
            .expect("url")
            .connect_lazy(),
    );
    let err = bare
        .clone()
        .put_log_events(log_batch("none", 1))
        .await
        .expect_err("no key");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let mut wrong = ingest.clone();
    let last = if wrong.ends_with('0') { "1" } else { "0" };
    wrong.replace_range(wrong.len() - 1.., last);
    let err = ingest_client(server.grpc, &wrong)
        .put_log_events(log_batch("wrong", 1))
        .await
        .expect_err("wrong secret");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let err = ingest_client(server.grpc, &read)
        .put_log_events(log_batch("read", 1))
        .await
        .expect_err("read key writing");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let r = ingest_client(server.grpc, &ingest)
        .put_log_events(log_batch("ok", 3))
        .await
        .expect("ingest key writing")
        .into_inner();
    assert_eq!(r.accepted, 3);

    // gRPC query: an ingest key is refused, a read key answers.
    let err = grpc_query(server.grpc, &ingest, "SELECT 1")
        .await
        .expect_err("ingest key querying");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let err = grpc_query(server.grpc, &wrong, "SELECT 1")
        .await
        .expect_err("wrong key");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    wait_for(
        "the three events",
        std::time::Duration::from_secs(10),
        || async {
            let (rows, _) = grpc_query(server.grpc, &read, "SELECT count(*) FROM logs")
                .await
                .ok()?;
            (watchtrail_e2e::scalar_i64(&rows, 0) == 3).then_some(())
        },
    )
    .await;

    // HTTP: 401 without a key (with a challenge), 403 for the wrong role, open health.
    let q = r#"{"sql": "SELECT count(*) FROM logs"}"#;
    let a = http_send(server.http, "POST", "/v1/query", &[], q.as_bytes()).await;
    assert_eq!(a.status, 401, "{}", a.text());
    assert_eq!(
        a.headers.get("www-authenticate").map(String::as_str),
        Some("Bearer")
    );
    assert!(a.text().contains("API key"), "{}", a.text());
    assert_eq!(
        http_status(&server, Some(&read), "POST", "/v1/query", q).await,
        200
    );
    assert_eq!(
        http_status(&server, Some(&ingest), "POST", "/v1/query", q).await,
        403
    );
    assert_eq!(
        http_status(&server, Some("wt_nonsense"), "POST", "/v1/query", q).await,
        401
    );
    assert_eq!(http_status(&server, None, "GET", "/healthz", "").await, 200);
    assert_eq!(http_status(&server, None, "GET", "/metrics", "").await, 200);
    let dest = r#"{"Url": "http://127.0.0.1:9/hook", "Secret": "s"}"#;
    assert_eq!(
        http_status(&server, Some(&read), "GET", "/v1/alarms", "").await,
        200
    );
    assert_eq!(
        http_status(&server, Some(&ingest), "GET", "/v1/alarms", "").await,
        403
    );
    assert_eq!(
        http_status(&server, Some(&read), "PUT", "/v1/destinations/d", dest).await,
        403
    );
    assert_eq!(
        http_status(
            &server,
            Some(&server.key),
            "PUT",
            "/v1/destinations/d",
            dest
        )
        .await,
        200
    );
    assert_eq!(
        http_status(&server, Some(&read), "GET", "/v1/keys", "").await,
        403
    );
    let out = keys_cli(&server, &read, &["create", "--role", "admin"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Lists show ids and roles, never a secret.
    let out = keys_cli(&server, &server.key, &["list"]);
    let listed = token_of(&out);
    let v: serde_json::Value = serde_json::from_str(&listed).expect("json");
    let keys = v["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 3, "{listed}");
    for t in [&server.key, &ingest, &read] {
        assert!(
            !listed.contains(secret(t)),
            "a secret in the list: {listed}"
        );
    }
    assert!(
        keys.iter()
            .any(|k| k["role"] == "ingest" && k["description"] == "agents")
    );

    // Revoking takes effect at once.
    let read_id = read.split('_').nth(1).expect("key id").to_string();
    let out = keys_cli(&server, &server.key, &["revoke", &read_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        http_status(&server, Some(&read), "POST", "/v1/query", q).await,
        401
    );
    let err = grpc_query(server.grpc, &read, "SELECT 1")
        .await
        .expect_err("revoked");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(
        http_status(
            &server,
            Some(&server.key),
            "DELETE",
            &format!("/v1/keys/{read_id}"),
            ""
        )
        .await,
        404
    );

    // No secret reached the server's log.
    let log = server.log();
    for t in [&server.key, &ingest, &read, &wrong] {
        assert!(!log.contains(secret(t)), "a secret in the server log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reaches_its_own_tenant_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(ServerOptions::local(dir.path())).await;
    // An operator makes keys of a new tenant straight in the store; the running server knows
    // them on their first call.
    let acme_ingest = server.create_key("acme", "ingest").await;
    let acme_admin = server.create_key("acme", "admin").await;
    let r = ingest_client(server.grpc, &acme_ingest)
        .put_log_events(log_batch("acme", 5))
        .await
        .expect("acme writes")
        .into_inner();
    assert_eq!(r.accepted, 5);
    server
        .client()
        .await
        .put_log_events(log_batch("default", 2))
        .await
        .expect("default writes");
    let count = |key: String| {
        let grpc = server.grpc;
        async move {
            let (rows, _) = grpc_query(grpc, &key, "SELECT count(*) FROM logs")
                .await
                .ok()?;
            Some(watchtrail_e2e::scalar_i64(&rows, 0))
        }
    };
    wait_for(
        "each tenant's rows",
        std::time::Duration::from_secs(10),
        || async {
            (count(acme_admin.clone()).await == Some(5)
                && count(server.key.clone()).await == Some(2))
            .then_some(())
        },
    )
    .await;

    // Naming another tenant in the header is refused, not obeyed.
    let mut req = watchtrail_proto::tonic::Request::new(log_batch("sneak", 1));
    req.metadata_mut().insert(
        watchtrail_proto::TENANT_HEADER,
        "default".parse().expect("ascii"),
    );
    let err = ingest_client(server.grpc, &acme_ingest)
        .put_log_events(req)
        .await
        .expect_err("another tenant");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let a = http_send(
        server.http,
        "POST",
        "/v1/query",
        &[
            &format!("Authorization: Bearer {acme_admin}"),
            "x-watchtrail-tenant: default",
        ],
        br#"{"sql": "SELECT count(*) FROM logs"}"#,
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.text());

    // An admin of acme makes keys of acme only, lists acme's only, and cannot revoke
    // default's (it does not exist, as far as acme can tell).
    let out = keys_cli(
        &server,
        &acme_admin,
        &["--tenant", "default", "create", "--role", "read"],
    );
    assert!(!out.status.success(), "acme made a key of default");
    let out = keys_cli(&server, &acme_admin, &["list"]);
    let listed: serde_json::Value = serde_json::from_str(&token_of(&out)).expect("json");
    let tenants: Vec<&str> = listed["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["tenant"].as_str())
        .collect();
    assert_eq!(tenants, ["acme", "acme"], "{listed}");
    let default_id = server.key.split('_').nth(1).expect("id").to_string();
    assert_eq!(
        http_status(
            &server,
            Some(&acme_admin),
            "DELETE",
            &format!("/v1/keys/{default_id}"),
            ""
        )
        .await,
        404
    );
    assert_eq!(
        http_status(&server, Some(&server.key), "GET", "/v1/keys", "").await,
        200
    );
}

/// The trail rows of one tenant, as JSON objects.
async fn trail(server: &TestServer, key: &str) -> Vec<serde_json::Value> {
    let sql = "SELECT eventname, errorcode, useridentity.accesskeyid AS keyid, \
               useridentity.username AS role, sourceipaddress, useragent, \
               CAST(requestparameters AS VARCHAR) AS params, recipientaccountid \
               FROM audit WHERE eventsource = 'watchtrail'";
    let a = http_send(
        server.http,
        "POST",
        "/v1/query",
        &[&format!("Authorization: Bearer {key}")],
        serde_json::json!({ "sql": sql }).to_string().as_bytes(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()["rows"].as_array().cloned().unwrap_or_default()
}

fn has(rows: &[serde_json::Value], pred: impl Fn(&serde_json::Value) -> bool) -> bool {
    rows.iter().any(pred)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_control_call_query_import_and_refusal_lands_in_the_callers_trail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(ServerOptions::local(dir.path()).with_quick_alarms()).await;
    let admin = server.key.clone();
    let admin_id = admin.split('_').nth(1).expect("id").to_string();
    let read = token_of(&keys_cli(&server, &admin, &["create", "--role", "read"]));
    let read_id = read.split('_').nth(1).expect("id").to_string();
    let acme = server.create_key("acme", "read").await;

    // The CIS unauthorized-API-calls filter and alarm, on a 10 s period.
    let examples = watchtrail_e2e::manifest_dir().join("../examples/alarms/cis");
    for (kind, file) in [("metric-filters", "filters"), ("alarms", "alarms")] {
        let mut v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(examples.join(file).join("02-UnauthorizedAPICalls.json"))
                .expect("example"),
        )
        .expect("json");
        if kind == "alarms" {
            v["Period"] = serde_json::json!(10);
            v["AlarmActions"] = serde_json::json!([]);
        }
        let name = "CIS-UnauthorizedAPICalls";
        let a = server
            .send(
                "PUT",
                &format!("/v1/{kind}/{name}"),
                &[],
                v.to_string().as_bytes(),
            )
            .await;
        assert!(a.status == 200 || a.status == 201, "{}", a.text());
    }
    server
        .send_ok(
            "PUT",
            "/v1/destinations/hook",
            br#"{"Url": "http://127.0.0.1:9/hook", "Secret": "do-not-log-me"}"#,
        )
        .await;
    server
        .send_ok(
            "PUT",
            "/v1/alarms/CIS-UnauthorizedAPICalls/state",
            br#"{"StateValue": "OK", "StateReason": "trail test"}"#,
        )
        .await;
    // A query over gRPC and one over HTTP, an import, and refusals of three kinds.
    grpc_query(server.grpc, &read, "SELECT 41 + 1 AS answer")
        .await
        .expect("query");
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    server
        .client()
        .await
        .put_audit_events(watchtrail_proto::v1::PutAuditEventsRequest {
            idempotency_id: "import-1".into(),
            records: vec![watchtrail_proto::v1::AuditRecord {
                json: format!(
                    r#"{{"eventVersion":"1.08","eventTime":"{now}","eventID":"e-1","eventSource":"s3.amazonaws.com","eventName":"GetObject"}}"#
                ),
            }],
        })
        .await
        .expect("import");
    let q = br#"{"sql": "SELECT 1"}"#;
    assert_eq!(
        http_send(server.http, "POST", "/v1/query", &[], q)
            .await
            .status,
        401
    );
    assert_eq!(
        http_status(
            &server,
            Some(&read),
            "DELETE",
            "/v1/alarms/CIS-UnauthorizedAPICalls",
            ""
        )
        .await,
        403
    );
    let err = ingest_client(server.grpc, &read)
        .put_log_events(log_batch("denied", 1))
        .await
        .expect_err("read key writing");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        http_status(
            &server,
            Some(&acme),
            "POST",
            "/v1/query",
            r#"{"sql": "SELECT 2"}"#
        )
        .await,
        200
    );

    let rows = wait_for("the trail", std::time::Duration::from_secs(20), || async {
        let rows = trail(&server, &admin).await;
        let want = has(&rows, |r| {
            r["eventname"] == "PutLogEvents" && r["errorcode"] == "AccessDenied"
        });
        want.then_some(rows)
    })
    .await;
    let ok = |name: &str, key: &str| {
        has(&rows, |r| {
            r["eventname"] == name && r["errorcode"].is_null() && r["keyid"] == key
        })
    };
    assert!(ok("PutMetricFilter", &admin_id), "{rows:?}");
    assert!(ok("PutAlarm", &admin_id), "{rows:?}");
    assert!(ok("PutDestination", &admin_id), "{rows:?}");
    assert!(ok("SetAlarmState", &admin_id), "{rows:?}");
    assert!(ok("CreateKey", &admin_id), "{rows:?}");
    assert!(ok("PutAuditEvents", &admin_id), "{rows:?}");
    // The query's SQL, from where and by which role.
    assert!(
        has(&rows, |r| r["eventname"] == "Query"
            && r["keyid"] == read_id.as_str()
            && r["role"] == "read"
            && r["sourceipaddress"] == "127.0.0.1"
            && r["params"]
                .as_str()
                .is_some_and(|p| p.contains("SELECT 41 + 1"))),
        "{rows:?}"
    );
    // Refusals: no key at all, a role short of the call (over HTTP and gRPC).
    assert!(
        has(&rows, |r| r["eventname"] == "Query"
            && r["errorcode"] == "AccessDenied"
            && r["keyid"].is_null()),
        "{rows:?}"
    );
    assert!(
        has(&rows, |r| r["eventname"] == "DeleteAlarm"
            && r["errorcode"] == "AccessDenied"
            && r["keyid"] == read_id.as_str()),
        "{rows:?}"
    );
    // Never a secret, and never another tenant's calls.
    let text = serde_json::to_string(&rows).expect("json");
    assert!(
        !text.contains("do-not-log-me"),
        "a destination secret in the trail"
    );
    assert!(!text.contains(secret(&read)) && !text.contains(secret(&admin)));
    assert!(
        !text.contains("SELECT 2"),
        "acme's query in default's trail"
    );
    let acme_rows = trail(&server, &acme).await;
    assert!(
        has(&acme_rows, |r| r["eventname"] == "Query"
            && r["recipientaccountid"] == "acme"),
        "{acme_rows:?}"
    );
    assert!(
        !has(&acme_rows, |r| r["eventname"] == "PutAlarm"),
        "{acme_rows:?}"
    );

    // The CIS pattern fires on Watchtrail's own refusals.
    server
        .wait_alarm_state(
            "CIS-UnauthorizedAPICalls",
            "ALARM",
            std::time::Duration::from_secs(40),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_finds_the_first_admin_key_from_the_servers_directory() {
    // The README's flow: the server started in a directory with the default layout, the CLI
    // run from the same directory with no key given.
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(ServerOptions::local(&dir.path().join("watchtrail-data"))).await;
    assert!(dir.path().join("watchtrail-data/admin.key").exists());
    let run = |cwd: &std::path::Path| {
        std::process::Command::new(watchtrail_e2e::bin_path("watchtrail"))
            .current_dir(cwd)
            .env_remove("WATCHTRAIL_API_KEY")
            .env_remove("WATCHTRAIL_API_KEY_FILE")
            .env_remove("WATCHTRAIL_TENANT")
            .args(["--server", &format!("http://{}", server.grpc)])
            .args(["query", "--format", "csv", "SELECT 1 AS one"])
            .output()
            .expect("run watchtrail")
    };
    let out = run(dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\n1\n");
    // Elsewhere there is no key, and the refusal says what is missing.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let out = run(elsewhere.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("API key"), "{err}");
}
