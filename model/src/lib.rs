//! `watchtrail-model`: what Watchtrail's data is and what is allowed, with no I/O and no SQL
//! engine, so that the server, the agent, the CLI and the fuzz targets share one definition of
//! each rule instead of restating it.
//!
//! The cargo-fuzz targets in `fuzz/` build against this crate alone.
//!
//! # Layout
//! - [`tables`]: Arrow schemas of the tables and tenant names: the on-disk contract.
//! - [`limits`] and [`validate`]: the CloudWatch/CloudTrail limits every ingest request is held
//!   to, and the canonical form a request takes once it passes.
//! - [`cloudtrail`]: CloudTrail event JSON into rows shaped like the `audit` table.
//! - [`pattern`]: CloudWatch Logs filter patterns (metric filters).
//! - [`alarm`]: alarm definitions and metric filters in CloudWatch's field names, their
//!   validation, and the state machine (OK / ALARM / INSUFFICIENT_DATA).
//! - [`error`]: [`FieldError`], the one shape of "this field breaks this rule".
//! - [`units`]: the CloudWatch units, and the one grammar of sizes (`64K`, `256MiB`) and
//!   durations (`250ms`, `1.5s`, `15d`) that every flag and configuration file takes.
//!
//! # Example
//! ```
//! use watchtrail_model::units::{parse_bytes, parse_duration};
//! assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
//! assert_eq!(parse_duration("1.5s"), Ok(std::time::Duration::from_millis(1500)));
//! ```

pub mod alarm;
pub mod cloudtrail;
pub mod error;
pub mod limits;
pub mod pattern;
pub mod tables;
pub mod units;
pub mod validate;

pub use error::FieldError;
