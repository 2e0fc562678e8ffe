//! `POST /v1/query`: `{"sql": "..."}` in; rows out as JSON, CSV, NDJSON or an Arrow IPC stream,
//! by the `Accept` header. The query's statistics come in the `x-watchtrail-query-stats` header
//! (and in the JSON body).

use crate::error::{Answer, error_response};
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use watchtrail_query::engine::{Engine, QueryStats};
use watchtrail_query::output::{self, Format};

use crate::auth::Principal;
use crate::self_audit::{Call, SelfAudit};

/// The header that carries a query's statistics as JSON.
pub const STATS_HEADER: &str = "x-watchtrail-query-stats";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    sql: String,
}

/// The HTTP answer of a storage or SQL error.
pub(crate) fn query_error(e: &watchtrail_query::Error) -> Response {
    crate::error::query_answer(e).into_response()
}

/// Holds one of the caller's tenant's query slots while the request runs (for routes that
/// answer from SQL other than `POST /v1/query`).
pub(crate) async fn gated(
    State(gate): State<crate::query::QueryGate>,
    Extension(caller): Extension<Principal>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let _slot = match gate.enter(&caller.tenant).await {
        Ok(p) => p,
        Err(why) => return Answer::too_many_queries(why).into_response(),
    };
    next.run(req).await
}

/// What `POST /v1/query` needs.
#[derive(Debug, Clone)]
pub(crate) struct QueryState {
    pub(crate) engine: Engine,
    pub(crate) gate: crate::query::QueryGate,
    pub(crate) trail: SelfAudit,
    pub(crate) max_answer_bytes: usize,
}

pub(crate) async fn query(
    State(QueryState {
        engine,
        gate,
        trail,
        max_answer_bytes,
    }): State<QueryState>,
    Extension(caller): Extension<Principal>,
    Extension(call): Extension<Call>,
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
    // Held until every part of the query's work has stopped (not merely until this handler
    // gives up on it).
    let slot = match gate.enter(&tenant).await {
        Ok(p) => p,
        Err(why) => return Answer::too_many_queries(why).into_response(),
    };
    // The start is in the WAL before the query runs; the middleware records the outcome.
    let start = Call {
        event_name: "StartQuery",
        ..call
    };
    if let Err(why) = trail.record_now(&start).await {
        return Answer::start_not_recorded(why).into_response();
    }
    let mut stream = match engine
        .query_holding(&tenant, &body.sql, Some(Box::new(slot)))
        .await
    {
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
    let body = match render(format, &schema, &batches, &stats, max_answer_bytes) {
        Ok(Some(b)) => b,
        Ok(None) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "QueryResultTooLarge",
                &format!(
                    "the encoded answer is over {max_answer_bytes} bytes (--query-max-answer-bytes); add a LIMIT or a narrower WHERE, or use the gRPC Query stream"
                ),
            );
        }
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

/// A buffer that refuses to grow past `cap` bytes, so that encoding an answer cannot take more
/// memory than `--query-max-answer-bytes`.
struct CappedBuf {
    buf: Vec<u8>,
    cap: usize,
    overflowed: bool,
}

impl std::io::Write for CappedBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.cap {
            self.overflowed = true;
            return Err(std::io::Error::other(
                "the answer is over --query-max-answer-bytes",
            ));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The answer's bytes, or `None` when they would be more than `cap`.
fn render(
    format: Format,
    schema: &arrow::datatypes::SchemaRef,
    batches: &[arrow::array::RecordBatch],
    stats: &QueryStats,
    cap: usize,
) -> watchtrail_query::Result<Option<Vec<u8>>> {
    use std::io::Write as _;
    let mut out = CappedBuf {
        buf: Vec::new(),
        cap,
        overflowed: false,
    };
    let result = (|| {
        if format != Format::Json {
            return output::write(format, schema, batches, &mut out);
        }
        let columns: Vec<serde_json::Value> = schema
            .fields()
            .iter()
            .map(|f| serde_json::json!({ "name": f.name(), "type": f.data_type().to_string() }))
            .collect();
        let io = |e: std::io::Error| watchtrail_query::Error::Internal(e.to_string());
        out.write_all(b"{\"columns\":").map_err(io)?;
        out.write_all(
            serde_json::to_string(&columns)
                .unwrap_or_default()
                .as_bytes(),
        )
        .map_err(io)?;
        out.write_all(b",\"rows\":").map_err(io)?;
        output::write_json_rows(batches, &mut out)?;
        out.write_all(b",\"stats\":").map_err(io)?;
        out.write_all(serde_json::to_string(stats).unwrap_or_default().as_bytes())
            .map_err(io)?;
        out.write_all(b"}\n").map_err(io)
    })();
    match result {
        _ if out.overflowed => Ok(None),
        Ok(()) => Ok(Some(out.buf)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn an_answer_is_encoded_up_to_its_cap_and_refused_past_it() {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
        let rows = StringArray::from(vec!["x".repeat(1000); 100]);
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(rows)]).unwrap();
        let stats = QueryStats::default();
        for format in [Format::Json, Format::Csv, Format::Ndjson, Format::Arrow] {
            let whole = render(
                format,
                &schema,
                std::slice::from_ref(&batch),
                &stats,
                1 << 20,
            )
            .unwrap()
            .expect("fits");
            assert!(whole.len() > 100_000, "{format:?}");
            let capped = render(
                format,
                &schema,
                std::slice::from_ref(&batch),
                &stats,
                50_000,
            )
            .unwrap();
            assert!(capped.is_none(), "{format:?} past its cap");
        }
    }
}
