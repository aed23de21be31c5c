//! The supervisor as the guest suites see it: its control socket, driver
//! status, waiting for a state, and a client connection. Shared by the
//! supervised suites of every machine, which all run the supervisor with its
//! sockets in [`RUNTIME_DIR`].

use std::path::Path;
use std::time::{Duration, Instant};

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
    let what = format!("{req:?}");
    match control_request(&control_socket(Path::new(RUNTIME_DIR)), &req).context(|| format!("control {what}"))? {
        ControlResponse::Error(e) => Err(Failure::check(format!("control {what} refused: {e}"))),
        r => Ok(r),
    }
}

/// Every driver's status.
///
/// # Errors
/// As [`control`], or an answer that is not a status.
pub fn statuses() -> Result<Vec<DriverStatus>, Failure> {
    match control(ControlRequest::Status)? {
        ControlResponse::Status(rows) => Ok(rows),
        other => Err(Failure::check(format!("status answered {other:?}"))),
    }
}

/// One driver's status.
///
/// # Errors
/// As [`statuses`], or no such driver.
pub fn status(driver: &str) -> Result<DriverStatus, Failure> {
    statuses()?
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
    let end = Instant::now() + STATE_WAIT;
    loop {
        let s = status(driver)?;
        if pred(&s) {
            return Ok(s);
        }
        if Instant::now() >= end {
            return Err(Failure::check(format!("{driver} never became {what} within {STATE_WAIT:?}; last: {s:?}")));
        }
        std::thread::sleep(Duration::from_millis(10));
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
