//! Signed, chained audit digests and `watchtrail verify`: valid on an untouched store (after
//! compaction, retention and a kill -9 during ingest), and every kind of tampering named.

use std::path::{Path, PathBuf};
use std::time::Duration;

use watchtrail_e2e::{ServerOptions, TestServer, bin_path};
use watchtrail_proto::v1::{AuditRecord, PutAuditEventsRequest};
use watchtrail_query::tables::TableKind;
use watchtrail_storage::deltalake::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use watchtrail_storage::deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use watchtrail_storage::integrity::digest::Digest;
use watchtrail_storage::store::Storage;

/// Digests written a second after a window ends, looked for every 300 ms.
fn digesting(dir: &Path) -> ServerOptions {
    ServerOptions::local(dir).with_args(&[
        "--audit-digest-delay",
        "1s",
        "--audit-digest-interval",
        "300ms",
    ])
}

fn event(id: &str, time: &str, name: &str) -> AuditRecord {
    AuditRecord {
        json: format!(
            r#"{{"eventVersion":"1.08","eventID":"{id}","eventTime":"{time}","eventSource":"s3.amazonaws.com","eventName":"{name}","awsRegion":"us-east-1","sourceIPAddress":"203.0.113.7","userIdentity":{{"type":"IAMUser","userName":"alice"}}}}"#
        ),
    }
}

async fn put(server: &TestServer, id: &str, records: Vec<AuditRecord>) {
    let n = records.len() as u64;
    let resp = server
        .client()
        .await
        .put_audit_events(PutAuditEventsRequest {
            idempotency_id: id.into(),
            records,
        })
        .await
        .expect("put audit events")
        .into_inner();
    assert_eq!(resp.accepted, n);
}

/// Runs `watchtrail verify` against a store directory: (success, stdout).
fn verify_store(store: &Path, extra: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(bin_path("watchtrail"))
        .args(["verify", "--store"])
        .arg(format!("file://{}", store.display()))
        .args(["--tenant", "default", "--digest-delay", "1s"])
        .args(extra)
        .env_remove("WATCHTRAIL_API_KEY")
        .output()
        .expect("run watchtrail verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Waits until the server's own `verify` reports `digests` valid digests and every event valid.
async fn wait_verified(server: &TestServer, digests: u64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let a = server.send("GET", "/v1/audit/verify", &[], b"").await;
        let v = a.json();
        if a.status == 200 && v["valid"] == true && v["digestsValid"].as_u64() >= Some(digests) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no valid trail with {digests} digests after 60 s: {}\n{}",
            a.text(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// The store's audit data files.
fn audit_files(store: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(store.join("default/audit"))
        .expect("audit dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    out.sort();
    out
}

fn digest_files(store: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(store.join("default/_audit_digests"))
        .expect("digest dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    out.sort();
    out
}

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).expect("open");
    ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader")
        .map(|b| b.expect("batch"))
        .collect()
}

fn encode(batches: &[RecordBatch]) -> Vec<u8> {
    let mut enc =
        watchtrail_storage::files::ParquetEncoder::new(TableKind::Audit).expect("encoder");
    for b in batches {
        enc.write(b).expect("write");
    }
    enc.finish().expect("finish").0.to_vec()
}

/// One row's string column replaced.
fn with_value(batch: &RecordBatch, column: &str, row: usize, value: &str) -> RecordBatch {
    let i = batch.schema().index_of(column).expect("column");
    let old = batch.column(i).as_string::<i32>();
    let new: StringArray = (0..old.len())
        .map(|r| {
            if r == row {
                Some(value.to_string())
            } else {
                (!old.is_null(r)).then(|| old.value(r).to_string())
            }
        })
        .collect();
    let mut cols = batch.columns().to_vec();
    cols[i] = std::sync::Arc::new(new);
    RecordBatch::try_new(batch.schema(), cols).expect("batch")
}

#[tokio::test]
async fn verify_passes_untouched_and_names_every_tampering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = TestServer::start(digesting(dir.path())).await;
    // Three closed windows of imported history, five events each.
    for (i, hour) in ["10", "11", "12"].iter().enumerate() {
        let records = (0..5)
            .map(|j| {
                event(
                    &format!("evt-{hour}-{j}"),
                    &format!("2023-07-10T{hour}:{:02}:00Z", j * 7),
                    if j == 0 {
                        "DeleteBucketPolicy"
                    } else {
                        "GetObject"
                    },
                )
            })
            .collect();
        put(&server, &format!("batch-{i}"), records).await;
    }
    let report = wait_verified(&server, 3).await;
    assert!(report["eventsValid"].as_u64() >= Some(15), "{report}");
    // The CLI through the server: the validate-logs summary, exit 0.
    let out = server
        .cli()
        .args([
            "verify",
            "--start-time",
            "2023-07-10T00:00:00Z",
            "--end-time",
            "2023-07-11T00:00:00Z",
        ])
        .output()
        .await
        .expect("cli");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Results requested for 2023-07-10T00:00:00.000Z"),
        "{text}"
    );
    assert!(text.contains("15/15 events valid"), "{text}");
    // A bad time is refused naming the parameter.
    let bad = server
        .send("GET", "/v1/audit/verify?startTime=yesterday", &[], b"")
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("startTime"), "{}", bad.text());
    // The keys are published, and the server's key signed everything.
    let keys = server
        .send("GET", "/v1/audit/public-keys", &[], b"")
        .await
        .json();
    let fingerprint = keys["publicKeys"][0]["fingerprint"]
        .as_str()
        .expect("a key")
        .to_string();
    server.stop().await;

    let store = dir.path().join("store");
    let (ok, text) = verify_store(&store, &["--trust-key", &fingerprint]);
    assert!(ok, "untouched store: {text}");

    let case = |name: &str| {
        let to = dir.path().join(format!("case-{name}"));
        copy_dir(&store, &to);
        to
    };
    let expect = |store: &Path, extra: &[&str], what: &[&str]| {
        let (ok, text) = verify_store(store, extra);
        assert!(!ok, "{what:?} went unnoticed:\n{text}");
        for w in what {
            assert!(text.contains(w), "expected `{w}` in:\n{text}");
        }
    };
    // A file of the 11:00 window: the one whose rows hold `evt-11-*`.
    let file_of = |store: &Path, hour: &str| {
        audit_files(store)
            .into_iter()
            .find(|p| {
                read_parquet(p).iter().any(|b| {
                    let ids = b.column_by_name("eventid").expect("eventid");
                    let ids = ids.as_string::<i32>();
                    (0..ids.len()).any(|r| ids.value(r).starts_with(&format!("evt-{hour}-")))
                })
            })
            .expect("a file of the window")
    };

    // 1. One byte flipped in a Parquet file.
    let s = case("flip");
    let f = file_of(&s, "11");
    let mut bytes = std::fs::read(&f).expect("read");
    let at = bytes.len() - 2;
    bytes[at] ^= 0x20;
    std::fs::write(&f, &bytes).expect("write");
    expect(&s, &[], &["cannot be read", "evt-11-0", "INVALID: removed"]);

    // 2. A file rewritten with one event's field changed.
    let s = case("edit");
    let f = file_of(&s, "11");
    let mut batches = read_parquet(&f);
    let ids = batches[0]
        .column_by_name("eventid")
        .expect("ids")
        .as_string::<i32>()
        .value(0)
        .to_string();
    batches[0] = with_value(&batches[0], "sourceipaddress", 0, "198.51.100.66");
    std::fs::write(&f, encode(&batches)).expect("rewrite");
    expect(&s, &[], &[&format!("Event {ids} "), "INVALID: changed"]);

    // 3. A file deleted.
    let s = case("delete-file");
    std::fs::remove_file(file_of(&s, "12")).expect("rm");
    expect(
        &s,
        &[],
        &["evt-12-3", "INVALID: removed", "the file is missing"],
    );

    // 4. A file with a forged event added through the Delta log.
    let s = case("forge");
    {
        let storage = Storage::from_url(&format!("file://{}", s.display())).expect("storage");
        let template = read_parquet(&file_of(&s, "10"));
        let forged = with_value(&template[0].slice(0, 1), "eventid", 0, "forged-1");
        let (bytes, stats) = {
            let mut enc =
                watchtrail_storage::files::ParquetEncoder::new(TableKind::Audit).expect("enc");
            enc.write(&forged).expect("write");
            enc.finish().expect("finish")
        };
        let name = watchtrail_storage::write::file_name("forged");
        let file = watchtrail_storage::write::put(
            &storage,
            "default",
            TableKind::Audit,
            name,
            bytes,
            stats,
        )
        .await
        .expect("put");
        let mut table = storage
            .open_table("default", TableKind::Audit)
            .await
            .expect("open")
            .expect("table");
        watchtrail_storage::write::commit_append(&mut table, TableKind::Audit, &[file], None)
            .await
            .expect("commit");
    }
    expect(
        &s,
        &[],
        &["Event forged-1 (2023-07-10T10:00:00.000Z) INVALID: added"],
    );

    // 5. A digest deleted: the chain has a hole.
    let s = case("delete-digest");
    let d = digest_files(&s);
    std::fs::remove_file(&d[1]).expect("rm");
    expect(
        &s,
        &[],
        &[
            "000000000001.json INVALID: missing",
            "000000000002.json INVALID: broken chain",
        ],
    );

    // 6. A digest edited (still well-formed JSON in its canonical form).
    let s = case("edit-digest");
    let d = digest_files(&s);
    let mut v = Digest::parse(&std::fs::read(&d[0]).expect("read")).expect("digest");
    v.event_count = 4;
    std::fs::write(&d[0], v.to_bytes()).expect("write");
    expect(&s, &[], &["000000000000.json INVALID: signature not valid"]);

    // 7. Two digests swapped.
    let s = case("reorder");
    let d = digest_files(&s);
    let (a, b) = (
        std::fs::read(&d[0]).expect("a"),
        std::fs::read(&d[1]).expect("b"),
    );
    std::fs::write(&d[0], b).expect("write");
    std::fs::write(&d[1], a).expect("write");
    expect(&s, &[], &["INVALID: reordered"]);

    // 8. A digest truncated.
    let s = case("truncate");
    let d = digest_files(&s);
    let bytes = std::fs::read(&d[2]).expect("read");
    std::fs::write(&d[2], &bytes[..bytes.len() / 2]).expect("write");
    expect(&s, &[], &["000000000002.json INVALID: altered"]);

    // 9. Digests from a key that is not trusted.
    expect(
        &store,
        &["--trust-key", "00ff"],
        &["INVALID: signed by an unknown key"],
    );
}

/// The number of digests the server's `verify` reports, once the trail is valid with at least
/// `min` of them.
async fn digests_now(server: &TestServer, min: u64) -> u64 {
    wait_verified(server, min).await["digests"]
        .as_u64()
        .unwrap_or_default()
}

fn hour_events(prefix: &str, hour: &str, n: usize) -> Vec<AuditRecord> {
    (0..n)
        .map(|j| {
            event(
                &format!("{prefix}-{hour}-{j}"),
                &format!("2023-07-10T{hour}:{:02}:{:02}Z", j % 60, j % 59),
                "GetObject",
            )
        })
        .collect()
}

/// Late events get a follow-up digest; compaction rewrites files without a new digest; a kill
/// -9 during ingest leaves a trail that verifies; the digester does not bless a window whose
/// covered events went missing.
#[tokio::test]
async fn digests_follow_late_events_compaction_and_crashes_and_bless_no_tampering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = digesting(dir.path()).with_args(&[
        "--compaction-interval",
        "1s",
        "--compaction-settle",
        "1s",
    ]);
    let mut server = TestServer::start(options.clone()).await;
    // Several small files per window: compaction has something to merge.
    for i in 0..3 {
        put(
            &server,
            &format!("a{i}"),
            hour_events(&format!("a{i}"), "10", 4),
        )
        .await;
        put(
            &server,
            &format!("b{i}"),
            hour_events(&format!("b{i}"), "11", 4),
        )
        .await;
    }
    let before = digests_now(&server, 2).await;
    // Late events of 10:00: a follow-up digest covering all of the window.
    put(&server, "late", hour_events("late", "10", 3)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let after = loop {
        let n = digests_now(&server, before + 1).await;
        let v = wait_verified(&server, before + 1).await;
        if v["eventsValid"].as_u64() >= Some(27) {
            break n;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let store = dir.path().join("store");
    let follow_ups: Vec<Digest> = digest_files(&store)
        .iter()
        .map(|p| Digest::parse(&std::fs::read(p).expect("read")).expect("digest"))
        .filter(|d| d.kind == watchtrail_storage::integrity::digest::DigestKind::FollowUp)
        .collect();
    assert!(
        follow_ups
            .iter()
            .any(|d| d.event_count == 15 && d.window_start.starts_with("2023-07-10T10")),
        "{follow_ups:?}"
    );
    // Compaction merges the windows' files; the digests stay as they were and still verify.
    wait_for_counter(&server, "watchtrail_compaction_windows_total", 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(digests_now(&server, after).await, after);

    // A kill -9 in the middle of ingest.
    let grpc = server.client().await;
    let writer = tokio::spawn(async move {
        let mut client = grpc;
        for i in 0..200 {
            let _ = client
                .put_audit_events(PutAuditEventsRequest {
                    idempotency_id: format!("crash-{i}"),
                    records: hour_events(&format!("c{i}"), "13", 5),
                })
                .await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill9().await;
    let _ = writer.await;
    server.start_again().await;
    wait_verified(&server, after + 1).await;

    // A window's file removed behind the digester's back, then a late event there: no
    // digest blesses the loss, the mismatch is counted, and verify names it.
    let digests = digests_now(&server, after + 1).await;
    let victim = audit_files(&store)
        .into_iter()
        .find(|p| {
            read_parquet(p).iter().any(|b| {
                let ids = b.column_by_name("eventid").expect("eventid");
                let ids = ids.as_string::<i32>();
                (0..ids.len()).any(|r| ids.value(r).contains("-11-"))
            })
        })
        .expect("a file of 11:00");
    std::fs::remove_file(&victim).expect("rm");
    put(&server, "late-11", hour_events("late", "11", 1)).await;
    wait_for_counter(&server, "watchtrail_audit_digest_mismatches_total", 1).await;
    let v = server
        .send("GET", "/v1/audit/verify", &[], b"")
        .await
        .json();
    assert_eq!(v["valid"], false, "{v}");
    assert!(
        v["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("INVALID: removed"),
        "{v}"
    );
    assert_eq!(v["digests"].as_u64(), Some(digests), "{v}");
    server.stop().await;
}

async fn wait_for_counter(server: &TestServer, name: &str, at_least: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while server.counter(name).await < at_least {
        assert!(
            std::time::Instant::now() < deadline,
            "{name} stayed below {at_least}:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A new signing key: published, the old one closed, new digests signed with it, and the
/// whole trail still verifies; retention of a whole window is recorded in the chain.
#[tokio::test]
async fn keys_rotate_and_retention_is_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = TestServer::start(digesting(dir.path())).await;
    put(&server, "old", hour_events("old", "10", 5)).await;
    let first = digests_now(&server, 1).await;
    server.stop().await;

    let rotated = digesting(dir.path()).with_args(&[
        "--audit-signing-key",
        &dir.path().join("new-signing.key").display().to_string(),
        // Windows of 2023 are long past a year of retention.
        "--retention-audit",
        "365d",
        "--compaction-interval",
        "1s",
    ]);
    let mut server = TestServer::start(rotated).await;
    let keys = server
        .send("GET", "/v1/audit/public-keys", &[], b"")
        .await
        .json();
    let keys = keys["publicKeys"].as_array().cloned().unwrap_or_default();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().any(|k| k["validTo"].is_string()), "{keys:?}");
    assert!(keys.iter().any(|k| k["validTo"].is_null()), "{keys:?}");
    // Retention empties 10:00; the digester records it, signed with the new key.
    let v = wait_verified(&server, first + 1).await;
    let store = dir.path().join("store");
    let digests: Vec<Digest> = digest_files(&store)
        .iter()
        .map(|p| Digest::parse(&std::fs::read(p).expect("read")).expect("digest"))
        .collect();
    let retention = digests
        .iter()
        .find(|d| d.kind == watchtrail_storage::integrity::digest::DigestKind::Retention)
        .unwrap_or_else(|| panic!("no retention digest: {v}"));
    assert_ne!(
        retention.public_key_fingerprint,
        digests[0].public_key_fingerprint
    );
    assert_eq!(retention.event_count, 0);
    server.stop().await;
    let (ok, text) = verify_store(&store, &[]);
    assert!(ok, "{text}");
}
