//! The edu suite: QEMU's edu PCI devices through real kernel UIO.
//!
//! Runs inside the x86 guest after `reinc-init` has loaded `uio` and
//! `uio_pci_generic` and bound both edu devices (1234:11e8). Every device
//! access goes through the project's own layers, `reinc-uio` (discovery,
//! mappings, interrupts) and `edu_core` (typed registers, device operations,
//! the replay-safe handler), so these tests prove those layers on a real
//! kernel rather than re-implementing them.
//!
//! Each test opens what it needs and leaves the device clean (interrupts
//! acknowledged, INTx unmasked), so the tests are independent of order.
#![forbid(unsafe_code)]

use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use edu_core::{
    BAR0_SIZE, Completion, Edu, EduHandler, EduReply, EduRequest, EduState, IrqBits, PollBudget, RegisterBlock, Step,
};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use reinc_guest::harness::{self, Context, Failure, TestResult};
use reinc_guest::{ensure, ensure_eq, test};
use reinc_uio::{Irq, IrqWait, Mapping, Selector, Sysfs, UioDevice, UioError};

/// edu's PCI identity.
const VENDOR: u16 = 0x1234;
const DEVICE: u16 = 0x11e8;
/// What edu's id register reads in QEMU 7.2 (version 1.0).
const EDU_ID: u32 = 0x0100_00ed;
/// How many edu devices the x86 profile gives the guest.
const DEVICES: usize = 2;
/// Interrupt waits that should succeed: generous, TCG on a busy host is slow.
const IRQ_WAIT: Duration = Duration::from_secs(5);
/// A wait that should time out.
const QUIET_WAIT: Duration = Duration::from_millis(100);
/// INTx Disable in the PCI command register (offset 4 of config space).
const INTX_DISABLE: u16 = 1 << 10;

/// The suite's shared context: the edu devices as discovery found them.
struct Ctx {
    devices: Vec<UioDevice>,
}

/// One opened edu device: its discovery record, BAR0 and interrupt.
struct Opened {
    dev: UioDevice,
    bar0: Mapping,
    irq: Irq,
}

impl Opened {
    fn open(dev: &UioDevice) -> Result<Opened, Failure> {
        let name = dev.describe();
        let bar0 = Mapping::pci_bar(dev, 0).context(|| format!("mapping BAR0 of {name}"))?;
        let irq = Irq::open(dev).context(|| format!("opening interrupts of {name}"))?;
        let opened = Opened { dev: dev.clone(), bar0, irq };
        opened.clean()?;
        Ok(opened)
    }

    /// The edu_core device over the typed block at the start of BAR0.
    fn edu(&self) -> Result<Edu<&RegisterBlock>, Failure> {
        let regs =
            self.bar0.block::<RegisterBlock>(0).context(|| format!("typed block on {}", self.bar0.describe()))?;
        Ok(Edu::new(regs))
    }

    /// Known state: no computation, no pending interrupt bit, INTx unmasked.
    fn clean(&self) -> TestResult {
        self.edu()?.recover(PollBudget::default()).context(|| format!("recovering {}", self.dev.describe()))?;
        self.irq.reenable().context(|| format!("re-enabling interrupts of {}", self.dev.describe()))
    }

    /// Whether the kernel's handler left INTx masked (bit 10 of the command register).
    fn intx_masked(&self) -> Result<bool, Failure> {
        let pci = self.dev.pci.as_ref().ok_or_else(|| Failure::check("edu device without PCI identity"))?;
        let config = std::fs::File::open(&pci.config).context(|| pci.config.display().to_string())?;
        let mut cmd = [0u8; 2];
        config.read_exact_at(&mut cmd, 4).context(|| pci.config.display().to_string())?;
        Ok(u16::from_le_bytes(cmd) & INTX_DISABLE != 0)
    }

    /// Waits for one interrupt and checks it is exactly the next one.
    fn expect_one_interrupt(&mut self, what: &str) -> Result<u32, Failure> {
        let before = self.irq.last_count();
        let started = Instant::now();
        let woke = self.irq.wait(Some(IRQ_WAIT)).context(|| format!("waiting on {}", self.irq.path().display()))?;
        match woke {
            IrqWait::Fired { count, missed } => {
                ensure_eq!(count, before.wrapping_add(1), "event count after {what} on {}", self.dev.describe());
                ensure_eq!(missed, 0, "missed interrupts after {what}");
                Ok(count)
            }
            IrqWait::TimedOut => Err(Failure::check(format!(
                "no interrupt within {:?} after {what} on {} (waited {:?})",
                IRQ_WAIT,
                self.dev.describe(),
                started.elapsed()
            ))),
        }
    }
}

impl Ctx {
    fn open(&self, index: usize) -> Result<Opened, Failure> {
        let dev = self.devices.get(index).ok_or_else(|| Failure::check(format!("no edu device #{index}")))?;
        Opened::open(dev)
    }
}

/// n! computed on the host side of the test.
fn factorial(n: u32) -> u32 {
    (1..=n).product()
}

// ---------------------------------------------------------------- discovery

/// Both devices are found, bound to uio_pci_generic, with PCI id 1234:11e8,
/// a 1 MiB memory BAR0 and a UIO map describing that BAR.
fn discovery_finds_both_edu_devices_with_maps_and_ids(ctx: &Ctx) -> TestResult {
    let all = Sysfs::system().devices().context(|| "listing /sys/class/uio".into())?;
    ensure_eq!(all.len(), DEVICES, "UIO devices in /sys/class/uio");
    ensure_eq!(ctx.devices.len(), DEVICES, "edu devices selected by PCI id");
    for dev in &all {
        let d = dev.describe();
        ensure_eq!(dev.name.as_str(), "uio_pci_generic", "UIO name of {d}");
        ensure!(dev.dev_node.exists(), "{d}: {} does not exist", dev.dev_node.display());
        let pci = dev.pci.as_ref().ok_or_else(|| Failure::check(format!("{d}: no PCI identity")))?;
        ensure_eq!((pci.vendor, pci.device), (VENDOR, DEVICE), "PCI id of {d}");
        ensure_eq!(pci.driver.as_deref(), Some("uio_pci_generic"), "PCI driver of {d}");
        let bar0 = pci.bars.iter().find(|b| b.index == 0).ok_or_else(|| Failure::check(format!("{d}: no BAR0")))?;
        ensure!(bar0.is_memory(), "{d}: BAR0 is not a memory BAR (flags {:#x})", bar0.flags);
        ensure_eq!(bar0.size, BAR0_SIZE as u64, "BAR0 size of {d}");
        ensure!(
            dev.maps.iter().any(|m| m.addr == bar0.start && m.size == bar0.size),
            "{d}: no UIO map covers BAR0 at {:#x} (maps: {:?})",
            bar0.start,
            dev.maps
        );
    }
    let a = ctx.devices[0].pci.as_ref().map(|p| p.address);
    let b = ctx.devices[1].pci.as_ref().map(|p| p.address);
    ensure!(a != b, "both selections resolved to the same PCI function {a:?}");
    Ok(())
}

/// `pci:1234:11e8@N` picks the N-th device in PCI-address order and a
/// selector past the last one is a clear error, not a panic.
fn selectors_pick_each_device_and_refuse_a_third(ctx: &Ctx) -> TestResult {
    let sysfs = Sysfs::system();
    for (i, expected) in ctx.devices.iter().enumerate() {
        let sel: Selector = format!("pci:1234:11e8@{i}").parse().context(|| "parsing selector".into())?;
        let found = sysfs.find(&sel).context(|| format!("finding {sel}"))?;
        ensure_eq!(found.number, expected.number, "uio number of {sel}");
    }
    let third: Selector = "pci:1234:11e8@2".parse().context(|| "parsing selector".into())?;
    match sysfs.find(&third) {
        Err(UioError::NotFound { .. }) => Ok(()),
        other => Err(Failure::check(format!("selector {third} gave {other:?}, expected NotFound"))),
    }
}

// ---------------------------------------------------------------- registers

/// The id register of each device reads 0x010000ed through the typed block.
fn identify_reads_edu_id_on_each_device(ctx: &Ctx) -> TestResult {
    for i in 0..DEVICES {
        let d = ctx.open(i)?;
        let id = d.edu()?.identify().context(|| format!("identify {}", d.dev.describe()))?;
        ensure_eq!(id.raw, EDU_ID, "id register of {}", d.dev.describe());
        ensure_eq!((id.major, id.minor), (1, 0), "edu version of {}", d.dev.describe());
    }
    Ok(())
}

/// Liveness reads back the inverse of every probe on each device.
fn liveness_inverts_every_probe_on_each_device(ctx: &Ctx) -> TestResult {
    for i in 0..DEVICES {
        let d = ctx.open(i)?;
        let mut edu = d.edu()?;
        for probe in [0, 1, 0xdead_beef, 0xffff_ffff, 0x5a5a_0000 | i as u32] {
            edu.check_liveness(probe).context(|| format!("liveness {probe:#x} on {}", d.dev.describe()))?;
        }
    }
    Ok(())
}

/// factorial(0..=12) by polling the status register matches n! on each device.
fn factorial_by_polling_matches_for_every_n(ctx: &Ctx) -> TestResult {
    for i in 0..DEVICES {
        let d = ctx.open(i)?;
        let mut edu = d.edu()?;
        for n in 0..=edu_core::MAX_FACTORIAL_N {
            let got = edu.factorial_polling(n, PollBudget::default()).context(|| format!("factorial({n})"))?;
            ensure_eq!(got, factorial(n), "factorial({n}) by polling on {}", d.dev.describe());
        }
        match edu.factorial_polling(13, PollBudget::default()) {
            Err(edu_core::EduError::FactorialTooLarge { n: 13 }) => {}
            other => return Err(Failure::check(format!("factorial(13) gave {other:?}, expected FactorialTooLarge"))),
        }
    }
    Ok(())
}

// --------------------------------------------------------------- interrupts

/// factorial(5) with IRQ_ON_DONE wakes a blocked wait on /dev/uioN; the
/// kernel masks INTx (command bit 10), and re-enabling clears it again.
fn factorial_by_interrupt_wakes_the_blocked_reader(ctx: &Ctx) -> TestResult {
    for i in 0..DEVICES {
        let mut d = ctx.open(i)?;
        ensure!(!d.intx_masked()?, "INTx still masked on {} after re-enable", d.dev.describe());
        d.edu()?.start_factorial_irq(5, PollBudget::default()).context(|| "start factorial(5)".into())?;
        d.expect_one_interrupt("factorial(5) with IRQ_ON_DONE")?;
        ensure!(d.intx_masked()?, "the kernel's handler did not mask INTx on {}", d.dev.describe());
        let value = d.edu()?.finish_factorial_irq();
        ensure_eq!(value, Some(120), "factorial(5) read after the interrupt on {}", d.dev.describe());
        d.irq.reenable().context(|| "re-enable".into())?;
        ensure!(!d.intx_masked()?, "re-enable left INTx masked on {}", d.dev.describe());
    }
    Ok(())
}

/// Each software raise wakes the waiter with the event count one higher,
/// the raised bits show in the interrupt status, and an ack clears them.
fn raise_and_ack_increment_the_event_count_each_time(ctx: &Ctx) -> TestResult {
    let mut d = ctx.open(0)?;
    let first = d.irq.last_count();
    for round in 1..=3u32 {
        let bits = IrqBits::from_bits_retain(0x40 << round);
        d.edu()?.raise(bits);
        let count = d.expect_one_interrupt(&format!("raise {:#x}", bits.bits()))?;
        ensure_eq!(count, first.wrapping_add(round), "event count after raise #{round}");
        let mut edu = d.edu()?;
        ensure!(edu.irq_status().contains(bits), "interrupt status {:?} lacks raised {bits:?}", edu.irq_status());
        edu.ack(bits);
        ensure_eq!(edu.irq_status(), IrqBits::empty(), "interrupt status after ack");
        d.irq.reenable().context(|| "re-enable".into())?;
    }
    let sysfs_count = Sysfs::system()
        .devices()
        .context(|| "re-reading sysfs".into())?
        .into_iter()
        .find(|x| x.number == d.dev.number)
        .map(|x| x.event_count);
    ensure_eq!(sysfs_count, Some(first.wrapping_add(3)), "sysfs event counter of {}", d.dev.describe());
    Ok(())
}

/// An interrupt that fires while nobody reads is reported as missed by the
/// next wait: raise, let the kernel count it, ack and unmask without
/// reading, raise again, then read once.
fn unread_interrupt_is_reported_as_missed(ctx: &Ctx) -> TestResult {
    let mut d = ctx.open(1)?;
    let start = d.irq.last_count();
    d.edu()?.raise(IrqBits::from_bits_retain(0x1000));
    // Wait until the kernel counted it, without consuming the count.
    let mut fds = [PollFd::new(d.irq.as_fd(), PollFlags::POLLIN)];
    let ready = poll(&mut fds, PollTimeout::try_from(IRQ_WAIT.as_millis() as i32).unwrap_or(PollTimeout::MAX))
        .context(|| format!("poll {}", d.irq.path().display()))?;
    ensure_eq!(ready, 1, "descriptors ready after the first raise");
    d.edu()?.ack(IrqBits::all());
    d.irq.reenable().context(|| "re-enable".into())?;
    d.edu()?.raise(IrqBits::from_bits_retain(0x1000));
    match d.irq.wait(Some(IRQ_WAIT)).context(|| "wait".into())? {
        IrqWait::Fired { count, missed } => {
            ensure_eq!((count, missed), (start.wrapping_add(2), 1), "(count, missed) after two interrupts");
        }
        IrqWait::TimedOut => return Err(Failure::check("second raise did not interrupt")),
    }
    d.clean()
}

/// With nothing pending, a wait with a timeout returns TimedOut after about
/// the timeout, and does not move the count.
fn wait_with_timeout_times_out_when_nothing_is_pending(ctx: &Ctx) -> TestResult {
    for i in 0..DEVICES {
        let mut d = ctx.open(i)?;
        let before = d.irq.last_count();
        let started = Instant::now();
        let woke = d.irq.wait(Some(QUIET_WAIT)).context(|| "wait".into())?;
        let waited = started.elapsed();
        ensure_eq!(woke, IrqWait::TimedOut, "wait on quiet {}", d.dev.describe());
        ensure!(waited >= QUIET_WAIT, "returned after {waited:?}, before the {QUIET_WAIT:?} timeout");
        ensure_eq!(d.irq.last_count(), before, "event count after a timed-out wait");
    }
    Ok(())
}

/// A device left mid-operation by a dead predecessor (IRQ_ON_DONE set,
/// computation started, bits pending, INTx masked) is brought back by
/// `recover` + re-enable: nothing is pending afterwards.
fn recover_clears_state_left_by_a_dead_predecessor(ctx: &Ctx) -> TestResult {
    let mut d = ctx.open(0)?;
    {
        let mut edu = d.edu()?;
        edu.start_factorial_irq(12, PollBudget::default()).context(|| "start factorial(12)".into())?;
        edu.raise(IrqBits::from_bits_retain(0x2000));
    }
    d.expect_one_interrupt("the predecessor's leftovers")?;
    // The "predecessor" dies here: nothing acknowledged, INTx masked.
    let recovery = d.edu()?.recover(PollBudget::default()).context(|| "recover".into())?;
    ensure!(recovery.acked.contains(IrqBits::from_bits_retain(0x2000)), "recover acked {:?}", recovery.acked);
    ensure_eq!(d.edu()?.irq_status(), IrqBits::empty(), "interrupt status after recover");
    d.irq.reenable().context(|| "re-enable".into())?;
    ensure_eq!(d.irq.wait(Some(QUIET_WAIT)).context(|| "wait".into())?, IrqWait::TimedOut, "wait after recovery");
    Ok(())
}

// ----------------------------------------------------------- bounds checks

/// Accesses past the end of the real BAR0 mapping, or misaligned, are errors
/// naming the mapping; the last in-range word still works.
fn out_of_bounds_access_is_refused_on_the_real_mapping(ctx: &Ctx) -> TestResult {
    let d = ctx.open(0)?;
    let len = d.bar0.len();
    ensure_eq!(len, BAR0_SIZE, "BAR0 mapping length");
    for offset in [len, len - 2, len + 4096, usize::MAX - 3] {
        match d.bar0.read32(offset) {
            Err(UioError::OutOfBounds { .. }) => {}
            other => return Err(Failure::check(format!("read32({offset:#x}) gave {other:?}, expected OutOfBounds"))),
        }
        match d.bar0.write32(offset, 0) {
            Err(UioError::OutOfBounds { .. }) => {}
            other => return Err(Failure::check(format!("write32({offset:#x}) gave {other:?}, expected OutOfBounds"))),
        }
    }
    match d.bar0.read32(2) {
        Err(UioError::Misaligned { .. }) => {}
        other => return Err(Failure::check(format!("read32(0x2) gave {other:?}, expected Misaligned"))),
    }
    d.bar0.read32(len - 4).context(|| "last in-range word".into())?;
    ensure_eq!(d.bar0.read32(0).context(|| "id".into())?, EDU_ID, "id register through the raw mapping");
    Ok(())
}

/// A typed register block is refused where it does not fit: at the end of the
/// real BAR0, and over a mapping smaller than the block.
fn undersized_typed_block_is_refused(ctx: &Ctx) -> TestResult {
    let d = ctx.open(0)?;
    let near_end = BAR0_SIZE - 0x10;
    match d.bar0.block::<RegisterBlock>(near_end) {
        Err(UioError::BlockTooLarge { .. }) => {}
        other => {
            return Err(Failure::check(format!(
                "block at {near_end:#x} of BAR0 gave {:?}, expected BlockTooLarge",
                other.map(|_| "a block")
            )));
        }
    }
    let path = std::path::Path::new("/tmp/edu-suite-small-region");
    std::fs::write(path, [0u8; 64]).context(|| path.display().to_string())?;
    let small = Mapping::file(path, 0, 64).context(|| format!("mapping {}", path.display()))?;
    let result = small.block::<RegisterBlock>(0).map(|_| "a block");
    let _ = std::fs::remove_file(path);
    match result {
        Err(UioError::BlockTooLarge { need, len: 64, .. }) if need > 64 => Ok(()),
        other => Err(Failure::check(format!("block over a 64-byte mapping gave {other:?}, expected BlockTooLarge"))),
    }
}

// ------------------------------------------------------ handler, concurrency

/// The replay-safe handler on real hardware: a factorial request completed
/// by interrupt, then the same request replayed from the same committed
/// state gives the same reply and the same new state.
fn handler_replay_from_same_state_gives_same_reply(ctx: &Ctx) -> TestResult {
    let mut d = ctx.open(1)?;
    let state = EduState::default();
    let request = EduRequest::Factorial { n: 7, completion: Completion::Interrupt };
    let run = |d: &mut Opened| -> Result<(EduReply, EduState), Failure> {
        let regs = d.bar0.block::<RegisterBlock>(0).context(|| "typed block".into())?;
        let mut h = EduHandler::new(regs, PollBudget::default());
        let mut step = h.start(&state, &request);
        for _ in 0..4 {
            match step {
                Step::Done { reply, state } => return Ok((reply, state)),
                Step::WaitIrq(pending) => {
                    match d.irq.wait(Some(IRQ_WAIT)).context(|| "wait".into())? {
                        IrqWait::Fired { .. } => {}
                        IrqWait::TimedOut => return Err(Failure::check("factorial interrupt never came")),
                    }
                    step = h.complete_after_irq(&state, &pending);
                    d.irq.reenable().context(|| "re-enable".into())?;
                }
            }
        }
        Err(Failure::check("handler still waiting after four interrupts"))
    };
    let first = run(&mut d)?;
    ensure!(
        matches!(first.0, EduReply::Factorial { value: 5040, .. }),
        "reply to factorial(7) by interrupt: {:?}",
        first.0
    );
    let replayed = run(&mut d)?;
    ensure_eq!(replayed, first, "(reply, state) of the replayed request");
    Ok(())
}

/// Both devices driven at once from two threads (liveness probes, factorials
/// by interrupt with different n): each sees only its own results, and each
/// event count moves by exactly its own interrupts.
fn two_devices_used_concurrently_without_cross_talk(ctx: &Ctx) -> TestResult {
    const ROUNDS: u32 = 20;
    let worker = |index: usize| -> TestResult {
        let mut d = ctx.open(index)?;
        let start = d.irq.last_count();
        let n = if index == 0 { 5 } else { 8 };
        for round in 0..ROUNDS {
            let probe = (index as u32) << 28 | round;
            d.edu()?.check_liveness(probe).context(|| format!("liveness on {}", d.dev.describe()))?;
            d.edu()?.start_factorial_irq(n, PollBudget::default()).context(|| "start".into())?;
            d.expect_one_interrupt(&format!("factorial({n}) round {round}"))?;
            let value = d.edu()?.finish_factorial_irq();
            ensure_eq!(value, Some(factorial(n)), "factorial({n}) on {} round {round}", d.dev.describe());
            d.irq.reenable().context(|| "re-enable".into())?;
        }
        ensure_eq!(d.irq.last_count(), start.wrapping_add(ROUNDS), "event count of {}", d.dev.describe());
        Ok(())
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| worker(0));
        let b = s.spawn(|| worker(1));
        (a.join(), b.join())
    });
    for (i, r) in [a, b].into_iter().enumerate() {
        match r {
            Ok(result) => result?,
            Err(_) => return Err(Failure::check(format!("worker for device #{i} panicked"))),
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    reinc_guest::init_logging();
    let tests = [
        test!(discovery_finds_both_edu_devices_with_maps_and_ids),
        test!(selectors_pick_each_device_and_refuse_a_third),
        test!(identify_reads_edu_id_on_each_device),
        test!(liveness_inverts_every_probe_on_each_device),
        test!(factorial_by_polling_matches_for_every_n),
        test!(factorial_by_interrupt_wakes_the_blocked_reader),
        test!(raise_and_ack_increment_the_event_count_each_time),
        test!(unread_interrupt_is_reported_as_missed),
        test!(wait_with_timeout_times_out_when_nothing_is_pending),
        test!(recover_clears_state_left_by_a_dead_predecessor),
        test!(out_of_bounds_access_is_refused_on_the_real_mapping),
        test!(undersized_typed_block_is_refused),
        test!(handler_replay_from_same_state_gives_same_reply),
        test!(two_devices_used_concurrently_without_cross_talk),
    ];
    let sysfs = Sysfs::system();
    let mut devices = Vec::new();
    for index in 0..DEVICES {
        let sel = Selector::Pci { vendor: VENDOR, device: DEVICE, index };
        match sysfs.find(&sel) {
            Ok(dev) => {
                tracing::info!("[edu-suite] device #{index}: {}", dev.describe());
                devices.push(dev);
            }
            Err(e) => return harness::fail_all("edu", &tests, &format!("edu device {sel}: {e}")),
        }
    }
    harness::run("edu", &Ctx { devices }, &tests)
}
