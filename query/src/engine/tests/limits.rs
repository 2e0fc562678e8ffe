use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::engine::shape::{MAX_EXPR_DEPTH, MAX_SET_OPERATION_DEPTH, QUERY_THREAD_STACK_BYTES};

/// A runtime built like the server's query runtime.
fn query_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(QUERY_THREAD_STACK_BYTES)
        .enable_all()
        .build()
        .unwrap()
}

fn chain(term: &str, op: &str, n: usize) -> String {
    vec![term; n].join(op)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_at_every_bound_plan_and_run_on_a_query_thread() {
    let storage = storage_with_hours(1).await;
    let rt = query_runtime();
    let engine = engine(&storage).with_runtime(rt.handle().clone());
    let sum = format!("SELECT {} AS n", chain("1", "+", MAX_EXPR_DEPTH));
    let r = engine.collect("t1", &sum).await.unwrap();
    let n = r.batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0);
    assert_eq!(n, MAX_EXPR_DEPTH as i64);

    let ors = format!(
        "SELECT count(*) FROM metrics WHERE {}",
        (0..MAX_EXPR_DEPTH / 2)
            .map(|i| format!("value = {i}"))
            .collect::<Vec<_>>()
            .join(" OR ")
    );
    let r = engine.collect("t1", &ors).await.unwrap();
    let n = r.batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0);
    assert_eq!(n, 10, "values 0..9 of the one hour of data");

    let concat = format!(
        "SELECT length({}) AS n",
        chain("'ab'", " || ", MAX_EXPR_DEPTH - 1)
    );
    let r = engine.collect("t1", &concat).await.unwrap();
    let n = r.batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int32Type>()
        .value(0);
    assert_eq!(n, 2 * (MAX_EXPR_DEPTH as i32 - 1));

    let unions = format!(
        "SELECT count(*) FROM ({})",
        chain(
            "SELECT 1 AS one",
            " UNION ALL ",
            MAX_SET_OPERATION_DEPTH + 1
        )
    );
    let r = engine.collect("t1", &unions).await.unwrap();
    let n = r.batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0);
    assert_eq!(n, MAX_SET_OPERATION_DEPTH as i64 + 1);

    // One level past the bound is refused before planning, as the caller's mistake.
    let deep = format!("SELECT {}", chain("1", "+", 2_000));
    let e = engine.collect("t1", &deep).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadRequest, "{e}");
    assert!(e.to_string().contains("levels deep"), "{e}");
    drop(engine);
    rt.shutdown_background();
}

use crate::error::ErrorClass;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_that_build_caller_sized_values_fail_inside_the_memory_limit() {
    let storage = storage_with_hours(1).await;
    let engine = limited_engine(&storage, 64 << 20, Duration::from_secs(60));
    for sql in [
        "SELECT length(repeat(arrow_cast('x', 'LargeUtf8'), 100000000000))",
        "SELECT length(repeat(arrow_cast('x', 'Utf8View'), 100000000000))",
        "SELECT length(repeat(metric_name, 100000000)) FROM metrics",
        "SELECT length(lpad('x', 100000000000))",
        "SELECT length(rpad(arrow_cast('x', 'LargeUtf8'), 100000000000, 'yz'))",
        "SELECT cardinality(array_repeat(1, 10000000000))",
        "SELECT cardinality(array_repeat(array_repeat(1, 100000), 100000))",
        "SELECT cardinality(range(1, 100000000000))",
        "SELECT cardinality(generate_series(1, 100000000000, 1))",
        "SELECT cardinality(range(TIMESTAMP '2000-01-01', TIMESTAMP '2030-01-01', INTERVAL '1 second'))",
        "SELECT cardinality(array_resize([1], 10000000000))",
        "SELECT length(replace(repeat('a', 100000), 'a', repeat('b', 100000)))",
        "SELECT length(replace(repeat('a', 100000), '', repeat('b', 100000)))",
        "SELECT length(regexp_replace(repeat('a', 100000), 'a', repeat('b', 100000), 'g'))",
        "SELECT length(concat(repeat(arrow_cast('a', 'LargeUtf8'), 30000000), repeat(arrow_cast('a', 'LargeUtf8'), 30000000), repeat(arrow_cast('a', 'LargeUtf8'), 30000000)))",
    ] {
        let e = engine.collect("t1", sql).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::ResourceExhausted, "{sql}: {e}");
        assert!(e.to_string().contains("memory limit"), "{sql}: {e}");
    }
    // What fits still answers, with DataFusion's results.
    let r = engine
        .collect(
            "t1",
            "SELECT repeat('ab', 3), lpad('x', 3, '-'), rpad('x', 3), cardinality(range(1, 11)), \
             replace('abc', 'b', 'xyz'), concat('a', 'b'), levenshtein('kitten', 'sitting')",
        )
        .await
        .unwrap();
    let row = crate::output::json_rows(&r.batches).unwrap();
    let row = String::from_utf8(row).unwrap();
    for want in ["ababab", "--x", "x  ", "axyzc", "\"ab\"", ":10", ":3"] {
        assert!(row.contains(want), "{want} in {row}");
    }
}

/// Tells when it is dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_query_stops_its_work_and_only_then_gives_back_what_it_held() {
    let storage = storage_with_hours(1).await;
    let rt = query_runtime();
    let engine = limited_engine(&storage, 1 << 30, Duration::from_millis(500))
        .with_runtime(rt.handle().clone());
    let released = Arc::new(AtomicBool::new(false));
    // 5,000 x 5,000 characters a row: minutes for one batch of rows if nothing checks.
    let sql = "SELECT sum(levenshtein(concat(repeat('a', 5000), CAST(value AS VARCHAR)), repeat('b', 5000))) \
               FROM range(1, 100000)";
    let started = Instant::now();
    let e = engine
        .query_holding("t1", sql, Some(Box::new(DropFlag(Arc::clone(&released)))))
        .await;
    let e = match e {
        Ok(s) => s.collect().await.unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(e, Error::Timeout(_)), "{e}");
    // The work stops within a slice of rows, and what the query held goes back only then.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !released.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the query's work still runs {:?} after it started",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One row over the per-row bound is refused outright.
    let e = engine
        .collect(
            "t1",
            "SELECT levenshtein(repeat('a', 20000), repeat('b', 20000))",
        )
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::ResourceExhausted, "{e}");
    drop(engine);
    rt.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_heavy_query_does_not_hold_the_only_query_thread_from_others() {
    let storage = storage_with_hours(1).await;
    // One query thread, as a server with --query-threads 1 has.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_stack_size(QUERY_THREAD_STACK_BYTES)
        .enable_all()
        .build()
        .unwrap();
    let engine = limited_engine(&storage, 1 << 30, Duration::from_secs(60))
        .with_runtime(rt.handle().clone());
    let heavy = engine
        .query(
            "t1",
            "SELECT sum(levenshtein(concat(repeat('a', 5000), CAST(value AS VARCHAR)), repeat('b', 5000))) \
             FROM range(1, 100000)",
        )
        .await
        .unwrap();
    let heavy = tokio::spawn(heavy.collect());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Meanwhile another query is answered at once, not after the heavy one's minutes.
    let started = Instant::now();
    let r = engine.collect("t1", "SELECT 1 AS one").await.unwrap();
    assert_eq!(r.num_rows(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited {:?} for the query thread",
        started.elapsed()
    );
    heavy.abort();
    drop(engine);
    rt.shutdown_background();
}
