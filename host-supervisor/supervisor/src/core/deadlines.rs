//! Deadlines: when each driver next needs the core (init timeout, heartbeat,
//! backoff, SIGKILL after SIGTERM, checkpoint retry), the per-driver cache
//! of those deadlines, and the time sweep that acts on the due ones.
//!
//! Like Horust and jefe, the core never sleeps: the daemon asks
//! [`Supervisor::next_deadline`] and waits on its fds until then. A timer
//! wheel or heap was rejected: drivers are few, and a cached minimum with
//! touched-driver refresh makes an event cost work only for the drivers it
//! concerns.

use super::Supervisor;
use super::lifecycle::{AfterExit, Driver, Phase, RestartCause};
use super::vocab::{Action, DriverId, DriverMsg, KillSignal};
use reinc_policy::Millis;

impl Driver {
    /// When [`Supervisor::on_time`] next has something to do for this
    /// driver: a start, stop or backoff deadline, a heartbeat, a checkpoint
    /// retry.
    pub(super) fn deadline(&self) -> Option<Millis> {
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
        let running = matches!(self.phase, Phase::Running { .. });
        let standby = self.standby.as_ref().and_then(|s| s.deadline(running));
        phase.into_iter().chain(self.durability.retry_deadline()).chain(standby).min().filter(|&t| t != NEVER)
    }
}

/// No deadline.
pub(super) const NEVER: Millis = Millis(u64::MAX);

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
pub(super) struct Drivers {
    pub(super) list: Vec<Driver>,
    /// `list[i].deadline()`, or [`NEVER`]; exact for drivers not in `touched`.
    pub(super) deadlines: Vec<Millis>,
    /// The minimum of `deadlines`.
    pub(super) earliest: Millis,
    /// Drivers mutably borrowed since the last refresh (may repeat).
    pub(super) touched: Vec<usize>,
}

impl Drivers {
    pub(super) fn new(list: Vec<Driver>) -> Self {
        let deadlines: Vec<Millis> = list.iter().map(|d| d.deadline().unwrap_or(NEVER)).collect();
        let earliest = deadlines.iter().copied().min().unwrap_or(NEVER);
        Self { list, deadlines, earliest, touched: Vec::new() }
    }

    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    pub(super) fn get(&self, i: usize) -> Option<&Driver> {
        self.list.get(i)
    }

    pub(super) fn iter(&self) -> std::slice::Iter<'_, Driver> {
        self.list.iter()
    }

    /// Brings the cached deadlines of the touched drivers up to date.
    pub(super) fn refresh(&mut self) {
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
    pub(super) fn earliest(&self) -> Option<Millis> {
        Some(self.earliest).filter(|&t| t != NEVER)
    }

    /// The drivers with something due at `now`, in start order (refreshed first).
    pub(super) fn due(&mut self, now: Millis) -> Vec<usize> {
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

impl Supervisor {
    /// Checks the deadline cache against a scan of every driver and every
    /// cached entry (tests only: the scan is what the cache saves).
    #[cfg(test)]
    pub(super) fn assert_deadline_cache_exact(&self) {
        for (i, d) in self.drivers.iter().enumerate() {
            assert_eq!(self.drivers.deadlines[i], d.deadline().unwrap_or(NEVER), "stale deadline of {}", d.cfg.name);
        }
        assert_eq!(self.drivers.earliest(), self.drivers.iter().filter_map(Driver::deadline).min());
    }

    /// Does what is due at `now`: only drivers whose cached deadline has
    /// passed are visited (none, on most events).
    pub(super) fn on_time(&mut self, now: Millis, out: &mut Vec<Action>) {
        let due = self.drivers.due(now);
        if due.is_empty() {
            return;
        }
        self.persist_retries(now, &due, out);
        for i in due {
            let id = DriverId(i);
            self.standby_tick(now, id, out);
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
                    let probe = Action::ProbeSched { driver: id, generation: inst.generation };
                    if inst.outstanding.is_some() {
                        inst.missed += 1;
                        if inst.missed == 1 && d.cfg.starved_grace != Millis::ZERO {
                            // The baseline of the hang verdict (`core/hang.rs`).
                            out.push(probe.clone());
                        }
                    }
                    if inst.missed >= allowed {
                        if inst.hang.wants_verdict(d.cfg.starved_grace) {
                            // Judged by `on_sched`, at once; not revisited before.
                            inst.next_ping = now.plus(interval);
                            out.push(probe);
                            continue;
                        }
                        let reason = format!("hung (missed {} heartbeats)", inst.missed);
                        self.kill_hung(id, reason, out);
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
                        // Not a restart: the last launch never ran.
                        out.push(Action::Say(format!("retrying the launch of {}", d.cfg.name)));
                        self.launch(now, id, out);
                    } else {
                        self.restart(now, id, RestartCause::Scheduled, out);
                    }
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
}
