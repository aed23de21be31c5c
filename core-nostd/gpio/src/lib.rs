//! BCM2835 GPIO register block and replay-safe pin handler.
//!
//! # Why this crate exists
//! `gpio_driver` controls the Raspberry Pi's GPIO block from user space
//! through a `generic-uio` mapping, under the reincarnation supervisor. All
//! the register logic lives here, `#![no_std]` with no allocator, so the same
//! code runs in the Linux host binary and in bare-metal firmware, and is
//! tested on the host against a behavioural model of the block.
//!
//! # Shape
//! - [`regs`]: the `#[repr(C)]` register block (volatile-register `RO`/`RW`/
//!   `WO`, offsets checked at compile time), the [`GpioRegisters`] trait and
//!   its implementation over real mapped registers. The crate's only `unsafe`.
//! - [`model`]: [`GpioModel`], the block's behaviour in memory (latches,
//!   levels, edge/level detection, write-1-to-clear events).
//! - [`Gpio::handle`]: `(committed state, request) -> (effect, new state,
//!   reply)`. Effects are absolute: `SetLevel` goes through GPSET/GPCLR (no
//!   read-modify-write at all), `SetDirection` read-modify-writes GPFSEL but
//!   the field it writes is absolute, and `Toggle` is resolved against the
//!   committed level into an absolute `SetLevel`. Running a request twice (a
//!   replay after a crash) therefore leaves the same pins and the same reply.
//!   The one request that cannot be idempotent, clearing write-1-to-clear
//!   events, is typed [`AtLeastOnce`].
//! - [`GpioState`] + [`Gpio::restore`]: the checkpoint (directions, output
//!   latches and event detection of the pins the driver manages) and its
//!   re-application when a new driver instance starts, which is what keeps
//!   an LED blinking across a `gpio_driver` crash.
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

pub use handler::{AtLeastOnce, Effect, Gpio, GpioReply, GpioRequest, GpioState, Handled, Replay, TRACE_LEGEND, Trace};
pub use model::GpioModel;
pub use pin::{Bank, Detect, DetectKind, Direction, Function, Level, PIN_COUNT, Pin, PinSet};
pub use regs::{Bcm2835Gpio, GpioRegisters, MapError, RegisterBlock};

use serde::{Deserialize, Serialize};

/// Why a request was refused. Deterministic: it is a function of the request
/// and the committed state only, so a replay refuses it the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum GpioError {
    /// No such pin.
    #[error("GPIO pin {pin} does not exist on the BCM2835 (pins are 0..=53)")]
    InvalidPin {
        /// The pin number asked for.
        pin: u8,
    },
    /// A pin mask names pins that do not exist.
    #[error("GPIO pin set {bits:#x} names pins above 53, which the BCM2835 does not have")]
    InvalidPinSet {
        /// The mask asked for.
        bits: u64,
    },
    /// The pin exists but this gpio_driver instance may not change it.
    #[error("GPIO pin {pin} is not among the pins this gpio_driver may change (it may belong to the kernel)")]
    PinNotAllowed {
        /// The pin number asked for.
        pin: u8,
    },
    /// `Toggle` of a pin whose output level was never committed.
    #[error("GPIO pin {pin} cannot be toggled: no output level is committed for it yet (send SetLevel first)")]
    LevelUnknown {
        /// The pin number asked for.
        pin: u8,
    },
    /// Detect flags with unknown bits.
    #[error("GPIO detect flags {bits:#04x} contain bits that name no detect register")]
    InvalidDetect {
        /// The flags asked for.
        bits: u8,
    },
    /// The request body did not decode as a `GpioRequest`; nothing was done.
    #[error("GPIO request of {len} bytes is malformed (not a postcard GpioRequest)")]
    MalformedRequest {
        /// The body's length.
        len: u32,
    },
}

impl GpioError {
    /// The pin the error is about, if it is about one.
    #[must_use]
    pub const fn pin(&self) -> Option<u8> {
        match *self {
            GpioError::InvalidPin { pin } | GpioError::PinNotAllowed { pin } | GpioError::LevelUnknown { pin } => {
                Some(pin)
            }
            GpioError::InvalidPinSet { .. } | GpioError::InvalidDetect { .. } | GpioError::MalformedRequest { .. } => {
                None
            }
        }
    }
}

/// Why a checkpoint cannot be restored. The driver reports it as `Fatal`
/// rather than guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A pin set in the checkpoint names pins that do not exist.
    #[error("GPIO checkpoint is corrupt: `{what}` names pins above 53 ({bits:#x})")]
    InvalidPins {
        /// The field.
        what: &'static str,
        /// Its value.
        bits: u64,
    },
    /// The checkpoint's fields contradict each other.
    #[error("GPIO checkpoint is inconsistent: {what}")]
    Inconsistent {
        /// What is wrong.
        what: &'static str,
    },
    /// The checkpoint manages a pin outside this instance's allowed pins
    /// (the configuration changed between runs).
    #[error("GPIO checkpoint manages pin {pin}, which this gpio_driver is not allowed to change")]
    PinNotAllowed {
        /// The pin.
        pin: u8,
    },
}

#[cfg(test)]
mod tests;
