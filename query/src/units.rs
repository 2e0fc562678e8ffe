//! Sizes, durations and the CloudWatch units: defined once in [`watchtrail_model::units`]
//! (one grammar for every flag, configuration file and door) and re-exported here for the
//! crates that reach them through `watchtrail-query`.

pub use watchtrail_model::units::{UNITS, parse_bytes, parse_duration};
