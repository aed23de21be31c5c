extern crate std;

use super::*;
use reinc_proto::{ClientId, RequestId};
use std::{vec, vec::Vec};

const BLOCKS: u64 = 16;

fn id(seq: u64) -> RequestId {
    RequestId { client: ClientId(7), seq }
}

fn ram() -> Vec<u8> {
    vec![0u8; region_bytes(BLOCKS) as usize]
}

fn pattern(blocks: usize, seed: u8) -> Vec<u8> {
    (0..blocks * BLOCK_SIZE).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Owned copy of a reply, so outcomes from different buffers compare (read
/// data moves to the second field, the first becomes `Nop`).
fn owned(reply: &StorageReply<'_>) -> (StorageReply<'static>, Vec<u8>) {
    let r = match *reply {
        StorageReply::Data(d) => return (StorageReply::Nop, d.to_vec()),
        StorageReply::DataChecked { data, tags } => return (StorageReply::Flushed, [data, tags].concat()),
        StorageReply::FilledTagged { tags, .. } => return (StorageReply::Flushed, tags.to_vec()),
        StorageReply::Nop => StorageReply::Nop,
        StorageReply::Flushed => StorageReply::Flushed,
        StorageReply::Geometry { blocks, block_size } => StorageReply::Geometry { blocks, block_size },
        StorageReply::Written { lba, blocks } => StorageReply::Written { lba, blocks },
        StorageReply::Appended { lba, blocks } => StorageReply::Appended { lba, blocks },
        StorageReply::Error(e) => StorageReply::Error(e),
        StorageReply::Filled { lba, blocks } => StorageReply::Filled { lba, blocks },
        StorageReply::Zeroed { lba, blocks } => StorageReply::Zeroed { lba, blocks },
    };
    (r, Vec::new())
}

fn run(
    dev: &mut Storage<RamRegion<'_>>,
    state: &StorageState,
    seq: u64,
    req: StorageRequest<'_>,
) -> (StorageState, (StorageReply<'static>, Vec<u8>), Effect) {
    let mut buf = vec![0u8; MAX_REPLY_DATA];
    let o = dev.handle(state, id(seq), &req, &mut buf).expect("RAM region never fails");
    (o.state, owned(&o.reply), o.effect)
}

fn sb_of(region: &[u8]) -> Superblock {
    Superblock::decode(&region[..BLOCK_SIZE]).unwrap().unwrap()
}

#[test]
fn write_then_read_returns_the_data() {
    let mut mem = ram();
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let data = pattern(3, 1);
    let (s1, reply, effect) = run(&mut dev, &StorageState::default(), 1, StorageRequest::Write { lba: 5, data: &data });
    assert_eq!(reply.0, StorageReply::Written { lba: 5, blocks: 3 });
    assert_eq!(effect, Effect::Applied);
    assert_eq!(s1, StorageState { append_cursor: 0, writes: 1 });
    let (s2, reply, effect) = run(&mut dev, &s1, 2, StorageRequest::Read { lba: 5, blocks: 3 });
    assert_eq!((s2, effect), (s1, Effect::None));
    assert_eq!(reply.1, data);
    // Client block 5 is region block 6: block 0 is the superblock.
    assert_eq!(&mem[6 * BLOCK_SIZE..9 * BLOCK_SIZE], &data[..]);
    assert_eq!(sb_of(&mem).applied_count, 1);
}

#[test]
fn appends_follow_the_committed_cursor() {
    let mut mem = ram();
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let (s1, r1, _) = run(&mut dev, &StorageState::default(), 1, StorageRequest::Append { data: &pattern(2, 3) });
    let (s2, r2, _) = run(&mut dev, &s1, 2, StorageRequest::Append { data: &pattern(1, 4) });
    assert_eq!(r1.0, StorageReply::Appended { lba: 0, blocks: 2 });
    assert_eq!(r2.0, StorageReply::Appended { lba: 2, blocks: 1 });
    assert_eq!(s2, StorageState { append_cursor: 3, writes: 2 });
    assert_eq!(&mem[3 * BLOCK_SIZE..4 * BLOCK_SIZE], &pattern(1, 4)[..]);
}

#[test]
fn nop_and_geometry_touch_nothing() {
    let mut mem = ram();
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let s = StorageState { append_cursor: 4, writes: 9 };
    assert_eq!(run(&mut dev, &s, 1, StorageRequest::Nop), (s, (StorageReply::Nop, Vec::new()), Effect::None));
    let geo = StorageReply::Geometry { blocks: BLOCKS, block_size: 512 };
    assert_eq!(run(&mut dev, &s, 2, StorageRequest::Geometry), (s, (geo, Vec::new()), Effect::None));
    assert_eq!(sb_of(&mem).applied_count, 0);
}

#[test]
fn flush_changes_no_state_and_replays_to_the_same_reply() {
    let mut mem = ram();
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let s = StorageState { append_cursor: 2, writes: 3 };
    let first = run(&mut dev, &s, 7, StorageRequest::Flush);
    assert_eq!(first, (s, (StorageReply::Flushed, Vec::new()), Effect::None));
    // A replay of the same flush (same id, same state) is the same outcome.
    assert_eq!(run(&mut dev, &s, 7, StorageRequest::Flush), first);
    assert_eq!(sb_of(&mem).applied_count, 0, "a flush is not a write");
}

#[test]
fn every_refusal_is_a_deterministic_error_that_writes_nothing() {
    let mut mem = ram();
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let s = StorageState { append_cursor: BLOCKS - 1, writes: 0 };
    let big = pattern(65, 0);
    let cases: [(StorageRequest<'_>, StorageError); 9] = [
        (StorageRequest::Read { lba: 0, blocks: 0 }, StorageError::Empty),
        (StorageRequest::Read { lba: 0, blocks: 65 }, StorageError::TooLarge { blocks: 65 }),
        (StorageRequest::Read { lba: 15, blocks: 2 }, StorageError::OutOfRange { lba: 15, blocks: 2, capacity: 16 }),
        (
            StorageRequest::Read { lba: u64::MAX, blocks: 1 },
            StorageError::OutOfRange { lba: u64::MAX, blocks: 1, capacity: 16 },
        ),
        (StorageRequest::Write { lba: 0, data: &[] }, StorageError::Empty),
        (StorageRequest::Write { lba: 0, data: &[1; 100] }, StorageError::Unaligned { len: 100 }),
        (StorageRequest::Write { lba: 0, data: &big }, StorageError::TooLarge { blocks: 65 }),
        (
            StorageRequest::Write { lba: 16, data: &[1; 512] },
            StorageError::OutOfRange { lba: 16, blocks: 1, capacity: 16 },
        ),
        (StorageRequest::Append { data: &[1; 1024] }, StorageError::NoSpace { cursor: 15, blocks: 2, capacity: 16 }),
    ];
    for (seq, (req, err)) in cases.into_iter().enumerate() {
        let first = run(&mut dev, &s, seq as u64, req);
        assert_eq!(first, (s, (StorageReply::Error(err), Vec::new()), Effect::None), "{req:?}");
        assert_eq!(run(&mut dev, &s, seq as u64, req), first, "replay of {req:?}");
    }
    assert_eq!(sb_of(&mem).applied_count, 0);
    assert!(mem[BLOCK_SIZE..].iter().all(|&b| b == 0));
}

#[test]
fn malformed_body_is_a_bad_request_not_a_panic() {
    assert_eq!(decode_request(&[0xFF, 0xFF]), Err(StorageError::BadRequest));
    assert_eq!(decode_request(&[]), Err(StorageError::BadRequest));
    let mut body = postcard::to_allocvec(&StorageRequest::Geometry).unwrap();
    assert_eq!(decode_request(&body), Ok(StorageRequest::Geometry));
    body.push(0);
    assert_eq!(decode_request(&body), Err(StorageError::BadRequest), "trailing bytes");
}

#[test]
fn reply_buffer_too_small_is_a_host_error() {
    let mut mem = ram();
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let mut small = [0u8; 100];
    let err = dev.handle(&StorageState::default(), id(1), &StorageRequest::Read { lba: 0, blocks: 1 }, &mut small);
    assert!(matches!(err, Err(HandleError::ReplyBuffer { need: 512, have: 100 })));
}

/// A RAM region that "crashes" (fails) on the first superblock write after
/// being armed: the data write before it has happened, the watermark has not.
struct CrashBeforeSuperblock<'a> {
    inner: RamRegion<'a>,
    armed: bool,
}

impl Region for CrashBeforeSuperblock<'_> {
    type Error = OutOfBounds;
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        self.inner.read_at(off, buf)
    }
    fn write_at(&mut self, off: u64, data: &[u8]) -> Result<(), OutOfBounds> {
        if off == 0 && self.armed {
            return Err(OutOfBounds { off, len: data.len(), size: 0 });
        }
        self.inner.write_at(off, data)
    }
}

/// Runs W1 (committed), then W2 to completion on a fresh device: the model.
fn reference(req2: StorageRequest<'_>) -> (Vec<u8>, StorageState, (StorageReply<'static>, Vec<u8>)) {
    let mut mem = ram();
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let w1 = pattern(2, 9);
    let (s1, _, _) = run(&mut dev, &StorageState::default(), 1, StorageRequest::Append { data: &w1 });
    let (s2, r2, e2) = run(&mut dev, &s1, 2, req2);
    assert_eq!(e2, Effect::Applied);
    (mem, s2, r2)
}

fn replays(req2: StorageRequest<'_>) {
    let (model_mem, model_state, model_reply) = reference(req2);
    let w1 = pattern(2, 9);

    // (a) crash after the data write, before the superblock update.
    let mut mem = ram();
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let (s1, _, _) = run(&mut dev, &StorageState::default(), 1, StorageRequest::Append { data: &w1 });
    let mut crashing =
        Storage::open(CrashBeforeSuperblock { inner: RamRegion(&mut mem), armed: true }, BLOCKS).unwrap();
    let mut buf = vec![0u8; MAX_REPLY_DATA];
    assert!(matches!(crashing.handle(&s1, id(2), &req2, &mut buf), Err(HandleError::Io { off: 0, .. })));
    assert_eq!(sb_of(&mem).applied_count, 1, "watermark not advanced by the crashed attempt");
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let (s2, r2, e2) = run(&mut dev, &s1, 2, req2);
    assert_eq!((s2, &r2, e2), (model_state, &model_reply, Effect::Applied), "(a) applies once");
    assert_eq!(mem, model_mem, "(a) region equals the model");
    assert_eq!(sb_of(&mem).applied_count, 2);

    // (b) crash after the superblock update, before the reply: replay from s1 again.
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let (s2b, r2b, e2b) = run(&mut dev, &s1, 2, req2);
    assert_eq!((s2b, &r2b, e2b), (model_state, &model_reply, Effect::AlreadyApplied), "(b) skips the effect");
    assert_eq!(mem, model_mem, "(b) region equals the model");
    assert_eq!(sb_of(&mem).applied_count, 2, "(b) counted once");
    assert_eq!(sb_of(&mem).last_applied, Some(id(2)));
}

#[test]
fn replay_of_write_after_crash_before_and_after_superblock_update() {
    replays(StorageRequest::Write { lba: 7, data: &pattern(4, 77) });
}

#[test]
fn replay_of_append_lands_on_the_same_blocks() {
    replays(StorageRequest::Append { data: &pattern(3, 55) });
}

#[test]
fn a_new_request_after_a_replayed_one_applies_normally() {
    let mut mem = ram();
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let data = pattern(1, 1);
    let (s1, _, _) = run(&mut dev, &StorageState::default(), 1, StorageRequest::Write { lba: 0, data: &data });
    let (_, _, e) = run(&mut dev, &StorageState::default(), 1, StorageRequest::Write { lba: 0, data: &data });
    assert_eq!(e, Effect::AlreadyApplied);
    let (_, _, e) = run(&mut dev, &s1, 2, StorageRequest::Write { lba: 0, data: &data });
    assert_eq!(e, Effect::Applied);
    assert_eq!(dev.superblock().applied_count, 2);
}

#[test]
fn reused_request_id_on_a_later_committed_state_is_applied_not_skipped() {
    // A supervisor restart may hand out the same client id again; with its
    // persisted checkpoint the committed state has moved on, so the old
    // watermark must not swallow the new request.
    let mut mem = ram();
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let (s1, _, _) = run(&mut dev, &StorageState::default(), 1, StorageRequest::Write { lba: 0, data: &pattern(1, 1) });
    let new = pattern(1, 2);
    let (_, reply, e) = run(&mut dev, &s1, 1, StorageRequest::Write { lba: 0, data: &new });
    assert_eq!((reply.0, e), (StorageReply::Written { lba: 0, blocks: 1 }, Effect::Applied));
    assert_eq!(&mem[BLOCK_SIZE..2 * BLOCK_SIZE], &new[..]);
}

/// Issue 13, item 2: a supervisor that kept no checkpoint hands the next
/// instance the initial state; its appends must follow the device's cursor,
/// not start over at block 0.
#[test]
fn appends_without_a_checkpoint_follow_the_cursor_kept_on_the_device() {
    let mut mem = ram();
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let (s1, _, _) = run(&mut dev, &StorageState::default(), 1, StorageRequest::Append { data: &pattern(2, 1) });
    let (_, _, _) = run(&mut dev, &s1, 2, StorageRequest::Write { lba: 9, data: &pattern(1, 2) });
    // A new lifetime: the committed state is lost, the device is not.
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let fresh = StorageState::default();
    let new = RequestId { client: ClientId(99), seq: 1 };
    let mut buf = vec![0u8; MAX_REPLY_DATA];
    let o = dev.handle(&fresh, new, &StorageRequest::Append { data: &pattern(1, 3) }, &mut buf).unwrap();
    assert_eq!((o.reply, o.effect), (StorageReply::Appended { lba: 2, blocks: 1 }, Effect::Applied));
    assert_eq!(o.state, StorageState { append_cursor: 3, writes: 1 });
    assert_eq!(&mem[BLOCK_SIZE..3 * BLOCK_SIZE], &pattern(2, 1)[..], "the old appends are intact");
    assert_eq!((sb_of(&mem).last_cursor, sb_of(&mem).append_cursor), (2, 3));
}

/// The same after a crash of the new instance between effect and reply: the
/// replay lands on the block the first attempt chose, not one further.
#[test]
fn replay_of_an_append_resolved_against_the_device_lands_on_the_same_blocks() {
    let mut mem = ram();
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    run(&mut dev, &StorageState::default(), 1, StorageRequest::Append { data: &pattern(3, 1) });
    let fresh = StorageState::default();
    let new = RequestId { client: ClientId(99), seq: 1 };
    let req = StorageRequest::Append { data: &pattern(2, 4) };
    let mut buf = vec![0u8; MAX_REPLY_DATA];
    let first = dev.handle(&fresh, new, &req, &mut buf).unwrap();
    let (first_state, first_reply) = (first.state, owned(&first.reply));
    assert_eq!(first_reply.0, StorageReply::Appended { lba: 3, blocks: 2 });
    let after = mem.clone();
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let again = dev.handle(&fresh, new, &req, &mut buf).unwrap();
    assert_eq!((again.state, owned(&again.reply), again.effect), (first_state, first_reply, Effect::AlreadyApplied));
    assert_eq!(mem, after, "the replay wrote nothing");
}

#[test]
fn a_damaged_cursor_extension_is_refused() {
    let mut mem = ram();
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    run(&mut dev, &StorageState::default(), 1, StorageRequest::Append { data: &pattern(1, 1) });
    mem[70] ^= 1;
    assert!(matches!(
        Storage::open(RamRegion(&mut mem), BLOCKS),
        Err(OpenError::Superblock(SuperblockError::Checksum { .. }))
    ));
}

#[test]
fn open_formats_a_blank_region_and_reopens_it() {
    let mut mem = ram();
    let dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    assert_eq!(dev.blocks(), BLOCKS);
    assert_eq!(
        sb_of(&mem),
        Superblock {
            blocks: BLOCKS,
            last_applied: None,
            last_base: 0,
            applied_count: 0,
            last_cursor: 0,
            append_cursor: 0
        }
    );
    assert!(Storage::open(RamRegion(&mut mem), BLOCKS).is_ok());
}

#[test]
fn open_refuses_foreign_damaged_resized_and_small_regions_untouched() {
    let mut mem = ram();
    mem[0..4].copy_from_slice(b"\x7fELF");
    let before = mem.clone();
    assert!(matches!(Storage::open(RamRegion(&mut mem), BLOCKS), Err(OpenError::Superblock(SuperblockError::Foreign))));
    assert_eq!(mem, before, "foreign data is left untouched");

    let mut mem = ram();
    Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    mem[20] ^= 1;
    assert!(matches!(
        Storage::open(RamRegion(&mut mem), BLOCKS),
        Err(OpenError::Superblock(SuperblockError::Checksum { .. }))
    ));

    let mut mem = ram();
    Storage::open(RamRegion(&mut mem), BLOCKS - 1).unwrap();
    assert!(matches!(
        Storage::open(RamRegion(&mut mem), BLOCKS),
        Err(OpenError::Superblock(SuperblockError::Geometry { found: 15, expected: 16 }))
    ));

    // 16 data blocks, the superblock and one block of tags (integrity.rs).
    let mut mem = vec![0u8; 4 * BLOCK_SIZE];
    assert!(matches!(Storage::open(RamRegion(&mut mem), BLOCKS), Err(OpenError::TooSmall { need: 9216, .. })));
    assert!(matches!(Storage::open(RamRegion(&mut mem), 0), Err(OpenError::NoBlocks)));
}

#[test]
fn checkpoint_beyond_the_device_is_refused() {
    let mut mem = ram();
    let dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    assert!(dev.check_state(&StorageState { append_cursor: BLOCKS, writes: 3 }).is_ok());
    assert_eq!(
        dev.check_state(&StorageState { append_cursor: BLOCKS + 1, writes: 3 }),
        Err(StateError { append_cursor: 17, capacity: 16 })
    );
}

#[test]
fn messages_round_trip_through_postcard() {
    let data = pattern(1, 2);
    for req in [
        StorageRequest::Nop,
        StorageRequest::Geometry,
        StorageRequest::Read { lba: 3, blocks: 2 },
        StorageRequest::Write { lba: 1, data: &data },
        StorageRequest::Append { data: &data },
    ] {
        let bytes = postcard::to_allocvec(&req).unwrap();
        assert_eq!(decode_request(&bytes), Ok(req));
    }
    let reply = StorageReply::Data(&data);
    let bytes = postcard::to_allocvec(&reply).unwrap();
    assert_eq!(postcard::from_bytes::<StorageReply<'_>>(&bytes).unwrap(), reply);
}

mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Write { lba: u64, blocks: u16, seed: u8 },
        Append { blocks: u16, seed: u8 },
        Read { lba: u64, blocks: u16 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..BLOCKS + 2, 0u16..5, any::<u8>()).prop_map(|(lba, blocks, seed)| Op::Write { lba, blocks, seed }),
            (0u16..4, any::<u8>()).prop_map(|(blocks, seed)| Op::Append { blocks, seed }),
            (0..BLOCKS + 2, 0u16..5).prop_map(|(lba, blocks)| Op::Read { lba, blocks }),
        ]
    }

    proptest! {
        /// Any op sequence, with every op replayed once more right after it
        /// (as after a crash between effect and reply), matches a flat model
        /// and counts each accepted write exactly once.
        #[test]
        fn replayed_sequences_match_a_flat_model(ops in proptest::collection::vec(op(), 1..40)) {
            let mut mem = ram();
            let mut model = vec![0u8; BLOCKS as usize * BLOCK_SIZE];
            let mut state = StorageState::default();
            let mut accepted = 0u64;
            for (seq, op) in ops.iter().enumerate() {
                let data;
                let req = match *op {
                    Op::Write { lba, blocks, seed } => {
                        data = pattern(blocks.into(), seed);
                        StorageRequest::Write { lba, data: &data }
                    }
                    Op::Append { blocks, seed } => {
                        data = pattern(blocks.into(), seed);
                        StorageRequest::Append { data: &data }
                    }
                    Op::Read { lba, blocks } => StorageRequest::Read { lba, blocks },
                };
                let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
                let first = run(&mut dev, &state, seq as u64, req);
                let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
                let again = run(&mut dev, &state, seq as u64, req);
                prop_assert_eq!(&first.0, &again.0);
                prop_assert_eq!(&first.1, &again.1);
                match (req, first.1.0) {
                    (StorageRequest::Write { data, .. } | StorageRequest::Append { data }, StorageReply::Written { lba, .. } | StorageReply::Appended { lba, .. }) => {
                        let at = lba as usize * BLOCK_SIZE;
                        model[at..at + data.len()].copy_from_slice(data);
                        accepted += 1;
                        prop_assert_eq!(again.2, Effect::AlreadyApplied);
                    }
                    (StorageRequest::Read { lba, blocks }, StorageReply::Nop) => {
                        let at = lba as usize * BLOCK_SIZE;
                        prop_assert_eq!(&first.1.1[..], &model[at..at + usize::from(blocks) * BLOCK_SIZE]);
                    }
                    (_, StorageReply::Error(_)) => prop_assert_eq!(first.2, Effect::None),
                    (r, other) => prop_assert!(false, "unexpected reply {:?} to {:?}", other, r),
                }
                state = first.0;
            }
            prop_assert_eq!(&mem[BLOCK_SIZE..BLOCK_SIZE + model.len()], &model[..]);
            prop_assert_eq!(sb_of(&mem).applied_count, accepted);
            prop_assert_eq!(state.writes, accepted);
        }
    }
}

#[test]
fn trace_ring_records_what_the_device_did() {
    let mut mem = ram();
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let data = pattern(1, 3);
    let s0 = StorageState::default();
    let (s1, _, _) = run(&mut dev, &s0, 1, StorageRequest::Write { lba: 2, data: &data });
    run(&mut dev, &s0, 1, StorageRequest::Write { lba: 2, data: &data }); // replay
    run(&mut dev, &s1, 2, StorageRequest::Read { lba: 2, blocks: 1 });
    run(&mut dev, &s1, 3, StorageRequest::Nop);
    run(&mut dev, &s1, 4, StorageRequest::Read { lba: 99, blocks: 1 });
    run(&mut dev, &s1, 5, StorageRequest::Read { lba: 99, blocks: 1 });
    let got: Vec<(Trace, u32)> = dev.trace().iter().map(|e| (e.payload, e.count)).collect();
    let refused = Trace::Refused(StorageError::OutOfRange { lba: 99, blocks: 1, capacity: BLOCKS });
    assert_eq!(
        got,
        [
            (Trace::Formatted { blocks: BLOCKS }, 1),
            (Trace::Applied { lba: 2, blocks: 1 }, 1),
            (Trace::AlreadyApplied { lba: 2, blocks: 1 }, 1),
            (Trace::Read { lba: 2, blocks: 1 }, 1),
            (refused, 2),
        ]
    );
    assert_eq!(refused.event(), reinc_ringbuf::Event::Driver { code: 0x5106, a: 5, b: 99 });
    assert_eq!(Trace::Applied { lba: 2, blocks: 1 }.event(), reinc_ringbuf::Event::Driver { code: 0x5103, a: 2, b: 1 });
    let reopened = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    assert_eq!(reopened.trace().last().map(|e| e.payload), Some(Trace::Opened { applied_count: 1 }));
}

/// The superblock bytes of format version 1 (32-bit client id), built field
/// by field: regions formatted before protocol version 2 keep opening.
#[test]
fn version_1_superblocks_keep_opening() {
    let sb = Superblock {
        blocks: 0x0102_0304,
        last_applied: Some(id(0x55)),
        last_base: 9,
        applied_count: 12,
        last_cursor: 0,
        append_cursor: 0,
    };
    let mut want = [0u8; BLOCK_SIZE];
    want[0..8].copy_from_slice(b"REINCBLK");
    want[8..12].copy_from_slice(&1u32.to_le_bytes());
    want[12..16].copy_from_slice(&512u32.to_le_bytes());
    want[16..24].copy_from_slice(&0x0102_0304u64.to_le_bytes());
    want[24..32].copy_from_slice(&12u64.to_le_bytes());
    want[32] = 1;
    want[33..37].copy_from_slice(&7u32.to_le_bytes());
    want[37..45].copy_from_slice(&0x55u64.to_le_bytes());
    want[45..53].copy_from_slice(&9u64.to_le_bytes());
    let crc = crc32fast::hash(&want[..60]);
    want[60..64].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(Superblock::decode(&want), Ok(Some(sb)));
}

/// The superblock bytes of format `version`, built field by field from the
/// layout in `superblock.rs` (versions 2 and 3 share it).
fn documented_superblock(version: u32) -> (Superblock, [u8; BLOCK_SIZE]) {
    let client = ClientId(0x0102_0304_0506_0708);
    let sb = Superblock {
        blocks: 0x0102_0304,
        last_applied: Some(RequestId { client, seq: 0x55 }),
        last_base: 9,
        applied_count: 12,
        last_cursor: 0x33,
        append_cursor: 0x35,
    };
    let mut want = [0u8; BLOCK_SIZE];
    want[0..8].copy_from_slice(b"REINCBLK");
    want[8..12].copy_from_slice(&version.to_le_bytes());
    want[12..16].copy_from_slice(&512u32.to_le_bytes());
    want[16..24].copy_from_slice(&0x0102_0304u64.to_le_bytes());
    want[24..32].copy_from_slice(&12u64.to_le_bytes());
    want[32] = 1;
    want[33..41].copy_from_slice(&client.0.to_le_bytes());
    want[41..49].copy_from_slice(&0x55u64.to_le_bytes());
    want[49..57].copy_from_slice(&9u64.to_le_bytes());
    let crc = crc32fast::hash(&want[..60]);
    want[60..64].copy_from_slice(&crc.to_le_bytes());
    want[64..72].copy_from_slice(&0x33u64.to_le_bytes());
    want[72..80].copy_from_slice(&0x35u64.to_le_bytes());
    let crc = crc32fast::hash(&want[..80]);
    want[80..84].copy_from_slice(&crc.to_le_bytes());
    (sb, want)
}

/// What this version writes (3) follows the documented layout.
#[test]
fn superblock_bytes_follow_the_documented_layout() {
    let (sb, want) = documented_superblock(3);
    assert_eq!(sb.encode(), want);
    assert_eq!(Superblock::decode(&want), Ok(Some(sb)));
}

/// Regions formatted before the tag table (version 2) keep decoding.
#[test]
fn version_2_superblocks_keep_decoding() {
    let (sb, want) = documented_superblock(2);
    assert_eq!(Superblock::decode(&want), Ok(Some(sb)));
}

#[test]
fn zero_clears_blocks_and_their_tags_and_a_replay_does_not_apply_twice() {
    let mut mem = ram();
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let data = pattern(4, 9);
    let (s1, ..) = run(&mut dev, &StorageState::default(), 1, StorageRequest::Write { lba: 2, data: &data });
    let (s2, reply, effect) = run(&mut dev, &s1, 2, StorageRequest::Zero { lba: 3, blocks: 2 });
    assert_eq!((reply.0, effect), (StorageReply::Zeroed { lba: 3, blocks: 2 }, Effect::Applied));
    assert_eq!(s2, StorageState { append_cursor: 0, writes: 2 }, "a write for the state too");
    // A checked read of the range: blocks 3 and 4 are zeros with tag 0
    // ("never written"), 2 and 5 keep their data and tags; it verifies.
    let (_, read, _) = run(&mut dev, &s2, 3, StorageRequest::ReadChecked { lba: 2, blocks: 4 });
    let (got, tags) = read.1.split_at(4 * BLOCK_SIZE);
    assert_eq!(&got[..BLOCK_SIZE], &data[..BLOCK_SIZE]);
    assert!(got[BLOCK_SIZE..3 * BLOCK_SIZE].iter().all(|b| *b == 0));
    assert_eq!(&got[3 * BLOCK_SIZE..], &data[3 * BLOCK_SIZE..]);
    assert_eq!(crate::integrity::verify(2, got, tags), Ok(()));
    assert_eq!(&tags[4..12], &[0; 8], "zeroed blocks are 'never written'");
    // The same request replayed on the same committed state (a crash after
    // it applied, before the commit): not applied again.
    let (s3, again, effect) = run(&mut dev, &s1, 2, StorageRequest::Zero { lba: 3, blocks: 2 });
    assert_eq!((s3, again.0, effect), (s2, StorageReply::Zeroed { lba: 3, blocks: 2 }, Effect::AlreadyApplied));
    // The trace ring shows it as a write, applied and then recognised.
    let traced: Vec<Trace> = dev.trace().iter().map(|e| e.payload).collect();
    assert!(
        traced.ends_with(&[Trace::Applied { lba: 3, blocks: 2 }, Trace::AlreadyApplied { lba: 3, blocks: 2 }]),
        "{traced:?}"
    );
    let _ = dev.into_region();
    assert_eq!(sb_of(&mem).applied_count, 2);
}

#[test]
fn zero_refuses_empty_oversized_and_out_of_range_requests_and_writes_nothing() {
    let mut mem = ram();
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let s = StorageState::default();
    let cases = [
        (StorageRequest::Zero { lba: 0, blocks: 0 }, StorageError::Empty),
        (
            StorageRequest::Zero { lba: 0, blocks: crate::MAX_ZERO_BLOCKS + 1 },
            StorageError::TooLarge { blocks: crate::MAX_ZERO_BLOCKS + 1 },
        ),
        (StorageRequest::Zero { lba: 15, blocks: 2 }, StorageError::OutOfRange { lba: 15, blocks: 2, capacity: 16 }),
        (
            StorageRequest::Zero { lba: u64::MAX, blocks: 1 },
            StorageError::OutOfRange { lba: u64::MAX, blocks: 1, capacity: 16 },
        ),
    ];
    for (i, (req, err)) in cases.into_iter().enumerate() {
        let (state, reply, effect) = run(&mut dev, &s, 10 + i as u64, req);
        assert_eq!((state, reply.0, effect), (s, StorageReply::Error(err), Effect::None), "{req:?}");
    }
    let _ = dev.into_region();
    assert_eq!(sb_of(&mem).applied_count, 0);
}

#[test]
fn zero_has_fixed_wire_bytes_after_every_older_request() {
    assert_eq!(postcard::to_allocvec(&StorageRequest::Zero { lba: 1, blocks: 2 }).unwrap(), [10, 1, 2]);
    assert_eq!(postcard::to_allocvec(&StorageReply::Zeroed { lba: 1, blocks: 2 }).unwrap(), [10, 1, 2]);
}
