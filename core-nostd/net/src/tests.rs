extern crate std;

use super::*;
use crate::regs::SLOT_FIXED;
use reinc_proto::ClientId;
use reinc_proto::RequestId;
use std::{vec, vec::Vec};

const SLOTS: u32 = 4;

fn id(seq: u64) -> RequestId {
    RequestId { client: ClientId(2), seq }
}

fn ram() -> Vec<u8> {
    vec![0u8; region_bytes(SLOTS) as usize]
}

/// (state, reply with packet bytes copied out, effect).
type Out = (NetState, Owned, Effect);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Sent(u64),
    Packet(u64, Vec<u8>),
    Empty,
    Stats(u64, u64, u64),
    Error(NetError),
}

fn run<R: Region>(net: &mut Net<R>, state: &NetState, seq: u64, req: NetRequest<'_>) -> Out {
    let mut buf = [0u8; MTU];
    let o = net.handle(state, id(seq), &req, &mut buf).map_err(|e| e.off).expect("region I/O");
    let r = match o.reply {
        NetReply::Sent { seq } => Owned::Sent(seq),
        NetReply::Packet { seq, data } => Owned::Packet(seq, data.to_vec()),
        NetReply::Empty => Owned::Empty,
        NetReply::Stats { sent, received, queued, capacity, mtu } => {
            assert_eq!((capacity, mtu as usize), (SLOTS, MTU));
            Owned::Stats(sent, received, queued)
        }
        NetReply::Error(e) => Owned::Error(e),
    };
    (o.state, r, o.effect)
}

fn header_of(mem: &[u8]) -> Header {
    Header::decode(mem[..HEADER_BYTES].try_into().unwrap()).unwrap().unwrap()
}

#[test]
fn sent_packets_come_back_in_order() {
    let mut mem = ram();
    let mut net = Net::open(RamRegion(&mut mem), SLOTS).unwrap();
    let mut s = NetState::default();
    for (n, pkt) in [&b"one"[..], b"two", b"three"].iter().enumerate() {
        let (next, r, e) = run(&mut net, &s, n as u64, NetRequest::Send { data: pkt });
        assert_eq!((r, e), (Owned::Sent(n as u64), Effect::Applied));
        s = next;
    }
    for (n, pkt) in [&b"one"[..], b"two", b"three"].iter().enumerate() {
        let (next, r, e) = run(&mut net, &s, 10 + n as u64, NetRequest::Recv);
        assert_eq!((r, e), (Owned::Packet(n as u64, pkt.to_vec()), Effect::None));
        s = next;
    }
    assert_eq!(run(&mut net, &s, 20, NetRequest::Recv).1, Owned::Empty);
    assert_eq!(run(&mut net, &s, 21, NetRequest::Stats).1, Owned::Stats(3, 3, 0));
    assert_eq!(net.header().applied_count, 3);
}

#[test]
fn the_ring_wraps_around_many_times() {
    let mut mem = ram();
    let mut net = Net::open(RamRegion(&mut mem), SLOTS).unwrap();
    let mut s = NetState::default();
    for n in 0..(SLOTS as u64 * 5) {
        let pkt = n.to_le_bytes();
        s = run(&mut net, &s, 2 * n, NetRequest::Send { data: &pkt }).0;
        let (next, r, _) = run(&mut net, &s, 2 * n + 1, NetRequest::Recv);
        assert_eq!(r, Owned::Packet(n, pkt.to_vec()));
        s = next;
    }
    assert_eq!(s, NetState { tx: 20, rx: 20 });
}

#[test]
fn refusals_are_deterministic_and_write_nothing() {
    let mut mem = ram();
    let mut net = Net::open(RamRegion(&mut mem), SLOTS).unwrap();
    let full = NetState { tx: 9, rx: 5 };
    let big = vec![1u8; MTU + 1];
    let cases = [
        (NetState::default(), NetRequest::Send { data: &[] }, NetError::Empty),
        (
            NetState::default(),
            NetRequest::Send { data: &big },
            NetError::TooLarge { len: MTU as u32 + 1, mtu: MTU as u32 },
        ),
        (full, NetRequest::Send { data: b"x" }, NetError::Full { capacity: SLOTS }),
    ];
    let before = header_of(net.region_bytes_for_test());
    for (seq, (s, req, err)) in cases.into_iter().enumerate() {
        let first = run(&mut net, &s, seq as u64, req);
        assert_eq!(first, (s, Owned::Error(err), Effect::None));
        assert_eq!(run(&mut net, &s, seq as u64, req), first);
    }
    assert_eq!(header_of(net.region_bytes_for_test()), before);
    assert!(mem[HEADER_BYTES..].iter().all(|&b| b == 0));
}

impl Net<RamRegion<'_>> {
    fn region_bytes_for_test(&self) -> &[u8] {
        self.region.0
    }
}

#[test]
fn malformed_body_is_a_bad_request() {
    assert_eq!(decode_request(&[0x09]), Err(NetError::BadRequest));
    let mut ok = postcard::to_allocvec(&NetRequest::Send { data: b"hi" }).unwrap();
    assert_eq!(decode_request(&ok), Ok(NetRequest::Send { data: b"hi" }));
    ok.push(1);
    assert_eq!(decode_request(&ok), Err(NetError::BadRequest));
}

#[test]
fn damaged_slot_is_reported_not_delivered() {
    let mut mem = ram();
    let mut net = Net::open(RamRegion(&mut mem), SLOTS).unwrap();
    let s = run(&mut net, &NetState::default(), 1, NetRequest::Send { data: b"payload" }).0;
    mem[HEADER_BYTES + SLOT_FIXED + 2] ^= 0xFF;
    let mut net = Net::open(RamRegion(&mut mem), SLOTS).unwrap();
    let (s2, r, _) = run(&mut net, &s, 2, NetRequest::Recv);
    assert_eq!((s2, r), (s, Owned::Error(NetError::Corrupt { seq: 0 })));
}

/// Fails the first header write after arming: the slot is written, the
/// watermark is not (a crash between the two).
struct CrashBeforeHeader<'a>(RamRegion<'a>);

impl Region for CrashBeforeHeader<'_> {
    type Error = OutOfBounds;
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        self.0.read_at(off, buf)
    }
    fn write_at(&mut self, off: u64, data: &[u8]) -> Result<(), OutOfBounds> {
        if off == 0 {
            return Err(OutOfBounds { off, len: data.len(), size: 0 });
        }
        self.0.write_at(off, data)
    }
}

#[test]
fn replayed_send_after_crash_before_and_after_the_watermark_counts_once() {
    // The model: send A, then B, uninterrupted.
    let mut model = ram();
    let mut net = Net::open(RamRegion(&mut model), SLOTS).unwrap();
    let s1 = run(&mut net, &NetState::default(), 1, NetRequest::Send { data: b"A" }).0;
    let want = run(&mut net, &s1, 2, NetRequest::Send { data: b"B" });

    let mut mem = ram();
    let mut net = Net::open(RamRegion(&mut mem), SLOTS).unwrap();
    run(&mut net, &NetState::default(), 1, NetRequest::Send { data: b"A" });
    // (a) crash between slot and watermark.
    let mut crashing = Net::open(CrashBeforeHeader(RamRegion(&mut mem)), SLOTS).unwrap();
    let mut buf = [0u8; MTU];
    assert_eq!(
        crashing.handle(&s1, id(2), &NetRequest::Send { data: b"B" }, &mut buf).map_err(|e| e.off).err(),
        Some(0)
    );
    let mut net = Net::open(RamRegion(&mut mem), SLOTS).unwrap();
    assert_eq!(net.header().applied_count, 1);
    let got = run(&mut net, &s1, 2, NetRequest::Send { data: b"B" });
    assert_eq!(got, want, "(a) applied once");
    // (b) crash after the watermark, before the reply: replay from s1.
    let mut net = Net::open(RamRegion(&mut mem), SLOTS).unwrap();
    let again = run(&mut net, &s1, 2, NetRequest::Send { data: b"B" });
    assert_eq!((again.0, &again.1, again.2), (want.0, &want.1, Effect::AlreadyApplied), "(b) skipped");
    assert_eq!(mem, model, "region equals the model");
    assert_eq!(header_of(&mem).applied_count, 2);
}

#[test]
fn reused_request_id_on_a_later_committed_state_is_a_new_packet() {
    let mut mem = ram();
    let mut net = Net::open(RamRegion(&mut mem), SLOTS).unwrap();
    let s1 = run(&mut net, &NetState::default(), 1, NetRequest::Send { data: b"old" }).0;
    let (s2, r, e) = run(&mut net, &s1, 1, NetRequest::Send { data: b"new" });
    assert_eq!((r, e), (Owned::Sent(1), Effect::Applied));
    assert_eq!(run(&mut net, &NetState { tx: 2, rx: 1 }, 2, NetRequest::Recv).1, Owned::Packet(1, b"new".to_vec()));
    assert_eq!(s2.tx, 2);
}

#[test]
fn replayed_recv_returns_the_same_packet() {
    let mut mem = ram();
    let mut net = Net::open(RamRegion(&mut mem), SLOTS).unwrap();
    let s = run(&mut net, &NetState::default(), 1, NetRequest::Send { data: b"once" }).0;
    let first = run(&mut net, &s, 2, NetRequest::Recv);
    let mut net = Net::open(RamRegion(&mut mem), SLOTS).unwrap();
    assert_eq!(run(&mut net, &s, 2, NetRequest::Recv), first);
}

#[test]
fn open_refuses_foreign_resized_and_small_regions() {
    let mut mem = ram();
    mem[0] = 0x7F;
    assert!(matches!(Net::open(RamRegion(&mut mem), SLOTS), Err(OpenError::Header(HeaderError::Foreign))));
    assert_eq!(mem[1..].iter().filter(|&&b| b != 0).count(), 0, "left untouched");

    let mut mem = ram();
    Net::open(RamRegion(&mut mem), SLOTS - 1).unwrap();
    assert!(matches!(
        Net::open(RamRegion(&mut mem), SLOTS),
        Err(OpenError::Header(HeaderError::Geometry { found: 3, expected: 4 }))
    ));
    mem[40] ^= 1;
    assert!(matches!(Net::open(RamRegion(&mut mem), 3), Err(OpenError::Header(HeaderError::Checksum { .. }))));

    let mut small = vec![0u8; 100];
    assert!(matches!(Net::open(RamRegion(&mut small), SLOTS), Err(OpenError::TooSmall { .. })));
    assert!(matches!(Net::open(RamRegion(&mut small), 0), Err(OpenError::NoSlots)));
}

#[test]
fn impossible_checkpoints_are_refused() {
    let mut mem = ram();
    let net = Net::open(RamRegion(&mut mem), SLOTS).unwrap();
    assert!(net.check_state(&NetState { tx: 10, rx: 6 }).is_ok());
    assert_eq!(net.check_state(&NetState { tx: 10, rx: 5 }), Err(StateError { tx: 10, rx: 5, slots: 4 }));
    assert_eq!(net.check_state(&NetState { tx: 1, rx: 2 }), Err(StateError { tx: 1, rx: 2, slots: 4 }));
}

mod model {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    proptest! {
        /// Random sends and receives, each replayed once more right after
        /// (as after a crash before its reply), behave like a bounded FIFO.
        #[test]
        fn replayed_operations_behave_like_a_bounded_fifo(
            ops in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)), 1..60)
        ) {
            let mut mem = ram();
            let mut fifo: VecDeque<Vec<u8>> = VecDeque::new();
            let mut s = NetState::default();
            let mut sent = 0u64;
            for (n, op) in ops.iter().enumerate() {
                let req = match op { Some(p) => NetRequest::Send { data: p }, None => NetRequest::Recv };
                let mut net = Net::open(RamRegion(&mut mem), SLOTS).unwrap();
                let first = run(&mut net, &s, n as u64, req);
                let mut net = Net::open(RamRegion(&mut mem), SLOTS).unwrap();
                let again = run(&mut net, &s, n as u64, req);
                prop_assert_eq!((&first.0, &first.1), (&again.0, &again.1));
                match (op, &first.1) {
                    (Some(p), Owned::Sent(seq)) => { prop_assert_eq!(*seq, sent); fifo.push_back(p.clone()); sent += 1; }
                    (Some(p), Owned::Error(NetError::Empty)) => prop_assert!(p.is_empty()),
                    (Some(_), Owned::Error(NetError::Full { .. })) => prop_assert_eq!(fifo.len(), SLOTS as usize),
                    (None, Owned::Packet(_, d)) => prop_assert_eq!(Some(d.clone()), fifo.pop_front()),
                    (None, Owned::Empty) => prop_assert!(fifo.is_empty()),
                    (op, r) => prop_assert!(false, "unexpected {:?} for {:?}", r, op),
                }
                s = first.0;
            }
            prop_assert_eq!(header_of(&mem).applied_count, sent);
        }
    }
}

#[test]
fn trace_ring_records_what_the_device_did() {
    let mut mem = ram();
    let mut net = Net::open(RamRegion(&mut mem), SLOTS).unwrap();
    let s0 = NetState::default();
    let s1 = run(&mut net, &s0, 1, NetRequest::Send { data: b"abc" }).0;
    run(&mut net, &s0, 1, NetRequest::Send { data: b"abc" }); // replay
    let s2 = run(&mut net, &s1, 2, NetRequest::Recv).0;
    run(&mut net, &s2, 3, NetRequest::Recv);
    run(&mut net, &s2, 4, NetRequest::Stats);
    run(&mut net, &s2, 5, NetRequest::Send { data: &[] });
    let got: Vec<Trace> = net.trace().iter().map(|e| e.payload).collect();
    assert_eq!(
        got,
        [
            Trace::Formatted { slots: SLOTS },
            Trace::Sent { seq: 0 },
            Trace::AlreadySent { seq: 0 },
            Trace::Received { seq: 0, len: 3 },
            Trace::Empty,
            Trace::Refused(NetError::Empty),
        ]
    );
    assert_eq!(Trace::Received { seq: 0, len: 3 }.event(), reinc_ringbuf::Event::Driver { code: 0x4E05, a: 0, b: 3 });
}

/// The header bytes of format version 1 (32-bit client id), built field by
/// field: rings formatted before protocol version 2 keep opening.
#[test]
fn version_1_headers_keep_opening() {
    let h = Header { slots: 0x0a0b, last_applied: Some(id(0x66)), last_base: 5, applied_count: 8 };
    let mut want = [0u8; HEADER_BYTES];
    want[0..8].copy_from_slice(b"REINCNET");
    want[8..12].copy_from_slice(&1u32.to_le_bytes());
    want[12..16].copy_from_slice(&2048u32.to_le_bytes());
    want[16..20].copy_from_slice(&0x0a0bu32.to_le_bytes());
    want[20..28].copy_from_slice(&8u64.to_le_bytes());
    want[28] = 1;
    want[29..33].copy_from_slice(&2u32.to_le_bytes());
    want[33..41].copy_from_slice(&0x66u64.to_le_bytes());
    want[41..49].copy_from_slice(&5u64.to_le_bytes());
    let crc = crc32fast::hash(&want[..60]);
    want[60..64].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(Header::decode(&want), Ok(Some(h)));
}

/// The header bytes this version writes, built field by field from the
/// layout in the crate doc.
#[test]
fn header_bytes_follow_the_documented_layout() {
    let client = ClientId(0x0102_0304_0506_0708);
    let h =
        Header { slots: 0x0a0b, last_applied: Some(RequestId { client, seq: 0x66 }), last_base: 5, applied_count: 8 };
    let mut want = [0u8; HEADER_BYTES];
    want[0..8].copy_from_slice(b"REINCNET");
    want[8..12].copy_from_slice(&2u32.to_le_bytes());
    want[12..16].copy_from_slice(&2048u32.to_le_bytes());
    want[16..20].copy_from_slice(&0x0a0bu32.to_le_bytes());
    want[20..28].copy_from_slice(&8u64.to_le_bytes());
    want[28] = 1;
    want[29..37].copy_from_slice(&client.0.to_le_bytes());
    want[37..45].copy_from_slice(&0x66u64.to_le_bytes());
    want[45..53].copy_from_slice(&5u64.to_le_bytes());
    let crc = crc32fast::hash(&want[..60]);
    want[60..64].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(h.encode(), want);
    assert_eq!(Header::decode(&want), Ok(Some(h)));
}
