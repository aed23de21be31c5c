//! `cargo xtask build-pi`: everything a Raspberry Pi 3 needs, cross-built on
//! an x86 machine into one folder to copy.
//!
//! ```text
//! target/pi/reinc/
//!   bin/supervisor bin/drvctl bin/gpio_driver bin/timer_driver bin/blink
//!   reinc.toml                       (qemu/rpi3/pi.toml)
//!   overlay/reinc-uio-overlay.dts    overlay/reinc-uio-nodes.dtsi
//!   overlay/reinc-uio.dtbo           (when dtc is installed here)
//! ```
//! The binaries are static `aarch64-unknown-linux-musl` executables linked
//! with `rust-lld` (`.cargo/config.toml`), so no cross C toolchain and no
//! libraries on the Pi: any 64-bit Raspberry Pi OS or Debian runs them. Each
//! is checked to be an AArch64 ELF before the folder is declared ready.
//!
//! # Rejected alternatives
//! - `cross` (Docker images): a container runtime for what rustup's target
//!   and the bundled LLVM linker already do.
//! - glibc targets (`aarch64-unknown-linux-gnu`): need a cross gcc and tie
//!   the binaries to the Pi's glibc version.
//! - Building on the Pi: minutes per build on a Pi 3 and a toolchain there.

use std::path::{Path, PathBuf};

use crate::util::{self, Error, IoContext, Result};
use crate::{genirq, rpi};

/// The Pi's Rust target.
pub const TARGET: &str = "aarch64-unknown-linux-musl";
/// Packages and the binaries taken from them.
pub const BINARIES: &[(&str, &str)] = &[
    ("reinc-supervisor", "supervisor"),
    ("reinc-client", "drvctl"),
    ("gpio_driver", "gpio_driver"),
    ("gpio_driver", "blink"),
    ("timer_driver", "timer_driver"),
];
/// The example configuration shipped as `reinc.toml`.
pub const PI_CONFIG: &str = "qemu/rpi3/pi.toml";

const USAGE: &str = "\
usage: cargo xtask build-pi [--out DIR]

Cross-builds supervisor, drvctl, gpio_driver, timer_driver and blink as static
aarch64 binaries (release) and collects them with the example configuration and
the device-tree overlay in DIR (default target/pi/reinc). Copy DIR to the Pi.
";

/// Entry point of the subcommand.
pub fn run(args: &[String]) -> Result {
    match util::out_dir_arg(args, USAGE, "target/pi/reinc")? {
        Some(out) => build(&out),
        None => Ok(()),
    }
}

/// The `cargo build` arguments.
fn cargo_args() -> Vec<String> {
    // Debug info would triple the size of what is copied to an SD card; the
    // symbols stay, so a panic's backtrace still names functions.
    let mut args: Vec<String> =
        ["build", "--release", "--config", "profile.release.strip=\"debuginfo\"", "--target", TARGET]
            .map(String::from)
            .to_vec();
    let mut packages: Vec<&str> = BINARIES.iter().map(|(p, _)| *p).collect();
    packages.dedup();
    for p in packages {
        args.extend(["-p".into(), p.into()]);
    }
    for (_, bin) in BINARIES {
        args.extend(["--bin".into(), (*bin).into()]);
    }
    args
}

fn build(out: &Path) -> Result {
    crate::test::ensure_rust_target(TARGET)?;
    util::run(util::cargo().args(cargo_args()))?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::workspace_root().join("target"));
    let built = target_dir.join(TARGET).join("release");
    let bin_dir = out.join("bin");
    util::create_dir_all(&bin_dir)?;
    for (_, bin) in BINARIES {
        let from = built.join(bin);
        let bytes = std::fs::read(&from).at(&from)?;
        if genirq::elf_machine(&bytes) != Some(genirq::EM_AARCH64) {
            return Err(Error::Other(format!("{}: not an AArch64 executable", from.display())));
        }
        let to = bin_dir.join(bin);
        std::fs::copy(&from, &to).at(&to)?;
    }
    let root = util::workspace_root();
    let config = out.join("reinc.toml");
    std::fs::copy(root.join(PI_CONFIG), &config).at(&config)?;
    let overlay = out.join("overlay");
    util::create_dir_all(&overlay)?;
    for file in [rpi::OVERLAY_DTS, rpi::NODES_DTSI] {
        let to = overlay.join(file);
        std::fs::copy(root.join("dts").join(file), &to).at(&to)?;
    }
    let dtbo = overlay.join("reinc-uio.dtbo");
    let overlay_note = if util::on_path("dtc") {
        rpi::build_overlay(&root.join("dts"), &dtbo)?;
        format!("compiled overlay {}", dtbo.display())
    } else {
        format!("no dtc here: compile {} on the Pi (see its header)", overlay.join(rpi::OVERLAY_DTS).display())
    };
    println!("build-pi: {} ready:", out.display());
    for (_, bin) in BINARIES {
        println!("  bin/{bin}");
    }
    println!("  reinc.toml (from {PI_CONFIG})\n  {overlay_note}");
    println!("next: scp -r {} pi@raspberrypi:/tmp/ && ssh pi@raspberrypi sudo mv /tmp/reinc /opt/reinc", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_builds_each_package_once_and_names_every_binary() {
        let args = cargo_args().join(" ");
        assert_eq!(
            args,
            "build --release --config profile.release.strip=\"debuginfo\" --target aarch64-unknown-linux-musl \
             -p reinc-supervisor -p reinc-client \
             -p gpio_driver -p timer_driver --bin supervisor --bin drvctl --bin gpio_driver --bin blink \
             --bin timer_driver"
        );
    }

    #[test]
    fn shipped_config_and_overlay_sources_exist() {
        let root = util::workspace_root();
        let config = std::fs::read_to_string(root.join(PI_CONFIG)).unwrap();
        for (_, bin) in BINARIES.iter().filter(|(_, b)| b.ends_with("_driver")) {
            assert!(config.contains(&format!("exec = \"/opt/reinc/bin/{bin}\"")), "{bin} not configured");
        }
        assert!(root.join("dts").join(rpi::OVERLAY_DTS).is_file());
        assert!(root.join("dts").join(rpi::NODES_DTSI).is_file());
    }
}
