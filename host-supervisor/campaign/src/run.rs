//! Running a campaign: its inputs ([`Bins`], [`Options`]), what it
//! measured ([`RunResult`]), and [`run`], which runs the lanes side by side
//! and merges their results.
//!
//! The pieces live in their own modules, by concern:
//! - `lane.rs`: one lane: its supervisor, the driver specs, the load
//!   threads, the fault loop and the final checks;
//! - `load/`: the load clients, one module each, with the models
//!   that predict every reply;
//! - `inject.rs`: the injector, which applies one fault at a time and
//!   waits for its outcome.
//!
//! Threads of a lane: one per load client (two storage clients on disjoint
//! block ranges, one NBD client through `reinc-nbd` on a third, one net
//! client, one bench-driver client, one misbehave client), one that runs `drvctl blk` as a process now and then, one
//! sampling throughput, and the injector (the lane's thread). Faults are
//! applied one at a time: the injector waits until the target is running,
//! applies the fault, and waits for its outcome (new generation running, a
//! reply, a quarantine) before the next one. Every thread checks its
//! invariants on every completion; the first violation stops everything and
//! is reported with the index of the fault being applied.

use crate::{CampaignError, Record, Violation};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Instant;

/// The executables a campaign runs.
#[derive(Debug, Clone)]
pub struct Bins {
    /// The daemon.
    pub supervisor: PathBuf,
    /// The CLI.
    pub drvctl: PathBuf,
    /// The storage driver.
    pub storage_driver: PathBuf,
    /// The net driver.
    pub net_driver: PathBuf,
    /// The bench (null) driver.
    pub bench_driver: PathBuf,
    /// The misbehaving driver.
    pub misbehave_driver: PathBuf,
    /// The NBD front end.
    pub nbd: PathBuf,
}

impl Bins {
    /// The binaries in `dir` (a cargo profile directory).
    ///
    /// # Errors
    /// [`CampaignError::MissingBinary`] naming the first one missing.
    pub fn in_dir(dir: &Path) -> Result<Self, CampaignError> {
        let find = |name: &str| {
            let p = dir.join(name);
            if p.is_file() { Ok(p) } else { Err(CampaignError::MissingBinary(p)) }
        };
        Ok(Self {
            supervisor: find("supervisor")?,
            drvctl: find("drvctl")?,
            storage_driver: find("storage_driver")?,
            net_driver: find("net_driver")?,
            bench_driver: find("reinc-bench-driver")?,
            misbehave_driver: find("reinc-misbehave-driver")?,
            nbd: find("reinc-nbd")?,
        })
    }
}

/// Lanes when `--lanes` is not given.
pub const DEFAULT_LANES: usize = 4;

/// Settings of one campaign.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many faults.
    pub faults: usize,
    /// The schedule's seed.
    pub seed: u64,
    /// Where the run's directory (config, logs, device files) goes; lane
    /// `j` works in `work/lane{j}`.
    pub work: PathBuf,
    /// Independent lanes run side by side, each a supervisor with its own
    /// drivers, load and injector; fault `i` of the schedule runs in lane
    /// `i % lanes`, so the lanes' faults in order are the schedule.
    pub lanes: usize,
    /// Whether the schedule SIGKILLs supervisors (`--no-supervisor-kills`
    /// leaves that class out, see the README's "Reliability campaign").
    pub supervisor_kills: bool,
    /// Which lanes run the journaled load drivers with a hot standby.
    pub standby: Standby,
}

/// The command that repeats a run's schedule (its first `faults` faults),
/// lanes and options: what a failure report tells the reader to run.
#[must_use]
pub fn repeat_command(faults: usize, seed: u64, lanes: usize, supervisor_kills: bool, standby: Standby) -> String {
    let mut c = format!("cargo xtask campaign --faults {faults} --seed {seed} --lanes {lanes}");
    if !supervisor_kills {
        c.push_str(" --no-supervisor-kills");
    }
    if standby != Standby::Odd {
        c.push_str(&format!(" --standby {}", standby.name()));
    }
    c
}

impl Options {
    /// [`repeat_command`] for this run's first `faults` faults.
    #[must_use]
    pub fn repeat(&self, faults: usize) -> String {
        repeat_command(faults, self.seed, self.lanes, self.supervisor_kills, self.standby)
    }
}

impl RunResult {
    /// [`repeat_command`] for this run's first `faults` faults.
    #[must_use]
    pub fn repeat(&self, faults: usize) -> String {
        repeat_command(faults, self.seed, self.lanes, self.kills_scheduled, self.standby)
    }
}

/// Which lanes keep a hot standby of their journaled load drivers (storage,
/// net, misbehave): `--standby none|odd|all`, odd by default, so that a
/// campaign covers both restart paths under the same faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum Standby {
    /// Every crash is recovered by a spawn.
    None,
    /// Odd lanes promote a standby; even lanes spawn.
    #[default]
    Odd,
    /// Every lane promotes a standby.
    All,
}

impl Standby {
    /// Whether lane `lane` runs with a standby.
    #[must_use]
    pub fn lane(self, lane: usize) -> bool {
        match self {
            Self::None => false,
            Self::Odd => lane % 2 == 1,
            Self::All => true,
        }
    }

    /// The flag's value.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Odd => "odd",
            Self::All => "all",
        }
    }
}

impl std::str::FromStr for Standby {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Self::None, Self::Odd, Self::All]
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("{s:?} is not none, odd or all"))
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    /// The seed.
    pub seed: u64,
    /// Faults planned.
    pub planned: usize,
    /// One record per fault applied.
    pub records: Vec<Record>,
    /// `(seconds since start, completed requests per second)` samples.
    pub throughput: Vec<(f64, f64)>,
    /// Seconds from the first fault to the last.
    pub fault_seconds: f64,
    /// Requests answered, per load.
    pub answered: BTreeMap<String, u64>,
    /// `drvctl blk` write+read rounds verified.
    pub blk_rounds: u32,
    /// The final checks, as lines (`ok ...`).
    pub checks: Vec<String>,
    /// The first violation, if any.
    pub violation: Option<Violation>,
    /// How the supervisor exited at the end.
    pub supervisor_exit: String,
    /// Driver restarts counted by the supervisors.
    pub restarts: BTreeMap<String, u32>,
    /// Hang verdicts of the supervisors (`drvctl metrics`): instances that
    /// missed their heartbeats only waiting for a CPU and were left running
    /// (`reinc_driver_starved_total`), and instances killed as hung.
    pub hang_verdicts: HangVerdicts,
    /// Lanes (supervisors) the faults ran in.
    pub lanes: usize,
    /// Supervisors the lanes SIGKILLed (and replaced), by the lanes' count.
    pub supervisor_kills: u32,
    /// Which lanes ran with a standby.
    pub standby: Standby,
    /// Whether the schedule held supervisor kills ([`Options::supervisor_kills`]).
    pub kills_scheduled: bool,
    /// NBD requests answered through `reinc-nbd`, every one checked.
    pub nbd_requests: u64,
    /// Waits that outlasted 3 s (the campaign's `SLOW`) because the instance was
    /// in uninterruptible sleep in the kernel, waited out.
    pub kernel_stalls: Vec<KernelStall>,
}

/// A wait of the injector's held up by the kernel: the instance (killed by
/// the supervisor, or starting) sat in uninterruptible sleep (`D`), where
/// SIGKILL waits, and the supervisor rightly waited for its death before
/// relaunching or replaying (`host-supervisor/supervisor/src/daemon/dying.rs`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KernelStall {
    /// The fault being handled.
    pub fault_index: usize,
    /// The wait's length, in seconds.
    pub seconds: f64,
    /// The instance's kernel stack when it was first seen stuck, innermost first.
    pub stack: String,
}

/// Hang verdicts counted by the supervisors (see [`RunResult::hang_verdicts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HangVerdicts {
    /// Starved, not hung: left running.
    pub starved: u64,
    /// Hung: killed.
    pub hung: u64,
}

impl HangVerdicts {
    /// The verdicts in a supervisor's metrics text: every driver's
    /// `reinc_driver_starved_total`, and its crashes with `cause="hung"`.
    #[must_use]
    pub fn from_metrics(text: &str) -> Self {
        let mut v = Self::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((key, n)) = line.rsplit_once(' ') else { continue };
            let Ok(n) = n.trim().parse::<u64>() else { continue };
            if key.starts_with("reinc_driver_starved_total{") {
                v.starved += n;
            } else if key.starts_with("reinc_driver_crashes_total{") && key.contains("cause=\"hung\"") {
                v.hung += n;
            }
        }
        v
    }
}

/// What the lanes of one run share.
#[derive(Debug)]
pub(crate) struct Lanes {
    /// When the run started: every lane's clock.
    pub(crate) epoch: Instant,
    /// Set by the first lane that sees a violation: the others stop too.
    pub(crate) stop: AtomicBool,
    /// Faults applied, over every lane.
    pub(crate) done: AtomicUsize,
}

/// Runs a campaign in [`Options::lanes`] lanes side by side and merges
/// what they measured. One lane's failure stops every lane; the report
/// names the lowest fault index that failed.
///
/// # Errors
/// Setup failures (a supervisor does not start); a violated invariant is
/// not an error but [`RunResult::violation`].
pub fn run(bins: &Bins, opts: &Options) -> Result<RunResult, CampaignError> {
    let lanes = opts.lanes.max(1);
    let _ = std::fs::remove_dir_all(&opts.work);
    let shared = Lanes { epoch: Instant::now(), stop: AtomicBool::new(false), done: AtomicUsize::new(0) };
    let results: Vec<Result<(RunResult, Instant, Instant), CampaignError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..lanes)
            .map(|lane| {
                scope.spawn({
                    let shared = &shared;
                    move || crate::lane::run_lane(bins, opts, lane, shared)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(CampaignError::Setup("a lane's thread panicked".into()))))
            .collect()
    });
    let mut merged = RunResult {
        seed: opts.seed,
        planned: opts.faults,
        records: Vec::new(),
        throughput: Vec::new(),
        fault_seconds: 0.0,
        answered: BTreeMap::new(),
        blk_rounds: 0,
        checks: Vec::new(),
        violation: None,
        supervisor_exit: String::new(),
        restarts: BTreeMap::new(),
        hang_verdicts: HangVerdicts::default(),
        lanes,
        supervisor_kills: 0,
        standby: opts.standby,
        kills_scheduled: opts.supervisor_kills,
        nbd_requests: 0,
        kernel_stalls: Vec::new(),
    };
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    let mut exits = Vec::new();
    for (lane, r) in results.into_iter().enumerate() {
        let (r, start, end) = r?;
        first = Some(first.map_or(start, |f| f.min(start)));
        last = Some(last.map_or(end, |l| l.max(end)));
        merged.records.extend(r.records);
        for (t, v) in r.throughput {
            *buckets.entry((t * 4.0).round() as u64).or_default() += v;
        }
        for (k, v) in r.answered {
            *merged.answered.entry(k).or_default() += v;
        }
        for (k, v) in r.restarts {
            *merged.restarts.entry(k).or_default() += v;
        }
        merged.hang_verdicts.starved += r.hang_verdicts.starved;
        merged.hang_verdicts.hung += r.hang_verdicts.hung;
        merged.blk_rounds += r.blk_rounds;
        merged.supervisor_kills += r.supervisor_kills;
        merged.nbd_requests += r.nbd_requests;
        merged.kernel_stalls.extend(r.kernel_stalls);
        let prefix = if lanes > 1 { format!("lane {lane}: ") } else { String::new() };
        merged.checks.extend(r.checks.into_iter().map(|c| format!("{prefix}{c}")));
        if let Some(v) = r.violation {
            let v = Violation { fault_index: v.fault_index, what: format!("{prefix}{}", v.what) };
            if merged.violation.as_ref().is_none_or(|m| v.fault_index < m.fault_index) {
                merged.violation = Some(v);
            }
        }
        exits.push(format!("{prefix}{}", r.supervisor_exit));
    }
    exits.dedup_by(|a, b| a.split(": ").skip(1).eq(b.split(": ").skip(1)));
    merged.supervisor_exit = if lanes > 1 && exits.len() == 1 {
        format!("all {lanes} {}", exits[0].split_once(": ").map_or("", |x| x.1))
    } else {
        exits.join("; ")
    };
    merged.records.sort_by_key(|r| r.index);
    merged.throughput = buckets.into_iter().map(|(b, v)| (b as f64 / 4.0, v)).collect();
    merged.fault_seconds = match (first, last) {
        (Some(f), Some(l)) => l.saturating_duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hang_verdicts_sum_every_driver_s_starved_and_hung_counts() {
        let text = "# TYPE reinc_driver_starved_total counter\n\
                    reinc_driver_starved_total{driver=\"a\"} 3\n\
                    reinc_driver_starved_total{driver=\"b\"} 4\n\
                    reinc_driver_crashes_total{driver=\"a\",cause=\"hung\"} 2\n\
                    reinc_driver_crashes_total{driver=\"a\",cause=\"SIGSEGV\"} 9\n\
                    reinc_driver_crashes_total{driver=\"b\",cause=\"hung\"} 1\n";
        assert_eq!(HangVerdicts::from_metrics(text), HangVerdicts { starved: 7, hung: 3 });
        assert_eq!(HangVerdicts::from_metrics(""), HangVerdicts::default());
    }

    #[test]
    fn the_repeat_command_carries_every_option_that_changes_the_run() {
        assert_eq!(
            repeat_command(3210, 15, 4, true, Standby::Odd),
            "cargo xtask campaign --faults 3210 --seed 15 --lanes 4"
        );
        assert_eq!(
            repeat_command(9, 7, 1, false, Standby::All),
            "cargo xtask campaign --faults 9 --seed 7 --lanes 1 --no-supervisor-kills --standby all"
        );
        for k in [Standby::None, Standby::Odd, Standby::All] {
            assert_eq!(k.name().parse::<Standby>(), Ok(k));
        }
        assert!("some".parse::<Standby>().is_err());
    }
}
