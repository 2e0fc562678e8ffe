//! Server errors and their one mapping to gRPC status codes.

use std::path::Path;

use tracing::error;

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
    /// Storage or table error.
    #[error(transparent)]
    Query(#[from] watchtrail_query::Error),
    /// A broken invariant or an unexpected failure.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The error code Watchtrail's own audit trail records for this error.
    pub fn audit_code(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => "ValidationException",
            Error::TooLarge(_) => "LimitExceededException",
            Error::Unavailable(_) => "ServiceUnavailable",
            Error::Query(_) | Error::Io { .. } | Error::Internal(_) => "InternalFailure",
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

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument { .. } => tonic::Status::invalid_argument(e.to_string()),
            Error::TooLarge(_) => tonic::Status::resource_exhausted(e.to_string()),
            Error::Unavailable(_) => tonic::Status::unavailable(e.to_string()),
            Error::Query(q) => crate::grpc::query::query_status(&q),
            Error::Io { .. } | Error::Internal(_) => {
                error!(error = %e, "internal error");
                tonic::Status::internal("internal error; see the server log")
            }
        }
    }
}
