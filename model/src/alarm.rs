//! Alarms and metric filters: definitions in CloudWatch's own field names, their validation, and
//! the state machine that turns datapoints into OK / ALARM / INSUFFICIENT_DATA.
//!
//! Everything here is pure: the server's evaluator fetches datapoints with SQL, asks
//! [`Rule::decide`] for the new state, and persists and notifies. The CLI uses the same types to
//! read TOML or JSON definitions.

mod definition;
mod metric_filter;
pub mod rule;

pub use definition::{
    AlarmDefinition, ComparisonOperator, DefinitionError, Dimension, Statistic, TreatMissingData,
    parse_percentile,
};
pub use metric_filter::{
    AUDIT_LOG_GROUP, CompiledFilter, Datum, FilterEvent, MetricFilter, MetricTransformation,
};
pub use rule::{AlarmState, Decision, Rule};
