//! Persisted checkpoints: restored across a supervisor restart; a torn or
//! corrupt file is refused with an error naming it.

use nix::sys::signal::Signal;
use reinc_tests::{Reply, Rig, reply, request, wait_for};
use std::fs;
use std::time::Duration;
use storage_core::{BLOCK_SIZE, StorageRequest};

fn append(rig: &Rig, fill: u8) -> Reply {
    let mut c = rig.client();
    reply(&c.call("storage_driver", &request(&StorageRequest::Append { data: &[fill; BLOCK_SIZE] })).unwrap().unwrap())
}

fn ckpt(rig: &Rig) -> std::path::PathBuf {
    rig.dir.join("state/storage_driver.ckpt")
}

/// A rig whose driver has committed three appends, then stopped.
fn rig_with_checkpoint(tag: &str, overrides: &[(&str, &str)]) -> Rig {
    let mut o = vec![("persist-checkpoint", "true")];
    o.extend_from_slice(overrides);
    let mut rig = Rig::new(tag, &o);
    rig.start();
    for (i, fill) in [0x11, 0x22, 0x33].into_iter().enumerate() {
        assert_eq!(append(&rig, fill), Reply::Appended(i as u64, 1));
    }
    assert!(rig.stop_supervisor(Signal::SIGTERM).success());
    assert!(ckpt(&rig).exists());
    rig
}

/// Waits for the supervisor to exit on its own; returns its exit code.
fn exit_code(rig: &mut Rig) -> Option<i32> {
    let mut child = rig.child.take().unwrap();
    let st = wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten());
    if st.is_none() {
        let _ = child.kill();
    }
    st.and_then(|s| s.code())
}

#[test]
fn checkpoint_survives_a_supervisor_restart() {
    let mut rig = rig_with_checkpoint("ckpt-restart", &[]);
    rig.start();
    // The append cursor is committed state: without the checkpoint the next
    // append would land on block 0 again.
    assert_eq!(append(&rig, 0x44), Reply::Appended(3, 1));
    assert!(!rig.sup_lines("restored checkpoint of storage_driver").is_empty(), "{}", rig.log());
    assert_eq!(rig.disk_block(0), vec![0x11; BLOCK_SIZE]);
    assert_eq!(rig.disk_block(3), vec![0x44; BLOCK_SIZE]);
}

#[test]
fn corrupted_checkpoint_gives_a_clear_error_naming_the_file() {
    let mut rig = rig_with_checkpoint("ckpt-corrupt", &[]);
    let path = ckpt(&rig);
    let mut bytes = fs::read(&path).unwrap();
    *bytes.last_mut().unwrap() ^= 0xFF;
    fs::write(&path, &bytes).unwrap();
    rig.spawn();
    assert_eq!(exit_code(&mut rig), Some(1), "log:\n{}", rig.log());
    let log = rig.log();
    assert!(log.contains(&format!("checkpoint {}: checksum mismatch", path.display())), "{log}");
    assert!(log.contains("refusing to start storage_driver"), "{log}");
}

#[test]
fn torn_checkpoint_is_refused() {
    let mut rig = rig_with_checkpoint("ckpt-torn", &[]);
    let path = ckpt(&rig);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    rig.spawn();
    assert_eq!(exit_code(&mut rig), Some(1));
    assert!(rig.log().contains(&format!("checkpoint {}: torn file", path.display())), "{}", rig.log());
}

#[test]
fn corrupt_checkpoint_starts_fresh_only_when_configured() {
    let mut rig = rig_with_checkpoint("ckpt-fresh", &[("on-corrupt-checkpoint", "\"start-fresh\"")]);
    fs::write(ckpt(&rig), b"garbage").unwrap();
    rig.start();
    assert!(rig.log().contains("bad magic"), "{}", rig.log());
    assert!(rig.log().contains("starting storage_driver from its initial state"), "{}", rig.log());
}
