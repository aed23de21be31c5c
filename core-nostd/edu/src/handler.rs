//! The replay-safe request handler (the driver contract, CONTRACTS.md §2).
//!
//! # Contract
//! A request is handled as a deterministic function of (committed
//! [`EduState`], [`EduRequest`]) that yields device effects, a new state and an
//! [`EduReply`]. Because a factorial by interrupt cannot finish inside one
//! call, the function is split in two:
//! - [`EduHandler::start`] applies the effects and returns either
//!   [`Step::Done`] (reply and new state) or [`Step::WaitIrq`] with a
//!   [`Pending`] that says what is awaited;
//! - after the interrupt, [`EduHandler::complete_after_irq`] finishes it
//!   (or returns `WaitIrq` again if the interrupt was not ours). The runtime
//!   re-enables the interrupt between the two, and keeps answering pings.
//!
//! # Effects are absolute, so replay is safe
//! | request | device effects | replayed after a crash |
//! |---|---|---|
//! | `Identify`, `Stats` | none / one read | same reply |
//! | `Liveness { probe }` | write `probe` to liveness | same value written, same read-back |
//! | `Factorial { n, .. }` | ack FACTORIAL, status := IRQ_ON_DONE or 0, factorial := n | recomputes the same n! |
//! | `RaiseIrq { bits }` | irq status \|= bits, then ack bits | same bits raised and acknowledged |
//!
//! Writing the same register values again leaves the device in the same
//! state, and the state transition depends only on the committed state, so a
//! request replayed from the same committed state gives the same reply and
//! the same new state. A computation left running by a dead predecessor is
//! finished and discarded by [`EduHandler::recover`] before any replay.
//!
//! # What is committed, honestly
//! edu keeps nothing that must survive a driver restart: liveness is scratch,
//! a factorial is recomputed from the request, and the interrupt mode is set
//! per request. [`EduState`] is therefore only the count of completed
//! requests by kind. It is what makes exactly-once visible from outside:
//! after any number of crashes, `Stats` equals the number of answered
//! requests, because each count moves only together with a committed reply.
//!
//! # Device operations
//! [`Edu`] holds the operations the handler is made of, over any
//! [`EduRegisters`]: identify, liveness, factorial (polling and
//! interrupt-completed), raise/ack, and recovery of a device left behind by
//! a dead predecessor.
//!
//! Nothing here spins forever: every wait on the status register is bounded
//! by a [`PollBudget`] and ends in [`EduError::StillComputing`].

use crate::regs::{EduRegisters, IrqBits, ReadReg, Status, WriteReg};
use crate::trace::Trace;
use serde::{Deserialize, Serialize};

/// How a factorial's completion is detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Completion {
    /// Spin on the status register (bounded by the handler's [`PollBudget`]).
    Polling,
    /// Set `IRQ_ON_DONE` and finish after the interrupt.
    Interrupt,
}

/// A request to the edu driver (postcard-encoded in `ToDriver::Request`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EduRequest {
    /// Read and check the id register.
    Identify,
    /// Write `probe` to the liveness register and check the inverse reads back.
    Liveness {
        /// The value to write.
        probe: u32,
    },
    /// Compute n! on the device (n ≤ [`crate::MAX_FACTORIAL_N`]).
    Factorial {
        /// The input.
        n: u32,
        /// Polling or interrupt.
        completion: Completion,
    },
    /// Raise the given interrupt bits, wait for the interrupt, acknowledge them.
    RaiseIrq {
        /// Bits to raise (non-zero).
        bits: u32,
    },
    /// The committed counters (no device access).
    Stats,
}

/// The answer to an [`EduRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EduReply {
    /// To `Identify`.
    Identity(Identity),
    /// To `Liveness`: the inverse read back as expected.
    Alive {
        /// The probe written.
        probe: u32,
        /// What the register read back (`!probe`).
        readback: u32,
    },
    /// To `Factorial`.
    Factorial {
        /// The input.
        n: u32,
        /// n!.
        value: u32,
    },
    /// To `RaiseIrq`: the interrupt arrived and the bits were acknowledged.
    IrqHandled {
        /// The bits raised and acknowledged.
        bits: u32,
    },
    /// To `Stats`.
    Stats(EduState),
    /// The request failed; committed like any reply (it is deterministic for
    /// bad input; device errors say which device check failed).
    Error(EduError),
}

/// The committed state: completed-request counters. See the module docs for
/// why nothing else is worth committing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EduState {
    /// Factorials answered (either completion).
    pub factorials: u64,
    /// Interrupts handled to complete a request (factorial by interrupt and raises).
    pub irqs_handled: u64,
}

/// What an interrupt-completed request is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pending {
    /// A factorial started with `IRQ_ON_DONE`.
    Factorial {
        /// The input.
        n: u32,
    },
    /// A software interrupt raised with these bits.
    Raised {
        /// The bits.
        bits: IrqBits,
    },
}

/// The outcome of one handler step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// The request is answered: send `reply` with `state` as the commit.
    Done {
        /// The reply.
        reply: EduReply,
        /// The new committed state (equal to the old one when nothing changed).
        state: EduState,
    },
    /// Wait for the device interrupt, re-enable it, then call
    /// [`EduHandler::complete_after_irq`] with this.
    WaitIrq(Pending),
}

/// The request handler over an edu device.
#[derive(Debug)]
pub struct EduHandler<R> {
    edu: Edu<R>,
    budget: PollBudget,
}

impl<R: EduRegisters> EduHandler<R> {
    /// A handler over `regs`, with `budget` bounding every status wait.
    pub const fn new(regs: R, budget: PollBudget) -> Self {
        Self { edu: Edu::new(regs), budget }
    }

    /// The device operations (for diagnostics, tests and trace draining).
    pub fn edu(&mut self) -> &mut Edu<R> {
        &mut self.edu
    }

    /// Checks the device is edu and puts it into a known state (see
    /// [`Edu::recover`]): call on every (re)start, before re-enabling
    /// interrupts and before any replay.
    ///
    /// # Errors
    /// [`EduError::NotEdu`] or [`EduError::StillComputing`].
    pub fn recover(&mut self) -> Result<Recovery, EduError> {
        self.edu.identify()?;
        self.edu.recover(self.budget)
    }

    /// Handles `request` against `state` up to its end, or up to the interrupt
    /// it must wait for.
    pub fn start(&mut self, state: &EduState, request: &EduRequest) -> Step {
        let done = |reply, state| Step::Done { reply, state };
        let fail = |e| Step::Done { reply: EduReply::Error(e), state: *state };
        match *request {
            EduRequest::Identify => match self.edu.identify() {
                Ok(id) => done(EduReply::Identity(id), *state),
                Err(e) => fail(e),
            },
            EduRequest::Liveness { probe } => match self.edu.check_liveness(probe) {
                Ok(()) => done(EduReply::Alive { probe, readback: !probe }, *state),
                Err(e) => fail(e),
            },
            EduRequest::Factorial { n, completion: Completion::Polling } => {
                match self.edu.factorial_polling(n, self.budget) {
                    Ok(value) => done(
                        EduReply::Factorial { n, value },
                        EduState { factorials: state.factorials.wrapping_add(1), ..*state },
                    ),
                    Err(e) => fail(e),
                }
            }
            EduRequest::Factorial { n, completion: Completion::Interrupt } => {
                match self.edu.start_factorial_irq(n, self.budget) {
                    Ok(()) => Step::WaitIrq(Pending::Factorial { n }),
                    Err(e) => fail(e),
                }
            }
            EduRequest::RaiseIrq { bits } => {
                let bits = IrqBits::from_bits_retain(bits);
                if bits.is_empty() {
                    return fail(EduError::NoIrqBits);
                }
                self.edu.raise(bits);
                Step::WaitIrq(Pending::Raised { bits })
            }
            EduRequest::Stats => done(EduReply::Stats(*state), *state),
        }
    }

    /// Finishes a [`Step::WaitIrq`] after the device interrupted (or after a
    /// wait timed out, as a last check). Returns `WaitIrq` again, with the
    /// device untouched, when the awaited condition is not there yet.
    pub fn complete_after_irq(&mut self, state: &EduState, pending: &Pending) -> Step {
        match *pending {
            Pending::Factorial { n } => match self.edu.finish_factorial_irq() {
                Some(value) => Step::Done {
                    reply: EduReply::Factorial { n, value },
                    state: EduState {
                        factorials: state.factorials.wrapping_add(1),
                        irqs_handled: state.irqs_handled.wrapping_add(1),
                    },
                },
                None => Step::WaitIrq(*pending),
            },
            Pending::Raised { bits } => {
                if !self.edu.irq_status().contains(bits) {
                    return Step::WaitIrq(*pending);
                }
                self.edu.ack(bits);
                Step::Done {
                    reply: EduReply::IrqHandled { bits: bits.bits() },
                    state: EduState { irqs_handled: state.irqs_handled.wrapping_add(1), ..*state },
                }
            }
        }
    }

    /// Gives up on a pending request (the runtime's interrupt wait timed out
    /// for good): undoes its interrupt set-up and answers
    /// [`EduError::IrqTimeout`]. The state is unchanged.
    pub fn abandon(&mut self, state: &EduState, pending: &Pending) -> Step {
        let irq_status = self.edu.irq_status().bits();
        match *pending {
            Pending::Factorial { .. } => {
                self.edu.set_irq_on_done(false);
                self.edu.ack(IrqBits::FACTORIAL);
            }
            Pending::Raised { bits } => self.edu.ack(bits),
        }
        Step::Done { reply: EduReply::Error(EduError::IrqTimeout { irq_status }), state: *state }
    }
}

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

/// An edu device behind some [`EduRegisters`].
#[derive(Debug)]
pub struct Edu<R> {
    regs: R,
    trace: [Option<Trace>; TRACE_LEN],
    trace_next: usize,
}

impl<R: EduRegisters> Edu<R> {
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
