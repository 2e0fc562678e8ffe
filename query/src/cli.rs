//! The `watchtrail` command line: CloudWatch-style commands against a server.
//!
//! # Layout
//! - [`client`]: the gRPC connection, tenant header and retries.
//! - [`put`]: `put-metric` and `put-log-events`.
//! - [`import`]: `import` of CloudTrail delivery files.

pub mod client;
pub mod import;
pub mod put;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `watchtrail`: put metrics and logs, import CloudTrail files.
#[derive(Debug, Parser)]
#[command(name = "watchtrail", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub connection: client::ConnectionArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publishes one metric datapoint (like `aws cloudwatch put-metric-data`).
    PutMetric(put::PutMetricArgs),
    /// Sends lines from files or standard input as log events (like `aws logs put-log-events`).
    PutLogEvents(put::PutLogEventsArgs),
    /// Imports CloudTrail delivery files (`{"Records":[...]}`, `.json` or `.json.gz`), files or
    /// directories (recursively), into the `audit` table.
    Import(import::ImportArgs),
}

/// Runs the CLI; the binary's `main` only calls this.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WATCHTRAIL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("watchtrail: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::PutMetric(a) => put::put_metric(&cli.connection, a).await,
            Command::PutLogEvents(a) => put::put_log_events(&cli.connection, a).await,
            Command::Import(a) => import::import(&cli.connection, a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("watchtrail: {e:#}");
            ExitCode::FAILURE
        }
    }
}
