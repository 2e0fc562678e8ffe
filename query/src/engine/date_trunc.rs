//! `date_trunc` for Watchtrail's timestamps. Every timestamp column is `Timestamp(µs, "UTC")`,
//! and DataFusion 55 truncates a timestamp that carries a time zone to an hour or a day through
//! chrono's time-zone conversions, one row at a time (and formats an error message for every
//! row on the way). In UTC an hour and a day are fixed lengths of time, so this truncates them
//! with integer arithmetic and hands everything else to DataFusion's own function unchanged.

use std::sync::Arc;

use arrow::array::{Array, AsArray as _, PrimitiveArray};
use arrow::datatypes::{
    ArrowTimestampType, DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow::error::ArrowError;
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl};

/// DataFusion's `date_trunc` with a fast path for hours and days of UTC timestamps.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct UtcDateTrunc {
    inner: Arc<ScalarUDF>,
}

impl UtcDateTrunc {
    pub(crate) fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            inner: datafusion::functions::datetime::date_trunc(),
        })
    }
}

impl ScalarUDFImpl for UtcDateTrunc {
    delegate_scalar_udf_to_inner!();

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(result) = utc_fast_path(&args.args)? {
            return Ok(ColumnarValue::Array(result));
        }
        self.inner.invoke_with_args(args)
    }
}

/// Whether a time-zone name means UTC itself (not merely a zone at +00:00 today).
fn is_utc(tz: &str) -> bool {
    ["UTC", "+00:00", "Z", "Etc/UTC"]
        .iter()
        .any(|u| tz.eq_ignore_ascii_case(u))
}

/// The truncated array, or `None` when the arguments are not a fixed granularity over an array
/// of UTC timestamps.
fn utc_fast_path(args: &[ColumnarValue]) -> Result<Option<Arc<dyn Array>>> {
    let [
        ColumnarValue::Scalar(granularity),
        ColumnarValue::Array(array),
    ] = args
    else {
        return Ok(None);
    };
    let seconds = match granularity {
        ScalarValue::Utf8(Some(g))
        | ScalarValue::Utf8View(Some(g))
        | ScalarValue::LargeUtf8(Some(g)) => match g.to_ascii_lowercase().as_str() {
            "hour" => 3_600,
            "day" => 86_400,
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    let DataType::Timestamp(unit, Some(tz)) = array.data_type() else {
        return Ok(None);
    };
    if !is_utc(tz) {
        return Ok(None);
    }
    let per_second: i64 = match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    };
    let step = seconds * per_second;
    let result: Arc<dyn Array> = match unit {
        TimeUnit::Second => floor::<TimestampSecondType>(array.as_ref(), step, tz)?,
        TimeUnit::Millisecond => floor::<TimestampMillisecondType>(array.as_ref(), step, tz)?,
        TimeUnit::Microsecond => floor::<TimestampMicrosecondType>(array.as_ref(), step, tz)?,
        TimeUnit::Nanosecond => floor::<TimestampNanosecondType>(array.as_ref(), step, tz)?,
    };
    Ok(Some(result))
}

/// Every value rounded down to a multiple of `step` (before 1970 too), nulls kept.
fn floor<T: ArrowTimestampType>(
    array: &dyn Array,
    step: i64,
    tz: &Arc<str>,
) -> Result<Arc<dyn Array>> {
    let values: &PrimitiveArray<T> = array.as_primitive::<T>();
    let floored: PrimitiveArray<T> = values.try_unary(|v| {
        v.checked_sub(v.rem_euclid(step))
            .ok_or_else(|| ArrowError::ComputeError(format!("timestamp {v} out of range")))
    })?;
    Ok(Arc::new(floored.with_timezone(Arc::clone(tz))))
}

#[cfg(test)]
mod tests {
    use arrow::array::TimestampMicrosecondArray;

    use super::*;

    fn args(granularity: &str, tz: &str) -> Vec<ColumnarValue> {
        let times = TimestampMicrosecondArray::from(vec![Some(-1), None, Some(7_200_000_001)])
            .with_timezone(tz);
        vec![
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(granularity.into()))),
            ColumnarValue::Array(Arc::new(times)),
        ]
    }

    #[test]
    fn only_hours_and_days_of_utc_take_the_arithmetic_path() {
        let out = utc_fast_path(&args("Hour", "UTC")).unwrap().unwrap();
        let out = out.as_primitive::<TimestampMicrosecondType>();
        assert_eq!(
            out.data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(
            out.iter().collect::<Vec<_>>(),
            [Some(-3_600_000_000), None, Some(7_200_000_000)]
        );
        assert!(utc_fast_path(&args("day", "+00:00")).unwrap().is_some());
        assert!(utc_fast_path(&args("month", "UTC")).unwrap().is_none());
        assert!(
            utc_fast_path(&args("hour", "Asia/Kathmandu"))
                .unwrap()
                .is_none()
        );
    }
}
