//! `cargo xtask test`: the whole suite, exactly what CI runs.
//!
//! 1. `cargo build --workspace --bins` and `cargo test --workspace` (unit,
//!    property and integration tests);
//! 2. every `core-nostd` crate built for `thumbv7em-none-eabihf`;
//! 3. the QEMU guest suites of every machine profile (`cargo xtask qemu-test`);
//! 4. last, the benchmark smoke test (`cargo xtask bench --quick`): every row
//!    produced with sane values, no performance figure asserted.

use crate::util::{self, Result};

/// Flags: none; the QEMU part runs every machine profile.
pub fn run(args: &[String]) -> Result {
    if let Some(a) = args.first() {
        return Err(util::Error::Usage(format!("`cargo xtask test` takes no argument, got `{a}`")));
    }
    util::run(util::cargo().args(["build", "--workspace", "--bins"]))?;
    util::run(util::cargo().args(["test", "--workspace"]))?;
    crate::nostd::build_all()?;
    crate::qemu_test::run_with(&crate::qemu_test::Flags::default())?;
    crate::bench::run(&["--quick".to_owned()])?;
    Ok(())
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
