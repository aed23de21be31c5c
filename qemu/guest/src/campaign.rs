//! The x86 guest leg of the fault-injection campaign (issue #15): the pure
//! parts of `campaign-suite` — its parameters, its seeded fault schedule,
//! the model that predicts every edu reply, the exec-log audit and the
//! figures it prints.
//!
//! # Why it exists
//! The host campaign (`host-supervisor/campaign`, `cargo xtask campaign`)
//! injects faults into drivers whose "device" is a file. Only in the guest
//! does a driver own real hardware through kernel UIO: `edu_driver` with a
//! PCI BAR mapped and INTx interrupts delivered by `/dev/uioN`. There a
//! crash can leave an interrupt pending with INTx masked by the kernel, a
//! factorial half computed, a raised bit unacknowledged, and the successor
//! must still answer every replayed request exactly once. `campaign-suite`
//! runs the real supervisor over both edu devices with pipelining load
//! clients and applies this module's schedule one fault at a time; the
//! parts that can be checked without a guest live here and are unit-tested
//! on the host (`cargo test -p reinc-guest`).
//!
//! # Parameters
//! [`Params::from_env`] reads `REINC_CAMPAIGN_SEED` and
//! `REINC_CAMPAIGN_FAULTS` from the environment. The kernel hands unknown
//! `KEY=value` boot parameters to PID 1's environment, which the suites
//! inherit, so `cargo xtask campaign --guest --faults N --seed S` only adds
//! them to the kernel command line. Without them the suite runs the smoke
//! leg ([`SMOKE_SEED`], [`SMOKE_FAULTS`]) that `cargo xtask qemu-test`
//! asserts.
//!
//! # Figures
//! Every figure line starts with [`CAMPAIGN_MARKER`] so the host can grep
//! them from the console (`GUEST-CAMPAIGN …`), see [`figure_lines`].
//!
//! # Designs rejected
//! - Reusing the host campaign's `Fault` and `schedule`: its faults name
//!   host drivers (storage, net, bench, misbehave) and classes that need a
//!   file-backed device or a hand-written driver. Only the pieces that fit
//!   are reused ([`Rng`], the crash points, kinds and external signals of
//!   `reinc_campaign::schedule`), so both legs draw from the same stream
//!   and name classes the same way.
//! - Checking "executed once" by the exec log alone: edu has no device-side
//!   watermark (a factorial is pure, so re-running it is harmless by the
//!   idempotence contract), and a request whose effect ran before its
//!   instance died runs again in the next one. Exactly-once is therefore
//!   judged where it matters, at the committed state: edu's `Stats`
//!   counters must move by exactly what the clients were answered. The
//!   exec log then bounds the harmless re-executions: at most one per
//!   instance death, never two in one generation, and every answered
//!   effect logged ([`audit_exec_log`]).
//! - Putting `Stats` into the pipelined load: its answer depends on which
//!   earlier requests committed first, which the contract does not order
//!   across a replay. It is asked once before and once after the load.
//! - A quarantine-as-designed class (the host's init crash loop): its
//!   crash point fires after `edu_driver`'s `init`, which opens and
//!   recovers the device, and the guest has only the two edu devices that
//!   the load is using; a crash-looping third driver on one of them would
//!   reset its computations under the load. Quarantine is tested by the
//!   supervised suite; here any quarantine is a violation.
//! - Timings in the assertions: the smoke asserts invariants only; the
//!   recovery percentiles are printed, never compared.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};

use edu_core::{Completion, EduError, EduReply, EduRequest, Identity, MAX_FACTORIAL_N};
pub use reinc_campaign::schedule::{ExternalSignal, KINDS, LIVE_POINTS, Rng};
use reinc_proto::{CrashKind, CrashPoint};

pub use reinc_guest_protocol::{
    CAMPAIGN_FAULTS_VAR as FAULTS_VAR, CAMPAIGN_MARKER, CAMPAIGN_SEED_VAR as SEED_VAR,
    CAMPAIGN_SMOKE_FAULTS as SMOKE_FAULTS,
};
/// The smoke leg's seed (fixed, so every `qemu-test` runs the same schedule).
pub const SMOKE_SEED: u64 = 15_2009;
/// The most faults one guest leg takes (a typo of a zero would otherwise
/// keep the guest busy for hours).
pub const MAX_FAULTS: usize = 1_000_000;
/// edu devices in the x86 profile, driven as `edu0` and `edu1`.
pub const DEVICES: usize = 2;
/// The driver name of each device, as in `qemu/x86/campaign.toml`.
pub const DRIVERS: [&str; DEVICES] = ["edu0", "edu1"];

/// What one guest leg runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// The schedule's seed.
    pub seed: u64,
    /// How many faults.
    pub faults: usize,
}

impl Params {
    /// From the values of [`SEED_VAR`] and [`FAULTS_VAR`] (either may be
    /// unset: the smoke figure is used). Errors name the variable.
    ///
    /// # Errors
    /// A value that is not a number, or a fault count of 0 or above [`MAX_FAULTS`].
    pub fn from_values(seed: Option<&str>, faults: Option<&str>) -> Result<Params, String> {
        let seed = match seed {
            None => SMOKE_SEED,
            Some(s) => s.trim().parse().map_err(|e| format!("{SEED_VAR}={s:?}: not a 64-bit seed: {e}"))?,
        };
        let faults = match faults {
            None => SMOKE_FAULTS,
            Some(s) => {
                let n: usize = s.trim().parse().map_err(|e| format!("{FAULTS_VAR}={s:?}: not a count: {e}"))?;
                if !(1..=MAX_FAULTS).contains(&n) {
                    return Err(format!("{FAULTS_VAR}={n} is out of range (1..={MAX_FAULTS})"));
                }
                n
            }
        };
        Ok(Params { seed, faults })
    }

    /// From the environment (see [`Params::from_values`]).
    ///
    /// # Errors
    /// As [`Params::from_values`].
    pub fn from_env() -> Result<Params, String> {
        let seed = std::env::var(SEED_VAR).ok();
        let faults = std::env::var(FAULTS_VAR).ok();
        Params::from_values(seed.as_deref(), faults.as_deref())
    }
}

/// One fault of the guest leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Control-socket `Inject`: the instance serving `device` dies by `kind`
    /// at `point` of its `k`-th next request. `Hang` leaves the heartbeat to
    /// notice.
    Inject {
        /// Index into [`DRIVERS`].
        device: usize,
        /// Where.
        point: CrashPoint,
        /// How.
        kind: CrashKind,
        /// Which request after arming (1-based).
        k: u32,
    },
    /// `kill(2)` of the instance's pid after `delay_us` microseconds.
    /// SIGSTOP is a hang seen only by the heartbeat.
    Signal {
        /// Index into [`DRIVERS`].
        device: usize,
        /// Which signal.
        signal: ExternalSignal,
        /// A random moment: the delay after the pid was read.
        delay_us: u32,
    },
}

impl Fault {
    /// Index into [`DRIVERS`] of the driver it hits.
    #[must_use]
    pub fn device(&self) -> usize {
        match *self {
            Fault::Inject { device, .. } | Fault::Signal { device, .. } => device,
        }
    }

    /// Its outcome-table row, spelled as the host campaign spells it.
    #[must_use]
    pub fn class(&self) -> String {
        match self {
            Fault::Inject { point, kind, .. } => format!("inject {}:{}", point.name(), kind.name()),
            Fault::Signal { signal, .. } => format!("external {}", signal.signal().as_str()),
        }
    }

    /// Its recovery-time row: the crash kind, or the signal.
    #[must_use]
    pub fn recovery_kind(&self) -> String {
        match self {
            Fault::Inject { kind, .. } => kind.name().to_owned(),
            Fault::Signal { signal, .. } => signal.signal().as_str().to_owned(),
        }
    }
}

/// The cross product every schedule starts with: each device × each live
/// crash point × each kind, and each device × each external signal.
#[must_use]
pub fn coverage() -> Vec<Fault> {
    let mut v = Vec::new();
    for device in 0..DEVICES {
        for point in LIVE_POINTS {
            for kind in KINDS {
                v.push(Fault::Inject { device, point, kind, k: 1 });
            }
        }
        for signal in ExternalSignal::ALL {
            v.push(Fault::Signal { device, signal, delay_us: 0 });
        }
    }
    v
}

/// One random fault. Hangs (injected or SIGSTOP) cost a heartbeat timeout
/// each, so they are one draw in ten of their family, as on the host.
fn draw(rng: &mut Rng) -> Fault {
    let device = rng.below(DEVICES as u64) as usize;
    if rng.below(100) < 65 {
        let kind = if rng.below(10) == 0 { CrashKind::Hang } else { rng.pick(&KINDS[..5]) };
        Fault::Inject { device, point: rng.pick(&LIVE_POINTS), kind, k: 1 + rng.below(3) as u32 }
    } else {
        let signal = if rng.below(10) == 0 { ExternalSignal::Stop } else { rng.pick(&ExternalSignal::ALL[..3]) };
        Fault::Signal { device, signal, delay_us: rng.below(3000) as u32 }
    }
}

/// The first `count` faults for `seed`: the coverage walk in a seeded order,
/// then random draws. A prefix of a longer schedule is the shorter one, so a
/// failure at fault index `i` replays with `faults = i + 1`.
#[must_use]
pub fn schedule(seed: u64, count: usize) -> Vec<Fault> {
    let mut rng = Rng::new(seed);
    let mut v = coverage();
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
    v.truncate(count);
    while v.len() < count {
        v.push(draw(&mut rng));
    }
    v
}

// ------------------------------------------------------------------ model

/// What a request does to edu's committed counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Factorials answered.
    pub factorials: u64,
    /// Interrupts handled (factorials by interrupt, raises).
    pub irqs: u64,
}

impl Counts {
    /// Adds `other`.
    pub fn add(&mut self, other: Counts) {
        self.factorials += other.factorials;
        self.irqs += other.irqs;
    }
}

/// The load's next request: mostly factorials (by interrupt and by
/// polling), liveness probes, software interrupts, identifies, and bad
/// input that the driver must refuse the same way every time.
pub fn next_request(rng: &mut Rng) -> EduRequest {
    let n = rng.below(u64::from(MAX_FACTORIAL_N) + 1) as u32;
    match rng.below(100) {
        0..=39 => EduRequest::Factorial { n, completion: Completion::Interrupt },
        40..=59 => EduRequest::Factorial { n, completion: Completion::Polling },
        60..=74 => EduRequest::Liveness { probe: rng.next_u64() as u32 },
        // Software bits 16..=23: clear of the factorial (0x1) and DMA (0x100) bits.
        75..=86 => EduRequest::RaiseIrq { bits: (1 + rng.below(0xff) as u32) << 16 },
        87..=92 => EduRequest::Identify,
        93..=96 => EduRequest::Factorial {
            n: MAX_FACTORIAL_N + 1 + rng.below(20) as u32,
            completion: if rng.below(2) == 0 { Completion::Interrupt } else { Completion::Polling },
        },
        _ => EduRequest::RaiseIrq { bits: 0 },
    }
}

/// n! for n ≤ 12, computed here and not by the device.
#[must_use]
pub fn factorial(n: u32) -> u32 {
    (1..=n).product()
}

/// edu's id register (QEMU's docs/specs/edu.rst: version 1.0).
pub const EDU_ID: u32 = 0x0100_00ed;

/// The reply `req` must get, whatever crashed meanwhile. `Stats` is not
/// predicted here (see the module docs).
#[must_use]
pub fn expected(req: &EduRequest) -> Option<EduReply> {
    Some(match *req {
        EduRequest::Identify => EduReply::Identity(Identity::from_raw(EDU_ID)?),
        EduRequest::Liveness { probe } => EduReply::Alive { probe, readback: !probe },
        EduRequest::Factorial { n, .. } if n > MAX_FACTORIAL_N => EduReply::Error(EduError::FactorialTooLarge { n }),
        EduRequest::Factorial { n, .. } => EduReply::Factorial { n, value: factorial(n) },
        EduRequest::RaiseIrq { bits: 0 } => EduReply::Error(EduError::NoIrqBits),
        EduRequest::RaiseIrq { bits } => EduReply::IrqHandled { bits },
        EduRequest::Stats => return None,
    })
}

/// What answering `req` adds to the committed counters.
#[must_use]
pub fn counts(req: &EduRequest) -> Counts {
    match *req {
        EduRequest::Factorial { n, .. } if n > MAX_FACTORIAL_N => Counts::default(),
        EduRequest::Factorial { completion: Completion::Interrupt, .. } => Counts { factorials: 1, irqs: 1 },
        EduRequest::Factorial { completion: Completion::Polling, .. } => Counts { factorials: 1, irqs: 0 },
        EduRequest::RaiseIrq { bits } if bits != 0 => Counts { factorials: 0, irqs: 1 },
        _ => Counts::default(),
    }
}

/// Whether the driver reports a device effect for `req` (and so writes an
/// exec-log line): factorials, liveness probes and raises that are not
/// refused.
#[must_use]
pub fn effectful(req: &EduRequest) -> bool {
    matches!(expected(req), Some(EduReply::Factorial { .. } | EduReply::Alive { .. } | EduReply::IrqHandled { .. }))
}

// --------------------------------------------------------------- exec log

/// One exec-log line: `(generation, client session, seq)`.
pub type ExecEntry = (u32, u64, u64);

/// Parses one `REINC_EXEC_LOG` line (`<generation> <client> <seq>`).
#[must_use]
pub fn parse_exec_line(line: &str) -> Option<ExecEntry> {
    let mut it = line.split_whitespace();
    let e = (it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?);
    it.next().is_none().then_some(e)
}

/// Parses a whole exec log; `what` names the file in errors.
///
/// # Errors
/// A line that is not three numbers (a torn or foreign write).
pub fn parse_exec_log(what: &str, text: &str) -> Result<Vec<ExecEntry>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| parse_exec_line(l).ok_or_else(|| format!("{what}:{}: not `gen client seq`: {l:?}", i + 1)))
        .collect()
}

/// What the exec log of one driver says about the leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecAudit {
    /// Effects logged.
    pub lines: usize,
    /// Requests whose effect ran in more than one instance (the instance
    /// died after the effect, before its reply was committed).
    pub reexecuted: usize,
}

/// Checks one driver's exec log against what its clients were answered:
/// every answered effect is logged, none by two lines of one generation,
/// nothing is logged that no client was answered, and no more requests ran
/// again than instances died (`deaths`: restarts during the leg). `driver`
/// names the driver in errors.
///
/// # Errors
/// The first violation found, naming the driver and the request.
pub fn audit_exec_log(
    driver: &str,
    entries: &[ExecEntry],
    answered: &HashSet<(u64, u64)>,
    deaths: u32,
) -> Result<ExecAudit, String> {
    let mut by_id: HashMap<(u64, u64), Vec<u32>> = HashMap::new();
    for &(g, client, seq) in entries {
        by_id.entry((client, seq)).or_default().push(g);
    }
    for (id, gens) in &by_id {
        if !answered.contains(id) {
            return Err(format!(
                "{driver}: exec log has request {}:{} (generations {gens:?}) that no client was answered",
                id.0, id.1
            ));
        }
        let distinct: HashSet<u32> = gens.iter().copied().collect();
        if distinct.len() != gens.len() {
            return Err(format!(
                "{driver}: request {}:{} executed twice by one instance (generations {gens:?})",
                id.0, id.1
            ));
        }
    }
    if let Some(missing) = answered.iter().find(|id| !by_id.contains_key(id)) {
        return Err(format!(
            "{driver}: request {}:{} was answered, but its effect is not in the exec log",
            missing.0, missing.1
        ));
    }
    let reexecuted = by_id.values().filter(|g| g.len() > 1).count();
    let extra: usize = by_id.values().map(|g| g.len() - 1).sum();
    if extra > deaths as usize {
        return Err(format!(
            "{driver}: {extra} re-execution(s) of {reexecuted} request(s) for only {deaths} instance death(s)"
        ));
    }
    Ok(ExecAudit { lines: entries.len(), reexecuted })
}

// ---------------------------------------------------------------- figures

/// The leg's figures, gathered fault by fault.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    /// Per class: (applied, recovered).
    pub classes: BTreeMap<String, (u64, u64)>,
    /// Per recovery kind: every measured recovery in µs.
    pub recovery_us: BTreeMap<String, Vec<u64>>,
}

impl Figures {
    /// Records one applied fault; `recovered` says whether a new instance
    /// answered (with its recovery time when measured).
    pub fn record(&mut self, fault: &Fault, recovered: bool, recovery_us: Option<u64>) {
        let row = self.classes.entry(fault.class()).or_default();
        row.0 += 1;
        row.1 += u64::from(recovered);
        if let Some(us) = recovery_us {
            self.recovery_us.entry(fault.recovery_kind()).or_default().push(us);
        }
    }

    /// Faults applied, recovered.
    #[must_use]
    pub fn totals(&self) -> (u64, u64) {
        self.classes.values().fold((0, 0), |a, r| (a.0 + r.0, a.1 + r.1))
    }
}

/// The nearest-rank `p`-th percentile (0 < p ≤ 100) of `sorted`.
#[must_use]
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The figure lines, each starting with [`CAMPAIGN_MARKER`]: one `total`
/// line, one `class` line per fault class, one `recovery` line per kind.
/// `extra` is appended to the total line (`key=value` pairs).
#[must_use]
pub fn figure_lines(params: &Params, figures: &Figures, extra: &str) -> Vec<String> {
    let (applied, recovered) = figures.totals();
    let mut out = vec![format!(
        "{CAMPAIGN_MARKER} total seed={} faults={} applied={applied} recovered={recovered}{}{extra}",
        params.seed,
        params.faults,
        if extra.is_empty() { "" } else { " " }
    )];
    for (class, (a, r)) in &figures.classes {
        out.push(format!("{CAMPAIGN_MARKER} class {class:?} applied={a} recovered={r}"));
    }
    for (kind, v) in &figures.recovery_us {
        let mut s = v.clone();
        s.sort_unstable();
        let f = |p| percentile(&s, p).unwrap_or(0);
        out.push(format!(
            "{CAMPAIGN_MARKER} recovery kind={kind} n={} p50_us={} p99_us={} max_us={}",
            s.len(),
            f(50.0),
            f(99.0),
            s.last().copied().unwrap_or(0)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn parameters_default_to_the_smoke_and_errors_name_the_variable() {
        assert_eq!(Params::from_values(None, None), Ok(Params { seed: SMOKE_SEED, faults: SMOKE_FAULTS }));
        assert_eq!(Params::from_values(Some("7"), Some(" 300 ")), Ok(Params { seed: 7, faults: 300 }));
        let e = Params::from_values(Some("x"), None).unwrap_err();
        assert!(e.starts_with(SEED_VAR), "{e}");
        let e = Params::from_values(None, Some("0")).unwrap_err();
        assert!(e.starts_with(FAULTS_VAR) && e.contains("out of range"), "{e}");
    }

    #[test]
    fn a_schedule_is_a_prefix_of_a_longer_one_with_the_same_seed() {
        assert_eq!(schedule(3, 200)[..], schedule(3, 500)[..200]);
        assert_ne!(schedule(3, 200), schedule(4, 200));
    }

    #[test]
    fn the_smoke_covers_every_point_kind_and_signal_on_both_devices() {
        let s = schedule(SMOKE_SEED, SMOKE_FAULTS);
        let got: BTreeSet<(usize, String)> = s.iter().map(|f| (f.device(), f.class())).collect();
        for device in 0..DEVICES {
            for point in LIVE_POINTS {
                for kind in KINDS {
                    assert!(got.contains(&(device, format!("inject {}:{}", point.name(), kind.name()))));
                }
            }
            for sig in ExternalSignal::ALL {
                assert!(got.contains(&(device, format!("external {}", sig.signal().as_str()))), "{sig:?}");
            }
        }
        assert!(SMOKE_FAULTS > coverage().len(), "the smoke also takes random faults");
    }

    #[test]
    fn random_faults_include_hangs_stops_and_later_requests() {
        let s = schedule(9, 5000);
        let tail = &s[coverage().len()..];
        assert!(tail.iter().any(|f| matches!(f, Fault::Inject { kind: CrashKind::Hang, .. })));
        assert!(tail.iter().any(|f| matches!(f, Fault::Signal { signal: ExternalSignal::Stop, .. })));
        assert!(tail.iter().any(|f| matches!(f, Fault::Inject { k: 3, .. })));
        assert!(tail.iter().all(|f| f.device() < DEVICES));
    }

    #[test]
    fn the_model_predicts_every_load_request_and_its_committed_count() {
        let mut rng = Rng::new(1);
        let mut kinds = BTreeSet::new();
        for _ in 0..10_000 {
            let req = next_request(&mut rng);
            let reply = expected(&req).expect("the load never sends Stats");
            kinds.insert(format!("{:?}", std::mem::discriminant(&reply)));
            match (req, reply) {
                (EduRequest::Factorial { n, .. }, EduReply::Factorial { value, .. }) => {
                    assert!(n <= MAX_FACTORIAL_N);
                    assert_eq!(u64::from(value), (1..=u64::from(n)).product::<u64>());
                    assert_eq!(counts(&req).factorials, 1);
                }
                (_, EduReply::Error(e)) => {
                    assert!(e.is_bad_request(), "{e:?}");
                    assert_eq!(counts(&req), Counts::default());
                    assert!(!effectful(&req));
                }
                _ => assert!(req == EduRequest::Identify || effectful(&req), "{req:?}"),
            }
        }
        assert_eq!(kinds.len(), 5, "identity, alive, factorial, irq and refusal replies are all drawn");
        assert_eq!(factorial(12), 479_001_600);
    }

    #[test]
    fn the_exec_audit_allows_one_reexecution_per_death_and_nothing_else() {
        let answered: HashSet<(u64, u64)> = [(5, 1), (5, 2), (5, 3)].into();
        let clean = [(1, 5, 1), (1, 5, 2), (2, 5, 3)];
        assert_eq!(audit_exec_log("edu0", &clean, &answered, 0), Ok(ExecAudit { lines: 3, reexecuted: 0 }));
        let replayed = [(1, 5, 1), (1, 5, 2), (2, 5, 2), (2, 5, 3)];
        assert_eq!(audit_exec_log("edu0", &replayed, &answered, 1), Ok(ExecAudit { lines: 4, reexecuted: 1 }));
        let e = audit_exec_log("edu0", &replayed, &answered, 0).unwrap_err();
        assert!(e.contains("edu0") && e.contains("0 instance death"), "{e}");
        let twice = [(1, 5, 1), (1, 5, 1), (1, 5, 2), (1, 5, 3)];
        assert!(audit_exec_log("edu1", &twice, &answered, 9).unwrap_err().contains("twice by one instance"));
        let lost = [(1, 5, 1), (1, 5, 2)];
        assert!(audit_exec_log("edu1", &lost, &answered, 9).unwrap_err().contains("5:3 was answered"));
        let foreign = [(1, 5, 1), (1, 5, 2), (1, 5, 3), (1, 6, 1)];
        assert!(audit_exec_log("edu1", &foreign, &answered, 9).unwrap_err().contains("no client was answered"));
    }

    #[test]
    fn exec_lines_parse_strictly_and_name_the_file() {
        assert_eq!(parse_exec_line("3 77 9"), Some((3, 77, 9)));
        assert_eq!(parse_exec_line("3 77"), None);
        assert_eq!(parse_exec_line("3 77 9 1"), None);
        let e = parse_exec_log("/tmp/x.log", "1 2 3\n1 2\n").unwrap_err();
        assert!(e.starts_with("/tmp/x.log:2:"), "{e}");
    }

    #[test]
    fn figures_print_totals_classes_and_percentiles_under_the_marker() {
        let mut f = Figures::default();
        let segv = Fault::Inject { device: 0, point: CrashPoint::BeforeEffect, kind: CrashKind::Segv, k: 1 };
        for us in [30, 10, 20, 40] {
            f.record(&segv, true, Some(us));
        }
        let stop = Fault::Signal { device: 1, signal: ExternalSignal::Stop, delay_us: 0 };
        f.record(&stop, true, None);
        let lines = figure_lines(&Params { seed: 1, faults: 5 }, &f, "requests=9");
        assert!(lines.iter().all(|l| l.starts_with(CAMPAIGN_MARKER)));
        assert_eq!(lines[0], "GUEST-CAMPAIGN total seed=1 faults=5 applied=5 recovered=5 requests=9");
        assert!(lines.contains(&"GUEST-CAMPAIGN class \"external SIGSTOP\" applied=1 recovered=1".into()));
        assert!(lines.contains(&"GUEST-CAMPAIGN recovery kind=segv n=4 p50_us=20 p99_us=40 max_us=40".into()));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
