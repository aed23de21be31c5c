//! Guest-side programs for the QEMU suites: the PID-1 init (`reinc-init`) and
//! the device test suites (`edu-suite`, …), built as static musl binaries by
//! `cargo xtask qemu-test` and packed into the guest's initramfs.
//!
//! # Why a Rust PID 1 and not busybox
//! The init's job is small and fixed: mount `/proc`, `/sys` and `/dev`, load
//! kernel modules with parameters (`finit_module`), write PCI ids to a
//! driver's `new_id`, wait for `/dev/uioN`, run the suite programs while
//! tallying their results, and power off or reboot. In Rust that is a page of
//! code built by the same `cargo build --target …-musl` as the suites, so
//! every architecture (x86_64 today, aarch64 for the Raspberry Pi profile)
//! gets its init from the toolchain already in use. Busybox was rejected: it
//! is a second binary to fetch per architecture (`busybox-static:arm64` needs
//! `dpkg -x` tricks on an amd64 host), its shell script would be a second
//! language for the boot logic, and a shell cannot count results robustly or
//! report a crashed suite by signal name. The init follows a plan file the
//! xtask writes from the machine profile (format in `reinc-guest-protocol`),
//! so it has no machine-specific code. (A profile may still put Debian's
//! static busybox into `/bin` as a *tool*, for claims that must be made by
//! the real `dd` and `sha256sum`: the x86 profile does, for `nbd-suite` and
//! `nbd-demo`. It is never the init.)
//!
//! # Why suites are separate programs
//! PID 1 must never die (the kernel panics). Running each suite as a child
//! means a suite that crashes, even by `SIGSEGV` in a mapping, is reported as
//! `GUEST-ERROR` and the guest still prints its summary and halts cleanly.
#![forbid(unsafe_code)]

pub mod campaign;
pub mod harness;
pub mod init;
pub mod sandbox;
pub mod sup;
pub mod tally;

/// The first `count` edu devices (PCI 1234:11e8, in PCI-address order),
/// bound to `uio_pci_generic` by the init; the error names the one missing.
///
/// # Errors
/// The selector of the first device that is not found, and why.
pub fn edu_devices(count: usize) -> Result<Vec<reinc_uio::UioDevice>, String> {
    let sysfs = reinc_uio::Sysfs::system();
    (0..count)
        .map(|index| {
            let sel = reinc_uio::Selector::Pci { vendor: 0x1234, device: 0x11e8, index };
            sysfs.find(&sel).map_err(|e| format!("edu device {sel}: {e}"))
        })
        .collect()
}

/// Sets up `tracing` for a guest program: plain lines on stderr (the
/// console), no timestamps (the kernel's clock prefix is already there with
/// `--verbose`), no colours (a serial line is not a terminal).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .without_time()
        .with_ansi(false)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .try_init();
}
