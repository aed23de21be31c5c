//! End-to-end block integrity: a checksum per block, computed by the client,
//! verified by the driver before it writes, kept on the device next to the
//! data, and sent back with every checked read for the client to verify.
//! The client-checked bulk form (`crate::bulk`, "Checked by the driver, or
//! by the client") stores the client's tags without verifying them and
//! leaves every check to the reader, which sees the same damage one step
//! later and pays for one pass over the data instead of two.
//!
//! # Why
//! Without it a bit flipped anywhere between the client's buffer and the
//! platter (the supervisor's copy of a request, the driver's memory, the
//! device file) is returned as valid data: the campaign measured 329 of 329
//! device bit flips going silent. With it, each of those is a definite error
//! that names the block ([`crate::StorageError::Corrupt`] from the driver, or
//! [`Mismatch`] found by the client), never silent data.
//!
//! # The tag
//! [`block_tag`]`(lba, block)` is CRC-32 (IEEE, `crc32fast`) over the block's
//! little-endian LBA followed by its 512 bytes. The LBA is in it so a block
//! written to, or read from, the wrong place fails too. A tag is never 0: 0
//! in the table means "never written", and such a block must read as zeros.
//! That is what makes a freshly formatted device valid without hashing
//! every block of it.
//!
//! # On the device (superblock format version 3)
//! The tag table follows the data blocks: region bytes
//! `(blocks + 1) * 512 ..` hold one little-endian `u32` per block, padded to
//! a whole block ([`table_offset`], [`table_blocks`]; `region_bytes`
//! includes it). A write stores its data, then its tags, then the
//! superblock (the exactly-once watermark). A crash between any two of these
//! leaves the watermark unadvanced, so the replay writes data and tags again;
//! a torn write that is never replayed (its driver quarantined) reads back as
//! `Corrupt`, which is the truth.
//!
//! Version 1 and 2 superblocks have no table. Opening one extends nothing
//! itself (the host driver sizes its file with `region_bytes`), but builds
//! the table from the blocks as they are (zero blocks get tag 0) and only
//! then writes the superblock as version 3: a crash during that rebuild
//! leaves the old version in place and the rebuild runs again. Data written
//! before the upgrade is trusted as it stands; there is no older tag to
//! check it against.
//!
//! # Designs rejected
//! - One checksum over a whole request: the device keeps blocks, and a
//!   read of a sub-range must be verifiable, so the unit is the block.
//! - The driver computing the stored tag: then a flip in the driver's copy
//!   of the data before it hashed would be stored as "valid". The driver
//!   only verifies the client's tags and stores those very tags.
//! - Tags inside the block (e.g. 508 bytes of data and 4 of tag): every
//!   client would see odd-sized blocks, and NBD exports whole 512-byte ones.
//! - CRC-32C: not a dependency of this workspace; CRC-32 detects every
//!   single-, double- and odd-bit error in a 520-byte message as well.
//! - Hashing every block of a freshly formatted device to fill the table:
//!   the "0 means zeros" rule makes formatting cost one table write.

use crate::BLOCK_SIZE;

/// Bytes of one tag in requests, replies and the table.
pub const TAG_BYTES: usize = 4;

/// The superblock format version that has a tag table.
pub const INTEGRITY_VERSION: u32 = 3;

/// The tag of `block` (one [`BLOCK_SIZE`] block) stored at `lba`; never 0.
#[must_use]
pub fn block_tag(lba: u64, block: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&lba.to_le_bytes());
    h.update(block);
    match h.finalize() {
        0 => 1,
        t => t,
    }
}

/// Writes the tags of `data` (whole blocks from `lba`) into `out`, which
/// must hold [`TAG_BYTES`] per block; returns the bytes written.
pub fn tags_into(lba: u64, data: &[u8], out: &mut [u8]) -> usize {
    let mut n = 0;
    for ((i, block), slot) in data.chunks_exact(BLOCK_SIZE).enumerate().zip(out.chunks_exact_mut(TAG_BYTES)) {
        slot.copy_from_slice(&block_tag(lba + i as u64, block).to_le_bytes());
        n += TAG_BYTES;
    }
    n
}

/// A block whose data does not match its tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("block {lba} does not match its checksum (stored {stored:#010x}, computed {computed:#010x})")]
pub struct Mismatch {
    /// The block.
    pub lba: u64,
    /// The tag that came with it (0: never written, so it must be zeros).
    pub stored: u32,
    /// The tag of the data as it is.
    pub computed: u32,
}

/// Checks `data` (whole blocks from `lba`) against `tags` ([`TAG_BYTES`]
/// each, little-endian). A tag of 0 accepts only an all-zero block.
///
/// # Errors
/// The first block that does not match. A `tags` of the wrong length is a
/// mismatch of the first block without a tag (stored 0, so it must be zero).
pub fn verify(lba: u64, data: &[u8], tags: &[u8]) -> Result<(), Mismatch> {
    for (i, block) in data.chunks_exact(BLOCK_SIZE).enumerate() {
        let stored =
            tags.get(i * TAG_BYTES..(i + 1) * TAG_BYTES).and_then(|t| t.try_into().ok()).map_or(0, u32::from_le_bytes);
        let at = lba + i as u64;
        if stored == 0 && block.iter().all(|b| *b == 0) {
            continue;
        }
        let computed = block_tag(at, block);
        if computed != stored {
            return Err(Mismatch { lba: at, stored, computed });
        }
    }
    Ok(())
}

/// Blocks the tag table of a `blocks`-block device takes.
#[must_use]
pub const fn table_blocks(blocks: u64) -> u64 {
    (blocks * TAG_BYTES as u64).div_ceil(BLOCK_SIZE as u64)
}

/// Region byte offset of the tag table of a `blocks`-block device.
#[must_use]
pub const fn table_offset(blocks: u64) -> u64 {
    (blocks + 1) * BLOCK_SIZE as u64
}

/// Region byte offset of the tag of block `lba`.
#[must_use]
pub const fn tag_offset(blocks: u64, lba: u64) -> u64 {
    table_offset(blocks) + lba * TAG_BYTES as u64
}

/// The superblock's format version (bytes 8..12), whatever else it holds.
#[must_use]
pub fn format_version(block0: &[u8]) -> u32 {
    block0.get(8..12).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes)
}

use crate::{HandleError, MAX_BLOCKS_PER_REQUEST, Region, Storage, StorageError};

/// Blocks read and hashed per region call when a table is built, a bulk
/// range is checked before its data goes to the pool, or a bulk write is
/// tagged: 32 KiB of stack and 256 bytes of tags. With 8 blocks a 1 MiB
/// bulk read cost 513 `pread`s (strace of `drvctl blk read`), two per 4 KiB;
/// with 64 it costs 33.
const SCAN_CHUNK: usize = MAX_BLOCKS_PER_REQUEST as usize;

/// Writes the tag table of a `blocks`-block device: all zero for a region
/// being formatted (`blank`), else the tag of every block as it stands
/// (0 for a zero block), for a region of an older format.
pub(crate) fn build_table<R: Region>(region: &mut R, blocks: u64, blank: bool) -> Result<(), R::Error> {
    let mut data = [0u8; SCAN_CHUNK * BLOCK_SIZE];
    let mut tags = [0u8; SCAN_CHUNK * TAG_BYTES];
    let mut lba = 0;
    while lba < blocks {
        let n = (blocks - lba).min(SCAN_CHUNK as u64) as usize;
        if !blank {
            let data = &mut data[..n * BLOCK_SIZE];
            region.read_at(crate::regs::data_offset(lba), data)?;
            for (i, (block, slot)) in data.chunks_exact(BLOCK_SIZE).zip(tags.chunks_exact_mut(TAG_BYTES)).enumerate() {
                let tag = if block.iter().all(|b| *b == 0) { 0 } else { block_tag(lba + i as u64, block) };
                slot.copy_from_slice(&tag.to_le_bytes());
            }
        }
        region.write_at(tag_offset(blocks, lba), &tags[..n * TAG_BYTES])?;
        lba += n as u64;
    }
    // The padding of the table's last block, so the region is deterministic.
    let end = tag_offset(blocks, blocks);
    let pad = (table_offset(blocks) + table_blocks(blocks) * BLOCK_SIZE as u64 - end) as usize;
    let zeros = [0u8; BLOCK_SIZE];
    region.write_at(end, &zeros[..pad])?;
    Ok(())
}

/// Checks a `WriteChecked`'s tags: one per block, each matching its block.
pub(crate) fn check_request(lba: u64, blocks: u16, data: &[u8], tags: &[u8]) -> Result<(), StorageError> {
    if tags.len() != usize::from(blocks) * TAG_BYTES {
        return Err(StorageError::Tags { len: u32::try_from(tags.len()).unwrap_or(u32::MAX), blocks });
    }
    verify(lba, data, tags).map_err(StorageError::from)
}

impl From<Mismatch> for StorageError {
    fn from(m: Mismatch) -> Self {
        Self::Corrupt { lba: m.lba, stored: m.stored, computed: m.computed }
    }
}

impl<R: Region> Storage<R> {
    /// Reads the stored tags of the blocks from `lba` into `out` (one per
    /// [`TAG_BYTES`] of it).
    /// Reads the stored tags of the blocks from `lba` into `out` (one per
    /// [`TAG_BYTES`] of it).
    pub(crate) fn read_tags(&mut self, lba: u64, out: &mut [u8]) -> Result<(), HandleError<R::Error>> {
        let off = tag_offset(self.sb.blocks, lba);
        self.region.read_at(off, out).map_err(|source| HandleError::Io { off, source })
    }

    /// Stores `tags` (one per [`TAG_BYTES`]) as those of the blocks from
    /// `lba`, as they are: the client's, for data this crate never saw.
    pub(crate) fn write_tags(&mut self, lba: u64, tags: &[u8]) -> Result<(), HandleError<R::Error>> {
        let off = tag_offset(self.sb.blocks, lba);
        self.region.write_at(off, tags).map_err(|source| HandleError::Io { off, source })
    }

    /// Checks `data`, just read from `lba`, against the tags stored with it.
    pub(crate) fn check_stored(
        &mut self,
        lba: u64,
        data: &[u8],
    ) -> Result<Result<(), StorageError>, HandleError<R::Error>> {
        let mut tags = [0u8; MAX_BLOCKS_PER_REQUEST as usize * TAG_BYTES];
        let tags = &mut tags[..data.len() / BLOCK_SIZE * TAG_BYTES];
        self.read_tags(lba, tags)?;
        Ok(verify(lba, data, tags).map_err(StorageError::from))
    }

    /// Reads `blocks` blocks from `lba` and their tags into `buf` (data
    /// first, tags behind it) and checks them, so a block damaged on the
    /// device is refused here, naming it; the client checks the same tags
    /// again against what reached it.
    #[allow(clippy::type_complexity)]
    pub(crate) fn read_checked<'r>(
        &mut self,
        lba: u64,
        blocks: u16,
        buf: &'r mut [u8],
    ) -> Result<Result<(&'r [u8], &'r [u8]), StorageError>, HandleError<R::Error>> {
        let (need, tag_len) = (usize::from(blocks) * BLOCK_SIZE, usize::from(blocks) * TAG_BYTES);
        let have = buf.len();
        if have < need + tag_len {
            return Err(HandleError::ReplyBuffer { need: need + tag_len, have });
        }
        let (data, rest) = buf.split_at_mut(need);
        let tags = &mut rest[..tag_len];
        let off = crate::regs::data_offset(lba);
        self.region.read_at(off, data).map_err(|source| HandleError::Io { off, source })?;
        self.read_tags(lba, tags)?;
        Ok(match verify(lba, data, tags) {
            Ok(()) => Ok((data, tags)),
            Err(m) => Err(m.into()),
        })
    }

    /// Recomputes and stores the tags of `blocks` blocks from `lba` as
    /// they are on the device: for data that reached the device without
    /// passing through this crate (a bulk write from the shared pool).
    pub(crate) fn retag(&mut self, lba: u64, blocks: u64) -> Result<(), HandleError<R::Error>> {
        let mut data = [0u8; SCAN_CHUNK * BLOCK_SIZE];
        let mut tags = [0u8; SCAN_CHUNK * TAG_BYTES];
        let mut at = lba;
        while at < lba + blocks {
            let n = (lba + blocks - at).min(SCAN_CHUNK as u64) as usize;
            let off = crate::regs::data_offset(at);
            self.region.read_at(off, &mut data[..n * BLOCK_SIZE]).map_err(|source| HandleError::Io { off, source })?;
            tags_into(at, &data[..n * BLOCK_SIZE], &mut tags);
            let off = tag_offset(self.sb.blocks, at);
            self.region.write_at(off, &tags[..n * TAG_BYTES]).map_err(|source| HandleError::Io { off, source })?;
            at += n as u64;
        }
        Ok(())
    }

    /// Checks `blocks` blocks from `lba` on the device against their
    /// stored tags (for a bulk read, whose data goes to the pool).
    pub(crate) fn check_range_stored(
        &mut self,
        lba: u64,
        blocks: u64,
    ) -> Result<Result<(), StorageError>, HandleError<R::Error>> {
        let mut data = [0u8; SCAN_CHUNK * BLOCK_SIZE];
        let mut at = lba;
        while at < lba + blocks {
            let n = (lba + blocks - at).min(SCAN_CHUNK as u64) as usize;
            let off = crate::regs::data_offset(at);
            self.region.read_at(off, &mut data[..n * BLOCK_SIZE]).map_err(|source| HandleError::Io { off, source })?;
            if let Err(e) = self.check_stored(at, &data[..n * BLOCK_SIZE])? {
                return Ok(Err(e));
            }
            at += n as u64;
        }
        Ok(Ok(()))
    }

    /// Stores the tags of `data`, written at `lba`: the client's (verified
    /// already) or, for an unchecked request, computed here.
    pub(crate) fn store_tags(
        &mut self,
        lba: u64,
        data: &[u8],
        tags: Option<&[u8]>,
    ) -> Result<(), HandleError<R::Error>> {
        let mut own = [0u8; MAX_BLOCKS_PER_REQUEST as usize * TAG_BYTES];
        let tags = match tags {
            Some(t) => t,
            None => {
                let n = tags_into(lba, data, &mut own);
                &own[..n]
            }
        };
        let off = tag_offset(self.sb.blocks, lba);
        self.region.write_at(off, tags).map_err(|source| HandleError::Io { off, source })
    }
}

#[cfg(test)]
#[path = "integrity_tests.rs"]
mod tests;
