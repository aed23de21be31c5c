//! The GPIO driver as the runtime sees it: restore on `Init`, one core
//! request per client request, nothing that waits.
//!
//! Generic over where the register block comes from ([`Source`]), so the
//! same code runs over a real UIO mapping (`main.rs`) and, in tests, over
//! gpio_core's behavioural model.

use gpio_core::{Gpio, GpioError, GpioRegisters, GpioReply, GpioRequest, GpioState, PinSet, StateError, Trace};
use reinc_proto::RequestId;
use reinc_runtime::{Ctx, Driver, DriverError, Effect, Step};
use reinc_uio::UioError;
use tracing::{debug, info, warn};

/// Why the driver cannot go on. Each names the device; the runtime reports
/// it to the supervisor as `Fatal` and the instance exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum GpioDriverError {
    /// The selector matched no device (or discovery failed).
    #[error("GPIO device {selector}: {source}")]
    Discover {
        /// The selector as configured.
        selector: String,
        /// What discovery said.
        source: UioError,
    },
    /// Map 0 could not be mapped or is too small for the register block.
    #[error("GPIO device {device}: cannot map the register block: {source}")]
    Map {
        /// The device.
        device: String,
        /// Why.
        source: UioError,
    },
    /// The checkpoint cannot be applied (corrupt, or names pins this
    /// instance may not touch because the configuration changed).
    #[error("GPIO device {device}: {source}")]
    Restore {
        /// The device.
        device: String,
        /// What the core refused.
        source: StateError,
    },
    /// A request arrived before `Init` opened the device (a runtime bug).
    #[error("GPIO device {selector}: request {id} before Init")]
    NotOpen {
        /// The selector as configured.
        selector: String,
        /// The request.
        id: RequestId,
    },
}

/// An opened GPIO block.
#[derive(Debug)]
pub struct Device<R> {
    /// `uio0 (reinc-gpio)`, for logs and errors.
    pub what: String,
    /// Register access.
    pub regs: R,
}

/// Where the register block comes from.
pub trait Source {
    /// Register access.
    type Regs: GpioRegisters;
    /// What is asked for (the selector), for errors before the device is open.
    fn selector(&self) -> String;
    /// Finds and maps the device. Called on every `Init`.
    ///
    /// # Errors
    /// The device is missing or cannot be mapped.
    fn open(&mut self) -> Result<Device<Self::Regs>, GpioDriverError>;
}

/// The GPIO driver over a [`Source`], fenced to `allowed` pins.
#[derive(Debug)]
pub struct GpioDriver<S: Source> {
    source: S,
    allowed: PinSet,
    dev: Option<(String, Gpio<S::Regs>)>,
}

impl<S: Source> GpioDriver<S> {
    /// A driver that opens `source` on `Init` and may change `allowed` pins.
    pub fn new(source: S, allowed: PinSet) -> Self {
        Self { source, allowed, dev: None }
    }
}

/// `17,22,27` for logs.
pub fn pin_list(pins: PinSet) -> String {
    let list: Vec<String> = pins.iter().map(|p| p.number().to_string()).collect();
    if list.is_empty() { "none".into() } else { list.join(",") }
}

/// `17=out/high 22=in` for the restore log line.
fn describe_state(state: &GpioState) -> String {
    let pins: Vec<String> = state
        .managed()
        .iter()
        .map(|p| {
            let dir = match state.direction(p) {
                Some(gpio_core::Direction::Output) => "out",
                Some(gpio_core::Direction::Input) => "in",
                None => "-",
            };
            let level = match state.level(p) {
                Some(gpio_core::Level::High) => "/high",
                Some(gpio_core::Level::Low) => "/low",
                None => "",
            };
            format!("{}={dir}{level}", p.number())
        })
        .collect();
    pins.join(" ")
}

fn record(ctx: &mut Ctx<'_>, trace: Trace) {
    ctx.trace(trace.event());
}

impl<S: Source> Driver for GpioDriver<S> {
    type State = GpioState;
    const TRACE_LEGEND: reinc_runtime::Legend = gpio_core::TRACE_LEGEND;

    fn describe(&self) -> String {
        match &self.dev {
            Some((what, _)) => format!("{what}, pins {}", pin_list(self.allowed)),
            None => format!("GPIO device {} (not open)", self.source.selector()),
        }
    }

    /// Maps the block and re-applies the committed pin state: output
    /// latches, then directions, then event detection (gpio_core's
    /// `restore`). This is what keeps an LED in its committed state across a
    /// crash even if something changed the pins while no driver ran.
    fn init(&mut self, ctx: &mut Ctx<'_>, state: &GpioState) -> Result<(), DriverError> {
        let Device { what, regs } = self.source.open()?;
        let mut gpio = Gpio::new(regs, self.allowed);
        let trace = gpio.restore(state).map_err(|source| GpioDriverError::Restore { device: what.clone(), source })?;
        record(ctx, trace);
        if state.managed().is_empty() {
            debug!("[driver] {} {}: fresh start, no pin state to restore", ctx.name(), ctx.generation());
        } else {
            info!(
                "[driver] {} {}: restored pins from the checkpoint: {}",
                ctx.name(),
                ctx.generation(),
                describe_state(state)
            );
        }
        self.dev = Some((what, gpio));
        Ok(())
    }

    fn handle(
        &mut self,
        ctx: &mut Ctx<'_>,
        state: &GpioState,
        id: RequestId,
        body: &[u8],
    ) -> Result<Step<GpioState>, DriverError> {
        let selector = self.source.selector();
        let (what, gpio) = self.dev.as_mut().ok_or(GpioDriverError::NotOpen { selector, id })?;
        let request = match postcard::from_bytes::<GpioRequest>(body) {
            Ok(r) => r,
            Err(e) => {
                warn!(
                    "[driver] {} {}: request {id} for {what} has a malformed body ({} bytes): {e}",
                    ctx.name(),
                    ctx.generation(),
                    body.len()
                );
                let error = GpioError::MalformedRequest { len: u32::try_from(body.len()).unwrap_or(u32::MAX) };
                record(ctx, Trace::Refused(error));
                return Step::done(*state, &GpioReply::Error(error), Effect::None);
            }
        };
        let handled = gpio.handle(state, &request);
        record(ctx, handled.trace);
        debug!("[driver] {} {}: {id} {request:?} -> {:?}", ctx.name(), ctx.generation(), handled.reply);
        let effect = if handled.effect.is_some() { Effect::Applied } else { Effect::None };
        Step::done(handled.commit.unwrap_or(*state), &handled.reply, effect)
    }
}
