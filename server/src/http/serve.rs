//! The HTTP port's accept loop: hyper's HTTP/1 server with a timer, so that a request's head
//! must arrive within [`HEADER_READ_TIMEOUT`] (which also closes a kept-alive connection that
//! sends no next request), with the caller's address as `ConnectInfo` and a graceful drain at
//! shutdown. `axum::serve` sets no timer, so without this a client that trickles its headers,
//! or a kept-alive connection left idle, holds a connection slot forever.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tracing::debug;

/// Longest a request's head may take to arrive, counted from when the server is ready for it
/// (a new connection, or the end of the previous answer on a kept-alive one).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest the drain at shutdown waits for answers in progress.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on the connections `listener` hands out until `stop`, then lets the answers in
/// progress finish (within `DRAIN_TIMEOUT`) and returns.
pub async fn serve<L>(mut listener: L, app: Router, stop: CancellationToken)
where
    L: Listener<Addr = SocketAddr>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let mut connections = JoinSet::new();
    loop {
        let (io, peer) = tokio::select! {
            c = listener.accept() => c,
            () = stop.cancelled() => break,
        };
        // Finished connections are reaped as new ones come, so the set stays small.
        while connections.try_join_next().is_some() {}
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let app = app.clone();
                async move {
                    Ok::<_, Infallible>(
                        app.oneshot(req.map(axum::body::Body::new))
                            .await
                            .unwrap_or_else(|never| match never {}),
                    )
                }
            });
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        connections.abort_all();
    }
}
