//! `watchtrail import` of real CloudTrail delivery files into the `audit` table.

use std::process::Command;

use watchtrail_e2e::{ServerOptions, TestServer, bin_path, fixtures};
use watchtrail_query::tables::TableKind;
use watchtrail_storage::deltalake::arrow::array::{Array, AsArray};
use watchtrail_storage::store::Storage;

use super::column_counts;

fn import(server: &TestServer, path: &std::path::Path) -> std::process::Output {
    Command::new(bin_path("watchtrail"))
        .env("WATCHTRAIL_API_KEY", &server.key)
        .args(["--server", &format!("http://{}", server.grpc), "import"])
        .arg(path)
        .output()
        .expect("run watchtrail import")
}

#[tokio::test]
async fn all_2900_cloudtrail_events_land_once_with_athena_column_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The subject is the CloudTrail data itself: no Watchtrail events of its own beside it.
    let opts = ServerOptions::local(dir.path()).with_args(&["--no-self-audit"]);
    let mut server = TestServer::start(opts.clone()).await;
    let out = import(&server, &fixtures().join("cloudtrail"));
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2900 events read from 55 files: 2900 stored, 0 duplicates"),
        "{stderr}"
    );
    // Importing again (redelivery) stores nothing new, and says so.
    let out = import(&server, &fixtures().join("cloudtrail"));
    assert!(
        out.status.success(),
        "second import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2900 events read from 55 files: 0 stored, 2900 duplicates"),
        "{stderr}"
    );
    server.stop().await;

    let storage = Storage::from_url(&opts.store).expect("store");
    let ids = column_counts(&storage, "default", TableKind::Audit, "eventid").await;
    assert_eq!(ids.len(), 2900, "distinct event ids");
    assert!(ids.values().all(|n| *n == 1), "an event was stored twice");
    let batches = storage
        .read_table("default", TableKind::Audit)
        .await
        .expect("read");
    let schema = batches[0].schema();
    for col in [
        "eventversion",
        "useridentity",
        "eventtime",
        "eventsource",
        "eventname",
        "awsregion",
        "sourceipaddress",
        "useragent",
        "errorcode",
        "errormessage",
        "requestparameters",
        "responseelements",
        "additionaleventdata",
        "requestid",
        "eventid",
        "readonly",
        "resources",
        "eventtype",
        "managementevent",
        "recipientaccountid",
        "eventcategory",
        "tlsdetails",
        "eventjson",
    ] {
        assert!(schema.field_with_name(col).is_ok(), "missing column {col}");
    }
    // 300 events carry an errorCode in the raw files.
    let errors: usize = batches
        .iter()
        .map(|b| {
            b.column_by_name("errorcode").expect("col").len()
                - b.column_by_name("errorcode").expect("col").null_count()
        })
        .sum();
    assert_eq!(errors, 300);
    let names: usize = batches
        .iter()
        .map(|b| {
            let uid = b
                .column_by_name("useridentity")
                .expect("col")
                .as_struct()
                .clone();
            let accounts = std::sync::Arc::clone(uid.column_by_name("accountid").expect("field"));
            accounts.len() - accounts.logical_null_count()
        })
        .sum();
    assert_eq!(names, 2866, "useridentity.accountid as in the raw files");
}

#[tokio::test]
async fn a_malformed_file_is_reported_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The subject is the CloudTrail data itself: no Watchtrail events of its own beside it.
    let mut server =
        TestServer::start(ServerOptions::local(dir.path()).with_args(&["--no-self-audit"])).await;
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"Records\": [\n  {\"eventID\": 1,]}").expect("write");
    let out = import(&server, &bad);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.json") && stderr.contains("line 2"),
        "{stderr}"
    );
    let partly = dir.path().join("partly.json");
    std::fs::write(&partly, r#"{"Records":[{"eventID":"ok-1","eventTime":"2023-07-10T11:40:13Z"},{"eventID":"no-time"},{"eventID":"ok-2","eventTime":"2023-07-10T11:40:14Z"}]}"#).expect("write");
    let out = import(&server, &partly);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a refused record makes the import fail"
    );
    assert!(
        stderr.contains("partly.json record 1") && stderr.contains("eventTime"),
        "{stderr}"
    );
    assert!(
        stderr.contains("3 events read from 1 files: 2 stored, 0 duplicates")
            && stderr.contains("1 refused"),
        "{stderr}"
    );
    server.stop().await;
}

/// Two records with one `eventID` store one and say so; arrays of events and JSON Lines are
/// read as delivery files are; refusals are grouped by reason; `--fill-missing-ids` gives
/// events without an id one that a re-import finds again.
#[tokio::test]
async fn imports_count_stored_duplicate_and_refused_events_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = ServerOptions::local(dir.path()).with_args(&["--no-self-audit"]);
    let mut server = TestServer::start(opts.clone()).await;
    let event = |id: &str, sec: u32| {
        format!(
            r#"{{"eventVersion":"1.08","eventID":"{id}","eventTime":"2023-07-10T11:40:{sec:02}Z","eventSource":"s3.amazonaws.com","eventName":"GetObject"}}"#
        )
    };
    let files = dir.path().join("in");
    std::fs::create_dir_all(&files).expect("mkdir");
    // A delivery file whose two records share an id.
    std::fs::write(
        files.join("a.json"),
        format!(
            r#"{{"Records":[{},{}]}}"#,
            event("same", 1),
            event("same", 1)
        ),
    )
    .expect("write");
    // A bare array, and JSON Lines with a blank line.
    std::fs::write(
        files.join("b.json"),
        format!("[{},{}]", event("arr-1", 2), event("arr-2", 3)),
    )
    .expect("write");
    std::fs::write(
        files.join("c.jsonl"),
        format!("{}\n\n{}\n", event("line-1", 4), event("line-2", 5)),
    )
    .expect("write");
    let out = import(&server, &files);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("6 events read from 3 files: 5 stored, 1 duplicates"),
        "{stderr}"
    );

    // Refusals grouped by reason.
    let bad = dir.path().join("bad.jsonl");
    let no_time = r#"{"eventID":"x1","eventSource":"s3.amazonaws.com"}"#;
    let no_time2 = r#"{"eventID":"x2","eventSource":"s3.amazonaws.com"}"#;
    let no_id = r#"{"eventTime":"2023-07-10T11:40:06Z","eventSource":"s3.amazonaws.com","eventName":"PutObject"}"#;
    std::fs::write(&bad, format!("{no_time}\n{no_time2}\n{no_id}\n")).expect("write");
    let out = import(&server, &bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("0 stored, 0 duplicates") && stderr.contains("3 refused"),
        "{stderr}"
    );
    assert!(stderr.contains("refused 2: eventTime"), "{stderr}");
    assert!(stderr.contains("refused 1: eventID"), "{stderr}");

    // With derived ids, the event without one is stored, once however often it is imported.
    let only = dir.path().join("no-id.jsonl");
    std::fs::write(&only, format!("{no_id}\n")).expect("write");
    for (run, want) in [(1, "1 stored, 0 duplicates"), (2, "0 stored, 1 duplicates")] {
        let out = Command::new(bin_path("watchtrail"))
            .env("WATCHTRAIL_API_KEY", &server.key)
            .args(["--server", &format!("http://{}", server.grpc), "import"])
            .arg("--fill-missing-ids")
            .arg(&only)
            .output()
            .expect("run import");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "run {run}: {stderr}");
        assert!(stderr.contains(want), "run {run}: {stderr}");
        assert!(stderr.contains("1 given a derived eventID"), "{stderr}");
    }
    server.stop().await;
    let storage = Storage::from_url(&opts.store).expect("store");
    let ids = column_counts(&storage, "default", TableKind::Audit, "eventid").await;
    assert_eq!(
        ids.len(),
        6,
        "five events and the one with a derived id: {ids:?}"
    );
    assert!(
        ids.values().all(|n| *n == 1),
        "an event was stored twice: {ids:?}"
    );
}

/// A trail bucket copy with CloudTrail's signed digests: validated before the import (signature,
/// chain, each log file's hash); a changed log file is named and left out, a removed digest
/// signature and a broken chain are named.
#[tokio::test]
async fn cloudtrail_digests_are_validated_before_importing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("bucket");
    let keys = dir.path().join("keys.json");
    let made = std::process::Command::new(watchtrail_e2e::python())
        .arg(watchtrail_e2e::manifest_dir().join("python/cloudtrail_digests.py"))
        .arg(&copy)
        .arg(&keys)
        .status()
        .expect("python");
    assert!(made.success());
    let server = watchtrail_e2e::TestServer::start(watchtrail_e2e::ServerOptions::local(
        &dir.path().join("server"),
    ))
    .await;
    let import = |extra: &[&str]| {
        let mut c = server.cli();
        c.arg("import")
            .arg(&copy)
            .arg("--aws-public-keys")
            .arg(&keys)
            .args(extra);
        c
    };
    let out = import(&[]).output().await.expect("import");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("2/2 CloudTrail digests valid"), "{text}");
    assert!(text.contains("2/2 log files valid"), "{text}");
    assert!(text.contains("5 stored"), "{text}");
    assert!(!text.contains("INVALID"), "{text}");

    // A log file changed after delivery: named, and not imported.
    let log = walk(&copy)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("_b2.json.gz"))
        .expect("log b2");
    let changed = r#"{"Records":[{"eventVersion":"1.08","eventID":"forged","eventTime":"2023-07-10T11:30:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","awsRegion":"us-east-1"}]}"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, changed.as_bytes()).expect("gzip");
    std::fs::write(&log, gz.finish().expect("gzip")).expect("write");
    // And the first digest's signature lost.
    let sig = walk(&copy)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("110000Z.json.gz.sig"))
        .expect("first signature");
    std::fs::remove_file(&sig).expect("rm");
    let out = import(&[]).output().await.expect("import");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("_b2.json.gz INVALID: changed"), "{text}");
    assert!(
        text.contains("110000Z.json.gz INVALID: no signature"),
        "{text}"
    );
    assert!(text.contains("1/2 CloudTrail digests valid"), "{text}");
    assert!(text.contains("1/2 log files valid"), "{text}");
    assert!(text.contains("not importing 1 log files"), "{text}");
    let n = watchtrail_e2e::sql_count(
        &server,
        "SELECT count(*) AS n FROM audit WHERE eventid = 'forged'",
    )
    .await;
    assert_eq!(n, 0, "a changed file was imported");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
