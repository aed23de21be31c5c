//! `cargo xtask fuzz`: the stable fuzzer (`host-supervisor/fuzz`, crate
//! `reinc-fuzz`) over every target, from the committed corpora.
//!
//! `cargo xtask test` runs [`smoke`]: a few seconds per target, one check per
//! target, so a finding fails CI with the target's name. `cargo xtask fuzz
//! [--seconds S] [--save] [TARGET]` is the longer run for developers; `--save`
//! adds new-outcome inputs to the corpus, to be committed.

use crate::test::Count;
use crate::util::{self, Result};

/// The targets, as `reinc-fuzz` names them (`TARGETS` in
/// `host-supervisor/fuzz/src/lib.rs`).
const TARGETS: [&str; 8] = [
    "client_frames",
    "control_frame",
    "driver_frames",
    "checkpoint",
    "config",
    "journal",
    "journal_records",
    "nbd_handshake",
];

/// `cargo xtask fuzz [ARGS…]`: passes the arguments on (default: every target
/// for 30 s each), optimized build.
pub fn run(args: &[String]) -> Result {
    let mut cmd = util::cargo();
    cmd.args(["run", "--quiet", "--release", "-p", "reinc-fuzz", "--"]);
    if args.is_empty() {
        cmd.args(["all", "--seconds", "30"]);
    } else {
        cmd.args(args);
    }
    util::run(&mut cmd)
}

/// The CI stage: 3 s per target (debug build, already built by the test
/// stage's `cargo build --workspace --bins`).
pub fn smoke() -> Count {
    let mut c = Count::default();
    for t in TARGETS {
        let mut cmd = util::cargo();
        cmd.args(["run", "--quiet", "-p", "reinc-fuzz", "--", t, "--seconds", "3"]);
        match util::run(&mut cmd) {
            Ok(()) => c.passed += 1,
            Err(e) => {
                eprintln!("xtask: fuzz {t}: {e}");
                c.failed += 1;
            }
        }
    }
    c
}
