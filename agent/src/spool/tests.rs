use super::*;

fn opts(max: u64) -> SpoolOptions {
    SpoolOptions {
        max_bytes: max,
        sync: false,
    }
}

fn pos(key: &str, state: &str) -> Vec<Position> {
    vec![Position {
        key: key.into(),
        state: state.into(),
    }]
}

fn open(dir: &Path, max: u64) -> Spool {
    Spool::open(dir, opts(max), Arc::new(Stats::default())).expect("open spool")
}

fn drain(spool: &Spool, cursor: &mut Cursor) -> Vec<Record> {
    std::iter::from_fn(|| spool.next(cursor).expect("read")).collect()
}

#[test]
fn records_and_positions_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open(dir.path(), 1 << 30);
        for i in 0..5u64 {
            s.append(Kind::Logs, 1, pos("file:a", &i.to_string()), |seq| {
                vec![format!("payload {seq}").into_bytes()]
            })
            .expect("append");
        }
        let mut c = Cursor::default();
        let got = drain(&s, &mut c);
        assert_eq!(got.len(), 5);
        s.ack(got[1].seq).expect("ack");
    }
    let s = open(dir.path(), 1 << 30);
    assert_eq!(s.position("file:a").as_deref(), Some("4"));
    let mut c = Cursor::default();
    let got = drain(&s, &mut c);
    let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![3, 4, 5], "records after the ack mark are resent");
    assert_eq!(got[0].payloads, vec![b"payload 3".to_vec()]);
    // New records continue the numbering, so idempotency ids never repeat.
    let seq = s.append(Kind::Logs, 1, vec![], |_| vec![]).expect("append");
    assert_eq!(seq, 6);
}

#[test]
fn a_torn_tail_is_cut_off_and_earlier_records_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open(dir.path(), 1 << 30);
        for i in 0..3u64 {
            s.append(Kind::Audit, 1, pos("k", &i.to_string()), |_| {
                vec![vec![7; 100]]
            })
            .expect("append");
        }
    }
    let seg = fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .expect("segment")
        .path();
    let len = fs::metadata(&seg).expect("meta").len();
    // A crash in the middle of the third record's write.
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .set_len(len - 10)
        .expect("truncate");
    let s = open(dir.path(), 1 << 30);
    assert_eq!(
        s.position("k").as_deref(),
        Some("1"),
        "the torn record's position is not taken"
    );
    let mut c = Cursor::default();
    assert_eq!(drain(&s, &mut c).len(), 2);
    let seq = s
        .append(Kind::Audit, 1, pos("k", "2"), |_| vec![vec![1]])
        .expect("append");
    assert_eq!(
        seq, 3,
        "the torn record's number is reused: it never reached the server"
    );
    assert_eq!(drain(&s, &mut c).len(), 1);
}

#[test]
fn acked_segments_are_deleted_after_the_positions_are_saved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path(), 512 << 10); // 64 KiB segments
    let mut c = Cursor::default();
    for i in 0..40u64 {
        s.append(Kind::Logs, 10, pos("f", &i.to_string()), |_| {
            vec![vec![0; 10_000]]
        })
        .expect("append");
        for r in drain(&s, &mut c) {
            s.ack(r.seq).expect("ack");
        }
    }
    let segs = fs::read_dir(dir.path())
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        })
        .count();
    assert_eq!(
        segs, 0,
        "nothing is left on disk once everything is delivered"
    );
    drop(s);
    let s = open(dir.path(), 512 << 10);
    assert_eq!(s.position("f").as_deref(), Some("39"));
    assert_eq!(s.pending(), 0);
}

#[test]
fn a_full_buffer_drops_the_oldest_records_and_counts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stats = Arc::new(Stats::default());
    let s = Spool::open(dir.path(), opts(512 << 10), Arc::clone(&stats)).expect("open");
    for i in 0..100u64 {
        s.append(Kind::Logs, 3, pos("f", &i.to_string()), |_| {
            vec![vec![0; 10_000]]
        })
        .expect("append");
    }
    let bytes = s.bytes();
    assert!(
        bytes <= (512 << 10) + (64 << 10),
        "buffer holds {bytes} bytes"
    );
    let dropped = stats.dropped_records.load(Ordering::Relaxed);
    assert!(dropped > 0);
    assert_eq!(stats.dropped_items.load(Ordering::Relaxed), dropped * 3);
    let mut c = Cursor::default();
    let left = drain(&s, &mut c);
    assert_eq!(
        left.len() as u64 + dropped,
        100,
        "every record is either sent or counted as dropped"
    );
    assert_eq!(
        left.last().map(|r| r.seq),
        Some(100),
        "the newest records are kept"
    );
    drop(s);
    // The positions of dropped records are not lost: the source does not re-read them.
    let s = open(dir.path(), 512 << 10);
    assert_eq!(s.position("f").as_deref(), Some("99"));
}

#[test]
fn forgetting_a_position_removes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path(), 1 << 30);
    s.append(Kind::Logs, 0, pos("gone", "1"), |_| vec![])
        .expect("append");
    s.append(Kind::Logs, 0, pos("gone", ""), |_| vec![])
        .expect("append");
    assert_eq!(s.position("gone"), None);
    drop(s);
    assert_eq!(open(dir.path(), 1 << 30).position("gone"), None);
}
