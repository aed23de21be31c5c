//! The byte region a persistent device core lives in, and the sealed header
//! that carries its exactly-once watermark.
//!
//! # Why this crate exists
//! `storage-core` and `net_core` both keep their device in a plain byte
//! region (a file on Linux, RAM in firmware and tests), and both make a
//! write-type request exactly-once at the device the same way: after the
//! effect, they record the request's id and the committed state it was
//! applied on in a CRC-sealed header, and a replay of that very request on
//! that very state skips the effect. The two cores had each grown a
//! byte-for-byte copy of the [`Region`] trait, [`RamRegion`], [`OutOfBounds`]
//! and the header code; a fix to one (a bounds check, the replay rule) would
//! have had to be found and repeated in the other. This crate holds the one
//! copy:
//! - [`Region`], [`RamRegion`], [`OutOfBounds`]: random access to bytes;
//! - [`Effect`]: what the watermark decided for one request;
//! - [`header`]: the sealed header (magic, format version, unit size, CRC) and
//!   the [`header::Watermark`] with its replay rule;
//! - `FileRegion` (feature `file`, needs `std`): a file through
//!   `pread`/`pwrite`, for the host driver binaries.
//!
//! Each core keeps its own magic, geometry type, header block size, error
//! types and messages; only the mechanics are shared, and neither core's
//! on-region format changed (each core has a golden test that builds its
//! header field by field from the documented layout).
//!
//! # Designs tried and rejected
//! - Letting `net_core` depend on `storage-core` for the trait: one device
//!   core would depend on another, unrelated one, and pull its block logic
//!   into every net build.
//! - Keeping the copies (net_core's earlier choice, "three methods"): the
//!   copies had already grown to the watermark and header checks, which is
//!   exactly the code whose correctness the replay guarantee rests on.
//! - One shared header struct with a fixed `u64` geometry field: the two
//!   formats size their geometry differently (`u32` slots, `u64` blocks, both
//!   at 16, the watermark right behind), so net's watermark would have moved
//!   and every existing ring would have become unreadable. The shared code
//!   takes the geometry as `G` bytes, and the cores keep their public header
//!   structs and error types.
//! - Putting the file region in `reinc-runtime`: it implements this crate's
//!   trait and has nothing to do with the event loop; behind a feature here,
//!   the `no_std` build never sees it.
//! - Mapping the file (`memmap2`): needs `unsafe` outside the UIO layer, and
//!   a file truncated by someone else turns a load into SIGBUS.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "file")]
extern crate std;

#[cfg(feature = "file")]
mod file;
pub mod header;

#[cfg(feature = "file")]
pub use file::{FileError, FileRegion, OpenFileError};

/// Whether handling a request touched the device, as the watermark decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// No device write (reads, queries, refusals).
    None,
    /// The write was applied and the watermark advanced: counts as one execution.
    Applied,
    /// The watermark shows an earlier instance applied it already; skipped.
    AlreadyApplied,
}

/// A byte region a device lives in: a file on Linux, RAM in firmware.
pub trait Region {
    /// The region's I/O error.
    type Error: core::fmt::Debug + core::fmt::Display;
    /// Size of the region in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from byte offset `off`.
    ///
    /// # Errors
    /// The region could not be read.
    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> Result<(), Self::Error>;
    /// Writes `data` at byte offset `off`.
    ///
    /// # Errors
    /// The region could not be written.
    fn write_at(&mut self, off: u64, data: &[u8]) -> Result<(), Self::Error>;
}

/// A region in RAM (firmware, tests).
#[derive(Debug)]
pub struct RamRegion<'a>(pub &'a mut [u8]);

/// An access outside a [`RamRegion`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("access of {len} bytes at offset {off} is outside the {size}-byte RAM region")]
pub struct OutOfBounds {
    /// Offset.
    pub off: u64,
    /// Length.
    pub len: usize,
    /// Region size.
    pub size: usize,
}

impl RamRegion<'_> {
    fn range(&self, off: u64, len: usize) -> Result<core::ops::Range<usize>, OutOfBounds> {
        let err = OutOfBounds { off, len, size: self.0.len() };
        let start = usize::try_from(off).map_err(|_| err)?;
        let end = start.checked_add(len).filter(|&e| e <= self.0.len()).ok_or(err)?;
        Ok(start..end)
    }
}

impl Region for RamRegion<'_> {
    type Error = OutOfBounds;
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        let r = self.range(off, buf.len())?;
        buf.copy_from_slice(&self.0[r]);
        Ok(())
    }
    fn write_at(&mut self, off: u64, data: &[u8]) -> Result<(), OutOfBounds> {
        let r = self.range(off, data.len())?;
        self.0[r].copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
