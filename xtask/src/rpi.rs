//! The Raspberry Pi 3 device tree: the QEMU raspi3b patch of Debian's DTB,
//! and the real-board overlay, both from the node definitions in `dts/`.
//!
//! # What and why
//! QEMU's `raspi3b` machine emulates the BCM2837's GPIO block and system
//! timer, the devices `gpio_driver` and `timer_driver` drive on a real Pi. The
//! guest kernel only offers them to user space if its device tree has
//! `generic-uio` nodes for them, so the xtask patches the DTB that Debian's
//! arm64 kernel package ships (`usr/lib/linux-image-<release>/broadcom/
//! bcm2837-rpi-3-b.dtb`):
//! 1. the two nodes of `dts/reinc-uio-nodes.dtsi` are added under `/soc`;
//! 2. the `bluetooth` child of the PL011 (`/soc/serial@7e201000`) is removed:
//!    QEMU has no Bluetooth chip behind it, and the child would make the
//!    kernel hand ttyAMA0 to `hci_uart` instead of the console.
//!
//! Both are declared in `dts/rpi3-qemu-uio.dtsi`; this module only runs
//! `dtc`: decompile the DTB, `/include/` the decompiled tree and the
//! fragment into one source, compile it ([`patch_dtb`]). The result is then
//! checked with `fdtget` ([`check_patched`]) before it is trusted.
//!
//! The real-board overlay `dts/reinc-uio-overlay.dts` includes the same
//! nodes file; [`build_overlay`] compiles it and `apply_overlay` (test-only) applies it
//! with `fdtoverlay`, which the tests use to prove that the overlay users
//! install on a Pi yields the very nodes QEMU boots with.
//!
//! # Rejected alternatives
//! - Applying the overlay with `fdtoverlay` for QEMU too: overlays cannot
//!   delete nodes, so Bluetooth would need a second mechanism anyway; the
//!   dtc merge does both in one declarative source.
//! - Editing the decompiled text with string replacement: fragile against
//!   dtc's formatting; `&{/path}` and `/delete-node/` are dtc's own syntax.
//! - A DTB parser/writer in Rust: more code than the whole feature, for a
//!   tool (`device-tree-compiler`) that Debian packages.
//!
//! Tools: `dtc`, `fdtget` and `fdtoverlay`, all from the Debian package
//! [`DT_TOOLS_PACKAGE`], installed by [`ensure_tools`]. Used by `qemu_test` for
//! profiles with `[machine.kernel.dtb] patch = "rpi3-uio"`, and by `build-pi`
//! for the overlay.

use std::path::Path;
use std::process::Command;

use crate::util::{self, Error, IoContext, Result};

/// The Debian package with `dtc`, `fdtget` and `fdtoverlay`.
pub const DT_TOOLS_PACKAGE: &str = "device-tree-compiler";
/// The node definitions shared by the overlay and the QEMU patch.
pub const NODES_DTSI: &str = "reinc-uio-nodes.dtsi";
/// The QEMU patch fragment (includes [`NODES_DTSI`]).
pub const QEMU_DTSI: &str = "rpi3-qemu-uio.dtsi";
/// The real-board overlay source (includes [`NODES_DTSI`]).
pub const OVERLAY_DTS: &str = "reinc-uio-overlay.dts";
/// The DTB inside Debian's arm64 kernel package, relative to
/// `usr/lib/linux-image-<release>/` (the rpi3 profile's `kernel.dtb.file`).
#[cfg(test)]
pub const DEBIAN_DTB: &str = "broadcom/bcm2837-rpi-3-b.dtb";
/// The Bluetooth node the QEMU patch removes.
pub const BLUETOOTH_NODE: &str = "/soc/serial@7e201000/bluetooth";
/// File name of the patched DTB the xtask boots.
pub const PATCHED_DTB: &str = "bcm2837-rpi-3-b-reinc.dtb";

/// One `generic-uio` node as the guest must see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UioNode {
    /// Path in the tree.
    pub path: &'static str,
    /// `linux,uio-name`: `/sys/class/uio/uioN/name`.
    pub uio_name: &'static str,
    /// `reg` (bus address, size).
    pub reg: [u32; 2],
    /// `interrupts` (`<bank irq>` of the ARM interrupt controller), if any.
    pub interrupts: Option<[u32; 2]>,
    /// The ARM physical address the map shows in sysfs (`maps/map0/addr`),
    /// after /soc's `ranges` (0x7e000000 -> 0x3f000000 on the BCM2837).
    pub phys_addr: u64,
}

/// The GPIO block's node.
pub const GPIO_NODE: UioNode = UioNode {
    path: "/soc/uio@7e200000",
    uio_name: "reinc-gpio",
    reg: [0x7e20_0000, 0x1000],
    interrupts: None,
    phys_addr: 0x3f20_0000,
};

/// The system timer's node (compare channel 3).
pub const SYSTIMER_NODE: UioNode = UioNode {
    path: "/soc/uio@7e003000",
    uio_name: "reinc-systimer",
    reg: [0x7e00_3000, 0x1000],
    interrupts: Some([1, 3]),
    phys_addr: 0x3f00_3000,
};

/// Both nodes.
pub const UIO_NODES: [UioNode; 2] = [GPIO_NODE, SYSTIMER_NODE];

/// Installs [`DT_TOOLS_PACKAGE`] when one of its tools is missing.
pub fn ensure_tools() -> Result {
    for tool in ["dtc", "fdtget", "fdtoverlay"] {
        crate::apt::ensure_tool(tool, DT_TOOLS_PACKAGE, "patching the Raspberry Pi 3 device tree")?;
    }
    Ok(())
}

/// The merged source: the decompiled base, then the QEMU fragment. dtc
/// applies the fragment's `&{/soc}` additions and `/delete-node/` to the
/// tree the first include defined.
pub fn wrapper_source(base_dts: &Path) -> String {
    format!("/include/ \"{}\"\n/include/ \"{QEMU_DTSI}\"\n", base_dts.display())
}

/// Parses `fdtget -t x` output ("7e200000 1000") into cells.
pub fn parse_cells(text: &str) -> Option<Vec<u32>> {
    text.split_whitespace().map(|c| u32::from_str_radix(c, 16).ok()).collect()
}

/// Patches Debian's `base_dtb` for QEMU raspi3b into `out`, using the
/// sources in `dts_dir` (the repository's `dts/`). Needs `dtc` and `fdtget`.
/// `out` is replaced atomically and only after [`check_patched`] passed.
pub fn patch_dtb(base_dtb: &Path, dts_dir: &Path, out: &Path) -> Result {
    let parent = out.parent().unwrap_or(Path::new("."));
    let work = parent.join(format!("dtb-patch.tmp.{}", std::process::id()));
    util::create_dir_all(&work)?;
    let result = (|| {
        let base_dts = work.join("base.dts");
        // -q: a decompiled tree has no labels, so dtc warns about every
        // phandle cell; those warnings are about Debian's tree, not ours.
        run_quiet(Command::new("dtc").args(["-q", "-I", "dtb", "-O", "dts", "-o"]).arg(&base_dts).arg(base_dtb))?;
        let merged = work.join("patched.dts");
        std::fs::write(&merged, wrapper_source(&base_dts)).at(&merged)?;
        let tmp_out = work.join(PATCHED_DTB);
        run_quiet(
            Command::new("dtc")
                .args(["-q", "-I", "dts", "-O", "dtb", "-i"])
                .arg(dts_dir)
                .arg("-o")
                .arg(&tmp_out)
                .arg(&merged),
        )?;
        check_patched(&tmp_out, true)?;
        std::fs::rename(&tmp_out, out).at(out)
    })();
    std::fs::remove_dir_all(&work).at(&work)?;
    result
}

/// Compiles the real-board overlay `dts_dir/reinc-uio-overlay.dts` into
/// `out` (what users copy to `/boot/firmware/overlays/reinc-uio.dtbo`).
pub fn build_overlay(dts_dir: &Path, out: &Path) -> Result {
    run_quiet(
        Command::new("dtc")
            .args(["-@", "-Wno-interrupts_property", "-I", "dts", "-O", "dtb", "-i"])
            .arg(dts_dir)
            .arg("-o")
            .arg(out)
            .arg(dts_dir.join(OVERLAY_DTS)),
    )
}

/// Applies a compiled overlay to `base_dtb` as a Pi's firmware would.
#[cfg(test)]
pub fn apply_overlay(base_dtb: &Path, dtbo: &Path, out: &Path) -> Result {
    run_quiet(Command::new("fdtoverlay").arg("-i").arg(base_dtb).arg("-o").arg(out).arg(dtbo))
}

/// Checks that `dtb` has both UIO nodes with the expected properties (and,
/// if `bluetooth_removed`, no Bluetooth child on the PL011). The kernel's
/// own `gpio@7e200000` and `timer@7e003000` must still be there: the patch
/// adds nodes, it never takes the pin controller away.
pub fn check_patched(dtb: &Path, bluetooth_removed: bool) -> Result {
    let fail = |what: String| Error::Other(format!("{}: {what}", dtb.display()));
    for node in UIO_NODES {
        let compatible = fdtget(dtb, &["-t", "s", node.path, "compatible"])?;
        if compatible.trim() != "generic-uio" {
            return Err(fail(format!("{} has compatible `{}`, not generic-uio", node.path, compatible.trim())));
        }
        let name = fdtget(dtb, &["-t", "s", node.path, "linux,uio-name"])?;
        if name.trim() != node.uio_name {
            return Err(fail(format!("{} is named `{}`, not {}", node.path, name.trim(), node.uio_name)));
        }
        let reg = parse_cells(&fdtget(dtb, &["-t", "x", node.path, "reg"])?);
        if reg.as_deref() != Some(&node.reg[..]) {
            return Err(fail(format!("{} has reg {reg:x?}, expected {:x?}", node.path, node.reg)));
        }
        if let Some(want) = node.interrupts {
            let irq = parse_cells(&fdtget(dtb, &["-t", "x", node.path, "interrupts"])?);
            if irq.as_deref() != Some(&want[..]) {
                return Err(fail(format!("{} has interrupts {irq:x?}, expected {want:x?}", node.path)));
            }
        }
    }
    let soc = fdtget(dtb, &["-l", "/soc"])?;
    for kernel_node in ["gpio@7e200000", "timer@7e003000"] {
        if !soc.lines().any(|l| l.trim() == kernel_node) {
            return Err(fail(format!("/soc/{kernel_node} is gone; the patch must only add nodes")));
        }
    }
    let (serial, child) = BLUETOOTH_NODE.rsplit_once('/').expect("a path with a parent");
    let children = fdtget(dtb, &["-l", serial])?;
    let has_bt = children.lines().any(|l| l.trim() == child);
    if bluetooth_removed && has_bt {
        return Err(fail(format!("{BLUETOOTH_NODE} is still present; ttyAMA0 would not be the console")));
    }
    Ok(())
}

fn fdtget(dtb: &Path, args: &[&str]) -> Result<String> {
    util::output(Command::new("fdtget").arg(dtb).args(args))
        .map_err(|e| Error::Other(format!("{}: fdtget {}: {e}", dtb.display(), args.join(" "))))
}

/// Runs a tool, keeping its stderr for the error message only.
fn run_quiet(cmd: &mut Command) -> Result {
    util::output(cmd).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn dts_dir() -> PathBuf {
        util::workspace_root().join("dts")
    }

    #[test]
    fn wrapper_includes_base_before_the_fragment() {
        assert_eq!(
            wrapper_source(Path::new("/w/base.dts")),
            "/include/ \"/w/base.dts\"\n/include/ \"rpi3-qemu-uio.dtsi\"\n"
        );
    }

    #[test]
    fn fdtget_cells_parse_as_hex() {
        assert_eq!(parse_cells("7e200000 1000\n"), Some(vec![0x7e20_0000, 0x1000]));
        assert_eq!(parse_cells("1 3"), Some(vec![1, 3]));
        assert_eq!(parse_cells("zz"), None);
    }

    #[test]
    fn node_constants_match_the_shared_dtsi() {
        // The constants the guest suite checks against must be the ones the
        // device tree declares; read the source, not a copy.
        let path = dts_dir().join(NODES_DTSI);
        let text = std::fs::read_to_string(&path).unwrap();
        for node in UIO_NODES {
            let unit = node.path.rsplit('/').next().unwrap();
            assert!(text.contains(&format!("{unit} {{")), "{unit} not declared in {}", path.display());
            assert!(text.contains(&format!("linux,uio-name = \"{}\";", node.uio_name)));
            assert!(text.contains(&format!("reg = <{:#x} {:#x}>;", node.reg[0], node.reg[1])));
            if let Some([bank, irq]) = node.interrupts {
                assert!(text.contains(&format!("interrupts = <{bank} {irq}>;")));
            }
            assert_eq!(node.phys_addr, u64::from(node.reg[0] - 0x7e00_0000 + 0x3f00_0000));
        }
    }

    /// A BCM2837-shaped tree small enough to read: the parts the patch and
    /// the overlay touch (root interrupt parent, /soc ranges, the kernel's
    /// GPIO and timer nodes, the PL011 with its Bluetooth child).
    const SYNTHETIC_BASE: &str = r#"/dts-v1/;
/ {
	compatible = "raspberrypi,3-model-b", "brcm,bcm2837";
	#address-cells = <1>;
	#size-cells = <1>;
	interrupt-parent = <&intc>;
	soc {
		compatible = "simple-bus";
		#address-cells = <1>;
		#size-cells = <1>;
		ranges = <0x7e000000 0x3f000000 0x1000000>;
		timer@7e003000 { compatible = "brcm,bcm2835-system-timer"; reg = <0x7e003000 0x1000>; interrupts = <1 0>, <1 1>, <1 2>, <1 3>; };
		intc: interrupt-controller@7e00b200 { compatible = "brcm,bcm2836-armctrl-ic"; reg = <0x7e00b200 0x200>; interrupt-controller; #interrupt-cells = <2>; };
		gpio@7e200000 { compatible = "brcm,bcm2835-gpio"; reg = <0x7e200000 0xb4>; };
		serial@7e201000 { compatible = "arm,pl011", "arm,primecell"; reg = <0x7e201000 0x200>; bluetooth { compatible = "brcm,bcm43438-bt"; }; };
	};
};
"#;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("reinc-rpi-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn synthetic_base(dir: &Path) -> PathBuf {
        let src = dir.join("base-src.dts");
        std::fs::write(&src, SYNTHETIC_BASE).unwrap();
        let dtb = dir.join("base.dtb");
        run_quiet(Command::new("dtc").args(["-q", "-I", "dts", "-O", "dtb", "-o"]).arg(&dtb).arg(&src)).unwrap();
        dtb
    }

    #[test]
    #[ignore = "needs dtc/fdtget/fdtoverlay (device-tree-compiler); the rpi3 profile installs it, then runs these"]
    fn qemu_patch_adds_uio_nodes_and_drops_bluetooth() {
        let dir = scratch("patch");
        let base = synthetic_base(&dir);
        // The synthetic base itself fails the check: nothing to trust yet.
        assert!(check_patched(&base, true).is_err());
        let out = dir.join(PATCHED_DTB);
        patch_dtb(&base, &dts_dir(), &out).unwrap();
        check_patched(&out, true).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[ignore = "needs dtc/fdtget/fdtoverlay (device-tree-compiler); the rpi3 profile installs it, then runs these"]
    fn overlay_applies_and_yields_the_same_nodes() {
        let dir = scratch("overlay");
        let base = synthetic_base(&dir);
        let dtbo = dir.join("reinc-uio.dtbo");
        build_overlay(&dts_dir(), &dtbo).unwrap();
        let applied = dir.join("applied.dtb");
        apply_overlay(&base, &dtbo, &applied).unwrap();
        // Same nodes as the QEMU patch; Bluetooth stays (a real Pi has it).
        check_patched(&applied, false).unwrap();
        assert!(check_patched(&applied, true).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Against Debian's real DTB: set REINC_DEBIAN_RPI3_DTB to
    /// `usr/lib/linux-image-<release>/broadcom/bcm2837-rpi-3-b.dtb` of an
    /// unpacked linux-image-*-arm64 package.
    #[test]
    #[ignore = "needs device-tree-compiler and REINC_DEBIAN_RPI3_DTB pointing at Debian's bcm2837-rpi-3-b.dtb"]
    fn debian_dtb_patches_and_accepts_the_overlay() {
        let base = PathBuf::from(std::env::var_os("REINC_DEBIAN_RPI3_DTB").expect("REINC_DEBIAN_RPI3_DTB is not set"));
        let dir = scratch("debian");
        let out = dir.join(PATCHED_DTB);
        patch_dtb(&base, &dts_dir(), &out).unwrap();
        check_patched(&out, true).unwrap();
        let dtbo = dir.join("reinc-uio.dtbo");
        build_overlay(&dts_dir(), &dtbo).unwrap();
        let applied = dir.join("applied.dtb");
        apply_overlay(&base, &dtbo, &applied).unwrap();
        check_patched(&applied, false).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
