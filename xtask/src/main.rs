//! `cargo xtask`: the project's build and test driver.
//!
//! # Why it exists
//! The whole suite needs more than `cargo test`: `no_std` builds for a
//! bare-metal target, static guest binaries, Debian kernels, initramfs images
//! and QEMU boots. Shell scripts for that rot and cannot be tested; an xtask is
//! Rust, lives in the workspace and has its own unit tests (rust-analyzer's
//! pattern: one module per subcommand, few dependencies, hand-written argument
//! parsing, `std::process` for commands).
//!
//! Subcommands:
//! - `test`: everything CI runs (see [`mod@test`]).
//! - `qemu-test`: the QEMU guest suites (see [`qemu_test`]), and the
//!   bare-metal firmware's (see [`firmware`]).
//! - `demo`: the main job (see [`demo`]); `demo --guest` boots it in QEMU (see [`demo_guest`]).
//! - `bench`: benchmarks against floors measured in the same run (see [`mod@bench`]).
//! - `campaign`: the fault-injection campaign and its report (see [`campaign`]).
//! - `dist`: the release binaries with their man pages and shell completions
//!   (see [`dist`]).
//!
//! Support modules: [`machines`] (profiles, data in `qemu/machines.toml`),
//! [`apt`] (installing tools, downloading packages), [`kernel`] (kernel
//! download, extraction and cache), [`cpio`] and [`initramfs`] (the guest's
//! root filesystem), [`console`] (parsing the guest console into results).
//!
//! # Designs rejected
//! - clap for arguments: three flags do not justify a derive-macro dependency
//!   tree compiled before every first `cargo xtask`.
//! - Machine profiles as a Rust table: adding a board would mean editing the
//!   xtask; `qemu/machines.toml` is data with `deny_unknown_fields`.
//! - Building a kernel from `linux-source`: minutes per architecture; Debian's
//!   signed packages boot as they are, and only `uio_pdrv_genirq` is missing.
//! - The `cpio` and `gzip` command-line tools for the initramfs: another
//!   package to install, and device nodes such as `/dev/console` would need a
//!   staging tree with `mknod` (root); the in-memory writer needs neither.
//! - `expect`-style scraping of the console with fixed sleeps: results are
//!   explicit marker lines, parsed as they arrive, with one overall deadline.
#![forbid(unsafe_code)]

mod apt;
mod bench;
mod build_pi;
mod busybox;
mod campaign;
mod console;
mod cpio;
mod demo;
mod demo_guest;
mod disk;
mod dist;
mod firmware;
mod fuzz;
mod genirq;
mod initramfs;
mod kernel;
mod machines;
mod nostd;
mod progress;
mod qemu_test;
mod qemu_tool;
mod rpi;
mod test;
mod tidy;
mod util;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [flags]

commands:
  test          run the whole suite: workspace tests, no_std target builds, QEMU guests
  qemu-test     boot the QEMU guests and run their suites on real kernel UIO
                  [--machine NAME|rpi3-fw] [--verbose] [--timeout SECS]
  demo          run the main demo: supervised drivers, a crash mid-transfer, replay
                  [--size BYTES] [--keep] [--debug]
                  --guest [--verbose] [--timeout SECS]: the same in the x86 QEMU guest,
                  busybox dd on the kernel's /dev/nbd0 through a kill -SEGV
  build-pi      cross-build the Raspberry Pi binaries, config and overlay into target/pi/reinc
                  [--out DIR]
  bench         benchmarks against floors measured in the same run -> target/bench/report.md
                  [--quick]
  fuzz          the stable fuzzer over every decoder, the checkpoint reader and the config parser
                  [TARGET|all] [--seconds S] [--save]
  campaign      fault-injection campaign under live load -> target/campaign/report.md
                  [--faults N] [--seed S] [--out DIR]
  dist          supervisor and drvctl (release) with man pages and shell completions -> target/dist
                  [--out DIR]
  help          print this message
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(cmd) = args.next() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest: Vec<String> = args.collect();
    let result = match cmd.as_str() {
        "test" => test::run(&rest),
        "qemu-test" => qemu_test::run(&rest),
        "demo" => demo::run(&rest),
        "bench" => bench::run(&rest),
        "fuzz" => fuzz::run(&rest),
        "campaign" => campaign::run(&rest),
        "build-pi" => build_pi::run(&rest),
        "dist" => dist::run(&rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(util::Error::Usage(format!("unknown command `{other}`\n\n{USAGE}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The closing `N passed, N failed` line already said it; it stays the last line.
        Err(util::Error::GuestFailures { .. } | util::Error::SuiteFailures { .. }) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
