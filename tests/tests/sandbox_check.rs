//! The supervisor's own check of a driver's sandbox (`/proc/PID/status`
//! after `Ready`, CONTRACTS.md §9): a binary that skips its sandbox gets no
//! request, and a spawned instance gets nothing but `Init` before its
//! `Ready` and that check, even when the file it replaced had passed.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reinc_tests::{Reply, Rig, assert_no_duplicate_execution, bins, reply, write_req};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// `path`, made by renaming a new file over it (a new inode, as a package
/// upgrade or `cargo build` does), with `text` and mode 755.
fn replace_with_script(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A driver executable that runs the real storage_driver but keeps it out
/// of its sandbox: the runtime sandboxes itself only when the supervisor's
/// variable says so, and this wrapper drops it.
fn unsandboxed_script() -> String {
    format!("#!/bin/sh\nunset REINC_SANDBOX\nexec {} \"$@\"\n", bins().storage_driver.display())
}

fn sandboxed_script() -> String {
    format!("#!/bin/sh\nexec {} \"$@\"\n", bins().storage_driver.display())
}

/// A rig whose storage_driver is launched through `dir/driver` (a script
/// with `text`), so that the test can replace that file.
fn rig_with_exec(tag: &str, text: &str, overrides: &[(&str, &str)]) -> (Rig, PathBuf) {
    let rig = Rig::new(tag, overrides);
    let exe = rig.dir.join("driver");
    replace_with_script(&exe, text);
    let config = std::fs::read_to_string(&rig.config).unwrap();
    let real = bins().storage_driver.display().to_string();
    let config = config.replacen(&format!("exec = \"{real}\""), &format!("exec = \"{}\"", exe.display()), 1);
    std::fs::write(&rig.config, config).unwrap();
    (rig, exe)
}

#[test]
fn a_driver_that_does_not_enter_its_sandbox_is_killed_before_any_request() {
    let (mut rig, _) = rig_with_exec("sandbox-skipped", &unsandboxed_script(), &[("max-restarts", "3")]);
    rig.spawn();
    assert!(rig.wait_sup_lines("did not enter its sandbox", 1, T), "log:\n{}", rig.log());
    let mut client = rig.client();
    let call = client.submit("storage_driver", &write_req(5, 1, 0x42)).unwrap();
    let c = client.wait().unwrap();
    assert_eq!(c.seq, call);
    assert!(c.result.is_err(), "a definite failure once quarantined, got {:?}", c.result);
    assert!(rig.exec_log().is_empty(), "an unsandboxed instance executed {:?}", rig.exec_log());
    assert_eq!(rig.disk_block(5), vec![0; storage_core::BLOCK_SIZE], "nothing written");
}

/// A "driver" that never answers `Init`: it copies whatever reaches its
/// channel into `out` (`cat` reads one frame per `read`), so the test sees
/// what the supervisor sent before any `Ready` (appended: every launch of
/// it adds what it got).
fn recorder_script(out: &Path) -> String {
    format!("#!/bin/sh\nexec cat >> {}\n", out.display())
}

#[test]
fn a_restarted_instance_gets_no_replay_before_its_ready_and_sandbox_check() {
    let (mut rig, exe) = rig_with_exec("sandbox-replaced", &sandboxed_script(), &[("init-timeout-ms", "1000")]);
    rig.start();
    // The first instance passed the check.
    let mut client = rig.client();
    let r = client.call("storage_driver", &write_req(1, 1, 0x11)).unwrap().unwrap();
    assert_eq!(reply(&r), Reply::Written(1, 1));
    let first = rig.status();
    // Its file is replaced (a new inode, as an upgrade does) by one that
    // records what reaches it; the running instance is frozen with writes
    // queued, and killed.
    let received = rig.dir.join("received");
    replace_with_script(&exe, &recorder_script(&received));
    let pid = Pid::from_raw(first.pid.unwrap() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let seqs: Vec<u64> =
        (10..18).map(|lba| client.submit("storage_driver", &write_req(lba, 1, 0x22)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(50));
    kill(pid, Signal::SIGKILL).unwrap();
    assert!(rig.wait_sup_lines("init timeout", 1, T), "the new file never timed out its Init; log:\n{}", rig.log());
    // The new file got Init and nothing else: not one queued write.
    let got = std::fs::read(&received).unwrap_or_default();
    assert!(!got.is_empty(), "Init was sent");
    assert!(!got.windows(64).any(|w| w.iter().all(|&b| b == 0x22)), "a queued write reached an unchecked file");
    // The real driver back: the queued writes run, each once, and every
    // call is answered.
    replace_with_script(&exe, &sandboxed_script());
    for _ in &seqs {
        let c = client.wait().unwrap();
        assert!(seqs.contains(&c.seq));
        assert!(matches!(reply(&c.result.unwrap()), Reply::Written(_, 1)));
    }
    assert_no_duplicate_execution(&rig.exec_log());
    for lba in 10..18 {
        assert_eq!(rig.disk_block(lba), vec![0x22; storage_core::BLOCK_SIZE]);
    }
}
