//! Register block and replay-safe request handler for QEMU's `edu` PCI device.
//!
//! # Why this crate exists
//! edu is the device our Linux driver (`edu_driver`, through UIO) and the QEMU
//! guest suites drive. Its register logic lives here, `#![no_std]` and without
//! an allocator, so the very same code runs in the host binary, in firmware,
//! and in unit tests against [`model::EduModel`].
//!
//! # Register map
//! BAR0 of the device (QEMU `docs/specs/edu.rst`); every access is 32 bits
//! wide. [`RegisterBlock`] is this table as a `#[repr(C)]` struct, its
//! offsets checked at compile time.
//!
//! | offset | register | access |
//! |---|---|---|
//! | 0x00 | id: `0xRRrr00ed` (RR major, rr minor version) | RO |
//! | 0x04 | liveness: reads back the bitwise inverse of the last write | RW |
//! | 0x08 | factorial: write n to start, read n! once `COMPUTING` clears | RW |
//! | 0x20 | status ([`Status`]: `COMPUTING`, `IRQ_ON_DONE`) | RW |
//! | 0x24 | interrupt status ([`IrqBits`]) | RO |
//! | 0x60 | interrupt raise: ORed into the interrupt status | WO |
//! | 0x64 | interrupt acknowledge: cleared from the interrupt status | WO |
//! | 0x80, 0x88, 0x90, 0x98 | DMA source, destination, count, command (never written: see [`WriteReg`]) | RW |
//!
//! # Shape (the device-core template: every core has these files)
//! - `regs.rs` ([`regs`]): the `#[repr(C)]` volatile [`RegisterBlock`],
//!   bitflags for status and interrupt bits, and the [`EduRegisters`] trait
//!   (read/write one named register). The only module with `unsafe`.
//! - `handler.rs`: the driver contract: requests, replies, committed state,
//!   and the two-step [`EduHandler::start`] /
//!   [`EduHandler::complete_after_irq`] handler, over [`Edu`], the device
//!   operations (identify, liveness, factorial by polling, bounded, or by
//!   interrupt, raise/ack, recovery after a crash), and their errors.
//! - `model.rs` ([`model`]): a behavioural model of the device, which the
//!   tests here and in `edu_driver` run the handler against.
//! - `trace.rs`: the post-mortem [`Trace`] entries and their codes and
//!   [`TRACE_LEGEND`], made from one table by `reinc_ringbuf::trace_legend!`.
//! - `tests.rs`: behaviour against the model, and the typed block through
//!   reinc-uio (`regs.rs` keeps the test that needs `unsafe`, `trace.rs` the
//!   check of its table).
//!
//! # Getting a register block
//! - Linux: map BAR0 with reinc-uio and ask it for a typed block
//!   (`mapping.block::<RegisterBlock>(0)` borrowing, or `into_block` owning the
//!   mapping, with this crate's `uio` feature, which vouches for the block in
//!   [`regs`]); either one is a [`EduRegisters`] for [`EduHandler::new`].
//! - Firmware: [`RegisterBlock::from_ptr`], an `unsafe fn` whose `# Safety`
//!   section lists what the caller promises.
//!
//! # Host wiring (what `edu_driver` does)
//! ```text
//! start:   dev  = Sysfs::system().find(&"pci:1234:11e8@0".parse()?)?
//!          bar0 = Mapping::pci_bar(&dev, 0)?            // not UIO map 0: see reinc-uio
//!          h    = EduHandler::new(bar0.into_block::<RegisterBlock>(0)?, PollBudget::default())
//!                 // (or bar0.block(0)? to borrow instead of own the mapping)
//!          h.recover()?                                  // ack leftovers, IRQ_ON_DONE off
//!          irq  = Irq::open(&dev)?; irq.reenable()?      // a dead predecessor may have left INTx masked
//! request: match h.start(&state, &req) {
//!            Done { reply, state }  => reply with commit
//!            WaitIrq(p) => poll(irq fd + IPC socket); on irq readable:
//!                          irq.consume()?; step = h.complete_after_irq(&state, &p); irq.reenable()?
//!                          (complete_after_irq acknowledges the device first, so the
//!                          line is low when INTx is unmasked; WaitIrq again = not ours)
//!          }
//! ```
//!
//! # Designs rejected
//! - Device logic calling the volatile block directly: untestable without
//!   QEMU, and it would spread `unsafe` writes across the crate. The [`EduRegisters`]
//!   trait keeps one door to the hardware and lets a model stand in.
//! - One `Reg` enum for reads and writes: it would allow reading the
//!   write-only raise/ack registers. Separate [`ReadReg`] / [`WriteReg`] make
//!   that unrepresentable, and keep the DMA registers read-only (a DMA start
//!   from safe code could write arbitrary physical memory).
//! - A handler that blocks until the interrupt: it would stop the runtime
//!   from answering heartbeats. `start` returns [`Step::WaitIrq`] instead.
//! - Unbounded spinning on `COMPUTING`: a wedged device would hang the driver
//!   silently. Every wait has a [`PollBudget`].
#![no_std]
#![deny(unsafe_code)]

pub mod handler;
pub mod model;
#[allow(unsafe_code)]
pub mod regs;
mod trace;

pub use handler::{
    Completion, Edu, EduError, EduHandler, EduReply, EduRequest, EduState, ID_MAGIC, Identity, MAX_FACTORIAL_N,
    Pending, PollBudget, Recovery, Step,
};
pub use regs::{BAR0_SIZE, EduRegisters, IrqBits, ReadReg, RegisterBlock, Status, WriteReg};
pub use trace::{TRACE_LEGEND, Trace};

#[cfg(test)]
mod tests;
