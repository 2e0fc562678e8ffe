//! The gRPC client the CLI uses: connection flags, the API key and tenant headers, retries
//! with backoff.

use std::path::PathBuf;
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
    /// The tenant, when the API key does not settle it (servers with `--auth none`, and
    /// `--store`); a key of another tenant is refused. Default: the key's tenant, or `default`.
    #[arg(long, global = true, env = "WATCHTRAIL_TENANT")]
    pub tenant: Option<String>,
    /// The API key (`wt_...`). Prefer WATCHTRAIL_API_KEY or --api-key-file: a flag shows in the
    /// process list.
    #[arg(
        long,
        global = true,
        env = "WATCHTRAIL_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// A file holding the API key. Default, when neither this nor --api-key is given:
    /// `./watchtrail-data/admin.key` if it exists (the key a server's first start makes).
    #[arg(long, global = true, env = "WATCHTRAIL_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for `https://` servers, beside the system's roots.
    #[arg(long, global = true, env = "WATCHTRAIL_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// A client certificate (PEM), for servers that require mutual TLS.
    #[arg(
        long,
        global = true,
        env = "WATCHTRAIL_CLIENT_CERT",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        global = true,
        env = "WATCHTRAIL_CLIENT_KEY",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
}

fn read_pem(path: &std::path::Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag}: cannot read {}", path.display()))
}

/// Where a server writes its first admin key when started with the default `--wal-dir`.
pub const DEFAULT_KEY_FILE: &str = "./watchtrail-data/admin.key";

/// Whether `address` names this machine (`localhost`, 127.0.0.0/8 or `::1`).
pub fn is_loopback_address(address: &str) -> bool {
    match url::Url::parse(address)
        .ok()
        .as_ref()
        .and_then(url::Url::host)
    {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl ConnectionArgs {
    /// Whether both `--server` and `--http` name this machine.
    fn servers_are_loopback(&self) -> bool {
        is_loopback_address(&self.server) && is_loopback_address(&self.http)
    }

    /// The gRPC endpoint of `--server`, with TLS for an `https://` address (the system's roots,
    /// `--ca-cert`, and `--client-cert` for mutual TLS).
    ///
    /// # Errors
    /// A malformed address; certificate files that cannot be read.
    pub fn grpc_endpoint(&self) -> anyhow::Result<tonic::transport::Endpoint> {
        let mut endpoint = Channel::from_shared(self.server.clone())
            .with_context(|| format!("invalid --server `{}`", self.server))?;
        if self.server.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = &self.ca_cert {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read_pem(
                    ca,
                    "--ca-cert",
                )?));
            }
            if let (Some(c), Some(k)) = (&self.client_cert, &self.client_key) {
                tls = tls.identity(tonic::transport::Identity::from_pem(
                    read_pem(c, "--client-cert")?,
                    read_pem(k, "--client-key")?,
                ));
            }
            endpoint = endpoint
                .tls_config(tls)
                .with_context(|| format!("TLS for --server `{}`", self.server))?;
        }
        Ok(endpoint)
    }

    /// The HTTP client for `--http`, trusting `--ca-cert` beside the system's roots and showing
    /// `--client-cert` when given.
    ///
    /// # Errors
    /// Certificate files that cannot be read or parsed.
    pub fn http_client(&self) -> anyhow::Result<reqwest::Client> {
        let mut b = reqwest::Client::builder();
        if let Some(ca) = &self.ca_cert {
            b = b.add_root_certificate(
                reqwest::Certificate::from_pem(&read_pem(ca, "--ca-cert")?)
                    .context("--ca-cert: not a PEM certificate")?,
            );
        }
        if let (Some(c), Some(k)) = (&self.client_cert, &self.client_key) {
            let mut pem = read_pem(c, "--client-cert")?;
            pem.push(b'\n');
            pem.extend(read_pem(k, "--client-key")?);
            b = b.identity(
                reqwest::Identity::from_pem(&pem)
                    .context("--client-cert and --client-key: not a PEM certificate and key")?,
            );
        }
        b.build().context("HTTP client")
    }

    /// The tenant for `--store` reads: `--tenant`, else `default`.
    ///
    /// # Errors
    /// A tenant name that is not allowed.
    pub fn store_tenant(&self) -> anyhow::Result<String> {
        let t = self
            .tenant
            .clone()
            .unwrap_or_else(|| watchtrail_proto::DEFAULT_TENANT.to_string());
        watchtrail_query::tables::validate_tenant(&t).map_err(anyhow::Error::msg)?;
        Ok(t)
    }

    /// The credentials that go with each call.
    ///
    /// # Errors
    /// A key file that cannot be read; a key or tenant that is not a valid header value.
    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        if let Some(t) = &self.tenant {
            watchtrail_query::tables::validate_tenant(t).map_err(anyhow::Error::msg)?;
        }
        let key = match (&self.api_key, &self.api_key_file) {
            (Some(k), _) => Some(k.trim().to_string()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("--api-key-file {}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            // The implicit admin key goes to this machine's own server only: a CLI pointed
            // elsewhere must be told which key to send.
            (None, None) if self.servers_are_loopback() => {
                std::fs::read_to_string(DEFAULT_KEY_FILE)
                    .ok()
                    .map(|k| k.trim().to_string())
            }
            (None, None) => {
                if std::path::Path::new(DEFAULT_KEY_FILE).exists() {
                    eprintln!(
                        "watchtrail: not sending {DEFAULT_KEY_FILE} to {} / {}, which are not on \
                         this machine; pass --api-key-file {DEFAULT_KEY_FILE} to send it",
                        self.server, self.http
                    );
                }
                None
            }
        };
        let authorization = key
            .map(|k| {
                let mut v = format!("Bearer {k}")
                    .parse::<MetadataValue<tonic::metadata::Ascii>>()
                    .map_err(|_| anyhow::anyhow!("the API key is not a valid header value"))?;
                v.set_sensitive(true);
                Ok::<_, anyhow::Error>(v)
            })
            .transpose()?;
        let tenant = self
            .tenant
            .as_deref()
            .map(|t| t.parse().context("tenant is not a valid header value"))
            .transpose()?;
        Ok(Credentials {
            authorization,
            tenant,
        })
    }
}

/// The `authorization` and tenant headers of every call.
#[derive(Clone, Default)]
pub struct Credentials {
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
    tenant: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<hidden>"),
            )
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl Credentials {
    /// Adds the headers to a gRPC request.
    pub fn apply(&self, md: &mut tonic::metadata::MetadataMap) {
        if let Some(a) = &self.authorization {
            md.insert("authorization", a.clone());
        }
        if let Some(t) = &self.tenant {
            md.insert(watchtrail_proto::TENANT_HEADER, t.clone());
        }
    }

    /// Adds the headers to an HTTP request.
    pub fn apply_http(&self, mut req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if let Some(a) = self.authorization.as_ref().and_then(|a| a.to_str().ok()) {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        if let Some(t) = self.tenant.as_ref().and_then(|t| t.to_str().ok()) {
            req = req.header(watchtrail_proto::TENANT_HEADER, t);
        }
        req
    }
}

/// An ingest client bound to a tenant.
#[derive(Debug, Clone)]
pub struct Client {
    inner: IngestServiceClient<Channel>,
    credentials: Credentials,
}

/// How many times a retryable failure is retried.
const MAX_ATTEMPTS: u32 = 8;

impl Client {
    /// Connects (lazily: the first request dials).
    ///
    /// # Errors
    /// A malformed server address or tenant name.
    pub fn connect(args: &ConnectionArgs) -> anyhow::Result<Self> {
        let credentials = args.credentials()?;
        let endpoint = args
            .grpc_endpoint()?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60));
        let inner = IngestServiceClient::new(endpoint.connect_lazy())
            .send_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(16 << 20);
        Ok(Self { inner, credentials })
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
            self.credentials.apply(req.metadata_mut());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machine_counts_as_loopback() {
        for yes in [
            "http://127.0.0.1:7601",
            "https://localhost:7602",
            "http://[::1]:7601",
            "http://127.1.2.3",
        ] {
            assert!(is_loopback_address(yes), "{yes}");
        }
        for no in [
            "http://watchtrail:7601",
            "https://10.0.0.5:7602",
            "http://[2001:db8::1]:7601",
            "http://localhost.example.com",
            "not a url",
        ] {
            assert!(!is_loopback_address(no), "{no}");
        }
    }
}
