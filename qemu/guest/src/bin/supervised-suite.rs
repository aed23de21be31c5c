//! The supervised suite: the reincarnation server inside the guest, driving
//! both real edu devices through `edu_driver` (and `storage_driver` on a file
//! in the guest's RAM-backed root), while the tests kill the drivers.
//!
//! This is the project's claim on a real kernel: a driver that owns a device
//! through UIO is killed mid-workload (SIGSEGV at each crash point, SIGKILL,
//! a hang, a death between an interrupt and its acknowledgement), comes back
//! with its mapping and interrupts working, and every client request still
//! gets the right answer exactly once.
//!
//! # Shape
//! - The configuration is `qemu/x86/supervisor.toml`, compiled in and written
//!   to `/etc/reinc/supervisor.toml`, so the xtask stages nothing new.
//! - `/bin/supervisor` runs as this program's child. Its stderr (and its
//!   drivers', which inherit it) is read line by line by a thread that echoes
//!   it to the console (`--verbose` shows the `[SUP] …` lines) and keeps it,
//!   so tests can check what the supervisor said.
//! - Clients use the `reinc-client` library (pipelined, 8 in flight), the
//!   control socket is driven through the same library, and `drvctl` is run
//!   as a program where the test is about `drvctl` itself.
//! - Exactly-once is checked three ways: at the client (every seq answered
//!   once, with the right n!), on the wire (a protocol-level client counts
//!   every reply frame, since the library drops duplicates by design), and at
//!   the committed state (edu's `Stats` counter of factorials moves by
//!   exactly the number of replies, whatever crashed).
//! - SIGSEGV is raised by the driver itself (fault injection at a chosen
//!   point): a `kill -SEGV` from outside is swallowed once by Rust std's
//!   stack-overflow handler (it resets to the default action and returns),
//!   which a genuine segfault is not.
//!
//! Tests share the supervisor, but each sets up the state it checks: a test
//! that checks counts (restarts, generations, log lines) causes them itself
//! and compares with what it read before, and the quarantine test
//! quarantines edu1 itself unless the storm test already did. One failure
//! therefore does not cascade into misleading ones.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use edu_core::{Completion, Edu, EduReply, EduRequest, EduState, IrqBits, PollBudget, RegisterBlock};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, recv, send, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use nix::unistd::Pid;
use reinc_client::control::{ControlRequest, DriverState, DriverStatus};
use reinc_client::{Client, client_socket};
use reinc_guest::harness::{self, Context, Failure, TestResult};
use reinc_guest::sup::{RUNTIME_DIR, STATE_WAIT, Supervisor, connect, control, running, status, statuses, wait_status};
use reinc_guest::{ensure, ensure_eq, test};
use reinc_proto::{
    CallError, ClientToSup, CrashKind, CrashPoint, FaultPlan, MAX_FRAME, SupToClient, decode, encode_vec,
};
use reinc_uio::{Mapping, Selector, Sysfs, UioDevice};
use std::os::fd::{AsRawFd, OwnedFd};
use storage_core::{BLOCK_SIZE, StorageReply, StorageRequest, Superblock};

/// The supervisor configuration (see the file for the figures and why).
const CONFIG: &str = include_str!("../../../x86/supervisor.toml");
const CONFIG_PATH: &str = "/etc/reinc/supervisor.toml";
/// Must match `runtime-dir` in the configuration.
/// Must match the storage driver's `--file`.
const DISK: &str = "/tmp/reinc-disk.img";
const EDU: [&str; 2] = ["edu0", "edu1"];
const STORAGE: &str = "storage_driver";
/// `max-restarts` of the edu drivers in the configuration.
const MAX_RESTARTS: u32 = 16;
/// Requests kept in flight by the workloads.
const WINDOW: usize = 8;
/// The whole suite's limit; past it, a stuck client wait is reported.
const SUITE_LIMIT: Duration = Duration::from_secs(150);

/// Shared by the tests.
struct Ctx {
    sup: Supervisor,
    /// The edu devices as discovery found them, in `edu0`, `edu1` order.
    devices: Vec<UioDevice>,
}

fn factorial(n: u32) -> u32 {
    (1..=n).product()
}

/// Waits for a running instance newer than generation `after`, then sends
/// it `sig`. Returns the generation killed.
fn kill_driver(driver: &str, after: u32, sig: Signal) -> Result<u32, Failure> {
    let s = wait_status(driver, "running", |s| running(s) && s.generation > after)?;
    let pid = s.pid.expect("running has a pid");
    kill(Pid::from_raw(pid as i32), sig).context(|| format!("kill -{} {driver} (pid {pid})", sig.as_str()))?;
    Ok(s.generation)
}

fn edu_body(req: &EduRequest) -> Vec<u8> {
    postcard::to_allocvec(req).expect("edu requests encode")
}

/// edu's committed counters, as the driver reports them.
fn edu_stats(client: &mut Client, driver: &str) -> Result<EduState, Failure> {
    let body = client.call(driver, &edu_body(&EduRequest::Stats)).context(|| format!("Stats on {driver}"))?;
    let body = body.map_err(|e| Failure::check(format!("Stats on {driver} failed: {e}")))?;
    match postcard::from_bytes::<EduReply>(&body) {
        Ok(EduReply::Stats(s)) => Ok(s),
        other => Err(Failure::check(format!("Stats on {driver} answered {other:?}"))),
    }
}

/// The kernel's interrupt count of a UIO device.
fn event_count(dev: &UioDevice) -> Result<u32, Failure> {
    let path = dev.sysfs_dir.join("event");
    let text = std::fs::read_to_string(&path).context(|| path.display().to_string())?;
    text.trim().parse().map_err(|_| Failure::check(format!("{}: not a count: {text:?}", path.display())))
}

/// `total` factorials by interrupt on `driver`, `WINDOW` in flight, n
/// cycling through 0..=12. `hook(answered)` runs after every reply (the
/// tests kill drivers from it). Checks every reply's value and that each seq
/// is answered exactly once; returns the number answered.
fn workload(
    client: &mut Client,
    driver: &str,
    total: u64,
    mut hook: impl FnMut(u64) -> TestResult,
) -> Result<u64, Failure> {
    let mut expected: HashMap<u64, u32> = HashMap::new();
    let (mut submitted, mut answered) = (0u64, 0u64);
    while answered < total {
        while submitted < total && client.in_flight() < WINDOW {
            let n = (submitted % 13) as u32;
            let body = edu_body(&EduRequest::Factorial { n, completion: Completion::Interrupt });
            let seq = client.submit(driver, &body).context(|| format!("submitting to {driver}"))?;
            ensure!(expected.insert(seq, n).is_none(), "seq {seq} used twice by the client library");
            submitted += 1;
        }
        let c = client.wait().context(|| format!("waiting for {driver}"))?;
        let Some(n) = expected.remove(&c.seq) else {
            return Err(Failure::check(format!(
                "{driver}: reply for seq {} that is not outstanding (duplicate)",
                c.seq
            )));
        };
        let body = c.result.map_err(|e| Failure::check(format!("{driver}: seq {} (n={n}) failed: {e}", c.seq)))?;
        let reply: EduReply = postcard::from_bytes(&body).context(|| format!("{driver}: reply to seq {}", c.seq))?;
        ensure_eq!(reply, EduReply::Factorial { n, value: factorial(n) }, "{driver}: seq {}", c.seq);
        answered += 1;
        hook(answered)?;
    }
    ensure!(expected.is_empty(), "{driver}: {} request(s) never answered", expected.len());
    Ok(answered)
}

/// How a test makes a driver instance die.
#[derive(Clone, Copy, Debug)]
enum Crash {
    /// A signal sent from outside (`kill`).
    Signal(Signal),
    /// A fault injected through the control socket: the instance dies by
    /// `kind` at `point` of its next request.
    Inject(CrashPoint, CrashKind),
}

impl Crash {
    /// What `drvctl status` shows as the last failure afterwards.
    fn reason(self) -> &'static str {
        match self {
            Crash::Signal(sig) => sig.as_str(),
            Crash::Inject(_, CrashKind::Segv) => "SIGSEGV",
            Crash::Inject(_, CrashKind::Kill) => "SIGKILL",
            Crash::Inject(_, CrashKind::Abrt) => "SIGABRT",
            Crash::Inject(_, CrashKind::Panic) => "exit status 101",
            Crash::Inject(_, CrashKind::Exit) => "exit status 1",
            Crash::Inject(_, CrashKind::Hang) => "hung",
        }
    }
}

/// Waits for a running instance newer than generation `after` and makes it
/// die as `crash` says. Returns the generation doomed.
fn crash_driver(driver: &str, after: u32, crash: Crash) -> Result<u32, Failure> {
    match crash {
        Crash::Signal(sig) => kill_driver(driver, after, sig),
        Crash::Inject(point, kind) => {
            let s = wait_status(driver, "running", |s| running(s) && s.generation > after)?;
            let plan = FaultPlan { point, on_request: 1, kind };
            control(ControlRequest::Inject { driver: driver.into(), plan })?;
            Ok(s.generation)
        }
    }
}

/// Runs a 240-request workload on edu0 that crashes its driver once per
/// entry of `crashes`, evenly spaced, then checks restarts, generations, the
/// failure reason, and exactly-once at the committed state.
fn crash_workload(crashes: &[Crash]) -> TestResult {
    const TOTAL: u64 = 240;
    let driver = EDU[0];
    let kills = crashes.len() as u64;
    let mut client = connect()?;
    let before = wait_status(driver, "running", running)?;
    let stats_before = edu_stats(&mut client, driver)?;
    let mut last_killed = before.generation - 1;
    let mut done_kills = 0;
    let answered = workload(&mut client, driver, TOTAL, |answered| {
        if done_kills < kills && answered == TOTAL * (done_kills + 1) / (kills + 1) {
            last_killed = crash_driver(driver, last_killed, crashes[done_kills as usize])?;
            done_kills += 1;
        }
        Ok(())
    })?;
    ensure_eq!(done_kills, kills, "crashes carried out");
    let after = wait_status(driver, "running", |s| running(s) && s.generation > last_killed)?;
    ensure_eq!(after.generation, before.generation + kills as u32, "{driver} generation after {kills} crash(es)");
    ensure_eq!(after.restarts, before.restarts + kills as u32, "{driver} restarts after {kills} crash(es)");
    let last = crashes.last().map(|c| c.reason());
    ensure_eq!(after.last_failure.as_deref(), last, "{driver} last failure");
    let stats_after = edu_stats(&mut client, driver)?;
    ensure_eq!(
        stats_after.factorials - stats_before.factorials,
        answered,
        "{driver}: committed factorial count moved by exactly the replies (no double execution committed)"
    );
    Ok(())
}

// ---------------------------------------------------------------- tests

/// All three drivers run, each edu driver logged the real BAR0 address that
/// sysfs reports for its device.
fn supervisor_launches_every_driver_and_edu_maps_its_bar(ctx: &Ctx) -> TestResult {
    for name in [EDU[0], EDU[1], STORAGE] {
        let s = status(name)?;
        ensure!(running(&s), "{name} is not running: {s:?}");
        ensure_eq!(s.generation, 1, "{name} generation at start");
        ensure!(ctx.sup.logged(&format!("[SUP] Launching {name} (pid=")), "no launch line for {name}");
    }
    for dev in &ctx.devices {
        let bar0 = dev.pci.as_ref().and_then(|p| p.bars.iter().find(|b| b.index == 0));
        let bar0 = bar0.ok_or_else(|| Failure::check(format!("{} has no BAR0 in sysfs", dev.describe())))?;
        let line = format!("[driver] mapped {:#x} size={:#x}", bar0.start, bar0.size);
        ensure!(ctx.sup.logged(&line), "no `{line}` for {} in the driver log", dev.describe());
    }
    Ok(())
}

/// Factorials through the supervisor on both devices are completed by the
/// device's interrupt: each device's kernel event count moves by exactly one
/// per request.
fn factorials_through_the_supervisor_complete_by_interrupt(ctx: &Ctx) -> TestResult {
    const TOTAL: u64 = 39;
    let mut client = connect()?;
    for (driver, dev) in EDU.iter().zip(&ctx.devices) {
        let before = event_count(dev)?;
        let answered = workload(&mut client, driver, TOTAL, |_| Ok(()))?;
        let after = event_count(dev)?;
        ensure_eq!(after.wrapping_sub(before), answered as u32, "{driver}: interrupts on {}", dev.describe());
    }
    Ok(())
}

/// A client speaking the wire protocol itself, so that every reply frame
/// the supervisor sends is seen (the library drops duplicates by design).
struct WireClient {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl WireClient {
    fn connect() -> Result<Self, Failure> {
        let path = client_socket(Path::new(RUNTIME_DIR));
        let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)
            .context(|| "client socket".into())?;
        // A reply that never comes fails the test instead of hanging the guest.
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(20, 0)).context(|| "SO_RCVTIMEO".into())?;
        let addr = UnixAddr::new(&path).context(|| path.display().to_string())?;
        nix::sys::socket::connect(fd.as_raw_fd(), &addr).context(|| format!("connecting to {}", path.display()))?;
        let mut c = Self { fd, buf: vec![0; MAX_FRAME] };
        c.send(&ClientToSup::Hello { resume: None })?;
        match c.recv()? {
            Some(Frame::Welcome) => Ok(c),
            other => Err(Failure::check(format!("Hello answered {other:?}"))),
        }
    }

    fn send(&self, msg: &ClientToSup<'_>) -> TestResult {
        let frame = encode_vec(msg).context(|| "encoding a client frame".into())?;
        send(self.fd.as_raw_fd(), &frame, MsgFlags::MSG_NOSIGNAL).context(|| "sending a client frame".into())?;
        Ok(())
    }

    /// The next frame; `None` if nothing is there and `flags` asked not to wait.
    fn recv_with(&mut self, flags: MsgFlags) -> Result<Option<Frame>, Failure> {
        let n = match recv(self.fd.as_raw_fd(), &mut self.buf, flags) {
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN) if flags.contains(MsgFlags::MSG_DONTWAIT) => return Ok(None),
            Err(e) => return Err(Failure::check(format!("receiving from the supervisor: {e}"))),
        };
        ensure!(n > 0, "the supervisor closed the client connection");
        Ok(Some(match decode::<SupToClient<'_>>(&self.buf[..n]).context(|| "decoding a supervisor frame".into())? {
            SupToClient::Welcome { .. } => Frame::Welcome,
            SupToClient::Reply { seq, body } => Frame::Reply(seq, Ok(body.to_vec())),
            SupToClient::Failed { seq, error } => Frame::Reply(seq, Err(error)),
            SupToClient::Rejected { error } => return Err(Failure::check(format!("frame rejected: {error}"))),
            SupToClient::PoolAttached { .. } | SupToClient::PoolRefused { .. } => {
                return Err(Failure::check(String::from("a pool answer, but this suite attaches no pool")));
            }
        }))
    }

    fn recv(&mut self) -> Result<Option<Frame>, Failure> {
        self.recv_with(MsgFlags::empty())
    }
}

#[derive(Debug)]
enum Frame {
    Welcome,
    Reply(u64, Result<Vec<u8>, CallError>),
}

/// Every reply frame on the wire, while edu0 is SIGKILLed twice under a
/// pipelined load: each seq is answered by exactly one frame with the right
/// n!, and nothing arrives after the last one.
fn every_reply_frame_arrives_exactly_once_across_crashes(_: &Ctx) -> TestResult {
    const TOTAL: u64 = 160;
    let driver = EDU[0];
    let mut wire = WireClient::connect()?;
    let mut last_killed = wait_status(driver, "running", running)?.generation - 1;
    let mut outstanding: HashMap<u64, u32> = HashMap::new();
    let mut answered: HashMap<u64, u32> = HashMap::new();
    let (mut next, mut kills) = (1u64, 0);
    while (answered.len() as u64) < TOTAL {
        while next <= TOTAL && outstanding.len() < WINDOW {
            let n = (next % 13) as u32;
            let body = edu_body(&EduRequest::Factorial { n, completion: Completion::Interrupt });
            let acked_below = outstanding.keys().min().copied().unwrap_or(next);
            wire.send(&ClientToSup::Call { seq: next, driver, body: &body, acked_below })?;
            outstanding.insert(next, n);
            next += 1;
        }
        let Some(Frame::Reply(seq, result)) = wire.recv()? else {
            return Err(Failure::check("unexpected Welcome in the middle of a session"));
        };
        ensure!(!answered.contains_key(&seq), "seq {seq} answered twice on the wire");
        let n = outstanding.remove(&seq).ok_or_else(|| Failure::check(format!("reply for unknown seq {seq}")))?;
        let body = result.map_err(|e| Failure::check(format!("seq {seq} failed: {e}")))?;
        let reply: EduReply = postcard::from_bytes(&body).context(|| format!("reply to seq {seq}"))?;
        ensure_eq!(reply, EduReply::Factorial { n, value: factorial(n) }, "seq {seq}");
        answered.insert(seq, n);
        if kills < 2 && answered.len() as u64 == TOTAL * (kills + 1) / 3 {
            last_killed = kill_driver(driver, last_killed, Signal::SIGKILL)?;
            kills += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    if let Some(extra) = wire.recv_with(MsgFlags::MSG_DONTWAIT)? {
        return Err(Failure::check(format!("a frame after every seq was answered: {extra:?}")));
    }
    wait_status(driver, "restarted", |s| running(s) && s.generation > last_killed)?;
    Ok(())
}

/// The driver dies by SIGSEGV at each crash point in turn (before its
/// device effect, after it but before the reply, after the reply) during a
/// pipelined workload. The SIGSEGV is raised by the driver itself through
/// fault injection: a `kill -SEGV` from outside is swallowed once by Rust
/// std's stack-overflow handler, while a real segfault is not.
fn sigsegv_at_each_crash_point_loses_and_duplicates_nothing(_: &Ctx) -> TestResult {
    let segv = |p| Crash::Inject(p, CrashKind::Segv);
    crash_workload(&[segv(CrashPoint::BeforeEffect), segv(CrashPoint::AfterEffect), segv(CrashPoint::AfterReply)])
}

/// SIGKILL from outside (no chance to clean up anything), twice, at
/// whatever the driver was doing.
fn sigkill_mid_workload_loses_and_duplicates_nothing(_: &Ctx) -> TestResult {
    crash_workload(&[Crash::Signal(Signal::SIGKILL), Crash::Signal(Signal::SIGKILL)])
}

/// A driver stopped with SIGSTOP answers no heartbeat: the supervisor
/// declares it hung, kills it, restarts it and replays its requests.
fn hung_driver_is_killed_by_heartbeat_and_replayed(ctx: &Ctx) -> TestResult {
    let driver = EDU[0];
    let mut client = connect()?;
    let before = status(driver)?;
    let stats_before = edu_stats(&mut client, driver)?;
    let mut stopped = false;
    let answered = workload(&mut client, driver, 80, |answered| {
        if !stopped && answered == 30 {
            kill_driver(driver, before.generation - 1, Signal::SIGSTOP)?;
            stopped = true;
        }
        Ok(())
    })?;
    let after = wait_status(driver, "running", running)?;
    ensure_eq!(after.generation, before.generation + 1, "{driver} generation after the hang");
    let reason = after.last_failure.clone().unwrap_or_default();
    ensure!(reason.contains("hung"), "{driver} last failure should say hung, got {reason:?}");
    ensure!(ctx.sup.logged(&format!("[SUP] {driver} is not answering heartbeats")), "no heartbeat line in the log");
    let stats_after = edu_stats(&mut client, driver)?;
    ensure_eq!(stats_after.factorials - stats_before.factorials, answered, "{driver}: committed factorials");
    Ok(())
}

/// After every restart the new instance's interrupts work: the driver is
/// SIGKILLed in the middle of a workload (possibly with a computation running
/// or an interrupt pending and INTx masked), and on the new instance the
/// event count moves by exactly one per request again.
fn interrupts_keep_arriving_after_every_restart(ctx: &Ctx) -> TestResult {
    let driver = EDU[0];
    let dev = &ctx.devices[0];
    let mut client = connect()?;
    let mut generation = wait_status(driver, "running", running)?.generation;
    let mut counts = vec![event_count(dev)?];
    for round in 0..2 {
        workload(&mut client, driver, 26, |answered| {
            if answered == 9 {
                kill_driver(driver, generation - 1, Signal::SIGKILL)?;
            }
            Ok(())
        })?;
        let s = wait_status(driver, "restarted", |s| running(s) && s.generation > generation)?;
        generation = s.generation;
        let before = event_count(dev)?;
        let answered = workload(&mut client, driver, 13, |_| Ok(()))?;
        let after = event_count(dev)?;
        ensure_eq!(
            after.wrapping_sub(before),
            answered as u32,
            "interrupts after restart {round} ({driver} gen{generation})"
        );
        counts.push(after);
    }
    tracing::info!("[supervised-suite] {} event counts across restarts: {counts:?}", dev.describe());
    Ok(())
}

/// Whether INTx is masked (bit 10 of the PCI command register) on `dev`.
fn intx_masked(dev: &UioDevice) -> Result<bool, Failure> {
    use std::os::unix::fs::FileExt;
    let pci = dev.pci.as_ref().ok_or_else(|| Failure::check(format!("{} is not PCI", dev.describe())))?;
    let config = std::fs::File::open(&pci.config).context(|| pci.config.display().to_string())?;
    let mut cmd = [0u8; 2];
    config.read_exact_at(&mut cmd, 4).context(|| pci.config.display().to_string())?;
    Ok(u16::from_le_bytes(cmd) & (1 << 10) != 0)
}

/// Makes edu interrupt the way an in-flight request would, with a software
/// bit on top: a factorial with IRQ_ON_DONE (waited out), then a raise of
/// 0x100. Checks the kernel took the interrupt and masked INTx.
fn leave_interrupt_pending(dev: &UioDevice) -> TestResult {
    let count = event_count(dev)?;
    let bar0 = Mapping::pci_bar(dev, 0).context(|| format!("mapping BAR0 of {}", dev.describe()))?;
    let regs = bar0.block::<RegisterBlock>(0).context(|| bar0.describe().to_owned())?;
    let mut edu = Edu::new(regs);
    edu.start_factorial_irq(5, PollBudget::default()).context(|| "factorial with IRQ_ON_DONE".into())?;
    edu.wait_idle(PollBudget::default()).context(|| "waiting for the factorial".into())?;
    edu.raise(IrqBits::from_bits_retain(0x100));
    let end = Instant::now() + Duration::from_secs(5);
    while event_count(dev)? == count {
        ensure!(Instant::now() < end, "the device never interrupted");
        std::thread::sleep(Duration::from_millis(1));
    }
    ensure_eq!(edu.irq_status().bits(), 0x101, "interrupt bits pending before the kill");
    ensure!(intx_masked(dev)?, "the kernel did not mask INTx after the interrupt");
    Ok(())
}

/// The state a driver killed between its device's interrupt and its
/// acknowledgement leaves behind: edu0's driver is stopped, the device is
/// made to interrupt on its behalf (a factorial with IRQ_ON_DONE plus a
/// software raise), the kernel masks INTx, and the driver is SIGKILLed. The
/// new instance must acknowledge the leftovers and unmask INTx, or its first
/// request would never see an interrupt.
fn restart_recovers_an_interrupt_left_pending_with_intx_masked(ctx: &Ctx) -> TestResult {
    let driver = EDU[0];
    let dev = &ctx.devices[0];
    let s = wait_status(driver, "running", running)?;
    kill_driver(driver, s.generation - 1, Signal::SIGSTOP)?;
    // Whatever happens below, the stopped instance is killed and replaced
    // before this test returns, so a failure here does not leak a restart
    // into the next tests.
    let leftovers = leave_interrupt_pending(dev);
    let now = status(driver)?;
    if now.generation == s.generation
        && let Some(pid) = now.pid
    {
        // (The supervisor may already have declared the stopped driver hung.)
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    let restarted = wait_status(driver, "restarted", |t| running(t) && t.generation > s.generation);
    leftovers?;
    let after = restarted?;
    ensure!(
        ctx.sup.logged(&format!(
            "[driver] {driver} gen{}: recovered {}: acknowledged pending interrupt bits 0x101",
            after.generation,
            dev.describe()
        )),
        "the new instance did not report acknowledging the leftover interrupt"
    );
    ensure!(!intx_masked(dev)?, "INTx still masked after the restart");
    let before = event_count(dev)?;
    let mut client = connect()?;
    let answered = workload(&mut client, driver, 13, |_| Ok(()))?;
    ensure_eq!(event_count(dev)?.wrapping_sub(before), answered as u32, "interrupts on the recovered device");
    Ok(())
}

/// The supervisor's console lines read like the seed's, for crashes this
/// test causes itself (one SIGSEGV, one SIGKILL): each line is logged once
/// more than before.
fn supervisor_logs_crash_restart_and_replay(ctx: &Ctx) -> TestResult {
    let lines = [
        "[SUP] edu0 crashed (SIGSEGV)",
        "[SUP] edu0 crashed (SIGKILL)",
        "[SUP] restarting edu0",
        "[SUP] replaying ",
        "[SUP] Launching edu0 (pid=",
    ];
    let before: Vec<usize> = lines.iter().map(|l| ctx.sup.count_logged(l)).collect();
    crash_workload(&[Crash::Inject(CrashPoint::AfterEffect, CrashKind::Segv), Crash::Signal(Signal::SIGKILL)])?;
    for (line, before) in lines.iter().zip(before) {
        // The echo thread may be a line behind the status the workload saw.
        let end = Instant::now() + Duration::from_secs(2);
        while ctx.sup.count_logged(line) <= before && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        ensure!(ctx.sup.count_logged(line) > before, "the supervisor did not log `{line}` for this test's crashes");
    }
    Ok(())
}

/// Every driver runs under its seccomp filter (read from its own
/// `/proc/<pid>/status`, not the supervisor's word), and a SIGSEGV and a
/// SIGABRT injected into the storage driver (raised through musl's
/// `raise()`, i.e. `tkill`) end it by that signal, never by SIGSYS. (Not
/// edu0: the other tests crash it often enough already.)
fn drivers_run_under_seccomp_and_injected_crashes_keep_their_signal(ctx: &Ctx) -> TestResult {
    for name in [EDU[0], EDU[1], STORAGE] {
        let s = wait_status(name, "running", running)?;
        let shown = reinc_guest::sandbox::confined(s.pid.expect("running has a pid"))?;
        tracing::info!("[supervised-suite] {name}: {shown}");
    }
    let mut client = connect()?;
    let read = postcard::to_allocvec(&StorageRequest::Read { lba: 0, blocks: 1 }).expect("encodes");
    reinc_guest::sandbox::crashes_keep_their_signal(&ctx.sup, STORAGE, &[CrashKind::Segv, CrashKind::Abrt], || {
        match client.call(STORAGE, &read).context(|| "Read of block 0".into())? {
            Ok(_) => Ok(()),
            Err(e) => Err(Failure::check(format!("Read of block 0 failed: {e}"))),
        }
    })
}

/// `drvctl status` (JSON and table) counts a restart this test causes
/// itself: edu0 one more restart and generation, with its failure named,
/// and every other driver unchanged.
fn drvctl_status_shows_restarts_and_generations(_: &Ctx) -> TestResult {
    let drvctl = |args: &[&str]| -> Result<String, Failure> {
        let out = Command::new("/bin/drvctl")
            .arg("--runtime-dir")
            .arg(RUNTIME_DIR)
            .args(args)
            .output()
            .context(|| format!("running drvctl {args:?}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(out.status.success(), "drvctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        Ok(text)
    };
    let rows = || -> Result<Vec<DriverStatus>, Failure> {
        serde_json::from_str(&drvctl(&["status", "--json"])?).context(|| "drvctl status --json".into())
    };
    let row = |rows: &[DriverStatus], name: &str| -> Result<(u32, u32), Failure> {
        rows.iter()
            .find(|r| r.name == name)
            .map(|r| (r.restarts, r.generation))
            .ok_or_else(|| Failure::check(format!("{name} missing from drvctl status")))
    };
    let before_status = wait_status(EDU[0], "running", running)?;
    let before = rows()?;
    let killed = kill_driver(EDU[0], before_status.generation - 1, Signal::SIGKILL)?;
    wait_status(EDU[0], "restarted", |s| running(s) && s.generation > killed)?;
    let after = rows()?;
    let (restarts, generation) = row(&before, EDU[0])?;
    ensure_eq!(row(&after, EDU[0])?, (restarts + 1, generation + 1), "edu0 (restarts, generation) after one kill");
    let edu0 = after.iter().find(|r| r.name == EDU[0]).expect("found above");
    ensure_eq!(edu0.last_failure.as_deref(), Some("SIGKILL"), "edu0 last failure in drvctl status");
    for name in [EDU[1], STORAGE] {
        ensure_eq!(row(&after, name)?, row(&before, name)?, "{name} (restarts, generation), untouched");
    }
    let table = drvctl(&["status"])?;
    tracing::info!("[supervised-suite] drvctl status:\n{table}");
    for name in [EDU[0], STORAGE] {
        ensure!(
            table.lines().any(|l| l.contains(name) && l.contains("running")),
            "table has no running {name}:\n{table}"
        );
    }
    ensure!(table.lines().any(|l| l.contains(EDU[1])), "table has no {}:\n{table}", EDU[1]);
    Ok(())
}

/// storage_driver on a RAM file: 32 pipelined single-block writes, the
/// driver dying by SIGSEGV after one write reached the file and before its
/// reply; all read back intact, and the superblock counts each write once.
fn storage_driver_keeps_its_data_across_a_crash(_: &Ctx) -> TestResult {
    const WRITES: u64 = 32;
    let mut client = connect()?;
    let pattern = |lba: u64| -> Vec<u8> { (0..BLOCK_SIZE).map(|i| (lba as usize * 31 + i) as u8).collect() };
    let before = status(STORAGE)?;
    let superblock = |what: &str| -> Result<Superblock, Failure> {
        let disk = std::fs::read(DISK).context(|| DISK.into())?;
        Superblock::decode(&disk[..BLOCK_SIZE.min(disk.len())])
            .context(|| format!("{DISK} superblock {what}"))?
            .ok_or_else(|| Failure::check(format!("{DISK} has no superblock {what}")))
    };
    let applied_before = superblock("before")?.applied_count;
    let mut seqs = HashMap::new();
    let (mut submitted, mut killed) = (0u64, false);
    while submitted < WRITES || client.in_flight() > 0 {
        while submitted < WRITES && client.in_flight() < WINDOW {
            let data = pattern(submitted);
            let body = postcard::to_allocvec(&StorageRequest::Write { lba: submitted, data: &data }).expect("encodes");
            seqs.insert(client.submit(STORAGE, &body).context(|| "submit write".into())?, submitted);
            submitted += 1;
        }
        let c = client.wait().context(|| "waiting for storage".into())?;
        let lba = seqs.remove(&c.seq).ok_or_else(|| Failure::check(format!("duplicate reply for seq {}", c.seq)))?;
        let body = c.result.map_err(|e| Failure::check(format!("write of block {lba} failed: {e}")))?;
        let reply: StorageReply<'_> = postcard::from_bytes(&body).context(|| "storage reply".into())?;
        ensure_eq!(reply, StorageReply::Written { lba, blocks: 1 }, "write of block {lba}");
        if !killed && submitted >= WRITES / 2 {
            crash_driver(STORAGE, before.generation - 1, Crash::Inject(CrashPoint::AfterEffect, CrashKind::Segv))?;
            killed = true;
        }
    }
    for lba in 0..WRITES {
        let body = postcard::to_allocvec(&StorageRequest::Read { lba, blocks: 1 }).expect("encodes");
        let body = client.call(STORAGE, &body).context(|| "read".into())?;
        let body = body.map_err(|e| Failure::check(format!("read of block {lba} failed: {e}")))?;
        let reply: StorageReply<'_> = postcard::from_bytes(&body).context(|| "storage reply".into())?;
        ensure!(reply == StorageReply::Data(&pattern(lba)), "block {lba} reads back wrong");
    }
    ensure_eq!(superblock("after")?.applied_count - applied_before, WRITES, "writes applied (each exactly once)");
    let after = status(STORAGE)?;
    ensure_eq!(after.generation, before.generation + 1, "storage_driver generation after the crash");
    ensure_eq!(after.last_failure.as_deref(), Some("SIGSEGV"), "storage_driver last failure");
    Ok(())
}

/// Kills edu1 as soon as each instance is up until the supervisor
/// quarantines it, calling `between` after every step. Returns the kills.
fn quarantine_edu1(
    mut between: impl FnMut(&mut dyn FnMut() -> Result<bool, Failure>) -> TestResult,
) -> Result<u32, Failure> {
    let mut last_killed = 0;
    let mut kills = 0u32;
    // One storm step: kill edu1's newest instance if it is up.
    let mut storm = || -> Result<bool, Failure> {
        let s = status(EDU[1])?;
        if s.state == DriverState::Quarantined {
            return Ok(true);
        }
        if running(&s) && s.generation > last_killed {
            kill(Pid::from_raw(s.pid.expect("running") as i32), Signal::SIGKILL).context(|| "kill edu1".into())?;
            last_killed = s.generation;
            kills += 1;
        }
        Ok(false)
    };
    between(&mut storm)?;
    let end = Instant::now() + STATE_WAIT;
    while !storm()? {
        ensure!(Instant::now() < end, "edu1 not quarantined after {kills} kills");
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(kills)
}

/// edu1 is killed as soon as each instance is up until the supervisor
/// quarantines it; meanwhile edu0 serves a workload without a single restart.
fn restart_storm_quarantines_only_that_driver(ctx: &Ctx) -> TestResult {
    let mut client = connect()?;
    if status(EDU[1])?.state == DriverState::Quarantined {
        revive(EDU[1])?;
    }
    let edu0_before = status(EDU[0])?;
    let kills = quarantine_edu1(|storm| {
        let mut quarantined = false;
        workload(&mut client, EDU[0], 200, |_| {
            quarantined = quarantined || storm()?;
            Ok(())
        })
        .map(|_| ())
    })?;
    ensure_eq!(kills, MAX_RESTARTS + 1, "kills until quarantine (more than max-restarts within the window)");
    ensure!(ctx.sup.logged("[SUP] edu1 quarantined"), "no quarantine line in the log");
    let edu0 = status(EDU[0])?;
    ensure!(running(&edu0), "edu0 stopped serving: {edu0:?}");
    ensure_eq!(edu0.generation, edu0_before.generation, "edu0 was not restarted by edu1's storm");
    ensure!(running(&status(STORAGE)?), "storage_driver stopped serving");
    workload(&mut client, EDU[0], 26, |_| Ok(()))?;
    Ok(())
}

/// `drvctl restart NAME`, then wait until it runs.
fn revive(driver: &str) -> TestResult {
    let out = Command::new("/bin/drvctl")
        .args(["--runtime-dir", RUNTIME_DIR, "restart", driver])
        .output()
        .context(|| format!("drvctl restart {driver}"))?;
    ensure!(out.status.success(), "drvctl restart {driver}: {}", String::from_utf8_lossy(&out.stderr));
    wait_status(driver, "running again", running)?;
    Ok(())
}

/// A call to a quarantined driver fails at once with `DriverFailed`
/// (never silently lost); `drvctl restart` revives it and it computes again.
/// The test quarantines edu1 itself unless the storm test left it so.
fn quarantined_driver_fails_calls_clearly_and_restart_revives_it(_: &Ctx) -> TestResult {
    let mut client = connect()?;
    if status(EDU[1])?.state != DriverState::Quarantined {
        quarantine_edu1(|_| Ok(()))?;
    }
    let body = edu_body(&EduRequest::Factorial { n: 6, completion: Completion::Interrupt });
    let r = client.call(EDU[1], &body).context(|| "call to quarantined edu1".into())?;
    ensure_eq!(r, Err(CallError::DriverFailed), "call to quarantined edu1");
    revive(EDU[1])?;
    workload(&mut client, EDU[1], 26, |_| Ok(()))?;
    Ok(())
}

/// SIGTERM stops the supervisor and every driver; no driver process is left.
fn shutdown_stops_every_driver_and_leaves_no_orphans(ctx: &Ctx) -> TestResult {
    let pids: Vec<u32> = statuses()?.iter().filter_map(|s| s.pid).collect();
    let code = ctx.sup.stop()?;
    ensure_eq!(code, Some(0), "supervisor exit status after SIGTERM");
    for pid in pids {
        ensure!(!Path::new(&format!("/proc/{pid}")).exists(), "driver pid {pid} outlived the supervisor");
    }
    Ok(())
}

// ---------------------------------------------------------------- setup

/// Writes the config, starts the supervisor with its stderr captured and
/// echoed, and waits until every driver runs.
fn start(devices: Vec<UioDevice>) -> Result<Ctx, String> {
    std::fs::write(CONFIG_PATH, CONFIG).map_err(|e| format!("writing {CONFIG_PATH}: {e}"))?;
    let sup = Supervisor::default();
    sup.start(CONFIG_PATH).map_err(|f| f.to_string())?;
    let ctx = Ctx { sup, devices };
    let end = Instant::now() + STATE_WAIT;
    loop {
        match statuses() {
            Ok(rows) if rows.len() == 3 && rows.iter().all(running) => return Ok(ctx),
            Ok(_) | Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            Ok(rows) => return Err(format!("drivers not all running after {STATE_WAIT:?}: {rows:?}")),
            Err(e) => return Err(format!("supervisor control socket: {e}")),
        }
    }
}

fn main() -> ExitCode {
    reinc_guest::init_logging();
    let tests = [
        test!(supervisor_launches_every_driver_and_edu_maps_its_bar),
        test!(factorials_through_the_supervisor_complete_by_interrupt),
        test!(sigsegv_at_each_crash_point_loses_and_duplicates_nothing),
        test!(sigkill_mid_workload_loses_and_duplicates_nothing),
        test!(every_reply_frame_arrives_exactly_once_across_crashes),
        test!(hung_driver_is_killed_by_heartbeat_and_replayed),
        test!(interrupts_keep_arriving_after_every_restart),
        test!(restart_recovers_an_interrupt_left_pending_with_intx_masked),
        test!(supervisor_logs_crash_restart_and_replay),
        test!(drivers_run_under_seccomp_and_injected_crashes_keep_their_signal),
        test!(drvctl_status_shows_restarts_and_generations),
        test!(storage_driver_keeps_its_data_across_a_crash),
        test!(restart_storm_quarantines_only_that_driver),
        test!(quarantined_driver_fails_calls_clearly_and_restart_revives_it),
        test!(shutdown_stops_every_driver_and_leaves_no_orphans),
    ];
    let sysfs = Sysfs::system();
    let mut devices = Vec::new();
    for index in 0..EDU.len() {
        let sel = Selector::Pci { vendor: 0x1234, device: 0x11e8, index };
        match sysfs.find(&sel) {
            Ok(dev) => devices.push(dev),
            Err(e) => return harness::fail_all("supervised", &tests, &format!("edu device {sel}: {e}")),
        }
    }
    let ctx = match start(devices) {
        Ok(c) => c,
        Err(e) => return harness::fail_all("supervised", &tests, &e),
    };
    // A client wait that never returns would otherwise hang the guest until
    // the xtask's boot timeout, with no test named.
    std::thread::spawn(|| {
        std::thread::sleep(SUITE_LIMIT);
        println!(
            "{}",
            reinc_guest_protocol::Marker::Error(format!("supervised-suite still running after {SUITE_LIMIT:?}"))
        );
        std::process::exit(1);
    });
    let code = harness::run("supervised", &ctx, &tests);
    if ctx.sup.is_running() {
        let _ = ctx.sup.stop();
    }
    code
}
