//! The timer driver as the runtime sees it: restore and re-enable on
//! `Init`, `Wait` requests parked on the compare channel's interrupt, and
//! the fence that keeps it off the channel it does not own.
//!
//! Generic over where the device comes from ([`Source`]), so the same code
//! runs over real UIO (`main.rs`) and, in tests, over timer_core's model with
//! a socketpair standing in for `/dev/uioN`.

use reinc_proto::RequestId;
use reinc_runtime::{Ctx, Driver, DriverError, Effect, Event, Step, Wake};
use reinc_uio::{Irq, IrqWait, UioError};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;
use timer_core::{
    Channel, Handled, Step as CoreStep, Timer, TimerError, TimerRegisters, TimerReply, TimerRequest, TimerState, Trace,
    read_counter,
};
use tracing::{debug, info, warn};

/// Why the driver cannot go on. Each names the device; the runtime reports
/// it to the supervisor as `Fatal` and the instance exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum TimerDriverError {
    /// The selector matched no device (or discovery failed).
    #[error("system timer device {selector}: {source}")]
    Discover {
        /// The selector as configured.
        selector: String,
        /// What discovery said.
        source: UioError,
    },
    /// Map 0 could not be mapped or is too small for the register block.
    #[error("system timer device {device}: cannot map the register block: {source}")]
    Map {
        /// The device.
        device: String,
        /// Why.
        source: UioError,
    },
    /// The interrupt node could not be opened, read or re-enabled.
    #[error("system timer device {device}: interrupts: {source}")]
    Irq {
        /// The device.
        device: String,
        /// Why.
        source: UioError,
    },
    /// The checkpoint arms a channel this instance does not own (the
    /// configured `--channel` changed between runs).
    #[error(
        "system timer device {device}: the checkpoint arms channel {armed}, but this timer_driver owns channel {served}"
    )]
    ForeignChannel {
        /// The device.
        device: String,
        /// The channel the checkpoint arms.
        armed: u8,
        /// The channel configured now.
        served: u8,
    },
    /// The counter could not be read consistently.
    #[error("system timer device {device}: {source}")]
    Counter {
        /// The device.
        device: String,
        /// What the core reported.
        source: TimerError,
    },
    /// The runtime woke the driver for a request it is not waiting on.
    #[error("system timer device {device}: woken for {id}, but no Wait is pending")]
    NotWaiting {
        /// The device.
        device: String,
        /// The request the runtime named.
        id: RequestId,
    },
    /// A request arrived before `Init` opened the device (a runtime bug).
    #[error("system timer device {selector}: request {id} before Init")]
    NotOpen {
        /// The selector as configured.
        selector: String,
        /// The request.
        id: RequestId,
    },
}

/// An opened system timer.
#[derive(Debug)]
pub struct Device<R> {
    /// `uio1 (reinc-systimer)`, for logs and errors.
    pub what: String,
    /// Register access.
    pub regs: R,
    /// The compare channel's interrupt.
    pub irq: Irq,
}

/// Where the device comes from.
pub trait Source {
    /// Register access.
    type Regs: TimerRegisters;
    /// What is asked for (the selector), for errors before the device is open.
    fn selector(&self) -> String;
    /// Finds and maps the device and opens its interrupt. Called on `Init`.
    ///
    /// # Errors
    /// The device is missing or cannot be mapped.
    fn open(&mut self) -> Result<Device<Self::Regs>, TimerDriverError>;
}

/// An open device under the core.
#[derive(Debug)]
struct Open<R> {
    what: String,
    timer: Timer<R>,
    irq: Irq,
}

/// A `Wait` parked on the interrupt.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    id: RequestId,
    channel: Channel,
}

/// The system timer driver over a [`Source`], owning one compare channel.
#[derive(Debug)]
pub struct TimerDriver<S: Source> {
    source: S,
    channel: Channel,
    lost_irq_grace: Duration,
    dev: Option<Open<S::Regs>>,
    waiting: Option<Waiting>,
}

impl<S: Source> TimerDriver<S> {
    /// A driver that opens `source` on `Init` and serves `channel` (the one
    /// whose interrupt the UIO device carries). A `Wait` whose interrupt has
    /// not come `lost_irq_grace` after its deadline is completed by the
    /// counter (with a warning) instead of waiting forever.
    pub fn new(source: S, channel: Channel, lost_irq_grace: Duration) -> Self {
        Self { source, channel, lost_irq_grace, dev: None, waiting: None }
    }

    fn open(&mut self, id: RequestId) -> Result<&mut Open<S::Regs>, TimerDriverError> {
        let selector = self.source.selector();
        self.dev.as_mut().ok_or(TimerDriverError::NotOpen { selector, id })
    }

    /// Turns a core outcome into the runtime's step, parking a `Wait`.
    fn finish(&mut self, ctx: &mut Ctx<'_>, id: RequestId, state: &TimerState, h: Handled) -> StepResult {
        ctx.trace(h.trace.event());
        let grace = self.lost_irq_grace;
        let open = self.open(id)?;
        match h.step {
            CoreStep::Reply(reply) => {
                self.waiting = None;
                let effect = if h.effect.is_some() { Effect::Applied } else { Effect::None };
                Step::done(h.commit.unwrap_or(*state), &reply, effect)
            }
            CoreStep::WaitForInterrupt { channel, at } => {
                let now = read_counter(open.timer.regs())
                    .map_err(|source| TimerDriverError::Counter { device: open.what.clone(), source })?;
                let ahead = Duration::from_micros(at.saturating_sub(now));
                debug!(
                    "[driver] {} {}: {id} waits {ahead:?} for channel {}",
                    ctx.name(),
                    ctx.generation(),
                    channel.number()
                );
                self.waiting = Some(Waiting { id, channel });
                Ok(Step::WaitIrq { timeout: Some(ahead + grace) })
            }
        }
    }
}

type StepResult = Result<Step<TimerState>, DriverError>;

fn reply_now(state: &TimerState, error: TimerError) -> StepResult {
    Step::done(*state, &TimerReply::Error(error), Effect::None)
}

impl<S: Source> Driver for TimerDriver<S> {
    type State = TimerState;
    const TRACE_LEGEND: reinc_runtime::Legend = timer_core::TRACE_LEGEND;

    fn describe(&self) -> String {
        match &self.dev {
            Some(d) => {
                format!("{}, channel {}, irq {}", d.what, self.channel.number(), d.irq.reenable_flavour().name())
            }
            None => format!("system timer device {} (not open)", self.source.selector()),
        }
    }

    /// Opens the device, re-writes the committed deadline into the compare
    /// register, then re-enables the interrupt, always: a predecessor that
    /// died between an interrupt and its `write(1)` left it disabled, and
    /// genirq's `write(1)` on an enabled interrupt is a no-op. A match that
    /// latched while no driver ran fires right after the re-enable and is
    /// consumed by the next `Wait`.
    fn init(&mut self, ctx: &mut Ctx<'_>, state: &TimerState) -> Result<(), DriverError> {
        let Device { what, regs, irq } = self.source.open()?;
        for ch in Channel::ALL {
            if ch != self.channel && state.deadline(ch).is_some() {
                return Err(TimerDriverError::ForeignChannel {
                    device: what,
                    armed: ch.number(),
                    served: self.channel.number(),
                }
                .into());
            }
        }
        let mut timer = Timer::new(regs);
        ctx.trace(timer.restore(state).event());
        irq.reenable().map_err(|source| TimerDriverError::Irq { device: what.clone(), source })?;
        match state.deadline(self.channel) {
            Some(at) => info!(
                "[driver] {} {}: restored channel {} deadline {at} µs ({} waits completed so far)",
                ctx.name(),
                ctx.generation(),
                self.channel.number(),
                state.fires(self.channel)
            ),
            None => debug!("[driver] {} {}: channel {} not armed", ctx.name(), ctx.generation(), self.channel.number()),
        }
        self.dev = Some(Open { what, timer, irq });
        self.waiting = None;
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Ctx<'_>, state: &TimerState, id: RequestId, body: &[u8]) -> StepResult {
        let served = self.channel;
        let open = self.open(id)?;
        let request = match postcard::from_bytes::<TimerRequest>(body) {
            Ok(r) => r,
            Err(e) => {
                warn!(
                    "[driver] {} {}: request {id} for {} has a malformed body ({} bytes): {e}",
                    ctx.name(),
                    ctx.generation(),
                    open.what,
                    body.len()
                );
                let error = TimerError::MalformedRequest { len: u32::try_from(body.len()).unwrap_or(u32::MAX) };
                ctx.trace(Trace::Refused(error).event());
                return reply_now(state, error);
            }
        };
        // Channels 0/2 and >3 are refused by the core with their own errors;
        // the other ARM channel is refused here, before any register access.
        if let Some(n) = request.channel()
            && let Ok(ch) = Channel::new(n)
            && ch != served
        {
            let error = TimerError::ChannelNotServed { channel: n, served: served.number() };
            ctx.trace(Trace::Refused(error).event());
            return reply_now(state, error);
        }
        // An interrupt that fired while no Wait was parked (its deadline
        // passed before the Wait arrived) left genirq masked. Unmask before
        // this request, so the next deadline interrupts instead of being
        // found by the counter only.
        if let Some(IrqWait::Fired { count, missed }) =
            open.irq.consume().map_err(|source| TimerDriverError::Irq { device: open.what.clone(), source })?
        {
            ctx.trace(Event::Irq { count, missed });
            ctx.trace(open.timer.acknowledge_channel(served).event());
            open.irq.reenable().map_err(|source| TimerDriverError::Irq { device: open.what.clone(), source })?;
        }
        let handled = open.timer.handle(state, &request);
        self.finish(ctx, id, state, handled)
    }

    fn on_wake(&mut self, ctx: &mut Ctx<'_>, state: &TimerState, id: RequestId, wake: Wake) -> StepResult {
        let waiting = self.waiting;
        let open = self.open(id)?;
        let Some(w) = waiting.filter(|w| w.id == id) else {
            return Err(TimerDriverError::NotWaiting { device: open.what.clone(), id }.into());
        };
        let irq_err = |open: &Open<S::Regs>, source| TimerDriverError::Irq { device: open.what.clone(), source };
        match wake {
            Wake::Irq => {
                match open.irq.consume().map_err(|e| irq_err(open, e))? {
                    Some(IrqWait::Fired { count, missed }) => ctx.trace(Event::Irq { count, missed }),
                    // Readable without a new count: nothing to acknowledge.
                    Some(IrqWait::TimedOut) | None => {
                        let h = open.timer.handle(state, &TimerRequest::Wait { channel: w.channel.number() });
                        return self.finish(ctx, id, state, h);
                    }
                }
                // Clear the match (the line's level) before re-enabling, or
                // the interrupt fires again at once.
                ctx.trace(open.timer.acknowledge_channel(w.channel).event());
                open.irq.reenable().map_err(|e| irq_err(open, e))?;
            }
            Wake::Timeout => {
                // Completion is decided by the counter, so a lost interrupt
                // costs the grace period, not the request.
                warn!(
                    "[driver] {} {}: no interrupt for {id} on {} within the grace period; checking the counter",
                    ctx.name(),
                    ctx.generation(),
                    open.what
                );
                open.irq.reenable().map_err(|e| irq_err(open, e))?;
            }
        }
        let h = open.timer.handle(state, &TimerRequest::Wait { channel: w.channel.number() });
        self.finish(ctx, id, state, h)
    }

    fn irq_fd(&self) -> Option<BorrowedFd<'_>> {
        self.dev.as_ref().map(|d| d.irq.as_fd())
    }
}
