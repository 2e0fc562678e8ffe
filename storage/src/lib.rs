//! Where Watchtrail's data lives: object storage, the Delta tables on it, the Parquet files in
//! them, and everything that writes or rewrites those files. No SQL here; the engine
//! (`watchtrail-query`) reads what this crate writes.
//!
//! # Contents
//! - [`store`]: object storage by URL (`file://`, `s3://`, `memory://`), typed table paths,
//!   opening and creating Delta tables.
//! - [`write`](mod@write): the one path every file takes: encode, put under the table, commit to the log
//!   (flush, compaction, rollups and tools all use it).
//! - [`files`]: Parquet writer settings, storage order and windows, and the general encoder.
//! - [`metrics_file`]: the `metrics` table's series-aware encoder; its hand-written dictionary
//!   pages are in a file of their own, `metrics_file/dict_pages.rs`.
//! - [`table_files`]: a table version's committed files with their recorded statistics.
//! - [`control`]: control documents (alarms, filters, destinations, outbox, log-group
//!   retention) and leases under `_control/`.
//! - [`keys`]: API keys (tenant, role, salted hash) under `_control/keys/`.
//! - [`lifecycle`]: compaction, resolution tiers (rollups), retention and vacuum.
//! - [`error`]: the crate's error type and the [`ErrorClass`] every door maps errors by.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> watchtrail_storage::Result<()> {
//! use watchtrail_model::tables::TableKind;
//! use watchtrail_storage::store::Storage;
//! let storage = Storage::from_url("file:///var/lib/watchtrail")?;
//! let table = storage.open_table("default", TableKind::Audit).await?;
//! println!("audit table version: {:?}", table.and_then(|t| t.version()));
//! # Ok(()) }
//! ```

pub mod control;
pub mod error;
pub mod files;
pub mod integrity;
pub mod keys;
pub mod lifecycle;
pub mod metrics_file;
pub mod store;
pub mod table_files;
pub mod write;

/// The Delta Lake crate this crate is built on, so users agree on one version.
pub use deltalake;
pub use error::{Error, ErrorClass, Result};
