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

use crate::device::{Edu, EduError, Identity, PollBudget, Recovery};
use crate::regs::{IrqBits, Regs};
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

impl<R: Regs> EduHandler<R> {
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
