//! A minimal test runner for guest suites: named test functions, one
//! `GUEST-TEST` line each, panics caught and reported as failures, exit
//! status 0 (all passed) or 1 (some failed).
//!
//! libtest is not used: its output format is not ours to parse, and a guest
//! suite needs a shared context (opened devices) and strictly sequential
//! runs (tests share real hardware).

use std::panic::Location;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;

use reinc_guest_protocol::{Marker, Verdict};

/// Why a guest test failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// An expectation in the test did not hold.
    #[error("{message} (at {location})")]
    Check { message: String, location: &'static Location<'static> },
    /// An operation failed with an error from a lower layer.
    #[error("{context}: {source}")]
    Op { context: String, source: Box<dyn std::error::Error + Send + Sync> },
}

impl Failure {
    /// A failed expectation, located at the caller.
    #[track_caller]
    pub fn check(message: impl Into<String>) -> Failure {
        Failure::Check { message: message.into(), location: Location::caller() }
    }
}

/// Attaches what was being done to a lower-layer error.
pub trait Context<T> {
    /// Turns the error into [`Failure::Op`] with `context`.
    fn context(self, context: impl FnOnce() -> String) -> Result<T, Failure>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for Result<T, E> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, Failure> {
        self.map_err(|e| Failure::Op { context: context(), source: Box::new(e) })
    }
}

/// Fails the test with a located message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::harness::Failure::check(format!($($fmt)+)));
        }
    };
}

/// Fails the test unless `left == right`, showing both.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($fmt:tt)+) => {
        match (&$left, &$right) {
            (l, r) => {
                if l != r {
                    return Err($crate::harness::Failure::check(format!(
                        "{}: got {:?}, expected {:?}", format!($($fmt)+), l, r
                    )));
                }
            }
        }
    };
}

/// A test's outcome.
pub type TestResult = Result<(), Failure>;

/// One named test over a context `C`.
#[derive(Debug)]
pub struct Test<C> {
    /// Name printed after the suite prefix (the function's name).
    pub name: &'static str,
    /// The test.
    pub run: fn(&C) -> TestResult,
}

/// Builds a [`Test`] named after its function.
#[macro_export]
macro_rules! test {
    ($f:ident) => {
        $crate::harness::Test { name: stringify!($f), run: $f }
    };
}

/// Runs `tests` in order, printing one marker line each as `<suite>::<name>`,
/// and returns the exit status the init expects (0: all passed, 1: some failed).
pub fn run<C>(suite: &str, ctx: &C, tests: &[Test<C>]) -> ExitCode {
    let mut failed = 0;
    for t in tests {
        let name = format!("{suite}::{}", t.name);
        let verdict = match catch_unwind(AssertUnwindSafe(|| (t.run)(ctx))) {
            Ok(Ok(())) => Verdict::Ok,
            Ok(Err(f)) => Verdict::Fail(f.to_string()),
            Err(panic) => Verdict::Fail(format!("panicked: {}", panic_message(&*panic))),
        };
        if verdict != Verdict::Ok {
            failed += 1;
        }
        println!("{}", Marker::Test { name, verdict });
    }
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// Runs every test as failed with `reason` (the suite's setup failed), so
/// each is still named in the results.
pub fn fail_all<C>(suite: &str, tests: &[Test<C>], reason: &str) -> ExitCode {
    for t in tests {
        let name = format!("{suite}::{}", t.name);
        println!("{}", Marker::Test { name, verdict: Verdict::Fail(format!("suite setup failed: {reason}")) });
    }
    ExitCode::from(1)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passes(_: &u32) -> TestResult {
        Ok(())
    }

    fn compares(ctx: &u32) -> TestResult {
        ensure_eq!(*ctx, 5, "context value");
        Ok(())
    }

    fn panics(_: &u32) -> TestResult {
        panic!("boom")
    }

    #[test]
    fn failing_check_reports_both_values_and_location() {
        let err = compares(&4).unwrap_err().to_string();
        assert!(err.contains("got 4, expected 5") && err.contains("harness.rs"), "{err}");
    }

    #[test]
    fn suite_exit_status_reflects_failures_including_panics() {
        assert_eq!(run("t", &5, &[test!(passes), test!(compares)]), ExitCode::SUCCESS);
        assert_eq!(run("t", &5, &[test!(passes), test!(panics)]), ExitCode::from(1));
    }

    #[test]
    fn test_macro_uses_the_function_name() {
        let t: Test<u32> = test!(passes);
        assert_eq!(t.name, "passes");
    }
}
