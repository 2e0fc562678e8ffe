//! Rows of the `alarm_history` and `webhook_deliveries` tables.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use watchtrail_query::tables::{TableKind, UTC};

use crate::error::{Error, Result};

/// One `alarm_history` row (DescribeAlarmHistory's item).
#[derive(Debug, Clone)]
pub struct HistoryRow {
    /// When, epoch milliseconds.
    pub at_ms: i64,
    /// The alarm.
    pub alarm_name: String,
    /// `StateUpdate`, `ConfigurationUpdate` or `Action`.
    pub item_type: &'static str,
    /// `Alarm updated from OK to ALARM`.
    pub summary: String,
    /// The state before (state updates).
    pub old_state: Option<String>,
    /// The state after (state updates).
    pub new_state: Option<String>,
    /// The reason text.
    pub reason: Option<String>,
    /// StateReasonData, JSON text.
    pub reason_data: Option<String>,
    /// HistoryData, JSON text.
    pub history_data: String,
}

/// One `webhook_deliveries` row: one attempt.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    /// When the attempt ended, epoch milliseconds.
    pub at_ms: i64,
    /// The notification's id (also its idempotency key).
    pub delivery_id: String,
    /// The alarm.
    pub alarm_name: String,
    /// The action as the alarm names it.
    pub destination: String,
    /// Where it went.
    pub url: Option<String>,
    /// The state the notification announces.
    pub new_state: String,
    /// 1 for the first attempt.
    pub attempt: i32,
    /// delivered, retrying, rejected, expired or undeliverable.
    pub outcome: &'static str,
    /// The HTTP status, when there was an answer.
    pub status_code: Option<i32>,
    /// What went wrong.
    pub error: Option<String>,
    /// How long the attempt took.
    pub duration_ms: i64,
}

fn batch(kind: TableKind, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    RecordBatch::try_new(kind.schema(), columns).map_err(|e| Error::Internal(e.to_string()))
}

/// The rows as an `alarm_history` batch.
///
/// # Errors
/// A broken schema invariant.
pub fn history_batch(rows: &[HistoryRow]) -> Result<RecordBatch> {
    let mut time = TimestampMicrosecondBuilder::new().with_timezone(UTC);
    let [
        mut name,
        mut kind,
        mut summary,
        mut old,
        mut new,
        mut reason,
        mut data,
        mut hist,
    ] = std::array::from_fn(|_| StringBuilder::new());
    for r in rows {
        time.append_value(r.at_ms * 1000);
        name.append_value(&r.alarm_name);
        kind.append_value(r.item_type);
        summary.append_value(&r.summary);
        old.append_option(r.old_state.as_deref());
        new.append_option(r.new_state.as_deref());
        reason.append_option(r.reason.as_deref());
        data.append_option(r.reason_data.as_deref());
        hist.append_value(&r.history_data);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(name.finish()),
        Arc::new(kind.finish()),
        Arc::new(summary.finish()),
        Arc::new(old.finish()),
        Arc::new(new.finish()),
        Arc::new(reason.finish()),
        Arc::new(data.finish()),
        Arc::new(hist.finish()),
    ];
    batch(TableKind::AlarmHistory, columns)
}

/// The rows as a `webhook_deliveries` batch.
///
/// # Errors
/// A broken schema invariant.
pub fn deliveries_batch(rows: &[DeliveryRow]) -> Result<RecordBatch> {
    let mut time = TimestampMicrosecondBuilder::new().with_timezone(UTC);
    let [
        mut id,
        mut name,
        mut dest,
        mut url,
        mut state,
        mut outcome,
        mut error,
    ] = std::array::from_fn(|_| StringBuilder::new());
    let mut attempt = Int32Builder::new();
    let mut status = Int32Builder::new();
    let mut duration = Int64Builder::new();
    for r in rows {
        time.append_value(r.at_ms * 1000);
        id.append_value(&r.delivery_id);
        name.append_value(&r.alarm_name);
        dest.append_value(&r.destination);
        url.append_option(r.url.as_deref());
        state.append_value(&r.new_state);
        attempt.append_value(r.attempt);
        outcome.append_value(r.outcome);
        status.append_option(r.status_code);
        error.append_option(r.error.as_deref());
        duration.append_value(r.duration_ms);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(id.finish()),
        Arc::new(name.finish()),
        Arc::new(dest.finish()),
        Arc::new(url.finish()),
        Arc::new(state.finish()),
        Arc::new(attempt.finish()),
        Arc::new(outcome.finish()),
        Arc::new(status.finish()),
        Arc::new(error.finish()),
        Arc::new(duration.finish()),
    ];
    batch(TableKind::WebhookDeliveries, columns)
}
