//! The device's layout: the header at offset 0 and the packet slots after
//! it (the crate documentation's "Layout of the region"), their encoding and
//! their checksums. This is net_core's register block: the only code that
//! knows where a byte of the device lives. There is no `unsafe` here, as in
//! the whole crate: the region is reached through [`crate::Region`].

use reinc_proto::RequestId;
use reinc_region::header::{Format, Unsealed, Watermark};

/// Bytes per packet slot.
pub const SLOT_BYTES: usize = 2048;
/// Slot header: length and checksum.
pub(crate) const SLOT_FIXED: usize = 6;
/// Largest packet.
pub const MTU: usize = SLOT_BYTES - SLOT_FIXED;
/// Bytes of the device header.
pub const HEADER_BYTES: usize = 64;
/// The header's magic number.
pub const MAGIC: [u8; 8] = *b"REINCNET";
/// Slot count (`u32`) at 16, then the watermark: see the layout above.
/// Version 2: the watermark's client id is 64 bits (protocol version 2).
const FORMAT: Format = Format { magic: MAGIC, version: 2, unit: SLOT_BYTES as u32 };

/// Bytes a ring of `slots` slots needs.
#[must_use]
pub const fn region_bytes(slots: u32) -> u64 {
    HEADER_BYTES as u64 + slots as u64 * SLOT_BYTES as u64
}

/// The decoded device header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Slots in the ring.
    pub slots: u32,
    /// The `Send` applied last: the exactly-once watermark.
    pub last_applied: Option<RequestId>,
    /// The committed `tx` that `last_applied` was applied on.
    pub last_base: u64,
    /// `Send`s applied to this region, ever (each counted once).
    pub applied_count: u64,
}

/// Why a region is not a usable ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// No REINCNET magic; the region is left untouched.
    #[error("no REINCNET magic: the region holds something else and is left untouched")]
    Foreign,
    /// Checksum mismatch.
    #[error("header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// Stored.
        stored: u32,
        /// Computed.
        computed: u32,
    },
    /// Another format or slot size.
    #[error("format {version} with {slot_bytes}-byte slots is not supported")]
    Format {
        /// Version found.
        version: u32,
        /// Slot size found.
        slot_bytes: u32,
    },
    /// Formatted with another slot count.
    #[error("region was formatted with {found} slots, {expected} requested")]
    Geometry {
        /// On the region.
        found: u32,
        /// Requested.
        expected: u32,
    },
}

impl Header {
    /// The header's bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        FORMAT.encode(self.slots.to_le_bytes(), &self.watermark())
    }

    /// Decodes a header (pure); `Ok(None)` for an all-zero, unformatted one.
    ///
    /// # Errors
    /// [`HeaderError`] for a foreign, damaged or unsupported header.
    pub fn decode(b: &[u8; HEADER_BYTES]) -> Result<Option<Self>, HeaderError> {
        let fields = match FORMAT.decode(b) {
            // A ring formatted by version 1 keeps opening; it is written
            // back in the current layout at its next send.
            Err(Unsealed::Format { version: 1, unit }) if unit == FORMAT.unit => FORMAT.at_version(1).decode_v1(b)?,
            other => other?,
        };
        Ok(fields.map(|(slots, w)| Self::new(u32::from_le_bytes(slots), w)))
    }

    pub(crate) fn new(slots: u32, w: Watermark) -> Self {
        Self { slots, last_applied: w.last_applied, last_base: w.last_base, applied_count: w.applied_count }
    }

    pub(crate) fn watermark(&self) -> Watermark {
        Watermark { last_applied: self.last_applied, last_base: self.last_base, applied_count: self.applied_count }
    }
}

impl From<Unsealed> for HeaderError {
    fn from(e: Unsealed) -> Self {
        match e {
            Unsealed::Foreign => Self::Foreign,
            Unsealed::Checksum { stored, computed } => Self::Checksum { stored, computed },
            Unsealed::Format { version, unit } => Self::Format { version, slot_bytes: unit },
        }
    }
}

pub(crate) fn slot_crc(len: &[u8], data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(data);
    h.finalize()
}
