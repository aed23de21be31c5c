//! `cargo xtask test`: the whole suite, exactly what CI runs.
//!
//! First, [`crate::disk::check`] refuses to start when the disk cannot hold
//! a cold run's build output and kernel cache. Then the stages, in order:
//! 1. `cargo build --workspace --bins`, then `cargo test --workspace
//!    --no-fail-fast` (unit, property and process-level integration tests);
//! 2. lints, one check each: `cargo clippy --workspace --all-targets -- -D
//!    warnings`, `cargo doc --workspace --no-deps` with rustdoc warnings
//!    as errors (a broken intra-doc link fails CI, not a reader), and
//!    `cargo fmt --all -- --check` (unformatted merges fail here, not in a
//!    later reader's diff), and the workspace checks of [`crate::tidy`];
//! 3. every `core-nostd` crate built for `thumbv7em-none-eabihf`, one check
//!    per crate, then a 3-second run of each fuzz target (`cargo xtask fuzz`);
//! 4. the QEMU guest suites of every machine profile, then the bare-metal
//!    firmware's (`cargo xtask qemu-test`);
//! 5. the benchmark smoke run (`cargo xtask bench --quick`): every row is
//!    produced with sane values; no performance figure is asserted;
//! 6. the fault-injection smoke campaign (`cargo xtask campaign`, 2 000
//!    faults, fixed seed): every invariant must hold; no timing is asserted.
//!
//! Every stage runs even when an earlier one failed, so one run shows every
//! problem. The output ends with a per-stage summary and the closing line
//! `total: N passed, N failed`; the exit status is non-zero when anything
//! failed.
//!
//! Rejected: stopping at the first failing stage (CI would hide the QEMU
//! results behind one flaky unit test), and counting the no_std builds as one
//! check (a failure would not say which crate).

use crate::util::{self, Result};
use std::io::{BufRead, BufReader};
use std::process::Stdio;

/// One stage's outcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub passed: usize,
    pub failed: usize,
}

/// Host programs that process tests and bench rows drive, as clients and
/// peers of the NBD front end nobody here wrote: (binary, Debian package, why).
pub const NBD_TOOLS: [(&str, &str, &str); 6] = [
    ("nbdcopy", "libnbd-bin", "NBD client tests and bench (tests/tests/nbd_clients.rs)"),
    ("nbdinfo", "libnbd-bin", "NBD client tests (tests/tests/nbd_clients.rs)"),
    ("qemu-img", "qemu-utils", "NBD client tests (tests/tests/nbd_clients.rs)"),
    ("qemu-io", "qemu-utils", "NBD client tests (tests/tests/nbd_clients.rs)"),
    ("qemu-nbd", "qemu-utils", "the qemu-nbd peer of the NBD bench rows"),
    ("nbdkit", "nbdkit", "the nbdkit file-plugin peer of the NBD bench rows"),
];

/// Installs [`NBD_TOOLS`] that are missing; an error is printed, and the
/// tests that need the tool fail with the command to run.
pub fn ensure_nbd_tools() {
    for (binary, package, why) in NBD_TOOLS {
        if let Err(e) = crate::apt::ensure_tool(binary, package, why) {
            eprintln!("xtask: {e}");
        }
    }
}

/// Flags: none; the QEMU part runs every machine profile.
pub fn run(args: &[String]) -> Result {
    if let Some(a) = args.first() {
        return Err(util::Error::Usage(format!("`cargo xtask test` takes no argument, got `{a}`")));
    }
    let mut stages: Vec<(&str, Count)> = Vec::new();

    crate::disk::check(&[
        crate::disk::Need { what: "build output", dir: crate::bench::target_dir(), peak: crate::disk::TARGET_PEAK },
        crate::disk::Need { what: "kernel cache", dir: util::cache_dir()?, peak: crate::disk::CACHE_PEAK },
    ])?;
    ensure_nbd_tools();
    let build_ok = util::run(util::cargo().args(["build", "--workspace", "--bins"])).is_ok();
    let mut tests = workspace_tests();
    if !build_ok {
        tests.failed += 1;
    }
    stages.push(("workspace tests", tests));

    stages.push(("lints", lints()));

    stages.push(("no_std builds", crate::nostd::build_each()));

    stages.push(("fuzz smoke", crate::fuzz::smoke()));

    let guests = match crate::qemu_test::run_counted(&crate::qemu_test::Flags::default()) {
        Ok((passed, failed)) => Count { passed, failed },
        Err(e) => {
            eprintln!("xtask: QEMU suites: {e}");
            Count { passed: 0, failed: 1 }
        }
    };
    stages.push(("QEMU guest tests", guests));

    let bench = match crate::bench::run(&["--quick".to_owned()]) {
        Ok(()) => Count { passed: 1, failed: 0 },
        Err(e) => {
            eprintln!("xtask: bench smoke: {e}");
            Count { passed: 0, failed: 1 }
        }
    };
    stages.push(("bench smoke", bench));

    let campaign = match crate::campaign::smoke() {
        Ok(()) => Count { passed: 1, failed: 0 },
        Err(e) => {
            eprintln!("xtask: campaign smoke: {e}");
            Count { passed: 0, failed: 1 }
        }
    };
    stages.push(("campaign smoke", campaign));

    let total = print_summary(&stages);
    if total.failed == 0 { Ok(()) } else { Err(util::Error::SuiteFailures { failed: total.failed }) }
}

/// Prints the per-stage table and the closing line; returns the total.
fn print_summary(stages: &[(&str, Count)]) -> Count {
    let (lines, total) = summary(stages);
    println!();
    for line in lines {
        println!("{line}");
    }
    total
}

/// The per-stage table and, last, `total: N passed, N failed`: the plain
/// closing line CI reads.
fn summary(stages: &[(&str, Count)]) -> (Vec<String>, Count) {
    let mut total = Count::default();
    let mut lines = vec!["summary:".to_owned()];
    for (name, c) in stages {
        lines.push(format!("  {name:<18} {:>5} passed, {} failed", c.passed, c.failed));
        total.passed += c.passed;
        total.failed += c.failed;
    }
    lines.push(format!("total: {} passed, {} failed", total.passed, total.failed));
    (lines, total)
}

/// Runs `cargo test --workspace --no-fail-fast`, echoing its output, and
/// adds up its `test result:` lines. A non-zero exit with no failed test
/// counted (a compile error, a crashed test binary) counts as one failure.
fn workspace_tests() -> Count {
    let mut cmd = util::cargo();
    cmd.args(["test", "--workspace", "--no-fail-fast"]).stdout(Stdio::piped());
    eprintln!("$ {}", util::describe(&cmd));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xtask: cannot start cargo test: {e}");
            return Count { passed: 0, failed: 1 };
        }
    };
    let mut count = Count::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(std::io::Result::ok) {
            println!("{line}");
            if let Some(c) = parse_test_result(&line) {
                count.passed += c.passed;
                count.failed += c.failed;
            }
        }
    }
    let ok = child.wait().is_ok_and(|s| s.success());
    if !ok && count.failed == 0 {
        count.failed = 1;
    }
    count
}

/// clippy and rustdoc with warnings as errors, rustfmt and [`crate::tidy`]: one check each.
fn lints() -> Count {
    let mut count = Count::default();
    let clippy = util::run(util::cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]));
    let doc = util::run(util::cargo().args(["doc", "--workspace", "--no-deps"]).env("RUSTDOCFLAGS", "-D warnings"));
    let fmt = util::run(util::cargo().args(["fmt", "--all", "--", "--check"]));
    let simd = crate::tidy::host_binaries_hash_with_simd();
    for (what, result) in
        [("clippy", clippy), ("cargo doc", doc), ("cargo fmt --check", fmt), ("host binaries hash with SIMD", simd)]
    {
        match result {
            Ok(()) => count.passed += 1,
            Err(e) => {
                eprintln!("xtask: {what}: {e}");
                count.failed += 1;
            }
        }
    }
    count
}

/// Parses libtest's `test result: ok. 11 passed; 0 failed; 0 ignored; …`.
pub(crate) fn parse_test_result(line: &str) -> Option<Count> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let (_, fields) = rest.split_once(". ")?;
    let mut count = Count::default();
    for field in fields.split(';') {
        let mut words = field.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else { continue };
        let Ok(n) = n.parse::<usize>() else { continue };
        match what {
            "passed" => count.passed = n,
            "failed" => count.failed = n,
            _ => {}
        }
    }
    Some(count)
}

/// Makes sure rustup has `target` installed, saying what it does.
pub fn ensure_rust_target(target: &str) -> Result {
    let out = std::process::Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| util::Error::Other(format!("cannot run rustup ({e}); install the target {target} by hand")))?;
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    eprintln!("xtask: adding Rust target {target} with rustup");
    util::run(std::process::Command::new("rustup").args(["target", "add", target]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_result_lines_are_counted() {
        let ok = "test result: ok. 11 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.06s";
        assert_eq!(parse_test_result(ok), Some(Count { passed: 11, failed: 0 }));
        let bad = "test result: FAILED. 10 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1s";
        assert_eq!(parse_test_result(bad), Some(Count { passed: 10, failed: 2 }));
    }

    #[test]
    fn other_lines_are_not_results() {
        assert_eq!(parse_test_result("test foo::bar ... ok"), None);
        assert_eq!(parse_test_result("running 3 tests"), None);
        assert_eq!(parse_test_result("x86: 28 passed, 0 failed in 12.0 s"), None);
    }

    #[test]
    fn summary_adds_stages_and_ends_with_the_plain_line() {
        let stages = [("a", Count { passed: 3, failed: 1 }), ("b", Count { passed: 4, failed: 0 })];
        let (lines, total) = summary(&stages);
        assert_eq!(total, Count { passed: 7, failed: 1 });
        assert_eq!(lines.last().map(String::as_str), Some("total: 7 passed, 1 failed"));
        assert!(lines[1].contains("3 passed, 1 failed"), "{lines:?}");
    }
}
