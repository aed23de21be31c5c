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

pub use handler::{
    COUNTER_READ_ATTEMPTS, ChannelStatus, Effect, Handled, MAX_AHEAD_MICROS, Step, TRACE_LEGEND, Timer, TimerReply,
    TimerRequest, TimerState, Trace, read_counter,
};
pub use model::TimerModel;
pub use regs::{Bcm2835Timer, MapError, RegisterBlock, TimerRegisters};

use bitflags::bitflags;
use serde::{Deserialize, Serialize};

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

/// Why a request was refused or failed; nothing was written to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TimerError {
    /// Channel 0 or 2.
    #[error("system timer channel {channel} belongs to the VideoCore GPU; the ARM may use channels 1 and 3")]
    ChannelReserved {
        /// The channel asked for.
        channel: u8,
    },
    /// Channel above 3.
    #[error("system timer channel {channel} does not exist (the BCM2835 system timer has channels 0..=3)")]
    InvalidChannel {
        /// The channel asked for.
        channel: u8,
    },
    /// `Wait` on a channel with no committed deadline.
    #[error("system timer channel {channel} is not armed; send Arm or ArmIn before Wait")]
    NotArmed {
        /// The channel asked for.
        channel: u8,
    },
    /// The deadline is more than 2^32-1 µs ahead and would alias in the
    /// 32-bit compare register.
    #[error("system timer channel {channel}: deadline {at} is more than 2^32-1 µs after the counter ({now})")]
    DeadlineTooFar {
        /// The channel asked for.
        channel: u8,
        /// The deadline asked for.
        at: u64,
        /// The counter when it was checked.
        now: u64,
    },
    /// `ArmIn` past the end of the 64-bit counter (half a million years).
    #[error("system timer: deadline overflows the 64-bit counter")]
    CounterOverflow,
    /// CHI kept changing between reads: the device is not behaving.
    #[error("system timer counter unstable: CHI changed in each of its consistency reads")]
    CounterUnstable,
    /// The channel exists and is the ARM's, but this driver instance does
    /// not own it: its UIO device carries another channel's interrupt, and
    /// the other ARM channel may belong to the kernel (a 32-bit kernel's
    /// clock events use channel 3).
    #[error("system timer channel {channel} is not served here; this timer_driver owns channel {served} only")]
    ChannelNotServed {
        /// The channel asked for.
        channel: u8,
        /// The channel this driver owns.
        served: u8,
    },
    /// The request body did not decode as a `TimerRequest`; nothing was done.
    #[error("system timer request of {len} bytes is malformed (not a postcard TimerRequest)")]
    MalformedRequest {
        /// The body's length.
        len: u32,
    },
}

impl TimerError {
    /// The channel the error is about, if any.
    #[must_use]
    pub const fn channel(&self) -> Option<u8> {
        match *self {
            TimerError::ChannelReserved { channel }
            | TimerError::InvalidChannel { channel }
            | TimerError::NotArmed { channel }
            | TimerError::DeadlineTooFar { channel, .. }
            | TimerError::ChannelNotServed { channel, .. } => Some(channel),
            TimerError::CounterOverflow | TimerError::CounterUnstable | TimerError::MalformedRequest { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests;
