//! Errors of the storage crate, and the classes every door maps errors by.

/// Errors from object storage, Delta tables, Parquet and the lifecycle.
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
    Delta(#[from] deltalake::DeltaTableError),
    /// An error from object storage.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// An error from Arrow.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// An error from the Parquet writer or reader.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// An error from DataFusion (the lifecycle sorts and rolls up with it).
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Storage that cannot do what Watchtrail needs of it (named in the message).
    #[error("{0}")]
    Unavailable(String),
    /// A request field that is not allowed (named in the message).
    #[error("{0}")]
    Invalid(String),
    /// A broken invariant.
    #[error("internal error: {0}")]
    Internal(String),
}

/// How a caller should treat an [`Error`]: what HTTP status and gRPC code it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request is wrong (bad SQL, bad tenant): 400 / INVALID_ARGUMENT.
    BadRequest,
    /// The statement is not allowed: 403 / PERMISSION_DENIED.
    Forbidden,
    /// A resource limit was hit: 429 / RESOURCE_EXHAUSTED.
    ResourceExhausted,
    /// The time limit was hit: 504 / DEADLINE_EXCEEDED.
    Timeout,
    /// Storage did not answer; retry later: 503 / UNAVAILABLE.
    Unavailable,
    /// A broken invariant: 500 / INTERNAL.
    Internal,
}

impl Error {
    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Invalid(_) | Error::InvalidTenant(_) | Error::InvalidStore { .. } => {
                ErrorClass::BadRequest
            }
            Error::ObjectStore(_) | Error::Delta(_) | Error::Unavailable(_) => {
                ErrorClass::Unavailable
            }
            Error::DataFusion(e) => classify_datafusion(e),
            Error::Arrow(_) | Error::Parquet(_) | Error::Internal(_) => ErrorClass::Internal,
        }
    }
}

/// The class of a DataFusion error: the caller's mistakes, limits and failures.
pub fn classify_datafusion(e: &datafusion::error::DataFusionError) -> ErrorClass {
    use datafusion::error::DataFusionError as D;
    // A limit hit inside a filter pushed into the Parquet decoder comes back as text inside a
    // Parquet or Arrow error; it is still the limit, not a failure of the server.
    if matches!(
        e.find_root(),
        D::ParquetError(_) | D::ArrowError(..) | D::External(_)
    ) {
        let text = e.to_string();
        if text.contains("ResourcesExhausted(") {
            return ErrorClass::ResourceExhausted;
        }
        // The caller's filter failed on the data (a division by zero, a bad cast).
        if text.contains("Error evaluating filter predicate") {
            return ErrorClass::BadRequest;
        }
    }
    match e.find_root() {
        D::ResourcesExhausted(_) => ErrorClass::ResourceExhausted,
        D::SQL(..) | D::Plan(_) | D::SchemaError(..) | D::NotImplemented(_) | D::Execution(_) => {
            ErrorClass::BadRequest
        }
        D::ArrowError(e, _) => match e.as_ref() {
            arrow::error::ArrowError::CastError(_)
            | arrow::error::ArrowError::ParseError(_)
            | arrow::error::ArrowError::InvalidArgumentError(_)
            | arrow::error::ArrowError::ComputeError(_)
            | arrow::error::ArrowError::DivideByZero
            | arrow::error::ArrowError::ArithmeticOverflow(_) => ErrorClass::BadRequest,
            _ => ErrorClass::Internal,
        },
        D::ObjectStore(_) | D::IoError(_) => ErrorClass::Unavailable,
        _ => ErrorClass::Internal,
    }
}

/// Result with the storage crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
