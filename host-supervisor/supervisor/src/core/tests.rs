//! The supervisor's rules, exercised without processes.

use super::*;
use crate::config::DriverConfig;
use reinc_policy::BackoffConfig;
use reinc_proto::{CallError, FaultPlan, FromDriver, MAX_BODY, RequestId};
use std::collections::VecDeque;

const STORAGE: DriverId = DriverId(0);

const NET: DriverId = DriverId(1);

const C1: ConnId = ConnId(1);

const C2: ConnId = ConnId(2);

fn backoff() -> BackoffConfig {
    BackoffConfig {
        base: Millis(100),
        cap: Millis(1_000),
        jitter_percent: 0,
        healthy_after: Millis(10_000),
        max_restarts: 4,
        window: Millis(60_000),
    }
}

fn driver(name: &str) -> DriverConfig {
    let mut c = DriverConfig::new(name, "/bin/false");
    c.fault_policy = FaultPolicyConfig::Restart(backoff());
    c.heartbeat_interval = Millis(1_000);
    c.heartbeat_misses = 3;
    c.init_timeout = Millis(5_000);
    c.window = 2;
    c.queue_depth = 4;
    c.poison_after = 3;
    c
}

/// A supervisor plus a clock, a fake process table and a fake disk.
struct Sim {
    sup: Supervisor,
    now: Millis,
    next_pid: u32,
    out: Vec<Action>,
    /// Outcomes of the next checkpoint writes; `Durable` once empty.
    disk: VecDeque<PersistOutcome>,
    /// Checkpoints written durably, in order.
    written: Vec<Vec<u8>>,
    /// Answers to the next `ProbeSched`s; `None` (no figures) once empty.
    sched: VecDeque<SchedSample>,
}

impl Sim {
    fn new(drivers: Vec<DriverConfig>) -> Self {
        Self::of(Supervisor::new(drivers.into_iter().map(|d| (d, None)).collect(), 42, 4, 8))
    }

    /// A simulation of `sup` at time 0, whose first spawn gets pid 101.
    fn of(sup: Supervisor) -> Self {
        Self {
            sup,
            now: Millis(0),
            next_pid: 100,
            out: Vec::new(),
            disk: VecDeque::new(),
            written: Vec::new(),
            sched: VecDeque::new(),
        }
    }

    fn with(mut f: impl FnMut(&mut DriverConfig)) -> Self {
        let mut d = driver("storage_driver");
        f(&mut d);
        Self::new(vec![d])
    }

    /// Feeds an event; answers spawns and checkpoint writes like the daemon
    /// does (their actions follow at once); keeps every action.
    fn ev(&mut self, e: Event<'_>) -> Vec<Action> {
        let mut acts = self.sup.handle(self.now, e);
        let mut i = 0;
        while i < acts.len() {
            let more = match &acts[i] {
                Action::Spawn { driver, generation } => {
                    self.next_pid += 1;
                    let pid = self.next_pid;
                    self.sup.handle(self.now, Event::Spawned { driver: *driver, generation: *generation, pid })
                }
                Action::Persist { driver, checkpoint } => {
                    let outcome = self.disk.pop_front().unwrap_or(PersistOutcome::Durable);
                    if outcome == PersistOutcome::Durable {
                        self.written.push(checkpoint.clone());
                    }
                    self.sup.handle(self.now, Event::Persisted { driver: *driver, outcome })
                }
                Action::ProbeSched { driver, generation } => {
                    let sample = self.sched.pop_front();
                    self.sup.handle(self.now, Event::Sched { driver: *driver, generation: *generation, sample })
                }
                _ => Vec::new(),
            };
            acts.splice(i + 1..i + 1, more);
            i += 1;
        }
        self.out.extend(acts.iter().cloned());
        acts
    }

    fn at(&mut self, t: u64) -> Vec<Action> {
        self.now = Millis(t);
        self.ev(Event::Tick)
    }

    fn generation(&self, d: DriverId) -> Generation {
        self.sup.current(d).expect("an instance")
    }

    fn ready(&mut self, d: DriverId) -> Vec<Action> {
        let g = self.generation(d);
        self.ev(Event::FromDriver { driver: d, frame_gen: g, msg: FromDriver::Ready })
    }

    fn start(&mut self) {
        self.ev(Event::Start);
        for i in 0..self.sup.driver_count() {
            self.ready(DriverId(i));
        }
    }

    fn hello(&mut self, conn: ConnId, resume: Option<ClientId>) -> ClientId {
        self.ev(Event::ClientConnected { conn });
        let acts = self.ev(Event::Hello { conn, resume });
        match client_msgs(&acts, conn).as_slice() {
            [ClientMsg::Welcome { client }] => *client,
            _ => panic!("no welcome: {acts:?}"),
        }
    }

    fn call(&mut self, conn: ConnId, seq: u64, body: &[u8]) -> Vec<Action> {
        self.ev(Event::Call { conn, seq, driver: "storage_driver", body, acked_below: 0 })
    }

    fn reply(&mut self, d: DriverId, client: ClientId, seq: u64, commit: Option<&[u8]>, body: &[u8]) -> Vec<Action> {
        let g = self.generation(d);
        let msg = FromDriver::Reply { id: RequestId { client, seq }, commit, body };
        self.ev(Event::FromDriver { driver: d, frame_gen: g, msg })
    }

    fn crash(&mut self, d: DriverId, status: ExitStatus) -> Vec<Action> {
        let g = self.generation(d);
        self.ev(Event::Exited { driver: d, generation: g, status })
    }

    fn state(&self, d: DriverId) -> DriverStatus {
        self.sup.status(self.now)[d.0].clone()
    }

    fn said(&self, line: &str) -> bool {
        self.out.iter().any(|a| matches!(a, Action::Say(s) if s == line))
    }
}

const SEGV: ExitStatus = ExitStatus::Signal(11);

fn requests_sent(acts: &[Action]) -> Vec<u64> {
    acts.iter()
        .filter_map(|a| match a {
            Action::ToDriver { msg: DriverMsg::Request { id, .. }, .. } => Some(id.seq),
            _ => None,
        })
        .collect()
}

fn client_msgs(acts: &[Action], conn: ConnId) -> Vec<ClientMsg> {
    acts.iter()
        .filter_map(|a| match a {
            Action::ToClient { conn: c, msg } if *c == conn => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

fn requests_spawned(acts: &[Action]) -> Vec<Generation> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Spawn { generation, .. } => Some(*generation),
            _ => None,
        })
        .collect()
}

mod busy_order;
mod calls;
mod durability;
mod journal;
mod lifecycle;
mod model;
mod sessions;
mod shutdown;
mod standby;
