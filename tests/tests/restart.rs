//! Crash and hang detection, restart with new pid and generation, backoff,
//! shutdown, and no orphans.

use nix::sys::signal::Signal;
use reinc_tests::{Reply, Rig, process_gone, read_req, reply, wait_for};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// Arms `plan` in the running instance, sends one request, and waits for the
/// restart; returns (old status, new status).
fn crash_once(rig: &Rig, plan: &str) -> (reinc_client::control::DriverStatus, reinc_client::control::DriverStatus) {
    let before = rig.status();
    rig.inject(plan);
    let mut c = rig.client();
    // The request that trips the fault is replayed to the next instance and
    // answered: the client sees latency, not an error.
    let r = c.call("storage_driver", &read_req(0, 1)).unwrap().unwrap();
    assert!(matches!(reply(&r), Reply::Data(d) if d.len() == 512));
    let after = rig
        .wait_status(T, |s| s.generation > before.generation && s.state.name() == "running")
        .unwrap_or_else(|| panic!("no restart after {plan}; log:\n{}", rig.log()));
    (before, after)
}

#[test]
fn every_crash_kind_restarts_with_new_pid_generation_and_reason() {
    let mut rig = Rig::new("crash-kinds", &[]);
    rig.start();
    let cases = [
        ("before-effect:1:segv", "SIGSEGV", "crashed (SIGSEGV)"),
        ("before-effect:1:kill", "SIGKILL", "crashed (SIGKILL)"),
        ("before-effect:1:abrt", "SIGABRT", "crashed (SIGABRT)"),
        ("before-effect:1:panic", "exit status 101 (panic)", "crashed (exit status 101 (panic))"),
        ("before-effect:1:exit", "exit status 1", "crashed (exit status 1)"),
        ("before-effect:1:hang", "hung (missed 3 heartbeats)", "failed (hung (missed 3 heartbeats))"),
    ];
    for (plan, reason, line) in cases {
        let (before, after) = crash_once(&rig, plan);
        assert_ne!(after.pid, before.pid, "{plan}: same pid");
        assert_eq!(after.generation, before.generation + 1, "{plan}");
        assert_eq!(after.last_failure.as_deref(), Some(reason), "{plan}");
        assert!(after.restarts > before.restarts, "{plan}");
        let needle = format!("storage_driver {line}");
        assert!(!rig.sup_lines(&needle).is_empty(), "{plan}: no `[SUP] {needle}` line in:\n{}", rig.log());
        assert!(process_gone(before.pid.unwrap()), "{plan}: old instance still running");
    }
    // The log reads like the seed's.
    assert!(!rig.sup_lines("Launching storage_driver (pid=").is_empty());
    assert!(!rig.sup_lines("restarting storage_driver").is_empty());
    assert!(!rig.sup_lines("replaying 1 queued requests").is_empty(), "{}", rig.log());
}

#[test]
fn backoff_delays_grow_as_configured() {
    // Every instance dies during init: a storm with growing delays.
    let mut rig = Rig::new(
        "backoff",
        &[("fault", "\"init:1:exit\""), ("backoff-base-ms", "40"), ("backoff-cap-ms", "320"), ("max-restarts", "6")],
    );
    let t0 = Instant::now();
    rig.spawn();
    let quarantined = rig.wait_status(T, |s| s.state.name() == "quarantined");
    assert!(quarantined.is_some(), "no quarantine; log:\n{}", rig.log());
    let delays: Vec<u64> = rig
        .sup_lines("backing off for ")
        .iter()
        .filter_map(|l| l.split("backing off for ").nth(1)?.split("ms").next()?.parse().ok())
        .collect();
    assert_eq!(delays, [40, 80, 160, 320, 320], "log:\n{}", rig.log());
    // The delays really were waited out.
    assert!(t0.elapsed() >= Duration::from_millis(40 + 80 + 160 + 320 + 320));
    let st = rig.status();
    assert_eq!(st.last_failure.as_deref(), Some("exit status 1 during init"));
    assert_eq!(rig.sup_lines("Launching storage_driver").len(), 7);
}

#[test]
fn killing_the_supervisor_leaves_no_driver_behind() {
    let mut rig = Rig::new("orphans", &[]);
    rig.start();
    let driver = rig.status().pid.unwrap();
    let _ = rig.stop_supervisor(Signal::SIGKILL);
    let gone = wait_for(Duration::from_secs(5), || process_gone(driver).then_some(()));
    assert!(gone.is_some(), "driver {driver} survived its supervisor");
}

#[test]
fn sigterm_stops_drivers_and_exits_cleanly() {
    let mut rig = Rig::new("sigterm", &[]);
    rig.start();
    let driver = rig.status().pid.unwrap();
    let st = rig.stop_supervisor(Signal::SIGTERM);
    assert!(st.success(), "exit status {st:?}; log:\n{}", rig.log());
    assert!(process_gone(driver));
    assert!(!rig.sup_lines("storage_driver stopped").is_empty(), "{}", rig.log());
    assert!(!rig.sup_lines("all drivers stopped").is_empty());
    assert!(!rig.runtime.join("control.sock").exists(), "socket left behind");
}

#[test]
fn status_json_reports_every_field() {
    let mut rig = Rig::new("json", &[]);
    rig.start();
    let out = rig.drvctl(&["status", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &v[0];
    for key in
        ["name", "pid", "generation", "state", "restarts", "uptime_ms", "last_failure", "queue_depth", "in_flight"]
    {
        assert!(d.get(key).is_some(), "missing {key} in {d}");
    }
    assert_eq!(d["name"], "storage_driver");
    assert_eq!(d["state"], "running");
    assert_eq!(d["generation"], 1);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(rig.runtime.join("control.sock")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "control socket must be private");
    let table = rig.drvctl(&["status"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("storage_driver") && text.contains("running"), "{text}");
}

#[test]
fn trace_of_a_crashed_instance_shows_its_last_events() {
    let mut rig = Rig::new("trace", &[]);
    rig.start();
    let _ = crash_once(&rig, "after-effect:1:abrt");
    let out = rig.drvctl(&["trace", "storage_driver"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("FAULT after-effect:1:abrt"), "{text}");
}

#[test]
fn drivers_are_independent_and_stop_in_reverse_start_order() {
    let mut rig = Rig::new("two", &[]);
    rig.add_driver("second_disk");
    rig.start();
    assert!(rig.wait_status(T, |_| rig.all_status().iter().all(|s| s.state.name() == "running")).is_some());
    let before = rig.all_status();
    let _ = crash_once(&rig, "before-effect:1:segv");
    let after = rig.all_status();
    assert_eq!(after[1].pid, before[1].pid, "the other driver is untouched");
    assert_eq!(after[1].generation, 1);
    let mut c = rig.client();
    assert!(matches!(reply(&c.call("second_disk", &read_req(0, 1)).unwrap().unwrap()), Reply::Data(_)));
    assert!(rig.stop_supervisor(Signal::SIGTERM).success());
    let log = rig.log();
    let pos = |needle: &str| log.find(needle).unwrap_or_else(|| panic!("no {needle:?} in:\n{log}"));
    assert!(pos("[SUP] stopping second_disk") < pos("[SUP] stopping storage_driver"), "{log}");
}

#[test]
fn a_driver_that_reports_fatal_at_init_is_quarantined_with_its_reason() {
    let mut rig = Rig::new("fatal", &[("max-restarts", "2")]);
    // A backing file that holds something else: the driver refuses it.
    std::fs::write(rig.disk(), vec![0x42u8; 4096]).unwrap();
    rig.spawn();
    let st = rig.wait_status(T, |s| s.state.name() == "quarantined").unwrap_or_else(|| panic!("{}", rig.log()));
    let reason = st.last_failure.unwrap();
    assert!(reason.starts_with("fatal: "), "{reason}");
    assert!(reason.contains("disk.img") || reason.contains("REINCBLK"), "reason should name the file: {reason}");
    assert_eq!(st.restarts, 2);
    assert!(!rig.sup_lines("storage_driver reports a fatal error").is_empty(), "{}", rig.log());
}

#[test]
fn drvctl_stop_keeps_a_driver_down_until_restart() {
    let mut rig = Rig::new("stop", &[]);
    rig.start();
    let pid = rig.status().pid.unwrap();
    let out = rig.drvctl(&["stop", "storage_driver"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let st = rig.wait_status(T, |s| s.state.name() == "stopped").expect("stopped");
    assert_eq!(st.pid, None);
    assert!(process_gone(pid));
    let mut c = rig.client();
    assert_eq!(c.call("storage_driver", &read_req(0, 1)).unwrap(), Err(reinc_proto::CallError::DriverFailed));
    assert!(rig.drvctl(&["restart", "storage_driver"]).status.success());
    let st = rig.wait_status(T, |s| s.state.name() == "running").expect("running again");
    assert_eq!(st.generation, 2);
    assert!(matches!(reply(&c.call("storage_driver", &read_req(0, 1)).unwrap().unwrap()), Reply::Data(_)));
}

/// `write`-family system calls of `pid` so far (`syscw` in /proc/PID/io).
fn write_calls(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/PID/io of the driver");
    io.lines()
        .find_map(|l| l.strip_prefix("syscw:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no syscw line in /proc/{pid}/io:\n{io}"))
}

#[test]
fn trace_ring_costs_a_driver_no_write_call_per_request() {
    // The trace ring is a sealed memfd the driver maps and stores into; with
    // a `pwrite` per record it made four calls per request (a slot and the
    // cursor for each of two events). Reads of the disk are `pread`s, so
    // the only writes left are the replies on the channel.
    let mut rig = Rig::new("trace-cost", &[]);
    rig.start();
    let pid = rig.status().pid.expect("running driver has a pid");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(maps.contains("/memfd:reinc-trace-storage_driver"), "trace memfd is not mapped:\n{maps}");
    let mut c = rig.client();
    let n = 200;
    let before = write_calls(pid);
    for _ in 0..n {
        let r = c.call("storage_driver", &read_req(0, 1)).unwrap().unwrap();
        assert!(matches!(reply(&r), Reply::Data(_)));
    }
    let writes = write_calls(pid) - before;
    assert!(writes <= n + n / 10, "{writes} write calls for {n} requests (trace ring by pwrite?)");
    // And the ring still says what happened, after the instance is gone.
    let _ = crash_once(&rig, "after-effect:1:abrt");
    let out = rig.drvctl(&["trace", "storage_driver"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAULT after-effect:1:abrt"), "{text}");
}
