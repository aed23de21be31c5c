//! Each driver's allow-list decides who may call it through `client.sock`,
//! from the caller's `SO_PEERCRED`; `control.sock` is the supervisor's
//! user's alone.
//!
//! Callers of other uids are `drvctl` run with `Command::uid`/`gid` (root
//! is needed; no account is created). `client-socket-mode = "0666"` opens
//! the socket itself to everyone, so only the allow-list decides.

use reinc_tests::{Rig, bins};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

fn drvctl_as(rig: &Rig, uid: u32, gid: u32, args: &[&str]) -> Output {
    Command::new(&bins().drvctl).arg("--runtime-dir").arg(&rig.runtime).args(args).uid(uid).gid(gid).output().unwrap()
}

#[test]
fn only_listed_uids_and_gids_may_call_a_driver() {
    assert!(nix::unistd::geteuid().is_root(), "running clients as other uids needs root");
    let mut rig = Rig::new("authz", &[("allow-uids", "[54321]"), ("allow-gids", "[54400]")]);
    rig.set_supervisor_key("client-socket-mode", "\"0666\"");
    rig.start();
    let call = ["call", "storage_driver", "geometry"];
    let ok = |o: &Output| o.status.success();
    assert!(ok(&drvctl_as(&rig, 54_321, 54_321, &call)), "listed uid");
    assert!(ok(&drvctl_as(&rig, 54_322, 54_400, &call)), "listed gid");
    assert!(ok(&rig.drvctl(&call)), "the supervisor's own user");
    let denied = drvctl_as(&rig, 54_322, 54_322, &call);
    let err = String::from_utf8_lossy(&denied.stderr);
    assert_eq!(denied.status.code(), Some(1), "{err}");
    assert!(err.contains("storage_driver: not allowed to call this driver"), "{err}");
    assert_eq!(rig.sup_lines("(uid 54322, gid 54322) may not call storage_driver").len(), 1, "{}", rig.log());
    // The control socket is the supervisor's user's only (0600 and checked).
    let ctl = drvctl_as(&rig, 54_321, 54_321, &["status"]);
    assert_eq!(ctl.status.code(), Some(1));
}
