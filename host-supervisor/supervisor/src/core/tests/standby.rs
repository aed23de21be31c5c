//! Hot standby rules of the core (`core/standby.rs`, CONTRACTS.md §9).

use super::*;

fn standby_sim() -> Sim {
    Sim::with(|d| d.standby = true)
}

/// The standby's generation, if the driver has one.
fn spare(sim: &Sim) -> Option<Generation> {
    sim.sup.drivers[STORAGE.0].standby.as_ref()?.spare.as_ref().map(|s| s.generation)
}

/// Answers every ping in `acts` addressed to `generation`.
fn pong(sim: &mut Sim, acts: &[Action], generation: Generation) {
    for a in acts {
        if let Action::ToDriver { msg: DriverMsg::Ping { nonce }, generation: g, .. } = a
            && *g == generation
        {
            sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: *g, msg: FromDriver::Pong { nonce: *nonce } });
        }
    }
}

/// Starts the driver and brings its standby up (launched, pinged, answered).
fn warm(sim: &mut Sim) -> Generation {
    sim.ev(Event::Start);
    let acts = sim.ready(STORAGE);
    let g = spare(sim).expect("a standby is launched once the driver is ready");
    assert_eq!(requests_spawned(&acts), [g]);
    pong(sim, &acts, g);
    assert!(sim.said("standby of storage_driver is ready"));
    g
}

fn inits(acts: &[Action]) -> Vec<Generation> {
    acts.iter()
        .filter_map(|a| match a {
            Action::ToDriver { msg: DriverMsg::Init { generation, .. }, .. } => Some(*generation),
            _ => None,
        })
        .collect()
}

#[test]
fn a_crash_promotes_the_standby_with_init_and_the_replay_in_one_burst() {
    let mut sim = standby_sim();
    let g = warm(&mut sim);
    assert_eq!(g, Generation(2), "launched for the next generation");
    sim.hello(C1, None);
    for seq in 1..=3 {
        sim.call(C1, seq, b"w");
    }
    let acts = sim.crash(STORAGE, SEGV);
    assert!(requests_spawned(&acts).is_empty(), "no fork+exec on the recovery path: {acts:?}");
    assert_eq!(inits(&acts), [g]);
    let to_standby: Vec<u64> = acts
        .iter()
        .filter_map(|a| match a {
            Action::ToDriver { generation, msg: DriverMsg::Request { id, .. }, .. } if *generation == g => Some(id.seq),
            _ => None,
        })
        .collect();
    assert_eq!(to_standby, [1, 2], "the window (2) replayed before Ready, in order");
    assert!(sim.said("replaying 3 queued requests"));
    let st = sim.state(STORAGE);
    assert_eq!((st.generation, st.restarts, st.state), (2, 1, DriverState::Starting));
    // Ready does not send them again; the third goes once one is answered.
    assert!(requests_sent(&sim.ready(STORAGE)).is_empty());
    assert_eq!(requests_sent(&sim.reply(STORAGE, sim_client(&sim), 1, None, b"ok")), [3]);
}

fn sim_client(sim: &Sim) -> ClientId {
    *sim.sup.sessions.keys().next().expect("one session")
}

#[test]
fn a_standby_not_yet_answering_is_promoted_but_replays_after_ready() {
    let mut sim = standby_sim();
    sim.ev(Event::Start);
    sim.ready(STORAGE);
    let g = spare(&sim).unwrap();
    sim.hello(C1, None);
    sim.call(C1, 1, b"w");
    // No pong yet: its sandbox is unchecked, so nothing reaches it before Ready.
    let acts = sim.crash(STORAGE, SEGV);
    assert_eq!(inits(&acts), [g]);
    assert!(requests_sent(&acts).is_empty(), "{acts:?}");
    assert_eq!(requests_sent(&sim.ready(STORAGE)), [1]);
}

#[test]
fn the_next_standby_is_launched_once_the_replay_is_answered() {
    let mut sim = standby_sim();
    let g = warm(&mut sim);
    let client = sim.hello(C1, None);
    sim.call(C1, 1, b"w");
    sim.call(C1, 2, b"w");
    sim.crash(STORAGE, SEGV);
    assert!(requests_spawned(&sim.ready(STORAGE)).is_empty());
    assert!(requests_spawned(&sim.reply(STORAGE, client, 1, None, b"ok")).is_empty());
    let acts = sim.reply(STORAGE, client, 2, None, b"ok");
    assert_eq!(requests_spawned(&acts), [Generation(g.0 + 1)], "after the last replayed reply, and after it");
    let spawn_at = acts.iter().position(|a| matches!(a, Action::Spawn { .. })).unwrap();
    let reply_at = acts.iter().position(|a| matches!(a, Action::ToClient { .. })).unwrap();
    assert!(reply_at < spawn_at, "the client's reply goes out before the fork: {acts:?}");
}

#[test]
fn frames_of_the_standby_are_its_own_and_a_dead_instance_s_are_dropped() {
    let mut sim = standby_sim();
    let g = warm(&mut sim);
    // A reply stamped with the standby's generation before Init: protocol error.
    let client = sim.hello(C1, None);
    let msg = FromDriver::Reply { id: RequestId { client, seq: 9 }, commit: None, body: b"x" };
    let acts = sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: g, msg });
    assert!(acts.contains(&Action::Kill { driver: STORAGE, generation: g, signal: KillSignal::Kill }), "{acts:?}");
    assert_eq!(sim.state(STORAGE).state, DriverState::Running, "the running instance is untouched");
    // A frame of an old generation is dropped, not taken for the standby's.
    let acts = sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: Generation(7), msg: FromDriver::Ready });
    assert!(acts.is_empty(), "{acts:?}");
}

#[test]
fn a_hung_standby_is_killed_and_replaced_without_counting_toward_quarantine() {
    let mut sim = standby_sim();
    sim.ev(Event::Start);
    sim.ready(STORAGE);
    let g = spare(&sim).unwrap();
    let mut killed = false;
    for t in (0..=5_000).step_by(1_000) {
        let acts = sim.at(t);
        // The running instance answers; the standby does not.
        pong(&mut sim, &acts, Generation(1));
        killed |= acts.contains(&Action::Kill { driver: STORAGE, generation: g, signal: KillSignal::Kill });
    }
    assert!(killed, "log: {:?}", sim.out);
    assert!(sim.said("standby of storage_driver is not answering heartbeats; killing it"));
    let acts = sim.ev(Event::Exited { driver: STORAGE, generation: g, status: ExitStatus::Signal(9) });
    assert!(sim.said("standby of storage_driver crashed (hung (missed 3 heartbeats))"));
    // First standby death: replaced at once, like a first restart.
    assert_eq!(requests_spawned(&acts), [Generation(g.0 + 1)]);
    let st = sim.state(STORAGE);
    assert_eq!((st.state, st.restarts, st.generation), (DriverState::Running, 0, 1));
}

#[test]
fn a_standby_that_keeps_dying_is_disabled_and_an_operator_restart_enables_it_again() {
    let mut sim = standby_sim();
    sim.ev(Event::Start);
    sim.ready(STORAGE);
    // backoff(): more than 4 in the window disables it.
    for _ in 0..5 {
        let g = match spare(&sim) {
            Some(g) => g,
            None => {
                let t = sim.sup.next_deadline().expect("a standby relaunch is scheduled");
                sim.at(t.0);
                spare(&sim).expect("relaunched on its deadline")
            }
        };
        sim.ev(Event::Exited { driver: STORAGE, generation: g, status: ExitStatus::Code(2) });
    }
    assert!(sim.said(
        "standby of storage_driver disabled after repeated failures; storage_driver runs without one until `drvctl \
         restart storage_driver`"
    ));
    assert_eq!(spare(&sim), None);
    assert_eq!(sim.state(STORAGE).state, DriverState::Running);
    assert_eq!(sim.state(STORAGE).restarts, 0, "standby deaths are not the driver's");
    // Without a standby a crash spawns, as it always did.
    let acts = sim.crash(STORAGE, SEGV);
    assert_eq!(requests_spawned(&acts).len(), 1);
    sim.ready(STORAGE);
    assert_eq!(spare(&sim), None, "still disabled");
    let (_, acts) = sim.sup.control(sim.now, &ControlRequest::Restart { driver: "storage_driver".into() });
    let g = sim.generation(STORAGE);
    sim.ev(Event::Exited { driver: STORAGE, generation: g, status: ExitStatus::Signal(9) });
    drop(acts);
    sim.ready(STORAGE);
    assert!(spare(&sim).is_some(), "re-enabled by the operator restart");
}

#[test]
fn quarantine_kills_the_standby_and_a_revive_brings_both_back() {
    let mut sim = standby_sim();
    let mut g = warm(&mut sim);
    let mut killed_standby = false;
    for _ in 0..6 {
        let acts = sim.crash(STORAGE, SEGV);
        killed_standby |=
            acts.iter().any(|a| matches!(a, Action::Kill { generation, .. } if Some(*generation) == spare(&sim)));
        if sim.state(STORAGE).state == DriverState::Quarantined {
            break;
        }
        if let Some(d) = sim.state(STORAGE).backoff_ms {
            let t = sim.now.0 + d;
            sim.at(t);
        }
        sim.ready(STORAGE);
        if let Some(s) = spare(&sim) {
            g = s;
        }
    }
    assert_eq!(sim.state(STORAGE).state, DriverState::Quarantined);
    assert!(killed_standby, "{:?}", sim.out);
    let s = spare(&sim).expect("killed, not yet reaped");
    sim.ev(Event::Exited { driver: STORAGE, generation: s, status: ExitStatus::Signal(9) });
    assert!(sim.said("standby of storage_driver stopped"));
    assert_eq!(spare(&sim), None);
    assert_eq!(sim.sup.next_deadline(), None, "nothing relaunches a quarantined driver's standby");
    let _ = g;
    let (resp, acts) = sim.sup.control(sim.now, &ControlRequest::Restart { driver: "storage_driver".into() });
    assert!(matches!(resp, ControlResponse::Done(_)), "{resp:?}");
    assert_eq!(requests_spawned(&acts).len(), 1);
    for a in &acts {
        if let Action::Spawn { driver, generation } = a {
            sim.ev(Event::Spawned { driver: *driver, generation: *generation, pid: 999 });
        }
    }
    sim.ready(STORAGE);
    assert!(spare(&sim).is_some(), "the revived driver gets a standby again");
}

#[test]
fn shutdown_kills_the_standby_and_exits_only_once_it_is_reaped() {
    let mut sim = standby_sim();
    let g = warm(&mut sim);
    let gen1 = sim.generation(STORAGE);
    let acts = sim.ev(Event::Shutdown);
    assert!(acts.contains(&Action::Kill { driver: STORAGE, generation: g, signal: KillSignal::Kill }), "{acts:?}");
    let acts = sim.ev(Event::Exited { driver: STORAGE, generation: gen1, status: ExitStatus::Code(0) });
    assert!(!acts.contains(&Action::Exit), "waits for the standby: {acts:?}");
    let acts = sim.ev(Event::Exited { driver: STORAGE, generation: g, status: ExitStatus::Signal(9) });
    assert!(acts.contains(&Action::Exit), "{acts:?}");
}

#[test]
fn a_promoted_standby_dying_in_init_does_not_blame_the_request_it_was_sent() {
    let mut sim = Sim::with(|d| {
        d.standby = true;
        d.poison_after = 2;
    });
    let g = warm(&mut sim);
    sim.hello(C1, None);
    sim.call(C1, 1, b"w");
    sim.crash(STORAGE, SEGV);
    assert_eq!(sim.generation(STORAGE), g);
    // The first crash blamed request 1 once (it was in flight). The promoted
    // standby dies before Ready: request 1 reached its socket, never started.
    let acts = sim.crash(STORAGE, ExitStatus::Code(1));
    assert!(client_msgs(&acts, C1).is_empty(), "not poisoned: {acts:?}");
    assert_eq!(sim.state(STORAGE).queue_depth, 1);
}

#[test]
fn a_driver_without_standby_launches_no_second_process() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.ev(Event::Start);
    let acts = sim.ready(STORAGE);
    assert!(requests_spawned(&acts).is_empty());
    assert_eq!(spare(&sim), None);
}
