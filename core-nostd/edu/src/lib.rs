//! Register block and replay-safe request handler for QEMU's `edu` PCI device.
//!
//! # Why this crate exists
//! edu is the device our Linux driver (`edu_driver`, through UIO) and the QEMU
//! guest suites drive. Its register logic lives here, `#![no_std]` and without
//! an allocator, so the very same code runs in the host binary, in firmware,
//! and in unit tests against [`model::EduModel`].
//!
//! # Layers
//! - [`regs`]: the `#[repr(C)]` volatile register block, bitflags for status
//!   and interrupt bits, and the [`Regs`] trait (read/write one named
//!   register). The only module with `unsafe`.
//! - [`device`]: operations over any [`Regs`]: identify, liveness, factorial by
//!   polling (bounded) or by interrupt, raise/ack, recovery after a crash.
//! - [`handler`]: the driver contract: requests, replies, committed state, and
//!   the two-step `start` / `complete_after_irq` handler.
//! - [`model`]: a behavioural model of the device for tests.
//!
//! # Getting a register block
//! - Linux: map BAR0 with reinc-uio and ask it for a typed block
//!   (`mapping.block::<EduRegisters>(0)` borrowing, or `into_block` owning the
//!   mapping, with this crate's `uio` feature, which vouches for the block in
//!   [`regs`]); either one is a [`Regs`] for [`EduHandler::new`].
//! - Firmware: [`EduRegisters::from_ptr`], an `unsafe fn` whose `# Safety`
//!   section lists what the caller promises.
//!
//! # Host wiring (what `edu_driver` does)
//! ```text
//! start:   dev  = Sysfs::system().find(&"pci:1234:11e8@0".parse()?)?
//!          bar0 = Mapping::pci_bar(&dev, 0)?            // not UIO map 0: see reinc-uio
//!          h    = EduHandler::new(bar0.into_block::<EduRegisters>(0)?, PollBudget::default())
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
//!   QEMU, and it would spread `unsafe` writes across the crate. The [`Regs`]
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

pub mod device;
pub mod handler;
pub mod model;
#[allow(unsafe_code)]
pub mod regs;

pub use device::{Edu, EduError, ID_MAGIC, Identity, MAX_FACTORIAL_N, PollBudget, Recovery, TRACE_LEGEND, Trace};
pub use handler::{Completion, EduHandler, EduReply, EduRequest, EduState, Pending, Step};
pub use regs::{BAR0_SIZE, EduRegisters, IrqBits, ReadReg, Regs, Status, WriteReg};

#[cfg(test)]
mod tests;
