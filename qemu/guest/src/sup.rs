//! The supervisor as the guest suites see it: its control socket, driver
//! status, waiting for a state, and a client connection. Shared by the
//! supervised suites of every machine, which all run the supervisor with its
//! sockets in [`RUNTIME_DIR`].

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use reinc_client::control::{ControlRequest, ControlResponse, DriverState, DriverStatus};
use reinc_client::{Client, client_socket, control_request, control_socket};

use crate::harness::{Context, Failure};

/// Where the suites run the supervisor's sockets (`--runtime-dir`).
pub const RUNTIME_DIR: &str = "/run/reinc";

/// How long a driver may take to reach a state (restarts under TCG).
pub const STATE_WAIT: Duration = Duration::from_secs(15);

/// One control request; a refusal (`Error`) is a test failure.
///
/// # Errors
/// The socket failed, or the supervisor refused the request.
pub fn control(req: ControlRequest) -> Result<ControlResponse, Failure> {
    control_at(Path::new(RUNTIME_DIR), req)
}

/// One control request to the supervisor whose sockets are in `runtime_dir`
/// (a test running a supervisor of its own); errors name the socket.
///
/// # Errors
/// As [`control`].
pub fn control_at(runtime_dir: &Path, req: ControlRequest) -> Result<ControlResponse, Failure> {
    let what = format!("{req:?}");
    let socket = control_socket(runtime_dir);
    match control_request(&socket, &req).context(|| format!("control {what} on {}", socket.display()))? {
        ControlResponse::Error(e) => {
            Err(Failure::check(format!("control {what} refused by {}: {e}", socket.display())))
        }
        r => Ok(r),
    }
}

/// Every driver's status.
///
/// # Errors
/// As [`control`], or an answer that is not a status.
pub fn statuses() -> Result<Vec<DriverStatus>, Failure> {
    statuses_at(Path::new(RUNTIME_DIR))
}

/// Every driver's status from the supervisor whose sockets are in `runtime_dir`.
///
/// # Errors
/// As [`control_at`], or an answer that is not a status.
pub fn statuses_at(runtime_dir: &Path) -> Result<Vec<DriverStatus>, Failure> {
    match control_at(runtime_dir, ControlRequest::Status)? {
        ControlResponse::Status(rows) => Ok(rows),
        other => Err(Failure::check(format!("status answered {other:?}"))),
    }
}

/// One driver's status.
///
/// # Errors
/// As [`statuses`], or no such driver.
pub fn status(driver: &str) -> Result<DriverStatus, Failure> {
    status_at(Path::new(RUNTIME_DIR), driver)
}

/// One driver's status from the supervisor whose sockets are in `runtime_dir`.
///
/// # Errors
/// As [`statuses_at`], or no such driver.
pub fn status_at(runtime_dir: &Path, driver: &str) -> Result<DriverStatus, Failure> {
    statuses_at(runtime_dir)?
        .into_iter()
        .find(|s| s.name == driver)
        .ok_or_else(|| Failure::check(format!("{driver} is not in the supervisor's status")))
}

/// Whether the driver has a live, ready instance.
#[must_use]
pub fn running(s: &DriverStatus) -> bool {
    s.state == DriverState::Running && s.pid.is_some()
}

/// Polls the status until `pred` holds (10 ms steps; this is a test).
///
/// # Errors
/// As [`status`], or `pred` still false after [`STATE_WAIT`].
pub fn wait_status(driver: &str, what: &str, pred: impl Fn(&DriverStatus) -> bool) -> Result<DriverStatus, Failure> {
    wait_status_at(Path::new(RUNTIME_DIR), driver, what, (STATE_WAIT, Duration::from_millis(10)), pred)
}

/// Polls the status of `driver` under `runtime_dir` every `step` until
/// `pred` holds, for at most `limit` (`within` is `(limit, step)`).
///
/// # Errors
/// As [`status_at`], or `pred` still false after `limit`.
pub fn wait_status_at(
    runtime_dir: &Path,
    driver: &str,
    what: &str,
    (limit, step): (Duration, Duration),
    pred: impl Fn(&DriverStatus) -> bool,
) -> Result<DriverStatus, Failure> {
    let end = Instant::now() + limit;
    loop {
        let s = status_at(runtime_dir, driver)?;
        if pred(&s) {
            return Ok(s);
        }
        if Instant::now() >= end {
            return Err(Failure::check(format!("{driver} never became {what} within {limit:?}; last: {s:?}")));
        }
        std::thread::sleep(step);
    }
}

/// A client session on the supervisor's client socket.
///
/// # Errors
/// The connection or the session handshake failed.
pub fn connect() -> Result<Client, Failure> {
    let path = client_socket(Path::new(RUNTIME_DIR));
    Client::connect(&path).context(|| format!("connecting to {}", path.display()))
}

/// The supervisor process of a suite: started from a config file, its
/// stderr echoed to the console (so `--verbose` shows the `[SUP]` lines) and
/// kept for [`Supervisor::logged`]. Killed on drop if still running.
#[derive(Debug, Default)]
pub struct Supervisor {
    child: Mutex<Option<Child>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Supervisor {
    /// Starts `/bin/supervisor --config CONFIG_PATH`.
    ///
    /// # Errors
    /// It is already running, or could not be started.
    pub fn start(&self, config_path: &str) -> Result<(), Failure> {
        self.start_with(config_path, true)
    }

    /// Starts it as [`Supervisor::start`] does; with `echo` false its log
    /// lines are kept but not echoed to the console (a long campaign leg
    /// would otherwise push megabytes through the emulated serial line).
    ///
    /// # Errors
    /// As [`Supervisor::start`].
    pub fn start_with(&self, config_path: &str, echo: bool) -> Result<(), Failure> {
        let mut slot = self.child.lock().unwrap();
        if slot.is_some() {
            return Err(Failure::check("the supervisor is already running"));
        }
        let mut child = Command::new("/bin/supervisor")
            .args(["--config", config_path])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context(|| "starting /bin/supervisor".into())?;
        let stderr = child.stderr.take().expect("piped");
        let sink = self.log.clone();
        std::thread::spawn(move || {
            let mut console = std::io::stderr();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if echo {
                    let _ = writeln!(console, "{line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        *slot = Some(child);
        Ok(())
    }

    /// Whether some log line contains `needle`, waiting up to 2 s (the echo
    /// thread may be a line behind the event that caused it).
    #[must_use]
    pub fn logged(&self, needle: &str) -> bool {
        let end = Instant::now() + Duration::from_secs(2);
        loop {
            if self.count_logged(needle) > 0 {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many log lines so far contain `needle`.
    #[must_use]
    pub fn count_logged(&self, needle: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
    }

    /// The log lines from the `from`-th on (for echoing them as they come).
    #[must_use]
    pub fn lines_from(&self, from: usize) -> Vec<String> {
        self.log.lock().unwrap().get(from..).map(<[String]>::to_vec).unwrap_or_default()
    }

    /// Whether it was started and not stopped.
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.child.lock().unwrap().is_some()
    }

    /// How it ended, if it was started and has exited since (it is then
    /// reaped, and no longer [`Supervisor::is_running`]). A campaign checks
    /// this after every fault: the supervisor must never die.
    ///
    /// # Errors
    /// `waitpid` failed.
    pub fn exited(&self) -> Result<Option<ExitStatus>, Failure> {
        let mut slot = self.child.lock().unwrap();
        let Some(child) = slot.as_mut() else { return Ok(None) };
        let status = child.try_wait().context(|| format!("waiting for /bin/supervisor (pid {})", child.id()))?;
        if status.is_some() {
            *slot = None;
        }
        Ok(status)
    }

    /// SIGTERM, then wait (SIGKILL after 10 s). Returns the exit code.
    ///
    /// # Errors
    /// It was not running, or ignored SIGTERM for 10 s.
    pub fn stop(&self) -> Result<Option<i32>, Failure> {
        self.signal(Signal::SIGTERM).map(|status| status.code())
    }

    /// Sends `sig` and reaps the supervisor, as a service manager does
    /// before `Restart=always` starts it again ([`Supervisor::start`] may
    /// follow at once). Returns how it ended.
    ///
    /// # Errors
    /// It was not running, or still ran 10 s after `sig` (it is then
    /// SIGKILLed and reaped).
    pub fn signal(&self, sig: Signal) -> Result<ExitStatus, Failure> {
        let Some(mut child) = self.child.lock().unwrap().take() else {
            return Err(Failure::check("the supervisor is not running"));
        };
        let pid = child.id();
        kill(Pid::from_raw(pid as i32), sig).context(|| format!("{} to /bin/supervisor (pid {pid})", sig.as_str()))?;
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().context(|| format!("waiting for /bin/supervisor (pid {pid})"))? {
                return Ok(status);
            }
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Failure::check(format!("/bin/supervisor (pid {pid}) ignored {} for 10 s", sig.as_str())));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.get_mut().map_or(None, Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
