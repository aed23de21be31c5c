//! Inputs that used to get a wrong or confusing answer: an `Inject` the
//! driver will never fire, a driver name too long to quote back, and a
//! `drvctl blk write` from a file shorter than asked.

use reinc_client::control::{ControlRequest, ControlResponse};
use reinc_proto::{CrashKind, CrashPoint, FaultPlan};
use reinc_tests::{Answer, RawConn, Rig};
use storage_core::BLOCK_SIZE;

#[test]
fn an_empty_frame_is_rejected_and_the_connection_stays_usable() {
    let mut rig = Rig::new("gap-empty", &[]);
    rig.start();
    let raw = RawConn::connect(&rig);
    raw.send_raw(&[]);
    assert_eq!(raw.recv(), Answer::Rejected(reinc_proto::WireError::Truncated));
    raw.send(&reinc_proto::ClientToSup::Hello { resume: None });
    assert!(matches!(raw.recv(), Answer::Welcome(_)));
}

#[test]
fn inject_that_the_driver_would_never_fire_is_refused() {
    let mut rig = Rig::new("gap-inject", &[]);
    rig.start();
    let zero = FaultPlan { point: CrashPoint::AfterEffect, on_request: 0, kind: CrashKind::Segv };
    let resp = rig.control(&ControlRequest::Inject { driver: "storage_driver".into(), plan: zero });
    let ControlResponse::Error(e) = resp else { panic!("on_request = 0 was accepted: {resp:?}") };
    assert!(e.contains("storage_driver: fault plan after-effect:0:segv is refused") && e.contains("at least 1"), "{e}");
    let init = FaultPlan { point: CrashPoint::Init, on_request: 1, kind: CrashKind::Exit };
    let resp = rig.control(&ControlRequest::Inject { driver: "storage_driver".into(), plan: init });
    let ControlResponse::Error(e) = resp else { panic!("an init plan was accepted: {resp:?}") };
    assert!(e.contains("only be armed at launch"), "{e}");
    // A valid plan still arms.
    rig.inject("before-effect:1000:segv");
}

#[test]
fn a_huge_driver_name_gets_no_such_driver_quoted_short() {
    let mut rig = Rig::new("gap-name", &[]);
    rig.start();
    let name = "n".repeat(69_000);
    for req in [ControlRequest::Restart { driver: name.clone() }, ControlRequest::Trace { driver: name.clone() }] {
        let ControlResponse::Error(e) = rig.control(&req) else { panic!("accepted") };
        assert!(e.starts_with("no driver named \"nnnn"), "{}", &e[..e.len().min(200)]);
        assert!(e.contains("… (69000 bytes) is configured") && e.len() < 200, "{}", &e[..e.len().min(200)]);
    }
}

#[test]
fn blk_write_from_a_short_file_writes_nothing_unless_padding_is_asked() {
    let mut rig = Rig::new("gap-short", &[]);
    rig.start();
    let src = rig.dir.join("short.bin");
    std::fs::write(&src, vec![0xAB; BLOCK_SIZE * 3]).unwrap();
    let bs = BLOCK_SIZE.to_string();
    let args = ["blk", "write", "--bs", bs.as_str(), "--count", "4", "--file", src.to_str().unwrap()];
    let out = rig.drvctl(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{} has {} bytes, less than --bs × --count = {}",
            src.display(),
            BLOCK_SIZE * 3,
            BLOCK_SIZE * 4
        )) && err.contains("nothing written"),
        "{err}"
    );
    assert!(rig.exec_log().is_empty(), "a write was executed: {:?}", rig.exec_log());
    // With --pad the missing block is zeros.
    let mut padded = args.to_vec();
    padded.push("--pad");
    let out = rig.drvctl(&padded);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(rig.disk_block(2), vec![0xAB; BLOCK_SIZE]);
    assert_eq!(rig.disk_block(3), vec![0; BLOCK_SIZE]);
}
