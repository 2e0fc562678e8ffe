use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, AsArray as _, Float64Builder, Int32Builder, MapBuilder, MapFieldNames, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::Float64Type;
use object_store::memory::InMemory;

use super::*;
use crate::tables::UTC;

/// The bounds on statements and on caller-sized functions.
mod limits;
/// Generated SQL text: it answers or fails, and the engine stays up.
mod sql_fuzz;

/// One metrics row: namespace, name, dimensions, time (µs), value or [count, sum, min, max].
type Row<'a> = (
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    i64,
    Result<f64, [f64; 4]>,
);

fn metrics_batch(rows: &[Row<'_>]) -> RecordBatch {
    let mut ns = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut dims = MapBuilder::new(
        Some(MapFieldNames {
            entry: "key_value".into(),
            key: "key".into(),
            value: "value".into(),
        }),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut time = TimestampMicrosecondBuilder::new().with_timezone(UTC);
    let mut value = Float64Builder::new();
    let mut unit = StringBuilder::new();
    let [mut count, mut sum, mut min, mut max] = std::array::from_fn(|_| Float64Builder::new());
    let mut res = Int32Builder::new();
    for (n, m, d, t, v) in rows {
        ns.append_value(n);
        name.append_value(m);
        for (k, val) in *d {
            dims.keys().append_value(k);
            dims.values().append_value(val);
        }
        dims.append(true).unwrap();
        time.append_value(*t);
        unit.append_value("None");
        res.append_value(60);
        match v {
            Ok(x) => {
                value.append_value(*x);
                for b in [&mut count, &mut sum, &mut min, &mut max] {
                    b.append_null();
                }
            }
            Err(s) => {
                value.append_null();
                for (b, x) in [&mut count, &mut sum, &mut min, &mut max]
                    .into_iter()
                    .zip(s)
                {
                    b.append_value(*x);
                }
            }
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ns.finish()),
        Arc::new(name.finish()),
        Arc::new(dims.finish()),
        Arc::new(time.finish()),
        Arc::new(value.finish()),
        Arc::new(unit.finish()),
        Arc::new(count.finish()),
        Arc::new(sum.finish()),
        Arc::new(min.finish()),
        Arc::new(max.finish()),
        Arc::new(res.finish()),
    ];
    RecordBatch::try_new(TableKind::Metrics.schema(), columns).unwrap()
}

const HOUR: i64 = 3_600_000_000;
const T0: i64 = 1_700_000_000_000_000;

async fn storage_with_hours(hours: i64) -> Storage {
    let storage = Storage::in_memory(Arc::new(InMemory::new()));
    for h in 0..hours {
        let rows: Vec<Row<'_>> = (0..10)
            .map(|i| {
                (
                    "App",
                    "Latency",
                    &[("Host", "a")][..],
                    T0 + h * HOUR + i * 60_000_000,
                    Ok(i as f64),
                )
            })
            .collect();
        storage
            .append_batch("t1", TableKind::Metrics, &metrics_batch(&rows))
            .await
            .unwrap();
    }
    storage
}

fn engine(storage: &Storage) -> Engine {
    Engine::for_store(storage, EngineConfig::default())
}

/// An engine with a memory limit and a timeout of its own, two partitions.
fn limited_engine(storage: &Storage, memory_limit: usize, timeout: Duration) -> Engine {
    Engine::for_store(
        storage,
        EngineConfig {
            memory_limit,
            timeout,
            target_partitions: 2,
            total_memory_limit: None,
        },
    )
}

fn f64_at(r: &QueryResult, col: usize, row: usize) -> f64 {
    r.batches[0]
        .column(col)
        .as_primitive::<Float64Type>()
        .value(row)
}

#[tokio::test]
async fn time_ranges_prune_files_from_table_statistics() {
    let storage = storage_with_hours(4).await;
    let e = engine(&storage);
    let all = e
        .collect("t1", "SELECT count(*) FROM metrics")
        .await
        .unwrap();
    assert_eq!(all.stats.files_total, 4);
    assert_eq!(all.stats.files_scanned, 4);
    let one = e
        .collect(
            "t1",
            "SELECT count(*) AS n FROM metrics WHERE time >= to_timestamp_micros(1700003600000000) \
             AND time < to_timestamp_micros(1700007200000000)",
        )
        .await
        .unwrap();
    assert_eq!(one.stats.files_scanned, 1, "{:?}", one.stats);
    assert_eq!(
        one.batches[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0),
        10
    );
    assert!(one.stats.bytes_scanned > 0);
    let two = e
        .collect(
            "t1",
            "SELECT count(*) FROM metrics WHERE time BETWEEN '2023-11-14T23:13:20Z' AND '2023-11-15T00:13:20Z'",
        )
        .await
        .unwrap();
    assert_eq!(two.stats.files_scanned, 2, "{:?}", two.stats);
    let none = e
        .collect("t1", "SELECT count(*) FROM metrics WHERE time > now()")
        .await
        .unwrap();
    assert_eq!(none.stats.files_scanned, 0);
}

#[tokio::test]
async fn statistic_sets_and_raw_points_give_cloudwatch_statistics() {
    let storage = Storage::in_memory(Arc::new(InMemory::new()));
    // The reference's vector 2, 4, 5: two raw points and the third as a statistic set.
    let rows: Vec<Row<'_>> = vec![
        ("App", "M", &[("InstanceId", "i-1")], T0, Ok(2.0)),
        ("App", "M", &[("InstanceId", "i-1")], T0 + 1, Ok(4.0)),
        (
            "App",
            "M",
            &[("InstanceId", "i-1")],
            T0 + 2,
            Err([1.0, 5.0, 5.0, 5.0]),
        ),
        ("App", "M", &[("InstanceId", "i-2")], T0, Ok(100.0)),
    ];
    storage
        .append_batch("t1", TableKind::Metrics, &metrics_batch(&rows))
        .await
        .unwrap();
    let r = engine(&storage)
        .collect(
            "t1",
            "SELECT sum(coalesce(sample_count, 1)) AS samplecount, sum(coalesce(sum, value)) AS sum, \
             sum(coalesce(sum, value)) / sum(coalesce(sample_count, 1)) AS average, \
             min(coalesce(min, value)) AS minimum, max(coalesce(max, value)) AS maximum \
             FROM metrics WHERE dimensions['InstanceId'] = 'i-1'",
        )
        .await
        .unwrap();
    assert_eq!(f64_at(&r, 0, 0), 3.0);
    assert_eq!(f64_at(&r, 1, 0), 11.0);
    assert_eq!(f64_at(&r, 2, 0), 3.6666666666666665);
    assert_eq!(f64_at(&r, 3, 0), 2.0);
    assert_eq!(f64_at(&r, 4, 0), 5.0);
}

#[tokio::test]
async fn date_bin_and_percentiles_work_on_metrics() {
    let storage = storage_with_hours(2).await;
    let r = engine(&storage)
        .collect(
            "t1",
            "SELECT date_bin(interval '1 hour', time, timestamp '2000-01-01T00:00:00Z') AS hour, \
             approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS p50, count(*) AS n \
             FROM metrics GROUP BY 1 ORDER BY 1",
        )
        .await
        .unwrap();
    // Each file holds 10 points a minute apart within one clock hour.
    assert_eq!(r.num_rows(), 2);
    let n = r.batches[0]
        .column(2)
        .as_primitive::<arrow::datatypes::Int64Type>();
    assert_eq!((n.value(0), n.value(1)), (10, 10));
    assert_eq!(f64_at(&r, 1, 0), 4.5);
}

#[tokio::test]
async fn writes_and_foreign_reads_are_refused() {
    let storage = storage_with_hours(1).await;
    let e = engine(&storage);
    for sql in [
        "INSERT INTO metrics SELECT * FROM metrics",
        "DELETE FROM metrics",
        "CREATE TABLE x AS SELECT 1",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "COPY metrics TO '/tmp/out.parquet'",
        "DROP TABLE metrics",
        "SET datafusion.execution.batch_size = 1",
        "EXPLAIN INSERT INTO metrics SELECT * FROM metrics",
        "CREATE VIEW v AS SELECT 1",
    ] {
        match e.collect("t1", sql).await {
            Err(Error::ReadOnly(msg)) => assert!(msg.contains("read-only"), "{sql}: {msg}"),
            other => panic!("{sql}: expected a read-only refusal, got {other:?}"),
        }
    }
    for sql in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'file:///etc/passwd'",
        "SELECT 1; SELECT 2",
        "SELEC 1",
    ] {
        match e.collect("t1", sql).await {
            Err(err) => assert_eq!(
                err.class(),
                crate::error::ErrorClass::BadRequest,
                "{sql}: {err}"
            ),
            Ok(r) => panic!("{sql}: expected an error, got {} rows", r.num_rows()),
        }
    }
}

#[tokio::test]
async fn memory_and_time_limits_stop_queries_cleanly() {
    let storage = storage_with_hours(1).await;
    let small = limited_engine(&storage, 2 << 20, Duration::from_secs(30));
    let err = small
        .collect(
            "t1",
            "SELECT count(*) FROM range(1, 2000000) a JOIN range(1, 2000000) b ON a.value = b.value",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MemoryLimit(_)), "{err}");
    let quick = limited_engine(&storage, 1 << 30, Duration::from_millis(500));
    let started = std::time::Instant::now();
    let err = quick
        .collect(
            "t1",
            "SELECT count(*) FROM range(1, 20000) a CROSS JOIN range(1, 20000) b CROSS JOIN range(1, 1000) c",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // The engine keeps answering.
    let r = quick
        .collect("t1", "SELECT count(*) FROM metrics")
        .await
        .unwrap();
    assert_eq!(r.num_rows(), 1);
}

#[derive(Debug)]
struct WithBuffer {
    inner: StoreSource,
    extra: RecordBatch,
}

#[async_trait::async_trait]
impl SnapshotSource for WithBuffer {
    async fn snapshot(&self, tenant: &str, kind: TableKind) -> Result<TableSnapshot> {
        let mut s = self.inner.snapshot(tenant, kind).await?;
        if kind == TableKind::Metrics {
            s.buffered
                .push(Arc::new(BufferedBatches(vec![self.extra.clone()])));
        }
        Ok(s)
    }
}

/// An engine over `storage` whose metrics table also has `extra` as buffered rows.
fn engine_with_buffered(storage: &Storage, extra: RecordBatch) -> Engine {
    let source = Arc::new(WithBuffer {
        inner: StoreSource::new(storage.clone()),
        extra,
    });
    Engine::new(storage, source, EngineConfig::default())
}

#[tokio::test]
async fn buffered_rows_are_read_with_committed_files() {
    let storage = storage_with_hours(2).await;
    let extra = metrics_batch(&[("App", "Latency", &[("Host", "b")], T0, Ok(7.0))]);
    let e = engine_with_buffered(&storage, extra);
    let r = e
        .collect(
            "t1",
            "SELECT count(*), sum(value) FILTER (WHERE dimensions['Host'] = 'b') FROM metrics",
        )
        .await
        .unwrap();
    assert_eq!(
        r.batches[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0),
        21
    );
    assert_eq!(f64_at(&r, 1, 0), 7.0);
    assert_eq!(r.stats.buffered_rows_scanned, 1);
}

#[tokio::test]
async fn dimensions_are_read_as_dictionaries_and_answered_as_plain_strings() {
    let storage = storage_with_hours(1).await;
    let extra = metrics_batch(&[("App", "Latency", &[("Host", "b"), ("Az", "z")], T0, Ok(7.0))]);
    let e = engine_with_buffered(&storage, extra);
    // Inside the engine, from files and from the buffer alike, the map holds dictionaries.
    let r = e
        .collect(
            "t1",
            "SELECT DISTINCT arrow_typeof(dimensions['Host']) FROM metrics",
        )
        .await
        .unwrap();
    assert_eq!(r.num_rows(), 1);
    assert_eq!(
        r.batches[0].column(0).as_string::<i32>().value(0),
        "Dictionary(Int32, Utf8)"
    );
    // Answers carry plain strings, in every column that held a dictionary.
    let r = e
        .collect(
            "t1",
            "SELECT dimensions, dimensions['Host'] AS host, map_keys(dimensions) AS names \
             FROM metrics ORDER BY host, time LIMIT 2 OFFSET 9",
        )
        .await
        .unwrap();
    let plain_map = crate::tables::string_map_type();
    assert_eq!(r.schema.field(0).data_type(), &plain_map);
    assert_eq!(r.schema.field(1).data_type(), &DataType::Utf8);
    let batch = arrow::compute::concat_batches(&r.schema, &r.batches).unwrap();
    assert_eq!(batch.column(0).data_type(), &plain_map);
    let hosts = batch.column(1).as_string::<i32>();
    assert_eq!((hosts.value(0), hosts.value(1)), ("a", "b"));
    let names = batch.column(2).as_list::<i32>();
    assert_eq!(
        names
            .value(1)
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect::<Vec<_>>(),
        ["Host", "Az"]
    );
    let json = crate::output::json_rows(&r.batches).unwrap();
    let json = String::from_utf8(json).unwrap();
    assert!(json.contains(r#""host":"b""#), "{json}");
}

#[tokio::test]
async fn distinct_on_compares_rows_only_on_the_keys_that_vary_within_a_group() {
    let storage = Storage::in_memory(Arc::new(InMemory::new()));
    let mut rows: Vec<Row<'_>> = Vec::new();
    for i in 0..5 {
        // Times out of order, so a first value taken in arrival order would be wrong.
        let t = T0 + ((i * 3) % 5) * 1_000_000;
        let v = ((i * 3) % 5) as f64;
        rows.push(("App", "Latency", &[("Host", "a")], t, Ok(v)));
        rows.push(("App", "Latency", &[("Host", "b")], t, Ok(10.0 + v)));
        rows.push(("App", "Errors", &[("Host", "a")], t, Ok(20.0 + v)));
    }
    storage
        .append_batch("t1", TableKind::Metrics, &metrics_batch(&rows))
        .await
        .unwrap();
    let e = engine(&storage);
    let sql = "SELECT DISTINCT ON (dimensions['Host'], metric_name) dimensions['Host'] AS host, \
               metric_name, time, value FROM metrics \
               ORDER BY dimensions['Host'], metric_name, time DESC";
    let r = e.collect("t1", sql).await.unwrap();
    let batch = arrow::compute::concat_batches(&r.schema, &r.batches).unwrap();
    let got: Vec<(String, String, f64)> = (0..batch.num_rows())
        .map(|i| {
            (
                batch.column(0).as_string::<i32>().value(i).to_string(),
                batch.column(1).as_string::<i32>().value(i).to_string(),
                batch.column(3).as_primitive::<Float64Type>().value(i),
            )
        })
        .collect();
    let want = [
        ("a", "Errors", 24.0),
        ("a", "Latency", 4.0),
        ("b", "Latency", 14.0),
    ];
    let want: Vec<(String, String, f64)> = want
        .iter()
        .map(|(h, m, v)| (h.to_string(), m.to_string(), *v))
        .collect();
    assert_eq!(got, want);
    // The first-value aggregates are ordered by time alone: host and metric are grouping keys.
    let r = e.collect("t1", &format!("EXPLAIN {sql}")).await.unwrap();
    let plan = arrow::util::pretty::pretty_format_batches(&r.batches)
        .unwrap()
        .to_string();
    assert!(
        plan.contains("first_value(metrics.value) ORDER BY [metrics.time DESC NULLS FIRST] AS"),
        "{plan}"
    );
}

#[tokio::test]
async fn date_trunc_of_utc_hours_and_days_matches_date_bin_before_and_after_1970() {
    // date_bin answers in nanoseconds, hence the `/ 1000`.
    let storage = Storage::in_memory(Arc::new(InMemory::new()));
    let times = [
        -86_400_000_001,
        -3_600_000_000,
        -1,
        0,
        1,
        T0,
        T0 + HOUR - 1,
        T0 + 25 * HOUR + 7,
    ];
    let rows: Vec<Row<'_>> = times
        .iter()
        .map(|t| ("App", "Latency", &[("Host", "a")][..], *t, Ok(1.0)))
        .collect();
    storage
        .append_batch("t1", TableKind::Metrics, &metrics_batch(&rows))
        .await
        .unwrap();
    let r = engine(&storage)
        .collect(
            "t1",
            "SELECT arrow_cast(time, 'Int64'), \
             arrow_cast(date_trunc('hour', time), 'Int64'), \
             arrow_cast(date_bin(INTERVAL '1 hour', time), 'Int64') / 1000, \
             arrow_cast(datetrunc('DAY', time), 'Int64'), \
             arrow_cast(date_bin(INTERVAL '1 day', time), 'Int64') / 1000, \
             arrow_typeof(date_trunc('hour', time)), \
             arrow_cast(date_trunc('month', time), 'Int64') \
             FROM metrics ORDER BY 1",
        )
        .await
        .unwrap();
    let batch = arrow::compute::concat_batches(&r.schema, &r.batches).unwrap();
    assert_eq!(batch.num_rows(), times.len());
    let col = |i: usize| {
        batch
            .column(i)
            .as_primitive::<arrow::datatypes::Int64Type>()
    };
    for row in 0..batch.num_rows() {
        assert_eq!(
            col(1).value(row),
            col(2).value(row),
            "hour of {}",
            col(0).value(row)
        );
        assert_eq!(
            col(3).value(row),
            col(4).value(row),
            "day of {}",
            col(0).value(row)
        );
    }
    // One microsecond before 1970 lies in the last hour and day of 1969.
    let before = times.iter().position(|t| *t == -1).unwrap();
    assert_eq!(col(1).value(before), -3_600_000_000);
    assert_eq!(col(3).value(before), -86_400_000_000);
    assert_eq!(
        batch.column(5).as_string::<i32>().value(0),
        "Timestamp(µs, \"UTC\")"
    );
    // Other granularities still go through DataFusion's own function: 1969-12-01.
    assert_eq!(col(6).value(before), -31 * 86_400_000_000);
}

#[tokio::test]
async fn tenants_see_only_their_own_tables() {
    let storage = storage_with_hours(1).await;
    let e = engine(&storage);
    let r = e
        .collect("t2", "SELECT count(*) FROM metrics")
        .await
        .unwrap();
    assert_eq!(
        r.batches[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0),
        0
    );
    let tables = e
        .collect("t2", "SELECT table_catalog, table_schema, table_name FROM information_schema.tables WHERE table_schema <> 'information_schema'")
        .await
        .unwrap();
    let names: Vec<String> = tables
        .batches
        .iter()
        .flat_map(|b| {
            b.column(2)
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut names = names;
    names.sort();
    let mut expected: Vec<String> = TableKind::ALL
        .iter()
        .map(|k| k.name().to_string())
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    assert!(
        e.collect("t2", "SELECT * FROM watchtrail.t1.metrics")
            .await
            .is_err()
    );
}

#[test]
fn filters_are_evaluated_inside_the_parquet_decoder_by_default() {
    let config = super::session_config().expect("session config");
    let parquet = &config.options().execution.parquet;
    assert!(parquet.pushdown_filters);
    assert!(parquet.reorder_filters);
}

fn logs_batch(lines: &[&str]) -> RecordBatch {
    let mut time = TimestampMicrosecondBuilder::new().with_timezone(UTC);
    let mut ingest = TimestampMicrosecondBuilder::new().with_timezone(UTC);
    let [mut group, mut stream, mut message, mut host, mut file] =
        std::array::from_fn(|_| StringBuilder::new());
    for (i, line) in lines.iter().enumerate() {
        time.append_value(T0 + i as i64 * 1_000_000);
        ingest.append_value(T0);
        group.append_value("web");
        stream.append_value("access");
        message.append_value(line);
        host.append_null();
        file.append_null();
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(ingest.finish()),
        Arc::new(group.finish()),
        Arc::new(stream.finish()),
        Arc::new(message.finish()),
        Arc::new(host.finish()),
        Arc::new(file.finish()),
    ];
    RecordBatch::try_new(TableKind::Logs.schema(), columns).unwrap()
}

#[tokio::test]
async fn filter_patterns_are_sql_functions() {
    let storage = Storage::in_memory(Arc::new(InMemory::new()));
    let lines = [
        r#"{"status": 500, "path": "/a", "latency": 12.5}"#,
        r#"{"status": 200, "path": "/b", "latency": 3}"#,
        r#"{"status": 503, "path": "/a", "latency": 40}"#,
        "[ERROR 400] BAD REQUEST",
    ];
    storage
        .append_batch("t1", TableKind::Logs, &logs_batch(&lines))
        .await
        .unwrap();
    let e = engine(&storage);
    let r = e
        .collect(
            "t1",
            "SELECT count(*) AS n, sum(CAST(filter_pattern_value('{ $.status >= 500 }', message, '$.latency') AS DOUBLE)) AS total \
             FROM logs WHERE filter_pattern_match('{ $.status >= 500 }', message)",
        )
        .await
        .unwrap();
    assert_eq!(
        r.batches[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0),
        2
    );
    assert_eq!(f64_at(&r, 1, 0), 52.5);
    let r = e
        .collect(
            "t1",
            "SELECT count(*) FROM logs WHERE filter_pattern_match('ERROR -DEBUG', message)",
        )
        .await
        .unwrap();
    assert_eq!(
        r.batches[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0),
        1
    );
    let err = e
        .collect(
            "t1",
            "SELECT count(*) FROM logs WHERE filter_pattern_match('{ $.a = ', message)",
        )
        .await
        .expect_err("bad pattern");
    assert!(err.to_string().contains("at position"), "{err}");
}

/// The parser in the tree binds `IS DISTINCT FROM` looser than AND; the engine re-associates it
/// (`engine/precedence.rs`), so these answer as every SQL engine does.
#[tokio::test]
async fn is_distinct_from_binds_tighter_than_and() {
    let storage = Storage::in_memory(Arc::new(InMemory::new()));
    storage
        .append_batch("t1", TableKind::Logs, &logs_batch(&["a", "b", "a", "c"]))
        .await
        .unwrap();
    let e = engine(&storage);
    let count = |r: &QueryResult| {
        r.batches[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0)
    };
    // Misparsed, the right side `true AND message = 'c'` made this 3.
    let r = e
        .collect(
            "t1",
            "SELECT count(*) FROM logs WHERE message = 'a' IS DISTINCT FROM true AND message = 'c'",
        )
        .await
        .unwrap();
    assert_eq!(count(&r), 1);
    // Misparsed, this compared a string with a boolean and failed.
    let r = e
        .collect(
            "t1",
            "SELECT count(*) FROM logs WHERE log_group IS NOT DISTINCT FROM 'web' AND message = 'a'",
        )
        .await
        .unwrap();
    assert_eq!(count(&r), 2);
    // Parenthesised, the right side stays whole.
    let r = e
        .collect(
            "t1",
            "SELECT count(*) FROM logs WHERE message = 'a' IS DISTINCT FROM (true AND message = 'c')",
        )
        .await
        .unwrap();
    assert_eq!(count(&r), 3);
}

/// DataFusion's common-subexpression pass gives a repeated `IS NOT FALSE` of a nullable column a
/// nullability its physical plan does not share, and its aggregate schema check then fails the
/// query with an internal error (found by the differential test, seed 1796312981875945084).
#[tokio::test]
async fn a_repeated_is_not_false_inside_an_aggregate_answers() {
    let storage = Storage::in_memory(Arc::new(InMemory::new()));
    let r = engine(&storage)
        .collect(
            "t1",
            "SELECT sum(CASE WHEN NOT b IS NOT FALSE AND t IS DISTINCT FROM 1 OR b IS NOT FALSE \
             THEN 1 ELSE 0 END), count(*) FROM (VALUES (true, 1), (NULL, 2), (false, 3)) AS v(b, t)",
        )
        .await
        .unwrap();
    let n = r.batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0);
    // (true, 1) and (NULL, 2) are not false; (false, 3) is false and distinct from 1.
    assert_eq!(n, 3);
}
