//! The supervisor as a pure state machine: `handle(now, event) -> actions`.
//!
//! Nothing in here touches a process, a socket, a file or a clock. The daemon
//! ([`crate::daemon`]) turns the world into [`Event`]s (a child exited, a
//! frame arrived, a client called, a deadline passed) and carries out the
//! returned [`Action`]s (spawn, send, kill, persist, print) in order. Every
//! rule of CONTRACTS.md — lifecycle, heartbeats, restart policy,
//! commit-with-reply, generations, replay, poison, dedup, quarantine,
//! backpressure and its per-session busy barrier — is therefore testable
//! here without processes, and the tests in `core/tests.rs` do exactly that.
//!
//! Like Horust and Hubris' jefe, the core never blocks and never sleeps: it
//! reports its next deadline ([`Supervisor::next_deadline`]) and the daemon
//! waits on its fds until then.
//!
//! # Ordering rules the daemon relies on
//! - Actions are executed in the order returned.
//! - When a driver's checkpoint persists, its replies are held until
//!   [`Event::Persisted`] reports the state they commit durable (see
//!   [`durability`]): a failed write delays replies, it never lets one out
//!   ahead of its state.
//! - [`Action::Spawn`] is answered synchronously by [`Event::Spawned`] or
//!   [`Event::SpawnFailed`], and [`Action::Persist`] by [`Event::Persisted`],
//!   before any other event.
//! - [`Event::Exited`] for an instance comes after every frame that instance
//!   sent (the daemon drains its socket first).
//! - [`Action::Journal`] is answered later, asynchronously, by
//!   [`Event::Journaled`] (the journal's writer thread syncs in batches);
//!   what depends on a record waits in the core until then (see `wal`).

use crate::config::{DriverConfig, FaultPolicyConfig};
use crate::identity::{Epoch, SessionIds};
use reinc_client::control::{ControlRequest, ControlResponse, DriverState, DriverStatus, QueuedRequest};
use reinc_policy::{BackoffRestart, FaultAction, FaultPolicy, Millis, StopOnFault};
use reinc_proto::{CallError, ClientId, FaultPlan, FromDriver, Generation, MAX_BODY, RequestId};
use reinc_queue::{RequestQueue, Slot};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

mod counters;
pub mod durability;
mod sessions;
mod wal;
use durability::Durability;
pub use durability::{PERSIST_RETRY_BASE, PERSIST_RETRY_CAP, PersistOutcome};
pub use wal::{Recovery, WalStats};

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
    /// [`LAUNCH_RETRY`].
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

#[derive(Debug)]
enum Phase {
    /// Spawn requested or process launched; waiting for `Ready` until `deadline`.
    Starting { deadline: Millis },
    /// Ready; `since` for uptime.
    Running { since: Millis },
    /// Killed after missing heartbeats; waiting for the exit.
    Hung,
    /// Waiting to relaunch at `until`.
    BackingOff { until: Millis, delay: Millis },
    /// Given up until revived.
    Quarantined,
    /// SIGTERM sent; SIGKILL at `deadline`.
    Stopping { deadline: Millis, killed: bool },
    /// Not running, by request.
    Stopped,
}

#[derive(Debug)]
struct Instance {
    generation: Generation,
    pid: Option<u32>,
    launched_at: Millis,
    /// Next ping is due at this time (while running).
    next_ping: Millis,
    /// Nonce of the last ping sent and not answered.
    outstanding: Option<u64>,
    missed: u32,
    /// A `Fatal` reason the instance reported before dying.
    fatal: Option<String>,
    /// Why the supervisor killed it, if it did.
    killed_for: Option<String>,
}

/// Why an instance is being brought down deliberately, which decides what
/// happens at its exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterExit {
    /// A fault: ask the restart policy.
    Policy,
    /// Operator restart: relaunch at once, not counted as a fault.
    Relaunch,
    /// Operator stop or shutdown: stay stopped.
    Stay,
}

/// A driver's queue: encoded request bodies in a boxed ring of exactly
/// `queue-depth` slots.
type DriverQueue = RequestQueue<Vec<u8>, Box<[Slot<Vec<u8>>]>>;

#[derive(Debug)]
struct Driver {
    cfg: DriverConfig,
    policy: Box<dyn FaultPolicyDyn>,
    phase: Phase,
    instance: Option<Instance>,
    /// Generation of the latest launch (0: never launched).
    generation: Generation,
    after_exit: AfterExit,
    /// Accepted, unanswered requests; exactly `cfg.queue_depth` slots,
    /// allocated once at configuration, so memory follows the configuration
    /// and a full queue is the `Busy` backpressure.
    queue: DriverQueue,
    checkpoint: Option<Vec<u8>>,
    restarts: u32,
    last_failure: Option<String>,
    /// Persisted-checkpoint state and the replies waiting for it.
    durability: Durability,
    /// Backing off because a launch ran out of resources, not for a fault.
    deferred: bool,
}

impl Driver {
    /// When [`Supervisor::on_time`] next has something to do for this
    /// driver: a start, stop or backoff deadline, a heartbeat, a checkpoint
    /// retry.
    fn deadline(&self) -> Option<Millis> {
        let phase = match self.phase {
            Phase::Starting { deadline } => Some(deadline),
            // Once killed, only its exit matters: no more pings, and no
            // deadline in the past that would make the daemon spin.
            Phase::Running { .. } => self.instance.as_ref().filter(|i| i.killed_for.is_none()).map(|i| i.next_ping),
            Phase::BackingOff { until, .. } => Some(until),
            Phase::Stopping { deadline, killed: false } => Some(deadline),
            _ => None,
        };
        // `NEVER` is also how a Starting instance past its init timeout says
        // it waits only for its exit.
        phase.into_iter().chain(self.durability.retry_deadline()).min().filter(|&t| t != NEVER)
    }
}

/// No deadline.
const NEVER: Millis = Millis(u64::MAX);

/// Delay before a launch that failed for lack of resources is tried again.
pub const LAUNCH_RETRY: Millis = Millis(100);

/// The drivers, each with its [`Driver::deadline`] cached, so that an event
/// costs work for the drivers it concerns, not for every configured one.
///
/// Every mutable access goes through [`IndexMut`](std::ops::IndexMut), which
/// records the driver as touched; [`Drivers::refresh`] recomputes the
/// deadlines of the touched ones only. The supervisor refreshes before it
/// looks for due work and before it returns, so the cache is exact whenever
/// [`Supervisor::next_deadline`] or the time sweep reads it (the core tests
/// check it against a full scan after every event).
#[derive(Debug)]
struct Drivers {
    list: Vec<Driver>,
    /// `list[i].deadline()`, or [`NEVER`]; exact for drivers not in `touched`.
    deadlines: Vec<Millis>,
    /// The minimum of `deadlines`.
    earliest: Millis,
    /// Drivers mutably borrowed since the last refresh (may repeat).
    touched: Vec<usize>,
}

impl Drivers {
    fn new(list: Vec<Driver>) -> Self {
        let deadlines: Vec<Millis> = list.iter().map(|d| d.deadline().unwrap_or(NEVER)).collect();
        let earliest = deadlines.iter().copied().min().unwrap_or(NEVER);
        Self { list, deadlines, earliest, touched: Vec::new() }
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    fn get(&self, i: usize) -> Option<&Driver> {
        self.list.get(i)
    }

    fn iter(&self) -> std::slice::Iter<'_, Driver> {
        self.list.iter()
    }

    /// Brings the cached deadlines of the touched drivers up to date.
    fn refresh(&mut self) {
        let mut rescan = false;
        for i in self.touched.drain(..) {
            let old = self.deadlines[i];
            let new = self.list[i].deadline().unwrap_or(NEVER);
            self.deadlines[i] = new;
            if new < self.earliest {
                self.earliest = new;
            } else if old == self.earliest && new > old {
                // The earliest may have moved later: only a scan can tell.
                rescan = true;
            }
        }
        if rescan {
            self.earliest = self.deadlines.iter().copied().min().unwrap_or(NEVER);
        }
    }

    /// The earliest cached deadline (exact once refreshed).
    fn earliest(&self) -> Option<Millis> {
        Some(self.earliest).filter(|&t| t != NEVER)
    }

    /// The drivers with something due at `now`, in start order (refreshed first).
    fn due(&mut self, now: Millis) -> Vec<usize> {
        self.refresh();
        if now < self.earliest {
            return Vec::new();
        }
        (0..self.list.len()).filter(|&i| self.deadlines[i] <= now).collect()
    }
}

impl std::ops::Index<usize> for Drivers {
    type Output = Driver;
    fn index(&self, i: usize) -> &Driver {
        &self.list[i]
    }
}

impl std::ops::IndexMut<usize> for Drivers {
    fn index_mut(&mut self, i: usize) -> &mut Driver {
        self.touched.push(i);
        &mut self.list[i]
    }
}

/// `FaultPolicy` + `Debug`, object safe.
trait FaultPolicyDyn: FaultPolicy + std::fmt::Debug + Send {}
impl<T: FaultPolicy + std::fmt::Debug + Send> FaultPolicyDyn for T {}

#[derive(Debug, Clone)]
enum Cached {
    Reply(Vec<u8>),
    Failed(CallError),
}

#[derive(Debug, Default)]
struct Session {
    conn: Option<ConnId>,
    /// No request below this may be executed or answered from cache.
    floor: u64,
    /// Answered requests, by seq.
    cache: BTreeMap<u64, Cached>,
    /// Accepted and unanswered requests.
    pending: BTreeSet<u64>,
    /// Busy barrier: per driver, the seqs answered `Busy` and not accepted
    /// since. A new call to that driver with a higher seq than the lowest of
    /// them is answered `Busy` too, so a resent call can never be overtaken
    /// by a later one (per-session order under backpressure).
    busy: BTreeMap<DriverId, BTreeSet<u64>>,
    last_active: Millis,
    /// Bytes charged for `cache` ([`sessions::cost`]).
    cache_bytes: usize,
}

/// Seqs remembered per session and driver for the busy barrier. Only a
/// client with more calls than this refused at once can see its order
/// broken: the barrier keeps the lowest ones, which decide it.
pub const BUSY_SEQS_PER_DRIVER: usize = 1024;

impl Session {
    /// The client will never retry below `floor`: forget cached replies and
    /// busy seqs under it (a barrier must not wait for a call abandoned).
    /// Returns the cache bytes freed.
    fn raise_floor(&mut self, floor: u64) -> usize {
        if floor <= self.floor {
            return 0;
        }
        self.floor = floor;
        let kept = self.cache.split_off(&floor);
        let freed: usize = self.cache.values().map(sessions::cost).sum();
        self.cache = kept;
        self.cache_bytes -= freed;
        for set in self.busy.values_mut() {
            *set = set.split_off(&floor);
        }
        self.busy.retain(|_, set| !set.is_empty());
        freed
    }

    /// The lowest seq answered `Busy` for `driver` and not accepted since.
    fn barrier(&self, driver: DriverId) -> Option<u64> {
        self.busy.get(&driver).and_then(|set| set.first().copied())
    }

    /// `seq` was answered `Busy` for `driver`.
    fn refused_busy(&mut self, driver: DriverId, seq: u64) {
        let set = self.busy.entry(driver).or_default();
        set.insert(seq);
        if set.len() > BUSY_SEQS_PER_DRIVER {
            set.pop_last();
        }
    }

    /// `seq` was accepted, or got a definite answer: it blocks nothing now.
    fn settled(&mut self, seq: u64) {
        for set in self.busy.values_mut() {
            set.remove(&seq);
        }
        self.busy.retain(|_, set| !set.is_empty());
    }
}

/// The supervisor's whole state.
#[derive(Debug)]
pub struct Supervisor {
    drivers: Drivers,
    by_name: HashMap<String, DriverId>,
    sessions: HashMap<ClientId, Session>,
    conns: HashMap<ConnId, Option<ClientId>>,
    /// Session ids, unique across lifetimes ([`crate::identity`]).
    ids: SessionIds,
    /// The journal's bookkeeping ([`wal`]).
    wal: wal::Wal,
    /// Per-driver counters for `drvctl metrics` ([`counters`]).
    counters: Vec<counters::DriverCounters>,
    max_sessions: usize,
    dedup_per_session: usize,
    shutting_down: bool,
    exit_sent: bool,
    nonce: u64,
    rng: u64,
    trace: VecDeque<(Millis, Trace)>,
    /// Session budgets and expiry ([`sessions`]).
    budget: sessions::SessionBudget,
}

impl Supervisor {
    /// A supervisor for `drivers` (start order), with the restored
    /// checkpoints (`None`: start fresh), `seed` for backoff jitter, and the
    /// dedup table bounds. Session ids are numbered from `Epoch(0)`; a daemon
    /// sets a random epoch with [`Supervisor::with_epoch`].
    ///
    /// # Panics
    /// If a restart policy is out of range: [`crate::config`] validated it.
    #[must_use]
    pub fn new(
        drivers: Vec<(DriverConfig, Option<Vec<u8>>)>,
        seed: u64,
        max_sessions: usize,
        dedup_per_session: usize,
    ) -> Self {
        let mut by_name = HashMap::new();
        let drivers: Vec<Driver> = drivers
            .into_iter()
            .enumerate()
            .map(|(i, (cfg, checkpoint))| {
                by_name.insert(cfg.name.clone(), DriverId(i));
                let policy: Box<dyn FaultPolicyDyn> = match cfg.fault_policy {
                    FaultPolicyConfig::Restart(b) => Box::new(BackoffRestart::new(b).expect("validated by config")),
                    FaultPolicyConfig::Stop => Box::new(StopOnFault),
                };
                let queue = RequestQueue::new((0..cfg.queue_depth).map(|_| Slot::EMPTY).collect());
                Driver {
                    cfg,
                    policy,
                    phase: Phase::Stopped,
                    instance: None,
                    generation: Generation(0),
                    after_exit: AfterExit::Policy,
                    queue,
                    checkpoint,
                    restarts: 0,
                    last_failure: None,
                    durability: Durability::default(),
                    deferred: false,
                }
            })
            .collect();
        Self {
            drivers: Drivers::new(drivers),
            by_name,
            sessions: HashMap::new(),
            conns: HashMap::new(),
            ids: SessionIds::new(Epoch(0)),
            wal: wal::Wal::default(),
            counters: Vec::new(),
            max_sessions,
            dedup_per_session,
            shutting_down: false,
            exit_sent: false,
            nonce: 0,
            rng: seed | 1,
            trace: VecDeque::new(),
            budget: sessions::SessionBudget::default(),
        }
    }

    /// Numbers this lifetime's sessions from `epoch` (see [`crate::identity`]).
    #[must_use]
    pub fn with_epoch(mut self, epoch: Epoch) -> Self {
        self.ids = SessionIds::new(epoch);
        self
    }

    /// The configuration of `driver`.
    #[must_use]
    pub fn config(&self, driver: DriverId) -> &DriverConfig {
        &self.drivers[driver.0].cfg
    }

    /// The driver named `name`.
    #[must_use]
    pub fn driver_id(&self, name: &str) -> Option<DriverId> {
        self.by_name.get(name).copied()
    }

    /// Number of configured drivers.
    #[must_use]
    pub fn driver_count(&self) -> usize {
        self.drivers.len()
    }

    /// The committed state of `driver`.
    #[must_use]
    pub fn checkpoint(&self, driver: DriverId) -> Option<&[u8]> {
        self.drivers[driver.0].checkpoint.as_deref()
    }

    /// The core's recent decisions, oldest first.
    pub fn trace(&self) -> impl Iterator<Item = &(Millis, Trace)> {
        self.trace.iter()
    }

    /// The earliest time at which [`Event::Tick`] has something to do.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Millis> {
        debug_assert!(self.drivers.touched.is_empty(), "every &mut entry point refreshes before returning");
        match (self.drivers.earliest(), self.session_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Checks the deadline cache against a scan of every driver and every
    /// cached entry (tests only: the scan is what the cache saves).
    #[cfg(test)]
    fn assert_deadline_cache_exact(&self) {
        for (i, d) in self.drivers.iter().enumerate() {
            assert_eq!(self.drivers.deadlines[i], d.deadline().unwrap_or(NEVER), "stale deadline of {}", d.cfg.name);
        }
        assert_eq!(self.drivers.earliest(), self.drivers.iter().filter_map(Driver::deadline).min());
    }

    /// Processes one event.
    pub fn handle(&mut self, now: Millis, event: Event<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start => {
                for i in 0..self.drivers.len() {
                    self.launch(now, DriverId(i), &mut out);
                }
            }
            Event::Spawned { driver, generation, pid } => self.on_spawned(now, driver, generation, pid, &mut out),
            Event::SpawnFailed { driver, generation, error } => {
                let d = &mut self.drivers[driver.0];
                if d.instance.as_ref().is_some_and(|i| i.generation == generation) {
                    out.push(Action::Say(format!("cannot launch {}: {error}", d.cfg.name)));
                    d.instance.as_mut().expect("checked").fatal = Some(format!("spawn failed: {error}"));
                    self.instance_gone(now, driver, None, &mut out);
                }
            }
            Event::SpawnDeferred { driver, generation, error } => {
                let d = &mut self.drivers[driver.0];
                if d.instance.as_ref().is_some_and(|i| i.generation == generation) {
                    d.instance = None;
                    d.deferred = true;
                    out.push(Action::Say(format!(
                        "cannot launch {} now: {error}; out of resources, retrying in {LAUNCH_RETRY} (not counted \
                         as a fault)",
                        d.cfg.name
                    )));
                    d.phase = Phase::BackingOff { until: now.plus(LAUNCH_RETRY), delay: LAUNCH_RETRY };
                }
            }
            Event::FromDriver { driver, frame_gen, msg } => self.on_frame(now, driver, frame_gen, msg, &mut out),
            Event::DriverGarbage { driver, generation, error } => {
                if self.current(driver) == Some(generation) {
                    let reason = format!("protocol error: {error}");
                    self.kill_instance(driver, reason, AfterExit::Policy, &mut out);
                }
            }
            Event::Exited { driver, generation, status } => {
                if self.current(driver) == Some(generation) {
                    self.instance_gone(now, driver, Some(status), &mut out);
                }
            }
            Event::Persisted { driver, outcome } => self.on_persisted(now, driver, outcome, &mut out),
            Event::Journaled { upto } => self.on_journaled(upto, &mut out),
            Event::ClientConnected { conn } => {
                self.conns.insert(conn, None);
            }
            Event::Hello { conn, resume } => self.on_hello(now, conn, resume, &mut out),
            Event::Call { conn, seq, driver, body, acked_below } => {
                self.on_call(now, conn, seq, driver, body, acked_below, &mut out);
            }
            Event::ClientGone { conn } => {
                if let Some(Some(c)) = self.conns.remove(&conn)
                    && self.sessions.get(&c).is_some_and(|s| s.conn == Some(conn))
                {
                    self.detach(c, now);
                }
            }
            Event::Shutdown => {
                if !self.shutting_down {
                    self.shutting_down = true;
                    out.push(Action::Say("shutting down: stopping drivers in reverse start order".into()));
                }
            }
            Event::Tick => {}
        }
        self.expire_sessions(now, &mut out);
        self.on_time(now, &mut out);
        if self.shutting_down {
            self.shutdown_step(now, &mut out);
        }
        self.maybe_compact(&mut out);
        self.drivers.refresh();
        #[cfg(test)]
        self.assert_deadline_cache_exact();
        out
    }

    /// Carries out a control command.
    pub fn control(&mut self, now: Millis, req: &ControlRequest) -> ControlOutcome {
        let mut out = Vec::new();
        let name = match req {
            ControlRequest::Status => return (ControlResponse::Status(self.status(now)), out),
            // The daemon adds what only it knows (journal sync latency).
            ControlRequest::Metrics => {
                let mut t = crate::metrics::Text::default();
                self.render_metrics(now, &mut t);
                return (ControlResponse::Metrics(t.finish()), out);
            }
            ControlRequest::Restart { driver }
            | ControlRequest::Stop { driver }
            | ControlRequest::DumpQueue { driver }
            | ControlRequest::Trace { driver }
            | ControlRequest::Inject { driver, .. } => driver,
        };
        let Some(id) = self.driver_id(name) else {
            return (
                ControlResponse::Error(format!("no driver named {} is configured", crate::limits::quoted(name))),
                out,
            );
        };
        let resp = match req {
            ControlRequest::Status | ControlRequest::Metrics => unreachable!("answered above"),
            ControlRequest::Restart { .. } => self.operator_restart(now, id, &mut out),
            ControlRequest::Stop { .. } => self.operator_stop(now, id, &mut out),
            ControlRequest::DumpQueue { .. } => ControlResponse::Queue(
                self.drivers[id.0]
                    .queue
                    .iter()
                    .map(|(e, in_flight)| QueuedRequest {
                        id: e.id,
                        age_ms: now.0.saturating_sub(e.arrived_ms),
                        in_flight,
                        crashes: e.crashes,
                        body_len: e.payload.len() as u32,
                    })
                    .collect(),
            ),
            // The trace ring lives in the daemon (a memfd per driver).
            ControlRequest::Trace { .. } => ControlResponse::Error(format!("{name}: the trace is kept by the daemon")),
            // The driver refuses these (a request count of 0 never comes;
            // Init is over), so saying "armed" would be a lie.
            ControlRequest::Inject { plan, .. } if plan.on_request == 0 => ControlResponse::Error(format!(
                "{name}: fault plan {plan} is refused: K counts requests from now and must be at least 1"
            )),
            ControlRequest::Inject { plan, .. } if plan.point == reinc_proto::CrashPoint::Init => {
                ControlResponse::Error(format!(
                    "{name}: fault plan {plan} is refused: an init fault can only be armed at launch (the driver's \
                     `fault` config key)"
                ))
            }
            ControlRequest::Inject { plan, .. } => {
                let d = &self.drivers[id.0];
                match (&d.phase, &d.instance) {
                    (Phase::Running { .. } | Phase::Starting { .. }, Some(i)) => {
                        out.push(Action::ToDriver {
                            driver: id,
                            generation: i.generation,
                            msg: DriverMsg::Inject(*plan),
                        });
                        ControlResponse::Done(format!("{name}: armed {plan} in {}", i.generation))
                    }
                    _ => ControlResponse::Error(format!("{name} has no running instance to inject into")),
                }
            }
        };
        self.on_time(now, &mut out);
        self.drivers.refresh();
        #[cfg(test)]
        self.assert_deadline_cache_exact();
        (resp, out)
    }

    /// Status of every driver, in start order.
    #[must_use]
    pub fn status(&self, now: Millis) -> Vec<DriverStatus> {
        self.drivers
            .iter()
            .map(|d| DriverStatus {
                name: d.cfg.name.clone(),
                pid: d.instance.as_ref().and_then(|i| i.pid),
                generation: d.generation.0,
                state: match d.phase {
                    Phase::Starting { .. } => DriverState::Starting,
                    Phase::Running { .. } => DriverState::Running,
                    Phase::Hung => DriverState::Hung,
                    Phase::BackingOff { .. } => DriverState::BackingOff,
                    Phase::Quarantined => DriverState::Quarantined,
                    Phase::Stopping { .. } => DriverState::Stopping,
                    Phase::Stopped => DriverState::Stopped,
                },
                restarts: d.restarts,
                uptime_ms: match d.phase {
                    Phase::Running { since } => Some(now.since(since).0),
                    _ => None,
                },
                last_failure: d.last_failure.clone(),
                queue_depth: d.queue.len() as u32,
                in_flight: d.queue.in_flight() as u32,
                backoff_ms: match d.phase {
                    Phase::BackingOff { delay, .. } => Some(delay.0),
                    _ => None,
                },
                checkpoint_error: d.durability.describe_failure(now),
                held_replies: d.durability.held.len() as u32,
            })
            .collect()
    }

    fn record(&mut self, now: Millis, t: Trace) {
        if self.trace.len() == TRACE_LEN {
            self.trace.pop_front();
        }
        self.trace.push_back((now, t));
    }

    fn current(&self, driver: DriverId) -> Option<Generation> {
        self.drivers.get(driver.0)?.instance.as_ref().map(|i| i.generation)
    }

    fn random(&mut self) -> u32 {
        // xorshift64*: plenty for jitter, and deterministic under test.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }

    fn launch(&mut self, now: Millis, id: DriverId, out: &mut Vec<Action>) {
        let d = &mut self.drivers[id.0];
        d.generation = d.generation.next();
        d.after_exit = AfterExit::Policy;
        d.deferred = false;
        d.instance = Some(Instance {
            generation: d.generation,
            pid: None,
            launched_at: now,
            next_ping: now,
            outstanding: None,
            missed: 0,
            fatal: None,
            killed_for: None,
        });
        d.phase = Phase::Starting { deadline: now.plus(d.cfg.init_timeout) };
        out.push(Action::Spawn { driver: id, generation: d.generation });
    }

    fn on_spawned(&mut self, now: Millis, id: DriverId, generation: Generation, pid: u32, out: &mut Vec<Action>) {
        let d = &mut self.drivers[id.0];
        let Some(inst) = d.instance.as_mut().filter(|i| i.generation == generation) else { return };
        inst.pid = Some(pid);
        // The init timeout counts from the spawn: the daemon spawns drivers
        // one after the other, and a deadline that passed before this one
        // existed (and so could not be killed) would otherwise never fire.
        if let Phase::Starting { .. } = d.phase {
            d.phase = Phase::Starting { deadline: now.plus(d.cfg.init_timeout) };
        }
        out.push(Action::Say(format!("Launching {} (pid={pid})", d.cfg.name)));
        out.push(Action::ToDriver {
            driver: id,
            generation,
            msg: DriverMsg::Init { generation, checkpoint: d.checkpoint.clone() },
        });
    }

    fn on_frame(
        &mut self,
        now: Millis,
        id: DriverId,
        frame_gen: Generation,
        msg: FromDriver<'_>,
        out: &mut Vec<Action>,
    ) {
        let current = self.current(id);
        if current != Some(frame_gen) {
            let current = current.unwrap_or(Generation(0));
            self.record(now, Trace::StaleFrame { driver: id, got: frame_gen, current });
            return;
        }
        match msg {
            FromDriver::Ready => {
                let d = &mut self.drivers[id.0];
                if !matches!(d.phase, Phase::Starting { .. }) {
                    return;
                }
                d.phase = Phase::Running { since: now };
                let inst = d.instance.as_mut().expect("current instance");
                inst.next_ping = now.plus(d.cfg.heartbeat_interval);
                let queued = d.queue.rewind();
                if queued > 0 {
                    out.push(Action::Say(format!("replaying {queued} queued requests")));
                }
                self.count_ready(id, now, queued);
                self.pump(id, out);
            }
            FromDriver::Pong { nonce } => {
                let inst = self.drivers[id.0].instance.as_mut().expect("current instance");
                if inst.outstanding.is_some_and(|n| n <= nonce) {
                    inst.outstanding = None;
                }
                inst.missed = 0;
            }
            FromDriver::Fatal { reason } => {
                let d = &mut self.drivers[id.0];
                out.push(Action::Say(format!("{} reports a fatal error: {reason}", d.cfg.name)));
                d.instance.as_mut().expect("current instance").fatal = Some(format!("fatal: {reason}"));
            }
            FromDriver::Reply { id: rid, commit, body } => self.on_reply(now, id, rid, commit, body, out),
        }
    }

    fn on_reply(
        &mut self,
        now: Millis,
        id: DriverId,
        rid: RequestId,
        commit: Option<&[u8]>,
        body: &[u8],
        out: &mut Vec<Action>,
    ) {
        let journal = self.is_journal(id);
        let d = &mut self.drivers[id.0];
        if !matches!(d.phase, Phase::Running { .. } | Phase::Stopping { .. } | Phase::Hung) {
            let reason = format!("protocol error: reply for {rid} before Ready");
            self.kill_instance(id, reason, AfterExit::Policy, out);
            return;
        }
        if let Err(e) = d.queue.complete(rid) {
            let reason = format!("protocol error: {e}");
            self.kill_instance(id, reason, AfterExit::Policy, out);
            return;
        }
        if journal {
            // Commit-with-reply through the journal: the state, the dedup
            // entry and the reply are one record; the reply waits for it.
            if let Some(c) = commit {
                self.drivers[id.0].checkpoint = Some(c.to_vec());
            }
            let reply = Cached::Reply(body.to_vec());
            self.journal_answer(now, id, rid, commit.map(<[u8]>::to_vec), reply, true, out);
            self.pump(id, out);
            return;
        }
        // Commit-with-reply: the state is committed before the client can
        // observe the reply, and when it persists, the reply waits until it
        // is durable (after every older held reply of this driver).
        let mut needs = d.durability.current();
        if let Some(c) = commit {
            d.checkpoint = Some(c.to_vec());
            if d.cfg.persist_checkpoint {
                needs = d.durability.commit();
            }
        }
        if d.durability.may_release(needs) {
            self.answer(now, rid, Cached::Reply(body.to_vec()), out);
        } else {
            d.durability.held.push_back(durability::HeldReply { rid, body: body.to_vec(), needs });
            self.request_persist(id, out);
        }
        self.pump(id, out);
    }

    /// Answers an accepted request: caches it in its session and sends it to
    /// the session's connection, if any.
    fn answer(&mut self, now: Millis, rid: RequestId, reply: Cached, out: &mut Vec<Action>) {
        let Some(s) = self.sessions.get_mut(&rid.client) else { return };
        s.pending.remove(&rid.seq);
        s.last_active = now;
        let conn = s.conn;
        if rid.seq >= s.floor {
            self.cache_reply(rid, reply.clone());
        }
        if let Some(conn) = conn {
            out.push(Action::ToClient { conn, msg: to_msg(rid.seq, reply) });
        }
    }

    fn pump(&mut self, id: DriverId, out: &mut Vec<Action>) {
        // A journal driver has at most one request in doubt (see `wal`).
        let journal_window = self.journal_window(id, out);
        let d = &mut self.drivers[id.0];
        if !matches!(d.phase, Phase::Running { .. }) {
            return;
        }
        let generation = d.instance.as_ref().expect("running instance").generation;
        let window = journal_window.unwrap_or(d.cfg.window);
        while let Some(e) = d.queue.forward_next(window) {
            out.push(Action::ToDriver {
                driver: id,
                generation,
                msg: DriverMsg::Request { id: e.id, body: e.payload.clone() },
            });
        }
    }

    fn kill_instance(&mut self, id: DriverId, reason: String, after: AfterExit, out: &mut Vec<Action>) {
        let d = &mut self.drivers[id.0];
        let Some(inst) = d.instance.as_mut() else { return };
        if inst.killed_for.is_none() {
            inst.killed_for = Some(reason);
        }
        d.after_exit = after;
        out.push(Action::Kill { driver: id, generation: inst.generation, signal: KillSignal::Kill });
    }

    /// The current instance of `id` is gone (exited or never started).
    fn instance_gone(&mut self, now: Millis, id: DriverId, status: Option<ExitStatus>, out: &mut Vec<Action>) {
        let d = &mut self.drivers[id.0];
        let inst = d.instance.take().expect("caller checked the instance");
        let name = d.cfg.name.clone();
        let was_starting = matches!(d.phase, Phase::Starting { .. });
        let stopping = matches!(d.phase, Phase::Stopping { .. });
        let reason = match (&inst.killed_for, &inst.fatal, status) {
            (Some(k), _, _) => k.clone(),
            (None, Some(f), _) => f.clone(),
            (None, None, Some(s)) => s.describe(),
            (None, None, None) => "vanished".into(),
        };
        if stopping || d.after_exit == AfterExit::Stay {
            out.push(Action::Say(format!("{name} stopped ({})", status.map_or(reason, ExitStatus::describe))));
            d.phase = Phase::Stopped;
            let error = if self.shutting_down { CallError::ShuttingDown } else { CallError::DriverFailed };
            self.fail_queue(now, id, error, out);
            return;
        }
        if d.after_exit == AfterExit::Relaunch {
            d.restarts += 1;
            d.queue.rewind();
            out.push(Action::Say(format!("restarting {name}")));
            self.launch(now, id, out);
            return;
        }
        if inst.killed_for.is_some() || inst.fatal.is_some() || status.is_none() {
            out.push(Action::Say(format!("{name} failed ({reason})")));
        } else {
            out.push(Action::Say(format!("{name} crashed ({reason})")));
        }
        let reason = if was_starting && inst.killed_for.is_none() && inst.fatal.is_none() {
            format!("{reason} during init")
        } else {
            reason
        };
        d.last_failure = Some(reason);
        let cause = counters::cause(inst.killed_for.as_deref(), inst.fatal.is_some(), status);
        self.count_crash(id, now, cause);
        let d = &mut self.drivers[id.0];
        // Poison: blame the oldest request the dead instance was working on.
        let mut poisoned = None;
        if d.queue.head_in_flight() {
            let limit = d.cfg.poison_after;
            let head = d.queue.blame_head().expect("in flight implies non-empty");
            if head.crashes >= limit {
                poisoned = Some((head.id, head.crashes));
            }
        }
        d.queue.rewind();
        if let Some((rid, crashes)) = poisoned {
            d.queue.drop_head();
            out.push(Action::Say(format!(
                "dropping request {rid} of {name}: it crashed the driver {crashes} times (poisoned)"
            )));
            self.record(now, Trace::Poisoned(rid));
            if self.is_journal(id) {
                self.journal_answer(now, id, rid, None, Cached::Failed(CallError::Poisoned), true, out);
            } else {
                self.answer(now, rid, Cached::Failed(CallError::Poisoned), out);
            }
        }
        let d = &mut self.drivers[id.0];
        if self.shutting_down {
            d.phase = Phase::Stopped;
            self.fail_queue(now, id, CallError::ShuttingDown, out);
            return;
        }
        let ran_for = now.since(inst.launched_at);
        let random = self.random();
        let d = &mut self.drivers[id.0];
        match d.policy.on_fault(now, ran_for, random) {
            FaultAction::Restart { delay, .. } if delay == Millis::ZERO => {
                d.restarts += 1;
                out.push(Action::Say(format!("restarting {name}")));
                self.launch(now, id, out);
            }
            FaultAction::Restart { delay, .. } => {
                out.push(Action::Say(format!("{name}: backing off for {delay} before restarting")));
                d.phase = Phase::BackingOff { until: now.plus(delay), delay };
            }
            FaultAction::Quarantine => {
                let why = match d.cfg.fault_policy {
                    FaultPolicyConfig::Restart(b) => {
                        format!("more than {} restarts within {}", b.max_restarts, b.window)
                    }
                    FaultPolicyConfig::Stop => "its fault policy is stop".into(),
                };
                out.push(Action::Say(format!("{name} quarantined: {why}; `drvctl restart {name}` revives it")));
                self.count_quarantine(id);
                let d = &mut self.drivers[id.0];
                d.phase = Phase::Quarantined;
                self.fail_queue(now, id, CallError::DriverFailed, out);
            }
        }
    }

    /// Answers every queued request of `id` with `error` (nothing is lost silently).
    fn fail_queue(&mut self, now: Millis, id: DriverId, error: CallError, out: &mut Vec<Action>) {
        let drained: Vec<RequestId> = self.drivers[id.0].queue.drain().map(|e| e.id).collect();
        let journal = self.is_journal(id);
        for rid in drained {
            if journal {
                // Journaled first, so a restarted supervisor does not replay it.
                self.journal_answer(now, id, rid, None, Cached::Failed(error), false, out);
                self.record(now, Trace::Refused(rid, error));
                continue;
            }
            // Not cached: the request was never executed to completion, so a
            // retry after the driver is revived is legitimate.
            if let Some(s) = self.sessions.get_mut(&rid.client) {
                s.pending.remove(&rid.seq);
                if let Some(conn) = s.conn {
                    out.push(Action::ToClient { conn, msg: ClientMsg::Failed { seq: rid.seq, error } });
                }
            }
            self.record(now, Trace::Refused(rid, error));
        }
    }

    /// Does what is due at `now`: only drivers whose cached deadline has
    /// passed are visited (none, on most events).
    fn on_time(&mut self, now: Millis, out: &mut Vec<Action>) {
        let due = self.drivers.due(now);
        if due.is_empty() {
            return;
        }
        self.persist_retries(now, &due, out);
        for i in due {
            let id = DriverId(i);
            let d = &mut self.drivers[i];
            match d.phase {
                Phase::Starting { deadline } if now >= deadline => {
                    let reason = format!("init timeout ({} without Ready)", d.cfg.init_timeout);
                    d.phase = Phase::Starting { deadline: NEVER };
                    if d.instance.as_ref().is_some_and(|i| i.pid.is_some()) {
                        self.kill_instance(id, reason, AfterExit::Policy, out);
                    }
                }
                Phase::Running { .. } => {
                    let interval = d.cfg.heartbeat_interval;
                    let allowed = d.cfg.heartbeat_misses;
                    let inst = d.instance.as_mut().expect("running instance");
                    if now < inst.next_ping || inst.killed_for.is_some() {
                        continue;
                    }
                    if inst.outstanding.is_some() {
                        inst.missed += 1;
                    }
                    if inst.missed >= allowed {
                        let reason = format!("hung (missed {} heartbeats)", inst.missed);
                        out.push(Action::Say(format!("{} is not answering heartbeats; killing it", d.cfg.name)));
                        d.phase = Phase::Hung;
                        self.kill_instance(id, reason, AfterExit::Policy, out);
                        continue;
                    }
                    self.nonce += 1;
                    inst.outstanding = Some(self.nonce);
                    inst.next_ping = now.plus(interval);
                    out.push(Action::ToDriver {
                        driver: id,
                        generation: inst.generation,
                        msg: DriverMsg::Ping { nonce: self.nonce },
                    });
                }
                Phase::BackingOff { until, .. } if now >= until => {
                    if std::mem::take(&mut d.deferred) {
                        out.push(Action::Say(format!("retrying the launch of {}", d.cfg.name)));
                    } else {
                        d.restarts += 1;
                        out.push(Action::Say(format!("restarting {}", d.cfg.name)));
                    }
                    self.launch(now, id, out);
                }
                Phase::Stopping { deadline, killed: false } if now >= deadline => {
                    d.phase = Phase::Stopping { deadline, killed: true };
                    if let Some(inst) = &d.instance {
                        out.push(Action::Say(format!("{} ignored SIGTERM; sending SIGKILL", d.cfg.name)));
                        out.push(Action::Kill { driver: id, generation: inst.generation, signal: KillSignal::Kill });
                    }
                }
                _ => {}
            }
        }
    }

    fn operator_restart(&mut self, now: Millis, id: DriverId, out: &mut Vec<Action>) -> ControlResponse {
        if self.shutting_down {
            return ControlResponse::Error("the supervisor is shutting down".into());
        }
        let d = &mut self.drivers[id.0];
        let name = d.cfg.name.clone();
        match d.phase {
            Phase::Quarantined | Phase::Stopped | Phase::BackingOff { .. } => {
                d.policy.reset();
                d.restarts += 1;
                out.push(Action::Say(format!("restarting {name} (operator)")));
                self.launch(now, id, out);
                ControlResponse::Done(format!("{name} restarted"))
            }
            Phase::Starting { .. } | Phase::Running { .. } | Phase::Hung => {
                d.policy.reset();
                self.kill_instance(id, "restarted by operator".into(), AfterExit::Relaunch, out);
                ControlResponse::Done(format!("{name} is being restarted"))
            }
            Phase::Stopping { .. } => ControlResponse::Error(format!("{name} is stopping; restart it once stopped")),
        }
    }

    fn operator_stop(&mut self, now: Millis, id: DriverId, out: &mut Vec<Action>) -> ControlResponse {
        let name = self.drivers[id.0].cfg.name.clone();
        match self.drivers[id.0].phase {
            Phase::Stopped | Phase::Stopping { .. } => ControlResponse::Error(format!("{name} is already stopped")),
            Phase::Quarantined | Phase::BackingOff { .. } => {
                self.drivers[id.0].phase = Phase::Stopped;
                self.fail_queue(now, id, CallError::DriverFailed, out);
                ControlResponse::Done(format!("{name} stopped"))
            }
            _ => {
                self.begin_stop(now, id, out);
                ControlResponse::Done(format!("{name} is stopping"))
            }
        }
    }

    fn begin_stop(&mut self, now: Millis, id: DriverId, out: &mut Vec<Action>) {
        let d = &mut self.drivers[id.0];
        d.after_exit = AfterExit::Stay;
        match &d.instance {
            Some(inst) => {
                let generation = inst.generation;
                out.push(Action::Say(format!("stopping {}", d.cfg.name)));
                d.phase = Phase::Stopping { deadline: now.plus(d.cfg.shutdown_timeout), killed: false };
                out.push(Action::ToDriver { driver: id, generation, msg: DriverMsg::Shutdown });
                out.push(Action::Kill { driver: id, generation, signal: KillSignal::Term });
            }
            None => {
                d.phase = Phase::Stopped;
                self.fail_queue(now, id, CallError::DriverFailed, out);
            }
        }
    }

    /// Stops drivers one at a time, last started first; emits `Exit` at the end.
    fn shutdown_step(&mut self, now: Millis, out: &mut Vec<Action>) {
        for i in (0..self.drivers.len()).rev() {
            match self.drivers[i].phase {
                Phase::Stopped | Phase::Quarantined => {
                    self.fail_queue(now, DriverId(i), CallError::ShuttingDown, out);
                }
                Phase::Stopping { .. } => return,
                Phase::BackingOff { .. } => {
                    self.drivers[i].phase = Phase::Stopped;
                    self.fail_queue(now, DriverId(i), CallError::ShuttingDown, out);
                }
                Phase::Hung => return,
                Phase::Starting { .. } | Phase::Running { .. } => {
                    if self.drivers[i].instance.as_ref().is_some_and(|x| x.pid.is_none()) {
                        // Spawn not answered yet: cannot happen (it is
                        // synchronous), but never wait on it.
                        self.drivers[i].instance = None;
                        self.drivers[i].phase = Phase::Stopped;
                        continue;
                    }
                    self.begin_stop(now, DriverId(i), out);
                    return;
                }
            }
        }
        if !self.exit_sent {
            for d in self.drivers.iter() {
                if let Some(why) = d.durability.describe_failure(now) {
                    // Their clients see an unknown outcome (the session ends
                    // with us), never a reply whose state may be lost.
                    out.push(Action::Say(format!(
                        "exiting with {} replies of {} withheld: its checkpoint is not durable ({why})",
                        d.durability.held.len(),
                        d.cfg.name
                    )));
                }
            }
            self.exit_sent = true;
            out.push(Action::Say("all drivers stopped".into()));
            out.push(Action::Exit);
        }
    }

    fn on_hello(&mut self, now: Millis, conn: ConnId, resume: Option<ClientId>, out: &mut Vec<Action>) {
        // One session per connection: a new Hello detaches the previous one.
        if let Some(Some(prev)) = self.conns.get(&conn).copied()
            && resume != Some(prev)
            && self.sessions.get(&prev).is_some_and(|s| s.conn == Some(conn))
        {
            self.detach(prev, now);
            self.conns.insert(conn, None);
        }
        let (client, new) = match resume {
            Some(c) if self.sessions.contains_key(&c) => (c, false),
            Some(_) => {
                out.push(Action::ToClient { conn, msg: ClientMsg::Failed { seq: 0, error: CallError::NoSession } });
                return;
            }
            None => {
                if self.sessions.len() >= self.max_sessions {
                    // Forget the detached session idle the longest.
                    let victim = self
                        .sessions
                        .iter()
                        .filter(|(_, s)| s.conn.is_none())
                        .min_by_key(|(_, s)| s.last_active)
                        .map(|(c, _)| *c);
                    match victim {
                        Some(v) => self.forget_session(v),
                        None => {
                            out.push(Action::ToClient {
                                conn,
                                msg: ClientMsg::Failed { seq: 0, error: CallError::SessionsFull },
                            });
                            return;
                        }
                    }
                }
                let sessions = &self.sessions;
                let c = self.ids.next(|c| sessions.contains_key(&c));
                self.sessions.insert(c, Session::default());
                (c, true)
            }
        };
        // Detach the session from any older connection.
        let s = self.sessions.get_mut(&client).expect("exists");
        if let Some(old) = s.conn.replace(conn)
            && old != conn
        {
            self.conns.insert(old, None);
        }
        s.last_active = now;
        self.conns.insert(conn, Some(client));
        // A new session's Welcome waits for its journal record, if any.
        self.welcome(conn, client, new, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_call(
        &mut self,
        now: Millis,
        conn: ConnId,
        seq: u64,
        driver: &str,
        body: &[u8],
        acked_below: u64,
        out: &mut Vec<Action>,
    ) {
        let fail = |error| Action::ToClient { conn, msg: ClientMsg::Failed { seq, error } };
        let Some(Some(client)) = self.conns.get(&conn).copied() else {
            out.push(fail(CallError::NoSession));
            return;
        };
        let rid = RequestId { client, seq };
        let s = self.sessions.get_mut(&client).expect("connection's session exists");
        s.last_active = now;
        self.budget.cache_total -= s.raise_floor(acked_below);
        if let Some(c) = s.cache.get(&seq).cloned() {
            // An answer whose journal record is not durable yet waits for it.
            self.dedup_hit(rid, Action::ToClient { conn, msg: to_msg(seq, c) }, out);
            self.record(now, Trace::DedupHit(rid));
            return;
        }
        if s.pending.contains(&seq) {
            // The original is queued; its reply goes to this session's
            // current connection, which is this one.
            self.record(now, Trace::Attached(rid));
            return;
        }
        // Every answer here but Busy is definite (the client will not resend
        // the call), so the seq stops holding back later calls.
        let refuse = |me: &mut Self, out: &mut Vec<Action>, error| {
            out.push(fail(error));
            if let Some(s) = me.sessions.get_mut(&client) {
                s.settled(seq);
            }
            me.record(now, Trace::Refused(rid, error));
        };
        if seq < s.floor {
            return refuse(self, out, CallError::Expired);
        }
        if body.len() > MAX_BODY {
            return refuse(self, out, CallError::TooLarge);
        }
        if self.shutting_down {
            return refuse(self, out, CallError::ShuttingDown);
        }
        let Some(id) = self.driver_id(driver) else {
            return refuse(self, out, CallError::UnknownDriver);
        };
        let d = &mut self.drivers[id.0];
        if matches!(d.phase, Phase::Quarantined | Phase::Stopped | Phase::Stopping { .. }) {
            return refuse(self, out, CallError::DriverFailed);
        }
        let s = self.sessions.get_mut(&client).expect("exists");
        // Busy barrier: once a call got Busy, later calls of the session to
        // this driver wait behind it, so the client's resend cannot be
        // overtaken and the driver sees the session's calls in seq order.
        let behind = s.barrier(id).filter(|&b| b < seq);
        // A full queue answers Busy before the body is copied (the session's
        // `pending` set has already ruled out a duplicate).
        let full = d.queue.len() == d.queue.capacity();
        if behind.is_some() || full || d.queue.push(rid, body.to_vec(), now.0).is_err() {
            s.refused_busy(id, seq);
            out.push(fail(CallError::Busy));
            let t = match behind {
                Some(behind) => Trace::BusyBarrier { id: rid, behind },
                None => Trace::Refused(rid, CallError::Busy),
            };
            self.record(now, t);
            return;
        }
        s.settled(seq);
        s.pending.insert(seq);
        self.journal_accepted(id, rid, body, acked_below);
        self.pump(id, out);
    }
}

fn to_msg(seq: u64, c: Cached) -> ClientMsg {
    match c {
        Cached::Reply(body) => ClientMsg::Reply { seq, body },
        Cached::Failed(error) => ClientMsg::Failed { seq, error },
    }
}

#[cfg(test)]
mod tests;
