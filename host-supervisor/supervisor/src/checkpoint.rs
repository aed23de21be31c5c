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
//! # Designs rejected
//! - Writing in place: a crash mid-write leaves a torn file, and the CRC would
//!   then refuse both the old and the new state.
//! - Two alternating slots (A/B) with sequence numbers: also crash-safe, but
//!   needs its own recovery logic; rename gives the same guarantee for free.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// First bytes of every checkpoint file.
pub const MAGIC: [u8; 8] = *b"RINCCKPT";
/// Current format version.
pub const VERSION: u16 = 1;
/// Size of the header.
pub const HEADER: usize = 20;

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
    let len = u64::from(u32_at(12));
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
/// [`CheckpointError`] if the file exists but cannot be read or is not intact.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, CheckpointError> {
    match fs::read(path) {
        Ok(bytes) => decode(path, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CheckpointError::Io { path: path.into(), source }),
    }
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
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
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
}
