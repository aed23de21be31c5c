//! Hang detection tells a starved driver from a hung one.
//!
//! A driver that misses heartbeats because the machine gives it no CPU (it
//! waits on the run queue) has not hung: killing it costs a restart and,
//! three times over with a request in flight, poisons a good request. A
//! driver that sleeps without answering, spins, or is stopped has hung.

use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use reinc_tests::Rig;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Pins `pid` to CPU 0 with the idle scheduling policy.
fn starve_on_cpu0(pid: u32) {
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("util-linux tool");
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(Command::new("taskset").args(["-p", "1", &pid.to_string()]));
    run(Command::new("chrt").args(["-i", "-p", "0", &pid.to_string()]));
}

/// Threads of this process spinning on CPU 0 for `d`.
fn hog_cpu0(threads: usize, d: Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..threads)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut set = CpuSet::new();
                set.set(0).unwrap();
                sched_setaffinity(Pid::from_raw(0), &set).unwrap();
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    let t = Instant::now();
    while t.elapsed() < d {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
}

#[test]
fn a_starved_driver_is_not_killed_as_hung() {
    let mut rig = Rig::new("starved", &[("heartbeat-interval-ms", "20"), ("heartbeat-misses", "3")]);
    rig.start();
    let before = rig.status();
    let pid = before.pid.expect("running driver has a pid");
    starve_on_cpu0(pid);
    hog_cpu0(2, Duration::from_millis(1500));
    std::thread::sleep(Duration::from_millis(200));
    let after = rig.status();
    assert_eq!(
        (after.pid, after.restarts),
        (Some(pid), before.restarts),
        "a driver that only waited for a CPU was restarted ({:?}); log:\n{}",
        after.last_failure,
        rig.log()
    );
    assert!(rig.log().contains("waiting for a CPU"), "no starvation verdict was made; log:\n{}", rig.log());
}

#[test]
fn a_driver_starved_for_longer_than_the_grace_is_killed_as_hung() {
    let mut rig = Rig::new(
        "starved-long",
        &[("heartbeat-interval-ms", "20"), ("heartbeat-misses", "3"), ("starved-grace-ms", "200")],
    );
    rig.start();
    let before = rig.status();
    starve_on_cpu0(before.pid.expect("running driver has a pid"));
    hog_cpu0(2, Duration::from_millis(1500));
    let after = rig
        .wait_status(Duration::from_secs(10), |s| s.generation > before.generation && s.state.name() == "running")
        .unwrap_or_else(|| panic!("no restart; log:\n{}", rig.log()));
    let failure = after.last_failure.unwrap_or_default();
    assert!(failure.contains("starved of CPU for over 200ms"), "{failure}; log:\n{}", rig.log());
}

#[test]
fn a_stopped_driver_is_hung_at_the_usual_time_despite_the_grace() {
    // SIGSTOP: state T, neither running nor waiting for a CPU.
    let mut rig = Rig::new("stopped", &[("heartbeat-interval-ms", "20"), ("heartbeat-misses", "3")]);
    rig.start();
    let before = rig.status();
    let pid = before.pid.expect("running driver has a pid");
    nix::sys::signal::kill(Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGSTOP).unwrap();
    let after = rig
        .wait_status(Duration::from_secs(10), |s| s.generation > before.generation)
        .unwrap_or_else(|| panic!("no restart; log:\n{}", rig.log()));
    // No starved verdict delayed it (the default grace is 2 s).
    assert!(!rig.log().contains("waiting for a CPU"), "log:\n{}", rig.log());
    assert_eq!(after.last_failure.as_deref(), Some("hung (missed 3 heartbeats)"), "log:\n{}", rig.log());
}
