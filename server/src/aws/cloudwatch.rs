//! CloudWatch operations: `PutMetricData`, `ListMetrics`, `GetMetricStatistics`.

use watchtrail_proto::v1::{
    Dimension, MetricDatum, PutMetricDataRequest, StatisticSet, ValueCounts, metric_datum,
};
use watchtrail_query::cloudwatch::{self as cw, DimensionFilter, GetMetricStatistics, ListMetrics};

use super::error::{AwsError, Kind};
use super::value::{Input, V};
use super::{Ctx, dimensions_value, ingest_error};

/// Most datums one `PutMetricData` call may carry (CloudWatch's limit).
pub const MAX_DATUMS: usize = 1000;

/// `metric_data[3].dimensions[2].value` (the ingest path's names) as CloudWatch names it:
/// `MetricData.member.4.Dimensions.member.3.Value`.
pub fn aws_field(field: &str) -> String {
    field
        .split('.')
        .map(|seg| {
            let (name, index) = match seg.split_once('[') {
                Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
                None => (seg, None),
            };
            let name = match name {
                "timestamp_ms" => "Timestamp".to_string(),
                "value_counts" => "Values".to_string(),
                n => n
                    .split('_')
                    .map(|w| {
                        let mut c = w.chars();
                        c.next()
                            .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                            .unwrap_or_default()
                    })
                    .collect(),
            };
            match index {
                Some(i) => format!("{name}.member.{}", i + 1),
                None => name,
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn dimensions_of(
    input: &Input<'_>,
    name: &str,
    value_required: bool,
) -> Result<Vec<DimensionFilter>, AwsError> {
    input
        .list(name)?
        .iter()
        .map(|item| {
            let d = item.object()?;
            let value = d.str("Value")?.map(str::to_string);
            if value_required && value.is_none() {
                return Err(AwsError::missing(format!("{}.Value", item.field)));
            }
            Ok(DimensionFilter {
                name: d.req_str("Name")?.to_string(),
                value,
            })
        })
        .collect()
}

/// `PutMetricData`: the datums are checked by the same rules as the gRPC path, refused as a
/// whole when one is wrong (as CloudWatch does), and in the WAL before the answer.
///
/// # Errors
/// A parameter CloudWatch would refuse, named; a full WAL (retry).
pub async fn put_metric_data(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let input = &ctx.input;
    let namespace = input.req_str("Namespace")?;
    let items = input.list("MetricData")?;
    if items.is_empty() {
        return Err(AwsError::missing("MetricData"));
    }
    if items.len() > MAX_DATUMS {
        return Err(AwsError::invalid(
            "MetricData",
            format!("The collection MetricData must not have a size greater than {MAX_DATUMS}."),
        ));
    }
    let mut metric_data = Vec::with_capacity(items.len());
    for item in &items {
        let d = item.object()?;
        let dims = dimensions_of(&d, "Dimensions", true)?
            .into_iter()
            .map(|f| Dimension {
                name: f.name,
                value: f.value.unwrap_or_default(),
            })
            .collect();
        let value = d.f64("Value")?;
        let stats = d.object("StatisticValues")?;
        let values = d.f64_list("Values")?;
        let counts = d.f64_list("Counts")?;
        let given = usize::from(value.is_some())
            + usize::from(stats.is_some())
            + usize::from(!values.is_empty());
        if given > 1 {
            return Err(AwsError::new(
                Kind::Invalid,
                format!(
                    "{}: give one of Value, StatisticValues or Values",
                    item.field
                ),
            ));
        }
        let data = if let Some(v) = value {
            Some(metric_datum::Data::Value(v))
        } else if let Some(s) = stats {
            let num = |n: &str| {
                s.f64(n)?
                    .ok_or_else(|| AwsError::missing(format!("{}.StatisticValues.{n}", item.field)))
            };
            Some(metric_datum::Data::StatisticValues(StatisticSet {
                sample_count: num("SampleCount")?,
                sum: num("Sum")?,
                minimum: num("Minimum")?,
                maximum: num("Maximum")?,
            }))
        } else if !values.is_empty() {
            Some(metric_datum::Data::ValueCounts(ValueCounts {
                values,
                counts,
            }))
        } else {
            None
        };
        metric_data.push(MetricDatum {
            namespace: namespace.to_string(),
            metric_name: d.req_str("MetricName")?.to_string(),
            dimensions: dims,
            timestamp_ms: d.time_ms("Timestamp")?.unwrap_or(0),
            data,
            unit: d.str("Unit")?.unwrap_or_default().to_string(),
            storage_resolution: d
                .i64("StorageResolution")?
                .map_or(0, |r| i32::try_from(r).unwrap_or(i32::MAX)),
        });
    }
    let req = PutMetricDataRequest {
        // SDK calls carry no idempotency id; each call is one batch.
        idempotency_id: format!("aws-{}", uuid::Uuid::new_v4()),
        metric_data,
        series: Vec::new(),
    };
    ctx.state
        .ingest
        // CloudWatch refuses the whole call for one bad datum.
        .put_metrics_all_or_nothing(&ctx.principal.tenant, req)
        .await
        .map_err(|e| ingest_error(&e, aws_field))?;
    Ok(V::Struct(Vec::new()))
}

/// `ListMetrics`.
///
/// # Errors
/// A bad token or filter.
pub async fn list_metrics(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let input = &ctx.input;
    let offset = super::page_offset(input, "NextToken")?;
    let recently_active = match input.str("RecentlyActive")? {
        None => false,
        Some("PT3H") => true,
        Some(other) => {
            return Err(AwsError::invalid(
                "RecentlyActive",
                format!("`{other}` is not PT3H"),
            ));
        }
    };
    let list = ListMetrics {
        namespace: input.str("Namespace")?.map(str::to_string),
        metric_name: input.str("MetricName")?.map(str::to_string),
        dimensions: dimensions_of(input, "Dimensions", false)?,
        recently_active,
        offset,
        page: cw::LIST_PAGE,
    };
    let sql = list.sql().map_err(invalid)?;
    let batches = ctx.sql(&sql).await?;
    let (metrics, next) = list
        .answer(&batches)
        .map_err(|e| AwsError::new(Kind::Internal, e))?;
    let metrics = metrics
        .into_iter()
        .map(|m| {
            V::object(vec![
                ("Namespace", V::Str(m.namespace)),
                ("MetricName", V::Str(m.metric_name)),
                ("Dimensions", dimensions_value(&m.dimensions)),
            ])
        })
        .collect();
    Ok(V::object(vec![
        ("Metrics", V::List(metrics)),
        ("NextToken", V::opt_str(next)),
    ]))
}

fn invalid(e: cw::Invalid) -> AwsError {
    if e.missing {
        AwsError::missing(e.field)
    } else {
        AwsError::invalid(e.field, e.message)
    }
}

/// `GetMetricStatistics`.
///
/// # Errors
/// A parameter CloudWatch would refuse, named.
pub async fn get_metric_statistics(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let input = &ctx.input;
    let ms = |name: &str| -> Result<i64, AwsError> {
        input.time_ms(name)?.ok_or_else(|| AwsError::missing(name))
    };
    let metric_name = input.req_str("MetricName")?.to_string();
    let request = GetMetricStatistics {
        namespace: input.req_str("Namespace")?.to_string(),
        metric_name: metric_name.clone(),
        dimensions: dimensions_of(input, "Dimensions", true)?
            .into_iter()
            .map(|d| (d.name, d.value.unwrap_or_default()))
            .collect(),
        start_us: ms("StartTime")?.saturating_mul(1000),
        end_us: ms("EndTime")?.saturating_mul(1000),
        period: input
            .i64("Period")?
            .ok_or_else(|| AwsError::missing("Period"))?,
        statistics: input
            .str_list("Statistics")?
            .into_iter()
            .map(str::to_string)
            .collect(),
        extended_statistics: input
            .str_list("ExtendedStatistics")?
            .into_iter()
            .map(str::to_string)
            .collect(),
        unit: input.str("Unit")?.map(str::to_string),
    };
    let (sql, _) = request.sql().map_err(invalid)?;
    let batches = ctx.sql(&sql).await?;
    let points = request
        .answer(&batches)
        .map_err(|e| AwsError::new(Kind::Internal, e))?
        .into_iter()
        .map(|d| {
            let mut members = vec![(
                "Timestamp".to_string(),
                V::Time(d.timestamp_us as f64 / 1e6),
            )];
            for (s, v) in d.statistics {
                members.push((s, V::Float(v)));
            }
            members.push(("Unit".into(), V::Str(d.unit)));
            if !request.extended_statistics.is_empty() {
                members.push((
                    "ExtendedStatistics".into(),
                    V::Map(
                        d.extended
                            .into_iter()
                            .map(|(k, v)| (k, V::Float(v)))
                            .collect(),
                    ),
                ));
            }
            V::Struct(members)
        })
        .collect();
    Ok(V::object(vec![
        ("Label", V::Str(metric_name)),
        ("Datapoints", V::List(points)),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_field_paths_read_as_cloudwatch_names_them() {
        assert_eq!(
            aws_field("metric_data[3].dimensions[2].value"),
            "MetricData.member.4.Dimensions.member.3.Value"
        );
        assert_eq!(
            aws_field("metric_data[0].timestamp_ms"),
            "MetricData.member.1.Timestamp"
        );
        assert_eq!(
            aws_field("metric_data[1].metric_name"),
            "MetricData.member.2.MetricName"
        );
        assert_eq!(
            aws_field("metric_data[0].statistic_values.sample_count"),
            "MetricData.member.1.StatisticValues.SampleCount"
        );
    }
}
