//! The CloudWatch and CloudTrail limits that ingest enforces
//! (reference: sections 1.1, 1.2, 3.1, 3.2, 4.2 and 4.9 of `cloudwatch-cloudtrail.md`).

/// Datums plus series in one PutMetricData request.
pub const MAX_METRIC_ENTRIES: usize = 1_000;
/// Encoded size of one PutMetricData request.
pub const MAX_METRIC_REQUEST_BYTES: usize = 1_000_000;
/// Values in one datum's Values/Counts, and points in one series.
pub const MAX_VALUES_PER_ENTRY: usize = 150;
/// Dimensions per metric.
pub const MAX_DIMENSIONS: usize = 30;
/// Namespace, metric name and dimension name length.
pub const MAX_NAME_LEN: usize = 255;
/// Dimension value length.
pub const MAX_DIMENSION_VALUE_LEN: usize = 1_024;
/// Largest magnitude of a metric value: 2^360.
pub const MAX_METRIC_MAGNITUDE: f64 = 2.348_542_582_773_833_2e108;

/// Events in one PutLogEvents request.
pub const MAX_LOG_EVENTS: usize = 10_000;
/// PutLogEvents batch size: UTF-8 message bytes plus [`LOG_EVENT_OVERHEAD`] per event.
pub const MAX_LOG_BATCH_BYTES: usize = 1_048_576;
/// Bytes CloudWatch Logs counts for each event on top of its message.
pub const LOG_EVENT_OVERHEAD: usize = 26;
/// One log event, overhead included.
pub const MAX_LOG_EVENT_BYTES: usize = 1_048_576;
/// Log group and log stream name length.
pub const MAX_LOG_NAME_LEN: usize = 512;
/// A log batch may not span more than this (milliseconds).
pub const MAX_LOG_BATCH_SPAN_MS: i64 = 24 * 3_600_000;

/// Records in one PutAuditEvents request (CloudTrail Lake's PutAuditEvents).
pub const MAX_AUDIT_RECORDS: usize = 100;
/// Encoded size of one PutAuditEvents request.
pub const MAX_AUDIT_REQUEST_BYTES: usize = 1_048_576;
/// One CloudTrail event (since eventVersion 1.05).
pub const MAX_AUDIT_RECORD_BYTES: usize = 262_144;

/// How far in the past a metric datapoint or log event may be (14 days, in milliseconds).
pub const MAX_AGE_MS: i64 = 14 * 24 * 3_600_000;
/// How far in the future a metric datapoint or log event may be (2 hours, in milliseconds).
pub const MAX_FUTURE_MS: i64 = 2 * 3_600_000;

/// Idempotency ids: 1-128 printable ASCII characters.
pub const MAX_IDEMPOTENCY_ID_LEN: usize = 128;

/// The 27 CloudWatch `StandardUnit` values.
pub use crate::units::UNITS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnitude_is_two_to_the_360() {
        assert_eq!(MAX_METRIC_MAGNITUDE, 2f64.powi(360));
    }
}
