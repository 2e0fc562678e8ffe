//! Watchtrail's tables, storage layout and SQL engine, shared by the server and the CLI.
//!
//! # Layout
//! - [`tables`]: Arrow schemas of `metrics`, `logs` and `audit`, and tenant names: the on-disk contract.
//! - [`store`]: object storage by URL (`file://`, `s3://`, `memory://`) and Delta table commits.
//! - [`files`]: Parquet encoding (compression, encodings, sort order).
//! - [`metrics_file`]: the `metrics` table's files written straight from interned series.
//! - [`error`]: the crate's error type.
//! - [`fuzz`]: the mutation fuzzer the test suites run over every parser.
//! - [`keys`]: API keys (tenant, role, salted hash) and their store.
//! - [`pattern`]: CloudWatch Logs filter patterns (metric filters).
//! - [`limits`] and [`validate`]: the CloudWatch/CloudTrail limits every ingest request is held
//!   to, and the canonical form a request takes once it passes.
//! - [`cloudtrail`]: CloudTrail event JSON → rows shaped like the `audit` table.
//!
//! # Features
//! `engine` (default) brings the SQL engine, storage and the CLI. Without it the crate is only
//! the parsers and rules above plus [`tables`], [`units`] and [`fuzz`]: small enough for the
//! instrumented builds of the cargo-fuzz targets in `fuzz/`.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> watchtrail_query::Result<()> {
//! use watchtrail_query::{store::Storage, tables::TableKind};
//! let storage = Storage::from_url("file:///var/lib/watchtrail")?;
//! let table = storage.open_table("default", TableKind::Audit).await?;
//! println!("audit table version: {:?}", table.and_then(|t| t.version()));
//! # Ok(()) }
//! ```

pub mod cloudtrail;
pub mod fuzz;
pub mod limits;
pub mod pattern;
pub mod tables;
pub mod units;
pub mod validate;

#[cfg(feature = "engine")]
pub mod alarm;
#[cfg(feature = "engine")]
pub mod cli;
#[cfg(feature = "engine")]
pub mod engine;
#[cfg(feature = "engine")]
pub mod error;
#[cfg(feature = "engine")]
pub mod files;
#[cfg(feature = "engine")]
pub mod keys;
#[cfg(feature = "engine")]
pub mod lifecycle;
#[cfg(feature = "engine")]
pub mod metrics_file;
#[cfg(feature = "engine")]
pub mod output;
#[cfg(feature = "engine")]
pub mod store;

/// The Delta Lake crate this crate is built on, so users agree on one version.
#[cfg(feature = "engine")]
pub use deltalake;
#[cfg(feature = "engine")]
pub use error::{Error, Result};
