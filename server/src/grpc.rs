//! gRPC services.
//!
//! # Layout
//! - [`ingest`]: the `watchtrail.v1.IngestService` implementation.
//! - [`query`]: the `watchtrail.v1.QueryService` implementation.

pub mod ingest;
pub mod query;
