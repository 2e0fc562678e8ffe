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

/// A listener that holds at most so many connections open at once (`--max-http-connections`):
/// past the limit it stops accepting until one closes, so excess clients wait in the kernel's
/// backlog instead of costing the server memory and tasks.
#[derive(Debug)]
pub struct LimitedListener<L> {
    inner: L,
    slots: Arc<tokio::sync::Semaphore>,
}

impl<L> LimitedListener<L> {
    /// `inner`, with at most `max` connections open.
    pub fn new(inner: L, max: usize) -> Self {
        Self {
            inner,
            slots: Arc::new(tokio::sync::Semaphore::new(max.max(1))),
        }
    }
}

/// A connection that gives its slot back when it closes.
#[derive(Debug)]
pub struct Limited<Io> {
    io: Io,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl<Io: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Limited<Io> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
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

impl<L: axum::serve::Listener> axum::serve::Listener for LimitedListener<L> {
    type Io = Limited<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let slot = match Arc::clone(&self.slots).acquire_owned().await {
            Ok(s) => s,
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        };
        let (io, addr) = self.inner.accept().await;
        (Limited { io, _slot: slot }, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The gRPC listener's connections, at most `max` open at once: past it the server stops
/// accepting (new clients wait in the kernel's backlog) until one closes.
pub fn limited_grpc_incoming(
    listener: TcpListener,
    max: usize,
) -> impl futures::Stream<Item = std::io::Result<Limited<TcpStream>>> + Send + 'static {
    use futures::StreamExt as _;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let slots = Arc::new(tokio::sync::Semaphore::new(max.max(1)));
    futures::stream::unfold((incoming, slots), |(mut incoming, slots)| async move {
        // The semaphore is never closed, so `ok()?` never ends the stream.
        let slot = Arc::clone(&slots).acquire_owned().await.ok()?;
        let next = incoming.next().await?;
        Some((
            next.map(|io| Limited { io, _slot: slot }),
            (incoming, slots),
        ))
    })
}

impl tonic::transport::server::Connected for Limited<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
