//! gRPC services.
//!
//! # Layout
//! - [`ingest`]: the `watchtrail.v1.IngestService` implementation.
//! - [`query`]: the `watchtrail.v1.QueryService` implementation.

pub mod ingest;
pub mod query;

use tonic::Request;
use watchtrail_proto::{DEFAULT_TENANT, TENANT_HEADER};

/// The tenant a request is for: the `x-watchtrail-tenant` header, else `default`.
///
/// # Errors
/// `INVALID_ARGUMENT` for a tenant name that is not allowed.
pub fn tenant_of<T>(req: &Request<T>) -> Result<String, tonic::Status> {
    let tenant = match req.metadata().get(TENANT_HEADER) {
        None => DEFAULT_TENANT.to_string(),
        Some(v) => v
            .to_str()
            .map_err(|_| {
                tonic::Status::invalid_argument(format!("{TENANT_HEADER}: must be ASCII"))
            })?
            .to_string(),
    };
    watchtrail_query::tables::validate_tenant(&tenant)
        .map_err(|e| tonic::Status::invalid_argument(format!("{TENANT_HEADER}: {e}")))?;
    Ok(tenant)
}
