//! The supervisor's rules, exercised without processes.

use super::*;
use crate::config::DriverConfig;
use reinc_policy::BackoffConfig;
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
}

impl Sim {
    fn new(drivers: Vec<DriverConfig>) -> Self {
        let sup = Supervisor::new(drivers.into_iter().map(|d| (d, None)).collect(), 42, 4, 8);
        Self { sup, now: Millis(0), next_pid: 100, out: Vec::new(), disk: VecDeque::new(), written: Vec::new() }
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
        match acts.as_slice() {
            [Action::ToClient { msg: ClientMsg::Welcome { client }, .. }] => *client,
            other => panic!("no welcome: {other:?}"),
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

#[test]
fn launch_sends_init_with_the_checkpoint_after_spawn() {
    let sup = Supervisor::new(vec![(driver("storage_driver"), Some(vec![9, 9]))], 1, 4, 8);
    let mut sim =
        Sim { sup, now: Millis(0), next_pid: 221, out: Vec::new(), disk: VecDeque::new(), written: Vec::new() };
    let acts = sim.ev(Event::Start);
    assert_eq!(acts[0], Action::Spawn { driver: STORAGE, generation: Generation(1) });
    assert_eq!(acts[1], Action::Say("Launching storage_driver (pid=222)".into()));
    assert_eq!(
        acts[2],
        Action::ToDriver {
            driver: STORAGE,
            generation: Generation(1),
            msg: DriverMsg::Init { generation: Generation(1), checkpoint: Some(vec![9, 9]) }
        }
    );
    assert_eq!(sim.state(STORAGE).state, DriverState::Starting);
    sim.ready(STORAGE);
    assert_eq!(sim.state(STORAGE).state, DriverState::Running);
}

#[test]
fn crash_restarts_immediately_with_new_pid_and_generation() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let before = sim.state(STORAGE);
    sim.at(50);
    sim.crash(STORAGE, SEGV);
    assert!(sim.said("storage_driver crashed (SIGSEGV)"));
    assert!(sim.said("restarting storage_driver"));
    let after = sim.state(STORAGE);
    assert_eq!(after.generation, before.generation + 1);
    assert_ne!(after.pid, before.pid);
    assert_eq!(after.restarts, 1);
    assert_eq!(after.last_failure.as_deref(), Some("SIGSEGV"));
}

#[test]
fn restart_backoff_doubles_up_to_cap() {
    let mut sim =
        Sim::with(|d| d.fault_policy = FaultPolicyConfig::Restart(BackoffConfig { max_restarts: 64, ..backoff() }));
    sim.start();
    let mut delays = Vec::new();
    for _ in 0..6 {
        sim.crash(STORAGE, ExitStatus::Code(1));
        let st = sim.state(STORAGE);
        match st.state {
            DriverState::Starting => delays.push(0),
            DriverState::BackingOff => {
                let d = st.backoff_ms.unwrap();
                delays.push(d);
                // Nothing happens a millisecond early; the launch comes on time.
                let t = sim.now.0;
                assert!(requests_spawned(&sim.at(t + d - 1)).is_empty());
                assert_eq!(requests_spawned(&sim.at(t + d)).len(), 1);
            }
            other => panic!("unexpected state {other}"),
        }
        sim.ready(STORAGE);
    }
    assert_eq!(delays, [0, 100, 200, 400, 800, 1000]);
}

fn requests_spawned(acts: &[Action]) -> Vec<Generation> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Spawn { generation, .. } => Some(*generation),
            _ => None,
        })
        .collect()
}

#[test]
fn backoff_resets_after_a_healthy_period() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    sim.crash(STORAGE, SEGV); // immediate
    sim.ready(STORAGE);
    sim.crash(STORAGE, SEGV); // 100 ms
    assert_eq!(sim.state(STORAGE).state, DriverState::BackingOff);
    sim.at(100);
    sim.ready(STORAGE);
    // Healthy for 10 s (heartbeats answered): the next crash restarts at once.
    for t in (1_100..=10_100).step_by(1_000) {
        for a in sim.at(t) {
            if let Action::ToDriver { msg: DriverMsg::Ping { nonce }, generation, .. } = a {
                sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: generation, msg: FromDriver::Pong { nonce } });
            }
        }
    }
    sim.crash(STORAGE, SEGV);
    assert_eq!(sim.state(STORAGE).state, DriverState::Starting);
}

#[test]
fn storm_ends_in_quarantine_and_pending_requests_fail_with_driver_failed() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    sim.hello(C1, None);
    sim.call(C1, 1, b"r1");
    for _ in 0..4 {
        sim.crash(STORAGE, SEGV);
        if let Some(d) = sim.state(STORAGE).backoff_ms {
            let t = sim.now.0 + d;
            sim.at(t);
        }
    }
    let acts = sim.crash(STORAGE, SEGV);
    assert_eq!(sim.state(STORAGE).state, DriverState::Quarantined);
    assert!(sim.out.iter().any(|a| matches!(a, Action::Say(s) if s.starts_with("storage_driver quarantined"))));
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 1, error: CallError::DriverFailed }]);
    assert_eq!(sim.state(STORAGE).queue_depth, 0);
    // New calls are refused while quarantined.
    let acts = sim.call(C1, 2, b"r2");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 2, error: CallError::DriverFailed }]);
    // No deadline: a quarantined driver costs nothing.
    assert_eq!(sim.sup.next_deadline(), None);
}

#[test]
fn operator_restart_revives_a_quarantined_driver() {
    let mut sim = Sim::with(|d| d.fault_policy = FaultPolicyConfig::Stop);
    sim.start();
    sim.crash(STORAGE, ExitStatus::Signal(6));
    assert_eq!(sim.state(STORAGE).state, DriverState::Quarantined);
    let (resp, acts) = sim.sup.control(sim.now, &ControlRequest::Restart { driver: "storage_driver".into() });
    assert!(matches!(resp, ControlResponse::Done(_)), "{resp:?}");
    assert_eq!(requests_spawned(&acts), [Generation(2)]);
    let (resp, _) = sim.sup.control(sim.now, &ControlRequest::Restart { driver: "nope".into() });
    assert!(matches!(resp, ControlResponse::Error(e) if e.contains("nope")));
}

#[test]
fn crash_during_init_counts_as_a_crash() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.ev(Event::Start);
    sim.crash(STORAGE, ExitStatus::Signal(11));
    let st = sim.state(STORAGE);
    assert_eq!(st.restarts, 1);
    assert_eq!(st.last_failure.as_deref(), Some("SIGSEGV during init"));
}

#[test]
fn init_timeout_kills_and_counts_as_a_crash() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.ev(Event::Start);
    assert_eq!(sim.sup.next_deadline(), Some(Millis(5_000)));
    let acts = sim.at(5_000);
    assert!(acts.contains(&Action::Kill { driver: STORAGE, generation: Generation(1), signal: KillSignal::Kill }));
    sim.crash(STORAGE, ExitStatus::Signal(9));
    let st = sim.state(STORAGE);
    assert!(st.last_failure.unwrap().starts_with("init timeout"));
    assert_eq!(st.generation, 2);
}

/// Found by the campaign with four supervisors starting at once: the daemon
/// spawns the drivers one after the other, and a driver whose init
/// deadline passed before its own spawn completed was left Starting for
/// ever (its deadline became NEVER without a kill), so a hanging init was
/// never timed out.
#[test]
fn init_timeout_counts_from_the_spawn_even_when_the_spawns_were_slow() {
    let mut sim = Sim::new(vec![driver("storage_driver"), driver("net_driver")]);
    let (first, second) = (DriverId(0), DriverId(1));
    // Event::Start asks for both spawns; the daemon carries them out one by one.
    let acts = sim.sup.handle(Millis(0), Event::Start);
    let spawns: Vec<_> = acts.iter().filter(|a| matches!(a, Action::Spawn { .. })).collect();
    assert_eq!(spawns.len(), 2);
    // The first spawn took 6 s: the second driver's init deadline (5 s) has
    // passed before it even exists.
    sim.sup.handle(Millis(6_000), Event::Spawned { driver: first, generation: Generation(1), pid: 201 });
    sim.sup.handle(Millis(6_001), Event::Spawned { driver: second, generation: Generation(1), pid: 202 });
    sim.now = Millis(6_001);
    sim.ready(first);
    // The second never says Ready: it gets its full init timeout from its spawn, then is killed.
    assert!(!sim.at(10_000).iter().any(|a| matches!(a, Action::Kill { driver, .. } if *driver == second)));
    let acts = sim.at(11_001);
    assert!(
        acts.contains(&Action::Kill { driver: second, generation: Generation(1), signal: KillSignal::Kill }),
        "{acts:?}"
    );
    sim.crash(second, ExitStatus::Signal(9));
    let st = sim.state(second);
    assert!(st.last_failure.unwrap().starts_with("init timeout"));
    assert_eq!(st.generation, 2);
}

#[test]
fn missed_heartbeats_mean_hung_then_kill_and_restart() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let mut pings = 0;
    for t in [1_000, 2_000, 3_000] {
        pings += sim.at(t).iter().filter(|a| matches!(a, Action::ToDriver { msg: DriverMsg::Ping { .. }, .. })).count();
    }
    assert_eq!(pings, 3);
    assert_eq!(sim.state(STORAGE).state, DriverState::Running);
    let acts = sim.at(4_000);
    assert!(acts.contains(&Action::Kill { driver: STORAGE, generation: Generation(1), signal: KillSignal::Kill }));
    assert_eq!(sim.state(STORAGE).state, DriverState::Hung);
    sim.crash(STORAGE, ExitStatus::Signal(9));
    let st = sim.state(STORAGE);
    assert_eq!(st.last_failure.as_deref(), Some("hung (missed 3 heartbeats)"));
    assert_eq!(st.generation, 2);
}

#[test]
fn answered_pings_keep_a_driver_alive() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    for t in (1_000..20_000).step_by(1_000) {
        for a in sim.at(t) {
            if let Action::ToDriver { msg: DriverMsg::Ping { nonce }, generation, .. } = a {
                sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: generation, msg: FromDriver::Pong { nonce } });
            }
        }
    }
    assert_eq!(sim.state(STORAGE).state, DriverState::Running);
    assert_eq!(sim.state(STORAGE).generation, 1);
}

#[test]
fn reply_commits_and_persists_before_the_client_sees_it() {
    let mut sim = Sim::with(|d| d.persist_checkpoint = true);
    sim.start();
    let c = sim.hello(C1, None);
    assert_eq!(requests_sent(&sim.call(C1, 1, b"w")), [1]);
    let acts = sim.reply(STORAGE, c, 1, Some(b"state1"), b"ok");
    let persist = acts.iter().position(|a| matches!(a, Action::Persist { .. })).expect("persisted");
    let reply = acts.iter().position(|a| matches!(a, Action::ToClient { .. })).expect("replied");
    assert!(persist < reply, "{acts:?}");
    assert_eq!(sim.sup.checkpoint(STORAGE), Some(&b"state1"[..]));
    // The next instance is initialised from it.
    let acts = sim.crash(STORAGE, SEGV);
    assert!(acts.iter().any(|a| matches!(a,
        Action::ToDriver { msg: DriverMsg::Init { checkpoint: Some(c), .. }, .. } if c == b"state1")));
}

#[test]
fn frames_from_an_old_generation_are_dropped() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"w");
    sim.crash(STORAGE, SEGV);
    sim.ready(STORAGE);
    let msg = FromDriver::Reply { id: RequestId { client: c, seq: 1 }, commit: Some(b"old"), body: b"stale" };
    let acts = sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: Generation(1), msg });
    assert!(acts.is_empty(), "{acts:?}");
    assert_eq!(sim.sup.checkpoint(STORAGE), None);
    assert!(sim.sup.trace().any(|(_, t)| matches!(t, Trace::StaleFrame { got: Generation(1), .. })));
    assert_eq!(sim.state(STORAGE).queue_depth, 1);
}

#[test]
fn window_limits_requests_in_flight_and_refills_on_reply() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    let mut sent = Vec::new();
    for s in 1..=4 {
        sent.extend(requests_sent(&sim.call(C1, s, b"x")));
    }
    assert_eq!(sent, [1, 2]);
    assert_eq!(requests_sent(&sim.reply(STORAGE, c, 1, None, b"r1")), [3]);
}

#[test]
fn full_queue_answers_busy_and_keeps_what_it_accepted() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    sim.hello(C1, None);
    for s in 1..=4 {
        sim.call(C1, s, b"x");
    }
    let acts = sim.call(C1, 5, b"x");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 5, error: CallError::Busy }]);
    assert_eq!(sim.state(STORAGE).queue_depth, 4);
}

#[test]
fn each_driver_queue_holds_its_own_configured_depth() {
    // 3000 is beyond the old compile-time capacity of 1024 slots.
    let mut storage = driver("storage_driver");
    storage.queue_depth = 3_000;
    let mut net = driver("net_driver");
    net.queue_depth = 3;
    let mut sim = Sim::new(vec![storage, net]);
    sim.start();
    let c = sim.hello(C1, None);
    for s in 1..=3_000 {
        assert!(client_msgs(&sim.call(C1, s, b"x"), C1).is_empty(), "call {s} refused");
    }
    let acts = sim.call(C1, 3_001, b"x");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 3_001, error: CallError::Busy }]);
    let net_call = |sim: &mut Sim, seq| {
        let acts = sim.ev(Event::Call { conn: C2, seq, driver: "net_driver", body: b"n", acked_below: 0 });
        client_msgs(&acts, C2)
    };
    sim.ev(Event::ClientConnected { conn: C2 });
    sim.ev(Event::Hello { conn: C2, resume: None });
    for s in 1..=3 {
        assert!(net_call(&mut sim, s).is_empty());
    }
    assert_eq!(net_call(&mut sim, 4), [ClientMsg::Failed { seq: 4, error: CallError::Busy }]);
    // The deep queue replays whole and in order after a crash.
    sim.crash(STORAGE, ExitStatus::Signal(11));
    let mut sent = requests_sent(&sim.ready(STORAGE));
    assert!(sim.said("replaying 3000 queued requests"));
    let mut answered = 0;
    while let Some(&seq) = sent.get(answered) {
        let acts = sim.reply(STORAGE, c, seq, None, b"r");
        assert_eq!(client_msgs(&acts, C1), [ClientMsg::Reply { seq, body: b"r".to_vec() }]);
        sent.extend(requests_sent(&acts));
        answered += 1;
    }
    assert_eq!(sent, (1..=3_000).collect::<Vec<u64>>());
    assert_eq!(sim.state(STORAGE).queue_depth, 0);
}

#[test]
fn replay_after_crash_before_reply_resends_in_order_after_ready() {
    let mut sim = Sim::with(|d| d.window = 8);
    sim.start();
    let c = sim.hello(C1, None);
    for s in 1..=3 {
        sim.call(C1, s, b"x");
    }
    sim.reply(STORAGE, c, 1, Some(b"s1"), b"r1");
    let acts = sim.crash(STORAGE, SEGV);
    assert!(requests_sent(&acts).is_empty(), "nothing is sent before Ready");
    let acts = sim.ready(STORAGE);
    assert!(sim.said("replaying 2 queued requests"));
    assert_eq!(requests_sent(&acts), [2, 3]);
    let acts = sim.reply(STORAGE, c, 2, None, b"r2");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Reply { seq: 2, body: b"r2".to_vec() }]);
}

#[test]
fn poisoned_request_is_answered_and_dropped_after_k_crashes() {
    let mut sim = Sim::with(|d| {
        d.fault_policy = FaultPolicyConfig::Restart(BackoffConfig { max_restarts: 64, base: Millis(1), ..backoff() })
    });
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"poison");
    sim.call(C1, 2, b"fine");
    let mut answered = Vec::new();
    for _ in 0..3 {
        answered.extend(client_msgs(&sim.crash(STORAGE, SEGV), C1));
        if let Some(d) = sim.state(STORAGE).backoff_ms {
            let t = sim.now.0 + d;
            sim.at(t);
        }
        sim.ready(STORAGE);
    }
    assert_eq!(answered, [ClientMsg::Failed { seq: 1, error: CallError::Poisoned }]);
    // The driver goes on with the rest.
    assert_eq!(sim.state(STORAGE).queue_depth, 1);
    let acts = sim.reply(STORAGE, c, 2, None, b"ok");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Reply { seq: 2, body: b"ok".to_vec() }]);
    // A retry of the poisoned id is answered from the table, not re-executed.
    let acts = sim.call(C1, 1, b"poison");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 1, error: CallError::Poisoned }]);
    assert!(requests_sent(&acts).is_empty());
}

#[test]
fn crash_while_idle_blames_no_request() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"x");
    sim.reply(STORAGE, c, 1, None, b"r");
    sim.crash(STORAGE, SEGV);
    assert_eq!(sim.sup.status(sim.now)[0].queue_depth, 0);
}

#[test]
fn retried_answered_request_is_served_from_cache_without_reexecution() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"w");
    sim.reply(STORAGE, c, 1, Some(b"s"), b"done");
    // The client lost the reply and reconnects.
    sim.ev(Event::ClientGone { conn: C1 });
    assert_eq!(sim.hello(C2, Some(c)), c);
    let acts = sim.call(C2, 1, b"w");
    assert!(requests_sent(&acts).is_empty(), "must not re-execute");
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Reply { seq: 1, body: b"done".to_vec() }]);
    assert!(sim.sup.trace().any(|(_, t)| *t == Trace::DedupHit(RequestId { client: c, seq: 1 })));
}

#[test]
fn retried_in_flight_request_attaches_to_the_original() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"w");
    sim.ev(Event::ClientGone { conn: C1 });
    sim.hello(C2, Some(c));
    let acts = sim.call(C2, 1, b"w");
    assert!(acts.is_empty(), "{acts:?}");
    assert_eq!(sim.state(STORAGE).queue_depth, 1);
    let acts = sim.reply(STORAGE, c, 1, None, b"r");
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Reply { seq: 1, body: b"r".to_vec() }]);
}

#[test]
fn acked_below_expires_cached_replies() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"a");
    sim.reply(STORAGE, c, 1, None, b"r1");
    let acts = sim.ev(Event::Call { conn: C1, seq: 2, driver: "storage_driver", body: b"b", acked_below: 2 });
    assert_eq!(requests_sent(&acts), [2]);
    let acts = sim.call(C1, 1, b"a");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 1, error: CallError::Expired }]);
    assert!(requests_sent(&acts).is_empty());
}

#[test]
fn dedup_table_is_bounded_per_session() {
    let mut sim = Sim::with(|d| d.queue_depth = 64);
    sim.start();
    let c = sim.hello(C1, None);
    for s in 1..=20 {
        sim.call(C1, s, b"x");
        sim.reply(STORAGE, c, s, None, b"r");
    }
    // 8 cached replies per session: seq 12..=20 served, older expired.
    assert!(matches!(client_msgs(&sim.call(C1, 20, b"x"), C1)[..], [ClientMsg::Reply { seq: 20, .. }]));
    assert_eq!(client_msgs(&sim.call(C1, 3, b"x"), C1), [ClientMsg::Failed { seq: 3, error: CallError::Expired }]);
}

#[test]
fn bad_calls_get_clear_errors_and_lose_nothing() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    sim.ev(Event::ClientConnected { conn: C2 });
    let acts = sim.call(C2, 1, b"x");
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Failed { seq: 1, error: CallError::NoSession }]);
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"good");
    let acts = sim.ev(Event::Call { conn: C1, seq: 2, driver: "nope", body: b"x", acked_below: 0 });
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 2, error: CallError::UnknownDriver }]);
    let big = vec![0u8; MAX_BODY + 1];
    let acts = sim.call(C1, 3, &big);
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 3, error: CallError::TooLarge }]);
    let acts = sim.ev(Event::Hello { conn: C2, resume: Some(ClientId(999)) });
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Failed { seq: 0, error: CallError::NoSession }]);
    let acts = sim.reply(STORAGE, c, 1, None, b"r");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Reply { seq: 1, body: b"r".to_vec() }]);
}

#[test]
fn out_of_order_reply_kills_the_instance_and_replays() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"a");
    sim.call(C1, 2, b"b");
    let acts = sim.reply(STORAGE, c, 2, None, b"wrong");
    assert!(acts.iter().any(|a| matches!(a, Action::Kill { signal: KillSignal::Kill, .. })));
    assert!(client_msgs(&acts, C1).is_empty());
    sim.crash(STORAGE, ExitStatus::Signal(9));
    assert!(sim.state(STORAGE).last_failure.unwrap().contains("protocol error"));
    assert_eq!(requests_sent(&sim.ready(STORAGE)), [1, 2]);
}

#[test]
fn operator_stop_then_restart_keeps_nothing_silent() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    sim.hello(C1, None);
    sim.call(C1, 1, b"a");
    let (resp, acts) = sim.sup.control(sim.now, &ControlRequest::Stop { driver: "storage_driver".into() });
    assert!(matches!(resp, ControlResponse::Done(_)));
    assert!(acts.contains(&Action::Kill { driver: STORAGE, generation: Generation(1), signal: KillSignal::Term }));
    let acts = sim.crash(STORAGE, ExitStatus::Signal(15));
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 1, error: CallError::DriverFailed }]);
    assert_eq!(sim.state(STORAGE).state, DriverState::Stopped);
    let (_, acts) = sim.sup.control(sim.now, &ControlRequest::Restart { driver: "storage_driver".into() });
    assert_eq!(requests_spawned(&acts), [Generation(2)]);
}

#[test]
fn stop_escalates_to_sigkill_after_the_timeout() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    sim.sup.control(sim.now, &ControlRequest::Stop { driver: "storage_driver".into() });
    let t = DriverConfig::new("x", "/x").shutdown_timeout.0;
    assert!(!sim.at(t - 1).iter().any(|a| matches!(a, Action::Kill { .. })));
    assert!(sim.at(t).contains(&Action::Kill { driver: STORAGE, generation: Generation(1), signal: KillSignal::Kill }));
}

#[test]
fn shutdown_stops_in_reverse_start_order_then_exits() {
    let mut sim = Sim::new(vec![driver("storage_driver"), driver("net_driver")]);
    sim.start();
    let acts = sim.ev(Event::Shutdown);
    let kills: Vec<_> = acts.iter().filter(|a| matches!(a, Action::Kill { .. })).collect();
    assert_eq!(kills, [&Action::Kill { driver: NET, generation: Generation(1), signal: KillSignal::Term }]);
    let acts = sim.crash(NET, ExitStatus::Code(0));
    assert!(acts.contains(&Action::Kill { driver: STORAGE, generation: Generation(1), signal: KillSignal::Term }));
    assert!(!acts.contains(&Action::Exit));
    let acts = sim.crash(STORAGE, ExitStatus::Code(0));
    assert!(acts.contains(&Action::Exit));
    assert_eq!(sim.state(NET).state, DriverState::Stopped);
    assert!(sim.at(10).is_empty(), "Exit is said once");
}

#[test]
fn inject_goes_to_the_current_instance() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let plan: FaultPlan = "after-effect:2:segv".parse().unwrap();
    let (resp, acts) = sim.sup.control(sim.now, &ControlRequest::Inject { driver: "storage_driver".into(), plan });
    assert!(matches!(resp, ControlResponse::Done(_)));
    assert_eq!(acts, [Action::ToDriver { driver: STORAGE, generation: Generation(1), msg: DriverMsg::Inject(plan) }]);
}

#[test]
fn dump_queue_lists_pending_requests_oldest_first() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    for s in 1..=3 {
        sim.call(C1, s, b"xyz");
    }
    sim.now = Millis(250);
    let (resp, _) = sim.sup.control(sim.now, &ControlRequest::DumpQueue { driver: "storage_driver".into() });
    let ControlResponse::Queue(rows) = resp else { panic!("{resp:?}") };
    let view: Vec<_> = rows.iter().map(|r| (r.id.seq, r.in_flight, r.age_ms, r.body_len)).collect();
    assert_eq!(view, [(1, true, 250, 3), (2, true, 250, 3), (3, false, 250, 3)]);
    assert!(rows.iter().all(|r| r.id.client == c));
}

#[test]
fn spawn_failure_counts_as_a_fault_and_ends_in_quarantine() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    for _ in 0..40 {
        let acts = if sim.sup.current(STORAGE).is_none() && sim.state(STORAGE).state == DriverState::Stopped {
            sim.sup.handle(sim.now, Event::Start)
        } else {
            let t = sim.sup.next_deadline().map_or(sim.now.0, |d| d.0);
            sim.now = Millis(t);
            sim.sup.handle(sim.now, Event::Tick)
        };
        let mut acts = std::collections::VecDeque::from(acts);
        while let Some(a) = acts.pop_front() {
            if let Action::Spawn { driver, generation } = a {
                let error = "/bin/nope: not found".into();
                acts.extend(sim.sup.handle(sim.now, Event::SpawnFailed { driver, generation, error }));
            }
        }
        if sim.state(STORAGE).state == DriverState::Quarantined {
            break;
        }
    }
    let st = sim.state(STORAGE);
    assert_eq!(st.state, DriverState::Quarantined);
    assert!(st.last_failure.unwrap().contains("/bin/nope"));
}

#[test]
fn session_table_is_bounded_and_evicts_detached_sessions() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    let first = sim.hello(ConnId(10), None);
    sim.ev(Event::ClientGone { conn: ConnId(10) });
    for i in 11..14 {
        sim.hello(ConnId(i), None);
    }
    // Table full (4): the detached one is evicted for a newcomer.
    sim.hello(ConnId(20), None);
    let acts = sim.ev(Event::Hello { conn: ConnId(21), resume: Some(first) });
    assert_eq!(client_msgs(&acts, ConnId(21)), [ClientMsg::Failed { seq: 0, error: CallError::NoSession }]);
    // All attached: a newcomer is told the table is full (not Busy, which
    // means a driver's queue is full).
    sim.ev(Event::ClientConnected { conn: ConnId(22) });
    let acts = sim.ev(Event::Hello { conn: ConnId(22), resume: None });
    assert_eq!(client_msgs(&acts, ConnId(22)), [ClientMsg::Failed { seq: 0, error: CallError::SessionsFull }]);
}

#[test]
fn a_killed_instance_sets_no_deadline_while_its_exit_is_pending() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let (_, acts) = sim.sup.control(sim.now, &ControlRequest::Restart { driver: "storage_driver".into() });
    assert!(acts.iter().any(|a| matches!(a, Action::Kill { signal: KillSignal::Kill, .. })));
    // Long past the next ping: nothing is due until the exit arrives.
    sim.now = Millis(60_000);
    assert_eq!(sim.sup.next_deadline(), None);
    assert!(sim.at(60_000).is_empty());
    let acts = sim.crash(STORAGE, ExitStatus::Signal(9));
    assert_eq!(requests_spawned(&acts), [Generation(2)]);
    assert_eq!(sim.state(STORAGE).restarts, 1);
    assert_eq!(sim.state(STORAGE).last_failure, None, "an operator restart is not a failure");
}

mod model {
    //! Random interleavings of calls, retries, reconnects, replies, stale
    //! frames, crashes and time, checked against the exactly-once rules.
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet, VecDeque};

    #[derive(Debug, Clone)]
    enum Op {
        Call,
        Retry(u8),
        Reply,
        StaleReply,
        Crash,
        Ready,
        Advance(u16),
        Reconnect,
        /// The next checkpoint writes fail.
        DiskFails(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Call),
            1 => any::<u8>().prop_map(Op::Retry),
            4 => Just(Op::Reply),
            1 => Just(Op::StaleReply),
            1 => Just(Op::Crash),
            2 => Just(Op::Ready),
            1 => (0u16..200).prop_map(Op::Advance),
            1 => Just(Op::Reconnect),
            1 => (1u8..4).prop_map(Op::DiskFails),
        ]
    }

    /// What the test observes from outside the core.
    #[derive(Default)]
    struct World {
        /// Requests the current instance was sent and has not answered.
        inbox: VecDeque<RequestId>,
        /// Requests whose reply reached the supervisor (in any generation).
        replied: BTreeSet<RequestId>,
        /// Reply bodies each seq was answered with.
        answers: BTreeMap<u64, BTreeSet<Vec<u8>>>,
        /// Order in which the driver committed each state (its reply body).
        commits: BTreeMap<Vec<u8>, usize>,
        /// Seqs answered Busy (not accepted).
        busy: BTreeSet<u64>,
        /// Requests forwarded, per generation.
        forwarded: BTreeMap<u32, BTreeSet<RequestId>>,
    }

    impl World {
        /// Checks that every reply carrying a commit left only once that
        /// commit (or a newer one) was durable.
        fn durable(&self, acts: &[Action], written: &[Vec<u8>]) -> Result<(), TestCaseError> {
            let newest = written.iter().filter_map(|w| self.commits.get(w)).max();
            for a in acts {
                if let Action::ToClient { msg: ClientMsg::Reply { seq, body }, .. } = a
                    && let Some(k) = self.commits.get(body)
                {
                    prop_assert!(newest.is_some_and(|n| n >= k), "reply to {seq} left before its commit was durable");
                }
            }
            Ok(())
        }

        fn observe(&mut self, acts: &[Action]) -> Result<(), TestCaseError> {
            for a in acts {
                match a {
                    Action::ToDriver { generation, msg: DriverMsg::Request { id, .. }, .. } => {
                        prop_assert!(!self.replied.contains(id), "{id} forwarded again after its reply");
                        // The busy barrier keeps a Busy retry ahead of every
                        // later seq, so each instance sees seq order, once.
                        let sent = self.forwarded.entry(generation.0).or_default();
                        prop_assert!(
                            sent.last().is_none_or(|l| l < id),
                            "{id} forwarded to {generation} after {sent:?}"
                        );
                        prop_assert!(sent.insert(*id), "{id} forwarded twice to {generation}");
                        self.inbox.push_back(*id);
                    }
                    Action::ToClient { msg: ClientMsg::Reply { seq, body }, .. } => {
                        self.answers.entry(*seq).or_default().insert(body.clone());
                        self.busy.remove(seq);
                    }
                    Action::ToClient { msg: ClientMsg::Failed { seq, error: CallError::Busy }, .. } => {
                        self.busy.insert(*seq);
                    }
                    // The dedup table is bounded (8 per session here): an
                    // old retry may expire, but only once it was answered.
                    Action::ToClient { msg: ClientMsg::Failed { seq, error: CallError::Expired }, .. } => {
                        prop_assert!(self.answers.contains_key(seq), "unanswered seq {seq} expired");
                    }
                    Action::ToClient { msg: ClientMsg::Failed { seq, error }, .. } => {
                        prop_assert!(false, "seq {seq} failed with {error:?}");
                    }
                    _ => {}
                }
            }
            Ok(())
        }
    }

    fn run(ops: Vec<Op>, window: usize) -> Result<(), TestCaseError> {
        let mut sim = Sim::with(|d| {
            d.window = window;
            d.queue_depth = 6;
            d.poison_after = 1_000;
            d.persist_checkpoint = true;
            d.fault_policy =
                FaultPolicyConfig::Restart(BackoffConfig { max_restarts: 64, base: Millis(1), ..backoff() });
        });
        let mut w = World::default();
        let acts = sim.ev(Event::Start);
        w.observe(&acts)?;
        let mut conn = ConnId(1);
        let client = sim.hello(conn, None);
        let mut next_seq = 1u64;
        let body_of = |id: RequestId, g: Generation| format!("{}@{}", id.seq, g.0).into_bytes();
        for op in ops {
            let acts = match op {
                Op::Call => {
                    next_seq += 1;
                    sim.ev(Event::Call {
                        conn,
                        seq: next_seq - 1,
                        driver: "storage_driver",
                        body: b"x",
                        acked_below: 0,
                    })
                }
                Op::Retry(k) if next_seq > 1 => {
                    let seq = 1 + u64::from(k) % (next_seq - 1);
                    sim.ev(Event::Call { conn, seq, driver: "storage_driver", body: b"x", acked_below: 0 })
                }
                Op::Reply => match (sim.sup.current(STORAGE), w.inbox.front().copied()) {
                    (Some(g), Some(id)) if sim.state(STORAGE).state == DriverState::Running => {
                        w.inbox.pop_front();
                        w.replied.insert(id);
                        let body = body_of(id, g);
                        let n = w.commits.len();
                        w.commits.insert(body.clone(), n);
                        let msg = FromDriver::Reply { id, commit: Some(&body), body: &body };
                        sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: g, msg })
                    }
                    _ => Vec::new(),
                },
                Op::StaleReply => match (sim.sup.current(STORAGE), w.inbox.front().copied()) {
                    (Some(g), Some(id)) if g.0 > 1 => {
                        let old = Generation(g.0 - 1);
                        let msg = FromDriver::Reply { id, commit: None, body: b"stale" };
                        let acts = sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: old, msg });
                        prop_assert!(acts.is_empty(), "a stale frame had effects: {acts:?}");
                        acts
                    }
                    _ => Vec::new(),
                },
                Op::Crash => match sim.sup.current(STORAGE) {
                    Some(g) => {
                        w.inbox.clear();
                        sim.ev(Event::Exited { driver: STORAGE, generation: g, status: SEGV })
                    }
                    None => Vec::new(),
                },
                Op::Ready => match sim.sup.current(STORAGE) {
                    Some(g) if sim.state(STORAGE).state == DriverState::Starting => {
                        sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: g, msg: FromDriver::Ready })
                    }
                    _ => Vec::new(),
                },
                Op::Advance(ms) => {
                    // Answer pings so heartbeats never interfere.
                    let t = sim.now.0 + u64::from(ms);
                    let acts = sim.at(t);
                    for a in &acts {
                        if let Action::ToDriver { msg: DriverMsg::Ping { nonce }, generation, .. } = a {
                            let msg = FromDriver::Pong { nonce: *nonce };
                            sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: *generation, msg });
                        }
                    }
                    acts
                }
                Op::Reconnect => {
                    sim.ev(Event::ClientGone { conn });
                    conn = ConnId(conn.0 + 1);
                    prop_assert_eq!(sim.hello(conn, Some(client)), client);
                    Vec::new()
                }
                Op::DiskFails(k) => {
                    let fail = PersistOutcome::Failed { path: "/s/x.ckpt".into(), error: "EIO".into() };
                    sim.disk.extend((0..k).map(|_| fail.clone()));
                    Vec::new()
                }
                Op::Retry(_) => Vec::new(),
            };
            w.durable(&acts, &sim.written)?;
            w.observe(&acts)?;
        }
        // Quiesce: bring the driver up and answer everything.
        for _ in 0..10_000 {
            let st = sim.state(STORAGE);
            let acts = match st.state {
                DriverState::Starting => {
                    let g = sim.sup.current(STORAGE).unwrap();
                    sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: g, msg: FromDriver::Ready })
                }
                DriverState::BackingOff => {
                    let t = sim.now.0 + st.backoff_ms.unwrap();
                    sim.at(t)
                }
                DriverState::Running if !w.inbox.is_empty() => {
                    let (g, id) = (sim.sup.current(STORAGE).unwrap(), w.inbox.pop_front().unwrap());
                    w.replied.insert(id);
                    let body = body_of(id, g);
                    sim.ev(Event::FromDriver {
                        driver: STORAGE,
                        frame_gen: g,
                        msg: FromDriver::Reply { id, commit: None, body: &body },
                    })
                }
                // Held replies wait for the checkpoint's retry.
                _ if st.held_replies > 0 => {
                    let t = sim.sup.next_deadline().expect("a held reply has a retry deadline");
                    let acts = sim.at(t.0);
                    for a in &acts {
                        if let Action::ToDriver { msg: DriverMsg::Ping { nonce }, generation, .. } = a {
                            let msg = FromDriver::Pong { nonce: *nonce };
                            sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: *generation, msg });
                        }
                    }
                    acts
                }
                _ => break,
            };
            w.durable(&acts, &sim.written)?;
            w.observe(&acts)?;
        }
        prop_assert_eq!(sim.state(STORAGE).queue_depth, 0);
        prop_assert_eq!(sim.state(STORAGE).held_replies, 0);
        for seq in 1..next_seq {
            if w.busy.contains(&seq) {
                continue; // never accepted
            }
            let bodies = w.answers.get(&seq);
            prop_assert!(bodies.is_some(), "accepted seq {seq} was never answered");
            prop_assert_eq!(bodies.unwrap().len(), 1, "seq {} answered with different results", seq);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn random_interleavings_keep_exactly_once(ops in proptest::collection::vec(op(), 0..80), window in 1usize..4) {
            run(ops, window)?;
        }
    }
}

/// `(Exit actions, "all drivers stopped" lines)` seen so far.
fn exits(sim: &Sim) -> (usize, usize) {
    let exit = sim.out.iter().filter(|a| **a == Action::Exit).count();
    let said = sim.out.iter().filter(|a| matches!(a, Action::Say(s) if s == "all drivers stopped")).count();
    (exit, said)
}

/// After `Exit`, the daemon still finishes its loop iteration (other ready
/// fds, then a `Tick`), and a second SIGTERM may arrive: none of that may
/// say "all drivers stopped" again.
fn after_exit_nothing_repeats(sim: &mut Sim) {
    assert_eq!(exits(sim), (1, 1), "{:#?}", sim.out);
    let t = sim.now.0;
    sim.at(t);
    sim.ev(Event::Shutdown);
    sim.at(t + 60_000);
    assert_eq!(exits(sim), (1, 1), "{:#?}", sim.out);
}

#[test]
fn shutdown_with_a_quarantined_and_a_backing_off_driver_exits_once() {
    let mut quarantined = driver("b");
    quarantined.fault_policy = FaultPolicyConfig::Stop;
    let mut sim = Sim::new(vec![driver("a"), quarantined, driver("c")]);
    sim.start();
    let (a, b, c) = (DriverId(0), DriverId(1), DriverId(2));
    sim.crash(b, SEGV);
    assert_eq!(sim.state(b).state, DriverState::Quarantined);
    sim.crash(c, SEGV); // immediate restart
    sim.ready(c);
    sim.crash(c, SEGV); // now backing off
    assert_eq!(sim.state(c).state, DriverState::BackingOff);
    let acts = sim.ev(Event::Shutdown);
    // c and b need no stopping; a is asked to stop.
    assert!(acts.contains(&Action::Kill { driver: a, generation: Generation(1), signal: KillSignal::Term }));
    assert_eq!(exits(&sim), (0, 0));
    sim.at(sim.now.0 + 10);
    sim.crash(a, ExitStatus::Code(0));
    assert_eq!(sim.state(a).state, DriverState::Stopped);
    assert_eq!(sim.state(b).state, DriverState::Quarantined, "stays visible as quarantined");
    assert_eq!(sim.state(c).state, DriverState::Stopped);
    after_exit_nothing_repeats(&mut sim);
}

#[test]
fn shutdown_with_hung_starting_and_stopping_drivers_exits_once_after_the_last_exit() {
    let mut sim = Sim::new(vec![driver("a"), driver("b"), driver("c")]);
    sim.ev(Event::Start);
    let (a, b, c) = (DriverId(0), DriverId(1), DriverId(2));
    sim.ready(a);
    sim.ready(c);
    // c: being stopped by the operator; b: still starting; a: hung (killed).
    sim.sup.control(sim.now, &ControlRequest::Stop { driver: "c".into() });
    for t in [1_000, 2_000, 3_000, 4_000] {
        sim.at(t);
    }
    assert_eq!(sim.state(a).state, DriverState::Hung);
    assert_eq!(sim.state(b).state, DriverState::Starting);
    assert_eq!(sim.state(c).state, DriverState::Stopping);
    sim.ev(Event::Shutdown);
    // Exits arrive in an order unrelated to the stop order.
    sim.crash(a, ExitStatus::Signal(9));
    assert_eq!(exits(&sim), (0, 0), "c and b are still alive");
    sim.crash(c, ExitStatus::Code(0));
    assert_eq!(exits(&sim), (0, 0), "b is still alive");
    sim.crash(b, ExitStatus::Signal(15));
    for d in [a, b, c] {
        assert_eq!(sim.state(d).state, DriverState::Stopped, "{}", sim.state(d).name);
    }
    after_exit_nothing_repeats(&mut sim);
}

#[test]
fn shutdown_with_only_quarantined_drivers_exits_at_once_and_once() {
    let mut q = driver("a");
    q.fault_policy = FaultPolicyConfig::Stop;
    let mut sim = Sim::new(vec![q.clone(), DriverConfig { name: "b".into(), ..q }]);
    sim.start();
    sim.crash(DriverId(0), SEGV);
    sim.crash(DriverId(1), SEGV);
    sim.ev(Event::Shutdown);
    after_exit_nothing_repeats(&mut sim);
}

fn disk_error(error: &str) -> PersistOutcome {
    PersistOutcome::Failed { path: "/state/storage_driver.ckpt".into(), error: error.into() }
}

const ENOSPC: &str = "/state/storage_driver.ckpt.tmp: No space left on device (os error 28)";

fn persists(acts: &[Action]) -> Vec<Vec<u8>> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Persist { checkpoint, .. } => Some(checkpoint.clone()),
            _ => None,
        })
        .collect()
}

fn count_said(sim: &Sim, prefix: &str) -> usize {
    sim.out.iter().filter(|a| matches!(a, Action::Say(s) if s.starts_with(prefix))).count()
}

#[test]
fn persist_failure_holds_replies_until_the_checkpoint_is_durable() {
    let mut sim = Sim::with(|d| d.persist_checkpoint = true);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"append");
    sim.call(C1, 2, b"read");
    sim.disk.extend([disk_error(ENOSPC), disk_error(ENOSPC)]);
    let acts = sim.reply(STORAGE, c, 1, Some(b"s1"), b"r1");
    assert_eq!(persists(&acts), [b"s1".to_vec()]);
    assert!(client_msgs(&acts, C1).is_empty(), "a reply left before its state was durable: {acts:?}");
    assert!(sim.said(&format!(
        "cannot persist the checkpoint of storage_driver to /state/storage_driver.ckpt: {ENOSPC} (replies held, retrying)"
    )));
    // The commit is applied in memory all the same (a new instance starts from it).
    assert_eq!(sim.sup.checkpoint(STORAGE), Some(&b"s1"[..]));
    // A later reply that commits nothing waits behind it, and waits for the
    // retry's deadline rather than writing again at once.
    let acts = sim.reply(STORAGE, c, 2, None, b"r2");
    assert!(client_msgs(&acts, C1).is_empty() && persists(&acts).is_empty(), "{acts:?}");
    let st = sim.state(STORAGE);
    assert_eq!(st.held_replies, 2);
    assert!(st.checkpoint_error.as_deref().is_some_and(|e| e.contains("No space left on device")), "{st:?}");
    assert_eq!(st.state, DriverState::Running, "the driver itself is fine");
    // Retried at +10 ms (fails again, said once), then at +20 ms more.
    assert_eq!(sim.sup.next_deadline(), Some(Millis(10)));
    assert!(persists(&sim.at(9)).is_empty());
    assert_eq!(persists(&sim.at(10)), [b"s1".to_vec()]);
    assert_eq!(count_said(&sim, "cannot persist the checkpoint"), 1);
    assert_eq!(sim.sup.next_deadline(), Some(Millis(30)));
    let acts = sim.at(30);
    assert_eq!(
        client_msgs(&acts, C1),
        [ClientMsg::Reply { seq: 1, body: b"r1".to_vec() }, ClientMsg::Reply { seq: 2, body: b"r2".to_vec() }]
    );
    assert!(sim.said(
        "checkpoint of storage_driver persisted to /state/storage_driver.ckpt after 2 failed attempts over 30ms; \
         releasing 2 held replies"
    ));
    assert_eq!(sim.written, [b"s1".to_vec()]);
    let st = sim.state(STORAGE);
    assert_eq!((st.held_replies, st.checkpoint_error), (0, None));
    assert_eq!(sim.sup.next_deadline(), Some(Millis(1_000)), "only the heartbeat is due");
    // Healthy again: the next reply goes out with its write, at once.
    sim.call(C1, 3, b"append");
    let acts = sim.reply(STORAGE, c, 3, Some(b"s3"), b"r3");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Reply { seq: 3, body: b"r3".to_vec() }]);
    assert_eq!(sim.written, [b"s1".to_vec(), b"s3".to_vec()]);
}

#[test]
fn commits_made_while_persisting_fails_are_coalesced_into_the_retry() {
    let mut sim = Sim::with(|d| d.persist_checkpoint = true);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"a");
    sim.call(C1, 2, b"b");
    sim.disk.push_back(disk_error(ENOSPC));
    sim.reply(STORAGE, c, 1, Some(b"s1"), b"r1");
    let acts = sim.reply(STORAGE, c, 2, Some(b"s2"), b"r2");
    assert!(persists(&acts).is_empty(), "no write outside the retry schedule: {acts:?}");
    let acts = sim.at(10);
    assert_eq!(persists(&acts), [b"s2".to_vec()], "the retry writes the newest state only");
    assert_eq!(client_msgs(&acts, C1).len(), 2);
    assert_eq!(sim.written, [b"s2".to_vec()]);
}

#[test]
fn persist_retries_back_off_to_a_cap_and_never_spin() {
    let mut sim = Sim::with(|d| {
        d.persist_checkpoint = true;
        d.heartbeat_interval = Millis(3_600_000);
    });
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"a");
    // The write with the reply, then 12 retries, all fail.
    sim.disk.extend((0..13).map(|_| disk_error(ENOSPC)));
    sim.reply(STORAGE, c, 1, Some(b"s1"), b"r1");
    let mut delays = Vec::new();
    for _ in 0..12 {
        let due = sim.sup.next_deadline().expect("a retry is scheduled");
        delays.push(due.0 - sim.now.0);
        // Nothing happens early, however often the daemon wakes up.
        assert!(persists(&sim.at(due.0 - 1)).is_empty());
        assert_eq!(persists(&sim.at(due.0)).len(), 1, "one write per retry");
    }
    assert_eq!(delays[..9], [10, 20, 40, 80, 160, 320, 640, 1_000, 1_000]);
    assert_eq!(delays[9..], [1_000, 1_000, 1_000]);
    assert_eq!(count_said(&sim, "cannot persist the checkpoint"), 1, "one line per episode");
    assert!(!client_msgs(&sim.out, C1).iter().any(|m| matches!(m, ClientMsg::Reply { .. })));
    assert!(sim.state(STORAGE).checkpoint_error.unwrap().contains("(13 attempts over"));
    // The disk recovers: the reply leaves on the next retry.
    let due = sim.sup.next_deadline().unwrap();
    assert_eq!(client_msgs(&sim.at(due.0), C1), [ClientMsg::Reply { seq: 1, body: b"r1".to_vec() }]);
}

#[test]
fn held_replies_survive_a_crash_and_a_reconnect_and_run_once() {
    let mut sim = Sim::with(|d| d.persist_checkpoint = true);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"append");
    sim.disk.push_back(disk_error(ENOSPC));
    sim.reply(STORAGE, c, 1, Some(b"s1"), b"r1");
    // The driver crashes: the new instance starts from the committed state,
    // and the held request is not replayed (it has its reply).
    let acts = sim.crash(STORAGE, SEGV);
    assert!(acts.iter().any(|a| matches!(a,
        Action::ToDriver { msg: DriverMsg::Init { checkpoint: Some(c), .. }, .. } if c == b"s1")));
    assert!(requests_sent(&sim.ready(STORAGE)).is_empty());
    // The client reconnects and retries: attached, not executed again.
    sim.ev(Event::ClientGone { conn: C1 });
    sim.hello(C2, Some(c));
    let acts = sim.call(C2, 1, b"append");
    assert!(acts.is_empty(), "{acts:?}");
    let acts = sim.at(10);
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Reply { seq: 1, body: b"r1".to_vec() }]);
    // And once released, a retry is served from the dedup table.
    let acts = sim.call(C2, 1, b"append");
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Reply { seq: 1, body: b"r1".to_vec() }]);
    assert!(requests_sent(&acts).is_empty());
}

#[test]
fn shutdown_while_persisting_fails_withholds_the_replies_and_says_so() {
    let mut sim = Sim::with(|d| d.persist_checkpoint = true);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"append");
    sim.disk.extend((0..4).map(|_| disk_error(ENOSPC)));
    sim.reply(STORAGE, c, 1, Some(b"s1"), b"r1");
    sim.ev(Event::Shutdown);
    sim.crash(STORAGE, ExitStatus::Code(0));
    assert_eq!(exits(&sim), (1, 1));
    assert_eq!(count_said(&sim, "exiting with 1 replies of storage_driver withheld"), 1, "{:#?}", sim.out);
    let replies = client_msgs(&sim.out, C1).into_iter().filter(|m| matches!(m, ClientMsg::Reply { .. })).count();
    assert_eq!(replies, 0, "no reply without a durable checkpoint");
}

#[test]
fn a_driver_without_persistence_never_holds_replies() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"a");
    sim.disk.push_back(disk_error(ENOSPC));
    let acts = sim.reply(STORAGE, c, 1, Some(b"s1"), b"r1");
    assert!(persists(&acts).is_empty());
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Reply { seq: 1, body: b"r1".to_vec() }]);
}

#[test]
fn busy_barrier_keeps_later_calls_behind_a_refused_one() {
    let mut sim = Sim::new(vec![driver("storage_driver"), driver("net_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    let mut sent = Vec::new();
    for s in 1..=4 {
        sent.extend(requests_sent(&sim.call(C1, s, b"x")));
    }
    // Queue full (depth 4): 5 is refused.
    assert_eq!(client_msgs(&sim.call(C1, 5, b"x"), C1), [ClientMsg::Failed { seq: 5, error: CallError::Busy }]);
    sent.extend(requests_sent(&sim.reply(STORAGE, c, 1, None, b"r1")));
    sent.extend(requests_sent(&sim.reply(STORAGE, c, 2, None, b"r2")));
    // There is room now, but 6 must not overtake 5, which the client resends later.
    let acts = sim.call(C1, 6, b"x");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 6, error: CallError::Busy }]);
    assert!(sim.sup.trace().any(|(_, t)| *t == Trace::BusyBarrier { id: RequestId { client: c, seq: 6 }, behind: 5 }));
    // Another session, and another driver of this session, are not held back.
    let other = sim.hello(C2, None);
    assert!(client_msgs(&sim.call(C2, 1, b"y"), C2).is_empty(), "accepted");
    let acts = sim.ev(Event::Call { conn: C1, seq: 7, driver: "net_driver", body: b"z", acked_below: 0 });
    assert_eq!(requests_sent(&acts), [7]);
    // The resends, in seq order: 5 is accepted, then 6 (queue full again: Busy,
    // and then accepted once there is room).
    assert!(client_msgs(&sim.call(C1, 5, b"x"), C1).is_empty());
    assert_eq!(client_msgs(&sim.call(C1, 6, b"x"), C1), [ClientMsg::Failed { seq: 6, error: CallError::Busy }]);
    sent.extend(requests_sent(&sim.reply(STORAGE, c, 3, None, b"r3")));
    assert!(client_msgs(&sim.call(C1, 6, b"x"), C1).is_empty());
    for (client, seq) in [(c, 4), (other, 1), (c, 5)] {
        sent.extend(requests_sent(&sim.reply(STORAGE, client, seq, None, b"r")));
    }
    let mine: Vec<u64> = sim
        .out
        .iter()
        .filter_map(|a| match a {
            Action::ToDriver { driver: STORAGE, msg: DriverMsg::Request { id, .. }, .. } if id.client == c => {
                Some(id.seq)
            }
            _ => None,
        })
        .collect();
    assert_eq!(mine, [1, 2, 3, 4, 5, 6], "the driver sees the session's calls in seq order");
}

#[test]
fn a_definite_answer_or_acked_below_lifts_the_busy_barrier() {
    let mut sim = Sim::with(|d| d.queue_depth = 1);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"x");
    assert_eq!(client_msgs(&sim.call(C1, 2, b"x"), C1), [ClientMsg::Failed { seq: 2, error: CallError::Busy }]);
    sim.reply(STORAGE, c, 1, None, b"r1");
    // The client gave up on 2 (its acked_below passed it): 3 goes through.
    let acts = sim.ev(Event::Call { conn: C1, seq: 3, driver: "storage_driver", body: b"x", acked_below: 3 });
    assert_eq!(requests_sent(&acts), [3]);
    sim.reply(STORAGE, c, 3, None, b"r3");
    // A refused call answered definitely (too large) blocks nothing either.
    assert_eq!(client_msgs(&sim.call(C1, 4, b"x"), C1), []);
    assert_eq!(client_msgs(&sim.call(C1, 5, b"x"), C1), [ClientMsg::Failed { seq: 5, error: CallError::Busy }]);
    let big = vec![0u8; MAX_BODY + 1];
    sim.reply(STORAGE, c, 4, None, b"r4");
    assert_eq!(client_msgs(&sim.call(C1, 5, &big), C1), [ClientMsg::Failed { seq: 5, error: CallError::TooLarge }]);
    assert_eq!(requests_sent(&sim.call(C1, 6, b"x")), [6]);
}

mod busy_order {
    //! Several sessions pipeline into a tiny queue faster than the driver
    //! answers; Busy calls are resent in any order the client likes (the
    //! core must not rely on the library's seq-order resends). The driver
    //! must see each session's calls in seq order, every call must be
    //! answered exactly once, and nothing may be lost.
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Debug, Clone)]
    enum Op {
        /// Session k sends its next seq at once (pipelining).
        Submit(u8),
        /// Session k resends one of its Busy calls (picked by the u8).
        Resend(u8, u8),
        /// The driver answers its oldest request.
        Reply,
        /// The driver crashes (its unanswered calls are replayed).
        Crash,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u8>().prop_map(Op::Submit),
            3 => (any::<u8>(), any::<u8>()).prop_map(|(k, p)| Op::Resend(k, p)),
            3 => Just(Op::Reply),
            1 => Just(Op::Crash),
        ]
    }

    const SESSIONS: usize = 3;

    #[derive(Default)]
    struct ClientModel {
        next_seq: u64,
        /// Answered Busy, to be resent.
        busy: BTreeSet<u64>,
        /// Replies received, per seq.
        replies: BTreeMap<u64, u32>,
    }

    struct World {
        clients: Vec<(ConnId, ClientId, ClientModel)>,
        /// Requests the current instance has and has not answered.
        inbox: VecDeque<RequestId>,
        /// Per session: seqs in the order the driver first saw them.
        first_seen: BTreeMap<ClientId, Vec<u64>>,
        /// Per generation and session: seqs in the order forwarded.
        per_gen: BTreeMap<(u32, ClientId), Vec<u64>>,
    }

    impl World {
        fn observe(&mut self, acts: &[Action]) -> Result<(), TestCaseError> {
            for a in acts {
                match a {
                    Action::ToDriver { generation, msg: DriverMsg::Request { id, .. }, .. } => {
                        let g = self.per_gen.entry((generation.0, id.client)).or_default();
                        prop_assert!(g.last().is_none_or(|&l| l < id.seq), "{id} sent to {generation} after {g:?}");
                        g.push(id.seq);
                        let seen = self.first_seen.entry(id.client).or_default();
                        if !seen.contains(&id.seq) {
                            prop_assert!(
                                seen.last().is_none_or(|&l| l < id.seq),
                                "{id} reached the driver after {seen:?}"
                            );
                            seen.push(id.seq);
                        }
                        self.inbox.push_back(*id);
                    }
                    Action::ToClient { conn, msg } => {
                        let (_, _, m) = self.clients.iter_mut().find(|(c, _, _)| c == conn).expect("known conn");
                        match msg {
                            ClientMsg::Reply { seq, .. } => *m.replies.entry(*seq).or_default() += 1,
                            ClientMsg::Failed { seq, error: CallError::Busy } => {
                                m.busy.insert(*seq);
                            }
                            other => prop_assert!(false, "unexpected answer {other:?}"),
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        }
    }

    fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut sim = Sim::with(|d| {
            d.queue_depth = 2;
            d.window = 1;
            d.poison_after = 1_000;
            d.heartbeat_interval = Millis(3_600_000);
            d.fault_policy =
                FaultPolicyConfig::Restart(BackoffConfig { max_restarts: 64, base: Millis(1), ..backoff() });
        });
        sim.start();
        let mut w = World {
            clients: Vec::new(),
            inbox: VecDeque::new(),
            first_seen: BTreeMap::new(),
            per_gen: BTreeMap::new(),
        };
        for k in 0..SESSIONS {
            let conn = ConnId(k as u64 + 1);
            let client = sim.hello(conn, None);
            w.clients.push((conn, client, ClientModel { next_seq: 1, ..ClientModel::default() }));
        }
        let call = |sim: &mut Sim, conn, seq| sim.call(conn, seq, format!("{seq}").as_bytes());
        let reply = |sim: &mut Sim, w: &mut World| match w.inbox.pop_front() {
            Some(id) => {
                let g = sim.generation(STORAGE);
                let body = format!("r{}", id.seq).into_bytes();
                sim.ev(Event::FromDriver {
                    driver: STORAGE,
                    frame_gen: g,
                    msg: FromDriver::Reply { id, commit: None, body: &body },
                })
            }
            None => Vec::new(),
        };
        let bring_up = |sim: &mut Sim| {
            // Restart immediately or after the backoff, then Ready.
            if let Some(d) = sim.state(STORAGE).backoff_ms {
                let t = sim.now.0 + d;
                sim.at(t);
            }
            sim.ready(STORAGE)
        };
        for op in ops {
            let acts = match op {
                Op::Submit(k) => {
                    let (conn, _, m) = &mut w.clients[usize::from(k) % SESSIONS];
                    let (conn, seq) = (*conn, m.next_seq);
                    m.next_seq += 1;
                    call(&mut sim, conn, seq)
                }
                Op::Resend(k, pick) => {
                    let (conn, _, m) = &mut w.clients[usize::from(k) % SESSIONS];
                    match m.busy.iter().nth(usize::from(pick) % m.busy.len().max(1)).copied() {
                        Some(seq) => {
                            m.busy.remove(&seq);
                            let conn = *conn;
                            call(&mut sim, conn, seq)
                        }
                        None => Vec::new(),
                    }
                }
                Op::Reply => reply(&mut sim, &mut w),
                Op::Crash => {
                    w.inbox.clear();
                    let mut acts = sim.crash(STORAGE, SEGV);
                    w.observe(&acts)?;
                    acts = bring_up(&mut sim);
                    acts
                }
            };
            w.observe(&acts)?;
        }
        // Quiesce like the client library: answer everything, resend Busy
        // calls lowest seq first.
        for _ in 0..100_000 {
            let acts = if !w.inbox.is_empty() {
                reply(&mut sim, &mut w)
            } else if let Some(k) = (0..SESSIONS).find(|&k| !w.clients[k].2.busy.is_empty()) {
                let (conn, _, m) = &mut w.clients[k];
                let seq = m.busy.pop_first().expect("non-empty");
                let conn = *conn;
                call(&mut sim, conn, seq)
            } else {
                break;
            };
            w.observe(&acts)?;
        }
        prop_assert_eq!(sim.state(STORAGE).queue_depth, 0);
        for (_, client, m) in &w.clients {
            prop_assert!(m.busy.is_empty());
            let submitted: Vec<u64> = (1..m.next_seq).collect();
            // Nothing lost, nothing answered twice.
            prop_assert_eq!(m.replies.keys().copied().collect::<Vec<_>>(), submitted.clone());
            prop_assert!(m.replies.values().all(|&n| n == 1), "{:?}", m.replies);
            // The driver saw every call, in seq order (checked as it went).
            prop_assert_eq!(w.first_seen.get(client).cloned().unwrap_or_default(), submitted);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn pipelined_sessions_reach_the_driver_in_seq_order_under_backpressure(
            ops in proptest::collection::vec(op(), 0..120)
        ) {
            run(ops)?;
        }
    }
}

/// With the deadline cache, an event visits only the drivers it concerns
/// plus those whose deadline has passed; this checks nothing is missed or
/// done early with many drivers (and every event of every test checks the
/// cache against a full scan).
#[test]
fn heartbeats_of_many_drivers_fall_due_each_at_its_own_time() {
    let names: Vec<String> = (0..128).map(|i| format!("d{i:03}")).collect();
    let mut sim = Sim::new(names.iter().map(|n| driver(n)).collect());
    sim.ev(Event::Start);
    assert_eq!(sim.sup.next_deadline(), Some(Millis(5_000)), "every init timeout");
    for i in 0..128 {
        sim.now = Millis(3 * i as u64);
        sim.ready(DriverId(i));
    }
    assert_eq!(sim.sup.next_deadline(), Some(Millis(1_000)));
    let pinged = |acts: &[Action]| -> Vec<DriverId> {
        acts.iter()
            .filter_map(|a| match a {
                Action::ToDriver { driver, msg: DriverMsg::Ping { .. }, .. } => Some(*driver),
                _ => None,
            })
            .collect()
    };
    // Traffic to one driver just before the first heartbeat pings no one.
    let c = sim.hello(C1, None);
    sim.now = Millis(999);
    let acts = sim.ev(Event::Call { conn: C1, seq: 1, driver: "d127", body: b"x", acked_below: 0 });
    assert_eq!(requests_sent(&acts), [1]);
    assert!(pinged(&acts).is_empty());
    for i in 0..128 {
        let t = 1_000 + 3 * i as u64;
        assert!(pinged(&sim.at(t - 1)).is_empty(), "nothing due before {t}");
        assert_eq!(pinged(&sim.at(t)), [DriverId(i)]);
        let next = if i == 127 { 2_000 } else { t + 3 };
        assert_eq!(sim.sup.next_deadline(), Some(Millis(next)));
    }
    // A reply and a crash of the last driver move only its own deadline.
    let g = sim.generation(DriverId(127));
    let msg = FromDriver::Reply { id: RequestId { client: c, seq: 1 }, commit: None, body: b"r" };
    sim.ev(Event::FromDriver { driver: DriverId(127), frame_gen: g, msg });
    sim.crash(DriverId(127), ExitStatus::Signal(11));
    assert_eq!(sim.sup.next_deadline(), Some(Millis(2_000)));
    assert_eq!(sim.state(DriverId(127)).state, DriverState::Starting);
}

// ---- sessions under budgets ----

fn with_limits(f: impl FnOnce(&mut crate::limits::Limits)) -> Sim {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    let mut l = crate::limits::Limits::default();
    f(&mut l);
    sim.sup = Supervisor::new(vec![(driver("storage_driver"), None)], 42, 4, 8).with_limits(l);
    sim
}

#[test]
fn a_second_hello_on_a_connection_detaches_its_first_session() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.ev(Event::ClientConnected { conn: C1 });
    // 256 Hellos on one connection, then it closes: the table (4) must not
    // be left full of sessions attached to a connection that moved on.
    for _ in 0..256 {
        let acts = sim.ev(Event::Hello { conn: C1, resume: None });
        assert!(matches!(client_msgs(&acts, C1).as_slice(), [ClientMsg::Welcome { .. }]), "{acts:?}");
    }
    sim.ev(Event::ClientGone { conn: C1 });
    for i in 0..4 {
        sim.hello(ConnId(100 + i), None);
    }
    assert_eq!(sim.sup.session_count(), 4);
}

#[test]
fn a_second_hello_resuming_the_same_session_keeps_it() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    let c = sim.hello(C1, None);
    let acts = sim.ev(Event::Hello { conn: C1, resume: Some(c) });
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Welcome { client: c }]);
    assert!(sim.sup.sessions[&c].conn == Some(C1));
}

#[test]
fn a_detached_session_expires_after_the_idle_timeout_even_when_nothing_else_happens() {
    let mut sim = with_limits(|l| l.session_idle_ms = 1_000);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"w");
    sim.reply(STORAGE, c, 1, None, b"ok");
    assert!(sim.sup.cached_reply_bytes() > 0);
    sim.now = Millis(500);
    sim.ev(Event::ClientGone { conn: C1 });
    // The daemon would sleep until the next deadline: the expiry is one.
    assert!(sim.sup.next_deadline().is_some_and(|t| t <= Millis(1_500)), "{:?}", sim.sup.next_deadline());
    sim.at(1_499);
    assert_eq!(sim.sup.session_count(), 1);
    sim.at(1_500);
    assert_eq!(sim.sup.session_count(), 0);
    assert_eq!(sim.sup.cached_reply_bytes(), 0, "its cached replies are freed");
    assert!(sim.said("forgot 1 client session(s) idle for 1000ms without a connection"), "{:?}", sim.out);
    let acts = sim.ev(Event::Hello { conn: C2, resume: Some(c) });
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Failed { seq: 0, error: CallError::NoSession }]);
}

#[test]
fn an_attached_session_never_expires() {
    let mut sim = with_limits(|l| l.session_idle_ms = 100);
    sim.start();
    sim.hello(C1, None);
    sim.at(10_000);
    assert_eq!(sim.sup.session_count(), 1);
}

#[test]
fn a_client_that_never_acknowledges_is_bounded_by_the_per_session_byte_budget() {
    let mut sim = with_limits(|l| l.dedup_bytes_per_session = 100_000);
    sim.sup.dedup_per_session = 1_000_000;
    sim.start();
    let c = sim.hello(C1, None);
    let body = vec![7u8; 30_000];
    for seq in 1..=10 {
        sim.call(C1, seq, b"w");
        sim.reply(STORAGE, c, seq, None, &body);
    }
    // Three 30 000-byte replies (plus their entries) fit; the older ones
    // expired, and a retry of one gets Expired, never a second execution.
    assert!(sim.sup.cached_reply_bytes() <= 100_000, "{}", sim.sup.cached_reply_bytes());
    assert_eq!(sim.sup.sessions[&c].cache.len(), 3);
    let acts = sim.call(C1, 1, b"w");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 1, error: CallError::Expired }]);
    assert!(requests_sent(&acts).is_empty());
    let acts = sim.call(C1, 10, b"w");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Reply { seq: 10, body: body.clone() }]);
}

#[test]
fn the_total_byte_budget_takes_from_the_session_caching_the_most() {
    let mut sim = with_limits(|l| {
        l.dedup_bytes_per_session = 1 << 20;
        l.dedup_bytes_total = 200_000;
    });
    sim.sup.dedup_per_session = 1_000_000;
    sim.start();
    let hog = sim.hello(C1, None);
    let small = sim.hello(C2, None);
    sim.call(C2, 1, b"w");
    sim.reply(STORAGE, small, 1, None, b"mine");
    for seq in 1..=20 {
        sim.call(C1, seq, b"w");
        sim.reply(STORAGE, hog, seq, None, &[1u8; 30_000]);
    }
    assert!(sim.sup.cached_reply_bytes() <= 200_000, "{}", sim.sup.cached_reply_bytes());
    // The small session kept its reply.
    let acts = sim.call(C2, 1, b"w");
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Reply { seq: 1, body: b"mine".to_vec() }]);
    // Acknowledging frees, and the figure follows.
    sim.ev(Event::Call { conn: C1, seq: 21, driver: "storage_driver", body: b"w", acked_below: 21 });
    assert!(sim.sup.cached_reply_bytes() < 1_000, "{}", sim.sup.cached_reply_bytes());
}

#[test]
fn a_launch_that_runs_out_of_descriptors_is_retried_and_never_quarantines() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"w");
    // Six crashes in a row would quarantine (max 4 restarts), but these
    // relaunches fail on EMFILE: the supervisor's resources, not the driver.
    sim.crash(STORAGE, ExitStatus::Signal(11));
    let mut t = 0;
    for _ in 0..20 {
        let g = sim.sup.current(STORAGE).expect("a launch is being tried");
        sim.ev(Event::SpawnDeferred { driver: STORAGE, generation: g, error: "socketpair: EMFILE".into() });
        assert_eq!(sim.state(STORAGE).state, DriverState::BackingOff);
        t += LAUNCH_RETRY.0;
        sim.at(t);
    }
    assert!(sim.said("cannot launch storage_driver now: socketpair: EMFILE; out of resources, retrying in 100ms (not counted as a fault)"));
    assert!(sim.said("retrying the launch of storage_driver"));
    // Descriptors are back: the launch succeeds and the request is replayed.
    assert_eq!(sim.state(STORAGE).state, DriverState::Starting);
    let acts = sim.ready(STORAGE);
    assert_eq!(requests_sent(&acts), [1]);
    assert_eq!(sim.state(STORAGE).restarts, 1, "only the crash counted");
    let acts = sim.reply(STORAGE, c, 1, None, b"ok");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Reply { seq: 1, body: b"ok".to_vec() }]);
}

mod journal;
