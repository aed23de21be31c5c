//! Counting a suite's results as its output passes through PID 1, and judging
//! how the suite ended.

use nix::sys::signal::Signal;
use reinc_guest_protocol::{Marker, Verdict};

/// Results seen so far, over every suite.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Tests that printed `ok`.
    pub passed: usize,
    /// Tests that printed `FAIL`.
    pub failed: usize,
}

impl Tally {
    /// Counts `line` if it is a test marker.
    pub fn observe(&mut self, line: &str) {
        if let Some(Marker::Test { verdict, .. }) = Marker::parse(line) {
            match verdict {
                Verdict::Ok => self.passed += 1,
                Verdict::Fail(_) => self.failed += 1,
            }
        }
    }

    /// Tests counted.
    pub fn total(&self) -> usize {
        self.passed + self.failed
    }

    /// The closing marker.
    pub fn summary(&self) -> Marker {
        Marker::Summary { passed: self.passed, failed: self.failed }
    }
}

/// How a suite process ended, as `std::process::ExitStatus` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Normal exit with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

/// A problem with how a suite ended, beyond its own test lines; `before` and
/// `after` are the tallies around the suite. Exit 0 means "all passed", exit 1
/// "some failed"; anything else, a signal, or no test line at all is wrong.
pub fn judge(suite: &str, ending: Ending, before: Tally, after: Tally) -> Option<String> {
    let seen = after.total() - before.total();
    let failed = after.failed - before.failed;
    match ending {
        Ending::Signal(n) => {
            let name = Signal::try_from(n).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {n}"));
            Some(format!("suite {suite} was killed by {name} after {seen} test(s)"))
        }
        _ if seen == 0 => Some(format!("suite {suite} reported no test result")),
        Ending::Code(0) if failed == 0 => None,
        Ending::Code(1) if failed > 0 => None,
        Ending::Code(code) => {
            Some(format!("suite {suite} exited with status {code} after {seen} test(s), {failed} of them failed"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_only_test_markers() {
        let mut t = Tally::default();
        for l in ["GUEST-TEST ok a", "some log", "GUEST-TEST FAIL b: why", "GUEST-ERROR x", "GUEST-TEST ok c"] {
            t.observe(l);
        }
        assert_eq!(t, Tally { passed: 2, failed: 1 });
        assert_eq!(t.summary().to_string(), "GUEST-SUMMARY passed=2 failed=1");
    }

    #[test]
    fn crashed_suite_is_named_with_its_signal() {
        let before = Tally::default();
        let after = Tally { passed: 3, failed: 0 };
        let p = judge("/bin/edu-suite", Ending::Signal(11), before, after).unwrap();
        assert_eq!(p, "suite /bin/edu-suite was killed by SIGSEGV after 3 test(s)");
    }

    #[test]
    fn exit_status_must_agree_with_results() {
        let before = Tally { passed: 5, failed: 0 };
        let clean = Tally { passed: 7, failed: 0 };
        let failing = Tally { passed: 6, failed: 1 };
        assert_eq!(judge("s", Ending::Code(0), before, clean), None);
        assert_eq!(judge("s", Ending::Code(1), before, failing), None);
        assert!(judge("s", Ending::Code(1), before, clean).is_some(), "exit 1 without a failure");
        assert!(judge("s", Ending::Code(0), before, failing).is_some(), "exit 0 despite a failure");
        assert!(judge("s", Ending::Code(101), before, clean).is_some());
    }

    #[test]
    fn suite_without_results_is_a_problem() {
        let t = Tally { passed: 2, failed: 0 };
        assert_eq!(judge("s", Ending::Code(0), t, t).unwrap(), "suite s reported no test result");
    }
}
