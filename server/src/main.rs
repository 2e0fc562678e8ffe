//! `watchtrail-server`: parses flags, sets up logging, binds the ports and runs
//! [`watchtrail_server::serve`] until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use watchtrail_server::{Listeners, ServerArgs};

fn main() -> ExitCode {
    watchtrail_server::tls::install_crypto_provider();
    let args = ServerArgs::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("watchtrail-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = args.validate().map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the runtime")?;
    runtime.block_on(async {
        let grpc = tokio::net::TcpListener::bind(args.grpc_addr)
            .await
            .with_context(|| format!("failed to bind gRPC on {}", args.grpc_addr))?;
        let http = tokio::net::TcpListener::bind(args.http_addr)
            .await
            .with_context(|| format!("failed to bind HTTP on {}", args.http_addr))?;
        if let Some(path) = &args.listen_addr_file {
            let text = format!("{}\n{}\n", grpc.local_addr()?, http.local_addr()?);
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).context("failed to write --listen-addr-file")?;
            std::fs::rename(&tmp, path).context("failed to write --listen-addr-file")?;
        }
        let agent_stop = tokio_util::sync::CancellationToken::new();
        let agent = if args.agent {
            let child = watchtrail_server::agent_child::AgentChild::prepare(
                &args.wal_dir,
                args.agent_config.as_deref(),
                grpc.local_addr()?,
                config.auth.agent_key_file.as_deref(),
                config.auth.ready.clone(),
            )?;
            Some(tokio::spawn(child.supervise(agent_stop.clone())))
        } else {
            None
        };
        // The agent stops first, so that its last batches reach this server before it drains.
        let shutdown = async move {
            shutdown_signal().await;
            agent_stop.cancel();
            if let Some(a) = agent {
                let _ = a.await;
            }
        };
        watchtrail_server::serve(config, Listeners { grpc, http }, None, shutdown).await?;
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown signal received");
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
