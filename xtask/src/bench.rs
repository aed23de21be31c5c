//! `cargo xtask bench [--quick]`: the benchmarks, against floors measured in
//! the same run.
//!
//! Builds the supervisor, `drvctl`, `storage_driver` and the harness
//! (`host-supervisor/bench`, which holds every measurement and the report)
//! in release, then runs `reinc-bench run`. The report goes to
//! `target/bench/report.md` and `target/bench/report.json`.
//!
//! `--quick` is the smoke test `cargo xtask test` runs last: small budgets,
//! well under a minute, and it fails only if a row is missing or a figure is
//! not a positive number, never because of a performance figure (these
//! machines are shared and noisy).

use crate::util::{self, Result};
use std::path::PathBuf;
use std::process::Command;

/// The packages whose binaries the harness runs.
const PACKAGES: [&str; 5] = ["reinc-supervisor", "reinc-client", "storage_driver", "reinc-nbd", "reinc-bench"];

/// Where cargo puts build output: `$CARGO_TARGET_DIR`, else `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() { d } else { util::workspace_root().join(d) }
        }
        None => util::workspace_root().join("target"),
    }
}

/// Flags: `--quick` (the smoke-test budget), `--only WORD` (only the
/// sections whose name contains WORD).
pub fn run(args: &[String]) -> Result {
    let mut quick = false;
    let mut only = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--only" => {
                only = Some(
                    it.next().ok_or_else(|| util::Error::Usage("`cargo xtask bench --only` needs a word".into()))?,
                );
            }
            other => {
                return Err(util::Error::Usage(format!(
                    "`cargo xtask bench` takes --quick and --only WORD, got `{other}`"
                )));
            }
        }
    }
    // nbdcopy, nbdkit and qemu-nbd for the NBD rows.
    crate::test::ensure_nbd_tools();
    let mut build = util::cargo();
    build.args(["build", "--release", "--bins"]);
    for p in PACKAGES {
        build.args(["-p", p]);
    }
    util::run(&mut build)?;
    let bins = target_dir().join("release");
    let out = target_dir().join("bench");
    let mut bench = Command::new(bins.join("reinc-bench"));
    bench.arg("run").arg("--out").arg(&out).arg("--bins").arg(&bins);
    if quick {
        bench.arg("--quick");
    }
    if let Some(w) = only {
        bench.arg("--only").arg(w);
    }
    util::run(&mut bench)
}
