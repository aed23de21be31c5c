//! The journal reader (`reinc_supervisor::journal::parse`), fuzzed two ways.
//!
//! - [`file()`] takes its input as a whole journal file: header, frame headers,
//!   checksums, padding and torn tails are what it mutates, so it exercises
//!   the framing and the two recovery policies.
//! - [`records`] takes its input as record payloads (a length byte, then that
//!   many bytes, repeated) and frames each with a correct length, checksum
//!   and padding. Almost every mutation of a whole file is stopped by its
//!   checksum; framed here, the payloads reach the postcard decoder and the
//!   recovery fold ([`Image::apply`]) that a corrupt disk (or a bug in the
//!   writer) would reach.
//!
//! The invariants asserted are the reader's contract:
//! - the two policies agree: what `refuse` accepts, `truncate` accepts
//!   unchanged; what `refuse` refuses at offset N, `truncate` cuts at N;
//! - a cut is clean: the first `valid_bytes` of the file, read again under
//!   `refuse`, give the same image;
//! - the damage offset lies inside the file, on a frame boundary;
//! - what was recovered survives a compaction: the image written as one
//!   snapshot (what the writer does next) reads back as the same image.

use crate::{Outcome, distinct, frames};
use reinc_supervisor::config::JournalRecovery;
use reinc_supervisor::journal::{
    self, ALIGN, FRAME_BYTES, HEADER_BYTES, Image, JournalError, Loaded, Record, header, padded,
};
use std::path::Path;

const PATH: &str = "/fuzz/supervisor.journal";

/// The checks every parse result must pass; returns its label.
fn check(bytes: &[u8]) -> Outcome {
    let path = Path::new(PATH);
    let refused = journal::parse(path, bytes, JournalRecovery::Refuse);
    let cut = journal::parse(path, bytes, JournalRecovery::Truncate);
    match (&refused, &cut) {
        (Err(JournalError::Header { .. }), Err(JournalError::Header { .. })) => return "header".into(),
        (Ok(r), Ok(t)) => {
            assert!(t.truncated.is_none(), "truncate cut a journal that refuse accepted: {:?}", t.truncated);
            assert_eq!(r.image, t.image, "the policies disagree on an intact journal");
            assert_eq!((r.records, r.valid_bytes, r.unconfirmed), (t.records, t.valid_bytes, t.unconfirmed));
        }
        (Err(e), Ok(t)) => {
            let offset = match e {
                JournalError::TornTail { offset, .. } | JournalError::Corrupt { offset, .. } => *offset,
                other => panic!("refuse failed with {other} on bytes in memory"),
            };
            assert!(offset >= HEADER_BYTES as u64 && offset < bytes.len() as u64, "damage offset {offset} outside");
            assert_eq!(offset % ALIGN as u64, 0, "damage offset {offset} is not a frame boundary");
            assert!(e.to_string().starts_with(&format!("journal {PATH}: ")), "error does not name the file: {e}");
            assert_eq!(t.truncated.as_deref(), Some(e.to_string().as_str()), "truncate reported other damage");
            assert_eq!(t.valid_bytes, offset, "truncate cut elsewhere than the damage");
        }
        (r, t) => panic!("the policies disagree: refuse {r:?}, truncate {t:?}"),
    }
    let t = cut.expect("checked above");
    assert!(t.valid_bytes + t.unconfirmed <= bytes.len() as u64);
    if t.unconfirmed > 0 {
        assert_eq!(t.valid_bytes + t.unconfirmed, bytes.len() as u64, "an unconfirmed batch is the end");
    }
    let kept = usize::try_from(t.valid_bytes).expect("within the input");
    let again = journal::parse(path, &bytes[..kept], JournalRecovery::Refuse).expect("the kept prefix is intact");
    assert_eq!((&again.image, again.records), (&t.image, t.records), "the kept prefix reads differently");
    compacts(&t.image);
    label(&refused, &t)
}

/// The image, written as a compaction writes it (its snapshot and its
/// detached sessions) at the start of a new journal, reads back as itself.
fn compacts(image: &Image) {
    let mut file = header().to_vec();
    let records = journal::snapshot_records(image.clone());
    for r in &records {
        file.extend_from_slice(&journal::frame(r));
    }
    let back = journal::parse(Path::new(PATH), &file, JournalRecovery::Refuse).expect("a fresh snapshot reads back");
    assert_eq!(&back.image, image, "the image does not survive a compaction");
    assert_eq!(back.records, records.len() as u64);
}

fn label(refused: &Result<Loaded, JournalError>, t: &Loaded) -> Outcome {
    let how = match refused {
        Ok(_) if t.unconfirmed > 0 => "ok+unconfirmed".to_owned(),
        Ok(_) => "ok".to_owned(),
        Err(JournalError::TornTail { .. }) => "torn".to_owned(),
        // "checksum", "length", "does": bounded, unlike the numbers behind.
        Err(JournalError::Corrupt { what, .. }) => format!("corrupt:{}", what.split(' ').next().unwrap_or("")),
        Err(other) => format!("{other:?}").split([' ', '{']).next().unwrap_or("").to_owned(),
    };
    let shape = format!(
        "s{}d{}p{}",
        t.image.sessions.len().min(2),
        t.image.drivers.len().min(2),
        t.image.drivers.iter().map(|d| d.pending.len()).sum::<usize>().min(2)
    );
    format!("{how}:{}:{shape}", t.records.min(3))
}

/// Input as a whole journal file.
pub fn file(data: &[u8]) -> Outcome {
    check(data)
}

/// Input as record payloads, each framed correctly behind a valid header.
pub fn records(data: &[u8]) -> Outcome {
    let payloads = frames(data);
    let mut file = header().to_vec();
    for p in &payloads {
        file.extend_from_slice(&(p.len() as u32).to_le_bytes());
        file.extend_from_slice(&crc32fast::hash(p).to_le_bytes());
        file.extend_from_slice(p);
        file.resize(file.len() + padded(p.len()) - p.len(), 0);
    }
    debug_assert_eq!(file.len() % ALIGN, 0);
    let mut kinds = vec![check(&file)];
    // What each payload is, decoded on its own: a payload the reader took
    // must decode and re-encode to the same record.
    for p in &payloads {
        if p.is_empty() {
            // Length 0 and the CRC of nothing (0): the unconfirmed-batch
            // marker, never a record (no record encodes to nothing).
            kinds.push("empty".into());
            break;
        }
        match postcard::from_bytes::<Record>(p) {
            Ok(r) => {
                let again: Record = postcard::from_bytes(&journal::frame(&r)[FRAME_BYTES..]).expect("re-decodes");
                assert_eq!(again, r, "a record does not survive re-encoding");
                kinds.push(format!("{r:?}").split([' ', '(', '{']).next().unwrap_or("").to_owned());
            }
            Err(_) => {
                kinds.push("undecodable".into());
                break;
            }
        }
    }
    distinct(kinds)
}

/// Valid journals to start from.
#[must_use]
pub fn seeds() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    use reinc_proto::{CallError, ClientId, RequestId};
    use reinc_supervisor::journal::{Answer, DriverImage, PendingImage, SessionImage};
    let rid = |seq| RequestId { client: ClientId(0xfeed_0000_0000_0001), seq };
    let image = Image {
        sessions: vec![SessionImage { client: rid(0).client, floor: 2, cache: vec![(2, Answer::Reply(vec![1, 2]))] }],
        drivers: vec![DriverImage {
            name: "storage_driver".into(),
            checkpoint: Some(vec![9; 12]),
            pending: vec![PendingImage { rid: rid(3), body: vec![4; 40] }],
        }],
        lifetimes: 3,
        detached: Vec::new(),
    };
    let recs = vec![
        Record::Snapshot(image),
        Record::Session { client: ClientId(7) },
        Record::SessionDetached { client: ClientId(7) },
        Record::SessionAttached { client: ClientId(7) },
        Record::SessionForgotten { client: ClientId(7) },
        Record::Accepted { driver: "storage_driver".into(), rid: rid(4), body: vec![0xab; 33], floor: 3 },
        Record::Answered {
            driver: "storage_driver".into(),
            rid: rid(3),
            commit: Some(vec![1; 12]),
            answer: Answer::Reply(b"ok".to_vec()),
            cached: true,
        },
        Record::Answered {
            driver: "storage_driver".into(),
            rid: rid(4),
            commit: None,
            answer: Answer::Failed(CallError::DriverFailed),
            cached: false,
        },
    ];
    let whole = |rs: &[Record]| {
        let mut f = header().to_vec();
        for r in rs {
            f.extend_from_slice(&journal::frame(r));
        }
        f
    };
    let good = whole(&recs);
    let mut files = vec![good.clone(), whole(&recs[..1]), header().to_vec()];
    // Torn: the last record cut short.
    files.push(good[..good.len() - 5].to_vec());
    // Corrupt: a payload bit flipped in the second record.
    let mut flipped = good.clone();
    flipped[HEADER_BYTES + journal::frame(&recs[0]).len() + FRAME_BYTES + 1] ^= 0x10;
    files.push(flipped);
    // Unconfirmed: a last batch whose first frame header is still zero.
    let mut unconfirmed = whole(&recs[..3]);
    let mut batch = journal::frame(&recs[3]);
    batch[..FRAME_BYTES].fill(0);
    unconfirmed.extend_from_slice(&batch);
    files.push(unconfirmed);
    // The record payloads, for `records`: a length byte, then the payload.
    let mut payloads = Vec::new();
    for r in &recs[1..] {
        let p = postcard::to_allocvec(r).expect("records encode");
        payloads.push(u8::try_from(p.len()).expect("seed records are short"));
        payloads.extend_from_slice(&p);
    }
    (files, vec![payloads])
}
