//! `PutMetricFilter`-shaped metric filters: a filter pattern over a log group's messages (or the
//! audit trail's records) that makes a metric alarms can watch.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::definition::DefinitionError;
use crate::pattern::{FilterPattern, is_selector};
use crate::units::UNITS;

/// The `logGroupName` that names the tenant's audit trail instead of a log group.
pub const AUDIT_LOG_GROUP: &str = "audit";

/// A metric filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricFilter {
    /// Unique per tenant.
    pub filter_name: String,
    /// The filter pattern (may be empty: every event).
    pub filter_pattern: String,
    /// The log group whose events are matched, or `audit` for the audit trail.
    pub log_group_name: String,
    /// Exactly one transformation.
    pub metric_transformations: Vec<MetricTransformation>,
}

/// What a match adds to which metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricTransformation {
    /// Metric name.
    pub metric_name: String,
    /// Metric namespace.
    pub metric_namespace: String,
    /// A number, or a selector (`$.latency`, `$bytes`) of the matching event.
    pub metric_value: String,
    /// Reported for periods without matches (not with dimensions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<f64>,
    /// Up to 3 dimensions whose values are selectors.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub dimensions: std::collections::BTreeMap<String, String>,
    /// Unit of the metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

const FIELDS: [&str; 4] = [
    "filterName",
    "filterPattern",
    "logGroupName",
    "metricTransformations",
];
const TRANSFORMATION_FIELDS: [&str; 6] = [
    "metricName",
    "metricNamespace",
    "metricValue",
    "defaultValue",
    "dimensions",
    "unit",
];

fn check_name(
    field: &str,
    value: &str,
    max: usize,
    forbidden: &str,
) -> Result<(), DefinitionError> {
    let n = value.chars().count();
    if n == 0 || n > max {
        return Err(DefinitionError::new(
            field,
            format!("must be 1-{max} characters, got {n}"),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_ascii_control() || forbidden.contains(*c))
    {
        return Err(DefinitionError::new(
            field,
            format!("must not contain {c:?}"),
        ));
    }
    Ok(())
}

impl MetricFilter {
    /// Reads and checks a filter from its JSON form.
    ///
    /// # Errors
    /// The first field that is missing, malformed or outside CloudWatch's limits; a pattern that
    /// does not parse is refused with its position.
    pub fn from_value(value: Value) -> Result<Self, DefinitionError> {
        let Value::Object(obj) = &value else {
            return Err(DefinitionError::new(
                "(definition)",
                "must be an object of PutMetricFilter fields",
            ));
        };
        unknown(obj, &FIELDS, "")?;
        if let Some(Value::Array(ts)) = obj.get("metricTransformations") {
            for (i, t) in ts.iter().enumerate() {
                if let Value::Object(t) = t {
                    unknown(
                        t,
                        &TRANSFORMATION_FIELDS,
                        &format!("metricTransformations[{i}]."),
                    )?;
                }
            }
        }
        let filter: MetricFilter = serde_json::from_value(value.clone()).map_err(|e| {
            let msg = e.to_string();
            let field = FIELDS
                .iter()
                .chain(TRANSFORMATION_FIELDS.iter())
                .find(|f| msg.contains(&format!("`{f}`")))
                .copied()
                .unwrap_or("(definition)");
            DefinitionError::new(field, msg)
        })?;
        filter.validate()?;
        Ok(filter)
    }

    /// Checks CloudWatch's rules.
    ///
    /// # Errors
    /// The first field that breaks one.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        check_name("filterName", &self.filter_name, 512, ":*")?;
        check_name("logGroupName", &self.log_group_name, 512, "")?;
        let pattern = self.pattern()?;
        if self.metric_transformations.len() != 1 {
            return Err(DefinitionError::new(
                "metricTransformations",
                format!(
                    "must hold exactly 1 transformation, got {}",
                    self.metric_transformations.len()
                ),
            ));
        }
        let t = &self.metric_transformations[0];
        let f = "metricTransformations[0]";
        check_name(&format!("{f}.metricName"), &t.metric_name, 255, ":*$")?;
        check_name(
            &format!("{f}.metricNamespace"),
            &t.metric_namespace,
            255,
            ":*$",
        )?;
        if t.metric_value.chars().count() > 100 || t.metric_value.is_empty() {
            return Err(DefinitionError::new(
                format!("{f}.metricValue"),
                "must be 1-100 characters",
            ));
        }
        if t.metric_value.starts_with('$') {
            if !is_selector(&t.metric_value) {
                return Err(DefinitionError::new(
                    format!("{f}.metricValue"),
                    format!(
                        "`{}` is not a selector such as $.latency or $bytes",
                        t.metric_value
                    ),
                ));
            }
        } else if !t.metric_value.parse::<f64>().is_ok_and(f64::is_finite) {
            return Err(DefinitionError::new(
                format!("{f}.metricValue"),
                format!("`{}` is neither a number nor a selector", t.metric_value),
            ));
        }
        if t.default_value.is_some_and(|v| !v.is_finite()) {
            return Err(DefinitionError::new(
                format!("{f}.defaultValue"),
                "must be a finite number",
            ));
        }
        if !t.dimensions.is_empty() {
            if t.dimensions.len() > 3 {
                return Err(DefinitionError::new(
                    format!("{f}.dimensions"),
                    format!("at most 3, got {}", t.dimensions.len()),
                ));
            }
            if t.default_value.is_some() {
                return Err(DefinitionError::new(
                    format!("{f}.defaultValue"),
                    "a filter with dimensions cannot have a default value",
                ));
            }
            if !pattern.is_json() && !self.filter_pattern.trim_start().starts_with('[') {
                return Err(DefinitionError::new(
                    format!("{f}.dimensions"),
                    "dimensions need a JSON or space-delimited pattern",
                ));
            }
            for (k, v) in &t.dimensions {
                check_name(&format!("{f}.dimensions.{k}"), k, 255, "")?;
                if !is_selector(v) {
                    return Err(DefinitionError::new(
                        format!("{f}.dimensions.{k}"),
                        format!("`{v}` is not a selector such as $.eventName or $status"),
                    ));
                }
            }
        }
        if let Some(u) = &t.unit
            && !UNITS.contains(&u.as_str())
        {
            return Err(DefinitionError::new(
                format!("{f}.unit"),
                format!("`{u}` is not a CloudWatch unit"),
            ));
        }
        Ok(())
    }

    /// The parsed pattern.
    ///
    /// # Errors
    /// The pattern's parse error, as a `filterPattern` refusal.
    pub fn pattern(&self) -> Result<FilterPattern, DefinitionError> {
        FilterPattern::parse(&self.filter_pattern)
            .map_err(|e| DefinitionError::new("filterPattern", e.to_string()))
    }

    /// The transformation (validated filters have exactly one).
    pub fn transformation(&self) -> Option<&MetricTransformation> {
        self.metric_transformations.first()
    }

    /// Whether the filter reads the audit trail rather than a log group.
    pub fn reads_audit(&self) -> bool {
        self.log_group_name == AUDIT_LOG_GROUP
    }
}

fn unknown(obj: &Map<String, Value>, known: &[&str], prefix: &str) -> Result<(), DefinitionError> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(DefinitionError::new(
            format!("{prefix}{k}"),
            "unknown field (fields are PutMetricFilter's)",
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn filter() -> Value {
        json!({
            "filterName": "root-usage",
            "filterPattern": "{ $.userIdentity.type = \"Root\" }",
            "logGroupName": "audit",
            "metricTransformations": [{
                "metricName": "RootAccountUsage",
                "metricNamespace": "CISBenchmark",
                "metricValue": "1",
                "defaultValue": 0
            }]
        })
    }

    #[test]
    fn a_put_metric_filter_body_reads_as_written() {
        let f = MetricFilter::from_value(filter()).expect("valid");
        assert!(f.reads_audit());
        assert_eq!(f.transformation().map(|t| t.default_value), Some(Some(0.0)));
    }

    #[test]
    fn refusals_name_the_field_and_the_pattern_position() {
        let mut v = filter();
        v["filterPattern"] = json!("{ $.userIdentity.type = }");
        let e = MetricFilter::from_value(v).expect_err("bad pattern");
        assert_eq!(e.field, "filterPattern");
        assert!(e.reason.starts_with("at position 25:"), "{e}");

        let mut v = filter();
        v["metricTransformations"][0]["dimensions"] = json!({"EventName": "$.eventName"});
        let e = MetricFilter::from_value(v).expect_err("dimensions and default");
        assert_eq!(e.field, "metricTransformations[0].defaultValue");

        let mut v = filter();
        v["filterPattern"] = json!("ERROR");
        v["metricTransformations"][0]
            .as_object_mut()
            .map(|t| t.remove("defaultValue"));
        v["metricTransformations"][0]["dimensions"] = json!({"EventName": "$.eventName"});
        let e = MetricFilter::from_value(v).expect_err("dimensions on terms");
        assert_eq!(e.field, "metricTransformations[0].dimensions");

        let mut v = filter();
        v["metricTransformations"][0]["metricValue"] = json!("lots");
        let e = MetricFilter::from_value(v).expect_err("value");
        assert_eq!(e.field, "metricTransformations[0].metricValue");

        let mut v = filter();
        v["filterName"] = json!("a:b");
        assert_eq!(
            MetricFilter::from_value(v).expect_err("name").field,
            "filterName"
        );

        let mut v = filter();
        v["metricTransformations"] = json!([]);
        assert_eq!(
            MetricFilter::from_value(v).expect_err("none").field,
            "metricTransformations"
        );

        let mut v = filter();
        v["metricTransformations"][0]["metricValu"] = json!("1");
        assert_eq!(
            MetricFilter::from_value(v).expect_err("typo").field,
            "metricTransformations[0].metricValu"
        );
    }
}
