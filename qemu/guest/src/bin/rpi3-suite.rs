//! The Raspberry Pi 3 suite: QEMU raspi3b's BCM2837 GPIO block and system
//! timer, offered to user space by `uio_pdrv_genirq` through the device-tree
//! nodes of `dts/`, driven first by the no_std cores directly and then by
//! the supervised `gpio_driver` and `timer_driver` on the very configuration
//! a real Pi gets (`qemu/rpi3/pi.toml`).
//!
//! # Shape
//! - Direct tests open the devices with `reinc-uio` and run `gpio_core` and
//!   `timer_core` over the mappings, as the drivers do, and check the
//!   registers independently through raw 32-bit reads of the same mapping.
//! - Supervised tests write `pi.toml` (compiled in) with `/opt/reinc/bin/`
//!   rewritten to `/bin/`, start `/bin/supervisor` on it with its stderr
//!   echoed and kept, and use the `reinc-client` library and `/bin/blink`.
//! - The crash test kills `gpio_driver` with SIGSEGV from outside while
//!   `blink` toggles GPIO17 on timer interrupts. Before the kill the test
//!   scrambles the pins through its own mapping (as a reset or a stray
//!   program would); afterwards it reads GPFSEL/GPLEV through the mapping:
//!   only a restore from the supervisor's checkpoint explains what it finds.
//!
//! Every test sets up the state it checks, so none depends on the order or
//! on another test passing: a direct test first stops a supervisor left
//! running (the devices are then its alone), a supervised test starts one
//! if none runs ([`Ctx::supervised`]), and a test that checks counts
//! (restarts, generations) causes them itself and compares with what it
//! read before.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpio_core::{Direction, Function, Gpio, GpioError, GpioReply, GpioRequest, GpioState, Level, Pin, PinSet};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reinc_client::Client;
use reinc_client::control::DriverStatus;
use reinc_guest::harness::{self, Context, Failure, TestResult};
use reinc_guest::sup::{RUNTIME_DIR, STATE_WAIT, Supervisor, connect, running, status, statuses, wait_status};
use reinc_guest::{ensure, ensure_eq, test};
use reinc_uio::{Irq, IrqWait, Mapping, Selector, Sysfs, UioDevice};
use timer_core::{Channel, Step, Timer, TimerError, TimerReply, TimerRequest, TimerState};

/// The deployment configuration, tested as shipped (paths rewritten).
const PI_CONFIG: &str = include_str!("../../../rpi3/pi.toml");
const CONFIG_PATH: &str = "/etc/reinc/pi.toml";
/// Must match `runtime-dir` and `state-dir` in the configuration.
const STATE_DIR: &str = "/run/reinc-state";
const GPIO_DRIVER: &str = "gpio_driver";
const TIMER_DRIVER: &str = "timer_driver";
/// The UIO names of the device-tree nodes (`dts/reinc-uio-nodes.dtsi`) and
/// the ARM physical addresses of their maps (bus 0x7e.. → ARM 0x3f..).
const GPIO_NAME: &str = "reinc-gpio";
const TIMER_NAME: &str = "reinc-systimer";
const GPIO_PHYS: u64 = 0x3f20_0000;
const TIMER_PHYS: u64 = 0x3f00_3000;
const PAGE: u64 = 0x1000;
/// Raw GPIO register offsets (BCM2835 ARM Peripherals, 6.1).
const GPFSEL0: usize = 0x00;
const GPSET0: usize = 0x1c;
const GPCLR0: usize = 0x28;
const GPLEV0: usize = 0x34;
/// Pins the direct tests drive (none used by the kernel on raspi3b).
const TEST_PINS: [u8; 6] = [5, 6, 17, 22, 27, 40];
/// Blink parameters for the crash test.
const BLINK_PIN: u8 = 17;
const BLINK_TOGGLES: usize = 30;
const BLINK_PERIOD_MS: u64 = 40;
/// The whole suite's limit; past it, a stuck wait is reported.
const SUITE_LIMIT: Duration = Duration::from_secs(120);

struct Ctx {
    gpio: UioDevice,
    timer: UioDevice,
    sup: Supervisor,
}

// ------------------------------------------------------------- helpers

impl Ctx {
    /// For a direct test: no supervisor (nor its drivers) holds the devices.
    fn unsupervised(&self) -> TestResult {
        if self.sup.is_running() {
            self.sup.stop()?;
        }
        Ok(())
    }

    /// For a supervised test: the supervisor runs on the shipped Pi config
    /// with both drivers up; started fresh if no supervisor runs.
    fn supervised(&self) -> TestResult {
        if !self.sup.is_running() {
            start_supervisor(self)?;
        }
        for driver in [GPIO_DRIVER, TIMER_DRIVER] {
            wait_status(driver, "running", running)?;
        }
        Ok(())
    }
}

/// Writes the Pi config, checks it and starts a supervisor on it; returns
/// once the control socket answers.
fn start_supervisor(ctx: &Ctx) -> TestResult {
    let config = PI_CONFIG.replace("/opt/reinc/bin/", "/bin/");
    ensure!(config != PI_CONFIG, "pi.toml no longer names /opt/reinc/bin/");
    std::fs::write(CONFIG_PATH, &config).context(|| format!("writing {CONFIG_PATH}"))?;
    let check = Command::new("/bin/supervisor")
        .args(["--config", CONFIG_PATH, "--check"])
        .output()
        .context(|| "supervisor --check".into())?;
    ensure!(check.status.success(), "supervisor --check: {}", String::from_utf8_lossy(&check.stderr));
    ctx.sup.start(CONFIG_PATH)?;
    // The control socket appears once the supervisor is listening.
    let end = Instant::now() + STATE_WAIT;
    while let Err(e) = statuses() {
        ensure!(Instant::now() < end, "the supervisor's control socket never answered: {e}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn pin_set(pins: &[u8]) -> PinSet {
    pins.iter().fold(PinSet::EMPTY, |s, p| s.with(Pin::new(*p).expect("a real pin"), true))
}

/// The GPFSEL function field of `pin`, read raw from the mapping.
fn raw_function(map: &Mapping, pin: u8) -> Result<Function, Failure> {
    let reg = GPFSEL0 + usize::from(pin / 10) * 4;
    let word = map.read32(reg).context(|| format!("GPFSEL{} of pin {pin}", pin / 10))?;
    Ok(Function::from_field(word >> ((u32::from(pin) % 10) * 3)))
}

/// GPLEV0 bit of `pin` (< 32), read raw.
fn raw_level(map: &Mapping, pin: u8) -> Result<Level, Failure> {
    let word = map.read32(GPLEV0).context(|| "GPLEV0".into())?;
    Ok(Level::from_bit(word & (1 << pin) != 0))
}

/// The registers a refused request must leave alone: GPFSEL0..5, GPLEV0/1.
fn gpio_snapshot(map: &Mapping) -> Result<Vec<u32>, Failure> {
    [0x00, 0x04, 0x08, 0x0c, 0x10, 0x14, 0x34, 0x38]
        .iter()
        .map(|&off| map.read32(off).context(|| format!("GPIO register {off:#x}")))
        .collect()
}

fn event_count(dev: &UioDevice) -> Result<u32, Failure> {
    let path = dev.sysfs_dir.join("event");
    let text = std::fs::read_to_string(&path).context(|| path.display().to_string())?;
    text.trim().parse().map_err(|_| Failure::check(format!("{}: not a count: {text:?}", path.display())))
}

fn gpio_call(client: &mut Client, req: GpioRequest) -> Result<GpioReply, Failure> {
    let body = postcard::to_allocvec(&req).expect("gpio requests encode");
    let reply = client.call(GPIO_DRIVER, &body).context(|| format!("{req:?} on {GPIO_DRIVER}"))?;
    let reply = reply.map_err(|e| Failure::check(format!("{req:?} on {GPIO_DRIVER} failed: {e}")))?;
    postcard::from_bytes(&reply).context(|| format!("reply to {req:?}"))
}

fn timer_call(client: &mut Client, req: TimerRequest) -> Result<TimerReply, Failure> {
    let body = postcard::to_allocvec(&req).expect("timer requests encode");
    let reply = client.call(TIMER_DRIVER, &body).context(|| format!("{req:?} on {TIMER_DRIVER}"))?;
    let reply = reply.map_err(|e| Failure::check(format!("{req:?} on {TIMER_DRIVER} failed: {e}")))?;
    postcard::from_bytes(&reply).context(|| format!("reply to {req:?}"))
}

impl Ctx {
    fn gpio_map(&self) -> Result<Mapping, Failure> {
        Mapping::uio_map(&self.gpio, 0).context(|| format!("mapping {}", self.gpio.describe()))
    }
}

// ------------------------------------------------------- direct tests

/// Both device-tree nodes show up as UIO devices with one page-sized map at
/// the ARM physical address of their block, and no PCI identity.
fn discovery_finds_gpio_and_system_timer_with_their_maps(ctx: &Ctx) -> TestResult {
    ctx.unsupervised()?;
    let devices = Sysfs::system().devices().context(|| "discovering /sys/class/uio".into())?;
    ensure_eq!(devices.len(), 2, "UIO devices ({devices:?})");
    for (dev, name, phys) in [(&ctx.gpio, GPIO_NAME, GPIO_PHYS), (&ctx.timer, TIMER_NAME, TIMER_PHYS)] {
        ensure_eq!(dev.name.as_str(), name, "{}: name", dev.describe());
        ensure_eq!(dev.version.as_str(), "devicetree", "{}: uio_pdrv_genirq's version for an OF node", dev.describe());
        ensure!(dev.pci.is_none(), "{} claims a PCI identity", dev.describe());
        ensure_eq!(dev.maps.len(), 1, "{}: maps", dev.describe());
        let m = &dev.maps[0];
        ensure_eq!((m.addr, m.size, m.offset), (phys, PAGE, 0), "{}: map 0 (addr, size, offset)", dev.describe());
        ensure!(Path::new(&dev.dev_node).exists(), "{} has no device node", dev.describe());
    }
    Ok(())
}

/// gpio_core over the real mapping: every test pin becomes an output and is
/// driven high, low, high; GPFSEL and GPLEV, read raw, agree at each step;
/// then back to input.
fn gpio_direction_and_level_round_trip_on_several_pins(ctx: &Ctx) -> TestResult {
    ctx.unsupervised()?;
    let block = ctx.gpio_map()?.into_block::<gpio_core::RegisterBlock>(0).context(|| "GPIO block".into())?;
    let raw = ctx.gpio_map()?;
    let mut gpio = Gpio::new(block, pin_set(&TEST_PINS));
    let mut state = GpioState::default();
    let mut run = |req: GpioRequest| {
        let h = gpio.handle(&state, &req);
        if let Some(s) = h.commit {
            state = s;
        }
        h.reply
    };
    for pin in TEST_PINS {
        ensure_eq!(
            run(GpioRequest::SetDirection { pin, dir: Direction::Output }),
            GpioReply::DirectionSet { pin, dir: Direction::Output },
            "pin {pin} to output"
        );
        ensure_eq!(raw_function(&raw, pin)?, Function::Output, "GPFSEL of pin {pin}");
        for level in [Level::High, Level::Low, Level::High] {
            ensure_eq!(run(GpioRequest::SetLevel { pin, level }), GpioReply::LevelSet { pin, level }, "pin {pin}");
            let read = run(GpioRequest::Read { pin });
            ensure_eq!(read, GpioReply::Level { pin, level, function: Function::Output }, "Read of pin {pin}");
            if pin < 32 {
                ensure_eq!(raw_level(&raw, pin)?, level, "GPLEV0 bit {pin}");
            }
        }
    }
    for pin in TEST_PINS {
        run(GpioRequest::SetLevel { pin, level: Level::Low });
        run(GpioRequest::SetDirection { pin, dir: Direction::Input });
        ensure_eq!(raw_function(&raw, pin)?, Function::Input, "pin {pin} back to input");
    }
    Ok(())
}

/// Pins that do not exist, and pins outside the allowed list (the UART's
/// 14), are refused with typed errors and no register changes.
fn invalid_and_unlisted_pins_are_refused_without_a_register_change(ctx: &Ctx) -> TestResult {
    ctx.unsupervised()?;
    let block = ctx.gpio_map()?.into_block::<gpio_core::RegisterBlock>(0).context(|| "GPIO block".into())?;
    let raw = ctx.gpio_map()?;
    let mut gpio = Gpio::new(block, pin_set(&TEST_PINS));
    let state = GpioState::default();
    let before = gpio_snapshot(&raw)?;
    for (req, want) in [
        (GpioRequest::SetLevel { pin: 54, level: Level::High }, GpioError::InvalidPin { pin: 54 }),
        (GpioRequest::SetDirection { pin: 200, dir: Direction::Output }, GpioError::InvalidPin { pin: 200 }),
        (GpioRequest::SetDirection { pin: 14, dir: Direction::Output }, GpioError::PinNotAllowed { pin: 14 }),
        (GpioRequest::Toggle { pin: 15 }, GpioError::PinNotAllowed { pin: 15 }),
        (GpioRequest::Toggle { pin: 17 }, GpioError::LevelUnknown { pin: 17 }),
    ] {
        let h = gpio.handle(&state, &req);
        ensure_eq!(h.reply, GpioReply::Error(want), "{req:?}");
        ensure!(h.effect.is_none() && h.commit.is_none(), "{req:?} had an effect or a commit: {h:?}");
    }
    ensure_eq!(gpio_snapshot(&raw)?, before, "GPFSEL0..5 and GPLEV0/1 after the refused requests");
    Ok(())
}

/// timer_core over the real mapping and genirq interrupts: no interrupt
/// while nothing is armed; then four deadlines, each completed after its
/// interrupt, with the kernel's event count growing by one each time.
fn timer_compare_interrupts_arrive_with_growing_event_counts(ctx: &Ctx) -> TestResult {
    ctx.unsupervised()?;
    let dev = &ctx.timer;
    let block = Mapping::uio_map(dev, 0)
        .and_then(|m| m.into_block::<timer_core::RegisterBlock>(0))
        .context(|| format!("mapping {}", dev.describe()))?;
    let mut irq = Irq::open(dev).context(|| format!("opening {}", dev.describe()))?;
    irq.reenable().context(|| "write(1) to re-enable".into())?;
    let mut timer = Timer::new(block);
    ensure_eq!(
        irq.wait(Some(Duration::from_millis(100))).context(|| "waiting with nothing armed".into())?,
        IrqWait::TimedOut,
        "interrupt with nothing armed"
    );
    let mut state = TimerState::default();
    let mut counts = Vec::new();
    for n in 1..=4u64 {
        let armed = timer.handle(&state, &TimerRequest::ArmIn { channel: 3, micros: 20_000 });
        state = armed.commit.unwrap_or(state);
        let Step::Reply(TimerReply::Armed { at, already_due: false, .. }) = armed.step else {
            return Err(Failure::check(format!("ArmIn answered {:?}", armed.step)));
        };
        loop {
            let h = timer.handle(&state, &TimerRequest::Wait { channel: 3 });
            match h.step {
                Step::WaitForInterrupt { .. } => {
                    match irq.wait(Some(Duration::from_secs(2))).context(|| "waiting for channel 3".into())? {
                        IrqWait::Fired { count, missed } => {
                            ensure_eq!(missed, 0, "interrupts missed before deadline {n}");
                            counts.push(count);
                        }
                        IrqWait::TimedOut => return Err(Failure::check(format!("no interrupt for deadline {n}"))),
                    }
                    timer.acknowledge_channel(Channel::C3);
                    irq.reenable().context(|| "write(1) to re-enable".into())?;
                }
                Step::Reply(reply) => {
                    state = h.commit.unwrap_or(state);
                    ensure_eq!(reply, TimerReply::Fired { channel: 3, at, fires: n }, "deadline {n}");
                    let now = timer_core::read_counter(timer.regs()).map_err(|e| Failure::check(e.to_string()))?;
                    ensure!(now >= at, "completed at counter {now}, before its deadline {at}");
                    break;
                }
            }
        }
    }
    ensure!(counts.windows(2).all(|w| w[1] == w[0] + 1), "event counts must grow by one: {counts:?}");
    ensure_eq!(event_count(dev)?, *counts.last().expect("four counts"), "sysfs event after the last interrupt");
    Ok(())
}

// --------------------------------------------------- supervised tests

/// The shipped Pi configuration passes `supervisor --check`, and the
/// supervisor launches both drivers on it; each maps its block and says so
/// in the seed's words.
fn supervisor_runs_both_drivers_from_the_shipped_pi_config(ctx: &Ctx) -> TestResult {
    // A fresh supervisor: generation 1 is what a first launch gets.
    ctx.unsupervised()?;
    start_supervisor(ctx)?;
    for driver in [GPIO_DRIVER, TIMER_DRIVER] {
        let s = wait_status(driver, "running", running)?;
        ensure_eq!(s.generation, 1, "{driver} generation at start");
        ensure!(ctx.sup.logged(&format!("[SUP] Launching {driver} (pid=")), "no launch line for {driver}");
    }
    for phys in [GPIO_PHYS, TIMER_PHYS] {
        let line = format!("[driver] mapped {phys:#x} size={PAGE:#x}");
        ensure!(ctx.sup.logged(&line), "no `{line}` in the driver log");
    }
    Ok(())
}

/// Through the supervisor: five `Wait`s, each completed by the channel's
/// interrupt (the sysfs event count moves by exactly five), fire counts
/// 1..=5; the channel the driver does not own is refused.
fn timer_driver_completes_waits_by_interrupt_and_refuses_the_other_channel(ctx: &Ctx) -> TestResult {
    ctx.supervised()?;
    let mut client = connect()?;
    ensure_eq!(
        timer_call(&mut client, TimerRequest::ArmIn { channel: 1, micros: 1000 })?,
        TimerReply::Error(TimerError::ChannelNotServed { channel: 1, served: 3 }),
        "channel 1"
    );
    let before = event_count(&ctx.timer)?;
    for n in 1..=5u64 {
        let armed = timer_call(&mut client, TimerRequest::ArmIn { channel: 3, micros: 50_000 })?;
        let TimerReply::Armed { at, already_due: false, .. } = armed else {
            return Err(Failure::check(format!("ArmIn answered {armed:?}")));
        };
        let fired = timer_call(&mut client, TimerRequest::Wait { channel: 3 })?;
        ensure_eq!(fired, TimerReply::Fired { channel: 3, at, fires: n }, "Wait {n}");
    }
    ensure_eq!(event_count(&ctx.timer)?.wrapping_sub(before), 5, "interrupts delivered for five waits");
    Ok(())
}

/// Bad requests through the supervisor get typed errors from gpio_driver,
/// change no register and cost no restart: a pin that does not exist, the
/// UART's pin (not in pi.toml's `--pins`), and a body that is not a request.
fn gpio_driver_answers_bad_requests_with_errors_and_keeps_running(ctx: &Ctx) -> TestResult {
    ctx.supervised()?;
    let mut client = connect()?;
    let raw = ctx.gpio_map()?;
    let before = gpio_snapshot(&raw)?;
    let gen_before = status(GPIO_DRIVER)?.generation;
    for (req, want) in [
        (GpioRequest::SetLevel { pin: 60, level: Level::High }, GpioError::InvalidPin { pin: 60 }),
        (GpioRequest::SetDirection { pin: 14, dir: Direction::Output }, GpioError::PinNotAllowed { pin: 14 }),
    ] {
        ensure_eq!(gpio_call(&mut client, req)?, GpioReply::Error(want), "{req:?} through {GPIO_DRIVER}");
    }
    let reply = client.call(GPIO_DRIVER, &[0xff, 0xff, 0xff]).context(|| "malformed body".into())?;
    let reply = reply.map_err(|e| Failure::check(format!("malformed body failed the call: {e}")))?;
    let reply: GpioReply = postcard::from_bytes(&reply).context(|| "reply to a malformed body".into())?;
    ensure_eq!(reply, GpioReply::Error(GpioError::MalformedRequest { len: 3 }), "malformed body");
    ensure_eq!(gpio_snapshot(&raw)?, before, "GPFSEL0..5 and GPLEV0/1 after the bad requests");
    let after = status(GPIO_DRIVER)?;
    ensure!(running(&after) && after.generation == gen_before, "{GPIO_DRIVER} was restarted: {after:?}");
    Ok(())
}

/// The seed's scenario: `blink` toggles GPIO17 on timer interrupts; the
/// pins are scrambled behind the driver's back and `gpio_driver` is killed
/// with SIGSEGV mid-blink. The supervisor restarts it, the new instance
/// restores directions and levels from the checkpoint, the interrupted
/// toggle is replayed, and blink finishes its 30 toggles without an error.
/// GPFSEL/GPLEV read through the test's own mapping show the committed
/// state, which only the restore can have put back.
/// Both drivers run under their seccomp filter on aarch64 (read from their
/// own `/proc/<pid>/status`), and a SIGSEGV and a SIGABRT injected into the
/// timer driver (the one no other test crashes: `max-restarts` is 5 a
/// minute) end it by that signal, never by SIGSYS.
fn drivers_run_under_seccomp_and_injected_crashes_keep_their_signal(ctx: &Ctx) -> TestResult {
    ctx.supervised()?;
    for name in [GPIO_DRIVER, TIMER_DRIVER] {
        let s = wait_status(name, "running", running)?;
        let shown = reinc_guest::sandbox::confined(s.pid.expect("running has a pid"))?;
        tracing::info!("[rpi3-suite] {name}: {shown}");
    }
    let mut client = connect()?;
    let kinds = [reinc_proto::CrashKind::Segv, reinc_proto::CrashKind::Abrt];
    reinc_guest::sandbox::crashes_keep_their_signal(&ctx.sup, TIMER_DRIVER, &kinds, || {
        let r = timer_call(&mut client, TimerRequest::Now)?;
        ensure!(matches!(r, TimerReply::Now { .. }), "Now answered {r:?}");
        Ok(())
    })
}

fn gpio_driver_killed_by_sigsegv_mid_blink_comes_back_with_its_pins_restored(ctx: &Ctx) -> TestResult {
    ctx.supervised()?;
    let mut client = connect()?;
    for req in [
        GpioRequest::SetLevel { pin: 27, level: Level::High },
        GpioRequest::SetDirection { pin: 27, dir: Direction::Output },
        GpioRequest::SetLevel { pin: 22, level: Level::Low },
        GpioRequest::SetDirection { pin: 22, dir: Direction::Output },
    ] {
        let r = gpio_call(&mut client, req)?;
        ensure!(!matches!(r, GpioReply::Error(_)), "{req:?} refused: {r:?}");
    }
    let before = status(GPIO_DRIVER)?;
    let events_before = event_count(&ctx.timer)?;
    let mut blink = Command::new("/bin/blink")
        .args(["--runtime-dir", RUNTIME_DIR, "--gpio", GPIO_DRIVER, "--timer", TIMER_DRIVER])
        .args(["--pin", &BLINK_PIN.to_string(), "--period-ms", &BLINK_PERIOD_MS.to_string()])
        .args(["--count", &BLINK_TOGGLES.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context(|| "starting /bin/blink".into())?;
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let out = blink.stdout.take().expect("piped");
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            sink.lock().unwrap().push(line);
        }
    });
    let end = Instant::now() + STATE_WAIT;
    while lines.lock().unwrap().len() < 10 {
        if Instant::now() >= end {
            let _ = blink.kill();
            return Err(Failure::check(format!(
                "blink toggled {} time(s) in {STATE_WAIT:?}",
                lines.lock().unwrap().len()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Scramble the managed pins behind the driver's back: all three inputs,
    // latches inverted. A Toggle writes only GPSET/GPCLR of pin 17, so
    // nothing but a restore brings the directions back.
    let raw = ctx.gpio_map()?;
    for reg in [0x04usize, 0x08] {
        let word = raw.read32(reg).context(|| format!("GPFSEL {reg:#x}"))?;
        let cleared = match reg {
            0x04 => word & !(0b111 << 21),
            _ => word & !((0b111 << 6) | (0b111 << 21)),
        };
        raw.write32(reg, cleared).context(|| format!("GPFSEL {reg:#x}"))?;
    }
    raw.write32(GPSET0, 1 << 22).context(|| "GPSET0".into())?;
    raw.write32(GPCLR0, 1 << 27).context(|| "GPCLR0".into())?;
    ensure_eq!(raw_function(&raw, 27)?, Function::Input, "pin 27 scrambled");
    let s = wait_status(GPIO_DRIVER, "running", running)?;
    let pid = s.pid.expect("running has a pid");
    kill(Pid::from_raw(pid as i32), Signal::SIGSEGV).context(|| format!("kill -SEGV {GPIO_DRIVER} (pid {pid})"))?;

    let end = Instant::now() + STATE_WAIT;
    let exit = loop {
        if let Some(status) = blink.try_wait().context(|| "waiting for blink".into())? {
            break status;
        }
        if Instant::now() >= end {
            let _ = blink.kill();
            let _ = blink.wait();
            return Err(Failure::check(format!("blink did not finish within {STATE_WAIT:?} of the kill")));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = reader.join();
    ensure!(exit.success(), "blink ended with {exit}");
    let lines = lines.lock().unwrap().clone();
    ensure_eq!(lines.len(), BLINK_TOGGLES, "toggle lines printed by blink");
    let mut paced = 0u32;
    let mut last_at = 0u64;
    let mut first_fire = None;
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let field = |key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key)).unwrap_or("");
        ensure!(line.starts_with(&format!("blink: toggle {n} pin={BLINK_PIN} ")), "line {n}: {line}");
        let want = if n % 2 == 1 { "High" } else { "Low" };
        ensure_eq!(field("level="), want, "level of toggle {n} (alternating across the crash)");
        let fire: u64 = field("fire=").parse().map_err(|_| Failure::check(format!("no fire= in {line}")))?;
        let first = *first_fire.get_or_insert(fire - i as u64);
        ensure_eq!(fire, first + i as u64, "timer fire count of toggle {n} (one Wait per toggle)");
        let at: u64 = field("at=").parse().map_err(|_| Failure::check(format!("no at= in {line}")))?;
        let period = BLINK_PERIOD_MS * 1000;
        ensure!(
            i == 0 || (at > last_at && (at - last_at).is_multiple_of(period)),
            "deadline of toggle {n} ({at}) is not on the {period} µs grid after the previous ({last_at})"
        );
        last_at = at;
        if field("paced=") == "irq" {
            paced += 1;
        }
    }
    // Each toggle armed ahead of time can be paced by at most one interrupt
    // (one armed late has none). Fewer is fine: on a loaded host a deadline
    // may pass while a stale event is being consumed with the interrupt
    // masked, and the counter completes the Wait. How many toggles make
    // their 40 ms is a matter of host load, so only "some" is asserted.
    let events = event_count(&ctx.timer)?.wrapping_sub(events_before);
    ensure!(
        events >= 1 && events <= paced,
        "{events} timer interrupt(s) during the blink, {paced} of {BLINK_TOGGLES} toggles armed ahead of time"
    );

    let after = wait_status(GPIO_DRIVER, "restarted", |t| running(t) && t.generation > before.generation)?;
    ensure_eq!(after.generation, before.generation + 1, "{GPIO_DRIVER} generation after the kill");
    ensure_eq!(after.restarts, before.restarts + 1, "{GPIO_DRIVER} restarts");
    ensure_eq!(after.last_failure.as_deref(), Some("SIGSEGV"), "{GPIO_DRIVER} last failure");
    let last_level = if BLINK_TOGGLES % 2 == 1 { Level::High } else { Level::Low };
    for (pin, level) in [(BLINK_PIN, last_level), (27, Level::High), (22, Level::Low)] {
        ensure_eq!(raw_function(&raw, pin)?, Function::Output, "GPFSEL of pin {pin} after the restart");
        ensure_eq!(raw_level(&raw, pin)?, level, "GPLEV of pin {pin} after the restart");
    }
    ensure!(ctx.sup.logged(&format!("[SUP] {GPIO_DRIVER} crashed (SIGSEGV)")), "no crash line");
    ensure!(ctx.sup.logged(&format!("[SUP] restarting {GPIO_DRIVER}")), "no restart line");
    let mapped = format!("[driver] mapped {GPIO_PHYS:#x} size={PAGE:#x}");
    ensure!(ctx.sup.count_logged(&mapped) >= 2, "`{mapped}` logged by fewer than two instances");
    let restored = format!("[driver] {GPIO_DRIVER} gen{}: restored pins from the checkpoint:", after.generation);
    ensure!(ctx.sup.logged(&restored), "the new instance did not report restoring its pins");
    Ok(())
}

/// `drvctl status --json` counts a restart the test causes itself (gpio
/// one more restart and generation, timer unchanged), and both checkpoints
/// are persisted where pi.toml says.
fn drvctl_status_and_persisted_checkpoints_match(ctx: &Ctx) -> TestResult {
    ctx.supervised()?;
    let drvctl_rows = || -> Result<Vec<DriverStatus>, Failure> {
        let out = Command::new("/bin/drvctl")
            .args(["--runtime-dir", RUNTIME_DIR, "status", "--json"])
            .output()
            .context(|| "drvctl status --json".into())?;
        ensure!(out.status.success(), "drvctl status: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).context(|| "drvctl status --json".into())
    };
    let row = |rows: &[DriverStatus], name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .map(|r| (r.restarts, r.generation))
            .ok_or_else(|| Failure::check(format!("{name} missing from drvctl status")))
    };
    let before = drvctl_rows()?;
    let gpio = status(GPIO_DRIVER)?;
    let pid = gpio.pid.expect("running has a pid");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).context(|| format!("kill -KILL {GPIO_DRIVER} (pid {pid})"))?;
    wait_status(GPIO_DRIVER, "restarted", |t| running(t) && t.generation > gpio.generation)?;
    let after = drvctl_rows()?;
    let (restarts, generation) = row(&before, GPIO_DRIVER)?;
    ensure_eq!(row(&after, GPIO_DRIVER)?, (restarts + 1, generation + 1), "gpio (restarts, generation) after a kill");
    ensure_eq!(row(&after, TIMER_DRIVER)?, row(&before, TIMER_DRIVER)?, "timer (restarts, generation), untouched");
    for driver in [GPIO_DRIVER, TIMER_DRIVER] {
        let path = Path::new(STATE_DIR).join(format!("{driver}.ckpt"));
        let meta = std::fs::metadata(&path).context(|| path.display().to_string())?;
        ensure!(meta.len() > 0, "{} is empty", path.display());
    }
    Ok(())
}

/// SIGTERM stops the supervisor and both drivers; none is left running.
fn shutdown_stops_both_drivers(ctx: &Ctx) -> TestResult {
    ctx.supervised()?;
    let pids: Vec<u32> = statuses()?.iter().filter_map(|s| s.pid).collect();
    ensure_eq!(pids.len(), 2, "driver pids before shutdown");
    let code = ctx.sup.stop()?;
    ensure_eq!(code, Some(0), "supervisor exit status after SIGTERM");
    for pid in pids {
        ensure!(!Path::new(&format!("/proc/{pid}")).exists(), "driver pid {pid} outlived the supervisor");
    }
    Ok(())
}

fn main() -> ExitCode {
    reinc_guest::init_logging();
    let tests = [
        test!(discovery_finds_gpio_and_system_timer_with_their_maps),
        test!(gpio_direction_and_level_round_trip_on_several_pins),
        test!(invalid_and_unlisted_pins_are_refused_without_a_register_change),
        test!(timer_compare_interrupts_arrive_with_growing_event_counts),
        test!(supervisor_runs_both_drivers_from_the_shipped_pi_config),
        test!(timer_driver_completes_waits_by_interrupt_and_refuses_the_other_channel),
        test!(gpio_driver_answers_bad_requests_with_errors_and_keeps_running),
        test!(drivers_run_under_seccomp_and_injected_crashes_keep_their_signal),
        test!(gpio_driver_killed_by_sigsegv_mid_blink_comes_back_with_its_pins_restored),
        test!(drvctl_status_and_persisted_checkpoints_match),
        test!(shutdown_stops_both_drivers),
    ];
    let sysfs = Sysfs::system();
    let find = |name: &str| {
        let sel = Selector::Name { name: name.into(), index: 0 };
        sysfs.find(&sel).map_err(|e| format!("UIO device {sel}: {e}"))
    };
    let (gpio, timer) = match (find(GPIO_NAME), find(TIMER_NAME)) {
        (Ok(g), Ok(t)) => (g, t),
        (Err(e), _) | (_, Err(e)) => return harness::fail_all("rpi3", &tests, &e),
    };
    let ctx = Ctx { gpio, timer, sup: Supervisor::default() };
    // A wait that never returns would otherwise hang the guest until the
    // xtask's boot timeout, with no test named.
    std::thread::spawn(|| {
        std::thread::sleep(SUITE_LIMIT);
        println!("{}", reinc_guest_protocol::Marker::Error(format!("rpi3-suite still running after {SUITE_LIMIT:?}")));
        std::process::exit(1);
    });
    let code = harness::run("rpi3", &ctx, &tests);
    drop(ctx); // kills a supervisor a failed test left running
    code
}
