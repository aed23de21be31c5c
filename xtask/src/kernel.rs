//! Debian kernels for the QEMU guests: download, extract, cache.
//!
//! A profile names a meta package (`linux-image-amd64`) and a pattern for the
//! versioned package it depends on (`linux-image-*-amd64`). The xtask resolves
//! the current one with `apt-cache depends`, downloads it with `apt-get
//! download` (never installing it into /boot), unpacks it with `dpkg-deb -x`
//! and keeps only what the guest needs: the kernel image and the listed
//! modules (uncompressed `.ko` in Debian 12, so `finit_module` takes them as
//! they are).
//!
//! Everything lands in `<cache>/kernels/<package>_<version>_<arch>/`, outside
//! the clone, keyed by the exact package version: a second run, even from a
//! fresh clone, finds the products and downloads nothing. The `.deb` is kept
//! next to them, so a profile that later asks for one more module re-extracts
//! without downloading again. Products are written under a temporary name
//! and renamed, so an interrupted run never leaves a truncated file that a
//! later run would trust.
//!
//! # The uncompressed `vmlinux`
//! QEMU boots an ELF `vmlinux` directly through its PVH entry note, which
//! skips the bzImage's real-mode setup and self-decompression: about 3.4 s
//! from start to power-off under TCG, against 6.5 s for `vmlinuz`. Debian
//! ships only the bzImage, so the xtask extracts the ELF itself, as the
//! kernel's `scripts/extract-vmlinux` does but without scanning for magics:
//! the x86 boot protocol header (>= 2.08) gives the exact `payload_offset` and
//! `payload_length` of the compressed kernel. Its first bytes name the
//! compression (gzip, xz, zstd, lzma, bzip2), which the matching command-line
//! tool decompresses. The kernel build appends the uncompressed size after
//! the stream, which some tools call trailing garbage, so, like
//! extract-vmlinux, the tool's exit status is not trusted: the result is
//! accepted only if it is a complete ELF64 file (every program header's
//! bytes present). Rejected alternatives: scanning the whole file for magics
//! (finds false positives in the setup code), and linking decompression
//! crates into the xtask (three codecs as dependencies for a one-time step
//! that Debian's own tools do).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::machines::{ImageFormat, KernelSpec, ModuleBuild};
use crate::progress;
use crate::util::{self, Error, IoContext, Result};
use crate::{apt, genirq};

/// A kernel ready to boot, with its modules.
#[derive(Debug)]
pub struct Kernel {
    /// `<package> <version>`, for messages.
    pub label: String,
    /// The image to pass to `-kernel`.
    pub image: PathBuf,
    /// `(module name, path)` in the profile's order.
    pub modules: Vec<(String, PathBuf)>,
    /// The device tree from the package (as packaged; patching is the
    /// caller's), when the profile names one.
    pub dtb: Option<PathBuf>,
}

/// The exact kernel package a run boots, and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub package: String,
    pub version: String,
    pub choice: Choice,
}

/// How [`resolve`] chose a kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The profile's pin, already in the cache: no package list consulted.
    PinnedCached,
    /// The profile's pin, downloadable from the archive.
    Pinned,
    /// The meta package's current dependency; `pin_missing` names the pin
    /// the archive no longer has, if the profile had one.
    Current { pin_missing: Option<String> },
}

impl std::fmt::Display for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match &self.choice {
            Choice::PinnedCached => "pinned in qemu/machines.toml, cached".to_string(),
            Choice::Pinned => "pinned in qemu/machines.toml".to_string(),
            Choice::Current { pin_missing: None } => "current (no pin)".to_string(),
            Choice::Current { pin_missing: Some(p) } => format!("current: the pinned {p} is no longer in the archive"),
        };
        write!(f, "{} {} ({how})", self.package, self.version)
    }
}

/// Chooses the kernel package for a profile: its pin while the cache or the
/// archive has it, else (with a warning) the meta package's current
/// dependency. Call it once per run, for every machine, before booting any:
/// the choice then cannot change between stages.
pub fn resolve(spec: &KernelSpec, debian_arch: &str) -> Result<Resolved> {
    let arch = Some(debian_arch);
    if let Some(pin) = &spec.pin {
        let dir = cache_dir_for(&pin.package, &pin.version, debian_arch)?;
        if products(spec, &dir).complete() {
            return Ok(Resolved {
                package: pin.package.clone(),
                version: pin.version.clone(),
                choice: Choice::PinnedCached,
            });
        }
        apt::ensure_architecture(debian_arch)?;
        let mut known = apt::has_version(&pin.package, &pin.version, arch);
        if !known && !apt::updated_this_run() {
            apt::update(&format!("the pinned kernel {} {}", pin.package, pin.version))?;
            known = apt::has_version(&pin.package, &pin.version, arch);
        }
        if known {
            return Ok(Resolved { package: pin.package.clone(), version: pin.version.clone(), choice: Choice::Pinned });
        }
        let current = resolve_current(spec, debian_arch)?;
        eprintln!(
            "xtask: WARNING: the pinned kernel {} {} is in neither the cache nor the archive; falling back to {} {}. \
             Update `pin` in qemu/machines.toml once the suites pass on it.",
            pin.package, pin.version, current.0, current.1
        );
        return Ok(Resolved {
            package: current.0,
            version: current.1,
            choice: Choice::Current { pin_missing: Some(format!("{} {}", pin.package, pin.version)) },
        });
    }
    let (package, version) = resolve_current(spec, debian_arch)?;
    Ok(Resolved { package, version, choice: Choice::Current { pin_missing: None } })
}

/// The meta package's current dependency and its candidate version.
fn resolve_current(spec: &KernelSpec, debian_arch: &str) -> Result<(String, String)> {
    let arch = Some(debian_arch);
    apt::ensure_architecture(debian_arch)?;
    apt::candidate_version_updating(&spec.meta_package, arch)?;
    let package = apt::matching_dependency(&spec.meta_package, &spec.package, arch)?;
    let version = apt::candidate_version_updating(&package, arch)?;
    Ok((package, version))
}

/// `<cache>/kernels/<package>_<version>_<arch>`.
fn cache_dir_for(package: &str, version: &str, debian_arch: &str) -> Result<PathBuf> {
    Ok(util::cache_dir()?.join("kernels").join(sanitize(&format!("{package}_{version}_{debian_arch}"))))
}

/// Where a kernel's products live in its cache directory.
struct Products {
    image: PathBuf,
    modules_dir: PathBuf,
    /// Modules the package has; the ones the xtask builds come later.
    packaged: Vec<(String, PathBuf)>,
    dtb: Option<PathBuf>,
}

impl Products {
    fn complete(&self) -> bool {
        self.image.is_file()
            && self.packaged.iter().all(|(_, p)| p.is_file())
            && self.dtb.as_ref().is_none_or(|d| d.is_file())
    }
}

fn products(spec: &KernelSpec, dir: &Path) -> Products {
    let modules_dir = dir.join("modules");
    Products {
        image: dir.join(match spec.image {
            ImageFormat::Vmlinux => "vmlinux",
            ImageFormat::Vmlinuz => "vmlinuz",
        }),
        packaged: spec
            .modules
            .iter()
            .filter(|m| m.build.is_none())
            .map(|m| (m.name.clone(), modules_dir.join(format!("{}.ko", m.name))))
            .collect(),
        modules_dir,
        dtb: spec.dtb.as_ref().map(|d| dir.join("dtb").join(&d.file)),
    }
}

/// Downloads if needed, and extracts, the kernel [`resolve`] chose.
///
/// If the download fails, the package lists may be stale (the mirror dropped
/// the version they name): they are refreshed once and the kernel resolved
/// again.
pub fn fetch(spec: &KernelSpec, debian_arch: &str, resolved: &Resolved) -> Result<Kernel> {
    match fetch_once(spec, debian_arch, resolved) {
        Err(Error::Download(e)) if !apt::updated_this_run() => {
            eprintln!("xtask: {e}; the package lists may be stale");
            apt::update(&format!("the kernel named by {}", spec.meta_package))?;
            let again = resolve(spec, debian_arch)?;
            eprintln!("xtask: kernel for {debian_arch} re-resolved after the update: {again}");
            fetch_once(spec, debian_arch, &again)
        }
        other => other,
    }
}

fn fetch_once(spec: &KernelSpec, debian_arch: &str, resolved: &Resolved) -> Result<Kernel> {
    let Resolved { package, version, .. } = resolved;
    let arch = Some(debian_arch);
    let dir = cache_dir_for(package, version, debian_arch)?;
    let label = format!("{package} {version}");
    let found = products(spec, &dir);
    let cached = found.complete();
    let Products { image, modules_dir, packaged, dtb } = found;
    if cached {
        eprintln!("xtask: reusing cached kernel {label} from {} (nothing downloaded)", dir.display());
        let modules = with_built_modules(spec, resolved, packaged)?;
        return Ok(Kernel { label, image, modules, dtb });
    }

    let deb = match find_deb(&dir, package)? {
        Some(deb) => {
            eprintln!("xtask: reusing downloaded {}", deb.display());
            deb
        }
        None => apt::download(package, version, arch, &dir).map_err(|e| Error::Download(Box::new(e)))?,
    };

    let tree = dir.join(format!("extract.tmp.{}", std::process::id()));
    if tree.exists() {
        std::fs::remove_dir_all(&tree).at(&tree)?;
    }
    progress::watch(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree),
        &format!("unpack {package}"),
        None,
        || progress::tree_bytes(&tree),
    )?;
    let result = extract_products(spec, &tree, &image, &modules_dir).and_then(|()| match (&spec.dtb, &dtb) {
        (Some(d), Some(out)) => extract_dtb(&tree, package, &d.file, out),
        _ => Ok(()),
    });
    std::fs::remove_dir_all(&tree).at(&tree)?;
    result?;
    eprintln!("xtask: kernel {label} cached in {}", dir.display());
    let modules = with_built_modules(spec, resolved, packaged)?;
    Ok(Kernel { label, image, modules, dtb })
}

/// The profile's modules in load order: the packaged ones from `packaged`,
/// the others built (or found in their own cache) by their recipe.
fn with_built_modules(
    spec: &KernelSpec,
    resolved: &Resolved,
    packaged: Vec<(String, PathBuf)>,
) -> Result<Vec<(String, PathBuf)>> {
    let package = resolved.package.as_str();
    let mut packaged = packaged.into_iter();
    let mut out = Vec::new();
    for m in &spec.modules {
        match m.build {
            None => out.push(packaged.next().expect("one packaged path per unbuilt module")),
            Some(ModuleBuild::Genirq) => {
                let abi = genirq::KernelAbi::from_image_package(package).ok_or_else(|| {
                    Error::Other(format!("{package}: not a versioned linux-image package; cannot build {}", m.name))
                })?;
                out.push((m.name.clone(), genirq::build(&abi, &resolved.version)?));
            }
        }
    }
    Ok(out)
}

/// Copies `usr/lib/linux-image-<release>/<file>` out of the unpacked package.
fn extract_dtb(tree: &Path, package: &str, file: &str, out: &Path) -> Result {
    let release = package.strip_prefix("linux-image-").unwrap_or(package);
    let found = tree.join("usr/lib").join(format!("linux-image-{release}")).join(file);
    let data = std::fs::read(&found)
        .map_err(|source| Error::Other(format!("{}: {source} (no such device tree in {package})", found.display())))?;
    write_atomically(out, &data)
}

fn extract_products(spec: &KernelSpec, tree: &Path, image: &Path, modules_dir: &Path) -> Result {
    let boot = tree.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .at(&boot)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .ok_or_else(|| Error::Other(format!("{}: no vmlinuz-* in the kernel package", boot.display())))?;
    let bytes = std::fs::read(&vmlinuz).at(&vmlinuz)?;
    let out = match spec.image {
        ImageFormat::Vmlinuz => bytes,
        ImageFormat::Vmlinux => {
            let (compression, vmlinux) =
                decompress_bzimage(&bytes).map_err(|e| Error::Other(format!("{}: {e}", vmlinuz.display())))?;
            eprintln!(
                "xtask: extracted uncompressed vmlinux ({} MiB, {compression:?} payload) from {} for PVH boot",
                vmlinux.len() >> 20,
                vmlinuz.display()
            );
            vmlinux
        }
    };
    write_atomically(image, &out)?;

    util::create_dir_all(modules_dir)?;
    let lib_modules = tree.join("lib/modules");
    for m in spec.modules.iter().filter(|m| m.build.is_none()) {
        let file = format!("{}.ko", m.name);
        let found = find_file(&lib_modules, &file)?.ok_or_else(|| {
            Error::Other(format!(
                "{}: no {file} in the kernel package (is the module built in or named differently?)",
                lib_modules.display()
            ))
        })?;
        let data = std::fs::read(&found).at(&found)?;
        write_atomically(&modules_dir.join(&file), &data)?;
    }
    Ok(())
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

/// Depth-first search for a file called `name` under `dir`.
fn find_file(dir: &Path, name: &str) -> Result<Option<PathBuf>> {
    let entries = std::fs::read_dir(dir).at(dir)?;
    let mut subdirs = Vec::new();
    for entry in entries {
        let entry = entry.at(dir)?;
        let path = entry.path();
        let ft = entry.file_type().at(&path)?;
        if ft.is_dir() {
            subdirs.push(path);
        } else if entry.file_name() == name {
            return Ok(Some(path));
        }
    }
    subdirs.sort();
    for sub in subdirs {
        if let Some(found) = find_file(&sub, name)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn write_atomically(path: &Path, data: &[u8]) -> Result {
    if let Some(parent) = path.parent() {
        util::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, data).at(&tmp)?;
    std::fs::rename(&tmp, path).at(path)
}

/// Package versions contain `:` (epochs); keep cache names plain.
pub(crate) fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-+".contains(c) { c } else { '_' }).collect()
}

/// A compression the kernel build can use for its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Zstd,
    Lzma,
    Bzip2,
}

impl Compression {
    /// Recognises the payload's leading magic bytes.
    pub fn detect(payload: &[u8]) -> Option<Compression> {
        const MAGICS: &[(&[u8], Compression)] = &[
            (&[0x1f, 0x8b], Compression::Gzip),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Compression::Xz),
            (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
            (&[0x5d, 0x00, 0x00], Compression::Lzma),
            (b"BZh", Compression::Bzip2),
        ];
        MAGICS.iter().find(|(m, _)| payload.starts_with(m)).map(|(_, c)| *c)
    }

    /// The decompressing command: (program, args, Debian package providing it).
    fn tool(self) -> (&'static str, &'static [&'static str], &'static str) {
        match self {
            Compression::Gzip => ("gzip", &["-dc"], "gzip"),
            // --single-stream: stop after the xz stream, ignoring the appended size.
            Compression::Xz => ("xz", &["-dc", "--single-stream"], "xz-utils"),
            Compression::Zstd => ("zstd", &["-dcq"], "zstd"),
            Compression::Lzma => ("xz", &["-dc", "--format=lzma"], "xz-utils"),
            Compression::Bzip2 => ("bzip2", &["-dc"], "bzip2"),
        }
    }
}

/// Errors in reading a bzImage; the caller adds the file name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BzImageError {
    #[error("not a bzImage: no `HdrS` boot protocol header at 0x202")]
    NotBzImage,
    #[error("boot protocol {major}.{minor:02} is older than 2.08 and has no payload fields")]
    TooOld { major: u8, minor: u8 },
    #[error("payload {offset:#x}+{length:#x} lies outside the {size:#x}-byte file")]
    PayloadOutOfRange { offset: usize, length: usize, size: usize },
    #[error("unknown payload compression (first bytes {0:02x?})")]
    UnknownCompression(Vec<u8>),
}

/// Locates the compressed kernel inside a bzImage via the boot protocol
/// header (Documentation/arch/x86/boot.rst).
pub fn bzimage_payload(image: &[u8]) -> std::result::Result<(Compression, &[u8]), BzImageError> {
    if image.len() < 0x250 || &image[0x202..0x206] != b"HdrS" {
        return Err(BzImageError::NotBzImage);
    }
    let version = u16::from_le_bytes([image[0x206], image[0x207]]);
    if version < 0x0208 {
        return Err(BzImageError::TooOld { major: (version >> 8) as u8, minor: version as u8 });
    }
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let le32 = |at: usize| u32::from_le_bytes([image[at], image[at + 1], image[at + 2], image[at + 3]]) as usize;
    let offset = (setup_sects + 1) * 512 + le32(0x248);
    let length = le32(0x24c);
    let end = offset.checked_add(length).filter(|&e| e <= image.len());
    let Some(end) = end else {
        return Err(BzImageError::PayloadOutOfRange { offset, length, size: image.len() });
    };
    let payload = &image[offset..end];
    let compression = Compression::detect(payload)
        .ok_or_else(|| BzImageError::UnknownCompression(payload.iter().take(6).copied().collect()))?;
    Ok((compression, payload))
}

/// Extracts the uncompressed ELF `vmlinux` from a bzImage.
fn decompress_bzimage(image: &[u8]) -> Result<(Compression, Vec<u8>)> {
    let (compression, payload) = bzimage_payload(image).map_err(|e| Error::Other(e.to_string()))?;
    let (program, args, package) = compression.tool();
    apt::ensure_tool(program, package, &format!("to decompress the {compression:?} kernel payload"))?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let what = util::describe(&cmd);
    let mut child = cmd.spawn().map_err(|source| Error::Spawn { what: what.clone(), source })?;
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let out = std::thread::scope(|s| {
        // Feed stdin from another thread so a full stdout pipe cannot deadlock us.
        s.spawn(move || {
            use std::io::Write;
            // The tool may stop reading early (the appended size); that is fine.
            let _ = stdin.write_all(payload);
        });
        child.wait_with_output()
    })
    .map_err(|source| Error::Spawn { what: what.clone(), source })?;
    check_complete_elf(&out.stdout).map_err(|problem| {
        Error::Other(format!(
            "`{what}` did not produce a complete vmlinux ({problem}; exit {}, stderr: {})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })?;
    Ok((compression, out.stdout))
}

/// Checks that `elf` is an ELF64 little-endian file whose every program
/// header's file bytes are present: proof that decompression was complete.
pub fn check_complete_elf(elf: &[u8]) -> std::result::Result<(), String> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" {
        return Err("no ELF header".into());
    }
    if elf[4] != 2 || elf[5] != 1 {
        return Err("not ELF64 little-endian".into());
    }
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&elf[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let phoff = usize::try_from(u64_at(0x20)).map_err(|_| "program header offset overflows")?;
    let phentsize = u16_at(0x36);
    let phnum = u16_at(0x38);
    if phnum == 0 || phentsize < 56 {
        return Err("no program headers".into());
    }
    let table_end = phoff.checked_add(phnum * phentsize).ok_or("program header table overflows")?;
    if table_end > elf.len() {
        return Err(format!("program header table ends at {table_end:#x}, file has {:#x} bytes", elf.len()));
    }
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let offset = u64_at(ph + 8);
        let filesz = u64_at(ph + 32);
        let end = offset.checked_add(filesz).ok_or("segment extent overflows")?;
        if end > elf.len() as u64 {
            return Err(format!("segment {i} ends at {end:#x}, file has {:#x} bytes (truncated)", elf.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal bzImage: 1 setup sector + boot sector, protocol 2.15, with
    /// `payload` at `payload_offset` after the protected-mode start.
    fn fake_bzimage(payload: &[u8], payload_offset: usize) -> Vec<u8> {
        let setup_sects = 1usize;
        let pm_start = (setup_sects + 1) * 512;
        let mut img = vec![0u8; pm_start + payload_offset + payload.len() + 16];
        img[0x1f1] = setup_sects as u8;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&(payload_offset as u32).to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img[pm_start + payload_offset..][..payload.len()].copy_from_slice(payload);
        img
    }

    #[test]
    fn payload_is_found_through_the_boot_header() {
        let payload = [0xfd, b'7', b'z', b'X', b'Z', 0x00, 1, 2, 3];
        let img = fake_bzimage(&payload, 0x300);
        assert_eq!(bzimage_payload(&img), Ok((Compression::Xz, &payload[..])));
    }

    #[test]
    fn payload_past_the_end_of_file_is_refused() {
        let mut img = fake_bzimage(&[0x1f, 0x8b, 8], 0);
        img[0x24c..0x250].copy_from_slice(&0x10_0000u32.to_le_bytes());
        assert!(matches!(bzimage_payload(&img), Err(BzImageError::PayloadOutOfRange { .. })));
    }

    #[test]
    fn non_bzimage_and_old_protocol_are_refused() {
        assert_eq!(bzimage_payload(&[0u8; 4096]), Err(BzImageError::NotBzImage));
        let mut img = fake_bzimage(&[0x1f, 0x8b], 0);
        img[0x206..0x208].copy_from_slice(&0x0204u16.to_le_bytes());
        assert_eq!(bzimage_payload(&img), Err(BzImageError::TooOld { major: 2, minor: 4 }));
    }

    #[test]
    fn unknown_compression_is_reported_with_its_bytes() {
        let img = fake_bzimage(&[0xde, 0xad, 0xbe, 0xef], 0);
        assert!(matches!(bzimage_payload(&img), Err(BzImageError::UnknownCompression(b)) if b[0] == 0xde));
    }

    #[test]
    fn gzip_payload_round_trips_through_the_cli_when_gzip_exists() {
        if !util::on_path("gzip") {
            return; // The check below needs the tool; Debian always has gzip.
        }
        let elf = fake_elf(4096);
        let gz = Command::new("sh")
            .arg("-c")
            .arg("gzip -c")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&elf)?;
                c.wait_with_output()
            })
            .unwrap()
            .stdout;
        let mut payload = gz.clone();
        payload.extend_from_slice(&(elf.len() as u32).to_le_bytes()); // the kernel build's appended size
        let img = fake_bzimage(&payload, 0x40);
        assert_eq!(decompress_bzimage(&img).unwrap(), (Compression::Gzip, elf));
    }

    /// ELF64 LE with one PT_LOAD segment covering `size` bytes.
    fn fake_elf(size: usize) -> Vec<u8> {
        let mut e = vec![0u8; size];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        e[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        e[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        e[64 + 8..64 + 16].copy_from_slice(&0u64.to_le_bytes()); // p_offset
        e[64 + 32..64 + 40].copy_from_slice(&(size as u64).to_le_bytes()); // p_filesz
        for (i, b) in e[200..].iter_mut().enumerate() {
            *b = i as u8;
        }
        e
    }

    #[test]
    fn truncated_elf_is_detected() {
        let elf = fake_elf(1024);
        assert_eq!(check_complete_elf(&elf), Ok(()));
        assert!(check_complete_elf(&elf[..1000]).unwrap_err().contains("truncated"));
        assert!(
            check_complete_elf(b"\x1f\x8b not an elf at all, really, not at all, definitely no, sixty-four").is_err()
        );
    }

    #[test]
    fn cache_keys_have_no_epoch_colons() {
        assert_eq!(sanitize("qemu_1:7.2+dfsg_amd64"), "qemu_1_7.2+dfsg_amd64");
    }
}
