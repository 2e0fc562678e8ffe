//! `watchtrail-bench digests`: a day of audit events (the query benchmark's generator) written
//! straight to a store as one file per hour, then digested and verified as the server and
//! `watchtrail verify` do: events/s of each. Target: a day of 10 M events verified in under a
//! minute.

use std::sync::Arc;
use std::time::{Duration, Instant};

use watchtrail_query::cloudtrail::parse_event;
use watchtrail_query::tables::TableKind;
use watchtrail_storage::integrity::digest::Signer;
use watchtrail_storage::integrity::digester::Digester;
use watchtrail_storage::integrity::verify::{VerifyOptions, verify};
use watchtrail_storage::store::Storage;

use super::Rng;
use super::query::audit_event;

const HOUR_MS: i64 = 3_600_000;
/// 2026-11-01T00:00:00Z: a closed day.
const DAY_START: i64 = 1_793_491_200_000;

/// Options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Options {
    /// Events in the day.
    #[arg(long, default_value_t = 10_000_000)]
    pub(crate) events: u64,
    /// Hours (windows) they spread over.
    #[arg(long, default_value_t = 24)]
    pub(crate) hours: u64,
}

/// One hour's events as Parquet bytes of the audit table.
type Encoded = (bytes::Bytes, watchtrail_storage::store::FileStats);

fn hour_file(hour: u64, n: u64, first_seq: u64) -> anyhow::Result<Encoded> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (hour + 1));
    let start = DAY_START + hour as i64 * HOUR_MS;
    let schema = TableKind::Audit.schema();
    let mut enc = watchtrail_storage::files::ParquetEncoder::new(TableKind::Audit)?;
    let chunk = 65_536u64;
    let mut done = 0;
    while done < n {
        let m = chunk.min(n - done);
        let rows: Vec<serde_json::Value> = (0..m)
            .map(|i| {
                let k = done + i;
                let t = start + (k as i64 * HOUR_MS) / n as i64;
                let json = audit_event(&mut rng, first_seq + k, t);
                parse_event(&json).map(|e| e.row)
            })
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("generated event: {e}"))?;
        let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(&schema))
            .with_batch_size(rows.len())
            .build_decoder()?;
        decoder.serialize(&rows)?;
        if let Some(batch) = decoder.flush()? {
            enc.write(&batch)?;
        }
        done += m;
    }
    Ok(enc.finish()?)
}

/// Runs the benchmark.
///
/// # Errors
/// Storage, encoding or verification failures.
pub(crate) async fn bench(o: Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let storage = Storage::from_url(&format!("file://{}", dir.path().join("store").display()))?;
    let per_hour = o.events / o.hours;
    let started = Instant::now();
    let mut table = storage
        .open_or_create_table("default", TableKind::Audit)
        .await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut hour = 0;
    while hour < o.hours {
        let batch: Vec<u64> = (hour..(hour + cores as u64).min(o.hours)).collect();
        let encoded =
            futures::future::try_join_all(batch.iter().map(|&h| {
                tokio::task::spawn_blocking(move || hour_file(h, per_hour, h * per_hour))
            }))
            .await?;
        let mut files = Vec::new();
        for (h, e) in batch.iter().zip(encoded) {
            let (bytes, stats) = e?;
            let name = watchtrail_storage::write::file_name(&format!("bench-{h:02}"));
            files.push(
                watchtrail_storage::write::put(
                    &storage,
                    "default",
                    TableKind::Audit,
                    name,
                    bytes,
                    stats,
                )
                .await?,
            );
        }
        watchtrail_storage::write::commit_append(&mut table, TableKind::Audit, &files, None)
            .await?;
        hour += batch.len() as u64;
    }
    let events = per_hour * o.hours;
    println!(
        "wrote {events} audit events in {} hourly files in {:.1} s",
        o.hours,
        started.elapsed().as_secs_f64()
    );
    let signer = Arc::new(Signer::load_or_create(&dir.path().join("signing.key"))?);
    watchtrail_storage::integrity::digest::DigestStore::new(&storage)
        .publish(&signer, "bench", DAY_START)
        .await?;
    let digester = Digester::new(storage.clone(), signer, Duration::ZERO);
    let now = DAY_START + (o.hours as i64 + 1) * HOUR_MS;
    let t = Instant::now();
    let report = digester.pass("default", now, None).await?;
    let digest_s = t.elapsed().as_secs_f64();
    println!(
        "digest: {} digests over {events} events in {digest_s:.1} s ({:.0} events/s)",
        report.written,
        events as f64 / digest_s
    );
    let t = Instant::now();
    let report = verify(
        &storage,
        &VerifyOptions {
            tenant: "default".into(),
            start_ms: Some(DAY_START),
            end_ms: Some(DAY_START + o.hours as i64 * HOUR_MS),
            trusted_keys: None,
            delay_ms: 0,
            now_ms: now,
        },
    )
    .await?;
    let verify_s = t.elapsed().as_secs_f64();
    println!(
        "verify: {}/{} digests, {}/{} events valid in {verify_s:.1} s ({:.0} events/s); target: a day of 10 M events under 60 s",
        report.digests_valid,
        report.digests,
        report.events_valid,
        report.events,
        events as f64 / verify_s
    );
    anyhow::ensure!(
        report.is_valid() && report.events_valid == events,
        "the benchmark's own store did not verify:\n{}",
        report.summary(None, None)
    );
    Ok(())
}
