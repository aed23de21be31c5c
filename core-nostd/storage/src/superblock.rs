//! Block 0: geometry and the exactly-once watermark.
//!
//! Fixed little-endian layout (not postcard), so a test or a hex dump can read
//! it without this crate's types:
//! ```text
//! 0..8    magic "REINCBLK"      8..12  format version u32 (1)
//! 12..16  block size u32        16..24 data blocks u64
//! 24..32  applied_count u64     32     last_applied present (0/1)
//! 33..37  last client u32       37..45 last seq u64
//! 45..53  last base writes u64 (the committed `writes` it was applied on)
//! 60..64  crc32 of bytes 0..60; the rest of the block is zero
//! ```

use crate::BLOCK_SIZE;
use reinc_proto::{ClientId, RequestId};

/// The superblock's magic number.
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"REINCBLK";
const FORMAT_VERSION: u32 = 1;
const CRC_OFF: usize = 60;

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
}

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
        b[0..8].copy_from_slice(&SUPERBLOCK_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.blocks.to_le_bytes());
        b[24..32].copy_from_slice(&self.applied_count.to_le_bytes());
        if let Some(id) = self.last_applied {
            b[32] = 1;
            b[33..37].copy_from_slice(&id.client.0.to_le_bytes());
            b[37..45].copy_from_slice(&id.seq.to_le_bytes());
            b[45..53].copy_from_slice(&self.last_base.to_le_bytes());
        }
        let crc = crc32fast::hash(&b[..CRC_OFF]);
        b[CRC_OFF..CRC_OFF + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads block 0 (pure: usable on a file read by a test). `Ok(None)` for an
    /// all-zero (never formatted) block.
    ///
    /// # Errors
    /// [`SuperblockError`] for a short, foreign, damaged or unsupported block.
    pub fn decode(block0: &[u8]) -> Result<Option<Self>, SuperblockError> {
        let b = block0.get(..BLOCK_SIZE).ok_or(SuperblockError::Short { len: block0.len() })?;
        if b.iter().all(|&x| x == 0) {
            return Ok(None);
        }
        if b[0..8] != SUPERBLOCK_MAGIC {
            return Err(SuperblockError::Foreign);
        }
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        let stored = u32_at(CRC_OFF);
        let computed = crc32fast::hash(&b[..CRC_OFF]);
        if stored != computed {
            return Err(SuperblockError::Checksum { stored, computed });
        }
        let (version, block_size) = (u32_at(8), u32_at(12));
        if version != FORMAT_VERSION || block_size as usize != BLOCK_SIZE {
            return Err(SuperblockError::Format { version, block_size });
        }
        let last_applied = match b[32] {
            0 => None,
            _ => Some(RequestId { client: ClientId(u32_at(33)), seq: u64_at(37) }),
        };
        Ok(Some(Self { blocks: u64_at(16), last_applied, last_base: u64_at(45), applied_count: u64_at(24) }))
    }
}
