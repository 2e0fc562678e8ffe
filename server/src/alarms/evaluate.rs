//! One alarm, one evaluation: the SQL that yields a value per period over the evaluation range,
//! run through the query engine, and the state machine's decision.
//!
//! Three sources of datapoints, all SQL:
//! - a metric alarm over the `metrics` table (raw samples and statistic sets, CloudWatch's
//!   statistics);
//! - a metric alarm whose metric a metric filter defines: the filter's pattern is matched over
//!   `logs` messages or `audit` records in the same query;
//! - a SQL alarm: the user's SELECT yields `time` and `value`, bucketed by period here.

use std::collections::HashMap;

use arrow::array::{Array, AsArray as _};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use watchtrail_query::alarm::rule::{Decision, Point, evaluation_range};
use watchtrail_query::alarm::{AlarmDefinition, AlarmState, MetricFilter, Rule, parse_percentile};
use watchtrail_query::engine::Engine;

/// Quotes a SQL string literal.
pub(crate) fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn time_lit(ms: i64) -> String {
    format!("to_timestamp_micros({})", ms * 1000)
}

/// The aggregate for a statistic over raw values `v`.
fn raw_aggregate(def: &AlarmDefinition, v: &str) -> String {
    if let Some(p) = def.extended_statistic.as_deref().and_then(parse_percentile) {
        return format!("approx_percentile_cont({p}) WITHIN GROUP (ORDER BY {v})");
    }
    use watchtrail_query::alarm::Statistic::*;
    match def.statistic.unwrap_or(Sum) {
        SampleCount => format!("CAST(count({v}) AS DOUBLE)"),
        Average => format!("avg({v})"),
        Sum => format!("sum({v})"),
        Minimum => format!("min({v})"),
        Maximum => format!("max({v})"),
    }
}

/// The window the evaluation reads: `[start_ms, end_ms)`, `range` periods of `period_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Start, epoch milliseconds.
    pub start_ms: i64,
    /// End (exclusive), epoch milliseconds.
    pub end_ms: i64,
    /// Period length.
    pub period_ms: i64,
    /// Number of periods.
    pub range: usize,
}

impl Window {
    /// The window of `def` ending at `end_ms`.
    pub fn ending_at(def: &AlarmDefinition, end_ms: i64) -> Self {
        let period_ms = i64::from(def.period) * 1000;
        let range = evaluation_range(def.evaluation_periods as usize);
        Self {
            start_ms: end_ms - period_ms * range as i64,
            end_ms,
            period_ms,
            range,
        }
    }
}

/// The SQL giving `ts`, `v` (the statistic) and `n` (the sample count) per period.
pub fn alarm_sql(def: &AlarmDefinition, w: Window) -> String {
    let (start, end) = (time_lit(w.start_ms), time_lit(w.end_ms));
    let bucket = |col: &str| {
        format!(
            "date_bin(INTERVAL '{} seconds', {col}, {start}) AS ts",
            w.period_ms / 1000
        )
    };
    if let Some(q) = &def.query {
        let q = q
            .replace("$start", &start)
            .replace("$end", &end)
            .replace("$period", &(w.period_ms / 1000).to_string());
        return format!(
            "SELECT {}, {} AS v, CAST(count(value) AS DOUBLE) AS n \
             FROM (SELECT time, CAST(value AS DOUBLE) AS value FROM ({q}) AS user_query) AS q \
             WHERE time >= {start} AND time < {end} GROUP BY 1",
            bucket("time"),
            raw_aggregate(def, "value"),
        );
    }
    metric_sql(def, &[def], w)
}

/// The SQL over `metrics` for alarms that differ only in metric name and dimension values (one
/// alarm, or a group: see [`group_key`]): `ts`, `v`, `n`, then, when there is more than one
/// alarm, the metric name and one column per dimension name, sorted.
fn metric_sql(def: &AlarmDefinition, all: &[&AlarmDefinition], w: Window) -> String {
    let (start, end) = (time_lit(w.start_ms), time_lit(w.end_ms));
    let mut metrics: Vec<String> = all
        .iter()
        .map(|a| lit(a.metric_name.as_deref().unwrap_or_default()))
        .collect();
    metrics.sort_unstable();
    metrics.dedup();
    let mut conds = vec![
        format!(
            "namespace = {}",
            lit(def.namespace.as_deref().unwrap_or_default())
        ),
        if metrics.len() == 1 {
            format!("metric_name = {}", metrics[0])
        } else {
            format!("metric_name IN ({})", metrics.join(", "))
        },
        format!("time >= {start}"),
        format!("time < {end}"),
        format!("cardinality(dimensions) = {}", def.dimensions.len()),
    ];
    let mut names: Vec<&str> = def.dimensions.iter().map(|d| d.name.as_str()).collect();
    names.sort_unstable();
    for n in &names {
        let mut values: Vec<String> = all
            .iter()
            .flat_map(|a| {
                a.dimensions
                    .iter()
                    .filter(|d| d.name == *n)
                    .map(|d| lit(&d.value))
            })
            .collect();
        values.sort_unstable();
        values.dedup();
        conds.push(if values.len() == 1 {
            format!("dimensions[{}] = {}", lit(n), values[0])
        } else {
            format!("dimensions[{}] IN ({})", lit(n), values.join(", "))
        });
    }
    if let Some(u) = &def.unit {
        conds.push(format!("unit = {}", lit(u)));
    }
    use watchtrail_query::alarm::Statistic::*;
    let (value, count) = match (
        def.extended_statistic.as_deref().and_then(parse_percentile),
        def.statistic,
    ) {
        (Some(p), _) => (
            format!("approx_percentile_cont({p}) WITHIN GROUP (ORDER BY value)"),
            "CAST(count(value) AS DOUBLE)".to_string(),
        ),
        (None, stat) => (
            match stat.unwrap_or(Sum) {
                SampleCount => "sum(coalesce(sample_count, 1))".to_string(),
                Sum => "sum(coalesce(sum, value))".to_string(),
                Average => "sum(coalesce(sum, value)) / sum(coalesce(sample_count, 1))".to_string(),
                Minimum => "min(coalesce(min, value))".to_string(),
                Maximum => "max(coalesce(max, value))".to_string(),
            },
            "sum(coalesce(sample_count, 1))".to_string(),
        ),
    };
    let grouped = all.len() > 1;
    let mut select = vec![
        format!(
            "date_bin(INTERVAL '{} seconds', time, {start}) AS ts",
            w.period_ms / 1000
        ),
        format!("{value} AS v"),
        format!("{count} AS n"),
    ];
    let mut group = vec!["1".to_string()];
    if grouped {
        select.push("metric_name AS m".to_string());
        group.push("4".to_string());
        for (i, n) in names.iter().enumerate() {
            select.push(format!("dimensions[{}] AS d{i}", lit(n)));
            group.push((i + 5).to_string());
        }
    }
    format!(
        "SELECT {} FROM metrics WHERE {} GROUP BY {}",
        select.join(", "),
        conds.join(" AND "),
        group.join(", ")
    )
}

/// The outcome of evaluating one alarm once.
#[derive(Debug, Clone)]
pub struct Evaluated {
    /// The decision, or `None` when the state must not change (low sample counts with
    /// `EvaluateLowSampleCountPercentile=ignore`).
    pub decision: Option<Decision>,
    /// The periods, oldest first.
    pub points: Vec<Point>,
    /// The rule applied.
    pub rule: Rule,
}

/// The rule of a definition.
pub fn rule_of(def: &AlarmDefinition) -> Rule {
    Rule {
        n: def.evaluation_periods as usize,
        m: def.datapoints_to_alarm() as usize,
        op: def.comparison_operator,
        threshold: def.threshold,
        treat: def.treat_missing_data,
    }
}

/// A statistic per period start (epoch ms): the value (if any) and the sample count.
pub type Series = HashMap<i64, (Option<f64>, f64)>;

/// Reads `ts`, `v`, `n` and then `key_columns` string columns of the result into series by key.
fn read_series(
    batches: &[arrow::array::RecordBatch],
    key_columns: usize,
) -> Result<HashMap<Vec<String>, Series>, String> {
    let mut out: HashMap<Vec<String>, Series> = HashMap::new();
    for batch in batches {
        let ts = cast(
            batch.column(0),
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )
        .and_then(|a| cast(&a, &DataType::Int64))
        .map_err(|e| format!("the alarm query's `ts`: {e}"))?;
        let v = cast(batch.column(1), &DataType::Float64)
            .map_err(|e| format!("the alarm query's value: {e}"))?;
        let n = cast(batch.column(2), &DataType::Float64)
            .map_err(|e| format!("the alarm query's count: {e}"))?;
        let keys = (0..key_columns)
            .map(|k| cast(batch.column(3 + k), &DataType::Utf8))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the alarm query's dimensions: {e}"))?;
        let (ts, v, n) = (
            ts.as_primitive::<Int64Type>(),
            v.as_primitive::<Float64Type>(),
            n.as_primitive::<Float64Type>(),
        );
        for i in 0..batch.num_rows() {
            if ts.is_null(i) {
                continue;
            }
            let key: Vec<String> = keys
                .iter()
                .map(|k| {
                    let k = k.as_string::<i32>();
                    if k.is_null(i) {
                        String::new()
                    } else {
                        k.value(i).to_string()
                    }
                })
                .collect();
            let value = (!v.is_null(i))
                .then(|| v.value(i))
                .filter(|x| x.is_finite());
            let count = if n.is_null(i) { 0.0 } else { n.value(i) };
            out.entry(key)
                .or_default()
                .insert(ts.value(i), (value, count));
        }
    }
    Ok(out)
}

/// Decides an alarm's state from its series over the window ending at `end_ms`.
pub fn decide(
    def: &AlarmDefinition,
    default: Option<f64>,
    series: &Series,
    current: AlarmState,
    end_ms: i64,
) -> Evaluated {
    let w = Window::ending_at(def, end_ms);
    let mut points = Vec::with_capacity(w.range);
    let mut low_samples = false;
    let floor = def.low_sample_floor();
    for i in 0..w.range {
        let start_ms = w.start_ms + i as i64 * w.period_ms;
        let (value, count) = series.get(&start_ms).copied().unwrap_or((None, 0.0));
        let value = value.or(default);
        if let (Some(f), Some(_)) = (floor, value)
            && count < f
        {
            low_samples = true;
        }
        points.push(Point { start_ms, value });
    }
    let rule = rule_of(def);
    let decision = if low_samples {
        None
    } else {
        let values: Vec<Option<f64>> = points.iter().map(|p| p.value).collect();
        Some(rule.decide(&values, current))
    };
    Evaluated {
        decision,
        points,
        rule,
    }
}

/// Runs one alarm's query over the window ending at `end_ms` and decides its state.
///
/// # Errors
/// The query's error (bad SQL in a SQL alarm, storage down, timeout), as text.
pub async fn evaluate(
    engine: &Engine,
    tenant: &str,
    def: &AlarmDefinition,
    filters: &[&MetricFilter],
    current: AlarmState,
    end_ms: i64,
) -> Result<Evaluated, String> {
    let sql = alarm_sql(def, Window::ending_at(def, end_ms));
    let result = engine
        .collect(tenant, &sql)
        .await
        .map_err(|e| e.to_string())?;
    let series = read_series(&result.batches, 0)?
        .remove(&Vec::new())
        .unwrap_or_default();
    let default = filters
        .iter()
        .filter_map(|f| f.transformation().and_then(|t| t.default_value))
        .next();
    Ok(decide(def, default, &series, current, end_ms))
}

/// Metric alarms that one query can serve: same namespace, period, statistic, unit and
/// dimension names; they differ only in metric name and dimension values. `None` for alarms
/// evaluated alone (SQL alarms, metrics made by metric filters).
pub fn group_key(def: &AlarmDefinition) -> Option<String> {
    if def.query.is_some() {
        return None;
    }
    let mut names: Vec<&str> = def.dimensions.iter().map(|d| d.name.as_str()).collect();
    names.sort_unstable();
    Some(
        [
            def.namespace.as_deref().unwrap_or_default(),
            &def.period.to_string(),
            &def.statistic_name(),
            def.unit.as_deref().unwrap_or_default(),
            &names.join("\u{1e}"),
        ]
        .join("\u{1f}"),
    )
}

/// An alarm's metric name, then its dimension values in the order of `names`: the key of its
/// series in a grouped query's result.
fn series_key(def: &AlarmDefinition, names: &[String]) -> Vec<String> {
    std::iter::once(def.metric_name.clone().unwrap_or_default())
        .chain(names.iter().map(|n| {
            def.dimensions
                .iter()
                .find(|d| &d.name == n)
                .map(|d| d.value.clone())
                .unwrap_or_default()
        }))
        .collect()
}

/// One query for a group of alarms (see [`group_key`]), grouped by dimension values; the
/// dimension names in the order of the key columns.
pub fn group_sql(defs: &[&AlarmDefinition], end_ms: i64) -> (String, Vec<String>) {
    let first = defs[0];
    let w = defs
        .iter()
        .map(|d| Window::ending_at(d, end_ms))
        .max_by_key(|w| w.range)
        .unwrap_or_else(|| Window::ending_at(first, end_ms));
    let mut names: Vec<String> = first.dimensions.iter().map(|d| d.name.clone()).collect();
    names.sort_unstable();
    (metric_sql(first, defs, w), names)
}

/// Evaluates a group of alarms with one query; each gets its own outcome.
pub async fn evaluate_group(
    engine: &Engine,
    tenant: &str,
    alarms: &[(&AlarmDefinition, AlarmState)],
    end_ms: i64,
) -> Vec<Result<Evaluated, String>> {
    let defs: Vec<&AlarmDefinition> = alarms.iter().map(|(d, _)| *d).collect();
    let (sql, names) = group_sql(&defs, end_ms);
    let fetched = match engine.collect(tenant, &sql).await {
        Ok(r) => read_series(&r.batches, names.len() + 1),
        Err(e) => Err(e.to_string()),
    };
    let empty = Series::new();
    alarms
        .iter()
        .map(|(def, current)| match &fetched {
            Ok(by_key) => {
                let series = by_key.get(&series_key(def, &names)).unwrap_or(&empty);
                Ok(decide(def, None, series, *current, end_ms))
            }
            Err(e) => Err(e.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn windows_end_at_the_boundary_and_cover_the_range() {
        let def = AlarmDefinition::from_value(json!({
            "AlarmName": "a", "Namespace": "N", "MetricName": "M", "Statistic": "Sum",
            "Period": 60, "EvaluationPeriods": 3, "Threshold": 1,
            "ComparisonOperator": "GreaterThanThreshold"
        }))
        .expect("valid");
        let w = Window::ending_at(&def, 600_000);
        assert_eq!((w.start_ms, w.end_ms, w.range), (300_000, 600_000, 5));
        let sql = alarm_sql(&def, w);
        assert!(sql.contains("cardinality(dimensions) = 0"), "{sql}");
        assert!(sql.contains("sum(coalesce(sum, value))"), "{sql}");
    }
}
