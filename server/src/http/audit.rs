//! The audit trail's integrity over HTTP:
//!
//! - `GET /v1/audit/public-keys`: the keys that sign digests, with fingerprints and validity;
//! - `GET /v1/audit/verify[?startTime=T&endTime=T]`: verifies the caller's tenant (see
//!   `watchtrail_storage::integrity::verify`) and answers the report; `valid` is false when
//!   anything does not hold.

use axum::Router;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use watchtrail_storage::integrity::digest::{DigestStore, parse_time};
use watchtrail_storage::integrity::verify::{VerifyOptions, verify};
use watchtrail_storage::store::Storage;

use super::alarms::json_ok;
use crate::auth::Principal;
use crate::error::Answer;

/// How long a verification through the server may run; longer ranges are for
/// `watchtrail verify --store`, which has no server resources to hold.
pub const VERIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Clone)]
struct AuditState {
    storage: Storage,
    delay_ms: i64,
}

/// The routes.
pub fn router(storage: Storage, delay: std::time::Duration) -> Router {
    Router::new()
        .route("/v1/audit/public-keys", get(public_keys))
        .route("/v1/audit/verify", get(verify_tenant))
        .with_state(AuditState {
            storage,
            delay_ms: i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
        })
}

async fn public_keys(State(s): State<AuditState>) -> Response {
    match DigestStore::new(&s.storage).public_keys().await {
        Ok(keys) => json_ok(StatusCode::OK, json!({"publicKeys": keys})),
        Err(e) => crate::error::storage_answer(e).into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerifyParams {
    start_time: Option<String>,
    end_time: Option<String>,
}

fn time(field: &str, v: Option<&str>) -> Result<Option<i64>, Box<Response>> {
    match v {
        None => Ok(None),
        Some(t) => parse_time(t).map(Some).ok_or_else(|| {
            Box::new(
                Answer::bad_request(
                    "InvalidParameterValue",
                    format!("{field}: `{t}` is not an RFC 3339 time such as 2026-12-01T00:00:00Z"),
                )
                .with_field(field)
                .into_response(),
            )
        }),
    }
}

async fn verify_tenant(
    State(s): State<AuditState>,
    Extension(caller): Extension<Principal>,
    Query(p): Query<VerifyParams>,
) -> Response {
    let (start_ms, end_ms) = match (
        time("startTime", p.start_time.as_deref()),
        time("endTime", p.end_time.as_deref()),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return *e,
    };
    let options = VerifyOptions {
        tenant: caller.tenant.clone(),
        start_ms,
        end_ms,
        trusted_keys: None,
        delay_ms: s.delay_ms,
        now_ms: crate::wal::now_ms(),
    };
    match tokio::time::timeout(VERIFY_TIMEOUT, verify(&s.storage, &options)).await {
        Ok(Ok(report)) => json_ok(StatusCode::OK, report.to_json(start_ms, end_ms)),
        Ok(Err(e)) => crate::error::storage_answer(e).into_response(),
        Err(_) => Answer::http(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!(
                "verification through the server stops after {} s; give a shorter range, or run `watchtrail verify --store`",
                VERIFY_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
    }
}
