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
