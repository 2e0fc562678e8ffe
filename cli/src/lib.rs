//! The `watchtrail` command line: SQL and CloudWatch-style commands against a server or a store.
//!
//! # Layout
//! - [`client`]: the gRPC connection, tenant header and retries.
//! - [`put`]: `put-metric` and `put-log-events`.
//! - [`import`]: `import` of CloudTrail delivery files.
//! - [`query`]: `query` and the interactive shell.
//! - [`cloudwatch`]: `list-metrics` and `get-metric-statistics`.
//! - [`alarms`]: `alarms`, `metric-filters` and `destinations` over the HTTP API.
//! - [`keys`]: `keys` (API keys) over the HTTP API or straight in a store.
//! - [`logs`]: `logs` (log groups and their retention policies) over the HTTP API.

pub mod alarms;
pub mod aws_digests;
pub mod backfill;
pub mod client;
pub mod cloudwatch;
pub mod import;
pub mod keys;
pub mod logs;
pub mod put;
pub mod query;
pub mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `watchtrail`: query with SQL, put metrics and logs, import CloudTrail files.
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
    /// Runs SQL over the tenant's `metrics`, `logs` and `audit` tables; with no SQL, starts an
    /// interactive shell.
    Query(query::QueryArgs),
    /// Lists metrics (like `aws cloudwatch list-metrics`).
    ListMetrics(cloudwatch::ListMetricsArgs),
    /// Statistics of one metric per period (like `aws cloudwatch get-metric-statistics`).
    GetMetricStatistics(cloudwatch::GetMetricStatisticsArgs),
    /// Alarms: put (TOML or JSON, PutMetricAlarm fields), list, describe, delete, history,
    /// set-state.
    #[command(subcommand)]
    Alarms(alarms::AlarmsCommand),
    /// Metric filters (CloudWatch filter patterns over logs and the audit trail): put, list,
    /// delete, backfill.
    #[command(subcommand)]
    MetricFilters(alarms::FiltersCommand),
    /// Webhook destinations that alarm actions name: put, list, delete.
    #[command(subcommand)]
    Destinations(alarms::DestinationsCommand),
    /// Log groups (like `aws logs`): describe-log-groups, put-retention-policy,
    /// delete-retention-policy.
    #[command(subcommand)]
    Logs(logs::LogsCommand),
    /// API keys: create (prints the token once), list, revoke.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Verifies the audit trail: every signed digest (signature, key, chain) and the events each
    /// covers, recomputed from the table (like `aws cloudtrail validate-logs`); exits 1 when
    /// anything does not hold.
    Verify(verify::VerifyArgs),
}

/// Runs the CLI; the binary's `main` only calls this.
pub fn main() -> ExitCode {
    // Several crates of the tree enable rustls with different providers; pick one.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WATCHTRAIL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Local queries (`--store`) plan and run on these threads.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(watchtrail_query::engine::shape::QUERY_THREAD_STACK_BYTES)
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
            Command::Query(a) => query::query(&cli.connection, a).await,
            Command::ListMetrics(a) => cloudwatch::list_metrics(&cli.connection, a).await,
            Command::GetMetricStatistics(a) => {
                cloudwatch::get_metric_statistics(&cli.connection, a).await
            }
            Command::Alarms(c) => alarms::alarms(&cli.connection, c).await,
            Command::MetricFilters(c) => alarms::metric_filters(&cli.connection, c).await,
            Command::Destinations(c) => alarms::destinations(&cli.connection, c).await,
            Command::Logs(c) => logs::logs(&cli.connection, c).await,
            Command::Keys(c) => keys::keys(&cli.connection, c).await,
            Command::Verify(a) => verify::verify(&cli.connection, a).await,
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
