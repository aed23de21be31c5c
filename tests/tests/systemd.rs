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

/// The next datagram with a descriptor attached, within `window`: its text
/// and the descriptor (what systemd's fd store receives).
fn stored_fd(s: &UnixDatagram, window: Duration) -> Option<(String, std::os::fd::OwnedFd)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    use std::mem::MaybeUninit;
    let deadline = Instant::now() + window;
    while Instant::now() < deadline {
        s.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 4096];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let Ok(got) = recvmsg(s, &mut [std::io::IoSliceMut::new(&mut buf)], &mut control, RecvFlags::CMSG_CLOEXEC)
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..got.bytes]).into_owned();
        let mut fds: Vec<std::os::fd::OwnedFd> = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(passed) = m {
                fds.extend(passed);
            }
        }
        if let Some(fd) = fds.pop() {
            assert!(fds.is_empty(), "{text}: more than one descriptor");
            return Some((text, fd));
        }
    }
    None
}

#[test]
fn the_client_socket_waits_in_the_fd_store_while_the_supervisor_restarts() {
    let name = format!("reinc-test-fdstore-{}", std::process::id());
    let sock = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    let at = format!("@{name}");
    // `FDSTORE` is what systemd sets from the unit's FileDescriptorStoreMax=.
    let env = [("NOTIFY_SOCKET", at.as_str()), ("FDSTORE", "1")];
    let mut rig = Rig::new("sd-fdstore", &[]);
    rig.spawn_with_env(&env);
    let (text, listener) = stored_fd(&sock, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no descriptor reached the fd store\n{}", rig.log()));
    assert_eq!(text, "FDSTORE=1\nFDNAME=client");
    rig.start_wait();
    // The supervisor dies; systemd (here the test) still holds the socket.
    rig.stop_supervisor(Signal::SIGKILL);
    // A client connecting now waits in the backlog instead of being refused.
    let early = reinc_tests::RawConn::connect(&rig);
    early.send(&reinc_proto::ClientToSup::Hello { resume: None });
    // The new supervisor gets the socket back as systemd passes it.
    rig.spawn_with_listen_fd(listener, "client", &env);
    assert!(
        matches!(early.recv(), reinc_tests::Answer::Welcome(_)),
        "the connection made while no supervisor ran was not served\n{}",
        rig.log()
    );
    rig.start_wait();
    assert_eq!(rig.sup_lines("took the client socket").len(), 1, "{}", rig.log());
    // Taken back, not stored a second time.
    assert!(stored_fd(&sock, Duration::from_millis(500)).is_none());
    // A clean stop keeps the path the stored socket is bound to.
    assert!(rig.stop_supervisor(Signal::SIGTERM).success());
    assert!(reinc_client::client_socket(&rig.runtime).exists(), "{}", rig.log());
}

#[test]
fn without_an_fd_store_nothing_is_stored_and_a_clean_stop_removes_the_socket() {
    let name = format!("reinc-test-nostore-{}", std::process::id());
    let sock = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    let at = format!("@{name}");
    let mut rig = Rig::new("sd-nostore", &[]);
    rig.spawn_with_env(&[("NOTIFY_SOCKET", &at)]);
    rig.start_wait();
    assert!(stored_fd(&sock, Duration::from_millis(500)).is_none(), "stored without FDSTORE");
    assert!(rig.stop_supervisor(Signal::SIGTERM).success());
    assert!(!reinc_client::client_socket(&rig.runtime).exists());
}
