//! systemd as the supervisor's supervisor, played without a running
//! systemd: the test binds `NOTIFY_SOCKET` itself and checks what arrives.
//! The unit file is checked with `systemd-analyze verify` where installed.

use nix::sys::signal::Signal;
use reinc_tests::Rig;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// Datagrams received within `window`.
fn messages(s: &UnixDatagram, window: Duration, until: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !until(&got) {
        s.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))))
            .unwrap();
        if let Ok(n) = s.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[test]
fn ready_status_watchdog_and_stopping_reach_an_abstract_notify_socket() {
    let name = format!("reinc-test-notify-{}", std::process::id());
    let sock = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    let mut rig = Rig::new("sd-notify", &[]);
    let at = format!("@{name}");
    rig.spawn_with_env(&[("NOTIFY_SOCKET", &at), ("WATCHDOG_USEC", "200000")]);
    let got = messages(&sock, Duration::from_secs(10), |m| m.iter().any(|l| l.starts_with("READY=1")));
    let ready =
        got.iter().find(|m| m.starts_with("READY=1")).unwrap_or_else(|| panic!("no READY=1: {got:?}\n{}", rig.log()));
    assert!(ready.contains("\nSTATUS=1 of 1 drivers running, 0 quarantined"), "{ready}");
    // READY=1 once the driver runs, not before.
    assert_eq!(rig.status().state.name(), "running");
    // The watchdog is pinged every 100 ms (half of WATCHDOG_USEC).
    let pings = messages(&sock, Duration::from_millis(700), |_| false);
    let n = pings.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!((3..=12).contains(&n), "{n} pings in 700 ms: {pings:?}");
    // A driver does not inherit the socket (it is the supervisor's).
    let pid = rig.status().pid.unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains("NOTIFY_SOCKET"));
    assert!(rig.stop_supervisor(Signal::SIGTERM).success());
    let rest = messages(&sock, Duration::from_secs(2), |m| m.iter().any(|l| l.starts_with("STOPPING=1")));
    assert!(rest.iter().any(|m| m.starts_with("STOPPING=1\nSTATUS=stopping drivers (SIGTERM)")), "{rest:?}");
}

#[test]
fn without_notify_socket_nothing_is_sent_and_the_supervisor_runs_the_same() {
    let mut rig = Rig::new("sd-none", &[]);
    rig.start();
    assert!(!rig.log().contains("NOTIFY_SOCKET"), "{}", rig.log());
    let mut bad = Rig::new("sd-bad", &[]);
    bad.spawn_with_env(&[("NOTIFY_SOCKET", "relative/path")]);
    assert!(bad.wait_sup_lines(
        "NOTIFY_SOCKET=\"relative/path\": must be an absolute path",
        1,
        Duration::from_secs(10)
    ));
    assert!(bad.wait_status(Duration::from_secs(10), |s| s.state.name() == "running").is_some());
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let unit =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../host-supervisor/supervisor/reinc-supervisor.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for key in ["Type=notify", "Restart=always", "WatchdogSec=", "RestartSec=", "KillMode=mixed"] {
        assert!(text.lines().any(|l| l.starts_with(key)), "{} lacks {key}", unit.display());
    }
    let Ok(out) = std::process::Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: the unit's keys were checked, `verify` was not run");
        return;
    };
    assert!(out.status.success());
    // verify wants ExecStart= to exist: point it at the binary under test.
    let dir = std::env::temp_dir().join(format!("reinc-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("reinc-supervisor.service");
    let exe = reinc_tests::bins().supervisor.display().to_string();
    std::fs::write(&copy, text.replace("/usr/local/bin/supervisor", &exe)).unwrap();
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&copy).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
