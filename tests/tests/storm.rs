//! Restart storms: quarantine, operator revival, and no CPU spinning.

use reinc_proto::CallError;
use reinc_tests::{Rig, cpu_time, write_req};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

#[test]
fn storm_ends_in_quarantine_and_drvctl_restart_revives_it() {
    // Every instance crashes on its first request, and the request is never
    // declared poison: a genuine storm.
    let mut rig = Rig::new("quarantine", &[("fault", "\"before-effect:1:segv\""), ("max-restarts", "3")]);
    rig.start();
    let mut c = rig.client();
    let answer = c.call("storage_driver", &write_req(1, 1, 1)).unwrap();
    assert_eq!(answer, Err(CallError::DriverFailed), "a quarantined driver's pending request fails clearly");
    let st = rig.status();
    assert_eq!(st.state.name(), "quarantined");
    assert_eq!(st.restarts, 3);
    assert_eq!(st.queue_depth, 0);
    assert!(!rig.sup_lines("storage_driver quarantined: more than 3 restarts").is_empty(), "{}", rig.log());
    // New calls are refused while quarantined, not queued forever.
    assert_eq!(c.call("storage_driver", &write_req(2, 1, 2)).unwrap(), Err(CallError::DriverFailed));
    assert!(rig.exec_log().is_empty());

    let out = rig.drvctl(&["restart", "storage_driver"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let revived = rig.wait_status(T, |s| s.state.name() == "running").expect("revived");
    assert_eq!(revived.generation, st.generation + 1);
}

#[test]
fn restart_storm_does_not_spin_the_cpu() {
    // Dies during init forever; backoff 20 ms doubling to 200 ms; the window
    // is short enough that it never quarantines, so the storm lasts.
    let mut rig = Rig::new(
        "storm-cpu",
        &[
            ("fault", "\"init:1:exit\""),
            ("backoff-base-ms", "20"),
            ("backoff-cap-ms", "200"),
            ("max-restarts", "64"),
            ("restart-window-ms", "1000"),
        ],
    );
    rig.spawn();
    let pid = rig.supervisor_pid().as_raw() as u32;
    let storm = Duration::from_secs(3);
    let t0 = Instant::now();
    std::thread::sleep(storm);
    let cpu = cpu_time(pid);
    let elapsed = t0.elapsed();
    let launches = rig.sup_lines("Launching storage_driver").len();
    assert!(rig.status().state.name() != "quarantined", "the storm should still be going");
    // 0, 20, 40, 80, 160, then every 200 ms: about 18 launches in 3 s. A
    // missing backoff would give thousands.
    let max_launches = 6 + (elapsed.as_millis() / 200) as usize;
    assert!((8..=max_launches).contains(&launches), "{launches} launches in {elapsed:?}");
    // A spinning supervisor burns ~3 s of CPU here; a sleeping one a few ms
    // per launch. The bound is loose on purpose: this is a spin detector,
    // not a benchmark.
    assert!(cpu < storm / 3, "supervisor used {cpu:?} of CPU during a {storm:?} storm");
}
