//! `supervisor --check` and start-up refuse what would fail or misbehave
//! later: executables that cannot run, and values that only make sense as
//! typos (an init timeout of 1 ms, a window larger than the queue, a restart
//! policy that allows an unbounded restart rate). Every problem at once.

use reinc_tests::bins;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn check_and_start_refuse_unrunnable_executables_and_absurd_values_all_at_once() {
    let dir = std::env::temp_dir().join(format!("reinc-cfgcheck-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a-dir")).unwrap();
    std::fs::write(dir.join("not-exec"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(dir.join("not-exec"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let storage = bins().storage_driver.display().to_string();
    let d = dir.display();
    let text = format!(
        r#"
[[driver]]
name = "missing"
exec = "{d}/no-such-driver"
[[driver]]
name = "directory"
exec = "{d}/a-dir"
[[driver]]
name = "noexec"
exec = "{d}/not-exec"
[[driver]]
name = "empty"
exec = ""
[[driver]]
name = "storm"
exec = "{storage}"
restart-window-ms = 1
backoff-base-ms = 0
backoff-cap-ms = 0
init-timeout-ms = 1
queue-depth = 4
window = 8
"#
    );
    let path = dir.join("c.toml");
    std::fs::write(&path, text).unwrap();
    for check in [true, false] {
        let mut cmd = Command::new(&bins().supervisor);
        cmd.arg("--config").arg(&path).arg("--runtime-dir").arg(dir.join("run"));
        if check {
            cmd.arg("--check");
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--check {check}: {err}");
        for needle in [
            format!("driver \"missing\": `exec`: {d}/no-such-driver does not exist"),
            format!("driver \"directory\": `exec`: {d}/a-dir is not a regular file"),
            format!("driver \"noexec\": `exec`: {d}/not-exec is not executable"),
            "driver \"empty\": `exec`: must not be empty".into(),
            "driver \"storm\": `restart-window-ms`: (1) allows max-restarts = 5 restarts in it for ever".into(),
            "driver \"storm\": `init-timeout-ms`: must be between 100 and".into(),
            "driver \"storm\": `window`: (8) must not exceed queue-depth (4)".into(),
        ] {
            assert!(err.contains(&needle), "--check {check}: missing {needle:?} in\n{err}");
        }
        assert!(err.contains("has 7 problem(s)"), "{err}");
        assert!(!dir.join("run").exists(), "nothing is started");
    }
    let _ = std::fs::remove_dir_all(dir);
}
