//! `cargo xtask qemu-test --machine rpi3-fw`: the bare-metal firmware of
//! `core-nostd/firmware/rpi3` on QEMU `raspi3b`, and its guest suite.
//!
//! Steps: the firmware library's host unit tests (`cargo test --lib` for
//! the host), its lints (clippy and rustdoc, warnings as errors), the image (`cargo build --release` in the firmware's own
//! workspace, for `aarch64-unknown-none`), its section sizes read from the
//! ELF section headers, one boot (`-kernel <elf> -nographic -no-reboot`:
//! the firmware ends by a watchdog reset, which `-no-reboot` turns into
//! QEMU's exit), then the checks.
//!
//! # Where the verdicts come from
//! The firmware prints facts, one `FW <event> key=value …` line each (the
//! grammar is in the firmware's crate doc), and decides nothing. Every
//! check here is derived from those lines: toggle counts per phase against
//! the phase's announced count, GPLEV0 read back after every commit against
//! the committed pin level, the fault → policy → launch → ready → replay →
//! commit sequence of each injected fault, backoff delays against the
//! announced policy, the storm's quarantine and the timer task's progress
//! through it. The checks are unit-tested below on a transcript of a real
//! run and on mutations of it that each must fail.
//!
//! Rejected: making the firmware print `GUEST-TEST` verdicts for
//! `console.rs` (as the Linux guests do). The Linux guest programs are
//! ordinary std binaries with their own tests; assertions compiled into
//! the image could not be tested without booting it, and a firmware bug
//! could then also hide its own failure. The console parser's `Report`,
//! `TestResult` and `End` are reused for reporting.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reinc_guest_protocol::Verdict;

use crate::apt::ensure_qemu;
use crate::console::{End, Report, TestResult, printable};
use crate::qemu_test::{Line, run_qemu};
use crate::util::{self, Error, IoContext, Result};

/// The `--machine` name.
pub const MACHINE: &str = "rpi3-fw";
/// The firmware crate, relative to the workspace root.
pub const CRATE_DIR: &str = "core-nostd/firmware/rpi3";
/// Its target.
pub const TARGET: &str = "aarch64-unknown-none";
/// The image, relative to the workspace root (the firmware's
/// `.cargo/config.toml` puts its target directory in `target/firmware`).
pub const IMAGE: &str = "target/firmware/aarch64-unknown-none/release/reinc-firmware-rpi3";
const QEMU_BINARY: &str = "qemu-system-aarch64";
const QEMU_PACKAGE: &str = "qemu-system-arm";
/// Cores 1..3 are parked by the image; one TCG thread is plenty.
const QEMU_ARGS: [&str; 6] = ["-M", "raspi3b", "-nographic", "-no-reboot", "-accel", "tcg,thread=single"];
/// The whole run takes about 10 s; the margin is for busy machines.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the firmware suite, printing one line per check and
/// `rpi3-fw: N passed, N failed in S s`; returns the counts.
pub fn run_counted(verbose: bool, timeout: Option<u64>) -> (usize, usize) {
    let started = Instant::now();
    println!(
        "{MACHINE}: bare-metal firmware ({CRATE_DIR}) on QEMU raspi3b: gpio_core and timer_core as supervised tasks"
    );
    let mut report = Report { tests: Vec::new(), problems: Vec::new(), tail: Vec::new() };
    // Before the lints: clippy and rustdoc of the image build for the
    // target too, and on a fresh machine it is not installed yet.
    if let Err(e) = crate::test::ensure_rust_target(TARGET) {
        report.problems.push(format!("Rust target {TARGET}: {e}"));
    }
    match host_unit_tests() {
        Ok((passed, failed)) => {
            let verdict = if failed == 0 {
                Verdict::Ok
            } else {
                Verdict::Fail(format!("{failed} of {} failed", passed + failed))
            };
            println!("  {}  {MACHINE} host unit tests of the firmware library ({passed} passed)", mark(&verdict));
            for i in 0..passed {
                report.tests.push(TestResult { name: format!("host-unit-test-{i}"), verdict: Verdict::Ok });
            }
            if failed > 0 {
                report.tests.push(TestResult { name: "host unit tests".into(), verdict });
            }
        }
        Err(e) => report.problems.push(format!("host unit tests: {e}")),
    }
    for t in lints() {
        println!("  {}  {MACHINE} {}", mark(&t.verdict), t.name);
        report.tests.push(t);
    }
    match boot(verbose, timeout.map_or(TIMEOUT, Duration::from_secs)) {
        Ok((lines, end)) => {
            for t in checks(&lines, &end) {
                match &t.verdict {
                    Verdict::Ok => println!("  ok    {MACHINE} {}", t.name),
                    Verdict::Fail(why) => println!("  FAIL  {MACHINE} {}: {why}", t.name),
                }
                report.tests.push(t);
            }
            if report.failed() > 0 && !verbose {
                println!("  last console lines of {MACHINE}:");
                for l in lines.iter().rev().take(15).rev() {
                    println!("    | {}", printable(l));
                }
            }
        }
        Err(e) => report.problems.push(format!("could not boot: {e}")),
    }
    for p in &report.problems {
        println!("  FAIL  {MACHINE}: {p}");
    }
    println!(
        "{MACHINE}: {} passed, {} failed in {:.1} s",
        report.passed(),
        report.failed(),
        started.elapsed().as_secs_f64()
    );
    (report.passed(), report.failed())
}

fn mark(v: &Verdict) -> &'static str {
    if *v == Verdict::Ok { "ok  " } else { "FAIL" }
}

fn firmware_dir() -> PathBuf {
    util::workspace_root().join(CRATE_DIR)
}

/// `cargo test --lib` of the firmware for the host; returns (passed, failed).
fn host_unit_tests() -> Result<(usize, usize)> {
    let host = host_triple()?;
    let mut cmd = util::cargo();
    cmd.current_dir(firmware_dir()).args(["test", "--lib", "--target", &host]).stdout(Stdio::piped());
    let what = util::describe(&cmd);
    eprintln!("$ {what} (in {CRATE_DIR})");
    let out = cmd.output().map_err(|source| Error::Spawn { what: what.clone(), source })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut passed, mut failed) = (0, 0);
    for c in text.lines().filter_map(crate::test::parse_test_result) {
        passed += c.passed;
        failed += c.failed;
    }
    if !out.status.success() && failed == 0 {
        return Err(Error::Command { what, status: out.status.to_string() });
    }
    Ok((passed, failed))
}

/// The workspace's lint bar for the firmware too (the workspace's own
/// lint stage does not reach this separate workspace): clippy with
/// warnings as errors for the image and for the host tests, and rustdoc
/// with warnings as errors.
fn lints() -> Vec<TestResult> {
    let host = host_triple().unwrap_or_else(|_| "x86_64-unknown-linux-gnu".into());
    let clippy_host = ["clippy", "--lib", "--tests", "--target", host.as_str(), "--", "-D", "warnings"];
    let runs: [(&str, &[&str], bool); 3] = [
        ("clippy_of_the_image_denies_warnings", &["clippy", "--release", "--", "-D", "warnings"], false),
        ("clippy_of_the_host_tests_denies_warnings", &clippy_host, false),
        ("cargo_doc_denies_warnings", &["doc", "--no-deps"], true),
    ];
    runs.into_iter()
        .map(|(name, args, rustdoc)| {
            let mut cmd = util::cargo();
            cmd.current_dir(firmware_dir()).args(args);
            if rustdoc {
                cmd.env("RUSTDOCFLAGS", "-D warnings");
            }
            let verdict = match util::run(&mut cmd) {
                Ok(()) => Verdict::Ok,
                Err(e) => Verdict::Fail(format!("in {CRATE_DIR}: {e}")),
            };
            TestResult { name: name.to_string(), verdict }
        })
        .collect()
}

fn host_triple() -> Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = util::output(Command::new(rustc).arg("-vV"))?;
    out.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .ok_or_else(|| Error::Other(format!("`rustc -vV` names no host triple:\n{out}")))
}

/// Builds the image and returns its path.
pub fn build_image() -> Result<PathBuf> {
    crate::test::ensure_rust_target(TARGET)?;
    let mut cmd = util::cargo();
    cmd.current_dir(firmware_dir()).args(["build", "--release"]);
    util::run(&mut cmd)?;
    let image = util::workspace_root().join(IMAGE);
    if !image.is_file() {
        return Err(Error::Other(format!("the firmware build succeeded but {} does not exist", image.display())));
    }
    Ok(image)
}

fn boot(verbose: bool, timeout: Duration) -> Result<(Vec<String>, End)> {
    let image = build_image()?;
    let sizes = section_sizes(&image)?;
    println!("{MACHINE}: image {} ({})", image.display(), describe_sizes(&sizes));
    let qemu = ensure_qemu(QEMU_BINARY, QEMU_PACKAGE)?;
    let mut cmd = qemu.command();
    cmd.args(QEMU_ARGS).arg("-kernel").arg(&image);
    println!("{MACHINE}: booting under TCG (limit {} s)", timeout.as_secs());
    if verbose {
        println!("$ {}", util::describe(&cmd));
    }
    let mut lines = Vec::new();
    let end = run_qemu(cmd, timeout, |line| {
        match line {
            Line::Console(l) => {
                if verbose {
                    println!("{MACHINE}| {}", printable(&l));
                }
                let done = l.trim_end().starts_with("FW end");
                lines.push(l);
                return done;
            }
            Line::Qemu(l) => {
                println!("{MACHINE}: qemu: {l}");
                lines.push(format!("qemu: {l}"));
            }
        }
        false
    })?;
    Ok((lines, end))
}

/// Sizes of the image's allocated sections, by name, in header order.
pub fn section_sizes(elf: &Path) -> Result<Vec<(String, u64)>> {
    let bytes = std::fs::read(elf).at(elf)?;
    parse_sections(&bytes).map_err(|why| Error::Other(format!("{}: {why}", elf.display())))
}

/// `.text 12345 B, .rodata …`, with the sizes that matter first.
pub fn describe_sizes(sizes: &[(String, u64)]) -> String {
    sizes.iter().map(|(n, s)| format!("{n} {s} B")).collect::<Vec<_>>().join(", ")
}

/// Reads the section headers of a little-endian ELF64 file and returns the
/// name and size of every section that occupies memory (SHF_ALLOC).
fn parse_sections(b: &[u8]) -> std::result::Result<Vec<(String, u64)>, String> {
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]) as usize);
    let u32_at = |o: usize| b.get(o..o + 4).map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")));
    let u64_at = |o: usize| b.get(o..o + 8).map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")));
    if b.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF file".into());
    }
    if b.get(4..6) != Some(&[2, 1]) {
        return Err("not a little-endian 64-bit ELF file".into());
    }
    let short = || "truncated ELF header".to_string();
    let shoff = u64_at(0x28).ok_or_else(short)? as usize;
    let shentsize = u16_at(0x3a).ok_or_else(short)?;
    let shnum = u16_at(0x3c).ok_or_else(short)?;
    let shstrndx = u16_at(0x3e).ok_or_else(short)?;
    if shentsize < 0x40 {
        return Err(format!("section header entries of {shentsize} bytes (ELF64 needs 64)"));
    }
    let header = |i: usize| shoff + i * shentsize;
    let bad = |i: usize| format!("section header {i} lies outside the file");
    let strtab = u64_at(header(shstrndx) + 0x18).ok_or_else(|| bad(shstrndx))? as usize;
    let mut out = Vec::new();
    for i in 0..shnum {
        let h = header(i);
        let name_off = u32_at(h).ok_or_else(|| bad(i))? as usize;
        let flags = u64_at(h + 0x08).ok_or_else(|| bad(i))?;
        let size = u64_at(h + 0x20).ok_or_else(|| bad(i))?;
        const SHF_ALLOC: u64 = 2;
        if flags & SHF_ALLOC == 0 {
            continue;
        }
        let name_bytes = b.get(strtab + name_off..).ok_or_else(|| format!("section {i}'s name is outside the file"))?;
        let end = name_bytes.iter().position(|&c| c == 0).unwrap_or(name_bytes.len());
        out.push((String::from_utf8_lossy(&name_bytes[..end]).into_owned(), size));
    }
    Ok(out)
}

/// One `FW <event> key=value …` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fact {
    /// Index of the console line, for ordering.
    at: usize,
    event: String,
    fields: Vec<(String, String)>,
}

impl Fact {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn num(&self, key: &str) -> Option<u64> {
        let v = self.get(key)?;
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        }
    }

    fn is(&self, event: &str, task: &str) -> bool {
        self.event == event && self.get("task") == Some(task)
    }

    /// Whether the committed level of pin 17 (`pin17=`) is what GPLEV0
    /// read back (`gplev0=`).
    fn pin_matches_gplev0(&self) -> Option<bool> {
        let level = match self.get("pin17")? {
            "1" => 1,
            "0" => 0,
            _ => return None,
        };
        Some((self.num("gplev0")? >> 17) & 1 == level)
    }
}

/// Splits `key=value key="quoted value" …`.
fn parse_fields(rest: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some(eq) = s.find('=') else { break };
        let key = s[..eq].trim().to_string();
        let after = &s[eq + 1..];
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(' ') {
                Some(sp) => (&after[..sp], &after[sp..]),
                None => (after, ""),
            }
        };
        out.push((key, value.to_string()));
        s = next.trim_start();
    }
    out
}

fn facts(lines: &[String]) -> Vec<Fact> {
    lines
        .iter()
        .enumerate()
        .filter_map(|(at, l)| {
            let rest = l.trim_end_matches(['\r', '\n']).strip_prefix("FW ")?;
            let (event, fields) = rest.split_once(' ').unwrap_or((rest, ""));
            Some(Fact { at, event: event.to_string(), fields: parse_fields(fields) })
        })
        .collect()
}

/// A phase of the scenario: its `FW phase` line and the facts until the next.
#[derive(Debug)]
struct Phase<'a> {
    head: &'a Fact,
    facts: &'a [Fact],
}

fn phases(all: &[Fact]) -> Vec<Phase<'_>> {
    let starts: Vec<usize> = all.iter().enumerate().filter(|(_, f)| f.event == "phase").map(|(i, _)| i).collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let end = starts.get(k + 1).copied().unwrap_or(all.len());
            Phase { head: &all[i], facts: &all[i + 1..end] }
        })
        .collect()
}

type Check = std::result::Result<(), String>;

fn ensure(cond: bool, why: impl FnOnce() -> String) -> Check {
    if cond { Ok(()) } else { Err(why()) }
}

/// Every check, in order, from the console lines and how QEMU ended.
fn checks(lines: &[String], end: &End) -> Vec<TestResult> {
    let all = facts(lines);
    let ph = phases(&all);
    let named = |name: &str| ph.iter().find(|p| p.head.get("name") == Some(name));
    let list: Vec<(&str, Check)> = vec![
        ("boots_and_ends_with_a_watchdog_reset", check_boot_and_end(&all, end)),
        ("no_task_or_kernel_is_fatal", check_no_fatal(&all)),
        ("every_stack_sits_above_an_unmapped_guard_page", check_guards(&all)),
        ("every_phase_has_its_announced_number_of_toggles", check_toggle_counts(&ph)),
        ("blink_is_paced_by_compare_3_interrupts", check_paced(named("blink"), &all)),
        ("toggles_alternate_across_every_fault", check_alternation(&all)),
        ("gplev0_matches_the_committed_level_after_every_commit", check_gplev0(&all)),
        ("each_toggle_reply_is_what_was_committed", check_reply_is_commit(&all)),
        ("panic_restarts_restores_and_replays", check_fault(named("fault-panic"), "panic", true)),
        ("translation_fault_restarts_restores_and_replays", check_segv(named("fault-segv"))),
        ("alignment_fault_restarts_restores_and_replays", check_fault(named("fault-abrt"), "alignment-fault", true)),
        ("hang_is_detected_then_restarts_restores_and_replays", check_hang(named("fault-hang"))),
        (
            "stack_overflow_hits_the_guard_page_then_restarts_and_replays",
            check_stack_overflow(named("fault-stack"), &all),
        ),
        ("timer_fault_replays_its_wait_without_a_double_fire", check_timer_fault(named("timer-fault"))),
        ("each_fault_leaves_a_post_mortem_trace_of_its_request", check_traces(&all)),
        ("restarts_back_off_as_the_policy_says", check_backoff(&all, &ph)),
        ("storm_quarantines_gpio_and_fails_its_request", check_storm(named("storm"), &all)),
        ("timer_task_keeps_serving_through_the_storm", check_timer_alive(named("storm"), &all)),
        ("revive_restarts_gpio_with_the_committed_pins", check_revive(named("revive"), &all)),
        ("final_pins_match_the_committed_state", check_final(&all)),
    ];
    list.into_iter()
        .map(|(name, r)| TestResult {
            name: name.to_string(),
            verdict: match r {
                Ok(()) => Verdict::Ok,
                Err(why) => Verdict::Fail(why),
            },
        })
        .collect()
}

fn check_boot_and_end(all: &[Fact], end: &End) -> Check {
    let boot = all.iter().find(|f| f.event == "boot").ok_or("no `FW boot` line")?;
    ensure(matches!(boot.num("el"), Some(1..=3)), || format!("boot line names no exception level: {boot:?}"))?;
    let last = all.iter().find(|f| f.event == "end").ok_or("no `FW end` line: the scenario did not finish")?;
    ensure(last.get("status") == Some("done"), || format!("the firmware ended with {:?}", last.get("status")))?;
    match end {
        End::Exited(Some(0)) => Ok(()),
        End::Exited(code) => Err(format!("QEMU exited with {code:?} after the watchdog reset, not 0")),
        End::TimedOut(t) => Err(format!("timed out after {} s", t.as_secs())),
        End::NoHalt(t) => {
            Err(format!("QEMU did not exit within {} s of `FW end` (watchdog reset failed?)", t.as_secs()))
        }
    }
}

/// Each task's stack and the kernel's have an unmapped page below them
/// (translated at boot, without a fault), and page 0 is unmapped.
fn check_guards(all: &[Fact]) -> Check {
    let guards: Vec<&Fact> = all.iter().filter(|f| f.event == "guard").collect();
    for task in ["timer", "gpio", "blink", "idle", "kernel"] {
        let g =
            guards.iter().find(|f| f.get("task") == Some(task)).ok_or_else(|| format!("no guard line for {task}"))?;
        ensure(g.get("guard-mapped") == Some("false"), || format!("{task}: the guard page below its stack is mapped"))?;
        ensure(g.get("stack-bottom-mapped") == Some("true") && g.get("stack-top-mapped") == Some("true"), || {
            format!("{task}: its stack is not mapped: {:?}", g.fields)
        })?;
    }
    let null = guards.iter().find(|f| f.get("task") == Some("null")).ok_or("no guard line for page 0")?;
    ensure(null.get("guard-mapped") == Some("false"), || "page 0 is mapped: null pointers would not fault".into())
}

fn check_no_fatal(all: &[Fact]) -> Check {
    match all.iter().find(|f| f.event == "fatal") {
        Some(f) => Err(format!("fatal: {:?}", f.fields)),
        None => Ok(()),
    }
}

fn toggles(facts: &[Fact]) -> impl Iterator<Item = &Fact> {
    facts.iter().filter(|f| f.event == "toggle")
}

fn check_toggle_counts(ph: &[Phase<'_>]) -> Check {
    let mut seen = 0;
    for p in ph {
        let Some(want) = p.head.num("toggles") else { continue };
        let got = toggles(p.facts).count() as u64;
        let name = p.head.get("name").unwrap_or("?");
        ensure(got == want, || format!("phase {name}: {got} toggles, announced {want}"))?;
        seen += 1;
    }
    ensure(seen >= 5, || format!("only {seen} phases announce toggles; expected blink, three faults, quiet, revive"))
}

fn check_paced(blink: Option<&Phase<'_>>, all: &[Fact]) -> Check {
    let p = blink.ok_or("no blink phase")?;
    let t: Vec<&Fact> = toggles(p.facts).collect();
    ensure(!t.is_empty(), || "the blink phase has no toggle".into())?;
    // Every toggle waited for a completed `Wait` (consecutive fire counts).
    let fires: Vec<u64> = t.iter().filter_map(|f| f.num("fire")).collect();
    ensure(fires.len() == t.len() && fires.windows(2).all(|w| w[1] == w[0] + 1), || {
        format!("fire counts are not consecutive: {fires:?}")
    })?;
    // A deadline that had already passed when armed (the host stalled QEMU
    // for a whole period) completes by the counter, as on Linux; that is
    // tolerated for half of the toggles, no more (a 200 ms period leaves
    // the host plenty of slack).
    let paced = t.iter().filter(|f| f.get("paced") == Some("irq")).count();
    ensure(paced * 2 >= t.len(), || format!("only {paced} of {} toggles were paced by an interrupt", t.len()))?;
    let last = t.last().expect("non-empty").at;
    let irqs = all.iter().filter(|f| f.event == "irq" && f.get("source") == Some("timer-c3") && f.at <= last).count();
    ensure(irqs >= paced, || format!("{paced} toggles paced by interrupts but only {irqs} compare-3 interrupts"))
}

fn check_alternation(all: &[Fact]) -> Check {
    let t: Vec<&Fact> = toggles(all).collect();
    ensure(t.len() >= 20, || format!("only {} toggles in the whole run", t.len()))?;
    let mut want = "high"; // blink sets the pin low first
    for (i, f) in t.iter().enumerate() {
        ensure(f.num("n") == Some(i as u64 + 1), || format!("toggle #{} is numbered {:?}", i + 1, f.get("n")))?;
        ensure(f.get("level") == Some(want), || format!("toggle {} set {:?}, expected {want}", i + 1, f.get("level")))?;
        want = if want == "high" { "low" } else { "high" };
    }
    Ok(())
}

fn check_gplev0(all: &[Fact]) -> Check {
    let commits: Vec<&Fact> = all.iter().filter(|f| f.is("commit", "gpio")).collect();
    ensure(commits.len() >= toggles(all).count(), || format!("only {} gpio commits", commits.len()))?;
    for c in commits {
        match c.pin_matches_gplev0() {
            Some(true) => {}
            Some(false) => {
                return Err(format!(
                    "commit {}: pin17={} but GPLEV0={}",
                    c.get("id").unwrap_or("?"),
                    c.get("pin17").unwrap_or("?"),
                    c.get("gplev0").unwrap_or("?")
                ));
            }
            None if c.get("pin17") == Some("-") => {}
            None => return Err(format!("commit line without pin17/gplev0: {:?}", c.fields)),
        }
    }
    Ok(())
}

fn check_reply_is_commit(all: &[Fact]) -> Check {
    for t in toggles(all) {
        let commit = all
            .iter()
            .rev()
            .find(|f| f.at < t.at && f.is("commit", "gpio"))
            .ok_or_else(|| format!("toggle {:?} has no gpio commit before it", t.get("n")))?;
        let want = if t.get("level") == Some("high") { "1" } else { "0" };
        ensure(commit.get("pin17") == Some(want), || {
            format!(
                "toggle {:?} answered {:?}, but the commit before it has pin17={:?}",
                t.get("n"),
                t.get("level"),
                commit.get("pin17")
            )
        })?;
    }
    Ok(())
}

/// fault → restart policy → launch of the next generation from the
/// committed pins → ready with the pins restored → replay of the request
/// in flight → its commit by the new generation.
fn check_fault(phase: Option<&Phase<'_>>, kind: &str, after_effect: bool) -> Check {
    let p = phase.ok_or_else(|| format!("no phase injecting {kind}"))?;
    let f = p.facts;
    let fault = f.iter().find(|x| x.is("fault", "gpio")).ok_or("no gpio fault in the phase")?;
    ensure(fault.get("kind") == Some(kind), || format!("fault kind {:?}, expected {kind}", fault.get("kind")))?;
    let id = fault.get("in-flight").filter(|v| *v != "none").ok_or("no request in flight at the fault")?;
    let generation = fault.num("gen").ok_or("fault line without gen")?;
    let committed = fault.get("state").ok_or("fault line without the committed state")?;
    // After-effect: the pin already shows the uncommitted level.
    ensure(fault.pin_matches_gplev0() == Some(!after_effect), || {
        format!(
            "at the fault GPLEV0={:?} and committed pin17={:?}: expected them to {}",
            fault.get("gplev0"),
            fault.get("pin17"),
            if after_effect { "differ (effect applied, not committed)" } else { "agree (nothing applied)" }
        )
    })?;
    let after = |x: &Fact| x.at > fault.at;
    let policy = f.iter().find(|x| after(x) && x.is("policy", "gpio")).ok_or("no policy decision after the fault")?;
    ensure(policy.get("action") == Some("restart"), || format!("policy said {:?}", policy.get("action")))?;
    let next = (generation + 1).to_string();
    let gen_is = |x: &Fact| x.get("gen") == Some(next.as_str());
    let launch =
        f.iter().find(|x| after(x) && x.is("launch", "gpio") && gen_is(x)).ok_or("no launch of the next generation")?;
    let ready = f
        .iter()
        .find(|x| x.at > launch.at && x.is("ready", "gpio") && gen_is(x))
        .ok_or("the new generation never became ready")?;
    ensure(ready.get("state") == Some(committed), || {
        format!("restarted from {:?}, but the committed state at the fault was {committed}", ready.get("state"))
    })?;
    ensure(ready.pin_matches_gplev0() == Some(true), || {
        format!("after restore GPLEV0={:?} but committed pin17={:?}", ready.get("gplev0"), ready.get("pin17"))
    })?;
    let replay = f.iter().find(|x| x.at > ready.at && x.is("replay", "gpio")).ok_or("no replay line")?;
    ensure(replay.num("count") == Some(1), || format!("replayed {:?} requests, expected 1", replay.get("count")))?;
    f.iter()
        .find(|x| x.at > replay.at && x.is("replayed", "gpio") && x.get("id") == Some(id))
        .ok_or_else(|| format!("request {id} was not handed to the new generation"))?;
    let commit = f
        .iter()
        .find(|x| x.at > replay.at && x.is("commit", "gpio") && x.get("id") == Some(id))
        .ok_or_else(|| format!("request {id} was never committed after the replay"))?;
    ensure(gen_is(commit), || format!("request {id} was committed by gen {:?}, not {next}", commit.get("gen")))
}

/// The injected `segv` loads from the first unmapped address.
fn check_segv(phase: Option<&Phase<'_>>) -> Check {
    check_fault(phase, "translation-fault", false)?;
    let fault = phase.and_then(|p| p.facts.iter().find(|x| x.is("fault", "gpio"))).ok_or("no gpio fault")?;
    ensure(fault.num("far") == Some(0x8000_0000), || {
        format!("faulting address {:?}, expected 0x80000000", fault.get("far"))
    })
}

/// A task that spins without trapping is declared hung once the limit has
/// passed since its last trap, then recovered like any fault.
fn check_hang(phase: Option<&Phase<'_>>) -> Check {
    check_fault(phase, "hang", true)?;
    let p = phase.ok_or("no hang phase")?;
    let hang = p.facts.iter().find(|x| x.is("hang", "gpio")).ok_or("no hang detection line")?;
    let (silent, limit) = (hang.num("silent-ms").ok_or("no silent-ms")?, hang.num("limit-ms").ok_or("no limit-ms")?);
    ensure(silent >= limit, || format!("declared hung after {silent} ms, before the {limit} ms limit"))?;
    // Detected by the compare-1 deadline, not by some later trap; the
    // margin is for a host that deschedules QEMU.
    ensure(silent < limit * 10, || format!("detected only after {silent} ms for a {limit} ms limit"))
}

/// A runaway recursion faults on the page below gpio's own stack (the
/// guard the boot reported), not in another task's stack, and is then
/// recovered like any fault.
fn check_stack_overflow(phase: Option<&Phase<'_>>, all: &[Fact]) -> Check {
    check_fault(phase, "translation-fault", false)?;
    let p = phase.ok_or("no stack-overflow phase")?;
    let fault = p.facts.iter().find(|x| x.is("fault", "gpio")).ok_or("no gpio fault")?;
    let far = fault.num("far").ok_or("fault line without far")?;
    let guard =
        all.iter().find(|x| x.is("guard", "gpio")).and_then(|x| x.num("guard")).ok_or("no guard line for gpio")?;
    ensure((guard..guard + 4096).contains(&far), || {
        format!("the overflow faulted at {far:#x}, outside gpio's guard page {guard:#x}..{:#x}", guard + 4096)
    })
}

/// The timer task dies after completing a `Wait` but before its reply:
/// the replay by the next generation answers the same fire count.
fn check_timer_fault(phase: Option<&Phase<'_>>) -> Check {
    let p = phase.ok_or("no timer-fault phase")?;
    let f = p.facts;
    let fault = f.iter().find(|x| x.is("fault", "timer")).ok_or("no timer fault in the phase")?;
    ensure(fault.get("kind") == Some("panic"), || format!("timer fault kind {:?}", fault.get("kind")))?;
    let id = fault.get("in-flight").filter(|v| *v != "none").ok_or("no request in flight at the timer fault")?;
    let generation = fault.num("gen").ok_or("fault line without gen")?;
    let before = f
        .iter()
        .rev()
        .find(|x| x.at < fault.at && x.is("commit", "timer"))
        .and_then(|x| x.num("fires"))
        .ok_or("no timer commit before the fault")?;
    let next = (generation + 1).to_string();
    let gen_is = |x: &Fact| x.get("gen") == Some(next.as_str());
    let policy = f.iter().find(|x| x.at > fault.at && x.is("policy", "timer")).ok_or("no policy decision")?;
    ensure(policy.get("action") == Some("restart"), || format!("policy said {:?}", policy.get("action")))?;
    let ready = f.iter().find(|x| x.is("ready", "timer") && gen_is(x)).ok_or("no new timer generation ready")?;
    let replay = f.iter().find(|x| x.at > ready.at && x.is("replay", "timer")).ok_or("no replay line")?;
    ensure(replay.num("count") == Some(1), || format!("replayed {:?} requests, expected 1", replay.get("count")))?;
    let commit = f
        .iter()
        .find(|x| x.at > replay.at && x.is("commit", "timer") && x.get("id") == Some(id))
        .ok_or_else(|| format!("the replayed Wait {id} was never committed"))?;
    ensure(gen_is(commit), || format!("{id} committed by gen {:?}, not {next}", commit.get("gen")))?;
    ensure(commit.num("fires") == Some(before + 1), || {
        format!("the replayed Wait committed fires={:?}; before the fault it was {before}", commit.get("fires"))
    })?;
    let toggle = toggles(f).next().ok_or("no toggle in the phase")?;
    ensure(toggle.num("fire") == Some(before + 1), || {
        format!("the client saw fire {:?}, expected exactly one more than {before}", toggle.get("fire"))
    })?;
    ensure(!f.iter().any(|x| x.is("fault", "gpio")), || "gpio faulted during the timer's fault".into())
}

/// The trace ring of the dead instance, printed right after its fault line.
fn trace_of<'a>(all: &'a [Fact], fault: &Fact) -> Vec<&'a str> {
    let task = fault.get("task");
    all.iter()
        .skip_while(|x| x.at <= fault.at)
        .take_while(|x| x.event == "trace" && x.get("task") == task)
        .filter_map(|x| x.get("event"))
        .collect()
}

/// Every fault's trace ends with the request in flight; what follows its
/// start says how far the instance got: the device effect for a fault
/// after the effect (pins differ from the commit), nothing for one before
/// it, and never the reply.
fn check_traces(all: &[Fact]) -> Check {
    let faults: Vec<&Fact> = all.iter().filter(|x| x.event == "fault").collect();
    ensure(faults.len() >= 5, || format!("only {} faults", faults.len()))?;
    for f in faults {
        let task = f.get("task").unwrap_or("?");
        let generation = f.get("gen").unwrap_or("?");
        let trace = trace_of(all, f);
        ensure(trace.first().is_some_and(|e| e.starts_with("init ") || trace.len() >= 12), || {
            format!("{task} gen {generation}: the trace does not start at the instance's init: {trace:?}")
        })?;
        let id = f
            .get("in-flight")
            .filter(|v| *v != "none")
            .ok_or_else(|| format!("{task} gen {generation}: no request in flight"))?;
        let start = format!("request {id} ");
        let i = trace
            .iter()
            .rposition(|e| e.starts_with(&start))
            .ok_or_else(|| format!("{task} gen {generation}: the trace has no start of {id}: {trace:?}"))?;
        let after = &trace[i + 1..];
        ensure(!after.iter().any(|e| e.starts_with(&format!("reply {id}"))), || {
            format!("{task} gen {generation}: the trace shows a reply to {id}, which was replayed")
        })?;
        let effect = match task {
            "gpio" => "gpio: level",
            _ => "timer: clear_match",
        };
        let applied = after.iter().any(|e| e.starts_with(effect));
        // Only gpio faults report the pins; a timer fault is checked by its phase.
        if let Some(matches) = f.pin_matches_gplev0() {
            ensure(applied != matches, || {
                format!(
                    "{task} gen {generation}: the trace {} the effect of {id}, but the pins {} the commit: {after:?}",
                    if applied { "shows" } else { "lacks" },
                    if matches { "match" } else { "differ from" }
                )
            })?;
        } else {
            ensure(applied, || format!("{task} gen {generation}: the trace lacks the effect of {id}: {after:?}"))?;
        }
    }
    Ok(())
}

fn check_backoff(all: &[Fact], ph: &[Phase<'_>]) -> Check {
    let cfg = all.iter().find(|f| f.event == "policy-config").ok_or("no policy-config line")?;
    let (base, cap, jitter) = (
        cfg.num("base-ms").ok_or("no base")?,
        cfg.num("cap-ms").ok_or("no cap")?,
        cfg.num("jitter-percent").ok_or("no jitter")?,
    );
    let mut attempts = Vec::new();
    for p in ph.iter().filter(|p| p.head.get("name").is_some_and(|n| n.starts_with("fault-"))) {
        let policy = p.facts.iter().find(|x| x.is("policy", "gpio")).ok_or("a fault phase has no policy line")?;
        let attempt = policy.num("attempt").ok_or("policy line without attempt")?;
        let delay = policy.num("delay-ms").ok_or("policy line without delay-ms")?;
        let nominal = if attempt == 0 { 0 } else { (base << (attempt - 1)).min(cap) };
        let floor = nominal - nominal * jitter / 100;
        ensure((floor..=nominal).contains(&delay), || {
            format!("attempt {attempt}: delay {delay} ms outside [{floor}, {nominal}] ms")
        })?;
        let fault = p.facts.iter().find(|x| x.is("fault", "gpio")).ok_or("no fault")?;
        let launch = p.facts.iter().find(|x| x.is("launch", "gpio")).ok_or("no launch")?;
        let waited = launch.num("at-ms").unwrap_or(0).saturating_sub(fault.num("at-ms").unwrap_or(u64::MAX));
        ensure(waited >= delay, || {
            format!("attempt {attempt}: relaunched after {waited} ms, before its {delay} ms delay")
        })?;
        attempts.push(attempt);
    }
    let want: Vec<u64> = (0..attempts.len() as u64).collect();
    ensure(attempts.len() >= 3 && attempts == want, || {
        format!("restart attempts {attempts:?}, expected {want:?} (immediate, then backing off)")
    })
}

fn check_storm(storm: Option<&Phase<'_>>, all: &[Fact]) -> Check {
    let p = storm.ok_or("no storm phase")?;
    let cfg = all.iter().find(|f| f.event == "policy-config").ok_or("no policy-config line")?;
    let max = cfg.num("max-restarts").ok_or("no max-restarts")?;
    let faults = p.facts.iter().filter(|x| x.is("fault", "gpio")).count() as u64;
    let restarts =
        p.facts.iter().filter(|x| x.is("policy", "gpio") && x.get("action") == Some("restart")).count() as u64;
    ensure(faults == max + 1 && restarts == max, || {
        format!(
            "{faults} faults and {restarts} restarts; the policy allows {max} restarts, so expected {} faults",
            max + 1
        )
    })?;
    let q = p
        .facts
        .iter()
        .find(|x| x.is("policy", "gpio") && x.get("action") == Some("quarantine"))
        .ok_or("gpio was not quarantined")?;
    let last_fault = p.facts.iter().rev().find(|x| x.is("fault", "gpio")).ok_or("no fault")?;
    ensure(last_fault.pin_matches_gplev0() == Some(true), || "the pins changed during the storm".into())?;
    p.facts.iter().find(|x| x.at > q.at && x.is("failed", "gpio")).ok_or("the pending request got no DriverFailed")?;
    let answer = p.facts.iter().find(|x| x.event == "answer").ok_or("the client got no answer to its toggle")?;
    ensure(answer.get("result") == Some("driver-failed"), || {
        format!("the client's toggle got {:?}", answer.get("result"))
    })?;
    ensure(!p.facts.iter().any(|x| x.is("commit", "gpio")), || "gpio committed something during the storm".into())
}

fn check_timer_alive(storm: Option<&Phase<'_>>, all: &[Fact]) -> Check {
    let p = storm.ok_or("no storm phase")?;
    let first = p.facts.iter().find(|x| x.is("fault", "gpio")).ok_or("no storm fault")?;
    let q = p
        .facts
        .iter()
        .find(|x| x.is("policy", "gpio") && x.get("action") == Some("quarantine"))
        .ok_or("no quarantine")?;
    let during = p.facts.iter().filter(|x| x.at > first.at && x.at < q.at && x.is("commit", "timer")).count();
    ensure(during >= 1, || "the timer task committed nothing while gpio was restarting".into())?;
    let ticks: Vec<u64> = p.facts.iter().filter(|x| x.event == "tick").filter_map(|x| x.num("fire")).collect();
    ensure(ticks.windows(2).all(|w| w[1] == w[0] + 1), || format!("timer fires not consecutive: {ticks:?}"))?;
    let after = p.facts.iter().filter(|x| x.at > q.at && x.event == "tick").count();
    ensure(after >= 5, || format!("only {after} timer ticks after the quarantine"))?;
    ensure(!p.facts.iter().any(|x| x.is("fault", "timer")), || "the timer task faulted during the storm".into())?;
    let gens: Vec<&str> = p.facts.iter().filter(|x| x.is("commit", "timer")).filter_map(|x| x.get("gen")).collect();
    ensure(gens.windows(2).all(|w| w[0] == w[1]), || format!("the timer task restarted during the storm: {gens:?}"))?;
    let faults = all.iter().filter(|x| x.is("fault", "timer")).count() as u64;
    let fin = all.iter().find(|x| x.is("final", "timer")).ok_or("no final line of the timer task")?;
    ensure(fin.num("gen") == Some(1 + faults) && fin.num("restarts") == Some(faults), || {
        format!(
            "the timer task faulted {faults} times in the whole run but ended at gen {:?} with {:?} restarts",
            fin.get("gen"),
            fin.get("restarts")
        )
    })
}

fn check_revive(revive: Option<&Phase<'_>>, all: &[Fact]) -> Check {
    let p = revive.ok_or("no revive phase")?;
    p.facts.iter().find(|x| x.is("revive", "gpio")).ok_or("no revive")?;
    let before = all
        .iter()
        .rev()
        .find(|x| x.at < p.head.at && x.is("commit", "gpio"))
        .ok_or("nothing was committed before the revive")?;
    let ready = p.facts.iter().find(|x| x.is("ready", "gpio")).ok_or("the revived gpio never became ready")?;
    ensure(ready.get("state") == before.get("state"), || {
        format!("revived with {:?}, last commit was {:?}", ready.get("state"), before.get("state"))
    })?;
    ensure(ready.pin_matches_gplev0() == Some(true), || {
        "after the revive GPLEV0 differs from the committed pin".into()
    })?;
    ensure(p.facts.iter().filter(|x| x.is("commit", "gpio")).count() >= 1, || {
        "the revived gpio committed nothing".into()
    })
}

fn check_final(all: &[Fact]) -> Check {
    let fin = all.iter().find(|x| x.is("final", "gpio")).ok_or("no final line of gpio")?;
    ensure(fin.get("state") != Some("quarantined"), || "gpio ended quarantined".into())?;
    ensure(fin.pin_matches_gplev0() == Some(true), || {
        format!("at the end GPLEV0={:?} but committed pin17={:?}", fin.get("gplev0"), fin.get("pin17"))
    })?;
    ensure(fin.num("queued") == Some(0), || format!("{:?} requests left queued", fin.get("queued")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The console of a real run (`cargo xtask qemu-test --machine rpi3-fw
    /// --verbose`), kept to test the checks without QEMU.
    const TRANSCRIPT: &str = include_str!("firmware/transcript.txt");

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    fn failing(text: &str, end: End) -> Vec<(String, String)> {
        checks(&lines(text), &end)
            .into_iter()
            .filter_map(|t| match t.verdict {
                Verdict::Ok => None,
                Verdict::Fail(why) => Some((t.name, why)),
            })
            .collect()
    }

    fn fails_check(text: &str, name: &str) {
        let f = failing(text, End::Exited(Some(0)));
        assert!(f.iter().any(|(n, _)| n == name), "{name} did not fail; failures: {f:?}");
    }

    #[test]
    fn the_recorded_run_passes_every_check() {
        let f = failing(TRANSCRIPT, End::Exited(Some(0)));
        assert!(f.is_empty(), "{f:#?}");
        assert_eq!(checks(&lines(TRANSCRIPT), &End::Exited(Some(0))).len(), 20);
    }

    #[test]
    fn a_commit_whose_gplev0_disagrees_fails() {
        let bad = TRANSCRIPT.replacen(
            "pin17=1 gplev0=0x00020000 state=17=out/high",
            "pin17=1 gplev0=0x00000000 state=17=out/high",
            1,
        );
        assert_ne!(bad, TRANSCRIPT);
        fails_check(&bad, "gplev0_matches_the_committed_level_after_every_commit");
    }

    #[test]
    fn a_lost_toggle_fails_the_count_and_the_alternation() {
        let text: Vec<&str> = TRANSCRIPT.lines().collect();
        let i = text.iter().position(|l| l.starts_with("FW toggle phase=blink n=5 ")).unwrap();
        let mut cut = text.clone();
        cut.remove(i);
        let cut = cut.join("\n");
        fails_check(&cut, "every_phase_has_its_announced_number_of_toggles");
        fails_check(&cut, "toggles_alternate_across_every_fault");
    }

    #[test]
    fn a_missing_replay_fails_its_fault_check() {
        let text: Vec<&str> = TRANSCRIPT.lines().filter(|l| !l.starts_with("FW replayed task=gpio gen=3 ")).collect();
        fails_check(&text.join("\n"), "translation_fault_restarts_restores_and_replays");
    }

    #[test]
    fn pins_not_restored_at_ready_fail() {
        let text: Vec<String> = TRANSCRIPT
            .lines()
            .map(|l| {
                if l.starts_with("FW ready task=gpio gen=2 ") {
                    l.replace("gplev0=0x00000000", "gplev0=0x00020000")
                } else {
                    l.to_string()
                }
            })
            .collect();
        fails_check(&text.join("\n"), "panic_restarts_restores_and_replays");
    }

    #[test]
    fn a_timer_fault_or_a_missing_quarantine_fails_the_storm_checks() {
        let with_timer_fault = TRANSCRIPT.replacen(
            "FW tick phase=storm n=1 ",
            "FW fault task=timer gen=1 kind=panic msg=\"x\" in-flight=none at-ms=1\nFW tick phase=storm n=1 ",
            1,
        );
        fails_check(&with_timer_fault, "timer_task_keeps_serving_through_the_storm");

        let no_quarantine: Vec<&str> = TRANSCRIPT.lines().filter(|l| !l.contains("action=quarantine")).collect();
        fails_check(&no_quarantine.join("\n"), "storm_quarantines_gpio_and_fails_its_request");
    }

    #[test]
    fn a_hang_detected_too_early_or_not_at_all_fails() {
        let early: Vec<String> = TRANSCRIPT
            .lines()
            .map(|l| {
                if l.starts_with("FW hang task=gpio ") {
                    "FW hang task=gpio silent-ms=20 limit-ms=50".into()
                } else {
                    l.to_string()
                }
            })
            .collect();
        fails_check(&early.join("\n"), "hang_is_detected_then_restarts_restores_and_replays");
        let none: Vec<&str> = TRANSCRIPT.lines().filter(|l| !l.starts_with("FW hang ")).collect();
        fails_check(&none.join("\n"), "hang_is_detected_then_restarts_restores_and_replays");
    }

    #[test]
    fn a_trace_without_the_effect_of_an_after_effect_fault_fails() {
        // The panic phase's fault happens after the effect: its trace must show it.
        let text: Vec<&str> = TRANSCRIPT
            .lines()
            .filter(|l| !(l.starts_with("FW trace task=gpio gen=1 ") && l.contains("gpio: level")))
            .collect();
        fails_check(&text.join("\n"), "each_fault_leaves_a_post_mortem_trace_of_its_request");
    }

    #[test]
    fn an_overflow_that_faults_outside_the_guard_page_fails() {
        let text: Vec<String> = TRANSCRIPT
            .lines()
            .map(|l| {
                if l.starts_with("FW fault task=gpio") && l.contains("esr=0x96000047") {
                    let start = l.find("far=").unwrap();
                    let end = l[start..].find(' ').unwrap() + start;
                    format!("{}far=0x12345{}", &l[..start], &l[end..])
                } else {
                    l.to_string()
                }
            })
            .collect();
        let text = text.join("\n");
        assert_ne!(text, TRANSCRIPT);
        fails_check(&text, "stack_overflow_hits_the_guard_page_then_restarts_and_replays");
    }

    #[test]
    fn a_mapped_guard_page_fails() {
        let bad = TRANSCRIPT.replacen("FW guard task=gpio guard=", "FW guard task=gpio guard-mapped=true guard=", 1);
        assert_ne!(bad, TRANSCRIPT);
        fails_check(&bad, "every_stack_sits_above_an_unmapped_guard_page");
    }

    #[test]
    fn a_replayed_wait_counted_twice_fails() {
        // The first field wins, so this overrides the replayed Wait's fires.
        let twice =
            TRANSCRIPT.replacen("FW commit task=timer gen=2 id=", "FW commit task=timer gen=2 fires=999 id=", 1);
        assert_ne!(twice, TRANSCRIPT);
        fails_check(&twice, "timer_fault_replays_its_wait_without_a_double_fire");
    }

    #[test]
    fn a_boot_that_never_ends_fails() {
        let f = failing(TRANSCRIPT, End::TimedOut(Duration::from_secs(120)));
        assert!(f.iter().any(|(n, w)| n == "boots_and_ends_with_a_watchdog_reset" && w.contains("timed out")), "{f:?}");
        let text: Vec<&str> = TRANSCRIPT.lines().filter(|l| !l.starts_with("FW end")).collect();
        fails_check(&text.join("\n"), "boots_and_ends_with_a_watchdog_reset");
    }

    #[test]
    fn blink_toggles_not_paced_by_interrupts_fail() {
        let late = TRANSCRIPT.replace(" paced=irq", " paced=late");
        fails_check(&late, "blink_is_paced_by_compare_3_interrupts");
        let no_irqs: Vec<&str> = TRANSCRIPT.lines().filter(|l| !l.starts_with("FW irq ")).collect();
        fails_check(&no_irqs.join("\n"), "blink_is_paced_by_compare_3_interrupts");
    }

    #[test]
    fn the_firmware_stays_out_of_the_host_workspace_and_the_thumbv7em_list() {
        assert!(util::workspace_root().join(CRATE_DIR).join("Cargo.toml").is_file());
        let pkgs = crate::nostd::packages().unwrap();
        assert!(pkgs.iter().all(|p| !p.contains("firmware")), "{pkgs:?}");
        let root = std::fs::read_to_string(util::workspace_root().join("Cargo.toml")).unwrap();
        let root: toml::Value = toml::from_str(&root).unwrap();
        let members = root["workspace"]["members"].as_array().unwrap();
        assert!(members.iter().all(|m| !m.as_str().unwrap().contains("firmware")), "{members:?}");
        let own = std::fs::read_to_string(util::workspace_root().join(CRATE_DIR).join("Cargo.toml")).unwrap();
        let own: toml::Value = toml::from_str(&own).unwrap();
        assert!(own.get("workspace").is_some(), "the firmware must be its own workspace root");
    }

    #[test]
    fn fields_parse_with_quotes_and_equals_in_values() {
        let f = parse_fields("task=gpio msg=\"a b=c\" state=17=out/high n=3");
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            (get("task"), get("msg"), get("state"), get("n")),
            (Some("gpio"), Some("a b=c"), Some("17=out/high"), Some("3"))
        );
    }

    #[test]
    fn section_sizes_are_read_from_a_real_elf_and_garbage_is_refused() {
        let exe = std::env::current_exe().unwrap();
        let sizes = section_sizes(&exe).unwrap();
        let text = sizes.iter().find(|(n, _)| n == ".text").map(|(_, s)| *s).unwrap();
        assert!(text > 1000, "{sizes:?}");
        assert!(sizes.iter().any(|(n, _)| n == ".bss"), "{sizes:?}");
        assert!(parse_sections(b"not an elf").is_err());
        assert!(parse_sections(b"\x7fELF\x01\x01").unwrap_err().contains("64-bit"));
    }
}
