//! No input panics the ingest path: mutated CloudTrail JSON into the parser, and mutated
//! protobuf bytes decoded and validated, for a bounded time per target.
//!
//! [`watchtrail_query::fuzz`] breaks real requests and real CloudTrail events in many ways
//! for a bounded time per target; a panic names the input in hex.

use prost::Message as _;
use watchtrail_proto::v1::{
    AuditRecord, Dimension, LogEvent, MetricDatum, MetricSeries, PutAuditEventsRequest,
    PutLogEventsRequest, PutMetricDataRequest, StatisticSet, metric_datum,
};
use watchtrail_test_util::run;

use super::{audit_json, validate};

/// The crate's directory, read at run time: a test binary built in another checkout is reused
/// from a shared target directory, and its compile-time path may no longer exist.
fn manifest_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
}

fn cloudtrail_seeds() -> Vec<Vec<u8>> {
    let dir = manifest_dir().join("../tests/fixtures/cloudtrail");
    let mut seeds = Vec::new();
    let entries = std::fs::read_dir(&dir).expect("the CloudTrail fixtures");
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "json")
            && let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            for r in v["Records"].as_array().into_iter().flatten().take(20) {
                seeds.push(r.to_string().into_bytes());
            }
        }
    }
    assert!(
        seeds.len() > 1,
        "no CloudTrail fixtures in {}",
        dir.display()
    );
    seeds.push(
        br#"{"eventVersion":"1.08","eventTime":"2023-07-10T11:45:00Z","eventID":"x","eventSource":"s3.amazonaws.com","eventName":"DeleteBucketPolicy","userIdentity":{"type":"IAMUser","sessionContext":{"sessionIssuer":{"userName":"a"}}},"resources":[{"ARN":"arn:aws:s3:::b"}],"requestParameters":{"bucketName":"b"}}"#
            .to_vec(),
    );
    seeds
}

#[test]
fn the_cloudtrail_parser_never_panics() {
    let n = run("audit_json::parse_event", &cloudtrail_seeds(), |input| {
        if let Ok(text) = std::str::from_utf8(input)
            && let Ok(e) = audit_json::parse_event(text)
        {
            assert!(e.row.is_object());
        }
    });
    assert!(n > 100, "only {n} inputs in the budget");
}

fn request_seeds(now: i64) -> Vec<Vec<u8>> {
    let datum = MetricDatum {
        namespace: "App".into(),
        metric_name: "Latency".into(),
        dimensions: vec![Dimension {
            name: "Host".into(),
            value: "web-1".into(),
        }],
        timestamp_ms: now,
        data: Some(metric_datum::Data::StatisticValues(StatisticSet {
            sample_count: 3.0,
            sum: 11.0,
            minimum: 2.0,
            maximum: 5.0,
        })),
        unit: "Milliseconds".into(),
        storage_resolution: 1,
    };
    let metrics = PutMetricDataRequest {
        idempotency_id: "m-1".into(),
        metric_data: vec![datum],
        series: vec![MetricSeries {
            namespace: "App".into(),
            metric_name: "Errors".into(),
            dimensions: vec![],
            timestamps_ms: vec![now, now + 1000],
            values: vec![1.0, 2.0],
            unit: String::new(),
            storage_resolution: 60,
            ..Default::default()
        }],
    };
    let logs = PutLogEventsRequest {
        idempotency_id: "l-1".into(),
        log_group_name: "/app".into(),
        log_stream_name: "s".into(),
        log_events: vec![LogEvent {
            timestamp_ms: now,
            message: "hello".into(),
        }],
        origin: None,
    };
    let audit = PutAuditEventsRequest {
        idempotency_id: "a-1".into(),
        records: cloudtrail_seeds()
            .into_iter()
            .take(3)
            .map(|j| AuditRecord {
                json: String::from_utf8_lossy(&j).into_owned(),
            })
            .collect(),
    };
    let mut seeds = vec![
        metrics.encode_to_vec(),
        logs.encode_to_vec(),
        audit.encode_to_vec(),
    ];
    // A tag byte in front of each, to pick the message type it is decoded as.
    for (i, s) in seeds.iter_mut().enumerate() {
        s.insert(0, i as u8);
    }
    seeds
}

#[test]
fn decoding_and_validating_any_bytes_never_panics() {
    let now = crate::wal::now_ms();
    let n = run("protobuf ingest", &request_seeds(now), |input| {
        let Some((kind, body)) = input.split_first() else {
            return;
        };
        match kind % 3 {
            0 => {
                if let Ok(r) = PutMetricDataRequest::decode(body) {
                    let _ = validate::validate_metrics(r, now);
                }
            }
            1 => {
                if let Ok(r) = PutLogEventsRequest::decode(body) {
                    let _ = validate::validate_logs(r, now);
                }
            }
            _ => {
                if let Ok(r) = PutAuditEventsRequest::decode(body)
                    && let Ok(v) = validate::validate_audit(r)
                {
                    for rec in &v.canonical.records {
                        let _ = audit_json::parse_event(&rec.json);
                    }
                }
            }
        }
    });
    assert!(n > 100, "only {n} inputs in the budget");
}

/// The "now" of the cargo-fuzz target `ingest_protobuf` (fuzz/fuzz_targets/ingest_protobuf.rs).
const FUZZ_NOW_MS: i64 = 1_800_000_000_000;

/// The committed seed corpus of `ingest_protobuf` still decodes and validates: a change to the
/// wire contract that broke it would leave the fuzzer starting from noise.
/// `WATCHTRAIL_WRITE_FUZZ_SEEDS=1` writes the seeds anew first.
#[test]
fn the_cargo_fuzz_seeds_are_valid_requests() {
    let dir = manifest_dir().join("../fuzz/seeds/ingest_protobuf");
    if std::env::var_os("WATCHTRAIL_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).expect("seed dir");
        for (i, seed) in request_seeds(FUZZ_NOW_MS).iter().enumerate() {
            std::fs::write(dir.join(format!("request-{i}")), seed).expect("write seed");
        }
    }
    let mut kinds = [0usize; 3];
    for entry in std::fs::read_dir(&dir).expect("fuzz/seeds/ingest_protobuf exists") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read seed");
        let (kind, body) = bytes.split_first().expect("a seed is not empty");
        let kind = usize::from(*kind % 3);
        let accepted = match kind {
            0 => validate::validate_metrics(
                PutMetricDataRequest::decode(body).expect("decodes"),
                FUZZ_NOW_MS,
            )
            .map(|v| v.accepted),
            1 => validate::validate_logs(
                PutLogEventsRequest::decode(body).expect("decodes"),
                FUZZ_NOW_MS,
            )
            .map(|v| v.accepted),
            _ => validate::validate_audit(PutAuditEventsRequest::decode(body).expect("decodes"))
                .map(|v| v.accepted),
        }
        .expect("a seed is a valid request");
        assert!(accepted > 0);
        kinds[kind] += 1;
    }
    assert!(
        kinds.iter().all(|&n| n > 0),
        "a seed of each request kind: {kinds:?}"
    );
}
