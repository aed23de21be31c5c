//! Hot standby instances (CONTRACTS.md §9).
//!
//! A driver with `standby = true` keeps a second process next to its running
//! instance: launched for the next generation, past its start-up (exec'd,
//! sandboxed, its driver built from its arguments), waiting on its channel
//! and holding no device. Wherever the restart policy says "launch",
//! [`Supervisor::promote`] hands it the instance's place instead: `Init`, and,
//! once its sandbox has been checked (its first pong), the replayed window in
//! the same burst. The next standby is launched once the promoted instance
//! has answered what was replayed to it, so its fork+exec (which blocks the
//! single-threaded daemon) stays off the recovery it would slow down.
//!
//! A standby is pinged like an instance and replaced when it dies, with the
//! driver's backoff arithmetic applied to standby deaths alone; they never
//! count toward the driver's quarantine. Quarantine, stop and shutdown kill it.
//!
//! # Designs rejected
//! - A standby that opens and maps the device ahead of time, to save `init`
//!   as well: two processes would own `/dev/uioN` at once, the standby would
//!   consume or re-enable interrupts meant for the running instance, and the
//!   replay's device reasoning (CONTRACTS.md §2) assumes one owner at a time.
//! - Forking the running instance (a zygote): the copy carries the state of a
//!   process about to crash, its mappings included, and the sandbox forbids
//!   `fork` in drivers anyway.
//! - A pool of standbys: a second crash within the ~2 ms a new standby takes
//!   to be ready is a restart storm, which the policy handles; each extra one
//!   is an idle process per driver.
//! - Launching the next standby at the moment of promotion: the daemon would
//!   block in fork+exec while the replay's replies wait in its socket.

use super::Supervisor;
use super::hang::HangWatch;
use super::lifecycle::{AfterExit, Instance, LAUNCH_RETRY, Phase};
use super::vocab::{Action, DriverId, DriverMsg, ExitStatus, KillSignal};
use reinc_policy::{BackoffRestart, FaultAction, FaultPolicy, Millis};
use reinc_proto::{FromDriver, Generation};

/// The standby process of a driver.
#[derive(Debug)]
pub(super) struct Spare {
    /// The generation it was launched for (`REINC_GENERATION`).
    pub(super) generation: Generation,
    pid: Option<u32>,
    launched_at: Millis,
    next_ping: Millis,
    outstanding: Option<u64>,
    missed: u32,
    /// It answered a ping: past start-up, and the daemon has checked its
    /// sandbox (an unconfined one is reported as garbage, never as a pong).
    warm: bool,
    /// A `Fatal` it reported.
    fatal: Option<String>,
    /// Why the supervisor killed it.
    killed_for: Option<String>,
    /// Killed on purpose (quarantine, stop, shutdown): not replaced.
    retired: bool,
}

/// A driver's standby bookkeeping (`standby = true`).
#[derive(Debug)]
pub(super) struct Standby {
    pub(super) spare: Option<Spare>,
    /// The driver's backoff, applied to standby deaths only.
    policy: BackoffRestart,
    /// No new standby before this (after a standby death's backoff).
    not_before: Millis,
    /// Replies the promoted instance owes for its replay before the next
    /// standby is launched.
    owed: usize,
    /// Too many standby deaths: none until an operator restart.
    disabled: bool,
}

impl Standby {
    pub(super) fn new(backoff: reinc_policy::BackoffConfig) -> Self {
        Self {
            spare: None,
            policy: BackoffRestart::new(backoff).expect("validated by config"),
            not_before: Millis::ZERO,
            owed: 0,
            disabled: false,
        }
    }

    /// The instance just got `Ready` and `replayed` requests: the next
    /// standby waits until they are answered.
    pub(super) fn owe(&mut self, replayed: usize) {
        self.owed = replayed;
    }

    /// The spare, if it is `generation`.
    pub(super) fn is(&self, generation: Generation) -> bool {
        self.spare.as_ref().is_some_and(|s| s.generation == generation)
    }

    /// Whether a new standby should be launched (at `not_before`) while the
    /// driver is running.
    fn wanted(&self) -> bool {
        !self.disabled && self.spare.is_none() && self.owed == 0
    }

    /// When the core next has work for the standby of a driver whose phase
    /// is `running` (or not).
    pub(super) fn deadline(&self, running: bool) -> Option<Millis> {
        let ping = self.spare.as_ref().filter(|s| s.pid.is_some() && s.killed_for.is_none()).map(|s| s.next_ping);
        let launch = (running && self.wanted()).then_some(self.not_before);
        ping.into_iter().chain(launch).min()
    }
}

impl Supervisor {
    /// The standby of `id` becomes its instance, if it has a live one: it
    /// gets `Init` with the committed state and, if its sandbox was checked
    /// already (and the driver is not a journal driver, whose window waits
    /// on the journal), the replayed window in the same burst. `false` if
    /// there is no standby to promote.
    pub(super) fn promote(&mut self, now: Millis, id: DriverId, out: &mut Vec<Action>) -> bool {
        let journal = self.is_journal(id);
        let d = &mut self.drivers[id.0];
        let Some(sb) = d.standby.as_mut() else { return false };
        let Some(spare) = sb.spare.take_if(|s| s.pid.is_some() && s.killed_for.is_none() && !s.retired) else {
            return false;
        };
        let generation = spare.generation;
        let queued = d.queue.rewind();
        sb.owed = queued;
        let burst = spare.warm && !journal;
        d.after_exit = AfterExit::Policy;
        d.deferred = false;
        d.instance = Some(Instance {
            generation,
            pid: spare.pid,
            launched_at: now,
            next_ping: now,
            outstanding: None,
            missed: 0,
            hang: HangWatch::default(),
            fatal: None,
            killed_for: None,
            replayed_early: burst.then_some(queued),
        });
        d.phase = Phase::Starting { deadline: now.plus(d.cfg.init_timeout) };
        let pid = spare.pid.unwrap_or_default();
        out.push(Action::Say(format!("promoting the standby of {} (pid={pid}, {generation})", d.cfg.name)));
        out.push(Action::ToDriver {
            driver: id,
            generation,
            msg: DriverMsg::Init { generation, checkpoint: d.checkpoint.clone() },
        });
        if burst {
            if queued > 0 {
                out.push(Action::Say(format!("replaying {queued} queued requests")));
            }
            let window = d.cfg.window;
            while let Some(e) = d.queue.forward_next(window) {
                out.push(Action::ToDriver {
                    driver: id,
                    generation,
                    msg: DriverMsg::Request { id: e.id, body: e.payload.clone() },
                });
            }
        }
        true
    }

    /// Launches a standby for `id`.
    fn launch_standby(&mut self, now: Millis, id: DriverId, out: &mut Vec<Action>) {
        let d = &mut self.drivers[id.0];
        let Some(sb) = d.standby.as_mut() else { return };
        d.generation = d.generation.next();
        sb.spare = Some(Spare {
            generation: d.generation,
            pid: None,
            launched_at: now,
            next_ping: now,
            outstanding: None,
            missed: 0,
            warm: false,
            fatal: None,
            killed_for: None,
            retired: false,
        });
        out.push(Action::Spawn { driver: id, generation: d.generation });
    }

    /// The spawn of the standby `generation` produced `pid`.
    pub(super) fn standby_spawned(&mut self, id: DriverId, generation: Generation, pid: u32, out: &mut Vec<Action>) {
        let d = &mut self.drivers[id.0];
        let Some(spare) = d.standby.as_mut().and_then(|s| s.spare.as_mut()).filter(|s| s.generation == generation)
        else {
            return;
        };
        spare.pid = Some(pid);
        out.push(Action::Say(format!("Launching standby of {} (pid={pid})", d.cfg.name)));
    }

    /// A frame of the standby of `id` (stamped with its launch generation).
    pub(super) fn standby_frame(&mut self, id: DriverId, msg: FromDriver<'_>, out: &mut Vec<Action>) {
        let d = &mut self.drivers[id.0];
        let name = d.cfg.name.clone();
        let Some(spare) = d.standby.as_mut().and_then(|s| s.spare.as_mut()) else { return };
        match msg {
            FromDriver::Pong { nonce } => {
                if spare.outstanding.is_some_and(|n| n <= nonce) {
                    spare.outstanding = None;
                }
                spare.missed = 0;
                if !spare.warm {
                    spare.warm = true;
                    out.push(Action::Say(format!("standby of {name} is ready")));
                }
            }
            FromDriver::Fatal { reason } => {
                out.push(Action::Say(format!("standby of {name} reports a fatal error: {reason}")));
                spare.fatal = Some(format!("fatal: {reason}"));
            }
            FromDriver::Ready | FromDriver::Reply { .. } => {
                let what = if matches!(msg, FromDriver::Ready) { "Ready" } else { "a reply" };
                self.kill_standby(id, format!("protocol error: {what} before Init"), false, out);
            }
        }
    }

    /// Kills the standby of `id`; `retire`: on purpose, not to be replaced.
    pub(super) fn kill_standby(&mut self, id: DriverId, why: String, retire: bool, out: &mut Vec<Action>) {
        let d = &mut self.drivers[id.0];
        let Some(spare) = d.standby.as_mut().and_then(|s| s.spare.as_mut()) else { return };
        spare.retired |= retire;
        if spare.killed_for.is_none() {
            spare.killed_for = Some(why);
            if spare.pid.is_some() {
                out.push(Action::Kill { driver: id, generation: spare.generation, signal: KillSignal::Kill });
            }
        }
    }

    /// The standby of `id` is gone (exited, or its spawn failed with
    /// `spawn_error`): replaced after the backoff, or disabled.
    pub(super) fn standby_gone(
        &mut self,
        now: Millis,
        id: DriverId,
        status: Option<ExitStatus>,
        spawn_error: Option<String>,
        out: &mut Vec<Action>,
    ) {
        let random = self.random();
        let d = &mut self.drivers[id.0];
        let name = d.cfg.name.clone();
        let Some(sb) = d.standby.as_mut() else { return };
        let Some(spare) = sb.spare.take() else { return };
        if spare.retired {
            out.push(Action::Say(format!("standby of {name} stopped")));
            return;
        }
        let reason = match (spare.killed_for, spare.fatal, status, spawn_error) {
            (Some(k), ..) => k,
            (None, Some(f), ..) => f,
            (None, None, Some(s), _) => s.describe(),
            (None, None, None, Some(e)) => format!("spawn failed: {e}"),
            (None, None, None, None) => "vanished".into(),
        };
        out.push(Action::Say(format!("standby of {name} crashed ({reason})")));
        match sb.policy.on_fault(now, now.since(spare.launched_at), random) {
            FaultAction::Restart { delay, .. } => sb.not_before = now.plus(delay),
            FaultAction::Quarantine => {
                sb.disabled = true;
                out.push(Action::Say(format!(
                    "standby of {name} disabled after repeated failures; {name} runs without one until `drvctl \
                     restart {name}`"
                )));
            }
        }
    }

    /// A launch of the standby of `id` ran out of resources: try again later.
    pub(super) fn standby_deferred(&mut self, now: Millis, id: DriverId, error: &str, out: &mut Vec<Action>) {
        let d = &mut self.drivers[id.0];
        let name = d.cfg.name.clone();
        let Some(sb) = d.standby.as_mut() else { return };
        sb.spare = None;
        sb.not_before = now.plus(LAUNCH_RETRY);
        out.push(Action::Say(format!("cannot launch a standby of {name} now: {error}; retrying in {LAUNCH_RETRY}")));
    }

    /// A reply of the running instance of `id` arrived: one fewer owed for
    /// its replay.
    pub(super) fn standby_reply_seen(&mut self, id: DriverId) {
        if let Some(sb) = self.drivers[id.0].standby.as_mut() {
            sb.owed = sb.owed.saturating_sub(1);
        }
    }

    /// Heartbeats for the standby of `id`, and the launch of a new one when due.
    pub(super) fn standby_tick(&mut self, now: Millis, id: DriverId, out: &mut Vec<Action>) {
        let running = matches!(self.drivers[id.0].phase, Phase::Running { .. }) && !self.shutting_down;
        let d = &mut self.drivers[id.0];
        let (interval, allowed, name) = (d.cfg.heartbeat_interval, d.cfg.heartbeat_misses, d.cfg.name.clone());
        let Some(sb) = d.standby.as_mut() else { return };
        if running && sb.wanted() && now >= sb.not_before {
            self.launch_standby(now, id, out);
            return;
        }
        let Some(spare) = sb.spare.as_mut().filter(|s| s.pid.is_some() && s.killed_for.is_none()) else { return };
        if now < spare.next_ping {
            return;
        }
        if spare.outstanding.is_some() {
            spare.missed += 1;
        }
        if spare.missed >= allowed {
            let reason = format!("hung (missed {} heartbeats)", spare.missed);
            out.push(Action::Say(format!("standby of {name} is not answering heartbeats; killing it")));
            self.kill_standby(id, reason, false, out);
            return;
        }
        self.nonce += 1;
        spare.outstanding = Some(self.nonce);
        spare.next_ping = now.plus(interval);
        out.push(Action::ToDriver {
            driver: id,
            generation: spare.generation,
            msg: DriverMsg::Ping { nonce: self.nonce },
        });
    }

    /// An operator restart re-enables a standby disabled by its failures.
    pub(super) fn standby_revive(&mut self, now: Millis, id: DriverId) {
        if let Some(sb) = self.drivers[id.0].standby.as_mut() {
            sb.disabled = false;
            sb.policy.reset();
            sb.not_before = now;
        }
    }

    /// Whether any driver still has a standby process (shutdown waits for them).
    pub(super) fn standbys_alive(&self) -> bool {
        self.drivers.iter().any(|d| d.standby.as_ref().is_some_and(|s| s.spare.is_some()))
    }
}
