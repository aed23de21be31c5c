//! The guest's root filesystem: static guest programs, kernel modules and the
//! boot plan, packed into a newc initramfs.
//!
//! Layout inside the guest:
//! - `/init`: `reinc-init` from the `reinc-guest` crate (PID 1);
//! - `/bin/<program>`: the profile's guest programs;
//! - `/bin/busybox` and `/bin/<applet>` links, when the profile asks for
//!   busybox (`[machine.guest.busybox]`);
//! - `/lib/modules/<name>.ko`: the profile's modules;
//! - `/etc/reinc/plan`: the boot plan (see `reinc-guest-protocol`);
//! - `/dev/console`: so PID 1 has a console before devtmpfs is mounted;
//! - empty `/proc`, `/sys`, `/tmp`, `/run` mount points.

use std::path::{Path, PathBuf};

use reinc_guest_protocol::{Bind, Halt, Module, PLAN_PATH, Plan};

use crate::cpio::Archive;
use crate::kernel::Kernel;
use crate::machines::{HaltSpec, Profile};
use crate::util::{self, Error, IoContext, Result};

/// The PID-1 program every guest runs.
pub const INIT_PACKAGE: &str = "reinc-guest";
/// Its binary name.
pub const INIT_BINARY: &str = "reinc-init";

/// Builds the profile's guest packages as static binaries for its target with
/// the workspace's `guest` profile; returns the directory holding them.
pub fn build_programs(profile: &Profile) -> Result<PathBuf> {
    crate::test::ensure_rust_target(&profile.rust_target)?;
    let mut cmd = util::cargo();
    cmd.args(["build", "--profile", "guest", "--target", &profile.rust_target, "--bins"]);
    let mut packages = vec![INIT_PACKAGE.to_string()];
    for p in &profile.guest.packages {
        if !packages.contains(p) {
            packages.push(p.clone());
        }
    }
    for p in &packages {
        cmd.args(["-p", p]);
    }
    util::run(&mut cmd)?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::workspace_root().join("target"));
    Ok(target_dir.join(&profile.rust_target).join("guest"))
}

/// The boot plan the guest's init follows, derived from the profile.
pub fn plan(profile: &Profile) -> Plan {
    Plan {
        machine: profile.name.clone(),
        modules: profile
            .kernel
            .modules
            .iter()
            .map(|m| Module { path: format!("/lib/modules/{}.ko", m.name), params: m.params.clone() })
            .collect(),
        binds: profile.guest.binds.iter().map(|b| Bind { driver: b.driver.clone(), id: b.id.clone() }).collect(),
        uio_devices: profile.guest.uio_devices,
        suites: profile.guest.suites.iter().map(|s| format!("/bin/{s}")).collect(),
        halt: match profile.guest.halt {
            HaltSpec::Poweroff => Halt::PowerOff,
            HaltSpec::Reboot => Halt::Reboot,
        },
    }
}

/// Packs the initramfs and writes it to `out`. `busybox` is the static
/// binary of the profile's `guest.busybox`, if it has one.
pub fn assemble(profile: &Profile, programs_dir: &Path, kernel: &Kernel, busybox: Option<&Path>, out: &Path) -> Result {
    let read = |p: &Path| std::fs::read(p).at(p);
    let mut a = Archive::new();
    for dir in ["bin", "dev", "etc", "etc/reinc", "lib", "lib/modules", "proc", "sys", "tmp", "run"] {
        a.dir(dir, 0o755);
    }
    a.char_dev("dev/console", 0o600, 5, 1);
    a.file("init", 0o755, &read(&programs_dir.join(INIT_BINARY))?);
    for program in &profile.guest.programs {
        let path = programs_dir.join(program);
        if !path.is_file() {
            return Err(Error::Other(format!(
                "machine `{}`: guest program {} was not built (is `{program}` a binary of {:?}?)",
                profile.name,
                path.display(),
                profile.guest.packages
            )));
        }
        a.file(&format!("bin/{program}"), 0o755, &read(&path)?);
    }
    match (&profile.guest.busybox, busybox) {
        (Some(spec), Some(path)) => {
            a.file("bin/busybox", 0o755, &read(path)?);
            for (link, target) in crate::busybox::links(spec) {
                a.symlink(&link, target);
            }
        }
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::Other(format!("machine `{}`: busybox given without its profile entry", profile.name)));
        }
    }
    for (name, path) in &kernel.modules {
        a.file(&format!("lib/modules/{name}.ko"), 0o644, &read(path)?);
    }
    a.file(PLAN_PATH, 0o644, plan(profile).render().as_bytes());
    if let Some(parent) = out.parent() {
        util::create_dir_all(parent)?;
    }
    std::fs::write(out, a.finish()).at(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_plan_loads_uio_first_binds_edu_and_waits_for_both_devices() {
        let profiles = crate::machines::load().unwrap();
        let x86 = profiles.iter().find(|p| p.name == "x86").unwrap();
        let plan = plan(x86);
        let paths: Vec<&str> = plan.modules.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(paths, ["/lib/modules/uio.ko", "/lib/modules/uio_pci_generic.ko", "/lib/modules/nbd.ko"]);
        assert_eq!(plan.binds, [Bind { driver: "uio_pci_generic".into(), id: "1234 11e8".into() }]);
        assert_eq!(plan.uio_devices, 2);
        assert_eq!(plan.suites, ["/bin/edu-suite", "/bin/supervised-suite", "/bin/nbd-suite", "/bin/campaign-suite"]);
        assert_eq!(Plan::parse(&plan.render()).unwrap(), plan, "the guest reads back what we write");
    }

    #[test]
    fn rpi3_plan_loads_genirq_with_its_of_id_between_uio_and_the_watchdog_and_reboots() {
        let profiles = crate::machines::load().unwrap();
        let rpi3 = profiles.iter().find(|p| p.name == "rpi3").unwrap();
        let plan = plan(rpi3);
        let modules: Vec<(&str, &str)> = plan.modules.iter().map(|m| (m.path.as_str(), m.params.as_str())).collect();
        assert_eq!(
            modules,
            [
                ("/lib/modules/uio.ko", ""),
                ("/lib/modules/uio_pdrv_genirq.ko", "of_id=generic-uio"),
                ("/lib/modules/bcm2835_wdt.ko", ""),
            ]
        );
        assert!(plan.binds.is_empty(), "device-tree devices need no new_id");
        assert_eq!((plan.uio_devices, plan.halt), (2, Halt::Reboot));
        assert_eq!(plan.suites, ["/bin/rpi3-suite"]);
    }
}
