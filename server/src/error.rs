//! Server errors, and the one place where any failure becomes an answer: the gRPC status, the
//! HTTP status and JSON body, and the `errorCode` the caller's audit trail records. Every door
//! (gRPC ingest and query, the HTTP API, the agent intake) answers through [`Answer`], so one
//! failure reads the same wherever it happened, and a failure of the server itself is logged
//! in full and answered without its details on all of them.

use std::fmt;
use std::path::Path;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tonic::Code;
use tracing::error;
use watchtrail_query::error::ErrorClass;

use crate::auth::Denied;

/// Errors of the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed request: the field path (with indexes) and what is wrong.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// Path of the offending field, e.g. `metric_data[3].dimensions[2].value`.
        field: String,
        /// The rule that was broken.
        reason: String,
    },
    /// A request over a size or count limit.
    #[error("{0}")]
    TooLarge(String),
    /// A transient refusal: the client should retry later.
    #[error("{0}")]
    Unavailable(String),
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Storage, table or SQL error.
    #[error(transparent)]
    Query(#[from] watchtrail_query::Error),
    /// A broken invariant or an unexpected failure.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The error code Watchtrail's own audit trail records for this error.
    pub fn audit_code(&self) -> &'static str {
        self.answer().code
    }

    /// How this error is answered on every door.
    pub fn answer(&self) -> Answer {
        match self {
            Error::InvalidArgument { field, .. } => {
                Answer::bad_request("ValidationException", self).with_field(field)
            }
            Error::TooLarge(_) => Answer::new(
                Code::ResourceExhausted,
                StatusCode::PAYLOAD_TOO_LARGE,
                "LimitExceededException",
                self,
            ),
            Error::Unavailable(_) => Answer::new(
                Code::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                self,
            ),
            Error::Query(q) => query_answer(q),
            Error::Io { .. } | Error::Internal(_) => Answer::internal(self),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Result with the server's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<watchtrail_query::validate::Refused> for Error {
    fn from(r: watchtrail_query::validate::Refused) -> Self {
        use watchtrail_query::validate::Refused;
        match r {
            Refused::Invalid { field, reason } => Error::InvalidArgument { field, reason },
            Refused::TooLarge(m) => Error::TooLarge(m),
        }
    }
}

impl From<watchtrail_storage::Error> for Error {
    fn from(e: watchtrail_storage::Error) -> Self {
        Error::Query(e.into())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        e.answer().status()
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.answer().into_response()
    }
}

/// What a failed call answers: the same on gRPC, on HTTP and in the caller's audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The gRPC status code.
    pub grpc: Code,
    /// The HTTP status.
    pub http: StatusCode,
    /// The error code of the HTTP body and of the audit event (`errorCode`).
    pub code: &'static str,
    /// What the caller is told (for a failure of the server: only that it was one).
    pub message: String,
    /// The request field at fault, when one is.
    pub field: Option<String>,
}

/// What the caller is told about a failure of the server itself.
pub const INTERNAL_MESSAGE: &str = "internal error; see the server log";

impl Answer {
    /// An answer with `message` shown to the caller.
    pub fn new(
        grpc: Code,
        http: StatusCode,
        code: &'static str,
        message: impl fmt::Display,
    ) -> Self {
        Self {
            grpc,
            http,
            code,
            message: message.to_string(),
            field: None,
        }
    }

    /// The caller's mistake: INVALID_ARGUMENT / 400.
    pub fn bad_request(code: &'static str, message: impl fmt::Display) -> Self {
        Self::new(
            Code::InvalidArgument,
            StatusCode::BAD_REQUEST,
            code,
            message,
        )
    }

    /// No such resource: NOT_FOUND / 404.
    pub fn not_found(message: impl fmt::Display) -> Self {
        Self::new(
            Code::NotFound,
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            message,
        )
    }

    /// A failure of the server: logged in full here, answered without its details.
    pub fn internal(cause: impl fmt::Display) -> Self {
        error!(error = %cause, "internal error");
        Self::new(
            Code::Internal,
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            INTERNAL_MESSAGE,
        )
    }

    /// The tenant's query slots are all taken (a gate refusal, the same on both doors).
    pub fn too_many_queries(why: impl fmt::Display) -> Self {
        Self::new(
            Code::ResourceExhausted,
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyQueries",
            why,
        )
    }

    /// A query not run because its start could not be written to the caller's trail.
    pub fn start_not_recorded(why: impl fmt::Display) -> Self {
        Self::new(
            Code::Unavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            "AuditTrailUnavailable",
            format!("the query was not run because its start could not be recorded: {why}"),
        )
    }

    /// The same answer naming the field at fault.
    pub fn with_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_string());
        self
    }

    /// An answer of the HTTP API named by its HTTP status (the gRPC code that status means).
    pub fn http(http: StatusCode, code: &'static str, message: impl fmt::Display) -> Self {
        let grpc = match http {
            StatusCode::BAD_REQUEST => Code::InvalidArgument,
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::CONFLICT => Code::AlreadyExists,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => {
                Code::ResourceExhausted
            }
            StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            StatusCode::GATEWAY_TIMEOUT => Code::DeadlineExceeded,
            s if s.is_server_error() => Code::Internal,
            _ => Code::Unknown,
        };
        Self::new(grpc, http, code, message)
    }

    /// The gRPC status.
    pub fn status(&self) -> tonic::Status {
        tonic::Status::new(self.grpc, self.message.clone())
    }
}

impl IntoResponse for Answer {
    /// `{"error": {"code": ..., "message": ..., "field": ...}}` with the HTTP status; the code
    /// also goes into the response's extensions for the audit trail.
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(f) = &self.field {
            error["field"] = serde_json::Value::String(f.clone());
        }
        let body = serde_json::json!({ "error": error });
        let mut r = (
            self.http,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if self.http == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r.extensions_mut()
            .insert(crate::http::ErrorCode(self.code.to_string()));
        r
    }
}

/// An HTTP error answer: `{"error": {"code": ..., "message": ...}}`.
pub fn error_response(status: StatusCode, code: &'static str, message: &str) -> Response {
    Answer::http(status, code, message).into_response()
}

/// How a storage or SQL error is answered, by its class.
pub fn query_answer(e: &watchtrail_query::Error) -> Answer {
    match e.class() {
        ErrorClass::BadRequest => Answer::bad_request("InvalidQuery", e),
        ErrorClass::Forbidden => {
            Answer::new(Code::PermissionDenied, StatusCode::FORBIDDEN, "ReadOnly", e)
        }
        ErrorClass::ResourceExhausted => Answer::new(
            Code::ResourceExhausted,
            StatusCode::TOO_MANY_REQUESTS,
            "QueryMemoryLimitExceeded",
            e,
        ),
        ErrorClass::Timeout => Answer::new(
            Code::DeadlineExceeded,
            StatusCode::GATEWAY_TIMEOUT,
            "QueryTimeout",
            e,
        ),
        ErrorClass::Unavailable => Answer::new(
            Code::Unavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            "StorageUnavailable",
            e,
        ),
        ErrorClass::Internal => Answer::internal(e),
    }
}

/// How a storage error is answered (it is a query error's storage part).
pub fn storage_answer(e: watchtrail_storage::Error) -> Answer {
    query_answer(&e.into())
}

/// How a refused authentication or authorization is answered.
pub fn denied_answer(d: &Denied) -> Answer {
    match d {
        Denied::Unauthenticated(_) => Answer::new(
            Code::Unauthenticated,
            StatusCode::UNAUTHORIZED,
            "UnrecognizedClient",
            d,
        ),
        Denied::Forbidden(_) => Answer::new(
            Code::PermissionDenied,
            StatusCode::FORBIDDEN,
            "AccessDenied",
            d,
        ),
        Denied::Invalid(_) => Answer::bad_request("InvalidParameterValue", d),
        Denied::Unavailable(_) => Answer::new(
            Code::Unavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            "StorageUnavailable",
            d,
        ),
    }
}

/// How a refused definition (alarm, metric filter, destination) is answered: 400 naming the
/// field.
pub fn definition_answer(d: &watchtrail_query::alarm::DefinitionError) -> Answer {
    Answer::bad_request("InvalidParameterValue", d).with_field(&d.field)
}

impl From<crate::alarms::ApiError> for Answer {
    fn from(e: crate::alarms::ApiError) -> Self {
        use crate::alarms::ApiError;
        match e {
            ApiError::Invalid(d) => definition_answer(&d),
            ApiError::NotFound(m) => Answer::not_found(m),
            ApiError::Server(e) => e.answer(),
        }
    }
}

impl From<Error> for Answer {
    fn from(e: Error) -> Self {
        e.answer()
    }
}

/// The error code of an answer already built, for the trail: the one it carries, or one
/// derived from its status.
pub fn code_of(r: &Response) -> Option<String> {
    let status = r.status();
    if status.is_success() {
        return None;
    }
    if let Some(crate::http::ErrorCode(c)) = r.extensions().get::<crate::http::ErrorCode>() {
        return Some(c.clone());
    }
    Some(
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "AccessDenied",
            StatusCode::NOT_FOUND => "ResourceNotFoundException",
            StatusCode::BAD_REQUEST => "ValidationException",
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => {
                "LimitExceededException"
            }
            s if s.is_server_error() => "InternalFailure",
            _ => "ClientError",
        }
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_reads_the_same_on_every_door() {
        let e = Error::InvalidArgument {
            field: "metric_data[3].unit".into(),
            reason: "not a CloudWatch unit".into(),
        };
        let a = e.answer();
        assert_eq!(a.grpc, Code::InvalidArgument);
        assert_eq!(a.http, StatusCode::BAD_REQUEST);
        assert_eq!(e.audit_code(), a.code);
        assert_eq!(tonic::Status::from(e).code(), Code::InvalidArgument);
        let r = a.clone().into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(code_of(&r).as_deref(), Some(a.code));
    }

    #[test]
    fn internal_failures_are_masked_on_every_door() {
        let secret = "bucket credentials at /etc/secret";
        for e in [
            Error::Internal(secret.into()),
            Error::Query(watchtrail_query::Error::Internal(secret.into())),
            Error::io(Path::new(secret), std::io::Error::other("boom")),
        ] {
            let a = e.answer();
            assert_eq!(a.code, "InternalFailure");
            assert_eq!(a.message, INTERNAL_MESSAGE);
            assert!(!tonic::Status::from(e).message().contains("secret"));
        }
    }

    #[test]
    fn storage_errors_answer_by_their_class() {
        let e = watchtrail_storage::Error::InvalidTenant("tenant: bad".into());
        assert_eq!(storage_answer(e).http, StatusCode::BAD_REQUEST);
        let q = watchtrail_query::Error::ReadOnly("no DROP".into());
        assert_eq!(Error::Query(q).answer().code, "ReadOnly");
        let d = Denied::Unauthenticated("authorization: missing".into());
        let r = denied_answer(&d).into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
