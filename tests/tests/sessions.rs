//! Client sessions are bounded: one per connection, forgotten when idle
//! without a connection, and a full table says so.

use reinc_client::ClientError;
use reinc_proto::{CallError, ClientToSup};
use reinc_tests::{Answer, RawConn, Rig, read_req};
use std::time::Duration;

#[test]
fn repeated_hellos_on_one_connection_do_not_fill_the_session_table() {
    let mut rig = Rig::new("sess-hello", &[]);
    rig.set_supervisor_key("max-sessions", "4");
    rig.start();
    let raw = RawConn::connect(&rig);
    for _ in 0..32 {
        raw.send(&ClientToSup::Hello { resume: None });
        assert!(matches!(raw.recv(), Answer::Welcome(_)));
    }
    drop(raw);
    // Four clients at once, as many as the table holds.
    let mut clients: Vec<_> = (0..4).map(|_| rig.client()).collect();
    for c in &mut clients {
        assert!(c.call("storage_driver", &read_req(0, 1)).unwrap().is_ok());
    }
    // A fifth, with every session attached, gets the table's own error.
    match reinc_client::Client::connect(&reinc_client::client_socket(&rig.runtime)) {
        Err(ClientError::Refused { error: CallError::SessionsFull, .. }) => {}
        other => panic!("expected SessionsFull, got {other:?}"),
    }
}

#[test]
fn a_session_without_a_connection_is_forgotten_after_the_idle_timeout() {
    let mut rig = Rig::new("sess-idle", &[]);
    rig.set_supervisor_key("session-idle-timeout-ms", "300");
    rig.start();
    let mut c = rig.client();
    assert!(c.call("storage_driver", &read_req(0, 1)).unwrap().is_ok());
    let session = c.session();
    drop(c);
    assert!(
        rig.wait_sup_lines("forgot 1 client session(s) idle for 300ms", 1, Duration::from_secs(5)),
        "{}",
        rig.log()
    );
    let raw = RawConn::connect(&rig);
    raw.send(&ClientToSup::Hello { resume: Some(session) });
    assert_eq!(raw.recv(), Answer::Failed(0, CallError::NoSession));
}

/// Descriptors of process `pid` that are memfds named `name`.
fn memfds(pid: u32, name: &str) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| t.to_string_lossy().starts_with(&format!("/memfd:{name}")))
        .count()
}

#[test]
fn bye_forgets_the_session_at_once_and_it_cannot_be_resumed() {
    let mut rig = Rig::new("sess-bye", &[]);
    rig.start();
    let raw = RawConn::connect(&rig);
    raw.send(&ClientToSup::Hello { resume: None });
    let Answer::Welcome(session) = raw.recv() else { panic!("no welcome") };
    raw.send(&ClientToSup::Bye);
    drop(raw);
    // The default idle timeout is ten minutes; a goodbye does not wait.
    let raw = RawConn::connect(&rig);
    let forgotten = reinc_tests::wait_for(Duration::from_secs(5), || {
        raw.send(&ClientToSup::Hello { resume: Some(session) });
        (raw.recv() == Answer::Failed(0, CallError::NoSession)).then_some(())
    });
    assert!(forgotten.is_some(), "a session that said Bye can still be resumed; log:\n{}", rig.log());
    assert!(!rig.log().contains("forgot 1 client session(s) idle"), "a goodbye is not logged as an expiry");
}

#[test]
fn drvctl_and_reinc_nbd_say_bye_so_their_pools_leave_the_driver_at_once() {
    let mut rig = Rig::new("sess-bye-pools", &[]);
    rig.start();
    let pid = rig.status().pid.expect("driver pid");
    for _ in 0..3 {
        let w = rig.drvctl(&["blk", "write", "--bs", "32K", "--count", "4"]);
        assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
        let out = String::from_utf8_lossy(&w.stdout).to_string();
        assert!(out.contains("data through a shared pool"), "{out}");
    }
    let gone = reinc_tests::wait_for(Duration::from_secs(5), || (memfds(pid, "drvctl-blk") == 0).then_some(()));
    assert!(gone.is_some(), "{} drvctl pools still held by the driver", memfds(pid, "drvctl-blk"));
    let nbd = reinc_tests::nbd::NbdServer::start(&rig, &[]);
    for i in 0..3 {
        let (mut c, _) = reinc_tests::nbd::RawNbd::go(&nbd.socket);
        assert!(c.read(i, 0, 4096).is_ok());
        c.request(reinc_tests::nbd::spec::DISC, 0, 99, 0, 0, &[]);
        assert!(c.closed_by_server(), "DISC ends the connection");
    }
    let gone = reinc_tests::wait_for(Duration::from_secs(5), || (memfds(pid, "reinc-nbd") == 0).then_some(()));
    assert!(gone.is_some(), "{} NBD pools still held by the driver; log:\n{}", memfds(pid, "reinc-nbd"), nbd.log());
    assert_eq!(rig.status().generation, 1);
}
