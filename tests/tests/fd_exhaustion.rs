//! A flood of idle connections under a small `RLIMIT_NOFILE` does not make
//! the supervisor spin, lock the operator out, or cost a crashed driver its
//! relaunch; `drvctl` never waits for ever.

use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, setsockopt, socket, sockopt};
use reinc_tests::{Rig, bins, cpu_time, wait_for};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts the rig's supervisor under `prlimit --nofile=N:N` (prlimit execs
/// it, so the pid is the supervisor's).
fn start_with_nofile(rig: &mut Rig, nofile: u32) {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(rig.dir.join("supervisor.log")).unwrap();
    let child = Command::new("prlimit")
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg(&bins().supervisor)
        .arg("--config")
        .arg(&rig.config)
        .arg("--runtime-dir")
        .arg(&rig.runtime)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("prlimit (util-linux) runs the supervisor");
    rig.child = Some(child);
    assert!(rig.wait_status(Duration::from_secs(10), |s| s.state.name() == "running").is_some(), "{}", rig.log());
}

/// Opens a connection that never sends anything (`None` if refused).
fn idle_connection(rig: &Rig) -> Option<OwnedFd> {
    let addr = UnixAddr::new(&reinc_client::client_socket(&rig.runtime)).unwrap();
    let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).unwrap();
    setsockopt(&fd, sockopt::SendTimeout, &nix::sys::time::TimeVal::new(1, 0)).unwrap();
    connect(fd.as_raw_fd(), &addr).ok().map(|()| fd)
}

#[test]
fn a_flood_of_idle_connections_neither_spins_nor_locks_out_the_operator_nor_quarantines_a_driver() {
    let mut rig = Rig::new("fd-flood", &[("max-restarts", "3")]);
    start_with_nofile(&mut rig, 96);
    let pid = rig.supervisor_pid().as_raw() as u32;
    // Three times what the descriptor limit allows.
    let mut conns: Vec<OwnedFd> = Vec::new();
    for _ in 0..300 {
        // A connect that blocks for its 1 s timeout means the backlog is
        // full: the supervisor stopped taking connections off it.
        let Some(fd) = idle_connection(&rig) else { break };
        conns.push(fd);
    }
    assert_eq!(conns.len(), 300, "connections beyond the cap are accepted and closed, not left pending");
    let cpu0 = cpu_time(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_time(pid) - cpu0;
    assert!(cpu < Duration::from_millis(300), "supervisor used {cpu:?} of CPU in {:?} while flooded", t0.elapsed());
    // The operator still gets in.
    let out = rig.drvctl(&["--timeout", "5", "status"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A driver crash meanwhile is relaunched, with descriptors from the reserve.
    let st = rig.status();
    kill(nix::unistd::Pid::from_raw(st.pid.unwrap() as i32), Signal::SIGSEGV).unwrap();
    let back =
        rig.wait_status(Duration::from_secs(10), |s| s.generation > st.generation && s.state.name() == "running");
    assert!(back.is_some(), "driver not relaunched: {:?}\n{}", rig.try_status(), rig.log());
    assert!(!rig.sup_lines("refusing connections (max-connections reached)").is_empty(), "{}", rig.log());
    // One line per 1024 refusals, not one per connection.
    assert!(rig.sup_lines("refusing connections").len() <= 2, "{}", rig.log());
    drop(conns);
}

#[test]
fn drvctl_gives_up_after_its_timeout_when_the_supervisor_does_not_answer() {
    let mut rig = Rig::new("fd-timeout", &[]);
    rig.start();
    let pid = rig.supervisor_pid();
    kill(pid, Signal::SIGSTOP).unwrap();
    let t0 = Instant::now();
    let mut child = Command::new(&bins().drvctl)
        .arg("--runtime-dir")
        .arg(&rig.runtime)
        .args(["--timeout", "0.5", "status"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten());
    let elapsed = t0.elapsed();
    if status.is_none() {
        let _ = child.kill();
    }
    let _ = kill(pid, Signal::SIGCONT);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(status.is_some(), "drvctl still waiting after {elapsed:?}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no answer from the supervisor at") && err.contains("within 500ms"), "{err}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}
