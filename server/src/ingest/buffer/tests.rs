use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, TimestampMicrosecondType};
use watchtrail_proto::v1::{
    AuditRecord, Dimension, LogEvent, PutAuditEventsRequest, PutMetricDataRequest, StatisticPoint,
    StatisticSet,
};

use super::*;

fn series(ns: &str, host: &str, ts: &[i64]) -> MetricSeries {
    MetricSeries {
        namespace: ns.into(),
        metric_name: "cpu".into(),
        dimensions: vec![
            Dimension {
                name: "z".into(),
                value: "1".into(),
            },
            Dimension {
                name: "host".into(),
                value: host.into(),
            },
        ],
        unit: "Percent".into(),
        storage_resolution: 60,
        timestamps_ms: ts.to_vec(),
        values: ts.iter().map(|t| *t as f64).collect(),
        statistic_points: vec![],
    }
}

fn metrics_record(seq: u64, series: Vec<MetricSeries>) -> WalRecord {
    WalRecord {
        seq,
        tenant: "t".into(),
        kind: u32::from(TableKind::Metrics.tag()),
        metrics: Some(PutMetricDataRequest {
            idempotency_id: format!("m{seq}"),
            metric_data: vec![],
            series,
        }),
        ..Default::default()
    }
}

#[test]
fn metric_rows_come_out_sorted_by_series_then_time() {
    let mut b = Buffers::default();
    b.apply(
        metrics_record(
            1,
            vec![series("B", "h2", &[30, 10]), series("A", "h1", &[20])],
        ),
        None,
        Parts::ALL,
    );
    let mut stats = series("A", "h1", &[]);
    stats.statistic_points.push(StatisticPoint {
        timestamp_ms: 5,
        statistic_values: Some(StatisticSet {
            sample_count: 3.0,
            sum: 11.0,
            minimum: 2.0,
            maximum: 5.0,
        }),
    });
    b.apply(
        metrics_record(2, vec![series("B", "h2", &[20]), stats]),
        None,
        Parts::ALL,
    );
    let key = TableKey {
        tenant: "t".into(),
        kind: TableKind::Metrics,
    };
    assert_eq!(b.tables[&key].pending.rows, 5);
    let ChunkData::Metrics(m) = &b.tables[&key].pending.data else {
        panic!("metrics chunk")
    };
    let batches: Vec<RecordBatch> = m
        .sorted_batches()
        .collect::<Result<_, _>>()
        .expect("batches");
    let batch = &batches[0];
    let ns = batch
        .column_by_name("namespace")
        .expect("ns")
        .as_string::<i32>();
    let time = batch
        .column_by_name("time")
        .expect("time")
        .as_primitive::<TimestampMicrosecondType>();
    let got: Vec<(String, i64)> = (0..batch.num_rows())
        .map(|i| (ns.value(i).to_string(), time.value(i) / 1000))
        .collect();
    assert_eq!(
        got,
        vec![
            ("A".into(), 5),
            ("A".into(), 20),
            ("B".into(), 10),
            ("B".into(), 20),
            ("B".into(), 30)
        ]
    );
    // Dimensions are stored sorted by name; a statistic set has a null value and its four stats.
    let dims = batch.column_by_name("dimensions").expect("dims").as_map();
    let first = dims.value(0);
    let keys = first.column(0).as_string::<i32>();
    assert_eq!((keys.value(0), keys.value(1)), ("host", "z"));
    assert!(batch.column_by_name("value").expect("value").is_null(0));
    assert_eq!(
        batch
            .column_by_name("sum")
            .expect("sum")
            .as_primitive::<Float64Type>()
            .value(0),
        11.0
    );
    assert!(batch.column_by_name("sum").expect("sum").is_null(1));
}

#[test]
fn min_uncommitted_seq_tracks_pending_and_flushing_chunks() {
    let mut b = Buffers::default();
    assert_eq!(b.min_uncommitted_seq(), 1);
    b.apply(
        metrics_record(1, vec![series("A", "h", &[1])]),
        None,
        Parts::ALL,
    );
    b.apply(
        metrics_record(2, vec![series("A", "h", &[2])]),
        None,
        Parts::ALL,
    );
    assert_eq!(b.min_uncommitted_seq(), 1);
    let key = TableKey {
        tenant: "t".into(),
        kind: TableKind::Metrics,
    };
    let frozen = b.freeze(&key).expect("frozen");
    assert_eq!(
        (frozen.first_seq, frozen.last_seq, frozen.rows),
        (Some(1), 2, 2)
    );
    assert!(b.freeze(&key).is_none(), "one flush at a time");
    b.apply(
        metrics_record(3, vec![series("A", "h", &[3])]),
        None,
        Parts::ALL,
    );
    assert_eq!(
        b.min_uncommitted_seq(),
        1,
        "the flushing chunk still holds seq 1"
    );
    b.committed(&key, None);
    assert_eq!(b.min_uncommitted_seq(), 3);
    let frozen = b.freeze(&key).expect("frozen");
    assert_eq!(frozen.first_seq, Some(3));
    b.committed(&key, None);
    assert_eq!(b.min_uncommitted_seq(), 4);
}

fn buffered_rows(s: &TableSnapshot) -> usize {
    s.buffered
        .iter()
        .flat_map(|r| r.batches(TimeRange::ALL).expect("batches"))
        .map(|b| b.num_rows())
        .sum()
}

#[test]
fn query_snapshots_read_each_row_once_across_a_commit() {
    let mut b = Buffers::default();
    let key = TableKey {
        tenant: "t".into(),
        kind: TableKind::Metrics,
    };
    b.apply(
        metrics_record(1, vec![series("A", "h", &[1])]),
        None,
        Parts::ALL,
    );
    b.apply(
        metrics_record(2, vec![series("A", "h", &[2])]),
        None,
        Parts::ALL,
    );
    b.freeze(&key).expect("frozen");
    b.apply(
        metrics_record(3, vec![series("A", "h", &[3])]),
        None,
        Parts::ALL,
    );
    let s = b.query_snapshot(&key, None);
    assert_eq!((s.files.files.len(), buffered_rows(&s)), (0, 3));

    // A query that loads the table after the commit landed, before the flusher let go of
    // its chunk, must not read the chunk again.
    let after = Arc::new(TableFiles {
        version: Some(1),
        files: vec![],
        committed_seq: Some(2),
    });
    let s = b.query_snapshot(&key, Some(Arc::clone(&after)));
    assert_eq!(s.files.version, Some(1));
    assert_eq!(buffered_rows(&s), 1, "only the pending row");

    b.committed(&key, Some(after));
    let s = b.query_snapshot(&key, None);
    assert_eq!(buffered_rows(&s), 1);

    // An older file list (a slow load) never replaces a newer one.
    let before = Arc::new(TableFiles {
        version: Some(0),
        files: vec![],
        committed_seq: None,
    });
    let s = b.query_snapshot(&key, Some(before));
    assert_eq!(s.files.version, Some(1));
    assert_eq!(buffered_rows(&s), 1);
}

#[test]
fn audit_events_with_a_known_event_id_are_stored_once() {
    let mut b = Buffers::default();
    let rec = |seq: u64, ids: &[&str]| {
        WalRecord {
        seq,
        tenant: "t".into(),
        kind: u32::from(TableKind::Audit.tag()),
        audit: Some(PutAuditEventsRequest {
            idempotency_id: format!("a{seq}"),
            records: ids
                .iter()
                .map(|id| AuditRecord { json: format!(r#"{{"eventID":"{id}","eventTime":"2023-07-10T11:40:13Z","eventSource":"s3.amazonaws.com"}}"#) })
                .collect(),
        }),
        ..Default::default()
    }
    };
    b.remember_audit_ids("t", ["stored-before"]);
    assert_eq!(
        b.apply(rec(1, &["a", "b", "a"]), None, Parts::ALL),
        Applied {
            rows: 2,
            duplicates: 1
        }
    );
    assert_eq!(
        b.apply(rec(2, &["b", "c", "stored-before"]), None, Parts::ALL),
        Applied {
            rows: 1,
            duplicates: 2
        }
    );
    let key = TableKey {
        tenant: "t".into(),
        kind: TableKind::Audit,
    };
    assert_eq!(b.tables[&key].pending.rows, 3);
}

#[test]
fn log_rows_carry_origin_and_ingest_time() {
    let mut b = Buffers::default();
    let rec = WalRecord {
        seq: 7,
        tenant: "t".into(),
        kind: u32::from(TableKind::Logs.tag()),
        received_ms: 99,
        logs: Some(PutLogEventsRequest {
            idempotency_id: "l".into(),
            log_group_name: "g".into(),
            log_stream_name: "s".into(),
            log_events: vec![LogEvent {
                timestamp_ms: 5,
                message: "hello".into(),
            }],
            origin: Some(watchtrail_proto::v1::LogOrigin {
                host: "h1".into(),
                file_path: String::new(),
            }),
        }),
        ..Default::default()
    };
    assert_eq!(b.apply(rec, None, Parts::ALL).rows, 1);
    let key = TableKey {
        tenant: "t".into(),
        kind: TableKind::Logs,
    };
    let files = b.tables[&key]
        .pending
        .encode(TableKind::Logs)
        .expect("encode");
    assert_eq!(files.len(), 1);
    let (bytes, stats) = &files[0];
    assert!(!bytes.is_empty());
    assert_eq!(stats.num_records, 1);
    assert_eq!(stats.time_range, Some((5_000, 5_000)));
    let ChunkData::Batches(batches) = &b.tables[&key].pending.data else {
        panic!("batches")
    };
    let batch = &batches[0];
    assert_eq!(
        batch
            .column_by_name("host")
            .expect("host")
            .as_string::<i32>()
            .value(0),
        "h1"
    );
    assert!(batch.column_by_name("file_path").expect("file").is_null(0));
    assert_eq!(
        batch
            .column_by_name("ingest_time")
            .expect("ingest")
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        99_000
    );
}

#[test]
fn the_counting_sort_orders_by_series_rank_then_time() {
    let mut rng = watchtrail_test_util::Rng::from_env();
    let series = 37;
    let rank: Vec<u32> = {
        // A permutation of the series ids.
        let mut r: Vec<u32> = (0..series).collect();
        for i in (1..r.len()).rev() {
            r.swap(i, rng.below(i + 1));
        }
        r
    };
    // More rows than one block of `Rows` holds, so that positions cross block boundaries.
    let n = 3 * ROW_BLOCK as i64 + 123;
    let mut rows = Rows::default();
    for i in 0..n {
        rows.push(MetricRow {
            series: rng.below(series as usize) as u32,
            stats: RAW_SAMPLE,
            // Mostly in time order, with some points late.
            time_us: if rng.below(10) == 0 {
                rng.below(n as usize) as i64
            } else {
                i
            },
            value: i as f64,
        });
    }
    assert_eq!(rows.len(), n as usize);
    assert_eq!(
        rows.bytes(),
        4 * ROW_BLOCK * std::mem::size_of::<MetricRow>()
    );
    let order = sort_by_rank_then_time(&rows, &rank);
    let sorted: Vec<MetricRow> = order.iter().map(|&i| *rows.get(i)).collect();
    let key = |r: &MetricRow| (rank[r.series as usize], r.time_us);
    let mut expected: Vec<(u32, i64)> = rows.iter().map(key).collect();
    expected.sort_unstable();
    assert_eq!(sorted.iter().map(key).collect::<Vec<_>>(), expected);
    // Every row is there once (values are unique).
    let mut values: Vec<i64> = sorted.iter().map(|r| r.value as i64).collect();
    values.sort_unstable();
    assert_eq!(values, (0..n).collect::<Vec<_>>());
}

/// (namespace, hostname dimension, time, value) of every row of a Parquet file.
fn file_rows(bytes: bytes::Bytes) -> Vec<(String, String, i64, f64)> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("parquet")
        .build()
        .expect("reader");
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.expect("batch");
        let ns = batch
            .column_by_name("namespace")
            .expect("ns")
            .as_string::<i32>();
        let dims = batch.column_by_name("dimensions").expect("dims").as_map();
        let time = batch
            .column_by_name("time")
            .expect("time")
            .as_primitive::<TimestampMicrosecondType>();
        let value = batch
            .column_by_name("value")
            .expect("value")
            .as_primitive::<Float64Type>();
        for i in 0..batch.num_rows() {
            let entry = dims.value(i);
            let (k, v) = (
                entry.column(0).as_string::<i32>(),
                entry.column(1).as_string::<i32>(),
            );
            let host = (0..k.len())
                .find(|&j| k.value(j) == "host")
                .map(|j| v.value(j).to_string())
                .expect("host dimension");
            out.push((ns.value(i).to_string(), host, time.value(i), value.value(i)));
        }
    }
    out
}

#[test]
fn a_large_metrics_chunk_is_encoded_as_one_file_per_part_cut_at_series_boundaries() {
    let mut b = Buffers::default();
    // 30 series of 50 points, arriving interleaved over three requests.
    for seq in 0..3u64 {
        let ts: Vec<i64> = (0..50).map(|t| 1_000 + (t * 3 + seq as i64) * 10).collect();
        let batch = (0..30)
            .map(|h| series(if h % 2 == 0 { "A" } else { "B" }, &format!("h{h:02}"), &ts))
            .collect();
        b.apply(metrics_record(seq + 1, batch), None, Parts::ALL);
    }
    let key = TableKey {
        tenant: "t".into(),
        kind: TableKind::Metrics,
    };
    let ChunkData::Metrics(m) = &b.tables[&key].pending.data else {
        panic!("metrics chunk")
    };
    let mut expected: Vec<(String, String, i64, f64)> = Vec::new();
    for h in 0..30 {
        for seq in 0..3i64 {
            for t in 0..50i64 {
                let ms = 1_000 + (t * 3 + seq) * 10;
                let ns = if h % 2 == 0 { "A" } else { "B" };
                expected.push((ns.into(), format!("h{h:02}"), ms * 1000, ms as f64));
            }
        }
    }
    expected.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));

    // Under the part size: one file, in storage order.
    let one = m.encode_files(3, 4_500).expect("encode");
    assert_eq!(one.len(), 1);
    assert_eq!(file_rows(one[0].0.clone()), expected);

    // Three parts of at least 1,000 rows: three files, each a run of whole series in storage
    // order, together every row once; the statistics count each file's own rows.
    let parts = m.encode_files(3, 1_000).expect("encode");
    assert_eq!(parts.len(), 3);
    let mut all = Vec::new();
    let mut seen_series = HashSet::new();
    for (bytes, stats) in parts {
        let rows = file_rows(bytes);
        assert!(rows.len() >= 1_000, "{} rows", rows.len());
        assert_eq!(stats.num_records as usize, rows.len());
        let here: HashSet<(String, String)> =
            rows.iter().map(|r| (r.0.clone(), r.1.clone())).collect();
        assert!(
            here.iter().all(|s| !seen_series.contains(s)),
            "a series is split across files"
        );
        seen_series.extend(here);
        all.extend(rows);
    }
    assert_eq!(all, expected);
}

#[test]
fn batches_shrink_when_series_carry_long_dimensions() {
    let mut c = MetricsChunk::default();
    let mut s = series("A", "h", &[1]);
    assert_eq!(c.push_series(s.clone()), 1);
    assert_eq!(c.batch_rows(), METRICS_BATCH_ROWS);
    s.dimensions = (0..30)
        .map(|i| Dimension {
            name: format!("d{i:02}"),
            value: "v".repeat(1024),
        })
        .collect();
    c.push_series(s);
    let widest = 1 + 3 + 7 + 30 * (3 + 1024);
    assert_eq!(c.batch_rows(), BATCH_STRING_BYTES / widest);
    assert!(c.batch_rows() * 30 * 1024 < i32::MAX as usize);
}

#[test]
fn a_chunk_of_last_week_and_now_flushes_to_one_file_per_hour_window() {
    let mut b = Buffers::default();
    let rec = |seq: u64, events: &[(&str, &str)]| {
        WalRecord {
        seq,
        tenant: "t".into(),
        kind: u32::from(TableKind::Audit.tag()),
        audit: Some(PutAuditEventsRequest {
            idempotency_id: format!("a{seq}"),
            records: events
                .iter()
                .map(|(id, time)| AuditRecord {
                    json: format!(
                        r#"{{"eventID":"{id}","eventTime":"{time}","eventSource":"s3.amazonaws.com"}}"#
                    ),
                })
                .collect(),
        }),
        ..Default::default()
    }
    };
    // An import of old events, and the self-audit event of that import, stamped now.
    b.apply(
        rec(
            1,
            &[
                ("old-1", "2023-07-10T11:40:13Z"),
                ("old-2", "2023-07-10T11:59:59Z"),
            ],
        ),
        None,
        Parts::ALL,
    );
    b.apply(
        rec(2, &[("self", "2026-12-02T02:00:00Z")]),
        None,
        Parts::ALL,
    );
    let key = TableKey {
        tenant: "t".into(),
        kind: TableKind::Audit,
    };
    let chunk = b.freeze(&key).expect("pending rows");
    let files = chunk.encode(TableKind::Audit).expect("encode");
    let rows: Vec<i64> = files.iter().map(|(_, s)| s.num_records).collect();
    assert_eq!(rows, [2, 1], "the old hour and the current one, apart");
}

#[test]
fn string_columns_round_trip_and_refuse_offsets_that_miss_the_bytes() {
    let mut s = Strings::with_capacity(0, 0);
    s.push_repeated("TSBS".as_bytes(), 2);
    s.push_block_repeated("hostnamehost_7".as_bytes(), &[8, 6], 2);
    let a = s.finish().expect("valid strings");
    let got: Vec<&str> = (0..a.len()).map(|i| a.value(i)).collect();
    assert_eq!(
        got,
        ["TSBS", "TSBS", "hostname", "host_7", "hostname", "host_7"]
    );
    // Offsets that do not end at the bytes written (a broken invariant) are an error, never
    // an array over memory that is not there.
    let broken = Strings {
        offsets: vec![0, 5],
        bytes: b"abc".to_vec(),
    };
    assert!(broken.finish().is_err());
}

/// An audit record whose events made metric-filter points: `derived` for events 0..n, one
/// point each, in one series.
fn audit_with_points(seq: u64, ids: &[&str]) -> WalRecord {
    let filters = crate::ingest::derive::TenantFilters::new(
        "t",
        vec![
            watchtrail_query::alarm::MetricFilter::from_value(serde_json::json!({
                "filterName": "s3", "filterPattern": "{ $.eventSource = \"s3.amazonaws.com\" }",
                "logGroupName": "audit",
                "metricTransformations": [{"metricName": "S3Calls", "metricNamespace": "Sec",
                    "metricValue": "1"}]
            }))
            .expect("filter"),
        ],
    );
    let records: Vec<AuditRecord> = ids
        .iter()
        .map(|id| AuditRecord {
            json: format!(
                r#"{{"eventID":"{id}","eventTime":"2023-07-10T11:40:13Z","eventSource":"s3.amazonaws.com"}}"#
            ),
        })
        .collect();
    let derived = filters.derive(
        "audit",
        records.iter().map(|r| (1_689_000_000_000, r.json.as_str())),
    );
    assert!(derived.is_some());
    WalRecord {
        seq,
        tenant: "t".into(),
        kind: u32::from(TableKind::Audit.tag()),
        audit: Some(PutAuditEventsRequest {
            idempotency_id: format!("a{seq}"),
            records,
        }),
        derived,
        ..Default::default()
    }
}

fn key(kind: TableKind) -> TableKey {
    TableKey {
        tenant: "t".into(),
        kind,
    }
}

#[test]
fn metric_filter_points_follow_their_events_and_skip_duplicates() {
    let mut b = Buffers::default();
    b.remember_audit_ids("t", ["stored-before"]);
    b.apply(
        audit_with_points(7, &["a", "stored-before", "b", "a"]),
        None,
        Parts::ALL,
    );
    let metrics = &b.tables[&key(TableKind::Metrics)].pending;
    // Two fresh events, two points; the duplicates made none.
    assert_eq!(metrics.rows, 2);
    assert_eq!((metrics.first_seq, metrics.last_seq), (Some(7), 7));
    let audit = &b.tables[&key(TableKind::Audit)].pending;
    assert_eq!(audit.rows, 2);
    assert_eq!(audit.derived_through, Some(7));
    // The rows of a query: the filter's metric with its namespace.
    let snapshot = b.query_snapshot(&key(TableKind::Metrics), None);
    assert_eq!(buffered_rows(&snapshot), 2);
}

#[test]
fn replay_applies_only_the_parts_a_table_lacks() {
    // The audit rows are committed, the points not: only the points.
    let mut b = Buffers::default();
    b.apply(
        audit_with_points(3, &["a", "b"]),
        None,
        Parts {
            main: false,
            derived: true,
        },
    );
    assert_eq!(b.tables[&key(TableKind::Metrics)].pending.rows, 2);
    assert!(!b.tables.contains_key(&key(TableKind::Audit)));
    assert_eq!(b.applied_seq, 3);
    // The points are committed, the rows not: only the rows.
    let mut b = Buffers::default();
    b.apply(
        audit_with_points(4, &["a", "b"]),
        None,
        Parts {
            main: true,
            derived: false,
        },
    );
    assert_eq!(b.tables[&key(TableKind::Audit)].pending.rows, 2);
    assert_eq!(
        b.tables[&key(TableKind::Audit)].pending.derived_through,
        None
    );
    assert!(!b.tables.contains_key(&key(TableKind::Metrics)));
}
