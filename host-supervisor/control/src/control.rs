//! The control protocol between `drvctl` and the supervisor's control socket
//! ([`crate::paths::control_socket`]).
//!
//! One request and one response per `SOCK_SEQPACKET` message, framed like
//! every other channel with [`reinc_proto::encode_vec`]/[`reinc_proto::decode`]
//! (protocol version first, then postcard), so a `drvctl` from another build
//! gets a clear "unknown version" instead of garbage. The types are owned
//! (`String`, `Vec`) because control traffic is rare and small.

use reinc_proto::{FaultPlan, RequestId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The largest control response (a status table or a trace ring).
pub const MAX_CONTROL_FRAME: usize = 1 << 20;

/// `drvctl` → supervisor.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ControlRequest {
    /// Every driver's status.
    Status,
    /// Restart a driver now; revives a quarantined or stopped one.
    Restart {
        /// The driver's name.
        driver: String,
    },
    /// Stop a driver (SIGTERM, then SIGKILL after its timeout); it stays
    /// stopped until `Restart`.
    Stop {
        /// The driver's name.
        driver: String,
    },
    /// The driver's queue of accepted, unanswered requests.
    DumpQueue {
        /// The driver's name.
        driver: String,
    },
    /// The raw bytes of the driver's trace ring (the last instance's, also
    /// after it died).
    Trace {
        /// The driver's name.
        driver: String,
    },
    /// Arm a one-shot fault in the driver's current instance.
    Inject {
        /// The driver's name.
        driver: String,
        /// What to inject.
        plan: FaultPlan,
    },
    /// The supervisor's metrics as Prometheus text (for node_exporter's
    /// textfile collector). Last, so the earlier variants keep their bytes.
    Metrics,
}

/// Supervisor → `drvctl`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ControlResponse {
    /// Answer to `Status`, in configuration order.
    Status(Vec<DriverStatus>),
    /// Answer to `DumpQueue`, oldest first.
    Queue(Vec<QueuedRequest>),
    /// Answer to `Trace`: the trace ring's bytes (`reinc_ringbuf::shared`).
    Trace(Vec<u8>),
    /// The command was carried out; a human-readable confirmation.
    Done(String),
    /// The command was refused; why, naming the driver.
    Error(String),
    /// Answer to `Metrics`: Prometheus text exposition format 0.0.4.
    Metrics(String),
}

/// A driver's lifecycle state.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DriverState {
    /// Launched, `Init` sent, waiting for `Ready`.
    Starting,
    /// Serving requests.
    Running,
    /// Missed its heartbeats; killed, waiting for the exit.
    Hung,
    /// Waiting out a backoff delay before the next launch.
    BackingOff,
    /// Too many restarts; not restarted until an operator revives it.
    Quarantined,
    /// Being stopped (SIGTERM sent).
    Stopping,
    /// Stopped by an operator or at shutdown.
    Stopped,
}

impl DriverState {
    /// Lowercase name, as shown by `drvctl status`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Hung => "hung",
            Self::BackingOff => "backing-off",
            Self::Quarantined => "quarantined",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
        }
    }
}

impl fmt::Display for DriverState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One row of `drvctl status`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DriverStatus {
    /// Configured name.
    pub name: String,
    /// The current instance's pid, if one is alive.
    pub pid: Option<u32>,
    /// The current (or last) instance's generation; 0 before the first launch.
    pub generation: u32,
    /// Lifecycle state.
    pub state: DriverState,
    /// Restarts since the supervisor started (operator restarts included).
    pub restarts: u32,
    /// Milliseconds since the current instance became ready.
    pub uptime_ms: Option<u64>,
    /// Why the last instance ended, e.g. `SIGSEGV`, `exit status 1`, `hung`.
    pub last_failure: Option<String>,
    /// Accepted, unanswered requests.
    pub queue_depth: u32,
    /// How many of those were sent to the current instance.
    pub in_flight: u32,
    /// Length of the current backoff delay, while backing off.
    pub backoff_ms: Option<u64>,
    /// Set while the driver's persisted checkpoint cannot be written: the
    /// file, the error and the attempts so far. Its replies are held (see
    /// `held_replies`) and the write is retried with backoff.
    #[serde(default)]
    pub checkpoint_error: Option<String>,
    /// Replies executed and committed but held until their checkpoint is
    /// durable.
    #[serde(default)]
    pub held_replies: u32,
}

/// One row of `drvctl dump-queue`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct QueuedRequest {
    /// The request's id.
    pub id: RequestId,
    /// Milliseconds since the supervisor accepted it.
    pub age_ms: u64,
    /// Sent to the current instance and not answered yet.
    pub in_flight: bool,
    /// Instances that died while it was the oldest in-flight request.
    pub crashes: u32,
    /// Size of the encoded request body.
    pub body_len: u32,
}

#[cfg(test)]
mod frozen {
    use super::*;

    /// The exact bytes of control frames. Postcard is not self-describing,
    /// so a new or reordered field breaks an older `drvctl` (`#[serde(default)]`
    /// only helps the JSON output). Changing these bytes means bumping
    /// `reinc_proto::PROTOCOL_VERSION` so the mismatch is reported as such.
    #[test]
    fn control_wire_format_is_frozen_for_this_protocol_version() {
        let req = reinc_proto::encode_vec(&ControlRequest::Restart { driver: "ab".into() }).unwrap();
        assert_eq!(req, [2, 1, 2, b'a', b'b'], "ControlRequest changed: bump PROTOCOL_VERSION, update this test");
        let status = DriverStatus {
            name: "d".into(),
            pid: Some(5),
            generation: 2,
            state: DriverState::Running,
            restarts: 3,
            uptime_ms: Some(10),
            last_failure: None,
            queue_depth: 4,
            in_flight: 1,
            backoff_ms: None,
            checkpoint_error: None,
            held_replies: 0,
        };
        let resp = reinc_proto::encode_vec(&ControlResponse::Status(vec![status])).unwrap();
        assert_eq!(
            resp,
            [2, 0, 1, 1, b'd', 1, 5, 2, 1, 3, 1, 10, 0, 4, 1, 0, 0, 0],
            "ControlResponse::Status changed: bump PROTOCOL_VERSION, update this test"
        );
    }
}
