//! Alarm definitions checked against the engine. The definitions, metric filters and the state
//! machine are `watchtrail-model`'s (re-exported here); what only the engine can say is whether
//! a SQL alarm's `Query` is one read-only statement within the statement bounds, and that is
//! checked here, where definitions enter (the HTTP API, the CLI).

pub use watchtrail_model::alarm::*;

/// Reads a `PutMetricAlarm` body and checks it whole, its `Query` included.
///
/// # Errors
/// The first field that breaks a rule.
pub fn parse_definition(value: serde_json::Value) -> Result<AlarmDefinition, DefinitionError> {
    let def = AlarmDefinition::from_value(value)?;
    check_query(&def)?;
    Ok(def)
}

/// Checks a SQL alarm's `Query` as the engine will run it: one read-only statement within the
/// bounds on size, nesting and expressions. Metric alarms pass.
///
/// # Errors
/// `Query`, with the engine's reason.
pub fn check_query(def: &AlarmDefinition) -> Result<(), DefinitionError> {
    match &def.query {
        Some(q) => crate::engine::check_read_only(q)
            .map_err(|e| DefinitionError::new("Query", e.to_string())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn sql_alarm(query: &str) -> Result<AlarmDefinition, DefinitionError> {
        parse_definition(json!({
            "AlarmName": "deletes",
            "Statistic": "Sum",
            "Period": 60,
            "EvaluationPeriods": 1,
            "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold",
            "Query": query,
        }))
    }

    #[test]
    fn a_sql_alarm_that_writes_is_refused_naming_its_query() {
        let e = sql_alarm("DROP TABLE audit").expect_err("refused");
        assert_eq!(e.field, "Query");
        assert!(e.reason.contains("read-only"), "{e}");
    }

    #[test]
    fn a_sql_alarm_that_would_crash_a_query_thread_is_refused_at_put() {
        let deep = format!(
            "SELECT time, {} AS value FROM metrics",
            vec!["1"; 2_000].join("+")
        );
        let e = sql_alarm(&deep).expect_err("a 2,000-term chain");
        assert_eq!(e.field, "Query");
        assert!(e.reason.contains("levels deep"), "{e}");
        sql_alarm("SELECT time, value FROM metrics").expect("an ordinary SQL alarm");
        let metric: Value = json!({
            "AlarmName": "cpu", "Namespace": "CWAgent", "MetricName": "cpu", "Statistic": "Average",
            "Period": 60, "EvaluationPeriods": 1, "Threshold": 1,
            "ComparisonOperator": "GreaterThanThreshold",
        });
        parse_definition(metric).expect("a metric alarm has no Query to check");
    }
}
