//! CloudWatch's metric reads over the `metrics` table: `ListMetrics` and `GetMetricStatistics`
//! with CloudWatch's rules (periods, statistics, the 1,440-datapoint limit, dimension matching).
//! The CLI's `list-metrics`/`get-metric-statistics` and the server's AWS API both run these, so
//! the rules exist once. Refusals name the CloudWatch parameter ([`Invalid`]).

use std::collections::BTreeMap;

use arrow::array::{Array, ArrayRef, AsArray as _, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, TimestampMicrosecondType};

/// Most datapoints one `GetMetricStatistics` answer may hold (CloudWatch's limit).
pub const MAX_DATAPOINTS: i64 = 1440;
/// How far back `ListMetrics` looks: metrics without data for two weeks are not listed.
pub const LIST_WINDOW_DAYS: i64 = 14;
/// What `RecentlyActive=PT3H` means.
pub const RECENTLY_ACTIVE_HOURS: i64 = 3;
/// Most metrics one `ListMetrics` page holds.
pub const LIST_PAGE: usize = 500;
/// The five basic statistics.
pub const BASIC: [&str; 5] = ["SampleCount", "Average", "Sum", "Minimum", "Maximum"];

/// A refused parameter: its CloudWatch name and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The parameter (`Period`, `Dimensions.member.3`, ...).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
    /// Whether the parameter is missing rather than wrong.
    pub missing: bool,
}

impl Invalid {
    /// A wrong value.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            missing: false,
        }
    }

    /// A missing parameter.
    pub fn missing(field: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: "is required".into(),
            missing: true,
        }
    }
}

/// A dimension filter: a name and, for `ListMetrics`, maybe no value (any value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimensionFilter {
    /// Dimension name.
    pub name: String,
    /// Dimension value.
    pub value: Option<String>,
}

/// A metric's identity as `ListMetrics` answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricId {
    /// Namespace.
    pub namespace: String,
    /// Metric name.
    pub metric_name: String,
    /// Dimensions, by name.
    pub dimensions: Vec<(String, String)>,
}

/// `ListMetrics` parameters.
#[derive(Debug, Clone, Default)]
pub struct ListMetrics {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only this metric name.
    pub metric_name: Option<String>,
    /// Only metrics with these dimensions (a metric with more still matches). Up to 10.
    pub dimensions: Vec<DimensionFilter>,
    /// Only metrics with data in the last three hours.
    pub recently_active: bool,
    /// Where the page starts (from a previous answer's token).
    pub offset: usize,
    /// Page size (at most [`LIST_PAGE`]).
    pub page: usize,
}

/// The token that continues a listing after `offset` entries.
pub fn page_token(offset: usize) -> String {
    format!("wt1-{offset}")
}

/// The offset a token continues from.
///
/// # Errors
/// A token no answer gave, naming `field`.
pub fn parse_page_token(field: &str, token: &str) -> Result<usize, Invalid> {
    token
        .strip_prefix("wt1-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            Invalid::new(
                field,
                format!("`{token}` is not a token from a previous answer"),
            )
        })
}

/// Quotes a SQL string literal.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn sql_time(micros: i64) -> String {
    format!("to_timestamp_micros({micros})")
}

impl ListMetrics {
    /// The SQL; it asks for one row more than the page, so that a further page is known.
    ///
    /// # Errors
    /// More than 10 dimension filters.
    pub fn sql(&self) -> Result<String, Invalid> {
        if self.dimensions.len() > 10 {
            return Err(Invalid::new("Dimensions", "at most 10 dimension filters"));
        }
        let window = if self.recently_active {
            format!("{RECENTLY_ACTIVE_HOURS} hours")
        } else {
            format!("{LIST_WINDOW_DAYS} days")
        };
        let mut filters = vec![format!("time >= now() - interval '{window}'")];
        if let Some(ns) = &self.namespace {
            filters.push(format!("namespace = {}", lit(ns)));
        }
        if let Some(m) = &self.metric_name {
            filters.push(format!("metric_name = {}", lit(m)));
        }
        for d in &self.dimensions {
            match &d.value {
                Some(v) => filters.push(format!("dimensions[{}] = {}", lit(&d.name), lit(v))),
                None => filters.push(format!("dimensions[{}] IS NOT NULL", lit(&d.name))),
            }
        }
        Ok(format!(
            "SELECT namespace, metric_name, dimensions FROM metrics WHERE {} \
             GROUP BY namespace, metric_name, dimensions \
             ORDER BY namespace, metric_name, array_to_string(map_keys(dimensions), chr(0)), \
             array_to_string(map_values(dimensions), chr(0)) \
             LIMIT {} OFFSET {}",
            filters.join(" AND "),
            self.page.clamp(1, LIST_PAGE) + 1,
            self.offset
        ))
    }

    /// The page of metrics the SQL's answer holds, and the token for the next page, if any.
    ///
    /// # Errors
    /// An answer of another shape than [`ListMetrics::sql`] asks for.
    pub fn answer(
        &self,
        batches: &[RecordBatch],
    ) -> Result<(Vec<MetricId>, Option<String>), String> {
        let mut metrics = Vec::new();
        for batch in batches {
            let ns = cast_to(batch, 0, &DataType::Utf8)?;
            let ns = ns.as_string::<i32>();
            let name = cast_to(batch, 1, &DataType::Utf8)?;
            let name = name.as_string::<i32>();
            for i in 0..batch.num_rows() {
                metrics.push(MetricId {
                    namespace: ns.value(i).to_string(),
                    metric_name: name.value(i).to_string(),
                    dimensions: dimensions_of(batch, 2, i),
                });
            }
        }
        let page = self.page.clamp(1, LIST_PAGE);
        let next = (metrics.len() > page).then(|| {
            metrics.truncate(page);
            page_token(self.offset + page)
        });
        Ok((metrics, next))
    }
}

/// A column of an answer cast to the type this code reads it as.
fn cast_to(batch: &RecordBatch, col: usize, to: &DataType) -> Result<ArrayRef, String> {
    if col >= batch.num_columns() {
        return Err(format!("the answer has no column {col}"));
    }
    arrow::compute::cast(batch.column(col), to).map_err(|e| {
        format!(
            "unexpected answer column {col} ({}): {e}",
            batch.column(col).data_type()
        )
    })
}

fn dimensions_of(batch: &RecordBatch, col: usize, row: usize) -> Vec<(String, String)> {
    let Some(map) = batch.column(col).as_map_opt() else {
        return Vec::new();
    };
    if map.is_null(row) {
        return Vec::new();
    }
    let entries = map.value(row);
    let (Some(keys), Some(values)) = (
        entries.column(0).as_string_opt::<i32>(),
        entries.column(1).as_string_opt::<i32>(),
    ) else {
        return Vec::new();
    };
    (0..entries.len())
        .map(|j| (keys.value(j).to_string(), values.value(j).to_string()))
        .collect()
}

/// `GetMetricStatistics` parameters.
#[derive(Debug, Clone)]
pub struct GetMetricStatistics {
    /// Namespace.
    pub namespace: String,
    /// Metric name.
    pub metric_name: String,
    /// Every dimension of the metric (the combination must match exactly).
    pub dimensions: Vec<(String, String)>,
    /// First time, inclusive, microseconds.
    pub start_us: i64,
    /// Last time, exclusive, microseconds.
    pub end_us: i64,
    /// Seconds per datapoint.
    pub period: i64,
    /// Basic statistics asked for.
    pub statistics: Vec<String>,
    /// Percentiles asked for (`p99`).
    pub extended_statistics: Vec<String>,
    /// Only points published with this unit.
    pub unit: Option<String>,
}

/// One datapoint of a `GetMetricStatistics` answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Datapoint {
    /// The period's start, microseconds.
    pub timestamp_us: i64,
    /// The basic statistics asked for, in the order asked.
    pub statistics: Vec<(String, f64)>,
    /// The percentiles asked for that have a value.
    pub extended: BTreeMap<String, f64>,
    /// The unit.
    pub unit: String,
}

/// Checks a period as CloudWatch does: 1, 5, 10, 20, 30 or a multiple of 60.
///
/// # Errors
/// Any other, naming `Period`.
pub fn check_period(p: i64) -> Result<(), Invalid> {
    if p < 1 || (p < 60 && ![1, 5, 10, 20, 30].contains(&p)) || (p >= 60 && p % 60 != 0) {
        return Err(Invalid::new(
            "Period",
            format!("{p} is not 1, 5, 10, 20, 30 or a multiple of 60"),
        ));
    }
    Ok(())
}

impl GetMetricStatistics {
    /// The SQL, after checking the parameters as CloudWatch does, and the percentiles asked for
    /// (name, fraction).
    ///
    /// # Errors
    /// A parameter CloudWatch would refuse, named.
    pub fn sql(&self) -> Result<(String, Vec<(String, f64)>), Invalid> {
        if self.end_us <= self.start_us {
            return Err(Invalid::new("EndTime", "must be after StartTime"));
        }
        check_period(self.period)?;
        let p = self.period;
        let step = p * 1_000_000;
        let points = (self.end_us - self.start_us).saturating_add(step - 1) / step;
        if points > MAX_DATAPOINTS {
            return Err(Invalid::new(
                "Period",
                format!(
                    "you have requested up to {points} datapoints, which exceeds the limit of \
                     {MAX_DATAPOINTS}; use a larger period or a shorter time range"
                ),
            ));
        }
        if self.statistics.is_empty() == self.extended_statistics.is_empty() {
            return Err(Invalid::new(
                "Statistics",
                "give either Statistics or ExtendedStatistics (exactly one of them)",
            ));
        }
        if self.statistics.len() > 5 {
            return Err(Invalid::new("Statistics", "at most 5"));
        }
        if self.extended_statistics.len() > 10 {
            return Err(Invalid::new("ExtendedStatistics", "at most 10"));
        }
        for (i, s) in self.statistics.iter().enumerate() {
            if !BASIC.contains(&s.as_str()) {
                return Err(Invalid::new(
                    format!("Statistics.member.{}", i + 1),
                    format!("`{s}` is not one of {}", BASIC.join(", ")),
                ));
            }
        }
        let mut pcts = Vec::new();
        for (i, s) in self.extended_statistics.iter().enumerate() {
            let f = crate::alarm::parse_percentile(s).ok_or_else(|| {
                Invalid::new(
                    format!("ExtendedStatistics.member.{}", i + 1),
                    format!("`{s}` is not a percentile such as p99 or p99.9"),
                )
            })?;
            pcts.push((s.clone(), f));
        }
        if self.dimensions.len() > 30 {
            return Err(Invalid::new("Dimensions", "at most 30"));
        }
        let mut filters = vec![
            format!("namespace = {}", lit(&self.namespace)),
            format!("metric_name = {}", lit(&self.metric_name)),
            format!("time >= {}", sql_time(self.start_us)),
            format!("time < {}", sql_time(self.end_us)),
            format!("cardinality(dimensions) = {}", self.dimensions.len()),
        ];
        for (name, value) in &self.dimensions {
            filters.push(format!("dimensions[{}] = {}", lit(name), lit(value)));
        }
        if let Some(u) = &self.unit {
            filters.push(format!("unit = {}", lit(u)));
        }
        let mut cols = vec![
            format!(
                "date_bin(interval '{p} seconds', time, {}) AS ts",
                sql_time(self.start_us)
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

    /// The datapoints the SQL's answer holds.
    ///
    /// # Errors
    /// An answer of another shape than [`GetMetricStatistics::sql`] asks for.
    pub fn answer(&self, batches: &[RecordBatch]) -> Result<Vec<Datapoint>, String> {
        let pcts = &self.extended_statistics;
        let mut points = Vec::new();
        for b in batches {
            let ts = cast_to(b, 0, &crate::tables::timestamp_type())?;
            let ts = ts.as_primitive::<TimestampMicrosecondType>();
            let unit = cast_to(b, 1, &DataType::Utf8)?;
            let unit = unit.as_string::<i32>();
            let cols = (2..b.num_columns())
                .map(|c| cast_to(b, c, &DataType::Float64))
                .collect::<Result<Vec<_>, _>>()?;
            if cols.len() < 4 + pcts.len() {
                return Err(format!("the answer has {} columns", b.num_columns()));
            }
            let f = |c: usize| cols[c - 2].as_primitive::<Float64Type>();
            let (count, sum, min, max) = (f(2), f(3), f(4), f(5));
            for i in 0..b.num_rows() {
                let n = count.value(i);
                let statistics = self
                    .statistics
                    .iter()
                    .map(|s| {
                        let v = match s.as_str() {
                            "SampleCount" => n,
                            "Sum" => sum.value(i),
                            "Average" => sum.value(i) / n,
                            "Minimum" => min.value(i),
                            _ => max.value(i),
                        };
                        (s.clone(), v)
                    })
                    .collect();
                let mut extended = BTreeMap::new();
                for (j, name) in pcts.iter().enumerate() {
                    let col = f(6 + j);
                    if !col.is_null(i) {
                        extended.insert(name.clone(), col.value(i));
                    }
                }
                points.push(Datapoint {
                    timestamp_us: ts.value(i),
                    statistics,
                    extended,
                    unit: unit.value(i).to_string(),
                });
            }
        }
        Ok(points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(period: i64, stats: &[&str], ext: &[&str]) -> GetMetricStatistics {
        GetMetricStatistics {
            namespace: "App".into(),
            metric_name: "Latency".into(),
            dimensions: vec![],
            start_us: 1_704_067_200_000_000,
            end_us: 1_704_153_600_000_000,
            period,
            statistics: stats.iter().map(|s| s.to_string()).collect(),
            extended_statistics: ext.iter().map(|s| s.to_string()).collect(),
            unit: None,
        }
    }

    #[test]
    fn cloudwatch_rules_are_checked_and_name_the_parameter() {
        assert!(args(60, &["Average"], &[]).sql().is_ok());
        assert_eq!(
            args(45, &["Average"], &[])
                .sql()
                .map(|_| ())
                .unwrap_err()
                .field,
            "Period",
            "45 s is not a valid period"
        );
        assert_eq!(
            args(30, &["Average"], &[])
                .sql()
                .map(|_| ())
                .unwrap_err()
                .field,
            "Period",
            "2880 datapoints > 1440"
        );
        assert!(args(60, &[], &[]).sql().is_err());
        assert!(args(60, &["Average"], &["p99"]).sql().is_err());
        assert_eq!(
            args(60, &["Average", "Mean"], &[])
                .sql()
                .map(|_| ())
                .unwrap_err()
                .field,
            "Statistics.member.2"
        );
        assert!(args(60, &[], &["p99", "p50"]).sql().is_ok());
        let mut a = args(60, &["Sum"], &[]);
        a.end_us = a.start_us;
        assert_eq!(a.sql().map(|_| ()).unwrap_err().field, "EndTime");
    }

    #[test]
    fn list_pages_and_windows() {
        let l = ListMetrics {
            recently_active: true,
            page: 2,
            offset: 4,
            ..Default::default()
        };
        let sql = l.sql().unwrap_or_default();
        assert!(sql.contains("interval '3 hours'"), "{sql}");
        assert!(sql.ends_with("LIMIT 3 OFFSET 4"), "{sql}");
        assert_eq!(parse_page_token("NextToken", &page_token(500)), Ok(500));
        assert!(parse_page_token("NextToken", "x").is_err());
        let too_many = ListMetrics {
            dimensions: vec![
                DimensionFilter {
                    name: "a".into(),
                    value: None
                };
                11
            ],
            ..Default::default()
        };
        assert!(too_many.sql().is_err());
    }
}
