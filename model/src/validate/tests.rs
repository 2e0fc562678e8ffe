use watchtrail_proto::v1::{AuditRecord, LogEvent, MetricDatum, ValueCounts};

use super::*;

const NOW: i64 = 1_800_000_000_000;

fn datum(value: f64) -> MetricDatum {
    MetricDatum {
        namespace: "App".into(),
        metric_name: "Latency".into(),
        dimensions: vec![Dimension {
            name: "Host".into(),
            value: "a".into(),
        }],
        timestamp_ms: NOW - 1_000,
        data: Some(metric_datum::Data::Value(value)),
        unit: "Milliseconds".into(),
        storage_resolution: 60,
    }
}

fn metrics(data: Vec<MetricDatum>) -> PutMetricDataRequest {
    PutMetricDataRequest {
        idempotency_id: "id-1".into(),
        metric_data: data,
        series: vec![],
    }
}

#[track_caller]
fn invalid_field(r: Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(Refused::Invalid { field, .. }) => field,
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

#[track_caller]
fn too_large(r: Result<impl std::fmt::Debug>) {
    assert!(
        matches!(r, Err(Refused::TooLarge(_))),
        "expected RESOURCE_EXHAUSTED, got {r:?}"
    );
}

#[test]
fn accepts_a_plain_datum_and_folds_it_into_a_series() {
    let v = validate_metrics(metrics(vec![datum(1.5)]), NOW).expect("valid");
    assert_eq!(v.accepted, 1);
    assert!(v.rejected.is_empty());
    assert!(v.canonical.metric_data.is_empty());
    assert_eq!(v.canonical.series[0].values, vec![1.5]);
    assert_eq!(v.canonical.series[0].timestamps_ms, vec![NOW - 1_000]);
}

#[test]
fn missing_timestamp_means_now_and_missing_unit_means_none() {
    let mut d = datum(1.0);
    d.timestamp_ms = 0;
    d.unit.clear();
    let v = validate_metrics(metrics(vec![d]), NOW).expect("valid");
    assert_eq!(v.canonical.series[0].timestamps_ms, vec![NOW]);
    assert_eq!(v.canonical.series[0].unit, "None");
}

#[test]
fn refuses_non_finite_and_huge_values() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 2f64.powi(361)] {
        assert_eq!(
            invalid_field(validate_metrics(metrics(vec![datum(1.0), datum(bad)]), NOW)),
            "metric_data[1].value"
        );
    }
    assert!(validate_metrics(metrics(vec![datum(-(2f64.powi(360)))]), NOW).is_ok());
}

#[test]
fn enforces_dimension_rules() {
    let mut d = datum(1.0);
    d.dimensions = (0..31)
        .map(|i| Dimension {
            name: format!("d{i}"),
            value: "v".into(),
        })
        .collect();
    assert_eq!(
        invalid_field(validate_metrics(metrics(vec![d]), NOW)),
        "metric_data[0].dimensions"
    );
    let mut d = datum(1.0);
    d.dimensions = (0..30)
        .map(|i| Dimension {
            name: format!("d{i}"),
            value: "v".into(),
        })
        .collect();
    assert!(
        validate_metrics(metrics(vec![d]), NOW).is_ok(),
        "30 dimensions are allowed"
    );
    let mut d = datum(1.0);
    d.dimensions[0].value = "x".repeat(1025);
    assert_eq!(
        invalid_field(validate_metrics(metrics(vec![d]), NOW)),
        "metric_data[0].dimensions[0].value"
    );
    let mut d = datum(1.0);
    d.dimensions.push(Dimension {
        name: ":bad".into(),
        value: "v".into(),
    });
    assert_eq!(
        invalid_field(validate_metrics(metrics(vec![d]), NOW)),
        "metric_data[0].dimensions[1].name"
    );
    let mut d = datum(1.0);
    d.dimensions.push(Dimension {
        name: "Host".into(),
        value: "b".into(),
    });
    assert_eq!(
        invalid_field(validate_metrics(metrics(vec![d]), NOW)),
        "metric_data[0].dimensions[1].name"
    );
    let mut d = datum(1.0);
    d.dimensions[0].value = "   ".into();
    assert_eq!(
        invalid_field(validate_metrics(metrics(vec![d]), NOW)),
        "metric_data[0].dimensions[0].value"
    );
}

#[test]
fn enforces_namespace_and_name_rules() {
    for (ns, ok) in [
        (":x", false),
        ("AWS/EC2", false),
        ("a".repeat(256).as_str(), false),
        ("bad$", false),
        ("", false),
        ("My App/x#1:y", true),
    ] {
        let mut d = datum(1.0);
        d.namespace = ns.to_string();
        assert_eq!(
            validate_metrics(metrics(vec![d]), NOW).is_ok(),
            ok,
            "namespace {ns:?}"
        );
    }
    let mut d = datum(1.0);
    d.metric_name = "bell\u{7}".into();
    assert_eq!(
        invalid_field(validate_metrics(metrics(vec![d]), NOW)),
        "metric_data[0].metric_name"
    );
}

#[test]
fn enforces_units_and_resolution() {
    let mut d = datum(1.0);
    d.unit = "Furlongs".into();
    assert_eq!(
        invalid_field(validate_metrics(metrics(vec![d]), NOW)),
        "metric_data[0].unit"
    );
    let mut d = datum(1.0);
    d.storage_resolution = 5;
    assert_eq!(
        invalid_field(validate_metrics(metrics(vec![d]), NOW)),
        "metric_data[0].storage_resolution"
    );
    for unit in UNITS {
        let mut d = datum(1.0);
        d.unit = unit.into();
        assert!(validate_metrics(metrics(vec![d]), NOW).is_ok(), "{unit}");
    }
}

#[test]
fn rejects_out_of_window_points_one_by_one() {
    let mut old = datum(1.0);
    old.timestamp_ms = NOW - MAX_AGE_MS - 1;
    let mut new = datum(2.0);
    new.timestamp_ms = NOW + MAX_FUTURE_MS + 1;
    let v = validate_metrics(metrics(vec![old, datum(3.0), new]), NOW).expect("partially valid");
    assert_eq!(v.accepted, 1);
    let idx: Vec<u32> = v.rejected.iter().map(|r| r.index).collect();
    assert_eq!(idx, vec![0, 2]);
    assert!(v.rejected[0].reason.contains("14 days"));
    assert!(v.rejected[1].reason.contains("2 hours"));
}

#[test]
fn enforces_batch_limits() {
    too_large(validate_metrics(metrics(vec![datum(1.0); 1001]), NOW));
    assert!(validate_metrics(metrics(vec![datum(1.0); 1000]), NOW).is_ok());
    let mut d = datum(1.0);
    d.dimensions = (0..30)
        .map(|i| Dimension {
            name: format!("d{i}"),
            value: "v".repeat(1000),
        })
        .collect();
    too_large(validate_metrics(metrics(vec![d; 40]), NOW));
    assert_eq!(
        invalid_field(validate_metrics(metrics(vec![]), NOW)),
        "metric_data"
    );
}

#[test]
fn value_counts_and_statistic_sets() {
    let mut d = datum(0.0);
    d.data = Some(metric_datum::Data::ValueCounts(ValueCounts {
        values: vec![1.0, 2.0],
        counts: vec![1.0, 3.0],
    }));
    let v = validate_metrics(metrics(vec![d.clone()]), NOW).expect("valid");
    assert_eq!(v.accepted, 2);
    assert_eq!(v.canonical.series[0].values, vec![1.0]);
    let st = v.canonical.series[0].statistic_points[0]
        .statistic_values
        .expect("set");
    assert_eq!(
        (st.sample_count, st.sum, st.minimum, st.maximum),
        (3.0, 6.0, 2.0, 2.0)
    );
    d.data = Some(metric_datum::Data::ValueCounts(ValueCounts {
        values: vec![1.0, 2.0],
        counts: vec![1.0],
    }));
    assert_eq!(
        invalid_field(validate_metrics(metrics(vec![d.clone()]), NOW)),
        "metric_data[0].value_counts.counts"
    );
    d.data = Some(metric_datum::Data::ValueCounts(ValueCounts {
        values: vec![1.0; 151],
        counts: vec![],
    }));
    assert_eq!(
        invalid_field(validate_metrics(metrics(vec![d.clone()]), NOW)),
        "metric_data[0].value_counts.values"
    );
    d.data = Some(metric_datum::Data::StatisticValues(StatisticSet {
        sample_count: 3.0,
        sum: 11.0,
        minimum: 5.0,
        maximum: 2.0,
    }));
    assert_eq!(
        invalid_field(validate_metrics(metrics(vec![d.clone()]), NOW)),
        "metric_data[0].statistic_values.minimum"
    );
    d.data = None;
    assert_eq!(
        invalid_field(validate_metrics(metrics(vec![d]), NOW)),
        "metric_data[0].data"
    );
}

#[test]
fn series_rules() {
    let s = MetricSeries {
        namespace: "App".into(),
        metric_name: "Cpu".into(),
        timestamps_ms: vec![NOW - 2, NOW - 1],
        values: vec![1.0],
        ..Default::default()
    };
    let req = PutMetricDataRequest {
        idempotency_id: "s".into(),
        metric_data: vec![],
        series: vec![s.clone()],
    };
    assert_eq!(
        invalid_field(validate_metrics(req, NOW)),
        "series[0].values"
    );
    let mut s2 = s;
    s2.values = vec![1.0, 2.0];
    s2.timestamps_ms[1] = NOW + MAX_FUTURE_MS + 10;
    let v = validate_metrics(
        PutMetricDataRequest {
            idempotency_id: "s".into(),
            metric_data: vec![],
            series: vec![s2],
        },
        NOW,
    )
    .expect("valid");
    assert_eq!(v.accepted, 1);
    assert_eq!(v.rejected[0].field, "series[0].timestamps_ms[1]");
}

#[test]
fn idempotency_ids_are_required() {
    let mut req = metrics(vec![datum(1.0)]);
    req.idempotency_id.clear();
    assert_eq!(invalid_field(validate_metrics(req, NOW)), "idempotency_id");
}

fn logs(events: Vec<LogEvent>) -> PutLogEventsRequest {
    PutLogEventsRequest {
        idempotency_id: "l".into(),
        log_group_name: "/app/web".into(),
        log_stream_name: "host-1".into(),
        log_events: events,
        origin: None,
    }
}

fn ev(ts: i64, msg: &str) -> LogEvent {
    LogEvent {
        timestamp_ms: ts,
        message: msg.into(),
    }
}

#[test]
fn log_rules() {
    assert!(validate_logs(logs(vec![ev(NOW, "a"), ev(NOW, "b")]), NOW).is_ok());
    assert_eq!(
        invalid_field(validate_logs(
            logs(vec![ev(NOW, "a"), ev(NOW - 1, "b")]),
            NOW
        )),
        "log_events[1].timestamp_ms"
    );
    assert_eq!(
        invalid_field(validate_logs(logs(vec![ev(NOW, "")]), NOW)),
        "log_events[0].message"
    );
    assert_eq!(
        invalid_field(validate_logs(
            logs(vec![ev(NOW - 25 * 3_600_000, "a"), ev(NOW, "b")]),
            NOW
        )),
        "log_events"
    );
    let mut r = logs(vec![ev(NOW, "a")]);
    r.log_group_name = "aws/lambda".into();
    assert_eq!(invalid_field(validate_logs(r, NOW)), "log_group_name");
    let mut r = logs(vec![ev(NOW, "a")]);
    r.log_group_name = "../../other".into();
    assert_eq!(invalid_field(validate_logs(r, NOW)), "log_group_name");
    let mut r = logs(vec![ev(NOW, "a")]);
    r.log_stream_name = "a:b".into();
    assert_eq!(invalid_field(validate_logs(r, NOW)), "log_stream_name");
    too_large(validate_logs(logs(vec![ev(NOW, "a"); 10_001]), NOW));
    let big = "x".repeat(100_000);
    too_large(validate_logs(
        logs((0..11).map(|_| ev(NOW, &big)).collect()),
        NOW,
    ));
    assert_eq!(
        invalid_field(validate_logs(
            logs(vec![ev(NOW, &"x".repeat(MAX_LOG_EVENT_BYTES))]),
            NOW
        )),
        "log_events[0].message"
    );
}

#[test]
fn log_events_outside_the_window_are_rejected_by_index() {
    let v = validate_logs(
        logs(vec![
            ev(NOW - MAX_AGE_MS - 5, "old"),
            ev(NOW, "ok"),
            ev(NOW + MAX_FUTURE_MS + 5, "new"),
        ]),
        NOW,
    )
    .expect("partially valid");
    assert_eq!(v.accepted, 1);
    assert_eq!(v.canonical.log_events[0].message, "ok");
    assert_eq!(
        v.rejected.iter().map(|r| r.index).collect::<Vec<_>>(),
        vec![0, 2]
    );
}

#[test]
fn audit_rules() {
    let good = r#"{"eventID":"e","eventTime":"2023-07-10T11:40:13Z","eventVersion":"1.08"}"#;
    let req = |records: Vec<&str>| PutAuditEventsRequest {
        idempotency_id: "a".into(),
        records: records
            .into_iter()
            .map(|j| AuditRecord { json: j.into() })
            .collect(),
    };
    assert_eq!(validate_audit(req(vec![good])).expect("valid").accepted, 1);
    assert_eq!(
        invalid_field(validate_audit(req(vec![good, r#"{"eventID":"e"}"#]))),
        "records[1].eventTime"
    );
    assert_eq!(
        invalid_field(validate_audit(req(vec![good, "{not json"]))),
        "records[1]"
    );
    too_large(validate_audit(req(vec![good; 101])));
    let huge = format!(
        r#"{{"eventID":"e","eventTime":"2023-07-10T11:40:13Z","pad":"{}"}}"#,
        "x".repeat(MAX_AUDIT_RECORD_BYTES)
    );
    assert_eq!(
        invalid_field(validate_audit(req(vec![&huge]))),
        "records[0]"
    );
}
