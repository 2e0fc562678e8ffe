//! The AWS door: CloudWatch (`monitoring`), CloudWatch Logs (`logs`) and CloudTrail
//! (`cloudtrail`) APIs on the HTTP port, so that aws-cli, boto3 and the other SDKs reach
//! Watchtrail with `--endpoint-url` and nothing else changed.
//!
//! A call is told apart by how it arrives:
//! - `POST /service/GraniteServiceVersion20100801/operation/<Op>` with `smithy-protocol:
//!   rpc-v2-cbor`: CloudWatch in CBOR (what current boto3 and awscli send);
//! - `POST /` with `X-Amz-Target: <prefix>.<Op>`: awsJson 1.0 (CloudWatch) or 1.1 (Logs,
//!   CloudTrail);
//! - `POST /` with a form body, or `GET /?Action=<Op>`: CloudWatch's Query protocol (older SDKs
//!   and agents), answered in XML.
//!
//! Every call is signed with SigV4 ([`sigv4`]) by a Watchtrail key that was issued AWS
//! credentials (`keys create --aws-credentials`); the key's tenant and role decide what it may
//! do, and every call, allowed or not, lands in the caller's trail under its AWS name.

pub mod alarms;
pub mod cloudtrail;
pub mod cloudwatch;
pub mod error;
pub mod logs;
pub mod sigv4;
pub mod value;

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::post;
use serde_json::{Value, json};
use watchtrail_query::engine::Engine;
use watchtrail_storage::keys::{AwsMaster, Role, key_id_of_access_key};

use self::error::{AwsError, Kind};
use self::value::{Input, V};
use crate::auth::{Auth, AuthMode, Principal};
use crate::ingest::Ingest;
use crate::query::QueryGate;
use crate::self_audit::{Call, Caller, SelfAudit};

/// The largest request body (before decompression).
pub const MAX_BODY_BYTES: usize = 2 << 20;
/// The largest request body after `Content-Encoding: gzip` is undone.
pub const MAX_INFLATED_BYTES: usize = 16 << 20;
const CLOUDWATCH_XMLNS: &str = "http://monitoring.amazonaws.com/doc/2010-08-01/";

/// The three services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// CloudWatch (`monitoring`).
    CloudWatch,
    /// CloudWatch Logs (`logs`).
    Logs,
    /// CloudTrail (`cloudtrail`).
    CloudTrail,
}

impl Service {
    /// The SigV4 signing name.
    pub fn signing_name(self) -> &'static str {
        match self {
            Service::CloudWatch => "monitoring",
            Service::Logs => "logs",
            Service::CloudTrail => "cloudtrail",
        }
    }

    fn from_target_prefix(p: &str) -> Option<Self> {
        match p {
            "GraniteServiceVersion20100801" => Some(Service::CloudWatch),
            "Logs_20140328" => Some(Service::Logs),
            "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101" | "CloudTrail_20131101" => {
                Some(Service::CloudTrail)
            }
            _ => None,
        }
    }
}

/// The wire protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Form-encoded parameters in, XML out.
    Query,
    /// awsJson 1.0.
    Json10,
    /// awsJson 1.1.
    Json11,
    /// smithy rpc-v2-cbor.
    Cbor,
}

/// What an operation needs and how the trail names it.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    /// The service.
    pub service: Service,
    /// The AWS operation name (also the trail's `eventName`).
    pub name: &'static str,
    /// The role a key needs.
    pub role: Role,
}

const fn op(service: Service, name: &'static str, role: Role) -> Op {
    Op {
        service,
        name,
        role,
    }
}

/// Every operation served.
pub const OPERATIONS: &[Op] = &[
    op(Service::CloudWatch, "PutMetricData", Role::Ingest),
    op(Service::CloudWatch, "ListMetrics", Role::Read),
    op(Service::CloudWatch, "GetMetricStatistics", Role::Read),
    op(Service::CloudWatch, "PutMetricAlarm", Role::Admin),
    op(Service::CloudWatch, "DescribeAlarms", Role::Read),
    op(Service::CloudWatch, "DeleteAlarms", Role::Admin),
    op(Service::CloudWatch, "SetAlarmState", Role::Admin),
    op(Service::CloudWatch, "DescribeAlarmHistory", Role::Read),
    op(Service::CloudWatch, "DescribeAlarmsForMetric", Role::Read),
    op(Service::CloudWatch, "EnableAlarmActions", Role::Admin),
    op(Service::CloudWatch, "DisableAlarmActions", Role::Admin),
    op(Service::Logs, "PutLogEvents", Role::Ingest),
    op(Service::Logs, "CreateLogGroup", Role::Ingest),
    op(Service::Logs, "CreateLogStream", Role::Ingest),
    op(Service::Logs, "DescribeLogGroups", Role::Read),
    op(Service::Logs, "DescribeLogStreams", Role::Read),
    op(Service::Logs, "PutRetentionPolicy", Role::Admin),
    op(Service::Logs, "DeleteRetentionPolicy", Role::Admin),
    op(Service::Logs, "PutMetricFilter", Role::Admin),
    op(Service::Logs, "DescribeMetricFilters", Role::Read),
    op(Service::Logs, "DeleteMetricFilter", Role::Admin),
    op(Service::Logs, "TestMetricFilter", Role::Read),
    op(Service::Logs, "GetLogEvents", Role::Read),
    op(Service::Logs, "FilterLogEvents", Role::Read),
    op(Service::CloudTrail, "LookupEvents", Role::Read),
    op(Service::CloudTrail, "StartQuery", Role::Read),
    op(Service::CloudTrail, "GetQueryResults", Role::Read),
    op(Service::CloudTrail, "DescribeQuery", Role::Read),
];

/// What the AWS routes serve from.
#[derive(Debug)]
pub struct AwsState {
    /// Keys.
    pub auth: Auth,
    /// The master key SigV4 secrets derive from.
    pub master: Arc<AwsMaster>,
    /// The region signatures must be scoped to.
    pub region: String,
    /// The ingest path (validation, WAL).
    pub ingest: Ingest,
    /// The SQL engine.
    pub engine: Engine,
    /// Per-tenant query slots.
    pub gate: QueryGate,
    /// The server's own trail.
    pub trail: SelfAudit,
    /// Alarms.
    pub alarms: Arc<crate::alarms::AlarmService>,
    /// Control documents (log groups, retention policies).
    pub control: watchtrail_storage::control::ControlStore,
    /// CloudTrail Lake query results.
    pub lake: cloudtrail::LakeQueries,
}

/// One call being served.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// What it can reach.
    pub state: &'a AwsState,
    /// Who calls.
    pub principal: &'a Principal,
    /// The parameters.
    pub input: Input<'a>,
}

impl Ctx<'_> {
    /// Runs `sql` over the caller's tables in one of its query slots.
    ///
    /// # Errors
    /// No slot free (throttled), or the query's error.
    pub async fn sql(&self, sql: &str) -> Result<Vec<arrow::array::RecordBatch>, AwsError> {
        let _slot = self.slot().await?;
        self.state
            .engine
            .collect(&self.principal.tenant, sql)
            .await
            .map(|r| r.batches)
            .map_err(|e| query_error(&e))
    }
}

impl Ctx<'_> {
    /// One of the caller's query slots, held until dropped.
    ///
    /// # Errors
    /// No slot free (throttled).
    pub async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, AwsError> {
        self.state
            .gate
            .enter(&self.principal.tenant)
            .await
            .map_err(|why| AwsError::new(Kind::Throttled, why))
    }

    /// The caller's metric filters.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn filters(&self) -> Result<Vec<watchtrail_query::alarm::MetricFilter>, AwsError> {
        self.state
            .alarms
            .list_filters(&self.principal.tenant)
            .await
            .map_err(alarms::api_error)
    }
}

/// Where a page starts: the offset in the token of parameter `field`, 0 without one.
///
/// # Errors
/// A token no answer gave ([`Kind::BadToken`]).
pub fn page_offset(input: &Input<'_>, field: &str) -> Result<usize, AwsError> {
    match input.str(field)? {
        None => Ok(0),
        Some(t) => watchtrail_query::cloudwatch::parse_page_token(field, t)
            .map_err(|e| AwsError::new(Kind::BadToken, e.to_string())),
    }
}

/// The token that continues after `next` entries, when there are more.
pub fn next_token(more: bool, next: usize) -> V {
    if more {
        V::Str(watchtrail_query::cloudwatch::page_token(next))
    } else {
        V::Null
    }
}

/// A query error as an AWS error.
pub fn query_error(e: &watchtrail_query::Error) -> AwsError {
    use watchtrail_storage::ErrorClass as C;
    let kind = match e.class() {
        C::BadRequest | C::Forbidden => Kind::Invalid,
        C::ResourceExhausted | C::Timeout => Kind::Limit,
        C::Unavailable => Kind::Unavailable,
        _ => Kind::Internal,
    };
    AwsError::new(kind, e.to_string())
}

/// An ingest error as an AWS error.
pub fn ingest_error(e: &crate::error::Error, field: impl Fn(&str) -> String) -> AwsError {
    use crate::error::Error as E;
    match e {
        E::InvalidArgument { field: f, reason } => AwsError::invalid(field(f), reason),
        E::TooLarge(m) => AwsError::new(Kind::Invalid, m.clone()),
        E::Unavailable(m) => AwsError::new(Kind::Unavailable, m.clone()),
        other => AwsError::new(Kind::Internal, other.to_string()),
    }
}

/// The AWS routes.
pub fn router(state: Arc<AwsState>) -> Router {
    Router::new()
        .route("/", post(handle).get(handle))
        .route("/service/{target}/operation/{op}", post(handle))
        .with_state(state)
}

/// What a request is: service, protocol, operation.
struct Route {
    service: Service,
    protocol: Protocol,
    op: String,
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Tells the service, protocol and operation of a request; `None` when it is no AWS call.
fn route_of(
    path: &str,
    headers: &HeaderMap,
    query: &[(String, String)],
    form: &[(String, String)],
) -> Option<Result<Route, AwsError>> {
    if let Some(rest) = path.strip_prefix("/service/") {
        let (target, op) = rest.split_once("/operation/")?;
        return Some(match Service::from_target_prefix(target) {
            Some(service) => Ok(Route {
                service,
                protocol: Protocol::Cbor,
                op: op.to_string(),
            }),
            None => Err(AwsError::new(
                Kind::UnknownOperation,
                format!("no service has the target prefix `{target}`"),
            )),
        });
    }
    if let Some(target) = header_str(headers, "x-amz-target") {
        let (prefix, op) = target.rsplit_once('.')?;
        let service = Service::from_target_prefix(prefix)?;
        let protocol = match header_str(headers, "content-type") {
            Some(ct) if ct.starts_with("application/x-amz-json-1.0") => Protocol::Json10,
            Some(ct) if ct.starts_with("application/x-amz-json-1.1") => Protocol::Json11,
            _ if service == Service::CloudWatch => Protocol::Json10,
            _ => Protocol::Json11,
        };
        return Some(Ok(Route {
            service,
            protocol,
            op: op.to_string(),
        }));
    }
    let action = form
        .iter()
        .chain(query)
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.clone())?;
    Some(Ok(Route {
        service: Service::CloudWatch,
        protocol: Protocol::Query,
        op: action,
    }))
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An answer in the call's protocol.
fn answer(route: &Route, request_id: &str, result: &Result<V, AwsError>) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", v);
    }
    let (status, body, content_type) = match (route.protocol, result) {
        (Protocol::Query, Ok(v)) => {
            let op = &route.op;
            let mut xml = format!("<{op}Response xmlns=\"{CLOUDWATCH_XMLNS}\">");
            if matches!(v, V::Struct(m) if !m.is_empty()) {
                xml.push_str(&format!("<{op}Result>"));
                v.write_xml(&mut xml);
                xml.push_str(&format!("</{op}Result>"));
            }
            xml.push_str(&format!(
                "<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{op}Response>"
            ));
            (200, xml.into_bytes(), "text/xml")
        }
        (Protocol::Query, Err(e)) => {
            let s = e.spelled(route.service);
            let mut xml = format!(
                "<ErrorResponse xmlns=\"{CLOUDWATCH_XMLNS}\"><Error><Type>{}</Type><Code>{}</Code><Message>",
                if s.sender { "Sender" } else { "Receiver" },
                s.query_code.unwrap_or(s.json_code)
            );
            value::escape_xml(&e.message, &mut xml);
            xml.push_str(&format!(
                "</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
            ));
            (s.status, xml.into_bytes(), "text/xml")
        }
        (p, Ok(v)) => {
            let (body, ct) = match p {
                Protocol::Cbor => (v.to_cbor(), "application/cbor"),
                Protocol::Json10 => (
                    v.to_json().to_string().into_bytes(),
                    "application/x-amz-json-1.0",
                ),
                _ => (
                    v.to_json().to_string().into_bytes(),
                    "application/x-amz-json-1.1",
                ),
            };
            (200, body, ct)
        }
        (p, Err(e)) => {
            let s = e.spelled(route.service);
            if let Some(q) = s.query_code
                && let Ok(v) = HeaderValue::from_str(&format!(
                    "{q};{}",
                    if s.sender { "Sender" } else { "Receiver" }
                ))
            {
                headers.insert("x-amzn-query-error", v);
            }
            if let Ok(v) = HeaderValue::from_str(s.json_code) {
                headers.insert("x-amzn-errortype", v);
            }
            let err = V::object(vec![
                ("__type", V::Str(s.json_code.to_string())),
                ("message", V::Str(e.message.clone())),
            ]);
            let (body, ct) = match p {
                Protocol::Cbor => (err.to_cbor(), "application/cbor"),
                Protocol::Json10 => (
                    err.to_json().to_string().into_bytes(),
                    "application/x-amz-json-1.0",
                ),
                _ => (
                    err.to_json().to_string().into_bytes(),
                    "application/x-amz-json-1.1",
                ),
            };
            (s.status, body, ct)
        }
    };
    if route.protocol == Protocol::Cbor {
        headers.insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        headers,
        body,
    )
        .into_response()
}

/// The signature refusals, as each service spells them.
fn auth_error(service: Service, what: AuthFailure, message: String) -> AwsError {
    let json = service != Service::CloudWatch;
    let (status, code) = match (what, json) {
        (AuthFailure::Missing, false) => (403, "MissingAuthenticationToken"),
        (AuthFailure::Missing, true) => (400, "MissingAuthenticationTokenException"),
        (AuthFailure::Incomplete, false) => (400, "IncompleteSignature"),
        (AuthFailure::Incomplete, true) => (400, "IncompleteSignatureException"),
        (AuthFailure::UnknownKey, false) => (403, "InvalidClientTokenId"),
        (AuthFailure::UnknownKey, true) => (400, "UnrecognizedClientException"),
        (AuthFailure::Signature, false) => (403, "SignatureDoesNotMatch"),
        (AuthFailure::Signature, true) => (400, "InvalidSignatureException"),
        (AuthFailure::Role, false) => (403, "AccessDenied"),
        (AuthFailure::Role, true) => (400, "AccessDeniedException"),
    };
    AwsError::coded(Kind::Denied, status, code, message)
}

#[derive(Debug, Clone, Copy)]
enum AuthFailure {
    Missing,
    Incomplete,
    UnknownKey,
    Signature,
    Role,
}

/// Authenticates a call: its SigV4 signature by a key with AWS credentials.
async fn authenticate(
    state: &AwsState,
    service: Service,
    req: &sigv4::Request<'_>,
) -> Result<Principal, (AwsError, Option<Principal>, Option<String>)> {
    if state.auth.mode() == AuthMode::None {
        return state
            .auth
            .authenticate(
                None,
                header_str(req.headers, watchtrail_proto::TENANT_HEADER),
            )
            .await
            .map_err(|d| (AwsError::new(Kind::Denied, d.to_string()), None, None));
    }
    let signed = match sigv4::parse(req.headers, req.query) {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err((
                auth_error(
                    service,
                    AuthFailure::Missing,
                    "Request is missing Authentication Token (sign it with SigV4 using the \
                     credentials of `watchtrail keys create --aws-credentials`)"
                        .into(),
                ),
                None,
                None,
            ));
        }
        Err(
            sigv4::Refusal::Incomplete(m) | sigv4::Refusal::Scope(m) | sigv4::Refusal::Expired(m),
        ) => {
            return Err((auth_error(service, AuthFailure::Incomplete, m), None, None));
        }
        Err(sigv4::Refusal::Mismatch) => {
            return Err((
                auth_error(service, AuthFailure::Signature, "bad signature".into()),
                None,
                None,
            ));
        }
    };
    let unknown = || {
        (
            auth_error(
                service,
                AuthFailure::UnknownKey,
                "The security token included in the request is invalid.".into(),
            ),
            None,
            Some(signed.access_key_id.clone()),
        )
    };
    let Some(key_id) = key_id_of_access_key(&signed.access_key_id) else {
        return Err(unknown());
    };
    let record = match state.auth.record(&key_id).await {
        Ok(Some(r)) if r.aws => r,
        Ok(_) => return Err(unknown()),
        Err(d) => {
            return Err((
                AwsError::new(Kind::Unavailable, d.to_string()),
                None,
                Some(key_id),
            ));
        }
    };
    let principal = Principal {
        tenant: record.tenant.clone(),
        role: record.role,
        key_id: Some(record.key_id.clone()),
    };
    let secret = state.master.secret_for(&record.key_id);
    match sigv4::verify(
        &signed,
        req,
        &secret,
        &state.region,
        service.signing_name(),
        chrono::Utc::now().timestamp_millis(),
    ) {
        Ok(()) => Ok(principal),
        Err(r) => {
            let message = match r {
                sigv4::Refusal::Mismatch => "The request signature we calculated does not match \
                    the signature you provided. Check your AWS Secret Access Key and signing method."
                    .to_string(),
                sigv4::Refusal::Incomplete(m)
                | sigv4::Refusal::Scope(m)
                | sigv4::Refusal::Expired(m) => m,
            };
            Err((
                auth_error(service, AuthFailure::Signature, message),
                Some(principal),
                None,
            ))
        }
    }
}

fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn inflate(body: &[u8]) -> Result<Vec<u8>, AwsError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_INFLATED_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| AwsError::serialization(format!("Content-Encoding gzip: {e}")))?;
    if out.len() > MAX_INFLATED_BYTES {
        return Err(AwsError::new(
            Kind::Invalid,
            format!("the request is over {MAX_INFLATED_BYTES} bytes once decompressed"),
        ));
    }
    Ok(out)
}

async fn handle(State(state): State<Arc<AwsState>>, req: Request) -> Response {
    let request_id = new_request_id();
    let source_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (parts, body) = req.into_parts();
    let user_agent = header_str(&parts.headers, "user-agent").map(str::to_string);
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let query_pairs = sigv4::query_pairs(query.as_deref());
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over {MAX_BODY_BYTES} bytes"),
            )
                .into_response();
        }
    };
    let is_form = header_str(&parts.headers, "content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let gzipped = header_str(&parts.headers, "content-encoding")
        .is_some_and(|c| c.eq_ignore_ascii_case("gzip"));
    let plain = if gzipped {
        inflate(&body)
    } else {
        Ok(body.to_vec())
    };
    let form = match (&plain, is_form) {
        (Ok(b), true) => form_pairs(b),
        _ => Vec::new(),
    };
    let route = match route_of(&path, &parts.headers, &query_pairs, &form) {
        None => {
            return (StatusCode::NOT_FOUND, "no such route\n").into_response();
        }
        Some(Err(e)) => {
            let r = Route {
                service: Service::CloudWatch,
                protocol: Protocol::Cbor,
                op: String::new(),
            };
            return answer(&r, &request_id, &Err(e));
        }
        Some(Ok(r)) => r,
    };
    let known = OPERATIONS
        .iter()
        .find(|o| o.service == route.service && o.name == route.op);
    let event_name = known.map_or("UnknownOperation", |o| o.name);
    let signed = sigv4::Request {
        method: parts.method.as_str(),
        path: &path,
        query: query.as_deref(),
        headers: &parts.headers,
        body: &body,
    };
    let mut call = Call {
        event_name,
        read_only: known.is_some_and(|o| o.role == Role::Read),
        caller: Caller::Key {
            tenant: watchtrail_proto::DEFAULT_TENANT.to_string(),
            key_id: None,
            role: Role::Read,
        },
        source_ip,
        user_agent,
        request_parameters: json!({"service": route.service.signing_name()}),
        error: None,
    };
    let principal = match authenticate(&state, route.service, &signed).await {
        Ok(p) => p,
        Err((e, who, presented)) => {
            let refused = who.map(|p| p.caller()).unwrap_or_else(|| {
                state.auth.refused_caller(
                    presented
                        .as_deref()
                        .map(|k| format!("Bearer wt_{k}_"))
                        .as_deref(),
                )
            });
            call.caller = refused;
            if let Some(k) = presented
                && let Some(o) = call.request_parameters.as_object_mut()
            {
                o.insert("accessKeyId".into(), Value::String(k));
            }
            return finish(&state, call, &route, &request_id, Err(e));
        }
    };
    call.caller = principal.caller();
    let Some(op) = known else {
        let e = AwsError::new(
            Kind::UnknownOperation,
            format!(
                "{} has no operation `{}` here (see docs/aws-compatibility.md)",
                route.service.signing_name(),
                route.op
            ),
        );
        if let Some(o) = call.request_parameters.as_object_mut() {
            o.insert("operation".into(), Value::String(route.op.clone()));
        }
        return finish(&state, call, &route, &request_id, Err(e));
    };
    if !principal.role.allows(op.role) {
        let e = auth_error(
            route.service,
            AuthFailure::Role,
            format!(
                "{} needs a key with role `{}` (or `admin`); key {} has role `{}`",
                op.name,
                op.role,
                principal.key_id.as_deref().unwrap_or("-"),
                principal.role
            ),
        );
        return finish(&state, call, &route, &request_id, Err(e));
    }
    let plain = match plain {
        Ok(p) => p,
        Err(e) => return finish(&state, call, &route, &request_id, Err(e)),
    };
    let decoded = match route.protocol {
        Protocol::Query => {
            let params: Vec<(String, String)> = query_pairs
                .into_iter()
                .chain(form)
                .filter(|(k, _)| !k.starts_with("X-Amz-") && k != "Action" && k != "Version")
                .collect();
            V::from_query(&params)
        }
        Protocol::Cbor => V::from_cbor(&plain),
        Protocol::Json10 | Protocol::Json11 => V::from_json(&plain),
    };
    let input = match decoded {
        Ok(v) => v,
        Err(e) => return finish(&state, call, &route, &request_id, Err(e)),
    };
    if let Some(o) = call.request_parameters.as_object_mut() {
        match trail_parameters(&input) {
            Value::Object(m) => o.extend(m),
            other => {
                o.insert("parameters".into(), other);
            }
        }
    }
    let ctx = Ctx {
        state: &state,
        principal: &principal,
        input: Input::root(&input, route.protocol == Protocol::Query),
    };
    let result = match (op.service, op.name) {
        (Service::CloudWatch, "PutMetricData") => cloudwatch::put_metric_data(&ctx).await,
        (Service::CloudWatch, "ListMetrics") => cloudwatch::list_metrics(&ctx).await,
        (Service::CloudWatch, "GetMetricStatistics") => {
            cloudwatch::get_metric_statistics(&ctx).await
        }
        (Service::CloudWatch, "PutMetricAlarm") => {
            alarms::put_metric_alarm(&ctx, &input, route.protocol == Protocol::Query).await
        }
        (Service::CloudWatch, "DescribeAlarms") => alarms::describe_alarms(&ctx).await,
        (Service::CloudWatch, "DeleteAlarms") => alarms::delete_alarms(&ctx).await,
        (Service::CloudWatch, "SetAlarmState") => alarms::set_alarm_state(&ctx).await,
        (Service::CloudWatch, "DescribeAlarmHistory") => alarms::describe_alarm_history(&ctx).await,
        (Service::CloudWatch, "DescribeAlarmsForMetric") => {
            alarms::describe_alarms_for_metric(&ctx).await
        }
        (Service::CloudWatch, "EnableAlarmActions") => alarms::set_actions(&ctx, true).await,
        (Service::CloudWatch, "DisableAlarmActions") => alarms::set_actions(&ctx, false).await,
        (Service::Logs, "PutLogEvents") => logs::put_log_events(&ctx).await,
        (Service::Logs, "GetLogEvents") => logs::get_log_events(&ctx).await,
        (Service::Logs, "CreateLogGroup") => logs::create_log_group(&ctx).await,
        (Service::Logs, "CreateLogStream") => logs::create_log_stream(&ctx).await,
        (Service::Logs, "DescribeLogGroups") => logs::describe_log_groups(&ctx).await,
        (Service::Logs, "DescribeLogStreams") => logs::describe_log_streams(&ctx).await,
        (Service::Logs, "PutRetentionPolicy") => logs::put_retention_policy(&ctx).await,
        (Service::Logs, "DeleteRetentionPolicy") => logs::delete_retention_policy(&ctx).await,
        (Service::Logs, "PutMetricFilter") => logs::put_metric_filter(&ctx, &input).await,
        (Service::Logs, "DescribeMetricFilters") => logs::describe_metric_filters(&ctx).await,
        (Service::Logs, "DeleteMetricFilter") => logs::delete_metric_filter(&ctx).await,
        (Service::Logs, "TestMetricFilter") => logs::test_metric_filter(&ctx).await,
        (Service::Logs, "FilterLogEvents") => logs::filter_log_events(&ctx).await,
        (Service::CloudTrail, "LookupEvents") => cloudtrail::lookup_events(&ctx).await,
        (Service::CloudTrail, "StartQuery") => cloudtrail::start_query(&ctx).await,
        (Service::CloudTrail, "GetQueryResults") => cloudtrail::get_query_results(&ctx).await,
        (Service::CloudTrail, "DescribeQuery") => cloudtrail::describe_query(&ctx).await,
        _ => Err(AwsError::new(Kind::Internal, "operation without a handler")),
    };
    finish(&state, call, &route, &request_id, result)
}

/// What of a call's parameters the trail keeps: everything but the data it carries (datums
/// and log events are counted, not copied).
fn trail_parameters(input: &V) -> Value {
    let mut v = input.to_json();
    if let Some(o) = v.as_object_mut() {
        for big in ["MetricData", "logEvents", "EntityMetricData"] {
            if let Some(Value::Array(a)) = o.get(big) {
                let n = a.len();
                o.insert(big.to_string(), json!({ "count": n }));
            }
        }
    }
    v
}

fn finish(
    state: &AwsState,
    mut call: Call,
    route: &Route,
    request_id: &str,
    result: Result<V, AwsError>,
) -> Response {
    if let Err(e) = &result {
        let s = e.spelled(route.service);
        call.error = Some((
            s.query_code.unwrap_or(s.json_code).to_string(),
            e.message.clone(),
        ));
    }
    state.trail.record(&call);
    answer(route, request_id, &result)
}

/// Builds the `Dimensions` answer list.
pub fn dimensions_value(dims: &[(String, String)]) -> V {
    V::List(
        dims.iter()
            .map(|(n, v)| {
                V::object(vec![
                    ("Name", V::Str(n.clone())),
                    ("Value", V::Str(v.clone())),
                ])
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn a_gzip_bomb_is_refused_at_the_inflated_limit() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(MAX_INFLATED_BYTES >> 20) + 1 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < MAX_BODY_BYTES, "{} bytes", bomb.len());
        let e = inflate(&bomb).unwrap_err();
        assert!(e.message.contains("decompressed"), "{e}");
        assert!(inflate(b"not gzip").is_err());
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"Action=ListMetrics").unwrap();
        assert_eq!(
            inflate(&enc.finish().unwrap()).unwrap(),
            b"Action=ListMetrics"
        );
    }

    #[test]
    fn calls_are_told_apart_by_path_target_and_action() {
        let mut h = HeaderMap::new();
        let r = route_of(
            "/service/GraniteServiceVersion20100801/operation/ListMetrics",
            &h,
            &[],
            &[],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.service, r.protocol, r.op.as_str()),
            (Service::CloudWatch, Protocol::Cbor, "ListMetrics")
        );
        h.insert(
            "x-amz-target",
            HeaderValue::from_static("Logs_20140328.PutLogEvents"),
        );
        let r = route_of("/", &h, &[], &[]).unwrap().unwrap();
        assert_eq!((r.service, r.protocol), (Service::Logs, Protocol::Json11));
        h.insert(
            "x-amz-target",
            HeaderValue::from_static(
                "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents",
            ),
        );
        assert_eq!(
            route_of("/", &h, &[], &[]).unwrap().unwrap().service,
            Service::CloudTrail
        );
        h.insert(
            "x-amz-target",
            HeaderValue::from_static("GraniteServiceVersion20100801.PutMetricData"),
        );
        h.insert(
            "content-type",
            HeaderValue::from_static("application/x-amz-json-1.0"),
        );
        assert_eq!(
            route_of("/", &h, &[], &[]).unwrap().unwrap().protocol,
            Protocol::Json10
        );
        let form = vec![("Action".to_string(), "GetMetricStatistics".to_string())];
        let r = route_of("/", &HeaderMap::new(), &[], &form)
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.protocol, r.op.as_str()),
            (Protocol::Query, "GetMetricStatistics")
        );
        // No AWS call at all: not ours (the console may serve `/`).
        assert!(route_of("/", &HeaderMap::new(), &[], &[]).is_none());
        assert!(matches!(
            route_of("/service/Nope/operation/X", &HeaderMap::new(), &[], &[]),
            Some(Err(_))
        ));
    }
}
