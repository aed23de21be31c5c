//! Hot standby (`standby = true`, CONTRACTS.md §9) with real processes: a
//! second `storage_driver` waits, holding no device, and takes over at a
//! crash; its own crash, hang, the supervisor's death and quarantine each do
//! what the contract says.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reinc_client::control::{ControlRequest, ControlResponse};
use reinc_tests::{Reply, Rig, assert_no_duplicate_execution, process_gone, reply, wait_for, write_req};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// The pid in the `n`-th (0-based) `Launching standby of storage_driver
/// (pid=N)` line, waiting for it.
fn standby_pid(rig: &Rig, n: usize) -> u32 {
    let needle = "Launching standby of storage_driver (pid=";
    assert!(rig.wait_sup_lines(needle, n + 1, T), "no standby #{n} launched; log:\n{}", rig.log());
    let line = &rig.sup_lines(needle)[n];
    line.rsplit("pid=").next().and_then(|s| s.trim_end_matches(')').parse().ok()).expect("pid in the line")
}

/// A running supervisor whose storage driver has a standby that answered a ping.
fn standby_rig(tag: &str, overrides: &[(&str, &str)]) -> (Rig, u32) {
    let mut keys = vec![("standby", "true")];
    keys.extend_from_slice(overrides);
    let mut rig = Rig::new(tag, &keys);
    rig.start();
    let pid = standby_pid(&rig, 0);
    assert!(rig.wait_sup_lines("standby of storage_driver is ready", 1, T), "log:\n{}", rig.log());
    (rig, pid)
}

/// What `/proc/PID/fd` and `/proc/PID/maps` of `pid` show of `path`.
fn holds(pid: u32, path: &std::path::Path) -> (bool, bool) {
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the standby's fds")
        .flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == path));
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read the standby's maps");
    (open, maps.contains(&*path.to_string_lossy()))
}

fn write_all(rig: &Rig, lbas: std::ops::Range<u64>, fill: u8) {
    let mut client = rig.client();
    for lba in lbas {
        let r = client.call("storage_driver", &write_req(lba, 1, fill)).unwrap().unwrap();
        assert_eq!(reply(&r), Reply::Written(lba, 1));
    }
}

#[test]
fn a_standby_waits_without_opening_or_mapping_the_device() {
    let (rig, standby) = standby_rig("standby-device", &[]);
    let running = rig.status().pid.unwrap();
    assert_ne!(standby, running);
    let disk = rig.disk().canonicalize().unwrap();
    // storage_driver reads and writes its region with pread/pwrite; a UIO
    // driver would also show its register mapping in /proc/PID/maps.
    assert!(holds(running, &disk).0, "the running instance owns the device");
    assert_eq!(holds(standby, &disk), (false, false), "the standby has neither opened nor mapped it");
    // Still so after a while of heartbeats and traffic on the running one.
    write_all(&rig, 0..20, 0x11);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(holds(standby, &disk), (false, false));
}

#[test]
fn a_crash_promotes_the_standby_which_replays_exactly_once() {
    let (rig, standby) = standby_rig("standby-promote", &[]);
    let before = rig.status();
    let mut client = rig.client();
    let seqs: Vec<u64> =
        (0..16).map(|lba| client.submit("storage_driver", &write_req(lba, 1, 0x5a)).unwrap()).collect();
    kill(Pid::from_raw(before.pid.unwrap() as i32), Signal::SIGKILL).unwrap();
    let mut answered = 0;
    while client.in_flight() > 0 {
        let c = client.wait().unwrap();
        assert!(seqs.contains(&c.seq));
        assert!(matches!(reply(&c.result.unwrap()), Reply::Written(_, 1)));
        answered += 1;
    }
    assert_eq!(answered, 16);
    let after = rig.wait_status(T, |s| s.state.name() == "running" && s.generation > before.generation).unwrap();
    assert_eq!(after.pid, Some(standby), "the standby took over; log:\n{}", rig.log());
    assert_eq!(after.generation, before.generation + 1, "it was launched for the next generation");
    assert_eq!(after.restarts, 1);
    assert!(rig.sup_lines("promoting the standby of storage_driver").len() == 1, "log:\n{}", rig.log());
    assert_no_duplicate_execution(&rig.exec_log());
    for lba in 0..16 {
        assert_eq!(rig.disk_block(lba), vec![0x5a; storage_core::BLOCK_SIZE]);
    }
    // The next standby is launched in the background, a new process.
    let next = standby_pid(&rig, 1);
    assert!(next != standby && Some(next) != before.pid);
}

#[test]
fn a_standby_that_crashes_before_promotion_is_replaced_and_counts_for_nothing() {
    let (rig, standby) = standby_rig("standby-crash", &[]);
    let before = rig.status();
    kill(Pid::from_raw(standby as i32), Signal::SIGSEGV).unwrap();
    assert!(rig.wait_sup_lines("standby of storage_driver crashed (SIGSEGV)", 1, T), "log:\n{}", rig.log());
    let next = standby_pid(&rig, 1);
    assert_ne!(next, standby);
    let st = rig.status();
    assert_eq!((st.pid, st.restarts, st.generation), (before.pid, 0, before.generation), "the driver was untouched");
    write_all(&rig, 0..4, 0x22);
    // And the replacement is promoted like the first would have been.
    assert!(rig.wait_sup_lines("standby of storage_driver is ready", 2, T), "log:\n{}", rig.log());
    kill(Pid::from_raw(before.pid.unwrap() as i32), Signal::SIGKILL).unwrap();
    let after = rig.wait_status(T, |s| s.state.name() == "running" && s.pid != before.pid).unwrap();
    assert_eq!(after.pid, Some(next));
}

#[test]
fn a_hung_standby_misses_its_heartbeats_and_is_replaced() {
    let (rig, standby) = standby_rig("standby-hang", &[]);
    kill(Pid::from_raw(standby as i32), Signal::SIGSTOP).unwrap();
    assert!(
        rig.wait_sup_lines("standby of storage_driver is not answering heartbeats; killing it", 1, T),
        "log:\n{}",
        rig.log()
    );
    assert!(wait_for(T, || process_gone(standby).then_some(())).is_some(), "the hung standby was killed");
    assert!(rig.wait_sup_lines("standby of storage_driver crashed (hung (missed 3 heartbeats))", 1, T));
    assert_ne!(standby_pid(&rig, 1), standby);
    assert_eq!(rig.status().restarts, 0);
}

#[test]
fn the_standby_dies_with_the_supervisor() {
    let (mut rig, standby) = standby_rig("standby-pdeathsig", &[]);
    let running = rig.status().pid.unwrap();
    rig.stop_supervisor(Signal::SIGKILL);
    for pid in [running, standby] {
        assert!(wait_for(T, || process_gone(pid).then_some(())).is_some(), "pid {pid} outlived its supervisor");
    }
}

#[test]
fn quarantine_stops_the_standby_and_a_revive_brings_one_back() {
    // The second restart within the window quarantines.
    let (rig, standby) = standby_rig("standby-quarantine", &[("max-restarts", "1"), ("backoff-base-ms", "1")]);
    let first = rig.status().pid.unwrap();
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    let promoted = rig.wait_status(T, |s| s.state.name() == "running" && s.pid == Some(standby));
    assert!(promoted.is_some(), "log:\n{}", rig.log());
    let next = standby_pid(&rig, 1);
    kill(Pid::from_raw(standby as i32), Signal::SIGKILL).unwrap();
    assert!(rig.wait_status(T, |s| s.state.name() == "quarantined").is_some(), "log:\n{}", rig.log());
    assert!(wait_for(T, || process_gone(next).then_some(())).is_some(), "the standby outlived the quarantine");
    assert!(rig.wait_sup_lines("standby of storage_driver stopped", 1, T), "log:\n{}", rig.log());
    match rig.control(&ControlRequest::Restart { driver: "storage_driver".into() }) {
        ControlResponse::Done(_) => {}
        other => panic!("revive: {other:?}"),
    }
    assert!(rig.wait_status(T, |s| s.state.name() == "running").is_some());
    let revived = standby_pid(&rig, 2);
    assert!(!process_gone(revived));
}

#[test]
fn an_operator_stop_stops_the_standby_too() {
    let (rig, standby) = standby_rig("standby-stop", &[]);
    let out = rig.drvctl(&["stop", "storage_driver"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_for(T, || process_gone(standby).then_some(())).is_some(), "log:\n{}", rig.log());
    assert!(rig.wait_status(T, |s| s.state.name() == "stopped").is_some());
}
