//! The alarm API: `/v1/alarms`, `/v1/metric-filters` and `/v1/destinations`.
//!
//! Bodies are CloudWatch's own JSON (`PutMetricAlarm`, `PutMetricFilter` fields); refusals are
//! 400 with the field and the reason, unknown names 404.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::Deserialize;
use serde_json::{Value, json};
use watchtrail_query::alarm::{AlarmDefinition, AlarmState, MetricFilter};

use super::query::error_response;
use crate::alarms::webhook::Destination;
use crate::alarms::{AlarmService, ApiError};
use crate::auth::Principal;
use watchtrail_query::keys::Role;

/// The routes.
pub fn router(alarms: Arc<AlarmService>) -> Router {
    Router::new()
        .route("/v1/alarms", get(list_alarms))
        .route(
            "/v1/alarms/{name}",
            put(put_alarm).get(get_alarm).delete(delete_alarm),
        )
        .route("/v1/alarms/{name}/state", put(set_state))
        .route("/v1/metric-filters", get(list_filters))
        .route(
            "/v1/metric-filters/{name}",
            put(put_filter).delete(delete_filter),
        )
        .route("/v1/destinations", get(list_destinations))
        .route(
            "/v1/destinations/{name}",
            put(put_destination).delete(delete_destination),
        )
        .with_state(alarms)
}

/// The routes that answer from SQL (alarm history), to be put behind the query gate.
pub fn history_router(alarms: Arc<AlarmService>) -> Router {
    Router::new()
        .route("/v1/alarms/{name}/history", get(alarm_history))
        .route("/v1/alarm-history", get(all_history))
        .with_state(alarms)
}

pub(crate) fn json_ok(status: StatusCode, v: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn api_error(e: ApiError) -> Response {
    match e {
        ApiError::Invalid(d) => {
            let body = json!({"error": {
                "code": "InvalidParameterValue",
                "field": d.field,
                "message": d.to_string(),
            }});
            json_ok(StatusCode::BAD_REQUEST, body)
        }
        ApiError::NotFound(m) => error_response(StatusCode::NOT_FOUND, "ResourceNotFound", &m),
        ApiError::Server(e) => {
            tracing::warn!(error = %e, "alarm API call failed");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                &e.to_string(),
            )
        }
    }
}

fn body_json(body: &Bytes) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error_response(
            StatusCode::BAD_REQUEST,
            "InvalidJson",
            &format!("the body is not JSON: {e}"),
        ))
    })
}

/// The body as JSON with the path's name in its name field.
fn named_body(body: &Bytes, field: &str, name: &str) -> Result<Value, Box<Response>> {
    let mut v = body_json(body)?;
    name_into(&mut v, field, name)?;
    Ok(v)
}

/// The path's name goes into the body's name field; a different one in the body is refused.
fn name_into(v: &mut Value, field: &str, name: &str) -> Result<(), Box<Response>> {
    let Some(obj) = v.as_object_mut() else {
        return Err(Box::new(error_response(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
            "the body must be a JSON object",
        )));
    };
    match obj.get(field) {
        Some(Value::String(s)) if s != name => Err(Box::new(error_response(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
            &format!("{field}: `{s}` differs from the name in the path, `{name}`"),
        ))),
        _ => {
            obj.insert(field.into(), Value::String(name.into()));
            Ok(())
        }
    }
}

async fn put_alarm(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let tenant = caller.tenant;
    let v = match named_body(&body, "AlarmName", &name) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let def = match AlarmDefinition::from_value(v) {
        Ok(d) => d,
        Err(e) => return api_error(e.into()),
    };
    match alarms.put_alarm(&tenant, def).await {
        Ok(created) => json_ok(
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            json!({"AlarmName": name, "Created": created}),
        ),
        Err(e) => api_error(e),
    }
}

async fn get_alarm(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    let tenant = caller.tenant;
    match alarms.describe_alarm(&tenant, &name).await {
        Ok(v) => json_ok(StatusCode::OK, v),
        Err(e) => api_error(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListQuery {
    alarm_name_prefix: Option<String>,
    state_value: Option<String>,
}

async fn list_alarms(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Response {
    let tenant = caller.tenant;
    let state = match q.state_value.as_deref() {
        None => None,
        Some(s) => match AlarmState::parse(s) {
            Some(s) => Some(s),
            None => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameterValue",
                    &format!("StateValue: `{s}` is not OK, ALARM or INSUFFICIENT_DATA"),
                );
            }
        },
    };
    match alarms
        .describe_alarms(&tenant, q.alarm_name_prefix.as_deref(), state)
        .await
    {
        Ok(v) => json_ok(StatusCode::OK, json!({"MetricAlarms": v})),
        Err(e) => api_error(e),
    }
}

async fn delete_alarm(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    let tenant = caller.tenant;
    match alarms.delete_alarm(&tenant, &name).await {
        Ok(()) => json_ok(StatusCode::OK, json!({"AlarmName": name, "Deleted": true})),
        Err(e) => api_error(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct SetStateBody {
    state_value: String,
    state_reason: String,
    #[serde(default)]
    state_reason_data: Option<String>,
}

async fn set_state(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let tenant = caller.tenant;
    let b: SetStateBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValue",
                &e.to_string(),
            );
        }
    };
    let Some(state) = AlarmState::parse(&b.state_value) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
            &format!(
                "StateValue: `{}` is not OK, ALARM or INSUFFICIENT_DATA",
                b.state_value
            ),
        );
    };
    if b.state_reason.chars().count() > 1023 {
        return error_response(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
            "StateReason: at most 1023 characters",
        );
    }
    let data = match b.state_reason_data.as_deref() {
        None => Value::Null,
        Some(s) if s.len() > 4000 => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "InvalidFormat",
                "StateReasonData: at most 4000 characters",
            );
        }
        Some(s) => match serde_json::from_str(s) {
            Ok(v) => v,
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "InvalidFormat",
                    &format!("StateReasonData is not JSON: {e}"),
                );
            }
        },
    };
    match alarms
        .set_state(&tenant, &name, state, b.state_reason, data)
        .await
    {
        Ok(()) => json_ok(
            StatusCode::OK,
            json!({"AlarmName": name, "StateValue": state}),
        ),
        Err(e) => api_error(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HistoryQuery {
    history_item_type: Option<String>,
    max_records: Option<usize>,
}

async fn alarm_history(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Response {
    let tenant = caller.tenant;
    history(&alarms, &tenant, Some(&name), q).await
}

async fn all_history(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Query(q): Query<HistoryQuery>,
) -> Response {
    let tenant = caller.tenant;
    history(&alarms, &tenant, None, q).await
}

async fn history(
    alarms: &AlarmService,
    tenant: &str,
    name: Option<&str>,
    q: HistoryQuery,
) -> Response {
    let max = q.max_records.unwrap_or(100).clamp(1, 1000);
    if let Some(t) = &q.history_item_type
        && !["StateUpdate", "ConfigurationUpdate", "Action"].contains(&t.as_str())
    {
        return error_response(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
            &format!("HistoryItemType: `{t}` is not StateUpdate, ConfigurationUpdate or Action"),
        );
    }
    match alarms
        .history(tenant, name, q.history_item_type.as_deref(), max)
        .await
    {
        Ok(items) => json_ok(StatusCode::OK, json!({"AlarmHistoryItems": items})),
        Err(e) => api_error(e),
    }
}

async fn put_filter(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let tenant = caller.tenant;
    let v = match named_body(&body, "filterName", &name) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let f = match MetricFilter::from_value(v) {
        Ok(f) => f,
        Err(e) => return api_error(e.into()),
    };
    match alarms.put_filter(&tenant, &f).await {
        Ok(()) => json_ok(StatusCode::OK, json!({"filterName": name})),
        Err(e) => api_error(e),
    }
}

async fn list_filters(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
) -> Response {
    let tenant = caller.tenant;
    match alarms.list_filters(&tenant).await {
        Ok(v) => json_ok(StatusCode::OK, json!({"metricFilters": v})),
        Err(e) => api_error(e),
    }
}

async fn delete_filter(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    let tenant = caller.tenant;
    match alarms.delete_filter(&tenant, &name).await {
        Ok(()) => json_ok(StatusCode::OK, json!({"filterName": name, "Deleted": true})),
        Err(e) => api_error(e),
    }
}

async fn put_destination(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let tenant = caller.tenant;
    let v = match named_body(&body, "Name", &name) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let d: Destination = match serde_json::from_value(v) {
        Ok(d) => d,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValue",
                &e.to_string(),
            );
        }
    };
    match alarms.put_destination(&tenant, &d).await {
        Ok(()) => json_ok(StatusCode::OK, json!({"Name": name})),
        Err(e) => api_error(e),
    }
}

async fn list_destinations(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
) -> Response {
    let admin = caller.role.allows(Role::Admin);
    match alarms.list_destinations(&caller.tenant, admin).await {
        Ok(v) => json_ok(StatusCode::OK, json!({"Destinations": v})),
        Err(e) => api_error(e),
    }
}

async fn delete_destination(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    let tenant = caller.tenant;
    match alarms.delete_destination(&tenant, &name).await {
        Ok(()) => json_ok(StatusCode::OK, json!({"Name": name, "Deleted": true})),
        Err(e) => api_error(e),
    }
}
