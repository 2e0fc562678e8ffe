use std::io::Write as _;
use std::sync::Mutex as StdMutex;

use super::*;

#[derive(Default)]
struct Recorder(StdMutex<Vec<u64>>);

impl Applier for Recorder {
    fn apply(&self, record: WalRecord, _: Option<crate::ingest::Prepared>) -> u64 {
        self.0.lock().expect("lock").push(record.seq);
        0
    }
}

fn config(dir: &Path) -> WalConfig {
    WalConfig {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 30,
        segment_bytes: 1 << 20,
        idempotency_window: Duration::from_secs(3600),
        fsync: true,
    }
}

fn record(id: &str) -> WalRecord {
    WalRecord {
        tenant: "t".into(),
        kind: 2,
        idempotency_id: id.into(),
        received_ms: now_ms(),
        accepted: 3,
        ..Default::default()
    }
}

fn open(cfg: WalConfig) -> (Wal, Replay, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let (wal, replay) = Wal::open(
        cfg,
        Arc::clone(&rec) as Arc<dyn Applier>,
        Arc::new(Metrics::default()),
    )
    .expect("open");
    (wal, replay, rec)
}

#[tokio::test]
async fn appended_records_are_applied_and_replayed_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, replay, rec) = open(config(dir.path()));
        assert!(replay.records.is_empty());
        for i in 0..5 {
            let resp = wal
                .append(record(&format!("r{i}")), None)
                .await
                .expect("append");
            assert_eq!(resp.accepted, 3);
            assert!(!resp.duplicate);
        }
        assert_eq!(*rec.0.lock().expect("lock"), vec![1, 2, 3, 4, 5]);
    }
    let (wal, replay, _) = open(config(dir.path()));
    let seqs: Vec<u64> = replay.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    // New records continue the sequence, and old ids are still known.
    let resp = wal.append(record("r2"), None).await.expect("append");
    assert!(resp.duplicate);
    assert_eq!(resp.accepted, 3);
}

#[tokio::test]
async fn concurrent_appends_share_fsyncs_and_each_id_applies_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _, rec) = open(config(dir.path()));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let wal = wal.clone();
        // Every id is sent twice at once.
        tasks.push(tokio::spawn(async move {
            wal.append(record(&format!("c{}", i % 100)), None).await
        }));
    }
    let mut duplicates = 0;
    for t in tasks {
        let resp = t.await.expect("join").expect("append");
        duplicates += usize::from(resp.duplicate);
    }
    assert_eq!(duplicates, 100);
    assert_eq!(rec.0.lock().expect("lock").len(), 100);
}

#[tokio::test]
async fn a_torn_tail_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _, _) = open(config(dir.path()));
        wal.append(record("a"), None).await.expect("append");
        wal.append(record("b"), None).await.expect("append");
    }
    let (_, path) = list_numbered(dir.path(), "wal-", ".log")
        .expect("list")
        .into_iter()
        .min()
        .expect("segment");
    let good_len = fs::metadata(&path).expect("meta").len();
    // A crash mid-write: a header promising more bytes than exist.
    let mut f = OpenOptions::new().append(true).open(&path).expect("open");
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9])
        .expect("write");
    drop(f);
    let (_, replay, _) = open(config(dir.path()));
    assert_eq!(replay.records.len(), 2);
    assert_eq!(fs::metadata(&path).expect("meta").len(), good_len);
}

#[tokio::test]
async fn corruption_before_the_tail_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _, _) = open(config(dir.path()));
        wal.append(record("a"), None).await.expect("append");
    }
    {
        // Reopening starts a second segment, so the first is no longer the tail.
        let (wal, _, _) = open(config(dir.path()));
        wal.append(record("b"), None).await.expect("append");
    }
    let (_, first) = list_numbered(dir.path(), "wal-", ".log")
        .expect("list")
        .into_iter()
        .min()
        .expect("segment");
    let mut bytes = fs::read(&first).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&first, bytes).expect("write");
    let rec = Arc::new(Recorder::default());
    let err =
        Wal::open(config(dir.path()), rec, Arc::new(Metrics::default())).expect_err("corrupt");
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[tokio::test]
async fn over_budget_appends_are_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.max_bytes = 200;
    cfg.segment_bytes = 100;
    let (wal, _, _) = open(cfg);
    let mut refused = 0;
    for i in 0..20 {
        if let Err(Error::Unavailable(m)) = wal.append(record(&format!("x{i}")), None).await {
            assert!(m.contains("full"), "{m}");
            refused += 1;
        }
    }
    assert!(refused > 0, "the budget was never enforced");
    assert!(wal.total_bytes() <= 200 + 100);
}

#[tokio::test]
async fn the_servers_own_records_have_a_bounded_reserve_beyond_the_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.max_bytes = 1600;
    cfg.segment_bytes = 100;
    let (wal, _, _) = open(cfg);
    let mut i = 0;
    while wal.append(record(&format!("c{i}")), None).await.is_ok() {
        i += 1;
        assert!(i < 1000, "the budget was never enforced");
    }
    let full = wal.total_bytes();
    // Clients are refused, the server's own record still goes in...
    assert!(wal.append(record("client-again"), None).await.is_err());
    wal.append_reserved(record("self-0"), None)
        .await
        .expect("a reserved append while the log is full for clients");
    assert!(wal.total_bytes() > full);
    // ... but only up to a sixteenth of the budget more.
    let mut reserved = 1;
    while wal
        .append_reserved(record(&format!("self-{reserved}")), None)
        .await
        .is_ok()
    {
        reserved += 1;
        assert!(reserved < 1000, "the reserve was never enforced");
    }
    let one_record = (wal.total_bytes() - full) / reserved;
    assert!(
        wal.total_bytes() <= 1600 + 100 + one_record + 100,
        "{}",
        wal.total_bytes()
    );
}

#[tokio::test]
async fn truncation_deletes_committed_segments_but_remembers_their_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 1;
    {
        let (wal, _, _) = open(cfg.clone());
        for i in 0..4 {
            wal.append(record(&format!("t{i}")), None)
                .await
                .expect("append");
        }
        // seqs 1..=4, one segment each; 1..=3 are committed.
        assert_eq!(wal.truncate_below(4).expect("truncate"), 3);
    }
    let (wal, replay, _) = open(cfg);
    assert_eq!(
        replay.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![4]
    );
    let resp = wal.append(record("t1"), None).await.expect("append");
    assert!(
        resp.duplicate,
        "ids of truncated segments are still remembered"
    );
    let resp = wal.append(record("t9"), None).await.expect("append");
    assert!(!resp.duplicate);
    assert_eq!(resp.accepted, 3);
}

#[tokio::test]
async fn an_empty_last_segment_is_written_to_and_never_truncated_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    {
        let (wal, _, _) = open(cfg.clone());
        wal.append(record("a"), None).await.expect("append");
    }
    // Stopped before writing to the fresh segment it opened: that segment is empty.
    drop(open(cfg.clone()));
    {
        // Reopened: the empty segment starts at the next seq and is the one written to now.
        let (wal, replay, _) = open(cfg.clone());
        assert_eq!(replay.records.len(), 1);
        wal.append(record("b"), None).await.expect("append");
        // Everything before "b" is committed: the segment holding "a" may go, b's may not.
        wal.truncate_below(2).expect("truncate");
    }
    let (_, replay, _) = open(cfg);
    assert_eq!(
        replay.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![2],
        "the acknowledged record written after the restart is still in the log"
    );
}

#[test]
fn a_record_encoded_without_its_seq_then_completed_decodes_as_the_record_with_it() {
    for seq in [1u64, 127, 128, 1 << 40, u64::MAX] {
        let mut r = record("id-1");
        r.accepted = 3;
        let payload = with_seq(r.encode_to_vec(), seq);
        let decoded = WalRecord::decode(payload.as_slice()).expect("decode");
        r.seq = seq;
        assert_eq!(decoded, r);
        assert_eq!(decoded.encode_to_vec(), r.encode_to_vec());
    }
}

#[tokio::test]
async fn the_log_directory_is_readable_by_its_owner_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let wal_dir = dir.path().join("data/wal");
    // Even one that exists already, world-readable, from an earlier version.
    fs::create_dir_all(&wal_dir).expect("mkdir");
    fs::set_permissions(&wal_dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let (wal, _, _) = open(config(&wal_dir));
    wal.append(record("a"), None).await.expect("append");
    let mode = fs::metadata(&wal_dir).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");
}
