//! Driver lifecycle: launch, spawn outcomes, `Ready`/`Pong`/`Fatal`, crash,
//! hang, the restart policy's answer (restart now, back off, quarantine),
//! operator restart and stop, and the ordered shutdown.
//!
//! Every restart goes through [`Supervisor::restart`], which counts it, says
//! so and launches: the counter in `drvctl status` and the `[SUP] restarting`
//! line can never disagree. Horust's supervisor splits the same way: its
//! `formats` holds the vocabulary (here `vocab`), its `service_handler` the
//! per-service state machine (here this module, one [`Phase`] enum per
//! driver that each event moves along, rather than flags), and its
//! `process_spawner` and `reaper` the system side (here the daemon's
//! `launch` and `channels`). Splitting launch from crash handling into two
//! files was rejected: `instance_gone` is where one ends and the next begins.

use super::counters;
use super::durability::Durability;
use super::hang::HangWatch;
use super::vocab::{Action, DriverId, DriverMsg, ExitStatus, KillSignal, Trace};
use super::wal::JournalAnswer;
use super::{Cached, Supervisor};
use crate::config::{DriverConfig, FaultPolicyConfig};
use reinc_control::control::ControlResponse;
use reinc_policy::{FaultAction, FaultPolicy, Millis};
use reinc_proto::{CallError, FromDriver, Generation};
use reinc_queue::{RequestQueue, Slot};

/// Where a driver is in its lifecycle (`drvctl status` shows it).
#[derive(Debug)]
pub(super) enum Phase {
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

/// One launched process of a driver: one generation.
#[derive(Debug)]
pub(super) struct Instance {
    pub(super) generation: Generation,
    pub(super) pid: Option<u32>,
    pub(super) launched_at: Millis,
    /// Next ping is due at this time (while running).
    pub(super) next_ping: Millis,
    /// Nonce of the last ping sent and not answered.
    pub(super) outstanding: Option<u64>,
    pub(super) missed: u32,
    /// What the hang verdict compares with (`core/hang.rs`).
    pub(super) hang: HangWatch,
    /// A `Fatal` reason the instance reported before dying.
    pub(super) fatal: Option<String>,
    /// Why the supervisor killed it, if it did.
    pub(super) killed_for: Option<String>,
    /// A promoted standby that got its replay with `Init` (the burst): how
    /// many requests were replayed, so `Ready` does not rewind them again.
    pub(super) replayed_early: Option<usize>,
}

/// Why an instance is being brought down deliberately, which decides what
/// happens at its exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterExit {
    /// A fault: ask the restart policy.
    Policy,
    /// Operator restart: relaunch at once, not counted as a fault.
    Relaunch,
    /// Operator stop or shutdown: stay stopped.
    Stay,
}

/// A driver's queue: encoded request bodies in a boxed ring of exactly
/// `queue-depth` slots.
pub(super) type DriverQueue = RequestQueue<Vec<u8>, Box<[Slot<Vec<u8>>]>>;

/// Everything the core keeps about one configured driver.
#[derive(Debug)]
pub(super) struct Driver {
    pub(super) cfg: DriverConfig,
    pub(super) policy: Box<dyn FaultPolicyDyn>,
    pub(super) phase: Phase,
    pub(super) instance: Option<Instance>,
    /// Generation of the latest launch (0: never launched).
    pub(super) generation: Generation,
    pub(super) after_exit: AfterExit,
    /// Accepted, unanswered requests; exactly `cfg.queue_depth` slots,
    /// allocated once at configuration, so memory follows the configuration
    /// and a full queue is the `Busy` backpressure.
    pub(super) queue: DriverQueue,
    pub(super) checkpoint: Option<Vec<u8>>,
    pub(super) restarts: u32,
    pub(super) last_failure: Option<String>,
    /// Persisted-checkpoint state and the replies waiting for it.
    pub(super) durability: Durability,
    /// Backing off because a launch ran out of resources, not for a fault.
    pub(super) deferred: bool,
    /// The hot standby, with `standby = true` ([`super::standby`]).
    pub(super) standby: Option<super::standby::Standby>,
}

/// Delay before a launch that failed for lack of resources is tried again.
pub const LAUNCH_RETRY: Millis = Millis(100);

/// `FaultPolicy` + `Debug`, object safe.
pub(super) trait FaultPolicyDyn: FaultPolicy + std::fmt::Debug + Send {}
impl<T: FaultPolicy + std::fmt::Debug + Send> FaultPolicyDyn for T {}

/// Who asked for a restart; only the `[SUP]` line tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RestartCause {
    /// Decided earlier: by the restart policy after a fault (at once or
    /// after backoff), or by an operator restart of a live instance that has
    /// now exited.
    Scheduled,
    /// `drvctl restart` of a driver that had no instance.
    Operator,
}

impl Supervisor {
    /// The one restart path: counts the restart, says so, and launches the
    /// next generation.
    pub(super) fn restart(&mut self, now: Millis, id: DriverId, cause: RestartCause, out: &mut Vec<Action>) {
        let d = &mut self.drivers[id.0];
        d.restarts += 1;
        let by = match cause {
            RestartCause::Scheduled => "",
            RestartCause::Operator => " (operator)",
        };
        out.push(Action::Say(format!("restarting {}{by}", d.cfg.name)));
        self.launch(now, id, out);
    }

    /// Launches a new generation of `id`: the spawn is answered by
    /// [`Event::Spawned`](super::Event::Spawned) or a spawn failure.
    pub(super) fn launch(&mut self, now: Millis, id: DriverId, out: &mut Vec<Action>) {
        // A hot standby takes the place of a new process (CONTRACTS.md §9).
        if self.promote(now, id, out) {
            return;
        }
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
            hang: HangWatch::default(),
            fatal: None,
            killed_for: None,
            replayed_early: None,
        });
        d.phase = Phase::Starting { deadline: now.plus(d.cfg.init_timeout) };
        out.push(Action::Spawn { driver: id, generation: d.generation });
    }

    /// The spawn of `generation` failed: a fault of the driver's (no
    /// executable, bad sandbox), handled like an instance that died.
    pub(super) fn on_spawn_failed(
        &mut self,
        now: Millis,
        driver: DriverId,
        generation: Generation,
        error: &str,
        out: &mut Vec<Action>,
    ) {
        let d = &mut self.drivers[driver.0];
        if d.instance.as_ref().is_some_and(|i| i.generation == generation) {
            out.push(Action::Say(format!("cannot launch {}: {error}", d.cfg.name)));
            d.instance.as_mut().expect("checked").fatal = Some(format!("spawn failed: {error}"));
            self.instance_gone(now, driver, None, out);
        }
    }

    /// The spawn of `generation` ran out of resources: not the driver's
    /// fault, so it is retried after [`LAUNCH_RETRY`] without counting.
    pub(super) fn on_spawn_deferred(
        &mut self,
        now: Millis,
        driver: DriverId,
        generation: Generation,
        error: &str,
        out: &mut Vec<Action>,
    ) {
        let d = &mut self.drivers[driver.0];
        if d.instance.as_ref().is_some_and(|i| i.generation == generation) {
            d.instance = None;
            d.deferred = true;
            out.push(Action::Say(format!(
                "cannot launch {} now: {error}; out of resources, retrying in {LAUNCH_RETRY} (not counted as a \
                 fault)",
                d.cfg.name
            )));
            d.phase = Phase::BackingOff { until: now.plus(LAUNCH_RETRY), delay: LAUNCH_RETRY };
        }
    }

    pub(super) fn on_spawned(
        &mut self,
        now: Millis,
        id: DriverId,
        generation: Generation,
        pid: u32,
        out: &mut Vec<Action>,
    ) {
        if self.is_standby(id, generation) {
            self.standby_spawned(id, generation, pid, out);
            return;
        }
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

    pub(super) fn on_frame(
        &mut self,
        now: Millis,
        id: DriverId,
        frame_gen: Generation,
        msg: FromDriver<'_>,
        out: &mut Vec<Action>,
    ) {
        let current = self.current(id);
        if current != Some(frame_gen) && self.is_standby(id, frame_gen) {
            self.standby_frame(id, msg, out);
            return;
        }
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
                // A promoted standby may have had its replay with Init (the
                // burst); those requests are in flight already.
                let queued = match inst.replayed_early.take() {
                    Some(n) => n,
                    None => {
                        let n = d.queue.rewind();
                        if n > 0 {
                            out.push(Action::Say(format!("replaying {n} queued requests")));
                        }
                        n
                    }
                };
                if let Some(sb) = d.standby.as_mut() {
                    // The next standby waits until these are answered.
                    sb.owe(queued);
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
                inst.hang.reset();
            }
            FromDriver::Fatal { reason } => {
                let d = &mut self.drivers[id.0];
                out.push(Action::Say(format!("{} reports a fatal error: {reason}", d.cfg.name)));
                d.instance.as_mut().expect("current instance").fatal = Some(format!("fatal: {reason}"));
            }
            FromDriver::Reply { id: rid, commit, body } => self.on_reply(now, id, rid, commit, body, out),
        }
    }

    /// Kills the current instance of `id` as hung.
    pub(super) fn kill_hung(&mut self, id: DriverId, reason: String, out: &mut Vec<Action>) {
        let d = &mut self.drivers[id.0];
        out.push(Action::Say(format!("{} is not answering heartbeats; killing it", d.cfg.name)));
        d.phase = Phase::Hung;
        self.kill_instance(id, reason, AfterExit::Policy, out);
    }

    pub(super) fn kill_instance(&mut self, id: DriverId, reason: String, after: AfterExit, out: &mut Vec<Action>) {
        let d = &mut self.drivers[id.0];
        let Some(inst) = d.instance.as_mut() else { return };
        if inst.killed_for.is_none() {
            inst.killed_for = Some(reason);
        }
        d.after_exit = after;
        out.push(Action::Kill { driver: id, generation: inst.generation, signal: KillSignal::Kill });
    }

    /// The current instance of `id` is gone (exited or never started).
    pub(super) fn instance_gone(
        &mut self,
        now: Millis,
        id: DriverId,
        status: Option<ExitStatus>,
        out: &mut Vec<Action>,
    ) {
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
            self.kill_standby(id, "stopped".into(), true, out);
            let error = if self.shutting_down { CallError::ShuttingDown } else { CallError::DriverFailed };
            self.fail_queue(now, id, error, out);
            return;
        }
        if d.after_exit == AfterExit::Relaunch {
            d.queue.rewind();
            self.restart(now, id, RestartCause::Scheduled, out);
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
        // An instance that died before Ready started nothing, even if a
        // burst had sent it the head request already (CONTRACTS.md §9).
        if d.queue.head_in_flight() && !was_starting {
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
                let reply = Cached::Failed(CallError::Poisoned);
                self.journal_answer(now, JournalAnswer { id, rid, commit: None, reply, cached: true }, out);
            } else {
                self.answer(now, rid, Cached::Failed(CallError::Poisoned), out);
            }
        }
        let d = &mut self.drivers[id.0];
        if self.shutting_down {
            d.phase = Phase::Stopped;
            self.kill_standby(id, "stopped".into(), true, out);
            self.fail_queue(now, id, CallError::ShuttingDown, out);
            return;
        }
        let ran_for = now.since(inst.launched_at);
        let random = self.random();
        let d = &mut self.drivers[id.0];
        match d.policy.on_fault(now, ran_for, random) {
            FaultAction::Restart { delay, .. } if delay == Millis::ZERO => {
                self.restart(now, id, RestartCause::Scheduled, out);
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
                self.kill_standby(id, "quarantined".into(), true, out);
                self.fail_queue(now, id, CallError::DriverFailed, out);
            }
        }
    }

    pub(super) fn operator_restart(&mut self, now: Millis, id: DriverId, out: &mut Vec<Action>) -> ControlResponse {
        if self.shutting_down {
            return ControlResponse::Error("the supervisor is shutting down".into());
        }
        let d = &mut self.drivers[id.0];
        let name = d.cfg.name.clone();
        match d.phase {
            Phase::Quarantined | Phase::Stopped | Phase::BackingOff { .. } => {
                d.policy.reset();
                self.standby_revive(now, id);
                self.restart(now, id, RestartCause::Operator, out);
                ControlResponse::Done(format!("{name} restarted"))
            }
            Phase::Starting { .. } | Phase::Running { .. } | Phase::Hung => {
                d.policy.reset();
                self.standby_revive(now, id);
                self.kill_instance(id, "restarted by operator".into(), AfterExit::Relaunch, out);
                ControlResponse::Done(format!("{name} is being restarted"))
            }
            Phase::Stopping { .. } => ControlResponse::Error(format!("{name} is stopping; restart it once stopped")),
        }
    }

    pub(super) fn operator_stop(&mut self, now: Millis, id: DriverId, out: &mut Vec<Action>) -> ControlResponse {
        let name = self.drivers[id.0].cfg.name.clone();
        match self.drivers[id.0].phase {
            Phase::Stopped | Phase::Stopping { .. } => ControlResponse::Error(format!("{name} is already stopped")),
            Phase::Quarantined | Phase::BackingOff { .. } => {
                self.drivers[id.0].phase = Phase::Stopped;
                self.kill_standby(id, "stopped".into(), true, out);
                self.fail_queue(now, id, CallError::DriverFailed, out);
                ControlResponse::Done(format!("{name} stopped"))
            }
            _ => {
                self.begin_stop(now, id, out);
                ControlResponse::Done(format!("{name} is stopping"))
            }
        }
    }

    pub(super) fn begin_stop(&mut self, now: Millis, id: DriverId, out: &mut Vec<Action>) {
        self.kill_standby(id, "stopped".into(), true, out);
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
    pub(super) fn shutdown_step(&mut self, now: Millis, out: &mut Vec<Action>) {
        for i in (0..self.drivers.len()).rev() {
            match self.drivers[i].phase {
                Phase::Stopped | Phase::Quarantined => {
                    self.fail_queue(now, DriverId(i), CallError::ShuttingDown, out);
                }
                Phase::Stopping { .. } => return,
                Phase::BackingOff { .. } => {
                    self.drivers[i].phase = Phase::Stopped;
                    self.kill_standby(DriverId(i), "stopped".into(), true, out);
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
        // A standby holds nothing, but it is not left to die with us.
        for i in 0..self.drivers.len() {
            self.kill_standby(DriverId(i), "stopped".into(), true, out);
        }
        if self.standbys_alive() {
            return;
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
}
