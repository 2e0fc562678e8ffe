//! All-in-one mode (`--agent`): the server runs `watchtrail-agent` on its own host as a child
//! process, so a newcomer sees their machine's metrics and logs without a second command.
//!
//! The agent is a separate binary (nothing depends on the agent crate): it is looked for next
//! to the server's own executable, restarted if it dies, and stopped with SIGTERM before the
//! server drains, so its last batches still reach the server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The configuration written when `--agent-config` is not given.
const DEFAULT_CONFIG: &str = r#"# Written by `watchtrail-server --agent` (all-in-one mode). Pass --agent-config to use your
# own; agent/watchtrail-agent.toml in the repository explains every key.
[metrics]
interval = "10s"

[logs]
flush_interval = "2s"

[[logs.files]]
path = "/var/log/*.log"
log_group = "/var/log/{file_name}"
start_position = "beginning"

[[logs.files]]
path = "/var/log/syslog"
log_group = "/var/log/syslog"
start_position = "beginning"

[[logs.files]]
path = "/var/log/messages"
log_group = "/var/log/messages"
start_position = "beginning"
"#;

/// Where the agent binary is: next to this executable.
fn agent_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let path = exe.with_file_name("watchtrail-agent");
    anyhow::ensure!(
        path.exists(),
        "--agent: {} is missing; build it first (`cargo build --bins`, or `cargo build --release --bins`)",
        path.display()
    );
    Ok(path)
}

/// The running agent and how to start it again.
#[derive(Debug)]
pub struct AgentChild {
    command: Vec<std::ffi::OsString>,
    binary: PathBuf,
    /// Cancelled once the server has written the agent's ingest key (`--auth keys`).
    ready: CancellationToken,
}

impl AgentChild {
    /// Prepares the agent for a server whose gRPC port is `grpc`, with its state next to the
    /// WAL directory.
    pub fn prepare(
        wal_dir: &Path,
        config: Option<&Path>,
        grpc: SocketAddr,
        key_file: Option<&Path>,
        ready: CancellationToken,
    ) -> anyhow::Result<Self> {
        let binary = agent_binary()?;
        let data = crate::config::data_dir(wal_dir);
        watchtrail_storage::store::create_private_dir(&data, true)
            .with_context(|| format!("--agent: cannot create {}", data.display()))?;
        let config = match config {
            Some(c) => c.to_path_buf(),
            None => {
                let path = data.join("agent.toml");
                if !path.exists() {
                    std::fs::write(&path, DEFAULT_CONFIG)
                        .with_context(|| format!("--agent: cannot write {}", path.display()))?;
                }
                path
            }
        };
        // A wildcard listen address is reached through loopback.
        let host = if grpc.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), grpc.port())
        } else {
            grpc
        };
        let mut command: Vec<std::ffi::OsString> = vec![
            "--config".into(),
            config.into_os_string(),
            "--server".into(),
            format!("http://{host}").into(),
            "--state-dir".into(),
            data.join("agent").into_os_string(),
        ];
        if let Some(k) = key_file {
            command.push("--api-key-file".into());
            command.push(k.into());
        }
        Ok(Self {
            command,
            binary,
            ready,
        })
    }

    fn spawn(&self) -> std::io::Result<Child> {
        Command::new(&self.binary)
            .args(&self.command)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
    }

    /// Runs the agent until `stop`, restarting it when it exits; then stops it with SIGTERM
    /// (SIGKILL after 10 s).
    pub async fn supervise(self, stop: CancellationToken) {
        let mut failures = 0u32;
        tokio::select! {
            () = self.ready.cancelled() => {}
            () = stop.cancelled() => return,
        }
        loop {
            let mut child = match self.spawn() {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, binary = %self.binary.display(), "cannot start the agent");
                    return;
                }
            };
            info!(pid = child.id(), "all-in-one: agent started");
            tokio::select! {
                status = child.wait() => {
                    failures += 1;
                    let delay = Duration::from_secs(u64::from(failures.min(30)));
                    warn!(status = ?status.ok(), retry_in = ?delay, "all-in-one: the agent exited; restarting it");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue,
                        () = stop.cancelled() => return,
                    }
                }
                () = stop.cancelled() => {
                    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                        // SAFETY: sending a signal to our own child process.
                        unsafe { libc::kill(pid, libc::SIGTERM) };
                    }
                    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                        Ok(_) => info!("all-in-one: agent stopped"),
                        Err(_) => {
                            warn!("all-in-one: the agent did not stop within 10 s; killing it");
                            let _ = child.kill().await;
                        }
                    }
                    return;
                }
            }
        }
    }
}
