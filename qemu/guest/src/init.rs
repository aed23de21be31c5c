//! The steps of the guest's PID 1, driven by the boot plan.

use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};
use nix::mount::{MsFlags, mount};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use reinc_guest_protocol::{Bind, Marker, Module, Plan};
use tracing::{info, warn};

use crate::tally::{Ending, Tally, judge};

/// A boot step that failed; every variant names the file or program.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot mount {fstype} on {target}: {errno}")]
    Mount { fstype: &'static str, target: &'static str, errno: Errno },
    #[error("cannot read the boot plan {path}: {source}")]
    ReadPlan { path: &'static str, source: std::io::Error },
    #[error(transparent)]
    Plan(#[from] reinc_guest_protocol::PlanError),
    #[error("cannot open module {path}: {source}")]
    OpenModule { path: String, source: std::io::Error },
    #[error("cannot load module {path}: {errno}")]
    LoadModule { path: String, errno: Errno },
    #[error("cannot bind `{id}` to {driver} through {path}: {source}")]
    Bind { driver: String, id: String, path: PathBuf, source: std::io::Error },
    #[error("only {found} of {wanted} UIO devices appeared within {waited:?} ({devices:?})")]
    UioTimeout { wanted: usize, found: usize, waited: Duration, devices: Vec<String> },
    #[error("cannot start suite {suite}: {source}")]
    StartSuite { suite: String, source: std::io::Error },
}

/// Mounts the pseudo filesystems the suites need. An already mounted one
/// (`EBUSY`) is fine.
pub fn mount_filesystems() -> Result<(), InitError> {
    for (fstype, target) in [("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev")] {
        match mount(Some(fstype), target, Some(fstype), MsFlags::empty(), None::<&str>) {
            Ok(()) | Err(Errno::EBUSY) => {}
            Err(errno) => return Err(InitError::Mount { fstype, target, errno }),
        }
    }
    Ok(())
}

/// Reads the plan the xtask put into the initramfs.
pub fn read_plan() -> Result<Plan, InitError> {
    let path = reinc_guest_protocol::PLAN_PATH;
    let text = std::fs::read_to_string(path).map_err(|source| InitError::ReadPlan { path, source })?;
    Ok(Plan::parse(&text)?)
}

/// Loads one module with `finit_module`; an already loaded one is fine.
pub fn load_module(m: &Module) -> Result<(), InitError> {
    let file = File::open(&m.path).map_err(|source| InitError::OpenModule { path: m.path.clone(), source })?;
    let params = CString::new(m.params.as_str())
        .map_err(|_| InitError::LoadModule { path: m.path.clone(), errno: Errno::EINVAL })?;
    match finit_module(&file, &params, ModuleInitFlags::empty()) {
        Ok(()) => {
            info!(
                "[init] loaded {}{}",
                m.path,
                if m.params.is_empty() { String::new() } else { format!(" {}", m.params) }
            );
            Ok(())
        }
        Err(Errno::EEXIST) => Ok(()),
        Err(errno) => Err(InitError::LoadModule { path: m.path.clone(), errno }),
    }
}

/// Writes a PCI id into the driver's `new_id`, which binds every matching
/// device not yet bound.
pub fn bind(b: &Bind) -> Result<(), InitError> {
    let path = Path::new("/sys/bus/pci/drivers").join(&b.driver).join("new_id");
    let err = |source| InitError::Bind { driver: b.driver.clone(), id: b.id.clone(), path: path.clone(), source };
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).map_err(err)?;
    f.write_all(b.id.as_bytes()).map_err(err)?;
    info!("[init] bound PCI id {} to {}", b.id, b.driver);
    Ok(())
}

/// Waits until `wanted` UIO devices exist in sysfs *and* as `/dev` nodes
/// (devtmpfs creates them asynchronously). Polls every 10 ms: this runs once,
/// before any test, for at most `limit`.
pub fn wait_for_uio(wanted: usize, limit: Duration) -> Result<Vec<String>, InitError> {
    let start = Instant::now();
    loop {
        let devices = uio_devices();
        let ready = devices.iter().filter(|d| Path::new("/dev").join(d).exists()).count();
        if ready >= wanted {
            info!("[init] {} UIO device(s) ready: {}", devices.len(), devices.join(" "));
            return Ok(devices);
        }
        if start.elapsed() >= limit {
            return Err(InitError::UioTimeout { wanted, found: ready, waited: limit, devices });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn uio_devices() -> Vec<String> {
    let names: Vec<String> = std::fs::read_dir("/sys/class/uio")
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect())
        .unwrap_or_default();
    in_uio_order(names)
}

/// `uioN` names by N (so `uio10` follows `uio9`), anything else last.
fn in_uio_order(mut names: Vec<String>) -> Vec<String> {
    names.sort_by_key(|n| (n.strip_prefix("uio").and_then(|d| d.parse::<u32>().ok()).unwrap_or(u32::MAX), n.clone()));
    names
}

/// Runs one suite program, echoing its stdout to the console line by line
/// and tallying its results. Returns a problem if it ended badly.
pub fn run_suite(suite: &str, tally: &mut Tally) -> Result<Option<String>, InitError> {
    info!("[init] running {suite}");
    let mut child = Command::new(suite)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| InitError::StartSuite { suite: suite.to_string(), source })?;
    let before = *tally;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut console = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        tally.observe(&line);
        let _ = writeln!(console, "{line}");
    }
    drop(console);
    let status = child.wait().map_err(|source| InitError::StartSuite { suite: suite.to_string(), source })?;
    let ending = match (status.code(), status.signal()) {
        (Some(code), _) => Ending::Code(code),
        (None, Some(sig)) => Ending::Signal(sig),
        (None, None) => Ending::Code(-1),
    };
    let problem = judge(suite, ending, before, *tally);
    let orphans = reap_orphans();
    if orphans > 0 {
        info!("[init] reaped {orphans} process(es) left behind by {suite}");
    }
    if let Some(p) = &problem {
        warn!("[init] {p}");
    }
    Ok(problem)
}

/// Reaps exited children that are not a suite's: processes a suite leaves
/// behind (a supervisor's drivers, say) are re-parented to PID 1 when their
/// parent dies, and nobody else will ever wait for them. Non-blocking; called
/// between suites, never while a suite runs (its status must stay ours).
pub fn reap_orphans() -> usize {
    let mut reaped = 0;
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return reaped,
            Ok(_) => reaped += 1,
        }
    }
}

/// Prints a setup problem as a `GUEST-ERROR` line (the xtask counts it as a
/// failure) and logs it.
pub fn report_error(message: &str) {
    warn!("[init] {message}");
    println!("{}", Marker::Error(message.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uio_names_sort_numerically() {
        let names = ["uio10", "uio2", "odd", "uio0"].map(String::from).to_vec();
        assert_eq!(in_uio_order(names), ["uio0", "uio2", "uio10", "odd"]);
    }
}
