//! The Watchtrail host agent (in progress): host metrics from `/proc`, named as the CloudWatch
//! agent names them. Log files, audit intake and shipping are still to come.
//!
//! # Layout
//! - [`host`]: `/proc` and `statvfs` samples, and the `CWAgent` metrics computed from two of them.

pub mod host;
