//! Debian packages: installing the tools the QEMU suites need and downloading
//! (never installing) kernel packages.
//!
//! Everything goes through the ordinary clients (`apt-get`, `apt-cache`,
//! `dpkg-query`). Installing needs root; when this process is not root, or
//! the machine has no `apt-get`, the error names the exact command to run.
//!
//! # Never remove, never downgrade
//! A user's machine is theirs. Before installing anything the xtask asks apt
//! for its plan (`apt-get -s install`), and refuses when the plan removes or
//! downgrades any installed package: the error names each conflict and the
//! command the user may choose to run. The real install then runs with
//! `--no-remove`, so apt itself aborts should its plan change in between.
//! This matters in practice: Debian 12's `qemu-system-x86` (7.2) needs a
//! `qemu-system-common` that a backported `qemu-utils` 10 `Breaks`, and a
//! plain `apt-get install` silently removes `qemu-img`. For QEMU the xtask
//! then uses a private copy instead (see [`crate::qemu_tool`]).
//!
//! Rejected: `apt-get install` alone (it removes packages to satisfy
//! `Breaks` without asking under `-y`), and `aptitude`'s resolver (another
//! package to install, and its answers are harder to check).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::progress;
use crate::util::{self, Error, IoContext, Result};

pub use crate::qemu_tool::{Qemu, ensure_qemu};

/// The package tools to run: the system's, or stubs in tests. Each is a
/// program and the arguments that come before the tool's own.
#[derive(Debug, Clone)]
pub struct Apt {
    apt_get: Vec<OsString>,
    dpkg: Vec<OsString>,
}

impl Apt {
    /// The machine's own `apt-get` and `dpkg`.
    pub fn system() -> Apt {
        Apt { apt_get: vec!["apt-get".into()], dpkg: vec!["dpkg".into()] }
    }

    /// Shell-script stubs, run as `sh SCRIPT`: a script the test just wrote
    /// cannot be exec'd directly, because another test thread's fork may
    /// still hold it open for writing (ETXTBSY).
    #[cfg(test)]
    fn stubbed(apt_get: &Path, dpkg: &Path) -> Apt {
        Apt { apt_get: vec!["sh".into(), apt_get.into()], dpkg: vec!["sh".into(), dpkg.into()] }
    }

    fn tool(argv: &[OsString]) -> Command {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd
    }

    fn apt_get(&self) -> Command {
        let mut cmd = Apt::tool(&self.apt_get);
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }
}

/// Makes sure `binary` is on `PATH`, installing `package` with apt-get when it
/// is not, and returns its path. `why` says what it is for, in the message
/// printed before installing.
pub fn ensure_tool(binary: &str, package: &str, why: &str) -> Result<PathBuf> {
    if let Some(path) = util::find_on_path(binary) {
        return Ok(path);
    }
    install(&Apt::system(), &[package], &format!("`{binary}` ({why})"))?;
    util::find_on_path(binary)
        .ok_or_else(|| Error::Other(format!("installed {package}, but `{binary}` is still not on PATH")))
}

/// One package in apt's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub name: String,
    /// The version apt would install (`Inst`) or the installed one (`Remv`).
    pub version: String,
    /// For an `Inst` that replaces an installed version: that version.
    pub replaces: Option<String>,
}

/// What `apt-get -s install` says it would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub installs: Vec<Planned>,
    pub removals: Vec<Planned>,
}

/// Parses the `Inst`/`Remv` lines of `apt-get -s install`:
/// `Inst NAME [OLD] (NEW ARCHIVE [ARCH])` and `Remv NAME [OLD]`.
pub fn parse_plan(simulation: &str) -> Plan {
    let mut plan = Plan::default();
    for line in simulation.lines() {
        let (kind, rest) = match line.split_once(' ') {
            Some((k @ ("Inst" | "Remv"), rest)) => (k, rest.trim()),
            _ => continue,
        };
        let (name, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let rest = rest.trim();
        let bracketed = rest.strip_prefix('[').and_then(|r| r.split_once(']')).map(|(v, tail)| (v.to_string(), tail));
        let (old, tail) = match bracketed {
            Some((v, tail)) => (Some(v), tail.trim()),
            None => (None, rest),
        };
        let new = tail.strip_prefix('(').and_then(|t| t.split_whitespace().next()).map(str::to_string);
        match (kind, new, old) {
            ("Inst", Some(version), replaces) => {
                plan.installs.push(Planned { name: name.to_string(), version, replaces })
            }
            ("Remv", _, Some(version)) => {
                plan.removals.push(Planned { name: name.to_string(), version, replaces: None })
            }
            _ => {}
        }
    }
    plan
}

/// apt's plan for installing `packages` (nothing is changed).
pub fn simulate(apt: &Apt, packages: &[&str]) -> Result<Plan> {
    let mut cmd = apt.apt_get();
    cmd.args(["-s", "install", "--no-install-recommends"]).args(packages);
    Ok(parse_plan(&util::output(&mut cmd)?))
}

/// The removals and downgrades in `plan`, phrased for a message, or `None`
/// when the plan only adds and upgrades.
fn conflicts(apt: &Apt, plan: &Plan) -> Result<Option<String>> {
    let mut parts: Vec<String> = plan.removals.iter().map(|p| format!("remove {} {}", p.name, p.version)).collect();
    for p in &plan.installs {
        if let Some(old) = &p.replaces
            && version_lower(apt, &p.version, old)?
        {
            parts.push(format!("downgrade {} from {old} to {}", p.name, p.version));
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join(", ")))
}

/// `dpkg --compare-versions a lt b`.
fn version_lower(apt: &Apt, a: &str, b: &str) -> Result<bool> {
    let mut cmd = Apt::tool(&apt.dpkg);
    cmd.args(["--compare-versions", a, "lt", b]);
    Ok(util::raw_output(&mut cmd)?.status.success())
}

/// Installs `packages` (non-interactively, without recommends), after
/// checking apt's plan removes and downgrades nothing.
pub fn install(apt: &Apt, packages: &[&str], what: &str) -> Result {
    require_root_apt(what, &install_command(packages))?;
    if simulate(apt, packages).is_err() || !packages.iter().all(|p| candidate_version(p, None).ok().flatten().is_some())
    {
        update(what)?;
    }
    install_checked(apt, packages, what)
}

/// What a user would type to install `packages` themselves.
fn install_command(packages: &[&str]) -> String {
    format!("apt-get install --no-install-recommends {}", packages.join(" "))
}

/// [`install`] once the lists are current: plan, refuse conflicts, install.
fn install_checked(apt: &Apt, packages: &[&str], what: &str) -> Result {
    let command = install_command(packages);
    let plan = simulate(apt, packages)?;
    if let Some(conflicts) = conflicts(apt, &plan)? {
        return Err(Error::WouldRemove { what: what.to_string(), packages: packages.join(" "), conflicts, command });
    }
    eprintln!(
        "xtask: {what} is missing; installing Debian package(s) {} with apt-get ({} package(s) in all, none removed)",
        packages.join(", "),
        plan.installs.len()
    );
    let mut cmd = apt.apt_get();
    cmd.args(["install", "-y", "--no-install-recommends", "--no-remove"]).args(packages);
    util::run(&mut cmd)
}

/// Fails with the command to run by hand when apt-get is absent or we are not
/// root.
fn require_root_apt(what: &str, command: &str) -> Result {
    match refusal(util::on_path("apt-get"), util::effective_uid(), what, command) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Why this process cannot run `command` itself, if it cannot.
fn refusal(has_apt: bool, uid: Option<u32>, what: &str, command: &str) -> Option<Error> {
    let why = if !has_apt {
        "no apt-get on this machine; install the equivalent package with your package manager".to_string()
    } else if uid != Some(0) {
        format!("installing needs root, this process runs as uid {}", uid.map_or("?".into(), |u| u.to_string()))
    } else {
        return None;
    };
    Some(Error::NeedsInstall { what: what.to_string(), why, command: command.to_string() })
}

/// Set once `apt-get update` has run in this process.
static UPDATED: AtomicBool = AtomicBool::new(false);

/// `apt-get update`, said out loud, at most once per run: a second update
/// in the middle of a run could make two stages resolve different versions.
pub fn update(what: &str) -> Result {
    if UPDATED.load(Ordering::SeqCst) {
        return Ok(());
    }
    require_root_apt(what, "apt-get update")?;
    eprintln!("xtask: refreshing the package lists with apt-get update (for {what})");
    util::run(Command::new("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive"))?;
    UPDATED.store(true, Ordering::SeqCst);
    Ok(())
}

/// Whether the package lists were refreshed in this run already.
pub fn updated_this_run() -> bool {
    UPDATED.load(Ordering::SeqCst)
}

/// Makes apt able to download `arch` packages: when `arch` is neither
/// dpkg's native architecture nor one of its foreign ones, runs `dpkg
/// --add-architecture <arch>` and `apt-get update` (root only; otherwise the
/// error names that command). Without it, `-o APT::Architecture=arm64` on an
/// amd64 host finds no arm64 package lists and resolves nothing. Nothing of
/// that architecture is installed: its packages are only downloaded and
/// unpacked into the cache.
pub fn ensure_architecture(arch: &str) -> Result {
    let native = util::output(Command::new("dpkg").arg("--print-architecture"))?;
    let foreign = util::output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    if !needs_architecture(&native, &foreign, arch) {
        return Ok(());
    }
    let what = format!("apt's {arch} package lists (for a foreign-architecture kernel)");
    require_root_apt(&what, &format!("dpkg --add-architecture {arch} && apt-get update"))?;
    eprintln!(
        "xtask: {} has no {arch} package lists; adding the dpkg architecture {arch} (packages are only downloaded)",
        native.trim()
    );
    util::run(Command::new("dpkg").args(["--add-architecture", arch]))?;
    // The new architecture's lists must be fetched even if this run updated
    // already.
    UPDATED.store(false, Ordering::SeqCst);
    update(&what)
}

/// Whether dpkg must be told about `arch`, given the outputs of
/// `dpkg --print-architecture` and `--print-foreign-architectures`.
fn needs_architecture(native: &str, foreign: &str, arch: &str) -> bool {
    native.trim() != arch && !foreign.lines().any(|l| l.trim() == arch)
}

/// `-o APT::Architecture=<arch>` when `arch` is given, so that foreign
/// kernels (arm64 on an amd64 host) resolve against their own lists.
fn arch_opts(cmd: &mut Command, arch: Option<&str>) {
    if let Some(arch) = arch {
        cmd.arg("-o").arg(format!("APT::Architecture={arch}"));
    }
}

/// The candidate version of `package` as `apt-cache policy` reports it, or
/// `None` when apt knows no installable version.
pub fn candidate_version(package: &str, arch: Option<&str>) -> Result<Option<String>> {
    let mut cmd = Command::new("apt-cache");
    arch_opts(&mut cmd, arch);
    cmd.args(["policy", package]);
    Ok(parse_candidate(&util::output(&mut cmd)?))
}

fn parse_candidate(policy: &str) -> Option<String> {
    let v = policy.lines().find_map(|l| l.trim().strip_prefix("Candidate:"))?.trim();
    (!v.is_empty() && v != "(none)").then(|| v.to_string())
}

/// Like [`candidate_version`], but runs `apt-get update` once when apt knows
/// no candidate (fresh machines may have empty lists).
pub fn candidate_version_updating(package: &str, arch: Option<&str>) -> Result<String> {
    if let Some(v) = candidate_version(package, arch)? {
        return Ok(v);
    }
    update(&format!("Debian package {package}"))?;
    candidate_version(package, arch)?.ok_or_else(|| {
        Error::Other(format!("apt knows no installable version of {package}, even after apt-get update"))
    })
}

/// The direct dependencies of `package` (candidate version) that match
/// `pattern`, a package name with one `*` wildcard.
pub fn matching_dependency(package: &str, pattern: &str, arch: Option<&str>) -> Result<String> {
    let mut cmd = Command::new("apt-cache");
    arch_opts(&mut cmd, arch);
    cmd.args(["depends", package]);
    let text = util::output(&mut cmd)?;
    pick_dependency(&text, pattern).ok_or_else(|| {
        Error::Other(format!("`apt-cache depends {package}` names no dependency matching `{pattern}`:\n{text}"))
    })
}

fn pick_dependency(depends: &str, pattern: &str) -> Option<String> {
    let (prefix, suffix) = pattern.split_once('*').unwrap_or((pattern, ""));
    depends
        .lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(|d| d.trim().trim_matches(|c| c == '<' || c == '>'))
        .find(|d| d.len() >= prefix.len() + suffix.len() && d.starts_with(prefix) && d.ends_with(suffix))
        .map(str::to_string)
}

/// A field (`Size`, `Source`, …) of `package=version` from `apt-cache show`.
pub fn package_field(package: &str, version: &str, arch: Option<&str>, field: &str) -> Result<Option<String>> {
    let mut cmd = Command::new("apt-cache");
    arch_opts(&mut cmd, arch);
    cmd.args(["show", "--no-all-versions", &format!("{package}={version}")]);
    Ok(parse_field(&util::output(&mut cmd)?, field))
}

/// The first `Field: value` of a control-file stanza.
pub fn parse_field(stanza: &str, field: &str) -> Option<String> {
    stanza.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')).map(|v| v.trim().to_string())
}

/// The source package `package` is built from: the `Source:` field without
/// its optional `(version)`, or the package's own name.
pub fn source_name(stanza_source: Option<&str>, package: &str) -> String {
    stanza_source.and_then(|s| s.split_whitespace().next()).unwrap_or(package).to_string()
}

/// Whether apt's lists have `package` at exactly `version`.
pub fn has_version(package: &str, version: &str, arch: Option<&str>) -> bool {
    package_field(package, version, arch, "Version").ok().flatten().as_deref() == Some(version)
}

/// Downloads `package=version` into `dir` with `apt-get download` and returns
/// the `.deb`'s path. Needs no root.
pub fn download(package: &str, version: &str, arch: Option<&str>, dir: &Path) -> Result<PathBuf> {
    util::create_dir_all(dir)?;
    let mut cmd = Command::new("apt-get");
    arch_opts(&mut cmd, arch);
    if util::effective_uid() == Some(0) {
        // apt drops to its `_apt` user for downloads, which cannot write into
        // root's cache directory; it would fall back with a warning anyway.
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    cmd.args(["-q", "download", &format!("{package}={version}")]).current_dir(dir);
    let total = package_field(package, version, arch, "Size").ok().flatten().and_then(|s| s.parse().ok());
    eprintln!("xtask: downloading {package} {version} into {}", dir.display());
    let baseline = progress::dir_bytes(dir, 0);
    progress::watch(&mut cmd, &format!("download {package}"), total, || progress::dir_bytes(dir, baseline))?;
    let entries = std::fs::read_dir(dir).at(dir)?;
    for entry in entries {
        let path = entry.at(dir)?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with(&format!("{package}_")) && name.ends_with(".deb") {
            return Ok(path);
        }
    }
    Err(Error::Other(format!("apt-get download {package}={version} left no .deb in {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFLICTING_PLAN: &str = "\
NOTE: This is only a simulation!
The following packages will be REMOVED:
  qemu-utils
Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]
Inst ipxe-qemu (1.0.0+git-20190125.36a4c85-5.1 Debian:12.15/oldstable [all])
Inst qemu-system-common (1:7.2+dfsg-7+deb12u18+b3 Debian:12.15/oldstable [amd64])
Inst libfoo1 [1.0-1] (1.2-1 Debian:12.15/oldstable [amd64])
Conf ipxe-qemu (1.0.0+git-20190125.36a4c85-5.1 Debian:12.15/oldstable [all])
";

    #[test]
    fn plan_lists_installs_upgrades_and_removals() {
        let plan = parse_plan(CONFLICTING_PLAN);
        assert_eq!(
            plan.removals,
            vec![Planned {
                name: "qemu-utils".into(),
                version: "1:10.0.2+ds-2+deb13u1~bpo12+1".into(),
                replaces: None
            }]
        );
        let names: Vec<_> = plan.installs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ipxe-qemu", "qemu-system-common", "libfoo1"], "Conf lines are not installs");
        assert_eq!(plan.installs[1].version, "1:7.2+dfsg-7+deb12u18+b3");
        assert_eq!(plan.installs[2].replaces.as_deref(), Some("1.0-1"));
        assert_eq!(parse_plan("Reading package lists...\n"), Plan::default());
    }

    /// A stub `apt-get` that logs its arguments and prints `plan` for `-s`,
    /// and a stub `dpkg` whose `--compare-versions` answers `lower`.
    fn stub_apt(dir: &Path, plan: &str, lower: bool) -> (Apt, PathBuf) {
        let log = dir.join("calls.log");
        std::fs::write(dir.join("plan.txt"), plan).unwrap();
        let apt_get = dir.join("apt-get");
        let script = format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nif [ \"$1\" = -s ]; then cat '{}'; fi\n",
            log.display(),
            dir.join("plan.txt").display()
        );
        std::fs::write(&apt_get, script).unwrap();
        let dpkg = dir.join("dpkg");
        std::fs::write(&dpkg, if lower { "#!/bin/sh\nexit 0\n" } else { "#!/bin/sh\nexit 1\n" }).unwrap();
        (Apt::stubbed(&apt_get, &dpkg), log)
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-apt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn install_refuses_a_plan_that_removes_a_package_and_names_it() {
        let dir = scratch("refuse");
        let (apt, log) = stub_apt(&dir, CONFLICTING_PLAN, false);
        let e = install_checked(&apt, &["qemu-system-x86"], "`qemu-system-x86_64` (the guests)").expect_err("refused");
        let msg = e.to_string();
        assert!(msg.contains("remove qemu-utils 1:10.0.2+ds-2+deb13u1~bpo12+1"), "names the conflict: {msg}");
        assert!(msg.contains("never removes"), "{msg}");
        assert!(msg.ends_with("apt-get install --no-install-recommends qemu-system-x86"), "names the command: {msg}");
        let calls = std::fs::read_to_string(&log).unwrap();
        assert_eq!(calls.lines().collect::<Vec<_>>(), ["-s install --no-install-recommends qemu-system-x86"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn install_refuses_a_downgrade() {
        let dir = scratch("downgrade");
        let plan = "Inst libfoo1 [2.0-1] (1.0-1 Debian:12 [amd64])\n";
        let (apt, log) = stub_apt(&dir, plan, true);
        let msg = install_checked(&apt, &["foo"], "foo").expect_err("refused").to_string();
        assert!(msg.contains("downgrade libfoo1 from 2.0-1 to 1.0-1"), "{msg}");
        assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1, "only the simulation ran");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn install_of_a_clean_plan_runs_apt_with_no_remove() {
        let dir = scratch("clean");
        let plan = "Inst device-tree-compiler (1.6.1-4+b1 Debian:12 [amd64])\nInst libfoo1 [1.0-1] (1.2-1 Debian:12 [amd64])\n";
        let (apt, log) = stub_apt(&dir, plan, false);
        install_checked(&apt, &["device-tree-compiler"], "dtc").expect("installs");
        let calls = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            calls.lines().collect::<Vec<_>>(),
            [
                "-s install --no-install-recommends device-tree-compiler",
                "install -y --no-install-recommends --no-remove device-tree-compiler"
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn control_fields_and_source_names_are_parsed() {
        let stanza = "Package: qemu-system-x86\nSource: qemu (1:7.2+dfsg-7)\nSize: 1234\n";
        assert_eq!(parse_field(stanza, "Size").as_deref(), Some("1234"));
        assert_eq!(source_name(parse_field(stanza, "Source").as_deref(), "qemu-system-x86"), "qemu");
        assert_eq!(source_name(None, "seabios"), "seabios");
        assert_eq!(parse_field(stanza, "Sizes"), None);
    }

    #[test]
    fn candidate_is_read_from_policy_and_none_means_absent() {
        let policy = "qemu-system-x86:\n  Installed: (none)\n  Candidate: 1:7.2+dfsg-7+deb12u18+b3\n  Version table:\n";
        assert_eq!(parse_candidate(policy).as_deref(), Some("1:7.2+dfsg-7+deb12u18+b3"));
        assert_eq!(parse_candidate("foo:\n  Installed: (none)\n  Candidate: (none)\n"), None);
        assert_eq!(parse_candidate(""), None);
    }

    #[test]
    fn non_root_gets_the_exact_command_to_run() {
        let cmd = "apt-get install -y --no-install-recommends qemu-system-x86";
        let e = refusal(true, Some(1000), "`qemu-system-x86_64`", cmd).expect("uid 1000 cannot install");
        let msg = e.to_string();
        assert!(msg.contains("uid 1000") && msg.ends_with(&format!("run as root:\n    {cmd}")), "{msg}");
        assert!(refusal(false, Some(0), "x", cmd).unwrap().to_string().contains("no apt-get"));
        assert!(refusal(true, Some(0), "x", cmd).is_none(), "root with apt-get installs by itself");
    }

    #[test]
    fn foreign_architecture_is_added_only_when_dpkg_lacks_it() {
        assert!(needs_architecture("amd64\n", "", "arm64"), "fresh amd64 host");
        assert!(!needs_architecture("amd64\n", "arm64\n", "arm64"), "already added");
        assert!(!needs_architecture("amd64\n", "i386\narm64\n", "arm64"));
        assert!(!needs_architecture("arm64\n", "", "arm64"), "native");
        assert!(!needs_architecture("amd64\n", "", "amd64"));
    }

    #[test]
    fn kernel_abi_package_is_picked_from_the_meta_package() {
        let depends = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(pick_dependency(depends, "linux-image-*-amd64").as_deref(), Some("linux-image-6.1.0-56-amd64"));
        let arm = "linux-image-arm64\n  Depends: linux-image-6.1.0-56-arm64\n  Depends: <virtual-thing>\n";
        assert_eq!(pick_dependency(arm, "linux-image-*-amd64"), None);
        assert_eq!(pick_dependency(arm, "linux-image-*-arm64").as_deref(), Some("linux-image-6.1.0-56-arm64"));
    }
}
