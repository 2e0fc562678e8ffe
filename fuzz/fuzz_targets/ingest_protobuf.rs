//! Any bytes through the protobuf ingest path: decoded as one of the three Put requests (the
//! first byte picks which), validated against the CloudWatch/CloudTrail limits, and the audit
//! records parsed. An error or a canonical request that holds what was counted, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use watchtrail_proto::v1::{PutAuditEventsRequest, PutLogEventsRequest, PutMetricDataRequest};
use watchtrail_model::cloudtrail::parse_event;
use watchtrail_model::limits::{MAX_AGE_MS, MAX_FUTURE_MS};
use watchtrail_model::validate::{validate_audit, validate_logs, validate_metrics};

/// A fixed "now" (2027-01-15), so that a crash replays exactly.
const NOW_MS: i64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((kind, body)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => {
            if let Ok(req) = PutMetricDataRequest::decode(body)
                && let Ok(v) = validate_metrics(req, NOW_MS)
            {
                // Every datum is folded into a series, and every kept point is inside the window.
                assert!(v.canonical.metric_data.is_empty());
                let in_window =
                    |ts: i64| (NOW_MS - MAX_AGE_MS..=NOW_MS + MAX_FUTURE_MS).contains(&ts);
                for s in &v.canonical.series {
                    assert!(s.timestamps_ms.iter().all(|&ts| in_window(ts)));
                    assert!(s.statistic_points.iter().all(|p| in_window(p.timestamp_ms)));
                }
            }
        }
        1 => {
            if let Ok(req) = PutLogEventsRequest::decode(body)
                && let Ok(v) = validate_logs(req, NOW_MS)
            {
                assert_eq!(v.canonical.log_events.len() as u64, v.accepted);
            }
        }
        _ => {
            if let Ok(req) = PutAuditEventsRequest::decode(body)
                && let Ok(v) = validate_audit(req)
            {
                assert_eq!(v.canonical.records.len() as u64, v.accepted);
                for record in &v.canonical.records {
                    assert!(parse_event(&record.json).is_ok(), "validated records parse");
                }
            }
        }
    }
});
