//! TLS on both ports, with rustls: `--tls-cert` and `--tls-key` (PEM) turn it on, and
//! `--tls-client-ca` makes it mutual (every client must show a certificate that CA signed).
//!
//! gRPC uses tonic's own rustls acceptor. HTTP goes through [`TlsListener`]: handshakes run in
//! tasks of their own (at most [`HANDSHAKE_TIMEOUT`] each), so a client that stalls its
//! handshake holds up nobody else, and only finished connections reach the HTTP server.
//! [`LimitedListener`] caps the HTTP connections open at once, with or without TLS, and
//! [`limited_grpc_incoming`] the gRPC ones.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::debug;

/// Makes ring the process's rustls provider. Several crates of the tree enable rustls with
/// different providers, and then rustls cannot pick one by itself; call this before any TLS.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA that client certificates must chain to; none: no client certificates.
    pub client_ca: Option<PathBuf>,
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{what}: cannot read {}", path.display()))
}

impl TlsConfig {
    /// The configuration of tonic's acceptor.
    ///
    /// # Errors
    /// A file that cannot be read.
    pub fn grpc(&self) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
        let identity = tonic::transport::Identity::from_pem(
            read(&self.cert, "--tls-cert")?,
            read(&self.key, "--tls-key")?,
        );
        let mut c = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            c = c.client_ca_root(tonic::transport::Certificate::from_pem(read(
                ca,
                "--tls-client-ca",
            )?));
        }
        Ok(c)
    }

    /// The rustls configuration of the HTTP port.
    ///
    /// # Errors
    /// Files that cannot be read or hold no certificate or key; a key that does not match.
    pub fn rustls(&self) -> anyhow::Result<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read(&self.cert, "--tls-cert")?)
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("--tls-cert {}: {e}", self.cert.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "--tls-cert {}: no certificate in the file",
            self.cert.display()
        );
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key, "--tls-key")?)
            .map_err(|e| anyhow::anyhow!("--tls-key {}: {e}", self.key.display()))?;
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(&read(ca, "--tls-client-ca")?) {
                    let c =
                        c.map_err(|e| anyhow::anyhow!("--tls-client-ca {}: {e}", ca.display()))?;
                    roots
                        .add(c)
                        .map_err(|e| anyhow::anyhow!("--tls-client-ca {}: {e}", ca.display()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| anyhow::anyhow!("--tls-client-ca {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .context("--tls-cert and --tls-key do not make a pair")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// A listener that hands out connections once their TLS handshake is done.
#[derive(Debug)]
pub struct TlsListener {
    rx: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp`, shaking hands with `config`.
    ///
    /// # Errors
    /// The socket's address cannot be read.
    pub fn new(tcp: TcpListener, config: rustls::ServerConfig) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// How long a new connection may take to send its first [`FIRST_BYTES`] bytes (an HTTP/2
/// preface is 24; any HTTP/1 request line and `Host` header is more). Past it the connection is
/// closed: a socket that says nothing must not hold a slot.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// See [`FIRST_BYTES_TIMEOUT`].
pub const FIRST_BYTES: usize = 24;

/// The connection limits of one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; past it the server stops accepting until one closes.
    pub max: usize,
    /// Connections one source address may hold at once; past it its new ones are closed at
    /// once, so that one address cannot take every slot.
    pub per_source: usize,
}

/// Open connections per source address, shared by a port's connections.
#[derive(Debug, Default)]
struct Sources(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

impl Sources {
    /// A hold on one of `ip`'s connections, if it has fewer than `max`.
    fn enter(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<SourceHold> {
        let mut m = crate::wal::lock(&self.0);
        let n = m.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceHold {
            sources: Arc::clone(self),
            ip,
        })
    }
}

/// Gives its source's count back when the connection closes.
#[derive(Debug)]
struct SourceHold {
    sources: Arc<Sources>,
    ip: std::net::IpAddr,
}

impl Drop for SourceHold {
    fn drop(&mut self) {
        let mut m = crate::wal::lock(&self.sources.0);
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// A listener that holds at most so many connections open at once (`--max-http-connections`)
/// and so many per source address (`--max-connections-per-source`): past the first it stops
/// accepting until one closes, so excess clients wait in the kernel's backlog instead of
/// costing the server memory and tasks; past the second it closes the new connection.
#[derive(Debug)]
pub struct LimitedListener<L> {
    inner: L,
    slots: Arc<tokio::sync::Semaphore>,
    sources: Arc<Sources>,
    per_source: usize,
}

impl<L> LimitedListener<L> {
    /// `inner`, within `limits`.
    pub fn new(inner: L, limits: ConnectionLimits) -> Self {
        Self {
            inner,
            slots: Arc::new(tokio::sync::Semaphore::new(limits.max.max(1))),
            sources: Arc::default(),
            per_source: limits.per_source.max(1),
        }
    }
}

/// A connection that gives its slots back when it closes, and is closed if it does not send
/// its first [`FIRST_BYTES`] bytes within [`FIRST_BYTES_TIMEOUT`].
#[derive(Debug)]
pub struct Limited<Io> {
    io: Io,
    _slot: tokio::sync::OwnedSemaphorePermit,
    _source: SourceHold,
    read: usize,
    first_bytes_deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<Io> Limited<Io> {
    fn new(io: Io, slot: tokio::sync::OwnedSemaphorePermit, source: SourceHold) -> Self {
        Self {
            io,
            _slot: slot,
            _source: source,
            read: 0,
            first_bytes_deadline: Some(Box::pin(tokio::time::sleep(FIRST_BYTES_TIMEOUT))),
        }
    }
}

impl<Io: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Limited<Io> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future as _;
        let before = buf.filled().len();
        let this = &mut *self;
        let r = std::pin::Pin::new(&mut this.io).poll_read(cx, buf);
        match &r {
            std::task::Poll::Ready(Ok(())) => {
                this.read += buf.filled().len() - before;
                if this.read >= FIRST_BYTES {
                    this.first_bytes_deadline = None;
                }
            }
            std::task::Poll::Pending => {
                if let Some(d) = &mut this.first_bytes_deadline
                    && d.as_mut().poll(cx).is_ready()
                {
                    return std::task::Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "the connection sent {} bytes in {FIRST_BYTES_TIMEOUT:?}",
                            this.read
                        ),
                    )));
                }
            }
            std::task::Poll::Ready(Err(_)) => {}
        }
        r
    }
}

impl<Io: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Limited<Io> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<L: axum::serve::Listener<Addr = SocketAddr>> axum::serve::Listener for LimitedListener<L> {
    type Io = Limited<L::Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let slot = match Arc::clone(&self.slots).acquire_owned().await {
                Ok(s) => s,
                // The semaphore is never closed.
                Err(_) => std::future::pending().await,
            };
            let (io, addr) = self.inner.accept().await;
            match self.sources.enter(addr.ip(), self.per_source) {
                Some(source) => return (Limited::new(io, slot, source), addr),
                None => debug!(%addr, "closed: its address holds --max-connections-per-source"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The gRPC listener's connections within `limits`: past the total the server stops accepting
/// (new clients wait in the kernel's backlog) until one closes; past the per-source bound a new
/// connection is closed at once.
pub fn limited_grpc_incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> impl futures::Stream<Item = std::io::Result<Limited<TcpStream>>> + Send + 'static {
    use futures::StreamExt as _;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max.max(1)));
    let sources: Arc<Sources> = Arc::default();
    let per_source = limits.per_source.max(1);
    futures::stream::unfold(
        (incoming, slots, sources),
        move |(mut incoming, slots, sources)| async move {
            loop {
                // The semaphore is never closed, so `ok()?` never ends the stream.
                let slot = Arc::clone(&slots).acquire_owned().await.ok()?;
                let io = match incoming.next().await? {
                    Ok(io) => io,
                    Err(e) => return Some((Err(e), (incoming, slots, sources))),
                };
                let Ok(peer) = io.peer_addr() else {
                    continue;
                };
                match sources.enter(peer.ip(), per_source) {
                    Some(source) => {
                        return Some((
                            Ok(Limited::new(io, slot, source)),
                            (incoming, slots, sources),
                        ));
                    }
                    None => debug!(%peer, "closed: its address holds --max-connections-per-source"),
                }
            }
        },
    )
}

impl tonic::transport::server::Connected for Limited<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
