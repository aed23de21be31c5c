//! The region's layout, storage_core's register block: the superblock in
//! block 0 (geometry and the exactly-once watermark), and where client block
//! `lba` lives. There is no `unsafe` here, as in the whole crate: the region
//! is reached through [`crate::Region`].
//!
//! # Block 0: geometry and the exactly-once watermark
//!
//! Fixed little-endian layout (not postcard), so a test or a hex dump can read
//! it without this crate's types:
//! ```text
//! 0..8    magic "REINCBLK"      8..12  format version u32 (3)
//! 12..16  block size u32        16..24 data blocks u64
//! 24..32  applied_count u64     32     last_applied present (0/1)
//! 33..41  last client u64       41..49 last seq u64
//! 49..57  last base writes u64 (the committed `writes` it was applied on)
//! 60..64  crc32 of bytes 0..60
//! 64..72  last cursor u64 (the append cursor `last_applied` started from)
//! 72..80  append cursor u64 (the append cursor after it)
//! 80..84  crc32 of bytes 0..80; the rest of the block is zero
//! ```
//! Bytes 64..84 are new in version 2 (a version-1 block reads as cursors 0):
//! they make the append cursor recoverable from the device itself, so a
//! supervisor that kept no checkpoint does not append over old data.

use crate::integrity;
use reinc_proto::RequestId;
use reinc_region::header::{Format, SEALED_BYTES, Unsealed, Watermark, le_u32, le_u64};

/// Bytes per block.
pub const BLOCK_SIZE: usize = 512;

/// Bytes a region of `blocks` data blocks needs (superblock and tag table
/// included, see [`integrity`]).
#[must_use]
pub const fn region_bytes(blocks: u64) -> u64 {
    (blocks + 1 + integrity::table_blocks(blocks)) * BLOCK_SIZE as u64
}

pub(crate) fn data_offset(lba: u64) -> u64 {
    (lba + 1) * BLOCK_SIZE as u64
}

/// The superblock's magic number.
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"REINCBLK";
/// Block count (`u64`) at 16, then the watermark: see the layout above.
/// Version 2: the watermark's client id is 64 bits (protocol version 2).
/// Version 3: the same block, and the region has a tag table
/// (`crate::integrity`); a version 1 or 2 block still decodes, and
/// `Storage::open` builds the table before it writes the block as version 3.
const FORMAT: Format =
    Format { magic: SUPERBLOCK_MAGIC, version: crate::integrity::INTEGRITY_VERSION, unit: BLOCK_SIZE as u32 };

/// The decoded superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// Data blocks (the region holds one more, block 0).
    pub blocks: u64,
    /// The write-type request applied last: the exactly-once watermark.
    pub last_applied: Option<RequestId>,
    /// The committed [`crate::StorageState::writes`] that `last_applied` was
    /// applied on top of. A request is a replay only if both its id and the
    /// committed state it arrives with match, so a client id reused after a
    /// supervisor restart (with a persisted checkpoint) is never mistaken
    /// for a replay.
    pub last_base: u64,
    /// Write-type requests applied to this region, ever (each counted once).
    pub applied_count: u64,
    /// The append cursor `last_applied` was applied at (what a replay of it
    /// must compute again).
    pub last_cursor: u64,
    /// The append cursor after `last_applied`: no data was appended at or
    /// beyond it. A request that is not a replay appends at the larger of
    /// this and its committed state's cursor.
    pub append_cursor: u64,
}

/// Offset of the cursor extension.
const EXT_OFF: usize = 64;
/// Offset of the extension's CRC (of bytes `0..EXT_CRC_OFF`).
const EXT_CRC_OFF: usize = 80;

/// Why block 0 is not a usable superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SuperblockError {
    /// Block 0 is shorter than a block.
    #[error("block 0 is {len} bytes, shorter than a {BLOCK_SIZE}-byte block")]
    Short {
        /// Bytes supplied.
        len: usize,
    },
    /// Block 0 holds something else; it is not overwritten.
    #[error("no REINCBLK magic: the region holds something else and is left untouched")]
    Foreign,
    /// The checksum does not match: a torn or damaged superblock.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): superblock is damaged")]
    Checksum {
        /// Stored CRC.
        stored: u32,
        /// CRC of the contents.
        computed: u32,
    },
    /// Another format version or block size.
    #[error("format version {version} with {block_size}-byte blocks is not supported")]
    Format {
        /// Version found.
        version: u32,
        /// Block size found.
        block_size: u32,
    },
    /// The region was formatted with another block count.
    #[error("region was formatted with {found} blocks, {expected} requested")]
    Geometry {
        /// Blocks on the region.
        found: u64,
        /// Blocks requested.
        expected: u64,
    },
}

impl Superblock {
    /// The on-region bytes of this superblock (one block).
    #[must_use]
    pub fn encode(&self) -> [u8; BLOCK_SIZE] {
        let mut b = [0u8; BLOCK_SIZE];
        b[..SEALED_BYTES].copy_from_slice(&FORMAT.encode(self.blocks.to_le_bytes(), &self.watermark()));
        b[EXT_OFF..EXT_OFF + 8].copy_from_slice(&self.last_cursor.to_le_bytes());
        b[EXT_OFF + 8..EXT_CRC_OFF].copy_from_slice(&self.append_cursor.to_le_bytes());
        let crc = crc32fast::hash(&b[..EXT_CRC_OFF]);
        b[EXT_CRC_OFF..EXT_CRC_OFF + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads block 0 (pure: usable on a file read by a test). `Ok(None)` for an
    /// all-zero (never formatted) block.
    ///
    /// # Errors
    /// [`SuperblockError`] for a short, foreign, damaged or unsupported block.
    pub fn decode(block0: &[u8]) -> Result<Option<Self>, SuperblockError> {
        let b = block0.first_chunk::<BLOCK_SIZE>().ok_or(SuperblockError::Short { len: block0.len() })?;
        let (fields, cursors) = match FORMAT.decode(b) {
            // A region formatted by version 1 keeps opening (its cursors
            // read as 0); it is written back in the current layout at its
            // next write.
            Err(Unsealed::Format { version: 1, unit }) if unit == FORMAT.unit => {
                (FORMAT.at_version(1).decode_v1(b)?, (0, 0))
            }
            other => {
                let fields = match other {
                    Err(Unsealed::Format { version: 2, unit }) if unit == FORMAT.unit => FORMAT.at_version(2).decode(b),
                    other => other,
                }?;
                if fields.is_some() {
                    let stored = le_u32(b, EXT_CRC_OFF);
                    let computed = crc32fast::hash(&b[..EXT_CRC_OFF]);
                    if stored != computed {
                        return Err(SuperblockError::Checksum { stored, computed });
                    }
                }
                (fields, (le_u64(b, EXT_OFF), le_u64(b, EXT_OFF + 8)))
            }
        };
        Ok(fields.map(|(blocks, w)| {
            let mut sb = Self::new(u64::from_le_bytes(blocks), w);
            (sb.last_cursor, sb.append_cursor) = cursors;
            sb
        }))
    }

    /// A superblock with the watermark `w` and both cursors at 0.
    pub(crate) fn new(blocks: u64, w: Watermark) -> Self {
        Self {
            blocks,
            last_applied: w.last_applied,
            last_base: w.last_base,
            applied_count: w.applied_count,
            last_cursor: 0,
            append_cursor: 0,
        }
    }

    pub(crate) fn watermark(&self) -> Watermark {
        Watermark { last_applied: self.last_applied, last_base: self.last_base, applied_count: self.applied_count }
    }
}

impl From<Unsealed> for SuperblockError {
    fn from(e: Unsealed) -> Self {
        match e {
            Unsealed::Foreign => Self::Foreign,
            Unsealed::Checksum { stored, computed } => Self::Checksum { stored, computed },
            Unsealed::Format { version, unit } => Self::Format { version, block_size: unit },
        }
    }
}
