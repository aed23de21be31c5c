//! The allow-list, installed by a real process on this kernel: the calls on
//! it keep working and one off it ends the process by `SIGSYS`.
//!
//! The test binary runs itself again as the child (`SANDBOX_TEST_CHILD`), so
//! that the filter never lands on the test harness.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

const CHILD: &str = "SANDBOX_TEST_CHILD";

/// In the child: filter, prove allowed calls work, then make a denied one.
fn child(step: &str) {
    reinc_sandbox::install_seccomp().expect("install the filter");
    // Allowed: getpid, write (println), clock_gettime.
    let _ = std::time::Instant::now();
    println!("filtered pid {}", std::process::id());
    if step == "socket" {
        // Denied: a compromised driver would want a socket.
        let r = std::net::TcpListener::bind("127.0.0.1:0");
        println!("socket: {r:?}: not killed");
    } else {
        // Denied: and a new process (clone, then execve).
        let r = Command::new("/bin/true").status();
        println!("spawn: {r:?}: not killed");
    }
    std::process::exit(0);
}

fn run(step: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "the_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD, step)
        .output()
        .expect("run the test binary as the child")
}

/// Not a test: the child's entry point, run only by the test below.
#[test]
#[ignore = "the child process of a_filtered_process_keeps_its_calls_and_dies_by_sigsys_on_a_denied_one"]
fn the_child() {
    if let Ok(step) = std::env::var(CHILD) {
        child(&step);
    }
}

#[test]
fn a_filtered_process_keeps_its_calls_and_dies_by_sigsys_on_a_denied_one() {
    for step in ["socket", "spawn"] {
        let out = run(step);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("filtered pid "), "{step}: the allowed calls failed: {stdout}");
        assert!(!stdout.contains("not killed"), "{step}: {stdout}");
        assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{step}: {:?}; {stdout}", out.status);
    }
}
