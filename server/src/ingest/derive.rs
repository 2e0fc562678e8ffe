//! Metric filters at ingest: the datapoints that matching log events and audit records make.
//!
//! The handler of a `PutLogEvents` or `PutAuditEvents` request runs the tenant's filters of
//! that log group (or of the audit trail) over its events and puts what they make into the
//! request's WAL record ([`Derived`]). Applying the record adds those points to the tenant's
//! `metrics` buffer under the same WAL sequence number, so they reach the table exactly once,
//! like every other row: replay applies them again only when the metrics table does not hold
//! that sequence number yet, and a logs or audit chunk is committed only after the metrics
//! points it made (see `flush`). A point of an audit event that turns out to be a duplicate of
//! a stored one is dropped with the event.
//!
//! Filters are read from the control documents and cached per tenant for [`FILTER_TTL`]; the
//! server that stores a filter forgets its cache at once, others within the TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use tracing::warn;
use watchtrail_proto::v1::{Dimension, MetricSeries};
use watchtrail_query::alarm::{CompiledFilter, FilterEvent, MetricFilter};
use watchtrail_storage::control::{ControlStore, Doc};

use crate::wal::lock;

/// How long a server keeps a tenant's filters before reading them again.
pub const FILTER_TTL: Duration = Duration::from_secs(5);

/// One datapoint a filter made from one event.
#[derive(Clone, PartialEq, Message)]
pub struct DerivedPoint {
    /// Index into [`Derived::series`].
    #[prost(uint32, tag = "1")]
    pub series: u32,
    /// Position of the event among the request's parsed events.
    #[prost(uint32, tag = "2")]
    pub event: u32,
    /// The event's time.
    #[prost(int64, tag = "3")]
    pub timestamp_ms: i64,
    /// The value.
    #[prost(double, tag = "4")]
    pub value: f64,
}

/// The datapoints a request's events made, kept in its WAL record.
#[derive(Clone, PartialEq, Message)]
pub struct Derived {
    /// Series identities (namespace, name, dimensions, unit); no points.
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<MetricSeries>,
    /// The points.
    #[prost(message, repeated, tag = "2")]
    pub points: Vec<DerivedPoint>,
}

impl Derived {
    /// The points of the events `keep` accepts, as metric series ready for the buffer.
    pub fn into_series(self, keep: impl Fn(u32) -> bool) -> Vec<MetricSeries> {
        let mut series = self.series;
        for p in self.points {
            if !keep(p.event) {
                continue;
            }
            if let Some(s) = series.get_mut(p.series as usize) {
                s.timestamps_ms.push(p.timestamp_ms);
                s.values.push(p.value);
            }
        }
        series.retain(|s| !s.values.is_empty());
        series
    }
}

/// A tenant's filters, by the log group they read (`audit` for the trail).
#[derive(Debug, Default)]
pub struct TenantFilters {
    by_group: HashMap<String, Vec<CompiledFilter>>,
}

impl TenantFilters {
    /// Compiles stored filters; one that no longer compiles is skipped with a warning.
    pub fn new(tenant: &str, filters: Vec<MetricFilter>) -> Self {
        let mut by_group: HashMap<String, Vec<CompiledFilter>> = HashMap::new();
        for f in filters {
            let name = f.filter_name.clone();
            match CompiledFilter::new(f) {
                Ok(c) => by_group
                    .entry(c.filter.log_group_name.clone())
                    .or_default()
                    .push(c),
                Err(e) => {
                    warn!(%tenant, filter = %name, error = %e, "skipping a stored metric filter")
                }
            }
        }
        Self { by_group }
    }

    /// Whether any filter reads `group`.
    pub fn reads(&self, group: &str) -> bool {
        self.by_group.contains_key(group)
    }

    /// The points the filters of `group` make from `events` (time in ms, text), or `None` when
    /// they make none.
    pub fn derive<'a>(
        &self,
        group: &str,
        events: impl IntoIterator<Item = (i64, &'a str)>,
    ) -> Option<Derived> {
        let filters = self.by_group.get(group)?;
        let mut out = Derived::default();
        let mut index: HashMap<(usize, Vec<(String, String)>), u32> = HashMap::new();
        for (i, (time_ms, text)) in events.into_iter().enumerate() {
            let event = FilterEvent::new(text);
            for (fi, f) in filters.iter().enumerate() {
                let Some(datum) = f.apply(&event) else {
                    continue;
                };
                let Some(t) = f.filter.transformation() else {
                    continue;
                };
                let series = *index
                    .entry((fi, datum.dimensions.clone()))
                    .or_insert_with(|| {
                        out.series.push(MetricSeries {
                            namespace: t.metric_namespace.clone(),
                            metric_name: t.metric_name.clone(),
                            dimensions: datum
                                .dimensions
                                .iter()
                                .map(|(name, value)| Dimension {
                                    name: name.clone(),
                                    value: value.clone(),
                                })
                                .collect(),
                            unit: t.unit.clone().unwrap_or_else(|| "None".to_string()),
                            storage_resolution: 60,
                            ..Default::default()
                        });
                        (out.series.len() - 1) as u32
                    });
                out.points.push(DerivedPoint {
                    series,
                    event: i as u32,
                    timestamp_ms: time_ms,
                    value: datum.value,
                });
            }
        }
        (!out.points.is_empty()).then_some(out)
    }
}

/// The filters of every tenant this server ingests for, cached.
#[derive(Debug)]
pub struct Filters {
    control: ControlStore,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Arc<TenantFilters>)>>,
}

impl Filters {
    /// Filters read from `control`.
    pub fn new(control: ControlStore, ttl: Duration) -> Self {
        Self {
            control,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's filters: the cached set while it is fresh, else read again. When storage
    /// cannot be read, the last set read is used (or none), and a warning logged: ingest does
    /// not wait for object storage.
    pub async fn tenant(&self, tenant: &str) -> Arc<TenantFilters> {
        let held = lock(&self.cache).get(tenant).cloned();
        if let Some((at, f)) = &held
            && at.elapsed() < self.ttl
        {
            return Arc::clone(f);
        }
        match self.control.list::<MetricFilter>(tenant, Doc::Filter).await {
            Ok(list) => {
                let f = Arc::new(TenantFilters::new(tenant, list));
                lock(&self.cache).insert(tenant.to_string(), (Instant::now(), Arc::clone(&f)));
                f
            }
            Err(e) => {
                warn!(%tenant, error = %e, "cannot read metric filters; using the last ones read");
                let f = held.map(|(_, f)| f).unwrap_or_default();
                // Try again after a short while, not at every request.
                let retry_at = Instant::now()
                    .checked_sub(self.ttl.saturating_sub(Duration::from_secs(1)))
                    .unwrap_or_else(Instant::now);
                lock(&self.cache).insert(tenant.to_string(), (retry_at, Arc::clone(&f)));
                f
            }
        }
    }

    /// Forgets a tenant's cached filters (after a change on this server).
    pub fn invalidate(&self, tenant: &str) {
        lock(&self.cache).remove(tenant);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn filters() -> TenantFilters {
        let f = |v| MetricFilter::from_value(v).expect("valid");
        TenantFilters::new(
            "t",
            vec![
                f(
                    json!({"filterName": "errors", "filterPattern": "ERROR", "logGroupName": "app",
                    "metricTransformations": [{"metricName": "Errors", "metricNamespace": "App",
                        "metricValue": "1", "unit": "Count"}]}),
                ),
                f(
                    json!({"filterName": "by-code", "filterPattern": "{ $.code > 0 }",
                    "logGroupName": "app",
                    "metricTransformations": [{"metricName": "Codes", "metricNamespace": "App",
                        "metricValue": "$.code", "dimensions": {"Code": "$.code"}}]}),
                ),
            ],
        )
    }

    #[test]
    fn each_matching_event_makes_a_point_in_its_series() {
        let t = filters();
        let events = [
            (1_000, "ERROR one"),
            (2_000, "fine"),
            (3_000, r#"{"code": 500, "msg": "ERROR"}"#),
            (4_000, r#"{"code": 404}"#),
            (5_000, r#"{"code": 500}"#),
        ];
        let d = t.derive("app", events).expect("points");
        assert!(t.derive("other", events).is_none());
        let series = d.clone().into_series(|_| true);
        let find = |name: &str, code: Option<&str>| {
            series
                .iter()
                .find(|s| {
                    s.metric_name == name && s.dimensions.first().map(|d| d.value.as_str()) == code
                })
                .map(|s| (s.timestamps_ms.clone(), s.values.clone(), s.unit.clone()))
        };
        assert_eq!(
            find("Errors", None),
            Some((vec![1_000, 3_000], vec![1.0, 1.0], "Count".to_string()))
        );
        assert_eq!(
            find("Codes", Some("500")),
            Some((vec![3_000, 5_000], vec![500.0, 500.0], "None".to_string()))
        );
        assert_eq!(
            find("Codes", Some("404")),
            Some((vec![4_000], vec![404.0], "None".to_string()))
        );
        // Dropping event 2 (a duplicate, say) drops its points; a series left empty goes.
        let kept = d.into_series(|e| e != 3);
        assert!(
            kept.iter()
                .all(|s| s.dimensions.first().map(|d| d.value.as_str()) != Some("404"))
        );
    }

    #[test]
    fn the_points_survive_the_wal_encoding() {
        let d = filters()
            .derive("app", [(1, "ERROR"), (2, r#"{"code": 7}"#)])
            .expect("points");
        let back = Derived::decode(d.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(back, d);
    }
}
