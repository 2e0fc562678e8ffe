//! Retention: files whose rows are all past the kind's retention are removed, and log groups
//! with retentions of their own are cut out of the files that hold them.

use super::*;

/// Rows of some log groups that a rewrite leaves out: those of the windows that are wholly
/// past the group's retention.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupDrop {
    /// Groups with a retention of their own, each with the start of its first window kept
    /// (µs): the group's rows before it go.
    pub groups: Vec<(String, i64)>,
    /// Groups without a retention of their own follow the kind's: all but these named ones
    /// lose their rows before the time given.
    pub others: Option<(Vec<String>, i64)>,
}

impl GroupDrop {
    /// The rows that go, as a predicate on `log_group` and time.
    pub(super) fn predicate(&self) -> Expr {
        let before = |t: i64| {
            col("time").lt(lit(ScalarValue::TimestampMicrosecond(
                Some(t),
                Some(watchtrail_model::tables::UTC.into()),
            )))
        };
        let mut e = lit(false);
        for (g, t) in &self.groups {
            e = e.or(col(LOG_GROUP).eq(lit(g.as_str())).and(before(*t)));
        }
        if let Some((named, t)) = &self.others {
            let others = if named.is_empty() {
                lit(true)
            } else {
                let names = named.iter().map(|g| lit(g.as_str())).collect();
                col(LOG_GROUP).in_list(names, true)
            };
            e = e.or(others.and(before(*t)));
        }
        e
    }
}

/// The retention periods CloudWatch Logs' `PutRetentionPolicy` accepts, in days.
pub const RETENTION_DAYS: [u32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// What retention does to a logs table whose groups may have retentions of their own:
/// files to drop whole (every row is past its group's retention), and files to rewrite
/// without the rows of windows wholly past a group's retention. `default` is the kind's
/// retention, for groups without one of their own.
pub fn plan_log_group_retention(
    files: &[DataFile],
    default: Option<Duration>,
    groups: &BTreeMap<String, Duration>,
    window: Duration,
    now_us: i64,
) -> (Vec<DataFile>, Vec<Rewrite>) {
    // Rows before this time are in windows that ended a retention ago.
    let first_kept = |r: Duration| window_of(now_us - r.as_micros() as i64, window);
    let default_kept = default.map(first_kept);
    let (mut whole, mut cut) = (Vec::new(), Vec::new());
    for f in files {
        let Some((lo, hi)) = f.time_range else {
            continue;
        };
        let named: Vec<(String, i64)> = groups
            .iter()
            .filter(|(g, _)| {
                f.group_range
                    .as_ref()
                    .is_none_or(|(a, b)| a <= *g && *g <= b)
            })
            .map(|(g, r)| (g.clone(), first_kept(*r)))
            .collect();
        if default_kept.is_some_and(|k| hi < k) && named.iter().all(|(_, k)| hi < *k) {
            whole.push(f.clone());
            continue;
        }
        let gone: Vec<(String, i64)> = named.into_iter().filter(|(_, k)| lo < *k).collect();
        let others = default_kept
            .filter(|k| lo < *k)
            .map(|k| (groups.keys().cloned().collect(), k));
        if gone.is_empty() && others.is_none() {
            continue;
        }
        cut.push(Rewrite {
            files: vec![f.clone()],
            window,
            rollup: None,
            drop: Some(GroupDrop {
                groups: gone,
                others,
            }),
        });
    }
    (whole, cut)
}

/// Files whose every row is older than the kind's retention.
pub fn plan_retention(files: &[DataFile], retention: Duration, now_us: i64) -> Vec<DataFile> {
    let cutoff = now_us - retention.as_micros() as i64;
    files
        .iter()
        .filter(|f| f.time_range.is_some_and(|(_, hi)| hi < cutoff))
        .cloned()
        .collect()
}

/// Removes expired files with one commit.
///
/// # Errors
/// Storage or commit errors.
pub async fn expire(
    storage: &Storage,
    tenant: &str,
    kind: TableKind,
    table: &mut DeltaTable,
    files: &[DataFile],
    cutoff_us: i64,
) -> Result<usize> {
    if files.is_empty() {
        return Ok(0);
    }
    let op = DeltaOperation::Delete {
        predicate: Some(format!(
            "{} < '{}'",
            kind.time_column(),
            crate::store::format_micros(cutoff_us)
        )),
    };
    let root = storage.table_path(tenant, kind);
    crate::write::commit_rewrite(&root, kind, table, files, &[], true, op).await?;
    Ok(files.len())
}
