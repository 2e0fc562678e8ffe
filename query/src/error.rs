//! Errors of the query crate.

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
    /// An error from the SQL engine.
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// A broken invariant.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result with the query crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
