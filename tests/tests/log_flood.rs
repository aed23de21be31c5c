//! Requests that each make a driver log a warning cannot flood the log:
//! the lines are rate-limited per driver, with a summary of what was dropped.

use reinc_tests::Rig;
use std::time::{Duration, Instant};

#[test]
fn malformed_bodies_from_two_connections_do_not_flood_the_log() {
    let mut rig = Rig::new("log-flood", &[]);
    rig.start();
    let garbage = [0xEEu8; 3];
    let t0 = Instant::now();
    let floods: Vec<_> = (0..2)
        .map(|_| {
            let mut c = rig.client();
            std::thread::spawn(move || {
                for _ in 0..3_000 {
                    c.submit("storage_driver", &garbage).unwrap();
                    if c.in_flight() >= 16 {
                        c.wait().unwrap();
                    }
                }
                while c.in_flight() > 0 {
                    c.wait().unwrap();
                }
            })
        })
        .collect();
    for f in floods {
        f.join().unwrap();
    }
    let elapsed = t0.elapsed();
    // After a pause, the next line carries the summary.
    std::thread::sleep(Duration::from_millis(1_100));
    rig.client().call("storage_driver", &garbage).unwrap().unwrap();
    let log = rig.log();
    let warned = log.lines().filter(|l| l.contains("has a malformed body")).count();
    let allowed = reinc_runtime_limits::BURST + reinc_runtime_limits::RATE * (elapsed.as_secs() as usize + 3);
    assert!(warned <= allowed, "{warned} warning lines for 6001 malformed requests in {elapsed:?} (allowed {allowed})");
    let summary = log.lines().find(|l| l.contains("storage_driver: suppressed ") && l.contains("(rate limit 50/s)"));
    assert!(summary.is_some(), "no summary line:\n{}", &log[log.len().saturating_sub(2_000)..]);
    assert_eq!(rig.status().state.name(), "running");
}

/// The limiter's figures (reinc_runtime::log_limit; the tests crate does not
/// link the runtime).
mod reinc_runtime_limits {
    pub const RATE: usize = 50;
    pub const BURST: usize = 200;
}
