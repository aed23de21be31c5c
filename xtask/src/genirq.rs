//! `uio_pdrv_genirq.ko` for Debian's arm64 kernel, built out of tree: the
//! recipe of `qemu/rpi3/README.md` as code.
//!
//! # Why
//! The raspi3b guest hands the GPIO block and the system timer to user space
//! through device-tree nodes with `compatible = "generic-uio"`, which only
//! `uio_pdrv_genirq` binds. Debian builds `uio.ko` but leaves
//! `CONFIG_UIO_PDRV_GENIRQ` unset, so the module is compiled here against the
//! exact kernel the guest boots (same ABI, so `vermagic` and the symbol
//! CRCs of `Module.symvers` match and plain `insmod` accepts it).
//!
//! # Inputs (all Debian packages, downloaded, never installed)
//! - `linux-headers-<abi>-arm64` and `linux-headers-<abi>-common`: the
//!   kernel's build tree (config, generated headers, `Module.symvers`);
//! - `linux-kbuild-<series>` **for the host architecture** (amd64): kbuild's
//!   helper programs (`fixdep`, `modpost`) run on the build machine, so the
//!   arm64 build of this package would fail with "Exec format error";
//! - `linux-source-<series>`: only `drivers/uio/uio_pdrv_genirq.c` is taken
//!   from its tarball;
//! - the cross compiler `aarch64-linux-gnu-gcc-12` (package
//!   `gcc-aarch64-linux-gnu`): the headers' `.kernelvariables` pin
//!   `CC = $(CROSS_COMPILE)gcc-12`, the compiler the kernel was built with.
//!
//! # The two fixes
//! All packages are unpacked into one private sysroot in the cache:
//! 1. The headers' `scripts` and `tools` are relative symlinks to
//!    `../../lib/linux-kbuild-<series>/…`; unpacking kbuild into the *same*
//!    sysroot makes them resolve (headers unpacked on their own would dangle,
//!    which is the "symlink for usr/lib/linux-kbuild" fix of the notes).
//!    [`check_kbuild`] verifies it, and that `fixdep` is a host binary.
//! 2. The arch headers' `Makefile` is one line,
//!    `include /usr/src/linux-headers-<abi>-common/Makefile`, an absolute
//!    path into the host's `/usr`; [`fix_headers_makefile`] points it into the
//!    sysroot.
//!
//! Then `make -C <sysroot>/usr/src/linux-headers-<abi>-arm64 M=<build>
//! ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- modules` builds the module in
//! about 2 s. [`check_module`] reads its `.modinfo` (vermagic, depends) and
//! ELF machine before it is trusted.
//!
//! # Cache
//! `<cache>/genirq/<release>/` (`<cache>` is `util::cache_dir()`, by default
//! `~/.cache/reinc`): `debs/`, `sysroot/`, `build/`, and the product
//! `uio_pdrv_genirq.ko`. A later run finds a checked product and does
//! nothing (no apt, no download). The 140 MB `linux-source` package is
//! deleted once its one file is extracted.
//!
//! # Rejected alternatives
//! - Installing the headers packages with apt: writes into the host's
//!   `/usr/src` and `/lib/modules`, needs root, and would pull the arm64
//!   kbuild (wrong architecture) through the package's own dependency.
//! - Building a whole kernel with the option enabled: minutes instead of
//!   seconds, and a kernel that differs from Debian's.
//! - Shipping a prebuilt `.ko` in the repository: tied to one ABI, and a
//!   binary nobody can review.
//!
//! Used by `kernel::fetch` for profile modules with `build = "genirq"` (the
//! rpi3 profile of `cargo xtask qemu-test`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{self, Error, IoContext, Result};
use crate::{apt, progress};

/// The module this recipe builds.
pub const MODULE: &str = "uio_pdrv_genirq";
/// Its source file inside the kernel tree.
pub const SOURCE_FILE: &str = "drivers/uio/uio_pdrv_genirq.c";
/// `CROSS_COMPILE` prefix for the arm64 build.
pub const CROSS_COMPILE: &str = "aarch64-linux-gnu-";
/// The compiler the headers' `.kernelvariables` ask for (`$(CROSS_COMPILE)gcc-12`).
pub const CROSS_GCC: &str = "aarch64-linux-gnu-gcc-12";
/// The Debian package that provides [`CROSS_GCC`].
pub const CROSS_GCC_PACKAGE: &str = "gcc-aarch64-linux-gnu";
/// ELF `e_machine` of AArch64.
pub const EM_AARCH64: u16 = 183;
/// ELF `e_machine` of x86-64.
#[cfg(test)]
pub const EM_X86_64: u16 = 62;

/// A Debian kernel ABI and flavour, e.g. `6.1.0-56` + `arm64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelAbi {
    /// `6.1.0-56`.
    pub abi: String,
    /// `arm64`.
    pub flavour: String,
}

impl KernelAbi {
    /// Parses the versioned image package name, `linux-image-6.1.0-56-arm64`
    /// (what `apt-cache depends linux-image-arm64` names).
    pub fn from_image_package(package: &str) -> Option<KernelAbi> {
        let rest = package.strip_prefix("linux-image-")?;
        let (abi, flavour) = rest.rsplit_once('-')?;
        let mut parts = abi.split(['.', '-']);
        let numeric = parts.by_ref().take(4).filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())).count();
        (numeric == 4 && parts.next().is_none() && !flavour.is_empty())
            .then(|| KernelAbi { abi: abi.to_string(), flavour: flavour.to_string() })
    }

    /// `6.1.0-56-arm64`: `uname -r` in the guest, and the vermagic prefix.
    pub fn release(&self) -> String {
        format!("{}-{}", self.abi, self.flavour)
    }

    /// `6.1`: the series of `linux-source-*` and `linux-kbuild-*`.
    pub fn series(&self) -> String {
        let mut it = self.abi.split('.');
        format!("{}.{}", it.next().unwrap_or_default(), it.next().unwrap_or_default())
    }
}

/// One package the recipe downloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Debian package name.
    pub name: String,
    /// Architecture to resolve it for (`-o APT::Architecture=`), `None` for
    /// the host's own (which also finds `Architecture: all` packages).
    pub arch: Option<String>,
}

/// The packages needed to build the module for `abi`, in unpack order.
/// `linux-kbuild` is deliberately the host's architecture (see module doc).
pub fn build_packages(abi: &KernelAbi) -> Vec<Package> {
    let series = abi.series();
    vec![
        Package { name: format!("linux-headers-{}", abi.release()), arch: Some(abi.flavour.clone()) },
        Package { name: format!("linux-headers-{}-common", abi.abi), arch: None },
        Package { name: format!("linux-kbuild-{series}"), arch: None },
        Package { name: format!("linux-source-{series}"), arch: None },
    ]
}

/// Where everything of one build lives, under `<cache>/genirq/<release>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `<cache>/genirq/<release>`.
    pub root: PathBuf,
    abi: KernelAbi,
}

impl Layout {
    /// The layout for `abi` under the cache directory `cache`.
    pub fn new(cache: &Path, abi: &KernelAbi) -> Layout {
        Layout { root: cache.join("genirq").join(abi.release()), abi: abi.clone() }
    }

    /// Downloaded `.deb` files.
    pub fn debs(&self) -> PathBuf {
        self.root.join("debs")
    }

    /// The private root all packages are unpacked into.
    pub fn sysroot(&self) -> PathBuf {
        self.root.join("sysroot")
    }

    /// The arch-specific headers: the `make -C` directory.
    pub fn headers(&self) -> PathBuf {
        self.sysroot().join("usr/src").join(format!("linux-headers-{}", self.abi.release()))
    }

    /// The common headers the arch `Makefile` includes.
    pub fn common_headers(&self) -> PathBuf {
        self.sysroot().join("usr/src").join(format!("linux-headers-{}-common", self.abi.abi))
    }

    /// The kbuild tree inside the sysroot.
    pub fn kbuild(&self) -> PathBuf {
        self.sysroot().join("usr/lib").join(format!("linux-kbuild-{}", self.abi.series()))
    }

    /// The external-module directory (`M=`): `Kbuild` and the `.c` file.
    pub fn build(&self) -> PathBuf {
        self.root.join("build")
    }

    /// The checked product.
    pub fn module(&self) -> PathBuf {
        self.root.join(format!("{MODULE}.ko"))
    }

    /// The member of the `linux-source` tarball to extract.
    pub fn source_member(&self) -> String {
        format!("linux-source-{}/{SOURCE_FILE}", self.abi.series())
    }

    /// The tarball inside the unpacked `linux-source` package.
    pub fn source_tarball(&self, unpacked: &Path) -> PathBuf {
        unpacked.join("usr/src").join(format!("linux-source-{}.tar.xz", self.abi.series()))
    }

    /// The `make` arguments that build the module.
    pub fn make_args(&self) -> Vec<OsString> {
        let mut m = OsString::from("M=");
        m.push(self.build());
        vec![
            "-C".into(),
            self.headers().into_os_string(),
            m,
            format!("ARCH={}", self.abi.flavour).into(),
            format!("CROSS_COMPILE={CROSS_COMPILE}").into(),
            "modules".into(),
        ]
    }
}

/// The external module's `Kbuild` file.
pub fn kbuild_file() -> String {
    format!("obj-m := {MODULE}.o\n")
}

/// Fix 2: points the arch headers' absolute `include /usr/src/...` into
/// `sysroot`. Already-fixed text is returned unchanged, so the step is
/// idempotent.
///
/// # Errors
/// When no `include` of a common-headers `Makefile` is found: the package
/// layout changed and the recipe must be revisited, not guessed.
pub fn fix_headers_makefile(text: &str, sysroot: &Path) -> std::result::Result<String, String> {
    let prefix = format!("include {}/usr/src/", sysroot.display());
    let mut found = false;
    let fixed: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with(&prefix) {
                found = true;
                line.to_string()
            } else if let Some(rest) = line.strip_prefix("include /usr/src/") {
                found = true;
                format!("{prefix}{rest}")
            } else {
                line.to_string()
            }
        })
        .collect();
    if found {
        Ok(fixed.join("\n") + "\n")
    } else {
        Err(format!("no `include /usr/src/...` line to redirect; the headers Makefile reads:\n{text}"))
    }
}

/// The value of `key` in a module's `.modinfo` (NUL-separated `key=value`
/// strings; scanning the whole file finds them without an ELF parser).
pub fn modinfo(ko: &[u8], key: &str) -> Option<String> {
    let needle = format!("{key}=");
    ko.split(|b| *b == 0)
        .find_map(|s| s.strip_prefix(needle.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// `e_machine` of an ELF file, if `bytes` is one (little-endian only).
pub fn elf_machine(bytes: &[u8]) -> Option<u16> {
    (bytes.len() >= 20 && bytes.starts_with(b"\x7fELF") && bytes[5] == 1)
        .then(|| u16::from_le_bytes([bytes[18], bytes[19]]))
}

/// Checks that `ko` is `uio_pdrv_genirq` built for `abi`: an AArch64 ELF,
/// vermagic for exactly this release, depending on `uio`, with the `of_id`
/// parameter the device tree binding needs.
pub fn check_module(ko: &[u8], abi: &KernelAbi) -> std::result::Result<(), String> {
    if elf_machine(ko) != Some(EM_AARCH64) {
        return Err(format!("not an AArch64 ELF object (e_machine {:?})", elf_machine(ko)));
    }
    let vermagic = modinfo(ko, "vermagic").ok_or("no vermagic in .modinfo")?;
    let release = abi.release();
    if vermagic.split_whitespace().next() != Some(release.as_str()) {
        return Err(format!("vermagic `{vermagic}` is not for kernel {release}"));
    }
    if modinfo(ko, "name").as_deref() != Some(MODULE) {
        return Err(format!("module name is {:?}, not {MODULE}", modinfo(ko, "name")));
    }
    if modinfo(ko, "depends").as_deref() != Some("uio") {
        return Err(format!("depends is {:?}, expected `uio`", modinfo(ko, "depends")));
    }
    if !modinfo(ko, "parm").is_some_and(|p| p.starts_with("of_id:")) {
        return Err("no `of_id` parameter".into());
    }
    Ok(())
}

/// Fix 1, verified: the headers' `scripts` symlink resolves into the
/// sysroot's kbuild, and its `fixdep` runs on this host.
pub fn check_kbuild(layout: &Layout, host_machine: u16) -> std::result::Result<(), String> {
    let fixdep = layout.headers().join("scripts/basic/fixdep");
    let bytes = std::fs::read(&fixdep).map_err(|e| {
        format!(
            "{}: {e} (the headers' scripts symlink must resolve to {})",
            fixdep.display(),
            layout.kbuild().display()
        )
    })?;
    match elf_machine(&bytes) {
        Some(m) if m == host_machine => Ok(()),
        m => Err(format!(
            "{} is built for ELF machine {m:?}, this host is {host_machine}: linux-kbuild must be the host's architecture",
            fixdep.display()
        )),
    }
}

/// The ELF machine (`e_machine`) of the host.
///
/// From the architecture this xtask was compiled for, never from a file:
/// the xtask's own executable was read here once, and `cargo test
/// --workspace` relinks it while `cargo xtask test` runs, so on a fresh
/// machine the file was gone when the rpi3 stage first built the module.
fn host_machine() -> Result<u16> {
    elf_machine_of_arch(std::env::consts::ARCH).ok_or_else(|| {
        Error::Other(format!(
            "no ELF machine number known for host architecture `{}`; add it to elf_machine_of_arch",
            std::env::consts::ARCH
        ))
    })
}

/// `e_machine` for a Rust `target_arch` name.
fn elf_machine_of_arch(arch: &str) -> Option<u16> {
    Some(match arch {
        "x86" => 3,
        "arm" => 40,
        "x86_64" => 62,
        "aarch64" => 183,
        "riscv64" => 243,
        "powerpc64" => 21,
        "s390x" => 22,
        "loongarch64" => 258,
        _ => return None,
    })
}

/// Builds (or finds in the cache) `uio_pdrv_genirq.ko` for `abi` and returns
/// its path. Installs `make` and the cross compiler if missing, downloads the
/// packages if missing; a cached, checked module short-cuts everything.
pub fn build(abi: &KernelAbi, version: &str) -> Result<PathBuf> {
    build_in(&util::cache_dir()?, abi, version)
}

/// [`build`] under an explicit cache directory.
pub fn build_in(cache: &Path, abi: &KernelAbi, version: &str) -> Result<PathBuf> {
    let layout = Layout::new(cache, abi);
    let product = layout.module();
    if let Ok(bytes) = std::fs::read(&product) {
        match check_module(&bytes, abi) {
            Ok(()) => {
                eprintln!("xtask: reusing cached {MODULE}.ko for {} from {}", abi.release(), product.display());
                return Ok(product);
            }
            Err(why) => eprintln!("xtask: cached {} is unusable ({why}); rebuilding", product.display()),
        }
    }

    apt::ensure_tool("make", "make", "building the uio_pdrv_genirq module")?;
    apt::ensure_tool(CROSS_GCC, CROSS_GCC_PACKAGE, "cross-compiling uio_pdrv_genirq for arm64")?;
    apt::ensure_tool("xz", "xz-utils", "unpacking the kernel source tarball")?;

    let sysroot = layout.sysroot();
    util::create_dir_all(&sysroot)?;
    for package in build_packages(abi) {
        if package.name.starts_with("linux-source-") {
            if !layout.build().join(source_file_name()).is_file() {
                let deb = fetch_deb(&layout, &package, version)?;
                extract_source(&layout, &deb)?;
            }
        } else if !layout.root.join(format!(".unpacked-{}", package.name)).is_file() {
            let deb = fetch_deb(&layout, &package, version)?;
            unpack(&layout, &package, &deb)?;
        }
    }

    check_kbuild(&layout, host_machine()?).map_err(Error::Other)?;
    let common = layout.common_headers().join("Makefile");
    if !common.is_file() {
        return Err(Error::Other(format!("{}: missing after unpacking the common headers", common.display())));
    }
    let makefile = layout.headers().join("Makefile");
    let text = std::fs::read_to_string(&makefile).at(&makefile)?;
    let fixed =
        fix_headers_makefile(&text, &sysroot).map_err(|e| Error::Other(format!("{}: {e}", makefile.display())))?;
    if fixed != text {
        std::fs::write(&makefile, fixed).at(&makefile)?;
    }
    let kbuild = layout.build().join("Kbuild");
    std::fs::write(&kbuild, kbuild_file()).at(&kbuild)?;

    eprintln!("xtask: building {MODULE}.ko for {} out of tree", abi.release());
    util::run(Command::new("make").args(layout.make_args()))?;
    let built = layout.build().join(format!("{MODULE}.ko"));
    let bytes = std::fs::read(&built).at(&built)?;
    check_module(&bytes, abi).map_err(|why| Error::Other(format!("{}: {why}", built.display())))?;
    let tmp = product.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, &bytes).at(&tmp)?;
    std::fs::rename(&tmp, &product).at(&product)?;
    eprintln!("xtask: {MODULE}.ko cached in {}", product.display());
    Ok(product)
}

/// The package's `.deb` in `debs/`, downloading it when absent. Every
/// package is taken at the image's version: headers from another upload
/// would carry other symbol CRCs.
fn fetch_deb(layout: &Layout, package: &Package, version: &str) -> Result<PathBuf> {
    let dir = layout.debs();
    if let Some(deb) = find_deb(&dir, &package.name)? {
        return Ok(deb);
    }
    apt::download(&package.name, version, package.arch.as_deref(), &dir)
}

fn find_deb(dir: &Path, package: &str) -> Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(None) };
    for entry in entries {
        let path = entry.at(dir)?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with(&format!("{package}_")) && name.ends_with(".deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// `dpkg-deb -x` into the sysroot; a marker written afterwards records
/// completion, so an interrupted unpack is redone by the next run.
fn unpack(layout: &Layout, package: &Package, deb: &Path) -> Result {
    let marker = layout.root.join(format!(".unpacked-{}", package.name));
    eprintln!("xtask: unpacking {} into {}", deb.display(), layout.sysroot().display());
    util::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(layout.sysroot()))?;
    std::fs::write(&marker, b"").at(&marker)
}

fn source_file_name() -> &'static str {
    SOURCE_FILE.rsplit('/').next().expect("non-empty path")
}

/// Takes the one source file out of `linux-source`, then deletes the package.
fn extract_source(layout: &Layout, deb: &Path) -> Result {
    let build = layout.build();
    util::create_dir_all(&build)?;
    let target = build.join(source_file_name());
    let tmp = layout.root.join(format!("source.tmp.{}", std::process::id()));
    eprintln!("xtask: extracting {} from {}", layout.source_member(), deb.display());
    progress::watch(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp), "unpack linux-source", None, || {
        progress::tree_bytes(&tmp)
    })?;
    let tarball = layout.source_tarball(&tmp);
    let result = progress::watch(
        Command::new("tar")
            .arg("-xJf")
            .arg(&tarball)
            .arg("-C")
            .arg(&tmp)
            .arg("--occurrence=1")
            .arg(layout.source_member()),
        &format!("find {} in the source tarball", layout.source_member()),
        None,
        || 0,
    );
    let extracted = tmp.join(layout.source_member());
    // Copy under a temporary name, then rename: an interrupted run must not
    // leave a truncated source that the next run would trust.
    let partial = target.with_extension("c.partial");
    let copied = result
        .and_then(|()| std::fs::copy(&extracted, &partial).map(|_| ()).at(&extracted))
        .and_then(|()| std::fs::rename(&partial, &target).at(&target));
    std::fs::remove_dir_all(&tmp).at(&tmp)?;
    copied?;
    // 140 MB for one 7 kB file: keep the file, drop the package.
    std::fs::remove_file(deb).at(deb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abi() -> KernelAbi {
        KernelAbi::from_image_package("linux-image-6.1.0-56-arm64").unwrap()
    }

    /// Puts the test executable back when the test ends, however it ends.
    struct Unlinked {
        path: PathBuf,
        kept: PathBuf,
    }

    impl Drop for Unlinked {
        fn drop(&mut self) {
            let _ = std::fs::hard_link(&self.kept, &self.path);
            let _ = std::fs::remove_file(&self.kept);
        }
    }

    #[test]
    fn host_machine_is_known_with_the_executable_unlinked() {
        // What `cargo test --workspace` does to a running `cargo xtask test`:
        // it relinks target/debug/xtask, so the running image's file is
        // `… (deleted)`. A second hard link keeps the bytes to put back.
        let exe = std::env::current_exe().unwrap();
        let from_file = elf_machine(&std::fs::read(&exe).unwrap()).expect("the test binary is ELF");
        let kept = exe.with_file_name(format!("kept-{}", std::process::id()));
        std::fs::hard_link(&exe, &kept).unwrap();
        std::fs::remove_file(&exe).unwrap();
        let _guard = Unlinked { path: exe.clone(), kept };
        assert!(std::fs::read(std::env::current_exe().unwrap()).is_err(), "the executable really is gone");
        assert_eq!(host_machine().expect("known without the file"), from_file);
    }

    #[test]
    fn elf_machine_numbers_of_common_hosts() {
        assert_eq!(elf_machine_of_arch("x86_64"), Some(EM_X86_64));
        assert_eq!(elf_machine_of_arch("aarch64"), Some(183));
        assert_eq!(elf_machine_of_arch("sparc"), None);
    }

    #[test]
    fn abi_is_parsed_from_the_versioned_image_package() {
        let a = abi();
        assert_eq!((a.abi.as_str(), a.flavour.as_str()), ("6.1.0-56", "arm64"));
        assert_eq!(a.release(), "6.1.0-56-arm64");
        assert_eq!(a.series(), "6.1");
        for bad in
            ["linux-image-arm64", "linux-headers-6.1.0-56-arm64", "linux-image-6.1.0-arm64", "linux-image-6.1.0-56-"]
        {
            assert_eq!(KernelAbi::from_image_package(bad), None, "{bad}");
        }
    }

    #[test]
    fn kbuild_is_the_hosts_architecture_and_headers_the_guests() {
        let p = build_packages(&abi());
        let names: Vec<_> = p.iter().map(|p| (p.name.as_str(), p.arch.as_deref())).collect();
        assert_eq!(
            names,
            [
                ("linux-headers-6.1.0-56-arm64", Some("arm64")),
                ("linux-headers-6.1.0-56-common", None),
                ("linux-kbuild-6.1", None),
                ("linux-source-6.1", None),
            ]
        );
    }

    #[test]
    fn layout_and_make_command_point_into_the_cache() {
        let l = Layout::new(Path::new("/c"), &abi());
        assert_eq!(l.module(), Path::new("/c/genirq/6.1.0-56-arm64/uio_pdrv_genirq.ko"));
        assert_eq!(l.headers(), Path::new("/c/genirq/6.1.0-56-arm64/sysroot/usr/src/linux-headers-6.1.0-56-arm64"));
        assert_eq!(l.kbuild(), Path::new("/c/genirq/6.1.0-56-arm64/sysroot/usr/lib/linux-kbuild-6.1"));
        assert_eq!(l.source_member(), "linux-source-6.1/drivers/uio/uio_pdrv_genirq.c");
        let args: Vec<String> = l.make_args().iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "-C",
                "/c/genirq/6.1.0-56-arm64/sysroot/usr/src/linux-headers-6.1.0-56-arm64",
                "M=/c/genirq/6.1.0-56-arm64/build",
                "ARCH=arm64",
                "CROSS_COMPILE=aarch64-linux-gnu-",
                "modules",
            ]
        );
        assert_eq!(kbuild_file(), "obj-m := uio_pdrv_genirq.o\n");
    }

    #[test]
    fn headers_makefile_include_is_redirected_into_the_sysroot_once() {
        let text = "include /usr/src/linux-headers-6.1.0-56-common/Makefile\n";
        let root = Path::new("/c/sysroot");
        let fixed = fix_headers_makefile(text, root).unwrap();
        assert_eq!(fixed, "include /c/sysroot/usr/src/linux-headers-6.1.0-56-common/Makefile\n");
        assert_eq!(fix_headers_makefile(&fixed, root).unwrap(), fixed, "idempotent");
        assert!(fix_headers_makefile("obj-y := x.o\n", root).unwrap_err().contains("obj-y"));
    }

    fn fake_ko(machine: u16, modinfo: &str) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b.extend(modinfo.replace('|', "\0").bytes());
        b
    }

    #[test]
    fn module_check_accepts_only_a_matching_aarch64_genirq() {
        let good = "\0parm=of_id:Openfirmware id|depends=uio|name=uio_pdrv_genirq|vermagic=6.1.0-56-arm64 SMP mod_unload modversions aarch64|";
        assert_eq!(check_module(&fake_ko(EM_AARCH64, good), &abi()), Ok(()));
        assert!(check_module(&fake_ko(EM_X86_64, good), &abi()).unwrap_err().contains("AArch64"));
        let other = good.replace("6.1.0-56-arm64", "6.1.0-55-arm64");
        assert!(check_module(&fake_ko(EM_AARCH64, &other), &abi()).unwrap_err().contains("6.1.0-55"));
        let near = good.replace("6.1.0-56-arm64 SMP", "6.1.0-56-arm64-rt SMP");
        assert!(check_module(&fake_ko(EM_AARCH64, &near), &abi()).is_err(), "prefix match is not enough");
        let nodep = good.replace("depends=uio", "depends=");
        assert!(check_module(&fake_ko(EM_AARCH64, &nodep), &abi()).unwrap_err().contains("depends"));
        assert!(check_module(b"not an elf", &abi()).is_err());
    }

    #[test]
    fn modinfo_reads_nul_separated_fields() {
        let ko = fake_ko(EM_AARCH64, "\0license=GPL v2|depends=uio|");
        assert_eq!(modinfo(&ko, "license").as_deref(), Some("GPL v2"));
        assert_eq!(modinfo(&ko, "depends").as_deref(), Some("uio"));
        assert_eq!(modinfo(&ko, "vermagic"), None);
    }

    /// The real thing: downloads (once) and builds into the user's cache.
    /// Ignored by default because it needs apt, network and ~200 MB.
    #[test]
    #[ignore = "downloads Debian packages and cross-compiles; run with --ignored"]
    fn module_builds_for_the_current_debian_arm64_kernel() {
        let package = apt::matching_dependency("linux-image-arm64", "linux-image-*-arm64", Some("arm64")).unwrap();
        let abi = KernelAbi::from_image_package(&package).unwrap();
        let version = apt::candidate_version_updating(&package, Some("arm64")).unwrap();
        let ko = build(&abi, &version).unwrap();
        check_module(&std::fs::read(&ko).unwrap(), &abi).unwrap();
    }
}
