//! The `watchtrail` CLI's put commands against a real server.

use std::io::Write as _;
use std::process::{Command, Stdio};

use watchtrail_e2e::{ServerOptions, TestServer, bin_path};
use watchtrail_query::tables::TableKind;
use watchtrail_storage::deltalake::arrow::array::{Array, AsArray};
use watchtrail_storage::deltalake::arrow::datatypes::Float64Type;
use watchtrail_storage::store::Storage;

use super::column_counts;

fn cli(server: &TestServer, args: &[&str]) -> Command {
    let mut c = Command::new(bin_path("watchtrail"));
    c.env("WATCHTRAIL_API_KEY", &server.key)
        .args(["--server", &format!("http://{}", server.grpc)])
        .args(args);
    c
}

#[tokio::test]
async fn put_metric_and_put_log_events_reach_the_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = ServerOptions::local(dir.path());
    let mut server = TestServer::start(opts.clone()).await;
    let out = cli(
        &server,
        &[
            "put-metric",
            "--namespace",
            "MyApp",
            "--metric-name",
            "Latency",
            "--value",
            "42.5",
            "--unit",
            "Milliseconds",
            "--dimensions",
            "Host=web-1,Env=prod",
        ],
    )
    .output()
    .expect("run put-metric");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(
        &server,
        &[
            "put-metric",
            "--namespace",
            "MyApp",
            "--metric-name",
            "Latency",
            "--statistic-values",
            "SampleCount=3,Sum=11,Minimum=2,Maximum=5",
        ],
    )
    .output()
    .expect("run put-metric");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(
        &server,
        &[
            "put-metric",
            "--namespace",
            "MyApp",
            "--metric-name",
            "Latency",
            "--value",
            "1",
            "--unit",
            "Parsecs",
        ],
    )
    .output()
    .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("metric_data[0].unit"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut child = cli(
        &server,
        &[
            "put-log-events",
            "--log-group-name",
            "/cli/test",
            "--log-stream-name",
            "s1",
        ],
    )
    .stdin(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("run put-log-events");
    let mut stdin = child.stdin.take().expect("stdin");
    for i in 0..2500 {
        writeln!(stdin, "line {i}").expect("write");
    }
    // Invalid UTF-8 is replaced, not dropped.
    stdin.write_all(b"bad \xff byte\n\n").expect("write");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sent 2501 events"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await;

    let storage = Storage::from_url(&opts.store).expect("store");
    let msgs = column_counts(&storage, "default", TableKind::Logs, "message").await;
    assert_eq!(msgs.len(), 2501);
    assert!(msgs.contains_key("bad \u{fffd} byte"));
    let batches = storage
        .read_table("default", TableKind::Metrics)
        .await
        .expect("read");
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 2);
    let (mut values, mut sums) = (Vec::new(), Vec::new());
    for b in &batches {
        let v = b
            .column_by_name("value")
            .expect("value")
            .as_primitive::<Float64Type>()
            .clone();
        let s = b
            .column_by_name("sum")
            .expect("sum")
            .as_primitive::<Float64Type>()
            .clone();
        values.extend(v.iter().flatten());
        sums.extend(s.iter().flatten());
        let dims = b.column_by_name("dimensions").expect("dims");
        assert_eq!(dims.len(), b.num_rows());
    }
    assert_eq!(values, vec![42.5]);
    assert_eq!(sums, vec![11.0]);
}
