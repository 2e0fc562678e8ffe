//! Log groups and their retention, as CloudWatch Logs' `DescribeLogGroups`,
//! `PutRetentionPolicy` and `DeleteRetentionPolicy`:
//!
//! - `GET /v1/log-groups[?prefix=P]`: the groups seen in `logs` and those with a policy;
//! - `PUT /v1/log-groups/{name}/retention` with `{"retentionInDays": 30}`;
//! - `DELETE /v1/log-groups/{name}/retention`.
//!
//! Policies are control documents (`<tenant>/_control/log-retention/`); the lifecycle task
//! applies them at its next pass.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, put};
use serde::Deserialize;
use serde_json::{Value, json};
use watchtrail_query::engine::Engine;
use watchtrail_storage::lifecycle::RETENTION_DAYS;

use super::alarms::json_ok;
use crate::auth::Principal;
use crate::error::{Answer, error_response};
use crate::lifecycle::RetentionPolicy;
use watchtrail_storage::control::{ControlStore, Doc};

#[derive(Clone)]
struct LogGroupsState {
    control: ControlStore,
    engine: Engine,
}

/// The routes.
pub fn router(control: ControlStore, engine: Engine) -> Router {
    Router::new()
        .route("/v1/log-groups", get(describe))
        .route(
            "/v1/log-groups/{name}/retention",
            put(put_policy).delete(delete_policy),
        )
        .with_state(LogGroupsState { control, engine })
}

fn invalid(field: &str, message: &str) -> Response {
    Answer::bad_request("InvalidParameterException", format!("{field}: {message}"))
        .with_field(field)
        .into_response()
}

fn storage_down(e: watchtrail_storage::Error) -> Response {
    crate::error::storage_answer(e).into_response()
}

fn check_name(name: &str) -> Result<(), Box<Response>> {
    crate::ingest::validate::check_log_group("logGroupName", name).map_err(|e| {
        Box::new(error_response(
            StatusCode::BAD_REQUEST,
            "InvalidParameterException",
            &e.to_string(),
        ))
    })
}

async fn put_policy(
    State(s): State<LogGroupsState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let tenant = caller.tenant;
    if let Err(r) = check_name(&name) {
        return *r;
    }
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return invalid("body", &format!("not JSON: {e}")),
    };
    let days = match v.get("retentionInDays") {
        None => return invalid("retentionInDays", "is required"),
        Some(d) => match d.as_u64().and_then(|d| u32::try_from(d).ok()) {
            Some(d) if RETENTION_DAYS.contains(&d) => d,
            _ => {
                return invalid(
                    "retentionInDays",
                    &format!("{d} is not one of {RETENTION_DAYS:?}"),
                );
            }
        },
    };
    if let Some(other) = v.get("logGroupName").and_then(Value::as_str)
        && other != name
    {
        return invalid(
            "logGroupName",
            &format!("`{other}` differs from the name in the path, `{name}`"),
        );
    }
    let policy = RetentionPolicy {
        log_group_name: name.clone(),
        retention_in_days: days,
    };
    match s
        .control
        .put(&tenant, Doc::LogRetention, &name, &policy)
        .await
    {
        Ok(()) => json_ok(StatusCode::OK, json!(policy)),
        Err(e) => storage_down(e),
    }
}

async fn delete_policy(
    State(s): State<LogGroupsState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    let tenant = caller.tenant;
    match s.control.delete(&tenant, Doc::LogRetention, &name).await {
        Ok(true) => json_ok(
            StatusCode::OK,
            json!({"logGroupName": name, "Deleted": true}),
        ),
        Ok(false) => error_response(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("log group `{name}` has no retention policy"),
        ),
        Err(e) => storage_down(e),
    }
}

#[derive(Debug, Deserialize)]
struct DescribeQuery {
    prefix: Option<String>,
}

async fn describe(
    State(s): State<LogGroupsState>,
    Extension(caller): Extension<Principal>,
    Query(q): Query<DescribeQuery>,
) -> Response {
    let prefix = q.prefix.unwrap_or_default();
    let groups =
        match crate::log_groups::describe(&s.control, &s.engine, &caller.tenant, &prefix).await {
            Ok(g) => g,
            Err(e) => return e.answer().into_response(),
        };
    let list: Vec<Value> = groups
        .into_iter()
        .map(|g| {
            let mut v = json!({"logGroupName": g.name});
            if let Some(t) = g.first_event_ms {
                v["firstEventTimestamp"] = json!(t);
            }
            if let Some(n) = g.stored_events {
                v["storedEvents"] = json!(n);
            }
            if let Some(d) = g.retention_in_days {
                v["retentionInDays"] = json!(d);
            }
            v
        })
        .collect();
    json_ok(StatusCode::OK, json!({"logGroups": list}))
}
