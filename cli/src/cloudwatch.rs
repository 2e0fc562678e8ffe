//! `list-metrics` and `get-metric-statistics`, shaped like `aws cloudwatch`'s: the same flags,
//! the same JSON answers, CloudWatch's rules for periods, statistics and dimensions. Both are
//! SQL underneath, run through [`Backend`].

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use arrow::array::{Array, AsArray as _, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, TimestampMicrosecondType};
use serde_json::{Value, json};

use super::client::ConnectionArgs;
use super::query::{Backend, BackendArgs};

/// Most datapoints one `get-metric-statistics` answer may hold (CloudWatch's limit).
const MAX_DATAPOINTS: i64 = 1440;
/// How far back `list-metrics` looks: metrics without data for two weeks are not listed.
const LIST_WINDOW_DAYS: i64 = 14;

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

/// Quotes a SQL string literal.
pub(crate) fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
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

fn sql_time(micros: i64) -> String {
    format!("to_timestamp_micros({micros})")
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
    if args.dimensions.len() > 10 {
        bail!("--dimensions: at most 10 dimension filters");
    }
    let offset: usize = match &args.starting_token {
        None => 0,
        Some(t) => t
            .strip_prefix("wt1-")
            .and_then(|n| n.parse().ok())
            .with_context(|| {
                format!("--starting-token: `{t}` is not a token from a previous answer")
            })?,
    };
    let mut filters = vec![format!(
        "time >= now() - interval '{LIST_WINDOW_DAYS} days'"
    )];
    if let Some(ns) = &args.namespace {
        filters.push(format!("namespace = {}", lit(ns)));
    }
    if let Some(m) = &args.metric_name {
        filters.push(format!("metric_name = {}", lit(m)));
    }
    for d in &args.dimensions {
        match &d.value {
            Some(v) => filters.push(format!("dimensions[{}] = {}", lit(&d.name), lit(v))),
            None => filters.push(format!("dimensions[{}] IS NOT NULL", lit(&d.name))),
        }
    }
    let page = args.max_items.unwrap_or(500).clamp(1, 500);
    let sql = format!(
        "SELECT namespace, metric_name, dimensions FROM metrics WHERE {} \
         GROUP BY namespace, metric_name, dimensions \
         ORDER BY namespace, metric_name, array_to_string(map_keys(dimensions), chr(0)), \
         array_to_string(map_values(dimensions), chr(0)) \
         LIMIT {} OFFSET {offset}",
        filters.join(" AND "),
        page + 1
    );
    let result = backend.run(&sql).await?;
    let mut metrics = Vec::new();
    for batch in &result.batches {
        let ns = cast_to(batch, 0, &DataType::Utf8)?;
        let ns = ns.as_string::<i32>();
        let name = cast_to(batch, 1, &DataType::Utf8)?;
        let name = name.as_string::<i32>();
        for i in 0..batch.num_rows() {
            metrics.push(json!({
                "Namespace": ns.value(i),
                "MetricName": name.value(i),
                "Dimensions": dimensions_json(batch, 2, i),
            }));
        }
    }
    let mut answer = serde_json::Map::new();
    if metrics.len() > page {
        metrics.truncate(page);
        answer.insert("NextToken".into(), json!(format!("wt1-{}", offset + page)));
    }
    answer.insert("Metrics".into(), Value::Array(metrics));
    Ok(Value::Object(answer))
}

/// A column of an answer cast to the type this code reads it as.
fn cast_to(
    batch: &RecordBatch,
    col: usize,
    to: &DataType,
) -> anyhow::Result<arrow::array::ArrayRef> {
    arrow::compute::cast(batch.column(col), to).with_context(|| {
        format!(
            "unexpected answer column {col}: {}",
            batch.column(col).data_type()
        )
    })
}

fn dimensions_json(batch: &RecordBatch, col: usize, row: usize) -> Value {
    let Some(map) = batch.column(col).as_map_opt() else {
        return json!([]);
    };
    if map.is_null(row) {
        return json!([]);
    }
    let entries = map.value(row);
    let (Some(keys), Some(values)) = (
        entries.column(0).as_string_opt::<i32>(),
        entries.column(1).as_string_opt::<i32>(),
    ) else {
        return json!([]);
    };
    Value::Array(
        (0..entries.len())
            .map(|j| json!({ "Name": keys.value(j), "Value": values.value(j) }))
            .collect(),
    )
}

const BASIC: [&str; 5] = ["SampleCount", "Average", "Sum", "Minimum", "Maximum"];

/// The SQL behind `get-metric-statistics`, after checking the flags as CloudWatch does.
///
/// # Errors
/// A flag CloudWatch would refuse, named.
pub fn statistics_sql(
    args: &GetMetricStatisticsArgs,
) -> anyhow::Result<(String, Vec<(String, f64)>)> {
    let start = parse_time("--start-time", &args.start_time)?;
    let end = parse_time("--end-time", &args.end_time)?;
    if end <= start {
        bail!("--end-time must be after --start-time");
    }
    let p = args.period;
    if p < 1 || (p < 60 && ![1, 5, 10, 20, 30].contains(&p)) || (p >= 60 && p % 60 != 0) {
        bail!("--period: {p} is not 1, 5, 10, 20, 30 or a multiple of 60");
    }
    let step = p * 1_000_000;
    let points = (end - start + step - 1) / step;
    if points > MAX_DATAPOINTS {
        bail!(
            "you have requested up to {points} datapoints, which exceeds the limit of {MAX_DATAPOINTS}; \
             use a larger --period or a shorter time range"
        );
    }
    if args.statistics.is_empty() == args.extended_statistics.is_empty() {
        bail!("give either --statistics or --extended-statistics (exactly one of them)");
    }
    if args.statistics.len() > 5 || args.extended_statistics.len() > 10 {
        bail!("at most 5 --statistics and 10 --extended-statistics");
    }
    for s in &args.statistics {
        if !BASIC.contains(&s.as_str()) {
            bail!("--statistics: `{s}` is not one of {}", BASIC.join(", "));
        }
    }
    let mut pcts = Vec::new();
    for s in &args.extended_statistics {
        let f = watchtrail_query::alarm::parse_percentile(s).with_context(|| {
            format!("--extended-statistics: `{s}` is not a percentile such as p99 or p99.9")
        })?;
        pcts.push((s.clone(), f));
    }
    if args.dimensions.len() > 30 {
        bail!("--dimensions: at most 30");
    }
    let mut filters = vec![
        format!("namespace = {}", lit(&args.namespace)),
        format!("metric_name = {}", lit(&args.metric_name)),
        format!("time >= {}", sql_time(start)),
        format!("time < {}", sql_time(end)),
        format!("cardinality(dimensions) = {}", args.dimensions.len()),
    ];
    for d in &args.dimensions {
        let v = d
            .value
            .as_deref()
            .with_context(|| format!("--dimensions: `{}` needs a Value", d.name))?;
        filters.push(format!("dimensions[{}] = {}", lit(&d.name), lit(v)));
    }
    if let Some(u) = &args.unit {
        filters.push(format!("unit = {}", lit(u)));
    }
    let mut cols = vec![
        format!(
            "date_bin(interval '{p} seconds', time, {}) AS ts",
            sql_time(start)
        ),
        "unit".to_string(),
        "sum(coalesce(sample_count, 1)) AS samplecount".to_string(),
        "sum(coalesce(sum, value)) AS sum".to_string(),
        "min(coalesce(min, value)) AS minimum".to_string(),
        "max(coalesce(max, value)) AS maximum".to_string(),
    ];
    for (i, (_, f)) in pcts.iter().enumerate() {
        // Percentiles need raw points; statistic sets (value is null there) do not count.
        cols.push(format!(
            "approx_percentile_cont({f}) WITHIN GROUP (ORDER BY value) AS p{i}"
        ));
    }
    let sql = format!(
        "SELECT {} FROM metrics WHERE {} GROUP BY 1, 2 ORDER BY 1, 2",
        cols.join(", "),
        filters.join(" AND ")
    );
    Ok((sql, pcts))
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
    let (sql, pcts) = statistics_sql(args)?;
    let result = backend.run(&sql).await?;
    let mut points = Vec::new();
    for b in &result.batches {
        let ts = cast_to(b, 0, &watchtrail_query::tables::timestamp_type())?;
        let ts = ts.as_primitive::<TimestampMicrosecondType>();
        let unit = cast_to(b, 1, &DataType::Utf8)?;
        let unit = unit.as_string::<i32>();
        let cols = (2..b.num_columns())
            .map(|c| cast_to(b, c, &DataType::Float64))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let f = |c: usize| cols[c - 2].as_primitive::<Float64Type>();
        let (count, sum, min, max) = (f(2), f(3), f(4), f(5));
        for i in 0..b.num_rows() {
            let mut p = serde_json::Map::new();
            p.insert("Timestamp".into(), json!(iso(ts.value(i))));
            let n = count.value(i);
            for s in &args.statistics {
                let v = match s.as_str() {
                    "SampleCount" => n,
                    "Sum" => sum.value(i),
                    "Average" => sum.value(i) / n,
                    "Minimum" => min.value(i),
                    _ => max.value(i),
                };
                p.insert(s.clone(), json!(v));
            }
            if !pcts.is_empty() {
                let mut ext = BTreeMap::new();
                for (j, (name, _)) in pcts.iter().enumerate() {
                    let col = f(6 + j);
                    if !col.is_null(i) {
                        ext.insert(name.clone(), json!(col.value(i)));
                    }
                }
                p.insert("ExtendedStatistics".into(), json!(ext));
            }
            p.insert("Unit".into(), json!(unit.value(i)));
            points.push(Value::Object(p));
        }
    }
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
        assert!(statistics_sql(&args(60, &["Average"], &[])).is_ok());
        assert!(
            statistics_sql(&args(45, &["Average"], &[])).is_err(),
            "45 s is not a valid period"
        );
        assert!(
            statistics_sql(&args(30, &["Average"], &[])).is_err(),
            "2880 datapoints > 1440"
        );
        assert!(statistics_sql(&args(60, &[], &[])).is_err());
        assert!(statistics_sql(&args(60, &["Average"], &["p99"])).is_err());
        assert!(statistics_sql(&args(60, &["Mean"], &[])).is_err());
        assert!(statistics_sql(&args(60, &[], &["p99", "p50"])).is_ok());
    }
}
