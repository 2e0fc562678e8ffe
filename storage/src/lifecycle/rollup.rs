//! Resolution tiers of `metrics`: which tier a file's rows belong to, and the rollup that
//! turns points into statistic sets of the tier's period.

use super::*;

/// A resolution tier: metric rows older than `after` are kept as statistic sets of `period`,
/// in files of one `window` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// Age at which rows move to this tier.
    pub after: Duration,
    /// Width of one statistic set.
    pub period: Duration,
    /// Width of the time window of this tier's files.
    pub window: Duration,
}

impl Tier {
    /// CloudWatch's tiers: finer than a minute for 3 hours, one minute for 15 days, five
    /// minutes for 63 days, then one hour (kept 455 days by the default retention). The
    /// one-minute tier keeps the compaction window; the coarser ones use one-day windows.
    pub fn cloudwatch(window: Duration) -> Vec<Tier> {
        const HOUR: u64 = 3600;
        const DAY: u64 = 24 * HOUR;
        vec![
            Tier {
                after: Duration::from_secs(3 * HOUR),
                period: Duration::from_secs(60),
                window,
            },
            Tier {
                after: Duration::from_secs(15 * DAY),
                period: Duration::from_secs(300),
                window: Duration::from_secs(DAY).max(window),
            },
            Tier {
                after: Duration::from_secs(63 * DAY),
                period: Duration::from_secs(HOUR),
                window: Duration::from_secs(DAY).max(window),
            },
        ]
    }

    /// Checks a list of tiers against the compaction window: ages and periods grow, each
    /// period is at least a second and divides its window, and each window is a multiple of
    /// the compaction window and of the one before it.
    ///
    /// # Errors
    /// The first rule broken, in words.
    pub fn validate(tiers: &[Tier], window: Duration) -> std::result::Result<(), String> {
        let mut prev: Option<&Tier> = None;
        for (i, t) in tiers.iter().enumerate() {
            let (p, w) = (t.period.as_micros(), t.window.as_micros());
            if t.period < Duration::from_secs(1) || w == 0 || w % p != 0 {
                return Err(format!(
                    "tier {}: the period ({:?}) must be at least 1s and divide the window ({:?})",
                    i + 1,
                    t.period,
                    t.window
                ));
            }
            if w % window.as_micros().max(1) != 0 {
                return Err(format!(
                    "tier {}: the window ({:?}) must be a multiple of the compaction window ({window:?})",
                    i + 1,
                    t.window
                ));
            }
            if let Some(prev) = prev
                && (t.after <= prev.after
                    || t.period <= prev.period
                    || t.period.as_micros() % prev.period.as_micros() != 0
                    || w % prev.window.as_micros() != 0)
            {
                return Err(format!(
                    "tier {}: age and period must grow tier by tier, each period a multiple of the one before and each window a multiple of the one before",
                    i + 1
                ));
            }
            prev = Some(t);
        }
        Ok(())
    }
}

/// The label of a rolled-up file ([`crate::write::file_name`]); the period in seconds follows,
/// then `s`, so the name reads `part-rollup-300s-<random>.zstd.parquet`.
pub(super) const ROLLUP_LABEL: &str = "rollup-";

/// The period a file was rolled up to, read from its name; `None` for a file of raw points.
pub fn rollup_period_of(path: &Path) -> Option<Duration> {
    let rest = path
        .filename()?
        .strip_prefix("part-")?
        .strip_prefix(ROLLUP_LABEL)?;
    let (secs, _) = rest.split_once("s-")?;
    secs.parse().ok().map(Duration::from_secs)
}

/// The coarsest tier that every row up to `hi` belongs to: its whole window ended `after` ago.
pub(super) fn tier_for(hi: i64, tiers: &[Tier], now_us: i64) -> Option<usize> {
    tiers.iter().rposition(|t| {
        let w = (t.window.as_micros() as i64).max(1);
        window_of(hi, t.window) + w <= now_us - t.after.as_micros() as i64
    })
}

/// The rows of a rollup: statistic sets per series and `period`, stamped with the start of
/// the period, in the table's column order. A raw sample `v` counts as the set (1, v, v, v).
pub(super) fn rollup_frame(df: DataFrame, period: Duration) -> Result<DataFrame> {
    use datafusion::functions::expr_fn::{coalesce, date_bin};
    use datafusion::functions_aggregate::expr_fn::{max, min, sum};
    let stride = lit(ScalarValue::new_interval_mdn(
        0,
        0,
        i64::try_from(period.as_nanos()).unwrap_or(i64::MAX),
    ));
    let origin = lit(ScalarValue::TimestampMicrosecond(
        Some(0),
        Some(watchtrail_model::tables::UTC.into()),
    ));
    let df = df
        .aggregate(
            vec![
                col("namespace"),
                col("metric_name"),
                col("dimensions"),
                col("unit"),
                // date_bin answers in nanoseconds; the table keeps microseconds.
                datafusion::prelude::cast(
                    date_bin(stride, col("time"), origin),
                    watchtrail_model::tables::timestamp_type(),
                )
                .alias("time"),
            ],
            vec![
                sum(coalesce(vec![col("sample_count"), lit(1.0)])).alias("sample_count"),
                sum(coalesce(vec![col("sum"), col("value")])).alias("sum"),
                min(coalesce(vec![col("min"), col("value")])).alias("min"),
                max(coalesce(vec![col("max"), col("value")])).alias("max"),
            ],
        )?
        .select(vec![
            col("namespace"),
            col("metric_name"),
            col("dimensions"),
            col("time"),
            lit(ScalarValue::Float64(None)).alias("value"),
            col("unit"),
            col("sample_count"),
            col("sum"),
            col("min"),
            col("max"),
            lit(60i32).alias("storage_resolution"),
        ])?;
    Ok(df)
}
