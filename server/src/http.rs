//! The HTTP port: `/healthz`, `/metrics`, `POST /v1/query`, the alarm API, log groups and keys.
//!
//! Every `/v1/` route is behind `authorize`: it needs an API key whose role allows the call
//! (reads: `read`; changes: `admin`), and the handler sees the caller as a
//! [`crate::auth::Principal`] extension. `/healthz` and `/metrics` are open, for load balancers and
//! scrapers; they carry no tenant's data.

pub mod alarms;
pub mod audit;
pub mod keys;
pub mod log_groups;
pub mod query;
pub mod serve;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use watchtrail_proto::TENANT_HEADER;
use watchtrail_query::engine::Engine;
use watchtrail_storage::keys::Role;

use serde_json::Value;

use crate::auth::{Auth, Denied};
use crate::metrics::Metrics;
use crate::self_audit::{Call, SelfAudit};
use crate::wal::Wal;

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    wal: Wal,
    alarms: Arc<crate::alarms::AlarmService>,
}

/// What the HTTP routes serve from.
#[derive(Debug)]
pub struct Services {
    /// The server's counters (`/metrics`).
    pub metrics: Arc<Metrics>,
    /// The write-ahead log (its size on `/metrics`).
    pub wal: Wal,
    /// The SQL engine.
    pub engine: Engine,
    /// Alarms, metric filters, destinations and log-group policies.
    pub alarms: Arc<crate::alarms::AlarmService>,
    /// API keys.
    pub auth: Auth,
    /// The server's own audit trail.
    pub trail: SelfAudit,
    /// Per-tenant query slots.
    pub gate: crate::query::QueryGate,
    /// `--query-max-answer-bytes`.
    pub max_answer_bytes: usize,
    /// The store (audit digests and keys).
    pub storage: watchtrail_storage::store::Storage,
    /// The digester's delay (what `verify` expects).
    pub digest_delay: std::time::Duration,
    /// The AWS APIs (and the master key that keys' AWS secrets derive from).
    pub aws: Arc<crate::aws::AwsState>,
}

/// The HTTP routes.
pub fn router(services: Services) -> Router {
    let Services {
        metrics,
        wal,
        engine,
        alarms,
        auth,
        trail,
        gate,
        max_answer_bytes,
        storage,
        digest_delay,
        aws,
    } = services;
    let api = Router::new()
        .route("/v1/query", post(query::query))
        .with_state(query::QueryState {
            engine: engine.clone(),
            gate: gate.clone(),
            trail: trail.clone(),
            max_answer_bytes,
        })
        // Routes that answer from SQL take a query slot of the tenant, as queries do.
        .merge(
            log_groups::router(alarms.control().clone(), engine)
                .merge(alarms::history_router(Arc::clone(&alarms)))
                // Verification reads a tenant's whole trail: it takes a slot too.
                .merge(audit::router(storage, digest_delay))
                .route_layer(axum::middleware::from_fn_with_state(
                    gate.clone(),
                    query::gated,
                )),
        )
        .merge(alarms::router(Arc::clone(&alarms)))
        .merge(keys::router(auth.clone(), Arc::clone(&aws.master)))
        .layer(axum::middleware::from_fn_with_state(
            Gate { auth, trail },
            authorize,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus))
        .with_state(HttpState {
            metrics,
            wal,
            alarms,
        })
        .merge(api)
        .merge(crate::aws::router(aws))
}

/// The role a call needs: queries and reads need `read`; keys and every change need `admin`.
pub fn needed_role(method: &Method, path: &str) -> Role {
    let keys = path == "/v1/keys" || path.starts_with("/v1/keys/");
    if keys {
        Role::Admin
    } else if method == Method::GET || method == Method::HEAD || path == "/v1/query" {
        Role::Read
    } else {
        Role::Admin
    }
}

/// The answer to a refused call.
pub(crate) fn denied(d: &Denied) -> Response {
    crate::error::denied_answer(d).into_response()
}

fn header_text<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Denied> {
    h.get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| Denied::Invalid(format!("{name}: must be ASCII")))
        })
        .transpose()
}

/// What the `/v1/` middleware needs.
#[derive(Clone)]
struct Gate {
    auth: Auth,
    trail: SelfAudit,
}

/// The largest request body a `/v1/` call may have.
pub const MAX_BODY_BYTES: usize = 2 << 20;

/// The error code an error answer carries, for the trail.
#[derive(Debug, Clone)]
pub(crate) struct ErrorCode(pub(crate) String);

/// The trail's name of a call, whether it only reads, and its parameters from the path.
pub fn http_event(method: &Method, path: &str) -> (&'static str, bool, Value) {
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let get = method == Method::GET || method == Method::HEAD;
    let (name, param, read_only) = match (seg.as_slice(), get) {
        (["v1", "query"], _) => ("Query", None, true),
        (["v1", "alarms"], true) => ("DescribeAlarms", None, true),
        (["v1", "alarms", n], true) => ("DescribeAlarms", Some(("alarmName", *n)), true),
        (["v1", "alarms", n], false) if method == Method::DELETE => {
            ("DeleteAlarm", Some(("alarmName", *n)), false)
        }
        (["v1", "alarms", n], false) => ("PutAlarm", Some(("alarmName", *n)), false),
        (["v1", "alarms", n, "state"], false) => ("SetAlarmState", Some(("alarmName", *n)), false),
        (["v1", "alarms", n, "history"], true) => {
            ("DescribeAlarmHistory", Some(("alarmName", *n)), true)
        }
        (["v1", "alarm-history"], true) => ("DescribeAlarmHistory", None, true),
        (["v1", "metric-filters"], true) => ("DescribeMetricFilters", None, true),
        (["v1", "metric-filters", n], false) if method == Method::DELETE => {
            ("DeleteMetricFilter", Some(("filterName", *n)), false)
        }
        (["v1", "metric-filters", n], false) => {
            ("PutMetricFilter", Some(("filterName", *n)), false)
        }
        (["v1", "destinations"], true) => ("ListDestinations", None, true),
        (["v1", "destinations", n], false) if method == Method::DELETE => {
            ("DeleteDestination", Some(("name", *n)), false)
        }
        (["v1", "destinations", n], false) => ("PutDestination", Some(("name", *n)), false),
        (["v1", "log-groups"], true) => ("DescribeLogGroups", None, true),
        (["v1", "log-groups", n, "retention"], false) if method == Method::DELETE => {
            ("DeleteRetentionPolicy", Some(("logGroupName", *n)), false)
        }
        (["v1", "log-groups", n, "retention"], false) => {
            ("PutRetentionPolicy", Some(("logGroupName", *n)), false)
        }
        (["v1", "audit", "public-keys"], true) => ("ListPublicKeys", None, true),
        (["v1", "audit", "verify"], true) => ("VerifyAuditDigests", None, true),
        (["v1", "keys"], true) => ("ListKeys", None, true),
        (["v1", "keys"], false) => ("CreateKey", None, false),
        (["v1", "keys", id], false) => ("RevokeKey", Some(("keyId", *id)), false),
        _ => ("Unknown", Some(("path", path)), get),
    };
    let mut params = serde_json::Map::new();
    if let Some((k, v)) = param {
        params.insert(k.into(), Value::String(v.to_string()));
    }
    (name, read_only, Value::Object(params))
}

/// What of a request body the trail keeps: the SQL of a query, the definition of a change,
/// never a secret (a destination's `Secret` and `Headers` are left out).
fn body_parameters(event: &str, body: &[u8]) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object_mut()?;
    if event == "PutDestination" {
        obj.remove("Secret");
        obj.remove("Headers");
    }
    Some(v)
}

/// The trail's error code of an HTTP answer.
/// Authenticates a `/v1/` call and checks its role (the handler gets the
/// [`crate::auth::Principal`]), then records the call and its outcome in the caller's trail.
async fn authorize(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    let needed = needed_role(req.method(), req.uri().path());
    let (event_name, read_only, mut params) = http_event(req.method(), req.uri().path());
    let source_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(q) = req.uri().query()
        && let Some(o) = params.as_object_mut()
    {
        o.insert("query".into(), Value::String(q.to_string()));
    }
    // Owned copies: the request body is not `Sync`, so no borrow of it may cross an await.
    let headers = (|| {
        let h = req.headers();
        Ok::<_, Denied>((
            header_text(h, header::AUTHORIZATION.as_str())?.map(str::to_string),
            header_text(h, TENANT_HEADER)?.map(str::to_string),
        ))
    })();
    let (authorization, tenant) = match headers {
        Ok(h) => h,
        Err(d) => return denied(&d),
    };
    let authorized = gate
        .auth
        .authorize(authorization.as_deref(), tenant.as_deref(), needed)
        .await;
    let caller = match &authorized {
        Ok(p) => p.caller(),
        Err((_, c)) => c.clone(),
    };
    let mut call = Call {
        event_name,
        read_only,
        caller,
        source_ip,
        user_agent,
        request_parameters: params,
        error: None,
    };
    let principal = match authorized {
        Ok(p) => p,
        Err((d, _)) => {
            call.error = Some(("AccessDenied".into(), d.to_string()));
            gate.trail.record(&call);
            return denied(&d);
        }
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            call.error = Some((
                "LimitExceededException".into(),
                "request body too large".into(),
            ));
            gate.trail.record(&call);
            return crate::error::error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestTooLarge",
                &format!("the request body is over {MAX_BODY_BYTES} bytes"),
            );
        }
    };
    if let Some(b) = body_parameters(event_name, &bytes)
        && let Some(o) = call.request_parameters.as_object_mut()
    {
        match b {
            Value::Object(m) => o.extend(m),
            other => {
                o.insert("body".into(), other);
            }
        }
    }
    let mut req = Request::from_parts(parts, axum::body::Body::from(bytes));
    req.extensions_mut().insert(principal);
    // Handlers that record more than the outcome (a query's start) build on this.
    req.extensions_mut().insert(call.clone());
    let response = next.run(req).await;
    if let Some(code) = crate::error::code_of(&response) {
        call.error = Some((code, format!("HTTP {}", response.status().as_u16())));
    }
    gate.trail.record(&call);
    response
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_need_read_and_changes_and_keys_need_admin() {
        assert_eq!(needed_role(&Method::POST, "/v1/query"), Role::Read);
        assert_eq!(needed_role(&Method::GET, "/v1/alarms"), Role::Read);
        assert_eq!(needed_role(&Method::GET, "/v1/log-groups"), Role::Read);
        assert_eq!(needed_role(&Method::PUT, "/v1/alarms/a"), Role::Admin);
        assert_eq!(
            needed_role(&Method::POST, "/v1/alarms/a/state"),
            Role::Admin
        );
        assert_eq!(
            needed_role(&Method::DELETE, "/v1/destinations/d"),
            Role::Admin
        );
        assert_eq!(needed_role(&Method::GET, "/v1/keys"), Role::Admin);
        assert_eq!(
            needed_role(&Method::DELETE, "/v1/keys/0123456789abcdef"),
            Role::Admin
        );
    }
}
