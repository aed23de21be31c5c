extern crate std;

use super::header::{Format, SEALED_BYTES, Seal, Unsealed, Watermark, le_u32};
use super::*;
use reinc_proto::{ClientId, RequestId};

const FMT: Format = Format { magic: *b"REINCTST", version: 1, unit: 512 };

fn id(seq: u64) -> RequestId {
    RequestId { client: ClientId(7), seq }
}

#[test]
fn ram_region_reads_back_what_was_written() {
    let mut mem = [0u8; 16];
    let mut r = RamRegion(&mut mem);
    r.write_at(4, b"abcd").unwrap();
    let mut buf = [0u8; 6];
    r.read_at(3, &mut buf).unwrap();
    assert_eq!(&buf, b"\0abcd\0");
    assert_eq!(r.size(), 16);
}

#[test]
fn ram_region_refuses_accesses_past_its_end_and_changes_nothing() {
    let mut mem = [0u8; 16];
    let mut r = RamRegion(&mut mem);
    assert_eq!(r.write_at(13, b"abcd"), Err(OutOfBounds { off: 13, len: 4, size: 16 }));
    assert_eq!(r.write_at(u64::MAX, b"a"), Err(OutOfBounds { off: u64::MAX, len: 1, size: 16 }));
    let mut buf = [0u8; 17];
    assert!(r.read_at(0, &mut buf).is_err());
    assert_eq!(mem, [0u8; 16]);
}

#[test]
fn sealed_header_checks_intact_and_blank_is_unformatted() {
    let mut b = [0u8; SEALED_BYTES];
    assert_eq!(FMT.check(&b), Ok(Seal::Blank));
    b[20] = 9;
    FMT.seal(&mut b);
    assert_eq!(FMT.check(&b), Ok(Seal::Intact));
    assert_eq!(&b[0..8], b"REINCTST");
    assert_eq!((le_u32(&b, 8), le_u32(&b, 12)), (1, 512));
}

#[test]
fn nonzero_bytes_after_the_sealed_part_make_a_block_foreign_not_blank() {
    let mut block = [0u8; 512];
    block[300] = 1;
    assert_eq!(FMT.check(&block), Err(Unsealed::Foreign));
}

#[test]
fn damaged_header_is_refused_with_both_checksums() {
    let mut b = [0u8; SEALED_BYTES];
    FMT.seal(&mut b);
    b[30] ^= 0xff;
    match FMT.check(&b) {
        Err(Unsealed::Checksum { stored, computed }) => assert_ne!(stored, computed),
        other => panic!("expected a checksum error, got {other:?}"),
    }
}

#[test]
fn other_version_or_unit_is_refused_after_the_checksum() {
    let mut b = [0u8; SEALED_BYTES];
    Format { unit: 2048, ..FMT }.seal(&mut b);
    assert_eq!(FMT.check(&b), Err(Unsealed::Format { version: 1, unit: 2048 }));
    Format { version: 2, ..FMT }.seal(&mut b);
    assert_eq!(FMT.check(&b), Err(Unsealed::Format { version: 2, unit: 512 }));
    let mut other = [0u8; SEALED_BYTES];
    Format { magic: *b"SOMEELSE", ..FMT }.seal(&mut other);
    assert_eq!(FMT.check(&other), Err(Unsealed::Foreign));
}

#[test]
fn watermark_round_trips_at_any_offset() {
    let w = Watermark::default().advanced(id(41), 3).advanced(id(42), 4);
    let mut b = [0u8; SEALED_BYTES];
    b[20..20 + header::WATERMARK_BYTES].copy_from_slice(&w.encode());
    assert_eq!(Watermark::decode_at(&b, 20), w);
    assert_eq!(w, Watermark { last_applied: Some(id(42)), last_base: 4, applied_count: 2 });
    assert_eq!(Watermark::decode_at(&[0u8; SEALED_BYTES], 24), Watermark::default());
}

#[test]
fn replay_needs_the_same_id_on_the_same_committed_state() {
    let w = Watermark::default().advanced(id(5), 10);
    assert!(w.is_replay(id(5), 10));
    assert!(!w.is_replay(id(5), 11), "a reused id on a later state is a new request");
    assert!(!w.is_replay(id(6), 10));
    assert!(!Watermark::default().is_replay(id(0), 0));
}

#[test]
fn geometry_then_watermark_round_trip_and_sit_where_the_layout_says() {
    let w = Watermark::default().advanced(id(3), 1);
    let b = FMT.encode(0xabcd_u32.to_le_bytes(), &w);
    assert_eq!(FMT.check(&b), Ok(Seal::Intact));
    assert_eq!(le_u32(&b, 16), 0xabcd);
    assert_eq!(Watermark::decode_at(&b, 20), w);
    assert_eq!(FMT.decode::<SEALED_BYTES, 4>(&b), Ok(Some((0xabcd_u32.to_le_bytes(), w))));
    let mut block = [0u8; 512];
    assert_eq!(FMT.decode::<512, 8>(&block), Ok(None));
    block[..SEALED_BYTES].copy_from_slice(&FMT.encode(7u64.to_le_bytes(), &w));
    assert_eq!(FMT.decode::<512, 8>(&block), Ok(Some((7u64.to_le_bytes(), w))));
    block[40] ^= 1;
    assert!(matches!(FMT.decode::<512, 8>(&block), Err(Unsealed::Checksum { .. })));
}
