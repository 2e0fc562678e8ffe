//! `watchtrail-agent`: ships this host's metrics, log files and audit records to a Watchtrail
//! server. See `agent/watchtrail-agent.toml` for the configuration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tracing::{error, info, warn};
use watchtrail_agent::config::Config;
use watchtrail_agent::{collect, context, intake, ship};

/// Ships host metrics, log files and audit records to a Watchtrail server, exactly once.
#[derive(Debug, Parser)]
#[command(name = "watchtrail-agent", version)]
struct Args {
    /// Configuration file: TOML, or the CloudWatch agent's JSON (`*.json`).
    #[arg(long, env = "WATCHTRAIL_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC address of the server (overrides `server`).
    #[arg(long, env = "WATCHTRAIL_SERVER")]
    server: Option<String>,
    /// Directory for checkpoints and the buffer (overrides `state_dir`).
    #[arg(long, env = "WATCHTRAIL_AGENT_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Tenant of the data (overrides `tenant`).
    #[arg(long, env = "WATCHTRAIL_TENANT")]
    tenant: Option<String>,
    /// The API key (an `ingest` key; overrides `api_key`).
    #[arg(long, env = "WATCHTRAIL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// A file holding the API key (overrides `api_key_file`).
    #[arg(long, env = "WATCHTRAIL_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    /// Local API address for audit intake and /metrics (overrides `http_addr`; empty: off).
    #[arg(long, env = "WATCHTRAIL_AGENT_HTTP_ADDR")]
    http_addr: Option<String>,
    /// Host name used in the `host` dimension and `{hostname}` (overrides `hostname`).
    #[arg(long, env = "WATCHTRAIL_AGENT_HOSTNAME")]
    hostname: Option<String>,
    /// Check the configuration, print what it means, and exit.
    #[arg(long)]
    check_config: bool,
    /// Log filter (tracing syntax), e.g. `info` or `watchtrail_agent=debug`.
    #[arg(long, env = "WATCHTRAIL_AGENT_LOG", default_value = "info")]
    log: String,
}

/// TLS for an `https://` server: the system's roots, `tls_ca_file`, and a client certificate.
fn tls_config(
    config: &Config,
) -> anyhow::Result<Option<watchtrail_proto::tonic::transport::ClientTlsConfig>> {
    use watchtrail_proto::tonic::transport::{Certificate, ClientTlsConfig, Identity};
    if !config.server.starts_with("https://") {
        return Ok(None);
    }
    let read = |p: &std::path::Path, key: &str| {
        std::fs::read(p).map_err(|e| anyhow::anyhow!("{key}: cannot read {}: {e}", p.display()))
    };
    let mut tls = ClientTlsConfig::new().with_native_roots();
    if let Some(ca) = &config.tls_ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca, "tls_ca_file")?));
    }
    match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(c), Some(k)) => {
            tls = tls.identity(Identity::from_pem(
                read(c, "tls_cert_file")?,
                read(k, "tls_key_file")?,
            ));
        }
        (None, None) => {}
        _ => anyhow::bail!("tls_cert_file and tls_key_file go together"),
    }
    Ok(Some(tls))
}

fn load(args: &Args) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(s) = &args.server {
        config.server.clone_from(s);
    }
    if let Some(d) = &args.state_dir {
        config.state_dir.clone_from(d);
    }
    if let Some(t) = &args.tenant {
        config.tenant = Some(t.clone());
    }
    if let Some(h) = &args.http_addr {
        config.http_addr.clone_from(h);
    }
    if let Some(k) = &args.api_key {
        config.api_key = Some(k.clone());
    }
    if let Some(f) = &args.api_key_file {
        config.api_key_file = Some(f.clone());
    }
    if let Some(h) = &args.hostname {
        config.hostname = Some(h.clone());
    }
    config.validate()?;
    Ok(config)
}

fn describe(config: &Config) {
    println!("configuration is valid");
    println!("server:      {}", config.server);
    println!("state_dir:   {}", config.state_dir.display());
    println!(
        "tenant:      {}",
        config
            .tenant
            .as_deref()
            .unwrap_or(watchtrail_proto::DEFAULT_TENANT)
    );
    println!("buffer:      at most {} bytes", config.buffer.max_bytes);
    if config.metrics.enabled {
        let iv = config.metrics.interval;
        println!(
            "metrics:     every {iv:?} ({} resolution), namespace {}, {}",
            if iv < Duration::from_secs(60) {
                "high"
            } else {
                "standard"
            },
            config.metrics.namespace,
            config
                .metrics
                .measurements
                .as_ref()
                .map_or("all measurements".to_string(), |m| m.join(", "))
        );
    } else {
        println!("metrics:     off");
    }
    for (i, f) in config.logs.files.iter().enumerate() {
        let matched = glob::glob(&f.path)
            .map(|g| g.filter_map(Result::ok).count())
            .unwrap_or(0);
        println!(
            "logs[{i}]:     {} ({matched} files now) -> group {}, stream {}",
            f.path,
            f.log_group
                .as_deref()
                .unwrap_or("<path up to its last dot>"),
            f.log_stream.as_deref().unwrap_or("{hostname}")
        );
    }
    if let Some(d) = &config.audit.cloudtrail_dir {
        println!(
            "cloudtrail:  {} ({})",
            d.display(),
            if d.is_dir() { "exists" } else { "missing" }
        );
    }
    if !config.http_addr.is_empty() {
        println!(
            "local API:   http://{}/v1/audit, /metrics",
            config.http_addr
        );
    }
    if let Some(p) = &config.unix_socket {
        println!("unix socket: {}", p.display());
    }
}

fn main() -> ExitCode {
    // Several crates of the tree enable rustls with different providers; pick one.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    watchtrail_agent::limit_malloc();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("watchtrail-agent: {e:#}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        describe(&config);
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("watchtrail-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let ctx = context(&config)?;
    info!(
        server = %config.server,
        state_dir = %config.state_dir.display(),
        agent_id = %ctx.agent_id,
        host = %ctx.hostname,
        files = config.logs.files.len(),
        "watchtrail-agent starting"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if !config.http_addr.is_empty() {
        intake::serve_tcp(Arc::clone(&ctx), &config.http_addr, stop_rx.clone()).await?;
    }
    if let Some(p) = &config.unix_socket {
        intake::serve_unix(Arc::clone(&ctx), p, stop_rx.clone()).await?;
    }
    let api_key = match (&config.api_key, &config.api_key_file) {
        (Some(k), _) => Some(k.trim().to_string()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("api_key_file: cannot read {}: {e}", f.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let tls = tls_config(&config)?;
    let client = ship::Client::new(
        &config.server,
        config.tenant.as_deref(),
        api_key.as_deref(),
        tls,
        &config.shipping,
    )?;
    let (send_stop_tx, send_stop_rx) = tokio::sync::watch::channel(false);
    let sender = tokio::spawn(ship::run(
        Arc::clone(&ctx),
        client,
        config.shipping.clone(),
        send_stop_rx,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let (config, ctx, stop) = (config.clone(), Arc::clone(&ctx), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("collector".into())
            .spawn(move || collect(&config, &ctx, &stop))?
    };
    let collector_done = async {
        while !collector.is_finished() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        () = shutdown_signal() => info!("shutting down: writing out open batches"),
        () = collector_done => warn!("collector stopped"),
    }
    stop.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    while !collector.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match collector.join() {
        Ok(Err(e)) => error!("collector: {e:#}"),
        Err(_) => error!("collector thread panicked"),
        Ok(Ok(())) => {}
    }
    // Give the sender a moment to deliver what is buffered; the rest goes at the next start.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ctx.spool.pending() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = send_stop_tx.send(true);
    let _ = sender.await;
    info!(stats = %ctx.stats.summary(), pending = ctx.spool.pending(), "watchtrail-agent stopped");
    Ok(())
}
