//! TLS end to end: certificates made in the test, a server speaking only (mutual) TLS on both
//! ports, and the CLI and the agent verifying it.

use std::process::Output;
use std::time::Duration;

use watchtrail_e2e::{ServerOptions, TestAgent, TestCerts, TestServer, bin_path, wait_for};

use super::log_batch;

fn cli(server: &TestServer, tls: &[String], args: &[&str]) -> Output {
    std::process::Command::new(bin_path("watchtrail"))
        .env("WATCHTRAIL_API_KEY", &server.key)
        .env_remove("WATCHTRAIL_CA_CERT")
        .args(["--server", &server.grpc_url()])
        .args(["--http", &format!("https://{}", server.http)])
        .args(tls)
        .args(args)
        .output()
        .expect("run watchtrail")
}

fn flags(
    ca: Option<&std::path::Path>,
    client: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(ca) = ca {
        v.extend(["--ca-cert".to_string(), ca.display().to_string()]);
    }
    if let Some((c, k)) = client {
        v.extend([
            "--client-cert".to_string(),
            c.display().to_string(),
            "--client-key".to_string(),
            k.display().to_string(),
        ]);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_on_both_ports_with_the_cli_and_the_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = TestCerts::make(&dir.path().join("certs"));
    let server =
        TestServer::start(ServerOptions::local(&dir.path().join("server")).with_tls(&certs, true))
            .await;
    // The harness's own client (trusting the CA, showing its certificate) writes.
    let r = server
        .client()
        .await
        .put_log_events(log_batch("tls", 2))
        .await
        .expect("ingest over TLS")
        .into_inner();
    assert_eq!(r.accepted, 2);

    // The CLI over gRPC and over HTTPS, trusting the test CA.
    let good = flags(Some(&certs.ca), Some(&certs.client));
    let sql = "SELECT count(*) AS n FROM logs";
    wait_for("the rows over TLS", Duration::from_secs(10), || async {
        let out = cli(&server, &good, &["query", "--format", "csv", sql]);
        (out.status.success() && String::from_utf8_lossy(&out.stdout) == "n\n2\n").then_some(())
    })
    .await;
    let out = cli(&server, &good, &["alarms", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Refused: a server nobody told the CLI to trust, no client certificate, a client
    // certificate of another CA; and plain text on either port.
    for (what, tls) in [
        ("an unknown server CA", flags(None, Some(&certs.client))),
        ("no client certificate", flags(Some(&certs.ca), None)),
        (
            "a stranger's certificate",
            flags(Some(&certs.ca), Some(&certs.stranger)),
        ),
    ] {
        for args in [&["query", sql][..], &["alarms", "list"][..]] {
            let out = cli(&server, &tls, args);
            assert!(!out.status.success(), "{what}: {args:?} was answered");
        }
    }
    let plain = std::process::Command::new(bin_path("watchtrail"))
        .env("WATCHTRAIL_API_KEY", &server.key)
        .args(["--server", &format!("http://{}", server.grpc)])
        .args(["query", sql])
        .output()
        .expect("run");
    assert!(!plain.status.success(), "plain gRPC was answered");
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::TcpStream::connect(server.http)
            .await
            .expect("connect");
        let _ = s
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        assert!(
            !String::from_utf8_lossy(&buf).contains("200 OK"),
            "plain HTTP was answered"
        );
    }

    // The agent ships over mutual TLS too.
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs");
    std::fs::write(logs.join("app.log"), "one\ntwo\nthree\n").expect("write");
    let config = format!(
        "server = \"{}\"\napi_key = \"{}\"\ntls_ca_file = {:?}\ntls_cert_file = {:?}\ntls_key_file = {:?}\n\
         [shipping]\nretry_base = \"50ms\"\nretry_max = \"1s\"\n[logs]\nflush_interval = \"200ms\"\n\
         [[logs.files]]\npath = \"{}/*.log\"\nlog_group = \"/tls\"\nstart_position = \"beginning\"\n",
        server.grpc_url(),
        server.key,
        certs.ca.display().to_string(),
        certs.client.0.display().to_string(),
        certs.client.1.display().to_string(),
        logs.display()
    );
    let mut agent = TestAgent::start(&dir.path().join("agent"), &config, false).await;
    let sql = "SELECT count(*) AS n FROM logs WHERE log_group = '/tls'";
    wait_for(
        "the agent's lines over TLS",
        Duration::from_secs(20),
        || async {
            let out = cli(&server, &good, &["query", "--format", "csv", sql]);
            (String::from_utf8_lossy(&out.stdout) == "n\n3\n").then_some(())
        },
    )
    .await;
    agent.stop().await;
}
