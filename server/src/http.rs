//! The HTTP port: `/healthz`, `/metrics`, `POST /v1/query`, the alarm API and log groups.

pub mod alarms;
pub mod log_groups;
pub mod query;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use watchtrail_query::engine::Engine;

use crate::metrics::Metrics;
use crate::wal::Wal;

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    wal: Wal,
    alarms: Arc<crate::alarms::AlarmService>,
}

/// The HTTP routes.
pub fn router(
    metrics: Arc<Metrics>,
    wal: Wal,
    engine: Engine,
    alarms: Arc<crate::alarms::AlarmService>,
) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus))
        .with_state(HttpState {
            metrics,
            wal,
            alarms: Arc::clone(&alarms),
        })
        .merge(
            Router::new()
                .route("/v1/query", post(query::query))
                .with_state(engine.clone()),
        )
        .merge(log_groups::router(alarms.control().clone(), engine))
        .merge(alarms::router(alarms))
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn prometheus(State(s): State<HttpState>) -> impl IntoResponse {
    s.metrics.wal_bytes.set(s.wal.total_bytes());
    s.metrics
        .alarm_evaluator
        .set(u64::from(s.alarms.is_evaluator()));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}
