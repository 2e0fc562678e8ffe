//! `watchtrail.v1.QueryService`: SQL answers as a stream of Arrow IPC bytes.

use std::pin::Pin;

use arrow::ipc::writer::StreamWriter;
use futures::Stream;
use tonic::{Request, Response, Status};
use watchtrail_proto::v1::query_response::Payload;
use watchtrail_proto::v1::query_service_server::QueryService;
use watchtrail_proto::v1::{QueryRequest, QueryResponse, QueryStats};
use watchtrail_query::engine::{Engine, QueryStream};
use watchtrail_query::error::ErrorClass;

use super::tenant_of;

/// The query service over an [`Engine`].
#[derive(Debug, Clone)]
pub struct QueryServiceImpl {
    engine: Engine,
}

impl QueryServiceImpl {
    /// A service that answers with `engine`.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

/// The gRPC status of a query error.
pub fn query_status(e: &watchtrail_query::Error) -> Status {
    let msg = e.to_string();
    match e.class() {
        ErrorClass::BadRequest => Status::invalid_argument(msg),
        ErrorClass::Forbidden => Status::permission_denied(msg),
        ErrorClass::ResourceExhausted => Status::resource_exhausted(msg),
        ErrorClass::Timeout => Status::deadline_exceeded(msg),
        ErrorClass::Unavailable => Status::unavailable(msg),
        ErrorClass::Internal => {
            tracing::error!(error = %e, "query failed");
            Status::internal(msg)
        }
    }
}

enum Step {
    Running(Box<(QueryStream, StreamWriter<Vec<u8>>)>),
    Stats(QueryStats),
    Done,
}

fn ipc_error(e: arrow::error::ArrowError) -> Status {
    Status::internal(format!("encoding Arrow IPC: {e}"))
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
                Some(Err(e)) => Some((Err(query_status(&e)), Step::Done)),
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
        let tenant = tenant_of(&req)?;
        let sql = req.into_inner().sql;
        let q = self
            .engine
            .query(&tenant, &sql)
            .await
            .map_err(|e| query_status(&e))?;
        let w = StreamWriter::try_new(Vec::new(), &q.schema()).map_err(ipc_error)?;
        Ok(Response::new(Box::pin(futures::stream::unfold(
            Step::Running(Box::new((q, w))),
            next,
        ))))
    }
}
