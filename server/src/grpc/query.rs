//! `watchtrail.v1.QueryService`: SQL answers as a stream of Arrow IPC bytes.

use std::pin::Pin;

use crate::error::{Answer, query_answer};
use arrow::ipc::writer::StreamWriter;
use futures::Stream;
use tonic::{Request, Response, Status};
use watchtrail_proto::v1::query_response::Payload;
use watchtrail_proto::v1::query_service_server::QueryService;
use watchtrail_proto::v1::{QueryRequest, QueryResponse, QueryStats};
use watchtrail_query::engine::{Engine, QueryStream};

use watchtrail_storage::keys::Role;

use crate::auth::{Auth, grpc_user_agent};
use crate::self_audit::{Call, SelfAudit};

/// The query service over an [`Engine`].
#[derive(Debug, Clone)]
pub struct QueryServiceImpl {
    engine: Engine,
    auth: Auth,
    trail: SelfAudit,
    gate: crate::query::QueryGate,
}

impl QueryServiceImpl {
    /// A service that answers with `engine` to callers with a `read` key, as many at a time
    /// per tenant as `gate` lets in; every query goes to `trail`.
    pub fn new(
        engine: Engine,
        auth: Auth,
        trail: SelfAudit,
        gate: crate::query::QueryGate,
    ) -> Self {
        Self {
            engine,
            auth,
            trail,
            gate,
        }
    }
}

enum Step {
    Running(Box<(QueryStream, StreamWriter<Vec<u8>>)>),
    Stats(QueryStats),
    Done,
}

fn ipc_error(e: arrow::error::ArrowError) -> Status {
    Answer::internal(format!("encoding Arrow IPC: {e}")).status()
}

async fn next(step: Step) -> Option<(Result<QueryResponse, Status>, Step)> {
    let payload = |p| QueryResponse { payload: Some(p) };
    match step {
        Step::Done => None,
        Step::Stats(s) => Some((Ok(payload(Payload::Stats(s))), Step::Done)),
        Step::Running(state) => {
            let (mut q, mut w) = *state;
            match q.next_batch().await {
                Some(Ok(batch)) => {
                    if let Err(e) = w.write(&batch) {
                        return Some((Err(ipc_error(e)), Step::Done));
                    }
                    let bytes = std::mem::take(w.get_mut());
                    Some((
                        Ok(payload(Payload::ArrowIpc(bytes))),
                        Step::Running(Box::new((q, w))),
                    ))
                }
                Some(Err(e)) => Some((Err(query_answer(&e).status()), Step::Done)),
                None => {
                    if let Err(e) = w.finish() {
                        return Some((Err(ipc_error(e)), Step::Done));
                    }
                    let bytes = std::mem::take(w.get_mut());
                    let s = q.stats().cloned().unwrap_or_default();
                    let stats = QueryStats {
                        files_total: s.files_total,
                        files_scanned: s.files_scanned,
                        bytes_scanned: s.bytes_scanned,
                        buffered_rows_scanned: s.buffered_rows_scanned,
                        rows: s.rows,
                        elapsed_ms: s.elapsed_ms,
                    };
                    Some((Ok(payload(Payload::ArrowIpc(bytes))), Step::Stats(stats)))
                }
            }
        }
    }
}

#[tonic::async_trait]
impl QueryService for QueryServiceImpl {
    type QueryStream = Pin<Box<dyn Stream<Item = Result<QueryResponse, Status>> + Send>>;

    async fn query(
        &self,
        req: Request<QueryRequest>,
    ) -> Result<Response<Self::QueryStream>, Status> {
        let caller = self
            .auth
            .grpc(&req, Role::Read, &self.trail, "Query")
            .await?;
        let source_ip = req.remote_addr().map(|a| a.ip());
        let user_agent = grpc_user_agent(&req);
        let sql = req.into_inner().sql;
        // Held until every part of the query's work has stopped.
        let slot = self
            .gate
            .enter(&caller.tenant)
            .await
            .map_err(|why| Answer::too_many_queries(why).status())?;
        let mut call = Call {
            event_name: "StartQuery",
            read_only: true,
            caller: caller.caller(),
            source_ip,
            user_agent,
            request_parameters: serde_json::json!({ "sql": sql }),
            error: None,
        };
        // The start is in the WAL before the query runs.
        self.trail
            .record_now(&call)
            .await
            .map_err(|why| Answer::start_not_recorded(why).status())?;
        let result = self
            .engine
            .query_holding(&caller.tenant, &sql, Some(Box::new(slot)))
            .await;
        call.event_name = "Query";
        call.error = result
            .as_ref()
            .err()
            .map(|e| (query_answer(e).code.to_string(), e.to_string()));
        self.trail.record(&call);
        let q = result.map_err(|e| query_answer(&e).status())?;
        let w = StreamWriter::try_new(Vec::new(), &q.schema()).map_err(ipc_error)?;
        let stream = futures::stream::unfold(Step::Running(Box::new((q, w))), next);
        Ok(Response::new(Box::pin(stream)))
    }
}
