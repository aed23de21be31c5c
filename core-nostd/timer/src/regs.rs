//! The BCM2835 system timer register block and the only `unsafe` code of
//! this crate.
//!
//! The layout is the crate documentation's register map; the offsets below
//! are checked against it at compile time.
//!
//! Channels 0 and 2 belong to the VideoCore GPU firmware; only 1 and 3 may be
//! used from the ARM. The type system enforces it here: compare registers are
//! reached through a [`Channel`], which can only be 1 or 3, and
//! [`TimerRegisters::clear_match`] on the real block drops M0/M2 whatever
//! the caller passes. [`Match`] (the CS bits) and [`Channel`] are defined
//! here for that reason.
//!
//! # Why a spurious read is harmless here
//! `volatile-register` reaches each cell through a `&VolatileCell`, which lets
//! the compiler insert reads the program never asked for (volatile-register
//! issue #10). No register of this block has a read side effect: CLO/CHI/C*
//! reads are pure and CS is cleared by *writing* 1, so an extra read can never
//! lose a match or move the counter.
//!
//! # Why everything goes through this module
//! All register access of the crate is here, behind [`TimerRegisters`]; the
//! handler is safe code tested against [`crate::model::TimerModel`]. A
//! pointer-based crate such as `safe-mmio` can replace this module alone.

use core::mem::offset_of;
use core::ptr::NonNull;

use bitflags::bitflags;
use serde::{Deserialize, Serialize};
use volatile_register::{RO, RW};

use crate::handler::TimerError;

bitflags! {
    /// The match bits of CS (write 1 to clear).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
    pub struct Match: u32 {
        /// Channel 0 (GPU).
        const M0 = 1 << 0;
        /// Channel 1 (ARM).
        const M1 = 1 << 1;
        /// Channel 2 (GPU).
        const M2 = 1 << 2;
        /// Channel 3 (ARM).
        const M3 = 1 << 3;
        /// The channels the ARM (Linux) may use.
        const LINUX = Self::M1.bits() | Self::M3.bits();
    }
}

/// A compare channel the ARM may use: 1 or 3. Channels 0 and 2 belong to the
/// GPU firmware and cannot be represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Compare channel 1 (C1, M1, interrupt 1 of the GPU bank).
    C1,
    /// Compare channel 3 (C3, M3, interrupt 3 of the GPU bank); the one the
    /// device tree wires to the UIO node.
    C3,
}

impl Channel {
    /// Both ARM channels.
    pub const ALL: [Channel; 2] = [Channel::C1, Channel::C3];

    /// Validates a channel number from the wire.
    ///
    /// # Errors
    /// [`TimerError::ChannelReserved`] for 0 and 2, [`TimerError::InvalidChannel`] above 3.
    pub const fn new(n: u8) -> Result<Channel, TimerError> {
        match n {
            1 => Ok(Channel::C1),
            3 => Ok(Channel::C3),
            0 | 2 => Err(TimerError::ChannelReserved { channel: n }),
            _ => Err(TimerError::InvalidChannel { channel: n }),
        }
    }

    /// The channel number (1 or 3).
    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            Channel::C1 => 1,
            Channel::C3 => 3,
        }
    }

    /// Index of the compare register (C1 → 1, C3 → 3).
    #[must_use]
    pub const fn hw_index(self) -> usize {
        self.number() as usize
    }

    /// Index into per-channel arrays of the committed state (0 or 1).
    #[must_use]
    pub const fn slot(self) -> usize {
        match self {
            Channel::C1 => 0,
            Channel::C3 => 1,
        }
    }

    /// The channel's bit in CS.
    #[must_use]
    pub const fn match_bit(self) -> Match {
        match self {
            Channel::C1 => Match::M1,
            Channel::C3 => Match::M3,
        }
    }
}

/// Size of the register block in bytes. The UIO map is one 4 KiB page.
pub const BLOCK_SIZE: usize = 0x1C;

/// The system timer registers, in datasheet order.
#[repr(C)]
pub struct RegisterBlock {
    /// CS: match status, write 1 to clear.
    pub cs: RW<u32>,
    /// CLO: counter low word.
    pub clo: RO<u32>,
    /// CHI: counter high word.
    pub chi: RO<u32>,
    /// C0..C3: compare values.
    pub c: [RW<u32>; 4],
}

impl core::fmt::Debug for RegisterBlock {
    /// Opaque on purpose: formatting must not turn into device reads.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RegisterBlock(BCM2835 system timer @ {:p})", self)
    }
}

// The layout is the contract with the silicon: check every offset at compile time.
const _: () = {
    assert!(offset_of!(RegisterBlock, cs) == 0x00);
    assert!(offset_of!(RegisterBlock, clo) == 0x04);
    assert!(offset_of!(RegisterBlock, chi) == 0x08);
    assert!(offset_of!(RegisterBlock, c) == 0x0C);
    assert!(size_of::<RegisterBlock>() == BLOCK_SIZE);
};

/// Register-level access to a system timer: the seam between the handler and
/// the device. [`Bcm2835Timer`] implements it over mapped registers,
/// [`crate::model::TimerModel`] over a model with a simulated clock.
pub trait TimerRegisters {
    /// Reads CS (the match bits; other bits read as zero).
    fn status(&self) -> Match;
    /// Writes `m` to CS, clearing exactly those match bits. The handler only
    /// ever passes M1/M3; [`Bcm2835Timer`] also masks M0/M2 as a last fence.
    fn clear_match(&mut self, m: Match);
    /// Reads CLO.
    fn counter_low(&self) -> u32;
    /// Reads CHI.
    fn counter_high(&self) -> u32;
    /// Reads the compare register of `ch`.
    fn compare(&self, ch: Channel) -> u32;
    /// Writes the compare register of `ch`.
    fn write_compare(&mut self, ch: Channel, value: u32);
}

/// Why a mapping cannot hold the timer block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The mapping is shorter than [`BLOCK_SIZE`].
    #[error("system timer mapping is {len:#x} bytes, smaller than the {need:#x}-byte BCM2835 system timer block")]
    TooSmall {
        /// Length offered.
        len: usize,
        /// Length needed.
        need: usize,
    },
    /// The base address is not 4-byte aligned.
    #[error("system timer mapping at {addr:#x} is not 4-byte aligned")]
    Misaligned {
        /// The base address.
        addr: usize,
    },
}

/// The real system timer, reached through a mapping of its registers.
#[derive(Debug, Clone, Copy)]
pub struct Bcm2835Timer<'a> {
    regs: &'a RegisterBlock,
}

impl<'a> Bcm2835Timer<'a> {
    /// The block behind a reference that already proves it maps the timer
    /// registers (one from [`Bcm2835Timer::from_raw`]'s contract, or from
    /// reinc-uio's bounds- and alignment-checked `Mapping::block`).
    #[must_use]
    pub fn new(regs: &'a RegisterBlock) -> Self {
        Self { regs }
    }

    /// Views `len` bytes of mapped device memory at `base` as the timer block.
    ///
    /// # Errors
    /// [`MapError`] when the mapping is too small or misaligned; nothing is
    /// accessed in that case.
    ///
    /// # Safety
    /// - `base..base + len` must be a live mapping of the BCM2835 system timer
    ///   registers (for example the UIO map of the `generic-uio` timer node),
    ///   mapped uncached as device memory, and must stay mapped for `'a`.
    /// - Nothing may treat that memory as ordinary Rust memory (no `&mut`, no
    ///   non-volatile access) for `'a`. The GPU or other processes using the
    ///   device concurrently is fine: every access is one volatile 32-bit
    ///   load or store.
    pub unsafe fn from_raw(base: NonNull<u8>, len: usize) -> Result<Self, MapError> {
        if len < BLOCK_SIZE {
            return Err(MapError::TooSmall { len, need: BLOCK_SIZE });
        }
        let addr = base.as_ptr() as usize;
        if !addr.is_multiple_of(align_of::<RegisterBlock>()) {
            return Err(MapError::Misaligned { addr });
        }
        // SAFETY: the caller guarantees `base` maps at least `len >= BLOCK_SIZE`
        // bytes of system timer registers for `'a` (length and alignment are
        // checked above) and that no Rust code treats them as plain memory.
        // `RegisterBlock` is `repr(C)` over `VolatileCell`s, so the shared
        // reference only performs volatile accesses; an extra read is
        // harmless (module doc).
        let regs = unsafe { base.cast::<RegisterBlock>().as_ref() };
        Ok(Self { regs })
    }
}

impl TimerRegisters for Bcm2835Timer<'_> {
    fn status(&self) -> Match {
        Match::from_bits_truncate(self.regs.cs.read())
    }

    fn clear_match(&mut self, m: Match) {
        let bits = m.intersection(Match::LINUX).bits();
        // SAFETY: CS is write-1-to-clear for M0..M3; `bits` holds at most M1
        // and M3, the ARM's channels, so the GPU's matches are never touched.
        unsafe { self.regs.cs.write(bits) }
    }

    fn counter_low(&self) -> u32 {
        self.regs.clo.read()
    }

    fn counter_high(&self) -> u32 {
        self.regs.chi.read()
    }

    fn compare(&self, ch: Channel) -> u32 {
        self.regs.c[ch.hw_index()].read()
    }

    fn write_compare(&mut self, ch: Channel, value: u32) {
        // SAFETY: C1/C3 are plain compare registers owned by the ARM (a
        // `Channel` cannot name the GPU's C0/C2); any value is a valid deadline.
        unsafe { self.regs.c[ch.hw_index()].write(value) }
    }
}

// SAFETY: `RegisterBlock` is `#[repr(C)]` and made only of volatile-register
// cells (`#[repr(transparent)]` over `UnsafeCell<u32>`), so every bit pattern
// is valid and the device may change it behind `&`; it has no `Drop` and no
// pointers; its size is asserted above and reinc-uio checks size and
// alignment against the mapping; no register has a read side effect.
#[cfg(feature = "uio")]
unsafe impl reinc_uio::RegisterBlock for RegisterBlock {}

/// The owning host handle (`Mapping::into_block`) is register access too, so
/// a `Timer<Block<RegisterBlock>>` can live in the driver's state.
#[cfg(feature = "uio")]
impl TimerRegisters for reinc_uio::Block<RegisterBlock> {
    fn status(&self) -> Match {
        Bcm2835Timer::new(self).status()
    }
    fn clear_match(&mut self, m: Match) {
        Bcm2835Timer::new(self).clear_match(m);
    }
    fn counter_low(&self) -> u32 {
        Bcm2835Timer::new(self).counter_low()
    }
    fn counter_high(&self) -> u32 {
        Bcm2835Timer::new(self).counter_high()
    }
    fn compare(&self, ch: Channel) -> u32 {
        Bcm2835Timer::new(self).compare(ch)
    }
    fn write_compare(&mut self, ch: Channel, value: u32) {
        Bcm2835Timer::new(self).write_compare(ch, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(4096))]
    struct Page([u32; 1024]);

    #[test]
    fn mapping_shorter_than_block_is_refused() {
        let mut page = Page([0; 1024]);
        let base = NonNull::from(&mut page.0).cast::<u8>();
        // SAFETY: ordinary memory standing in for the device, outliving the view.
        let err = unsafe { Bcm2835Timer::from_raw(base, 0x18) }.unwrap_err();
        assert_eq!(err, MapError::TooSmall { len: 0x18, need: BLOCK_SIZE });
    }

    #[test]
    fn register_accesses_hit_datasheet_offsets_and_spare_gpu_channels() {
        let mut page = Page([0; 1024]);
        page.0[1] = 0x1234_5678; // CLO
        page.0[2] = 0x9; // CHI
        let base = NonNull::from(&mut page.0).cast::<u8>();
        {
            // SAFETY: as above.
            let mut t = unsafe { Bcm2835Timer::from_raw(base, 4096) }.unwrap();
            assert_eq!((t.counter_high(), t.counter_low()), (0x9, 0x1234_5678));
            t.write_compare(Channel::C1, 0xAAAA);
            t.write_compare(Channel::C3, 0xBBBB);
            t.clear_match(Match::all());
        }
        assert_eq!(page.0[0x10 / 4], 0xAAAA, "C1");
        assert_eq!(page.0[0x18 / 4], 0xBBBB, "C3");
        assert_eq!(page.0[0x0C / 4], 0, "C0 (GPU) untouched");
        assert_eq!(page.0[0x14 / 4], 0, "C2 (GPU) untouched");
        assert_eq!(page.0[0], (Match::M1 | Match::M3).bits(), "CS write spares M0/M2");
    }
}
