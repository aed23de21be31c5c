//! `timer_driver` as a process, launched the way the supervisor launches it:
//! a missing device, a GPU channel and a missing selector are `Fatal` at
//! `Init`, naming what is wrong, and the instance exits 1. (Interrupts need
//! a real UIO node: they are exercised in the rpi3 QEMU guest and, in
//! process, against a simulated genirq in the unit tests.)

use reinc_runtime::testing::DriverProcess;
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_timer_driver");

/// Sends `Init` and returns the `Fatal` reason and the exit status.
fn fatal_at_init(args: &[&str]) -> (String, String) {
    DriverProcess::fatal_at_init(Path::new(BIN), "timer_test", args)
}

#[test]
fn missing_device_is_fatal_and_names_the_selector() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("class/uio")).unwrap();
    let sysfs = root.path().to_str().unwrap();
    let (reason, status) = fatal_at_init(&["--device", "name:reinc-systimer", "--sysfs", sysfs, "--dev", sysfs]);
    assert!(reason.contains("system timer device name:reinc-systimer"), "{reason}");
    assert_eq!(status, "exit 1");
}

#[test]
fn gpu_channel_is_refused_at_init_with_the_reason() {
    let (reason, status) = fatal_at_init(&["--device", "name:reinc-systimer", "--channel", "0"]);
    assert!(reason.contains("--channel") && reason.contains("VideoCore GPU"), "{reason}");
    assert_eq!(status, "exit 1");
}

#[test]
fn missing_selector_is_fatal_with_the_usage() {
    let (reason, _) = fatal_at_init(&["--channel", "3"]);
    assert!(reason.contains("--device is required") && reason.contains("usage: timer_driver"), "{reason}");
}
