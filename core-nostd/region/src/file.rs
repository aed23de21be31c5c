//! A file as a [`Region`], through `pread`/`pwrite` (feature `file`).
//!
//! The host binaries of the file-backed devices (`storage_driver`,
//! `net_driver`) open their backing file the same way: create it if missing,
//! extend it to the size the geometry needs, never shrink it (a region
//! formatted with a larger geometry must be refused by the core, not cut).
//! `pread`/`pwrite` cost one syscall per access, which is noise next to the
//! IPC round trip, and need no `unsafe`.

use crate::Region;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A file as a region.
#[derive(Debug)]
pub struct FileRegion {
    file: File,
    path: PathBuf,
    size: u64,
}

/// A failed access to the backing file.
#[derive(Debug, thiserror::Error)]
#[error("{op} of {len} bytes at offset {off} in {}: {source}", path.display())]
pub struct FileError {
    /// `read` or `write`.
    pub op: &'static str,
    /// Bytes of the access.
    pub len: usize,
    /// Its offset.
    pub off: u64,
    /// The file.
    pub path: PathBuf,
    /// What the kernel said.
    pub source: std::io::Error,
}

/// Why the backing file cannot be opened as a region.
#[derive(Debug, thiserror::Error)]
pub enum OpenFileError {
    /// Opening or creating it failed.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Its size could not be read.
    #[error("cannot stat {}: {source}", path.display())]
    Stat {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It could not be extended to the size needed.
    #[error("cannot extend {} to {need} bytes: {source}", path.display())]
    Extend {
        /// The file.
        path: PathBuf,
        /// Bytes needed.
        need: u64,
        /// Why.
        source: std::io::Error,
    },
}

impl FileRegion {
    /// Opens `path` for reading and writing, creating it if missing and
    /// extending it to `need` bytes if shorter; a longer file keeps its size.
    ///
    /// # Errors
    /// [`OpenFileError`], naming the file.
    pub fn open_at_least(path: &Path, need: u64) -> Result<Self, OpenFileError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| OpenFileError::Open { path: path.into(), source })?;
        let len = file.metadata().map_err(|source| OpenFileError::Stat { path: path.into(), source })?.len();
        if len < need {
            file.set_len(need).map_err(|source| OpenFileError::Extend { path: path.into(), need, source })?;
        }
        Ok(Self { file, path: path.into(), size: len.max(need) })
    }

    /// The open file (e.g. to `fdatasync` it after an effect).
    #[must_use]
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The file's path, for messages.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Region for FileRegion {
    type Error = FileError;
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> Result<(), FileError> {
        self.file.read_exact_at(buf, off).map_err(|source| FileError {
            op: "read",
            len: buf.len(),
            off,
            path: self.path.clone(),
            source,
        })
    }
    fn write_at(&mut self, off: u64, data: &[u8]) -> Result<(), FileError> {
        self.file.write_all_at(data, off).map_err(|source| FileError {
            op: "write",
            len: data.len(),
            off,
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn file_region_errors_name_the_file() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut r = FileRegion { file: f.reopen().unwrap(), path: f.path().into(), size: 0 };
        let mut buf = [0u8; 16];
        let err = r.read_at(0, &mut buf).unwrap_err().to_string();
        assert!(
            err.contains(&f.path().display().to_string()) && err.starts_with("read of 16 bytes at offset 0"),
            "{err}"
        );
    }

    #[test]
    fn opening_creates_and_extends_but_never_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("region");
        let mut r = FileRegion::open_at_least(&path, 1024).unwrap();
        assert_eq!((r.size(), std::fs::metadata(&path).unwrap().len()), (1024, 1024));
        r.write_at(1000, b"tail").unwrap();
        drop(r);
        let r = FileRegion::open_at_least(&path, 512).unwrap();
        assert_eq!((r.size(), std::fs::metadata(&path).unwrap().len()), (1024, 1024), "a longer file keeps its size");
        let mut r = FileRegion::open_at_least(&path, 4096).unwrap();
        let mut tail = [0u8; 4];
        r.read_at(1000, &mut tail).unwrap();
        assert_eq!((r.size(), &tail), (4096, b"tail"), "extending keeps the contents");
    }

    #[test]
    fn unopenable_file_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir/region");
        let err = FileRegion::open_at_least(&path, 64).unwrap_err().to_string();
        assert!(err.starts_with(&std::format!("cannot open {}: ", path.display())), "{err}");
    }
}
