//! The trace vocabulary of the driver runtime.

use core::fmt;
use reinc_proto::{FaultPlan, Generation, RequestId, WireError};
use serde::{Deserialize, Serialize};

/// One thing a driver instance did. Small and `Copy`, so it fits a fixed slot.
///
/// Variants carry no timestamps or counters that change on every occurrence
/// unless the difference matters (a [`Event::Ping`] has no nonce), so that
/// repetitions collapse into one counted entry.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The process started and adopted its IPC channel.
    Start {
        /// The process id.
        pid: u32,
    },
    /// `Init` received.
    Init {
        /// This instance's generation.
        generation: Generation,
        /// A checkpoint was supplied (false: fresh start).
        restored: bool,
    },
    /// The checkpoint is applied to the device; `Ready` sent.
    Ready,
    /// Init failed; `Fatal` sent.
    InitFailed,
    /// A request started (`nth` counts requests handled by this instance, from 1).
    RequestStart {
        /// The request.
        id: RequestId,
        /// Its position among this instance's requests.
        nth: u32,
    },
    /// The request's device effect was applied.
    Effect {
        /// The request.
        id: RequestId,
    },
    /// The request's effect had already been applied by an earlier instance
    /// (device watermark); only its reply was recomputed.
    EffectReplayed {
        /// The request.
        id: RequestId,
    },
    /// The request waits for a device interrupt.
    WaitIrq {
        /// The request.
        id: RequestId,
    },
    /// A device interrupt was taken.
    Irq {
        /// The interrupt counter reported by the device.
        count: u32,
        /// Interrupts missed since the previous one.
        missed: u32,
    },
    /// The wait for an interrupt timed out.
    IrqTimeout {
        /// The request that waited.
        id: RequestId,
    },
    /// The reply was sent.
    Reply {
        /// The request.
        id: RequestId,
        /// The reply carried a state commit.
        committed: bool,
    },
    /// A heartbeat was answered.
    Ping,
    /// A fault plan was armed.
    FaultArmed {
        /// The plan.
        plan: FaultPlan,
    },
    /// A fault plan fires now: the instance is about to die.
    Fault {
        /// The plan.
        plan: FaultPlan,
    },
    /// A frame from the supervisor was refused and ignored.
    BadFrame {
        /// Why.
        error: WireError,
    },
    /// `Shutdown` received.
    Shutdown,
    /// The supervisor closed the channel.
    Eof,
    /// A device-specific event, meaning defined by the driver.
    Driver {
        /// Driver-defined event code.
        code: u16,
        /// First argument.
        a: u64,
        /// Second argument.
        b: u64,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start { pid } => write!(f, "start pid={pid}"),
            Self::Init { generation, restored } => {
                write!(f, "init {generation} ({})", if *restored { "checkpoint" } else { "fresh" })
            }
            Self::Ready => f.write_str("ready"),
            Self::InitFailed => f.write_str("init failed"),
            Self::RequestStart { id, nth } => write!(f, "request {id} (#{nth})"),
            Self::Effect { id } => write!(f, "effect {id}"),
            Self::EffectReplayed { id } => write!(f, "effect {id} already applied (replay)"),
            Self::WaitIrq { id } => write!(f, "request {id} waits for irq"),
            Self::Irq { count, missed } => write!(f, "irq count={count} missed={missed}"),
            Self::IrqTimeout { id } => write!(f, "irq timeout for {id}"),
            Self::Reply { id, committed } => {
                write!(f, "reply {id}{}", if *committed { " +commit" } else { "" })
            }
            Self::Ping => f.write_str("ping"),
            Self::FaultArmed { plan } => write!(f, "fault armed {plan}"),
            Self::Fault { plan } => write!(f, "FAULT {plan}"),
            Self::BadFrame { error } => write!(f, "bad frame ignored: {error}"),
            Self::Shutdown => f.write_str("shutdown"),
            Self::Eof => f.write_str("eof"),
            Self::Driver { code, a, b } => write!(f, "driver event {code:#06x} a={a:#x} b={b:#x}"),
        }
    }
}

/// One decoded entry of the shared ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Sequence number within the instance (0 = first record).
    pub seq: u32,
    /// Consecutive repetitions of `event` folded into this record (at least 1).
    pub count: u32,
    /// Microseconds since the instance started, at the first occurrence.
    pub micros: u64,
    /// Microseconds since the instance started, at the latest occurrence
    /// (equal to `micros` when `count` is 1): "answered pings until t".
    pub last_micros: u64,
    /// What happened.
    pub event: Event,
}

impl Record {
    /// Writes the record with `event` as its event text (plain or named).
    pub(crate) fn fmt_with(&self, f: &mut fmt::Formatter<'_>, event: &dyn fmt::Display) -> fmt::Result {
        write!(f, "#{} +{}.{:06}s {event}", self.seq, self.micros / 1_000_000, self.micros % 1_000_000)?;
        if self.count > 1 {
            let last = self.last_micros;
            write!(f, " x{} (last +{}.{:06}s)", self.count, last / 1_000_000, last % 1_000_000)?;
        }
        Ok(())
    }
}

impl fmt::Display for Record {
    /// `#12 +1.002345s ping x40 (last +9.002345s)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_with(f, &self.event)
    }
}
