//! Crash safety: SIGKILL at random moments while clients write and retry; every acknowledged
//! record is stored exactly once.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use watchtrail_e2e::{Bearer, ServerOptions, TestServer};
use watchtrail_proto::tonic::transport::Channel;
use watchtrail_proto::v1::ingest_service_client::IngestServiceClient;
use watchtrail_query::tables::TableKind;
use watchtrail_storage::store::Storage;

use super::{column_counts, log_batch};

const WRITERS: usize = 4;
/// Each writer sends at least this many batches, and goes on until every kill has happened.
const MIN_BATCHES_PER_WRITER: usize = 30;
const EVENTS_PER_BATCH: usize = 40;
const KILLS: usize = 12;

/// A tiny deterministic generator for kill timings (no `rand` crate for one test).
fn next_rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_in_a_loop_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Frequent flushes and tiny segments put kills inside flushes, commits and truncations.
    let opts = ServerOptions::local(dir.path()).with_args(&[
        "--flush-max-age",
        "200ms",
        "--wal-segment-bytes",
        "32K",
    ]);
    let server = Arc::new(Mutex::new(TestServer::start(opts.clone()).await));
    let grpc = server.lock().await.grpc;
    let key = server.lock().await.key.clone();
    let addr = Arc::new(Mutex::new(grpc));
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (addr, acked, done) = (Arc::clone(&addr), Arc::clone(&acked), Arc::clone(&done));
        let key = key.clone();
        writers.push(tokio::spawn(async move {
            let mut b = 0;
            while b < MIN_BATCHES_PER_WRITER || !done.load(Ordering::SeqCst) {
                b += 1;
                let id = format!("w{w}-b{b}");
                // Retry the same batch, same id, until the server acknowledges it.
                loop {
                    let target = *addr.lock().await;
                    let attempt = async {
                        let ch = Channel::from_shared(format!("http://{target}"))
                            .expect("url")
                            .connect()
                            .await
                            .ok()?;
                        IngestServiceClient::with_interceptor(ch, Bearer::new(&key))
                            .put_log_events(log_batch(&id, EVENTS_PER_BATCH))
                            .await
                            .ok()
                    };
                    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
                        Ok(Some(resp)) => {
                            assert_eq!(resp.into_inner().accepted, EVENTS_PER_BATCH as u64);
                            acked.lock().await.insert(id.clone());
                            break;
                        }
                        _ => tokio::time::sleep(Duration::from_millis(30)).await,
                    }
                }
            }
        }));
    }

    let killer = {
        let (server, addr, done) = (Arc::clone(&server), Arc::clone(&addr), Arc::clone(&done));
        tokio::spawn(async move {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            let mut kills = 0;
            for _ in 0..KILLS {
                tokio::time::sleep(Duration::from_millis(100 + next_rand(&mut seed) % 600)).await;
                let mut s = server.lock().await;
                s.kill9().await;
                s.restart().await;
                *addr.lock().await = s.grpc;
                kills += 1;
            }
            done.store(true, Ordering::SeqCst);
            kills
        })
    };
    assert_eq!(killer.await.expect("killer"), KILLS);
    for w in writers {
        w.await.expect("writer");
    }
    let log = {
        let mut s = server.lock().await;
        s.stop().await;
        s.log()
    };

    let acked = acked.lock().await;
    assert!(acked.len() >= WRITERS * MIN_BATCHES_PER_WRITER);
    let storage = Storage::from_url(&opts.store).expect("store");
    let counts = column_counts(&storage, "default", TableKind::Logs, "message").await;
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(duplicated.is_empty(), "rows stored twice: {duplicated:?}");
    let mut missing = Vec::new();
    for id in acked.iter() {
        for i in 0..EVENTS_PER_BATCH {
            if !counts.contains_key(&format!("{id}-{i}")) {
                missing.push(format!("{id}-{i}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged rows lost, e.g. {:?}\nlast server log:\n{log}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(
        counts.len(),
        acked.len() * EVENTS_PER_BATCH,
        "rows that were never acknowledged"
    );
}
