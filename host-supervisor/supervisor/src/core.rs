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
//! # Where each rule lives
//! This file holds the state and the two entry points, [`Supervisor::handle`]
//! and [`Supervisor::control`]; each dispatches to the module of the concern:
//!
//! | module | owns |
//! |---|---|
//! | `vocab` | [`Event`], [`Action`], the owned messages, [`Trace`] |
//! | `lifecycle` | launch, spawn outcome, `Ready`/`Pong`/`Fatal`, crash and hang, the restart policy (one restart path), quarantine, operator restart/stop, shutdown |
//! | `deadlines` | the per-driver deadline cache and the time sweep (init timeout, heartbeats, backoff, SIGKILL) |
//! | `hang` | the hang verdict: a driver that missed its heartbeats hung, or only waited for a CPU |
//! | `calls` | admission of a call, forwarding within the window, replies under commit-with-reply, failing a queue |
//! | `sessions` | sessions, `Hello`, the dedup cache and its budgets, idle expiry |
//! | [`durability`] | persisted checkpoints and the replies waiting for them |
//! | `wal` | the journal: records, held answers, snapshot, recovery |
//! | `counters` | per-driver counters for `drvctl metrics` |
//! | `standby` | hot standby instances (`standby = true`, CONTRACTS.md §9): their launch, heartbeats and deaths, and promotion with `Init` and the replay in one burst |
//!
//! A split by entry point (one module per [`Event`] variant) was rejected:
//! a crash touches the queue, the sessions and the policy, and the rule
//! "what happens to in-flight requests" would have been spread over three
//! files.
//!
//! # Ordering rules the daemon relies on
//! - Actions are executed in the order returned.
//! - When a driver's checkpoint persists, its replies are held until
//!   [`Event::Persisted`] reports the state they commit durable (see
//!   [`durability`]): a failed write delays replies, it never lets one out
//!   ahead of its state.
//! - [`Action::Spawn`] is answered synchronously by [`Event::Spawned`] or
//!   [`Event::SpawnFailed`], and [`Action::Persist`] by [`Event::Persisted`],
//!   before any other event; so is [`Action::ProbeSched`], by [`Event::Sched`].
//! - [`Event::Exited`] for an instance comes after every frame that instance
//!   sent (the daemon drains its socket first).
//! - [`Action::Journal`] is answered later, asynchronously, by
//!   [`Event::Journaled`] (the journal's writer thread syncs in batches);
//!   what depends on a record waits in the core until then (see `wal`).

use crate::config::{DriverConfig, FaultPolicyConfig};
use crate::identity::{Epoch, SessionIds};
use reinc_control::control::{ControlRequest, ControlResponse, DriverState, DriverStatus, QueuedRequest};
use reinc_policy::{BackoffRestart, Millis, StopOnFault};
use reinc_proto::{ClientId, Generation};
use reinc_queue::{RequestQueue, Slot};
use std::collections::{HashMap, VecDeque};

mod calls;
use calls::Call;
mod counters;
mod deadlines;
pub mod durability;
mod hang;
mod lifecycle;
mod sessions;
mod standby;
mod vocab;
mod wal;
use deadlines::Drivers;
use durability::Durability;
pub use durability::{PERSIST_RETRY_BASE, PERSIST_RETRY_CAP, PersistOutcome};
pub use lifecycle::LAUNCH_RETRY;
use lifecycle::{AfterExit, Driver, FaultPolicyDyn, Phase};
pub use sessions::BUSY_SEQS_PER_DRIVER;
use sessions::{Cached, Session, to_msg};
pub use vocab::{
    Action, ClientMsg, ConnId, ControlOutcome, DriverId, DriverMsg, Event, ExitStatus, KillSignal, SchedSample,
    TRACE_LEN, Trace, signal_name,
};
pub use wal::{Recovery, WalStats};

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
                let standby = match cfg.fault_policy {
                    FaultPolicyConfig::Restart(b) if cfg.standby => Some(standby::Standby::new(b)),
                    _ => None,
                };
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
                    standby,
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
            Event::SpawnFailed { driver, generation, error } if self.is_standby(driver, generation) => {
                self.standby_gone(now, driver, None, Some(error), &mut out);
            }
            Event::SpawnFailed { driver, generation, error } => {
                self.on_spawn_failed(now, driver, generation, &error, &mut out);
            }
            Event::SpawnDeferred { driver, generation, error } if self.is_standby(driver, generation) => {
                self.standby_deferred(now, driver, &error, &mut out);
            }
            Event::SpawnDeferred { driver, generation, error } => {
                self.on_spawn_deferred(now, driver, generation, &error, &mut out);
            }
            Event::FromDriver { driver, frame_gen, msg } => self.on_frame(now, driver, frame_gen, msg, &mut out),
            Event::DriverGarbage { driver, generation, error } if self.is_standby(driver, generation) => {
                self.kill_standby(driver, format!("protocol error: {error}"), false, &mut out);
            }
            Event::DriverGarbage { driver, generation, error } => {
                if self.current(driver) == Some(generation) {
                    let reason = format!("protocol error: {error}");
                    self.kill_instance(driver, reason, AfterExit::Policy, &mut out);
                }
            }
            Event::Exited { driver, generation, status } if self.is_standby(driver, generation) => {
                self.standby_gone(now, driver, Some(status), None, &mut out);
            }
            Event::Exited { driver, generation, status } => {
                if self.current(driver) == Some(generation) {
                    self.instance_gone(now, driver, Some(status), &mut out);
                }
            }
            Event::Sched { driver, generation, sample } => self.on_sched(now, driver, generation, sample, &mut out),
            Event::Persisted { driver, outcome } => self.on_persisted(now, driver, outcome, &mut out),
            Event::Journaled { upto } => self.on_journaled(upto, &mut out),
            Event::ClientConnected { conn } => {
                self.conns.insert(conn, None);
            }
            Event::Hello { conn, resume } => self.on_hello(now, conn, resume, &mut out),
            Event::Call { conn, seq, driver, body, acked_below } => {
                self.on_call(now, Call { conn, seq, driver, body, acked_below }, &mut out);
            }
            Event::Bye { conn } => self.on_bye(now, conn, &mut out),
            Event::ClientGone { conn } => {
                if let Some(Some(c)) = self.conns.remove(&conn)
                    && self.sessions.get(&c).is_some_and(|s| s.conn == Some(conn))
                {
                    self.detach(c, now, &mut out);
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
                // The instance's, not a standby's launched after it.
                generation: d.instance.as_ref().map_or(d.generation, |i| i.generation).0,
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

    /// The generation of the instance of `driver` that serves requests (not
    /// its standby), if it has one.
    #[must_use]
    pub fn instance_generation(&self, driver: DriverId) -> Option<Generation> {
        self.current(driver)
    }

    /// Whether `generation` is the standby of `driver` ([`standby`]).
    fn is_standby(&self, driver: DriverId, generation: Generation) -> bool {
        self.drivers.get(driver.0).and_then(|d| d.standby.as_ref()).is_some_and(|s| s.is(generation))
    }

    fn random(&mut self) -> u32 {
        // xorshift64*: plenty for jitter, and deterministic under test.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }
}

#[cfg(test)]
mod tests;
