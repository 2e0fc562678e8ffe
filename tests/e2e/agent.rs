//! The agent against a real server: real files, real /proc, SIGKILL, a stopped server.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use watchtrail_e2e::{
    ServerOptions, TestAgent, TestServer, fixtures, http_post, sql_count, wait_for,
};

/// A small pseudo-random sequence (the seed is printed, so a failure can be replayed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn seed() -> u64 {
    watchtrail_test_util::seed_from_env("WATCHTRAIL_TEST_SEED")
}

fn agent_config(server: &TestServer, extra: &str) -> String {
    format!(
        "server = \"http://{}\"\napi_key = \"{}\"\n{extra}\n[shipping]\nretry_base = \"50ms\"\nretry_max = \"1s\"\n",
        server.grpc, server.key
    )
}

/// Appends `lines` numbered lines to `dir/app.log`, rotating by rename every `rotate_every`
/// lines (app.log -> app.log.1 -> app.log.2 ...), as logrotate does, at about `per_sec`.
fn write_rotating(dir: &Path, lines: usize, rotate_every: usize, per_sec: usize) {
    let path = dir.join("app.log");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open log");
    let mut rotations = 0;
    let start = Instant::now();
    for i in 0..lines {
        writeln!(
            file,
            "line-{i:06} the quick brown fox jumps over the lazy dog"
        )
        .expect("write");
        if (i + 1) % rotate_every == 0 && i + 1 < lines {
            rotations += 1;
            for n in (1..=rotations).rev() {
                let from = if n == 1 {
                    path.clone()
                } else {
                    dir.join(format!("app.log.{}", n - 1))
                };
                std::fs::rename(&from, dir.join(format!("app.log.{n}"))).expect("rotate");
            }
            file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("reopen log");
        }
        if i % 100 == 99 {
            let due = Duration::from_secs_f64((i + 1) as f64 / per_sec as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_appends_and_rotations_keeps_every_line_exactly_once() {
    const LINES: usize = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let server = TestServer::start(ServerOptions::local(&dir.path().join("server"))).await;
    let config = agent_config(
        &server,
        &format!(
            "[metrics]\nenabled = false\n[logs]\nflush_interval = \"200ms\"\npoll_interval = \"20ms\"\nscan_interval = \"100ms\"\n\
             [[logs.files]]\npath = \"{}/app.log*\"\nlog_group = \"/e2e/kill\"\nstart_position = \"beginning\"\n",
            logs.display()
        ),
    );
    let mut agent = TestAgent::start(&dir.path().join("agent"), &config, false).await;
    let writer_dir = logs.clone();
    let writer = std::thread::spawn(move || write_rotating(&writer_dir, LINES, 9_000, 12_000));
    let mut rng = Lcg(seed());
    let mut kills = 0;
    while !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(100 + rng.below(700))).await;
        agent.restart().await;
        kills += 1;
    }
    writer.join().expect("writer");
    // A few more kills after the last line, while the tail of the data is in flight.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        agent.restart().await;
        kills += 1;
    }
    let sql = "SELECT count(*) FROM logs WHERE log_group = '/e2e/kill'";
    let got = wait_for("every line in `logs`", Duration::from_secs(120), || async {
        let n = sql_count(&server, sql).await;
        (n >= LINES as i64).then_some(n)
    })
    .await;
    // Give a duplicate the chance to show up before counting for good.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total = sql_count(&server, sql).await;
    let distinct = sql_count(
        &server,
        "SELECT count(DISTINCT substr(message, 1, 11)) FROM logs WHERE log_group = '/e2e/kill'",
    )
    .await;
    println!("{kills} kills; {total} rows, {distinct} distinct lines");
    assert!(
        kills >= 8,
        "the writer was too quick for the test to mean much ({kills} kills)"
    );
    assert_eq!(got, LINES as i64);
    assert_eq!(total, LINES as i64, "no line twice:\n{}", agent.log());
    assert_eq!(distinct, LINES as i64, "every line once");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_outage_of_a_minute_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let opts = ServerOptions::local(&dir.path().join("server"));
    let mut server = TestServer::start(opts).await;
    let config = agent_config(
        &server,
        &format!(
            "[metrics]\ninterval = \"1s\"\nmeasurements = [\"mem_used_percent\"]\n[logs]\nflush_interval = \"500ms\"\n\
             [[logs.files]]\npath = \"{}/*.log\"\nlog_group = \"/e2e/outage\"\nstart_position = \"beginning\"\n",
            logs.display()
        ),
    );
    let mut agent = TestAgent::start(&dir.path().join("agent"), &config, true).await;
    let path = logs.join("app.log");
    let mut file = std::fs::File::create(&path).expect("log");
    let mut written = 0;
    let write_for = |file: &mut std::fs::File, secs: u64, written: &mut usize| {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            for _ in 0..50 {
                writeln!(file, "outage-{:07}", *written).expect("write");
                *written += 1;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    write_for(&mut file, 3, &mut written);
    server.stop().await;
    let down_at = watchtrail_e2e::now_ms();
    write_for(&mut file, 60, &mut written);
    let up_at = watchtrail_e2e::now_ms();
    assert!(
        agent.counter("watchtrail_agent_retries_total").await > 0,
        "the agent noticed the outage"
    );
    assert!(
        agent.counter("watchtrail_agent_buffer_bytes").await > 0,
        "data waited in the buffer"
    );
    server.start_again().await;
    write_for(&mut file, 2, &mut written);
    let sql = "SELECT count(*) FROM logs WHERE log_group = '/e2e/outage'";
    wait_for(
        "every line after the outage",
        Duration::from_secs(60),
        || async { (sql_count(&server, sql).await >= written as i64).then_some(()) },
    )
    .await;
    assert_eq!(sql_count(&server, sql).await, written as i64);
    assert_eq!(
        sql_count(
            &server,
            "SELECT count(DISTINCT message) FROM logs WHERE log_group = '/e2e/outage'"
        )
        .await,
        written as i64
    );
    // Host metrics taken while the server was down arrived too (one a second).
    let during = sql_count(
        &server,
        &format!(
            "SELECT count(*) FROM metrics WHERE metric_name = 'mem_used_percent' AND namespace = 'CWAgent' \
             AND time >= to_timestamp_millis({}) AND time < to_timestamp_millis({})",
            down_at + 2000,
            up_at - 2000
        ),
    )
    .await;
    assert!(during >= 50, "only {during} datapoints from the outage");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudtrail_files_are_delivered_once_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trail = dir.path().join("trail");
    let nested = trail.join("AWSLogs/218007301253/CloudTrail/us-east-1");
    std::fs::create_dir_all(&nested).expect("trail dir");
    let mut files: Vec<_> = std::fs::read_dir(fixtures().join("cloudtrail"))
        .expect("fixtures")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.to_string_lossy().ends_with(".json") || p.to_string_lossy().ends_with(".json.gz")
        })
        .collect();
    files.sort();
    let (first, rest) = files.split_at(files.len() - 5);
    for f in first {
        std::fs::copy(f, nested.join(f.file_name().expect("name"))).expect("copy");
    }
    // Counts of the audit table are the subject: no Watchtrail events of its own beside them.
    let server = TestServer::start(
        ServerOptions::local(&dir.path().join("server")).with_args(&["--no-self-audit"]),
    )
    .await;
    let config = agent_config(
        &server,
        &format!(
            "[metrics]\nenabled = false\n[logs]\nscan_interval = \"200ms\"\n[audit]\ncloudtrail_dir = \"{}\"\n",
            trail.display()
        ),
    );
    let mut agent = TestAgent::start(&dir.path().join("agent"), &config, true).await;
    let read_first = wait_for("the first files", Duration::from_secs(60), || async {
        let n = agent
            .counter("watchtrail_agent_cloudtrail_files_total")
            .await;
        (n == first.len() as u64).then_some(n)
    })
    .await;
    assert_eq!(read_first, first.len() as u64);
    // Restarts, with and without a chance to shut down cleanly, read nothing again.
    agent.restart().await;
    agent.stop().await;
    for f in rest {
        std::fs::copy(f, nested.join(f.file_name().expect("name"))).expect("copy");
    }
    let mut agent = TestAgent::start(&dir.path().join("agent"), &config, true).await;
    wait_for("the new files", Duration::from_secs(60), || async {
        let n = agent
            .counter("watchtrail_agent_cloudtrail_files_total")
            .await;
        (n >= rest.len() as u64).then_some(())
    })
    .await;
    // A negative check: give a re-read file the chance to show up before counting for good.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        agent
            .counter("watchtrail_agent_cloudtrail_files_total")
            .await,
        rest.len() as u64,
        "after the restarts only the new files were read"
    );
    // All 2,900 events of the dataset, once.
    wait_for("2,900 audit events", Duration::from_secs(60), || async {
        (sql_count(&server, "SELECT count(*) FROM audit").await >= 2900).then_some(())
    })
    .await;
    assert_eq!(sql_count(&server, "SELECT count(*) FROM audit").await, 2900);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_intake_takes_events_over_http_and_a_unix_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Counts of the audit table are the subject: no Watchtrail events of its own beside them.
    let server = TestServer::start(
        ServerOptions::local(&dir.path().join("server")).with_args(&["--no-self-audit"]),
    )
    .await;
    let socket = dir.path().join("agent.sock");
    let config = agent_config(
        &server,
        &format!(
            "unix_socket = \"{}\"\n[metrics]\nenabled = false\n",
            socket.display()
        ),
    );
    let agent = TestAgent::start(&dir.path().join("agent"), &config, true).await;
    let addr = agent.http.expect("http");
    let ev = |id: &str| {
        format!(
            r#"{{"eventVersion":"1.08","eventTime":"2026-01-01T00:00:00Z","eventSource":"app.internal","eventName":"Login","eventID":"{id}","sourceIPAddress":"10.1.2.3","userIdentity":{{"type":"IAMUser","userName":"alice"}}}}"#
        )
    };
    let one = http_post(addr, "/v1/audit", &[], ev("one").as_bytes()).await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["accepted"], 1);
    let many = format!("[{}, {}]", ev("two"), ev("three"));
    assert_eq!(
        http_post(addr, "/v1/audit", &[], many.as_bytes())
            .await
            .json()["accepted"],
        2
    );
    let delivery = format!(r#"{{"Records": [{}]}}"#, ev("four"));
    assert_eq!(
        http_post(addr, "/v1/audit", &[], delivery.as_bytes())
            .await
            .status,
        200
    );
    // What a web page could make a browser send is refused: no JSON type, or an Origin.
    let plain = raw_post(
        tokio::net::TcpStream::connect(addr).await.expect("connect"),
        "text/plain",
        &ev("plain"),
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 415"), "{plain}");
    let page = http_post(
        addr,
        "/v1/audit",
        &["Origin: https://evil.example"],
        ev("page").as_bytes(),
    )
    .await;
    assert_eq!(page.status, 403, "{}", page.text());
    // Malformed input: 400 with the reason, and nothing of it is kept.
    let bad = format!(r#"[{}, {{"eventName":"x"}}]"#, ev("five"));
    let refused = http_post(addr, "/v1/audit", &[], bad.as_bytes()).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["error"], "[1].eventTime: is required");
    let broken = http_post(addr, "/v1/audit", &[], b"{\"eventTime\": ").await;
    assert_eq!(broken.status, 400);
    assert!(
        broken.text().contains("line 1, column"),
        "{}",
        broken.text()
    );
    // The Unix socket speaks the same API.
    let out = tokio::process::Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&socket)
        .args([
            "-H",
            "content-type: application/json",
            "-d",
            &ev("six"),
            "http://localhost/v1/audit",
        ])
        .output()
        .await;
    let via_socket = match out {
        Ok(o) if o.status.success() => {
            assert_eq!(String::from_utf8_lossy(&o.stdout), r#"{"accepted":1}"#);
            1
        }
        _ => {
            unix_post(&socket, &ev("six")).await;
            1
        }
    };
    let want = 4 + via_socket;
    wait_for("the intake's events", Duration::from_secs(30), || async {
        (sql_count(&server, "SELECT count(*) FROM audit").await >= want).then_some(())
    })
    .await;
    assert_eq!(sql_count(&server, "SELECT count(*) FROM audit").await, want);
    assert_eq!(
        sql_count(&server, "SELECT count(*) FROM audit WHERE eventname = 'Login' AND useridentity.username = 'alice'").await,
        want
    );
    assert_eq!(
        agent.counter("watchtrail_agent_audit_refused_total").await,
        2
    );
}

/// POST over a Unix socket without curl.
async fn unix_post(socket: &Path, body: &str) {
    let s = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect socket");
    let out = raw_post(s, "application/json", body).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

/// POSTs `body` to the intake's `/v1/audit` over `s` with exactly one `Content-Type`; the
/// whole answer.
async fn raw_post(
    mut s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    content_type: &str,
    body: &str,
) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let req = format!(
        "POST /v1/audit HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_metrics_arrive_with_the_host_dimension_and_high_resolution() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(ServerOptions::local(&dir.path().join("server"))).await;
    let config = agent_config(
        &server,
        "hostname = \"e2e-host\"\n[metrics]\ninterval = \"1s\"\n",
    );
    let mut agent = TestAgent::start(&dir.path().join("agent"), &config, true).await;
    let sql = "SELECT count(DISTINCT metric_name) FROM metrics WHERE namespace = 'CWAgent' AND dimensions['host'] = 'e2e-host'";
    wait_for("cpu figures (they need two samples)", Duration::from_secs(30), || async {
        let n = sql_count(
            &server,
            "SELECT count(*) FROM metrics WHERE metric_name = 'cpu_usage_active' AND dimensions['cpu'] = 'cpu-total'",
        )
        .await;
        (n > 0).then_some(())
    })
    .await;
    let names = sql_count(&server, sql).await;
    assert!(names >= 40, "only {names} metric names");
    assert_eq!(
        sql_count(
            &server,
            "SELECT count(*) FROM metrics WHERE namespace = 'CWAgent' AND storage_resolution <> 1"
        )
        .await,
        0,
        "a 1 s interval gives high-resolution points"
    );
    // Disk figures per mount, with the natural dimensions.
    assert!(
        sql_count(
            &server,
            "SELECT count(*) FROM metrics WHERE metric_name = 'disk_used_percent' AND dimensions['path'] = '/' AND dimensions['fstype'] IS NOT NULL"
        )
        .await
            > 0
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn check_config_accepts_the_examples_and_names_the_bad_field() {
    let bin = watchtrail_e2e::bin_path("watchtrail-agent");
    let root = watchtrail_e2e::manifest_dir().join("..");
    let ok = std::process::Command::new(&bin)
        .arg("--config")
        .arg(root.join("agent/watchtrail-agent.toml"))
        .arg("--check-config")
        .output()
        .expect("run");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("configuration is valid"));
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[logs.files]]\npath = \"/var/log/*.log\"\nmulti_line_start_pattern = \"([\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(&bin)
        .arg("--config")
        .arg(&bad)
        .arg("--check-config")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("logs.files[0].multi_line_start_pattern"),
        "{err}"
    );
    // The CloudWatch agent's JSON file, as fleets have it.
    let cw = root.join("agent/examples/amazon-cloudwatch-agent.json");
    let out = std::process::Command::new(&bin)
        .arg("--config")
        .arg(&cw)
        .arg("--check-config")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("every 60s (standard resolution)"), "{text}");
    assert!(text.contains("/var/log/nginx/access.log"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_items_are_counted_and_not_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let server = TestServer::start(ServerOptions::local(&dir.path().join("server"))).await;
    let config = agent_config(
        &server,
        &format!(
            "[metrics]\nenabled = false\n[logs]\nflush_interval = \"200ms\"\n\
             [[logs.files]]\npath = \"{}/*.log\"\nlog_group = \"/e2e/refused\"\nstart_position = \"beginning\"\n\
             timestamp_format = \"%Y-%m-%dT%H:%M:%SZ\"\ntimezone = \"UTC\"\n",
            logs.display()
        ),
    );
    // CloudWatch Logs refuses events older than 14 days: the server refuses those items and
    // takes the others of the same batch.
    let mut text = String::new();
    for i in 0..10 {
        text.push_str(&format!("2020-01-01T00:00:{i:02}Z too old {i}\n"));
    }
    for i in 0..5 {
        let t = chrono::Utc::now() - chrono::Duration::seconds(60 - i);
        text.push_str(&format!("{} fresh {i}\n", t.format("%Y-%m-%dT%H:%M:%SZ")));
    }
    std::fs::write(logs.join("app.log"), text).expect("write");
    let agent = TestAgent::start(&dir.path().join("agent"), &config, true).await;
    wait_for("the refusal", Duration::from_secs(30), || async {
        (agent.counter("watchtrail_agent_items_rejected_total").await >= 10).then_some(())
    })
    .await;
    let sql = "SELECT count(*) FROM logs WHERE log_group = '/e2e/refused'";
    wait_for("the fresh lines", Duration::from_secs(30), || async {
        (sql_count(&server, sql).await >= 5).then_some(())
    })
    .await;
    // A negative check: no sixth (duplicate) record arrives after the fifth.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sql_count(&server, sql).await, 5);
    assert_eq!(
        agent.counter("watchtrail_agent_items_rejected_total").await,
        10
    );
    assert_eq!(
        agent.counter("watchtrail_agent_retries_total").await,
        0,
        "a refusal is not retried"
    );
    assert_eq!(
        agent.counter("watchtrail_agent_buffer_bytes").await,
        0,
        "nothing is left waiting"
    );
    assert!(
        agent.log().contains("server refused items of a batch"),
        "{}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_in_one_runs_an_agent_beside_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    std::fs::write(logs.join("app.log"), "hello from this host\n").expect("write");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "http_addr = \"\"\nhostname = \"aio-host\"\n[metrics]\ninterval = \"1s\"\n[logs]\nflush_interval = \"200ms\"\n\
             [[logs.files]]\npath = \"{}/*.log\"\nlog_group = \"/aio\"\nstart_position = \"beginning\"\n",
            logs.display()
        ),
    )
    .expect("config");
    let opts = ServerOptions::local(&dir.path().join("server")).with_args(&[
        "--agent",
        "--agent-config",
        config.to_str().expect("utf-8 path"),
    ]);
    let mut server = TestServer::start(opts).await;
    wait_for(
        "the host's log line and metrics",
        Duration::from_secs(30),
        || async {
            let lines = sql_count(
                &server,
                "SELECT count(*) FROM logs WHERE log_group = '/aio'",
            )
            .await;
            let points = sql_count(
                &server,
                "SELECT count(*) FROM metrics WHERE dimensions['host'] = 'aio-host'",
            )
            .await;
            (lines == 1 && points > 0).then_some(())
        },
    )
    .await;
    // The agent's state lives beside the WAL directory.
    assert!(dir.path().join("server/agent/buffer").is_dir());
    // A line written just before shutdown still arrives: the agent stops first.
    std::fs::OpenOptions::new()
        .append(true)
        .open(logs.join("app.log"))
        .and_then(|mut f| f.write_all(b"last words\n"))
        .expect("append");
    tokio::time::sleep(Duration::from_millis(600)).await;
    server.stop().await;
    let log = server.log();
    assert!(log.contains("all-in-one: agent stopped"), "{log}");
    let server = TestServer::start(ServerOptions::local(&dir.path().join("server"))).await;
    assert_eq!(
        sql_count(
            &server,
            "SELECT count(*) FROM logs WHERE log_group = '/aio'"
        )
        .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_the_oldest_lines_and_counts_every_one() {
    const LINES: usize = 30_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let opts = ServerOptions::local(&dir.path().join("server"));
    let mut server = TestServer::start(opts).await;
    let config = agent_config(
        &server,
        &format!(
            "[buffer]\nmax_bytes = \"1M\"\nsync = false\n[metrics]\nenabled = false\n[logs]\nflush_interval = \"200ms\"\n\
             [[logs.files]]\npath = \"{}/*.log\"\nlog_group = \"/e2e/full\"\nstart_position = \"beginning\"\n",
            logs.display()
        ),
    );
    let mut agent = TestAgent::start(&dir.path().join("agent"), &config, true).await;
    server.stop().await;
    // About 3 MB of lines while the server is down: three times the buffer.
    let mut text = String::new();
    for i in 0..LINES {
        text.push_str(&format!("full-{i:06} {}\n", "x".repeat(90)));
    }
    std::fs::write(logs.join("app.log"), text).expect("write");
    wait_for(
        "the buffer to overflow",
        Duration::from_secs(60),
        || async {
            (agent.counter("watchtrail_agent_dropped_items_total").await > 0).then_some(())
        },
    )
    .await;
    wait_for("every line read", Duration::from_secs(60), || async {
        (agent.counter("watchtrail_agent_log_events_total").await >= LINES as u64).then_some(())
    })
    .await;
    let buffered = agent.counter("watchtrail_agent_buffer_bytes").await;
    assert!(
        buffered <= (1 << 20) + (128 << 10),
        "the buffer holds {buffered} bytes"
    );
    assert!(
        agent
            .log()
            .contains("buffer full: dropped the oldest unsent records"),
        "{}",
        agent.log()
    );
    server.start_again().await;
    let dropped = agent.counter("watchtrail_agent_dropped_items_total").await;
    let sql = "SELECT count(*) FROM logs WHERE log_group = '/e2e/full'";
    let want = LINES as i64 - dropped as i64;
    wait_for("what the buffer kept", Duration::from_secs(60), || async {
        (sql_count(&server, sql).await >= want).then_some(())
    })
    .await;
    // A restart of the agent neither re-reads the dropped lines nor sends anything twice.
    agent.restart().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sql_count(&server, sql).await,
        want,
        "every line is delivered or counted as dropped"
    );
    assert_eq!(
        sql_count(
            &server,
            &format!("{sql} AND message LIKE 'full-{:06}%'", LINES - 1)
        )
        .await,
        1,
        "the newest line was kept"
    );
    assert_eq!(
        sql_count(&server, &format!("{sql} AND message LIKE 'full-000000%'")).await,
        0,
        "the oldest line was dropped"
    );
    agent.stop().await;
}
