//! Errors of the SQL engine. Storage errors convert into the variant of the same name, so
//! one [`ErrorClass`] sorts them all.

/// Errors from storage, tables and SQL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `--store` URL cannot be used.
    #[error("invalid store `{url}`: {reason}")]
    InvalidStore {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tenant name that is not allowed.
    #[error("{0}")]
    InvalidTenant(String),
    /// An error from the Delta table layer.
    #[error("delta table: {0}")]
    Delta(#[from] watchtrail_storage::deltalake::DeltaTableError),
    /// An error from object storage.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// An error from Arrow.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// An error from the Parquet writer or reader.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// An error from the SQL engine.
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// SQL that does not parse or plan, or fails on the data (the caller's mistake).
    #[error("{0}")]
    Sql(String),
    /// Storage that cannot do what Watchtrail needs of it (named in the message).
    #[error("{0}")]
    Unavailable(String),
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
            Error::Sql(_)
            | Error::Invalid(_)
            | Error::InvalidTenant(_)
            | Error::InvalidStore { .. } => ErrorClass::BadRequest,
            Error::ReadOnly(_) => ErrorClass::Forbidden,
            Error::MemoryLimit(_) => ErrorClass::ResourceExhausted,
            Error::Timeout(_) => ErrorClass::Timeout,
            Error::ObjectStore(_) | Error::Delta(_) | Error::Unavailable(_) => {
                ErrorClass::Unavailable
            }
            Error::DataFusion(e) => classify_datafusion(e),
            Error::Arrow(_) | Error::Parquet(_) | Error::Internal(_) => ErrorClass::Internal,
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

impl From<watchtrail_storage::Error> for Error {
    fn from(e: watchtrail_storage::Error) -> Self {
        use watchtrail_storage::Error as S;
        match e {
            S::InvalidStore { url, reason } => Error::InvalidStore { url, reason },
            S::InvalidTenant(t) => Error::InvalidTenant(t),
            S::Delta(e) => Error::Delta(e),
            S::ObjectStore(e) => Error::ObjectStore(e),
            S::Arrow(e) => Error::Arrow(e),
            S::Parquet(e) => Error::Parquet(e),
            S::DataFusion(e) => Error::DataFusion(e),
            S::Invalid(m) => Error::Invalid(m),
            S::Unavailable(m) => Error::Unavailable(m),
            S::Internal(m) => Error::Internal(m),
        }
    }
}

/// Result with the query crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
