//! BCM2835 GPIO register block and replay-safe pin handler.
//!
//! # Why this crate exists
//! `gpio_driver` controls the Raspberry Pi's GPIO block from user space
//! through a `generic-uio` mapping, under the reincarnation supervisor. All
//! the register logic lives here, `#![no_std]` with no allocator, so the same
//! code runs in the Linux host binary and in bare-metal firmware, and is
//! tested on the host against a behavioural model of the block.
//!
//! # Register map
//! Layout (BCM2835 ARM Peripherals, section 6.1; bus address 0x7E20_0000, seen
//! by the ARM at 0x3F20_0000 on the BCM2836/7 of the Raspberry Pi 2/3):
//!
//! | offset | register | access |
//! |---|---|---|
//! | 0x00..0x14 | GPFSEL0..5 (3 bits per pin, 10 pins per register) | RW |
//! | 0x1C, 0x20 | GPSET0/1 (write 1 sets the output latch) | WO |
//! | 0x28, 0x2C | GPCLR0/1 (write 1 clears the output latch) | WO |
//! | 0x34, 0x38 | GPLEV0/1 (pin level) | RO |
//! | 0x40, 0x44 | GPEDS0/1 (event detect status, write 1 to clear) | RW |
//! | 0x4C..0x8C | GPREN, GPFEN, GPHEN, GPLEN, GPAREN, GPAFEN (0/1 each) | RW |
//! | 0x94 | GPPUD (pull-up/down control) | RW |
//! | 0x98, 0x9C | GPPUDCLK0/1 (pull clock) | RW |
//!
//! # Shape (the device-core template: every core has these files)
//! - `regs.rs` ([`regs`]): the `#[repr(C)]` register block (volatile-register
//!   `RO`/`RW`/`WO`, offsets checked at compile time against the map above),
//!   the [`GpioRegisters`] trait and its implementation over real mapped
//!   registers. The crate's only `unsafe`.
//! - `pin.rs`: the GPIO vocabulary ([`Pin`], [`PinSet`], [`Level`],
//!   [`Direction`], [`Detect`]), independent of how the registers are reached.
//! - `handler.rs`: [`Gpio::handle`], `(committed state, request) -> (effect,
//!   new state, reply)`. Effects are absolute: `SetLevel` goes through
//!   GPSET/GPCLR (no read-modify-write at all), `SetDirection`
//!   read-modify-writes GPFSEL but the field it writes is absolute, and
//!   `Toggle` is resolved against the committed level into an absolute
//!   `SetLevel`. Running a request twice (a replay after a crash) therefore
//!   leaves the same pins and the same reply. The one request that cannot be
//!   idempotent, clearing write-1-to-clear events, is typed [`AtLeastOnce`].
//!   Also there: [`GpioState`] + [`Gpio::restore`], the checkpoint
//!   (directions, output latches and event detection of the pins the driver
//!   manages) and its re-application when a new driver instance starts,
//!   which is what keeps an LED blinking across a `gpio_driver` crash; and
//!   the refusals, [`GpioError`] and [`StateError`].
//! - `model.rs` ([`model`]): [`GpioModel`], the block's behaviour in memory
//!   (latches, levels, edge/level detection, write-1-to-clear events), which
//!   the tests here and in `gpio_driver` run the handler against.
//! - `trace.rs`: the post-mortem [`Trace`] entries and their codes and
//!   [`TRACE_LEGEND`], made from one table by `reinc_ringbuf::trace_legend!`.
//! - `tests.rs`: the handler's and the restore's behaviour against the model.
//!   (`regs.rs` keeps the tests that need `unsafe`, `trace.rs` the check of
//!   its table.)
//!
//! # What a crash looks like on the pins
//! If an instance dies after writing a pin but before its reply, the next
//! instance first restores the *committed* state (the pin goes back to its
//! old level) and then the supervisor replays the request (the pin gets the
//! new level again). The final state and the reply are exactly those of a run
//! without the crash, but the pin shows the old level for the time between
//! restore and replay (milliseconds). Nothing on the device records which
//! request was applied (unlike storage-core's superblock), so the handler
//! cannot tell a replay from a first execution; the runtime should count
//! GPIO effects as idempotent rewrites, not as exactly-once executions.
//!
//! # Designs tried and rejected
//! - Writing GPFSEL/levels from the *current* register contents on restore
//!   (a "read back what is there" checkpoint): after a crash the device may
//!   have been reset or changed; only committed state is authoritative.
//! - Committing the level on `SetDirection(Output)` by reading GPLEV: it
//!   makes the committed state depend on device timing. A `Toggle` of a pin
//!   whose level was never set is refused instead ([`GpioError::LevelUnknown`]).
//! - Accepting the six alternate functions in requests: pin muxing is board
//!   configuration (device tree), and handing it to clients would let one
//!   steal the kernel's UART or SD pins. The allowed-pin fence of [`Gpio`]
//!   exists for the same reason: on a real Pi the kernel's pinctrl driver
//!   shares this register block.
//! - Pull-up/down requests: GPPUD/GPPUDCLK need a timed sequence (≥150 cycles
//!   between steps) and cannot be read back, so a restore could not verify
//!   them. The registers are in the block; no request uses them yet.
#![no_std]
#![deny(unsafe_code)]

mod handler;
pub mod model;
mod pin;
#[allow(unsafe_code)]
pub mod regs;
mod trace;

pub use handler::{
    AtLeastOnce, Effect, Gpio, GpioError, GpioReply, GpioRequest, GpioState, Handled, Replay, StateError,
};
pub use model::GpioModel;
pub use pin::{Bank, Detect, DetectKind, Direction, Function, Level, PIN_COUNT, Pin, PinSet};
pub use regs::{Bcm2835Gpio, GpioRegisters, MapError, RegisterBlock};
pub use trace::{TRACE_LEGEND, Trace};

#[cfg(test)]
mod tests;
