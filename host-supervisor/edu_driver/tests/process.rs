//! `edu_driver` as a process, launched the way the supervisor launches it:
//! a device that is missing or cannot be mapped is `Fatal` naming it, and the
//! instance exits non-zero. (The real device is exercised in the QEMU guest.)

use reinc_runtime::testing::DriverProcess;
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_edu_driver");

/// Sends `Init` and returns the `Fatal` reason and the exit status.
fn fatal_at_init(args: &[&str]) -> (String, String) {
    DriverProcess::fatal_at_init(Path::new(BIN), "edu_test", args)
}

#[test]
fn missing_device_is_fatal_and_names_the_selector() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("class/uio")).unwrap();
    let sysfs = root.path().to_str().unwrap();
    let (reason, status) = fatal_at_init(&["--device", "pci:1234:11e8@1", "--sysfs", sysfs, "--dev", sysfs]);
    assert!(reason.contains("edu device pci:1234:11e8@1") && reason.contains("no UIO device"), "{reason}");
    assert_eq!(status, "exit 1");
}

#[test]
fn device_without_a_pci_bar_is_fatal_and_names_the_device() {
    // A UIO device that is not a PCI function: BAR0 cannot be mapped.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("class/uio/uio4");
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in [("name", "fake_uio\n"), ("version", "0.1\n"), ("event", "0\n")] {
        std::fs::write(dir.join(file), text).unwrap();
    }
    let sysfs = root.path().to_str().unwrap();
    let (reason, status) = fatal_at_init(&["--device", "uio4", "--sysfs", sysfs, "--dev", sysfs]);
    assert!(reason.contains("uio4 (fake_uio)") && reason.contains("cannot map BAR0"), "{reason}");
    assert_eq!(status, "exit 1");
}

#[test]
fn bad_arguments_are_fatal_at_init_with_the_usage() {
    let (reason, status) = fatal_at_init(&["--device", "pci:1234"]);
    assert!(reason.contains("--device: invalid UIO device selector \"pci:1234\""), "{reason}");
    assert_eq!(status, "exit 1");
}
