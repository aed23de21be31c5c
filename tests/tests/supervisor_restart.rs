//! A new supervisor on the same disk: what one lifetime did must never be
//! mistaken for, or overwritten by, what the next one does.
//!
//! The sequences are the ones issue 13 reported with the shipped binaries and
//! the default config (`durability = "memory"`, no persisted checkpoint):
//! - a write of supervisor B carried the same `(client, seq)` as supervisor
//!   A's last write, so the device-side watermark took it for a replay and
//!   skipped it (`write 100` answered `Written`, block 100 stayed zero);
//! - B's first append answered `Appended { lba: 0 }` and overwrote A's block.

use nix::sys::signal::Signal;
use reinc_tests::{Reply, Rig, read_req, reply, request, write_req};
use storage_core::{BLOCK_SIZE, StorageRequest};

fn write(rig: &Rig, lba: u64, fill: u8) -> Reply {
    let mut c = rig.client();
    reply(&c.call("storage_driver", &write_req(lba, 1, fill)).unwrap().unwrap())
}

fn read(rig: &Rig, lba: u64) -> Vec<u8> {
    let mut c = rig.client();
    match reply(&c.call("storage_driver", &read_req(lba, 1)).unwrap().unwrap()) {
        Reply::Data(d) => d,
        other => panic!("read {lba}: {other:?}"),
    }
}

fn append(rig: &Rig, fill: u8) -> Reply {
    let mut c = rig.client();
    reply(&c.call("storage_driver", &request(&StorageRequest::Append { data: &[fill; BLOCK_SIZE] })).unwrap().unwrap())
}

/// Supervisor A writes, is stopped with `sig`, supervisor B writes another
/// block: B's write is applied and reads back.
fn write_survives_a_new_supervisor(tag: &str, sig: Signal) {
    let mut rig = Rig::new(tag, &[]);
    rig.start();
    assert_eq!(write(&rig, 7, 170), Reply::Written(7, 1));
    let _ = rig.stop_supervisor(sig);
    rig.start();
    assert_eq!(write(&rig, 100, 187), Reply::Written(100, 1));
    assert_eq!(read(&rig, 100), vec![187; BLOCK_SIZE], "supervisor B's write was skipped as a replay");
    assert_eq!(read(&rig, 7), vec![170; BLOCK_SIZE]);
    assert_eq!(rig.superblock().applied_count, 2, "both writes applied once each");
}

#[test]
fn a_write_after_sigterm_and_a_new_supervisor_is_applied() {
    write_survives_a_new_supervisor("ids-term", Signal::SIGTERM);
}

#[test]
fn a_write_after_sigkill_and_a_new_supervisor_is_applied() {
    write_survives_a_new_supervisor("ids-kill", Signal::SIGKILL);
}

#[test]
fn writes_of_several_clients_across_several_restarts_are_all_applied() {
    let mut rig = Rig::new("ids-many", &[]);
    let mut expected = Vec::new();
    for life in 0..4u64 {
        rig.start();
        // Three sessions per lifetime, opened in the same order every time;
        // the first two only read (reads leave the watermark alone), the
        // third writes once: with ids that restart, every lifetime's write
        // carries the (session, seq, committed writes) of the one before.
        let mut clients: Vec<_> = (0..3).map(|_| rig.client()).collect();
        for c in &mut clients[..2] {
            assert!(matches!(reply(&c.call("storage_driver", &read_req(0, 1)).unwrap().unwrap()), Reply::Data(_)));
        }
        let lba = 10 + life;
        let fill = 0x40 + life as u8;
        let r = reply(&clients[2].call("storage_driver", &write_req(lba, 1, fill)).unwrap().unwrap());
        assert_eq!(r, Reply::Written(lba, 1));
        expected.push((lba, fill));
        let sig = if life % 2 == 0 { Signal::SIGKILL } else { Signal::SIGTERM };
        let _ = rig.stop_supervisor(sig);
    }
    rig.start();
    for (lba, fill) in &expected {
        assert_eq!(read(&rig, *lba), vec![*fill; BLOCK_SIZE], "block {lba}");
    }
    assert_eq!(rig.superblock().applied_count, expected.len() as u64);
}

#[test]
fn appends_after_a_new_supervisor_do_not_overwrite_old_blocks() {
    for (tag, sig) in [("append-term", Signal::SIGTERM), ("append-kill", Signal::SIGKILL)] {
        let mut rig = Rig::new(tag, &[]);
        rig.start();
        assert_eq!(append(&rig, 0x11), Reply::Appended(0, 1));
        assert_eq!(append(&rig, 0x22), Reply::Appended(1, 1));
        let _ = rig.stop_supervisor(sig);
        rig.start();
        assert_eq!(append(&rig, 0x33), Reply::Appended(2, 1), "{tag}: the append cursor started over");
        assert_eq!(rig.disk_block(0), vec![0x11; BLOCK_SIZE], "{tag}");
        assert_eq!(rig.disk_block(1), vec![0x22; BLOCK_SIZE], "{tag}");
        assert_eq!(rig.disk_block(2), vec![0x33; BLOCK_SIZE], "{tag}");
        // A write between appends moves nothing; the next append follows.
        assert_eq!(write(&rig, 500, 0x44), Reply::Written(500, 1));
        let _ = rig.stop_supervisor(sig);
        rig.start();
        assert_eq!(append(&rig, 0x55), Reply::Appended(3, 1), "{tag}");
    }
}

/// Runs `drvctl blk write` of `mib` MiB, SIGKILLs the supervisor once the
/// driver has applied a few of its writes, and starts a new supervisor
/// `gap` later; returns drvctl's output.
fn kill_during_blk_write(rig: &mut Rig, mib: u64, gap: std::time::Duration) -> std::process::Output {
    let count = (mib * 1024 * 1024 / 32768).to_string();
    let mut cmd = std::process::Command::new(&reinc_tests::bins().drvctl);
    cmd.arg("--runtime-dir").arg(&rig.runtime).args(["blk", "write", "--bs", "32768", "--count", &count]);
    let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let started = reinc_tests::wait_for(std::time::Duration::from_secs(20), || {
        (std::fs::read_to_string(rig.dir.join("exec.log")).unwrap_or_default().lines().count() >= 8).then_some(())
    });
    assert!(started.is_some(), "blk write did not start; log:\n{}", rig.log());
    assert!(child.try_wait().unwrap().is_none(), "blk write finished before the kill: make it larger");
    let _ = rig.stop_supervisor(Signal::SIGKILL);
    std::thread::sleep(gap);
    rig.start();
    child.wait_with_output().unwrap()
}

/// Issue 13, item 3: drvctl's reconnect used to reach the dying supervisor,
/// get ECONNRESET and give up at once instead of using its retry window.
/// With `memory` durability the new supervisor cannot know the session, so
/// the honest outcome is "unknown outcome", never a connection error.
#[test]
fn a_client_rides_out_a_supervisor_sigkill_without_a_connection_error() {
    // The race is in the timing (the issue saw it in 16 of 24 trials): two
    // trials with the gaps it reported.
    for gap_ms in [1000, 2000] {
        let mut rig = Rig::new("kill-blk-memory", &[]);
        rig.set_disk_blocks(64 * 1024);
        rig.start();
        let out = kill_during_blk_write(&mut rig, 32, std::time::Duration::from_millis(gap_ms));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("ECONNRESET") && !stderr.contains("did not come back"), "{gap_ms} ms: {stderr}");
        assert!(
            out.status.success() || stderr.contains("no longer knows session"),
            "{gap_ms} ms: status {:?}, stderr: {stderr}",
            out.status
        );
    }
}
