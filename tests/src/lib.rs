//! End-to-end harness: real `watchtrail-server` processes, real files, real S3 (moto).
//!
//! Tests read as: start → act → wait → assert → stop. Every wait has a deadline and says what
//! it was waiting for.
//!
//! # Contents
//! - [`TestServer`], [`ServerOptions`], [`TestCerts`]: server processes on port 0 (the ports are
//!   read back from `--listen-addr-file`), with keys, TLS, restarts and `/metrics` counters.
//! - [`TestAgent`]: agent processes; the local API's port is read back from its log.
//! - [`Moto`]: moto's S3 server on a port it chose; [`Proxy`]: a link that can be cut.
//! - [`receiver`]: an axum webhook receiver that checks signatures.
//! - HTTP helpers over reqwest ([`http_send`], [`http_get`]), gRPC helpers, [`wait_for`].
//! - The mutation fuzzer and test seeds are in `watchtrail-test-util`.

pub mod receiver;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use watchtrail_proto::tonic;
use watchtrail_proto::tonic::transport::Channel;
use watchtrail_proto::v1::ingest_service_client::IngestServiceClient;
use watchtrail_storage::deltalake::arrow;

/// Path of a workspace binary next to the test executable (`target/<profile>/<name>`).
///
/// # Panics
/// When the binary was not built: run `cargo build --workspace --bins` first.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `--store`.
    pub store: String,
    /// `--wal-dir`.
    pub wal_dir: PathBuf,
    /// More flags.
    pub args: Vec<String>,
    /// More environment.
    pub env: Vec<(String, String)>,
    /// Fixed gRPC and HTTP addresses (a restart that clients must find again); any free port
    /// when unset.
    pub addrs: Option<(SocketAddr, SocketAddr)>,
    /// When the server speaks TLS: what the harness trusts and shows.
    pub tls: Option<TestCerts>,
}

/// Certificates made for one test: a CA, a server certificate it signed (for `localhost` and
/// 127.0.0.1), a client certificate it signed, and a client certificate of a CA nobody trusts.
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The CA (PEM).
    pub ca: PathBuf,
    /// The server's certificate and key (PEM).
    pub server: (PathBuf, PathBuf),
    /// A client certificate and key the CA signed.
    pub client: (PathBuf, PathBuf),
    /// A client certificate and key another CA signed.
    pub stranger: (PathBuf, PathBuf),
}

impl TestCerts {
    /// Makes them under `dir`.
    ///
    /// # Panics
    /// When generation or writing fails.
    pub fn make(dir: &Path) -> Self {
        // The harness's own TLS clients need a provider too (the tree enables two).
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        std::fs::create_dir_all(dir).expect("cert dir");
        let ca = |name: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, name);
            let key = KeyPair::generate().expect("key");
            let cert = p.self_signed(&key).expect("self-signed");
            (cert.pem(), Issuer::new(p, key))
        };
        let leaf = |names: &[&str], issuer: &Issuer<'_, KeyPair>, file: &str| {
            let p =
                CertificateParams::new(names.iter().map(|n| (*n).to_string()).collect::<Vec<_>>())
                    .expect("params");
            let key = KeyPair::generate().expect("key");
            let cert = p.signed_by(&key, issuer).expect("signed");
            let (c, k) = (
                dir.join(format!("{file}.pem")),
                dir.join(format!("{file}.key")),
            );
            std::fs::write(&c, cert.pem()).expect("write cert");
            std::fs::write(&k, key.serialize_pem()).expect("write key");
            (c, k)
        };
        let (ca_pem, issuer) = ca("Watchtrail test CA");
        let (_, stranger_ca) = ca("Some other CA");
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca_pem).expect("write ca");
        Self {
            ca: ca_path,
            server: leaf(&["localhost", "127.0.0.1"], &issuer, "server"),
            client: leaf(&["client"], &issuer, "client"),
            stranger: leaf(&["stranger"], &stranger_ca, "stranger"),
        }
    }
}

impl ServerOptions {
    /// A server with a `file://` store and a WAL under `dir`, flushing every 300 ms, whose
    /// webhooks may reach 127.0.0.1.
    pub fn local(dir: &Path) -> Self {
        Self {
            store: format!("file://{}", dir.join("store").display()),
            wal_dir: dir.join("wal"),
            // Test receivers listen on loopback, which webhooks may reach only when allowed.
            args: vec![
                "--flush-max-age".into(),
                "300ms".into(),
                "--webhook-allow-networks".into(),
                "127.0.0.1".into(),
            ],
            env: Vec::new(),
            addrs: None,
            tls: None,
        }
    }

    /// The same server speaking TLS with `certs` (mutual TLS when `mutual`).
    pub fn with_tls(mut self, certs: &TestCerts, mutual: bool) -> Self {
        let (cert, key) = &certs.server;
        self.args.extend([
            "--tls-cert".to_string(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ]);
        if mutual {
            self.args.extend([
                "--tls-client-ca".to_string(),
                certs.ca.display().to_string(),
            ]);
        }
        self.tls = Some(certs.clone());
        self
    }

    /// Alarms that react within seconds: a 1 s late-data delay and 1 s reloads.
    pub fn with_quick_alarms(self) -> Self {
        self.with_args(&["--alarm-delay", "1s", "--alarm-refresh", "1s"])
    }

    /// Adds flags.
    pub fn with_args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| (*s).to_string()));
        self
    }
}

/// Adds `authorization: Bearer <key>` to every gRPC call of a client.
#[derive(Debug, Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    /// The interceptor for `key` (a `wt_...` token).
    ///
    /// # Panics
    /// When the key is not a valid header value.
    pub fn new(key: &str) -> Self {
        Self(format!("Bearer {key}").parse().expect("key header"))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// An ingest client that sends an API key.
pub type IngestClient =
    IngestServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// An ingest client of `grpc` with `key`, connecting lazily.
pub fn ingest_client(grpc: SocketAddr, key: &str) -> IngestClient {
    let ch = Channel::from_shared(format!("http://{grpc}"))
        .expect("url")
        .connect_lazy();
    IngestServiceClient::with_interceptor(ch, Bearer::new(key))
}

/// The directory a server keeps its first admin key in: the WAL directory's parent.
fn data_dir(wal_dir: &Path) -> PathBuf {
    wal_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| wal_dir.to_path_buf(), Path::to_path_buf)
}

/// Makes an API key straight in the store of `options` (`watchtrail keys create --store`).
///
/// # Panics
/// When the CLI fails.
pub async fn create_key(options: &ServerOptions, tenant: &str, role: &str) -> String {
    let out = Command::new(bin_path("watchtrail"))
        .args([
            "keys",
            "create",
            "--store",
            &options.store,
            "--tenant",
            tenant,
            "--role",
            role,
        ])
        .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .expect("run watchtrail keys create");
    assert!(
        out.status.success(),
        "keys create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The admin key of `default` a test uses: the one the server made at its first start, else
/// (the store's keys were made by another server) one made for the harness.
async fn admin_key(options: &ServerOptions) -> String {
    let auth_none = options
        .args
        .windows(2)
        .any(|w| w[0] == "--auth" && w[1] == "none");
    if auth_none {
        return String::new();
    }
    let data = data_dir(&options.wal_dir);
    for f in ["admin.key", "harness-admin.key"] {
        if let Ok(t) = std::fs::read_to_string(data.join(f)) {
            return t.trim().to_string();
        }
    }
    let key = create_key(options, "default", "admin").await;
    std::fs::write(data.join("harness-admin.key"), &key).expect("write harness key");
    key
}

/// A running `watchtrail-server` process.
#[derive(Debug)]
pub struct TestServer {
    child: Option<Child>,
    /// An admin key of the `default` tenant (empty with `--auth none`).
    pub key: String,
    /// The gRPC address.
    pub grpc: SocketAddr,
    /// The HTTP address.
    pub http: SocketAddr,
    /// How it was started.
    pub options: ServerOptions,
    log: PathBuf,
}

impl TestServer {
    /// Starts a server and waits until its gRPC health check says SERVING.
    ///
    /// # Panics
    /// When it does not come up within 60 s (its log is printed).
    pub async fn start(options: ServerOptions) -> Self {
        std::fs::create_dir_all(&options.wal_dir).expect("wal dir");
        let addr_file = options
            .wal_dir
            .join(format!("addr-{}", uuid::Uuid::new_v4().simple()));
        let log = options
            .wal_dir
            .join(format!("server-{}.log", uuid::Uuid::new_v4().simple()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(bin_path("watchtrail-server"));
        cmd.arg("--store")
            .arg(&options.store)
            .arg("--wal-dir")
            .arg(&options.wal_dir)
            .args(match options.addrs {
                Some((g, h)) => [
                    "--grpc-addr".to_string(),
                    g.to_string(),
                    "--http-addr".into(),
                    h.to_string(),
                ],
                None => {
                    ["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"].map(String::from)
                }
            })
            .arg("--listen-addr-file")
            .arg(&addr_file)
            .args(&options.args)
            .env(
                "WATCHTRAIL_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file.try_clone().expect("clone"))
            .kill_on_drop(true);
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn watchtrail-server");
        let deadline = Instant::now() + Duration::from_secs(60);
        let (grpc, http) = loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file) {
                let mut lines = text.lines();
                if let (Some(g), Some(h)) = (lines.next(), lines.next()) {
                    break (g.parse().expect("grpc addr"), h.parse().expect("http addr"));
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "server exited with {status} before listening:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "server did not listen:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let server = Self {
            child: Some(child),
            key: String::new(),
            grpc,
            http,
            options,
            log,
        };
        server.wait_serving().await;
        // After SERVING: the first admin key is written before the server answers.
        let mut server = server;
        server.key = admin_key(&server.options).await;
        server
    }

    /// The gRPC address as a URL (`https://` with TLS).
    pub fn grpc_url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.grpc)
    }

    /// A gRPC endpoint of this server; with TLS, trusting the test CA and showing the client
    /// certificate.
    pub fn endpoint(&self) -> tonic::transport::Endpoint {
        let e = Channel::from_shared(self.grpc_url()).expect("url");
        match &self.options.tls {
            None => e,
            Some(certs) => {
                let read = |p: &Path| std::fs::read(p).expect("read cert");
                e.tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(read(&certs.ca)))
                        .identity(tonic::transport::Identity::from_pem(
                            read(&certs.client.0),
                            read(&certs.client.1),
                        )),
                )
                .expect("tls config")
            }
        }
    }

    /// Whether a fresh gRPC connection gets SERVING from the health check.
    pub async fn grpc_serving(&self) -> bool {
        match self.endpoint().connect().await {
            Ok(ch) => grpc_health(ch).await,
            Err(_) => false,
        }
    }

    async fn wait_serving(&self) {
        let log = self.log.clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.grpc_serving().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server never reported SERVING:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An ingest client for this server, with its admin key.
    pub async fn client(&self) -> IngestClient {
        let ch = self.endpoint().connect().await.expect("connect");
        IngestServiceClient::with_interceptor(ch, Bearer::new(&self.key))
    }

    /// The `Authorization` header line of the admin key.
    pub fn auth(&self) -> String {
        format!("Authorization: Bearer {}", self.key)
    }

    /// A key of `tenant` with `role`, made straight in this server's store.
    pub async fn create_key(&self, tenant: &str, role: &str) -> String {
        create_key(&self.options, tenant, role).await
    }

    /// `GET` on the HTTP port with the admin key; returns (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        let a = self.send("GET", path, &[], b"").await;
        (a.status, a.text())
    }

    /// A request on the HTTP port with the admin key and extra headers.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: &[u8],
    ) -> HttpAnswer {
        let auth = self.auth();
        let mut all = vec![auth.as_str()];
        all.extend_from_slice(headers);
        http_send(self.http, method, path, &all, body).await
    }

    /// A request with the admin key that must succeed (2xx); its answer.
    ///
    /// # Panics
    /// On any other status (the answer is printed).
    pub async fn send_ok(&self, method: &str, path: &str, body: &[u8]) -> HttpAnswer {
        let a = self.send(method, path, &[], body).await;
        assert!(
            (200..300).contains(&a.status),
            "{method} {path}: {} {}",
            a.status,
            a.text()
        );
        a
    }

    /// An alarm's `StateValue`, read with the admin key.
    ///
    /// # Panics
    /// When the alarm cannot be read.
    pub async fn alarm_state(&self, alarm: &str) -> String {
        let a = self
            .send("GET", &format!("/v1/alarms/{alarm}"), &[], b"")
            .await;
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()["StateValue"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until an alarm is in `state`.
    ///
    /// # Panics
    /// When it is not within `within`.
    pub async fn wait_alarm_state(&self, alarm: &str, state: &str, within: Duration) {
        wait_for(&format!("{alarm} to be {state}"), within, || async {
            (self.alarm_state(alarm).await == state).then_some(())
        })
        .await;
    }

    /// A request on the HTTP port with another key (none when `key` is empty).
    pub async fn send_as(&self, key: &str, method: &str, path: &str, body: &[u8]) -> HttpAnswer {
        let auth = format!("Authorization: Bearer {key}");
        let headers: &[&str] = if key.is_empty() { &[] } else { &[&auth] };
        http_send(self.http, method, path, headers, body).await
    }

    /// `POST /v1/query` with `sql`, asking for `accept`, with the admin key.
    pub async fn http_query(&self, sql: &str, accept: &str) -> HttpAnswer {
        let body = serde_json::json!({ "sql": sql }).to_string();
        self.send(
            "POST",
            "/v1/query",
            &[&format!("Accept: {accept}")],
            body.as_bytes(),
        )
        .await
    }

    /// A `watchtrail` CLI command aimed at this server (gRPC and HTTP) with its admin key.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(bin_path("watchtrail"));
        c.arg("--server")
            .arg(format!("http://{}", self.grpc))
            .arg("--http")
            .arg(format!("http://{}", self.http))
            .env("WATCHTRAIL_API_KEY", &self.key)
            .env_remove("WATCHTRAIL_API_KEY_FILE")
            .env_remove("WATCHTRAIL_TENANT");
        c
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process with SIGKILL (no chance to flush or clean up).
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    ///
    /// # Panics
    /// When the exit is not clean within 60 s.
    pub async fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            sigterm_and_wait(c, "server", Duration::from_secs(60), &self.log).await;
        }
    }

    /// One unlabelled counter or gauge from its `/metrics`.
    pub async fn counter(&self, name: &str) -> u64 {
        let (_, body) = self.http_get("/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from the server's /metrics:\n{body}"))
    }

    /// Starts a stopped server again with the same options and on the same ports (which it
    /// chose itself the first time), as an operator's restart would.
    pub async fn start_again(&mut self) {
        let mut options = self.options.clone();
        options.addrs = Some((self.grpc, self.http));
        *self = Self::start(options).await;
    }

    /// Starts a new process with the same options (same WAL, same store).
    pub async fn restart(&mut self) {
        self.kill9().await;
        let next = Self::start(self.options.clone()).await;
        *self = next;
    }
}

/// Sends SIGTERM and waits for a clean exit, printing the process's log when it is not.
async fn sigterm_and_wait(mut c: Child, what: &str, limit: Duration, log: &Path) {
    if let Some(pid) = c.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let status = tokio::time::timeout(limit, c.wait())
        .await
        .unwrap_or_else(|_| panic!("{what} did not stop within {limit:?} of SIGTERM"))
        .expect("wait");
    assert!(
        status.success(),
        "{what} exited with {status}:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Whether the gRPC health check over `ch` answers SERVING.
pub async fn grpc_health(ch: Channel) -> bool {
    // The health service's wire format is two tiny messages; calling it through the generic
    // gRPC client keeps tonic-health out of the test build.
    let mut grpc = watchtrail_proto::tonic::client::Grpc::new(ch);
    if grpc.ready().await.is_err() {
        return false;
    }
    let path = watchtrail_proto::tonic::codegen::http::uri::PathAndQuery::from_static(
        "/grpc.health.v1.Health/Check",
    );
    let codec =
        watchtrail_proto::tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    let request = watchtrail_proto::tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    grpc.unary(request, path, codec)
        .await
        .is_ok_and(|resp| resp.into_inner().status == 1)
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// The harness's HTTP client (reqwest; no proxy, since every test talks to 127.0.0.1).
fn http_client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("HTTP client")
    })
}

/// A GET: status and body as text.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let a = http_send(addr, "GET", path, &[], b"").await;
    (a.status, a.text())
}

/// An HTTP answer: status, lower-cased headers, body.
#[derive(Debug)]
pub struct HttpAnswer {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: std::collections::HashMap<String, String>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A POST with extra headers (`Name: value` lines).
pub async fn http_post(addr: SocketAddr, path: &str, headers: &[&str], body: &[u8]) -> HttpAnswer {
    http_send(addr, "POST", path, headers, body).await
}

/// A request of any method with extra headers (`Name: value` lines); the body is sent as JSON
/// unless a `Content-Type` is among them.
///
/// # Panics
/// On a header line without a colon, or when the server cannot be reached.
pub async fn http_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> HttpAnswer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
    let mut req = http_client()
        .request(method, format!("http://{addr}{path}"))
        .body(body.to_vec());
    let mut typed = false;
    for h in headers {
        let (name, value) = h.split_once(':').expect("a `Name: value` header");
        typed |= name.trim().eq_ignore_ascii_case("content-type");
        let value = reqwest::header::HeaderValue::from_bytes(value.trim().as_bytes())
            .expect("header value");
        req = req.header(name.trim(), value);
    }
    if !typed {
        req = req.header(reqwest::header::CONTENT_TYPE, "application/json");
    }
    let r = req.send().await.expect("HTTP request");
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = r.bytes().await.expect("HTTP body").to_vec();
    HttpAnswer {
        status,
        headers,
        body,
    }
}

/// A TCP forwarder that can cut every connection and refuse new ones, to make a real server
/// unreachable without stopping it (a restarted moto would forget its buckets).
#[derive(Debug, Clone)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    /// Starts forwarding `127.0.0.1:<any>` to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (u, g) = (Arc::clone(&up), Arc::clone(&generation));
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !u.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let (u2, g2) = (Arc::clone(&u), Arc::clone(&g));
                let born = g.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let cut = async {
                        while u2.load(Ordering::SeqCst) && g2.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! { _ = copy => {}, () = cut => {} }
                });
            }
        });
        Self {
            addr,
            up,
            generation,
        }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// A `moto_server` (S3 that enforces conditional writes) on 127.0.0.1, if one is installed.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    /// Its address.
    pub addr: SocketAddr,
}

impl Moto {
    /// Starts `moto_server` from `$WATCHTRAIL_MOTO_SERVER` (set by `./scripts/test`, which
    /// installs it). A test that needs S3 fails without it rather than passing untested.
    ///
    /// # Panics
    /// Without `WATCHTRAIL_MOTO_SERVER`, or when moto does not answer within 60 s.
    pub async fn start() -> Self {
        let Ok(bin) = std::env::var("WATCHTRAIL_MOTO_SERVER") else {
            panic!(
                "WATCHTRAIL_MOTO_SERVER is not set: this test needs moto's S3 server; run the \
                 tests through ./scripts/test, which installs it"
            );
        };
        // Port 0: moto's server (werkzeug) binds a free port and prints it on stderr.
        let mut child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn moto_server");
        let stderr = child.stderr.take().expect("moto's stderr");
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let find = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("Running on http://").nth(1) {
                    return rest.trim().parse::<SocketAddr>().ok();
                }
            }
            None
        };
        let addr = tokio::time::timeout(Duration::from_secs(60), find)
            .await
            .ok()
            .flatten()
            .expect("moto_server to print its address within 60 s");
        // It logs every request: keep reading so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, addr }
    }

    /// Creates a bucket.
    pub async fn create_bucket(&self, name: &str) {
        let status = http_send(self.addr, "PUT", &format!("/{name}"), &[], b"")
            .await
            .status;
        assert_eq!(status, 200, "create bucket {name}");
    }

    /// The environment a client needs to reach `endpoint` (moto accepts any keys).
    pub fn env(endpoint: SocketAddr) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), format!("http://{endpoint}")),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }

    /// Stops it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The `tests` package's directory. Cargo and nextest set `CARGO_MANIFEST_DIR` when they run a
/// test, which stays right when a build directory is shared between clones at different paths;
/// the compile-time value is the fallback.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// Path of the committed test fixtures.
pub fn fixtures() -> PathBuf {
    manifest_dir().join("fixtures")
}

/// Runs SQL through the gRPC query service with API key `key`; the rows and the statistics.
///
/// # Errors
/// The server's status.
pub async fn grpc_query(
    grpc: SocketAddr,
    key: &str,
    sql: &str,
) -> Result<
    (
        Vec<arrow::array::RecordBatch>,
        watchtrail_proto::v1::QueryStats,
    ),
    tonic::Status,
> {
    use watchtrail_proto::v1::query_response::Payload;
    let ch = Channel::from_shared(format!("http://{grpc}"))
        .expect("url")
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = watchtrail_proto::v1::query_service_client::QueryServiceClient::new(ch)
        .max_decoding_message_size(64 << 20);
    let mut req = tonic::Request::new(watchtrail_proto::v1::QueryRequest {
        sql: sql.to_string(),
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("key header"),
    );
    let mut stream = client.query(req).await?.into_inner();
    let mut ipc = Vec::new();
    let mut stats = None;
    while let Some(m) = stream.message().await? {
        match m.payload {
            Some(Payload::ArrowIpc(b)) => ipc.extend_from_slice(&b),
            Some(Payload::Stats(s)) => stats = Some(s),
            None => {}
        }
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
        .expect("Arrow IPC stream");
    let batches = reader.collect::<Result<Vec<_>, _>>().expect("batches");
    Ok((batches, stats.expect("stats message")))
}

/// The first column of the first row as an i64 (a `count(*)`).
pub fn scalar_i64(batches: &[arrow::array::RecordBatch], col: usize) -> i64 {
    use arrow::array::AsArray as _;
    batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| {
            b.column(col)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0)
        })
        .expect("a row")
}

/// The Python with `deltalake` and `pyarrow` from `$WATCHTRAIL_PYTHON` (set by the test
/// script, which makes the venv). A test that needs it fails without it rather than passing
/// untested.
///
/// # Panics
/// Without `WATCHTRAIL_PYTHON`.
pub fn python() -> PathBuf {
    match std::env::var_os("WATCHTRAIL_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "WATCHTRAIL_PYTHON is not set: this test needs the venv with deltalake and pyarrow; \
             run the tests through ./scripts/test, which makes it"
        ),
    }
}

/// A running `watchtrail-agent` process.
#[derive(Debug)]
pub struct TestAgent {
    child: Option<Child>,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// The local API address of the running process, when it has one.
    pub http: Option<SocketAddr>,
    wants_http: bool,
    log: PathBuf,
    starts: u32,
}

impl TestAgent {
    /// Writes `config` (TOML; `state_dir` and `http_addr` are added) under `dir` and starts an
    /// agent on it; with `http`, waits until its local API answers.
    pub async fn start(dir: &Path, config: &str, http: bool) -> Self {
        std::fs::create_dir_all(dir).expect("agent dir");
        let state_dir = dir.join("agent-state");
        // Port 0: the agent logs the address it bound, and `spawn` reads it back.
        let text = format!(
            "state_dir = {:?}\nhttp_addr = \"{}\"\n{config}",
            state_dir.display().to_string(),
            if http { "127.0.0.1:0" } else { "" }
        );
        let path = dir.join("agent.toml");
        std::fs::write(&path, text).expect("write agent config");
        let mut agent = Self {
            child: None,
            config: path,
            state_dir,
            http: None,
            wants_http: http,
            log: dir.join("agent.log"),
            starts: 0,
        };
        agent.spawn().await;
        agent
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        self.starts += 1;
        // Counted before the process starts, so that its own line is the one waited for.
        const MARK: &str = "listening addr=";
        let before = self.log().matches(MARK).count();
        let child = Command::new(bin_path("watchtrail-agent"))
            .arg("--config")
            .arg(&self.config)
            .env(
                "WATCHTRAIL_AGENT_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn watchtrail-agent");
        self.child = Some(child);
        if self.wants_http {
            // The address this start bound: the `listening addr=` line it added to the log.
            let deadline = Instant::now() + Duration::from_secs(30);
            let addr = loop {
                let log = self.log();
                if log.matches(MARK).count() > before
                    && let Some(addr) = log
                        .rsplit(MARK)
                        .next()
                        .and_then(|rest| rest.split_whitespace().next())
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                {
                    break addr;
                }
                if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                    panic!("agent exited with {status}:\n{log}");
                }
                assert!(
                    Instant::now() < deadline,
                    "the agent's local API never listened:\n{log}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            self.http = Some(addr);
        }
    }

    /// Kills the agent with SIGKILL.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Kills it (SIGKILL) and starts it again on the same configuration and state.
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.spawn().await;
    }

    /// Sends SIGTERM and waits for a clean exit.
    ///
    /// # Panics
    /// When the exit is not clean within 30 s.
    pub async fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            sigterm_and_wait(c, "agent", Duration::from_secs(30), &self.log).await;
        }
    }

    /// Its log so far (every start).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One counter from its `/metrics`.
    pub async fn counter(&self, name: &str) -> u64 {
        let addr = self.http.expect("the agent has no local API");
        let (_, body) = http_get(addr, "/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from the agent's /metrics:\n{body}"))
    }
}

/// One integer from a SQL query over HTTP (first row, first column).
pub async fn sql_count(server: &TestServer, sql: &str) -> i64 {
    let a = server.http_query(sql, "application/json").await;
    assert_eq!(a.status, 200, "{sql}: {}", a.text());
    let v = a.json();
    let row = &v["rows"][0];
    let first = row
        .as_object()
        .and_then(|o| o.values().next().cloned())
        .or_else(|| row.as_array().and_then(|a| a.first().cloned()))
        .unwrap_or_default();
    first
        .as_i64()
        .unwrap_or_else(|| panic!("{sql}: no integer in {v}"))
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
