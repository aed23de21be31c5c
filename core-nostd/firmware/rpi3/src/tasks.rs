//! The tasks. The two drivers are the firmware twins of
//! `host-supervisor/gpio_driver/src/driver.rs` and
//! `host-supervisor/timer_driver/src/driver.rs`: the same core calls with
//! the same postcard bodies, on `sys` instead of `reinc-runtime`. The
//! client is `host-supervisor/gpio_driver/src/bin/blink.rs`'s loop, grown
//! into the guest suite's scenario (faults, a storm, a revive).

use gpio_core::{Direction, Gpio, GpioError, GpioReply, GpioRequest, GpioState, Level, Pin, PinSet};
use reinc_firmware_rpi3::jefe::{BODY_MAX, CHECKPOINT_MAX, FaultKind};
use reinc_firmware_rpi3::text::{self, Line};
use reinc_proto::{CrashKind, CrashPoint, FaultPlan};
use serde::Serialize;
use serde::de::DeserializeOwned;
use timer_core::{Channel, Step, Timer, TimerError, TimerReply, TimerRequest, TimerState};

use crate::kernel::{BLINK_PIN, GPIO, TIMER};
use crate::{arch, board, sys};

fn log(args: core::fmt::Arguments<'_>) {
    sys::log(&text::line(args));
}

macro_rules! log {
    ($($t:tt)*) => { log(format_args!($($t)*)) };
}

/// Dies the way the armed plan says, at `point` of request `what`.
fn crash(kind: FaultKind, point: CrashPoint, what: &dyn core::fmt::Display) -> ! {
    static WORD: u64 = 0;
    match kind {
        FaultKind::Plan(CrashKind::Segv) => {
            let v = arch::load_unmapped();
            panic!("a load from {:#x} returned {v:#x} instead of faulting", arch::UNMAPPED)
        }
        FaultKind::Plan(CrashKind::Abrt) => {
            let v = arch::load_misaligned(&WORD);
            panic!("a misaligned exclusive load returned {v:#x} instead of faulting")
        }
        FaultKind::Plan(CrashKind::Hang) => loop {
            // Spins without a syscall: only the kernel's hang detection,
            // on its compare-1 interrupt, gets this task off the CPU.
            core::hint::spin_loop();
        },
        FaultKind::StackOverflow => {
            let depth = deeper(0);
            panic!("recursed {depth} frames without reaching the stack's guard page")
        }
        FaultKind::Plan(k) => panic!("injected fault: {} at {} of {what}", k.name(), point.name()),
    }
}

/// Recursion that uses 256 bytes of stack per frame and cannot be turned
/// into a loop (each frame reads its buffer after the call returns).
fn deeper(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 32]);
    if depth > 1_000_000 {
        return depth;
    }
    deeper(depth + 1) + core::hint::black_box(frame)[31]
}

fn encode<'a, T: Serialize>(value: &T, buf: &'a mut [u8]) -> &'a [u8] {
    let cap = buf.len();
    match postcard::to_slice(value, buf) {
        Ok(b) => b,
        Err(e) => panic!("encoding into {cap} bytes: {e}"),
    }
}

/// The GPIO driver: restore the committed pins, then serve requests.
pub fn gpio_main() -> ! {
    let mut cp = [0u8; CHECKPOINT_MAX];
    let init = sys::init(&mut cp);
    let generation = init.generation;
    let mut state: GpioState = match init.checkpoint {
        None => GpioState::default(),
        Some(bytes) => match postcard::from_bytes(bytes) {
            Ok(s) => s,
            Err(e) => panic!("gpio gen{generation}: checkpoint of {} bytes does not decode: {e}", bytes.len()),
        },
    };
    let allowed = PinSet::EMPTY.with(Pin::new(BLINK_PIN).expect("a BCM2835 pin"), true);
    let mut gpio = Gpio::new(board::gpio(), allowed);
    if let Some(kind) = init.crash {
        crash(kind, CrashPoint::Init, &"init");
    }
    match gpio.restore(&state) {
        Ok(trace) => sys::trace(trace.event()),
        Err(e) => panic!("gpio gen{generation}: {e}"),
    }
    if state.managed().is_empty() {
        log!("[driver] gpio gen{generation}: fresh start, no pin state to restore");
    } else {
        log!("[driver] gpio gen{generation}: restored pins from the checkpoint: {}", text::pins(&state));
    }
    sys::ready();
    let mut body = [0u8; BODY_MAX];
    loop {
        let req = sys::recv(&mut body);
        let (id, crash_plan) = (req.id, req.crash);
        let at = |p: CrashPoint| crash_plan.filter(|(q, _)| *q == p).map(|(_, k)| k);
        if let Some(k) = at(CrashPoint::BeforeEffect) {
            crash(k, CrashPoint::BeforeEffect, &id);
        }
        let (reply, new) = match postcard::from_bytes::<GpioRequest>(req.body) {
            Ok(request) => {
                let handled = gpio.handle(&state, &request);
                sys::trace(handled.trace.event());
                (handled.reply, handled.commit.unwrap_or(state))
            }
            Err(_) => {
                let len = u32::try_from(req.body.len()).unwrap_or(u32::MAX);
                (GpioReply::Error(GpioError::MalformedRequest { len }), state)
            }
        };
        if let Some(k) = at(CrashPoint::AfterEffect) {
            crash(k, CrashPoint::AfterEffect, &id);
        }
        let (mut rb, mut cb) = ([0u8; BODY_MAX], [0u8; CHECKPOINT_MAX]);
        sys::reply(id, encode(&reply, &mut rb), encode(&new, &mut cb));
        state = new;
        if let Some(k) = at(CrashPoint::AfterReply) {
            crash(k, CrashPoint::AfterReply, &id);
        }
    }
}

/// The system timer driver, owning compare channel 3 and its interrupt.
pub fn timer_main() -> ! {
    let mut cp = [0u8; CHECKPOINT_MAX];
    let init = sys::init(&mut cp);
    let generation = init.generation;
    let mut state: TimerState = match init.checkpoint {
        None => TimerState::default(),
        Some(bytes) => match postcard::from_bytes(bytes) {
            Ok(s) => s,
            Err(e) => panic!("timer gen{generation}: checkpoint of {} bytes does not decode: {e}", bytes.len()),
        },
    };
    let served = Channel::C3;
    let mut timer = Timer::new(board::systimer());
    if let Some(kind) = init.crash {
        crash(kind, CrashPoint::Init, &"init");
    }
    sys::trace(timer.restore(&state).event());
    // Always re-enable after restoring: a predecessor may have died with
    // the line masked.
    sys::irq_enable();
    sys::ready();
    let mut body = [0u8; BODY_MAX];
    loop {
        let req = sys::recv(&mut body);
        let (id, crash_plan) = (req.id, req.crash);
        let at = |p: CrashPoint| crash_plan.filter(|(q, _)| *q == p).map(|(_, k)| k);
        if let Some(k) = at(CrashPoint::BeforeEffect) {
            crash(k, CrashPoint::BeforeEffect, &id);
        }
        let request = postcard::from_bytes::<TimerRequest>(req.body).ok();
        // An interrupt that fired while no Wait was parked left the line
        // masked: consume it and unmask first (timer_driver does the same).
        if sys::poll_irq() {
            sys::trace(timer.acknowledge_channel(served).event());
            sys::irq_enable();
        }
        let (reply, new) = match request {
            None => {
                let len = u32::try_from(req.body.len()).unwrap_or(u32::MAX);
                (TimerReply::Error(TimerError::MalformedRequest { len }), state)
            }
            Some(r) => match r.channel().map(Channel::new) {
                Some(Ok(ch)) if ch != served => {
                    let error = TimerError::ChannelNotServed { channel: ch.number(), served: served.number() };
                    (TimerReply::Error(error), state)
                }
                _ => {
                    let mut handled = timer.handle(&state, &r);
                    loop {
                        sys::trace(handled.trace.event());
                        match handled.step {
                            Step::Reply(reply) => break (reply, handled.commit.unwrap_or(state)),
                            Step::WaitForInterrupt { channel, .. } => {
                                sys::wait_irq();
                                // Clear the match (the line's level) before
                                // unmasking, or it fires again at once.
                                sys::trace(timer.acknowledge_channel(channel).event());
                                sys::irq_enable();
                                handled = timer.handle(&state, &TimerRequest::Wait { channel: channel.number() });
                            }
                        }
                    }
                }
            },
        };
        if let Some(k) = at(CrashPoint::AfterEffect) {
            crash(k, CrashPoint::AfterEffect, &id);
        }
        let (mut rb, mut cb) = ([0u8; BODY_MAX], [0u8; CHECKPOINT_MAX]);
        sys::reply(id, encode(&reply, &mut rb), encode(&new, &mut cb));
        state = new;
        if let Some(k) = at(CrashPoint::AfterReply) {
            crash(k, CrashPoint::AfterReply, &id);
        }
    }
}

/// Runs when nothing else can.
pub fn idle_main() -> ! {
    loop {
        arch::wait_for_interrupt();
    }
}

/// One call through the supervisor, decoded. A quarantined driver is an
/// `Err(DriverFailed)`, never a hang.
fn call<Q: Serialize, A: DeserializeOwned>(driver: usize, req: &Q) -> Result<A, sys::CallError> {
    let mut b = [0u8; BODY_MAX];
    sys::send(driver, encode(req, &mut b))?;
    collect(driver, true).expect("a blocking collect always answers")
}

fn collect<A: DeserializeOwned>(driver: usize, block: bool) -> Option<Result<A, sys::CallError>> {
    let mut b = [0u8; BODY_MAX];
    let r = sys::take_reply(driver, &mut b, block)?;
    Some(r.map(|bytes| match postcard::from_bytes(bytes) {
        Ok(a) => a,
        Err(e) => panic!("driver {driver}: reply of {} bytes does not decode: {e}", bytes.len()),
    }))
}

fn gpio(req: GpioRequest) -> GpioReply {
    match call(GPIO, &req) {
        Ok(GpioReply::Error(e)) => panic!("gpio refused {req:?}: {e}"),
        Ok(r) => r,
        Err(e) => panic!("gpio: {req:?}: {e:?}"),
    }
}

fn timer(req: TimerRequest) -> TimerReply {
    match call(TIMER, &req) {
        Ok(TimerReply::Error(e)) => panic!("timer refused {req:?}: {e}"),
        Ok(r) => r,
        Err(e) => panic!("timer: {req:?}: {e:?}"),
    }
}

/// The blink rhythm: absolute deadlines on compare channel 3.
struct Rhythm {
    at: u64,
    period: u64,
    toggles: u32,
    ticks: u32,
}

impl Rhythm {
    /// Arm at the next deadline and wait for the interrupt; returns the
    /// fire count and whether the deadline had passed when armed.
    fn tick(&mut self) -> (u64, u64, &'static str) {
        let armed = timer(TimerRequest::Arm { channel: 3, at: self.at });
        let late = matches!(armed, TimerReply::Armed { already_due: true, .. });
        let TimerReply::Fired { at, fires, .. } = timer(TimerRequest::Wait { channel: 3 }) else {
            panic!("timer: Wait answered something else")
        };
        self.at = at + self.period;
        // Skip whole periods after a long outage instead of bursting (blink.rs).
        let now = sys::now_us();
        if now > self.at + 10 * self.period {
            self.at += ((now - self.at) / self.period + 1) * self.period;
        }
        (fires, at, if late { "late" } else { "irq" })
    }

    /// One blink step: a tick, then `Toggle`, which gpio_core resolves
    /// against the committed level.
    fn toggle(&mut self, phase: &str) {
        let (fires, at, paced) = self.tick();
        let GpioReply::LevelSet { level, .. } = gpio(GpioRequest::Toggle { pin: BLINK_PIN }) else {
            panic!("gpio: Toggle answered something else")
        };
        self.toggles += 1;
        let level = if level == Level::High { "high" } else { "low" };
        log!("FW toggle phase={phase} n={} pin=17 level={level} fire={fires} at={at} paced={paced}", self.toggles);
    }
}

fn phase(name: &str, detail: core::fmt::Arguments<'_>) {
    let l: Line = text::line(detail);
    log!("FW phase name={name} {l}");
}

/// One blink period in the fast phases, in the quiet phase that outlasts
/// the policy's window, and between the storm's timer ticks (µs).
const PERIOD_US: u64 = 200_000;
const QUIET_PERIOD_US: u64 = 200_000;
const STORM_PERIOD_US: u64 = 5_000;

/// The client: blink's loop, then the guest suite's faults.
pub fn blink_main() -> ! {
    let pin = BLINK_PIN;
    // As blink.rs: latch low first, then make it an output (no glitch).
    gpio(GpioRequest::SetLevel { pin, level: Level::Low });
    gpio(GpioRequest::SetDirection { pin, dir: Direction::Output });
    let TimerReply::Now { counter } = timer(TimerRequest::Now) else { panic!("timer: Now answered something else") };
    let mut r = Rhythm { at: counter + PERIOD_US, period: PERIOD_US, toggles: 0, ticks: 0 };

    phase("blink", format_args!("toggles=12 period-us={PERIOD_US}"));
    for _ in 0..12 {
        r.toggle("blink");
    }

    // One fault of each kind, at the crash points of the Linux replay
    // matrix: the toggle is replayed and the LED keeps alternating.
    let faults = [
        ("fault-panic", CrashPoint::AfterEffect, CrashKind::Panic),
        ("fault-segv", CrashPoint::BeforeEffect, CrashKind::Segv),
        ("fault-abrt", CrashPoint::AfterEffect, CrashKind::Abrt),
        ("fault-hang", CrashPoint::AfterEffect, CrashKind::Hang),
    ];
    for (name, point, kind) in faults {
        phase(name, format_args!("plan={}:1:{} toggles=1", point.name(), kind.name()));
        sys::inject(GPIO, FaultPlan { point, on_request: 1, kind }, false);
        r.toggle(name);
    }
    // And a stack overflow, which the guard page below gpio's stack turns
    // into a translation fault of gpio alone.
    phase("fault-stack", format_args!("plan=before-effect:1:stack-overflow toggles=1"));
    sys::inject_stack_overflow(GPIO, CrashPoint::BeforeEffect, 1);
    r.toggle("fault-stack");

    // A fault of the *timer* task while it completes a Wait (request 2,
    // after Arm): the match was cleared and the fire counted, but neither
    // is committed. The new instance re-arms the committed deadline and the
    // replayed Wait completes by the counter with the same fire count
    // (timer_core's replay contract): the blink sees one fire, not two.
    phase("timer-fault", format_args!("plan=after-effect:2:panic toggles=1"));
    sys::inject(TIMER, FaultPlan { point: CrashPoint::AfterEffect, on_request: 2, kind: CrashKind::Panic }, false);
    r.toggle("timer-fault");

    // Longer than the policy's window and healthy period: the storm below
    // starts from a clean restart history.
    r.period = QUIET_PERIOD_US;
    phase("quiet", format_args!("toggles=20 period-us={QUIET_PERIOD_US}"));
    for _ in 0..20 {
        r.toggle("quiet");
    }
    r.period = PERIOD_US;

    // A storm: every instance faults on its first request. The toggle is
    // sent without waiting; the timer is used meanwhile, and must keep
    // working while gpio restarts and after it is quarantined.
    phase("storm", format_args!("plan=before-effect:1:segv every-instance=true period-us={STORM_PERIOD_US}"));
    sys::inject(GPIO, FaultPlan { point: CrashPoint::BeforeEffect, on_request: 1, kind: CrashKind::Segv }, true);
    // Ticks shorter than the backoff delays, so the timer demonstrably
    // serves requests while gpio is down between its instances.
    r.period = STORM_PERIOD_US;
    r.at = sys::now_us() + STORM_PERIOD_US;
    let mut b = [0u8; BODY_MAX];
    if let Err(e) = sys::send(GPIO, encode(&GpioRequest::Toggle { pin }, &mut b)) {
        panic!("gpio: sending the storm's Toggle: {e:?}");
    }
    let mut after = 0;
    for _ in 0..200 {
        let (fires, at, paced) = r.tick();
        r.ticks += 1;
        log!("FW tick phase=storm n={} fire={fires} at={at} paced={paced}", r.ticks);
        if after > 0 {
            after += 1;
        } else if let Some(answer) = collect::<GpioReply>(GPIO, false) {
            match answer {
                Err(sys::CallError::DriverFailed) => log!("FW answer phase=storm task=gpio result=driver-failed"),
                Ok(reply) => log!("FW answer phase=storm task=gpio result=ok reply=\"{reply:?}\""),
                Err(e) => log!("FW answer phase=storm task=gpio result=error reply=\"{e:?}\""),
            }
            after = 1;
        }
        if after > 5 {
            break;
        }
    }

    // The operator's revive: a new instance from the committed pins.
    phase("revive", format_args!("toggles=4"));
    sys::revive(GPIO);
    r.period = PERIOD_US;
    r.at = sys::now_us() + PERIOD_US;
    for _ in 0..4 {
        r.toggle("revive");
    }
    sys::finish()
}
