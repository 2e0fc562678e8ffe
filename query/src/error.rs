//! Errors of the SQL engine. A storage error is carried whole ([`Error::Storage`]) and keeps
//! its class, so one [`ErrorClass`] sorts them all.

/// Errors from storage, tables and SQL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Storage: the store, the tables, their files (classed by the storage crate).
    #[error(transparent)]
    Storage(#[from] watchtrail_storage::Error),
    /// An error from Arrow while shaping an answer.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// An error from the SQL engine.
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// SQL that does not parse or plan, or fails on the data (the caller's mistake).
    #[error("{0}")]
    Sql(String),
    /// A request field that is not allowed (named in the message).
    #[error("{0}")]
    Invalid(String),
    /// SQL that would change something or reach outside the caller's tables.
    #[error("{0}")]
    ReadOnly(String),
    /// A query that needed more memory than its limit allows.
    #[error("query memory limit exceeded: {0}")]
    MemoryLimit(String),
    /// A query that ran past its time limit.
    #[error("query timed out after {0:?}; narrow the time range or raise --query-timeout")]
    Timeout(std::time::Duration),
    /// A broken invariant.
    #[error("internal error: {0}")]
    Internal(String),
}

pub use watchtrail_storage::error::{ErrorClass, classify_datafusion};

impl Error {
    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Storage(e) => e.class(),
            Error::Sql(_) | Error::Invalid(_) => ErrorClass::BadRequest,
            Error::ReadOnly(_) => ErrorClass::Forbidden,
            Error::MemoryLimit(_) => ErrorClass::ResourceExhausted,
            Error::Timeout(_) => ErrorClass::Timeout,
            Error::DataFusion(e) => classify_datafusion(e),
            Error::Arrow(_) | Error::Internal(_) => ErrorClass::Internal,
        }
    }

    /// Sorts a DataFusion error into the caller's mistakes, limits and failures.
    pub fn from_datafusion(e: datafusion::error::DataFusionError) -> Self {
        match classify_datafusion(&e) {
            ErrorClass::BadRequest => Error::Sql(e.strip_backtrace()),
            ErrorClass::ResourceExhausted => Error::MemoryLimit(e.find_root().strip_backtrace()),
            _ => Error::DataFusion(e),
        }
    }
}

/// Result with the query crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
