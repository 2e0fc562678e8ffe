//! Metric filters' `defaultValue`: CloudWatch reports it for every minute in which the filter's
//! log group received events and none of them matched. The evaluator (one per cluster) closes
//! each minute [`CLOSE_AFTER_MS`] after it ends, looks up which log groups had events and which
//! filter metrics have points in it, and puts the default value for the rest through the
//! ingest path, under an idempotency id of the filter and the minute. The first minute a new
//! filter closes is the one that ended a minute before the next boundary after its creation.

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use watchtrail_proto::v1::{MetricSeries, PutMetricDataRequest};
use watchtrail_query::alarm::MetricFilter;

use super::evaluate::lit;
use super::*;

/// A minute is closed this long after it ends (late events of a minute still count).
pub(super) const CLOSE_AFTER_MS: i64 = 120_000;

const MINUTE_MS: i64 = 60_000;

impl AlarmService {
    /// Puts the default values of the minute starting at `minute_ms` for every filter of every
    /// tenant whose log group had events then and no match.
    pub(super) async fn emit_defaults(&self, view: &BTreeMap<String, TenantView>, minute_ms: i64) {
        for (tenant, t) in view {
            let defaults: Vec<&MetricFilter> = t
                .filters
                .iter()
                .filter(|f| {
                    f.transformation()
                        .is_some_and(|t| t.default_value.is_some())
                })
                .collect();
            if defaults.is_empty() {
                continue;
            }
            if let Err(e) = self
                .emit_tenant_defaults(tenant, &defaults, minute_ms)
                .await
            {
                warn!(%tenant, minute_ms, error = %e, "cannot put metric filters' default values");
            }
        }
    }

    async fn emit_tenant_defaults(
        &self,
        tenant: &str,
        filters: &[&MetricFilter],
        minute_ms: i64,
    ) -> std::result::Result<(), String> {
        let range = |col: &str| {
            format!(
                "{col} >= to_timestamp_millis({minute_ms}) AND {col} < to_timestamp_millis({})",
                minute_ms + MINUTE_MS
            )
        };
        let groups: Vec<String> = filters
            .iter()
            .filter(|f| !f.reads_audit())
            .map(|f| lit(&f.log_group_name))
            .collect();
        let mut active: Vec<String> = Vec::new();
        if !groups.is_empty() {
            let sql = format!(
                "SELECT DISTINCT log_group FROM logs WHERE {} AND log_group IN ({})",
                range("time"),
                groups.join(", ")
            );
            active.extend(self.strings(tenant, &sql, 0).await?);
        }
        if filters.iter().any(|f| f.reads_audit()) {
            let sql = format!("SELECT count(*) FROM audit WHERE {}", range("eventtime"));
            if self.count(tenant, &sql).await? > 0 {
                active.push(watchtrail_query::alarm::AUDIT_LOG_GROUP.to_string());
            }
        }
        let names: Vec<String> = filters
            .iter()
            .filter_map(|f| f.transformation())
            .map(|t| lit(&format!("{}\u{1f}{}", t.metric_namespace, t.metric_name)))
            .collect();
        let sql = format!(
            "SELECT DISTINCT concat(namespace, '\u{1f}', metric_name) FROM metrics \
             WHERE {} AND concat(namespace, '\u{1f}', metric_name) IN ({})",
            range("time"),
            names.join(", ")
        );
        let with_points = self.strings(tenant, &sql, 0).await?;
        let mut series = Vec::new();
        for f in filters {
            let Some(t) = f.transformation() else {
                continue;
            };
            let Some(default) = t.default_value else {
                continue;
            };
            let key = format!("{}\u{1f}{}", t.metric_namespace, t.metric_name);
            if !active.contains(&f.log_group_name) || with_points.contains(&key) {
                continue;
            }
            series.push(MetricSeries {
                namespace: t.metric_namespace.clone(),
                metric_name: t.metric_name.clone(),
                unit: t.unit.clone().unwrap_or_else(|| "None".to_string()),
                storage_resolution: 60,
                timestamps_ms: vec![minute_ms],
                values: vec![default],
                ..Default::default()
            });
        }
        if series.is_empty() {
            return Ok(());
        }
        let mut id = ring::digest::Context::new(&ring::digest::SHA256);
        id.update(tenant.as_bytes());
        for s in &series {
            id.update(&[0x1f]);
            id.update(s.namespace.as_bytes());
            id.update(&[0x1e]);
            id.update(s.metric_name.as_bytes());
        }
        let id = format!(
            "metric-filter-default-{minute_ms}-{}",
            hex::encode(&id.finish().as_ref()[..16])
        );
        let n = series.len();
        self.ingest
            .put_metrics(
                tenant,
                PutMetricDataRequest {
                    idempotency_id: id,
                    series,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        debug!(%tenant, minute_ms, metrics = n, "metric filters' default values put");
        Ok(())
    }

    async fn strings(
        &self,
        tenant: &str,
        sql: &str,
        column: usize,
    ) -> std::result::Result<Vec<String>, String> {
        let r = self
            .engine
            .collect(tenant, sql)
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for b in &r.batches {
            let col = arrow::compute::cast(b.column(column), &arrow::datatypes::DataType::Utf8)
                .map_err(|e| e.to_string())?;
            out.extend(col.as_string::<i32>().iter().flatten().map(str::to_string));
        }
        Ok(out)
    }

    async fn count(&self, tenant: &str, sql: &str) -> std::result::Result<i64, String> {
        let r = self
            .engine
            .collect(tenant, sql)
            .await
            .map_err(|e| e.to_string())?;
        Ok(r.batches
            .iter()
            .filter(|b| b.num_columns() > 0)
            .map(|b| b.column(0).as_primitive::<Int64Type>())
            .filter(|c| !c.is_empty() && !c.is_null(0))
            .map(|c| c.value(0))
            .sum())
    }
}
