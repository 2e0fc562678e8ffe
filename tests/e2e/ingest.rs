//! Ingest through gRPC into tables: all three kinds, validation errors, the HTTP port.

use std::time::Duration;

use watchtrail_e2e::{ServerOptions, TestServer, wait_for};
use watchtrail_proto::tonic::Code;
use watchtrail_proto::v1::{
    AuditRecord, Dimension, MetricDatum, MetricSeries, PutAuditEventsRequest, PutMetricDataRequest,
    metric_datum,
};
use watchtrail_query::tables::TableKind;
use watchtrail_storage::store::Storage;

use super::{chrono_now_ms, column_counts, log_batch};

#[tokio::test]
async fn all_three_kinds_land_in_their_tables_and_graceful_stop_flushes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A long flush age: only the SIGTERM drain can commit the rows.
    let opts = ServerOptions::local(dir.path()).with_args(&["--flush-max-age", "1h"]);
    let mut server = TestServer::start(opts.clone()).await;
    let mut client = server.client().await;
    let now = chrono_now_ms();
    let series = MetricSeries {
        namespace: "E2E".into(),
        metric_name: "cpu".into(),
        dimensions: vec![Dimension {
            name: "host".into(),
            value: "h1".into(),
        }],
        unit: "Percent".into(),
        storage_resolution: 1,
        timestamps_ms: vec![now - 2000, now - 1000],
        values: vec![1.0, 2.0],
        statistic_points: vec![],
    };
    let datum = MetricDatum {
        namespace: "E2E".into(),
        metric_name: "latency".into(),
        dimensions: vec![],
        timestamp_ms: 0,
        data: Some(metric_datum::Data::Value(7.5)),
        unit: "Milliseconds".into(),
        storage_resolution: 60,
    };
    let resp = client
        .put_metric_data(PutMetricDataRequest {
            idempotency_id: "m1".into(),
            metric_data: vec![datum],
            series: vec![series],
        })
        .await
        .expect("put metrics")
        .into_inner();
    assert_eq!(resp.accepted, 3);
    let resp = client
        .put_log_events(log_batch("l1", 5))
        .await
        .expect("put logs")
        .into_inner();
    assert_eq!(resp.accepted, 5);
    let event = r#"{"eventVersion":"1.08","eventTime":"2023-07-10T11:40:13Z","eventID":"ev-1","eventSource":"s3.amazonaws.com","eventName":"DeleteBucketPolicy","userIdentity":{"userName":"mallory"},"sourceIPAddress":"198.51.100.7"}"#;
    let resp = client
        .put_audit_events(PutAuditEventsRequest {
            idempotency_id: "a1".into(),
            records: vec![AuditRecord { json: event.into() }],
        })
        .await
        .expect("put audit")
        .into_inner();
    assert_eq!(resp.accepted, 1);

    let (status, body) = server.http_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("watchtrail_ingest_records_accepted_total{kind=\"metrics\"} 3"),
        "{body}"
    );
    assert!(
        body.contains("watchtrail_ingest_records_accepted_total{kind=\"logs\"} 5"),
        "{body}"
    );
    assert_eq!(server.http_get("/healthz").await.0, 200);

    server.stop().await;
    let storage = Storage::from_url(&opts.store).expect("store");
    let names = column_counts(&storage, "default", TableKind::Metrics, "metric_name").await;
    assert_eq!(names.get("cpu"), Some(&2));
    assert_eq!(names.get("latency"), Some(&1));
    let msgs = column_counts(&storage, "default", TableKind::Logs, "message").await;
    assert_eq!(msgs.len(), 5);
    let events = column_counts(&storage, "default", TableKind::Audit, "eventname").await;
    assert_eq!(events.get("DeleteBucketPolicy"), Some(&1));
    // The WAL was emptied by the drain: a restart replays nothing and stores nothing twice.
    let mut again = TestServer::start(opts.clone()).await;
    again.stop().await;
    assert_eq!(
        column_counts(&storage, "default", TableKind::Logs, "message")
            .await
            .len(),
        5
    );
    assert_eq!(
        column_counts(&storage, "default", TableKind::Logs, "message")
            .await
            .values()
            .sum::<usize>(),
        5
    );
}

#[tokio::test]
async fn flushes_by_age_without_a_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = ServerOptions::local(dir.path());
    let mut server = TestServer::start(opts.clone()).await;
    let mut client = server.client().await;
    client
        .put_log_events(log_batch("age", 3))
        .await
        .expect("put");
    let storage = Storage::from_url(&opts.store).expect("store");
    wait_for(
        "rows committed by the age threshold",
        Duration::from_secs(30),
        || {
            let storage = storage.clone();
            async move {
                (column_counts(&storage, "default", TableKind::Logs, "message")
                    .await
                    .len()
                    == 3)
                    .then_some(())
            }
        },
    )
    .await;
    // The flusher counts the file just after its commit becomes visible.
    let server_ref = &server;
    wait_for(
        "the committed file to be counted once",
        Duration::from_secs(10),
        || async move {
            let (_, body) = server_ref.http_get("/metrics").await;
            body.contains("watchtrail_flush_files_committed_total 1\n")
                .then_some(())
        },
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn malformed_and_oversize_requests_get_precise_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = TestServer::start(ServerOptions::local(dir.path())).await;
    let mut client = server.client().await;
    let bad = MetricDatum {
        namespace: "E2E".into(),
        metric_name: "x".into(),
        dimensions: vec![Dimension {
            name: "a".into(),
            value: "".into(),
        }],
        timestamp_ms: 0,
        data: Some(metric_datum::Data::Value(1.0)),
        unit: String::new(),
        storage_resolution: 60,
    };
    let mut good = bad.clone();
    good.dimensions[0].value = "ok".into();
    let err = client
        .put_metric_data(PutMetricDataRequest {
            idempotency_id: "bad".into(),
            metric_data: vec![good.clone(), bad],
            series: vec![],
        })
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("metric_data[1].dimensions[0].value:"),
        "{}",
        err.message()
    );
    let mut nan = good.clone();
    nan.data = Some(metric_datum::Data::Value(f64::NAN));
    let err = client
        .put_metric_data(PutMetricDataRequest {
            idempotency_id: "nan".into(),
            metric_data: vec![nan],
            series: vec![],
        })
        .await
        .expect_err("nan");
    assert!(
        err.message().starts_with("metric_data[0].value:"),
        "{}",
        err.message()
    );
    let err = client
        .put_metric_data(PutMetricDataRequest {
            idempotency_id: "big".into(),
            metric_data: vec![good; 1001],
            series: vec![],
        })
        .await
        .expect_err("too many");
    assert_eq!(err.code(), Code::ResourceExhausted);
    let mut logs = log_batch("order", 2);
    logs.log_events[0].timestamp_ms += 10;
    let err = client.put_log_events(logs).await.expect_err("out of order");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("log_events[1].timestamp_ms"),
        "{}",
        err.message()
    );
    let mut req = watchtrail_proto::tonic::Request::new(log_batch("tenant", 1));
    req.metadata_mut().insert(
        watchtrail_proto::TENANT_HEADER,
        "../other".parse().expect("ascii"),
    );
    let err = client.put_log_events(req).await.expect_err("bad tenant");
    assert_eq!(err.code(), Code::InvalidArgument);
    let (_, body) = server.http_get("/metrics").await;
    assert!(
        body.contains("watchtrail_ingest_records_rejected_total{kind=\"metrics\"}"),
        "{body}"
    );
    assert!(
        !body.contains("watchtrail_ingest_records_rejected_total{kind=\"metrics\"} 0"),
        "{body}"
    );
    server.stop().await;
    // Nothing invalid reached storage.
    let storage = Storage::from_url(&ServerOptions::local(dir.path()).store).expect("store");
    assert!(
        storage
            .read_table("default", TableKind::Metrics)
            .await
            .expect("read")
            .is_empty()
    );
}
