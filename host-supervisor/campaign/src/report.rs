//! `report.md` and `report.json`: the outcome table, recovery figures,
//! throughput, the seed, the machine, and the comparison with MINIX 3.

use crate::run::{KernelStall, RunResult};
use crate::schedule::Fault;
use crate::{CampaignError, Handling, Outcome, Record};
use reinc_bench::machine::Machine;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Recovery percentiles of one kind, in µs.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50_us: u64,
    /// 99th.
    pub p99_us: u64,
    /// 99.9th.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// Nearest-rank percentiles of `v`.
#[must_use]
pub fn percentiles(v: &[u64]) -> Option<Percentiles> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let rank = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    Some(Percentiles {
        n: s.len(),
        p50_us: rank(0.50),
        p99_us: rank(0.99),
        p999_us: rank(0.999),
        max_us: s[s.len() - 1],
    })
}

/// Recovery samples by kind (crash kind or signal).
#[must_use]
pub fn recovery_by_kind(records: &[Record]) -> BTreeMap<String, Vec<u64>> {
    let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in records {
        if let (Some(k), Some(us)) = (r.fault.recovery_kind(), r.recovery_us) {
            m.entry(k).or_default().push(us);
        }
    }
    m
}

/// How many slow recoveries (above `slow_us`) of crash faults overlap in
/// time a slow one of another lane: lanes are independent supervisors
/// sharing only the host, so those are stalls of the host (scheduling,
/// other tenants), not of one supervisor. `None` with one lane or none slow.
fn shared_stalls(r: &RunResult, slow_us: u64) -> Option<String> {
    let lanes = r.lanes.max(1);
    let slow: Vec<(usize, f64, f64)> = r
        .records
        .iter()
        .filter_map(|x| {
            let us = x.recovery_us.filter(|&us| us > slow_us && driver_crash(&x.fault))?;
            Some((x.index % lanes, x.at_ms, x.at_ms + us as f64 / 1000.0))
        })
        .collect();
    if lanes < 2 || slow.is_empty() {
        return None;
    }
    let shared = slow.iter().filter(|(l, a, b)| slow.iter().any(|(l2, a2, b2)| l2 != l && a2 < b && a < b2)).count();
    Some(format!(
        "Of the {} recoveries above {} ms, **{shared}** overlapped in time a recovery above {} ms in another lane \
         (another supervisor with its own drivers): {}.",
        slow.len(),
        slow_us / 1000,
        slow_us / 1000,
        if shared * 2 > slow.len() {
            "most of the tail is the shared host stalling several lanes at once"
        } else {
            "most of the tail is local to one lane"
        }
    ))
}

/// What the kernel held up, in one line: waits that outlasted
/// [`crate::lane::SLOW`] because an instance sat in uninterruptible sleep
/// (`D`), how long the longest took, and the kernel function most of them
/// were stuck in. `None` if there was none.
fn kernel_stalls(stalls: &[KernelStall]) -> Option<String> {
    let longest = stalls.iter().max_by(|a, b| a.seconds.total_cmp(&b.seconds))?;
    let mut by_function: BTreeMap<&str, usize> = BTreeMap::new();
    for s in stalls {
        *by_function.entry(s.stack.split('<').next().unwrap_or("?")).or_default() += 1;
    }
    let (function, n) = by_function.iter().max_by_key(|(_, n)| **n).map(|(f, n)| (*f, *n))?;
    Some(format!(
        "**Kernel stalls: {}** waits of the injector outlasted {} s because the instance was in uninterruptible \
         sleep in the kernel (`D`), where a SIGKILL waits too: nothing could end it before the kernel let it go, and \
         the supervisor relaunches and replays only after the death (it logs each instance it killed that has not \
         died). The longest took {:.1} s (fault {}, `{}`); {n} of them were in `{function}`.",
        stalls.len(),
        crate::lane::SLOW.as_secs(),
        longest.seconds,
        longest.fault_index,
        longest.stack
    ))
}

/// A fault that crashes one driver and is timed (not a supervisor kill,
/// whose recovery is a journal recovery and the launch of every driver).
fn driver_crash(f: &Fault) -> bool {
    f.recovery_kind().is_some() && !matches!(f, Fault::SupervisorKill { .. })
}

/// The recovery times of crash faults (the 10 ms target's population: not
/// hangs or SIGSTOPs, which wait for the heartbeat timeout) among `records`.
fn crash_recoveries<'a>(records: impl Iterator<Item = &'a Record>) -> Vec<u64> {
    records
        .filter(|x| !matches!(x.fault, Fault::Inject { kind: reinc_proto::CrashKind::Hang, .. }))
        .filter(|x| !matches!(x.fault, Fault::Signal { signal: crate::schedule::ExternalSignal::Stop, .. }))
        .filter_map(|x| x.recovery_us.filter(|_| driver_crash(&x.fault)))
        .collect()
}

/// [`crash_recoveries`] of the faults none of whose waits the kernel held up.
fn unstalled_crash_recoveries(records: &[Record], stalls: &[KernelStall]) -> Vec<u64> {
    let stalled: std::collections::BTreeSet<usize> = stalls.iter().map(|k| k.fault_index).collect();
    crash_recoveries(records.iter().filter(|x| !stalled.contains(&x.index)))
}

/// The family a fault is drawn under in the throughput plot.
fn family(f: &Fault) -> &'static str {
    match f {
        Fault::Inject { .. } => "inject (crash)",
        Fault::Signal { .. } => "external signal",
        Fault::InitCrash { .. } => "init crash loop",
        Fault::Misbehave(m) if m.name().contains("bit-flip") => "swifi bit flip",
        Fault::StorageBitFlip { .. } => "swifi bit flip",
        Fault::Misbehave(
            crate::misbehave::Misbehaviour::FdExhaustion | crate::misbehave::Misbehaviour::MemoryLimit,
        )
        | Fault::ExecFails => "resource",
        Fault::Misbehave(_) => "misbehaving driver",
        Fault::SupervisorKill { .. } => "supervisor kill",
    }
}

/// The JSON document.
#[derive(Debug, serde::Serialize)]
struct Json<'a> {
    command: &'a str,
    machine: &'a Machine,
    faults_applied: usize,
    faults_per_second: f64,
    passed: bool,
    recovery: BTreeMap<String, Percentiles>,
    outcomes: BTreeMap<String, BTreeMap<String, usize>>,
    handling: BTreeMap<String, BTreeMap<String, usize>>,
    run: &'a RunResult,
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// Writes `report.md`, `report.json`, `recovery-cdf.svg` and
/// `throughput.svg` into `out`; returns the Markdown.
///
/// # Errors
/// A file cannot be written or a plot drawn.
pub fn write(out: &Path, command: &str, machine: &Machine, r: &RunResult) -> Result<String, CampaignError> {
    std::fs::create_dir_all(out).map_err(|e| CampaignError::io(out.display(), e))?;
    let rec = recovery_by_kind(&r.records);
    crate::plot::recovery_cdf(&out.join("recovery-cdf.svg"), &rec)?;
    let marks: Vec<(f64, String)> = r.records.iter().map(|x| (x.at_ms / 1000.0, family(&x.fault).to_owned())).collect();
    crate::plot::throughput(&out.join("throughput.svg"), &r.throughput, &marks)?;

    let mut outcomes: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut handling: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for x in &r.records {
        *outcomes.entry(x.class.clone()).or_default().entry(x.outcome.title().to_owned()).or_default() += 1;
        *handling.entry(x.class.clone()).or_default().entry(format!("{:?}", x.handling)).or_default() += 1;
    }
    let n = r.records.len();
    let rate = if r.fault_seconds > 0.0 { n as f64 / r.fault_seconds } else { 0.0 };
    let passed = r.violation.is_none() && n == r.planned;
    let total = |o: Outcome| r.records.iter().filter(|x| x.outcome == o).count();

    let mut md = String::new();
    let _ = writeln!(md, "# reinc fault-injection campaign\n");
    let _ = writeln!(md, "Command: `{command}`  \nSeed: **{}** (the same seed replays the same schedule)\n", r.seed);
    match &r.violation {
        None if passed => {
            let _ = writeln!(md, "**Result: PASS.** {n} faults applied, every invariant held.\n");
        }
        None => {
            let _ = writeln!(md, "**Result: INCOMPLETE.** {n} of {} faults applied.\n", r.planned);
        }
        Some(v) => {
            let _ = writeln!(
                md,
                "**Result: FAIL** at fault index {} — reproduce with `{}`:\n\n```text\n{}\n```\n",
                v.fault_index,
                r.repeat(v.fault_index + 1),
                v.what
            );
        }
    }
    let _ = writeln!(md, "## Machine\n");
    let _ = writeln!(
        md,
        "{}, {} cores, {} MiB, Linux {}, load average {:.2} at the start (other tenants share these cores).\n",
        machine.cpu, machine.cores, machine.memory_mib, machine.kernel, machine.load_at_start
    );
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(md, "| figure | value |\n|---|---|");
    let _ = writeln!(md, "| faults applied | {n} of {} planned |", r.planned);
    let _ = writeln!(
        md,
        "| lanes | {} (each a supervisor with its own drivers, load and injector; fault i runs in lane i mod {}) |",
        r.lanes, r.lanes
    );
    let _ = writeln!(
        md,
        "| hot standby of the journaled load drivers | {} lanes (`--standby {}`) |",
        if r.standby == crate::run::Standby::None { "no" } else { r.standby.name() },
        r.standby.name()
    );
    let _ = writeln!(md, "| fault phase | {:.1} s, **{rate:.1} faults/s** |", r.fault_seconds);
    let million_min = if rate > 0.0 { 1e6 / rate / 60.0 } else { f64::INFINITY };
    let _ = writeln!(
        md,
        "| 1 000 000 faults at this rate | {million_min:.0} min ({}) |",
        if million_min < 60.0 { "within the 60-minute target" } else { "the 60-minute target is not reached" }
    );
    for (d, a) in &r.answered {
        let _ = writeln!(md, "| requests answered by {d} | {a} |");
    }
    let _ = writeln!(md, "| `drvctl blk` write+read rounds verified | {} |", r.blk_rounds);
    let _ = writeln!(md, "| NBD requests through `reinc-nbd`, each checked against the model | {} |", r.nbd_requests);
    let kills: Vec<&Record> = r.records.iter().filter(|x| matches!(x.fault, Fault::SupervisorKill { .. })).collect();
    let _ = writeln!(
        md,
        "| supervisor SIGKILLs applied (each followed at once by a new supervisor) | {} (the lanes' own count: {}) |",
        kills.len(),
        r.supervisor_kills
    );
    let kill_pct = |v: Vec<u64>| {
        percentiles(&v).map_or_else(
            || "not measured".to_owned(),
            |p| format!("p50 {} ms, p99 {} ms, max {} ms (n = {})", ms(p.p50_us), ms(p.p99_us), ms(p.max_us), p.n),
        )
    };
    if !kills.is_empty() {
        let _ = writeln!(
            md,
            "| supervisor kill → every load driver running again | {} |",
            kill_pct(kills.iter().filter_map(|x| x.restart_us).collect())
        );
        let _ = writeln!(
            md,
            "| supervisor kill → first reply executed by a new driver | {} |",
            kill_pct(kills.iter().filter_map(|x| x.recovery_us).collect())
        );
    }
    for (d, k) in &r.restarts {
        let _ = writeln!(md, "| restarts of {d} | {k} |");
    }
    let _ = writeln!(
        md,
        "| hang verdicts: killed as hung / starved of CPU, left running | {} / {} |",
        r.hang_verdicts.hung, r.hang_verdicts.starved
    );
    let _ = writeln!(
        md,
        "| kernel stalls: waits held up by an instance in uninterruptible sleep, waited out | {} |",
        r.kernel_stalls.len()
    );
    let _ = writeln!(md, "| requests lost | {} |", if r.violation.is_none() { "0" } else { "see the failure" });
    let _ =
        writeln!(md, "| requests executed twice | {} |", if r.violation.is_none() { "0" } else { "see the failure" });
    let _ = writeln!(md, "| supervisor | {} |", r.supervisor_exit);
    let _ = writeln!(
        md,
        "| corruption detected / silent | {} / {} |\n",
        total(Outcome::CorruptionDetected),
        total(Outcome::CorruptionSilent)
    );
    let storage_silent = r
        .records
        .iter()
        .filter(|x| x.class.starts_with("swifi storage") && x.outcome == Outcome::CorruptionSilent)
        .count();
    let storage_flips = r.records.iter().filter(|x| x.class.starts_with("swifi storage")).count();
    let _ = writeln!(
        md,
        "Storage path (end-to-end block checksums): {storage_flips} bit flips on the device, in requests and in replies; **{storage_silent} silent**.\n"
    );
    if !r.checks.is_empty() {
        let _ = writeln!(md, "Final checks:\n\n```text\n{}\n```\n", r.checks.join("\n"));
    }

    // Where the fault phase's time goes: in each lane, a fault lasts until
    // the lane's next fault starts.
    let mut cost: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
    for lane in 0..r.lanes.max(1) {
        let in_lane: Vec<&Record> = r.records.iter().filter(|x| x.index % r.lanes.max(1) == lane).collect();
        for w in in_lane.windows(2) {
            let c = cost.entry(family(&w[0].fault)).or_default();
            c.0 += 1;
            c.1 += w[1].at_ms - w[0].at_ms;
        }
    }
    let spent: f64 = cost.values().map(|c| c.1).sum();
    if spent > 0.0 {
        let _ =
            writeln!(md, "Where the fault phase's time goes (a fault lasts until the next one of its lane starts):\n");
        let _ = writeln!(md, "| family | n | mean ms per fault | share of the time |\n|---|---:|---:|---:|");
        for (f, (k, t)) in &cost {
            let _ = writeln!(md, "| {f} | {k} | {:.1} | {:.0} % |", t / *k as f64, 100.0 * t / spent);
        }
        let _ = writeln!(md);
    }

    let _ = writeln!(md, "## Outcomes per fault class\n");
    let _ = write!(md, "| class | n |");
    for o in Outcome::ALL {
        let _ = write!(md, " {} |", o.title());
    }
    for h in Handling::ALL {
        let _ = write!(md, " sup: {h:?} |");
    }
    let _ = write!(md, "\n|---|---:|");
    for _ in 0..Outcome::ALL.len() + Handling::ALL.len() {
        let _ = write!(md, "---:|");
    }
    let _ = writeln!(md);
    for (class, o) in &outcomes {
        let count: usize = o.values().sum();
        let _ = write!(md, "| {class} | {count} |");
        for x in Outcome::ALL {
            let _ = write!(md, " {} |", o.get(x.title()).copied().unwrap_or(0));
        }
        for h in Handling::ALL {
            let _ = write!(md, " {} |", handling[class].get(&format!("{h:?}")).copied().unwrap_or(0));
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "\n*sup:* what the supervisor did — `Restarted`: killed or saw die the instance and launched a new generation \
         (for a misbehaving driver: the protocol violation was rejected by killing it); `Ignored`: the frame was dropped \
         (stale generation) or harmless (pongs nobody asked for) and the instance went on; `Quarantined`/`Poisoned`: the \
         restart policy's answer, seen by the client as a definite `DriverFailed`/`Poisoned`.\n"
    );
    let mut notes: BTreeMap<&str, &str> = BTreeMap::new();
    for x in &r.records {
        if !x.note.is_empty() {
            notes.entry(x.class.as_str()).or_insert(x.note.as_str());
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(md, "One example per class of what was seen:\n");
        for (c, w) in notes {
            let _ = writeln!(md, "- {c}: {}", w.replace('\n', " "));
        }
        let _ = writeln!(md);
    }

    let _ = writeln!(md, "## Recovery time\n");
    let _ = writeln!(
        md,
        "From the fault (the `kill`, or arming the plan, which fires within 1–3 requests under load) to the first \
         reply of a request the new instance executed (exec log for storage and net, the reply's generation for the \
         misbehave driver; the bench driver's replies carry no generation, so it has no recovery samples). Hang and \
         SIGSTOP include the heartbeat timeout (3 × 20 ms).\n"
    );
    let _ = writeln!(md, "| kind | n | p50 ms | p99 ms | p99.9 ms | max ms |\n|---|---:|---:|---:|---:|---:|");
    let mut pct = BTreeMap::new();
    for (k, v) in &rec {
        if let Some(p) = percentiles(v) {
            let _ = writeln!(
                md,
                "| {k} | {} | {} | {} | {} | {} |",
                p.n,
                ms(p.p50_us),
                ms(p.p99_us),
                ms(p.p999_us),
                ms(p.max_us)
            );
            pct.insert(k.clone(), p);
        }
    }
    let crash = crash_recoveries(r.records.iter());
    if let Some(p) = percentiles(&crash) {
        let _ = writeln!(
            md,
            "\nCrash faults (not hang/SIGSTOP): n={}, p99.9 = **{} ms** (target ≤ 10 ms: {}).\n",
            p.n,
            ms(p.p999_us),
            if p.p999_us <= 10_000 { "met" } else { "not met on this shared machine" }
        );
        // The same without the faults whose waits the kernel held up (see
        // "Kernel stalls" below): both figures, so the reader can tell the
        // host's stalls from the supervisor's tail.
        let rest = unstalled_crash_recoveries(&r.records, &r.kernel_stalls);
        if let Some(q) = percentiles(&rest).filter(|q| q.n < p.n) {
            let _ = writeln!(
                md,
                "Without the {} crash faults whose waits the kernel held up: n={}, p99.9 = {} ms.\n",
                p.n - q.n,
                q.n,
                ms(q.p999_us)
            );
        }
    }
    // The two restart paths, split by lane (`--standby`).
    let lanes = r.lanes.max(1);
    for (standby, path) in [(false, "a spawn"), (true, "a hot standby promoted")] {
        let v = crash_recoveries(r.records.iter().filter(|x| r.standby.lane(x.index % lanes) == standby));
        if let Some(p) = percentiles(&v) {
            let _ = writeln!(
                md,
                "- crash faults recovered by {path}: n={}, p50 {} ms, p99 {} ms, p99.9 {} ms",
                p.n,
                ms(p.p50_us),
                ms(p.p99_us),
                ms(p.p999_us)
            );
        }
    }
    let _ = writeln!(md);
    if let Some(line) = shared_stalls(r, 100_000) {
        let _ = writeln!(md, "{line}\n");
    }
    if let Some(line) = kernel_stalls(&r.kernel_stalls) {
        let _ = writeln!(md, "{line}\n");
    }
    let _ = writeln!(md, "![recovery CDF](recovery-cdf.svg)\n\n![throughput](throughput.svg)\n");

    let _ = writeln!(md, "## Compared with MINIX 3 (DSN 2009)\n");
    let _ = writeln!(
        md,
        "MINIX 3's fault-isolation campaign (Herder et al., *Fault Isolation for Device Drivers*, DSN 2009) injected \
         3.4 million faults into its drivers by software-implemented fault injection, which mutates the driver's code \
         to emulate programming errors, and the OS never crashed. This campaign differs in kind: reinc's drivers are \
         Linux processes and the faults are applied at process level (crash points × kinds, signals, protocol \
         misbehaviour, resource exhaustion, bit flips in replies, driver state and the device), not mutations of \
         driver code. It checks more than survival — no request lost or executed twice, device equal to a model — \
         but it ran {n} faults, not millions (the rate above says how long a million would take here). The \
         comparable claim is the supervisor's: it survived every fault of this run{}.\n",
        if r.supervisor_exit.contains("alive throughout") { " and exited 0 at the end" } else { " — NOT: see above" }
    );

    let json = Json {
        command,
        machine,
        faults_applied: n,
        faults_per_second: rate,
        passed,
        recovery: pct,
        outcomes,
        handling,
        run: r,
    };
    let text = serde_json::to_string_pretty(&json).map_err(|e| CampaignError::Setup(format!("report.json: {e}")))?;
    std::fs::write(out.join("report.json"), text)
        .map_err(|e| CampaignError::io(out.join("report.json").display(), e))?;
    std::fs::write(out.join("report.md"), &md).map_err(|e| CampaignError::io(out.join("report.md").display(), e))?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=1000).collect();
        let p = percentiles(&v).unwrap();
        assert_eq!((p.n, p.p50_us, p.p99_us, p.p999_us, p.max_us), (1000, 500, 990, 999, 1000));
        assert_eq!(percentiles(&[7]).unwrap().p999_us, 7);
        assert!(percentiles(&[]).is_none());
    }

    #[test]
    fn the_faults_the_kernel_held_up_can_be_left_out_of_the_crash_recoveries() {
        let kill = |index, us| Record {
            index,
            fault: Fault::Signal {
                target: crate::schedule::Target::Storage,
                signal: crate::schedule::ExternalSignal::Kill,
                delay_us: 0,
            },
            class: "external SIGKILL".into(),
            at_ms: 0.0,
            outcome: Outcome::Recovered,
            handling: Handling::Restarted,
            recovery_us: Some(us),
            restart_us: None,
            note: String::new(),
        };
        let records = [kill(0, 5_000), kill(1, 48_300_000), kill(2, 7_000)];
        let stall = KernelStall { fault_index: 1, seconds: 48.3, stack: "__mmap_region".into() };
        assert_eq!(crash_recoveries(records.iter()), vec![5_000, 48_300_000, 7_000]);
        assert_eq!(unstalled_crash_recoveries(&records, &[stall]), vec![5_000, 7_000]);
        assert_eq!(unstalled_crash_recoveries(&records, &[]).len(), 3);
    }

    #[test]
    fn kernel_stalls_name_the_longest_and_the_commonest_function() {
        assert_eq!(kernel_stalls(&[]), None);
        let stall = |fault_index, seconds, stack: &str| KernelStall { fault_index, seconds, stack: stack.into() };
        let line = kernel_stalls(&[
            stall(10, 3.3, "unlink_file_vma_batch_process<free_pgtables<exit_mmap"),
            stall(11, 8.7, "__mmap_region<do_mmap"),
            stall(12, 3.1, "unlink_file_vma_batch_process<free_pgtables<exit_mmap"),
        ])
        .unwrap();
        assert!(line.contains("**Kernel stalls: 3**"), "{line}");
        assert!(line.contains("8.7 s (fault 11, `__mmap_region<do_mmap`)"), "{line}");
        assert!(line.contains("2 of them were in `unlink_file_vma_batch_process`"), "{line}");
    }
}
