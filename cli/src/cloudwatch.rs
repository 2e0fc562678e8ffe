//! `list-metrics` and `get-metric-statistics`, shaped like `aws cloudwatch`'s: the same flags,
//! the same JSON answers, CloudWatch's rules for periods, statistics and dimensions. Both are
//! SQL underneath, run through [`Backend`].

use anyhow::bail;
use serde_json::{Value, json};
use watchtrail_query::cloudwatch::{self as cw, DimensionFilter, GetMetricStatistics, ListMetrics};

use super::client::ConnectionArgs;
use super::query::{Backend, BackendArgs};

/// A `Name=..,Value=..` dimension (the value is optional for `list-metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimensionArg {
    /// Dimension name.
    pub name: String,
    /// Dimension value.
    pub value: Option<String>,
}

/// Parses `Name=InstanceId,Value=i-1` (or `Name=InstanceId`).
///
/// # Errors
/// Anything else.
pub fn parse_dimension(s: &str) -> Result<DimensionArg, String> {
    let mut name = None;
    let mut value = None;
    for part in s.split(',') {
        match part.split_once('=') {
            Some(("Name", n)) if !n.is_empty() => name = Some(n.to_string()),
            Some(("Value", v)) => value = Some(v.to_string()),
            _ => return Err(format!("`{s}`: expected Name=<name>[,Value=<value>]")),
        }
    }
    let name = name.ok_or_else(|| format!("`{s}`: missing Name=<name>"))?;
    Ok(DimensionArg { name, value })
}

/// `watchtrail list-metrics` flags.
#[derive(Debug, clap::Args)]
pub struct ListMetricsArgs {
    /// Only metrics in this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only metrics with this name.
    #[arg(long)]
    pub metric_name: Option<String>,
    /// Only metrics with these dimensions (`Name=InstanceId,Value=i-1`; without Value, any
    /// value). A metric with more dimensions still matches. Up to 10.
    #[arg(long, num_args = 1.., value_parser = parse_dimension)]
    pub dimensions: Vec<DimensionArg>,
    /// Return at most this many metrics, with a NextToken for the rest.
    #[arg(long)]
    pub max_items: Option<usize>,
    /// The NextToken of a previous answer.
    #[arg(long)]
    pub starting_token: Option<String>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// `watchtrail get-metric-statistics` flags.
#[derive(Debug, clap::Args)]
pub struct GetMetricStatisticsArgs {
    /// Namespace of the metric.
    #[arg(long)]
    pub namespace: String,
    /// Name of the metric.
    #[arg(long)]
    pub metric_name: String,
    /// The metric's dimensions, all of them (`Name=InstanceId,Value=i-1`): the combination
    /// must match exactly.
    #[arg(long, num_args = 1.., value_parser = parse_dimension)]
    pub dimensions: Vec<DimensionArg>,
    /// First time, inclusive (ISO 8601, e.g. 2024-05-01T00:00:00Z).
    #[arg(long)]
    pub start_time: String,
    /// Last time, exclusive.
    #[arg(long)]
    pub end_time: String,
    /// Seconds per datapoint: 1, 5, 10, 20, 30 or a multiple of 60.
    #[arg(long)]
    pub period: i64,
    /// Any of SampleCount, Average, Sum, Minimum, Maximum.
    #[arg(long, num_args = 1..)]
    pub statistics: Vec<String>,
    /// Percentiles such as p99 or p99.9 (not together with --statistics).
    #[arg(long, num_args = 1..)]
    pub extended_statistics: Vec<String>,
    /// Only datapoints published with this unit.
    #[arg(long)]
    pub unit: Option<String>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Parses an ISO 8601 time (`2024-05-01T00:00:00Z`, with an offset, without one meaning UTC,
/// or a bare date) into microseconds.
pub(crate) fn parse_time(flag: &str, s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_micros());
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc().timestamp_micros());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_micros());
    }
    bail!("{flag}: `{s}` is not an ISO 8601 time such as 2024-05-01T00:00:00Z")
}

pub(crate) fn iso(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// A CloudWatch parameter name as this command's flag (`Period` -> `--period`).
fn flag_error(e: cw::Invalid) -> anyhow::Error {
    let mut flag = String::from("--");
    let base = e.field.split('.').next().unwrap_or(&e.field);
    for (i, c) in base.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            flag.push('-');
        }
        flag.push(c.to_ascii_lowercase());
    }
    anyhow::anyhow!("{flag}: {}", e.message)
}

/// Runs `watchtrail list-metrics`.
///
/// # Errors
/// Bad flags or the query's error.
pub async fn list_metrics(conn: &ConnectionArgs, args: ListMetricsArgs) -> anyhow::Result<()> {
    let answer = list_metrics_json(&Backend::new(conn, &args.backend)?, &args).await?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// The `list-metrics` answer as CloudWatch's JSON.
///
/// # Errors
/// Bad flags or the query's error.
pub async fn list_metrics_json(backend: &Backend, args: &ListMetricsArgs) -> anyhow::Result<Value> {
    let offset = match &args.starting_token {
        None => 0,
        Some(t) => {
            cw::parse_page_token("--starting-token", t).map_err(|e| anyhow::anyhow!("{e}"))?
        }
    };
    let list = ListMetrics {
        namespace: args.namespace.clone(),
        metric_name: args.metric_name.clone(),
        dimensions: args
            .dimensions
            .iter()
            .map(|d| DimensionFilter {
                name: d.name.clone(),
                value: d.value.clone(),
            })
            .collect(),
        recently_active: false,
        offset,
        page: args.max_items.unwrap_or(cw::LIST_PAGE),
    };
    let sql = list.sql().map_err(flag_error)?;
    let result = backend.run(&sql).await?;
    let (metrics, next) = list.answer(&result.batches).map_err(anyhow::Error::msg)?;
    let mut answer = serde_json::Map::new();
    if let Some(t) = next {
        answer.insert("NextToken".into(), json!(t));
    }
    let metrics: Vec<Value> = metrics
        .into_iter()
        .map(|m| {
            json!({
                "Namespace": m.namespace,
                "MetricName": m.metric_name,
                "Dimensions": m.dimensions.iter()
                    .map(|(n, v)| json!({ "Name": n, "Value": v }))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    answer.insert("Metrics".into(), Value::Array(metrics));
    Ok(Value::Object(answer))
}

/// The shared request behind `get-metric-statistics`, after checking the flags.
///
/// # Errors
/// A flag CloudWatch would refuse, named.
pub fn statistics_request(args: &GetMetricStatisticsArgs) -> anyhow::Result<GetMetricStatistics> {
    let mut dimensions = Vec::new();
    for d in &args.dimensions {
        let Some(v) = &d.value else {
            bail!("--dimensions: `{}` needs a Value", d.name);
        };
        dimensions.push((d.name.clone(), v.clone()));
    }
    let request = GetMetricStatistics {
        namespace: args.namespace.clone(),
        metric_name: args.metric_name.clone(),
        dimensions,
        start_us: parse_time("--start-time", &args.start_time)?,
        end_us: parse_time("--end-time", &args.end_time)?,
        period: args.period,
        statistics: args.statistics.clone(),
        extended_statistics: args.extended_statistics.clone(),
        unit: args.unit.clone(),
    };
    request.sql().map_err(flag_error)?;
    Ok(request)
}

/// Runs `watchtrail get-metric-statistics`.
///
/// # Errors
/// Bad flags or the query's error.
pub async fn get_metric_statistics(
    conn: &ConnectionArgs,
    args: GetMetricStatisticsArgs,
) -> anyhow::Result<()> {
    let backend = Backend::new(conn, &args.backend)?;
    let answer = get_metric_statistics_json(&backend, &args).await?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// The `get-metric-statistics` answer as CloudWatch's JSON.
///
/// # Errors
/// Bad flags or the query's error.
pub async fn get_metric_statistics_json(
    backend: &Backend,
    args: &GetMetricStatisticsArgs,
) -> anyhow::Result<Value> {
    let request = statistics_request(args)?;
    let (sql, _) = request.sql().map_err(flag_error)?;
    let result = backend.run(&sql).await?;
    let points: Vec<Value> = request
        .answer(&result.batches)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .map(|d| {
            let mut p = serde_json::Map::new();
            p.insert("Timestamp".into(), json!(iso(d.timestamp_us)));
            for (s, v) in d.statistics {
                p.insert(s, json!(v));
            }
            if !request.extended_statistics.is_empty() {
                p.insert("ExtendedStatistics".into(), json!(d.extended));
            }
            p.insert("Unit".into(), json!(d.unit));
            Value::Object(p)
        })
        .collect();
    Ok(json!({ "Label": args.metric_name, "Datapoints": points }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimension_flags_parse() {
        assert_eq!(
            parse_dimension("Name=InstanceId,Value=i-1"),
            Ok(DimensionArg {
                name: "InstanceId".into(),
                value: Some("i-1".into())
            })
        );
        assert_eq!(
            parse_dimension("Name=InstanceId"),
            Ok(DimensionArg {
                name: "InstanceId".into(),
                value: None
            })
        );
        assert!(parse_dimension("InstanceId=i-1").is_err());
        assert!(parse_dimension("Value=x").is_err());
    }

    #[test]
    fn percentiles_follow_the_grammar() {
        assert_eq!(watchtrail_query::alarm::parse_percentile("p99"), Some(0.99));
        assert!(
            watchtrail_query::alarm::parse_percentile("p99.9")
                .is_some_and(|p| (p - 0.999).abs() < 1e-12)
        );
        assert_eq!(watchtrail_query::alarm::parse_percentile("p100"), Some(1.0));
        assert_eq!(watchtrail_query::alarm::parse_percentile("p101"), None);
        assert_eq!(watchtrail_query::alarm::parse_percentile("99"), None);
        assert_eq!(
            watchtrail_query::alarm::parse_percentile("p9.12345678901"),
            None
        );
    }

    fn args(period: i64, stats: &[&str], ext: &[&str]) -> GetMetricStatisticsArgs {
        GetMetricStatisticsArgs {
            namespace: "App".into(),
            metric_name: "Latency".into(),
            dimensions: vec![],
            start_time: "2024-01-01T00:00:00Z".into(),
            end_time: "2024-01-02T00:00:00Z".into(),
            period,
            statistics: stats.iter().map(|s| s.to_string()).collect(),
            extended_statistics: ext.iter().map(|s| s.to_string()).collect(),
            unit: None,
            backend: BackendArgs {
                store: None,
                memory_limit: 1 << 30,
                timeout: std::time::Duration::from_secs(1),
            },
        }
    }

    #[test]
    fn cloudwatch_rules_are_checked() {
        assert!(statistics_request(&args(60, &["Average"], &[])).is_ok());
        assert!(
            statistics_request(&args(45, &["Average"], &[])).is_err(),
            "45 s is not a valid period"
        );
        assert!(
            statistics_request(&args(30, &["Average"], &[])).is_err(),
            "2880 datapoints > 1440"
        );
        assert!(statistics_request(&args(60, &[], &[])).is_err());
        assert!(statistics_request(&args(60, &["Average"], &["p99"])).is_err());
        assert!(statistics_request(&args(60, &["Mean"], &[])).is_err());
        assert!(statistics_request(&args(60, &[], &["p99", "p50"])).is_ok());
    }
}
