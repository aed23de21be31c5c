//! Another local user cannot hijack the sockets, clobber files through the
//! state directory, or forge a checkpoint.
//!
//! The tests run as root. A second user is simulated by `chown` to an unused
//! uid ([`OTHER`]) and, where a process of that user is needed, by running
//! the supervisor with `Command::uid`/`gid` (std sets them in the child just
//! before exec). No account is created, so nothing is left behind in
//! `/etc/passwd`; every file made for the other uid is in the rig's directory,
//! which is removed with it.

use nix::sys::signal::Signal;
use reinc_tests::{Rig, bins, request, wait_for};
use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;
use storage_core::{BLOCK_SIZE, StorageRequest};

/// An uid (and gid) no account uses on the test machines.
const OTHER: u32 = 54_321;

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs the supervisor of `rig` to its exit; returns (exit code, stderr).
fn run_to_exit(rig: &Rig) -> (Option<i32>, String) {
    let mut cmd = Command::new(&bins().supervisor);
    cmd.arg("--config").arg(&rig.config).arg("--runtime-dir").arg(&rig.runtime);
    reinc_tests::run_to_exit(cmd)
}

#[test]
fn a_runtime_dir_that_others_can_write_is_refused_naming_it() {
    let rig = Rig::new("lu-wide", &[]);
    fs::create_dir(&rig.runtime).unwrap();
    fs::set_permissions(&rig.runtime, fs::Permissions::from_mode(0o777)).unwrap();
    let (code, err) = run_to_exit(&rig);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "runtime directory {} has mode 0777: group or others can write it",
            rig.runtime.display()
        )),
        "{err}"
    );
    assert!(!rig.runtime.join("client.sock").exists(), "no socket is created in it");
}

#[test]
fn a_runtime_dir_owned_by_another_user_is_refused() {
    assert!(root(), "this test simulates another user with chown and needs root");
    let rig = Rig::new("lu-owner", &[]);
    fs::create_dir(&rig.runtime).unwrap();
    fs::set_permissions(&rig.runtime, fs::Permissions::from_mode(0o700)).unwrap();
    chown(&rig.runtime, Some(OTHER), Some(OTHER)).unwrap();
    let (code, err) = run_to_exit(&rig);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("runtime directory {} is owned by uid {OTHER}", rig.runtime.display())), "{err}");
}

#[test]
fn a_symlinked_runtime_dir_is_not_followed() {
    let rig = Rig::new("lu-link", &[]);
    let real = rig.dir.join("elsewhere");
    fs::create_dir(&real).unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&real, &rig.runtime).unwrap();
    let (code, err) = run_to_exit(&rig);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("runtime directory {} is a symbolic link", rig.runtime.display())), "{err}");
    assert!(!real.join("client.sock").exists());
}

#[test]
fn the_runtime_dir_is_created_private_with_search_for_the_socket_group_only() {
    let mut rig = Rig::new("lu-mode", &[("persist-checkpoint", "true")]);
    rig.start();
    let mode = |p: &std::path::Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    // client-socket-mode 0660: the group may connect, so it may search.
    assert_eq!(mode(&rig.runtime), 0o710);
    assert_eq!(mode(&rig.dir.join("state")), 0o700);
}

#[test]
fn drvctl_refuses_to_talk_to_a_supervisor_of_another_user() {
    assert!(root(), "this test runs a process as another uid and needs root");
    // The hijack: another user's process listens where the operator's
    // drvctl looks. Here it is a real supervisor running as that uid, in a
    // directory it owns, so only the listener's credentials can tell.
    let rig = Rig::new("lu-hijack", &[]);
    chown(&rig.dir, Some(OTHER), Some(OTHER)).unwrap();
    let mut other = Command::new(&bins().supervisor)
        .arg("--config")
        .arg(&rig.config)
        .arg("--runtime-dir")
        .arg(&rig.runtime)
        .uid(OTHER)
        .gid(OTHER)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = rig.runtime.join("control.sock");
    let up = wait_for(Duration::from_secs(10), || sock.exists().then_some(()));
    let out = rig.drvctl(&["status"]);
    let trusted = Command::new(&bins().drvctl)
        .arg("--runtime-dir")
        .arg(&rig.runtime)
        .arg("status")
        .env("REINC_SUPERVISOR_UID", OTHER.to_string())
        .output()
        .unwrap();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(other.id() as i32), Signal::SIGTERM);
    let _ = wait_for(Duration::from_secs(5), || other.try_wait().ok().flatten()).or_else(|| {
        let _ = other.kill();
        other.wait().ok()
    });
    assert!(up.is_some(), "the other user's supervisor did not listen");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("runs as uid {OTHER}")) && err.contains(&sock.display().to_string()), "{err}");
    assert!(out.stdout.is_empty(), "nothing the other user sent is printed");
    // Declared on purpose, the same supervisor is accepted.
    assert!(trusted.status.success(), "{}", String::from_utf8_lossy(&trusted.stderr));
    assert!(String::from_utf8_lossy(&trusted.stdout).contains("storage_driver"));
}

fn ckpt(rig: &Rig) -> std::path::PathBuf {
    rig.dir.join("state/storage_driver.ckpt")
}

fn append(rig: &Rig) {
    let mut c = rig.client();
    c.call("storage_driver", &request(&StorageRequest::Append { data: &[9; BLOCK_SIZE] })).unwrap().unwrap();
}

#[test]
fn a_symlink_planted_as_the_temporary_checkpoint_does_not_clobber_its_target() {
    let mut rig = Rig::new("lu-plant", &[("persist-checkpoint", "true")]);
    let state = rig.dir.join("state");
    fs::create_dir(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    let victim = rig.dir.join("victim");
    fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, state.join("storage_driver.ckpt.tmp")).unwrap();
    rig.start();
    append(&rig);
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert!(ckpt(&rig).exists());
    assert!(fs::symlink_metadata(state.join("storage_driver.ckpt.tmp")).is_err());
}

/// Starts the rig with a persisted checkpoint, then stops it.
fn with_checkpoint(tag: &str) -> Rig {
    let mut rig = Rig::new(tag, &[("persist-checkpoint", "true")]);
    rig.start();
    append(&rig);
    assert!(rig.stop_supervisor(Signal::SIGTERM).success());
    assert!(ckpt(&rig).exists());
    rig
}

#[test]
fn a_checkpoint_owned_by_another_user_is_not_restored() {
    assert!(root(), "this test simulates another user with chown and needs root");
    let rig = with_checkpoint("lu-forged");
    chown(ckpt(&rig), Some(OTHER), None).unwrap();
    let (code, err) = run_to_exit(&rig);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("checkpoint {}: owned by uid {OTHER}", ckpt(&rig).display()))
            && err.contains("refusing to start storage_driver"),
        "{err}"
    );
}

#[test]
fn a_checkpoint_symlinked_to_dev_zero_is_refused_at_once() {
    let rig = with_checkpoint("lu-zero");
    fs::remove_file(ckpt(&rig)).unwrap();
    std::os::unix::fs::symlink("/dev/zero", ckpt(&rig)).unwrap();
    let (code, err) = run_to_exit(&rig);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a regular file (a symbolic link)"), "{err}");
}

#[test]
fn a_checkpoint_too_large_for_init_is_refused_at_start() {
    let rig = with_checkpoint("lu-big");
    // Intact (magic, length, CRC), but 1 MiB: no Init could carry it.
    let payload = vec![0u8; 1 << 20];
    let mut file = b"RINCCKPT".to_vec();
    file.extend_from_slice(&1u16.to_le_bytes());
    file.extend_from_slice(&0u16.to_le_bytes());
    file.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    file.extend_from_slice(&crc32(&payload).to_le_bytes());
    file.extend_from_slice(&payload);
    fs::write(ckpt(&rig), file).unwrap();
    let (code, err) = run_to_exit(&rig);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("checkpoint {}: 1048596 bytes exceeds the", ckpt(&rig).display())), "{err}");
}

/// CRC-32 (IEEE), bitwise: the tests crate has no crc dependency.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
