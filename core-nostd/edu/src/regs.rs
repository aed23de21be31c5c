//! Register access for QEMU's edu device: the only module of this crate with `unsafe`.
//!
//! # Layout
//! [`RegisterBlock`] is the `#[repr(C)]` image of BAR0 (QEMU `docs/specs/edu.rst`),
//! built from volatile-register cells: `RO` for the id and interrupt status,
//! `RW` for liveness, factorial, status and DMA, `WO` for interrupt raise/ack.
//! Offsets and size are checked at compile time. Every access is 32 bits wide:
//! edu ignores narrower accesses below 0x80.
//!
//! # The spurious-read caveat (volatile-register issue #10)
//! volatile-register reaches its cells through `&` references. A reference is
//! `dereferenceable`, so the compiler may insert reads that the source never
//! asked for. On a device with read-to-clear registers that would be a real
//! bug. edu has none: every register reads without side effects (the id is a
//! constant, liveness/factorial/status/interrupt status return stored values,
//! the raise/ack and unknown offsets read as all-ones), so an extra read is
//! harmless here. Do not copy this pattern to a device where reads clear state.
//!
//! # One door to the hardware
//! All device logic goes through the [`EduRegisters`] trait: read or write one named
//! register. Only this module touches the volatile block, so replacing
//! volatile-register by a pointer-based crate (safe-mmio, which avoids the
//! caveat above) is a change to this file alone. The same trait is implemented
//! by [`crate::model::EduModel`], the in-memory behavioural model the tests use.

use bitflags::bitflags;
use core::mem::{offset_of, size_of};
use serde::{Deserialize, Serialize};
use volatile_register::{RO, RW, WO};

/// Size of edu's BAR0 (1 MiB). The registers occupy only the first
/// [`RegisterBlock`]-sized part of it.
pub const BAR0_SIZE: usize = 1 << 20;

/// The register block at the start of edu's BAR0.
///
/// There is no safe way to build one: it only exists as a view of device
/// memory, obtained through [`RegisterBlock::from_ptr`] (firmware) or reinc-uio's
/// typed-block handout (Linux, with the `uio` feature). Holding a
/// `&RegisterBlock` therefore means someone vouched for the memory behind it.
#[repr(C)]
pub struct RegisterBlock {
    /// 0x00: identification `0xRRrr00ed` (RR major, rr minor version).
    id: RO<u32>,
    /// 0x04: liveness check; reads back the bitwise inverse of the last write.
    liveness: RW<u32>,
    /// 0x08: factorial; write n to start, read n! once `COMPUTING` clears.
    factorial: RW<u32>,
    _reserved0: [RO<u32>; 5],
    /// 0x20: status ([`Status`]).
    status: RW<u32>,
    /// 0x24: interrupt status ([`IrqBits`] that raised the interrupt).
    irq_status: RO<u32>,
    _reserved1: [RO<u32>; 14],
    /// 0x60: interrupt raise; the value is ORed into the interrupt status.
    irq_raise: WO<u32>,
    /// 0x64: interrupt acknowledge; the value is cleared from the interrupt status.
    irq_ack: WO<u32>,
    _reserved2: [RO<u32>; 6],
    /// 0x80: DMA source address (low 32 bits; a 32-bit write zero-extends).
    dma_src: RW<u32>,
    _reserved3: RO<u32>,
    /// 0x88: DMA destination address (low 32 bits).
    dma_dst: RW<u32>,
    _reserved4: RO<u32>,
    /// 0x90: DMA transfer count.
    dma_count: RW<u32>,
    _reserved5: RO<u32>,
    /// 0x98: DMA command (bit 0 start, bit 1 direction, bit 2 interrupt when done).
    dma_cmd: RW<u32>,
}

const _: () = {
    assert!(offset_of!(RegisterBlock, id) == 0x00);
    assert!(offset_of!(RegisterBlock, liveness) == 0x04);
    assert!(offset_of!(RegisterBlock, factorial) == 0x08);
    assert!(offset_of!(RegisterBlock, status) == 0x20);
    assert!(offset_of!(RegisterBlock, irq_status) == 0x24);
    assert!(offset_of!(RegisterBlock, irq_raise) == 0x60);
    assert!(offset_of!(RegisterBlock, irq_ack) == 0x64);
    assert!(offset_of!(RegisterBlock, dma_src) == 0x80);
    assert!(offset_of!(RegisterBlock, dma_dst) == 0x88);
    assert!(offset_of!(RegisterBlock, dma_count) == 0x90);
    assert!(offset_of!(RegisterBlock, dma_cmd) == 0x98);
    assert!(size_of::<RegisterBlock>() == 0x9c);
    assert!(core::mem::align_of::<RegisterBlock>() == 4);
    assert!(size_of::<RegisterBlock>() <= BAR0_SIZE);
};

impl core::fmt::Debug for RegisterBlock {
    /// Prints the address only: formatting must not touch the device.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("edu_core::RegisterBlock").field("at", &(self as *const Self)).finish_non_exhaustive()
    }
}

impl RegisterBlock {
    /// Views the edu register block at `base`.
    ///
    /// # Safety
    /// - `base` is the start of edu's BAR0 (or a faithful model of it), mapped
    ///   as device memory, readable and writable, 4-byte aligned, and at least
    ///   `size_of::<RegisterBlock>()` (0x9c) bytes long;
    /// - the mapping stays valid for `'a` (for `'static` in firmware: never unmapped);
    /// - nothing else accesses those bytes through a non-volatile Rust
    ///   reference (`&u32`, `&[u8]`) while the returned reference lives.
    #[must_use]
    pub unsafe fn from_ptr<'a>(base: *mut RegisterBlock) -> &'a RegisterBlock {
        // SAFETY: the caller guarantees alignment, size, validity for 'a and the
        // absence of aliasing non-volatile references (see `# Safety`); every
        // field is an UnsafeCell-based volatile cell, valid for any bit pattern.
        unsafe { &*base }
    }
}

// SAFETY: `RegisterBlock` is `#[repr(C)]`, made only of volatile-register cells
// (`#[repr(transparent)]` over `VolatileCell<u32>`, i.e. `UnsafeCell<u32>`), so
// every bit pattern is valid, device-side changes are allowed behind `&`, and it
// has no `Drop`. Its size and alignment are asserted above; reinc-uio checks
// both against the mapping before it hands out a reference.
#[cfg(feature = "uio")]
unsafe impl reinc_uio::RegisterBlock for RegisterBlock {}

/// The owning host handle (`Mapping::into_block`) is register access too, so
/// an `EduHandler<Block<RegisterBlock>>` can live in a driver struct.
#[cfg(feature = "uio")]
impl EduRegisters for reinc_uio::Block<RegisterBlock> {
    fn read(&mut self, reg: ReadReg) -> u32 {
        let mut regs: &RegisterBlock = self;
        regs.read(reg)
    }
    fn write(&mut self, reg: WriteReg, value: u32) {
        let mut regs: &RegisterBlock = self;
        regs.write(reg, value);
    }
}

bitflags! {
    /// The status register (0x20).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub struct Status: u32 {
        /// A factorial computation is running (read-only; writes ignore it).
        const COMPUTING = 0x01;
        /// Raise [`IrqBits::FACTORIAL`] when a computation finishes.
        const IRQ_ON_DONE = 0x80;
    }
}

bitflags! {
    /// Interrupt status / raise / acknowledge bits (0x24, 0x60, 0x64).
    ///
    /// The device ORs any value written to the raise register into the status,
    /// so bits other than the two named ones are legal (software interrupts).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub struct IrqBits: u32 {
        /// A factorial computation finished with [`Status::IRQ_ON_DONE`] set.
        const FACTORIAL = 0x001;
        /// A DMA transfer finished (command bit 2).
        const DMA = 0x100;
        const _ = !0;
    }
}

/// A register that can be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadReg {
    /// 0x00.
    Id,
    /// 0x04.
    Liveness,
    /// 0x08.
    Factorial,
    /// 0x20.
    Status,
    /// 0x24.
    IrqStatus,
    /// 0x80.
    DmaSrc,
    /// 0x88.
    DmaDst,
    /// 0x90.
    DmaCount,
    /// 0x98.
    DmaCmd,
}

/// A register that can be written.
///
/// The DMA registers are deliberately absent. A DMA start makes the device
/// read or write *physical* memory at addresses we program; from user space
/// (UIO has no IOMMU mapping and no bus addresses for our buffers) that would
/// let safe code corrupt arbitrary memory. They stay readable for diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteReg {
    /// 0x04.
    Liveness,
    /// 0x08: starts a computation unless one is running (then ignored).
    Factorial,
    /// 0x20: only [`Status::IRQ_ON_DONE`] is writable.
    Status,
    /// 0x60.
    IrqRaise,
    /// 0x64.
    IrqAck,
}

impl ReadReg {
    /// Byte offset in BAR0.
    #[must_use]
    pub const fn offset(self) -> usize {
        match self {
            Self::Id => offset_of!(RegisterBlock, id),
            Self::Liveness => offset_of!(RegisterBlock, liveness),
            Self::Factorial => offset_of!(RegisterBlock, factorial),
            Self::Status => offset_of!(RegisterBlock, status),
            Self::IrqStatus => offset_of!(RegisterBlock, irq_status),
            Self::DmaSrc => offset_of!(RegisterBlock, dma_src),
            Self::DmaDst => offset_of!(RegisterBlock, dma_dst),
            Self::DmaCount => offset_of!(RegisterBlock, dma_count),
            Self::DmaCmd => offset_of!(RegisterBlock, dma_cmd),
        }
    }
}

impl WriteReg {
    /// Byte offset in BAR0.
    #[must_use]
    pub const fn offset(self) -> usize {
        match self {
            Self::Liveness => offset_of!(RegisterBlock, liveness),
            Self::Factorial => offset_of!(RegisterBlock, factorial),
            Self::Status => offset_of!(RegisterBlock, status),
            Self::IrqRaise => offset_of!(RegisterBlock, irq_raise),
            Self::IrqAck => offset_of!(RegisterBlock, irq_ack),
        }
    }
}

/// Register-level access to an edu device: the real block or a model.
pub trait EduRegisters {
    /// Reads one 32-bit register.
    fn read(&mut self, reg: ReadReg) -> u32;
    /// Writes one 32-bit register.
    fn write(&mut self, reg: WriteReg, value: u32);
}

impl<R: EduRegisters + ?Sized> EduRegisters for &mut R {
    fn read(&mut self, reg: ReadReg) -> u32 {
        (**self).read(reg)
    }
    fn write(&mut self, reg: WriteReg, value: u32) {
        (**self).write(reg, value);
    }
}

impl EduRegisters for &RegisterBlock {
    fn read(&mut self, reg: ReadReg) -> u32 {
        match reg {
            ReadReg::Id => self.id.read(),
            ReadReg::Liveness => self.liveness.read(),
            ReadReg::Factorial => self.factorial.read(),
            ReadReg::Status => self.status.read(),
            ReadReg::IrqStatus => self.irq_status.read(),
            ReadReg::DmaSrc => self.dma_src.read(),
            ReadReg::DmaDst => self.dma_dst.read(),
            ReadReg::DmaCount => self.dma_count.read(),
            ReadReg::DmaCmd => self.dma_cmd.read(),
        }
    }

    fn write(&mut self, reg: WriteReg, value: u32) {
        let cell = match reg {
            WriteReg::Liveness => &self.liveness,
            WriteReg::Factorial => &self.factorial,
            WriteReg::Status => &self.status,
            WriteReg::IrqRaise => {
                // SAFETY: a volatile 32-bit store to the raise register of a block
                // whose validity was vouched for when the `&RegisterBlock` was made.
                // Raising an interrupt has no memory-safety consequence for us.
                unsafe { self.irq_raise.write(value) };
                return;
            }
            WriteReg::IrqAck => {
                // SAFETY: as above, a volatile store to the acknowledge register.
                unsafe { self.irq_ack.write(value) };
                return;
            }
        };
        // SAFETY: a volatile 32-bit store to liveness, factorial or status of a
        // valid block (see above); none of them makes the device touch memory
        // (the DMA registers are not writable through this trait).
        unsafe { cell.write(value) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volatile_block_reads_and_writes_at_documented_offsets() {
        // A fake BAR in ordinary memory, viewed through the real volatile block.
        let mut bar = [0u32; 0x9c / 4];
        bar[0] = crate::model::MODEL_ID;
        // SAFETY: `bar` is 4-aligned, 0x9c bytes, lives for the whole test and is
        // only accessed through the returned reference while it is in use.
        let regs: &RegisterBlock = unsafe { RegisterBlock::from_ptr(bar.as_mut_ptr().cast()) };
        let mut r = regs;
        assert_eq!(r.read(ReadReg::Id), crate::model::MODEL_ID);
        r.write(WriteReg::Factorial, 5);
        r.write(WriteReg::IrqRaise, 0x40);
        r.write(WriteReg::IrqAck, 0x41);
        r.write(WriteReg::Status, 0x80);
        assert_eq!(r.read(ReadReg::Factorial), 5);
        assert_eq!(bar[0x08 / 4], 5);
        assert_eq!(bar[0x60 / 4], 0x40);
        assert_eq!(bar[0x64 / 4], 0x41);
        assert_eq!(bar[0x20 / 4], 0x80);
    }
}
