//! `watchtrail.v1.IngestService`: batched, idempotent ingest of metrics, logs and audit events.

use tonic::{Request, Response, Status};
use tracing::instrument;
use watchtrail_proto::v1::ingest_service_server::IngestService;
use watchtrail_proto::v1::{
    IngestResponse, PutAuditEventsRequest, PutLogEventsRequest, PutMetricDataRequest,
};

use watchtrail_storage::keys::Role;

use crate::auth::{Auth, grpc_user_agent};
use crate::ingest::Ingest;
use crate::self_audit::{Call, SelfAudit};

/// The ingest service over an [`Ingest`] front.
#[derive(Debug, Clone)]
pub struct IngestServiceImpl {
    ingest: Ingest,
    auth: Auth,
    trail: SelfAudit,
}

impl IngestServiceImpl {
    /// A service that writes through `ingest` for callers with an `ingest` key; refusals and
    /// audit imports go to `trail`.
    pub fn new(ingest: Ingest, auth: Auth, trail: SelfAudit) -> Self {
        Self {
            ingest,
            auth,
            trail,
        }
    }
}

#[tonic::async_trait]
impl IngestService for IngestServiceImpl {
    #[instrument(skip_all, fields(tenant, entries = req.get_ref().metric_data.len() + req.get_ref().series.len()))]
    async fn put_metric_data(
        &self,
        req: Request<PutMetricDataRequest>,
    ) -> Result<Response<IngestResponse>, Status> {
        let tenant = self
            .auth
            .grpc(&req, Role::Ingest, &self.trail, "PutMetricData")
            .await?
            .tenant;
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
        let tenant = self
            .auth
            .grpc(&req, Role::Ingest, &self.trail, "PutLogEvents")
            .await?
            .tenant;
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
        let caller = self
            .auth
            .grpc(&req, Role::Ingest, &self.trail, "PutAuditEvents")
            .await?;
        tracing::Span::current().record("tenant", caller.tenant.as_str());
        let source_ip = req.remote_addr().map(|a| a.ip());
        let user_agent = grpc_user_agent(&req);
        let body = req.into_inner();
        let params = serde_json::json!({
            "idempotencyId": body.idempotency_id,
            "records": body.records.len(),
        });
        let result = self.ingest.put_audit(&caller.tenant, body).await;
        // Imports are part of the trail: who loaded which audit events, from where.
        self.trail.record(&Call {
            event_name: "PutAuditEvents",
            read_only: false,
            caller: caller.caller(),
            source_ip,
            user_agent,
            request_parameters: params,
            error: result
                .as_ref()
                .err()
                .map(|e| (e.audit_code().to_string(), e.to_string())),
        });
        Ok(Response::new(result?))
    }
}
