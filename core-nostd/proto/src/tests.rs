extern crate std;

use super::*;
use proptest::prelude::*;
use std::vec::Vec;

fn roundtrip<'a, M>(msg: &M, buf: &'a mut [u8]) -> M
where
    M: Serialize + Deserialize<'a> + core::fmt::Debug + PartialEq,
{
    let n = encode(msg, buf).expect("encode").len();
    decode::<M>(&buf[..n]).expect("decode")
}

#[test]
fn init_with_checkpoint_round_trips() {
    let ckpt = [1u8, 2, 3];
    let msg = ToDriver::Init { generation: Generation(7), checkpoint: Some(&ckpt) };
    let mut buf = [0u8; 64];
    assert_eq!(roundtrip(&msg, &mut buf), msg);
}

#[test]
fn unknown_version_is_refused_before_the_body() {
    let mut buf = [0u8; 64];
    let frame = postcard::to_slice(&(PROTOCOL_VERSION + 1, ToDriver::Ping { nonce: 1 }), &mut buf).unwrap();
    assert_eq!(decode::<ToDriver<'_>>(frame), Err(WireError::UnknownVersion { got: PROTOCOL_VERSION + 1 }));
}

#[test]
fn trailing_bytes_are_refused() {
    let mut buf = [0u8; 64];
    let n = encode(&ToDriver::Ping { nonce: 1 }, &mut buf).unwrap().len();
    buf[n] = 0;
    assert_eq!(decode::<ToDriver<'_>>(&buf[..=n]), Err(WireError::TrailingBytes { extra: 1 }));
}

#[test]
fn empty_frame_is_truncated() {
    assert_eq!(decode::<ToDriver<'_>>(&[]), Err(WireError::Truncated));
}

#[test]
fn oversized_frame_is_refused() {
    let big = std::vec![0u8; MAX_FRAME + 1];
    assert_eq!(decode::<ToDriver<'_>>(&big), Err(WireError::Oversized { len: (MAX_FRAME + 1) as u32 }));
    let body = std::vec![0u8; MAX_FRAME];
    let msg = ClientToSup::Call { seq: 1, driver: "x", body: &body, acked_below: 0 };
    assert_eq!(encode_vec(&msg).unwrap_err(), WireError::Oversized { len: encode_len(&msg) as u32 });
}

fn encode_len<M: Serialize>(m: &M) -> usize {
    postcard::to_allocvec(&(PROTOCOL_VERSION, m)).unwrap().len()
}

#[test]
fn small_buffer_is_reported() {
    let mut buf = [0u8; 4];
    let body = [0u8; 16];
    let msg = SupToClient::Reply { seq: 1, body: &body };
    assert_eq!(encode(&msg, &mut buf).unwrap_err(), WireError::BufferFull);
}

#[test]
fn fault_plan_text_round_trips_and_rejects_garbage() {
    let plan: FaultPlan = "after-effect:3:segv".parse().unwrap();
    assert_eq!(plan, FaultPlan { point: CrashPoint::AfterEffect, on_request: 3, kind: CrashKind::Segv });
    assert_eq!(std::format!("{plan}"), "after-effect:3:segv");
    assert_eq!("before-effect:1:SIGKILL".parse::<FaultPlan>().unwrap().kind, CrashKind::Kill);
    assert_eq!("after-effect:3".parse::<FaultPlan>(), Err(FaultPlanError::Shape));
    assert_eq!("after-effect:0:segv".parse::<FaultPlan>(), Err(FaultPlanError::Count));
    assert_eq!("during:1:segv".parse::<FaultPlan>(), Err(FaultPlanError::Point));
    assert_eq!("init:1:melt".parse::<FaultPlan>(), Err(FaultPlanError::Kind));
}

fn arb_id() -> impl Strategy<Value = RequestId> {
    (any::<u64>(), any::<u64>()).prop_map(|(c, s)| RequestId { client: ClientId(c), seq: s })
}

proptest! {
    #[test]
    fn driver_frames_round_trip(gen_ in any::<u32>(), id in arb_id(),
                                commit in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
                                body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let frame = DriverFrame {
            generation: Generation(gen_),
            msg: FromDriver::Reply { id, commit: commit.as_deref(), body: &body },
        };
        let mut buf = std::vec![0u8; MAX_FRAME];
        prop_assert_eq!(roundtrip(&frame, &mut buf), frame);
    }

    #[test]
    fn client_calls_round_trip(seq in any::<u64>(), acked in any::<u64>(), driver in "[a-z_]{1,24}",
                               body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let msg = ClientToSup::Call { seq, driver: &driver, body: &body, acked_below: acked };
        let mut buf = std::vec![0u8; MAX_FRAME];
        prop_assert_eq!(roundtrip(&msg, &mut buf), msg);
    }

    /// Every strict prefix of a valid frame is refused, never mis-decoded.
    #[test]
    fn truncated_frames_are_refused(seq in any::<u64>(), body in proptest::collection::vec(any::<u8>(), 0..64),
                                    cut in any::<prop::sample::Index>()) {
        let msg = ClientToSup::Call { seq, driver: "storage_driver", body: &body, acked_below: 0 };
        let full: Vec<u8> = encode_vec(&msg).unwrap();
        let cut = cut.index(full.len());
        prop_assert!(decode::<ClientToSup<'_>>(&full[..cut]).is_err());
    }

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode::<ClientToSup<'_>>(&bytes);
        let _ = decode::<ToDriver<'_>>(&bytes);
        let _ = decode::<DriverFrame<'_>>(&bytes);
    }
}

/// The exact bytes of one message of every channel. Changing any of them
/// changes the wire format: bump [`PROTOCOL_VERSION`] (so old peers get
/// `UnknownVersion` instead of a mis-decode), then update these bytes.
#[test]
fn wire_format_is_frozen_for_this_protocol_version() {
    let id = RequestId { client: ClientId(3), seq: 300 };
    let cases: [(&str, Vec<u8>, &[u8]); 6] = [
        (
            "Init",
            encode_vec(&ToDriver::Init { generation: Generation(2), checkpoint: Some(&[9, 8]) }).unwrap(),
            &[2, 0, 2, 1, 2, 9, 8],
        ),
        ("Request", encode_vec(&ToDriver::Request { id, body: &[7] }).unwrap(), &[2, 1, 3, 172, 2, 1, 7]),
        (
            "Reply",
            encode_vec(&DriverFrame {
                generation: Generation(2),
                msg: FromDriver::Reply { id, commit: None, body: &[5, 6] },
            })
            .unwrap(),
            &[2, 2, 1, 3, 172, 2, 0, 2, 5, 6],
        ),
        (
            "Call",
            encode_vec(&ClientToSup::Call { seq: 1, driver: "ab", body: &[4], acked_below: 1 }).unwrap(),
            &[2, 1, 1, 2, b'a', b'b', 1, 4, 1],
        ),
        ("Failed", encode_vec(&SupToClient::Failed { seq: 1, error: CallError::Poisoned }).unwrap(), &[2, 2, 1, 3]),
        // Version 2: a 64-bit session id (here 2^40, beyond any u32).
        (
            "Welcome",
            encode_vec(&SupToClient::Welcome { client: ClientId(1 << 40) }).unwrap(),
            &[2, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20],
        ),
    ];
    for (name, got, want) in cases {
        assert_eq!(got, want, "{name}: the wire format changed; bump PROTOCOL_VERSION and update this test");
    }
}

/// Version 2 appended [`CallError::SessionsFull`] (issue 16: a full session
/// table has its own answer instead of `Busy`) and [`CallError::NotAllowed`]
/// (a driver's client allow-list). The variants before them keep their bytes.
#[test]
fn call_errors_of_version_2_have_fixed_indices() {
    let failed = |error| encode_vec(&SupToClient::Failed { seq: 1, error }).unwrap();
    assert_eq!(failed(CallError::Busy), [2, 2, 1, 0]);
    assert_eq!(failed(CallError::ShuttingDown), [2, 2, 1, 7]);
    assert_eq!(failed(CallError::SessionsFull), [2, 2, 1, 8]);
    assert_eq!(failed(CallError::NotAllowed), [2, 2, 1, 9]);
}

/// The bulk-data pool messages, appended in version 2: their bytes are
/// frozen like the others, and each takes the next variant index of its
/// enum, so no earlier message changed.
#[test]
fn pool_messages_are_frozen_and_appended() {
    let cases: [(&str, Vec<u8>, &[u8]); 6] = [
        ("ToDriver::AttachPool", encode_vec(&ToDriver::AttachPool { client: ClientId(3) }).unwrap(), &[2, 5, 3]),
        ("ToDriver::DetachPool", encode_vec(&ToDriver::DetachPool { client: ClientId(3) }).unwrap(), &[2, 6, 3]),
        (
            "ClientToSup::AttachPool",
            encode_vec(&ClientToSup::AttachPool { driver: "ab" }).unwrap(),
            &[2, 2, 2, b'a', b'b'],
        ),
        ("PoolAttached", encode_vec(&SupToClient::PoolAttached { driver: "ab" }).unwrap(), &[2, 4, 2, b'a', b'b']),
        (
            "PoolRefused",
            encode_vec(&SupToClient::PoolRefused { driver: "ab", error: CallError::BadPool }).unwrap(),
            &[2, 5, 2, b'a', b'b', 10],
        ),
        ("BadPool", encode_vec(&SupToClient::Failed { seq: 1, error: CallError::BadPool }).unwrap(), &[2, 2, 1, 10]),
    ];
    for (name, got, want) in cases {
        assert_eq!(got, want, "{name}: the wire format changed; bump PROTOCOL_VERSION and update this test");
    }
}

/// `Bye`, appended in version 2 after `AttachPool`.
#[test]
fn bye_is_appended_after_attach_pool() {
    let cases: [(&str, Vec<u8>, &[u8]); 1] = [("ClientToSup::Bye", encode_vec(&ClientToSup::Bye).unwrap(), &[2, 3])];
    for (name, got, want) in cases {
        assert_eq!(got, want, "{name}: the wire format changed; bump PROTOCOL_VERSION and update this test");
    }
}
