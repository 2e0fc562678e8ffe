//! Watchtrail's SQL engine: read-only SQL over a tenant's `metrics`, `logs` and `audit` tables
//! (committed files from `watchtrail-storage` plus the server's rows not yet committed), with the
//! bounds that keep one caller from hurting the others.
//!
//! # Contents
//! - [`engine`]: planning and running statements, statement bounds, guarded functions, the
//!   shared memory budget, table snapshots and providers.
//! - [`alarm`]: alarm definitions and metric filters checked against the engine (the types and
//!   the state machine live in `watchtrail-model`).
//! - [`cloudwatch`]: CloudWatch's metric reads (`ListMetrics`, `GetMetricStatistics`) as SQL,
//!   with CloudWatch's rules; the CLI and the server's AWS API share them.
//! - [`output`]: answers as tables, JSON, CSV and Arrow IPC.
//! - [`error`]: the engine's error type; storage errors convert into it.
//! - [`cloudtrail`], [`limits`], [`pattern`], [`tables`], [`units`], [`validate`]: re-exported
//!   from `watchtrail-model`, where they live.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> watchtrail_query::Result<()> {
//! use watchtrail_query::engine::{Engine, EngineConfig};
//! use watchtrail_storage::store::Storage;
//! let storage = Storage::from_url("file:///var/lib/watchtrail")?;
//! let engine = Engine::for_store(&storage, EngineConfig::default());
//! let answer = engine.collect("default", "SELECT count(*) FROM audit").await?;
//! println!("{} batches", answer.batches.len());
//! # Ok(()) }
//! ```

// The schemas, limits and parsers live in `watchtrail-model`; these paths stay for callers.
pub use watchtrail_model::{cloudtrail, limits, pattern, tables, units, validate};

pub mod alarm;
pub mod cloudwatch;
pub mod engine;
pub mod error;
pub mod output;

pub use error::{Error, Result};
