//! The Watchtrail server: gRPC ingest into a write-ahead log, flushed as Parquet into Delta
//! tables on object storage.
//!
//! # Layout
//! - [`config`]: flags and the validated [`ServerConfig`].
//! - [`auth`]: API keys, roles and the caller of each request.
//! - [`error`]: the error type, and the one mapping of any failure to its gRPC status, HTTP
//!   answer and audit `errorCode` ([`error::Answer`]).
//! - [`wal`]: the write-ahead log with group commit and replay.
//! - [`ingest`]: validation, buffering and flushing.
//! - [`grpc`]: the gRPC services.
//! - [`query`]: SQL over committed files and buffered rows.
//! - [`http`]: `/healthz`, `/metrics`, `POST /v1/query` and the alarm API.
//! - [`alarms`]: the alarm service (definitions are `watchtrail-model`'s, documents live in
//!   `watchtrail-storage`'s control store), the evaluator, the webhook outbox.
//! - [`lifecycle`]: the background task that runs `watchtrail-storage`'s lifecycle per table,
//!   under each table's lease.
//! - [`agent_child`]: the all-in-one mode's agent process.
//! - [`metrics`]: the server's own counters.
//! - [`tls`]: TLS (and mutual TLS) on both ports.
//! - [`self_audit`]: Watchtrail's own audit trail of control-plane calls, queries and refusals.

pub mod agent_child;
pub mod alarms;
pub mod auth;
pub mod aws;
pub mod config;
pub mod digests;
pub mod error;
pub mod grpc;
pub mod http;
pub mod ingest;
pub mod lifecycle;
pub mod log_groups;
pub mod metrics;
pub mod query;
pub mod self_audit;
pub mod tls;
pub mod wal;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tracing::info;
use watchtrail_proto::v1::ingest_service_server::IngestServiceServer;
use watchtrail_proto::v1::query_service_server::QueryServiceServer;
use watchtrail_query::engine::Engine;
use watchtrail_storage::store::Storage;

pub use config::{ServerArgs, ServerConfig};
pub use error::{Error, Result};

/// Largest gRPC message accepted; the per-RPC limits (1 MB and so on) are checked after
/// decoding so that the answer can say which limit was broken.
const MAX_GRPC_MESSAGE_BYTES: usize = 8 << 20;
/// How often the gRPC port pings an idle HTTP/2 connection.
const GRPC_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed.
const GRPC_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The bound sockets the server answers on.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// HTTP.
    pub http: TcpListener,
}

/// Runs the server until `shutdown` resolves, then drains: stops taking requests, commits the
/// buffered rows (within the shutdown timeout) and returns.
///
/// `storage` overrides `--store` (tests share one in-memory store with a reader).
///
/// # Errors
/// A WAL that cannot be opened or replayed, a store URL that does not work, or a listener error.
pub async fn serve(
    config: ServerConfig,
    listeners: Listeners,
    storage: Option<Storage>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let storage = match storage {
        Some(s) => s,
        None => Storage::from_url(&config.store_url)?,
    };
    let auth = auth::Auth::new(&storage, config.auth.mode).await;
    if let Err(e) = auth.bootstrap(&config.auth).await {
        tracing::warn!(error = %format!("{e:#}"), "could not check or make the first API keys");
    }
    config.auth.ready.cancel();
    let metrics = Arc::new(metrics::Metrics::default());
    let buffers = ingest::buffer::BufferHandle::new(Arc::clone(&metrics));
    let (wal, replayed) = wal::Wal::open(
        config.wal.clone(),
        Arc::new(buffers.clone()),
        Arc::clone(&metrics),
    )?;

    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.cancel();
        });
    }
    ingest::replay(replayed, &buffers, &storage, wal.server_id(), &stop).await?;
    tokio::spawn(auth.clone().refresh_loop(stop.clone()));

    let flusher = ingest::flush::Flusher::new(
        buffers.clone(),
        storage.clone(),
        wal.clone(),
        Arc::clone(&metrics),
        config.flush.clone(),
    );
    let flush_stop = CancellationToken::new();
    let flush_task = tokio::spawn(flusher.run(flush_stop.clone(), config.shutdown_timeout));

    // Queries run on their own threads, so a heavy one cannot starve ingest.
    // Their stack fits a statement at every bound `check_read_only` enforces.
    let query_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.query_threads)
        .thread_stack_size(watchtrail_query::engine::shape::QUERY_THREAD_STACK_BYTES)
        .thread_name("watchtrail-query")
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("query runtime: {e}")))?;
    let source = Arc::new(query::ServerSource::new(
        storage.clone(),
        buffers.clone(),
        ingest::flush::app_id(wal.server_id()),
    ));
    let engine = Engine::new(&storage, source, config.engine.clone())
        .with_runtime(query_runtime.handle().clone());

    let ingest = ingest::Ingest::new(
        wal.clone(),
        Arc::clone(&metrics),
        buffers.clone(),
        storage.clone(),
    );
    let alarms = Arc::new(alarms::AlarmService::new(
        storage.clone(),
        ingest.clone(),
        engine.clone(),
        config.alarms.clone(),
        // Stable across restarts: a restarted evaluator takes its own lease back at once.
        wal.server_id().to_string(),
        Arc::clone(&metrics),
    )?);
    let alarm_stop = CancellationToken::new();
    let alarm_task = tokio::spawn(Arc::clone(&alarms).run(alarm_stop.clone()));
    // Compaction gets one thread of its own: its CPU budget is one core, apart from ingest and
    // queries.
    let lifecycle_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("watchtrail-lifecycle")
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("lifecycle runtime: {e}")))?;
    let digest_task = match digests::prepare(&config.digests, &storage, wal.server_id()).await? {
        Some(signer) => Some(lifecycle_runtime.spawn(digests::run(
            storage.clone(),
            config.digests.clone(),
            signer,
            wal.server_id().to_string(),
            Arc::clone(&metrics),
            alarm_stop.clone(),
        ))),
        None => None,
    };
    let lifecycle_task = lifecycle_runtime.spawn(lifecycle::run(
        storage.clone(),
        config.lifecycle.clone(),
        wal.server_id().to_string(),
        Arc::clone(&metrics),
        alarm_stop.clone(),
    ));

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<IngestServiceServer<grpc::ingest::IngestServiceImpl>>()
        .await;
    let gate = query::QueryGate::new(config.tenant_query_concurrency, config.query_queue_wait);
    let trail_stop = CancellationToken::new();
    let (trail, trail_task) = if config.self_audit {
        let (t, task) =
            self_audit::SelfAudit::start(ingest.clone(), Arc::clone(&metrics), trail_stop.clone());
        (t, Some(task))
    } else {
        (self_audit::SelfAudit::off(Arc::clone(&metrics)), None)
    };
    let aws_master = Arc::new(
        watchtrail_storage::keys::AwsMaster::load_or_create(&config.aws_master_key)
            .map_err(|e| Error::Internal(e.to_string()))?,
    );
    let aws = Arc::new(aws::AwsState {
        auth: auth.clone(),
        master: Arc::clone(&aws_master),
        region: config.aws_region.clone(),
        ingest: ingest.clone(),
        engine: engine.clone(),
        gate: gate.clone(),
        trail: trail.clone(),
        alarms: Arc::clone(&alarms),
        control: alarms.control().clone(),
        lake: aws::cloudtrail::LakeQueries::default(),
    });
    let ingest_service = IngestServiceServer::new(grpc::ingest::IngestServiceImpl::new(
        ingest,
        auth.clone(),
        trail.clone(),
    ))
    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
    // Requests may come compressed; answers are a count and a few rejections, too small for
    // compression to pay for its setup on every call.
    .accept_compressed(CompressionEncoding::Zstd)
    .accept_compressed(CompressionEncoding::Gzip);
    let query_service = QueryServiceServer::new(grpc::query::QueryServiceImpl::new(
        engine.clone(),
        auth.clone(),
        trail.clone(),
        gate.clone(),
    ))
    .accept_compressed(CompressionEncoding::Zstd)
    .accept_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Zstd);
    health
        .set_serving::<QueryServiceServer<grpc::query::QueryServiceImpl>>()
        .await;

    let grpc_addr = listeners
        .grpc
        .local_addr()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let http_addr = listeners
        .http
        .local_addr()
        .map_err(|e| Error::Internal(e.to_string()))?;
    info!(%grpc_addr, %http_addr, store = %storage.base_url(), "serving");
    for warning in exposure_warnings(&config, grpc_addr, http_addr) {
        tracing::warn!("{warning}");
        eprintln!("WARNING: {warning}");
    }

    let grpc_stop = stop.clone();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        let c = tls.grpc().map_err(|e| Error::Internal(format!("{e:#}")))?;
        builder = builder
            .tls_config(c)
            .map_err(|e| Error::Internal(format!("gRPC TLS: {e}")))?;
    }
    let grpc_limits = tls::ConnectionLimits {
        max: config.max_grpc_connections,
        per_source: config.max_connections_per_source,
    };
    let http_limits = tls::ConnectionLimits {
        max: config.max_http_connections,
        per_source: config.max_connections_per_source,
    };
    let grpc = builder
        .max_concurrent_streams(Some(config.max_concurrent_streams))
        // A peer that stops answering pings is closed, and so its connection slot freed.
        .http2_keepalive_interval(Some(GRPC_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT))
        .add_service(health_service)
        .add_service(ingest_service)
        .add_service(query_service)
        .serve_with_incoming_shutdown(
            tls::limited_grpc_incoming(listeners.grpc, grpc_limits),
            async move { grpc_stop.cancelled().await },
        );
    let http_stop = stop.clone();
    let app = http::router(http::Services {
        metrics: Arc::clone(&metrics),
        wal: wal.clone(),
        engine,
        alarms,
        auth,
        trail,
        gate,
        max_answer_bytes: config.query_max_answer_bytes,
        storage: storage.clone(),
        digest_delay: config.digests.delay,
        aws,
    });
    let http: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match &config.tls {
        None => Box::pin(http::serve::serve(
            tls::LimitedListener::new(listeners.http, http_limits),
            app,
            http_stop,
        )),
        Some(tls) => {
            let c = tls
                .rustls()
                .map_err(|e| Error::Internal(format!("{e:#}")))?;
            let listener = tls::LimitedListener::new(
                tls::TlsListener::new(listeners.http, c)
                    .map_err(|e| Error::Internal(format!("HTTP TLS: {e}")))?,
                http_limits,
            );
            Box::pin(http::serve::serve(listener, app, http_stop))
        }
    };
    drop(wal);

    let (g, ()) = tokio::join!(grpc, http);
    g.map_err(|e| Error::Internal(format!("gRPC server: {e}")))?;

    // The trail's last events go into the WAL before the final flush.
    trail_stop.cancel();
    if let Some(t) = trail_task {
        let _ = t.await;
    }
    alarm_stop.cancel();
    let _ = alarm_task.await;
    let _ = lifecycle_task.await;
    if let Some(t) = digest_task {
        let _ = t.await;
    }
    lifecycle_runtime.shutdown_background();
    info!("stopped taking requests; committing buffered rows");
    flush_stop.cancel();
    flush_task
        .await
        .map_err(|e| Error::Internal(format!("flusher: {e}")))?;
    query_runtime.shutdown_background();
    info!("shut down");
    Ok(())
}

/// What an operator must hear about at start: keys and data in clear on a network, or no keys
/// at all.
fn exposure_warnings(
    config: &ServerConfig,
    grpc: std::net::SocketAddr,
    http: std::net::SocketAddr,
) -> Vec<String> {
    let mut out = Vec::new();
    if config.tls.is_none() {
        for (port, addr) in [("gRPC", grpc), ("HTTP", http)] {
            if !addr.ip().is_loopback() {
                out.push(format!(
                    "the {port} port listens on {addr}, beyond this machine, without TLS: API keys \
                     and data cross the network in clear; give --tls-cert and --tls-key"
                ));
            }
        }
    }
    if config.auth.mode == auth::AuthMode::None {
        out.push(
            "--auth none: every caller may read and change every tenant's data by naming it in \
             a header; use it on a trusted network only"
                .to_string(),
        );
    }
    out
}

#[cfg(test)]
mod exposure_tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn clear_text_beyond_loopback_and_no_auth_are_called_out() {
        let mut config = ServerArgs::parse_from(["watchtrail-server"])
            .validate()
            .expect("defaults are valid");
        let lo: std::net::SocketAddr = "127.0.0.1:7601".parse().unwrap();
        let any: std::net::SocketAddr = "0.0.0.0:7602".parse().unwrap();
        assert!(exposure_warnings(&config, lo, lo).is_empty());
        let w = exposure_warnings(&config, lo, any);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("HTTP port listens on 0.0.0.0:7602") && w[0].contains("--tls-cert"));
        config.auth.mode = auth::AuthMode::None;
        let w = exposure_warnings(&config, lo, lo);
        assert!(w.len() == 1 && w[0].contains("--auth none"), "{w:?}");
    }
}
