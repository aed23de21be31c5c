//! The client task: `host-supervisor/gpio_driver/src/bin/blink.rs`'s loop,
//! grown into the guest suite's scenario (faults, a storm, a revive).

use super::{encode, log};
use crate::kernel::{BLINK_PIN, GPIO, TIMER};
use crate::sys;
use gpio_core::{Direction, GpioReply, GpioRequest, Level};
use reinc_firmware_rpi3::jefe::BODY_MAX;
use reinc_firmware_rpi3::text::{self, Line};
use reinc_proto::{CrashKind, CrashPoint, FaultPlan};
use serde::Serialize;
use serde::de::DeserializeOwned;
use timer_core::{TimerReply, TimerRequest};

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
