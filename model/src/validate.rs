//! Request validation: every rule of the CloudWatch/CloudTrail limits, with errors that name the
//! field path and index.
//!
//! A request is either refused whole (malformed: `INVALID_ARGUMENT`; over a size limit:
//! `RESOURCE_EXHAUSTED`) or turned into its *canonical* form: the accepted items only, every
//! timestamp made explicit, metric datums folded into series. The canonical form is what the
//! write-ahead log stores, so replay never depends on the clock or re-validates.
//!
//! Points outside the accepted time window (14 days back, 2 hours ahead) are rejected item by
//! item, as CloudWatch Logs does, so one stale point never blocks a whole batch.

use prost::Message as _;
use watchtrail_proto::v1::{
    AuditRecord, Dimension, MetricSeries, PutAuditEventsRequest, PutLogEventsRequest,
    PutMetricDataRequest, RejectedItem, StatisticPoint, StatisticSet, metric_datum,
};

use crate::limits::*;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A malformed request: the field path (with indexes) and what is wrong.
    #[error("{field}: {reason}")]
    Invalid {
        /// Path of the offending field, e.g. `metric_data[3].dimensions[2].value`.
        field: String,
        /// The rule that was broken.
        reason: String,
    },
    /// A request over a size or count limit.
    #[error("{0}")]
    TooLarge(String),
}

/// The result of a check.
pub type Result<T> = std::result::Result<T, Refused>;

/// A validated request in canonical form, with what was rejected from it.
#[derive(Debug)]
pub struct Validated<T> {
    /// The accepted part of the request.
    pub canonical: T,
    /// Items rejected one by one (the rest of the request stands).
    pub rejected: Vec<RejectedItem>,
    /// Records accepted (datapoints, log events or audit events).
    pub accepted: u64,
}

/// A field path, built only when an error names it: valid input formats nothing.
type Path<'a> = &'a dyn Fn() -> String;

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Refused {
    Refused::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks an idempotency id: 1-128 printable ASCII characters.
///
/// # Errors
/// [`Refused::Invalid`] naming `idempotency_id`.
pub fn validate_idempotency_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > MAX_IDEMPOTENCY_ID_LEN
        || !id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid(
            "idempotency_id",
            format!("must be 1-{MAX_IDEMPOTENCY_ID_LEN} printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

/// A CloudWatch name: ASCII, 1..=max chars, no control characters, not starting with `:`, at
/// least one non-whitespace character.
fn check_cw_name(field: Path<'_>, value: &str, max: usize) -> Result<()> {
    if value.is_empty() || value.len() > max {
        return Err(invalid(
            field(),
            format!("must be 1-{max} characters, got {}", value.len()),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !c.is_ascii() || c.is_ascii_control())
    {
        return Err(invalid(
            field(),
            format!("must be printable ASCII, found {c:?}"),
        ));
    }
    if value.starts_with(':') {
        return Err(invalid(field(), "must not start with `:`"));
    }
    if value.trim().is_empty() {
        return Err(invalid(field(), "must contain a non-whitespace character"));
    }
    Ok(())
}

fn check_namespace(field: Path<'_>, ns: &str) -> Result<()> {
    check_cw_name(field, ns, MAX_NAME_LEN)?;
    if let Some(c) = ns.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '#' | ':' | ' '))
    }) {
        return Err(invalid(
            field(),
            format!("may contain only 0-9 A-Z a-z . - _ / # : and space, found {c:?}"),
        ));
    }
    if ns.starts_with("AWS/") {
        return Err(invalid(
            field(),
            "the `AWS/` prefix is reserved for AWS services",
        ));
    }
    Ok(())
}

fn check_metric_value(field: Path<'_>, v: f64) -> Result<()> {
    if !v.is_finite() {
        return Err(invalid(
            field(),
            format!("must be a finite number, got {v}"),
        ));
    }
    if v.abs() > MAX_METRIC_MAGNITUDE {
        return Err(invalid(
            field(),
            format!("must be within -2^360..2^360, got {v:e}"),
        ));
    }
    Ok(())
}

fn check_dimensions(prefix: Path<'_>, dims: &[Dimension]) -> Result<()> {
    if dims.len() > MAX_DIMENSIONS {
        return Err(invalid(
            format!("{}.dimensions", prefix()),
            format!("at most {MAX_DIMENSIONS} dimensions, got {}", dims.len()),
        ));
    }
    for (j, d) in dims.iter().enumerate() {
        check_cw_name(
            &|| format!("{}.dimensions[{j}].name", prefix()),
            &d.name,
            MAX_NAME_LEN,
        )?;
        let vfield = || format!("{}.dimensions[{j}].value", prefix());
        if d.value.is_empty() || d.value.len() > MAX_DIMENSION_VALUE_LEN {
            return Err(invalid(
                vfield(),
                format!(
                    "must be 1-{MAX_DIMENSION_VALUE_LEN} characters, got {}",
                    d.value.len()
                ),
            ));
        }
        if let Some(c) = d
            .value
            .chars()
            .find(|c| !c.is_ascii() || c.is_ascii_control())
        {
            return Err(invalid(
                vfield(),
                format!("must be printable ASCII, found {c:?}"),
            ));
        }
        if d.value.trim().is_empty() {
            return Err(invalid(vfield(), "must contain a non-whitespace character"));
        }
        if dims[..j].iter().any(|other| other.name == d.name) {
            return Err(invalid(
                format!("{}.dimensions[{j}].name", prefix()),
                format!("duplicate dimension `{}`", d.name),
            ));
        }
    }
    Ok(())
}

fn check_unit(field: Path<'_>, unit: &str) -> Result<String> {
    if unit.is_empty() {
        return Ok("None".to_string());
    }
    if UNITS.contains(&unit) {
        Ok(unit.to_string())
    } else {
        Err(invalid(
            field(),
            format!(
                "`{unit}` is not a CloudWatch unit (e.g. Count, Bytes, Percent, Bytes/Second, None)"
            ),
        ))
    }
}

fn check_resolution(field: Path<'_>, r: i32) -> Result<i32> {
    match r {
        0 | 60 => Ok(60),
        1 => Ok(1),
        other => Err(invalid(field(), format!("must be 1 or 60, got {other}"))),
    }
}

fn check_stats(field: Path<'_>, s: &StatisticSet) -> Result<()> {
    for (name, v) in [
        ("sample_count", s.sample_count),
        ("sum", s.sum),
        ("minimum", s.minimum),
        ("maximum", s.maximum),
    ] {
        check_metric_value(&|| format!("{}.{name}", field()), v)?;
    }
    if s.sample_count <= 0.0 {
        return Err(invalid(
            format!("{}.sample_count", field()),
            "must be greater than 0",
        ));
    }
    if s.minimum > s.maximum {
        return Err(invalid(
            format!("{}.minimum", field()),
            "must not exceed maximum",
        ));
    }
    Ok(())
}

/// The identity fields a datum and a series share: namespace, metric name, dimensions, unit
/// and storage resolution. Returns the canonical unit and resolution.
fn check_identity(
    p: Path<'_>,
    namespace: &str,
    metric_name: &str,
    dims: &[Dimension],
    unit: &str,
    resolution: i32,
) -> Result<(String, i32)> {
    check_namespace(&|| format!("{}.namespace", p()), namespace)?;
    check_cw_name(
        &|| format!("{}.metric_name", p()),
        metric_name,
        MAX_NAME_LEN,
    )?;
    check_dimensions(p, dims)?;
    let unit = check_unit(&|| format!("{}.unit", p()), unit)?;
    let resolution = check_resolution(&|| format!("{}.storage_resolution", p()), resolution)?;
    Ok((unit, resolution))
}

/// Where a timestamp falls relative to the accepted window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    Ok,
    TooOld,
    TooNew,
}

fn window(ts_ms: i64, now_ms: i64) -> Window {
    if ts_ms < now_ms - MAX_AGE_MS {
        Window::TooOld
    } else if ts_ms > now_ms + MAX_FUTURE_MS {
        Window::TooNew
    } else {
        Window::Ok
    }
}

fn window_reason(w: Window) -> &'static str {
    match w {
        Window::TooOld => "timestamp is more than 14 days in the past",
        Window::TooNew => "timestamp is more than 2 hours in the future",
        Window::Ok => "",
    }
}

/// Validates a PutMetricData request and folds it into series form.
///
/// # Errors
/// [`Refused::TooLarge`] over the entry or byte limits; [`Refused::Invalid`] naming the first
/// malformed field.
pub fn validate_metrics(
    req: PutMetricDataRequest,
    now_ms: i64,
) -> Result<Validated<PutMetricDataRequest>> {
    validate_idempotency_id(&req.idempotency_id)?;
    let entries = req.metric_data.len() + req.series.len();
    if entries > MAX_METRIC_ENTRIES {
        return Err(Refused::TooLarge(format!(
            "metric_data + series: at most {MAX_METRIC_ENTRIES} entries per request, got {entries}"
        )));
    }
    if entries == 0 {
        return Err(invalid(
            "metric_data",
            "at least one datum or series is required",
        ));
    }
    let size = req.encoded_len();
    if size > MAX_METRIC_REQUEST_BYTES {
        return Err(Refused::TooLarge(format!(
            "request is {size} bytes; at most {MAX_METRIC_REQUEST_BYTES} per PutMetricData"
        )));
    }
    let mut out = Vec::with_capacity(entries);
    let mut rejected = Vec::new();
    let mut accepted = 0u64;

    for (i, d) in req.metric_data.into_iter().enumerate() {
        let p = || format!("metric_data[{i}]");
        let (unit, resolution) = check_identity(
            &p,
            &d.namespace,
            &d.metric_name,
            &d.dimensions,
            &d.unit,
            d.storage_resolution,
        )?;
        if d.timestamp_ms < 0 {
            return Err(invalid(
                format!("{}.timestamp_ms", p()),
                "must not be negative",
            ));
        }
        let ts = if d.timestamp_ms == 0 {
            now_ms
        } else {
            d.timestamp_ms
        };
        let mut series = MetricSeries {
            namespace: d.namespace,
            metric_name: d.metric_name,
            dimensions: d.dimensions,
            unit,
            storage_resolution: resolution,
            ..Default::default()
        };
        let mut points = 0u64;
        match d.data {
            None => {
                return Err(invalid(
                    format!("{}.data", p()),
                    "one of value, statistic_values or value_counts is required",
                ));
            }
            Some(metric_datum::Data::Value(v)) => {
                check_metric_value(&|| format!("{}.value", p()), v)?;
                series.timestamps_ms.push(ts);
                series.values.push(v);
                points = 1;
            }
            Some(metric_datum::Data::StatisticValues(s)) => {
                check_stats(&|| format!("{}.statistic_values", p()), &s)?;
                series.statistic_points.push(StatisticPoint {
                    timestamp_ms: ts,
                    statistic_values: Some(s),
                });
                points = 1;
            }
            Some(metric_datum::Data::ValueCounts(vc)) => {
                let f = || format!("{}.value_counts", p());
                if vc.values.is_empty() || vc.values.len() > MAX_VALUES_PER_ENTRY {
                    return Err(invalid(
                        format!("{}.values", f()),
                        format!(
                            "must hold 1-{MAX_VALUES_PER_ENTRY} values, got {}",
                            vc.values.len()
                        ),
                    ));
                }
                if !vc.counts.is_empty() && vc.counts.len() != vc.values.len() {
                    return Err(invalid(
                        format!("{}.counts", f()),
                        format!(
                            "has {} counts for {} values",
                            vc.counts.len(),
                            vc.values.len()
                        ),
                    ));
                }
                for (k, &v) in vc.values.iter().enumerate() {
                    check_metric_value(&|| format!("{}.values[{k}]", f()), v)?;
                    let count = vc.counts.get(k).copied().unwrap_or(1.0);
                    if !count.is_finite() || count < 0.0 {
                        return Err(invalid(
                            format!("{}.counts[{k}]", f()),
                            "must be a finite number >= 0",
                        ));
                    }
                    if count == 0.0 {
                        continue;
                    }
                    if count == 1.0 {
                        series.timestamps_ms.push(ts);
                        series.values.push(v);
                    } else {
                        series.statistic_points.push(StatisticPoint {
                            timestamp_ms: ts,
                            statistic_values: Some(StatisticSet {
                                sample_count: count,
                                sum: v * count,
                                minimum: v,
                                maximum: v,
                            }),
                        });
                    }
                    points += 1;
                }
            }
        }
        let w = window(ts, now_ms);
        if w != Window::Ok {
            rejected.push(RejectedItem {
                index: i as u32,
                field: format!("{}.timestamp_ms", p()),
                reason: window_reason(w).into(),
            });
            continue;
        }
        accepted += points;
        out.push(series);
    }

    for (i, s) in req.series.into_iter().enumerate() {
        let p = || format!("series[{i}]");
        let (unit, resolution) = check_identity(
            &p,
            &s.namespace,
            &s.metric_name,
            &s.dimensions,
            &s.unit,
            s.storage_resolution,
        )?;
        if s.timestamps_ms.len() != s.values.len() {
            return Err(invalid(
                format!("{}.values", p()),
                format!(
                    "has {} values for {} timestamps",
                    s.values.len(),
                    s.timestamps_ms.len()
                ),
            ));
        }
        let n = s.values.len() + s.statistic_points.len();
        if n == 0 || n > MAX_VALUES_PER_ENTRY {
            return Err(invalid(
                format!("{}.values", p()),
                format!("a series carries 1-{MAX_VALUES_PER_ENTRY} points, got {n}"),
            ));
        }
        let mut series = MetricSeries {
            namespace: s.namespace,
            metric_name: s.metric_name,
            dimensions: s.dimensions,
            unit,
            storage_resolution: resolution,
            ..Default::default()
        };
        for (k, (&ts, &v)) in s.timestamps_ms.iter().zip(&s.values).enumerate() {
            check_metric_value(&|| format!("{}.values[{k}]", p()), v)?;
            if ts <= 0 {
                return Err(invalid(
                    format!("{}.timestamps_ms[{k}]", p()),
                    "must be a positive epoch time in milliseconds",
                ));
            }
            match window(ts, now_ms) {
                Window::Ok => {
                    series.timestamps_ms.push(ts);
                    series.values.push(v);
                }
                w => rejected.push(RejectedItem {
                    index: i as u32,
                    field: format!("{}.timestamps_ms[{k}]", p()),
                    reason: window_reason(w).into(),
                }),
            }
        }
        for (k, sp) in s.statistic_points.into_iter().enumerate() {
            let f = || format!("{}.statistic_points[{k}]", p());
            let stats = sp
                .statistic_values
                .ok_or_else(|| invalid(format!("{}.statistic_values", f()), "is required"))?;
            check_stats(&|| format!("{}.statistic_values", f()), &stats)?;
            if sp.timestamp_ms <= 0 {
                return Err(invalid(
                    format!("{}.timestamp_ms", f()),
                    "must be a positive epoch time in milliseconds",
                ));
            }
            match window(sp.timestamp_ms, now_ms) {
                Window::Ok => series.statistic_points.push(StatisticPoint {
                    timestamp_ms: sp.timestamp_ms,
                    statistic_values: Some(stats),
                }),
                w => rejected.push(RejectedItem {
                    index: i as u32,
                    field: format!("{}.timestamp_ms", f()),
                    reason: window_reason(w).into(),
                }),
            }
        }
        let kept = (series.values.len() + series.statistic_points.len()) as u64;
        if kept > 0 {
            accepted += kept;
            out.push(series);
        }
    }
    Ok(Validated {
        canonical: PutMetricDataRequest {
            idempotency_id: req.idempotency_id,
            metric_data: Vec::new(),
            series: out,
        },
        rejected,
        accepted,
    })
}

/// Checks a log group name: 1-512 of `. - _ / # A-Z a-z 0-9`, not starting with `aws/`.
///
/// # Errors
/// [`Refused::Invalid`] naming `field`.
pub fn check_log_group(field: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_LOG_NAME_LEN {
        return Err(invalid(
            field,
            format!(
                "must be 1-{MAX_LOG_NAME_LEN} characters, got {}",
                name.len()
            ),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '#')))
    {
        return Err(invalid(
            field,
            format!("may contain only . - _ / # A-Z a-z 0-9, found {c:?}"),
        ));
    }
    if name.starts_with("aws/") {
        return Err(invalid(field, "the `aws/` prefix is reserved"));
    }
    // Names become no paths, but refuse `..` segments anyway: they only ever mean mischief.
    if name.split('/').any(|seg| seg == "..") {
        return Err(invalid(field, "must not contain a `..` segment"));
    }
    Ok(())
}

/// Checks a log stream name: 1-512 characters, no `:` or `*`, no control characters.
///
/// # Errors
/// [`Refused::Invalid`] naming `field`.
pub fn check_log_stream(field: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_LOG_NAME_LEN {
        return Err(invalid(
            field,
            format!("must be 1-{MAX_LOG_NAME_LEN} bytes, got {}", name.len()),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, ':' | '*') || c.is_control())
    {
        return Err(invalid(field, format!("must not contain {c:?}")));
    }
    Ok(())
}

/// Validates a PutLogEvents request with CloudWatch Logs' rules.
///
/// # Errors
/// [`Refused::TooLarge`] over the count or byte limits; [`Refused::Invalid`] for bad names,
/// empty or oversize messages, events out of order or a batch spanning more than 24 hours.
pub fn validate_logs(
    req: PutLogEventsRequest,
    now_ms: i64,
) -> Result<Validated<PutLogEventsRequest>> {
    validate_idempotency_id(&req.idempotency_id)?;
    check_log_group("log_group_name", &req.log_group_name)?;
    check_log_stream("log_stream_name", &req.log_stream_name)?;
    let n = req.log_events.len();
    if n == 0 {
        return Err(invalid("log_events", "at least one event is required"));
    }
    if n > MAX_LOG_EVENTS {
        return Err(Refused::TooLarge(format!(
            "log_events: at most {MAX_LOG_EVENTS} events per request, got {n}"
        )));
    }
    // One event over the limit is named by its index before the batch total is judged.
    if let Some((i, e)) = req
        .log_events
        .iter()
        .enumerate()
        .find(|(_, e)| e.message.len() + LOG_EVENT_OVERHEAD > MAX_LOG_EVENT_BYTES)
    {
        return Err(invalid(
            format!("log_events[{i}].message"),
            format!(
                "event is {} bytes; at most {MAX_LOG_EVENT_BYTES} including {LOG_EVENT_OVERHEAD} bytes of overhead",
                e.message.len() + LOG_EVENT_OVERHEAD
            ),
        ));
    }
    let batch: usize = req
        .log_events
        .iter()
        .map(|e| e.message.len() + LOG_EVENT_OVERHEAD)
        .sum();
    if batch > MAX_LOG_BATCH_BYTES {
        return Err(Refused::TooLarge(format!(
            "log_events: batch is {batch} bytes (messages + {LOG_EVENT_OVERHEAD} per event); at most {MAX_LOG_BATCH_BYTES}"
        )));
    }
    if let Some(origin) = &req.origin
        && (origin.host.len() > MAX_LOG_NAME_LEN || origin.file_path.len() > 4096)
    {
        return Err(invalid(
            "origin",
            "host is limited to 512 bytes and file_path to 4096",
        ));
    }
    let mut prev = i64::MIN;
    let mut first_ok: Option<i64> = None;
    let mut last_ok = 0;
    for (i, e) in req.log_events.iter().enumerate() {
        if e.message.is_empty() {
            return Err(invalid(
                format!("log_events[{i}].message"),
                "must not be empty",
            ));
        }
        if e.timestamp_ms < 0 {
            return Err(invalid(
                format!("log_events[{i}].timestamp_ms"),
                "must not be negative",
            ));
        }
        if e.timestamp_ms < prev {
            return Err(invalid(
                format!("log_events[{i}].timestamp_ms"),
                "events must be in chronological order",
            ));
        }
        prev = e.timestamp_ms;
        if window(e.timestamp_ms, now_ms) == Window::Ok {
            first_ok.get_or_insert(e.timestamp_ms);
            last_ok = e.timestamp_ms;
        }
    }
    if let Some(first) = first_ok
        && last_ok - first > MAX_LOG_BATCH_SPAN_MS
    {
        return Err(invalid(
            "log_events",
            "a batch may not span more than 24 hours",
        ));
    }
    let mut rejected = Vec::new();
    let mut kept = Vec::with_capacity(n);
    for (i, e) in req.log_events.into_iter().enumerate() {
        match window(e.timestamp_ms, now_ms) {
            Window::Ok => kept.push(e),
            w => rejected.push(RejectedItem {
                index: i as u32,
                field: format!("log_events[{i}].timestamp_ms"),
                reason: window_reason(w).into(),
            }),
        }
    }
    let accepted = kept.len() as u64;
    Ok(Validated {
        canonical: PutLogEventsRequest {
            log_events: kept,
            ..req
        },
        rejected,
        accepted,
    })
}

/// Validates a PutAuditEvents request: sizes, JSON syntax and the required CloudTrail fields.
///
/// # Errors
/// [`Refused::TooLarge`] over the count or byte limits; [`Refused::Invalid`] naming the
/// record, and for malformed JSON the line and column.
pub fn validate_audit(req: PutAuditEventsRequest) -> Result<Validated<PutAuditEventsRequest>> {
    validate_idempotency_id(&req.idempotency_id)?;
    let n = req.records.len();
    if n == 0 {
        return Err(invalid("records", "at least one record is required"));
    }
    if n > MAX_AUDIT_RECORDS {
        return Err(Refused::TooLarge(format!(
            "records: at most {MAX_AUDIT_RECORDS} per request, got {n}"
        )));
    }
    let size = req.encoded_len();
    if size > MAX_AUDIT_REQUEST_BYTES {
        return Err(Refused::TooLarge(format!(
            "request is {size} bytes; at most {MAX_AUDIT_REQUEST_BYTES} per PutAuditEvents"
        )));
    }
    for (i, AuditRecord { json }) in req.records.iter().enumerate() {
        let p = format!("records[{i}]");
        if json.len() > MAX_AUDIT_RECORD_BYTES {
            return Err(invalid(
                p,
                format!(
                    "event is {} bytes; at most {MAX_AUDIT_RECORD_BYTES}",
                    json.len()
                ),
            ));
        }
        crate::cloudtrail::parse_event(json)
            .map_err(|e| invalid(format!("{p}{}", e.field), e.reason))?;
    }
    let accepted = n as u64;
    Ok(Validated {
        canonical: req,
        rejected: Vec::new(),
        accepted,
    })
}

#[cfg(test)]
mod tests;
