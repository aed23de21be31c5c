//! The end-to-end block checksums: what is refused, what is stored, and how
//! an older region is upgraded.

extern crate std;

use super::*;
use crate::{
    Effect, RamRegion, Region, Storage, StorageError, StorageReply, StorageRequest, StorageState, region_bytes,
};
use reinc_proto::{ClientId, RequestId};
use std::{vec, vec::Vec};

const BLOCKS: u64 = 16;

fn id(seq: u64) -> RequestId {
    RequestId { client: ClientId(9), seq }
}

fn data(blocks: usize, seed: u8) -> Vec<u8> {
    (0..blocks * BLOCK_SIZE).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed)).collect()
}

fn tags(lba: u64, data: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; data.len() / BLOCK_SIZE * TAG_BYTES];
    assert_eq!(tags_into(lba, data, &mut t), t.len());
    t
}

/// The reply to `req`, owned: `Ok((data, tags))` for data, `Err` for a refusal,
/// `Ok(empty)` for anything else.
fn call(
    dev: &mut Storage<RamRegion<'_>>,
    seq: u64,
    req: StorageRequest<'_>,
) -> Result<(Vec<u8>, Vec<u8>), StorageError> {
    let mut buf = vec![0u8; crate::MAX_REPLY_DATA];
    let out =
        dev.handle(&StorageState { append_cursor: 0, writes: seq }, id(seq), &req, &mut buf).expect("RAM never fails");
    match out.reply {
        StorageReply::Error(e) => {
            assert_eq!(out.effect, Effect::None, "a refusal writes nothing");
            Err(e)
        }
        StorageReply::DataChecked { data, tags } => Ok((data.to_vec(), tags.to_vec())),
        StorageReply::Data(d) => Ok((d.to_vec(), Vec::new())),
        _ => Ok((Vec::new(), Vec::new())),
    }
}

#[test]
fn checked_write_then_checked_read_returns_the_data_with_the_clients_tags() {
    let mut mem = vec![0u8; region_bytes(BLOCKS) as usize];
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let d = data(3, 1);
    let t = tags(4, &d);
    call(&mut dev, 0, StorageRequest::WriteChecked { lba: 4, data: &d, tags: &t }).unwrap();
    let (got, got_tags) = call(&mut dev, 1, StorageRequest::ReadChecked { lba: 4, blocks: 3 }).unwrap();
    assert_eq!((got.as_slice(), got_tags.as_slice()), (d.as_slice(), t.as_slice()));
    assert_eq!(verify(4, &got, &got_tags), Ok(()));
    // The very tags the client sent are what the device keeps.
    let off = tag_offset(BLOCKS, 4) as usize;
    assert_eq!(&mem[off..off + t.len()], t.as_slice());
}

#[test]
fn a_write_damaged_on_its_way_is_refused_and_nothing_is_written() {
    let mut mem = vec![0u8; region_bytes(BLOCKS) as usize];
    let before = mem.clone();
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let mut d = data(2, 7);
    let t = tags(2, &d);
    d[BLOCK_SIZE + 100] ^= 0x10; // one bit, in the second block, after the client hashed it
    let e = call(&mut dev, 0, StorageRequest::WriteChecked { lba: 2, data: &d, tags: &t }).unwrap_err();
    assert!(matches!(e, StorageError::Corrupt { lba: 3, .. }), "{e:?}");
    assert_eq!(dev.superblock().applied_count, 0);
    let _ = dev.into_region();
    // Formatting wrote the superblock and the table; the data blocks are untouched.
    assert_eq!(mem[BLOCK_SIZE..table_offset(BLOCKS) as usize], before[BLOCK_SIZE..table_offset(BLOCKS) as usize]);
}

#[test]
fn tags_that_do_not_cover_every_block_once_are_refused() {
    let mut mem = vec![0u8; region_bytes(BLOCKS) as usize];
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let d = data(2, 3);
    let t = tags(0, &d);
    for short in [&t[..4], &t[..7], &[][..]] {
        let e = call(&mut dev, 0, StorageRequest::WriteChecked { lba: 0, data: &d, tags: short }).unwrap_err();
        assert_eq!(e, StorageError::Tags { len: short.len() as u32, blocks: 2 });
    }
    // Tags of the right blocks but of another place (a misdirected write).
    let elsewhere = tags(5, &d);
    let e = call(&mut dev, 0, StorageRequest::WriteChecked { lba: 0, data: &d, tags: &elsewhere }).unwrap_err();
    assert!(matches!(e, StorageError::Corrupt { lba: 0, .. }), "{e:?}");
}

#[test]
fn a_bit_flipped_on_the_device_is_refused_by_every_read_naming_the_block() {
    for flip_tag in [false, true] {
        let mut mem = vec![0u8; region_bytes(BLOCKS) as usize];
        let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
        let d = data(4, 9);
        call(&mut dev, 0, StorageRequest::WriteChecked { lba: 8, data: &d, tags: &tags(8, &d) }).unwrap();
        let _ = dev.into_region();
        let at = if flip_tag { tag_offset(BLOCKS, 10) as usize + 1 } else { (10 + 1) * BLOCK_SIZE + 77 };
        mem[at] ^= 0x04;
        let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
        for req in [StorageRequest::Read { lba: 8, blocks: 4 }, StorageRequest::ReadChecked { lba: 8, blocks: 4 }] {
            let e = call(&mut dev, 1, req).unwrap_err();
            assert!(matches!(e, StorageError::Corrupt { lba: 10, .. }), "flip_tag {flip_tag}, {req:?}: {e:?}");
        }
        // The blocks around it still read.
        call(&mut dev, 1, StorageRequest::ReadChecked { lba: 8, blocks: 2 }).unwrap();
        call(&mut dev, 1, StorageRequest::Read { lba: 11, blocks: 1 }).unwrap();
    }
}

#[test]
fn unchecked_writes_keep_the_table_right_and_fresh_blocks_read_as_zeros() {
    let mut mem = vec![0u8; region_bytes(BLOCKS) as usize];
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let d = data(1, 4);
    call(&mut dev, 0, StorageRequest::Write { lba: 1, data: &d }).unwrap();
    let (got, t) = call(&mut dev, 1, StorageRequest::ReadChecked { lba: 0, blocks: 3 }).unwrap();
    assert_eq!(&got[BLOCK_SIZE..2 * BLOCK_SIZE], d.as_slice());
    assert_eq!(verify(0, &got, &t), Ok(()));
    // Never written: tag 0, zeros.
    assert_eq!((&t[..4], &t[8..12]), (&[0u8; 4][..], &[0u8; 4][..]));
    assert_eq!(u32::from_le_bytes(t[4..8].try_into().unwrap()), block_tag(1, &d));
}

#[test]
fn the_client_catches_a_reply_damaged_after_the_driver() {
    let d = data(2, 5);
    let t = tags(3, &d);
    assert_eq!(verify(3, &d, &t), Ok(()));
    for bit in [0, 9, 4095, 8191] {
        let mut bad = d.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let m = verify(3, &bad, &t).unwrap_err();
        assert_eq!(m.lba, 3 + (bit / 8 / BLOCK_SIZE) as u64);
    }
    let mut bad_tags = t.clone();
    bad_tags[6] ^= 0x80;
    assert_eq!(verify(3, &d, &bad_tags).unwrap_err().lba, 4);
    // A zero tag only vouches for zeros; and no tag never vouches for data.
    assert!(verify(3, &d, &[0u8; 8]).is_err());
    assert!(verify(3, &d, &[]).is_err());
    assert_eq!(verify(3, &[0u8; BLOCK_SIZE], &[0u8; 4]), Ok(()));
}

/// Makes a region look as a version 2 driver left it: superblock version 2,
/// no table (zeros where the table goes).
fn downgrade(mem: &mut [u8]) {
    mem[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32fast::hash(&mem[..60]);
    mem[60..64].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32fast::hash(&mem[..80]);
    mem[80..84].copy_from_slice(&crc.to_le_bytes());
    let t = table_offset(BLOCKS) as usize;
    mem[t..].fill(0);
}

#[test]
fn a_version_2_region_is_upgraded_on_open_and_keeps_its_data_and_watermark() {
    let mut mem = vec![0u8; region_bytes(BLOCKS) as usize];
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let d = data(3, 2);
    call(&mut dev, 0, StorageRequest::Write { lba: 5, data: &d }).unwrap();
    let sb = *dev.superblock();
    let _ = dev.into_region();
    downgrade(&mut mem);
    assert_eq!(format_version(&mem), 2);
    assert!(verify(5, &mem[6 * BLOCK_SIZE..9 * BLOCK_SIZE], &[0; 12]).is_err(), "no tags yet");

    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    assert_eq!(*dev.superblock(), sb, "the watermark survives the upgrade");
    let (got, t) = call(&mut dev, 1, StorageRequest::ReadChecked { lba: 4, blocks: 5 }).unwrap();
    assert_eq!(&got[BLOCK_SIZE..4 * BLOCK_SIZE], d.as_slice());
    assert_eq!(verify(4, &got, &t), Ok(()));
    let _ = dev.into_region();
    assert_eq!(format_version(&mem), INTEGRITY_VERSION);
}

/// A region that fails its `n`th write (counting from 1), then works.
struct FailNthWrite<'a> {
    inner: RamRegion<'a>,
    n: u32,
}

impl Region for FailNthWrite<'_> {
    type Error = &'static str;
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        self.inner.read_at(off, buf).map_err(|_| "out of bounds")
    }
    fn write_at(&mut self, off: u64, data: &[u8]) -> Result<(), Self::Error> {
        self.n = self.n.saturating_sub(1);
        if self.n == 0 {
            return Err("injected write failure");
        }
        self.inner.write_at(off, data).map_err(|_| "out of bounds")
    }
}

#[test]
fn a_write_torn_between_data_and_tags_reads_as_corrupt_until_its_replay_repairs_it() {
    let mut mem = vec![0u8; region_bytes(BLOCKS) as usize];
    Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    let d = data(2, 6);
    let t = tags(1, &d);
    let req = StorageRequest::WriteChecked { lba: 1, data: &d, tags: &t };
    let state = StorageState::default();
    let mut buf = vec![0u8; crate::MAX_REPLY_DATA];
    {
        // Write 1 is the data, write 2 the tags: the instance dies there.
        let mut dev = Storage::open(FailNthWrite { inner: RamRegion(&mut mem), n: 2 }, BLOCKS).unwrap();
        assert!(dev.handle(&state, id(1), &req, &mut buf).is_err());
    }
    let mut dev = Storage::open(RamRegion(&mut mem), BLOCKS).unwrap();
    assert_eq!(dev.superblock().applied_count, 0, "the watermark did not move");
    let torn = call(&mut dev, 5, StorageRequest::ReadChecked { lba: 1, blocks: 2 }).unwrap_err();
    assert!(matches!(torn, StorageError::Corrupt { lba: 1, .. }), "{torn:?}");
    // The replay (same id, same committed state) applies it whole.
    let out = dev.handle(&state, id(1), &req, &mut buf).unwrap();
    assert_eq!((out.effect, out.reply), (Effect::Applied, StorageReply::Written { lba: 1, blocks: 2 }));
    let (got, got_tags) = call(&mut dev, 6, StorageRequest::ReadChecked { lba: 1, blocks: 2 }).unwrap();
    assert_eq!((got, got_tags), (d, t));
}
