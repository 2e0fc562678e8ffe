//! `PutMetricFilter`-shaped metric filters: a filter pattern over a log group's messages (or the
//! audit trail's records) that makes a metric alarms can watch.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::definition::DefinitionError;
use crate::limits::{MAX_DIMENSION_VALUE_LEN, MAX_METRIC_MAGNITUDE};
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
    /// When the filter was first created (epoch milliseconds), set by the server: events
    /// ingested from then on make its metric; older ones only through a backfill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<i64>,
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

const FIELDS: [&str; 5] = [
    "filterName",
    "filterPattern",
    "logGroupName",
    "metricTransformations",
    // What describe answers; accepted back, and set by the server.
    "creationTime",
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

/// One event as filters see it: its text, and its JSON parsed at most once for all of them.
#[derive(Debug)]
pub struct FilterEvent<'a> {
    text: &'a str,
    json: std::cell::OnceCell<Option<Value>>,
}

impl<'a> FilterEvent<'a> {
    /// A log message, or a CloudTrail record's JSON text.
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            json: std::cell::OnceCell::new(),
        }
    }

    fn json(&self) -> Option<&Value> {
        self.json
            .get_or_init(|| {
                // Only text that could be a JSON object is parsed.
                if self.text.trim_start().starts_with('{') {
                    serde_json::from_str(self.text).ok()
                } else {
                    None
                }
            })
            .as_ref()
    }
}

/// What one matching event adds to its filter's metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    /// The value (`metricValue`, or the number its selector names).
    pub value: f64,
    /// The dimensions, sorted by name, their values read from the event.
    pub dimensions: Vec<(String, String)>,
}

/// A filter ready to run over events: its pattern parsed once.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    /// The filter.
    pub filter: MetricFilter,
    pattern: FilterPattern,
}

impl CompiledFilter {
    /// Compiles a stored filter.
    ///
    /// # Errors
    /// The filter breaks a rule (a document changed behind the server's back).
    pub fn new(filter: MetricFilter) -> Result<Self, DefinitionError> {
        filter.validate()?;
        let pattern = filter.pattern()?;
        Ok(Self { filter, pattern })
    }

    /// The datum an event makes: `None` when it does not match, or when the value or a
    /// dimension the transformation names is absent, not a number (for the value), or outside
    /// CloudWatch's limits; such an event makes no datum, as in CloudWatch.
    pub fn apply(&self, event: &FilterEvent<'_>) -> Option<Datum> {
        let t = self.filter.transformation()?;
        let doc = if self.pattern.is_json() || t.metric_value.starts_with("$.") {
            event.json()
        } else {
            None
        };
        if !self.pattern.matches_parsed(event.text, doc) {
            return None;
        }
        let field = |selector: &str| {
            let doc = if selector.starts_with("$.") {
                event.json()
            } else {
                None
            };
            self.pattern.extract_parsed(event.text, doc, selector)
        };
        let value = if t.metric_value.starts_with('$') {
            field(&t.metric_value)?.trim().parse::<f64>().ok()?
        } else {
            t.metric_value.parse::<f64>().ok()?
        };
        if !value.is_finite() || value.abs() > MAX_METRIC_MAGNITUDE {
            return None;
        }
        let mut dimensions = Vec::with_capacity(t.dimensions.len());
        for (name, selector) in &t.dimensions {
            let v = field(selector)?;
            if v.is_empty()
                || v.chars().count() > MAX_DIMENSION_VALUE_LEN
                || v.chars().any(|c| c.is_control())
            {
                return None;
            }
            dimensions.push((name.clone(), v));
        }
        Some(Datum { value, dimensions })
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

    fn compiled(v: Value) -> CompiledFilter {
        CompiledFilter::new(MetricFilter::from_value(v).expect("valid")).expect("compiles")
    }

    #[test]
    fn a_compiled_filter_makes_one_datum_per_matching_event() {
        let f = compiled(filter());
        let root = r#"{"eventName":"ListBuckets","userIdentity":{"type":"Root"}}"#;
        let user = r#"{"eventName":"ListBuckets","userIdentity":{"type":"IAMUser"}}"#;
        assert_eq!(
            f.apply(&FilterEvent::new(root)),
            Some(Datum {
                value: 1.0,
                dimensions: vec![]
            })
        );
        assert_eq!(f.apply(&FilterEvent::new(user)), None);
        assert_eq!(f.apply(&FilterEvent::new("not json")), None);
    }

    #[test]
    fn values_and_dimensions_come_from_the_event() {
        let f = compiled(json!({
            "filterName": "latency",
            "filterPattern": "{ $.latency > 0 }",
            "logGroupName": "app",
            "metricTransformations": [{
                "metricName": "Latency", "metricNamespace": "App",
                "metricValue": "$.latency", "unit": "Milliseconds",
                "dimensions": {"Path": "$.path", "Code": "$.code"}
            }]
        }));
        let d = f
            .apply(&FilterEvent::new(
                r#"{"latency": 42.5, "path": "/a", "code": 200}"#,
            ))
            .expect("matches");
        assert_eq!(d.value, 42.5);
        assert_eq!(
            d.dimensions,
            vec![("Code".into(), "200".into()), ("Path".into(), "/a".into())]
        );
        // A dimension the event lacks: no datum.
        assert_eq!(
            f.apply(&FilterEvent::new(r#"{"latency": 42.5, "code": 200}"#)),
            None
        );

        let spaced = compiled(json!({
            "filterName": "bytes",
            "filterPattern": "[ip, user, username, timestamp, request, status_code = 2*, bytes]",
            "logGroupName": "web",
            "metricTransformations": [{
                "metricName": "Bytes", "metricNamespace": "Web",
                "metricValue": "$bytes", "dimensions": {"Status": "$status_code"}
            }]
        }));
        let line = r#"127.0.0.1 - frank [10/Oct/2000:13:25:15 -0700] "GET /a HTTP/1.0" 200 1534"#;
        let d = spaced.apply(&FilterEvent::new(line)).expect("matches");
        assert_eq!(d.value, 1534.0);
        assert_eq!(d.dimensions, vec![("Status".into(), "200".into())]);
        // A value that is not a number makes no datum.
        let dash = r#"127.0.0.1 - frank [10/Oct/2000:13:25:15 -0700] "GET /a HTTP/1.0" 200 -"#;
        assert_eq!(spaced.apply(&FilterEvent::new(dash)), None);
    }

    #[test]
    fn describe_output_with_a_creation_time_is_accepted_back() {
        let mut v = filter();
        v["creationTime"] = json!(1_700_000_000_000_i64);
        let f = MetricFilter::from_value(v).expect("valid");
        assert_eq!(f.creation_time, Some(1_700_000_000_000));
    }
}
