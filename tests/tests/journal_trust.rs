//! The journal decides what a restarted supervisor tells its clients, so
//! another local user must not be able to forge it, point it elsewhere, make
//! the supervisor read without bound, or clobber a file through its writes:
//! the journal and its directory get the checks of checkpoints and of the
//! state directory.
//!
//! As in `local_users.rs`, another user is simulated by `chown` to an unused
//! uid (root needed). A supervisor that would read a journal without bound
//! runs under a 2 GiB address-space limit (`ulimit -v`), so that the defect,
//! where present, shows as a failed start rather than as the machine's
//! memory filling up.

use nix::sys::signal::Signal;
use reinc_tests::{Rig, bins, request};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use storage_core::{BLOCK_SIZE, StorageRequest};

/// An uid no account uses on the test machines.
const OTHER: u32 = 54_321;

fn journal_rig(tag: &str) -> Rig {
    Rig::new(tag, &[("durability", "\"journal\"")])
}

fn state(rig: &Rig) -> PathBuf {
    rig.dir.join("state")
}

fn journal(rig: &Rig) -> PathBuf {
    state(rig).join("supervisor.journal")
}

/// A rig whose journal holds one acknowledged append (the supervisor
/// stopped).
fn with_journal(tag: &str) -> Rig {
    let mut rig = journal_rig(tag);
    rig.start();
    let mut c = rig.client();
    let body = request(&StorageRequest::Append { data: &[0x5a; BLOCK_SIZE] });
    c.call("storage_driver", &body).unwrap().unwrap();
    drop(c);
    let _ = rig.stop_supervisor(Signal::SIGKILL);
    assert!(journal(&rig).exists());
    rig
}

/// Runs the supervisor of `rig` to its exit, under a 2 GiB address-space
/// limit; returns (exit code, stderr). A supervisor still running after 10 s
/// is killed and reported as `None`.
fn run_to_exit(rig: &Rig) -> (Option<i32>, String) {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("ulimit -v 2097152 && exec \"$0\" --config \"$1\" --runtime-dir \"$2\"")
        .arg(&bins().supervisor)
        .arg(&rig.config)
        .arg(&rig.runtime);
    reinc_tests::run_to_exit(cmd)
}

#[test]
fn a_journal_owned_by_another_user_is_not_recovered() {
    assert!(nix::unistd::geteuid().is_root(), "this test simulates another user with chown and needs root");
    let rig = with_journal("jt-owner");
    chown(journal(&rig), Some(OTHER), None).unwrap();
    let (code, err) = run_to_exit(&rig);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("journal {}: owned by uid {OTHER}", journal(&rig).display())), "{err}");
    assert_eq!(fs::metadata(journal(&rig)).unwrap().uid(), OTHER, "the forged journal is left for the operator");
}

#[test]
fn a_journal_that_others_can_write_is_not_recovered() {
    let rig = with_journal("jt-wide");
    fs::set_permissions(journal(&rig), fs::Permissions::from_mode(0o666)).unwrap();
    let (code, err) = run_to_exit(&rig);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("journal {}: mode 0666 lets group or others write it", journal(&rig).display())));
}

#[test]
fn a_journal_symlinked_to_dev_zero_is_refused_without_reading_it() {
    let rig = journal_rig("jt-zero");
    fs::create_dir(state(&rig)).unwrap();
    fs::set_permissions(state(&rig), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("/dev/zero", journal(&rig)).unwrap();
    let (code, err) = run_to_exit(&rig);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("journal {}: not a regular file (a symbolic link)", journal(&rig).display())),
        "{err}"
    );
}

#[test]
fn a_fifo_in_place_of_the_journal_is_refused_without_blocking() {
    let rig = journal_rig("jt-fifo");
    fs::create_dir(state(&rig)).unwrap();
    fs::set_permissions(state(&rig), fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::mkfifo(&journal(&rig), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (code, err) = run_to_exit(&rig);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("journal {}: not a regular file (a FIFO)", journal(&rig).display())), "{err}");
}

#[test]
fn a_journal_larger_than_the_configuration_allows_is_refused_by_size() {
    let rig = with_journal("jt-huge");
    // The real journal, then a hole: 4 GiB that no configuration of this
    // rig can have written (one snapshot within its budgets plus
    // journal-compact-bytes is about 40 MiB).
    let f = fs::OpenOptions::new().write(true).open(journal(&rig)).unwrap();
    f.set_len(4 << 30).unwrap();
    drop(f);
    let (code, err) = run_to_exit(&rig);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("journal {}: 4294967296 bytes exceeds the", journal(&rig).display())), "{err}");
}

#[test]
fn a_journal_in_a_state_dir_others_can_write_is_not_recovered() {
    let rig = with_journal("jt-dir");
    fs::set_permissions(state(&rig), fs::Permissions::from_mode(0o777)).unwrap();
    let (code, err) = run_to_exit(&rig);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("state directory {} has mode 0777: group or others can write it", state(&rig).display())),
        "{err}"
    );
}

#[test]
fn a_new_state_dir_for_the_journal_is_created_private() {
    let rig = journal_rig("jt-newdir");
    // Under umask 002 a directory created with default permissions is 0775.
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg("umask 002 && exec \"$0\" --config \"$1\" --runtime-dir \"$2\"")
        .arg(&bins().supervisor)
        .arg(&rig.config)
        .arg(&rig.runtime)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = rig.wait_status(Duration::from_secs(10), |s| s.state.name() == "running");
    let _ = child.kill();
    let _ = child.wait();
    assert!(up.is_some(), "the supervisor did not come up");
    assert_eq!(fs::metadata(state(&rig)).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(fs::metadata(journal(&rig)).unwrap().mode() & 0o077, 0, "the journal is the supervisor's only");
}

#[test]
fn a_symlink_planted_as_the_journal_temporary_does_not_clobber_its_target() {
    let mut rig = journal_rig("jt-plant");
    fs::create_dir(state(&rig)).unwrap();
    fs::set_permissions(state(&rig), fs::Permissions::from_mode(0o700)).unwrap();
    let victim = rig.dir.join("victim");
    fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, state(&rig).join("supervisor.journal.tmp")).unwrap();
    rig.start();
    assert_eq!(fs::read(&victim).unwrap(), b"precious", "the journal was written through the planted link");
    assert!(fs::symlink_metadata(journal(&rig)).unwrap().file_type().is_file());
    assert!(fs::symlink_metadata(state(&rig).join("supervisor.journal.tmp")).is_err(), "no temporary is left");
    // And the journal works: an append survives a supervisor SIGKILL.
    let mut c = rig.client();
    c.call("storage_driver", &request(&StorageRequest::Append { data: &[7; BLOCK_SIZE] })).unwrap().unwrap();
    drop(c);
    let _ = rig.stop_supervisor(Signal::SIGKILL);
    rig.start();
    assert_eq!(rig.sup_lines("recovered 1 sessions").len(), 1, "{}", rig.log());
}
