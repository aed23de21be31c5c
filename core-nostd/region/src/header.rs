//! The sealed header at offset 0 of a region, and the exactly-once watermark
//! it carries.
//!
//! Fixed little-endian layout (not postcard), so a test or a hex dump can read
//! it without any crate's types. The shared part:
//! ```text
//! 0..8    magic            8..12  format version u32    12..16  unit size u32
//! 16..60  the format's own fields (geometry, then a Watermark)
//! 60..64  crc32 of bytes 0..60
//! ```
//! [`Format::encode`] and [`Format::decode`] lay out the usual fields: the
//! format's geometry (`G` little-endian bytes at 16), then the [`Watermark`].
//! A [`Watermark`] is [`WATERMARK_BYTES`] bytes wherever the format puts it:
//! ```text
//! +0  applied_count u64   +8  last_applied present (0/1)
//! +9  last client u64     +17 last seq u64     +25 last base u64
//! ```
//! (The client id is 64 bits since protocol version 2, so the formats that
//! carry a watermark bumped their own versions with it.)
//! An all-zero header means "never formatted"; anything else must carry the
//! magic, a matching CRC, and the expected version and unit size, checked in
//! that order.

use reinc_proto::{ClientId, RequestId};

/// Bytes of the sealed part of a header (CRC included).
pub const SEALED_BYTES: usize = 64;
/// Offset of the CRC, which covers bytes `0..CRC_OFF`.
pub const CRC_OFF: usize = 60;
/// First byte a format may use for its own fields.
pub const FIELDS_OFF: usize = 16;
/// Bytes of an encoded [`Watermark`].
pub const WATERMARK_BYTES: usize = 33;
/// Bytes of a [`Watermark`] in the legacy layout (32-bit client id), which
/// formats wrote before protocol version 2.
pub const WATERMARK_V1_BYTES: usize = 29;

/// What identifies a header format: magic, version and the size of the unit
/// the format addresses (a block, a slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// The magic number at offset 0.
    pub magic: [u8; 8],
    /// The format version.
    pub version: u32,
    /// The unit size in bytes.
    pub unit: u32,
}

/// What [`Format::check`] found in a header that is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seal {
    /// All zero: never formatted.
    Blank,
    /// Magic, CRC, version and unit size are right: the fields can be read.
    Intact,
}

/// Why a header is not usable. Each core maps it onto its own error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unsealed {
    /// Another magic: the region holds something else.
    #[error("no matching magic: the region holds something else")]
    Foreign,
    /// The CRC does not match: a torn or damaged header.
    #[error("header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// Stored CRC.
        stored: u32,
        /// CRC of the contents.
        computed: u32,
    },
    /// Another format version or unit size.
    #[error("format {version} with {unit}-byte units is not supported")]
    Format {
        /// Version found.
        version: u32,
        /// Unit size found.
        unit: u32,
    },
}

impl Format {
    /// Writes magic, version and unit size into bytes `0..16` and the CRC of
    /// bytes `0..60` at 60. Call it last, after the format's own fields.
    pub fn seal(&self, b: &mut [u8; SEALED_BYTES]) {
        b[0..8].copy_from_slice(&self.magic);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.unit.to_le_bytes());
        let crc = crc32fast::hash(&b[..CRC_OFF]);
        b[CRC_OFF..].copy_from_slice(&crc.to_le_bytes());
    }

    /// Checks a header block of `N` bytes (at least [`SEALED_BYTES`]; the
    /// bytes after the sealed part only count for "all zero").
    ///
    /// # Errors
    /// [`Unsealed`] for a foreign, damaged or unsupported header.
    pub fn check<const N: usize>(&self, b: &[u8; N]) -> Result<Seal, Unsealed> {
        const { assert!(N >= SEALED_BYTES, "a header block holds at least the sealed part") };
        if b.iter().all(|&x| x == 0) {
            return Ok(Seal::Blank);
        }
        if b[0..8] != self.magic {
            return Err(Unsealed::Foreign);
        }
        let (stored, computed) = (le_u32(b, CRC_OFF), crc32fast::hash(&b[..CRC_OFF]));
        if stored != computed {
            return Err(Unsealed::Checksum { stored, computed });
        }
        let (version, unit) = (le_u32(b, 8), le_u32(b, 12));
        if version != self.version || unit != self.unit {
            return Err(Unsealed::Format { version, unit });
        }
        Ok(Seal::Intact)
    }
}

impl Format {
    /// The same format at another version (to recognise a legacy header).
    #[must_use]
    pub const fn at_version(self, version: u32) -> Self {
        Self { version, ..self }
    }

    /// Checks a legacy header (written by [`Format::at_version`]`(v)` with a
    /// [`WATERMARK_V1_BYTES`] watermark) and returns its geometry and
    /// watermark; `Ok(None)` when it is all zero.
    ///
    /// # Errors
    /// [`Unsealed`] for a foreign, damaged or unsupported header.
    pub fn decode_v1<const N: usize, const G: usize>(
        &self,
        b: &[u8; N],
    ) -> Result<Option<([u8; G], Watermark)>, Unsealed> {
        const { assert!(FIELDS_OFF + G + WATERMARK_V1_BYTES <= CRC_OFF, "geometry and watermark fit before the CRC") };
        if self.check(b)? == Seal::Blank {
            return Ok(None);
        }
        let mut geometry = [0u8; G];
        geometry.copy_from_slice(&b[FIELDS_OFF..FIELDS_OFF + G]);
        Ok(Some((geometry, Watermark::decode_v1_at(b, FIELDS_OFF + G))))
    }

    /// A sealed header holding `geometry` at [`FIELDS_OFF`] and the
    /// watermark right behind it.
    #[must_use]
    pub fn encode<const G: usize>(&self, geometry: [u8; G], w: &Watermark) -> [u8; SEALED_BYTES] {
        const { assert!(FIELDS_OFF + G + WATERMARK_BYTES <= CRC_OFF, "geometry and watermark fit before the CRC") };
        let mut b = [0u8; SEALED_BYTES];
        b[FIELDS_OFF..FIELDS_OFF + G].copy_from_slice(&geometry);
        b[FIELDS_OFF + G..FIELDS_OFF + G + WATERMARK_BYTES].copy_from_slice(&w.encode());
        self.seal(&mut b);
        b
    }

    /// Checks a header block written by [`Format::encode`] and returns its
    /// geometry bytes and watermark; `Ok(None)` when it is all zero.
    ///
    /// # Errors
    /// [`Unsealed`] for a foreign, damaged or unsupported header.
    pub fn decode<const N: usize, const G: usize>(
        &self,
        b: &[u8; N],
    ) -> Result<Option<([u8; G], Watermark)>, Unsealed> {
        const { assert!(FIELDS_OFF + G + WATERMARK_BYTES <= CRC_OFF, "geometry and watermark fit before the CRC") };
        if self.check(b)? == Seal::Blank {
            return Ok(None);
        }
        let mut geometry = [0u8; G];
        geometry.copy_from_slice(&b[FIELDS_OFF..FIELDS_OFF + G]);
        Ok(Some((geometry, Watermark::decode_at(b, FIELDS_OFF + G))))
    }
}

/// The little-endian `u32` at `off`.
///
/// # Panics
/// When `off + 4` exceeds `N` (a layout bug, not input).
#[must_use]
pub fn le_u32<const N: usize>(b: &[u8; N], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// The little-endian `u64` at `off`.
///
/// # Panics
/// When `off + 8` exceeds `N` (a layout bug, not input).
#[must_use]
pub fn le_u64<const N: usize>(b: &[u8; N], off: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(x)
}

/// The exactly-once watermark: the write-type request applied last, the
/// committed state it was applied on, and how many were applied ever.
///
/// Requests reach a driver in FIFO order, one at a time, so at most one
/// effect can be on the device without its reply (and state commit) having
/// reached the supervisor: one id is enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Watermark {
    /// The request applied last.
    pub last_applied: Option<RequestId>,
    /// The committed state (a count the core chooses) it was applied on.
    pub last_base: u64,
    /// Requests applied to this region, ever (each counted once).
    pub applied_count: u64,
}

impl Watermark {
    /// Whether `id` arriving on committed state `base` is a replay of the
    /// request applied last, whose effect must then not be applied again. A
    /// reused id on another committed state is a new request (a second
    /// guard: since protocol version 2 ids do not repeat across supervisor
    /// lifetimes either).
    #[must_use]
    pub fn is_replay(&self, id: RequestId, base: u64) -> bool {
        self.last_applied == Some(id) && self.last_base == base
    }

    /// The watermark after applying `id` on committed state `base`.
    #[must_use]
    pub fn advanced(&self, id: RequestId, base: u64) -> Self {
        Self { last_applied: Some(id), last_base: base, applied_count: self.applied_count + 1 }
    }

    /// Its bytes (the id and base are zero when nothing was applied yet).
    #[must_use]
    pub fn encode(&self) -> [u8; WATERMARK_BYTES] {
        let mut b = [0u8; WATERMARK_BYTES];
        b[0..8].copy_from_slice(&self.applied_count.to_le_bytes());
        if let Some(id) = self.last_applied {
            b[8] = 1;
            b[9..17].copy_from_slice(&id.client.0.to_le_bytes());
            b[17..25].copy_from_slice(&id.seq.to_le_bytes());
            b[25..33].copy_from_slice(&self.last_base.to_le_bytes());
        }
        b
    }

    /// Decodes the bytes at `off` of a header block.
    ///
    /// # Panics
    /// When the watermark does not fit in `N` bytes at `off` (a layout bug).
    #[must_use]
    pub fn decode_at<const N: usize>(b: &[u8; N], off: usize) -> Self {
        let last_applied = match b[off + 8] {
            0 => None,
            _ => Some(RequestId { client: ClientId(le_u64(b, off + 9)), seq: le_u64(b, off + 17) }),
        };
        Self { last_applied, last_base: le_u64(b, off + 25), applied_count: le_u64(b, off) }
    }

    /// Decodes the legacy layout (client u32 at +9, seq at +13, base at
    /// +21) at `off` of a header block.
    ///
    /// # Panics
    /// When the watermark does not fit in `N` bytes at `off` (a layout bug).
    #[must_use]
    pub fn decode_v1_at<const N: usize>(b: &[u8; N], off: usize) -> Self {
        let last_applied = match b[off + 8] {
            0 => None,
            _ => Some(RequestId { client: ClientId(u64::from(le_u32(b, off + 9))), seq: le_u64(b, off + 13) }),
        };
        Self { last_applied, last_base: le_u64(b, off + 21), applied_count: le_u64(b, off) }
    }
}
