//! Watchtrail's storage layout and SQL engine, shared by the server and the CLI (`watchtrail-cli`).
//!
//! # Layout
//! - [`tables`]: Arrow schemas of `metrics`, `logs` and `audit`, and tenant names: the on-disk contract.
//! - [`store`]: object storage by URL (`file://`, `s3://`, `memory://`) and Delta table commits.
//! - [`files`]: Parquet encoding (compression, encodings, sort order).
//! - [`metrics_file`]: the `metrics` table's files written straight from interned series.
//! - [`error`]: the crate's error type.
//! - [`fuzz`]: the mutation fuzzer the test suites run over every parser.
//! - [`keys`]: API keys (tenant, role, salted hash) and their store.
//! - [`pattern`], [`limits`], [`validate`], [`cloudtrail`], [`tables`], [`units`]: re-exported
//!   from `watchtrail-model`, where they live.
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

pub mod fuzz;

// The schemas, limits and parsers live in `watchtrail-model`; these paths stay for callers.
pub use watchtrail_model::{cloudtrail, limits, pattern, tables, units, validate};

pub mod alarm;
pub mod engine;
pub mod error;
pub mod files;
pub mod keys;
pub mod lifecycle;
pub mod metrics_file;
pub mod output;
pub mod store;

/// The Delta Lake crate this crate is built on, so users agree on one version.
pub use deltalake;
pub use error::{Error, Result};
