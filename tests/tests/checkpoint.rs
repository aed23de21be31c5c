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

/// Failed attempts in an episode, from `checkpoint_error` ("... (N attempts over ...)").
fn attempts(s: &reinc_client::control::DriverStatus) -> u32 {
    let e = s.checkpoint_error.as_deref().unwrap_or("");
    e.rsplit_once(" attempts over")
        .and_then(|(head, _)| head.rsplit_once('('))
        .map_or(0, |(_, n)| n.parse().unwrap_or(0))
}

#[test]
fn a_failing_checkpoint_write_holds_replies_until_it_succeeds() {
    const T: Duration = Duration::from_secs(10);
    let mut rig = Rig::new("ckpt-hold", &[("persist-checkpoint", "true")]);
    rig.start();
    let path = ckpt(&rig);
    // Make the checkpoint unwritable in a way that holds for root too
    // (chmod does not stop root): a directory where the file goes makes the
    // rename of the new file fail with EISDIR.
    fs::create_dir_all(path.join("in-the-way")).unwrap();
    let mut client = rig.client();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        for fill in [0x11u8, 0x22] {
            client.submit("storage_driver", &request(&StorageRequest::Append { data: &[fill; BLOCK_SIZE] })).unwrap();
        }
        for _ in 0..2 {
            let c = client.wait().unwrap();
            tx.send((c.seq, reply(&c.result.unwrap()))).unwrap();
        }
    });
    assert!(rig.wait_sup_lines("cannot persist the checkpoint of storage_driver", 1, T), "{}", rig.log());
    let line = &rig.sup_lines("cannot persist the checkpoint of storage_driver")[0];
    assert!(
        line.starts_with(&format!("[SUP] cannot persist the checkpoint of storage_driver to {}: ", path.display()))
    );
    assert!(line.ends_with("(replies held, retrying)"), "{line}");
    // Both appends executed, neither reply may leave: the state they commit
    // is not durable.
    let st = rig.wait_status(T, |s| s.held_replies == 2 && attempts(s) >= 3).expect("held replies and retries");
    assert!(rx.try_recv().is_err(), "a reply left before its checkpoint was durable");
    assert!(st.checkpoint_error.unwrap().contains(&path.display().to_string()));
    assert_eq!(st.state.name(), "running");
    let out = rig.drvctl(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["held_replies"], 2, "{json}");
    assert!(json[0]["checkpoint_error"].as_str().is_some_and(|e| e.contains("cannot persist to")), "{json}");
    let table = String::from_utf8_lossy(&rig.drvctl(&["status"]).stdout).into_owned();
    assert!(table.contains("checkpoint not durable, 2 replies held"), "{table}");
    assert_eq!(rig.sup_lines("cannot persist the checkpoint").len(), 1, "one line per episode:\n{}", rig.log());

    // Repair the disk: the retry succeeds and the held replies arrive, in order.
    fs::remove_dir_all(&path).unwrap();
    let first = rx.recv_timeout(T).expect("held reply released");
    let second = rx.recv_timeout(T).expect("held reply released");
    waiter.join().unwrap();
    assert_eq!([first.1, second.1], [Reply::Appended(0, 1), Reply::Appended(1, 1)]);
    assert!(first.0 < second.0);
    assert!(rig.wait_sup_lines("checkpoint of storage_driver persisted to", 1, T), "{}", rig.log());
    assert!(rig.sup_lines("checkpoint of storage_driver persisted to")[0].contains("releasing 2 held replies"));
    let st = rig.status();
    assert_eq!((st.held_replies, st.checkpoint_error), (0, None));
    // What the clients saw is what a restarted supervisor restores.
    assert!(rig.stop_supervisor(Signal::SIGTERM).success());
    rig.start();
    assert_eq!(append(&rig, 0x33), Reply::Appended(2, 1));
}
