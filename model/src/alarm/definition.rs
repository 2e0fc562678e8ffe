//! `PutMetricAlarm`-shaped alarm definitions, read field by field so that every refusal names
//! the field and the reason.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::units::UNITS;

/// A definition that CloudWatch (or Watchtrail) would refuse: which field, and why.
pub type DefinitionError = crate::FieldError;

type Result<T> = std::result::Result<T, DefinitionError>;

/// The five basic CloudWatch statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Statistic {
    /// Number of samples.
    SampleCount,
    /// Sum / SampleCount.
    Average,
    /// Sum of the values.
    Sum,
    /// Smallest value.
    Minimum,
    /// Largest value.
    Maximum,
}

impl Statistic {
    /// The name as CloudWatch spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Statistic::SampleCount => "SampleCount",
            Statistic::Average => "Average",
            Statistic::Sum => "Sum",
            Statistic::Minimum => "Minimum",
            Statistic::Maximum => "Maximum",
        }
    }
}

/// The four static-threshold comparisons; the statistic is the first operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComparisonOperator {
    /// value >= threshold
    GreaterThanOrEqualToThreshold,
    /// value > threshold
    GreaterThanThreshold,
    /// value < threshold
    LessThanThreshold,
    /// value <= threshold
    LessThanOrEqualToThreshold,
}

impl ComparisonOperator {
    /// Whether `value` is on the breaching side of `threshold`.
    pub fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            ComparisonOperator::GreaterThanOrEqualToThreshold => value >= threshold,
            ComparisonOperator::GreaterThanThreshold => value > threshold,
            ComparisonOperator::LessThanThreshold => value < threshold,
            ComparisonOperator::LessThanOrEqualToThreshold => value <= threshold,
        }
    }

    /// The words of CloudWatch's reason text: "greater than or equal to".
    pub fn words(self) -> &'static str {
        match self {
            ComparisonOperator::GreaterThanOrEqualToThreshold => "greater than or equal to",
            ComparisonOperator::GreaterThanThreshold => "greater than",
            ComparisonOperator::LessThanThreshold => "less than",
            ComparisonOperator::LessThanOrEqualToThreshold => "less than or equal to",
        }
    }
}

/// How periods without data count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TreatMissingData {
    /// All missing: INSUFFICIENT_DATA (the default).
    #[default]
    Missing,
    /// Keep the current state.
    Ignore,
    /// Missing counts as breaching.
    Breaching,
    /// Missing counts as within the threshold.
    NotBreaching,
}

/// A metric dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Dimension {
    /// Dimension name.
    pub name: String,
    /// Dimension value.
    pub value: String,
}

/// An alarm: CloudWatch's `PutMetricAlarm` fields, plus `Query` for SQL alarms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AlarmDefinition {
    /// Unique per tenant.
    pub alarm_name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm_description: Option<String>,
    /// Whether state changes notify.
    pub actions_enabled: bool,
    /// Metric alarms: the metric's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Metric alarms: the metric's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_name: Option<String>,
    /// Metric alarms: the metric's exact dimension set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dimensions: Vec<Dimension>,
    /// A basic statistic (or [`AlarmDefinition::extended_statistic`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<Statistic>,
    /// A percentile, `p0`..`p100`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_statistic: Option<String>,
    /// Seconds: 10, 20, 30 or a multiple of 60.
    pub period: u32,
    /// Only datapoints of this unit count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// N of "M out of N".
    pub evaluation_periods: u32,
    /// M of "M out of N" (defaults to N).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapoints_to_alarm: Option<u32>,
    /// The threshold.
    pub threshold: f64,
    /// How the statistic compares with the threshold.
    pub comparison_operator: ComparisonOperator,
    /// How periods without data count.
    pub treat_missing_data: TreatMissingData,
    /// `evaluate` (default) or `ignore`: percentile alarms with too few samples keep their state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluate_low_sample_count_percentile: Option<String>,
    /// Destinations notified on entering ALARM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarm_actions: Vec<String>,
    /// Destinations notified on entering OK.
    #[serde(default, rename = "OKActions", skip_serializing_if = "Vec::is_empty")]
    pub ok_actions: Vec<String>,
    /// Destinations notified on entering INSUFFICIENT_DATA.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insufficient_data_actions: Vec<String>,
    /// SQL alarms: a SELECT yielding `time` and `value` columns (see the operations guide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// Fields that `aws cloudwatch describe-alarms` prints besides the definition; accepted and
/// ignored so that its output can be put back as it is.
const DESCRIBE_ONLY_FIELDS: [&str; 11] = [
    "AlarmArn",
    "AlarmConfigurationUpdatedTimestamp",
    "StateValue",
    "StateReason",
    "StateReasonData",
    "StateUpdatedTimestamp",
    "StateTransitionedTimestamp",
    "EvaluationState",
    "Tags",
    "Metrics",
    "ThresholdMetricId",
];

const FIELDS: [&str; 19] = [
    "AlarmName",
    "AlarmDescription",
    "ActionsEnabled",
    "Namespace",
    "MetricName",
    "Dimensions",
    "Statistic",
    "ExtendedStatistic",
    "Period",
    "Unit",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "Threshold",
    "ComparisonOperator",
    "TreatMissingData",
    "EvaluateLowSampleCountPercentile",
    "AlarmActions",
    "OKActions",
    "InsufficientDataActions",
];

/// Most actions per state.
pub(crate) const MAX_ACTIONS: usize = 5;
/// Most seconds Period × EvaluationPeriods may span.
pub(crate) const MAX_EVALUATION_SPAN: u64 = 604_800;
/// Most seconds Period × EvaluationPeriods may span when Period is under an hour.
pub(crate) const MAX_EVALUATION_SPAN_SHORT: u64 = 86_400;

/// A percentile statistic (`p99`, `p99.9`) as a fraction.
pub fn parse_percentile(s: &str) -> Option<f64> {
    let n = s.strip_prefix('p')?;
    let (int, frac) = n.split_once('.').unwrap_or((n, ""));
    let ok = !int.is_empty()
        && int.len() <= 3
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 10
        && frac.bytes().all(|b| b.is_ascii_digit());
    let v: f64 = n.parse().ok()?;
    (ok && (0.0..=100.0).contains(&v)).then_some(v / 100.0)
}

fn take<T: DeserializeOwned>(obj: &mut Map<String, Value>, field: &str) -> Result<Option<T>> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| DefinitionError::new(field, e.to_string())),
    }
}

fn required<T: DeserializeOwned>(obj: &mut Map<String, Value>, field: &str) -> Result<T> {
    take(obj, field)?.ok_or_else(|| DefinitionError::new(field, "is required"))
}

fn check_text(field: &str, value: &str, min: usize, max: usize) -> Result<()> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(DefinitionError::new(
            field,
            format!("must be {min}-{max} characters, got {n}"),
        ));
    }
    if let Some(c) = value.chars().find(char::is_ascii_control) {
        return Err(DefinitionError::new(
            field,
            format!("must not contain control characters, found {c:?}"),
        ));
    }
    Ok(())
}

/// Checks a name and a period the way CloudWatch does.
pub(crate) fn check_period(field: &str, period: u32) -> Result<()> {
    if matches!(period, 10 | 20 | 30) || (period >= 60 && period.is_multiple_of(60)) {
        Ok(())
    } else {
        Err(DefinitionError::new(
            field,
            format!("must be 10, 20, 30 or a multiple of 60 seconds, got {period}"),
        ))
    }
}

impl AlarmDefinition {
    /// Reads and checks a definition from its JSON form (TOML is converted to the same value).
    ///
    /// # Errors
    /// The first field that is missing, malformed or outside CloudWatch's limits.
    pub fn from_value(value: Value) -> Result<Self> {
        let Value::Object(mut obj) = value else {
            return Err(DefinitionError::new(
                "(definition)",
                "must be an object of PutMetricAlarm fields",
            ));
        };
        for key in obj.keys() {
            if !FIELDS.contains(&key.as_str())
                && key != "Query"
                && !DESCRIBE_ONLY_FIELDS.contains(&key.as_str())
            {
                return Err(DefinitionError::new(
                    key.clone(),
                    "unknown field (fields are PutMetricAlarm's, plus Query for SQL alarms)",
                ));
            }
        }
        if obj.get("Metrics").is_some_and(|m| !m.is_null()) {
            return Err(DefinitionError::new(
                "Metrics",
                "metric math and anomaly alarms are not supported; use Query for a SQL alarm",
            ));
        }
        let def = Self {
            alarm_name: required(&mut obj, "AlarmName")?,
            alarm_description: take(&mut obj, "AlarmDescription")?,
            actions_enabled: take(&mut obj, "ActionsEnabled")?.unwrap_or(true),
            namespace: take(&mut obj, "Namespace")?,
            metric_name: take(&mut obj, "MetricName")?,
            dimensions: take(&mut obj, "Dimensions")?.unwrap_or_default(),
            statistic: take(&mut obj, "Statistic")?,
            extended_statistic: take(&mut obj, "ExtendedStatistic")?,
            period: required(&mut obj, "Period")?,
            unit: take(&mut obj, "Unit")?,
            evaluation_periods: required(&mut obj, "EvaluationPeriods")?,
            datapoints_to_alarm: take(&mut obj, "DatapointsToAlarm")?,
            threshold: required(&mut obj, "Threshold")?,
            comparison_operator: required(&mut obj, "ComparisonOperator")?,
            treat_missing_data: take(&mut obj, "TreatMissingData")?.unwrap_or_default(),
            evaluate_low_sample_count_percentile: take(
                &mut obj,
                "EvaluateLowSampleCountPercentile",
            )?,
            alarm_actions: take(&mut obj, "AlarmActions")?.unwrap_or_default(),
            ok_actions: take(&mut obj, "OKActions")?.unwrap_or_default(),
            insufficient_data_actions: take(&mut obj, "InsufficientDataActions")?
                .unwrap_or_default(),
            query: take(&mut obj, "Query")?,
        };
        def.validate()?;
        Ok(def)
    }

    /// Checks every rule of CloudWatch's `PutMetricAlarm`, and Watchtrail's for `Query`.
    ///
    /// # Errors
    /// The first field that breaks one.
    pub fn validate(&self) -> Result<()> {
        check_text("AlarmName", &self.alarm_name, 1, 255)?;
        if let Some(d) = &self.alarm_description {
            check_text("AlarmDescription", d, 0, 1024)?;
        }
        match (&self.query, &self.namespace, &self.metric_name) {
            (Some(q), None, None) => {
                if q.trim().is_empty() {
                    return Err(DefinitionError::new("Query", "must not be empty"));
                }
                // Whether it is one read-only statement within the engine's bounds is the
                // engine's to say: `watchtrail_query::alarm::parse_definition` checks it.
                if !self.dimensions.is_empty() {
                    return Err(DefinitionError::new(
                        "Dimensions",
                        "belongs to metric alarms; a SQL alarm filters in its Query",
                    ));
                }
            }
            (Some(_), _, _) => {
                return Err(DefinitionError::new(
                    "Query",
                    "a SQL alarm has no Namespace or MetricName",
                ));
            }
            (None, Some(ns), Some(name)) => {
                check_text("Namespace", ns, 1, 255)?;
                check_text("MetricName", name, 1, 255)?;
            }
            (None, None, _) => {
                return Err(DefinitionError::new(
                    "Namespace",
                    "is required (or give Query for a SQL alarm)",
                ));
            }
            (None, Some(_), None) => {
                return Err(DefinitionError::new("MetricName", "is required"));
            }
        }
        if self.dimensions.len() > 30 {
            return Err(DefinitionError::new(
                "Dimensions",
                format!("at most 30, got {}", self.dimensions.len()),
            ));
        }
        for (i, d) in self.dimensions.iter().enumerate() {
            check_text(&format!("Dimensions[{i}].Name"), &d.name, 1, 255)?;
            check_text(&format!("Dimensions[{i}].Value"), &d.value, 1, 1024)?;
            if self.dimensions[..i].iter().any(|o| o.name == d.name) {
                return Err(DefinitionError::new(
                    format!("Dimensions[{i}].Name"),
                    format!("duplicate dimension `{}`", d.name),
                ));
            }
        }
        match (&self.statistic, &self.extended_statistic) {
            (Some(_), Some(_)) => {
                return Err(DefinitionError::new(
                    "ExtendedStatistic",
                    "give Statistic or ExtendedStatistic, not both",
                ));
            }
            (None, None) => {
                return Err(DefinitionError::new(
                    "Statistic",
                    "is required (SampleCount, Average, Sum, Minimum, Maximum), or ExtendedStatistic",
                ));
            }
            (None, Some(p)) => {
                if parse_percentile(p).is_none() {
                    return Err(DefinitionError::new(
                        "ExtendedStatistic",
                        format!("`{p}` is not a percentile such as p99 or p99.9"),
                    ));
                }
            }
            (Some(_), None) => {}
        }
        if let Some(e) = &self.evaluate_low_sample_count_percentile {
            if e != "evaluate" && e != "ignore" {
                return Err(DefinitionError::new(
                    "EvaluateLowSampleCountPercentile",
                    format!("must be `evaluate` or `ignore`, got `{e}`"),
                ));
            }
            if self.extended_statistic.is_none() {
                return Err(DefinitionError::new(
                    "EvaluateLowSampleCountPercentile",
                    "applies to percentile (ExtendedStatistic) alarms only",
                ));
            }
        }
        check_period("Period", self.period)?;
        if self.evaluation_periods < 1 {
            return Err(DefinitionError::new(
                "EvaluationPeriods",
                "must be at least 1",
            ));
        }
        let span = u64::from(self.period) * u64::from(self.evaluation_periods);
        let max = if self.period < 3600 {
            MAX_EVALUATION_SPAN_SHORT
        } else {
            MAX_EVALUATION_SPAN
        };
        if span > max {
            return Err(DefinitionError::new(
                "EvaluationPeriods",
                format!(
                    "Period × EvaluationPeriods is {span} s; the limit is {max} s{}",
                    if self.period < 3600 {
                        " when Period is under an hour"
                    } else {
                        ""
                    }
                ),
            ));
        }
        if let Some(m) = self.datapoints_to_alarm
            && (m < 1 || m > self.evaluation_periods)
        {
            return Err(DefinitionError::new(
                "DatapointsToAlarm",
                format!(
                    "must be 1-{} (at most EvaluationPeriods), got {m}",
                    self.evaluation_periods
                ),
            ));
        }
        if !self.threshold.is_finite() {
            return Err(DefinitionError::new("Threshold", "must be a finite number"));
        }
        if let Some(u) = &self.unit
            && !UNITS.contains(&u.as_str())
        {
            return Err(DefinitionError::new(
                "Unit",
                format!("`{u}` is not a CloudWatch unit (e.g. Count, Bytes, Percent, None)"),
            ));
        }
        for (field, actions) in [
            ("AlarmActions", &self.alarm_actions),
            ("OKActions", &self.ok_actions),
            ("InsufficientDataActions", &self.insufficient_data_actions),
        ] {
            if actions.len() > MAX_ACTIONS {
                return Err(DefinitionError::new(
                    field,
                    format!("at most {MAX_ACTIONS} actions, got {}", actions.len()),
                ));
            }
            for (i, a) in actions.iter().enumerate() {
                check_text(&format!("{field}[{i}]"), a, 1, 1024)?;
            }
        }
        Ok(())
    }

    /// M of "M out of N".
    pub fn datapoints_to_alarm(&self) -> u32 {
        self.datapoints_to_alarm.unwrap_or(self.evaluation_periods)
    }

    /// The statistic's name (`Average`, `p99`).
    pub fn statistic_name(&self) -> String {
        match (&self.statistic, &self.extended_statistic) {
            (Some(s), _) => s.as_str().to_string(),
            (None, Some(p)) => p.clone(),
            (None, None) => "Sum".to_string(),
        }
    }

    /// The destinations to notify on entering `state`.
    pub fn actions_for(&self, state: super::AlarmState) -> &[String] {
        match state {
            super::AlarmState::Ok => &self.ok_actions,
            super::AlarmState::Alarm => &self.alarm_actions,
            super::AlarmState::InsufficientData => &self.insufficient_data_actions,
        }
    }

    /// The minimum sample count for a percentile to be trusted (reference section 2.4), when
    /// `EvaluateLowSampleCountPercentile` is `ignore`.
    pub fn low_sample_floor(&self) -> Option<f64> {
        if self.evaluate_low_sample_count_percentile.as_deref() != Some("ignore") {
            return None;
        }
        let p = parse_percentile(self.extended_statistic.as_deref()?)?;
        if (0.5..1.0).contains(&p) {
            Some(10.0 / (1.0 - p))
        } else if p > 0.0 && p < 0.5 {
            Some(10.0 / p)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn base() -> Value {
        json!({
            "AlarmName": "cpu-high",
            "Namespace": "CWAgent",
            "MetricName": "cpu_usage_active",
            "Dimensions": [{"Name": "host", "Value": "web-1"}],
            "Statistic": "Average",
            "Period": 60,
            "EvaluationPeriods": 3,
            "DatapointsToAlarm": 2,
            "Threshold": 80,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "breaching",
            "AlarmActions": ["oncall"],
            "OKActions": ["oncall"]
        })
    }

    fn refused(change: impl FnOnce(&mut Map<String, Value>)) -> DefinitionError {
        let mut v = base();
        if let Value::Object(m) = &mut v {
            change(m);
        }
        match AlarmDefinition::from_value(v) {
            Ok(d) => panic!("accepted {d:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_cloudwatch_definition_reads_as_written() {
        let d = AlarmDefinition::from_value(base()).expect("valid");
        assert_eq!(d.alarm_name, "cpu-high");
        assert_eq!(d.statistic, Some(Statistic::Average));
        assert_eq!(d.datapoints_to_alarm(), 2);
        assert_eq!(d.treat_missing_data, TreatMissingData::Breaching);
        assert!(d.actions_enabled);
        assert_eq!(d.ok_actions, ["oncall"]);
        // Round trip through its own JSON.
        let again =
            AlarmDefinition::from_value(serde_json::to_value(&d).expect("json")).expect("valid");
        assert_eq!(again, d);
        // describe-alarms output goes back in.
        let mut v = base();
        v["StateValue"] = json!("OK");
        v["AlarmArn"] = json!("arn:aws:cloudwatch:us-east-1:1:alarm:cpu-high");
        assert!(AlarmDefinition::from_value(v).is_ok());
    }

    #[test]
    fn refusals_name_the_field() {
        let e = refused(|m| {
            m.insert("Period".into(), json!(45));
        });
        assert_eq!(e.field, "Period");
        assert!(e.reason.contains("10, 20, 30 or a multiple of 60"), "{e}");
        let e = refused(|m| {
            m.insert("Period".into(), json!("60"));
        });
        assert_eq!(e.field, "Period");
        let e = refused(|m| {
            m.insert("EvaluationPeriods".into(), json!(1441));
        });
        assert_eq!(e.field, "EvaluationPeriods");
        assert!(e.reason.contains("86400"), "{e}");
        let e = refused(|m| {
            m.insert("Period".into(), json!(3600));
            m.insert("EvaluationPeriods".into(), json!(169));
        });
        assert!(e.reason.contains("604800"), "{e}");
        let e = refused(|m| {
            m.insert("DatapointsToAlarm".into(), json!(4));
        });
        assert_eq!(e.field, "DatapointsToAlarm");
        let e = refused(|m| {
            m.insert("ComparisonOperator".into(), json!("GreaterThan"));
        });
        assert_eq!(e.field, "ComparisonOperator");
        let e = refused(|m| {
            m.insert("TreatMissingData".into(), json!("zero"));
        });
        assert_eq!(e.field, "TreatMissingData");
        let e = refused(|m| {
            m.insert("AlarmName".into(), json!("x".repeat(256)));
        });
        assert_eq!(e.field, "AlarmName");
        let e = refused(|m| {
            m.insert("AlarmName".into(), json!("bad\u{7}name"));
        });
        assert_eq!(e.field, "AlarmName");
        let e = refused(|m| {
            m.insert("AlarmActions".into(), json!(["a", "b", "c", "d", "e", "f"]));
        });
        assert_eq!(e.field, "AlarmActions");
        let e = refused(|m| {
            m.insert("ExtendedStatistic".into(), json!("p99"));
        });
        assert_eq!(e.field, "ExtendedStatistic");
        let e = refused(|m| {
            m.remove("Statistic");
            m.insert("ExtendedStatistic".into(), json!("p101"));
        });
        assert_eq!(e.field, "ExtendedStatistic");
        let e = refused(|m| {
            m.remove("Threshold");
        });
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("Threshold", "is required")
        );
        let e = refused(|m| {
            m.insert("Treshold".into(), json!(1));
        });
        assert_eq!(e.field, "Treshold");
        let e = refused(|m| {
            m.insert("Unit".into(), json!("Furlongs"));
        });
        assert_eq!(e.field, "Unit");
        let e = refused(|m| {
            m.insert("Query".into(), json!("SELECT 1"));
        });
        assert_eq!(e.field, "Query");
        let e = refused(|m| {
            m.insert(
                "Dimensions".into(),
                json!([{"Name": "a", "Value": "1"}, {"Name": "a", "Value": "2"}]),
            );
        });
        assert_eq!(e.field, "Dimensions[1].Name");
    }

    #[test]
    fn low_sample_floors_follow_the_reference() {
        let mut v = base();
        v.as_object_mut().map(|m| m.remove("Statistic"));
        v["ExtendedStatistic"] = json!("p99");
        v["EvaluateLowSampleCountPercentile"] = json!("ignore");
        let d = AlarmDefinition::from_value(v.clone()).expect("valid");
        assert!((d.low_sample_floor().expect("floor") - 1000.0).abs() < 1e-6);
        v["ExtendedStatistic"] = json!("p10");
        let d = AlarmDefinition::from_value(v).expect("valid");
        assert!((d.low_sample_floor().expect("floor") - 100.0).abs() < 1e-6);
    }
}
