//! Framing, recovery folding, and the treatment of torn and corrupt journals.

use super::*;
use crate::config::JournalRecovery::{Refuse, Truncate};

fn rid(client: u64, seq: u64) -> RequestId {
    RequestId { client: ClientId(client), seq }
}

fn accepted(seq: u64) -> Record {
    Record::Accepted { driver: "d".into(), rid: rid(5, seq), body: vec![seq as u8; 3], floor: 0 }
}

fn answered(seq: u64, commit: u8) -> Record {
    Record::Answered {
        driver: "d".into(),
        rid: rid(5, seq),
        commit: Some(vec![commit]),
        answer: Answer::Reply(vec![b'r', seq as u8]),
        cached: true,
    }
}

fn file(records: &[Record]) -> Vec<u8> {
    let mut b = header().to_vec();
    for r in records {
        b.extend_from_slice(&frame(r));
    }
    b
}

const P: &str = "/state/supervisor.journal";

#[test]
fn records_fold_into_sessions_pending_requests_and_committed_state() {
    let recs = [Record::Session { client: ClientId(5) }, accepted(1), accepted(2), answered(1, 0xa1), accepted(3)];
    let l = parse(Path::new(P), &file(&recs), Refuse).unwrap();
    assert_eq!(l.records, 5);
    let d = &l.image.drivers[0];
    assert_eq!(d.checkpoint, Some(vec![0xa1]));
    assert_eq!(d.pending.iter().map(|p| p.rid.seq).collect::<Vec<_>>(), [2, 3], "in acceptance order");
    assert_eq!(l.image.sessions[0].cache, [(1, Answer::Reply(vec![b'r', 1]))]);
    // A snapshot supersedes what came before it.
    let snap = Record::Snapshot(Image::default());
    let l = parse(Path::new(P), &file(&[accepted(1), snap, accepted(9)]), Refuse).unwrap();
    assert_eq!(l.image.drivers[0].pending.len(), 1);
    assert_eq!(l.image.drivers[0].pending[0].rid.seq, 9);
}

#[test]
fn a_torn_tail_is_refused_naming_the_file_and_offset() {
    let good = file(&[accepted(1), accepted(2)]);
    let cut = &good[..good.len() - 2];
    let second = HEADER_BYTES + frame(&accepted(1)).len();
    let err = parse(Path::new(P), cut, Refuse).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "journal {P}: torn tail at offset {second} ({} of {} bytes of the last record)",
            cut.len() - second,
            good.len() - second
        )
    );
}

#[test]
fn a_torn_tail_is_cut_at_the_last_valid_record_when_configured() {
    let good = file(&[accepted(1), accepted(2)]);
    let l = parse(Path::new(P), &good[..good.len() - 2], Truncate).unwrap();
    assert_eq!(l.records, 1);
    assert_eq!(l.valid_bytes as usize, HEADER_BYTES + frame(&accepted(1)).len());
    assert!(l.truncated.unwrap().contains("torn tail at offset"));
}

#[test]
fn a_corrupt_record_in_the_middle_is_refused_with_its_offset() {
    let mut b = file(&[accepted(1), accepted(2), accepted(3)]);
    let second = HEADER_BYTES + frame(&accepted(1)).len();
    b[second + FRAME_BYTES + 2] ^= 0x40;
    let err = parse(Path::new(P), &b, Refuse).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("journal {P}: corrupt record at offset {second}: checksum mismatch")), "{msg}");
    // Truncation keeps the records before the damage only.
    let l = parse(Path::new(P), &b, Truncate).unwrap();
    assert_eq!(l.image.drivers[0].pending.len(), 1);
}

#[test]
fn a_file_that_is_not_a_journal_is_refused() {
    let err = parse(Path::new(P), b"REINCCKP\x01\0\0\0\0\0\0\0\0\0\0\0", Refuse).unwrap_err();
    assert_eq!(err.to_string(), format!("journal {P}: not a version-2 reinc journal (bad header)"));
    // An absurd length is damage, not an allocation.
    let mut b = header().to_vec();
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    assert!(parse(Path::new(P), &b, Refuse).unwrap_err().to_string().contains("exceeds"));
}

#[test]
fn the_writer_group_commits_and_a_snapshot_replaces_the_file() {
    let dir = scratch("unit");
    let p = path(&dir);
    let w = writer::Writer::start(&p, &Image::default()).unwrap();
    for seq in 1..=50 {
        w.send(writer::ToWriter { lsn: seq, bytes: frame(&accepted(seq)), snapshot: false });
    }
    let mut upto = 0;
    let mut batches = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while upto < 50 && std::time::Instant::now() < deadline {
        for r in w.drain() {
            if let writer::FromWriter::Durable { upto: u, .. } = r {
                upto = upto.max(u);
                batches += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(upto, 50);
    assert!(batches <= 50, "one report per batch");
    let l = load(&p, Refuse, 1 << 20).unwrap();
    assert_eq!(l.records, 51, "the initial snapshot and 50 records");
    // A snapshot: the file holds it and what follows only.
    let mut image = l.image.clone();
    image.drivers[0].pending.truncate(2);
    w.send(writer::ToWriter { lsn: 51, bytes: frame(&Record::Snapshot(image.clone())), snapshot: true });
    w.send(writer::ToWriter { lsn: 52, bytes: frame(&accepted(60)), snapshot: false });
    let reports = w.finish(std::time::Duration::from_secs(10));
    assert!(reports.iter().any(|r| matches!(r, writer::FromWriter::Durable { upto: 52, .. })), "{reports:?}");
    let l = load(&p, Refuse, 1 << 20).unwrap();
    assert_eq!(l.records, 2);
    image.apply(accepted(60));
    assert_eq!(l.image, image);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn frames_are_aligned_so_no_header_crosses_a_page() {
    for n in [0usize, 1, 7, 8, 9, 100, 4095] {
        let r = Record::Accepted { driver: "d".into(), rid: rid(1, 1), body: vec![1; n], floor: 0 };
        assert_eq!(frame(&r).len() % ALIGN, 0, "{n}");
    }
    assert_eq!(HEADER_BYTES % ALIGN, 0);
    assert_eq!(4096 % ALIGN, 0);
}

/// What a SIGKILL in the middle of a batch's write leaves: the batch with
/// its first header still zero (written last). It ends the journal quietly,
/// under "refuse" too: it was never confirmed to anyone.
#[test]
fn an_unconfirmed_batch_ends_the_journal_and_is_not_damage() {
    let mut b = file(&[accepted(1)]);
    let batch = [frame(&accepted(2)), frame(&accepted(3))].concat();
    let mut unconfirmed = batch.clone();
    unconfirmed[..FRAME_BYTES].fill(0);
    // Cut anywhere inside, or complete: the same result.
    for cut in [FRAME_BYTES, batch.len() / 2, batch.len()] {
        let mut f = b.clone();
        f.extend_from_slice(&unconfirmed[..cut]);
        let l = parse(Path::new(P), &f, Refuse).unwrap();
        assert_eq!((l.records, l.unconfirmed), (1, cut as u64), "cut at {cut}");
    }
    // Once its header is written, the batch counts.
    b.extend_from_slice(&batch);
    assert_eq!(parse(Path::new(P), &b, Refuse).unwrap().records, 3);
}

fn scratch(tag: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("reinc-journal-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

#[test]
fn a_journal_is_read_up_to_its_limit_and_refused_beyond_it() {
    let dir = scratch("limit");
    let p = path(&dir);
    let bytes = file(&[accepted(1), accepted(2)]);
    std::fs::write(&p, &bytes).unwrap();
    let n = bytes.len() as u64;
    assert_eq!(load(&p, Refuse, n).unwrap().records, 2, "a journal of exactly the limit is read");
    let e = load(&p, Truncate, n - 1).unwrap_err();
    assert!(matches!(e, JournalError::TooLarge { len, limit, .. } if len == n && limit == n - 1), "{e}");
    assert!(e.to_string().starts_with(&format!("journal {}: {n} bytes exceeds the {}-byte limit", p.display(), n - 1)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn only_a_regular_file_of_ours_in_a_private_directory_is_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("trust");
    let p = path(&dir);
    std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
    let e = load(&p, Truncate, 1 << 20).unwrap_err();
    assert!(matches!(e, JournalError::NotRegular { kind: "a symbolic link", .. }), "{e}");
    std::fs::remove_file(&p).unwrap();
    std::fs::create_dir(&p).unwrap();
    let e = load(&p, Truncate, 1 << 20).unwrap_err();
    assert!(matches!(e, JournalError::NotRegular { kind: "a directory", .. }), "{e}");
    std::fs::remove_dir(&p).unwrap();
    std::fs::write(&p, file(&[accepted(1)])).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o620)).unwrap();
    let e = load(&p, Truncate, 1 << 20).unwrap_err();
    assert!(matches!(e, JournalError::Writable { mode: 0o620, .. }), "{e}");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(load(&p, Refuse, 1 << 20).unwrap().records, 1);
    // The directory is checked too, and named.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o757)).unwrap();
    let e = load(&p, Refuse, 1 << 20).unwrap_err();
    assert!(matches!(e, JournalError::Directory { .. }), "{e}");
    assert!(e.to_string().contains(&format!("state directory {} has mode 0757", dir.display())), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_limit_covers_a_snapshot_within_the_budgets_and_the_compaction_threshold() {
    let text = "[[driver]]\nname = \"d\"\nexec = \"/bin/true\"\ndurability = \"journal\"\n";
    let cfg = crate::config::parse(text).unwrap();
    let limit = max_file_bytes(&cfg);
    let s = &cfg.supervisor;
    let queued = cfg.drivers[0].queue_depth as u64 * reinc_proto::MAX_BODY as u64;
    assert!(limit >= s.journal_compact_bytes + s.limits.dedup_bytes_total as u64 + queued, "{limit}");
    // Bounded: with the defaults, well below what would hurt to read.
    assert!(limit < 128 << 20, "{limit}");
    // A full image at the defaults' extremes fits: every session with its
    // whole share of cached replies, a full queue of largest bodies.
    let per_session = s.limits.dedup_bytes_total / s.max_sessions;
    let mut image = Image::default();
    for c in 0..s.max_sessions as u64 {
        let n = s.dedup_per_session as u64;
        let body = vec![0xa5; per_session / s.dedup_per_session];
        let cache = (0..n).map(|seq| (u64::MAX - seq, Answer::Reply(body.clone()))).collect();
        image.sessions.push(SessionImage { client: ClientId(u64::MAX - c), floor: u64::MAX - n, cache });
    }
    image.drivers.push(DriverImage {
        name: "d".into(),
        checkpoint: Some(vec![1; reinc_proto::MAX_CHECKPOINT]),
        pending: (0..cfg.drivers[0].queue_depth as u64)
            .map(|seq| PendingImage { rid: rid(u64::MAX, u64::MAX - seq), body: vec![2; reinc_proto::MAX_BODY] })
            .collect(),
    });
    let snapshot = frame(&Record::Snapshot(image)).len() as u64;
    assert!(HEADER_BYTES as u64 + snapshot + s.journal_compact_bytes <= limit, "{snapshot} + compaction > {limit}");
}

#[test]
fn records_sent_together_are_made_durable_in_one_batch() {
    let dir = scratch("group");
    let p = path(&dir);
    let w = writer::Writer::start(&p, &Image::default()).unwrap();
    // One event's records (Accepted ones riding ahead of an answer): the
    // thread must not start a sync with only the first of them.
    for round in 0..20u64 {
        let group = (1..=3).map(|i| {
            let lsn = round * 3 + i;
            writer::ToWriter { lsn, bytes: frame(&accepted(lsn)), snapshot: false }
        });
        w.send_all(group.collect());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut seen = Vec::new();
        while !seen.iter().any(|&(u, _)| u == round * 3 + 3) && std::time::Instant::now() < deadline {
            for r in w.drain() {
                if let writer::FromWriter::Durable { upto, records, .. } = r {
                    seen.push((upto, records));
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(seen, [(round * 3 + 3, 3)], "round {round}: the group was split or lost");
    }
    w.send_all(Vec::new());
    assert_eq!(load(&p, Refuse, 1 << 20).unwrap().records, 61, "the snapshot and 60 records");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_dump_lists_every_record_with_its_offset_and_how_the_file_ends() {
    let dir = scratch("dump");
    let p = path(&dir);
    let recs =
        [Record::Snapshot(Image::default()), Record::Session { client: ClientId(5) }, accepted(1), answered(1, 0xa1)];
    let mut bytes = file(&recs);
    // A batch never confirmed: its first frame header still zero.
    let mut tail = frame(&accepted(2));
    tail[..FRAME_BYTES].fill(0);
    bytes.extend_from_slice(&tail);
    std::fs::write(&p, &bytes).unwrap();
    let text = dump(&p).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "@16 snapshot: lifetimes 0, 0 sessions, 0 journal drivers", "{text}");
    assert!(lines[1].starts_with("@") && lines[1].ends_with(" session c5"), "{text}");
    assert!(lines[2].ends_with(" accepted d c5:1: body 3 bytes [010101], floor 0"), "{text}");
    assert!(lines[3].ends_with(" answered d c5:1: reply 2 bytes [7201], commit 1 bytes [a1], cached"), "{text}");
    assert!(lines[4].starts_with("end: 4 records in "), "{text}");
    assert!(lines[4].contains(&format!("then {} bytes of a batch never confirmed", tail.len())), "{text}");
    // Damage is shown, not refused: the reader wants to see up to it.
    let n = bytes.len() - tail.len();
    let last = n - frame(&recs[3]).len();
    bytes[last + FRAME_BYTES + 1] ^= 0xff; // in the payload, not its padding
    std::fs::write(&p, &bytes[..n]).unwrap();
    let text = dump(&p).unwrap();
    assert!(text.contains("end: 3 records") && text.contains("; then damage: journal "), "{text}");
}

#[test]
fn a_dump_of_something_that_is_not_a_journal_is_refused_naming_it() {
    let dir = scratch("dump-bad");
    let p = dir.join("notes.txt");
    std::fs::write(&p, b"not a journal at all").unwrap();
    let e = dump(&p).unwrap_err().to_string();
    assert_eq!(e, format!("journal {}: not a version-2 reinc journal (bad header)", p.display()));
    let e = dump(&dir).unwrap_err().to_string();
    assert!(e.contains(&dir.display().to_string()) && e.contains("a directory"), "{e}");
    let missing = dir.join("missing.journal");
    assert!(dump(&missing).unwrap_err().to_string().contains(&missing.display().to_string()));
    // Larger than any journal (a sparse file): refused by its size, unread.
    let huge = dir.join("huge.journal");
    std::fs::File::create(&huge).unwrap().set_len(2 * MAX_RECORD as u64 + 1).unwrap();
    let e = dump(&huge).unwrap_err().to_string();
    assert!(e.contains(&huge.display().to_string()) && e.contains("larger than any journal"), "{e}");
}
