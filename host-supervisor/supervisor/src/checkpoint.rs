//! Crash-safe persisted checkpoints: one file per driver.
//!
//! # Format (little-endian)
//! ```text
//! magic "RINCCKPT" (8) | version u16 | reserved u16 | length u32 | crc32 u32 | payload (length bytes)
//! ```
//! The CRC (crc32fast, IEEE) covers the payload. A file whose magic, version,
//! length or CRC does not match is refused with an error naming it: a torn
//! write can never be restored as state.
//!
//! # Writing
//! Write `<file>.tmp`, `fsync` it, `rename` over `<file>`, `fsync` the
//! directory. A crash at any point leaves either the old file or the new one,
//! never a mix (rename is atomic), and the directory fsync makes the rename
//! itself durable.
//!
//! # Reading and writing safely in a directory others might reach
//! - The file is opened with `O_NOFOLLOW | O_NONBLOCK` and checked with
//!   `fstat` on the open descriptor: a symlink (say to `/dev/zero`), a FIFO
//!   or a device is refused without reading a byte, and so is a file another
//!   user owns or that group or others can write (it could be forged).
//! - At most [`MAX_FILE`] bytes are read: a payload above
//!   [`reinc_proto::MAX_CHECKPOINT`] could never be sent in `Init`, so it is
//!   refused at start-up instead of failing every launch.
//! - The temporary file is created with `O_CREAT | O_EXCL | O_NOFOLLOW`: a
//!   symlink planted at `<file>.tmp` is never followed. A stale one (a crash
//!   mid-write, or planted) is unlinked (which removes the link, not its
//!   target) and the exclusive create is tried once more.
//!
//! # Designs rejected
//! - Writing in place: a crash mid-write leaves a torn file, and the CRC would
//!   then refuse both the old and the new state.
//! - Two alternating slots (A/B) with sequence numbers: also crash-safe, but
//!   needs its own recovery logic; rename gives the same guarantee for free.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// First bytes of every checkpoint file.
pub const MAGIC: [u8; 8] = *b"RINCCKPT";
/// Current format version.
pub const VERSION: u16 = 1;
/// Size of the header.
pub const HEADER: usize = 20;
/// Largest checkpoint file read: the header and the largest payload a driver
/// can be sent in `Init`.
pub const MAX_FILE: usize = HEADER + reinc_proto::MAX_CHECKPOINT;

/// A checkpoint file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// An I/O error.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not a checkpoint file.
    #[error("checkpoint {path}: bad magic (not a reinc checkpoint file)")]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// Written by another format version.
    #[error("checkpoint {path}: unsupported format version {got} (expected {VERSION})")]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        got: u16,
    },
    /// The reserved header field is not zero: not written by this format.
    #[error("checkpoint {path}: reserved header field is {got:#06x}, not 0 (not written by this version)")]
    Reserved {
        /// The file.
        path: PathBuf,
        /// The field's value.
        got: u16,
    },
    /// Shorter or longer than its header says: a torn write.
    #[error("checkpoint {path}: torn file: header says {expected} payload bytes, found {got}")]
    Torn {
        /// The file.
        path: PathBuf,
        /// Length from the header.
        expected: u64,
        /// Bytes present.
        got: u64,
    },
    /// A symlink, FIFO, device or directory where the file should be.
    #[error("checkpoint {path}: not a regular file ({kind}); refusing to read it")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Owned by another user: it may be forged.
    #[error("checkpoint {path}: owned by uid {owner}, not by the supervisor's uid {me}; refusing to restore it")]
    ForeignOwner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        me: u32,
    },
    /// Group or others may write it: it may be forged.
    #[error("checkpoint {path}: mode {mode:04o} lets group or others write it; refusing to restore it")]
    Writable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Larger than any checkpoint a driver can be sent.
    #[error(
        "checkpoint {path}: {len} bytes exceeds the {MAX_FILE}-byte limit ({} bytes of state)",
        reinc_proto::MAX_CHECKPOINT
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (or a lower bound, for a file that kept growing).
        len: u64,
    },
    /// The payload does not match its checksum.
    #[error("checkpoint {path}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): corrupt file")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// CRC in the header.
        stored: u32,
        /// CRC of the payload.
        computed: u32,
    },
}

/// Encodes a checkpoint file's bytes.
#[must_use]
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Decodes a checkpoint file's bytes; `path` only names it in errors.
///
/// # Errors
/// [`CheckpointError`] for anything but a complete, intact file.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, CheckpointError> {
    let p = || path.to_path_buf();
    if bytes.len() < HEADER {
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            return Err(CheckpointError::BadMagic { path: p() });
        }
        return Err(CheckpointError::Torn { path: p(), expected: HEADER as u64, got: bytes.len() as u64 });
    }
    if bytes[..8] != MAGIC {
        return Err(CheckpointError::BadMagic { path: p() });
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let version = u16_at(8);
    if version != VERSION {
        return Err(CheckpointError::Version { path: p(), got: version });
    }
    // Found by the fuzzer (reinc-fuzz, target checkpoint): the reserved
    // field was ignored, so a file that encode() never writes was accepted.
    let reserved = u16_at(10);
    if reserved != 0 {
        return Err(CheckpointError::Reserved { path: p(), got: reserved });
    }
    let len = u64::from(u32_at(12));
    if len > reinc_proto::MAX_CHECKPOINT as u64 {
        return Err(CheckpointError::TooLarge { path: p(), len: bytes.len() as u64 });
    }
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != len {
        return Err(CheckpointError::Torn { path: p(), expected: len, got: payload.len() as u64 });
    }
    let stored = u32_at(16);
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(CheckpointError::Checksum { path: p(), stored, computed });
    }
    Ok(payload.to_vec())
}

/// Reads the checkpoint at `path`; `Ok(None)` if there is no file.
///
/// # Errors
/// [`CheckpointError`] if the file exists but is not a regular file of ours,
/// is too large, cannot be read, or is not intact.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, CheckpointError> {
    let io = |source| CheckpointError::Io { path: path.into(), source };
    // O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(CheckpointError::NotRegular { path: path.into(), kind: "a symbolic link" });
        }
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    check_trusted(path, &meta)?;
    if meta.len() > MAX_FILE as u64 {
        return Err(CheckpointError::TooLarge { path: path.into(), len: meta.len() });
    }
    // Bounded even if the file grows between fstat and read.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE as u64 + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() > MAX_FILE {
        return Err(CheckpointError::TooLarge { path: path.into(), len: bytes.len() as u64 });
    }
    decode(path, &bytes).map(Some)
}

/// A checkpoint is trusted only as a regular file of ours that nobody else
/// can write.
fn check_trusted(path: &Path, meta: &fs::Metadata) -> Result<(), CheckpointError> {
    use crate::trusted::Untrusted;
    crate::trusted::check(meta).map_err(|u| match u {
        Untrusted::NotRegular { kind } => CheckpointError::NotRegular { path: path.into(), kind },
        Untrusted::ForeignOwner { owner, me } => CheckpointError::ForeignOwner { path: path.into(), owner, me },
        Untrusted::Writable { mode } => CheckpointError::Writable { path: path.into(), mode },
    })
}

/// Writes `payload` to `path` crash-safely (temp file, fsync, rename, fsync dir).
///
/// # Errors
/// [`CheckpointError::Io`] naming the file that failed.
pub fn write(path: &Path, payload: &[u8]) -> Result<(), CheckpointError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let io = |p: &Path| {
        let path = p.to_path_buf();
        move |source| CheckpointError::Io { path, source }
    };
    let mut f = match create_tmp(&tmp) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // A stale temporary file (a crash mid-write) or a planted
            // symlink: unlink removes the entry itself, never what a link
            // points to; then the exclusive create is tried once more.
            fs::remove_file(&tmp).map_err(io(&tmp))?;
            create_tmp(&tmp)
        }
        other => other,
    }
    .map_err(io(&tmp))?;
    f.write_all(&encode(payload)).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io(path))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}

/// Creates `tmp` exclusively, never through a symlink.
fn create_tmp(tmp: &Path) -> std::io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(nix::libc::O_NOFOLLOW).open(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("reinc-ckpt-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn checkpoint_round_trips_through_a_file() {
        let d = tmpdir("rt");
        let p = d.join("storage_driver.ckpt");
        assert_eq!(read(&p).unwrap(), None);
        write(&p, b"state-1").unwrap();
        write(&p, b"state-2").unwrap();
        assert_eq!(read(&p).unwrap().as_deref(), Some(&b"state-2"[..]));
        assert!(!d.join("storage_driver.ckpt.tmp").exists());
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn torn_checkpoint_is_refused_naming_the_file() {
        let p = Path::new("/state/x.ckpt");
        let full = encode(b"0123456789");
        for cut in [0, 5, HEADER - 1, HEADER + 3, full.len() - 1] {
            let e = decode(p, &full[..cut]).unwrap_err();
            assert!(e.to_string().contains("/state/x.ckpt"), "{e}");
            assert!(matches!(e, CheckpointError::Torn { .. } | CheckpointError::BadMagic { .. }), "cut {cut}: {e}");
        }
    }

    #[test]
    fn flipped_bit_is_a_checksum_error() {
        let mut bytes = encode(b"abcdef");
        *bytes.last_mut().unwrap() ^= 1;
        let e = decode(Path::new("/s/y.ckpt"), &bytes).unwrap_err();
        assert!(matches!(e, CheckpointError::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("/s/y.ckpt: checksum mismatch"), "{e}");
    }

    #[test]
    fn other_version_and_garbage_are_refused() {
        let mut bytes = encode(b"x");
        bytes[8] = 9;
        assert!(matches!(decode(Path::new("a"), &bytes), Err(CheckpointError::Version { got: 9, .. })));
        assert!(matches!(
            decode(Path::new("a"), b"hello world, not a checkpoint"),
            Err(CheckpointError::BadMagic { .. })
        ));
    }

    #[test]
    fn a_checkpoint_symlinked_to_dev_zero_is_refused_without_reading() {
        let d = tmpdir("zero");
        let p = d.join("x.ckpt");
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        let e = read(&p).unwrap_err();
        assert!(matches!(e, CheckpointError::NotRegular { kind: "a symbolic link", .. }), "{e}");
        assert!(e.to_string().contains(&p.display().to_string()), "{e}");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_fifo_in_place_of_a_checkpoint_is_refused_without_blocking() {
        let d = tmpdir("fifo");
        let p = d.join("x.ckpt");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read(&p).unwrap_err();
        assert!(matches!(e, CheckpointError::NotRegular { kind: "a FIFO", .. }), "{e}");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_checkpoint_larger_than_any_init_is_refused_by_size() {
        let d = tmpdir("big");
        let p = d.join("x.ckpt");
        // A well-formed file with a 1 MiB payload: intact, but no driver can
        // be sent it, so it would fail every Init.
        fs::write(&p, encode(&vec![7u8; 1 << 20])).unwrap();
        let e = read(&p).unwrap_err();
        assert!(matches!(e, CheckpointError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("exceeds the"), "{e}");
        // The largest payload that fits is accepted.
        write(&p, &vec![1u8; reinc_proto::MAX_CHECKPOINT]).unwrap();
        assert_eq!(read(&p).unwrap().unwrap().len(), reinc_proto::MAX_CHECKPOINT);
        // The header's length field is checked in decode too.
        let mut forged = encode(b"x");
        forged[12..16].copy_from_slice(&(1u32 << 20).to_le_bytes());
        assert!(matches!(decode(&p, &forged), Err(CheckpointError::TooLarge { .. })));
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_checkpoint_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tmpdir("wide");
        let p = d.join("x.ckpt");
        write(&p, b"s").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
        let e = read(&p).unwrap_err();
        assert!(matches!(e, CheckpointError::Writable { mode: 0o666, .. }), "{e}");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_checkpoint_owned_by_another_user_is_refused() {
        // Foreign ownership simulated with chown to an unused uid (needs root).
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chown to another uid needs root");
            return;
        }
        let d = tmpdir("foreign");
        let p = d.join("x.ckpt");
        write(&p, b"forged").unwrap();
        std::os::unix::fs::chown(&p, Some(54_321), None).unwrap();
        let e = read(&p).unwrap_err();
        assert!(matches!(e, CheckpointError::ForeignOwner { owner: 54_321, .. }), "{e}");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_symlink_planted_as_the_temporary_file_is_replaced_not_followed() {
        let d = tmpdir("plant");
        let victim = d.join("victim");
        fs::write(&victim, b"precious").unwrap();
        let p = d.join("x.ckpt");
        std::os::unix::fs::symlink(&victim, d.join("x.ckpt.tmp")).unwrap();
        write(&p, b"state").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(read(&p).unwrap().as_deref(), Some(&b"state"[..]));
        assert!(fs::symlink_metadata(d.join("x.ckpt.tmp")).is_err(), "no temporary file is left");
        // A stale regular temporary file from a crash is replaced too.
        fs::write(d.join("x.ckpt.tmp"), b"half a checkp").unwrap();
        write(&p, b"state-2").unwrap();
        assert_eq!(read(&p).unwrap().as_deref(), Some(&b"state-2"[..]));
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_nonzero_reserved_field_is_refused() {
        // The fuzzer's finding, kept: 20 header bytes, reserved = 0x1d00.
        let mut bytes = encode(&[]);
        bytes[11] = 29;
        assert!(matches!(decode(Path::new("f"), &bytes), Err(CheckpointError::Reserved { got: 0x1d00, .. })));
    }
}
