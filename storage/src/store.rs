//! Object storage by URL and the Delta tables that live in it.
//!
//! `file:///dir` (the embedded default), `s3://bucket/prefix` (any S3-compatible server, set up
//! from the usual `AWS_*` variables) and `memory://` (tests). Each tenant's tables live under
//! `<root>/<tenant>/<kind>/`, as Delta Lake tables whose commits are conditional writes
//! (`PutMode::Create` on `_delta_log/<version>.json`), so several writers never overwrite each
//! other's commits.

use std::fmt;
use std::sync::{Arc, Once};
use std::time::Duration;

use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::{StructField, StructType};
use deltalake::logstore::{
    LogStore, LogStoreFactory, LogStoreRef, StorageConfig, default_logstore, logstore_factories,
    logstore_with,
};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt as _, RetryConfig};
use url::Url;

use crate::error::{Error, Result};
use watchtrail_model::tables::TableKind;

/// Command-line flags that select the object store; shared by the server and the CLI.
#[derive(Debug, Clone, clap::Args)]
pub struct ObjectStoreArgs {
    /// Where tables live: `file:///dir`, `s3://bucket/prefix` or `memory://`. For S3 the endpoint
    /// and keys come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION.
    #[arg(
        long = "store",
        env = "WATCHTRAIL_STORE",
        default_value = "file://./watchtrail-data/store"
    )]
    pub store: String,
}

/// A validated object-store location plus the store that serves it.
#[derive(Clone)]
pub struct Storage {
    root: Arc<dyn ObjectStore>,
    /// URL of the Watchtrail root, always ending in `/`.
    base_url: Url,
    /// The same location as a path inside `root`.
    base_path: Path,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// Opens the store a `--store` URL names. A relative `file://./dir` is taken from the
    /// current directory; the directory is created when missing.
    ///
    /// # Errors
    /// An unknown scheme, a malformed URL, or an S3 configuration that does not build.
    pub fn from_url(raw: &str) -> Result<Self> {
        register_s3_logstore();
        let invalid = |reason: String| Error::InvalidStore {
            url: raw.to_string(),
            reason,
        };
        if let Some(rest) = raw.strip_prefix("file://") {
            let path = std::path::Path::new(rest);
            let abs = if path.is_absolute() {
                path.to_path_buf()
            } else {
                std::env::current_dir()
                    .map_err(|e| invalid(e.to_string()))?
                    .join(path)
            };
            create_private_dir(&abs, false)
                .map_err(|e| invalid(format!("cannot create {}: {e}", abs.display())))?;
            let abs = abs
                .canonicalize()
                .map_err(|e| invalid(format!("cannot resolve {}: {e}", abs.display())))?;
            let url = Url::from_directory_path(&abs)
                .map_err(|()| invalid(format!("{} is not a directory path", abs.display())))?;
            let base_path = Path::from_url_path(url.path()).map_err(|e| invalid(e.to_string()))?;
            return Ok(Self {
                root: Arc::new(LocalFileSystem::new()),
                base_url: url,
                base_path,
            });
        }
        if raw.starts_with("memory://") {
            return Ok(Self::in_memory(Arc::new(InMemory::new())));
        }
        if raw.starts_with("s3://") {
            let mut url = Url::parse(raw).map_err(|e| invalid(e.to_string()))?;
            let bucket = url
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| invalid("missing bucket name".into()))?
                .to_string();
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(&bucket)
                .with_conditional_put(S3ConditionalPut::ETagMatch)
                .with_retry(RetryConfig {
                    max_retries: 3,
                    retry_timeout: Duration::from_secs(15),
                    ..RetryConfig::default()
                })
                .with_client_options(
                    ClientOptions::new()
                        .with_connect_timeout(Duration::from_secs(5))
                        .with_timeout(Duration::from_secs(60)),
                );
            if std::env::var("AWS_ENDPOINT_URL").is_ok_and(|e| e.starts_with("http://")) {
                builder = builder.with_allow_http(true);
            }
            if std::env::var_os("AWS_REGION").is_none()
                && std::env::var_os("AWS_DEFAULT_REGION").is_none()
            {
                builder = builder.with_region("us-east-1");
            }
            let store = builder.build().map_err(|e| invalid(e.to_string()))?;
            if !url.path().ends_with('/') {
                let p = format!("{}/", url.path());
                url.set_path(&p);
            }
            let base_path = Path::from_url_path(url.path()).map_err(|e| invalid(e.to_string()))?;
            return Ok(Self {
                root: Arc::new(store),
                base_url: url,
                base_path,
            });
        }
        Err(invalid(
            "expected file:///dir, s3://bucket/prefix or memory://".into(),
        ))
    }

    /// A store over a shared in-memory object store (tests share one between server and reader).
    pub fn in_memory(store: Arc<dyn ObjectStore>) -> Self {
        register_s3_logstore();
        Self {
            root: store,
            base_url: Url::parse("memory:///").expect("constant URL parses"),
            base_path: Path::default(),
        }
    }

    /// The object store at the root of this location.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.root)
    }

    /// The path of the Watchtrail root inside [`Storage::object_store`].
    pub fn base_path(&self) -> &Path {
        &self.base_path
    }

    /// The URL of the Watchtrail root (ends in `/`).
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The URL of a tenant's table.
    ///
    /// # Errors
    /// Never for validated tenant names; an error guards against path tricks.
    pub fn table_url(&self, tenant: &str, kind: TableKind) -> Result<Url> {
        watchtrail_model::tables::validate_tenant(tenant).map_err(Error::InvalidTenant)?;
        self.base_url
            .join(&format!("{tenant}/{}/", kind.name()))
            .map_err(|e| Error::InvalidStore {
                url: self.base_url.to_string(),
                reason: e.to_string(),
            })
    }

    /// The path of a tenant's table inside [`Storage::object_store`].
    pub fn table_path(&self, tenant: &str, kind: TableKind) -> Path {
        self.base_path.clone().join(tenant).join(kind.name())
    }

    fn log_store(&self, tenant: &str, kind: TableKind) -> Result<LogStoreRef> {
        let url = self.table_url(tenant, kind)?;
        Ok(logstore_with(
            Arc::clone(&self.root),
            &url,
            StorageConfig::default(),
        )?)
    }

    /// Opens a tenant's table, or `None` when it was never created.
    ///
    /// # Errors
    /// Storage errors and corrupt table logs.
    pub async fn open_table(&self, tenant: &str, kind: TableKind) -> Result<Option<DeltaTable>> {
        let log_store = self.log_store(tenant, kind)?;
        if !log_store.is_delta_table_location().await? {
            return Ok(None);
        }
        let mut table = DeltaTable::new(log_store);
        table.load().await?;
        Ok(Some(table))
    }

    /// Opens a tenant's table, creating it first when it does not exist.
    ///
    /// Two servers creating the same table at once is fine: the loser's conditional write fails
    /// and it loads the winner's table.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn open_or_create_table(&self, tenant: &str, kind: TableKind) -> Result<DeltaTable> {
        if let Some(table) = self.open_table(tenant, kind).await? {
            return self.with_current_columns(tenant, kind, table).await;
        }
        let schema: StructType = kind.schema().try_into_kernel()?;
        let created = deltalake::operations::create::CreateBuilder::new()
            .with_log_store(self.log_store(tenant, kind)?)
            .with_table_name(kind.name())
            .with_columns(schema.fields().cloned())
            .with_save_mode(SaveMode::Ignore)
            .await;
        match created {
            Ok(table) => Ok(table),
            Err(DeltaTableError::VersionAlreadyExists(_)) => self
                .open_table(tenant, kind)
                .await?
                .ok_or_else(|| Error::Internal("table vanished after a concurrent create".into())),
            Err(e) => Err(e.into()),
        }
    }
}

impl Storage {
    /// `table` with every column of `kind`'s schema in its log: a table made by an earlier
    /// version gets the columns added since (Delta's add-column commit), so readers of the Delta
    /// table see them. Rows written before read them as null.
    ///
    /// # Errors
    /// Storage errors; a commit that failed for another reason than a concurrent one.
    async fn with_current_columns(
        &self,
        tenant: &str,
        kind: TableKind,
        table: DeltaTable,
    ) -> Result<DeltaTable> {
        let want: StructType = kind.schema().try_into_kernel()?;
        let missing = |t: &DeltaTable| -> Result<Vec<StructField>> {
            let have = t.snapshot()?.schema();
            Ok(want
                .fields()
                .filter(|f| have.field(f.name()).is_none())
                .cloned()
                .collect())
        };
        let fields = missing(&table)?;
        if fields.is_empty() {
            return Ok(table);
        }
        match table.add_columns().with_fields(fields).await {
            Ok(t) => Ok(t),
            Err(e) => {
                // Another server may have added them first.
                let t = self
                    .open_table(tenant, kind)
                    .await?
                    .ok_or_else(|| Error::Internal("table vanished while adding columns".into()))?;
                if missing(&t)?.is_empty() {
                    Ok(t)
                } else {
                    Err(e.into())
                }
            }
        }
    }

    /// The active data files of a table (paths inside [`Storage::object_store`]).
    ///
    /// # Errors
    /// Storage errors; a file URI outside this store (a broken invariant).
    pub fn active_files(&self, table: &DeltaTable) -> Result<Vec<Path>> {
        table
            .get_file_uris()?
            .map(|uri| {
                let bad = |e: String| Error::Internal(format!("bad file URI {uri}: {e}"));
                // Local tables give plain paths, the others URLs.
                if uri.starts_with('/') {
                    return Path::from_absolute_path(&uri).map_err(|e| bad(e.to_string()));
                }
                let url = Url::parse(&uri).map_err(|e| bad(e.to_string()))?;
                Path::from_url_path(url.path()).map_err(|e| bad(e.to_string()))
            })
            .collect()
    }

    /// Reads every row of a tenant's table (empty when the table does not exist). For tools and
    /// tests; SQL goes through the engine, which prunes.
    ///
    /// # Errors
    /// Storage or Parquet errors.
    pub async fn read_table(
        &self,
        tenant: &str,
        kind: TableKind,
    ) -> Result<Vec<arrow::array::RecordBatch>> {
        self.read_table_columns(tenant, kind, None).await
    }

    /// Reads some columns (all with `None`) of every row of a tenant's table.
    ///
    /// # Errors
    /// Storage or Parquet errors.
    pub async fn read_table_columns(
        &self,
        tenant: &str,
        kind: TableKind,
        columns: Option<&[&str]>,
    ) -> Result<Vec<arrow::array::RecordBatch>> {
        let Some(table) = self.open_table(tenant, kind).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for path in self.active_files(&table)? {
            let bytes = self.root.get(&path).await?.bytes().await?;
            let mut builder =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?;
            if let Some(cols) = columns {
                let mask = parquet::arrow::ProjectionMask::columns(
                    builder.parquet_schema(),
                    cols.iter().copied(),
                );
                builder = builder.with_projection(mask);
            }
            for batch in builder.build()? {
                out.push(batch?);
            }
        }
        Ok(out)
    }
}

/// The application-transaction version recorded for `app_id` in the table, if any.
///
/// # Errors
/// Storage errors.
pub async fn transaction_version(table: &DeltaTable, app_id: &str) -> Result<Option<i64>> {
    let log_store = table.log_store();
    Ok(table
        .snapshot()?
        .transaction_version(log_store.as_ref(), app_id)
        .await?)
}

/// Registers the plain conditional-put log store for `s3://` tables: object_store's S3 client
/// sends `If-None-Match: *`, which S3 and compatible servers honour, so no lock table is needed
/// (and the AWS SDK stays out of the build).
fn register_s3_logstore() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let url = Url::parse("s3://").expect("constant URL parses");
        logstore_factories().insert(url, Arc::new(ConditionalPutLogStoreFactory));
    });
}

#[derive(Debug)]
struct ConditionalPutLogStoreFactory;

impl LogStoreFactory for ConditionalPutLogStoreFactory {
    fn with_options(
        &self,
        prefixed_store: Arc<dyn ObjectStore>,
        root_store: Arc<dyn ObjectStore>,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Statistics of one data file, in the shape Delta's `add.stats` JSON wants.
#[derive(Debug, Clone, Default)]
pub struct FileStats {
    /// Rows in the file.
    pub num_records: i64,
    /// Minimum and maximum of the table's time column, in microseconds since the epoch.
    pub time_range: Option<(i64, i64)>,
    /// Logs only: the least and greatest log group in the file, so that per-group retention
    /// can tell from the table log which files hold a group.
    pub group_range: Option<(String, String)>,
}

impl FileStats {
    /// Widens the time range to take in `lo..=hi`.
    pub fn include_times(&mut self, lo: i64, hi: i64) {
        self.time_range = Some(
            self.time_range
                .map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))),
        );
    }

    /// Counts a batch (in `kind`'s schema) written to the file.
    pub fn record(&mut self, kind: TableKind, batch: &arrow::array::RecordBatch) {
        use arrow::array::{Array as _, AsArray as _};
        self.num_records += batch.num_rows() as i64;
        if let Some(col) = batch.column_by_name(kind.time_column()) {
            let ts = col.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            debug_assert_eq!(ts.null_count(), 0);
            if let (Some(lo), Some(hi)) = (arrow::compute::min(ts), arrow::compute::max(ts)) {
                self.include_times(lo, hi);
            }
        }
        if kind == TableKind::Logs
            && let Some(col) = batch.column_by_name(LOG_GROUP)
            && let Some(groups) = col.as_string_opt::<i32>()
            && let (Some(lo), Some(hi)) = (
                arrow::compute::min_string(groups),
                arrow::compute::max_string(groups),
            )
        {
            self.group_range = Some(match self.group_range.take() {
                None => (lo.to_string(), hi.to_string()),
                Some((a, b)) => (
                    if lo < a.as_str() { lo.to_string() } else { a },
                    if hi > b.as_str() { hi.to_string() } else { b },
                ),
            });
        }
    }
}

/// The log group column of `logs`.
pub const LOG_GROUP: &str = "log_group";

/// Formats microseconds since the epoch as an RFC 3339 UTC timestamp with microseconds.
pub fn format_micros(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_default()
}

impl Storage {
    /// Writes `batch` (in the table's schema) as one sorted Parquet file and commits it, creating
    /// the table when needed. For tools and tests: the server's flusher commits its own files.
    ///
    /// # Errors
    /// Storage, Parquet or commit errors.
    pub async fn append_batch(
        &self,
        tenant: &str,
        kind: TableKind,
        batch: &arrow::array::RecordBatch,
    ) -> Result<i64> {
        let table = self.open_or_create_table(tenant, kind).await?;
        self.append_to(table, tenant, kind, batch, None)
            .await
            .map(|v| v.unwrap_or_default())
    }

    /// As [`Storage::append_batch`], recording the application transaction `txn` = `(app_id,
    /// version)` in the same commit; nothing is written when the table already holds that
    /// version (or a later one) for `app_id`, so a retried append lands once.
    /// The new table version, or `None` when the append was already there.
    ///
    /// # Errors
    /// Storage, Parquet or commit errors.
    pub async fn append_once(
        &self,
        tenant: &str,
        kind: TableKind,
        batch: &arrow::array::RecordBatch,
        txn: (String, i64),
    ) -> Result<Option<i64>> {
        let table = self.open_or_create_table(tenant, kind).await?;
        if transaction_version(&table, &txn.0)
            .await?
            .is_some_and(|v| v >= txn.1)
        {
            return Ok(None);
        }
        self.append_to(table, tenant, kind, batch, Some(txn)).await
    }

    /// As [`Storage::append_batch`] on a table already open (no reload of its log per call);
    /// with `txn`, the application transaction recorded in the same commit.
    ///
    /// # Errors
    /// Storage, Parquet or commit errors.
    pub async fn append_batch_to(
        &self,
        table: &mut DeltaTable,
        tenant: &str,
        kind: TableKind,
        batch: &arrow::array::RecordBatch,
        txn: Option<(String, i64)>,
    ) -> Result<i64> {
        let file = self.write_file(tenant, kind, batch).await?;
        crate::write::commit_append(table, kind, &[file], txn).await
    }

    /// Writes each batch as a file of its own and commits them all at once: the files a
    /// series of small flushes leaves, for benchmarks and tests, without a commit per file.
    ///
    /// # Errors
    /// Storage, Parquet or commit errors.
    pub async fn append_files_to(
        &self,
        table: &mut DeltaTable,
        tenant: &str,
        kind: TableKind,
        batches: &[arrow::array::RecordBatch],
    ) -> Result<i64> {
        let mut files = Vec::with_capacity(batches.len());
        for b in batches {
            files.push(self.write_file(tenant, kind, b).await?);
        }
        crate::write::commit_append(table, kind, &files, None).await
    }

    /// Writes one sorted Parquet file of `batch` into the table's directory.
    async fn write_file(
        &self,
        tenant: &str,
        kind: TableKind,
        batch: &arrow::array::RecordBatch,
    ) -> Result<crate::write::NewFile> {
        let mut enc = crate::files::ParquetEncoder::new(kind)?;
        enc.write(&crate::files::sort_batch(kind, batch)?)?;
        let (bytes, stats) = enc.finish()?;
        let name = crate::write::file_name("tool");
        crate::write::put(self, tenant, kind, name, bytes, stats).await
    }

    async fn append_to(
        &self,
        mut table: DeltaTable,
        tenant: &str,
        kind: TableKind,
        batch: &arrow::array::RecordBatch,
        txn: Option<(String, i64)>,
    ) -> Result<Option<i64>> {
        self.append_batch_to(&mut table, tenant, kind, batch, txn)
            .await
            .map(Some)
    }
}

/// Creates `path` and its parents, and makes `path` itself readable by its owner alone (0700):
/// it holds data (WAL segments, tables, keys) that no other local user may read. An existing
/// directory is narrowed as well only when `narrow_existing` is set (directories Watchtrail
/// owns; not one an operator named and may share on purpose).
///
/// # Errors
/// The directory cannot be created or its mode set.
pub fn create_private_dir(path: &std::path::Path, narrow_existing: bool) -> std::io::Result<()> {
    let existed = path.is_dir();
    std::fs::create_dir_all(path)?;
    #[cfg(unix)]
    if !existed || narrow_existing {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The bytes of a private file (a key), made by `make` and written with mode 0600 (its directory
/// 0700) when there is none yet. Two processes racing to make it: one wins, the other reads.
///
/// # Errors
/// The file cannot be read or made; `make` failed.
pub fn read_or_create_private_file(
    path: &std::path::Path,
    make: impl FnOnce() -> crate::Result<Vec<u8>>,
) -> std::io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => return Ok(b),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let bytes = make().map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir, false)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(mut f) => {
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()?;
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_table_made_before_a_column_existed_gets_it_when_opened_for_writing() {
        let storage = Storage::in_memory(Arc::new(InMemory::new()));
        let current: StructType = TableKind::Audit
            .schema()
            .try_into_kernel()
            .expect("kernel schema");
        let older: Vec<StructField> = current
            .fields()
            .filter(|f| f.name() != watchtrail_model::tables::SERVER_EVENT_COLUMN)
            .cloned()
            .collect();
        deltalake::operations::create::CreateBuilder::new()
            .with_log_store(storage.log_store("t", TableKind::Audit).expect("log store"))
            .with_table_name("audit")
            .with_columns(older)
            .await
            .expect("an audit table of the earlier schema");
        let table = storage
            .open_or_create_table("t", TableKind::Audit)
            .await
            .expect("opened");
        let schema = table.snapshot().expect("snapshot").schema();
        assert!(
            schema
                .field(watchtrail_model::tables::SERVER_EVENT_COLUMN)
                .is_some()
        );
        // Opening again changes nothing.
        let version = table.version();
        let again = storage
            .open_or_create_table("t", TableKind::Audit)
            .await
            .expect("opened");
        assert_eq!(again.version(), version);
    }
}
