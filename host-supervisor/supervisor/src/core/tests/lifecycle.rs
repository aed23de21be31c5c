//! Launch, crash, hang, the restart policy, quarantine, operator restart
//! and stop, and the deadlines that drive them.

use super::*;

#[test]
fn launch_sends_init_with_the_checkpoint_after_spawn() {
    let sup = Supervisor::new(vec![(driver("storage_driver"), Some(vec![9, 9]))], 1, 4, 8);
    let mut sim = Sim { next_pid: 221, ..Sim::of(sup) };
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

fn sched(runnable: bool, ran_ms: u64, waited_ms: u64) -> SchedSample {
    SchedSample { runnable, ran_ns: ran_ms * 1_000_000, waited_ns: waited_ms * 1_000_000 }
}

fn killed(acts: &[Action]) -> bool {
    acts.iter().any(|a| matches!(a, Action::Kill { signal: KillSignal::Kill, .. }))
}

#[test]
fn a_driver_waiting_for_a_cpu_is_starved_not_hung() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    // Baseline at the first miss (t = 2 000), verdict at the third (4 000):
    // it ran 5 ms of 2 s and is runnable now.
    sim.sched.extend([sched(false, 40, 3), sched(true, 45, 3)]);
    for t in [1_000, 2_000, 3_000] {
        assert!(!killed(&sim.at(t)));
    }
    let acts = sim.at(4_000);
    assert!(acts.contains(&Action::ProbeSched { driver: STORAGE, generation: Generation(1) }), "{acts:?}");
    assert!(!killed(&acts), "{acts:?}");
    assert_eq!(sim.state(STORAGE).state, DriverState::Running);
    assert!(sim.said(
        "storage_driver missed 3 heartbeats waiting for a CPU (ran 5 ms and waited 0 ms of the last 2000 ms): \
         starved, not hung; it gets up to 2000ms more (1 such verdicts so far)"
    ));
    // When it runs, it answers the ping it owes, and all is as before.
    let nonce = sim
        .out
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::ToDriver { msg: DriverMsg::Ping { nonce }, .. } => Some(*nonce),
            _ => None,
        })
        .unwrap();
    sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: Generation(1), msg: FromDriver::Pong { nonce } });
    for t in [5_000, 6_000, 7_000] {
        assert!(!killed(&sim.at(t)));
    }
    assert_eq!(sim.state(STORAGE).generation, 1);
    let mut text = crate::metrics::Text::default();
    sim.sup.render_metrics(sim.now, &mut text);
    assert!(text.finish().contains("reinc_driver_starved_total{driver=\"storage_driver\"} 1"));
}

#[test]
fn starvation_that_outlasts_the_grace_is_killed_as_a_hang() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    // Starved at every verdict: 4 000 (grace starts), 5 000, 6 000 (the
    // 2 000 ms grace is used up).
    sim.sched.extend([sched(false, 40, 3), sched(true, 41, 3), sched(true, 42, 3), sched(true, 43, 3)]);
    for t in [1_000, 2_000, 3_000, 4_000, 5_000] {
        assert!(!killed(&sim.at(t)), "killed at {t}");
    }
    assert!(killed(&sim.at(6_000)));
    sim.crash(STORAGE, ExitStatus::Signal(9));
    let st = sim.state(STORAGE);
    assert_eq!(st.last_failure.as_deref(), Some("hung (missed 3 heartbeats; starved of CPU for over 2000ms)"));
}

#[test]
fn asleep_spinning_or_unknown_is_a_hang_at_the_usual_time() {
    // Asleep: neither ran nor waited. Spinning: ran all the time. Unknown:
    // no figures (no schedstat). Each is killed at the third miss.
    for samples in
        [vec![sched(false, 40, 3), sched(false, 40, 3)], vec![sched(true, 40, 3), sched(true, 2_000, 9)], vec![]]
    {
        let mut sim = Sim::new(vec![driver("storage_driver")]);
        sim.start();
        sim.sched.extend(samples.clone());
        for t in [1_000, 2_000, 3_000] {
            assert!(!killed(&sim.at(t)));
        }
        assert!(killed(&sim.at(4_000)), "{samples:?}");
        sim.crash(STORAGE, ExitStatus::Signal(9));
        assert_eq!(sim.state(STORAGE).last_failure.as_deref(), Some("hung (missed 3 heartbeats)"));
    }
}

#[test]
fn starved_grace_zero_never_probes() {
    let mut sim = Sim::with(|d| d.starved_grace = Millis::ZERO);
    sim.start();
    for t in [1_000, 2_000, 3_000, 4_000] {
        sim.at(t);
    }
    assert!(!sim.out.iter().any(|a| matches!(a, Action::ProbeSched { .. })));
    assert_eq!(sim.state(STORAGE).state, DriverState::Hung);
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
