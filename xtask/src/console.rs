//! Reading a guest's console: turns the stream of lines into test results and
//! decides whether the boot as a whole succeeded.
//!
//! It is a pure state machine (lines in, events out, a verdict at the end)
//! so every way a boot can go wrong is unit-tested without QEMU: a failing
//! test, a kernel panic, a guest that never prints its summary, a summary that
//! disagrees with the lines seen, a timeout, QEMU failing.

use std::collections::VecDeque;
use std::time::Duration;

use reinc_guest_protocol::{Marker, Verdict};

/// Lines kept to explain a failed boot.
const TAIL_LINES: usize = 15;

/// One test's result as the xtask reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    /// The guest's test name.
    pub name: String,
    /// Pass or failure reason.
    pub verdict: Verdict,
}

/// Something worth printing as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A test finished.
    Test(TestResult),
    /// The guest reported a setup error.
    GuestError(String),
    /// The kernel panicked.
    Panic(String),
}

/// How the QEMU process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// It exited by itself; `None` if it was killed by a signal.
    Exited(Option<i32>),
    /// The xtask killed it after the limit.
    TimedOut(Duration),
    /// The guest printed its summary but QEMU did not exit within this grace
    /// period (the guest's power-off or reboot failed); the xtask killed it.
    NoHalt(Duration),
}

/// The parser's state for one boot.
#[derive(Debug, Default)]
pub struct Console {
    tests: Vec<TestResult>,
    summary: Option<(usize, usize)>,
    guest_errors: Vec<String>,
    panic: Option<String>,
    tail: VecDeque<String>,
}

/// The outcome of one boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Every test result, in console order.
    pub tests: Vec<TestResult>,
    /// Boot-level failures (panic, timeout, missing summary, …); each counts
    /// as one failure.
    pub problems: Vec<String>,
    /// The last console lines, for explaining problems.
    pub tail: Vec<String>,
}

impl Report {
    /// Tests that passed.
    pub fn passed(&self) -> usize {
        self.tests.iter().filter(|t| t.verdict == Verdict::Ok).count()
    }

    /// Failed tests plus boot-level problems.
    pub fn failed(&self) -> usize {
        self.tests.len() - self.passed() + self.problems.len()
    }
}

/// `line` without terminal control sequences (SeaBIOS clears the screen with
/// `ESC c`, `ESC [2J` …) and other control characters, for echoing.
pub fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.next_if_eq(&'[').is_some() {
                    // CSI: parameters and intermediates, then one final byte in @..~.
                    for p in chars.by_ref() {
                        if ('@'..='~').contains(&p) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

impl Console {
    /// A fresh parser.
    pub fn new() -> Console {
        Console::default()
    }

    /// Consumes one console line (without its newline).
    pub fn feed(&mut self, line: &str) -> Option<Event> {
        let line = line.trim_end_matches(['\r', '\n']);
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(printable(line));
        if line.contains("Kernel panic - not syncing") {
            let msg = line[line.find("Kernel panic").unwrap_or(0)..].to_string();
            self.panic.get_or_insert(msg.clone());
            return Some(Event::Panic(msg));
        }
        match Marker::parse(line)? {
            Marker::Test { name, verdict } => {
                let result = TestResult { name, verdict };
                self.tests.push(result.clone());
                Some(Event::Test(result))
            }
            Marker::Summary { passed, failed } => {
                self.summary = Some((passed, failed));
                None
            }
            Marker::Error(msg) => {
                self.guest_errors.push(msg.clone());
                Some(Event::GuestError(msg))
            }
        }
    }

    /// Whether the guest printed its closing summary.
    pub fn summary_seen(&self) -> bool {
        self.summary.is_some()
    }

    /// The name of the last test seen, for timeout messages.
    pub fn last_test(&self) -> Option<&str> {
        self.tests.last().map(|t| t.name.as_str())
    }

    /// The verdict once QEMU is gone.
    pub fn finish(self, end: End) -> Report {
        let mut problems = Vec::new();
        for e in &self.guest_errors {
            problems.push(format!("guest error: {e}"));
        }
        if let Some(p) = &self.panic {
            problems.push(format!("kernel panic: {p}"));
        }
        match &end {
            End::TimedOut(limit) => problems.push(format!(
                "timed out after {} s ({})",
                limit.as_secs(),
                match self.last_test() {
                    Some(t) => format!("last finished test: {t}"),
                    None => "no test had finished".to_string(),
                }
            )),
            End::NoHalt(grace) => problems.push(format!(
                "the guest printed its summary but QEMU did not exit within {} s (power-off/reboot failed?)",
                grace.as_secs()
            )),
            End::Exited(Some(0)) => {}
            End::Exited(Some(code)) => problems.push(format!("QEMU exited with status {code}")),
            End::Exited(None) => problems.push("QEMU was killed by a signal".to_string()),
        }
        // A panic or timeout already explains why no summary came.
        let explained = self.panic.is_some() || matches!(end, End::TimedOut(_));
        let seen_passed = self.tests.iter().filter(|t| t.verdict == Verdict::Ok).count();
        let seen_failed = self.tests.len() - seen_passed;
        match self.summary {
            None if !explained => problems.push("the guest ended without printing its summary".to_string()),
            None => {}
            Some((p, f)) if (p, f) != (seen_passed, seen_failed) => problems.push(format!(
                "the guest's summary says {p} passed, {f} failed, but the console showed {seen_passed} passed, \
                 {seen_failed} failed (lost or garbled lines)"
            )),
            Some(_) if self.tests.is_empty() => problems.push("the guest ran no test".to_string()),
            Some(_) => {}
        }
        Report { tests: self.tests, problems, tail: self.tail.into_iter().collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &[&str], end: End) -> Report {
        let mut c = Console::new();
        for l in lines {
            c.feed(l);
        }
        c.finish(end)
    }

    const CLEAN_EXIT: End = End::Exited(Some(0));

    #[test]
    fn passing_boot_counts_every_test_and_has_no_problem() {
        let r = run(
            &[
                "[    0.000000] Linux version 6.1.0",
                "GUEST-TEST ok edu::identify",
                "GUEST-TEST ok edu::liveness\r",
                "GUEST-SUMMARY passed=2 failed=0",
                "[    3.1] reboot: Power down",
            ],
            CLEAN_EXIT,
        );
        assert_eq!((r.passed(), r.failed()), (2, 0));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }

    #[test]
    fn deliberately_failing_guest_test_fails_the_run_and_is_named() {
        let r = run(
            &[
                "GUEST-TEST ok edu::identify",
                "GUEST-TEST FAIL edu::factorial_by_interrupt: expected 120, read 24",
                "GUEST-SUMMARY passed=1 failed=1",
            ],
            CLEAN_EXIT,
        );
        assert_eq!((r.passed(), r.failed()), (1, 1));
        let failed: Vec<_> = r.tests.iter().filter(|t| t.verdict != Verdict::Ok).collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].name, "edu::factorial_by_interrupt");
        assert_eq!(failed[0].verdict, Verdict::Fail("expected 120, read 24".into()));
    }

    #[test]
    fn missing_summary_is_a_failure_even_if_every_test_passed() {
        let r = run(&["GUEST-TEST ok edu::identify"], CLEAN_EXIT);
        assert_eq!(r.failed(), 1);
        assert!(r.problems[0].contains("without printing its summary"), "{:?}", r.problems);
    }

    #[test]
    fn kernel_panic_is_a_failure_and_reported_as_it_happens() {
        let mut c = Console::new();
        c.feed("GUEST-TEST ok edu::identify");
        let ev = c.feed("[    2.2] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100");
        assert!(matches!(ev, Some(Event::Panic(m)) if m.starts_with("Kernel panic")));
        let r = c.finish(CLEAN_EXIT);
        assert_eq!(r.failed(), 1, "one problem, not also a missing summary: {:?}", r.problems);
        assert!(r.problems[0].contains("Attempted to kill init"));
    }

    #[test]
    fn timeout_is_a_failure_naming_the_last_finished_test() {
        let r = run(&["GUEST-TEST ok edu::identify"], End::TimedOut(Duration::from_secs(60)));
        assert_eq!((r.passed(), r.failed()), (1, 1));
        assert!(r.problems[0].contains("timed out after 60 s") && r.problems[0].contains("edu::identify"));
    }

    #[test]
    fn guest_that_does_not_halt_after_its_summary_is_a_failure() {
        let r = run(&["GUEST-TEST ok a", "GUEST-SUMMARY passed=1 failed=0"], End::NoHalt(Duration::from_secs(15)));
        assert_eq!((r.passed(), r.failed()), (1, 1));
        assert!(r.problems[0].contains("did not exit within 15 s"), "{:?}", r.problems);
    }

    #[test]
    fn summary_disagreeing_with_seen_lines_is_a_failure() {
        let r = run(&["GUEST-TEST ok a", "GUEST-SUMMARY passed=2 failed=0"], CLEAN_EXIT);
        assert_eq!(r.failed(), 1);
        assert!(r.problems[0].contains("lost or garbled"));
    }

    #[test]
    fn guest_setup_error_and_bad_qemu_exit_each_count() {
        let r = run(
            &["GUEST-ERROR cannot load /lib/modules/uio.ko: ENOEXEC", "GUEST-SUMMARY passed=0 failed=0"],
            End::Exited(Some(1)),
        );
        assert_eq!(r.failed(), 3, "guest error, QEMU status, and no test ran: {:?}", r.problems);
    }

    #[test]
    fn zero_tests_with_a_summary_is_still_a_failure() {
        let r = run(&["GUEST-SUMMARY passed=0 failed=0"], CLEAN_EXIT);
        assert_eq!(r.failed(), 1);
    }

    #[test]
    fn control_sequences_are_stripped_for_display() {
        assert_eq!(printable("\u{1b}c\u{1b}[?7l\u{1b}[2J\u{1b}[0mSeaBIOS (version 1.16)"), "SeaBIOS (version 1.16)");
        assert_eq!(printable("plain\tline\r"), "plain\tline");
    }

    #[test]
    fn tail_keeps_only_the_last_lines() {
        let lines: Vec<String> = (0..40).map(|i| format!("line {i}")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let r = run(&refs, CLEAN_EXIT);
        assert_eq!(r.tail.len(), TAIL_LINES);
        assert_eq!(r.tail.last().unwrap(), "line 39");
    }
}
