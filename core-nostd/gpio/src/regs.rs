//! The BCM2835 GPIO register block and the only `unsafe` code of this crate.
//!
//! The layout is the crate documentation's register map; the offsets below
//! are checked against it at compile time.
//!
//! # Why a spurious read is harmless here
//! `volatile-register` reaches each cell through a `&VolatileCell`, and a
//! reference to memory lets the compiler insert reads the program never asked
//! for (volatile-register issue #10). That matters only for registers whose
//! *read* has a side effect. This block has none: GPLEV and GPFSEL reads are
//! pure, GPEDS is cleared by *writing* 1 (reading it changes nothing), and the
//! write-only GPSET/GPCLR registers read as zero or garbage without effect. An
//! extra read can therefore never change device state. (Spurious *writes* are
//! not something the compiler may invent.)
//!
//! # Why everything goes through this module
//! Every register access of the crate is here, behind the [`GpioRegisters`]
//! trait; the handler above it is safe code and is tested against
//! [`crate::model::GpioModel`]. Should the reference-based access ever need to
//! go, a pointer-based crate such as `safe-mmio` can replace this one module
//! without touching the handler.

use core::mem::{offset_of, size_of};
use core::ptr::NonNull;

use volatile_register::{RO, RW, WO};

use crate::pin::{Bank, DetectKind};

/// Size of the register block in bytes (up to and including the test register
/// at 0xB0). The UIO map is one 4 KiB page; the block must fit in it.
pub const BLOCK_SIZE: usize = 0xB4;

/// The GPIO registers, in datasheet order. Reserved words are read-only
/// cells that no code reads or writes: the `RegisterBlock` contract allows
/// only cell types over device memory, even as padding.
#[repr(C)]
pub struct RegisterBlock {
    /// GPFSEL0..GPFSEL5.
    pub gpfsel: [RW<u32>; 6],
    _reserved18: RO<u32>,
    /// GPSET0, GPSET1.
    pub gpset: [WO<u32>; 2],
    _reserved24: RO<u32>,
    /// GPCLR0, GPCLR1.
    pub gpclr: [WO<u32>; 2],
    _reserved30: RO<u32>,
    /// GPLEV0, GPLEV1.
    pub gplev: [RO<u32>; 2],
    _reserved3c: RO<u32>,
    /// GPEDS0, GPEDS1 (write 1 to clear).
    pub gpeds: [RW<u32>; 2],
    _reserved48: RO<u32>,
    /// GPREN0, GPREN1.
    pub gpren: [RW<u32>; 2],
    _reserved54: RO<u32>,
    /// GPFEN0, GPFEN1.
    pub gpfen: [RW<u32>; 2],
    _reserved60: RO<u32>,
    /// GPHEN0, GPHEN1.
    pub gphen: [RW<u32>; 2],
    _reserved6c: RO<u32>,
    /// GPLEN0, GPLEN1.
    pub gplen: [RW<u32>; 2],
    _reserved78: RO<u32>,
    /// GPAREN0, GPAREN1.
    pub gparen: [RW<u32>; 2],
    _reserved84: RO<u32>,
    /// GPAFEN0, GPAFEN1.
    pub gpafen: [RW<u32>; 2],
    _reserved90: RO<u32>,
    /// GPPUD.
    pub gppud: RW<u32>,
    /// GPPUDCLK0, GPPUDCLK1.
    pub gppudclk: [RW<u32>; 2],
    _reserved_a0: [RO<u32>; 4],
    /// Test register; never touched.
    _test: RO<u32>,
}

impl core::fmt::Debug for RegisterBlock {
    /// Opaque on purpose: formatting must not turn into device reads.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RegisterBlock(BCM2835 GPIO @ {:p})", self)
    }
}

// The layout is the contract with the silicon: check every offset at compile time.
const _: () = {
    assert!(offset_of!(RegisterBlock, gpfsel) == 0x00);
    assert!(offset_of!(RegisterBlock, gpset) == 0x1C);
    assert!(offset_of!(RegisterBlock, gpclr) == 0x28);
    assert!(offset_of!(RegisterBlock, gplev) == 0x34);
    assert!(offset_of!(RegisterBlock, gpeds) == 0x40);
    assert!(offset_of!(RegisterBlock, gpren) == 0x4C);
    assert!(offset_of!(RegisterBlock, gpfen) == 0x58);
    assert!(offset_of!(RegisterBlock, gphen) == 0x64);
    assert!(offset_of!(RegisterBlock, gplen) == 0x70);
    assert!(offset_of!(RegisterBlock, gparen) == 0x7C);
    assert!(offset_of!(RegisterBlock, gpafen) == 0x88);
    assert!(offset_of!(RegisterBlock, gppud) == 0x94);
    assert!(offset_of!(RegisterBlock, gppudclk) == 0x98);
    assert!(offset_of!(RegisterBlock, _test) == 0xB0);
    assert!(size_of::<RegisterBlock>() == BLOCK_SIZE);
};

/// Register-level access to a GPIO block: the seam between the handler and
/// the device. [`Bcm2835Gpio`] implements it over real (mapped) registers and
/// [`crate::model::GpioModel`] over a behavioural model in memory.
///
/// Methods take a [`Bank`] or a GPFSEL index, never a raw offset, so no caller
/// can name a register that does not exist.
pub trait GpioRegisters {
    /// Reads GPFSEL`index` (`index` in `0..6`).
    fn fsel(&self, index: usize) -> u32;
    /// Writes GPFSEL`index` (`index` in `0..6`).
    fn write_fsel(&mut self, index: usize, value: u32);
    /// Writes GPSET of `bank`: sets the output latch of the pins in `mask`.
    fn set(&mut self, bank: Bank, mask: u32);
    /// Writes GPCLR of `bank`: clears the output latch of the pins in `mask`.
    fn clear(&mut self, bank: Bank, mask: u32);
    /// Reads GPLEV of `bank`.
    fn level(&self, bank: Bank) -> u32;
    /// Reads GPEDS of `bank`.
    fn events(&self, bank: Bank) -> u32;
    /// Writes `mask` to GPEDS of `bank`, clearing exactly those event bits.
    fn clear_events(&mut self, bank: Bank, mask: u32);
    /// Reads the enable register of `kind` for `bank`.
    fn detect(&self, kind: DetectKind, bank: Bank) -> u32;
    /// Writes the enable register of `kind` for `bank`.
    fn write_detect(&mut self, kind: DetectKind, bank: Bank, value: u32);
}

/// Why a mapping cannot hold the GPIO block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The mapping is shorter than [`BLOCK_SIZE`].
    #[error("GPIO register mapping is {len:#x} bytes, smaller than the {need:#x}-byte BCM2835 GPIO block")]
    TooSmall {
        /// Length offered.
        len: usize,
        /// Length needed.
        need: usize,
    },
    /// The base address is not 4-byte aligned.
    #[error("GPIO register mapping at {addr:#x} is not 4-byte aligned")]
    Misaligned {
        /// The base address.
        addr: usize,
    },
}

/// The real GPIO block, reached through a mapping of its registers.
#[derive(Debug, Clone, Copy)]
pub struct Bcm2835Gpio<'a> {
    regs: &'a RegisterBlock,
}

impl<'a> Bcm2835Gpio<'a> {
    /// The block behind a reference that already proves it maps the GPIO
    /// registers (one from [`Bcm2835Gpio::from_raw`]'s contract, or from
    /// reinc-uio's bounds- and alignment-checked `Mapping::block`).
    #[must_use]
    pub fn new(regs: &'a RegisterBlock) -> Self {
        Self { regs }
    }

    /// Views `len` bytes of mapped device memory at `base` as the GPIO block.
    ///
    /// # Errors
    /// [`MapError`] when the mapping is too small or misaligned; nothing is
    /// accessed in that case.
    ///
    /// # Safety
    /// - `base..base + len` must be a live mapping of the BCM2835 GPIO
    ///   registers (for example the UIO map of the `generic-uio` GPIO node),
    ///   mapped uncached as device memory, and must stay mapped for `'a`.
    /// - Nothing may treat that memory as ordinary Rust memory (no `&mut`, no
    ///   non-volatile access) for `'a`. Other [`Bcm2835Gpio`] views and other
    ///   processes or the kernel writing the *device* are fine: every access
    ///   is a single volatile 32-bit load or store, as the hardware expects.
    pub unsafe fn from_raw(base: NonNull<u8>, len: usize) -> Result<Self, MapError> {
        if len < BLOCK_SIZE {
            return Err(MapError::TooSmall { len, need: BLOCK_SIZE });
        }
        let addr = base.as_ptr() as usize;
        if !addr.is_multiple_of(align_of::<RegisterBlock>()) {
            return Err(MapError::Misaligned { addr });
        }
        // SAFETY: the caller guarantees `base` maps at least `len >= BLOCK_SIZE`
        // bytes of GPIO registers for `'a` (checked length, checked alignment)
        // and that no Rust code treats them as plain memory; `RegisterBlock` is
        // `repr(C)` over `VolatileCell`s, so a shared reference only ever
        // performs volatile accesses, and an extra read is harmless (module doc).
        let regs = unsafe { base.cast::<RegisterBlock>().as_ref() };
        Ok(Self { regs })
    }

    fn detect_reg(&self, kind: DetectKind, bank: Bank) -> &'a RW<u32> {
        let family = match kind {
            DetectKind::Rising => &self.regs.gpren,
            DetectKind::Falling => &self.regs.gpfen,
            DetectKind::High => &self.regs.gphen,
            DetectKind::Low => &self.regs.gplen,
            DetectKind::AsyncRising => &self.regs.gparen,
            DetectKind::AsyncFalling => &self.regs.gpafen,
        };
        &family[bank.index()]
    }
}

impl GpioRegisters for Bcm2835Gpio<'_> {
    fn fsel(&self, index: usize) -> u32 {
        self.regs.gpfsel[index].read()
    }

    fn write_fsel(&mut self, index: usize, value: u32) {
        // SAFETY: GPFSELn is a plain read/write configuration register; any
        // value is a valid function assignment (reserved bits 30..31 are
        // written back as read). Which pins may change is the handler's
        // policy, not a memory-safety matter.
        unsafe { self.regs.gpfsel[index].write(value) }
    }

    fn set(&mut self, bank: Bank, mask: u32) {
        // SAFETY: GPSETn only sets output latches of the pins whose bit is 1;
        // bits of pins that do not exist are ignored by the hardware.
        unsafe { self.regs.gpset[bank.index()].write(mask) }
    }

    fn clear(&mut self, bank: Bank, mask: u32) {
        // SAFETY: GPCLRn only clears output latches of the pins whose bit is 1.
        unsafe { self.regs.gpclr[bank.index()].write(mask) }
    }

    fn level(&self, bank: Bank) -> u32 {
        self.regs.gplev[bank.index()].read()
    }

    fn events(&self, bank: Bank) -> u32 {
        self.regs.gpeds[bank.index()].read()
    }

    fn clear_events(&mut self, bank: Bank, mask: u32) {
        // SAFETY: GPEDSn is write-1-to-clear; writing `mask` clears exactly
        // those latched events and nothing else.
        unsafe { self.regs.gpeds[bank.index()].write(mask) }
    }

    fn detect(&self, kind: DetectKind, bank: Bank) -> u32 {
        self.detect_reg(kind, bank).read()
    }

    fn write_detect(&mut self, kind: DetectKind, bank: Bank, value: u32) {
        // SAFETY: the detect-enable registers are plain read/write bit masks;
        // any value only changes which events are latched into GPEDS.
        unsafe { self.detect_reg(kind, bank).write(value) }
    }
}

// SAFETY: `RegisterBlock` is `#[repr(C)]` and made only of volatile-register
// cells (`#[repr(transparent)]` over `UnsafeCell<u32>`) and plain `u32`
// padding that is never accessed, so every bit pattern is valid and the
// device may change it behind `&`; it has no `Drop` and no pointers; its size
// is asserted above and reinc-uio checks size and alignment against the
// mapping; no register has a read side effect (module doc).
#[cfg(feature = "uio")]
unsafe impl reinc_uio::RegisterBlock for RegisterBlock {}

/// The owning host handle (`Mapping::into_block`) is register access too, so
/// a `Gpio<Block<RegisterBlock>>` can live in the driver's state.
#[cfg(feature = "uio")]
impl GpioRegisters for reinc_uio::Block<RegisterBlock> {
    fn fsel(&self, index: usize) -> u32 {
        Bcm2835Gpio::new(self).fsel(index)
    }
    fn write_fsel(&mut self, index: usize, value: u32) {
        Bcm2835Gpio::new(self).write_fsel(index, value);
    }
    fn set(&mut self, bank: Bank, mask: u32) {
        Bcm2835Gpio::new(self).set(bank, mask);
    }
    fn clear(&mut self, bank: Bank, mask: u32) {
        Bcm2835Gpio::new(self).clear(bank, mask);
    }
    fn level(&self, bank: Bank) -> u32 {
        Bcm2835Gpio::new(self).level(bank)
    }
    fn events(&self, bank: Bank) -> u32 {
        Bcm2835Gpio::new(self).events(bank)
    }
    fn clear_events(&mut self, bank: Bank, mask: u32) {
        Bcm2835Gpio::new(self).clear_events(bank, mask);
    }
    fn detect(&self, kind: DetectKind, bank: Bank) -> u32 {
        Bcm2835Gpio::new(self).detect(kind, bank)
    }
    fn write_detect(&mut self, kind: DetectKind, bank: Bank, value: u32) {
        Bcm2835Gpio::new(self).write_detect(kind, bank, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An aligned stand-in for a mapped page.
    #[repr(C, align(4096))]
    struct Page([u32; 1024]);

    #[test]
    fn mapping_shorter_than_block_is_refused() {
        let mut page = Page([0; 1024]);
        let base = NonNull::from(&mut page.0).cast::<u8>();
        // SAFETY: the page is ordinary memory standing in for the device; it
        // outlives the view and is not otherwise accessed while the view lives.
        let err = unsafe { Bcm2835Gpio::from_raw(base, 0xB0) }.unwrap_err();
        assert_eq!(err, MapError::TooSmall { len: 0xB0, need: BLOCK_SIZE });
    }

    #[test]
    fn misaligned_mapping_is_refused() {
        let mut page = Page([0; 1024]);
        let base = NonNull::from(&mut page.0).cast::<u8>();
        // SAFETY: as above; the offset stays inside the page.
        let odd = unsafe { base.add(2) };
        // SAFETY: as above.
        let err = unsafe { Bcm2835Gpio::from_raw(odd, 4000) }.unwrap_err();
        assert!(matches!(err, MapError::Misaligned { .. }));
    }

    #[test]
    fn register_accesses_hit_datasheet_offsets() {
        let mut page = Page([0; 1024]);
        let base = NonNull::from(&mut page.0).cast::<u8>();
        {
            // SAFETY: as above.
            let mut gpio = unsafe { Bcm2835Gpio::from_raw(base, 4096) }.unwrap();
            gpio.write_fsel(1, 0x0020_0000);
            gpio.set(Bank::B0, 1 << 17);
            gpio.clear(Bank::B1, 1 << 3);
            gpio.clear_events(Bank::B0, 0x55);
            gpio.write_detect(DetectKind::Rising, Bank::B1, 7);
            gpio.write_detect(DetectKind::AsyncFalling, Bank::B0, 9);
        }
        let words = &page.0;
        assert_eq!(words[0x04 / 4], 0x0020_0000, "GPFSEL1");
        assert_eq!(words[0x1C / 4], 1 << 17, "GPSET0");
        assert_eq!(words[0x2C / 4], 1 << 3, "GPCLR1");
        assert_eq!(words[0x40 / 4], 0x55, "GPEDS0");
        assert_eq!(words[0x50 / 4], 7, "GPREN1");
        assert_eq!(words[0x88 / 4], 9, "GPAFEN0");
        let written = [0x04, 0x1C, 0x2C, 0x40, 0x50, 0x88];
        for (i, w) in words.iter().enumerate() {
            if !written.contains(&(i * 4)) {
                assert_eq!(*w, 0, "unexpected write at offset {:#x}", i * 4);
            }
        }
    }
}
