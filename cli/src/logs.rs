//! `watchtrail logs`: log groups and their retention policies, as `aws logs` has them.

use anyhow::bail;
use serde_json::json;

use super::alarms::{Api, print};
use super::client::ConnectionArgs;
use watchtrail_storage::lifecycle::RETENTION_DAYS;

/// `watchtrail logs` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum LogsCommand {
    /// Lists log groups with their first event, event count and retention.
    DescribeLogGroups {
        /// Only groups whose name starts with this.
        #[arg(long)]
        log_group_name_prefix: Option<String>,
    },
    /// Keeps a log group's events this many days (one of CloudWatch Logs' values), in place of
    /// the server's `--retention-logs`.
    PutRetentionPolicy {
        /// The log group.
        #[arg(long)]
        log_group_name: String,
        /// 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
        /// 2557, 2922, 3288 or 3653.
        #[arg(long)]
        retention_in_days: u32,
    },
    /// Removes a log group's own retention: the server's `--retention-logs` applies again.
    DeleteRetentionPolicy {
        /// The log group.
        #[arg(long)]
        log_group_name: String,
    },
}

/// Runs `watchtrail logs`.
///
/// # Errors
/// A value refused here or by the server, or the server unreachable.
pub async fn logs(conn: &ConnectionArgs, cmd: LogsCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let api = Api::new(conn)?;
    match cmd {
        LogsCommand::DescribeLogGroups {
            log_group_name_prefix,
        } => {
            let query: Vec<(&str, String)> = log_group_name_prefix
                .map(|p| ("prefix", p))
                .into_iter()
                .collect();
            print(
                &api.call(Method::GET, &["v1", "log-groups"], &query, None)
                    .await?,
            );
        }
        LogsCommand::PutRetentionPolicy {
            log_group_name,
            retention_in_days,
        } => {
            if !RETENTION_DAYS.contains(&retention_in_days) {
                bail!("--retention-in-days: {retention_in_days} is not one of {RETENTION_DAYS:?}");
            }
            api.call(
                Method::PUT,
                &["v1", "log-groups", &log_group_name, "retention"],
                &[],
                Some(&json!({"retentionInDays": retention_in_days})),
            )
            .await?;
            println!("{log_group_name}: events kept {retention_in_days} days");
        }
        LogsCommand::DeleteRetentionPolicy { log_group_name } => {
            api.call(
                Method::DELETE,
                &["v1", "log-groups", &log_group_name, "retention"],
                &[],
                None,
            )
            .await?;
            println!("{log_group_name}: retention policy deleted");
        }
    }
    Ok(())
}
