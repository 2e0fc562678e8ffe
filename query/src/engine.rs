//! The SQL engine: DataFusion over one tenant's `metrics`, `logs` and `audit` tables.
//!
//! Every query gets its own session: only the caller's tables, a memory pool of its own
//! (`memory_limit`), a deadline (`timeout`), and an object-store registry that knows nothing but
//! the Watchtrail store, so no statement can reach local files or URLs. Statements other than
//! queries (DDL, DML, COPY, SET, ...) are refused before planning.
//!
//! Queries run on the engine's runtime (a dedicated one in the server, so a heavy query cannot
//! starve ingest) and stream their batches back through a small channel; dropping the
//! [`QueryStream`] cancels the query.

#[macro_use]
mod delegate;
pub mod budget;
mod date_trunc;
pub mod functions;
pub mod guard;
mod precedence;
mod provider;
mod rules;
pub mod shape;
pub mod snapshot;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::{ObjectStoreRegistry, ObjectStoreUrl};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use futures::StreamExt as _;
use object_store::ObjectStore;
use serde::Serialize;
use tokio::sync::mpsc;
use url::Url;

pub use snapshot::{
    BufferedBatches, BufferedRows, DataFile, SnapshotSource, StoreSource, TableFiles,
    TableSnapshot, TimeRange,
};

use crate::error::{Error, Result};
use crate::tables::{TableKind, validate_tenant};
use watchtrail_storage::store::Storage;

/// The URL under which a query session sees the Watchtrail store.
const STORE_URL: &str = "watchtrail://store";

/// Limits and tuning of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Memory one query may hold in joins, sorts and aggregations (it spills or fails past it).
    pub memory_limit: usize,
    /// How long one query may run, planning included.
    pub timeout: Duration,
    /// Parallelism within one query.
    pub target_partitions: usize,
    /// Memory all queries of the engine may hold together; `None`: no bound beyond each
    /// query's own.
    pub total_memory_limit: Option<usize>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            memory_limit: 1 << 30,
            timeout: Duration::from_secs(60),
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            total_memory_limit: None,
        }
    }
}

/// Counters a query's table scans fill in.
#[derive(Debug, Default)]
pub(crate) struct QueryCounters {
    pub(crate) files_total: AtomicU64,
    pub(crate) files_scanned: AtomicU64,
    pub(crate) bytes_scanned_estimate: AtomicU64,
    pub(crate) buffered_rows: AtomicU64,
}

/// What a query cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct QueryStats {
    /// Data files in the snapshots of the tables the query read.
    pub files_total: u64,
    /// Data files left after time pruning.
    pub files_scanned: u64,
    /// Bytes read from data files (after row-group and column pruning).
    pub bytes_scanned: u64,
    /// Not-yet-committed rows read from the server's buffer.
    pub buffered_rows_scanned: u64,
    /// Rows returned.
    pub rows: u64,
    /// Wall time, planning included, in milliseconds.
    pub elapsed_ms: u64,
}

/// A query's whole answer.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Schema of the rows.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// What it cost.
    pub stats: QueryStats,
}

impl QueryResult {
    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

enum Msg {
    Schema(SchemaRef),
    Batch(RecordBatch),
    Done(QueryStats),
    Failed(Error),
}

/// A running query's batches. Dropping it cancels the query.
#[derive(Debug)]
pub struct QueryStream {
    schema: SchemaRef,
    rx: mpsc::Receiver<Msg>,
    stats: Option<QueryStats>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    task: tokio::task::AbortHandle,
    budget: Arc<guard::QueryBudget>,
}

impl Drop for QueryStream {
    fn drop(&mut self) {
        self.budget.cancel();
        self.task.abort();
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Schema(_) => "Schema",
            Msg::Batch(_) => "Batch",
            Msg::Done(_) => "Done",
            Msg::Failed(_) => "Failed",
        })
    }
}

impl QueryStream {
    /// The schema of the rows.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The next batch; `None` once the query finished (then [`QueryStream::stats`] is set).
    pub async fn next_batch(&mut self) -> Option<Result<RecordBatch>> {
        if self.stats.is_some() {
            return None;
        }
        let Ok(msg) = tokio::time::timeout_at(self.deadline, self.rx.recv()).await else {
            self.budget.cancel();
            self.task.abort();
            return Some(Err(Error::Timeout(self.timeout)));
        };
        match msg {
            Some(Msg::Batch(b)) => Some(Ok(b)),
            Some(Msg::Done(s)) => {
                self.stats = Some(s);
                None
            }
            Some(Msg::Failed(e)) => Some(Err(e)),
            Some(Msg::Schema(_)) => Some(Err(Error::Internal("schema sent twice".into()))),
            None => Some(Err(Error::Internal("the query task ended early".into()))),
        }
    }

    /// The query's statistics, once every batch was read.
    pub fn stats(&self) -> Option<&QueryStats> {
        self.stats.as_ref()
    }

    /// Reads every batch.
    ///
    /// # Errors
    /// The query's error.
    pub async fn collect(mut self) -> Result<QueryResult> {
        let mut batches = Vec::new();
        while let Some(b) = self.next_batch().await {
            batches.push(b?);
        }
        Ok(QueryResult {
            schema: self.schema(),
            batches,
            stats: self.stats.take().unwrap_or_default(),
        })
    }
}

/// The SQL engine of one store.
#[derive(Debug, Clone)]
pub struct Engine {
    store: Arc<dyn ObjectStore>,
    source: Arc<dyn SnapshotSource>,
    config: EngineConfig,
    runtime: Option<tokio::runtime::Handle>,
    budget: Option<Arc<budget::ServerMemoryBudget>>,
}

impl Engine {
    /// An engine reading `storage` through `source`.
    pub fn new(storage: &Storage, source: Arc<dyn SnapshotSource>, config: EngineConfig) -> Self {
        let budget = config
            .total_memory_limit
            .map(|size| Arc::new(budget::ServerMemoryBudget::new(size)));
        Self {
            store: storage.object_store(),
            source,
            config,
            runtime: None,
            budget,
        }
    }

    /// An engine reading committed files straight from `storage`.
    pub fn for_store(storage: &Storage, config: EngineConfig) -> Self {
        Self::new(storage, Arc::new(StoreSource::new(storage.clone())), config)
    }

    /// Runs queries on `runtime` instead of the caller's.
    #[must_use]
    pub fn with_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// The engine's limits.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The memory all running queries hold now, and the budget, when there is one.
    pub fn memory_in_use(&self) -> Option<(usize, usize)> {
        self.budget.as_ref().map(|b| (b.used(), b.size()))
    }

    /// Starts `sql` over `tenant`'s tables. Planning errors (bad SQL, a statement that is not
    /// allowed) come back here; errors while running come from [`QueryStream::next_batch`].
    ///
    /// # Errors
    /// [`Error::Sql`], [`Error::ReadOnly`], [`Error::Timeout`], storage errors.
    pub async fn query(&self, tenant: &str, sql: &str) -> Result<QueryStream> {
        self.query_holding(tenant, sql, None).await
    }

    /// As [`Engine::query`], holding `held` (for example a concurrency slot) until every part
    /// of the query's work has stopped, which may be after the stream is dropped or timed out:
    /// a function running when the query is cancelled finishes its current slice first.
    ///
    /// # Errors
    /// As [`Engine::query`].
    pub async fn query_holding(
        &self,
        tenant: &str,
        sql: &str,
        held: Option<Box<dyn std::any::Any + Send>>,
    ) -> Result<QueryStream> {
        validate_tenant(tenant).map_err(watchtrail_storage::Error::InvalidTenant)?;
        check_read_only(sql)?;
        let (tx, mut rx) = mpsc::channel(2);
        let timeout = self.config.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let engine = self.clone();
        let tenant = tenant.to_string();
        let sql = sql.to_string();
        let budget = Arc::new(guard::QueryBudget::new(self.config.memory_limit, held));
        let task_budget = Arc::clone(&budget);
        let task = async move {
            let run = engine.run(&tenant, &sql, &tx, &task_budget);
            let outcome = match tokio::time::timeout_at(deadline, run).await {
                Ok(r) => r,
                Err(_) => {
                    task_budget.cancel();
                    Err(Error::Timeout(timeout))
                }
            };
            if let Err(e) = outcome {
                let _ = tx.send(Msg::Failed(e)).await;
            }
        };
        let task = match &self.runtime {
            Some(rt) => rt.spawn(task),
            None => tokio::spawn(task),
        }
        .abort_handle();
        let first = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(m) => m,
            Err(_) => {
                budget.cancel();
                task.abort();
                return Err(Error::Timeout(timeout));
            }
        };
        match first {
            Some(Msg::Schema(schema)) => Ok(QueryStream {
                schema,
                rx,
                stats: None,
                deadline,
                timeout,
                task,
                budget,
            }),
            Some(Msg::Failed(e)) => {
                budget.cancel();
                Err(e)
            }
            Some(other) => Err(Error::Internal(format!("query began with {other:?}"))),
            None => Err(Error::Internal("the query task ended early".into())),
        }
    }

    /// Runs `sql` and collects every row.
    ///
    /// # Errors
    /// As [`Engine::query`], and the query's errors while running.
    pub async fn collect(&self, tenant: &str, sql: &str) -> Result<QueryResult> {
        self.query(tenant, sql).await?.collect().await
    }

    /// A session over `tenant`'s tables.
    fn session(
        &self,
        tenant: &str,
        counters: &Arc<QueryCounters>,
        budget: &Arc<guard::QueryBudget>,
    ) -> Result<SessionContext> {
        let registry = Arc::new(SingleStore {
            store: Arc::clone(&self.store),
        });
        let mut builder = RuntimeEnvBuilder::new().with_memory_limit(self.config.memory_limit, 1.0);
        if let (Some(server), Some(own)) = (&self.budget, builder.memory_pool.clone()) {
            builder = builder.with_memory_pool(Arc::new(budget::SharedBudgetPool::new(
                own,
                Arc::clone(server),
            )));
        }
        let runtime = builder.with_object_store_registry(registry).build_arc()?;
        let config = session_config()?
            .with_information_schema(true)
            .with_target_partitions(self.config.target_partitions.max(1))
            .with_default_catalog_and_schema("watchtrail", tenant);
        let mut ctx = SessionContext::new_with_config_rt(config, runtime);
        ctx.add_optimizer_rule(Arc::new(rules::GroupKeysOutOfAggregateOrder));
        let store_url = ObjectStoreUrl::parse(STORE_URL)?;
        for kind in TableKind::ALL {
            ctx.register_table(
                kind.name(),
                Arc::new(provider::WatchtrailTable::new(
                    kind,
                    tenant,
                    Arc::clone(&self.source),
                    Arc::clone(counters),
                    store_url.clone(),
                )),
            )?;
        }
        datafusion_functions_json::register_all(&mut ctx)?;
        for f in functions::athena_functions() {
            ctx.register_udf(f);
        }
        // Replaces DataFusion's `date_trunc` (same name, aliases and results).
        ctx.register_udf(date_trunc::UtcDateTrunc::udf());
        guard::register(&ctx, budget)?;
        Ok(ctx)
    }

    async fn run(
        &self,
        tenant: &str,
        sql: &str,
        tx: &mpsc::Sender<Msg>,
        budget: &Arc<guard::QueryBudget>,
    ) -> Result<()> {
        let started = Instant::now();
        let counters = Arc::new(QueryCounters::default());
        let ctx = self.session(tenant, &counters, budget)?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        // `SessionContext::sql_with_options`, with the parser's precedence bug fixed between
        // parsing and planning.
        let state = ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let mut statement = state
            .sql_to_statement(sql, &dialect)
            .map_err(read_only_or_sql)?;
        precedence::fix_is_distinct_from(&mut statement);
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(read_only_or_sql)?;
        options.verify_plan(&plan).map_err(read_only_or_sql)?;
        let df = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(read_only_or_sql)?;
        let plan: Arc<dyn ExecutionPlan> = df
            .create_physical_plan()
            .await
            .map_err(Error::from_datafusion)?;
        let plan = cooperative_joins(plan).map_err(Error::from_datafusion)?;
        let mut stream =
            execute_stream(Arc::clone(&plan), ctx.task_ctx()).map_err(Error::from_datafusion)?;
        let schema = plain_schema(&stream.schema());
        if tx.send(Msg::Schema(Arc::clone(&schema))).await.is_err() {
            return Ok(());
        }
        let mut rows = 0u64;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(Error::from_datafusion)?;
            // Unchanged unless it holds dictionaries.
            let batch = provider::conform(batch, &schema).map_err(Error::from_datafusion)?;
            rows += batch.num_rows() as u64;
            if tx.send(Msg::Batch(batch)).await.is_err() {
                // The caller went away: dropping the stream cancels the query.
                return Ok(());
            }
        }
        let stats = QueryStats {
            files_total: counters.files_total.load(Ordering::Relaxed),
            files_scanned: counters.files_scanned.load(Ordering::Relaxed),
            bytes_scanned: bytes_scanned(&plan),
            buffered_rows_scanned: counters.buffered_rows.load(Ordering::Relaxed),
            rows,
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        let _ = tx.send(Msg::Done(stats)).await;
        Ok(())
    }
}

/// `schema` with every dictionary type, at any depth, replaced by its value type: the engine
/// reads some columns as dictionaries (see `TableKind::read_schema`), but answers carry the
/// tables' plain types, which every output format and client takes.
fn plain_schema(schema: &SchemaRef) -> SchemaRef {
    fn plain(t: &DataType) -> DataType {
        match t {
            DataType::Dictionary(_, value) => plain(value),
            DataType::Map(entries, sorted) => DataType::Map(plain_field(entries), *sorted),
            DataType::List(f) => DataType::List(plain_field(f)),
            DataType::LargeList(f) => DataType::LargeList(plain_field(f)),
            DataType::FixedSizeList(f, n) => DataType::FixedSizeList(plain_field(f), *n),
            DataType::Struct(fields) => DataType::Struct(fields.iter().map(plain_field).collect()),
            other => other.clone(),
        }
    }
    fn plain_field(f: &FieldRef) -> FieldRef {
        Arc::new(f.as_ref().clone().with_data_type(plain(f.data_type())))
    }
    let fields: Vec<FieldRef> = schema.fields().iter().map(plain_field).collect();
    if fields.as_slice() == schema.fields().as_ref() {
        return Arc::clone(schema);
    }
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Makes every join yield to the runtime after each batch it produces. A join expands batches it
/// already holds (a cross join of two small inputs can run for hours) without ever waiting on its
/// inputs, so without this a timed-out query could not be stopped.
fn cooperative_joins(
    plan: Arc<dyn ExecutionPlan>,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode as _};
    use datafusion::physical_plan::coop::CooperativeExec;
    plan.transform_up(|node| {
        if node.name().ends_with("JoinExec") {
            Ok(Transformed::yes(
                Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>
            ))
        } else {
            Ok(Transformed::no(node))
        }
    })
    .map(|t| t.data)
}

/// Sums the Parquet readers' `bytes_scanned` metric over a finished plan.
fn bytes_scanned(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let own = plan
        .metrics()
        .and_then(|m| m.sum_by_name("bytes_scanned"))
        .map_or(0, |v| v.as_usize() as u64);
    own + plan.children().into_iter().map(bytes_scanned).sum::<u64>()
}

/// DataFusion's refusal of a statement kind becomes [`Error::ReadOnly`]; the rest are sorted
/// as usual.
fn read_only_or_sql(e: DataFusionError) -> Error {
    let msg = e.strip_backtrace();
    if msg.contains("not supported")
        && (msg.contains("DDL") || msg.contains("DML") || msg.contains("Statement"))
    {
        Error::ReadOnly(format!("Watchtrail SQL is read-only: {msg}"))
    } else {
        Error::from_datafusion(e)
    }
}

/// DataFusion's settings for a query: its defaults, then Watchtrail's (filters evaluated inside
/// the Parquet decoder, so the columns a selective filter rejects are never decoded), then any
/// `DATAFUSION_*` environment variable an operator set (for example
/// `DATAFUSION_EXECUTION_PARQUET_PUSHDOWN_FILTERS=false`), which wins.
///
/// # Errors
/// A `DATAFUSION_*` variable with a value its option does not take.
fn session_config() -> Result<SessionConfig> {
    let mut config = SessionConfig::from_env().map_err(Error::from_datafusion)?;
    let parquet = &mut config.options_mut().execution.parquet;
    if std::env::var_os("DATAFUSION_EXECUTION_PARQUET_PUSHDOWN_FILTERS").is_none() {
        parquet.pushdown_filters = true;
    }
    if std::env::var_os("DATAFUSION_EXECUTION_PARQUET_REORDER_FILTERS").is_none() {
        parquet.reorder_filters = true;
    }
    // DataFusion 55's common-subexpression pass can give an expression (a repeated `IS NOT
    // FALSE` of a nullable column) a nullability the physical plan does not share; the
    // aggregate's schema check then fails a correct query with an internal error. The check
    // compares plans, not data, so it is skipped (docs/decisions.md).
    if std::env::var_os("DATAFUSION_EXECUTION_SKIP_PHYSICAL_AGGREGATE_SCHEMA_CHECK").is_none() {
        config
            .options_mut()
            .execution
            .skip_physical_aggregate_schema_check = true;
    }
    Ok(config)
}

/// Refuses everything but queries (`SELECT`, `WITH`, `VALUES`, `EXPLAIN` of a query, `SHOW
/// TABLES`, `SHOW COLUMNS`), naming what was refused, and statements past the bounds of
/// [`shape`] (length, expression depth and count, set operations, relations).
///
/// # Errors
/// [`Error::Sql`] when the text does not parse or crosses a bound, [`Error::ReadOnly`] for
/// other statements.
pub fn check_read_only(sql: &str) -> Result<()> {
    shape::check_sql_length(sql)?;
    let statements = DFParser::parse_sql(sql).map_err(|e| Error::Sql(e.strip_backtrace()))?;
    if statements.len() != 1 {
        return Err(Error::Sql(format!(
            "expected exactly one statement, found {}",
            statements.len()
        )));
    }
    for s in &statements {
        allowed(s)?;
        shape::check_statement(s)?;
    }
    Ok(())
}

fn allowed(statement: &Statement) -> Result<()> {
    let refuse = |what: &str| {
        Err(Error::ReadOnly(format!(
            "Watchtrail SQL is read-only: {what} is not allowed; use SELECT, WITH, EXPLAIN or SHOW"
        )))
    };
    match statement {
        Statement::Statement(s) => match s.as_ref() {
            SqlStatement::Query(_)
            | SqlStatement::ShowTables { .. }
            | SqlStatement::ShowColumns { .. } => Ok(()),
            SqlStatement::Explain { statement, .. } => match statement.as_ref() {
                SqlStatement::Query(_) => Ok(()),
                other => refuse(&statement_kind(other)),
            },
            other => refuse(&statement_kind(other)),
        },
        Statement::Explain(e) => allowed(&e.statement),
        Statement::CreateExternalTable(_) => refuse("CREATE EXTERNAL TABLE"),
        Statement::CopyTo(_) => refuse("COPY"),
        Statement::Reset(_) => refuse("RESET"),
    }
}

/// The leading keywords of a statement, for error messages.
fn statement_kind(s: &SqlStatement) -> String {
    let text = s.to_string();
    let words: Vec<&str> = text
        .split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_uppercase()))
        .take(3)
        .collect();
    if words.is_empty() {
        "this statement".into()
    } else {
        words.join(" ").to_uppercase()
    }
}

/// An object-store registry that serves the Watchtrail store and nothing else.
#[derive(Debug)]
struct SingleStore {
    store: Arc<dyn ObjectStore>,
}

impl ObjectStoreRegistry for SingleStore {
    fn register_store(
        &self,
        _url: &Url,
        _store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        None
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        if url.scheme() == "watchtrail" && url.host_str() == Some("store") {
            Ok(Arc::clone(&self.store))
        } else {
            Err(DataFusionError::Plan(format!(
                "Watchtrail SQL reads only its own tables; `{url}` is not one of them"
            )))
        }
    }
}

#[cfg(test)]
mod tests;
