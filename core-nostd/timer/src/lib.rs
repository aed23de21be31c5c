//! BCM2835 system timer register block and compare-channel handler.
//!
//! # Why this crate exists
//! `timer_driver` gives clients deadlines ("wake me at t", "in 500 ms") from
//! the Raspberry Pi's system timer through a `generic-uio` mapping, with the
//! compare channel's interrupt delivered by `read()` on `/dev/uioN`. That is
//! what lets the blink demo pace itself with interrupts instead of sleeps or
//! busy waiting. All register logic is here, `#![no_std]` with no allocator,
//! shared by the Linux host binary and bare-metal firmware, and tested on the
//! host against a model with a simulated clock.
//!
//! # The device
//! A free-running 64-bit microsecond counter (CLO/CHI) and four 32-bit
//! compare registers C0..C3; when CLO equals Cn, bit Mn of CS latches and
//! the channel's interrupt line is asserted until software writes 1 to Mn.
//! **Channels 0 and 2 are used by the VideoCore GPU firmware**; only 1 and 3
//! are the ARM's. [`Channel`] can only name 1 or 3. Linux's own
//! `bcm2835_timer` clocksource driver uses channel 3, but it is built only
//! for 32-bit ARM kernels (`arch/arm/mach-bcm`); a 64-bit kernel leaves the
//! block unclaimed, which is why the device tree hands channel 3's interrupt
//! to `uio_pdrv_genirq` (see `dts/`).
//!
//! # Register map
//! Layout (BCM2835 ARM Peripherals, chapter 12; bus address 0x7E00_3000,
//! seen by the ARM at 0x3F00_3000 on the Raspberry Pi 2/3):
//!
//! | offset | register | access |
//! |---|---|---|
//! | 0x00 | CS: bits M0..M3 latch a compare match, write 1 to clear | RW |
//! | 0x04 | CLO: counter bits 0..31 (1 MHz, free running) | RO |
//! | 0x08 | CHI: counter bits 32..63 | RO |
//! | 0x0C..0x18 | C0..C3: compare values, matched against CLO | RW |
//!
//! # Shape (the device-core template: every core has these files)
//! - `regs.rs` ([`regs`]): the `#[repr(C)]` register block, the CS bits
//!   ([`Match`]), the [`Channel`]s the ARM may use, the [`TimerRegisters`]
//!   trait and its implementation over real mapped registers. The crate's
//!   only `unsafe`.
//! - `handler.rs`: [`Timer::handle`] and [`Timer::restore`], the requests,
//!   replies, committed [`TimerState`] and the refusals ([`TimerError`]); the
//!   contract is below.
//! - `model.rs` ([`model`]): [`TimerModel`], the block with a simulated
//!   clock, which the tests here and in `timer_driver` run the handler
//!   against.
//! - `trace.rs`: the post-mortem [`Trace`] entries and their codes and
//!   [`TRACE_LEGEND`], made from one table by `reinc_ringbuf::trace_legend!`.
//! - `tests.rs`: the handler's behaviour against the model (`regs.rs` keeps
//!   the tests that need `unsafe`, `trace.rs` the check of its table).
//!
//! # Contract with the driver runtime
//! [`Timer::handle`] maps `(committed state, request)` to `(effect, new
//! state, reply or "wait")`:
//! - `Arm{at}` is absolute; `ArmIn{micros}` is resolved against the counter
//!   read inside the handler and the absolute deadline is committed.
//! - `Wait` completes when the *counter* has reached the committed deadline.
//!   Until then the handler returns [`Step::WaitForInterrupt`]: the runtime
//!   blocks on the UIO interrupt, calls [`Timer::acknowledge`] (clear the
//!   match, the interrupt line's level), re-enables the interrupt and runs
//!   the same request again. Because completion is decided by the counter,
//!   a replay after a crash that already cleared the match still completes,
//!   with the same reply (same deadline, same fire count).
//! - Read-only requests (`Now`, `Status`) report the time at which they
//!   ran, so a replayed one reports a later time; they have no effect.
//!
//! # Designs tried and rejected
//! - Completing `Wait` on the match bit: a crash after clearing the bit but
//!   before the reply would leave the replayed `Wait` waiting for an
//!   interrupt that already happened (up to 71 minutes, the CLO wrap).
//! - Writing the compare register before clearing the stale match: for a
//!   deadline a few µs away, the genuine match could be cleared with the
//!   stale one, losing the interrupt.
//! - Treating CHI:CLO as one read: the two loads are not atomic; the
//!   CHI/CLO/CHI loop ([`read_counter`]) is the datasheet-sanctioned way and
//!   is bounded so that a broken device gives an error, not a hang.
//! - Exposing all four channels with a runtime check: a type that cannot
//!   name the GPU's channels removes the mistake instead of reporting it.
#![no_std]
#![deny(unsafe_code)]

mod handler;
pub mod model;
#[allow(unsafe_code)]
pub mod regs;
mod trace;

pub use handler::{
    COUNTER_READ_ATTEMPTS, ChannelStatus, Effect, Handled, MAX_AHEAD_MICROS, Step, Timer, TimerError, TimerReply,
    TimerRequest, TimerState, read_counter,
};
pub use model::TimerModel;
pub use regs::{Bcm2835Timer, Channel, MapError, Match, RegisterBlock, TimerRegisters};
pub use trace::{TRACE_LEGEND, Trace};

#[cfg(test)]
mod tests;
