//! Bad configs, malformed frames, unknown versions, oversized messages and
//! unknown drivers get clear errors, and nothing accepted is lost.

use reinc_proto::{CallError, ClientToSup, MAX_FRAME, WireError};
use reinc_tests::{Answer, RawConn, Reply, Rig, bins, read_req, reply, write_req};
use std::process::Command;

#[test]
fn bad_config_is_rejected_with_every_error_listed() {
    let dir = std::env::temp_dir().join(format!("reinc-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        r#"
[supervisor]
colour = "blue"
client-socket-mode = "0999"

[[driver]]
name = "storage_driver"
exec = "/bin/true"
jitter-percent = 400
heartbeat-misses = "many"

[[driver]]
name = "net_driver"
window = 0
fault = "sometimes"
"#,
    )
    .unwrap();
    let out = Command::new(&bins().supervisor).arg("--config").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    for needle in [
        "supervisor: `colour`",
        "supervisor: `client-socket-mode`: must be an octal mode",
        "driver \"storage_driver\": `jitter-percent`",
        "driver \"storage_driver\": `heartbeat-misses`",
        "driver \"net_driver\": `exec`: is required",
        "driver \"net_driver\": `window`",
        "driver \"net_driver\": `fault`",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(err.contains("has 7 problem(s)"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn good_config_passes_check() {
    let rig = Rig::new("check", &[]);
    let out = Command::new(&bins().supervisor).arg("--config").arg(&rig.config).arg("--check").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn malformed_frames_get_clear_errors_and_lose_nothing() {
    let mut rig = Rig::new("frames", &[]);
    rig.start();
    // A well-behaved client with requests in flight the whole time.
    let mut good = rig.client();
    let seqs: Vec<u64> =
        (0..8).map(|i| good.submit("storage_driver", &write_req(i, 1, i as u8 + 1)).unwrap()).collect();

    let raw = RawConn::connect(&rig);
    raw.send_raw(&[reinc_proto::PROTOCOL_VERSION as u8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    assert_eq!(raw.recv(), Answer::Rejected(WireError::Malformed));
    let mut v99 = postcard::to_allocvec(&99u16).unwrap();
    v99.extend(postcard::to_allocvec(&ClientToSup::Hello { resume: None }).unwrap());
    raw.send_raw(&v99);
    assert_eq!(raw.recv(), Answer::Rejected(WireError::UnknownVersion { got: 99 }));
    raw.send_raw(&vec![0u8; MAX_FRAME + 100]);
    assert_eq!(raw.recv(), Answer::Rejected(WireError::Oversized { len: (MAX_FRAME + 100) as u32 }));
    let mut trailing = reinc_proto::encode_vec(&ClientToSup::Hello { resume: None }).unwrap();
    trailing.push(7);
    raw.send_raw(&trailing);
    assert_eq!(raw.recv(), Answer::Rejected(WireError::TrailingBytes { extra: 1 }));
    // An empty seqpacket frame reads as 0 bytes like EOF; the supervisor
    // tells them apart (no hang-up) and rejects it like any truncated frame.
    raw.send_raw(&[]);
    assert_eq!(raw.recv(), Answer::Rejected(WireError::Truncated));
    let raw = RawConn::connect(&rig);
    raw.send(&ClientToSup::Call { seq: 1, driver: "storage_driver", body: &read_req(0, 1), acked_below: 0 });
    assert_eq!(raw.recv(), Answer::Failed(1, CallError::NoSession));
    raw.send(&ClientToSup::Hello { resume: None });
    assert!(matches!(raw.recv(), Answer::Welcome(_)));
    raw.send(&ClientToSup::Call { seq: 1, driver: "no_such_driver", body: &read_req(0, 1), acked_below: 0 });
    assert_eq!(raw.recv(), Answer::Failed(1, CallError::UnknownDriver));
    let garbage_body = [0xEEu8; 3];
    raw.send(&ClientToSup::Call { seq: 2, driver: "storage_driver", body: &garbage_body, acked_below: 0 });
    // The driver answers a request it cannot parse with its own error.
    let Answer::Reply(2, body) = raw.recv() else { panic!("no reply to a bad body") };
    assert!(matches!(reply(&body), Reply::Error(_)));

    // Nothing the good client sent was lost or failed.
    let mut answered = Vec::new();
    while good.in_flight() > 0 {
        let c = good.wait().unwrap();
        let body = c.result.unwrap();
        assert!(matches!(reply(&body), Reply::Written(_, 1)));
        answered.push(c.seq);
    }
    answered.sort_unstable();
    assert_eq!(answered, seqs);
    assert_eq!(rig.status().state.name(), "running");
    assert_eq!(rig.status().restarts, 0);
}

#[test]
fn unknown_driver_and_bad_control_requests_get_clear_errors() {
    let mut rig = Rig::new("control", &[]);
    rig.start();
    let out = rig.drvctl(&["restart", "no_such_driver"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no driver named \"no_such_driver\""));
    let out = rig.drvctl(&["inject", "storage_driver", "sideways:1:segv"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad fault plan"));
    let out = rig.drvctl(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(rig.status().state.name(), "running");
}

#[test]
fn a_second_supervisor_on_the_same_sockets_is_refused() {
    let mut rig = Rig::new("twice", &[]);
    rig.start();
    let out = Command::new(&bins().supervisor)
        .arg("--config")
        .arg(&rig.config)
        .arg("--runtime-dir")
        .arg(&rig.runtime)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another supervisor is already listening on"), "{err}");
    // The first one is unaffected.
    assert_eq!(rig.status().state.name(), "running");
    assert_eq!(rig.status().generation, 1);
}

#[test]
fn drvctl_without_a_supervisor_names_the_socket() {
    let rig = Rig::new("nosup", &[]);
    let out = rig.drvctl(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to the supervisor at") && err.contains("control.sock"), "{err}");
}
