//! Structured replies from the NBD front end, checked from outside the
//! process over a raw socket: the negotiation, a read alone in flight
//! arriving in pieces that cover it exactly, a refused read answered in an
//! error chunk (never a simple reply, which the spec forbids for `READ`
//! once structured replies are on), and a block damaged on the device
//! failing only the piece that holds it, with its offset and a message.
//! The real clients that negotiate them (`nbdcopy`, `qemu-img`, `qemu-io`)
//! are in `nbd_clients.rs`.

use reinc_tests::nbd::{ChunkBody, NbdServer, RawNbd, pattern, spec};
use reinc_tests::{DISK_BLOCKS, Rig};
use std::os::unix::fs::FileExt;
use storage_core::BLOCK_SIZE;

const SIZE: u64 = DISK_BLOCKS * BLOCK_SIZE as u64;
/// The front end's piece of a read alone in flight (`PIECE_BLOCKS`).
const PIECE: u64 = 128 << 10;

fn setup(tag: &str, extra: &[&str]) -> (Rig, NbdServer) {
    let mut rig = Rig::new(tag, &[("heartbeat-misses", "5")]);
    rig.start();
    let nbd = NbdServer::start(&rig, extra);
    (rig, nbd)
}

/// The bytes of a reply's data chunks put in place, checking that they
/// lie inside `offset..offset + len`, do not overlap, and cover it.
fn assemble(chunks: &[reinc_tests::nbd::Chunk], offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut covered = vec![false; len];
    for c in chunks {
        if let ChunkBody::Data { offset: o, data } = &c.body {
            assert!(*o >= offset && *o + data.len() as u64 <= offset + len as u64, "a chunk outside the read");
            let at = (*o - offset) as usize;
            assert!(covered[at..at + data.len()].iter().all(|c| !c), "overlapping chunks");
            covered[at..at + data.len()].fill(true);
            out[at..at + data.len()].copy_from_slice(data);
        }
    }
    assert!(covered.iter().all(|c| *c), "the data chunks do not cover the read");
    out
}

#[test]
fn a_read_alone_in_flight_arrives_in_pieces_that_cover_it_exactly() {
    let (rig, nbd) = setup("nbd-sr-pieces", &[]);
    // With data, the option is malformed; the negotiation goes on.
    let mut c = RawNbd::connect(&nbd.socket);
    c.flags();
    c.option(spec::OPT_STRUCTURED_REPLY, b"x");
    assert_eq!(c.opt_reply().1, spec::REP_ERR_INVALID, "STRUCTURED_REPLY with data");
    drop(c);
    let (mut c, n) = RawNbd::go_structured(&nbd.socket);
    assert_eq!(n.size, SIZE);
    let data = pattern(SIZE as usize, 7);
    // Writes keep simple replies (allowed: they carry no data).
    assert_eq!(c.write(1, 0, &data), 0);
    c.request(spec::READ, 0, 2, 0, SIZE as u32, &[]);
    let chunks = c.chunks(2);
    assert_eq!(chunks.len() as u64, SIZE / PIECE, "one chunk per 128 KiB piece: {chunks:?}");
    for (i, ch) in chunks.iter().enumerate() {
        let ChunkBody::Data { offset, data } = &ch.body else { panic!("not data: {ch:?}") };
        assert_eq!((*offset % BLOCK_SIZE as u64, data.len() as u64), (0, PIECE), "piece {i}");
        assert_eq!(ch.done, i + 1 == chunks.len(), "only the last chunk is marked done");
    }
    assert_eq!(assemble(&chunks, 0, SIZE as usize), data, "the pieces put together are the data");
    // A small read is one chunk, done.
    c.request(spec::READ, 0, 3, 4096, 512, &[]);
    let one = c.chunks(3);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].body, ChunkBody::Data { offset: 4096, data: data[4096..4608].to_vec() });
    assert_eq!(rig.status().generation, 1, "nothing crashed; log:\n{}", rig.log());
    assert!(nbd.log().contains("structured replies"), "the connection says which replies it uses:\n{}", nbd.log());
}

#[test]
fn a_refused_read_gets_an_error_chunk_with_a_message_never_a_simple_reply() {
    let (_rig, nbd) = setup("nbd-sr-refused", &[]);
    let (mut c, _) = RawNbd::go_structured(&nbd.socket);
    for (cookie, offset, len, what) in
        [(10u64, 100u64, 512u32, "an unaligned offset"), (11, SIZE, 512, "past the end"), (12, 0, 0, "zero length")]
    {
        c.request(spec::READ, 0, cookie, offset, len, &[]);
        let chunks = c.chunks(cookie);
        assert_eq!(chunks.len(), 1, "{what}: {chunks:?}");
        match &chunks[0].body {
            ChunkBody::Error { errno, message, offset: None } => {
                assert_eq!(*errno, spec::EINVAL, "{what}");
                assert!(message.contains("EINVAL"), "{what}: {message:?}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // The connection goes on.
    c.request(spec::READ, 0, 13, 0, 512, &[]);
    assert!(matches!(c.chunks(13)[..], [reinc_tests::nbd::Chunk { done: true, body: ChunkBody::Data { .. }, .. }]));
}

#[test]
fn a_block_damaged_on_the_device_fails_only_its_piece_and_the_chunk_names_its_offset() {
    let (rig, nbd) = setup("nbd-sr-damage", &[]);
    let (mut c, _) = RawNbd::go_structured(&nbd.socket);
    let data = pattern(SIZE as usize, 11);
    assert_eq!(c.write(1, 0, &data), 0);
    // A byte of block 600, in the third 128 KiB piece (blocks 512..768).
    let disk = std::fs::OpenOptions::new().read(true).write(true).open(rig.disk()).unwrap();
    let at = (1 + 600) * BLOCK_SIZE as u64 + 17;
    let mut b = [0u8; 1];
    disk.read_exact_at(&mut b, at).unwrap();
    disk.write_all_at(&[b[0] ^ 0x04], at).unwrap();
    c.request(spec::READ, 0, 2, 0, SIZE as u32, &[]);
    let chunks = c.chunks(2);
    let errors: Vec<_> = chunks.iter().filter(|c| matches!(c.body, ChunkBody::Error { .. })).collect();
    assert_eq!(errors.len(), 1, "{chunks:?}");
    let ChunkBody::Error { errno, message, offset } = &errors[0].body else { unreachable!() };
    assert_eq!((*errno, *offset), (spec::EIO, Some(2 * PIECE)), "the failed piece, by offset");
    assert!(message.contains("block 600 does not match its checksum"), "{message}");
    // Every other piece arrived, with the right bytes.
    let mut pieces = 0;
    for ch in &chunks {
        if let ChunkBody::Data { offset, data: d } = &ch.body {
            assert_ne!(*offset, 2 * PIECE, "the damaged piece was not sent as data");
            assert_eq!(&data[*offset as usize..*offset as usize + d.len()], &d[..]);
            pieces += 1;
        }
    }
    assert_eq!(pieces as u64, SIZE / PIECE - 1);
    assert_eq!(rig.status().generation, 1, "a damaged block is an answer, not a crash");
}

#[test]
fn with_simple_replies_configured_structured_replies_are_refused_and_reads_stay_simple() {
    let (_rig, nbd) = setup("nbd-sr-off", &["--simple-replies"]);
    let mut c = RawNbd::connect(&nbd.socket);
    c.flags();
    c.option(spec::OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(c.opt_reply().1, spec::REP_ERR_UNSUP);
    let n = c.info(spec::OPT_GO, "");
    assert_eq!(n.size, SIZE);
    assert_eq!(c.read(1, 0, 4096).map(|d| d.len()), Ok(4096), "a simple reply with the data");
    assert_eq!(c.read(2, 100, 512), Err(spec::EINVAL), "a simple error reply");
}

#[test]
fn write_zeroes_and_trim_leave_zeros_that_read_back_checked_and_apply_once() {
    let (rig, nbd) = setup("nbd-zeroes", &[]);
    let (mut c, n) = RawNbd::go(&nbd.socket);
    assert_ne!(n.flags & (1 << 6), 0, "SEND_WRITE_ZEROES advertised");
    assert_ne!(n.flags & (1 << 5), 0, "SEND_TRIM advertised");
    let data = pattern(SIZE as usize, 5);
    assert_eq!(c.write(1, 0, &data), 0);
    let applied = rig.superblock().applied_count;
    // WRITE_ZEROES with NO_HOLE and FUA over 3 blocks; TRIM over 2 more.
    c.request(spec::WRITE_ZEROES, 0b11, 2, 1024, 1536, &[]);
    assert_eq!(c.reply(), (0, 2));
    c.request(spec::TRIM, 0, 3, 8192, 1024, &[]);
    assert_eq!(c.reply(), (0, 3));
    let mut want = data.clone();
    want[1024..2560].fill(0);
    want[8192..9216].fill(0);
    // Read back through the driver-checked path: the zeroed blocks verify
    // ("never written" tags), the others keep their checksums.
    assert_eq!(c.read(4, 0, SIZE as u32), Ok(want.clone()));
    assert_eq!(reinc_tests::nbd::export_bytes(&rig, 0, SIZE as usize), want, "on the device");
    assert_eq!(rig.superblock().applied_count, applied + 2, "one storage zero request each");
    assert_eq!(rig.status().generation, 1);
}
