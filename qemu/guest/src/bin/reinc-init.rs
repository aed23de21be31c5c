//! PID 1 of the QEMU guests: mounts, loads modules, binds devices, runs the
//! suites from the boot plan, prints the summary, halts. See the crate docs
//! for why this is Rust and not busybox.
#![forbid(unsafe_code)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use nix::sys::reboot::{RebootMode, reboot};
use reinc_guest::init::{self, InitError};
use reinc_guest::tally::Tally;
use reinc_guest_protocol::Halt;

/// How long the UIO devices may take to appear after binding.
const UIO_WAIT: Duration = Duration::from_secs(10);

fn main() {
    reinc_guest::init_logging();
    let halt = match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(halt)) => halt,
        Ok(Err(e)) => early_failure(&e.to_string()),
        Err(_) => early_failure("reinc-init panicked (message above)"),
    };
    nix::unistd::sync();
    let mode = match halt {
        Halt::PowerOff => RebootMode::RB_POWER_OFF,
        Halt::Reboot => RebootMode::RB_AUTOBOOT,
    };
    let err = reboot(mode).unwrap_err();
    // PID 1 must not exit (that panics the kernel); the xtask's timeout ends
    // the run and reports this line.
    init::report_error(&format!("reboot({mode:?}) failed: {err}"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A failure before the plan could be followed. The error line fails the
/// run; the (empty) summary after it lets the xtask stop waiting after its
/// short post-summary grace, even on a machine where power-off only halts
/// the CPU (raspi3b), instead of sitting out the whole boot timeout. The
/// plan's halt method is unknown here, so try power-off.
fn early_failure(error: &str) -> Halt {
    init::report_error(error);
    println!("{}", Tally::default().summary());
    Halt::PowerOff
}

/// Everything up to the summary. Setup problems that still let the suites
/// run are reported and the boot goes on; the summary always comes.
fn run() -> Result<Halt, InitError> {
    init::mount_filesystems()?;
    let plan = init::read_plan()?;
    tracing::info!("[init] machine {}: {} module(s), {} suite(s)", plan.machine, plan.modules.len(), plan.suites.len());
    for m in &plan.modules {
        if let Err(e) = init::load_module(m) {
            init::report_error(&e.to_string());
        }
    }
    for b in &plan.binds {
        if let Err(e) = init::bind(b) {
            init::report_error(&e.to_string());
        }
    }
    if let Err(e) = init::wait_for_uio(plan.uio_devices, UIO_WAIT) {
        init::report_error(&e.to_string());
    }
    let mut tally = Tally::default();
    for suite in &plan.suites {
        match init::run_suite(suite, &mut tally) {
            Ok(None) => {}
            Ok(Some(problem)) => init::report_error(&problem),
            Err(e) => init::report_error(&e.to_string()),
        }
    }
    println!("{}", tally.summary());
    Ok(plan.halt)
}
