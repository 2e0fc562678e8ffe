//! `watchtrail verify`: checks the tenant's signed audit digests and recomputes what they cover,
//! through a server or straight against a store. Prints a summary in the shape of
//! `aws cloudtrail validate-logs`; fails (exit 1) when anything does not hold.

use anyhow::bail;
use watchtrail_storage::integrity::verify::{VerifyOptions, verify as verify_store};
use watchtrail_storage::store::Storage;

use crate::alarms::Api;
use crate::client::ConnectionArgs;
use crate::cloudwatch::parse_time;

/// `watchtrail verify` flags.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Windows from this time (ISO 8601).
    #[arg(long)]
    pub start_time: Option<String>,
    /// Windows before this time (ISO 8601).
    #[arg(long)]
    pub end_time: Option<String>,
    /// Read this store directly (`file:///dir`, `s3://bucket/prefix`) instead of asking a server.
    #[arg(long, env = "WATCHTRAIL_VERIFY_STORE")]
    pub store: Option<String>,
    /// With --store: trust only keys with this fingerprint (repeatable); by default every key
    /// published in the store is trusted, which an attacker with write access to the bucket could
    /// add to. Pin the fingerprints the server printed at start.
    #[arg(long = "trust-key")]
    pub trust_keys: Vec<String>,
    /// With --store: the servers' `--audit-digest-delay`.
    #[arg(long, default_value = "15m", value_parser = watchtrail_query::units::parse_duration)]
    pub digest_delay: std::time::Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `watchtrail verify`.
///
/// # Errors
/// Bad flags, an unreachable server or store, or a verification that failed.
pub async fn verify(conn: &ConnectionArgs, a: VerifyArgs) -> anyhow::Result<()> {
    let ms = |flag: &str, v: &Option<String>| {
        v.as_deref()
            .map(|t| parse_time(flag, t).map(|us| us.div_euclid(1000)))
            .transpose()
    };
    let start_ms = ms("--start-time", &a.start_time)?;
    let end_ms = ms("--end-time", &a.end_time)?;
    let (valid, summary, json) = match &a.store {
        Some(url) => {
            let storage = Storage::from_url(url)?;
            let options = VerifyOptions {
                tenant: conn.store_tenant()?,
                start_ms,
                end_ms,
                trusted_keys: (!a.trust_keys.is_empty()).then(|| a.trust_keys.clone()),
                delay_ms: i64::try_from(a.digest_delay.as_millis()).unwrap_or(i64::MAX),
                now_ms: chrono::Utc::now().timestamp_millis(),
            };
            let report = verify_store(&storage, &options).await?;
            (
                report.is_valid(),
                report.summary(start_ms, end_ms),
                report.to_json(start_ms, end_ms),
            )
        }
        None => {
            if !a.trust_keys.is_empty() {
                bail!(
                    "--trust-key goes with --store (a server verifies with the keys it published)"
                );
            }
            let api = Api::new(conn)?;
            let rfc = |ms: Option<i64>| ms.map(watchtrail_storage::integrity::digest::format_time);
            let mut query = Vec::new();
            if let Some(s) = rfc(start_ms) {
                query.push(("startTime", s));
            }
            if let Some(e) = rfc(end_ms) {
                query.push(("endTime", e));
            }
            let v = api
                .call(
                    reqwest::Method::GET,
                    &["v1", "audit", "verify"],
                    &query,
                    None,
                )
                .await?;
            (
                v["valid"].as_bool().unwrap_or(false),
                v["summary"].as_str().unwrap_or_default().to_string(),
                v,
            )
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{summary}");
    }
    if !valid {
        bail!("the audit trail did not verify");
    }
    Ok(())
}
