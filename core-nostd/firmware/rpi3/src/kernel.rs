//! The kernel: trap dispatch, the scheduler, the syscalls, and the
//! supervisor (jefe) that restarts faulted driver tasks. It runs only in
//! exception handlers, with interrupts masked, so its state is never
//! touched concurrently. The decisions themselves (queue, policy,
//! checkpoints, generations, fault plans) are `reinc_firmware_rpi3::jefe`.

use gpio_core::{Bank, GpioRegisters, GpioState, Pin};
use reinc_firmware_rpi3::jefe::{
    BODY_MAX, CHECKPOINT_MAX, Delivery, FaultKind, Launch, Lifecycle, Outcome, Refused, Supervised,
};
use reinc_firmware_rpi3::text::{self, Line};
use reinc_policy::{BackoffConfig, Millis};
use reinc_proto::{ClientId, CrashPoint, FaultPlan, RequestId};
use reinc_ringbuf::{Event, Legend, Ringbuf};
use timer_core::{Channel, Match, TimerRegisters, TimerState, read_counter};

use crate::arch::{self, Frame, TrapCell, kind};
use crate::board;
use crate::sys;
use crate::tasks;

/// Task slots, by priority (lower runs first). Drivers are 0 and 1, and a
/// driver's index is its task's.
pub const TIMER: usize = 0;
/// The GPIO driver task.
pub const GPIO: usize = 1;
/// The client (blink and the guest scenario).
pub const BLINK: usize = 2;
/// Runs when nothing else can.
pub const IDLE: usize = 3;
const TASKS: usize = 4;
const DRIVERS: usize = 2;

/// The restart policy of both driver tasks. Small figures, so that the
/// guest suite's storm takes a fraction of a second; the window is long
/// enough that the five single faults of the scenario (about 1.5 s) stay
/// below a storm, and short enough that its 4 s quiet phase clears it.
pub const POLICY: BackoffConfig = BackoffConfig {
    base: Millis(10),
    cap: Millis(80),
    jitter_percent: 50,
    healthy_after: Millis(2000),
    max_restarts: 5,
    window: Millis(3000),
};

/// A driver that owes an answer and has run this long without trapping
/// into the kernel is hung (the firmware's missed heartbeat). Under TCG
/// the guest's clock is the host's, so a host that deschedules QEMU makes
/// a running task look silent: 50 ms gave false hangs on a loaded 2-core
/// machine (a 66 ms stall was seen); a real handler traps within microseconds.
pub const HANG_LIMIT: Millis = Millis(400);

/// Entries of each driver's trace ring (distinct consecutive events).
const TRACE_ENTRIES: usize = 12;

/// The legend of each driver's core, to name its trace events.
const LEGENDS: [Legend; DRIVERS] = [timer_core::TRACE_LEGEND, gpio_core::TRACE_LEGEND];

/// The pin the blink task drives, and the only one gpio_task may change.
pub const BLINK_PIN: u8 = 17;

/// What a task waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Runnable,
    /// A driver in `recv`, with its buffer.
    Request {
        buf: u64,
        cap: u64,
    },
    /// The client waiting for `driver`'s reply.
    Reply {
        driver: usize,
        buf: u64,
        cap: u64,
    },
    /// The timer task waiting for its interrupt.
    Irq,
    /// A driver between instances (backing off or quarantined).
    Down,
}

#[derive(Debug)]
struct Task {
    name: &'static str,
    entry: fn() -> !,
    frame: Frame,
    wait: Wait,
    /// The interrupt fired and was not consumed yet (the timer task).
    notified: bool,
}

/// A reply the client has not collected yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    status: u64,
    body: reinc_firmware_rpi3::jefe::Body,
}

#[derive(Debug)]
struct Kernel {
    tasks: [Task; TASKS],
    drivers: [Supervised; DRIVERS],
    launches: [Option<Launch>; DRIVERS],
    replies: [Option<Pending>; DRIVERS],
    current: usize,
    next_seq: u64,
    rng: u32,
    timer_irqs: u64,
    /// When each driver task last trapped into the kernel (its heartbeat).
    last_trap: [Millis; DRIVERS],
    /// Each driver instance's trace ring, kept by the kernel so that it
    /// survives the instance (printed at its fault).
    traces: [Ringbuf<Event, TRACE_ENTRIES>; DRIVERS],
    /// Requests handed to the current instance of each driver.
    handled: [u32; DRIVERS],
}

static KERNEL: TrapCell<Option<Kernel>> = TrapCell::new(None);

/// Kernel console output (interrupts are masked: lines never interleave).
fn say(args: core::fmt::Arguments<'_>) {
    let l = text::line(args);
    board::console_write(l.as_bytes());
    board::console_write(b"\n");
}

macro_rules! say {
    ($($t:tt)*) => { say(format_args!($($t)*)) };
}

fn now_us() -> u64 {
    read_counter(&board::systimer()).unwrap_or(0)
}

fn now() -> Millis {
    Millis(now_us() / 1000)
}

fn gplev0() -> u32 {
    board::gpio().level(Bank::B0)
}

fn pin17() -> Pin {
    Pin::new(BLINK_PIN).expect("17 is a BCM2835 pin")
}

/// `pin17=1 gplev0=0x00020000 state=17=out/high`: the committed state of
/// the GPIO driver next to what the pins read right now.
struct PinReport(Option<GpioState>);

impl core::fmt::Display for PinReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let state = self.0.unwrap_or_default();
        write!(f, "pin17={} gplev0={:#010x} state={}", text::level_digit(&state, pin17()), gplev0(), text::pins(&state))
    }
}

fn decode_gpio(bytes: Option<&[u8]>) -> Option<GpioState> {
    bytes.and_then(|b| postcard::from_bytes(b).ok())
}

/// The boot path: MMU, vectors, the two driver tasks' first generation,
/// then the highest-priority task.
pub fn main(boot_el: u64) -> ! {
    arch::install_vectors();
    arch::enable_mmu();
    let (start, end) = arch::image_bounds();
    say!("FW boot el={boot_el} core=0 image={start:#x}..{end:#x} kernel-stack-top={:#x}", arch::kernel_stack_top());
    // The guard pages below the stacks must not translate; the stacks
    // themselves must. Checked by address translation, without a fault.
    let stacks = [
        ("timer", arch::task_stack_guard(TIMER), arch::task_stack_top(TIMER)),
        ("gpio", arch::task_stack_guard(GPIO), arch::task_stack_top(GPIO)),
        ("blink", arch::task_stack_guard(BLINK), arch::task_stack_top(BLINK)),
        ("idle", arch::task_stack_guard(IDLE), arch::task_stack_top(IDLE)),
        ("kernel", arch::kernel_stack_guard(), arch::kernel_stack_top() as u64),
    ];
    for (name, guard, top) in stacks {
        let page = arch::PAGE as u64;
        say!(
            "FW guard task={name} guard={guard:#x} guard-mapped={} stack-bottom-mapped={} stack-top-mapped={}",
            arch::is_mapped(guard),
            arch::is_mapped(guard + page),
            arch::is_mapped(top - 16)
        );
    }
    say!("FW guard task=null guard=0x0 guard-mapped={}", arch::is_mapped(0));
    let p = POLICY;
    say!(
        "FW policy-config base-ms={} cap-ms={} jitter-percent={} healthy-ms={} max-restarts={} window-ms={}",
        p.base.0,
        p.cap.0,
        p.jitter_percent,
        p.healthy_after.0,
        p.max_restarts,
        p.window.0
    );
    let task = |name, entry| Task { name, entry, frame: Frame::fresh(0, 0), wait: Wait::Down, notified: false };
    let first = KERNEL.with(|slot| {
        *slot = Some(Kernel {
            tasks: [
                task("timer", tasks::timer_main),
                task("gpio", tasks::gpio_main),
                task("blink", tasks::blink_main),
                task("idle", tasks::idle_main),
            ],
            drivers: [
                Supervised::new("timer", POLICY).expect("POLICY is valid"),
                Supervised::new("gpio", POLICY).expect("POLICY is valid"),
            ],
            launches: [None; DRIVERS],
            replies: [None; DRIVERS],
            current: IDLE,
            next_seq: 1,
            rng: (now_us() as u32) | 1,
            timer_irqs: 0,
            last_trap: [Millis::ZERO; DRIVERS],
            traces: [const { Ringbuf::new() }; DRIVERS],
            handled: [0; DRIVERS],
        });
        let k = slot.as_mut().expect("just set");
        // The kernel's own deadlines (backoff, hang detection) use compare
        // channel 1.
        board::systimer().clear_match(Match::M1);
        board::irq_enable(board::IRQ_TIMER1);
        for t in [BLINK, IDLE] {
            k.reset_task(t);
        }
        k.service_deadlines();
        k.current = k.pick();
        k.tasks[k.current].frame
    });
    arch::enter_first_task(first)
}

/// Every trap from a task: save its context, handle the event, resume the
/// highest-priority runnable task (maybe another one).
pub fn on_task_trap(trap: u64, frame: &mut Frame) {
    KERNEL.with(|slot| {
        let Some(k) = slot.as_mut() else {
            say!("FW fatal kernel: trap {trap} before the kernel was initialised");
            board::reset()
        };
        let cur = k.current;
        k.tasks[cur].frame = *frame;
        // Silence counts only while a task has the CPU: every driver but
        // the one that just ran was preempted or blocked since the last
        // trap, so a spinning timer task cannot make a starved gpio task
        // look hung.
        let t = now();
        for d in (0..DRIVERS).filter(|&d| d != cur) {
            k.last_trap[d] = t;
        }
        match trap {
            kind::TASK_SYNC => {
                let esr = arch::esr();
                if (esr >> 26) & 0x3f == 0x15 {
                    if cur < DRIVERS {
                        k.last_trap[cur] = now();
                    }
                    k.syscall(cur);
                } else {
                    k.fault(cur, FaultInfo::Exception { esr, far: arch::far(), elr: frame.elr });
                }
            }
            kind::TASK_IRQ => k.irq(),
            kind::TASK_FIQ | kind::TASK_SERROR => {
                k.fault(cur, FaultInfo::Exception { esr: arch::esr(), far: 0, elr: frame.elr });
            }
            _ => k.fault(cur, FaultInfo::Protocol("unknown trap kind from the vectors")),
        }
        k.detect_hangs();
        k.service_deadlines();
        k.current = k.pick();
        *frame = k.tasks[k.current].frame;
    });
}

/// A trap taken in the kernel itself: a bug. Say so and stop the board.
pub fn on_kernel_trap(frame: &Frame, esr: u64, far: u64) -> ! {
    say!("FW fatal kernel exception esr={esr:#x} elr={:#x} far={far:#x}", frame.elr);
    say!("FW end status=fatal");
    board::reset()
}

/// A panic in the kernel itself (a task's panic becomes a syscall instead).
pub fn kernel_panic(msg: &Line) -> ! {
    say!("FW fatal kernel panic: {msg}");
    say!("FW end status=fatal");
    board::reset()
}

/// What went wrong in a task.
#[derive(Debug)]
enum FaultInfo {
    Panic(Line),
    /// Owed an answer and did not trap for this long.
    Hang {
        silent: Millis,
    },
    Exception {
        esr: u64,
        far: u64,
        elr: u64,
    },
    Protocol(&'static str),
}

impl FaultInfo {
    /// The `kind=` word of the fault line.
    fn kind(&self) -> &'static str {
        match self {
            FaultInfo::Panic(_) => "panic",
            FaultInfo::Hang { .. } => "hang",
            FaultInfo::Protocol(_) => "protocol",
            FaultInfo::Exception { esr, .. } => match ((esr >> 26) & 0x3f, esr & 0x3f) {
                (0x24 | 0x25, 0x04..=0x07) => "translation-fault",
                (0x24 | 0x25, 0x21) => "alignment-fault",
                (0x24 | 0x25, 0x09..=0x0b) => "access-flag-fault",
                (0x24 | 0x25, 0x0d..=0x0f) => "permission-fault",
                (0x24 | 0x25, _) => "data-abort",
                (0x20 | 0x21, _) => "instruction-abort",
                (0x00, _) => "undefined-instruction",
                (0x26, _) => "sp-alignment-fault",
                (0x22, _) => "pc-alignment-fault",
                (0x2f, _) => "serror",
                _ => "exception",
            },
        }
    }
}

impl core::fmt::Display for FaultInfo {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FaultInfo::Panic(msg) => write!(f, "msg=\"{msg}\""),
            FaultInfo::Hang { silent } => write!(f, "silent-ms={}", silent.0),
            FaultInfo::Protocol(what) => write!(f, "msg=\"{what}\""),
            FaultInfo::Exception { esr, far, elr } => write!(f, "esr={esr:#x} far={far:#x} elr={elr:#x}"),
        }
    }
}

fn crash_code(c: Option<(CrashPoint, FaultKind)>) -> u64 {
    c.map_or(0, |(p, k)| (sys::point_code(p) << 8) | sys::kind_code(k))
}

impl Kernel {
    fn pick(&self) -> usize {
        (0..TASKS).find(|&t| self.tasks[t].wait == Wait::Runnable).unwrap_or(IDLE)
    }

    fn random(&mut self) -> u32 {
        // xorshift32, seeded from the counter at boot: jitter only.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        x
    }

    fn reset_task(&mut self, t: usize) {
        let task = &mut self.tasks[t];
        task.frame = Frame::fresh(task.entry as usize as u64, arch::task_stack_top(t));
        task.wait = Wait::Runnable;
        task.notified = false;
    }

    fn result(&mut self, t: usize, regs: &[u64]) {
        self.tasks[t].frame.x[..regs.len()].copy_from_slice(regs);
    }

    /// Makes a blocked task runnable. Its silence is counted from now: time
    /// spent blocked in the kernel is waiting, not hanging.
    fn wake(&mut self, t: usize) {
        self.tasks[t].wait = Wait::Runnable;
        if t < DRIVERS {
            self.last_trap[t] = now();
        }
    }

    fn hang_deadline(&self, d: usize) -> Option<Millis> {
        self.drivers[d].hang_deadline(self.tasks[d].wait == Wait::Runnable, self.last_trap[d], HANG_LIMIT)
    }

    /// Faults every driver task that owes an answer and has not trapped
    /// for [`HANG_LIMIT`] (it spins, or waits on something that never comes).
    fn detect_hangs(&mut self) {
        let t = now();
        for d in 0..DRIVERS {
            if self.hang_deadline(d).is_some_and(|at| at <= t) {
                let since = t.since(self.last_trap[d]);
                say!("FW hang task={} silent-ms={} limit-ms={}", self.drivers[d].name(), since.0, HANG_LIMIT.0);
                self.fault(d, FaultInfo::Hang { silent: since });
            }
        }
    }

    /// Launches every driver whose backoff has passed, and keeps compare
    /// channel 1 armed for the earliest kernel deadline: a backoff that
    /// ends, or a driver that would count as hung.
    fn service_deadlines(&mut self) {
        loop {
            let t = now();
            for d in 0..DRIVERS {
                if self.drivers[d].due(t) {
                    self.launch(d, t);
                }
            }
            let backoffs = self.drivers.iter().filter_map(|s| match s.lifecycle() {
                Lifecycle::BackingOff { until } => Some(until),
                _ => None,
            });
            let hangs = (0..DRIVERS).filter_map(|d| self.hang_deadline(d));
            let earliest = backoffs.chain(hangs).min();
            let Some(until) = earliest else { return };
            let mut timer = board::systimer();
            timer.clear_match(Match::M1);
            timer.write_compare(Channel::C1, (until.0 * 1000) as u32);
            // A deadline already passed when written raises no interrupt.
            if now() < until {
                return;
            }
            self.detect_hangs();
        }
    }

    fn launch(&mut self, d: usize, t: Millis) {
        let l = self.drivers[d].launch(t);
        self.launches[d] = Some(l);
        self.last_trap[d] = t;
        self.traces[d] = Ringbuf::new();
        self.traces[d].record(Event::Init { generation: l.generation, restored: l.checkpoint.is_some() });
        self.handled[d] = 0;
        self.reset_task(d);
        if d == TIMER {
            // Masked until the new instance has restored and re-enables
            // it, as genirq's interrupt is after a UIO driver restarts.
            board::irq_disable(board::IRQ_TIMER3);
        }
        let name = self.drivers[d].name();
        if l.generation.0 > 1 {
            say!("[SUP] restarting {name}");
        }
        say!("[SUP] Launching {name} ({})", l.generation);
        let cp = l.checkpoint.as_ref().map(|c| c.as_slice());
        if d == GPIO {
            say!(
                "FW launch task={name} gen={} at-ms={} checkpoint={}",
                l.generation.0,
                t.0,
                PinReport(decode_gpio(cp))
            );
        } else {
            say!(
                "FW launch task={name} gen={} at-ms={} checkpoint-bytes={}",
                l.generation.0,
                t.0,
                cp.map_or(0, <[u8]>::len)
            );
        }
    }

    fn irq(&mut self) {
        let pending = board::irq_pending();
        if pending & board::IRQ_TIMER3 != 0 {
            // Like genirq: mask the line; the task acknowledges the match
            // and re-enables it.
            board::irq_disable(board::IRQ_TIMER3);
            self.timer_irqs += 1;
            say!("FW irq source=timer-c3 n={}", self.timer_irqs);
            if self.tasks[TIMER].wait == Wait::Irq {
                self.tasks[TIMER].frame.x[0] = 1;
                self.wake(TIMER);
            } else {
                self.tasks[TIMER].notified = true;
            }
        }
        if pending & board::IRQ_TIMER1 != 0 {
            board::systimer().clear_match(Match::M1);
        }
    }

    fn fault(&mut self, t: usize, info: FaultInfo) {
        let name = self.tasks[t].name;
        if t >= DRIVERS {
            say!("FW fatal task={name} kind={} {info}", info.kind());
            self.finish("fatal");
        }
        let at = now();
        let sup = &mut self.drivers[t];
        let generation = sup.generation();
        let in_flight = sup.in_flight();
        self.tasks[t].wait = Wait::Down;
        say!("[SUP] {name} crashed ({})", info.kind());
        let flight = Flight(in_flight);
        if t == GPIO {
            let cp = self.drivers[t].checkpoint().map(|c| c.as_slice());
            say!(
                "FW fault task={name} gen={} kind={} {info} in-flight={flight} at-ms={} {}",
                generation.0,
                info.kind(),
                at.0,
                PinReport(decode_gpio(cp))
            );
        } else {
            say!(
                "FW fault task={name} gen={} kind={} {info} in-flight={flight} at-ms={}",
                generation.0,
                info.kind(),
                at.0
            );
        }
        // The dead instance's last moments, as `drvctl trace` shows them on Linux.
        for e in self.traces[t].iter() {
            say!(
                "FW trace task={name} gen={} seq={} count={} event=\"{}\"",
                generation.0,
                e.seq,
                e.count,
                LEGENDS[t].name(&e.payload)
            );
        }
        let random = self.random();
        match self.drivers[t].fault(at, random) {
            Outcome::Restart { delay, attempt, replay } => {
                say!("FW policy task={name} action=restart attempt={attempt} delay-ms={} replay={replay}", delay.0);
            }
            Outcome::Quarantine { restarts_in_window } => {
                say!("[SUP] {name} quarantined: more than {} restarts within {}", POLICY.max_restarts, POLICY.window);
                say!("FW policy task={name} action=quarantine restarts-in-window={restarts_in_window}");
                let mut failed: heapless::Vec<RequestId, { reinc_firmware_rpi3::jefe::QUEUE_DEPTH }> =
                    heapless::Vec::new();
                for e in self.drivers[t].drain_failed() {
                    let _ = failed.push(e.id);
                }
                for id in failed {
                    say!("FW failed task={name} id={id} reason=quarantined");
                    self.deliver(t, sys::STATUS_DRIVER_FAILED, &[]);
                }
            }
        }
    }

    /// Hands `driver`'s next queued request to its task if it waits for one.
    fn pump(&mut self, d: usize) {
        let Wait::Request { buf, cap } = self.tasks[d].wait else { return };
        let Some(delivery) = self.drivers[d].next_request() else { return };
        let Delivery { id, body, crash, replay } = delivery;
        let bytes = body.as_slice();
        if bytes.len() as u64 > cap {
            self.fault(d, FaultInfo::Protocol("receive buffer smaller than the request"));
            return;
        }
        if arch::copy_to_task(d, buf, cap, bytes).is_none() {
            self.fault(d, FaultInfo::Protocol("receive buffer outside the task's stack"));
            return;
        }
        if replay {
            say!("FW replayed task={} gen={} id={id}", self.drivers[d].name(), self.drivers[d].generation().0);
        }
        self.handled[d] += 1;
        self.traces[d].record(Event::RequestStart { id, nth: self.handled[d] });
        self.result(d, &[bytes.len() as u64, id.client.0, id.seq, crash_code(crash)]);
        self.wake(d);
    }

    /// A reply (or a definite error) for the client's request to `driver`.
    fn deliver(&mut self, d: usize, status: u64, body: &[u8]) {
        if let Wait::Reply { driver, buf, cap } = self.tasks[BLINK].wait
            && driver == d
        {
            let n = body.len().min(cap as usize);
            let Some(n) = arch::copy_to_task(BLINK, buf, cap, &body[..n]) else {
                self.fault(BLINK, FaultInfo::Protocol("reply buffer outside the task's stack"));
                return;
            };
            let client = &mut self.tasks[BLINK];
            client.frame.x[0] = status;
            client.frame.x[1] = n as u64;
            client.wait = Wait::Runnable;
        } else {
            let body = reinc_firmware_rpi3::jefe::Body::new(body)
                .unwrap_or(reinc_firmware_rpi3::jefe::Body::new(&[]).expect("empty fits"));
            self.replies[d] = Some(Pending { status, body });
        }
    }

    fn finish(&mut self, status: &str) -> ! {
        for d in 0..DRIVERS {
            let s = &self.drivers[d];
            let state = match s.lifecycle() {
                Lifecycle::Running { .. } => "running",
                Lifecycle::Starting => "starting",
                Lifecycle::BackingOff { .. } => "backing-off",
                Lifecycle::Quarantined => "quarantined",
            };
            let cp = s.checkpoint().map(|c| c.as_slice());
            if d == GPIO {
                say!(
                    "FW final task={} state={state} gen={} restarts={} queued={} {}",
                    s.name(),
                    s.generation().0,
                    s.restarts(),
                    s.queued(),
                    PinReport(decode_gpio(cp))
                );
            } else {
                let ts: TimerState = cp.and_then(|b| postcard::from_bytes(b).ok()).unwrap_or_default();
                say!(
                    "FW final task={} state={state} gen={} restarts={} queued={} fires={}",
                    s.name(),
                    s.generation().0,
                    s.restarts(),
                    s.queued(),
                    ts.fires(Channel::C3)
                );
            }
        }
        say!("FW end status={status} timer-irqs={}", self.timer_irqs);
        board::reset()
    }

    // The panic message is inline (no allocator); these results are built
    // once per syscall, so their size does not matter.
    #[allow(clippy::result_large_err)]
    fn driver_of(&self, t: usize, what: &'static str) -> Result<usize, FaultInfo> {
        if t < DRIVERS { Ok(t) } else { Err(FaultInfo::Protocol(what)) }
    }

    fn syscall(&mut self, t: usize) {
        let x = self.tasks[t].frame.x;
        if let Err(info) = self.try_syscall(t, x[8], [x[0], x[1], x[2], x[3], x[4], x[5]]) {
            self.fault(t, info);
        }
    }

    #[allow(clippy::result_large_err)]
    fn try_syscall(&mut self, t: usize, number: u64, a: [u64; 6]) -> Result<(), FaultInfo> {
        match number {
            sys::LOG => {
                let mut tmp = [0u8; 256];
                let n = arch::copy_from_task(t, a[0], a[1], &mut tmp)
                    .ok_or(FaultInfo::Protocol("log line outside the task's stack or too long"))?;
                board::console_write(&tmp[..n]);
                board::console_write(b"\n");
            }
            sys::PANIC => {
                let mut tmp = [0u8; 256];
                let n = arch::copy_from_task(t, a[0], a[1], &mut tmp).unwrap_or(0);
                let bytes = &tmp[..n];
                let msg = text::line(format_args!("{}", core::str::from_utf8(bytes).unwrap_or("(not UTF-8)")));
                return Err(FaultInfo::Panic(msg));
            }
            sys::INIT => {
                let d = self.driver_of(t, "init from a task that is not a driver")?;
                let l = self.launches[d].ok_or(FaultInfo::Protocol("init before launch"))?;
                let (len, code) = match &l.checkpoint {
                    Some(cp) => {
                        let bytes = cp.as_slice();
                        arch::copy_to_task(t, a[0], a[1], bytes)
                            .ok_or(FaultInfo::Protocol("checkpoint buffer too small or outside the task's stack"))?;
                        (bytes.len() as u64, l.crash_at_init.map_or(0, sys::kind_code))
                    }
                    None => (u64::MAX, l.crash_at_init.map_or(0, sys::kind_code)),
                };
                self.result(t, &[len, u64::from(l.generation.0), code]);
            }
            sys::TRACE => {
                let d = self.driver_of(t, "trace from a task that is not a driver")?;
                let mut tmp = [0u8; 64];
                let n = arch::copy_from_task(t, a[0], a[1], &mut tmp)
                    .ok_or(FaultInfo::Protocol("trace event outside the task's stack or too long"))?;
                let event =
                    postcard::from_bytes(&tmp[..n]).map_err(|_| FaultInfo::Protocol("trace event does not decode"))?;
                self.traces[d].record(event);
            }
            sys::READY => {
                let d = self.driver_of(t, "ready from a task that is not a driver")?;
                self.traces[d].record(Event::Ready);
                let replay = self.drivers[d].ready(now());
                let name = self.drivers[d].name();
                let generation = self.drivers[d].generation().0;
                if d == GPIO {
                    let cp = self.drivers[d].checkpoint().map(|c| c.as_slice());
                    say!("FW ready task={name} gen={generation} {}", PinReport(decode_gpio(cp)));
                } else {
                    say!("FW ready task={name} gen={generation}");
                }
                if replay > 0 {
                    say!("[SUP] replaying {replay} queued requests");
                    say!("FW replay task={name} gen={generation} count={replay}");
                }
            }
            sys::RECV => {
                let d = self.driver_of(t, "recv from a task that is not a driver")?;
                self.tasks[t].wait = Wait::Request { buf: a[0], cap: a[1] };
                self.pump(d);
            }
            sys::REPLY => {
                let d = self.driver_of(t, "reply from a task that is not a driver")?;
                let id = RequestId { client: ClientId(a[4]), seq: a[5] };
                let (mut rb, mut cb) = ([0u8; BODY_MAX], [0u8; CHECKPOINT_MAX]);
                let rn = arch::copy_from_task(t, a[0], a[1], &mut rb)
                    .ok_or(FaultInfo::Protocol("reply body outside the task's stack or too long"))?;
                let cn = arch::copy_from_task(t, a[2], a[3], &mut cb)
                    .ok_or(FaultInfo::Protocol("commit outside the task's stack or too long"))?;
                let (reply, commit) = (&rb[..rn], &cb[..cn]);
                if self.drivers[d].reply(id, commit).is_err() {
                    return Err(FaultInfo::Protocol("reply for a request that is not in flight"));
                }
                self.traces[d].record(Event::Reply { id, committed: true });
                let name = self.drivers[d].name();
                let generation = self.drivers[d].generation().0;
                if d == GPIO {
                    say!("FW commit task={name} gen={generation} id={id} {}", PinReport(decode_gpio(Some(commit))));
                } else {
                    let ts: TimerState = postcard::from_bytes(commit).unwrap_or_default();
                    say!(
                        "FW commit task={name} gen={generation} id={id} fires={} deadline={}",
                        ts.fires(Channel::C3),
                        Deadline(ts.deadline(Channel::C3))
                    );
                }
                self.deliver(d, sys::STATUS_OK, reply);
            }
            sys::WAIT_IRQ => {
                if t != TIMER {
                    return Err(FaultInfo::Protocol("wait_irq from a task without an interrupt"));
                }
                if core::mem::take(&mut self.tasks[t].notified) {
                    self.result(t, &[1]);
                } else {
                    self.tasks[t].wait = Wait::Irq;
                }
            }
            sys::POLL_IRQ => {
                let fired = core::mem::take(&mut self.tasks[t].notified);
                self.result(t, &[u64::from(fired)]);
            }
            sys::IRQ_ENABLE => {
                if t != TIMER {
                    return Err(FaultInfo::Protocol("irq_enable from a task without an interrupt"));
                }
                board::irq_enable(board::IRQ_TIMER3);
            }
            sys::SEND => {
                let d = a[0] as usize;
                if d >= DRIVERS {
                    return Err(FaultInfo::Protocol("send to a driver that does not exist"));
                }
                if self.replies[d].is_some() || self.drivers[d].queued() > 0 {
                    // One outstanding request per driver for this client.
                    self.result(t, &[sys::STATUS_BUSY]);
                    return Ok(());
                }
                let id = RequestId { client: ClientId(1), seq: self.next_seq };
                let mut bb = [0u8; BODY_MAX];
                let n = arch::copy_from_task(t, a[1], a[2], &mut bb)
                    .ok_or(FaultInfo::Protocol("request body outside the task's stack or too long"))?;
                let body = &bb[..n];
                let status = match self.drivers[d].accept(id, body, now()) {
                    Ok(()) => {
                        self.next_seq += 1;
                        sys::STATUS_OK
                    }
                    Err(Refused::Busy) => sys::STATUS_BUSY,
                    Err(Refused::DriverFailed) => sys::STATUS_DRIVER_FAILED,
                    Err(Refused::Duplicate | Refused::TooLarge) => sys::STATUS_REFUSED,
                };
                self.result(t, &[status, id.seq]);
                self.pump(d);
            }
            sys::TAKE_REPLY => {
                let d = a[0] as usize;
                if d >= DRIVERS {
                    return Err(FaultInfo::Protocol("take_reply from a driver that does not exist"));
                }
                if let Some(p) = self.replies[d].take() {
                    let body = p.body.as_slice();
                    let n = body.len().min(a[2] as usize);
                    arch::copy_to_task(t, a[1], a[2], &body[..n])
                        .ok_or(FaultInfo::Protocol("reply buffer outside the task's stack"))?;
                    self.result(t, &[p.status, n as u64]);
                } else if a[3] != 0 {
                    self.tasks[t].wait = Wait::Reply { driver: d, buf: a[1], cap: a[2] };
                } else {
                    self.result(t, &[sys::STATUS_NONE_YET, 0]);
                }
            }
            sys::INJECT => {
                let d = a[0] as usize;
                let (Some(point), Some(kind)) = (sys::point_of(a[1]), sys::kind_of(a[3])) else {
                    return Err(FaultInfo::Protocol("inject with an unknown crash point or kind"));
                };
                if d >= DRIVERS || a[2] == 0 {
                    return Err(FaultInfo::Protocol("inject names no driver, or request 0"));
                }
                let (on_request, every) = (a[2] as u32, a[4] != 0);
                let name = self.drivers[d].name();
                match kind {
                    FaultKind::Plan(kind) => {
                        let plan = FaultPlan { point, on_request, kind };
                        self.traces[d].record(Event::FaultArmed { plan });
                        say!("FW inject task={name} plan={plan} every-instance={every}");
                        self.drivers[d].inject(plan, every);
                    }
                    FaultKind::StackOverflow => {
                        say!(
                            "FW inject task={name} plan={}:{on_request}:stack-overflow every-instance={every}",
                            point.name()
                        );
                        self.drivers[d].inject_stack_overflow(point, on_request, every);
                    }
                }
            }
            sys::REVIVE => {
                let d = a[0] as usize;
                if d >= DRIVERS {
                    return Err(FaultInfo::Protocol("revive names no driver"));
                }
                say!("[SUP] reviving {}", self.drivers[d].name());
                say!("FW revive task={}", self.drivers[d].name());
                self.drivers[d].revive();
            }
            sys::NOW => {
                let us = now_us();
                self.result(t, &[us / 1000, us]);
            }
            sys::FINISH => self.finish("done"),
            _ => return Err(FaultInfo::Protocol("unknown syscall")),
        }
        Ok(())
    }
}

struct Flight(Option<RequestId>);

impl core::fmt::Display for Flight {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(id) => write!(f, "{id}"),
            None => f.write_str("none"),
        }
    }
}

struct Deadline(Option<u64>);

impl core::fmt::Display for Deadline {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(at) => write!(f, "{at}"),
            None => f.write_str("none"),
        }
    }
}
