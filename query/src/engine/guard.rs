//! Functions whose cost the caller chooses, bounded before they run.
//!
//! `repeat('x', 100000000000)` asks for 100 GB in one allocation; a failed allocation aborts
//! the process, so no error handler ever sees it. Every scalar function that builds a value
//! whose size comes from an argument (a count, a length, a range) rather than from its input
//! data is replaced, under the same name and aliases, by a `Guarded` wrapper that computes an
//! upper bound of the bytes the call would build for the whole batch and refuses the call
//! (`ResourcesExhausted`, like any other memory limit) when the bound is over the query's
//! memory limit. Functions whose output grows faster than their input (`replace`,
//! `regexp_replace`, `concat`) are bounded the same way.
//!
//! `levenshtein` costs the product of its inputs' lengths in CPU. It is refused per row past
//! [`MAX_LEVENSHTEIN_CELLS`] and runs in slices of rows, checking between slices whether the
//! query was cancelled (timed out, or its caller went away), so that a query past its deadline
//! stops within one slice instead of running its batch to the end.
//!
//! Each query gets its own [`QueryBudget`]: the limit, the cancellation flag, and whatever the
//! caller asked to hold while the query's work runs (its concurrency slot). The wrappers hold
//! the budget, and so does every plan and stream built from them, so the slot is given back only
//! when the last piece of the query's work has stopped.

use std::any::Any;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, Int64Array};
use arrow::compute::kernels::length::length;
use arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::FunctionRegistry as _;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl};
use datafusion::prelude::SessionContext;

/// Largest `length(a) * length(b)` of one `levenshtein` row (a 10,000-character string against
/// another, about a tenth of a second).
pub const MAX_LEVENSHTEIN_CELLS: u64 = 100_000_000;
/// Work of one slice of `levenshtein` rows between two checks for cancellation.
const LEVENSHTEIN_SLICE_CELLS: u64 = 4_000_000;

/// What one query may spend, and whether it should stop.
#[derive(Default)]
pub struct QueryBudget {
    max_bytes: usize,
    cancelled: AtomicBool,
    /// Dropped with the last reference to the budget: after every plan, stream and function of
    /// the query is gone.
    held: Mutex<Option<Box<dyn Any + Send>>>,
}

impl std::fmt::Debug for QueryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryBudget")
            .field("max_bytes", &self.max_bytes)
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl QueryBudget {
    /// A budget of `max_bytes` per function call, holding `held` until the query's work stops.
    pub fn new(max_bytes: usize, held: Option<Box<dyn Any + Send>>) -> Self {
        Self {
            max_bytes,
            cancelled: AtomicBool::new(false),
            held: Mutex::new(held),
        }
    }

    /// Tells every guarded function of the query to stop at its next check.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether [`QueryBudget::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    fn check_cancelled(&self, name: &str) -> Result<()> {
        if self.is_cancelled() {
            return Err(DataFusionError::Execution(format!(
                "`{name}` stopped: the query was cancelled or ran past its time limit"
            )));
        }
        Ok(())
    }
}

impl Drop for QueryBudget {
    fn drop(&mut self) {
        // Explicit, so the order is plain: the slot goes back last.
        if let Ok(mut h) = self.held.lock() {
            h.take();
        }
    }
}

/// How a guarded function's cost is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Cost {
    /// `repeat(text, n)`: `len(text) * n`.
    Repeat,
    /// `lpad` / `rpad(text, n [, fill])`: `n` characters of up to 4 bytes.
    Pad,
    /// `array_repeat(element, n)`: `n` elements.
    ArrayRepeat,
    /// `array_resize(list, n [, fill])`: `n` elements.
    ArrayResize,
    /// `range` / `generate_series`: the number of steps.
    Range,
    /// `replace(text, from, to)`: as many `to` as `from` fits in `text`.
    Replace,
    /// `regexp_replace(text, pattern, replacement [, flags])`: a replacement (and its
    /// references to the match) at every position.
    RegexpReplace,
    /// `concat` / `concat_ws`: the sum of the arguments.
    Concat,
    /// `levenshtein(a, b)`: CPU, `len(a) * len(b)`.
    Levenshtein,
}

/// The guarded functions, by DataFusion name.
const GUARDED: &[(&str, Cost)] = &[
    ("repeat", Cost::Repeat),
    ("lpad", Cost::Pad),
    ("rpad", Cost::Pad),
    ("array_repeat", Cost::ArrayRepeat),
    ("array_resize", Cost::ArrayResize),
    ("range", Cost::Range),
    ("generate_series", Cost::Range),
    ("replace", Cost::Replace),
    ("regexp_replace", Cost::RegexpReplace),
    ("concat", Cost::Concat),
    ("concat_ws", Cost::Concat),
    ("levenshtein", Cost::Levenshtein),
];

/// Replaces each guarded function registered in `ctx` by its [`Guarded`] wrapper over
/// `budget`.
///
/// # Errors
/// A guarded function missing from the session (a DataFusion upgrade renamed it): refusing to
/// start beats running unguarded.
pub(crate) fn register(ctx: &SessionContext, budget: &Arc<QueryBudget>) -> Result<()> {
    let state = ctx.state();
    for (name, cost) in GUARDED {
        let inner = state.udf(name).map_err(|e| {
            DataFusionError::Internal(format!("guarded function `{name}` is missing: {e}"))
        })?;
        ctx.register_udf(ScalarUDF::new_from_impl(Guarded {
            inner,
            cost: *cost,
            budget: Arc::clone(budget),
        }));
    }
    Ok(())
}

/// A function whose call is bounded before it runs (see the module docs).
#[derive(Debug)]
pub(crate) struct Guarded {
    inner: Arc<ScalarUDF>,
    cost: Cost,
    budget: Arc<QueryBudget>,
}

impl PartialEq for Guarded {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && self.cost == other.cost
    }
}

impl Eq for Guarded {}

impl Hash for Guarded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.cost.hash(state);
    }
}

impl ScalarUDFImpl for Guarded {
    delegate_scalar_udf_to_inner!();

    // `simplify` is left at its default on purpose: DataFusion's rewrites of these functions
    // build calls of the unguarded originals.

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.inner.name();
        self.budget.check_cancelled(name)?;
        if self.cost == Cost::Levenshtein {
            return self.levenshtein_in_slices(args);
        }
        let bytes = bound_bytes(self.cost, &args.args, args.number_rows);
        if bytes > self.budget.max_bytes as u128 {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "`{name}` would build up to {bytes} bytes for one batch, more than this \
                 query's memory limit of {} bytes; use smaller counts or lengths",
                self.budget.max_bytes
            )));
        }
        self.inner.invoke_with_args(args)
    }
}

impl Guarded {
    /// Runs `levenshtein` over slices of about [`LEVENSHTEIN_SLICE_CELLS`] of work, checking for
    /// cancellation between them.
    fn levenshtein_in_slices(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.inner.name();
        let rows = args.number_rows;
        let (Some(a), Some(b)) = (
            args.args.first().and_then(byte_lengths),
            args.args.get(1).and_then(byte_lengths),
        ) else {
            return self.inner.invoke_with_args(args);
        };
        let cells = |i: usize| {
            (a.get(i).unwrap_or(0).max(0) as u64) * (b.get(i).unwrap_or(0).max(0) as u64)
        };
        for i in 0..rows {
            let c = cells(i);
            if c > MAX_LEVENSHTEIN_CELLS {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "`{name}` of row {i} would compare {c} pairs of characters, more than the \
                     limit of {MAX_LEVENSHTEIN_CELLS}; compare shorter strings"
                )));
            }
        }
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let total: u64 = (0..rows).map(cells).sum();
        if all_scalar || total <= LEVENSHTEIN_SLICE_CELLS {
            return self.inner.invoke_with_args(args);
        }
        // A batch of this much work never returns to the runtime until it is done (or
        // cancelled), so the worker thread hands its other tasks (other tenants' queries) to a
        // new one first, where the runtime allows it.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            tokio::task::block_in_place(|| self.levenshtein_slices(&args, rows, &cells))
        } else {
            self.levenshtein_slices(&args, rows, &cells)
        }
    }

    fn levenshtein_slices(
        &self,
        args: &ScalarFunctionArgs,
        rows: usize,
        cells: &dyn Fn(usize) -> u64,
    ) -> Result<ColumnarValue> {
        let name = self.inner.name();
        let mut parts: Vec<ArrayRef> = Vec::new();
        let mut start = 0;
        while start < rows {
            self.budget.check_cancelled(name)?;
            let mut end = start;
            let mut work = 0;
            while end < rows && (end == start || work + cells(end) <= LEVENSHTEIN_SLICE_CELLS) {
                work += cells(end);
                end += 1;
            }
            let slice_args = args
                .args
                .iter()
                .map(|v| match v {
                    ColumnarValue::Array(a) => ColumnarValue::Array(a.slice(start, end - start)),
                    s => s.clone(),
                })
                .collect();
            let part = self.inner.invoke_with_args(ScalarFunctionArgs {
                args: slice_args,
                arg_fields: args.arg_fields.clone(),
                number_rows: end - start,
                return_field: Arc::clone(&args.return_field),
                config_options: Arc::clone(&args.config_options),
            })?;
            parts.push(part.into_array(end - start)?);
            start = end;
        }
        let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
        Ok(ColumnarValue::Array(arrow::compute::concat(&refs)?))
    }
}

/// An argument's values as 64-bit integers, one per row (a scalar stands for every row).
enum Ints {
    Scalar(Option<i64>),
    Array(Int64Array),
}

impl Ints {
    fn get(&self, i: usize) -> Option<i64> {
        match self {
            Ints::Scalar(v) => *v,
            Ints::Array(a) => (i < a.len() && a.is_valid(i)).then(|| a.value(i)),
        }
    }
}

/// `v` as integers, if it is a number (or castable to one).
fn ints(v: &ColumnarValue) -> Option<Ints> {
    match v {
        ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Int64).ok()? {
            ScalarValue::Int64(x) => Some(Ints::Scalar(x)),
            _ => None,
        },
        ColumnarValue::Array(a) => {
            let c = arrow::compute::cast(a, &DataType::Int64).ok()?;
            Some(Ints::Array(
                c.as_any().downcast_ref::<Int64Array>()?.clone(),
            ))
        }
    }
}

/// The byte length of each value of a string or binary argument.
fn byte_lengths(v: &ColumnarValue) -> Option<Ints> {
    let array = match v {
        ColumnarValue::Scalar(s) => s.to_array_of_size(1).ok()?,
        ColumnarValue::Array(a) => Arc::clone(a),
    };
    let lens = ints(&ColumnarValue::Array(length(&array).ok()?))?;
    Some(match (v, lens) {
        (ColumnarValue::Scalar(_), l) => Ints::Scalar(l.get(0)),
        (_, l) => l,
    })
}

/// Bytes one element of `v` at row `i` takes, at least 1.
fn element_bytes(v: &ColumnarValue, i: usize) -> u128 {
    let bytes = match v {
        ColumnarValue::Scalar(s) => s.size(),
        ColumnarValue::Array(a) => match a.data_type().primitive_width() {
            Some(w) => w,
            None if i < a.len() => a.slice(i, 1).to_data().get_slice_memory_size().unwrap_or(0),
            None => 0,
        },
    };
    bytes.max(1) as u128
}

fn nonneg(v: Option<i64>) -> u128 {
    v.unwrap_or(0).max(0) as u128
}

/// An upper bound of the bytes one call of a `cost` function builds over `rows` rows.
fn bound_bytes(cost: Cost, args: &[ColumnarValue], rows: usize) -> u128 {
    let rows = rows.max(1);
    let arg = |k: usize| args.get(k);
    let lens = |k: usize| arg(k).and_then(byte_lengths);
    let counts = |k: usize| arg(k).and_then(ints);
    let sum = |f: &dyn Fn(usize) -> u128| (0..rows).fold(0u128, |acc, i| acc.saturating_add(f(i)));
    match cost {
        Cost::Repeat => match (lens(0), counts(1)) {
            (Some(l), Some(n)) => sum(&|i| nonneg(l.get(i)).saturating_mul(nonneg(n.get(i)))),
            _ => 0,
        },
        Cost::Pad => match counts(1) {
            Some(n) => sum(&|i| nonneg(n.get(i)).saturating_mul(4)),
            None => 0,
        },
        Cost::ArrayRepeat => match (arg(0), counts(1)) {
            (Some(e), Some(n)) => sum(&|i| nonneg(n.get(i)).saturating_mul(element_bytes(e, i))),
            _ => 0,
        },
        Cost::ArrayResize => match counts(1) {
            Some(n) => {
                let fill = arg(2);
                sum(&|i| {
                    let each = fill.map_or(16, |f| element_bytes(f, i).max(16));
                    nonneg(n.get(i)).saturating_mul(each)
                })
            }
            None => 0,
        },
        Cost::Range => range_bound(args, rows),
        Cost::Replace => match (lens(0), lens(1), lens(2)) {
            (Some(s), Some(from), Some(to)) => sum(&|i| {
                let (s, from, to) = (nonneg(s.get(i)), nonneg(from.get(i)), nonneg(to.get(i)));
                if from > 0 && to <= from {
                    s
                } else {
                    // An empty `from` matches between every two bytes.
                    (s / from.max(1) + 1).saturating_mul(to).saturating_add(s)
                }
            }),
            _ => 0,
        },
        Cost::RegexpReplace => match (lens(0), lens(2)) {
            (Some(s), Some(r)) => sum(&|i| {
                let (s, r) = (nonneg(s.get(i)), nonneg(r.get(i)));
                // At most s+1 matches, each replaced by r bytes of text or of references to
                // a match, which together cover the text at most once per reference.
                (s + 1)
                    .saturating_mul(r)
                    .saturating_add(s.saturating_mul(r.max(1)))
            }),
            _ => 0,
        },
        Cost::Concat => {
            let all: Vec<Ints> = args.iter().filter_map(byte_lengths).collect();
            sum(&|i| all.iter().map(|l| nonneg(l.get(i))).sum::<u128>())
        }
        Cost::Levenshtein => 0,
    }
}

/// An upper bound of the bytes `range` / `generate_series` build: eight per step.
fn range_bound(args: &[ColumnarValue], rows: usize) -> u128 {
    let steps_of = |start: i128, stop: i128, step: i128| -> u128 {
        if step == 0 {
            return 0;
        }
        let span = stop - start;
        if span.signum() != 0 && span.signum() != step.signum() {
            return 0;
        }
        (span / step).unsigned_abs() + 1
    };
    let per_row: Box<dyn Fn(usize) -> u128> = match args {
        [stop] => match ints(stop) {
            Some(stop) => Box::new(move |i| steps_of(0, i128::from(stop.get(i).unwrap_or(0)), 1)),
            None => return 0,
        },
        [start, stop] | [start, stop, _] if is_integer(start) => {
            let step = args.get(2).and_then(ints);
            match (ints(start), ints(stop)) {
                (Some(a), Some(b)) => Box::new(move |i| {
                    let step = step.as_ref().map_or(Some(1), |s| s.get(i)).unwrap_or(1);
                    steps_of(
                        i128::from(a.get(i).unwrap_or(0)),
                        i128::from(b.get(i).unwrap_or(0)),
                        i128::from(step),
                    )
                }),
                _ => return 0,
            }
        }
        [start, stop, step] => {
            // Dates and timestamps stepped by an interval: spans in nanoseconds, and the
            // shortest length the step can have (a month as 28 days).
            let (Some(a), Some(b), Some(s)) = (nanos(start), nanos(stop), step_nanos(step)) else {
                return 0;
            };
            Box::new(move |i| {
                steps_of(
                    i128::from(a.get(i).unwrap_or(0)),
                    i128::from(b.get(i).unwrap_or(0)),
                    s,
                )
            })
        }
        _ => return 0,
    };
    (0..rows).fold(0u128, |acc, i| {
        acc.saturating_add(per_row(i).saturating_mul(8))
    })
}

fn is_integer(v: &ColumnarValue) -> bool {
    v.data_type().is_integer()
}

/// A date or timestamp argument as nanoseconds since the epoch.
fn nanos(v: &ColumnarValue) -> Option<Ints> {
    let ns = DataType::Timestamp(TimeUnit::Nanosecond, None);
    let cast = match v {
        ColumnarValue::Scalar(s) => ColumnarValue::Scalar(s.cast_to(&ns).ok()?),
        ColumnarValue::Array(a) => ColumnarValue::Array(arrow::compute::cast(a, &ns).ok()?),
    };
    ints(&cast)
}

/// The shortest a constant interval step can be, in nanoseconds.
fn step_nanos(v: &ColumnarValue) -> Option<i128> {
    const DAY: i128 = 86_400_000_000_000;
    let ColumnarValue::Scalar(s) = v else {
        return None;
    };
    let s = s
        .cast_to(&DataType::Interval(IntervalUnit::MonthDayNano))
        .ok()?;
    match s {
        ScalarValue::IntervalMonthDayNano(Some(i)) => Some(
            i128::from(i.months) * 28 * DAY + i128::from(i.days) * DAY + i128::from(i.nanoseconds),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_str(s: &str) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(s.into())))
    }

    fn scalar_int(n: i64) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Int64(Some(n)))
    }

    #[test]
    fn bounds_grow_with_the_counts_the_caller_chose() {
        assert_eq!(
            bound_bytes(Cost::Repeat, &[scalar_str("xy"), scalar_int(1_000)], 1),
            2_000
        );
        assert_eq!(
            bound_bytes(
                Cost::Repeat,
                &[scalar_str("x"), scalar_int(100_000_000_000)],
                1
            ),
            100_000_000_000
        );
        // Over a batch, every row counts.
        let counts = ColumnarValue::Array(Arc::new(Int64Array::from(vec![10, 20, -5])));
        assert_eq!(
            bound_bytes(Cost::Repeat, &[scalar_str("ab"), counts], 3),
            60
        );
        assert_eq!(
            bound_bytes(Cost::Pad, &[scalar_str("x"), scalar_int(1 << 40)], 1),
            4 << 40
        );
        assert_eq!(
            bound_bytes(
                Cost::Range,
                &[scalar_int(0), scalar_int(999), scalar_int(1)],
                1
            ),
            8_000
        );
        assert_eq!(
            bound_bytes(
                Cost::Range,
                &[scalar_int(10), scalar_int(0), scalar_int(1)],
                1
            ),
            0
        );
        assert!(
            bound_bytes(
                Cost::Replace,
                &[
                    scalar_str(&"a".repeat(1000)),
                    scalar_str(""),
                    scalar_str(&"b".repeat(1000))
                ],
                1
            ) > 1_000_000
        );
        let step = ColumnarValue::Scalar(ScalarValue::new_interval_mdn(0, 0, 1));
        let t0 = ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(Some(0), None));
        let t1 = ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(Some(1_000_000_000), None));
        assert_eq!(
            bound_bytes(Cost::Range, &[t0, t1, step], 1),
            8 * 1_000_000_001
        );
    }
}
