//! Checks, from outside a driver process, that it runs inside its sandbox,
//! and that a crash injected into it still ends it by the signal it raised.
//!
//! # Why
//! The seccomp allow-list (`host-supervisor/sandbox`) names the system calls
//! the runtime makes, and those depend on the C library and the
//! architecture: the guests' drivers are static musl binaries, on x86_64 and
//! on aarch64, where the host tests use glibc on x86_64. musl's `raise()`
//! calls `tkill`, which was missing from the list, so an injected `SIGSEGV`
//! ended the driver by `SIGSYS` instead (commit 179446e). These checks make
//! the suites prove, on every machine they run on, that
//! - each driver's `/proc/<pid>/status` shows the filter (`Seccomp: 2`),
//!   `NoNewPrivs: 1` and no effective capability, and
//! - a `SIGSEGV` and a `SIGABRT` injected into it are reported by the
//!   supervisor as those signals, and no driver ever died of `SIGSYS`.
//!
//! The supervisor checks the same status fields at `Ready`; reading them
//! here does not trust the supervisor's word for it.

use crate::harness::{Context, Failure, TestResult};
use crate::sup::{Supervisor, control, running, wait_status};
use reinc_client::control::ControlRequest;
use reinc_proto::{CrashKind, CrashPoint, FaultPlan};

/// The fields of `/proc/<pid>/status` that show the sandbox, checked.
/// Returns them as one line for the log.
///
/// # Errors
/// The file cannot be read, or a field shows the process unconfined.
pub fn confined(pid: u32) -> Result<String, Failure> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).context(|| path.clone())?;
    let field =
        |name: &str| text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':'))).map(str::trim);
    let seccomp = field("Seccomp");
    if seccomp != Some("2") {
        return Err(Failure::check(format!("{path}: Seccomp is {seccomp:?}, not 2 (a filter)")));
    }
    // Since Linux 5.9; absent on older kernels.
    if let Some(n) = field("Seccomp_filters") {
        let n: u32 = n.parse().unwrap_or(0);
        if n == 0 {
            return Err(Failure::check(format!("{path}: Seccomp_filters is 0")));
        }
    }
    if field("NoNewPrivs") != Some("1") {
        return Err(Failure::check(format!("{path}: NoNewPrivs is {:?}, not 1", field("NoNewPrivs"))));
    }
    let cap_eff = field("CapEff").unwrap_or("missing");
    if !cap_eff.trim_start_matches('0').is_empty() {
        return Err(Failure::check(format!("{path}: CapEff is {cap_eff}, not empty")));
    }
    Ok(format!("pid {pid}: Seccomp 2, NoNewPrivs 1, CapEff {cap_eff}"))
}

/// The signal name the supervisor logs for an injected crash of `kind`.
fn signal_of(kind: CrashKind) -> Option<&'static str> {
    match kind {
        CrashKind::Segv => Some("SIGSEGV"),
        CrashKind::Abrt => Some("SIGABRT"),
        CrashKind::Kill => Some("SIGKILL"),
        CrashKind::Panic | CrashKind::Exit | CrashKind::Hang => None,
    }
}

/// For each kind of `kinds` (signals only): arms the fault on the running
/// instance of `driver`, calls `trigger` (which makes it handle a request),
/// and checks that the supervisor saw the instance die of that very signal,
/// restarted it, and that the new instance is confined again. Finally checks
/// that no driver died of `SIGSYS` during the whole run so far.
///
/// # Errors
/// Any of those checks failing, with what was seen.
pub fn crashes_keep_their_signal(
    sup: &Supervisor,
    driver: &str,
    kinds: &[CrashKind],
    mut trigger: impl FnMut() -> TestResult,
) -> TestResult {
    for &kind in kinds {
        let Some(sig) = signal_of(kind) else {
            return Err(Failure::check(format!("{kind:?} is not a signal")));
        };
        let line = format!("[SUP] {driver} crashed ({sig})");
        let before_lines = sup.count_logged(&line);
        let before = wait_status(driver, "running", running)?;
        let plan = FaultPlan { point: CrashPoint::BeforeEffect, on_request: 1, kind };
        control(ControlRequest::Inject { driver: driver.into(), plan })?;
        trigger()?;
        let after = wait_status(driver, "restarted", |s| running(s) && s.generation > before.generation)?;
        if after.last_failure.as_deref() != Some(sig) {
            return Err(Failure::check(format!(
                "{driver}: an injected {sig} was reported as {:?} (a seccomp kill is SIGSYS)",
                after.last_failure
            )));
        }
        let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while sup.count_logged(&line) <= before_lines && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if sup.count_logged(&line) <= before_lines {
            return Err(Failure::check(format!("the supervisor did not log `{line}`")));
        }
        let shown = confined(after.pid.expect("running has a pid"))?;
        tracing::info!("[sandbox] {driver} died of {sig} as injected; restarted instance {shown}");
    }
    let sigsys = sup.count_logged("SIGSYS");
    if sigsys > 0 {
        return Err(Failure::check(format!("{sigsys} supervisor log line(s) name SIGSYS: a driver hit its filter")));
    }
    Ok(())
}
