//! Debian packages: installing the tools the QEMU suites need and downloading
//! (never installing) kernel packages.
//!
//! Everything goes through the ordinary clients (`apt-get`, `apt-cache`,
//! `dpkg-query`). Installing needs root; when this process is not root, or
//! the machine has no `apt-get`, the error names the exact command to run.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{self, Error, IoContext, Result};

/// Makes sure `binary` is on `PATH`, installing `package` with apt-get when it
/// is not. `why` says what it is for, in the message printed before
/// installing.
pub fn ensure_tool(binary: &str, package: &str, why: &str) -> Result {
    if util::on_path(binary) {
        return Ok(());
    }
    install(&[package], &format!("`{binary}` ({why})"))?;
    if util::on_path(binary) {
        Ok(())
    } else {
        Err(Error::Other(format!("installed {package}, but `{binary}` is still not on PATH")))
    }
}

/// Installs `packages` (non-interactively, without recommends).
fn install(packages: &[&str], what: &str) -> Result {
    let command = format!("apt-get install -y --no-install-recommends {}", packages.join(" "));
    require_root_apt(what, &command)?;
    if !packages.iter().all(|p| candidate_version(p, None).ok().flatten().is_some()) {
        update(what)?;
    }
    eprintln!("xtask: {what} is missing; installing Debian package(s) {} with apt-get", packages.join(", "));
    let mut cmd = Command::new("apt-get");
    cmd.args(["install", "-y", "--no-install-recommends"]).args(packages).env("DEBIAN_FRONTEND", "noninteractive");
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

/// `apt-get update`, said out loud.
pub fn update(what: &str) -> Result {
    require_root_apt(what, "apt-get update")?;
    eprintln!("xtask: refreshing the package lists with apt-get update (for {what})");
    util::run(Command::new("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive"))
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
    cmd.args(["download", &format!("{package}={version}")]).current_dir(dir);
    eprintln!("xtask: downloading {package} {version} into {}", dir.display());
    util::run(&mut cmd)?;
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
