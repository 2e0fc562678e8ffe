//! The Watchtrail wire contract: the `watchtrail.v1` protobuf messages and gRPC services.
//!
//! # Layout
//! - [`v1`]: generated messages, the `IngestService` client and server.
//!
//! Everything on the wire is defined in `protos/watchtrail/v1/*.proto`; this crate only compiles
//! it and re-exports [`tonic`] and [`prost`] so that users agree on one version of each.

pub use prost;
pub use tonic;
pub use tonic_prost;

/// Messages and services of the `watchtrail.v1` package.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    clippy::clone_on_ref_ptr,
    clippy::pedantic
)]
pub mod v1 {
    tonic::include_proto!("watchtrail.v1");
}

/// The gRPC metadata key that selects the tenant (until API keys bind one).
pub const TENANT_HEADER: &str = "x-watchtrail-tenant";

/// The tenant used when a request names none.
pub const DEFAULT_TENANT: &str = "default";
