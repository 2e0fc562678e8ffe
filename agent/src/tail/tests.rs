use std::io::Write as _;

use super::*;
use crate::spool::{Cursor, Spool, SpoolOptions};
use crate::stats::Stats;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A context over the spool in this directory (a new one is a restarted agent).
    fn ctx(&self) -> Arc<Context> {
        let stats = Arc::new(Stats::default());
        let spool = Spool::open(
            &self.dir.path().join("state"),
            SpoolOptions {
                max_bytes: 1 << 30,
                sync: false,
            },
            Arc::clone(&stats),
        )
        .expect("spool");
        Arc::new(Context {
            spool,
            stats,
            agent_id: "agent".into(),
            hostname: "web-1".into(),
            ip_address: "10.0.0.1".into(),
        })
    }

    fn source(&self, ctx: &Arc<Context>, extra: &str) -> FileSource {
        let glob = self.path("*.log").to_string_lossy().into_owned();
        self.source_for(ctx, &glob, extra)
    }

    fn source_for(&self, ctx: &Arc<Context>, glob: &str, extra: &str) -> FileSource {
        let start = if extra.contains("start_position") {
            ""
        } else {
            "start_position = \"beginning\""
        };
        let cfg: FileConfig =
            toml::from_str(&format!("path = {glob:?}\n{start}\n{extra}")).expect("config");
        let mut s = FileSource::new(0, cfg, Arc::clone(ctx), Duration::ZERO).expect("source");
        s.set_waits(Waits {
            multi_line: Duration::ZERO,
            partial_line: Duration::from_secs(3600),
            rotated: Duration::ZERO,
        });
        s
    }

    fn append(&self, name: &str, text: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(name))
            .expect("open");
        f.write_all(text).expect("write");
    }
}

/// Everything written to the spool since the last call: (group, stream, message, timestamp).
fn sent(ctx: &Context) -> Vec<(String, String, String, i64)> {
    let mut cursor = Cursor::default();
    let mut out = Vec::new();
    while let Some(r) = ctx.spool.next(&mut cursor).expect("read") {
        for p in &r.payloads {
            let req = PutLogEventsRequest::decode(p.as_slice()).expect("decode");
            assert!(req.idempotency_id.starts_with(&format!("agent-{}-", r.seq)));
            for e in req.log_events {
                out.push((
                    req.log_group_name.clone(),
                    req.log_stream_name.clone(),
                    e.message,
                    e.timestamp_ms,
                ));
            }
        }
        ctx.spool.ack(r.seq).expect("ack");
    }
    out
}

fn messages(ctx: &Context) -> Vec<String> {
    sent(ctx).into_iter().map(|e| e.2).collect()
}

fn run(s: &mut FileSource) {
    s.scan();
    while s.poll() {}
    s.poll();
}

#[test]
fn a_restart_resumes_after_the_last_batch() {
    let t = Setup::new();
    t.append("app.log", b"one\ntwo\nthree\n");
    let ctx = t.ctx();
    let mut s = t.source(&ctx, "");
    run(&mut s);
    assert_eq!(messages(&ctx), ["one", "two", "three"]);
    drop(s);
    drop(ctx);
    t.append("app.log", b"four\nfive\n");
    let ctx = t.ctx();
    let mut s = t.source(&ctx, "");
    run(&mut s);
    assert_eq!(
        messages(&ctx),
        ["four", "five"],
        "nothing read twice, nothing skipped"
    );
}

#[test]
fn group_and_stream_placeholders() {
    let t = Setup::new();
    t.append("api.log", b"x\n");
    let ctx = t.ctx();
    let mut s = t.source(
        &ctx,
        "log_group = \"/apps/{hostname}\"\nlog_stream = \"{file_name}:{instance_id}\"",
    );
    run(&mut s);
    let got = sent(&ctx);
    assert_eq!(got[0].0, "/apps/web-1");
    assert_eq!(
        got[0].1, "api.log_web-1",
        "`:` is not allowed in a stream name"
    );
    // The CloudWatch agent's default group: the path up to its last dot.
    assert_eq!(
        default_group(Path::new("/tmp/TestLogFile.log.2017-07-11-14")),
        "/tmp/TestLogFile.log"
    );
    assert_eq!(
        default_group(Path::new("/var/log/syslog")),
        "/var/log/syslog"
    );
}

#[test]
fn rotation_by_rename_loses_and_repeats_nothing() {
    let t = Setup::new();
    let glob = t.path("app.log").to_string_lossy().into_owned();
    t.append("app.log", b"a1\na2\n");
    let ctx = t.ctx();
    let mut s = t.source_for(&ctx, &glob, "");
    run(&mut s);
    // The writer still has the old file open when it is renamed, and writes a last line.
    let mut old = std::fs::OpenOptions::new()
        .append(true)
        .open(t.path("app.log"))
        .expect("open");
    std::fs::rename(t.path("app.log"), t.path("app.log.1")).expect("rename");
    old.write_all(b"a3\n").expect("write");
    t.append("app.log", b"b1\nb2\n");
    run(&mut s);
    run(&mut s);
    let mut got = messages(&ctx);
    got.sort();
    assert_eq!(got, ["a1", "a2", "a3", "b1", "b2"]);
}

#[test]
fn rotation_while_the_agent_is_down_is_caught_up() {
    let t = Setup::new();
    let glob = t.path("app.log").to_string_lossy().into_owned();
    t.append("app.log", b"a1\n");
    {
        let ctx = t.ctx();
        let mut s = t.source_for(&ctx, &glob, "");
        run(&mut s);
        assert_eq!(messages(&ctx), ["a1"]);
    }
    t.append("app.log", b"a2\n");
    std::fs::rename(t.path("app.log"), t.path("app.log.1")).expect("rename");
    t.append("app.log", b"b1\n");
    let ctx = t.ctx();
    let mut s = t.source_for(&ctx, &glob, "");
    run(&mut s);
    let mut got = messages(&ctx);
    got.sort();
    assert_eq!(got, ["a2", "b1"]);
}

#[test]
fn copytruncate_starts_the_file_over() {
    let t = Setup::new();
    t.append("app.log", b"first line of the old content\nsecond\n");
    let ctx = t.ctx();
    let mut s = t.source(&ctx, "");
    run(&mut s);
    assert_eq!(messages(&ctx).len(), 2);
    std::fs::copy(t.path("app.log"), t.path("app.log.1.gz")).expect("copy");
    std::fs::OpenOptions::new()
        .write(true)
        .open(t.path("app.log"))
        .expect("open")
        .set_len(0)
        .expect("truncate");
    // More is written after the truncation than was there before: only the fingerprint shows it.
    t.append(
        "app.log",
        b"NEW content that is longer than before\nand more\nand more\n",
    );
    run(&mut s);
    assert_eq!(
        messages(&ctx),
        [
            "NEW content that is longer than before",
            "and more",
            "and more"
        ]
    );
}

#[test]
fn multi_line_events_by_start_pattern_and_by_indentation() {
    let t = Setup::new();
    t.append(
        "app.log",
        b"2025-01-01 10:00:00 ERROR boom\njava.lang.Error\n  at A.b(A.java:1)\n2025-01-01 10:00:01 INFO ok\n",
    );
    let ctx = t.ctx();
    let mut s = t.source(&ctx, "multi_line_start_pattern = '^\\d{4}-'");
    run(&mut s);
    assert_eq!(
        messages(&ctx),
        [
            "2025-01-01 10:00:00 ERROR boom\njava.lang.Error\n  at A.b(A.java:1)",
            "2025-01-01 10:00:01 INFO ok"
        ]
    );
    let t = Setup::new();
    t.append("app.log", b"Traceback:\n  File x\n    raise\nnext\n");
    let ctx = t.ctx();
    let mut s = t.source(&ctx, "");
    run(&mut s);
    assert_eq!(messages(&ctx), ["Traceback:\n  File x\n    raise", "next"]);
}

#[test]
fn timestamps_come_from_the_line_else_the_read_time() {
    let t = Setup::new();
    t.append("app.log", b"2025-11-22T10:11:12Z started\nno time here\n");
    let ctx = t.ctx();
    let mut s = t.source(
        &ctx,
        "timestamp_format = '%Y-%m-%dT%H:%M:%SZ'\ntimezone = 'UTC'",
    );
    let before = now_ms();
    run(&mut s);
    let got = sent(&ctx);
    assert_eq!(got[0].3, 1_763_806_272_000);
    assert!(
        got[1].3 >= before,
        "a line without a timestamp takes the read time"
    );
}

#[test]
fn long_lines_are_cut_or_split_and_bad_utf8_replaced() {
    let t = Setup::new();
    let long = "é".repeat(100); // 200 bytes
    t.append("app.log", format!("{long}\nshort\n").as_bytes());
    t.append("app.log", b"bad \xff\xfe bytes\n");
    let ctx = t.ctx();
    let mut s = t.source(&ctx, "max_event_bytes = 64");
    run(&mut s);
    let got = messages(&ctx);
    assert_eq!(got[0], format!("{}{TRUNCATED_MARK}", "é".repeat(32)));
    assert_eq!(got[1], "short");
    assert_eq!(got[2], "bad \u{fffd}\u{fffd} bytes");

    let t = Setup::new();
    t.append("app.log", format!("{long}\nshort\n").as_bytes());
    let ctx = t.ctx();
    let mut s = t.source(&ctx, "max_event_bytes = 64\nlong_lines = 'split'");
    run(&mut s);
    let got = messages(&ctx);
    assert_eq!(
        got.concat(),
        format!("{long}short"),
        "split pieces put together give the line"
    );
    assert!(got.iter().all(|m| m.len() <= 64));
    assert!(got.len() >= 5);
}

#[test]
fn start_at_end_applies_only_to_files_there_at_the_first_start() {
    let t = Setup::new();
    t.append("old.log", b"history\n");
    let ctx = t.ctx();
    let mut s = t.source(&ctx, "start_position = 'end'");
    run(&mut s);
    t.append("old.log", b"new in old\n");
    t.append("later.log", b"first of later\n");
    run(&mut s);
    let mut got = messages(&ctx);
    got.sort();
    assert_eq!(got, ["first of later", "new in old"]);
    // After a restart the first-start rule no longer applies.
    drop(s);
    drop(ctx);
    t.append("third.log", b"third\n");
    let ctx = t.ctx();
    let mut s = t.source(&ctx, "start_position = 'end'");
    run(&mut s);
    assert_eq!(messages(&ctx), ["third"]);
}

#[test]
fn filters_drop_lines_but_move_the_checkpoint() {
    let t = Setup::new();
    t.append("app.log", b"GET /health 200\nGET /api 500\nDEBUG x\n");
    let ctx = t.ctx();
    let mut s = t.source(
        &ctx,
        "[[filters]]\ntype = 'exclude'\nexpression = '/health'\n[[filters]]\ntype = 'include'\nexpression = '^GET'",
    );
    run(&mut s);
    assert_eq!(messages(&ctx), ["GET /api 500"]);
    drop(s);
    let ctx = t.ctx();
    let mut s = t.source(&ctx, "");
    run(&mut s);
    assert!(
        messages(&ctx).is_empty(),
        "filtered lines are not read again after a restart"
    );
}

#[test]
fn a_line_without_newline_waits_for_it() {
    let t = Setup::new();
    t.append("app.log", b"complete\nhalf a ");
    let ctx = t.ctx();
    let mut s = t.source(&ctx, "");
    run(&mut s);
    assert_eq!(messages(&ctx), ["complete"]);
    t.append("app.log", b"line\n");
    run(&mut s);
    assert_eq!(messages(&ctx), ["half a line"]);
}

#[test]
fn symbolic_links_are_not_followed_unless_configured() {
    let t = Setup::new();
    let outside = tempfile::tempdir().expect("tempdir");
    let secret = outside.path().join("shadow");
    std::fs::write(&secret, b"root:secret-hash\n").expect("write");
    std::os::unix::fs::symlink(&secret, t.path("evil.log")).expect("symlink");
    t.append("app.log", b"plain\n");
    let ctx = t.ctx();
    let mut s = t.source(&ctx, "");
    run(&mut s);
    assert_eq!(messages(&ctx), ["plain"], "the link's target was read");
    let mut s = t.source_for(
        &ctx,
        &t.path("evil.log").to_string_lossy(),
        "follow_symlinks = true",
    );
    run(&mut s);
    assert_eq!(messages(&ctx), ["root:secret-hash"]);
}
