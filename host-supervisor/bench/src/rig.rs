//! A supervisor process with a generated configuration, for the benchmarks.
//!
//! Same idea as the test rig in `tests/` (a private directory, a config
//! written from data, control requests to wait for states), but sized for
//! benchmarks: many drivers, any executable, explicit settings per run, and
//! errors instead of panics so a failed row is reported, not a crashed run.

use crate::BenchError;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reinc_client::control::{ControlRequest, ControlResponse, DriverStatus};
use reinc_client::{Client, client_socket, control_request, control_socket};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The executables the benchmarks run.
#[derive(Debug, Clone)]
pub struct Bins {
    /// The daemon.
    pub supervisor: PathBuf,
    /// The CLI (its `blk` command is the dd-like tool).
    pub drvctl: PathBuf,
    /// The file-backed storage driver.
    pub storage_driver: PathBuf,
    /// The device-less benchmark driver.
    pub null_driver: PathBuf,
    /// The NBD front end.
    pub nbd: PathBuf,
    /// This harness (re-executed for the raw floors' helper processes).
    pub harness: PathBuf,
}

impl Bins {
    /// The binaries in `dir` (a cargo profile directory).
    ///
    /// # Errors
    /// [`BenchError::MissingBinary`] naming the first one missing.
    pub fn in_dir(dir: &Path) -> Result<Self, BenchError> {
        let find = |name: &str| {
            let p = dir.join(name);
            if p.is_file() { Ok(p) } else { Err(BenchError::MissingBinary(p)) }
        };
        Ok(Self {
            supervisor: find("supervisor")?,
            drvctl: find("drvctl")?,
            storage_driver: find("storage_driver")?,
            null_driver: find("reinc-bench-driver")?,
            nbd: find("reinc-nbd")?,
            harness: std::env::current_exe().map_err(|e| BenchError::io("current executable", e))?,
        })
    }
}

/// One `[[driver]]` of a generated configuration.
#[derive(Debug, Clone)]
pub struct DriverSpec {
    /// Its name.
    pub name: String,
    /// Its executable.
    pub exec: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra `key = value` lines (TOML values, already quoted as needed).
    pub settings: Vec<(String, String)>,
}

impl DriverSpec {
    /// A driver with no arguments and no extra settings.
    #[must_use]
    pub fn new(name: impl Into<String>, exec: &Path) -> Self {
        Self { name: name.into(), exec: exec.into(), args: Vec::new(), settings: Vec::new() }
    }

    /// Adds a `key = value` setting.
    #[must_use]
    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        self.settings.push((key.into(), value.to_string()));
        self
    }

    /// For recovery rows: every restart immediate (no backoff, no jitter),
    /// never quarantined and never poisoned while kills come at most 50 a
    /// second (the supervisor allows 64 restarts a second, so kills must be
    /// paced at least 20 ms apart), and no heartbeat verdict during the short
    /// SIGSTOP that precedes each kill.
    #[must_use]
    pub fn restart_at_once(self) -> Self {
        self.set("backoff-base-ms", 0)
            .set("backoff-cap-ms", 0)
            .set("jitter-percent", 0)
            .set("healthy-after-ms", 1)
            .set("restart-window-ms", 1000)
            .set("max-restarts", 64)
            .set("poison-after", 1000)
            .set("heartbeat-interval-ms", 60_000)
    }

    /// Sets the arguments.
    #[must_use]
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|a| (*a).to_owned()).collect();
        self
    }
}

fn toml_str(s: &str) -> String {
    // Basic TOML string: escape backslash and quote (paths here have no control characters).
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The configuration text for `drivers` with checkpoints under `state_dir`.
#[must_use]
pub fn config_text(state_dir: &Path, drivers: &[DriverSpec]) -> String {
    let mut t = format!("[supervisor]\nstate-dir = {}\n", toml_str(&state_dir.to_string_lossy()));
    for d in drivers {
        let args: Vec<String> = d.args.iter().map(|a| toml_str(a)).collect();
        let _ = write!(
            t,
            "\n[[driver]]\nname = {}\nexec = {}\nargs = [{}]\n",
            toml_str(&d.name),
            toml_str(&d.exec.to_string_lossy()),
            args.join(", ")
        );
        for (k, v) in &d.settings {
            let _ = writeln!(t, "{k} = {v}");
        }
    }
    t
}

/// A running supervisor in a private directory; stopped (and its
/// directory's sockets removed) on drop.
#[derive(Debug)]
pub struct Supervisor {
    child: Option<Child>,
    /// The private directory.
    pub dir: PathBuf,
    /// Where its sockets are.
    pub runtime: PathBuf,
    log: PathBuf,
}

impl Supervisor {
    /// Writes the config into `dir` (created) and starts the supervisor,
    /// its log going to `dir/supervisor.log`. Returns once every driver runs.
    ///
    /// # Errors
    /// A spawn failure, or drivers not all running within `timeout`.
    pub fn start(bins: &Bins, dir: &Path, drivers: &[DriverSpec], timeout: Duration) -> Result<Self, BenchError> {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir.display(), e))?;
        let config = dir.join("supervisor.toml");
        std::fs::write(&config, config_text(&dir.join("state"), drivers))
            .map_err(|e| BenchError::io(config.display(), e))?;
        let log = dir.join("supervisor.log");
        let runtime = dir.join("run");
        let child = spawn_supervisor(bins, dir, &log)?;
        let sup = Self { child: Some(child), dir: dir.into(), runtime, log };
        let n = drivers.len();
        sup.wait_status(timeout, |rows| rows.len() == n && rows.iter().all(|r| r.state.name() == "running"))
            .map_err(|e| BenchError::Setup(format!("not all {n} drivers running: {e}; {}", sup.tail())))?;
        Ok(sup)
    }

    /// SIGKILLs the supervisor, reaps it and starts a new one on the same
    /// configuration at once (what systemd's `Restart=always` does); returns
    /// the instant of the kill.
    ///
    /// # Errors
    /// No supervisor runs, or the new one cannot be spawned.
    pub fn kill_and_respawn(&mut self, bins: &Bins) -> Result<Instant, BenchError> {
        let mut child = self.child.take().ok_or_else(|| BenchError::Setup("no supervisor to kill".into()))?;
        let t = Instant::now();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL)
            .map_err(|e| BenchError::io("SIGKILL supervisor", e.into()))?;
        let _ = child.wait();
        self.child = Some(spawn_supervisor(bins, &self.dir, &self.log)?);
        Ok(t)
    }

    /// The supervisor's pid.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The last lines of its log, for error messages.
    #[must_use]
    pub fn tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!("log {}:\n{}", self.log.display(), lines[lines.len().saturating_sub(8)..].join("\n"))
    }

    /// Every driver's status.
    ///
    /// # Errors
    /// The control socket does not answer.
    pub fn status(&self) -> Result<Vec<DriverStatus>, BenchError> {
        match control_request(&control_socket(&self.runtime), &ControlRequest::Status) {
            Ok(ControlResponse::Status(rows)) => Ok(rows),
            Ok(other) => Err(BenchError::Setup(format!("unexpected status answer {other:?}"))),
            Err(e) => Err(BenchError::Client(e.to_string())),
        }
    }

    /// The status of driver `name`.
    ///
    /// # Errors
    /// No answer, or no such driver.
    pub fn driver(&self, name: &str) -> Result<DriverStatus, BenchError> {
        self.status()?
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| BenchError::Setup(format!("the supervisor has no driver named {name}")))
    }

    /// Polls the status every millisecond until `f` holds.
    ///
    /// # Errors
    /// [`BenchError::Timeout`].
    pub fn wait_status(
        &self,
        timeout: Duration,
        f: impl Fn(&[DriverStatus]) -> bool,
    ) -> Result<Vec<DriverStatus>, BenchError> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.status() {
                Ok(rows) if f(&rows) => return Ok(rows),
                Ok(rows) => format!("last status: {rows:?}"),
                Err(e) => format!("last error: {e}"),
            };
            if Instant::now() >= deadline {
                return Err(BenchError::Timeout(format!("a supervisor status condition ({timeout:?}); {last}")));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A new client session.
    ///
    /// # Errors
    /// The client socket does not answer.
    pub fn client(&self) -> Result<Client, BenchError> {
        Client::connect(&client_socket(&self.runtime)).map_err(|e| BenchError::Client(e.to_string()))
    }

    /// Stops it with SIGTERM (SIGKILL after 10 s) and waits.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Starts the supervisor on `dir/supervisor.toml`, its output appended to `log`.
fn spawn_supervisor(bins: &Bins, dir: &Path, log: &Path) -> Result<Child, BenchError> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| BenchError::io(log.display(), e))?;
    let err = out.try_clone().map_err(|e| BenchError::io(log.display(), e))?;
    Command::new(&bins.supervisor)
        .arg("--config")
        .arg(dir.join("supervisor.toml"))
        .arg("--runtime-dir")
        .arg(dir.join("run"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| BenchError::io(bins.supervisor.display(), e))
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_config_is_accepted_by_the_supervisor_with_paths_quoted() {
        let d = DriverSpec::new("storage_driver", Path::new("/bin/sd"))
            .args(&["--file", "/tmp/a \"b\".img", "--blocks", "64"])
            .set("window", 64)
            .set("persist-checkpoint", true);
        let text = config_text(Path::new("/tmp/st\\ate"), &[d, DriverSpec::new("n1", Path::new("/bin/n"))]);
        let cfg = reinc_supervisor::config::parse(&text).unwrap_or_else(|p| panic!("{p:?}\n{text}"));
        assert_eq!(cfg.supervisor.state_dir, Path::new("/tmp/st\\ate"));
        assert_eq!(cfg.drivers[0].args, ["--file", "/tmp/a \"b\".img", "--blocks", "64"]);
        assert_eq!(cfg.drivers[0].window, 64);
        assert!(cfg.drivers[0].persist_checkpoint);
        assert_eq!(cfg.drivers[1].name, "n1");
    }
}
