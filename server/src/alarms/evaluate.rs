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
fn lit(s: &str) -> String {
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
pub fn alarm_sql(def: &AlarmDefinition, filters: &[&MetricFilter], w: Window) -> String {
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
    if !filters.is_empty() {
        let parts: Vec<String> = filters
            .iter()
            .filter_map(|f| filter_rows(def, f, &start, &end))
            .collect();
        if parts.is_empty() {
            // The alarm's dimensions are not the filter's: no datapoints, ever.
            return format!(
                "SELECT {start} AS ts, CAST(NULL AS DOUBLE) AS v, CAST(0 AS DOUBLE) AS n WHERE false"
            );
        }
        return format!(
            "SELECT {}, {} AS v, CAST(count(v) AS DOUBLE) AS n FROM ({}) AS matched \
             WHERE v IS NOT NULL GROUP BY 1",
            bucket("t"),
            raw_aggregate(def, "v"),
            parts.join(" UNION ALL ")
        );
    }
    let mut filters_sql = vec![
        format!(
            "namespace = {}",
            lit(def.namespace.as_deref().unwrap_or_default())
        ),
        format!(
            "metric_name = {}",
            lit(def.metric_name.as_deref().unwrap_or_default())
        ),
        format!("time >= {start}"),
        format!("time < {end}"),
        format!("cardinality(dimensions) = {}", def.dimensions.len()),
    ];
    for d in &def.dimensions {
        filters_sql.push(format!("dimensions[{}] = {}", lit(&d.name), lit(&d.value)));
    }
    if let Some(u) = &def.unit {
        filters_sql.push(format!("unit = {}", lit(u)));
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
    format!(
        "SELECT {}, {value} AS v, {count} AS n FROM metrics WHERE {} GROUP BY 1",
        bucket("time"),
        filters_sql.join(" AND ")
    )
}

/// The matching events of one metric filter as `(t, v)` rows, or `None` when the alarm's
/// dimensions cannot be the filter's.
fn filter_rows(def: &AlarmDefinition, f: &MetricFilter, start: &str, end: &str) -> Option<String> {
    let t = f.transformation()?;
    let alarm_dims: Vec<&str> = def.dimensions.iter().map(|d| d.name.as_str()).collect();
    let filter_dims: Vec<&str> = t.dimensions.keys().map(String::as_str).collect();
    let mut sorted = alarm_dims.clone();
    sorted.sort_unstable();
    if sorted != filter_dims {
        return None;
    }
    let (table, time, text) = if f.reads_audit() {
        ("audit", "eventtime", "eventjson")
    } else {
        ("logs", "time", "message")
    };
    let pattern = lit(&f.filter_pattern);
    let value = if t.metric_value.starts_with('$') {
        format!(
            "CAST(filter_pattern_value({pattern}, {text}, {}) AS DOUBLE)",
            lit(&t.metric_value)
        )
    } else {
        format!("CAST({} AS DOUBLE)", lit(&t.metric_value))
    };
    let mut conds = vec![
        format!("{time} >= {start}"),
        format!("{time} < {end}"),
        format!("filter_pattern_match({pattern}, {text})"),
    ];
    if !f.reads_audit() {
        conds.push(format!("log_group = {}", lit(&f.log_group_name)));
    }
    for d in &def.dimensions {
        let selector = &t.dimensions[&d.name];
        conds.push(format!(
            "filter_pattern_value({pattern}, {text}, {}) = {}",
            lit(selector),
            lit(&d.value)
        ));
    }
    Some(format!(
        "SELECT {time} AS t, {value} AS v FROM {table} WHERE {}",
        conds.join(" AND ")
    ))
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

/// Runs the alarm's query over the window ending at `end_ms` and decides its state.
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
    let w = Window::ending_at(def, end_ms);
    let sql = alarm_sql(def, filters, w);
    let result = engine
        .collect(tenant, &sql)
        .await
        .map_err(|e| e.to_string())?;
    let mut by_start: HashMap<i64, (Option<f64>, f64)> = HashMap::new();
    for batch in &result.batches {
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
        let (ts, v, n) = (
            ts.as_primitive::<Int64Type>(),
            v.as_primitive::<Float64Type>(),
            n.as_primitive::<Float64Type>(),
        );
        for i in 0..batch.num_rows() {
            if ts.is_null(i) {
                continue;
            }
            let value = (!v.is_null(i))
                .then(|| v.value(i))
                .filter(|x| x.is_finite());
            let count = if n.is_null(i) { 0.0 } else { n.value(i) };
            by_start.insert(ts.value(i), (value, count));
        }
    }
    let default = filters
        .iter()
        .filter_map(|f| f.transformation().and_then(|t| t.default_value))
        .next();
    let mut points = Vec::with_capacity(w.range);
    let mut low_samples = false;
    let floor = def.low_sample_floor();
    for i in 0..w.range {
        let start_ms = w.start_ms + i as i64 * w.period_ms;
        let (value, count) = by_start.get(&start_ms).copied().unwrap_or((None, 0.0));
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
    Ok(Evaluated {
        decision,
        points,
        rule,
    })
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
        let sql = alarm_sql(&def, &[], w);
        assert!(sql.contains("cardinality(dimensions) = 0"), "{sql}");
        assert!(sql.contains("sum(coalesce(sum, value))"), "{sql}");
    }
}
