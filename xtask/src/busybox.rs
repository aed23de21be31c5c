//! Debian's static busybox for a guest: real `dd`, `sha256sum` and friends.
//!
//! The guest's PID 1 and its suites are Rust (see the `reinc-guest` crate
//! doc), but some claims are only worth something when made by tools nobody
//! here wrote: `dd if=/dev/nbd0 of=/dev/null bs=1M count=10` must be the real
//! `dd`. A profile's `[machine.guest.busybox]` names the package and the
//! applets; this module downloads the package for the guest's architecture
//! with [`apt::download`] (never installing it), unpacks it with `dpkg-deb
//! -x`, and keeps only the static binary in
//! `<cache>/packages/<package>_<version>_<arch>/busybox`, so a second run
//! downloads nothing. The binary is accepted only if it is an ELF64 file
//! without a program interpreter: a dynamically linked busybox would not run
//! in an initramfs that has no libc.
//!
//! Rejected: building busybox from source (minutes, and a cross compiler per
//! architecture), and installing the package on the host (it would replace
//! the host's own `busybox`, and it is the wrong architecture for arm64
//! guests anyway).

use std::path::PathBuf;
use std::process::Command;

use crate::machines::BusyboxSpec;
use crate::util::{self, Error, IoContext, Result};
use crate::{apt, kernel};

/// The static busybox of `spec` for `debian_arch`, downloaded and unpacked
/// once into the cache.
pub fn fetch(spec: &BusyboxSpec, debian_arch: &str) -> Result<PathBuf> {
    let version = apt::candidate_version_updating(&spec.package, Some(debian_arch))?;
    let dir = util::cache_dir()?
        .join("packages")
        .join(kernel::sanitize(&format!("{}_{version}_{debian_arch}", spec.package)));
    let out = dir.join("busybox");
    if out.is_file() {
        eprintln!("xtask: reusing cached {} {version} from {} (nothing downloaded)", spec.package, out.display());
        return Ok(out);
    }
    let deb = apt::download(&spec.package, &version, Some(debian_arch), &dir)?;
    let tree = dir.join(format!("extract.tmp.{}", std::process::id()));
    if tree.exists() {
        std::fs::remove_dir_all(&tree).at(&tree)?;
    }
    util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    let found = ["bin/busybox", "usr/bin/busybox"].iter().map(|p| tree.join(p)).find(|p| p.is_file());
    let result = match found {
        None => Err(Error::Other(format!("{}: no bin/busybox in {}", deb.display(), spec.package))),
        Some(path) => std::fs::read(&path).at(&path).and_then(|bytes| {
            check_static_elf(&bytes).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
            let tmp = out.with_extension(format!("tmp.{}", std::process::id()));
            std::fs::write(&tmp, &bytes).at(&tmp)?;
            std::fs::rename(&tmp, &out).at(&out)
        }),
    };
    std::fs::remove_dir_all(&tree).at(&tree)?;
    result?;
    eprintln!("xtask: {} {version} unpacked to {}", spec.package, out.display());
    Ok(out)
}

/// Checks that `bytes` is a complete ELF64 file with no `PT_INTERP`
/// program header, i.e. one that runs without a dynamic loader.
pub fn check_static_elf(bytes: &[u8]) -> std::result::Result<(), String> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a little-endian ELF64 file".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    if phentsize < 56 || phoff.checked_add(phentsize * phnum).is_none_or(|end| end > bytes.len()) {
        return Err("truncated program headers".into());
    }
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        if u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) == PT_INTERP {
            return Err("dynamically linked (it has a PT_INTERP program header); the guest has no libc".into());
        }
    }
    Ok(())
}

/// The initramfs links of `spec`: `(bin/<applet>, "busybox")`.
pub fn links(spec: &BusyboxSpec) -> Vec<(String, &'static str)> {
    spec.applets.iter().map(|a| (format!("bin/{a}"), "busybox")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header with the given program header types.
    fn elf(types: &[u32]) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56 * types.len()];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for (i, t) in types.iter().enumerate() {
            b[64 + 56 * i..68 + 56 * i].copy_from_slice(&t.to_le_bytes());
        }
        b
    }

    #[test]
    fn a_static_elf_is_accepted_and_a_dynamic_one_refused() {
        assert_eq!(check_static_elf(&elf(&[1, 1, 4])), Ok(()));
        let e = check_static_elf(&elf(&[6, 3, 1])).unwrap_err();
        assert!(e.contains("PT_INTERP"), "{e}");
        assert!(check_static_elf(b"#!/bin/sh\n").is_err());
        let mut cut = elf(&[1, 1]);
        cut.truncate(100);
        assert!(check_static_elf(&cut).unwrap_err().contains("truncated"));
    }

    #[test]
    fn every_applet_links_to_busybox_in_bin() {
        let spec = BusyboxSpec { package: "busybox-static".into(), applets: vec!["dd".into(), "sha256sum".into()] };
        assert_eq!(links(&spec), [("bin/dd".to_string(), "busybox"), ("bin/sha256sum".to_string(), "busybox")]);
    }
}
