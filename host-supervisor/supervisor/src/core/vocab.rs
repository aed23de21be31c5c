//! The core's vocabulary: the [`Event`]s the daemon feeds in, the
//! [`Action`]s it carries out, the owned messages they carry, and the
//! post-mortem [`Trace`] of decisions.
//!
//! Kept apart from the rules so that the daemon and the tests read one file
//! to know every word the core speaks, and so that a new rule never has to
//! scroll past 300 lines of type definitions (Horust keeps its `Event` and
//! service states apart from its supervisor the same way, in `formats`).
//! A single `types` module shared with the daemon's own types was rejected:
//! the daemon's peers and fd tokens are adapter detail the core must not see.

use super::PersistOutcome;
use reinc_control::control::ControlResponse;
use reinc_proto::{CallError, ClientId, FaultPlan, FromDriver, Generation, RequestId};

/// Index of a driver in the configuration (start order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DriverId(pub usize);

/// A client connection, numbered by the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// How a driver process ended, as reported by `waitpid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this status.
    Code(i32),
    /// Killed by this signal (number).
    Signal(i32),
}

/// The name of a signal number (`SIGSEGV`), or `signal N`.
#[must_use]
pub fn signal_name(sig: i32) -> String {
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_owned(),
        Err(_) => format!("signal {sig}"),
    }
}

impl ExitStatus {
    /// Short human form, used as the failure reason: `SIGSEGV`, `exit status 1`.
    #[must_use]
    pub fn describe(self) -> String {
        match self {
            Self::Code(101) => "exit status 101 (panic)".into(),
            Self::Code(c) => format!("exit status {c}"),
            Self::Signal(s) => signal_name(s),
        }
    }
}

/// Something that happened.
#[derive(Debug)]
pub enum Event<'a> {
    /// Launch every driver, in configuration order.
    Start,
    /// The [`Action::Spawn`] of `generation` produced process `pid`.
    Spawned {
        /// Which driver.
        driver: DriverId,
        /// The instance's generation.
        generation: Generation,
        /// Its pid.
        pid: u32,
    },
    /// The [`Action::Spawn`] of `generation` failed (no executable, …).
    SpawnFailed {
        /// Which driver.
        driver: DriverId,
        /// The instance's generation.
        generation: Generation,
        /// Why, naming the executable.
        error: String,
    },
    /// The [`Action::Spawn`] of `generation` failed for lack of resources
    /// (descriptors, memory, processes): not the driver's fault, so it does
    /// not count toward quarantine; the launch is retried after
    /// [`LAUNCH_RETRY`](super::LAUNCH_RETRY).
    SpawnDeferred {
        /// Which driver.
        driver: DriverId,
        /// The instance's generation.
        generation: Generation,
        /// Why, naming the resource.
        error: String,
    },
    /// A decoded frame from the instance `channel` of `driver`. `frame_gen`
    /// is the generation the frame claims.
    FromDriver {
        /// Which driver.
        driver: DriverId,
        /// The generation the frame carries.
        frame_gen: Generation,
        /// The message.
        msg: FromDriver<'a>,
    },
    /// A frame from a driver that does not decode.
    DriverGarbage {
        /// Which driver.
        driver: DriverId,
        /// The generation of the channel it came on.
        generation: Generation,
        /// The decode error.
        error: String,
    },
    /// The instance `generation` of `driver` ended.
    Exited {
        /// Which driver.
        driver: DriverId,
        /// The instance's generation.
        generation: Generation,
        /// How.
        status: ExitStatus,
    },
    /// The answer to [`Action::ProbeSched`]: how much the instance ran and
    /// waited to run so far, or `None` if that cannot be known (it is gone,
    /// or the kernel has no `schedstat`).
    Sched {
        /// Which driver.
        driver: DriverId,
        /// The instance's generation.
        generation: Generation,
        /// The figures.
        sample: Option<SchedSample>,
    },
    /// The outcome of the [`Action::Persist`] of `driver`.
    Persisted {
        /// Which driver.
        driver: DriverId,
        /// Durable, or why not.
        outcome: PersistOutcome,
    },
    /// A client connected.
    ClientConnected {
        /// The connection.
        conn: ConnId,
    },
    /// `Hello` from a client.
    Hello {
        /// The connection.
        conn: ConnId,
        /// The session to resume.
        resume: Option<ClientId>,
    },
    /// `Call` from a client.
    Call {
        /// The connection.
        conn: ConnId,
        /// The request's sequence number.
        seq: u64,
        /// The driver's name.
        driver: &'a str,
        /// The encoded request.
        body: &'a [u8],
        /// The client will not retry below this.
        acked_below: u64,
    },
    /// A connection closed; its session stays, to be resumed.
    ClientGone {
        /// The connection.
        conn: ConnId,
    },
    /// `ClientToSup::Bye` on a connection: its session ends for good.
    Bye {
        /// The connection.
        conn: ConnId,
    },
    /// Every journal record up to LSN `upto` is durable (the answer to
    /// [`Action::Journal`]s, in LSN order, possibly many at once).
    Journaled {
        /// The highest durable LSN.
        upto: u64,
    },
    /// SIGTERM or SIGINT: stop every driver in reverse start order, then exit.
    Shutdown,
    /// Nothing happened, but time passed (a deadline may have expired).
    Tick,
}

/// A signal the daemon sends to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillSignal {
    /// Polite: stop.
    Term,
    /// Final.
    Kill,
}

/// An owned message to a driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverMsg {
    /// `ToDriver::Init`.
    Init {
        /// The instance's generation.
        generation: Generation,
        /// The committed state to restore.
        checkpoint: Option<Vec<u8>>,
    },
    /// `ToDriver::Request`.
    Request {
        /// The request's id.
        id: RequestId,
        /// The encoded request.
        body: Vec<u8>,
    },
    /// `ToDriver::Ping`.
    Ping {
        /// The nonce.
        nonce: u64,
    },
    /// `ToDriver::Inject`.
    Inject(FaultPlan),
    /// `ToDriver::Shutdown`.
    Shutdown,
}

/// An owned message to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg {
    /// `SupToClient::Welcome`.
    Welcome {
        /// The session.
        client: ClientId,
    },
    /// `SupToClient::Reply`.
    Reply {
        /// The call.
        seq: u64,
        /// The driver's reply.
        body: Vec<u8>,
    },
    /// `SupToClient::Failed`.
    Failed {
        /// The call.
        seq: u64,
        /// Why.
        error: CallError,
    },
}

/// Cumulative scheduling figures of one process, from `/proc/<pid>/stat`
/// and `/proc/<pid>/schedstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedSample {
    /// Ready to run (state `R`): on a CPU, or waiting for one right now.
    pub runnable: bool,
    /// Time on a CPU, in nanoseconds.
    pub ran_ns: u64,
    /// Time spent waiting for a CPU, in nanoseconds (waits that ended).
    pub waited_ns: u64,
}

/// Something for the daemon to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Launch a new instance of `driver` with `generation`; answer with
    /// [`Event::Spawned`] or [`Event::SpawnFailed`].
    Spawn {
        /// Which driver.
        driver: DriverId,
        /// The new instance's generation.
        generation: Generation,
    },
    /// Send a message to the instance `generation` (dropped if it is gone).
    ToDriver {
        /// Which driver.
        driver: DriverId,
        /// Which instance.
        generation: Generation,
        /// The message.
        msg: DriverMsg,
    },
    /// Signal the instance `generation` (ignored if it is gone).
    Kill {
        /// Which driver.
        driver: DriverId,
        /// Which instance.
        generation: Generation,
        /// Which signal.
        signal: KillSignal,
    },
    /// Read how much the instance `generation` ran and waited for a CPU;
    /// answer at once with [`Event::Sched`] (`core/hang.rs` says why).
    ProbeSched {
        /// Which driver.
        driver: DriverId,
        /// Which instance.
        generation: Generation,
    },
    /// Persist `driver`'s checkpoint crash-safely; answer with
    /// [`Event::Persisted`]. Replies of `driver` wait for it.
    Persist {
        /// Which driver.
        driver: DriverId,
        /// The committed state.
        checkpoint: Vec<u8>,
    },
    /// Send a message to a client connection (dropped if it is gone).
    ToClient {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: ClientMsg,
    },
    /// Append `record` to the journal ([`crate::journal`]) without waiting;
    /// answer with [`Event::Journaled`] once it is durable. What depends on
    /// it is held by the core until then.
    Journal {
        /// Its log sequence number (increasing by one per record).
        lsn: u64,
        /// The record.
        record: crate::journal::Record,
    },
    /// Print a user-facing `[SUP] …` line (without the prefix).
    Say(String),
    /// Every driver is stopped after [`Event::Shutdown`]: exit.
    Exit,
}

/// Post-mortem trace of the supervisor core (Hubris style): the last
/// [`TRACE_LEN`] notable decisions, for `drvctl` and debugging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trace {
    /// A frame from a generation other than the current instance's was dropped.
    StaleFrame {
        /// Which driver.
        driver: DriverId,
        /// The frame's generation.
        got: Generation,
        /// The current generation.
        current: Generation,
    },
    /// A retried request was answered from the dedup table.
    DedupHit(RequestId),
    /// A retried request attached to its in-flight original.
    Attached(RequestId),
    /// A request was refused with an error.
    Refused(RequestId, CallError),
    /// A poisoned request was dropped.
    Poisoned(RequestId),
    /// A call was answered `Busy` because an earlier call of its session to
    /// the same driver (seq `behind`) is still waiting to be accepted.
    BusyBarrier {
        /// The refused call.
        id: RequestId,
        /// The earlier seq it must not overtake.
        behind: u64,
    },
    /// A checkpoint write failed; `held` replies wait for a retry.
    PersistFailed {
        /// Which driver.
        driver: DriverId,
        /// Failed attempts in this episode.
        attempts: u32,
        /// Replies held.
        held: u32,
    },
    /// Held replies left once their checkpoint was durable.
    Released {
        /// Which driver.
        driver: DriverId,
        /// How many.
        replies: u32,
    },
}

/// How many [`Trace`] entries are kept.
pub const TRACE_LEN: usize = 256;

/// Result of a control command: the response and the actions it causes.
pub type ControlOutcome = (ControlResponse, Vec<Action>);
