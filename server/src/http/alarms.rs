//! The alarm API: `/v1/alarms`, `/v1/metric-filters` and `/v1/destinations`.
//!
//! Bodies are CloudWatch's own JSON (`PutMetricAlarm`, `PutMetricFilter` fields); refusals are
//! 400 with the field and the reason, unknown names 404. Every handler answers
//! `Result<Response, Answer>`: errors take the server's one mapping (`crate::error`).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::Deserialize;
use serde_json::{Value, json};
use watchtrail_query::alarm::{self, AlarmState, MetricFilter};

use crate::alarms::AlarmService;
use crate::alarms::webhook::Destination;
use crate::auth::Principal;
use crate::error::{Answer, definition_answer};
use watchtrail_storage::keys::Role;

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

fn invalid(message: impl std::fmt::Display) -> Answer {
    Answer::bad_request("InvalidParameterValue", message)
}

/// A handler's answer: its JSON, or the error every door answers the same way.
type Answered = Result<Response, Answer>;

fn body_json(body: &Bytes) -> Result<Value, Answer> {
    serde_json::from_slice(body)
        .map_err(|e| Answer::bad_request("InvalidJson", format!("the body is not JSON: {e}")))
}

/// The body as JSON with the path's name in its name field.
fn named_body(body: &Bytes, field: &str, name: &str) -> Result<Value, Answer> {
    let mut v = body_json(body)?;
    name_into(&mut v, field, name)?;
    Ok(v)
}

/// The path's name goes into the body's name field; a different one in the body is refused.
fn name_into(v: &mut Value, field: &str, name: &str) -> Result<(), Answer> {
    let Some(obj) = v.as_object_mut() else {
        return Err(invalid("the body must be a JSON object"));
    };
    match obj.get(field) {
        Some(Value::String(s)) if s != name => Err(invalid(format!(
            "{field}: `{s}` differs from the name in the path, `{name}`"
        ))
        .with_field(field)),
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
) -> Answered {
    let v = named_body(&body, "AlarmName", &name)?;
    let def = alarm::parse_definition(v).map_err(|e| definition_answer(&e))?;
    let created = alarms.put_alarm(&caller.tenant, def).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_ok(
        status,
        json!({"AlarmName": name, "Created": created}),
    ))
}

async fn get_alarm(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Answered {
    let v = alarms.describe_alarm(&caller.tenant, &name).await?;
    Ok(json_ok(StatusCode::OK, v))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListQuery {
    alarm_name_prefix: Option<String>,
    state_value: Option<String>,
}

fn state_of(field: &str, s: &str) -> Result<AlarmState, Answer> {
    AlarmState::parse(s).ok_or_else(|| {
        invalid(format!(
            "{field}: `{s}` is not OK, ALARM or INSUFFICIENT_DATA"
        ))
        .with_field(field)
    })
}

async fn list_alarms(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Answered {
    let state = match q.state_value.as_deref() {
        None => None,
        Some(s) => Some(state_of("StateValue", s)?),
    };
    let v = alarms
        .describe_alarms(&caller.tenant, q.alarm_name_prefix.as_deref(), state)
        .await?;
    Ok(json_ok(StatusCode::OK, json!({"MetricAlarms": v})))
}

async fn delete_alarm(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Answered {
    alarms.delete_alarm(&caller.tenant, &name).await?;
    Ok(json_ok(
        StatusCode::OK,
        json!({"AlarmName": name, "Deleted": true}),
    ))
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
) -> Answered {
    let b: SetStateBody = serde_json::from_slice(&body).map_err(invalid)?;
    let state = state_of("StateValue", &b.state_value)?;
    if b.state_reason.chars().count() > 1023 {
        return Err(invalid("StateReason: at most 1023 characters").with_field("StateReason"));
    }
    let data = match b.state_reason_data.as_deref() {
        None => Value::Null,
        Some(s) if s.len() > 4000 => {
            return Err(Answer::bad_request(
                "InvalidFormat",
                "StateReasonData: at most 4000 characters",
            )
            .with_field("StateReasonData"));
        }
        Some(s) => serde_json::from_str(s).map_err(|e| {
            Answer::bad_request("InvalidFormat", format!("StateReasonData is not JSON: {e}"))
                .with_field("StateReasonData")
        })?,
    };
    alarms
        .set_state(&caller.tenant, &name, state, b.state_reason, data)
        .await?;
    Ok(json_ok(
        StatusCode::OK,
        json!({"AlarmName": name, "StateValue": state}),
    ))
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
) -> Answered {
    history(&alarms, &caller.tenant, Some(&name), q).await
}

async fn all_history(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Query(q): Query<HistoryQuery>,
) -> Answered {
    history(&alarms, &caller.tenant, None, q).await
}

async fn history(
    alarms: &AlarmService,
    tenant: &str,
    name: Option<&str>,
    q: HistoryQuery,
) -> Answered {
    let max = q.max_records.unwrap_or(100).clamp(1, 1000);
    if let Some(t) = &q.history_item_type
        && !["StateUpdate", "ConfigurationUpdate", "Action"].contains(&t.as_str())
    {
        return Err(invalid(format!(
            "HistoryItemType: `{t}` is not StateUpdate, ConfigurationUpdate or Action"
        ))
        .with_field("HistoryItemType"));
    }
    let items = alarms
        .history(tenant, name, q.history_item_type.as_deref(), max)
        .await?;
    Ok(json_ok(StatusCode::OK, json!({"AlarmHistoryItems": items})))
}

async fn put_filter(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Answered {
    let v = named_body(&body, "filterName", &name)?;
    let f = MetricFilter::from_value(v).map_err(|e| definition_answer(&e))?;
    alarms.put_filter(&caller.tenant, &f).await?;
    Ok(json_ok(StatusCode::OK, json!({"filterName": name})))
}

async fn list_filters(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
) -> Answered {
    let v = alarms.list_filters(&caller.tenant).await?;
    Ok(json_ok(StatusCode::OK, json!({"metricFilters": v})))
}

async fn delete_filter(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Answered {
    alarms.delete_filter(&caller.tenant, &name).await?;
    Ok(json_ok(
        StatusCode::OK,
        json!({"filterName": name, "Deleted": true}),
    ))
}

async fn put_destination(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Answered {
    let v = named_body(&body, "Name", &name)?;
    let d: Destination = serde_json::from_value(v).map_err(invalid)?;
    alarms.put_destination(&caller.tenant, &d).await?;
    Ok(json_ok(StatusCode::OK, json!({"Name": name})))
}

async fn list_destinations(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
) -> Answered {
    let admin = caller.role.allows(Role::Admin);
    let v = alarms.list_destinations(&caller.tenant, admin).await?;
    Ok(json_ok(StatusCode::OK, json!({"Destinations": v})))
}

async fn delete_destination(
    State(alarms): State<Arc<AlarmService>>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Answered {
    alarms.delete_destination(&caller.tenant, &name).await?;
    Ok(json_ok(
        StatusCode::OK,
        json!({"Name": name, "Deleted": true}),
    ))
}
