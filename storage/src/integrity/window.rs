//! The audit events of one window, read from the table's files and hashed.

use arrow::array::{AsArray as _, RecordBatch, Scalar, TimestampMicrosecondArray};
use arrow::compute::kernels::cmp::{gt_eq, lt};
use watchtrail_model::tables::TableKind;

use super::hash::{EventHash, hash_rows};
use object_store::ObjectStoreExt as _;

use crate::error::Result;
use crate::store::Storage;
use crate::table_files::{DataFile, TableFiles};

/// One hour, the window of a digest.
pub const WINDOW_MS: i64 = 3_600_000;

/// The start of the window holding `ms`.
pub fn window_of(ms: i64) -> i64 {
    ms.div_euclid(WINDOW_MS) * WINDOW_MS
}

/// A file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// Its path.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// The files of `files` whose recorded time range meets `[start_ms, end_ms)` (and those with
/// no recorded range).
pub fn files_in(files: &TableFiles, start_ms: i64, end_ms: i64) -> Vec<&DataFile> {
    files
        .files
        .iter()
        .filter(|f| {
            f.time_range
                .is_none_or(|(lo, hi)| hi >= start_ms * 1000 && lo < end_ms * 1000)
        })
        .collect()
}

/// The hashed events of `[start_ms, end_ms)` in the given files, sorted by hash, and the files
/// that could not be read.
///
/// # Errors
/// Storage errors other than a file's own (a missing object is reported as unreadable).
pub async fn window_events(
    storage: &Storage,
    files: &[&DataFile],
    start_ms: i64,
    end_ms: i64,
) -> Result<(Vec<EventHash>, Vec<Unreadable>)> {
    let schema = TableKind::Audit.schema();
    let mut events = Vec::new();
    let mut bad = Vec::new();
    for f in files {
        let bytes = match storage.object_store().get(&f.path).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                bad.push(Unreadable {
                    path: f.path.to_string(),
                    reason: "the file is missing".into(),
                });
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let path = f.path.to_string();
        let schema = std::sync::Arc::clone(&schema);
        let read =
            tokio::task::spawn_blocking(move || -> std::result::Result<Vec<EventHash>, String> {
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                        .and_then(|b| b.build())
                        .map_err(|e| e.to_string())?;
                let mut out = Vec::new();
                for batch in reader {
                    let batch = batch.map_err(|e| e.to_string())?;
                    let batch = in_window(&batch, start_ms, end_ms).map_err(|e| e.to_string())?;
                    out.extend(hash_rows(&schema, &batch).map_err(|e| e.to_string())?);
                }
                Ok(out)
            })
            .await
            .map_err(|e| crate::error::Error::Internal(format!("hashing task: {e}")))?;
        match read {
            Ok(e) => events.extend(e),
            Err(reason) => bad.push(Unreadable { path, reason }),
        }
    }
    events.sort();
    Ok((events, bad))
}

fn in_window(
    batch: &RecordBatch,
    start_ms: i64,
    end_ms: i64,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let Some(t) = batch.column_by_name("eventtime") else {
        return Err(arrow::error::ArrowError::SchemaError(
            "audit rows without eventtime".into(),
        ));
    };
    let t = arrow::compute::cast(
        t,
        &arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
    )?;
    let lo = Scalar::new(TimestampMicrosecondArray::from(vec![start_ms * 1000]));
    let hi = Scalar::new(TimestampMicrosecondArray::from(vec![end_ms * 1000]));
    let t = t
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
        .clone()
        .with_timezone_opt(None::<String>);
    let keep = arrow::compute::and(&gt_eq(&t, &lo)?, &lt(&t, &hi)?)?;
    arrow::compute::filter_record_batch(batch, &keep)
}
