//! S3 through a real S3-protocol server (moto, which enforces conditional writes): ingest keeps
//! acknowledging into the WAL while S3 is unreachable, refuses past the WAL budget, and catches
//! up by itself when S3 is back.

use std::time::Duration;

use watchtrail_e2e::{Moto, Proxy, ServerOptions, TestServer, wait_for};
use watchtrail_proto::tonic::Code;
use watchtrail_query::tables::TableKind;
use watchtrail_storage::store::Storage;

use super::{column_counts, log_batch};

/// A `Storage` for `s3://bucket/prefix` through the given endpoint (sets the process's AWS
/// variables, which only this test module reads).
fn s3_storage(url: &str, endpoint: std::net::SocketAddr) -> Storage {
    for (k, v) in Moto::env(endpoint) {
        // SAFETY: the test binary's other tests never read AWS_* variables.
        unsafe { std::env::set_var(k, v) };
    }
    Storage::from_url(url).expect("s3 storage")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_keeps_acknowledging_then_catches_up() {
    let moto = Moto::start().await;
    moto.create_bucket("watchtrail").await;
    let proxy = Proxy::start(moto.addr).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = "s3://watchtrail/e2e";
    let mut opts = ServerOptions::local(dir.path()).with_args(&[
        "--flush-max-age",
        "200ms",
        "--wal-max-bytes",
        "512K",
        "--wal-segment-bytes",
        "16K",
    ]);
    opts.store = url.to_string();
    opts.env = Moto::env(proxy.addr);
    let mut server = TestServer::start(opts).await;
    let mut client = server.client().await;
    let storage = s3_storage(url, moto.addr);

    // 1. Normal operation: rows reach S3.
    for b in 0..5 {
        client
            .put_log_events(log_batch(&format!("before-{b}"), 20))
            .await
            .expect("put");
    }
    wait_for("the first rows in S3", Duration::from_secs(60), || {
        let storage = storage.clone();
        async move {
            (column_counts(&storage, "default", TableKind::Logs, "message")
                .await
                .len()
                == 100)
                .then_some(())
        }
    })
    .await;

    // 2. S3 unreachable: acknowledgements continue (the WAL holds them) until its budget is
    // spent, then UNAVAILABLE.
    proxy.cut();
    let mut acked = 100usize;
    let mut refused = None;
    for b in 0..400 {
        match client
            .put_log_events(log_batch(&format!("during-{b}"), 200))
            .await
        {
            Ok(r) => acked += r.into_inner().accepted as usize,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(status.message().contains("full"), "{}", status.message());
                refused = Some(b);
                break;
            }
        }
    }
    let refused = refused.expect("the WAL budget was never reached");
    assert!(
        refused > 5,
        "only {refused} batches were acknowledged during the outage"
    );
    let http = server.http;
    wait_for(
        "flush failures to show on /metrics during the outage",
        Duration::from_secs(90),
        || async move {
            let (_, metrics) = watchtrail_e2e::http_get(http, "/metrics").await;
            (!metrics.contains("watchtrail_flush_failures_total 0\n")).then_some(())
        },
    )
    .await;

    // 3. S3 back: flushing resumes by itself; the refused batch is accepted on retry.
    proxy.restore();
    let retry = format!("during-{refused}");
    let accepted = wait_for(
        "the WAL to drain so the refused batch is accepted",
        Duration::from_secs(120),
        || {
            let mut client = client.clone();
            let retry = retry.clone();
            async move {
                client
                    .put_log_events(log_batch(&retry, 200))
                    .await
                    .ok()
                    .map(|r| r.into_inner().accepted as usize)
            }
        },
    )
    .await;
    acked += accepted;
    wait_for(
        "every acknowledged row in S3",
        Duration::from_secs(120),
        || {
            let storage = storage.clone();
            async move {
                (column_counts(&storage, "default", TableKind::Logs, "message")
                    .await
                    .len()
                    == acked)
                    .then_some(())
            }
        },
    )
    .await;
    server.stop().await;
    let counts = column_counts(&storage, "default", TableKind::Logs, "message").await;
    assert_eq!(counts.len(), acked);
    assert!(counts.values().all(|n| *n == 1), "a row was stored twice");
    moto.stop().await;
}
