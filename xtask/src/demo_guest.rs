//! `cargo xtask demo --guest`: the seeds' outcome on a real kernel.
//!
//! It boots the x86 profile of `qemu/machines.toml` exactly as `cargo xtask
//! qemu-test --machine x86` does (same kernel, busybox, guest programs and
//! QEMU lookup, through [`qemu_test::prepare_and_boot`]), with one change:
//! the guest runs `nbd-demo` (`qemu/guest/src/bin/nbd-demo.rs`) instead of
//! the suites. That program attaches the kernel's `/dev/nbd0` to
//! `reinc-nbd` in front of the supervised `storage_driver`, runs busybox's
//! `dd if=/dev/nbd0 of=/dev/null bs=1M count=10`, and sends a real `kill
//! -SEGV` to the driver from outside once the block layer has counted 3 MiB
//! read while dd is still running. It prints its transcript lines (the
//! supervisor's own `[SUP]` lines among them) as they happen, and the facts
//! behind them.
//!
//! This side echoes the transcript live and then [`verify`]s it (pure and
//! unit-tested, like the host demo's summary): every seed line seen, in a
//! causal order, with the kill before dd's success; dd's exit status and
//! byte count; the sha256 of what was written against what was read; no I/O
//! error in the kernel log; the restart; and a clean boot. It exits 0 only if
//! every check holds.

use std::collections::BTreeMap;

use reinc_guest_protocol::{DEMO_FACT_MARKER, DEMO_LINE_MARKER, Verdict};

use crate::console::{Console, Event, Report, printable};
use crate::qemu_test::{self, Line};
use crate::util::{Error, Result};
use crate::{kernel, machines};

/// The profile the demo boots, and the guest program it runs there.
const MACHINE: &str = "x86";
const PROGRAM: &str = "nbd-demo";
const TOTAL: u64 = 10 << 20;

#[derive(Debug, Default, PartialEq, Eq)]
struct Flags {
    verbose: bool,
    timeout: Option<u64>,
}

impl Flags {
    fn parse(args: &[String]) -> Result<Flags> {
        let mut f = Flags::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--guest" => {}
                "--verbose" | "-v" => f.verbose = true,
                "--timeout" => {
                    let v = it.next().and_then(|v| v.parse().ok()).filter(|&s: &u64| s > 0);
                    f.timeout = Some(v.ok_or_else(|| Error::Usage("--timeout wants whole seconds > 0".into()))?);
                }
                other => {
                    return Err(Error::Usage(format!(
                        "`cargo xtask demo --guest` takes --verbose, --timeout SECS; got `{other}`"
                    )));
                }
            }
        }
        Ok(f)
    }
}

/// What the boot produced.
#[derive(Debug, Clone, Default)]
struct Evidence {
    /// Transcript lines, in console order.
    lines: Vec<String>,
    /// The guest's `key=value` facts.
    facts: BTreeMap<String, String>,
    /// Boot-level problems and the guest's own test verdicts.
    report: Option<Report>,
}

/// One verified claim.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Check {
    label: String,
    ok: bool,
    detail: String,
}

/// Recognises one transcript line.
type LineMatch<'a> = Box<dyn Fn(&str) -> bool + 'a>;

/// Checks every line and fact. Pure.
fn verify(e: &Evidence) -> Vec<Check> {
    let fact = |k: &str| e.facts.get(k).map(String::as_str).unwrap_or("");
    let num = |k: &str| fact(k).parse::<i64>().ok();
    let pid = fact("killed_pid");
    let find =
        |from: usize, pred: &dyn Fn(&str) -> bool| e.lines.iter().skip(from).position(|l| pred(l)).map(|i| i + from);
    let mut out = Vec::new();
    let mut check = |label: String, ok: bool, detail: String| out.push(Check { label, ok, detail });

    // The seed lines, each after the one it follows from.
    let launch = format!("[SUP] Launching storage_driver (pid={pid})");
    let dd = "$ dd if=/dev/nbd0 of=/dev/null bs=1M count=10".to_string();
    let kill = format!("$ kill -SEGV {pid}");
    let replayed = |l: &str| {
        l.strip_prefix("[SUP] replaying ")
            .and_then(|r| r.strip_suffix(" queued requests"))
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    };
    let steps: [(&str, LineMatch<'_>); 7] = [
        ("launch", Box::new(|l: &str| !pid.is_empty() && l == launch)),
        ("dd", Box::new(|l: &str| l == dd)),
        ("kill", Box::new(|l: &str| !pid.is_empty() && l == kill)),
        ("crash", Box::new(|l: &str| l == "[SUP] storage_driver crashed (SIGSEGV)")),
        ("restart", Box::new(|l: &str| l == "[SUP] restarting storage_driver")),
        ("replay", Box::new(replayed)),
        ("dd done", Box::new(|l: &str| l == "10 MB read successfully")),
    ];
    let mut at = Vec::new();
    let mut from = 0;
    for (i, (name, pred)) in steps.iter().enumerate() {
        // `dd done` only has to follow the dd line (and, below, the kill).
        let start = if *name == "dd done" { at.get(1).copied().flatten().map_or(0, |i: usize| i + 1) } else { from };
        let found = find(start, pred.as_ref());
        at.push(found);
        if let Some(f) = found {
            from = f + 1;
        }
        check(
            format!("line {}", i + 1),
            found.is_some(),
            match found {
                Some(f) => e.lines[f].clone(),
                None => format!("no `{name}` line where the transcript needs one"),
            },
        );
    }
    let (kill_at, done_at) = (at[2], at[6]);
    let (killed_at, running) = (num("killed_at_bytes").unwrap_or(0), num("dd_running_at_kill") == Some(1));
    check(
        "mid-transfer".into(),
        running
            && killed_at > 0
            && (killed_at as u64) < TOTAL
            && matches!((kill_at, done_at), (Some(k), Some(d)) if k < d),
        format!(
            "kill -SEGV sent from outside while dd was {}, after {:.1} of 10 MiB read from /dev/nbd0",
            if running { "running" } else { "NOT running" },
            killed_at as f64 / f64::from(1u32 << 20)
        ),
    );
    check(
        "dd".into(),
        num("dd_status") == Some(0) && num("dd_bytes") == Some(TOTAL as i64),
        format!("exit status {}, {} bytes copied", fact("dd_status"), fact("dd_bytes")),
    );
    let (w, r) = (fact("sha256_written"), fact("sha256_read"));
    let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    check(
        "sha256".into(),
        hex(w) && w == r && num("reread_status") == Some(0),
        format!(
            "written {w}, read {r}: {}; {} bytes of the re-read came from the device, the rest from the page cache \
             the killed dd filled",
            if hex(w) && w == r { "match" } else { "MISMATCH" },
            fact("reread_fetched_bytes")
        ),
    );
    check(
        "kernel log".into(),
        num("kmsg_complaints") == Some(0),
        format!("{} I/O errors or nbd complaints in /dev/kmsg", fact("kmsg_complaints")),
    );
    let new = fact("new_pid");
    check(
        "restarted".into(),
        !pid.is_empty() && fact("launched_pid") == pid && !new.is_empty() && new != "0" && new != pid,
        format!("storage_driver pid {pid} -> {new}"),
    );
    let (guest_ok, guest_detail) = match &e.report {
        None => (false, "no boot report".to_string()),
        Some(r) => (
            r.problems.is_empty() && r.passed() == 1 && r.failed() == 0,
            if r.problems.is_empty() {
                format!("{} guest check passed, {} failed; clean power-off", r.passed(), r.failed())
            } else {
                r.problems.join("; ")
            },
        ),
    };
    check("guest".into(), guest_ok, guest_detail);
    out
}

/// Entry point: `cargo xtask demo --guest [--verbose] [--timeout SECS]`.
pub fn run(args: &[String]) -> Result {
    let flags = Flags::parse(args)?;
    let mut profile = machines::select(machines::load()?, Some(MACHINE))?.remove(0);
    if !profile.guest.programs.iter().any(|p| p == PROGRAM) {
        return Err(Error::Other(format!(
            "machine `{MACHINE}` in {} has no guest program {PROGRAM}",
            machines::PROFILES
        )));
    }
    profile.guest.suites = vec![PROGRAM.to_string()];
    println!("reinc guest demo: the kernel's NBD client on /dev/nbd0, served by reinc-nbd in front of the supervised");
    println!("storage_driver; busybox dd reads 10 MiB while storage_driver gets a real kill -SEGV mid-transfer.");
    let resolved = kernel::resolve(&profile.kernel, &profile.debian_arch)?;
    println!("kernel: {resolved}");
    let mut console = Console::new();
    let mut e = Evidence::default();
    let verbose = flags.verbose;
    let end = qemu_test::prepare_and_boot(&profile, &resolved, "demo-initrd.cpio", flags.timeout, verbose, |line| {
        match line {
            Line::Console(raw) => {
                let l = raw.trim_end_matches(['\r', '\n']);
                if verbose {
                    println!("{MACHINE}| {}", printable(l));
                }
                if let Some(rest) = l.strip_prefix(DEMO_LINE_MARKER).and_then(|r| r.strip_prefix(' ')) {
                    println!("  {rest}");
                    e.lines.push(rest.to_string());
                } else if let Some((k, v)) = l.strip_prefix(DEMO_FACT_MARKER).and_then(|r| r.trim().split_once('=')) {
                    e.facts.insert(k.to_string(), v.to_string());
                }
                match console.feed(l) {
                    Some(Event::Test(t)) => {
                        if let Verdict::Fail(why) = &t.verdict {
                            println!("  FAIL  {}: {why}", t.name);
                        }
                    }
                    Some(Event::GuestError(err)) => println!("  ERROR guest: {err}"),
                    Some(Event::Panic(p)) => println!("  PANIC {p}"),
                    None => {}
                }
            }
            Line::Qemu(l) => {
                println!("{MACHINE}: qemu: {l}");
                console.feed(&format!("qemu: {l}"));
            }
        }
        console.summary_seen()
    })?;
    let report = console.finish(end);
    if !report.problems.is_empty() && !verbose {
        println!("  last console lines:");
        for l in &report.tail {
            println!("    | {l}");
        }
    }
    e.report = Some(report);
    println!("==> summary");
    let checks = verify(&e);
    for c in &checks {
        println!("  {:<3} {:<13} {}", if c.ok { "ok" } else { "BAD" }, c.label, c.detail);
    }
    let failed: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.label.as_str()).collect();
    if failed.is_empty() {
        println!("guest demo verified: dd read 10 MiB through a real kill -SEGV of storage_driver, bytes intact");
        Ok(())
    } else {
        Err(Error::Other(format!("guest demo verification failed: {}", failed.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::TestResult;

    const SHA: &str = "5f0c0a2e8c7d4d6c3b1f0a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c";

    fn good() -> Evidence {
        let lines = [
            "[SUP] Launching storage_driver (pid=57)",
            "# setup: 10 MiB of a known pattern written",
            "$ dd if=/dev/nbd0 of=/dev/null bs=1M count=10",
            "$ kill -SEGV 57",
            "[SUP] storage_driver crashed (SIGSEGV)",
            "[SUP] restarting storage_driver",
            "[SUP] Launching storage_driver (pid=63)",
            "[SUP] replaying 7 queued requests",
            "10 MB read successfully",
        ]
        .map(String::from)
        .to_vec();
        let mut facts = BTreeMap::new();
        for (k, v) in [
            ("launched_pid", "57"),
            ("killed_pid", "57"),
            ("new_pid", "63"),
            ("killed_at_bytes", "3211264"),
            ("dd_running_at_kill", "1"),
            ("dd_status", "0"),
            ("dd_bytes", "10485760"),
            ("sha256_written", SHA),
            ("sha256_read", SHA),
            ("reread_status", "0"),
            ("reread_fetched_bytes", "0"),
            ("kmsg_complaints", "0"),
        ] {
            facts.insert(k.to_string(), v.to_string());
        }
        let report = Report {
            tests: vec![TestResult { name: "nbd-demo::x".into(), verdict: Verdict::Ok }],
            problems: vec![],
            tail: vec![],
        };
        Evidence { lines, facts, report: Some(report) }
    }

    fn failed(e: &Evidence) -> Vec<String> {
        verify(e).into_iter().filter(|c| !c.ok).map(|c| c.label).collect()
    }

    #[test]
    fn a_clean_transcript_verifies() {
        assert_eq!(failed(&good()), Vec::<String>::new());
    }

    #[test]
    fn each_missing_seed_line_fails_by_its_number() {
        for (i, needle) in
            ["Launching storage_driver (pid=57)", "$ dd", "$ kill", "crashed", "restarting", "replaying", "10 MB"]
                .iter()
                .enumerate()
        {
            let mut e = good();
            e.lines.retain(|l| !l.contains(needle));
            let f = failed(&e);
            assert!(f.contains(&format!("line {}", i + 1)), "{needle}: {f:?}");
        }
    }

    #[test]
    fn a_kill_after_dd_finished_is_not_mid_transfer() {
        let mut e = good();
        let kill = e.lines.remove(3);
        e.lines.push(kill);
        assert!(failed(&e).contains(&"mid-transfer".to_string()));
        let mut e = good();
        e.facts.insert("dd_running_at_kill".into(), "0".into());
        assert_eq!(failed(&e), ["mid-transfer"]);
    }

    #[test]
    fn replaying_zero_requests_does_not_show_a_replay() {
        let mut e = good();
        e.lines[7] = "[SUP] replaying 0 queued requests".into();
        assert_eq!(failed(&e), ["line 6"]);
    }

    #[test]
    fn wrong_bytes_digest_kernel_log_or_boot_each_fail() {
        let mut e = good();
        e.facts.insert("dd_bytes".into(), "9437184".into());
        assert_eq!(failed(&e), ["dd"]);
        let mut e = good();
        e.facts.insert("sha256_read".into(), SHA.replace('5', "6"));
        assert_eq!(failed(&e), ["sha256"]);
        let mut e = good();
        e.facts.insert("kmsg_complaints".into(), "1".into());
        assert_eq!(failed(&e), ["kernel log"]);
        let mut e = good();
        e.report.as_mut().unwrap().problems.push("timed out".into());
        assert_eq!(failed(&e), ["guest"]);
        let mut e = good();
        e.facts.insert("new_pid".into(), "57".into());
        assert_eq!(failed(&e), ["restarted"]);
    }

    #[test]
    fn an_empty_boot_fails_everything() {
        assert!(failed(&Evidence::default()).len() >= 12);
    }

    #[test]
    fn flags_parse() {
        let v = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(Flags::parse(&v("--guest --verbose")).unwrap(), Flags { verbose: true, timeout: None });
        assert_eq!(Flags::parse(&v("--timeout 90")).unwrap().timeout, Some(90));
        assert!(Flags::parse(&v("--size 8M")).is_err());
        assert!(Flags::parse(&v("--timeout 0")).is_err());
    }

    #[test]
    fn the_x86_profile_ships_the_demo_program() {
        let x86 = machines::select(machines::load().unwrap(), Some(MACHINE)).unwrap().remove(0);
        assert!(x86.guest.programs.iter().any(|p| p == PROGRAM));
        assert!(!x86.guest.suites.iter().any(|p| p == PROGRAM), "qemu-test does not run the demo");
    }
}
