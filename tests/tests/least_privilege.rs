//! A driver runs with the least it needs, checked from outside through
//! `/proc/<pid>/{status,fd,environ}`: no capabilities, `no_new_privs`, a
//! seccomp filter, no stray descriptors, a clean environment, and its own
//! user and group where configured.
//!
//! Tests run as root, so "a root supervisor" is the case shown. The other
//! user is an unused uid (54321) given the rig directory by `chown`; no
//! account is created.

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use reinc_tests::{Rig, read_req};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::chown;

fn status(pid: u32) -> BTreeMap<String, String> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.to_owned(), v.trim().to_owned())))
        .collect()
}

fn environ(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn fd_targets(pid: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

#[test]
fn under_a_root_supervisor_a_driver_has_no_capabilities_no_new_privs_seccomp_and_nothing_inherited() {
    let mut rig = Rig::new("lp-root", &[]);
    // A descriptor the supervisor inherits without close-on-exec (as from a
    // careless parent), and a secret in its environment.
    let stray_path = rig.dir.join("stray-secret");
    let stray = fs::File::create(&stray_path).unwrap();
    fcntl(&stray, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
    rig.spawn_with_env(&[("REINC_TEST_SECRET", "hunter2")]);
    rig.start_wait();
    let pid = rig.status().pid.unwrap();
    let st = status(pid);
    assert_eq!(st["Uid"].split_whitespace().next(), Some("0"), "no user configured: stays root");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(st[cap], "0000000000000000", "{cap}: {st:?}");
    }
    assert_eq!(st["NoNewPrivs"], "1");
    assert_eq!(st["Seccomp"], "2", "a seccomp filter is installed");
    let env = environ(pid);
    assert!(!env.iter().any(|v| v.starts_with("REINC_TEST_SECRET=")), "{env:?}");
    assert!(env.iter().any(|v| v == "REINC_DRIVER_NAME=storage_driver"), "{env:?}");
    assert!(!env.iter().any(|v| v.starts_with("PATH=") || v.starts_with("HOME=")), "{env:?}");
    let fds = fd_targets(pid);
    assert!(!fds.iter().any(|t| t.contains("stray-secret")), "the stray descriptor reached the driver: {fds:?}");
    // And it still works, through a crash and a replay.
    let mut c = rig.client();
    assert!(c.call("storage_driver", &read_req(0, 1)).unwrap().is_ok());
    rig.inject("before-effect:1:segv");
    assert!(c.call("storage_driver", &read_req(0, 1)).unwrap().is_ok());
    assert_eq!(rig.status().generation, 2);
    drop(stray);
}

#[test]
fn a_driver_with_a_user_and_group_runs_as_them_with_no_supplementary_groups() {
    assert!(nix::unistd::geteuid().is_root(), "setting another uid needs root");
    let mut rig = Rig::new("lp-user", &[("user", "54321"), ("group", "54321")]);
    // The driver creates its disk image and exec log in the rig directory.
    chown(&rig.dir, Some(54_321), Some(54_321)).unwrap();
    rig.start();
    let pid = rig.status().pid.unwrap();
    let st = status(pid);
    assert_eq!(st["Uid"].split_whitespace().collect::<Vec<_>>(), ["54321"; 4]);
    assert_eq!(st["Gid"].split_whitespace().collect::<Vec<_>>(), ["54321"; 4]);
    assert_eq!(st["Groups"], "");
    assert_eq!(st["CapEff"], "0000000000000000");
    assert_eq!(st["NoNewPrivs"], "1");
    let mut c = rig.client();
    assert!(c.call("storage_driver", &read_req(0, 1)).unwrap().is_ok());
}
