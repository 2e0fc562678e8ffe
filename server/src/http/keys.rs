//! API keys of the caller's tenant (admin keys only):
//!
//! - `POST /v1/keys` with `{"role": "read", "description": "..."}`: a new key; the answer holds
//!   its token, the only time it is ever shown;
//! - `GET /v1/keys`: the tenant's keys (ids, roles, descriptions; never a secret);
//! - `DELETE /v1/keys/{id}`: revokes a key at once on this server, on others within
//!   [`crate::auth::REFRESH`].
//!
//! A key of another tenant is answered as if it did not exist.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::{delete, get};
use serde_json::{Value, json};
use std::sync::Arc;
use watchtrail_storage::keys::{AwsMaster, MAX_DESCRIPTION, Role, access_key_id};

use super::alarms::json_ok;
use crate::auth::{Auth, Principal};
use crate::error::{Answer, error_response};

#[derive(Clone)]
struct KeysState {
    auth: Auth,
    master: Arc<AwsMaster>,
}

/// The routes.
pub fn router(auth: Auth, master: Arc<AwsMaster>) -> Router {
    Router::new()
        .route("/v1/keys", get(list).post(create))
        .route("/v1/keys/{id}", delete(revoke))
        .with_state(KeysState { auth, master })
}

fn invalid(field: &str, message: &str) -> Response {
    Answer::bad_request("InvalidParameterValue", format!("{field}: {message}"))
        .with_field(field)
        .into_response()
}

fn unavailable(e: watchtrail_storage::Error) -> Response {
    crate::error::storage_answer(e).into_response()
}

async fn create(
    State(KeysState { auth, master }): State<KeysState>,
    Extension(caller): Extension<Principal>,
    body: Bytes,
) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return invalid("body", "must be a JSON object"),
        Err(e) => return invalid("body", &format!("not JSON: {e}")),
    };
    if let Some(k) = v.as_object().and_then(|o| {
        o.keys()
            .find(|k| !["role", "description", "tenant", "awsCredentials"].contains(&k.as_str()))
    }) {
        return invalid(
            k,
            "unknown field; expected role, description, tenant, awsCredentials",
        );
    }
    let aws = match v.get("awsCredentials") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return invalid("awsCredentials", "must be true or false"),
    };
    let role = match v.get("role").map(|r| r.as_str().map(Role::parse)) {
        None => return invalid("role", "is required (ingest, read or admin)"),
        Some(Some(Ok(r))) => r,
        Some(Some(Err(e))) => return invalid("role", &e),
        Some(None) => return invalid("role", "must be a string"),
    };
    let description = match v.get("description") {
        None => "",
        Some(Value::String(s))
            if s.len() <= MAX_DESCRIPTION && !s.chars().any(char::is_control) =>
        {
            s.as_str()
        }
        Some(_) => {
            return invalid(
                "description",
                &format!("a string of at most {MAX_DESCRIPTION} bytes without control characters"),
            );
        }
    };
    match v.get("tenant") {
        None => {}
        Some(Value::String(t)) if *t == caller.tenant => {}
        Some(_) => {
            return error_response(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "tenant: an admin key makes keys of its own tenant only",
            );
        }
    }
    match auth
        .keys()
        .create_with(&caller.tenant, role, description, aws)
        .await
    {
        Ok((record, token)) => {
            tracing::info!(key_id = %record.key_id, tenant = %record.tenant, role = %record.role, aws, by = caller.key_id.as_deref().unwrap_or("-"), "API key created");
            let mut body = record.public();
            body["token"] = Value::String(token);
            if aws {
                // Shown once, like the token; recomputed from the master key when a signed
                // call arrives, never stored.
                body["awsAccessKeyId"] = Value::String(access_key_id(&record.key_id));
                body["awsSecretAccessKey"] = Value::String(master.secret_for(&record.key_id));
            }
            auth.remember(record);
            json_ok(StatusCode::OK, body)
        }
        Err(e) if e.class() == watchtrail_storage::ErrorClass::BadRequest => {
            invalid("description", &e.to_string())
        }
        Err(e) => unavailable(e),
    }
}

async fn list(
    State(KeysState { auth, .. }): State<KeysState>,
    Extension(caller): Extension<Principal>,
) -> Response {
    match auth.keys().list().await {
        Ok(keys) => {
            let keys: Vec<Value> = keys
                .iter()
                .filter(|k| k.tenant == caller.tenant)
                .map(watchtrail_storage::keys::KeyRecord::public)
                .collect();
            json_ok(StatusCode::OK, json!({ "keys": keys }))
        }
        Err(e) => unavailable(e),
    }
}

async fn revoke(
    State(KeysState { auth, .. }): State<KeysState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let not_found = || {
        error_response(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("key {id} does not exist"),
        )
    };
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return invalid("keyId", "16 hex digits");
    }
    match auth.keys().get(&id).await {
        Ok(Some(k)) if k.tenant == caller.tenant => {}
        Ok(_) => return not_found(),
        Err(e) => return unavailable(e),
    }
    match auth.keys().revoke(&id).await {
        Ok(true) => {
            auth.forget(&id);
            tracing::info!(key_id = %id, tenant = %caller.tenant, by = caller.key_id.as_deref().unwrap_or("-"), "API key revoked");
            json_ok(StatusCode::OK, json!({ "keyId": id, "revoked": true }))
        }
        Ok(false) => not_found(),
        Err(e) => unavailable(e),
    }
}
