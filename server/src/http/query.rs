//! `POST /v1/query`: `{"sql": "..."}` in; rows out as JSON, CSV, NDJSON or an Arrow IPC stream,
//! by the `Accept` header. The query's statistics come in the `x-watchtrail-query-stats` header
//! (and in the JSON body).

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use watchtrail_query::engine::{Engine, QueryStats};
use watchtrail_query::error::ErrorClass;
use watchtrail_query::output::{self, Format};

use crate::auth::Principal;

/// The header that carries a query's statistics as JSON.
pub const STATS_HEADER: &str = "x-watchtrail-query-stats";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    sql: String,
}

/// An error answer: `{"error": {"code": ..., "message": ...}}`.
pub(crate) fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    r.extensions_mut()
        .insert(super::ErrorCode(code.to_string()));
    r
}

/// The HTTP status and error code of a query error.
pub(crate) fn query_error(e: &watchtrail_query::Error) -> Response {
    let (status, code) = match e.class() {
        ErrorClass::BadRequest => (StatusCode::BAD_REQUEST, "InvalidQuery"),
        ErrorClass::Forbidden => (StatusCode::FORBIDDEN, "ReadOnly"),
        ErrorClass::ResourceExhausted => {
            (StatusCode::TOO_MANY_REQUESTS, "QueryMemoryLimitExceeded")
        }
        ErrorClass::Timeout => (StatusCode::GATEWAY_TIMEOUT, "QueryTimeout"),
        ErrorClass::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "StorageUnavailable"),
        ErrorClass::Internal => {
            tracing::error!(error = %e, "query failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
        }
    };
    error_response(status, code, &e.to_string())
}

/// What `POST /v1/query` needs.
#[derive(Debug, Clone)]
pub(crate) struct QueryState {
    pub(crate) engine: Engine,
    pub(crate) gate: crate::query::QueryGate,
}

pub(crate) async fn query(
    State(QueryState { engine, gate }): State<QueryState>,
    Extension(caller): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tenant = caller.tenant;
    let body: QueryBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                &format!("request body: expected {{\"sql\": \"...\"}}: {e}"),
            );
        }
    };
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    // Held until the answer is gathered.
    let _slot = match gate.enter(&tenant).await {
        Ok(p) => p,
        Err(why) => return error_response(StatusCode::TOO_MANY_REQUESTS, "TooManyQueries", &why),
    };
    let mut stream = match engine.query(&tenant, &body.sql).await {
        Ok(s) => s,
        Err(e) => return query_error(&e),
    };
    let schema = stream.schema();
    // The answer is gathered before it is sent, so that errors get their own status; it may
    // take as much memory as one query may.
    let limit = engine.config().memory_limit;
    let mut batches = Vec::new();
    let mut bytes = 0usize;
    while let Some(b) = stream.next_batch().await {
        match b {
            Ok(b) => {
                bytes += b.get_array_memory_size();
                if bytes > limit {
                    return error_response(
                        StatusCode::TOO_MANY_REQUESTS,
                        "QueryResultTooLarge",
                        "the answer is larger than the query memory limit; add a LIMIT or a narrower WHERE, or use the gRPC Query stream",
                    );
                }
                batches.push(b);
            }
            Err(e) => return query_error(&e),
        }
    }
    let stats = stream.stats().cloned().unwrap_or_default();
    let stats_json = serde_json::to_string(&stats).unwrap_or_default();
    let body = match render(format, &schema, &batches, &stats) {
        Ok(b) => b,
        Err(e) => return query_error(&e),
    };
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&stats_json) {
        response.headers_mut().insert(STATS_HEADER, v);
    }
    response
}

fn render(
    format: Format,
    schema: &arrow::datatypes::SchemaRef,
    batches: &[arrow::array::RecordBatch],
    stats: &QueryStats,
) -> watchtrail_query::Result<Vec<u8>> {
    if format != Format::Json {
        let mut out = Vec::new();
        output::write(format, schema, batches, &mut out)?;
        return Ok(out);
    }
    let columns: Vec<serde_json::Value> = schema
        .fields()
        .iter()
        .map(|f| serde_json::json!({ "name": f.name(), "type": f.data_type().to_string() }))
        .collect();
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"columns\":");
    out.extend_from_slice(
        serde_json::to_string(&columns)
            .unwrap_or_default()
            .as_bytes(),
    );
    out.extend_from_slice(b",\"rows\":");
    out.extend_from_slice(&output::json_rows(batches)?);
    out.extend_from_slice(b",\"stats\":");
    out.extend_from_slice(serde_json::to_string(stats).unwrap_or_default().as_bytes());
    out.extend_from_slice(b"}\n");
    Ok(out)
}
