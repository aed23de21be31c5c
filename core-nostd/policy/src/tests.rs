extern crate std;

use super::*;
use proptest::prelude::*;

fn cfg() -> BackoffConfig {
    BackoffConfig {
        base: Millis(100),
        cap: Millis(5_000),
        jitter_percent: 0,
        healthy_after: Millis(10_000),
        max_restarts: 5,
        window: Millis(60_000),
    }
}

fn delay(a: FaultAction) -> Millis {
    match a {
        FaultAction::Restart { delay, .. } => delay,
        FaultAction::Quarantine => panic!("unexpected quarantine"),
    }
}

#[test]
fn first_restart_is_immediate_then_backoff_doubles() {
    let mut p = BackoffRestart::new(BackoffConfig { max_restarts: 64, ..cfg() }).unwrap();
    let delays: std::vec::Vec<u64> = (0..9).map(|i| delay(p.on_fault(Millis(i * 10), Millis(1), 0)).0).collect();
    assert_eq!(delays, [0, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
}

#[test]
fn healthy_run_resets_the_counter() {
    let mut p = BackoffRestart::new(cfg()).unwrap();
    assert_eq!(delay(p.on_fault(Millis(0), Millis(5), 0)), Millis(0));
    assert_eq!(delay(p.on_fault(Millis(10), Millis(5), 0)), Millis(100));
    assert_eq!(delay(p.on_fault(Millis(20_000), Millis(10_000), 0)), Millis(0));
    assert_eq!(p.attempt(), 1);
}

#[test]
fn more_than_r_restarts_in_window_quarantines() {
    let mut p = BackoffRestart::new(cfg()).unwrap();
    for i in 0..5 {
        assert!(matches!(p.on_fault(Millis(i * 1000), Millis(1), 0), FaultAction::Restart { .. }));
    }
    assert_eq!(p.on_fault(Millis(5_000), Millis(1), 0), FaultAction::Quarantine);
}

#[test]
fn restarts_outside_the_window_do_not_count() {
    let mut p = BackoffRestart::new(cfg()).unwrap();
    for i in 0..5 {
        p.on_fault(Millis(i * 1000), Millis(1), 0);
    }
    // The first restart (t=0) has left the 60 s window at t=60 000.
    assert!(matches!(p.on_fault(Millis(60_000), Millis(1), 0), FaultAction::Restart { .. }));
    assert_eq!(p.restarts_in_window(Millis(60_000)), 5);
}

#[test]
fn reset_revives_a_quarantined_policy() {
    let mut p = BackoffRestart::new(BackoffConfig { max_restarts: 1, ..cfg() }).unwrap();
    p.on_fault(Millis(0), Millis(1), 0);
    assert_eq!(p.on_fault(Millis(1), Millis(1), 0), FaultAction::Quarantine);
    p.reset();
    assert_eq!(p.on_fault(Millis(2), Millis(1), 0), FaultAction::Restart { delay: Millis(0), attempt: 0 });
}

#[test]
fn zero_max_restarts_quarantines_at_first_fault() {
    let mut p = BackoffRestart::new(BackoffConfig { max_restarts: 0, ..cfg() }).unwrap();
    assert_eq!(p.on_fault(Millis(0), Millis(1), 0), FaultAction::Quarantine);
}

#[test]
fn stop_on_fault_never_restarts() {
    assert_eq!(StopOnFault.on_fault(Millis(0), Millis(1_000_000), 7), FaultAction::Quarantine);
}

#[test]
fn bad_configs_are_refused() {
    assert_eq!(
        BackoffRestart::new(BackoffConfig { jitter_percent: 101, ..cfg() }).unwrap_err(),
        PolicyError::Jitter(101)
    );
    assert!(matches!(
        BackoffRestart::new(BackoffConfig { cap: Millis(1), ..cfg() }).unwrap_err(),
        PolicyError::CapBelowBase { .. }
    ));
    assert_eq!(
        BackoffRestart::new(BackoffConfig { max_restarts: 65, ..cfg() }).unwrap_err(),
        PolicyError::TooManyRestarts(65)
    );
}

#[test]
fn huge_attempt_counts_saturate_at_cap() {
    assert_eq!(cfg().nominal_delay(200), Millis(5_000));
    let big = BackoffConfig { base: Millis(u64::MAX / 2), cap: Millis(u64::MAX), ..cfg() };
    assert_eq!(big.nominal_delay(10), Millis(u64::MAX));
}

fn arb_config() -> impl Strategy<Value = BackoffConfig> {
    (1u64..10_000, 0u64..1_000_000, 0u8..=100, 1u64..100_000, 0u32..=64, 1u64..1_000_000).prop_map(
        |(base, extra, jitter_percent, healthy_after, max_restarts, window)| BackoffConfig {
            base: Millis(base),
            cap: Millis(base + extra),
            jitter_percent,
            healthy_after: Millis(healthy_after),
            max_restarts,
            window: Millis(window),
        },
    )
}

proptest! {
    #[test]
    fn nominal_delay_is_monotone_up_to_cap(c in arb_config(), k in 0u32..100) {
        let (a, b) = (c.nominal_delay(k), c.nominal_delay(k + 1));
        prop_assert!(a <= b);
        prop_assert!(b <= c.cap);
        if k >= 1 && b < c.cap {
            prop_assert_eq!(b.0, a.0 * 2);
        }
    }

    #[test]
    fn jitter_stays_within_bounds(c in arb_config(), k in 0u32..100, r in any::<u32>()) {
        let nominal = c.nominal_delay(k).0;
        let d = c.jittered_delay(k, r).0;
        prop_assert!(d <= nominal);
        prop_assert!(u128::from(d) * 100 >= u128::from(nominal) * u128::from(100 - c.jitter_percent));
    }

    #[test]
    fn healthy_failure_always_restarts_immediately(c in arb_config(), faults in 0usize..10, r in any::<u32>()) {
        let mut p = BackoffRestart::new(c).unwrap();
        // Faults spaced a full window apart never trip quarantine.
        let mut now = 0u64;
        for _ in 0..faults {
            p.on_fault(Millis(now), Millis(0), r);
            now += c.window.0;
        }
        let a = p.on_fault(Millis(now), c.healthy_after, r);
        if c.max_restarts == 0 {
            prop_assert_eq!(a, FaultAction::Quarantine);
        } else {
            prop_assert_eq!(a, FaultAction::Restart { delay: Millis(0), attempt: 0 });
        }
    }

    #[test]
    fn quarantine_exactly_after_r_restarts_in_window(c in arb_config(), step in 0u64..1000, r in any::<u32>()) {
        prop_assume!(step * u64::from(c.max_restarts) < c.window.0);
        let mut p = BackoffRestart::new(c).unwrap();
        for i in 0..c.max_restarts {
            let restarted = matches!(p.on_fault(Millis(u64::from(i) * step), Millis(0), r), FaultAction::Restart { .. });
            prop_assert!(restarted, "restart {} of {} refused", i + 1, c.max_restarts);
        }
        let last = Millis(u64::from(c.max_restarts) * step);
        prop_assert_eq!(p.on_fault(last, Millis(0), r), FaultAction::Quarantine);
    }
}
