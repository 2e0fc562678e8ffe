//! `watchtrail.v1.IngestService`: batched, idempotent ingest of metrics, logs and audit events.

use tonic::{Request, Response, Status};
use tracing::instrument;
use watchtrail_proto::v1::ingest_service_server::IngestService;
use watchtrail_proto::v1::{
    IngestResponse, PutAuditEventsRequest, PutLogEventsRequest, PutMetricDataRequest,
};

use super::tenant_of;
use crate::ingest::Ingest;

/// The ingest service over an [`Ingest`] front.
#[derive(Debug, Clone)]
pub struct IngestServiceImpl {
    ingest: Ingest,
}

impl IngestServiceImpl {
    /// A service that writes through `ingest`.
    pub fn new(ingest: Ingest) -> Self {
        Self { ingest }
    }
}

#[tonic::async_trait]
impl IngestService for IngestServiceImpl {
    #[instrument(skip_all, fields(tenant, entries = req.get_ref().metric_data.len() + req.get_ref().series.len()))]
    async fn put_metric_data(
        &self,
        req: Request<PutMetricDataRequest>,
    ) -> Result<Response<IngestResponse>, Status> {
        let tenant = tenant_of(&req)?;
        tracing::Span::current().record("tenant", tenant.as_str());
        Ok(Response::new(
            self.ingest.put_metrics(&tenant, req.into_inner()).await?,
        ))
    }

    #[instrument(skip_all, fields(tenant, events = req.get_ref().log_events.len()))]
    async fn put_log_events(
        &self,
        req: Request<PutLogEventsRequest>,
    ) -> Result<Response<IngestResponse>, Status> {
        let tenant = tenant_of(&req)?;
        tracing::Span::current().record("tenant", tenant.as_str());
        Ok(Response::new(
            self.ingest.put_logs(&tenant, req.into_inner()).await?,
        ))
    }

    #[instrument(skip_all, fields(tenant, records = req.get_ref().records.len()))]
    async fn put_audit_events(
        &self,
        req: Request<PutAuditEventsRequest>,
    ) -> Result<Response<IngestResponse>, Status> {
        let tenant = tenant_of(&req)?;
        tracing::Span::current().record("tenant", tenant.as_str());
        Ok(Response::new(
            self.ingest.put_audit(&tenant, req.into_inner()).await?,
        ))
    }
}
