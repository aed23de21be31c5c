//! Ordered shutdown: reverse start order, and `Exit` exactly once whatever
//! state the drivers are in.

use super::*;

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

/// `(Exit actions, "all drivers stopped" lines)` seen so far.
pub(super) fn exits(sim: &Sim) -> (usize, usize) {
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
