//! `watchtrail-model`: what Watchtrail's data is and what is allowed, with no I/O and no SQL
//! engine, so that the server, the agent, the CLI and the fuzz targets share one definition of
//! each rule instead of restating it.
//!
//! This crate is where the restructure (one room per responsibility) starts; today it holds:
//!
//! # Layout
//! - [`units`]: the CloudWatch units, and the one grammar of sizes (`64K`, `256MiB`) and
//!   durations (`250ms`, `1.5s`, `15d`) that every flag and configuration file takes.
//!
//! # Example
//! ```
//! use watchtrail_model::units::{parse_bytes, parse_duration};
//! assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
//! assert_eq!(parse_duration("1.5s"), Ok(std::time::Duration::from_millis(1500)));
//! ```

pub mod units;
