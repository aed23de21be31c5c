//! Machine profiles: the data in `qemu/machines.toml`.
//!
//! Everything that differs between QEMU guests (architecture, Rust target,
//! QEMU binary and arguments, devices, kernel package, modules, console,
//! bindings, suites, timeout) is data, so a second board is a new table in
//! that file. The loader rejects unknown keys and checks cross-field rules
//! (suites must be programs, names unique), reporting every problem at once.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::util::{self, Error, IoContext, Result};

/// The profiles file, relative to the workspace root.
pub const PROFILES: &str = "qemu/machines.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfilesFile {
    machine: Vec<Profile>,
}

/// One QEMU guest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Name for `--machine`.
    pub name: String,
    /// One line for humans.
    pub description: String,
    /// Debian architecture of the kernel package (`amd64`, `arm64`).
    pub debian_arch: String,
    /// Rust target of the static guest programs.
    pub rust_target: String,
    /// Limit for the whole boot, QEMU start to exit.
    pub timeout_secs: u64,
    /// How to run QEMU.
    pub qemu: QemuSpec,
    /// Which kernel and modules to boot.
    pub kernel: KernelSpec,
    /// What the guest does.
    pub guest: GuestSpec,
}

/// QEMU binary and command line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuSpec {
    /// Debian package providing `binary`.
    pub package: String,
    /// The emulator.
    pub binary: String,
    /// Machine arguments (everything but accel, kernel, initrd, append, devices).
    pub args: Vec<String>,
    /// One `-device` each.
    #[serde(default)]
    pub devices: Vec<String>,
    /// The `-accel` value used under emulation (`tcg`, `tcg,thread=single`).
    pub tcg: String,
    /// Whether KVM may replace it.
    pub kvm: KvmPolicy,
}

/// Whether to try KVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvmPolicy {
    /// Never (foreign architectures, or boards QEMU only emulates).
    Never,
    /// KVM when a probe boot under KVM succeeds, else `tcg`.
    IfItWorks,
}

/// The kernel package and what to take from it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    /// Meta package whose dependency names the current kernel.
    pub meta_package: String,
    /// The versioned package, `*` standing for the ABI.
    pub package: String,
    /// Which image to boot.
    pub image: ImageFormat,
    /// Kernel console device (`ttyS0`, `ttyAMA0`).
    pub console: String,
    /// The rest of the kernel command line.
    pub append: String,
    /// Modules, in load order.
    pub modules: Vec<ModuleSpec>,
    /// A device tree to pass with `-dtb` (boards without firmware tables).
    #[serde(default)]
    pub dtb: Option<DtbSpec>,
    /// The exact kernel the suites were last checked against; absent: the
    /// meta package's current dependency, whatever the package lists say.
    #[serde(default)]
    pub pin: Option<KernelPin>,
}

/// An exact kernel package: `linux-image-6.1.0-57-amd64` at `6.1.192-3`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelPin {
    pub package: String,
    pub version: String,
}

/// The device tree of a board: a DTB from the kernel package, optionally
/// patched by the xtask before boot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DtbSpec {
    /// Path inside the package, relative to `usr/lib/linux-image-<release>/`
    /// (e.g. `broadcom/bcm2837-rpi-3-b.dtb`).
    pub file: String,
    /// How to patch it; absent: boot it as packaged.
    #[serde(default)]
    pub patch: Option<DtbPatch>,
}

/// A device-tree patch the xtask knows how to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DtbPatch {
    /// `dts/rpi3-qemu-uio.dtsi`: the generic-uio GPIO and system-timer
    /// nodes, and no Bluetooth on the PL011 (see `rpi.rs`).
    #[serde(rename = "rpi3-uio")]
    Rpi3Uio,
}

/// Image format passed to `-kernel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// Uncompressed ELF extracted from the bzImage (PVH boot).
    Vmlinux,
    /// The packaged image as is.
    Vmlinuz,
}

/// One module to load in the guest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSpec {
    /// File name without `.ko`.
    pub name: String,
    /// Module parameters.
    #[serde(default)]
    pub params: String,
    /// Built by the xtask instead of taken from the kernel package.
    #[serde(default)]
    pub build: Option<ModuleBuild>,
}

/// A module the kernel package lacks, built out of tree by the xtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModuleBuild {
    /// `uio_pdrv_genirq.ko`, cross-built for arm64 (see `genirq.rs`).
    Genirq,
}

/// What the guest's init does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    /// `new_id` bindings.
    #[serde(default)]
    pub binds: Vec<BindSpec>,
    /// `/dev/uioN` count to wait for.
    pub uio_devices: usize,
    /// Workspace packages to build for the guest.
    pub packages: Vec<String>,
    /// Their binaries copied into `/bin`.
    pub programs: Vec<String>,
    /// Programs run as suites, in order.
    pub suites: Vec<String>,
    /// `poweroff` or `reboot`.
    pub halt: HaltSpec,
    /// A static busybox from a Debian package, for real shell tools (`dd`,
    /// `sha256sum`) in the guest; absent: none.
    #[serde(default)]
    pub busybox: Option<BusyboxSpec>,
}

/// Debian's static busybox, downloaded (never installed) for the guest's
/// architecture and unpacked into the cache (see `busybox.rs`); it lands in
/// `/bin/busybox`, with one `/bin/<applet>` link per applet.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusyboxSpec {
    /// The Debian package (`busybox-static`).
    pub package: String,
    /// Applets linked into `/bin`, e.g. `dd`, `sha256sum`.
    pub applets: Vec<String>,
}

/// A PCI id binding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindSpec {
    /// PCI driver.
    pub driver: String,
    /// Text for `new_id`.
    pub id: String,
}

/// How the guest ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HaltSpec {
    /// ACPI power-off.
    Poweroff,
    /// Reset, which `-no-reboot` turns into QEMU's exit.
    Reboot,
}

/// Loads and checks the workspace's profiles.
pub fn load() -> Result<Vec<Profile>> {
    load_from(&util::workspace_root().join(PROFILES))
}

fn load_from(path: &Path) -> Result<Vec<Profile>> {
    let text = std::fs::read_to_string(path).at(path)?;
    parse(&text, path)
}

fn parse(text: &str, path: &Path) -> Result<Vec<Profile>> {
    let file: ProfilesFile = toml::from_str(text).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    let problems = check(&file.machine);
    if problems.is_empty() {
        Ok(file.machine)
    } else {
        Err(Error::Other(format!("{}:\n  {}", path.display(), problems.join("\n  "))))
    }
}

/// Cross-field rules serde cannot express; every violation is reported.
fn check(profiles: &[Profile]) -> Vec<String> {
    let mut problems = Vec::new();
    if profiles.is_empty() {
        problems.push("no [[machine]] profile".to_string());
    }
    for (i, p) in profiles.iter().enumerate() {
        if profiles[..i].iter().any(|q| q.name == p.name) {
            problems.push(format!("machine `{}` is defined twice", p.name));
        }
        if p.kernel.package.matches('*').count() != 1 {
            problems.push(format!("machine `{}`: kernel.package must contain exactly one `*`", p.name));
        }
        for s in &p.guest.suites {
            if !p.guest.programs.contains(s) {
                problems.push(format!("machine `{}`: suite `{s}` is not in guest.programs", p.name));
            }
        }
        if p.timeout_secs == 0 {
            problems.push(format!("machine `{}`: timeout_secs must be positive", p.name));
        }
        for m in &p.kernel.modules {
            if m.build == Some(ModuleBuild::Genirq) && (p.debian_arch != "arm64" || m.name != crate::genirq::MODULE) {
                problems.push(format!(
                    "machine `{}`: module `{}` with build = \"genirq\": the recipe builds {} for arm64 only",
                    p.name,
                    m.name,
                    crate::genirq::MODULE
                ));
            }
        }
        if let Some(bb) = &p.guest.busybox {
            if bb.applets.is_empty() {
                problems.push(format!("machine `{}`: guest.busybox.applets is empty", p.name));
            }
            for a in &bb.applets {
                if a.is_empty() || a.contains('/') || a == "busybox" {
                    problems.push(format!("machine `{}`: guest.busybox applet `{a}` is not a plain name", p.name));
                } else if p.guest.programs.contains(a) {
                    problems
                        .push(format!("machine `{}`: busybox applet `{a}` would replace guest program `{a}`", p.name));
                }
            }
        }
        let reserved = ["-kernel", "-initrd", "-append", "-accel", "-device", "-dtb"];
        for a in &p.qemu.args {
            if reserved.contains(&a.as_str()) {
                problems.push(format!("machine `{}`: qemu.args must not contain `{a}` (the xtask adds it)", p.name));
            }
        }
    }
    problems
}

/// Picks the profiles to run: the named one, or all.
pub fn select(profiles: Vec<Profile>, name: Option<&str>) -> Result<Vec<Profile>> {
    let Some(name) = name else { return Ok(profiles) };
    let known: Vec<String> = profiles.iter().map(|p| p.name.clone()).collect();
    let chosen: Vec<Profile> = profiles.into_iter().filter(|p| p.name == name).collect();
    if chosen.is_empty() {
        return Err(Error::Usage(format!("no machine `{name}` in {PROFILES}; known: {}", known.join(", "))));
    }
    Ok(chosen)
}

/// Where per-machine build outputs (initramfs) go.
pub fn work_dir(profile: &Profile) -> PathBuf {
    util::workspace_root().join("target").join("qemu").join(&profile.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_profiles_load_and_include_x86_with_two_edu_devices() {
        let profiles = load().expect("qemu/machines.toml must load");
        let x86 = profiles.iter().find(|p| p.name == "x86").expect("x86 profile");
        assert_eq!(x86.qemu.devices, ["edu", "edu"]);
        assert_eq!(x86.guest.uio_devices, 2);
        let names: Vec<&str> = x86.kernel.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["uio", "uio_pci_generic", "nbd"], "uio must load before uio_pci_generic");
    }

    #[test]
    fn x86_profile_brings_busybox_static_with_dd_and_sha256sum() {
        let x86 = load().unwrap().into_iter().find(|p| p.name == "x86").unwrap();
        let bb = x86.guest.busybox.as_ref().expect("x86 has busybox for dd and sha256sum");
        assert_eq!(bb.package, "busybox-static");
        for applet in ["dd", "sha256sum", "kill"] {
            assert!(bb.applets.iter().any(|a| a == applet), "{applet} missing from {:?}", bb.applets);
        }
        let rpi3 = load().unwrap().into_iter().find(|p| p.name == "rpi3").unwrap();
        assert_eq!(rpi3.guest.busybox, None, "the rpi3 guest needs no shell tools");
    }

    #[test]
    fn busybox_table_rejects_unknown_keys_and_bad_applets() {
        let text = std::fs::read_to_string(util::workspace_root().join(PROFILES)).unwrap();
        let bad = text.replace("applets =", "applet =");
        let err = parse(&bad, Path::new("machines.toml")).unwrap_err().to_string();
        assert!(err.contains("applet"), "{err}");
        let x86 = load().unwrap().into_iter().find(|p| p.name == "x86").unwrap();
        let mut bad = x86.clone();
        bad.guest.busybox =
            Some(BusyboxSpec { package: "busybox-static".into(), applets: vec!["../sh".into(), "supervisor".into()] });
        let problems = check(&[bad]).join("\n");
        assert!(problems.contains("`../sh` is not a plain name"), "{problems}");
        assert!(problems.contains("would replace guest program `supervisor`"), "{problems}");
    }

    #[test]
    fn every_shipped_profile_pins_a_kernel_of_its_own_pattern() {
        for p in load().unwrap() {
            let pin = p.kernel.pin.as_ref().unwrap_or_else(|| panic!("{}: no kernel pin", p.name));
            let (prefix, suffix) = p.kernel.package.split_once('*').expect("pattern has a *");
            assert!(
                pin.package.starts_with(prefix) && pin.package.ends_with(suffix),
                "{}: pinned {} does not match {}",
                p.name,
                pin.package,
                p.kernel.package
            );
            assert!(!pin.version.is_empty(), "{}: empty pinned version", p.name);
        }
    }

    #[test]
    fn rpi3_profile_builds_genirq_patches_debians_pi_dtb_and_ends_by_reboot() {
        let profiles = load().unwrap();
        let rpi3 = profiles.iter().find(|p| p.name == "rpi3").expect("rpi3 profile");
        let names: Vec<&str> = rpi3.kernel.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["uio", "uio_pdrv_genirq", "bcm2835_wdt"], "uio first; the watchdog makes reboot exit QEMU");
        let genirq = &rpi3.kernel.modules[1];
        assert_eq!((genirq.build, genirq.params.as_str()), (Some(ModuleBuild::Genirq), "of_id=generic-uio"));
        let dtb = rpi3.kernel.dtb.as_ref().expect("raspi3b needs a device tree");
        assert_eq!((dtb.file.as_str(), dtb.patch), (crate::rpi::DEBIAN_DTB, Some(DtbPatch::Rpi3Uio)));
        assert_eq!((rpi3.guest.halt, rpi3.qemu.kvm), (HaltSpec::Reboot, KvmPolicy::Never));
        assert_eq!(rpi3.guest.uio_devices, 2);
    }

    #[test]
    fn genirq_build_is_refused_outside_arm64() {
        let x86 = load().unwrap().into_iter().find(|p| p.name == "x86").unwrap();
        let mut bad = x86.clone();
        bad.name = "x86-genirq".into();
        bad.kernel.modules.push(ModuleSpec {
            name: "uio_pdrv_genirq".into(),
            params: String::new(),
            build: Some(ModuleBuild::Genirq),
        });
        let problems = check(&[x86, bad]).join("\n");
        assert!(problems.contains("x86-genirq") && problems.contains("arm64 only"), "{problems}");
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_file() {
        let text = std::fs::read_to_string(util::workspace_root().join(PROFILES)).unwrap();
        let bad = text.replace("timeout_secs =", "timeout_seconds =");
        let err = parse(&bad, Path::new("machines.toml")).unwrap_err().to_string();
        assert!(err.contains("machines.toml") && err.contains("timeout_seconds"), "{err}");
    }

    #[test]
    fn cross_field_problems_are_all_reported() {
        let x86 = load().unwrap().into_iter().find(|p| p.name == "x86").unwrap();
        let mut bad = x86.clone();
        bad.guest.suites.push("nope".into());
        bad.qemu.args.push("-kernel".into());
        bad.kernel.package = "linux-image-amd64".into();
        let problems = check(&[x86, bad]).join("\n");
        for expected in ["defined twice", "suite `nope`", "`-kernel`", "exactly one `*`"] {
            assert!(problems.contains(expected), "{expected:?} missing from:\n{problems}");
        }
    }

    #[test]
    fn selecting_an_unknown_machine_lists_the_known_ones() {
        let profiles = load().unwrap();
        let err = select(profiles, Some("vax")).unwrap_err().to_string();
        assert!(err.contains("vax") && err.contains("x86"), "{err}");
    }
}
