//! The agent's own counters, served on `/metrics` and logged periodically.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by every part of the agent.
#[derive(Debug, Default)]
pub struct Stats {
    /// Lines read from log files.
    pub lines_read: AtomicU64,
    /// Bytes read from log files.
    pub file_bytes_read: AtomicU64,
    /// Log events built (after multi-line joining and filters).
    pub log_events: AtomicU64,
    /// Lines cut because they were longer than `max_event_bytes`.
    pub lines_truncated: AtomicU64,
    /// Files currently tailed.
    pub files_tailed: AtomicU64,
    /// Host metric datapoints collected.
    pub datapoints: AtomicU64,
    /// Audit records taken by the local intake.
    pub audit_received: AtomicU64,
    /// Audit requests refused by the local intake.
    pub audit_refused: AtomicU64,
    /// CloudTrail delivery files read.
    pub cloudtrail_files: AtomicU64,
    /// CloudTrail delivery files that could not be read.
    pub cloudtrail_failed: AtomicU64,
    /// Requests the server accepted.
    pub requests_sent: AtomicU64,
    /// Encoded request bytes the server accepted (before compression).
    pub bytes_sent: AtomicU64,
    /// Items the server accepted.
    pub items_sent: AtomicU64,
    /// Attempts that failed with a retryable error.
    pub retries: AtomicU64,
    /// Items the server refused for good (logged, not retried).
    pub items_rejected: AtomicU64,
    /// Whole requests the server refused for good.
    pub requests_rejected: AtomicU64,
    /// Bytes in the on-disk buffer.
    pub buffer_bytes: AtomicU64,
    /// Records dropped unsent because the buffer was full.
    pub dropped_records: AtomicU64,
    /// Items in those records.
    pub dropped_items: AtomicU64,
}

impl Stats {
    /// Prometheus text exposition of the counters.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let rows: [(&str, &str, &str, &AtomicU64); 19] = [
            (
                "watchtrail_agent_lines_read_total",
                "counter",
                "Lines read from log files.",
                &self.lines_read,
            ),
            (
                "watchtrail_agent_file_bytes_read_total",
                "counter",
                "Bytes read from log files.",
                &self.file_bytes_read,
            ),
            (
                "watchtrail_agent_log_events_total",
                "counter",
                "Log events built from the lines.",
                &self.log_events,
            ),
            (
                "watchtrail_agent_lines_truncated_total",
                "counter",
                "Lines longer than max_event_bytes that were cut.",
                &self.lines_truncated,
            ),
            (
                "watchtrail_agent_files_tailed",
                "gauge",
                "Files currently tailed.",
                &self.files_tailed,
            ),
            (
                "watchtrail_agent_datapoints_total",
                "counter",
                "Host metric datapoints collected.",
                &self.datapoints,
            ),
            (
                "watchtrail_agent_audit_received_total",
                "counter",
                "Audit records taken by the local intake.",
                &self.audit_received,
            ),
            (
                "watchtrail_agent_audit_refused_total",
                "counter",
                "Audit intake requests refused as malformed.",
                &self.audit_refused,
            ),
            (
                "watchtrail_agent_cloudtrail_files_total",
                "counter",
                "CloudTrail delivery files read.",
                &self.cloudtrail_files,
            ),
            (
                "watchtrail_agent_cloudtrail_failed_total",
                "counter",
                "CloudTrail delivery files that could not be read.",
                &self.cloudtrail_failed,
            ),
            (
                "watchtrail_agent_requests_sent_total",
                "counter",
                "Requests accepted by the server.",
                &self.requests_sent,
            ),
            (
                "watchtrail_agent_bytes_sent_total",
                "counter",
                "Request bytes accepted by the server, before compression.",
                &self.bytes_sent,
            ),
            (
                "watchtrail_agent_items_sent_total",
                "counter",
                "Datapoints, log events and audit records accepted by the server.",
                &self.items_sent,
            ),
            (
                "watchtrail_agent_retries_total",
                "counter",
                "Send attempts that failed with a retryable error.",
                &self.retries,
            ),
            (
                "watchtrail_agent_items_rejected_total",
                "counter",
                "Items the server refused for good.",
                &self.items_rejected,
            ),
            (
                "watchtrail_agent_requests_rejected_total",
                "counter",
                "Whole requests the server refused for good.",
                &self.requests_rejected,
            ),
            (
                "watchtrail_agent_buffer_bytes",
                "gauge",
                "Bytes in the on-disk buffer.",
                &self.buffer_bytes,
            ),
            (
                "watchtrail_agent_dropped_records_total",
                "counter",
                "Buffered records dropped unsent because the buffer was full.",
                &self.dropped_records,
            ),
            (
                "watchtrail_agent_dropped_items_total",
                "counter",
                "Items in the dropped records.",
                &self.dropped_items,
            ),
        ];
        for (name, kind, help, v) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out
    }

    /// A one-line summary for the agent's log.
    pub fn summary(&self) -> String {
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        format!(
            "lines_read={} events={} datapoints={} audit={} sent_items={} sent_bytes={} retries={} rejected={} buffer_bytes={} dropped={}",
            g(&self.lines_read),
            g(&self.log_events),
            g(&self.datapoints),
            g(&self.audit_received),
            g(&self.items_sent),
            g(&self.bytes_sent),
            g(&self.retries),
            g(&self.items_rejected),
            g(&self.buffer_bytes),
            g(&self.dropped_items),
        )
    }
}
