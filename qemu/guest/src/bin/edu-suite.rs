//! The edu suite: QEMU's edu PCI devices through real kernel UIO.
#![forbid(unsafe_code)]

use reinc_guest::harness::{self, Context, TestResult};
use reinc_guest::{ensure_eq, test};

/// Bootstrap check until the UIO layer lands: both edu devices are bound to
/// uio_pci_generic and visible in sysfs with their PCI ids.
fn both_edu_devices_visible_in_sysfs(_: &()) -> TestResult {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir("/sys/class/uio").context(|| "/sys/class/uio".to_string())? {
        let dev = entry.context(|| "/sys/class/uio".to_string())?.path().join("device");
        let read = |f: &str| {
            let p = dev.join(f);
            std::fs::read_to_string(&p).map(|s| s.trim().to_string()).context(|| p.display().to_string())
        };
        ids.push((read("vendor")?, read("device")?));
    }
    ensure_eq!(ids, vec![("0x1234".to_string(), "0x11e8".to_string()); 2], "PCI ids of /sys/class/uio/*");
    Ok(())
}

fn main() -> std::process::ExitCode {
    reinc_guest::init_logging();
    harness::run("edu", &(), &[test!(both_edu_devices_visible_in_sysfs)])
}
