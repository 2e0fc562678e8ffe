//! Watchtrail's tables, storage layout and SQL engine, shared by the server and the CLI.
//!
//! # Layout
//! - [`tables`]: Arrow schemas of `metrics`, `logs` and `audit`, and tenant names: the on-disk contract.
//! - [`store`]: object storage by URL (`file://`, `s3://`, `memory://`) and Delta table commits.
//! - [`files`]: Parquet encoding (compression, encodings, sort order).
//! - [`error`]: the crate's error type.
//! - [`fuzz`]: the mutation fuzzer the test suites run over every parser.
//! - [`keys`]: API keys (tenant, role, salted hash) and their store.
//! - [`pattern`]: CloudWatch Logs filter patterns (metric filters).
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

pub mod error;
pub mod files;
pub mod fuzz;
pub mod keys;
pub mod lifecycle;
pub mod store;
pub mod tables;
pub mod units;

/// The Delta Lake crate this crate is built on, so users agree on one version.
pub use deltalake;
pub use error::{Error, Result};

pub mod alarm;
pub mod cli;
pub mod engine;
pub mod output;
pub mod pattern;
