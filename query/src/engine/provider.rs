//! The DataFusion table behind `metrics`, `logs` and `audit`: committed Parquet files pruned by
//! their time statistics, plus the server's buffered rows.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use futures::{StreamExt as _, TryStreamExt as _};
use tokio::sync::OnceCell;

use super::QueryCounters;
use super::snapshot::{BufferedRows, DataFile, SnapshotSource, TableSnapshot, TimeRange};
use crate::tables::TableKind;

/// One of a tenant's tables, as one query sees it.
#[derive(Debug)]
pub(crate) struct WatchtrailTable {
    kind: TableKind,
    tenant: String,
    source: Arc<dyn SnapshotSource>,
    /// Taken on first scan and kept, so a query that reads the table twice sees one version.
    snapshot: OnceCell<TableSnapshot>,
    counters: Arc<QueryCounters>,
    store_url: ObjectStoreUrl,
}

impl WatchtrailTable {
    pub(crate) fn new(
        kind: TableKind,
        tenant: &str,
        source: Arc<dyn SnapshotSource>,
        counters: Arc<QueryCounters>,
        store_url: ObjectStoreUrl,
    ) -> Self {
        Self {
            kind,
            tenant: tenant.to_string(),
            source,
            snapshot: OnceCell::new(),
            counters,
            store_url,
        }
    }

    async fn snapshot(&self) -> Result<&TableSnapshot> {
        self.snapshot
            .get_or_try_init(|| async {
                self.source
                    .snapshot(&self.tenant, self.kind)
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))
            })
            .await
    }
}

#[async_trait]
impl TableProvider for WatchtrailTable {
    fn schema(&self) -> SchemaRef {
        self.kind.read_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters prune files and row groups; DataFusion still applies them to every row.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.kind.read_schema();
        // Files are read with the read schema's types (see `TableKind::read_schema`) only where
        // it differs from the stored one, so no other table depends on the hint.
        let hint = (schema != self.kind.schema()).then(|| Arc::clone(&schema));
        let snapshot = self.snapshot().await?;
        let range = time_range(self.kind.time_column(), filters);
        let files: Vec<&DataFile> = snapshot
            .files
            .files
            .iter()
            .filter(|f| {
                !range.is_empty() && f.time_range.is_none_or(|(lo, hi)| range.overlaps(lo, hi))
            })
            .collect();
        self.counters
            .files_total
            .fetch_add(snapshot.files.files.len() as u64, Ordering::Relaxed);
        self.counters
            .files_scanned
            .fetch_add(files.len() as u64, Ordering::Relaxed);
        self.counters
            .bytes_scanned_estimate
            .fetch_add(files.iter().map(|f| f.size).sum::<u64>(), Ordering::Relaxed);

        let mut plans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !files.is_empty() {
            // The session's Parquet settings (filter pushdown, page index, ...) apply here too.
            let mut source = ParquetSource::new(Arc::clone(&schema))
                .with_table_parquet_options(state.default_table_options().parquet);
            if let Some(predicate) = conjunction(filters.iter().cloned()) {
                let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
                source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
            }
            let groups = file_groups(&files, state.config().target_partitions().max(1), &hint);
            let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
                .with_file_groups(groups)
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            plans.push(DataSourceExec::from_data_source(config));
        }
        if !snapshot.buffered.is_empty() && !range.is_empty() {
            let partitions: Vec<Arc<dyn PartitionStream>> = snapshot
                .buffered
                .iter()
                .map(|rows| {
                    Arc::new(BufferedPartition {
                        schema: Arc::clone(&schema),
                        rows: Arc::clone(rows),
                        range,
                        counters: Arc::clone(&self.counters),
                    }) as Arc<dyn PartitionStream>
                })
                .collect();
            plans.push(Arc::new(StreamingTableExec::try_new(
                Arc::clone(&schema),
                partitions,
                projection,
                Vec::new(),
                false,
                limit,
            )?));
        }
        match plans.len() {
            0 => {
                let projected = match projection {
                    Some(p) => Arc::new(schema.project(p)?),
                    None => schema,
                };
                Ok(Arc::new(EmptyExec::new(projected)))
            }
            _ => UnionExec::try_new(plans),
        }
    }
}

/// Spreads files over `n` groups of about equal bytes (largest first into the lightest group).
fn file_groups(files: &[&DataFile], n: usize, hint: &Option<SchemaRef>) -> Vec<FileGroup> {
    let mut sorted: Vec<&&DataFile> = files.iter().collect();
    sorted.sort_by_key(|f| std::cmp::Reverse(f.size));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); n.min(files.len())];
    for f in sorted {
        if let Some(g) = groups.iter_mut().min_by_key(|(bytes, _)| *bytes) {
            g.0 += f.size;
            let mut file = PartitionedFile::new(f.path.to_string(), f.size);
            if let Some(schema) = hint {
                file = file.with_arrow_schema(Arc::clone(schema));
            }
            g.1.push(file);
        }
    }
    groups
        .into_iter()
        .map(|(_, files)| FileGroup::new(files))
        .collect()
}

/// Buffered rows as one partition of a scan.
#[derive(Debug)]
struct BufferedPartition {
    schema: SchemaRef,
    rows: Arc<dyn BufferedRows>,
    range: TimeRange,
    counters: Arc<QueryCounters>,
}

impl PartitionStream for BufferedPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let rows = Arc::clone(&self.rows);
        let range = self.range;
        let counters = Arc::clone(&self.counters);
        let schema = Arc::clone(&self.schema);
        let batches = futures::stream::once(async move {
            let batches = rows
                .batches(range)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let n: usize = batches.iter().map(|b| b.num_rows()).sum();
            counters
                .buffered_rows
                .fetch_add(n as u64, Ordering::Relaxed);
            let batches = batches
                .into_iter()
                .map(move |b| conform(b, &schema))
                .collect::<Vec<_>>();
            Ok::<_, DataFusionError>(futures::stream::iter(batches))
        })
        .try_flatten();
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            batches.boxed(),
        ))
    }
}

/// `batch` with the columns' types of `schema` (buffered rows come in the stored schema, and
/// the scan reads the read schema).
pub(crate) fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let same =
        (batch.columns().iter().zip(schema.fields())).all(|(c, f)| c.data_type() == f.data_type());
    if same {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| Ok(arrow::compute::cast(c, f.data_type())?))
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// The time range the filters allow, read from comparisons of the time column with constants
/// (`time >= '2024-01-01'`, `BETWEEN`, `now() - interval '1 hour'` once folded). Anything it
/// does not understand leaves the range open: pruning is an optimisation, never a filter.
pub(crate) fn time_range(column: &str, filters: &[Expr]) -> TimeRange {
    let mut range = TimeRange::ALL;
    for filter in filters {
        for expr in split_conjunction(filter) {
            narrow(column, expr, &mut range);
        }
    }
    range
}

fn narrow(column: &str, expr: &Expr, range: &mut TimeRange) {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, value) = match (is_time_column(column, left), is_time_column(column, right)) {
                (true, false) => (*op, right.as_ref()),
                (false, true) => match op.swap() {
                    Some(op) => (op, left.as_ref()),
                    None => return,
                },
                _ => return,
            };
            let Some((floor, exact)) = micros(value) else {
                return;
            };
            // Rows have whole microseconds; a constant may fall between two of them.
            match op {
                Operator::Eq if exact => {
                    range.at_least(floor);
                    range.at_most(floor);
                }
                Operator::Eq => {
                    range.at_least(floor + 1);
                    range.at_most(floor);
                }
                Operator::Gt => range.at_least(floor + 1),
                Operator::GtEq => range.at_least(if exact { floor } else { floor + 1 }),
                Operator::Lt => range.at_most(if exact { floor - 1 } else { floor }),
                Operator::LtEq => range.at_most(floor),
                _ => {}
            }
        }
        Expr::Between(b) if !b.negated && is_time_column(column, &b.expr) => {
            if let Some((floor, exact)) = micros(&b.low) {
                range.at_least(if exact { floor } else { floor + 1 });
            }
            if let Some((floor, _)) = micros(&b.high) {
                range.at_most(floor);
            }
        }
        _ => {}
    }
}

fn is_time_column(column: &str, expr: &Expr) -> bool {
    match expr {
        Expr::Column(c) => c.name == column,
        // Casting a timestamp to another timestamp unit keeps the order.
        Expr::Cast(c) => {
            matches!(
                c.field.data_type(),
                arrow::datatypes::DataType::Timestamp(..)
            ) && is_time_column(column, &c.expr)
        }
        _ => false,
    }
}

/// A constant timestamp as whole microseconds rounded down, and whether that was exact.
fn micros(expr: &Expr) -> Option<(i64, bool)> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    match value {
        ScalarValue::TimestampSecond(Some(v), _) => Some((v.checked_mul(1_000_000)?, true)),
        ScalarValue::TimestampMillisecond(Some(v), _) => Some((v.checked_mul(1000)?, true)),
        ScalarValue::TimestampMicrosecond(Some(v), _) => Some((*v, true)),
        ScalarValue::TimestampNanosecond(Some(v), _) => {
            Some((v.div_euclid(1000), v.rem_euclid(1000) == 0))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn ts(us: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(
            Some(us),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn comparisons_narrow_the_range() {
        let r = time_range(
            "time",
            &[col("time").gt_eq(ts(100)).and(col("time").lt(ts(200)))],
        );
        assert_eq!(
            r,
            TimeRange {
                min: Some(100),
                max: Some(199)
            }
        );
        let r = time_range("time", &[ts(50).lt(col("time"))]);
        assert_eq!(
            r,
            TimeRange {
                min: Some(51),
                max: None
            }
        );
        let r = time_range("time", &[col("time").between(ts(1), ts(2))]);
        assert_eq!(
            r,
            TimeRange {
                min: Some(1),
                max: Some(2)
            }
        );
    }

    #[test]
    fn unknown_filters_leave_the_range_open() {
        let r = time_range(
            "time",
            &[
                col("time").gt(ts(5)).or(col("time").lt(ts(1))),
                col("value").gt(lit(3.0)),
                col("ingest_time").gt(ts(7)),
            ],
        );
        assert_eq!(r, TimeRange::ALL);
    }

    #[test]
    fn nanoseconds_round_outwards() {
        let r = time_range(
            "time",
            &[col("time")
                .gt(lit(ScalarValue::TimestampNanosecond(Some(1_500), None)))
                .and(col("time").lt(lit(ScalarValue::TimestampNanosecond(Some(2_500), None))))],
        );
        assert_eq!(
            r,
            TimeRange {
                min: Some(2),
                max: Some(2)
            }
        );
    }
}
