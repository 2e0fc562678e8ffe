//! End-to-end tests: real server processes, real files, real S3 protocol.

mod agent;
mod alarms;
mod auth;
mod aws;
mod cli;
mod cloudtrail_sql;
mod cloudwatch_cli;
mod differential;
mod digests;
mod durability;
mod hardening;
mod import;
mod ingest;
mod isolation;
mod lifecycle;
mod metric_filters;
mod open_format;
mod query;
mod s3;
mod tls;

use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch};
use watchtrail_proto::v1::{LogEvent, PutLogEventsRequest};
use watchtrail_query::tables::TableKind;
use watchtrail_storage::deltalake::arrow;
use watchtrail_storage::store::Storage;

/// Counts each value of a string column over every committed row of a table.
async fn column_counts(
    storage: &Storage,
    tenant: &str,
    kind: TableKind,
    column: &str,
) -> HashMap<String, usize> {
    let batches: Vec<RecordBatch> = storage.read_table(tenant, kind).await.expect("read table");
    let mut out = HashMap::new();
    for b in &batches {
        let col = b.column_by_name(column).expect("column");
        let col = col.as_string::<i32>();
        for i in 0..col.len() {
            *out.entry(col.value(i).to_string()).or_insert(0) += 1;
        }
    }
    out
}

/// A log batch whose messages are unique: `<id>-<i>`.
fn log_batch(id: &str, events: usize) -> PutLogEventsRequest {
    let now = chrono_now_ms();
    PutLogEventsRequest {
        idempotency_id: id.to_string(),
        log_group_name: "/e2e/app".into(),
        log_stream_name: "stream-1".into(),
        log_events: (0..events)
            .map(|i| LogEvent {
                timestamp_ms: now,
                message: format!("{id}-{i}"),
            })
            .collect(),
        origin: None,
    }
}

/// Imports the invictus CloudTrail fixtures into `server` with `watchtrail import`.
fn import_fixtures(server: &watchtrail_e2e::TestServer) {
    let out = std::process::Command::new(watchtrail_e2e::bin_path("watchtrail"))
        .env("WATCHTRAIL_API_KEY", &server.key)
        .args(["--server", &format!("http://{}", server.grpc), "import"])
        .arg(watchtrail_e2e::fixtures().join("cloudtrail"))
        .output()
        .expect("run import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
