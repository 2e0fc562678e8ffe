//! Queries written for Athena's CloudTrail table and for CloudTrail Lake, run unchanged over the
//! imported invictus dataset, each checked against an answer computed from the raw JSON files.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;

use serde_json::Value;
use watchtrail_e2e::{ServerOptions, TestServer, fixtures, grpc_query};
use watchtrail_storage::deltalake::arrow::array::{Array, AsArray, RecordBatch};
use watchtrail_storage::deltalake::arrow::datatypes::Int64Type;

/// Every event of the fixture files, once per eventID.
fn raw_events() -> Vec<Value> {
    fn walk(dir: &Path, out: &mut Vec<Value>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
                continue;
            }
            let name = path.to_string_lossy().to_string();
            let bytes = std::fs::read(&path).expect("read file");
            let text = if name.ends_with(".json.gz") {
                let mut s = String::new();
                flate2::read::GzDecoder::new(&bytes[..])
                    .read_to_string(&mut s)
                    .expect("gunzip");
                s
            } else if name.ends_with(".json") {
                String::from_utf8(bytes).expect("utf-8")
            } else {
                continue;
            };
            let doc: Value = serde_json::from_str(&text).expect("json");
            out.extend(doc["Records"].as_array().cloned().unwrap_or_default());
        }
    }
    let mut all = Vec::new();
    walk(&fixtures().join("cloudtrail"), &mut all);
    let mut seen = std::collections::HashSet::new();
    all.retain(|e| seen.insert(e["eventID"].as_str().unwrap_or_default().to_string()));
    all
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "<null>".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn count_by(events: &[Value], key: impl Fn(&Value) -> Option<String>) -> HashMap<String, i64> {
    let mut m = HashMap::new();
    for e in events {
        if let Some(k) = key(e) {
            *m.entry(k).or_insert(0) += 1;
        }
    }
    m
}

/// A two-column answer (key, count) as a map; null keys become `<null>`.
fn as_map(batches: &[RecordBatch]) -> HashMap<String, i64> {
    let mut m = HashMap::new();
    for b in batches {
        let keys = b.column(0).as_string::<i32>();
        let counts = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let k = if keys.is_null(i) {
                "<null>".to_string()
            } else {
                keys.value(i).to_string()
            };
            m.insert(k, counts.value(i));
        }
    }
    m
}

fn as_count(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test]
async fn athena_and_cloudtrail_lake_queries_match_the_raw_json() {
    let events = raw_events();
    assert_eq!(events.len(), 2900);
    let dir = tempfile::tempdir().expect("tempdir");
    // The subject is the CloudTrail data itself: no Watchtrail events of its own beside it.
    let server =
        TestServer::start(ServerOptions::local(dir.path()).with_args(&["--no-self-audit"])).await;
    super::import_fixtures(&server);
    let q = |sql: &'static str| {
        let grpc = server.grpc;
        let key = server.key.clone();
        async move {
            grpc_query(grpc, &key, sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .0
        }
    };

    // CloudTrail Lake's spelling: camel case folds to Athena's lower-case columns.
    let got = as_map(
        &q("SELECT eventName, count(*) FROM audit GROUP BY eventName ORDER BY 2 DESC").await,
    );
    assert_eq!(got, count_by(&events, |e| Some(s(&e["eventName"]))));

    // Athena: who was denied what.
    let got = as_map(
        &q(
            "SELECT useridentity.username || ' ' || eventname, count(*) FROM audit \
            WHERE errorcode = 'AccessDenied' GROUP BY 1",
        )
        .await,
    );
    let want = count_by(&events, |e| {
        // SQL's `||` with a null user name is null.
        (e["errorCode"] == "AccessDenied").then(|| match e["userIdentity"]["userName"].as_str() {
            Some(u) => format!("{u} {}", s(&e["eventName"])),
            None => "<null>".into(),
        })
    });
    assert_eq!(got, want);

    let got = as_map(&q("SELECT sourceipaddress, count(*) FROM audit GROUP BY 1").await);
    assert_eq!(got, count_by(&events, |e| Some(s(&e["sourceIPAddress"]))));

    let got = as_map(&q("SELECT awsregion, count(*) FROM audit GROUP BY awsRegion").await);
    assert_eq!(got, count_by(&events, |e| Some(s(&e["awsRegion"]))));

    let got = as_map(&q("SELECT userIdentity.type, count(*) FROM audit GROUP BY 1").await);
    assert_eq!(
        got,
        count_by(&events, |e| Some(s(&e["userIdentity"]["type"])))
    );

    let got = as_map(
        &q(
            "SELECT useridentity.sessioncontext.sessionissuer.username, count(*) FROM audit \
            WHERE useridentity.type = 'AssumedRole' GROUP BY 1",
        )
        .await,
    );
    let want = count_by(&events, |e| {
        (e["userIdentity"]["type"] == "AssumedRole")
            .then(|| s(&e["userIdentity"]["sessionContext"]["sessionIssuer"]["userName"]))
    });
    assert_eq!(got, want);

    let got = as_count(&q("SELECT count(*) FROM audit WHERE readonly = false").await);
    assert_eq!(
        got,
        events.iter().filter(|e| e["readOnly"] == false).count() as i64
    );

    // IS DISTINCT FROM binds tighter than AND (the parser in the tree got this wrong: 2482).
    let got = as_count(
        &q("SELECT count(*) FROM audit WHERE readonly IS DISTINCT FROM true AND eventname = 'DeleteBucket'")
            .await,
    );
    assert_eq!(
        got,
        events
            .iter()
            .filter(|e| e["readOnly"] != true && e["eventName"] == "DeleteBucket")
            .count() as i64
    );

    let got = as_count(&q("SELECT count(*) FROM audit WHERE errorCode IS NOT NULL").await);
    assert_eq!(
        got,
        events.iter().filter(|e| !e["errorCode"].is_null()).count() as i64
    );

    let got = as_count(&q("SELECT count(DISTINCT useridentity.arn) FROM audit").await);
    let arns: std::collections::HashSet<&str> = events
        .iter()
        .filter_map(|e| e["userIdentity"]["arn"].as_str())
        .collect();
    assert_eq!(got, arns.len() as i64);

    // JSON inside requestparameters, with datafusion-functions-json and with Athena's function.
    let want = count_by(&events, |e| {
        (e["eventSource"] == "s3.amazonaws.com").then(|| s(&e["requestParameters"]["bucketName"]))
    });
    let got = as_map(
        &q(
            "SELECT json_get_str(requestparameters, 'bucketName'), count(*) FROM audit \
            WHERE eventsource = 's3.amazonaws.com' GROUP BY 1",
        )
        .await,
    );
    assert_eq!(got, want);
    let got = as_map(
        &q(
            "SELECT json_extract_scalar(requestParameters, '$.bucketName'), count(*) FROM audit \
            WHERE eventSource = 's3.amazonaws.com' GROUP BY 1",
        )
        .await,
    );
    assert_eq!(got, want);

    // Resources: a list of structs.
    let got = as_count(&q("SELECT count(*) FROM audit WHERE cardinality(resources) > 0").await);
    let want = events
        .iter()
        .filter(|e| e["resources"].as_array().is_some_and(|r| !r.is_empty()))
        .count() as i64;
    assert_eq!(got, want);

    // A time window, in Athena's style with from_iso8601_timestamp.
    let mut times: Vec<&str> = events
        .iter()
        .filter_map(|e| e["eventTime"].as_str())
        .collect();
    times.sort_unstable();
    let (lo, hi) = (times[times.len() / 4], times[3 * times.len() / 4]);
    let want = times.iter().filter(|t| **t >= lo && **t < hi).count() as i64;
    let sql = format!(
        "SELECT count(*) FROM audit WHERE eventtime >= from_iso8601_timestamp('{lo}') \
         AND eventtime < from_iso8601_timestamp('{hi}')"
    );
    let got = grpc_query(server.grpc, &server.key, &sql)
        .await
        .expect("window")
        .0;
    assert_eq!(as_count(&got), want);

    // The original record is kept whole.
    let got = as_count(
        &q("SELECT count(*) FROM audit WHERE json_get_str(eventjson, 'eventID') = eventid").await,
    );
    assert_eq!(got, 2900);
}
