//! The server's own telemetry, served as Prometheus text on `/metrics`.
//!
//! A handful of atomics: a metrics library would cost more build time than these few lines.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Sum and count of observed durations (a Prometheus summary without quantiles).
#[derive(Debug, Default)]
pub struct Timer {
    micros: AtomicU64,
    count: AtomicU64,
}

impl Timer {
    /// Records one duration in seconds.
    pub fn observe(&self, seconds: f64) {
        self.micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Per-kind counters: metrics, logs, audit.
#[derive(Debug, Default)]
pub struct PerKind {
    /// metrics
    pub metrics: Counter,
    /// logs
    pub logs: Counter,
    /// audit
    pub audit: Counter,
    /// the control-plane tables (never ingested; kept so that every kind has a counter)
    pub other: Counter,
}

impl PerKind {
    /// The counter of a kind.
    pub fn get(&self, kind: watchtrail_query::tables::TableKind) -> &Counter {
        use watchtrail_query::tables::TableKind;
        match kind {
            TableKind::Metrics => &self.metrics,
            TableKind::Logs => &self.logs,
            TableKind::Audit => &self.audit,
            TableKind::AlarmHistory | TableKind::WebhookDeliveries => &self.other,
        }
    }
}

/// Every metric the server exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records accepted, per kind.
    pub records_accepted: PerKind,
    /// Records rejected (item by item or with their whole request), per kind.
    pub records_rejected: PerKind,
    /// Requests answered from the idempotency index.
    pub duplicate_requests: Counter,
    /// Requests refused because the WAL was over its byte budget.
    pub wal_full_rejections: Counter,
    /// Bytes in WAL segments.
    pub wal_bytes: Gauge,
    /// Time from the first write of a group to its fsync.
    pub wal_fsync_seconds: Timer,
    /// Rows held in memory, not yet committed.
    pub buffered_rows: Gauge,
    /// Parquet files committed to tables.
    pub files_committed: Counter,
    /// Bytes of Parquet committed.
    pub bytes_committed: Counter,
    /// Rows committed.
    pub rows_committed: Counter,
    /// Flushes that failed and will be retried.
    pub flush_failures: Counter,
    /// Time to write and commit one flush.
    pub flush_seconds: Timer,
    /// 1 while this server holds the alarm evaluator lease.
    pub alarm_evaluator: Gauge,
    /// Alarm evaluations run.
    pub alarm_evaluations: Counter,
    /// Alarm evaluations whose query failed.
    pub alarm_evaluation_failures: Counter,
    /// Alarm state changes recorded.
    pub alarm_transitions: Counter,
    /// Time to evaluate every alarm due at one boundary.
    pub alarm_boundary_seconds: Timer,
    /// Notifications delivered (2xx).
    pub notifications_delivered: Counter,
    /// Notification attempts that failed (retried, refused or given up).
    pub notification_failures: Counter,
    /// Time windows compacted.
    pub compaction_windows: Counter,
    /// Small files merged away by compaction.
    pub compaction_files_in: Counter,
    /// Files written by compaction.
    pub compaction_files_out: Counter,
    /// Bytes read by compaction.
    pub compaction_bytes_in: Counter,
    /// Bytes written by compaction.
    pub compaction_bytes_out: Counter,
    /// Lifecycle passes over a table that failed.
    pub lifecycle_failures: Counter,
    /// Audit digests written.
    pub audit_digests_written: Counter,
    /// Digester passes over a tenant that failed.
    pub audit_digest_failures: Counter,
    /// Digested windows whose events changed or went missing (never digested again).
    pub audit_digest_mismatches: Counter,
    /// Files removed by retention, or cut down to the log groups still kept.
    pub retention_files_removed: Counter,
    /// Rewrites that rolled metrics up to a coarser resolution tier.
    pub rollup_rewrites: Counter,
    /// Replaced or expired files deleted from storage after the grace period.
    pub vacuum_files_deleted: Counter,
    /// Watchtrail's own audit events written.
    pub self_audit_events: Counter,
    /// Watchtrail's own audit events dropped (queue full, or the WAL refused them).
    pub self_audit_dropped: Counter,
    /// Watchtrail's own audit events that failed validation and were dropped alone.
    pub self_audit_invalid: Counter,
    /// Refusals of unauthenticated callers folded into a per-address summary event.
    pub self_audit_summarised: Counter,
}

impl Metrics {
    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, values: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in values {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let kinds = |p: &PerKind| {
            [
                ("{kind=\"metrics\"}", p.metrics.get()),
                ("{kind=\"logs\"}", p.logs.get()),
                ("{kind=\"audit\"}", p.audit.get()),
            ]
        };
        counter(
            "watchtrail_ingest_records_accepted_total",
            "Records made durable.",
            &kinds(&self.records_accepted),
        );
        counter(
            "watchtrail_ingest_records_rejected_total",
            "Records refused by validation.",
            &kinds(&self.records_rejected),
        );
        counter(
            "watchtrail_ingest_duplicate_requests_total",
            "Requests whose idempotency id was already applied.",
            &[("", self.duplicate_requests.get())],
        );
        counter(
            "watchtrail_wal_full_rejections_total",
            "Requests refused because the WAL was full.",
            &[("", self.wal_full_rejections.get())],
        );
        counter(
            "watchtrail_flush_files_committed_total",
            "Parquet files committed to tables.",
            &[("", self.files_committed.get())],
        );
        counter(
            "watchtrail_flush_bytes_committed_total",
            "Parquet bytes committed to tables.",
            &[("", self.bytes_committed.get())],
        );
        counter(
            "watchtrail_flush_rows_committed_total",
            "Rows committed to tables.",
            &[("", self.rows_committed.get())],
        );
        counter(
            "watchtrail_flush_failures_total",
            "Flushes that failed and are retried.",
            &[("", self.flush_failures.get())],
        );
        counter(
            "watchtrail_alarm_evaluations_total",
            "Alarm evaluations run.",
            &[("", self.alarm_evaluations.get())],
        );
        counter(
            "watchtrail_alarm_evaluation_failures_total",
            "Alarm evaluations whose query failed.",
            &[("", self.alarm_evaluation_failures.get())],
        );
        counter(
            "watchtrail_alarm_transitions_total",
            "Alarm state changes recorded.",
            &[("", self.alarm_transitions.get())],
        );
        counter(
            "watchtrail_notifications_delivered_total",
            "Webhook notifications delivered.",
            &[("", self.notifications_delivered.get())],
        );
        counter(
            "watchtrail_notification_failures_total",
            "Webhook attempts that failed (retried, refused or given up).",
            &[("", self.notification_failures.get())],
        );
        for (name, help, v) in [
            (
                "watchtrail_compaction_windows_total",
                "Time windows compacted.",
                &self.compaction_windows,
            ),
            (
                "watchtrail_compaction_files_in_total",
                "Small files merged away by compaction.",
                &self.compaction_files_in,
            ),
            (
                "watchtrail_compaction_files_out_total",
                "Files written by compaction.",
                &self.compaction_files_out,
            ),
            (
                "watchtrail_compaction_bytes_in_total",
                "Bytes read by compaction.",
                &self.compaction_bytes_in,
            ),
            (
                "watchtrail_compaction_bytes_out_total",
                "Bytes written by compaction.",
                &self.compaction_bytes_out,
            ),
            (
                "watchtrail_lifecycle_failures_total",
                "Compaction, retention or vacuum passes that failed.",
                &self.lifecycle_failures,
            ),
            (
                "watchtrail_audit_digests_written_total",
                "Signed audit digests written.",
                &self.audit_digests_written,
            ),
            (
                "watchtrail_audit_digest_failures_total",
                "Digester passes over a tenant that failed.",
                &self.audit_digest_failures,
            ),
            (
                "watchtrail_audit_digest_mismatches_total",
                "Digested audit windows whose events changed or went missing.",
                &self.audit_digest_mismatches,
            ),
            (
                "watchtrail_retention_files_removed_total",
                "Files removed by retention, or cut down to the log groups still kept.",
                &self.retention_files_removed,
            ),
            (
                "watchtrail_rollup_rewrites_total",
                "Rewrites that rolled metrics up to a coarser resolution tier.",
                &self.rollup_rewrites,
            ),
            (
                "watchtrail_vacuum_files_deleted_total",
                "Replaced or expired files deleted after the grace period.",
                &self.vacuum_files_deleted,
            ),
            (
                "watchtrail_self_audit_events_total",
                "Watchtrail's own audit events written to the audit tables.",
                &self.self_audit_events,
            ),
            (
                "watchtrail_self_audit_dropped_total",
                "Watchtrail's own audit events dropped (queue full or WAL refusing).",
                &self.self_audit_dropped,
            ),
            (
                "watchtrail_self_audit_invalid_total",
                "Watchtrail's own audit events that failed validation, dropped one by one.",
                &self.self_audit_invalid,
            ),
            (
                "watchtrail_self_audit_summarised_total",
                "Refusals of unauthenticated callers folded into per-address summary events.",
                &self.self_audit_summarised,
            ),
        ] {
            counter(name, help, &[("", v.get())]);
        }
        let mut gauge = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "watchtrail_wal_bytes",
            "Bytes in write-ahead log segments.",
            self.wal_bytes.get(),
        );
        gauge(
            "watchtrail_buffer_rows",
            "Rows in memory not yet committed.",
            self.buffered_rows.get(),
        );
        gauge(
            "watchtrail_alarm_evaluator",
            "Whether this server holds the alarm evaluator lease.",
            self.alarm_evaluator.get(),
        );
        let mut summary = |name: &str, help: &str, t: &Timer| {
            let secs = t.micros.load(Ordering::Relaxed) as f64 / 1e6;
            let n = t.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} summary\n{name}_sum {secs}\n{name}_count {n}"
            );
        };
        summary(
            "watchtrail_wal_fsync_seconds",
            "Write plus fdatasync time of a group commit.",
            &self.wal_fsync_seconds,
        );
        summary(
            "watchtrail_flush_seconds",
            "Time to write and commit a flush.",
            &self.flush_seconds,
        );
        summary(
            "watchtrail_alarm_boundary_seconds",
            "Time to evaluate the alarms due at one boundary.",
            &self.alarm_boundary_seconds,
        );
        out
    }
}
