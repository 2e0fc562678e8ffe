//! Compaction: planning which small files of settled windows to rewrite, and the rewrite
//! itself (sorted in storage order by DataFusion within a memory limit, one file per window).

use super::*;
use crate::write::{NewFile, StreamingFile};

/// Groups of files to rewrite, oldest first: small files that share a window are in one
/// group, and so are metric files whose rows are old enough for a coarser tier than the one
/// they are at, whatever their size. A group is worth rewriting when it has two files, one
/// that spans windows, or one that needs a rollup. Windows and rollup periods are the tier's
/// where one applies.
pub fn plan_compaction(
    files: &[DataFile],
    policy: &Policy,
    kind: TableKind,
    now_us: i64,
) -> Vec<Rewrite> {
    let small = policy.target_bytes / 2;
    let settle = policy.settle.as_micros() as i64;
    let tiers: &[Tier] = if kind == TableKind::Metrics {
        &policy.tiers
    } else {
        &[]
    };
    // (tier, first window, last window, needs a rollup, file)
    let mut candidates: Vec<(Option<usize>, i64, i64, bool, DataFile)> = files
        .iter()
        .filter_map(|f| {
            let (lo, hi) = f.time_range?;
            let tier = tier_for(hi, tiers, now_us);
            let needs_rollup =
                tier.is_some_and(|t| rollup_period_of(&f.path).is_none_or(|p| p < tiers[t].period));
            if f.size >= small && !needs_rollup {
                return None;
            }
            let window = tier.map_or(policy.window, |t| tiers[t].window);
            let w = (window.as_micros() as i64).max(1);
            let (first, last) = (window_of(lo, window), window_of(hi, window));
            // Every window the file touches must be over.
            (last + w + settle <= now_us).then(|| (tier, first, last, needs_rollup, f.clone()))
        })
        .collect();
    candidates.sort_by_key(|c| (c.0, c.1, c.2));
    // (tier, last window, files, spans windows or needs a rollup)
    let mut groups: Vec<(Option<usize>, i64, Vec<DataFile>, bool)> = Vec::new();
    for (tier, first, last, needs_rollup, f) in candidates {
        let forced = first != last || needs_rollup;
        match groups.last_mut() {
            Some((t, end, g, must)) if *t == tier && first <= *end => {
                *end = (*end).max(last);
                *must |= forced;
                g.push(f);
            }
            _ => groups.push((tier, last, vec![f], forced)),
        }
    }
    groups
        .into_iter()
        .filter(|(_, _, g, must)| g.len() >= 2 || *must)
        .map(|(tier, _, files, _)| Rewrite {
            files,
            window: tier.map_or(policy.window, |t| tiers[t].window),
            rollup: tier.map(|t| tiers[t].period),
            drop: None,
        })
        .collect()
}

/// The sort order of a compacted file: series (or group and stream, or source and name), then
/// time, as the flusher writes them.
pub(super) fn sort_exprs(
    kind: TableKind,
    window: Duration,
) -> Vec<datafusion::logical_expr::SortExpr> {
    use datafusion::functions_nested::expr_fn::{array_to_string, map_values};
    let asc = |e: datafusion::prelude::Expr| e.sort(true, false);
    let window_us = (window.as_micros() as i64).max(1);
    let window_key =
        datafusion::prelude::cast(col(kind.time_column()), arrow::datatypes::DataType::Int64)
            / lit(window_us);
    let mut keys = vec![asc(window_key)];
    keys.extend(match kind {
        TableKind::Metrics => vec![
            asc(col("namespace")),
            asc(col("metric_name")),
            asc(array_to_string(map_values(col("dimensions")), lit("\u{1}"))),
            asc(col("time")),
        ],
        TableKind::Logs => vec![
            asc(col("log_group")),
            asc(col("log_stream")),
            asc(col("time")),
        ],
        TableKind::Audit => vec![
            asc(col("eventsource")),
            asc(col("eventname")),
            asc(col("eventtime")),
        ],
        TableKind::AlarmHistory | TableKind::WebhookDeliveries => {
            vec![asc(col("alarm_name")), asc(col("time"))]
        }
    });
    keys
}

/// Splits a batch sorted by window into runs of one window each.
pub(super) fn window_runs(
    batch: &arrow::array::RecordBatch,
    kind: TableKind,
    window: Duration,
) -> Result<Vec<(i64, arrow::array::RecordBatch)>> {
    let Some(c) = batch.column_by_name(kind.time_column()) else {
        return Err(Error::Internal("compaction lost the time column".into()));
    };
    let ts = arrow::array::AsArray::as_primitive::<arrow::datatypes::TimestampMicrosecondType>(c);
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=ts.len() {
        let end_of_run =
            i == ts.len() || window_of(ts.value(i), window) != window_of(ts.value(start), window);
        if end_of_run {
            out.push((
                window_of(ts.value(start), window),
                batch.slice(start, i - start),
            ));
            start = i;
        }
    }
    Ok(out)
}

/// What a rewrite must keep: rows, or (for a rollup) samples. Read from the inputs when the
/// rewrite drops or aggregates rows, else taken from the commit statistics.
pub(super) async fn expected_weight(
    ctx: &SessionContext,
    paths: &[String],
    kind: TableKind,
    rewrite: &Rewrite,
) -> Result<Option<f64>> {
    use datafusion::functions::expr_fn::coalesce;
    use datafusion::functions_aggregate::expr_fn::{count, sum};
    if rewrite.rollup.is_none() && rewrite.drop.is_none() {
        let files = &rewrite.files;
        return Ok(files
            .iter()
            .all(|f| f.rows.is_some())
            .then(|| files.iter().filter_map(|f| f.rows).sum::<u64>() as f64));
    }
    let mut df = ctx
        .read_parquet(
            paths.to_vec(),
            ParquetReadOptions::default().schema(&kind.schema()),
        )
        .await?;
    if let Some(drop) = &rewrite.drop {
        df = df.filter(drop.predicate().is_not_true())?;
    }
    let measure = match rewrite.rollup {
        Some(_) => sum(coalesce(vec![col("sample_count"), lit(1.0)])),
        None => datafusion::prelude::cast(count(lit(1)), arrow::datatypes::DataType::Float64),
    };
    let batches = df
        .aggregate(vec![], vec![measure.alias("w")])?
        .collect()
        .await?;
    let total = batches.first().filter(|b| b.num_rows() == 1).map(|b| {
        let c = b.column(0);
        let a = arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(c);
        if arrow::array::Array::is_null(a, 0) {
            0.0
        } else {
            a.value(0)
        }
    });
    Ok(total)
}

/// What the rows of a written batch weigh: samples for a rollup, else rows.
pub(super) fn batch_weight(batch: &arrow::array::RecordBatch, rollup: bool) -> f64 {
    if !rollup {
        return batch.num_rows() as f64;
    }
    batch
        .column_by_name("sample_count")
        .map(|c| {
            let a = arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(c);
            arrow::compute::sum(a).unwrap_or(0.0)
        })
        .unwrap_or(0.0)
}

/// Rewrites the files of `rewrite` as files of one window each (and about the target size at
/// most), leaving out dropped log groups and rolling metrics up where it says so, and swaps
/// them in with one commit. Outputs already written are deleted when the commit fails.
///
/// # Errors
/// Storage, Parquet or DataFusion errors, a rewrite that would not keep every row (or
/// sample) it should, or a commit that conflicted with another.
pub async fn compact(
    storage: &Storage,
    tenant: &str,
    kind: TableKind,
    table: &mut DeltaTable,
    rewrite: &Rewrite,
    policy: &Policy,
) -> Result<PassStats> {
    let inputs = &rewrite.files;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(policy.memory_limit, 1.0)
        .build_arc()?;
    let config = SessionConfig::new().with_target_partitions(1);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let url = url::Url::parse("watchtrail-compact://store")
        .map_err(|e| Error::Internal(e.to_string()))?;
    ctx.register_object_store(&url, storage.object_store());
    let paths: Vec<String> = inputs
        .iter()
        .map(|f| format!("watchtrail-compact://store/{}", f.path))
        .collect();
    let schema = kind.schema();
    let expected = expected_weight(&ctx, &paths, kind, rewrite).await?;
    let input_rows: Option<u64> = inputs.iter().map(|f| f.rows).sum();
    if rewrite.drop.is_some()
        && rewrite.rollup.is_none()
        && expected.is_some()
        && expected == input_rows.map(|r| r as f64)
    {
        // None of the groups to drop is in these files (their range only said it could be).
        return Ok(PassStats::default());
    }
    let mut df = ctx
        .read_parquet(paths, ParquetReadOptions::default().schema(&schema))
        .await?;
    if let Some(drop) = &rewrite.drop {
        df = df.filter(drop.predicate().is_not_true())?;
    }
    let rollup = rewrite.rollup.filter(|_| kind == TableKind::Metrics);
    if let Some(period) = rollup {
        df = rollup_frame(df, period)?;
    }
    let mut stream = df
        .sort(sort_exprs(kind, rewrite.window))?
        .execute_stream()
        .await?;
    let props = crate::files::writer_properties(kind);
    let mut written: Vec<NewFile> = Vec::new();
    let mut weight = 0.0;
    // The file being written and the window it holds.
    let mut current: Option<(StreamingFile, i64)> = None;
    let result: Result<()> = async {
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            // The rewritten rows keep the table's schema exactly (nullability included).
            let batch =
                arrow::array::RecordBatch::try_new(Arc::clone(&schema), batch.columns().to_vec())?;
            weight += batch_weight(&batch, rollup.is_some());
            for (window, run) in window_runs(&batch, kind, rewrite.window)? {
                let roll = current.as_ref().is_some_and(|(file, w)| {
                    *w != window || file.bytes_written() >= policy.target_bytes
                });
                if roll && let Some((file, _)) = current.take() {
                    written.push(file.finish(storage).await?);
                }
                let (file, _) = match current.as_mut() {
                    Some(c) => c,
                    None => {
                        let label = match rollup {
                            Some(p) => format!("{ROLLUP_LABEL}{}s", p.as_secs()),
                            None => "compact".to_string(),
                        };
                        let name = crate::write::file_name(&label);
                        let file =
                            StreamingFile::create(storage, tenant, kind, name, props.clone())?;
                        current.insert((file, window))
                    }
                };
                file.write(&run).await?;
            }
        }
        if let Some((file, _)) = current.take() {
            written.push(file.finish(storage).await?);
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        crate::write::discard(storage, tenant, kind, &written).await;
        return Err(e);
    }
    if let Some(expected) = expected
        && (weight - expected).abs() > 1e-9 * expected.abs().max(1.0)
    {
        crate::write::discard(storage, tenant, kind, &written).await;
        let what = if rollup.is_some() { "samples" } else { "rows" };
        return Err(Error::Internal(format!(
            "a rewrite of {} files wrote {weight} {what} where {expected} were expected; nothing committed",
            inputs.len()
        )));
    }
    // Only a plain merge leaves the data as it was; a rollup or a cut changes it.
    let data_change = rollup.is_some() || rewrite.drop.is_some();
    let op = match (&rollup, &rewrite.drop) {
        (Some(p), _) => DeltaOperation::Update {
            predicate: Some(format!("rollup to statistic sets of {} s", p.as_secs())),
        },
        (None, Some(_)) => DeltaOperation::Delete {
            predicate: Some("log groups past their retention".into()),
        },
        (None, None) => DeltaOperation::Optimize {
            predicate: None,
            target_size: policy.target_bytes as i64,
        },
    };
    let root = storage.table_path(tenant, kind);
    let committed =
        crate::write::commit_rewrite(&root, kind, table, inputs, &written, data_change, op).await;
    if let Err(e) = committed {
        crate::write::discard(storage, tenant, kind, &written).await;
        return Err(e);
    }
    Ok(PassStats {
        windows: 1,
        files_in: inputs.len(),
        files_out: written.len(),
        bytes_in: inputs.iter().map(|f| f.size).sum(),
        bytes_out: written.iter().map(|w| w.size).sum(),
        expired: 0,
        rolled_up: usize::from(rollup.is_some()),
    })
}
