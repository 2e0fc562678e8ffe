//! `watchtrail alarms`, `watchtrail metric-filters` and `watchtrail destinations`: the alarm API
//! over HTTP. Definitions come from TOML or JSON files with CloudWatch's field names, checked
//! here before they are sent (the server checks them again).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::client::ConnectionArgs;
use watchtrail_query::alarm::MetricFilter;

/// `watchtrail alarms ...`
#[derive(Debug, clap::Subcommand)]
pub enum AlarmsCommand {
    /// Creates or replaces alarms from TOML or JSON files (PutMetricAlarm fields; `Query` for SQL
    /// alarms). A file holds one alarm, a JSON array, or TOML `[[alarms]]` tables; a directory
    /// means every `.json` and `.toml` file in it.
    Put {
        /// Files or directories.
        #[arg(long = "file", short = 'f', required = true)]
        files: Vec<PathBuf>,
    },
    /// Lists alarms with their state.
    List {
        /// Only alarms whose name starts with this.
        #[arg(long)]
        alarm_name_prefix: Option<String>,
        /// Only alarms in this state (OK, ALARM, INSUFFICIENT_DATA).
        #[arg(long)]
        state_value: Option<String>,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        output: String,
    },
    /// Shows one alarm, its configuration and state (as DescribeAlarms does).
    Describe {
        /// The alarm.
        name: String,
    },
    /// Deletes an alarm (its history stays).
    Delete {
        /// The alarm.
        name: String,
    },
    /// Shows state changes and configuration updates, newest first.
    History {
        /// The alarm (all alarms when left out).
        name: Option<String>,
        /// StateUpdate, ConfigurationUpdate or Action.
        #[arg(long)]
        history_item_type: Option<String>,
        /// At most this many items.
        #[arg(long, default_value_t = 100)]
        max_records: usize,
    },
    /// Sets an alarm's state until its next evaluation (as SetAlarmState does); a change
    /// notifies as usual, which makes this the way to test notifications.
    SetState {
        /// The alarm.
        name: String,
        /// OK, ALARM or INSUFFICIENT_DATA.
        #[arg(long)]
        state_value: String,
        /// Why.
        #[arg(long)]
        state_reason: String,
        /// JSON reason data.
        #[arg(long)]
        state_reason_data: Option<String>,
    },
}

/// `watchtrail metric-filters ...`
#[derive(Debug, clap::Subcommand)]
pub enum FiltersCommand {
    /// Creates or replaces metric filters from TOML or JSON files (PutMetricFilter fields;
    /// `logGroupName = "audit"` reads the audit trail).
    Put {
        /// Files or directories.
        #[arg(long = "file", short = 'f', required = true)]
        files: Vec<PathBuf>,
    },
    /// Lists metric filters.
    List,
    /// Deletes a metric filter.
    Delete {
        /// The filter.
        name: String,
    },
    /// Makes the points a filter would have made from events stored before it was created
    /// (a filter counts events from its creation on, as in CloudWatch).
    Backfill(crate::backfill::BackfillArgs),
}

/// `watchtrail destinations ...`
#[derive(Debug, clap::Subcommand)]
pub enum DestinationsCommand {
    /// Creates or replaces a webhook destination; alarm actions name it.
    Put {
        /// Its name.
        name: String,
        /// Where notifications are POSTed.
        #[arg(long)]
        url: String,
        /// Shared secret for the `X-Watchtrail-Signature` HMAC (env WATCHTRAIL_WEBHOOK_SECRET).
        #[arg(long, env = "WATCHTRAIL_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Extra header, `Name=value` (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
        /// `cloudwatch` (the alarm state-change event) or `alertmanager`.
        #[arg(long, default_value = "cloudwatch")]
        format: String,
    },
    /// Lists destinations (secrets hidden).
    List,
    /// Deletes a destination.
    Delete {
        /// Its name.
        name: String,
    },
}

/// The HTTP side of the server.
pub(crate) struct Api {
    base: url::Url,
    credentials: super::client::Credentials,
    http: reqwest::Client,
}

impl Api {
    pub(crate) fn new(conn: &ConnectionArgs) -> anyhow::Result<Self> {
        let credentials = conn.credentials()?;
        let base = url::Url::parse(&conn.http)
            .with_context(|| format!("invalid --http `{}`", conn.http))?;
        Ok(Self {
            base,
            credentials,
            http: conn.http_client()?,
        })
    }

    fn url(&self, segments: &[&str]) -> anyhow::Result<url::Url> {
        let mut u = self.base.clone();
        u.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("--http `{}` cannot take a path", self.base))?
            .pop_if_empty()
            .extend(segments);
        Ok(u)
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = self.url(segments)?;
        let mut req = self
            .credentials
            .apply_http(self.http.request(method, url.clone()))
            .query(query);
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {url}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if !status.is_success() {
            let msg = v["error"]["message"]
                .as_str()
                .map_or(text.clone(), str::to_string);
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        Ok(v)
    }
}

/// Reads definitions from files and directories: each becomes one or more JSON objects.
fn read_definitions(paths: &[PathBuf], list_key: &str) -> anyhow::Result<Vec<(PathBuf, Value)>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("{}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "json" || x == "toml"))
                .collect();
            inner.sort();
            files.extend(inner);
        } else {
            files.push(p.clone());
        }
    }
    let mut out = Vec::new();
    for f in files {
        for v in parse_file(&f, list_key)? {
            out.push((f.clone(), v));
        }
    }
    Ok(out)
}

fn parse_file(path: &Path, list_key: &str) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: Value = if path.extension().is_some_and(|x| x == "toml") {
        toml::from_str(&text).with_context(|| format!("{}: not valid TOML", path.display()))?
    } else {
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", path.display()))?
    };
    Ok(match v {
        Value::Array(items) => items,
        Value::Object(mut o) if o.len() == 1 && o.contains_key(list_key) => {
            match o.remove(list_key) {
                Some(Value::Array(items)) => items,
                _ => bail!("{}: `{list_key}` must be a list", path.display()),
            }
        }
        other => vec![other],
    })
}

pub(crate) fn print(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// Runs `watchtrail alarms`.
///
/// # Errors
/// A definition refused here or by the server, or the server unreachable.
pub async fn alarms(conn: &ConnectionArgs, cmd: AlarmsCommand) -> anyhow::Result<()> {
    let api = Api::new(conn)?;
    use reqwest::Method;
    match cmd {
        AlarmsCommand::Put { files } => {
            let defs = read_definitions(&files, "alarms")?;
            if defs.is_empty() {
                bail!("no alarm definitions found");
            }
            for (file, v) in defs {
                let def = watchtrail_query::alarm::parse_definition(v)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                let body = serde_json::to_value(&def)?;
                let r = api
                    .call(
                        Method::PUT,
                        &["v1", "alarms", &def.alarm_name],
                        &[],
                        Some(&body),
                    )
                    .await
                    .with_context(|| format!("{}: alarm `{}`", file.display(), def.alarm_name))?;
                let what = if r["Created"] == true {
                    "created"
                } else {
                    "updated"
                };
                println!("{what} alarm {}", def.alarm_name);
            }
        }
        AlarmsCommand::List {
            alarm_name_prefix,
            state_value,
            output,
        } => {
            let mut q = Vec::new();
            if let Some(p) = alarm_name_prefix {
                q.push(("AlarmNamePrefix", p));
            }
            if let Some(s) = state_value {
                q.push(("StateValue", s));
            }
            let v = api.call(Method::GET, &["v1", "alarms"], &q, None).await?;
            if output == "json" {
                print(&v);
            } else {
                let rows = v["MetricAlarms"].as_array().cloned().unwrap_or_default();
                println!(
                    "{:<40} {:<18} {:<40} STATE SINCE",
                    "NAME", "STATE", "WATCHES"
                );
                for a in rows {
                    let watches = match a["Query"].as_str() {
                        Some(q) => format!("SQL: {}", q.chars().take(34).collect::<String>()),
                        None => format!(
                            "{} {}/{}",
                            a["Statistic"]
                                .as_str()
                                .or(a["ExtendedStatistic"].as_str())
                                .unwrap_or(""),
                            a["Namespace"].as_str().unwrap_or(""),
                            a["MetricName"].as_str().unwrap_or("")
                        ),
                    };
                    println!(
                        "{:<40} {:<18} {:<40} {}",
                        a["AlarmName"].as_str().unwrap_or(""),
                        a["StateValue"].as_str().unwrap_or(""),
                        watches,
                        a["StateTransitionedTimestamp"].as_str().unwrap_or("")
                    );
                }
            }
        }
        AlarmsCommand::Describe { name } => {
            print(
                &api.call(Method::GET, &["v1", "alarms", &name], &[], None)
                    .await?,
            );
        }
        AlarmsCommand::Delete { name } => {
            api.call(Method::DELETE, &["v1", "alarms", &name], &[], None)
                .await?;
            println!("deleted alarm {name}");
        }
        AlarmsCommand::History {
            name,
            history_item_type,
            max_records,
        } => {
            let mut q = vec![("MaxRecords", max_records.to_string())];
            if let Some(t) = history_item_type {
                q.push(("HistoryItemType", t));
            }
            let v = match &name {
                Some(n) => {
                    api.call(Method::GET, &["v1", "alarms", n, "history"], &q, None)
                        .await?
                }
                None => {
                    api.call(Method::GET, &["v1", "alarm-history"], &q, None)
                        .await?
                }
            };
            print(&v);
        }
        AlarmsCommand::SetState {
            name,
            state_value,
            state_reason,
            state_reason_data,
        } => {
            let body = json!({
                "StateValue": state_value,
                "StateReason": state_reason,
                "StateReasonData": state_reason_data,
            });
            api.call(
                Method::PUT,
                &["v1", "alarms", &name, "state"],
                &[],
                Some(&body),
            )
            .await?;
            println!("alarm {name} set to {state_value}");
        }
    }
    Ok(())
}

/// Runs `watchtrail metric-filters`.
///
/// # Errors
/// A definition refused here or by the server, or the server unreachable.
pub async fn metric_filters(conn: &ConnectionArgs, cmd: FiltersCommand) -> anyhow::Result<()> {
    let api = Api::new(conn)?;
    use reqwest::Method;
    match cmd {
        FiltersCommand::Put { files } => {
            let defs = read_definitions(&files, "metricFilters")?;
            if defs.is_empty() {
                bail!("no metric filter definitions found");
            }
            for (file, v) in defs {
                let f = MetricFilter::from_value(v)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                let body = serde_json::to_value(&f)?;
                api.call(
                    Method::PUT,
                    &["v1", "metric-filters", &f.filter_name],
                    &[],
                    Some(&body),
                )
                .await
                .with_context(|| {
                    format!("{}: metric filter `{}`", file.display(), f.filter_name)
                })?;
                println!("put metric filter {}", f.filter_name);
            }
        }
        FiltersCommand::List => {
            print(
                &api.call(Method::GET, &["v1", "metric-filters"], &[], None)
                    .await?,
            );
        }
        FiltersCommand::Delete { name } => {
            api.call(Method::DELETE, &["v1", "metric-filters", &name], &[], None)
                .await?;
            println!("deleted metric filter {name}");
        }
        FiltersCommand::Backfill(a) => crate::backfill::backfill(conn, a).await?,
    }
    Ok(())
}

/// Runs `watchtrail destinations`.
///
/// # Errors
/// A destination refused by the server, or the server unreachable.
pub async fn destinations(conn: &ConnectionArgs, cmd: DestinationsCommand) -> anyhow::Result<()> {
    let api = Api::new(conn)?;
    use reqwest::Method;
    match cmd {
        DestinationsCommand::Put {
            name,
            url,
            secret,
            headers,
            format,
        } => {
            let mut h = serde_json::Map::new();
            for kv in headers {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--header `{kv}`: expected Name=value"))?;
                h.insert(k.to_string(), Value::String(v.to_string()));
            }
            let body = json!({"Url": url, "Secret": secret, "Headers": h, "Format": format});
            api.call(
                Method::PUT,
                &["v1", "destinations", &name],
                &[],
                Some(&body),
            )
            .await?;
            println!("put destination {name}");
        }
        DestinationsCommand::List => {
            print(
                &api.call(Method::GET, &["v1", "destinations"], &[], None)
                    .await?,
            );
        }
        DestinationsCommand::Delete { name } => {
            api.call(Method::DELETE, &["v1", "destinations", &name], &[], None)
                .await?;
            println!("deleted destination {name}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use watchtrail_query::alarm::AlarmDefinition;

    #[test]
    fn toml_and_json_files_give_the_same_definition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let toml_path = dir.path().join("a.toml");
        std::fs::write(
            &toml_path,
            r#"
[[alarms]]
AlarmName = "cpu-high"
Namespace = "CWAgent"
MetricName = "cpu_usage_active"
Dimensions = [{ Name = "host", Value = "web-1" }]
Statistic = "Average"
Period = 60
EvaluationPeriods = 3
Threshold = 80.0
ComparisonOperator = "GreaterThanThreshold"
AlarmActions = ["oncall"]

[[alarms]]
AlarmName = "denied"
Query = "SELECT eventtime AS time, 1 AS value FROM audit WHERE errorcode = 'AccessDenied'"
Statistic = "Sum"
Period = 300
EvaluationPeriods = 1
Threshold = 1.0
ComparisonOperator = "GreaterThanOrEqualToThreshold"
"#,
        )
        .expect("write");
        let json_path = dir.path().join("b.json");
        std::fs::write(
            &json_path,
            r#"{"AlarmName": "cpu-high", "Namespace": "CWAgent", "MetricName": "cpu_usage_active",
                "Dimensions": [{"Name": "host", "Value": "web-1"}], "Statistic": "Average",
                "Period": 60, "EvaluationPeriods": 3, "Threshold": 80,
                "ComparisonOperator": "GreaterThanThreshold", "AlarmActions": ["oncall"]}"#,
        )
        .expect("write");
        let all = read_definitions(&[dir.path().to_path_buf()], "alarms").expect("read");
        assert_eq!(all.len(), 3);
        let defs: Vec<AlarmDefinition> = all
            .into_iter()
            .map(|(_, v)| watchtrail_query::alarm::parse_definition(v).expect("valid"))
            .collect();
        assert_eq!(defs[0], defs[2]);
        assert!(defs[1].query.is_some());
        std::fs::write(
            &json_path,
            r#"{"AlarmName": "x", "Namespace": "N", "MetricName": "M", "Statistic": "Sum",
                "Period": 45, "EvaluationPeriods": 1, "Threshold": 1,
                "ComparisonOperator": "GreaterThanThreshold"}"#,
        )
        .expect("write");
        let bad = read_definitions(&[json_path], "alarms").expect("read");
        let err = AlarmDefinition::from_value(bad[0].1.clone()).expect_err("refused");
        assert_eq!(err.field, "Period");
    }
}
