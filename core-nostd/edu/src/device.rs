//! Device operations over [`Regs`]: identify, liveness, factorial (polling and
//! interrupt-completed), raise/ack, and recovery of a device left behind by a
//! dead predecessor.
//!
//! Nothing here spins forever: every wait on the status register is bounded
//! by a [`PollBudget`] and ends in [`EduError::StillComputing`].

use crate::regs::{IrqBits, ReadReg, Regs, Status, WriteReg};
use serde::{Deserialize, Serialize};

/// The low 16 bits of edu's id register (`0xRRrr00ed`).
pub const ID_MAGIC: u32 = 0x0000_00ed;

/// Largest n whose factorial fits the device's 32-bit result (12! = 479001600).
/// The device itself computes modulo 2^32; we refuse larger n so that every
/// answer is the true n!.
pub const MAX_FACTORIAL_N: u32 = 12;

/// How many status reads a bounded wait may take before giving up.
///
/// Under QEMU TCG one MMIO read costs roughly a microsecond and factorial(12)
/// completes in about 0.1 ms, so the default (2^20 reads, around a second) is
/// generous without letting a wedged device hang the driver forever. The
/// supervisor's heartbeat still catches a driver stuck anywhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PollBudget(pub u32);

impl Default for PollBudget {
    fn default() -> Self {
        Self(1 << 20)
    }
}

/// What the id register says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// The raw id register.
    pub raw: u32,
    /// Major version (bits 31..24).
    pub major: u8,
    /// Minor version (bits 23..16).
    pub minor: u8,
}

impl Identity {
    /// Decodes an id register value, or `None` if it is not edu's.
    #[must_use]
    pub const fn from_raw(raw: u32) -> Option<Self> {
        if raw & 0xffff != ID_MAGIC {
            return None;
        }
        Some(Self { raw, major: (raw >> 24) as u8, minor: (raw >> 16) as u8 })
    }
}

/// Why an edu operation failed. Deterministic errors (bad request) and device
/// errors alike; all are postcard-friendly so they can travel in a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum EduError {
    /// The id register does not end in `0x00ed`.
    #[error("edu device: id register reads {id:#010x}, which is not an edu device (expected 0xRRrr00ed)")]
    NotEdu {
        /// What the id register read.
        id: u32,
    },
    /// Liveness did not read back the inverse of the probe.
    #[error("edu device: liveness check failed: wrote {probe:#010x}, read {got:#010x} (expected {:#010x})", !probe)]
    LivenessMismatch {
        /// The value written.
        probe: u32,
        /// The value read back.
        got: u32,
    },
    /// n! does not fit in 32 bits.
    #[error("edu device: factorial({n}) does not fit the 32-bit result register (n must be at most {MAX_FACTORIAL_N})")]
    FactorialTooLarge {
        /// The requested n.
        n: u32,
    },
    /// `COMPUTING` stayed set for the whole poll budget.
    #[error("edu device: still computing after {spins} status reads (device wedged?)")]
    StillComputing {
        /// Status reads spent.
        spins: u32,
    },
    /// A raise request with no bits would never interrupt.
    #[error("edu device: raising an interrupt needs at least one bit")]
    NoIrqBits,
    /// The driver gave up waiting for the interrupt that completes a request.
    #[error("edu device: no interrupt arrived for the pending operation (interrupt status {irq_status:#x})")]
    IrqTimeout {
        /// The interrupt status register when the driver gave up.
        irq_status: u32,
    },
    /// The request body did not decode as an `EduRequest` (the driver answers
    /// this instead of dying, so a malformed request cannot crash it).
    /// Appended last so the postcard encoding of the others is unchanged.
    #[error("edu device: request body of {len} bytes does not decode as an edu request")]
    MalformedRequest {
        /// The body's length.
        len: u32,
    },
}

impl EduError {
    /// Whether the request itself is at fault (deterministic: the same request
    /// always fails the same way, so the error reply is final and committed).
    /// Otherwise the device misbehaved; a driver may reply with the error or
    /// die so that a fresh instance retries after `recover` (the supervisor's
    /// restart policy bounds the retries).
    #[must_use]
    pub const fn is_bad_request(&self) -> bool {
        matches!(self, Self::FactorialTooLarge { .. } | Self::NoIrqBits | Self::MalformedRequest { .. })
    }
}

/// Post-mortem trace of device operations (Hubris style: one enum per module).
/// [`Trace::encode`] turns an entry into the runtime's generic
/// `Driver { code, a, b }` trace event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Trace {
    /// The id register was read.
    Identified {
        /// Its value.
        id: u32,
    },
    /// A liveness probe.
    Liveness {
        /// Written.
        probe: u32,
        /// Read back.
        got: u32,
    },
    /// A factorial was started.
    FactorialStart {
        /// The input.
        n: u32,
        /// Whether completion is signalled by interrupt.
        irq: bool,
    },
    /// A factorial result was read.
    FactorialDone {
        /// The input.
        n: u32,
        /// The result.
        value: u32,
    },
    /// A factorial result was read after its interrupt.
    FactorialIrqDone {
        /// The result.
        value: u32,
    },
    /// Interrupt bits were raised.
    Raised {
        /// The bits.
        bits: u32,
    },
    /// Interrupt bits were acknowledged.
    Acked {
        /// The bits.
        bits: u32,
    },
    /// A wait ran out of budget.
    SpinTimeout {
        /// Status reads spent.
        spins: u32,
    },
    /// The device was put into a known state.
    Recovered {
        /// Interrupt bits that were pending and got acknowledged.
        acked: u32,
        /// Whether a computation was running.
        was_computing: bool,
    },
}

impl Trace {
    /// `(code, a, b)` for the runtime's `Event::Driver` record.
    #[must_use]
    pub const fn encode(&self) -> (u16, u64, u64) {
        match *self {
            Self::Identified { id } => (code::IDENTIFIED, id as u64, 0),
            Self::Liveness { probe, got } => (code::LIVENESS, probe as u64, got as u64),
            Self::FactorialStart { n, irq } => (code::FACTORIAL_START, n as u64, irq as u64),
            Self::FactorialDone { n, value } => (code::FACTORIAL_DONE, n as u64, value as u64),
            Self::Raised { bits } => (code::RAISED, bits as u64, 0),
            Self::Acked { bits } => (code::ACKED, bits as u64, 0),
            Self::SpinTimeout { spins } => (code::SPIN_TIMEOUT, spins as u64, 0),
            Self::Recovered { acked, was_computing } => (code::RECOVERED, acked as u64, was_computing as u64),
            Self::FactorialIrqDone { value } => (code::FACTORIAL_IRQ_DONE, value as u64, 0),
        }
    }
}

reinc_ringbuf::trace_legend! {
    /// The trace codes, one table with `TRACE_LEGEND`: `Trace` emits only
    /// these constants (the host driver registers the legend as its
    /// `TRACE_LEGEND`). A test checks that every variant's code is named.
    pub mod code, pub const TRACE_LEGEND = "edu" {
        IDENTIFIED = 1 => "identified"("id", ""),
        LIVENESS = 2 => "liveness"("probe", "got"),
        FACTORIAL_START = 3 => "factorial_start"("n", "irq"),
        FACTORIAL_DONE = 4 => "factorial_done"("n", "value"),
        RAISED = 5 => "raised"("bits", ""),
        ACKED = 6 => "acked"("bits", ""),
        SPIN_TIMEOUT = 7 => "spin_timeout"("spins", ""),
        RECOVERED = 8 => "recovered"("acked", "was_computing"),
        FACTORIAL_IRQ_DONE = 9 => "factorial_irq_done"("value", ""),
    }
}

#[cfg(test)]
mod legend_tests {
    use super::*;

    /// Fails to compile when a variant is added, so the sample list below grows with the enum.
    fn sample(t: Trace) -> Trace {
        match t {
            Trace::Identified { .. }
            | Trace::Liveness { .. }
            | Trace::FactorialStart { .. }
            | Trace::FactorialDone { .. }
            | Trace::FactorialIrqDone { .. }
            | Trace::Raised { .. }
            | Trace::Acked { .. }
            | Trace::SpinTimeout { .. }
            | Trace::Recovered { .. } => t,
        }
    }

    #[test]
    fn every_trace_code_is_named_in_the_legend() {
        let all = [
            Trace::Identified { id: 1 },
            Trace::Liveness { probe: 1, got: 1 },
            Trace::FactorialStart { n: 1, irq: true },
            Trace::FactorialDone { n: 1, value: 1 },
            Trace::FactorialIrqDone { value: 1 },
            Trace::Raised { bits: 1 },
            Trace::Acked { bits: 1 },
            Trace::SpinTimeout { spins: 1 },
            Trace::Recovered { acked: 1, was_computing: true },
        ];
        for t in all.map(sample) {
            let (code, _, _) = t.encode();
            assert!(TRACE_LEGEND.get(code).is_some(), "{t:?}: code {code:#06x} missing from TRACE_LEGEND");
        }
        assert_eq!(TRACE_LEGEND.entries.len(), all.len(), "legend has codes no Trace variant uses");
    }
}

const TRACE_LEN: usize = 16;

/// What [`Edu::recover`] found and undid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Recovery {
    /// Interrupt bits that were pending (now acknowledged).
    pub acked: IrqBits,
    /// Whether a computation was still running (now finished and discarded).
    pub was_computing: bool,
    /// Whether `IRQ_ON_DONE` was set (now cleared).
    pub irq_on_done_was_set: bool,
}

/// An edu device behind some [`Regs`].
#[derive(Debug)]
pub struct Edu<R> {
    regs: R,
    trace: [Option<Trace>; TRACE_LEN],
    trace_next: usize,
}

impl<R: Regs> Edu<R> {
    /// Wraps register access. Touches nothing.
    pub const fn new(regs: R) -> Self {
        Self { regs, trace: [None; TRACE_LEN], trace_next: 0 }
    }

    /// The register access (tests use it to reach the model).
    pub fn regs(&mut self) -> &mut R {
        &mut self.regs
    }

    /// Gives the register access back.
    pub fn into_regs(self) -> R {
        self.regs
    }

    fn record(&mut self, t: Trace) {
        self.trace[self.trace_next % TRACE_LEN] = Some(t);
        self.trace_next = self.trace_next.wrapping_add(1);
    }

    /// Hands every trace entry recorded since the last drain to `f`, oldest
    /// first (at most the last 16 are kept), and forgets them.
    pub fn drain_traces(&mut self, mut f: impl FnMut(Trace)) {
        let n = self.trace_next.min(TRACE_LEN);
        for i in 0..n {
            let slot = (self.trace_next - n + i) % TRACE_LEN;
            if let Some(t) = self.trace[slot].take() {
                f(t);
            }
        }
        self.trace_next = 0;
    }

    /// Reads and checks the id register.
    ///
    /// # Errors
    /// [`EduError::NotEdu`] if it is not edu's.
    pub fn identify(&mut self) -> Result<Identity, EduError> {
        let id = self.regs.read(ReadReg::Id);
        self.record(Trace::Identified { id });
        Identity::from_raw(id).ok_or(EduError::NotEdu { id })
    }

    /// Writes `probe` to the liveness register and checks it reads back inverted.
    ///
    /// # Errors
    /// [`EduError::LivenessMismatch`] otherwise.
    pub fn check_liveness(&mut self, probe: u32) -> Result<(), EduError> {
        self.regs.write(WriteReg::Liveness, probe);
        let got = self.regs.read(ReadReg::Liveness);
        self.record(Trace::Liveness { probe, got });
        if got == !probe { Ok(()) } else { Err(EduError::LivenessMismatch { probe, got }) }
    }

    /// The status register.
    pub fn status(&mut self) -> Status {
        Status::from_bits_retain(self.regs.read(ReadReg::Status))
    }

    /// The interrupt status register.
    pub fn irq_status(&mut self) -> IrqBits {
        IrqBits::from_bits_retain(self.regs.read(ReadReg::IrqStatus))
    }

    /// Raises `bits` (ORed into the interrupt status; the line rises if it was low).
    pub fn raise(&mut self, bits: IrqBits) {
        self.regs.write(WriteReg::IrqRaise, bits.bits());
        self.record(Trace::Raised { bits: bits.bits() });
    }

    /// Acknowledges `bits` (cleared from the interrupt status; the line falls
    /// when none is left).
    pub fn ack(&mut self, bits: IrqBits) {
        self.regs.write(WriteReg::IrqAck, bits.bits());
        self.record(Trace::Acked { bits: bits.bits() });
    }

    /// Sets or clears `IRQ_ON_DONE` (an absolute write: the only writable bit).
    pub fn set_irq_on_done(&mut self, on: bool) {
        let v = if on { Status::IRQ_ON_DONE } else { Status::empty() };
        self.regs.write(WriteReg::Status, v.bits());
    }

    /// Waits, by reading the status register at most `budget` times, until no
    /// computation runs.
    ///
    /// # Errors
    /// [`EduError::StillComputing`] when the budget runs out.
    pub fn wait_idle(&mut self, budget: PollBudget) -> Result<(), EduError> {
        for _ in 0..budget.0 {
            if !self.status().contains(Status::COMPUTING) {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        self.record(Trace::SpinTimeout { spins: budget.0 });
        Err(EduError::StillComputing { spins: budget.0 })
    }

    fn start_factorial(&mut self, n: u32, irq: bool, budget: PollBudget) -> Result<(), EduError> {
        if n > MAX_FACTORIAL_N {
            return Err(EduError::FactorialTooLarge { n });
        }
        // edu ignores a factorial write while it computes: wait for idle first.
        self.wait_idle(budget)?;
        if irq {
            // A stale FACTORIAL bit would make completion ambiguous.
            self.ack(IrqBits::FACTORIAL);
        }
        // Set the mode before starting: the device checks IRQ_ON_DONE only at
        // the end of the computation, so this order cannot miss the interrupt.
        self.set_irq_on_done(irq);
        self.regs.write(WriteReg::Factorial, n);
        self.record(Trace::FactorialStart { n, irq });
        Ok(())
    }

    /// Computes n! and waits for it by polling the status register.
    ///
    /// # Errors
    /// [`EduError::FactorialTooLarge`] for n > 12; [`EduError::StillComputing`]
    /// if the device stays busy (before or after the start) for the whole budget.
    pub fn factorial_polling(&mut self, n: u32, budget: PollBudget) -> Result<u32, EduError> {
        self.start_factorial(n, false, budget)?;
        self.wait_idle(budget)?;
        let value = self.regs.read(ReadReg::Factorial);
        self.record(Trace::FactorialDone { n, value });
        Ok(value)
    }

    /// Starts n! with `IRQ_ON_DONE`, for completion by
    /// [`Edu::finish_factorial_irq`] after the interrupt.
    ///
    /// # Errors
    /// As [`Edu::factorial_polling`], for the wait before the start.
    pub fn start_factorial_irq(&mut self, n: u32, budget: PollBudget) -> Result<(), EduError> {
        self.start_factorial(n, true, budget)
    }

    /// After an interrupt: if the factorial interrupt is pending and the
    /// computation is over, reads the result, acknowledges
    /// [`IrqBits::FACTORIAL`], clears `IRQ_ON_DONE` and returns the result.
    /// Returns `None` (and changes nothing) when the interrupt was not ours
    /// (shared INTx line, a software raise) or the computation still runs.
    pub fn finish_factorial_irq(&mut self) -> Option<u32> {
        if !self.irq_status().contains(IrqBits::FACTORIAL) || self.status().contains(Status::COMPUTING) {
            return None;
        }
        let value = self.regs.read(ReadReg::Factorial);
        self.ack(IrqBits::FACTORIAL);
        self.set_irq_on_done(false);
        self.record(Trace::FactorialIrqDone { value });
        Some(value)
    }

    /// Puts the device into a known state after a (re)start: clears
    /// `IRQ_ON_DONE` (so a computation left running by a dead predecessor
    /// cannot interrupt later), waits for that computation to end, then
    /// acknowledges every pending interrupt bit so the line is low before the
    /// host re-enables interrupts. Each step is an absolute write, so running
    /// `recover` twice is the same as once.
    ///
    /// # Errors
    /// [`EduError::StillComputing`] if a leftover computation never ends.
    pub fn recover(&mut self, budget: PollBudget) -> Result<Recovery, EduError> {
        let before = self.status();
        self.set_irq_on_done(false);
        self.wait_idle(budget)?;
        let pending = self.irq_status();
        self.ack(IrqBits::all());
        let r = Recovery {
            acked: pending,
            was_computing: before.contains(Status::COMPUTING),
            irq_on_done_was_set: before.contains(Status::IRQ_ON_DONE),
        };
        self.record(Trace::Recovered { acked: pending.bits(), was_computing: r.was_computing });
        Ok(r)
    }
}
