//! The QEMU emulator for the guest suites: the machine's own, a fresh apt
//! install, or a private copy in the cache.
//!
//! In order:
//! 1. the binary on `PATH`, whatever its origin;
//! 2. a private copy already unpacked in `<cache>/tools/qemu/<version>/`;
//! 3. `apt-get install` of the profile's package, when apt's plan removes and
//!    downgrades nothing ([`crate::apt::install`]);
//! 4. otherwise a private copy. The packages built from the same source as
//!    the ones apt would remove (for QEMU: `qemu-system-x86`,
//!    `qemu-system-common`, `qemu-system-data`) are downloaded and unpacked
//!    into the cache with `dpkg-deb -x`; everything else the plan installs
//!    (shared libraries, SeaBIOS, iPXE) is installed normally, again only if
//!    that removes nothing. The copy finds its firmware through `-L`.
//!
//! The case is real: a machine with a backported `qemu-utils` 10 cannot have
//! Debian 12's `qemu-system-x86` 7.2 installed next to it (`qemu-utils`
//! `Breaks: qemu-system-common (<< 8.0)`), and removing `qemu-img` to run
//! our tests is not ours to decide. The message printed says so, and names
//! the command a user may run to install QEMU system-wide instead.
//!
//! Rejected: installing with `dpkg --force-breaks` (leaves dpkg in a state
//! the user did not ask for), and a separate chroot or container for QEMU
//! (far heavier, and no engine runs here).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::apt::{self, Apt, Plan};
use crate::util::{self, Error, IoContext, Result};

/// Where Debian's QEMU looks for firmware besides its own data directory
/// (its `--firmwarepath`). A private copy passes them with `-L`.
const DEBIAN_FIRMWARE_DIRS: [&str; 3] = ["/usr/share/qemu", "/usr/share/seabios", "/usr/lib/ipxe/qemu"];

/// A QEMU binary and the data directories it must be told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qemu {
    /// The `qemu-system-*` executable.
    pub binary: PathBuf,
    /// `-L` directories, in order (empty for a system-wide QEMU).
    pub data_dirs: Vec<PathBuf>,
}

impl Qemu {
    /// A command for this QEMU, with its `-L` options already given.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        for dir in &self.data_dirs {
            cmd.arg("-L").arg(dir);
        }
        cmd
    }

    /// `qemu-system-x86_64 --version`'s first line.
    pub fn version(&self) -> Result<String> {
        let out = util::output(Command::new(&self.binary).arg("--version"))?;
        Ok(out.lines().next().unwrap_or_default().to_string())
    }

    fn private(root: &Path, binary: &str) -> Qemu {
        let mut data_dirs = vec![root.join("usr/share/qemu")];
        data_dirs.extend(DEBIAN_FIRMWARE_DIRS.iter().map(PathBuf::from).filter(|d| d.is_dir()));
        Qemu { binary: root.join("usr/bin").join(binary), data_dirs }
    }
}

/// Finds or provides `binary` (e.g. `qemu-system-x86_64`) from Debian
/// package `package` (e.g. `qemu-system-x86`), without removing or
/// downgrading any installed package.
pub fn ensure_qemu(binary: &str, package: &str) -> Result<Qemu> {
    if let Some(path) = util::find_on_path(binary) {
        return Ok(Qemu { binary: path, data_dirs: Vec::new() });
    }
    let tools = util::cache_dir()?.join("tools").join("qemu");
    if let Some(found) = cached_private(&tools, binary) {
        eprintln!("xtask: using the private QEMU in {} (the system has none on PATH)", found.binary.display());
        return Ok(found);
    }
    let what = format!("`{binary}` (the QEMU emulator for the guest suites)");
    let sys = Apt::system();
    match apt::install(&sys, &[package], &what) {
        Ok(()) => {
            return util::find_on_path(binary)
                .map(|binary| Qemu { binary, data_dirs: Vec::new() })
                .ok_or_else(|| Error::Other(format!("installed {package}, but `{binary}` is still not on PATH")));
        }
        Err(Error::WouldRemove { conflicts, command, .. }) => {
            eprintln!(
                "xtask: installing {package} system-wide would {conflicts}, and the xtask never removes or \
                 downgrades a package.\nxtask: using a private copy of QEMU in {} instead. To install QEMU \
                 system-wide yourself, accepting that, run:\n    {command}",
                tools.display()
            );
        }
        Err(e) => return Err(e),
    }
    let plan = apt::simulate(&sys, &[package])?;
    let (unpack, install) = split_plan(&plan, &removed_sources(&plan)?, |name, version| {
        Ok(apt::source_name(apt::package_field(name, version, None, "Source")?.as_deref(), name))
    })?;
    if !install.is_empty() {
        let names: Vec<&str> = install.iter().map(String::as_str).collect();
        apt::install(&sys, &names, &format!("the libraries and firmware of the private {binary}"))?;
    }
    let version = plan.installs.iter().find(|p| p.name == package).map(|p| p.version.clone()).ok_or_else(|| {
        Error::Other(format!("apt's plan for {package} does not install {package} itself:\n{plan:?}"))
    })?;
    let root = tools.join(sanitize(&version));
    for (name, version) in &unpack {
        unpack_private(&root, name, version)?;
    }
    let qemu = Qemu::private(&root, binary);
    let v = qemu
        .version()
        .map_err(|e| Error::Other(format!("the private QEMU in {} does not run: {e}", root.display())))?;
    eprintln!("xtask: private QEMU ready: {} ({v})", qemu.binary.display());
    Ok(qemu)
}

/// A previously unpacked private copy of `binary` that runs.
fn cached_private(tools: &Path, binary: &str) -> Option<Qemu> {
    let mut roots: Vec<PathBuf> = std::fs::read_dir(tools).ok()?.flatten().map(|e| e.path()).collect();
    roots.sort();
    roots.into_iter().rev().map(|root| Qemu::private(&root, binary)).find(|q| q.binary.is_file() && q.version().is_ok())
}

/// The source packages of everything apt's plan would remove: installed
/// packages, so `dpkg-query` knows them.
fn removed_sources(plan: &Plan) -> Result<Vec<String>> {
    plan.removals
        .iter()
        .map(|p| {
            let out = util::output(Command::new("dpkg-query").args(["-W", "-f=${source:Package}", p.name.as_str()]))?;
            Ok(apt::source_name(Some(out.trim()).filter(|s| !s.is_empty()), &p.name))
        })
        .collect()
}

/// `(package, version)` pairs to unpack privately.
type Unpack = Vec<(String, String)>;

/// Splits a plan into the packages to unpack privately, `(name, version)`,
/// which are those built from one of `conflicting` sources, and the names to
/// install normally.
fn split_plan(
    plan: &Plan,
    conflicting: &[String],
    source_of: impl Fn(&str, &str) -> Result<String>,
) -> Result<(Unpack, Vec<String>)> {
    let mut unpack = Vec::new();
    let mut install = Vec::new();
    for p in &plan.installs {
        if conflicting.contains(&source_of(&p.name, &p.version)?) {
            unpack.push((p.name.clone(), p.version.clone()));
        } else {
            install.push(p.name.clone());
        }
    }
    Ok((unpack, install))
}

/// Downloads and unpacks one package into `root` (once: a marker file says
/// it is done).
fn unpack_private(root: &Path, package: &str, version: &str) -> Result {
    let marker = root.join(format!(".unpacked-{package}"));
    if marker.is_file() {
        return Ok(());
    }
    let debs = root.join("debs");
    let deb = apt::download(package, version, None, &debs)?;
    eprintln!("xtask: unpacking {} into {} (dpkg-deb -x; nothing is installed)", deb.display(), root.display());
    util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(root))?;
    std::fs::write(&marker, version).at(&marker)
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || ".-_+".contains(c) { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apt::parse_plan;

    #[test]
    fn only_packages_of_the_conflicting_source_are_unpacked_privately() {
        let plan = parse_plan(
            "Remv qemu-utils [1:10.0.2]\n\
             Inst libfdt1 (1.6.1-4+b1 Debian:12 [amd64])\n\
             Inst qemu-system-common (1:7.2 Debian:12 [amd64])\n\
             Inst qemu-system-data (1:7.2 Debian:12 [all])\n\
             Inst seabios (1.16.2-1 Debian:12 [all])\n\
             Inst qemu-system-x86 (1:7.2 Debian:12 [amd64])\n",
        );
        let source = |name: &str, _: &str| Ok(if name.starts_with("qemu-") { "qemu".into() } else { name.to_string() });
        let (unpack, install) = split_plan(&plan, &["qemu".to_string()], source).unwrap();
        let unpacked: Vec<_> = unpack.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(unpacked, ["qemu-system-common", "qemu-system-data", "qemu-system-x86"]);
        assert_eq!(install, ["libfdt1", "seabios"]);
    }

    #[test]
    fn a_private_copy_is_told_its_data_directory_first() {
        let q = Qemu::private(Path::new("/c/tools/qemu/7.2"), "qemu-system-x86_64");
        assert_eq!(q.binary, PathBuf::from("/c/tools/qemu/7.2/usr/bin/qemu-system-x86_64"));
        assert_eq!(q.data_dirs[0], PathBuf::from("/c/tools/qemu/7.2/usr/share/qemu"));
        let args: Vec<String> = q.command().get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args[..2], ["-L".to_string(), "/c/tools/qemu/7.2/usr/share/qemu".to_string()]);
        let system = Qemu { binary: "/usr/bin/qemu-system-x86_64".into(), data_dirs: Vec::new() };
        assert_eq!(system.command().get_args().count(), 0, "a system QEMU needs no -L");
    }
}
