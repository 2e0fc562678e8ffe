//! The agent's local HTTP API, on 127.0.0.1 and optionally a Unix socket:
//! - `POST /v1/audit`: one CloudTrail-shaped event, an array, or `{"Records":[...]}`. Answered
//!   `200 {"accepted": n}` once the events are in the on-disk buffer (synced); malformed input
//!   gets `400 {"error": "<field>: <reason>"}` and nothing of it is kept. Only
//!   `Content-Type: application/json` without an `Origin` header is taken: a web page can make a
//!   browser send a cross-site `text/plain` POST to 127.0.0.1 without asking, but not one of
//!   these (415 and 403 otherwise).
//! - `GET /metrics`: the agent's counters (Prometheus text).
//! - `GET /healthz`.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::Context;
use crate::audit;

/// Largest intake request body.
const MAX_BODY: usize = 16 << 20;

fn json_response(code: StatusCode, body: serde_json::Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Refuses what a browser may send cross-site on a page's behalf: any content type but JSON
/// (forms and `text/plain` need no preflight) and any request that names its page's origin.
fn refuse_browser_requests(headers: &axum::http::HeaderMap) -> Option<Response> {
    if headers.contains_key(header::ORIGIN) {
        return Some(json_response(
            StatusCode::FORBIDDEN,
            serde_json::json!({ "error": "Origin: requests made by web pages are refused" }),
        ));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    (!json).then(|| {
        json_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            serde_json::json!({ "error": "Content-Type: must be application/json" }),
        )
    })
}

async fn post_audit(
    State(ctx): State<Arc<Context>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refuse_browser_requests(&headers) {
        return refused;
    }
    let events = match audit::parse_events(&body) {
        Ok(e) => e,
        Err(e) => {
            ctx.stats
                .audit_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return json_response(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": e.to_string() }),
            );
        }
    };
    let n = events.len();
    if n == 0 {
        return json_response(StatusCode::OK, serde_json::json!({ "accepted": 0 }));
    }
    let task_ctx = Arc::clone(&ctx);
    let written =
        tokio::task::spawn_blocking(move || audit::spool_events(&task_ctx, events, Vec::new()))
            .await;
    match written {
        Ok(Ok(_)) => json_response(StatusCode::OK, serde_json::json!({ "accepted": n })),
        Ok(Err(e)) => {
            warn!(error = %e, "audit intake: cannot write to the buffer");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "error": format!("cannot buffer the events: {e}") }),
            )
        }
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": e.to_string() }),
        ),
    }
}

async fn metrics(State(ctx): State<Arc<Context>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ctx.stats.render(),
    )
        .into_response()
}

fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/v1/audit", post(post_audit))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(ctx)
}

async fn until(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Serves the API on a TCP address until `stop`.
pub async fn serve_tcp(
    ctx: Arc<Context>,
    addr: &str,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("http_addr: cannot listen on {addr}: {e}"))?;
    info!(addr = %listener.local_addr()?, "local API (audit intake, /metrics) listening");
    let app = router(ctx);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(until(stop))
            .await
        {
            warn!(error = %e, "local API stopped");
        }
    });
    Ok(())
}

/// Serves the API on a Unix socket until `stop`.
pub async fn serve_unix(
    ctx: Arc<Context>,
    path: &Path,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // A socket left by a previous run is replaced.
    if std::fs::symlink_metadata(path).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt as _;
        m.file_type().is_socket()
    }) {
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("unix_socket: cannot listen on {}: {e}", path.display()))?;
    info!(path = %path.display(), "local API listening on a Unix socket");
    let app = router(ctx);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(until(stop))
            .await
        {
            warn!(error = %e, "local API (Unix socket) stopped");
        }
    });
    Ok(())
}
