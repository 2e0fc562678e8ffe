//! The gRPC client the CLI uses: connection flags, the tenant header, retries with backoff.

use std::time::Duration;

use anyhow::Context as _;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use watchtrail_proto::v1::IngestResponse;
use watchtrail_proto::v1::ingest_service_client::IngestServiceClient;

/// Where the server is.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// The server's gRPC address.
    #[arg(
        long,
        global = true,
        env = "WATCHTRAIL_SERVER",
        default_value = "http://127.0.0.1:7601"
    )]
    pub server: String,
    /// The server's HTTP address (alarms, metric filters, destinations).
    #[arg(
        long,
        global = true,
        env = "WATCHTRAIL_HTTP",
        default_value = "http://127.0.0.1:7602"
    )]
    pub http: String,
    /// The tenant to write to.
    #[arg(long, global = true, env = "WATCHTRAIL_TENANT", default_value = watchtrail_proto::DEFAULT_TENANT)]
    pub tenant: String,
}

/// An ingest client bound to a tenant.
#[derive(Debug, Clone)]
pub struct Client {
    inner: IngestServiceClient<Channel>,
    tenant: MetadataValue<tonic::metadata::Ascii>,
}

/// How many times a retryable failure is retried.
const MAX_ATTEMPTS: u32 = 8;

impl Client {
    /// Connects (lazily: the first request dials).
    ///
    /// # Errors
    /// A malformed server address or tenant name.
    pub fn connect(args: &ConnectionArgs) -> anyhow::Result<Self> {
        crate::tables::validate_tenant(&args.tenant).map_err(anyhow::Error::msg)?;
        let endpoint = Channel::from_shared(args.server.clone())
            .with_context(|| format!("invalid --server `{}`", args.server))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60));
        let inner = IngestServiceClient::new(endpoint.connect_lazy())
            .send_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(16 << 20);
        let tenant = args
            .tenant
            .parse()
            .context("tenant is not a valid header value")?;
        Ok(Self { inner, tenant })
    }

    /// Sends a request, retrying transient failures (UNAVAILABLE, connection errors) with
    /// exponential backoff. The request carries its idempotency id, so a retry of a request that
    /// did land is answered as a duplicate, not applied twice.
    ///
    /// # Errors
    /// A permanent refusal (its status message names the field), or a transient one that
    /// outlasted the retries.
    pub async fn call<R, F, Fut>(
        &self,
        request: R,
        send: F,
    ) -> Result<IngestResponse, tonic::Status>
    where
        R: Clone,
        F: Fn(IngestServiceClient<Channel>, tonic::Request<R>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<IngestResponse>, tonic::Status>>,
    {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let mut req = tonic::Request::new(request.clone());
            req.metadata_mut()
                .insert(watchtrail_proto::TENANT_HEADER, self.tenant.clone());
            match send(self.inner.clone(), req).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) if is_retryable(&status) && attempt < MAX_ATTEMPTS => {
                    tracing::warn!(attempt, code = ?status.code(), message = status.message(), "retrying");
                    let jitter =
                        Duration::from_millis(u64::from(uuid::Uuid::new_v4().as_bytes()[0]));
                    tokio::time::sleep(delay + jitter).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                    attempt += 1;
                }
                Err(status) => return Err(status),
            }
        }
    }
}

/// Whether a status is worth retrying with the same idempotency id.
pub fn is_retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Aborted
            | tonic::Code::DeadlineExceeded
    )
}

/// Prints the per-item rejections of a response to standard error.
pub fn report_rejections(resp: &IngestResponse) {
    for r in &resp.rejected {
        eprintln!("rejected {}: {}", r.field, r.reason);
    }
}
