//! The edu driver as the runtime sees it: start-up recovery, requests,
//! completion by interrupt, and what counts as a device failure.
//!
//! Generic over where the device comes from ([`Source`]), so the same code
//! runs over real UIO (`main.rs`) and, in tests, over edu_core's behavioural
//! model with a socketpair standing in for `/dev/uioN`.

use edu_core::{EduError, EduHandler, EduRegisters, EduReply, EduRequest, EduState, Pending, Step as EduStep};
use reinc_proto::RequestId;
use reinc_runtime::{Ctx, Driver, DriverError, Effect, Event, Step, Wake};
use reinc_uio::{Irq, IrqWait, UioError};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Why the driver cannot go on. Each names the device; the runtime reports
/// it to the supervisor as `Fatal` and the instance exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum EduDriverError {
    /// The selector matched no device (or discovery failed).
    #[error("edu device {selector}: {source}")]
    Discover {
        /// The selector as configured.
        selector: String,
        /// What discovery said.
        source: UioError,
    },
    /// BAR0 could not be mapped or is too small for the register block.
    #[error("edu device {device}: cannot map BAR0: {source}")]
    Map {
        /// The device.
        device: String,
        /// Why.
        source: UioError,
    },
    /// The interrupt node or PCI config space could not be used.
    #[error("edu device {device}: interrupts: {source}")]
    Irq {
        /// The device.
        device: String,
        /// Why.
        source: UioError,
    },
    /// The device misbehaved: not edu, wedged, lost an interrupt.
    #[error("{device}: {source}")]
    Device {
        /// The device.
        device: String,
        /// What the core reported.
        source: EduError,
    },
    /// The runtime woke the driver for a request it is not waiting on (a
    /// runtime bug; dying lets the supervisor replay cleanly).
    #[error("edu device {device}: woken for {id}, but no operation is pending")]
    NotWaiting {
        /// The device.
        device: String,
        /// The request the runtime named.
        id: RequestId,
    },
    /// A request arrived before `Init` opened the device.
    #[error("edu device {selector}: request {id} before Init")]
    NotOpen {
        /// The selector as configured.
        selector: String,
        /// The request.
        id: RequestId,
    },
}

/// An opened, not yet recovered, edu device.
#[derive(Debug)]
pub struct Device<R> {
    /// `uio0 (uio_pci_generic, PCI 0000:00:03.0)`, for logs and errors.
    pub what: String,
    /// The request handler over the register block.
    pub handler: EduHandler<R>,
    /// The interrupt side of the device.
    pub irq: Irq,
}

/// Where the device comes from.
pub trait Source {
    /// Register access.
    type Regs: EduRegisters;
    /// What is asked for (the selector), for errors before the device is open.
    fn selector(&self) -> String;
    /// Finds and maps the device and opens its interrupt. Called on `Init`.
    ///
    /// # Errors
    /// The device is missing or cannot be mapped.
    fn open(&mut self) -> Result<Device<Self::Regs>, EduDriverError>;
}

/// A request parked on the interrupt.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    id: RequestId,
    pending: Pending,
    deadline: Instant,
}

/// The edu driver over a [`Source`].
#[derive(Debug)]
pub struct EduDriver<S: Source> {
    source: S,
    irq_timeout: Duration,
    dev: Option<Device<S::Regs>>,
    waiting: Option<Waiting>,
}

impl<S: Source> EduDriver<S> {
    /// A driver that opens `source` on `Init` and gives up on an interrupt
    /// after `irq_timeout`.
    pub fn new(source: S, irq_timeout: Duration) -> Self {
        Self { source, irq_timeout, dev: None, waiting: None }
    }

    fn device(&mut self, id: RequestId) -> Result<&mut Device<S::Regs>, EduDriverError> {
        let selector = self.source.selector();
        self.dev.as_mut().ok_or(EduDriverError::NotOpen { selector, id })
    }

    /// Turns a finished core step into the runtime's step. A device error
    /// (anything but a bad request) kills the instance instead of being
    /// answered: the supervisor restarts it, the new instance recovers the
    /// device, and the request is replayed, so the client sees latency, not a
    /// transient fault. The supervisor's poison limit bounds the retries.
    fn finish(what: &str, reply: EduReply, state: EduState) -> Result<Step<EduState>, DriverError> {
        let effect = match reply {
            EduReply::Error(e) if !e.is_bad_request() => {
                return Err(EduDriverError::Device { device: what.to_owned(), source: e }.into());
            }
            EduReply::Factorial { .. } | EduReply::Alive { .. } | EduReply::IrqHandled { .. } => Effect::Applied,
            EduReply::Identity(_) | EduReply::Stats(_) | EduReply::Error(_) => Effect::None,
        };
        Step::done(state, &reply, effect)
    }

    /// Waits on, with whatever time is left before the request's deadline.
    fn keep_waiting(w: Waiting) -> Step<EduState> {
        Step::WaitIrq { timeout: Some(w.deadline.saturating_duration_since(Instant::now())) }
    }
}

/// Copies the core's device trace into the runtime's trace ring.
fn drain_trace<R: EduRegisters>(ctx: &mut Ctx<'_>, handler: &mut EduHandler<R>) {
    handler.edu().drain_traces(|t| {
        let (code, a, b) = t.encode();
        ctx.trace(Event::Driver { code, a, b });
    });
}

impl<S: Source> Driver for EduDriver<S> {
    type State = EduState;
    const TRACE_LEGEND: reinc_runtime::Legend = edu_core::TRACE_LEGEND;

    fn describe(&self) -> String {
        match &self.dev {
            Some(d) => format!("{}, irq {}", d.what, d.irq.reenable_flavour().name()),
            None => format!("edu device {} (not open)", self.source.selector()),
        }
    }

    /// Opens the device and leaves it in a known state before any request or
    /// replay: `recover` clears `IRQ_ON_DONE` (a computation a dead
    /// predecessor started cannot interrupt later), waits for that computation
    /// to end and discards it (the supervisor replays the request that started
    /// it: no reply was committed), and acknowledges every pending interrupt
    /// bit so the line is low; only then is INTx unmasked, which the kernel
    /// left masked if the predecessor died between interrupt and re-enable.
    /// edu has no state worth re-applying (see `EduState`).
    fn init(&mut self, ctx: &mut Ctx<'_>, _state: &EduState) -> Result<(), DriverError> {
        let mut dev = self.source.open()?;
        let recovery = dev.handler.recover();
        drain_trace(ctx, &mut dev.handler);
        let recovery = recovery.map_err(|source| EduDriverError::Device { device: dev.what.clone(), source })?;
        dev.irq.reenable().map_err(|source| EduDriverError::Irq { device: dev.what.clone(), source })?;
        if recovery.acked.is_empty() && !recovery.was_computing && !recovery.irq_on_done_was_set {
            debug!("[driver] {} {}: {} was idle", ctx.name(), ctx.generation(), dev.what);
        } else {
            info!(
                "[driver] {} {}: recovered {}: acknowledged pending interrupt bits {:#x}{}{}",
                ctx.name(),
                ctx.generation(),
                dev.what,
                recovery.acked.bits(),
                if recovery.was_computing { ", finished and discarded a computation left running" } else { "" },
                if recovery.irq_on_done_was_set { ", cleared IRQ_ON_DONE" } else { "" },
            );
        }
        self.dev = Some(dev);
        self.waiting = None;
        Ok(())
    }

    fn handle(
        &mut self,
        ctx: &mut Ctx<'_>,
        state: &EduState,
        id: RequestId,
        body: &[u8],
    ) -> Result<Step<EduState>, DriverError> {
        let timeout = self.irq_timeout;
        let dev = self.device(id)?;
        let request = match postcard::from_bytes::<EduRequest>(body) {
            Ok(r) => r,
            Err(e) => {
                warn!(
                    "[driver] {} {}: request {id} has a malformed body ({} bytes): {e}",
                    ctx.name(),
                    ctx.generation(),
                    body.len()
                );
                let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
                return Self::finish(&dev.what, EduReply::Error(EduError::MalformedRequest { len }), *state);
            }
        };
        let step = dev.handler.start(state, &request);
        drain_trace(ctx, &mut dev.handler);
        match step {
            EduStep::Done { reply, state } => Self::finish(&dev.what, reply, state),
            EduStep::WaitIrq(pending) => {
                self.waiting = Some(Waiting { id, pending, deadline: Instant::now() + timeout });
                Ok(Step::WaitIrq { timeout: Some(timeout) })
            }
        }
    }

    fn on_wake(
        &mut self,
        ctx: &mut Ctx<'_>,
        state: &EduState,
        id: RequestId,
        wake: Wake,
    ) -> Result<Step<EduState>, DriverError> {
        let waiting = self.waiting;
        let dev = self.device(id)?;
        let Some(w) = waiting.filter(|w| w.id == id) else {
            return Err(EduDriverError::NotWaiting { device: dev.what.clone(), id }.into());
        };
        let irq_err = |dev: &Device<S::Regs>, source| EduDriverError::Irq { device: dev.what.clone(), source };
        let step = match wake {
            Wake::Irq => {
                match dev.irq.consume().map_err(|e| irq_err(dev, e))? {
                    Some(IrqWait::Fired { count, missed }) => ctx.trace(Event::Irq { count, missed }),
                    // Readable but no new count (cannot happen with one reader):
                    // nothing was acknowledged, so nothing to re-enable.
                    Some(IrqWait::TimedOut) | None => return Ok(Self::keep_waiting(w)),
                }
                // The core acknowledges the device first, so the line is low
                // when INTx is unmasked; unmask even when the interrupt was
                // not ours, or the next one would never arrive.
                let step = dev.handler.complete_after_irq(state, &w.pending);
                dev.irq.reenable().map_err(|e| irq_err(dev, e))?;
                step
            }
            Wake::Timeout => {
                // Last look: the device may have finished while the interrupt
                // went missing.
                match dev.handler.complete_after_irq(state, &w.pending) {
                    done @ EduStep::Done { .. } => {
                        warn!(
                            "[driver] {} {}: {id} finished on {} without its interrupt",
                            ctx.name(),
                            ctx.generation(),
                            dev.what
                        );
                        dev.irq.reenable().map_err(|e| irq_err(dev, e))?;
                        done
                    }
                    EduStep::WaitIrq(_) => dev.handler.abandon(state, &w.pending),
                }
            }
        };
        drain_trace(ctx, &mut dev.handler);
        match step {
            EduStep::Done { reply, state } => {
                let done = Self::finish(&dev.what, reply, state);
                self.waiting = None;
                done
            }
            // An interrupt that was not ours (a stale software raise).
            EduStep::WaitIrq(_) => Ok(Self::keep_waiting(w)),
        }
    }

    fn irq_fd(&self) -> Option<BorrowedFd<'_>> {
        self.dev.as_ref().map(|d| d.irq.as_fd())
    }
}
