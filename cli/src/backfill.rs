//! `watchtrail metric-filters backfill`: the points a metric filter would have made from events
//! stored before it existed.
//!
//! A filter makes points at ingest from its creation on (as in CloudWatch). This command runs
//! its pattern in SQL over the events of its log group (or the audit trail) between
//! `--start-time` and the filter's creation, and puts what matches as metric data through the
//! server's ingest path, so the points are validated, durable and exactly-once like any
//! `PutMetricData`. Log events ingested after the creation are left out (they were counted at
//! ingest); audit records carry no ingest time, so for the trail the bound is their
//! `eventTime`.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use watchtrail_proto::v1::{Dimension, MetricSeries, PutMetricDataRequest};
use watchtrail_query::alarm::MetricFilter;

use crate::alarms::Api;
use crate::client::{Client, ConnectionArgs};
use crate::cloudwatch::{iso, parse_time};
use crate::query::{Backend, BackendArgs};
use watchtrail_query::cloudwatch::lit;

/// Values per series in one request (PutMetricData's limit per entry).
const VALUES_PER_ENTRY: usize = 150;
/// Series entries per request.
const ENTRIES_PER_REQUEST: usize = 40;

/// `watchtrail metric-filters backfill` flags.
#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// The filter.
    pub name: String,
    /// Events from this time (ISO 8601).
    #[arg(long)]
    pub start_time: String,
    /// Events before this time (ISO 8601); at most, and by default, the filter's creation.
    #[arg(long)]
    pub end_time: Option<String>,
    /// Print what would be put, put nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// The SQL giving `t`, `v` and one column per dimension (sorted by name) for every event of
/// `[start_us, end_us)` the filter matches, stored before `created_ms`.
pub fn backfill_sql(
    f: &MetricFilter,
    start_us: i64,
    end_us: i64,
    created_ms: i64,
) -> Option<String> {
    let t = f.transformation()?;
    let (table, time, text) = if f.reads_audit() {
        ("audit", "eventtime", "eventjson")
    } else {
        ("logs", "time", "message")
    };
    let pattern = lit(&f.filter_pattern);
    let value = if t.metric_value.starts_with('$') {
        format!(
            "TRY_CAST(filter_pattern_value({pattern}, {text}, {}) AS DOUBLE)",
            lit(&t.metric_value)
        )
    } else {
        format!("CAST({} AS DOUBLE)", lit(&t.metric_value))
    };
    let mut select = vec![format!("{time} AS t"), format!("{value} AS v")];
    let mut conds = vec![
        format!("{time} >= to_timestamp_micros({start_us})"),
        format!("{time} < to_timestamp_micros({end_us})"),
        format!("filter_pattern_match({pattern}, {text})"),
    ];
    if !f.reads_audit() {
        conds.push(format!("log_group = {}", lit(&f.log_group_name)));
        conds.push(format!("ingest_time < to_timestamp_millis({created_ms})"));
    }
    for (i, selector) in t.dimensions.values().enumerate() {
        select.push(format!(
            "filter_pattern_value({pattern}, {text}, {}) AS d{i}",
            lit(selector)
        ));
    }
    Some(format!(
        "SELECT {} FROM {table} WHERE {} ORDER BY t",
        select.join(", "),
        conds.join(" AND ")
    ))
}

/// Runs `watchtrail metric-filters backfill`.
///
/// # Errors
/// An unknown filter, bad times, a failed query or put.
pub async fn backfill(conn: &ConnectionArgs, a: BackfillArgs) -> anyhow::Result<()> {
    let api = Api::new(conn)?;
    let listed = api
        .call(reqwest::Method::GET, &["v1", "metric-filters"], &[], None)
        .await?;
    let filter = listed["metricFilters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["filterName"] == a.name.as_str())
        .with_context(|| format!("metric filter `{}` does not exist", a.name))?;
    let f = MetricFilter::from_value(filter.clone())
        .map_err(|e| anyhow::anyhow!("metric filter `{}`: {e}", a.name))?;
    let Some(created_ms) = f.creation_time else {
        bail!(
            "metric filter `{}` has no creationTime (it was stored by an older server); put it again first",
            a.name
        );
    };
    let Some(t) = f.transformation() else {
        bail!("metric filter `{}` has no transformation", a.name);
    };
    let start_us = parse_time("--start-time", &a.start_time)?;
    let end_us = match &a.end_time {
        Some(e) => parse_time("--end-time", e)?.min(created_ms * 1000),
        None => created_ms * 1000,
    };
    if start_us >= end_us {
        bail!(
            "--start-time {} is not before {} (the end, which is at most the filter's creation)",
            iso(start_us),
            iso(end_us)
        );
    }
    let sql = backfill_sql(&f, start_us, end_us, created_ms)
        .context("the filter has no transformation")?;
    let backend = Backend::new(
        conn,
        &BackendArgs {
            store: None,
            memory_limit: 1 << 30,
            timeout: std::time::Duration::from_secs(300),
        },
    )?;
    let result = backend.run(&sql).await?;
    let names: Vec<&String> = t.dimensions.keys().collect();
    let mut series: BTreeMap<Vec<String>, (Vec<i64>, Vec<f64>)> = BTreeMap::new();
    let mut events = 0u64;
    for batch in &result.batches {
        let times = arrow::compute::cast(
            batch.column(0),
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )
        .and_then(|c| arrow::compute::cast(&c, &DataType::Int64))?;
        let times = times.as_primitive::<Int64Type>();
        let values = arrow::compute::cast(batch.column(1), &DataType::Float64)?;
        let values = values.as_primitive::<Float64Type>();
        let dims = (0..names.len())
            .map(|i| arrow::compute::cast(batch.column(2 + i), &DataType::Utf8))
            .collect::<Result<Vec<_>, _>>()?;
        'rows: for r in 0..batch.num_rows() {
            if values.is_null(r) || !values.value(r).is_finite() {
                continue;
            }
            let mut key = Vec::with_capacity(dims.len());
            for d in &dims {
                let d = d.as_string::<i32>();
                if d.is_null(r) || d.value(r).is_empty() {
                    continue 'rows;
                }
                key.push(d.value(r).to_string());
            }
            let e = series.entry(key).or_default();
            e.0.push(times.value(r));
            e.1.push(values.value(r));
            events += 1;
        }
    }
    let metric = format!("{}/{}", t.metric_namespace, t.metric_name);
    if a.dry_run || events == 0 {
        println!(
            "{} {events} points of {metric} in {} series from events between {} and {}",
            if a.dry_run { "would put" } else { "found" },
            series.len(),
            iso(start_us),
            iso(end_us)
        );
        return Ok(());
    }
    let mut entries = Vec::new();
    for (key, (times, values)) in &series {
        for (ts, vs) in times
            .chunks(VALUES_PER_ENTRY)
            .zip(values.chunks(VALUES_PER_ENTRY))
        {
            entries.push(MetricSeries {
                namespace: t.metric_namespace.clone(),
                metric_name: t.metric_name.clone(),
                dimensions: names
                    .iter()
                    .zip(key)
                    .map(|(n, v)| Dimension {
                        name: (*n).clone(),
                        value: v.clone(),
                    })
                    .collect(),
                unit: t.unit.clone().unwrap_or_else(|| "None".to_string()),
                storage_resolution: 60,
                timestamps_ms: ts.to_vec(),
                values: vs.to_vec(),
                ..Default::default()
            });
        }
    }
    // The same backfill run again sends the same ids: a retry is applied once.
    let run = {
        let mut d = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [
            f.filter_name.as_str(),
            &created_ms.to_string(),
            &start_us.to_string(),
            &end_us.to_string(),
        ] {
            d.update(part.as_bytes());
            d.update(&[0]);
        }
        hex::encode(&d.finish().as_ref()[..12])
    };
    let client = Client::connect(conn)?;
    let (mut accepted, mut refused) = (0u64, 0u64);
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for (i, chunk) in entries.chunks(ENTRIES_PER_REQUEST).enumerate() {
        let req = PutMetricDataRequest {
            idempotency_id: format!("backfill-{run}-{i}"),
            series: chunk.to_vec(),
            ..Default::default()
        };
        let resp = client
            .call(req, |mut c, r| async move { c.put_metric_data(r).await })
            .await
            .map_err(|s| anyhow::anyhow!("putting the points: {}", s.message()))?;
        accepted += resp.accepted;
        for r in &resp.rejected {
            refused += 1;
            *reasons.entry(r.reason.clone()).or_default() += 1;
        }
    }
    println!(
        "backfilled {metric}: {accepted} points stored from {events} matching events between {} and {}",
        iso(start_us),
        iso(end_us)
    );
    if refused > 0 {
        println!("{refused} entries refused:");
        for (reason, n) in reasons {
            println!("  {n} x {reason}");
        }
    }
    Ok(())
}
