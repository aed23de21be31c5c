//! The replay-safe request handler: requests, replies and why one is refused,
//! the committed pin state and its restore.

use serde::{Deserialize, Serialize};

use crate::pin::{Bank, Detect, DetectKind, Direction, Function, Level, Pin, PinSet};
use crate::regs::GpioRegisters;
use crate::trace::Trace;

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

/// Marks a request whose effect cannot be made idempotent: replaying it after
/// a crash may apply it a second time. The wrapper makes that visible where
/// the request is built, not only in documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtLeastOnce<T>(pub T);

/// How a request behaves when the supervisor replays it after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Re-running it reproduces the same device state and the same reply.
    Idempotent,
    /// Re-running it may apply its effect again (see [`AtLeastOnce`]).
    AtLeastOnce,
}

/// A client request to the GPIO driver (postcard-encoded in the request body).
///
/// Pins travel as raw `u8`: the handler validates them before touching the
/// device, so a bad pin number is an error reply, never a register write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GpioRequest {
    /// Make `pin` an input or an output (absolute).
    SetDirection {
        /// Pin number.
        pin: u8,
        /// The wanted direction.
        dir: Direction,
    },
    /// Drive `pin`'s output latch to `level` (absolute, through GPSET/GPCLR).
    /// Allowed on an input too: the latch then takes effect when the pin
    /// becomes an output, which is how a glitch-free switch is done.
    SetLevel {
        /// Pin number.
        pin: u8,
        /// The wanted level.
        level: Level,
    },
    /// Invert `pin`'s committed output level. Relative, so the handler
    /// resolves it against the committed state into an absolute `SetLevel`:
    /// a replay computes the same target level.
    Toggle {
        /// Pin number.
        pin: u8,
    },
    /// Read `pin`'s level and function (no effect).
    Read {
        /// Pin number.
        pin: u8,
    },
    /// Set the complete event-detect configuration of `pin` (absolute).
    ConfigureEdge {
        /// Pin number.
        pin: u8,
        /// Every kind of event the pin shall latch; empty disables detection.
        detect: Detect,
    },
    /// Read the latched events of the allowed pins (no effect).
    ReadEvents,
    /// Clear latched events (GPEDS is write-1-to-clear). At-least-once: if the
    /// driver crashes after clearing but before replying, the replay clears
    /// again and would swallow an event that latched in between.
    ClearEvents(AtLeastOnce<PinSet>),
}

impl GpioRequest {
    /// How this request behaves under replay.
    #[must_use]
    pub const fn replay(&self) -> Replay {
        match self {
            GpioRequest::ClearEvents(_) => Replay::AtLeastOnce,
            _ => Replay::Idempotent,
        }
    }
}

/// The driver's answer (postcard-encoded in the reply body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GpioReply {
    /// `SetDirection` applied.
    DirectionSet {
        /// Pin number.
        pin: u8,
        /// The direction now configured.
        dir: Direction,
    },
    /// `SetLevel` or `Toggle` applied; `level` is the absolute level written.
    LevelSet {
        /// Pin number.
        pin: u8,
        /// The level written.
        level: Level,
    },
    /// Answer to `Read`.
    Level {
        /// Pin number.
        pin: u8,
        /// GPLEV for the pin.
        level: Level,
        /// The pin's current function (may be an alternate function set by the kernel).
        function: Function,
    },
    /// `ConfigureEdge` applied.
    EdgeConfigured {
        /// Pin number.
        pin: u8,
        /// The configuration now in effect.
        detect: Detect,
    },
    /// Answer to `ReadEvents`.
    Events {
        /// Allowed pins with a latched event.
        pending: PinSet,
    },
    /// `ClearEvents` applied.
    EventsCleared {
        /// The pins whose events were cleared.
        pins: PinSet,
    },
    /// The request was refused; nothing was written.
    Error(GpioError),
}

/// The committed state: what the driver has configured, and nothing else.
///
/// Pins the driver never touched are absent, so a restore leaves them (and
/// the kernel's own pins on a real board) alone. Fixed size, no allocation;
/// it is the checkpoint the supervisor keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GpioState {
    /// Pins whose direction was set by the driver.
    directions: PinSet,
    /// Of those, the outputs.
    outputs: PinSet,
    /// Pins whose output latch was set by the driver.
    levels: PinSet,
    /// Of those, the ones latched high.
    high: PinSet,
    /// Pins whose event detection was configured by the driver.
    detects: PinSet,
    /// Per detect family (in [`DetectKind::ALL`] order), the enabled pins.
    detect: [PinSet; 6],
}

impl GpioState {
    /// The committed direction of `pin`, if the driver set one.
    #[must_use]
    pub fn direction(&self, pin: Pin) -> Option<Direction> {
        self.directions
            .contains(pin)
            .then(|| if self.outputs.contains(pin) { Direction::Output } else { Direction::Input })
    }

    /// The committed output level of `pin`, if the driver set one.
    #[must_use]
    pub fn level(&self, pin: Pin) -> Option<Level> {
        self.levels.contains(pin).then(|| Level::from_bit(self.high.contains(pin)))
    }

    /// The committed event-detect configuration of `pin`, if any.
    #[must_use]
    pub fn detect(&self, pin: Pin) -> Option<Detect> {
        self.detects.contains(pin).then(|| {
            DetectKind::ALL
                .iter()
                .filter(|k| self.detect[k.index()].contains(pin))
                .fold(Detect::empty(), |acc, k| acc | k.flag())
        })
    }

    /// Every pin the driver manages in any way.
    #[must_use]
    pub fn managed(&self) -> PinSet {
        self.directions.union(self.levels).union(self.detects)
    }

    /// Checks a state that came from outside (a checkpoint): only real pins,
    /// and every subset inside its parent set.
    ///
    /// # Errors
    /// [`StateError`] naming the inconsistent field.
    pub fn validate(&self) -> Result<(), StateError> {
        let fields = [
            ("directions", self.directions),
            ("outputs", self.outputs),
            ("levels", self.levels),
            ("high", self.high),
            ("detects", self.detects),
        ];
        for (what, set) in fields.into_iter().chain(self.detect.iter().map(|s| ("detect", *s))) {
            if !set.is_valid() {
                return Err(StateError::InvalidPins { what, bits: set.bits() });
            }
        }
        if !self.directions.is_superset_of(self.outputs) {
            return Err(StateError::Inconsistent { what: "an output pin has no committed direction" });
        }
        if !self.levels.is_superset_of(self.high) {
            return Err(StateError::Inconsistent { what: "a high pin has no committed level" });
        }
        if self.detect.iter().any(|s| !self.detects.is_superset_of(*s)) {
            return Err(StateError::Inconsistent { what: "a detect-enabled pin is not marked as configured" });
        }
        Ok(())
    }

    fn with_direction(mut self, pin: Pin, dir: Direction) -> Self {
        self.directions = self.directions.with(pin, true);
        self.outputs = self.outputs.with(pin, dir == Direction::Output);
        self
    }

    fn with_level(mut self, pin: Pin, level: Level) -> Self {
        self.levels = self.levels.with(pin, true);
        self.high = self.high.with(pin, level == Level::High);
        self
    }

    fn with_detect(mut self, pin: Pin, detect: Detect) -> Self {
        self.detects = self.detects.with(pin, true);
        for kind in DetectKind::ALL {
            let s = &mut self.detect[kind.index()];
            *s = s.with(pin, detect.contains(kind.flag()));
        }
        self
    }
}

/// A device effect the handler applied (at most one per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// GPFSEL field of `pin` written.
    Direction {
        /// The pin.
        pin: Pin,
        /// The direction written.
        dir: Direction,
    },
    /// GPSET or GPCLR written for `pin`.
    Level {
        /// The pin.
        pin: Pin,
        /// The level written.
        level: Level,
    },
    /// Detect-enable bits of `pin` written.
    Detect {
        /// The pin.
        pin: Pin,
        /// The configuration written.
        detect: Detect,
    },
    /// GPEDS written to clear these pins' events.
    ClearEvents(PinSet),
}

/// The outcome of one request: the effect applied, the state to commit with
/// the reply (`None` when unchanged), the reply, and a trace entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handled {
    /// What reached the device, if anything.
    pub effect: Option<Effect>,
    /// The new committed state, `None` when the request did not change it.
    pub commit: Option<GpioState>,
    /// The answer for the client.
    pub reply: GpioReply,
    /// For the trace ring.
    pub trace: Trace,
}

impl Handled {
    fn refused(e: GpioError) -> Self {
        Handled { effect: None, commit: None, reply: GpioReply::Error(e), trace: Trace::Refused(e) }
    }

    fn observed(reply: GpioReply) -> Self {
        Handled { effect: None, commit: None, reply, trace: Trace::Observed }
    }

    fn applied(effect: Effect, state: GpioState, old: &GpioState, reply: GpioReply) -> Self {
        let commit = (state != *old).then_some(state);
        Handled { effect: Some(effect), commit, reply, trace: Trace::Applied(effect) }
    }
}

/// The GPIO core: a register block plus the set of pins this driver instance
/// may change. Reads are allowed on every pin; effects only on `allowed`
/// pins, so a driver on a real Pi can be fenced off the kernel's pins (UART,
/// SD card, ...) that share the block.
#[derive(Debug)]
pub struct Gpio<R> {
    regs: R,
    allowed: PinSet,
}

impl<R: GpioRegisters> Gpio<R> {
    /// A core over `regs` that may change the pins in `allowed`.
    pub fn new(regs: R, allowed: PinSet) -> Self {
        Self { regs, allowed }
    }

    /// The register block (tests inspect the model through this).
    pub fn regs(&self) -> &R {
        &self.regs
    }

    /// The register block, mutably (tests drive model inputs through this).
    pub fn regs_mut(&mut self) -> &mut R {
        &mut self.regs
    }

    /// The pins this instance may change.
    pub fn allowed(&self) -> PinSet {
        self.allowed
    }

    /// Handles one request against the committed `state`.
    ///
    /// Deterministic in (`state`, `req`, device): the effect is an absolute
    /// write, and relative requests are resolved against `state`, so running
    /// the same request again after a crash rewrites the same values and
    /// returns the same reply. A refused request touches no register.
    pub fn handle(&mut self, state: &GpioState, req: &GpioRequest) -> Handled {
        match self.try_handle(state, req) {
            Ok(h) => h,
            Err(e) => Handled::refused(e),
        }
    }

    fn try_handle(&mut self, state: &GpioState, req: &GpioRequest) -> Result<Handled, GpioError> {
        Ok(match *req {
            GpioRequest::SetDirection { pin, dir } => {
                let pin = self.writable(pin)?;
                self.write_function(pin, dir.into());
                let new = state.with_direction(pin, dir);
                Handled::applied(
                    Effect::Direction { pin, dir },
                    new,
                    state,
                    GpioReply::DirectionSet { pin: pin.number(), dir },
                )
            }
            GpioRequest::SetLevel { pin, level } => {
                let pin = self.writable(pin)?;
                self.set_level(pin, level, state)
            }
            GpioRequest::Toggle { pin } => {
                let pin = self.writable(pin)?;
                let current = state.level(pin).ok_or(GpioError::LevelUnknown { pin: pin.number() })?;
                self.set_level(pin, current.inverted(), state)
            }
            GpioRequest::Read { pin } => {
                let pin = Pin::new(pin)?;
                let level = Level::from_bit(self.regs.level(pin.bank()) & pin.bank_bit() != 0);
                let function = Function::from_field(self.regs.fsel(pin.fsel_index()) >> pin.fsel_shift());
                Handled::observed(GpioReply::Level { pin: pin.number(), level, function })
            }
            GpioRequest::ConfigureEdge { pin, detect } => {
                let pin = self.writable(pin)?;
                let detect =
                    Detect::from_bits(detect.bits()).ok_or(GpioError::InvalidDetect { bits: detect.bits() })?;
                for kind in DetectKind::ALL {
                    let old = self.regs.detect(kind, pin.bank());
                    let new = if detect.contains(kind.flag()) { old | pin.bank_bit() } else { old & !pin.bank_bit() };
                    self.regs.write_detect(kind, pin.bank(), new);
                }
                let new = state.with_detect(pin, detect);
                Handled::applied(
                    Effect::Detect { pin, detect },
                    new,
                    state,
                    GpioReply::EdgeConfigured { pin: pin.number(), detect },
                )
            }
            GpioRequest::ReadEvents => {
                let pending = PinSet::from_banks(self.regs.events(Bank::B0), self.regs.events(Bank::B1))
                    .intersection(self.allowed);
                Handled::observed(GpioReply::Events { pending })
            }
            GpioRequest::ClearEvents(AtLeastOnce(pins)) => {
                let pins = PinSet::from_bits(pins.bits())?;
                if let Some(pin) = pins.difference(self.allowed).iter().next() {
                    return Err(GpioError::PinNotAllowed { pin: pin.number() });
                }
                for bank in Bank::ALL {
                    let mask = pins.bank_mask(bank);
                    if mask != 0 {
                        self.regs.clear_events(bank, mask);
                    }
                }
                Handled::applied(Effect::ClearEvents(pins), *state, state, GpioReply::EventsCleared { pins })
            }
        })
    }

    /// Re-applies a committed state to the device after a (re)start: output
    /// latches first, then directions, then event detection. Latches go
    /// first so that a pin that becomes an output drives its committed level
    /// from the first instant (no glitch). Only managed pins are touched;
    /// GPFSEL and detect registers are read-modify-written, and a register
    /// already holding the wanted value is not written.
    ///
    /// # Errors
    /// [`StateError`] when the checkpoint is corrupt or manages a pin this
    /// instance is not allowed to change; nothing is written then.
    pub fn restore(&mut self, state: &GpioState) -> Result<Trace, StateError> {
        state.validate()?;
        if let Some(pin) = state.managed().difference(self.allowed).iter().next() {
            return Err(StateError::PinNotAllowed { pin: pin.number() });
        }
        let low = state.levels.difference(state.high);
        for bank in Bank::ALL {
            let set = state.high.bank_mask(bank);
            if set != 0 {
                self.regs.set(bank, set);
            }
            let clear = low.bank_mask(bank);
            if clear != 0 {
                self.regs.clear(bank, clear);
            }
        }
        for index in 0..6 {
            let old = self.regs.fsel(index);
            let mut new = old;
            for pin in state.directions.iter().filter(|p| p.fsel_index() == index) {
                let dir = state.direction(pin).expect("pin is in directions");
                new = (new & !(0b111 << pin.fsel_shift())) | (Function::from(dir).field() << pin.fsel_shift());
            }
            if new != old {
                self.regs.write_fsel(index, new);
            }
        }
        for kind in DetectKind::ALL {
            for bank in Bank::ALL {
                let managed = state.detects.bank_mask(bank);
                if managed == 0 {
                    continue;
                }
                let old = self.regs.detect(kind, bank);
                let new = (old & !managed) | (state.detect[kind.index()].bank_mask(bank) & managed);
                if new != old {
                    self.regs.write_detect(kind, bank, new);
                }
            }
        }
        Ok(Trace::Restored { pins: state.managed() })
    }

    fn writable(&self, pin: u8) -> Result<Pin, GpioError> {
        let pin = Pin::new(pin)?;
        if self.allowed.contains(pin) { Ok(pin) } else { Err(GpioError::PinNotAllowed { pin: pin.number() }) }
    }

    fn write_function(&mut self, pin: Pin, f: Function) {
        let index = pin.fsel_index();
        let old = self.regs.fsel(index);
        let new = (old & !(0b111 << pin.fsel_shift())) | (f.field() << pin.fsel_shift());
        self.regs.write_fsel(index, new);
    }

    fn set_level(&mut self, pin: Pin, level: Level, state: &GpioState) -> Handled {
        match level {
            Level::High => self.regs.set(pin.bank(), pin.bank_bit()),
            Level::Low => self.regs.clear(pin.bank(), pin.bank_bit()),
        }
        let new = state.with_level(pin, level);
        Handled::applied(Effect::Level { pin, level }, new, state, GpioReply::LevelSet { pin: pin.number(), level })
    }
}
