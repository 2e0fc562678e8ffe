//! The sender: reads records from the spool in order and sends their requests over gRPC
//! (compressed), retrying what can be retried with exponential backoff and jitter, and counting
//! and logging what the server refuses for good. A record is acknowledged in the spool only
//! once every request in it has been answered.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use prost::Message as _;
use tokio::sync::watch;
use tracing::{info, warn};
use watchtrail_proto::tonic::codec::CompressionEncoding;
use watchtrail_proto::tonic::metadata::MetadataValue;
use watchtrail_proto::tonic::transport::{Channel, Endpoint};
use watchtrail_proto::tonic::{Code, Request, Status};
use watchtrail_proto::v1::ingest_service_client::IngestServiceClient;
use watchtrail_proto::v1::{
    IngestResponse, PutAuditEventsRequest, PutLogEventsRequest, PutMetricDataRequest,
};

use crate::Context;
use crate::config::ShippingConfig;
use crate::spool::{Cursor, Kind, Record};

/// Whether a failed call is worth repeating. Refusals of the request itself (invalid, too
/// large) are final; a key problem is retried, because the operator can fix it without data
/// being lost in between.
pub fn retryable(code: Code) -> bool {
    !matches!(
        code,
        Code::InvalidArgument
            | Code::ResourceExhausted
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::AlreadyExists
            | Code::NotFound
    )
}

/// Exponential backoff with jitter: `d/2 + rand(d/2)` where `d = base * 2^attempt`, capped.
pub fn backoff(base: Duration, max: Duration, attempt: u32, random: u64) -> Duration {
    let d = base
        .checked_mul(1u32 << attempt.min(20))
        .unwrap_or(max)
        .min(max);
    let half = d / 2;
    let nanos = half.as_nanos().max(1) as u64;
    half + Duration::from_nanos(random % nanos)
}

/// A small xorshift generator for jitter.
#[derive(Debug)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from the clock and the process id.
    pub fn new() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self(t ^ (u64::from(std::process::id()) << 32) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}

/// The gRPC client, with the tenant header and compression set up.
#[derive(Debug, Clone)]
pub struct Client {
    inner: IngestServiceClient<Channel>,
    tenant: Option<MetadataValue<watchtrail_proto::tonic::metadata::Ascii>>,
    authorization: Option<MetadataValue<watchtrail_proto::tonic::metadata::Ascii>>,
}

impl Client {
    /// Connects lazily: the first call opens the connection, and a lost one is reopened.
    pub fn new(
        server: &str,
        tenant: Option<&str>,
        api_key: Option<&str>,
        tls: Option<watchtrail_proto::tonic::transport::ClientTlsConfig>,
        shipping: &ShippingConfig,
    ) -> anyhow::Result<Self> {
        let mut endpoint = Endpoint::from_shared(server.to_string())
            .with_context(|| format!("server: `{server}` is not a valid URL"))?;
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls)
                .with_context(|| format!("server: TLS for `{server}`"))?;
        }
        let endpoint = endpoint
            .connect_timeout(Duration::from_secs(5))
            .timeout(shipping.timeout)
            .tcp_nodelay(true);
        let mut inner = IngestServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(64 << 20)
            .accept_compressed(CompressionEncoding::Zstd);
        inner = match shipping.compression.as_str() {
            "zstd" => inner.send_compressed(CompressionEncoding::Zstd),
            "gzip" => inner.send_compressed(CompressionEncoding::Gzip),
            _ => inner,
        };
        let tenant = tenant
            .map(|t| {
                t.parse()
                    .with_context(|| format!("tenant: `{t}` is not a valid header value"))
            })
            .transpose()?;
        let authorization = api_key
            .map(|k| {
                let mut v: MetadataValue<watchtrail_proto::tonic::metadata::Ascii> =
                    format!("Bearer {k}")
                        .parse()
                        .map_err(|_| anyhow::anyhow!("api_key: not a valid header value"))?;
                v.set_sensitive(true);
                Ok::<_, anyhow::Error>(v)
            })
            .transpose()?;
        Ok(Self {
            inner,
            tenant,
            authorization,
        })
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        if let Some(t) = &self.tenant {
            req.metadata_mut()
                .insert(watchtrail_proto::TENANT_HEADER, t.clone());
        }
        if let Some(a) = &self.authorization {
            req.metadata_mut().insert("authorization", a.clone());
        }
        req
    }

    /// Sends one encoded request of the given kind; answers the items in it and the response.
    pub async fn send(
        &mut self,
        kind: Kind,
        payload: &[u8],
    ) -> Result<(u64, IngestResponse), Status> {
        let bad = |e: prost::DecodeError| {
            Status::invalid_argument(format!("undecodable buffered request: {e}"))
        };
        let (items, resp) = match kind {
            Kind::Metrics => {
                let m = PutMetricDataRequest::decode(payload).map_err(bad)?;
                let n = m.metric_data.len()
                    + m.series
                        .iter()
                        .map(|s| s.values.len() + s.statistic_points.len())
                        .sum::<usize>();
                (n, self.inner.put_metric_data(self.request(m)).await?)
            }
            Kind::Logs => {
                let m = PutLogEventsRequest::decode(payload).map_err(bad)?;
                (
                    m.log_events.len(),
                    self.inner.put_log_events(self.request(m)).await?,
                )
            }
            Kind::Audit => {
                let m = PutAuditEventsRequest::decode(payload).map_err(bad)?;
                (
                    m.records.len(),
                    self.inner.put_audit_events(self.request(m)).await?,
                )
            }
        };
        Ok((items as u64, resp.into_inner()))
    }
}

/// Requests in flight at once: the server commits each to its write-ahead log before it
/// answers, so a few in flight keep the pipe full while one waits for its fsync.
const IN_FLIGHT: usize = 4;

/// Outage bookkeeping shared by the requests in flight, so that an outage is logged once a
/// minute rather than once per attempt.
#[derive(Debug, Default)]
struct Health {
    failing_since: Option<Instant>,
    last_warn: Option<Instant>,
}

/// Sends records until `stop` turns true; acknowledges them in order.
pub async fn run(
    ctx: Arc<Context>,
    client: Client,
    shipping: ShippingConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut cursor = Cursor::default();
    let health = Arc::new(std::sync::Mutex::new(Health::default()));
    let mut in_flight: std::collections::VecDeque<(u64, tokio::task::JoinHandle<bool>)> =
        Default::default();
    loop {
        if *stop.borrow() {
            for (_, h) in in_flight {
                h.abort();
            }
            return;
        }
        while in_flight.len() < IN_FLIGHT {
            match ctx.spool.next(&mut cursor) {
                Ok(Some(record)) => {
                    let seq = record.seq;
                    let task = deliver(
                        Arc::clone(&ctx),
                        client.clone(),
                        shipping.clone(),
                        record,
                        stop.clone(),
                        Arc::clone(&health),
                    );
                    in_flight.push_back((seq, tokio::spawn(task)));
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %e, "cannot read the buffer; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    cursor = Cursor::default();
                    break;
                }
            }
        }
        let Some((seq, task)) = in_flight.pop_front() else {
            tokio::select! {
                () = ctx.spool.appended.notified() => {}
                _ = stop.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        };
        match task.await {
            Ok(true) => {
                if let Err(e) = ctx.spool.ack(seq) {
                    warn!(error = %e, "cannot record a delivery in the buffer; it may be sent again (the server ignores the repeat)");
                }
            }
            // Stopped before the record was delivered: it is sent again at the next start.
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, seq, "a send task failed; the record is sent again at the next start")
            }
        }
    }
}

/// Sends every request of a record; true once each has been answered for good (accepted or
/// refused), false when stopped first.
async fn deliver(
    ctx: Arc<Context>,
    mut client: Client,
    shipping: ShippingConfig,
    record: Record,
    stop: watch::Receiver<bool>,
    health: Arc<std::sync::Mutex<Health>>,
) -> bool {
    let Some(kind) = record.kind() else {
        warn!(
            seq = record.seq,
            "skipping a buffered record of unknown kind"
        );
        return true;
    };
    let mut jitter = Jitter::new();
    let mut stop = stop;
    for payload in &record.payloads {
        let mut attempt = 0u32;
        loop {
            if *stop.borrow() {
                return false;
            }
            if ctx.spool.is_done(record.seq) {
                return true; // dropped to keep the buffer within its budget
            }
            match client.send(kind, payload).await {
                Ok((items, resp)) => {
                    if let Some(since) = health
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .failing_since
                        .take()
                    {
                        info!(after = ?since.elapsed(), "server reachable again; sending the buffer");
                    }
                    let s = &ctx.stats;
                    s.requests_sent.fetch_add(1, Ordering::Relaxed);
                    s.bytes_sent
                        .fetch_add(payload.len() as u64, Ordering::Relaxed);
                    s.items_sent
                        .fetch_add(resp.accepted.min(items), Ordering::Relaxed);
                    if let Some(first) = resp.rejected.first() {
                        s.items_rejected
                            .fetch_add(resp.rejected.len() as u64, Ordering::Relaxed);
                        warn!(
                            rejected = resp.rejected.len(),
                            field = %first.field,
                            reason = %first.reason,
                            "server refused items of a batch (not retried)"
                        );
                    }
                    break;
                }
                Err(status) if retryable(status.code()) => {
                    ctx.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let delay = backoff(
                        shipping.retry_base,
                        shipping.retry_max,
                        attempt,
                        jitter.next_u64(),
                    );
                    {
                        let mut h = health.lock().unwrap_or_else(|e| e.into_inner());
                        h.failing_since.get_or_insert_with(Instant::now);
                        if h.last_warn
                            .is_none_or(|w| w.elapsed() >= Duration::from_secs(60))
                        {
                            h.last_warn = Some(Instant::now());
                            warn!(code = ?status.code(), message = %status.message(), retry_in = ?delay, buffered_bytes = ctx.spool.bytes(), "cannot send; keeping the data and retrying");
                        }
                    }
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(status) => {
                    ctx.stats.requests_rejected.fetch_add(1, Ordering::Relaxed);
                    ctx.stats.items_rejected.fetch_add(
                        record.items / record.payloads.len().max(1) as u64,
                        Ordering::Relaxed,
                    );
                    warn!(code = ?status.code(), message = %status.message(), seq = record.seq, "server refused a request for good; dropped (not retried)");
                    break;
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_cap() {
        let base = Duration::from_millis(200);
        let max = Duration::from_secs(60);
        for attempt in 0..30 {
            let d = base
                .checked_mul(1 << attempt.min(20))
                .unwrap_or(max)
                .min(max);
            for r in [0, 7, u64::MAX] {
                let got = backoff(base, max, attempt, r);
                assert!(
                    got >= d / 2 && got <= d,
                    "attempt {attempt}: {got:?} outside [{:?}, {d:?}]",
                    d / 2
                );
            }
        }
        assert_eq!(backoff(base, max, 0, 0), Duration::from_millis(100));
        assert!(backoff(base, max, 25, 12345) <= max);
    }

    #[test]
    fn only_transient_failures_are_retried() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::Internal,
            Code::Unknown,
            Code::Unauthenticated,
        ] {
            assert!(retryable(code), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
        ] {
            assert!(!retryable(code), "{code:?}");
        }
    }
}
