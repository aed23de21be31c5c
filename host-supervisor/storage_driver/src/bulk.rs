//! Bulk requests on the host: one `pread`/`pwrite` straight between the
//! backing file and the session's shared pool (`reinc_uio::SharedPool`), no
//! buffer of ours in between.
//!
//! Which side failed decides the answer: an error of the file is the
//! device's (the instance dies and the request is replayed, like any other
//! region failure); `EFAULT` (the pool's pages could not be had) is the
//! client's, a definite [`storage_core::StorageError::PoolFault`] refusal.
//! The range was already checked against the pool's size by the core.

use reinc_region::{FileError, FileRegion, Region};
use reinc_runtime::SharedPool;
use std::io;
use std::os::fd::AsFd;
use storage_core::{PoolIo, PoolIoError};

/// The pool of the request's session, if it has one.
#[derive(Debug)]
pub struct FilePool<'a>(pub Option<&'a SharedPool>);

fn classify(region: &FileRegion, op: &'static str, off: u64, len: u64, e: io::Error) -> PoolIoError<FileError> {
    if e.raw_os_error() == Some(nix::libc::EFAULT) {
        return PoolIoError::Pool;
    }
    PoolIoError::Region(FileError { op, len: len as usize, off, path: region.path().to_path_buf(), source: e })
}

impl PoolIo<FileRegion> for FilePool<'_> {
    fn pool_len(&self) -> Option<u64> {
        self.0.map(|p| p.len() as u64)
    }

    fn fill_pool(
        &mut self,
        region: &mut FileRegion,
        region_off: u64,
        pool_off: u64,
        len: u64,
    ) -> Result<(), PoolIoError<FileError>> {
        let pool = self.0.ok_or(PoolIoError::Pool)?;
        // Within the region's size (the core checked the block range), so
        // an end of file is a file that shrank under us: the device's fault.
        if region_off + len > region.size() {
            let e = io::Error::from(io::ErrorKind::UnexpectedEof);
            return Err(classify(region, "read", region_off, len, e));
        }
        pool.fill_from(region.file().as_fd(), Some(region_off), pool_off, len as usize)
            .map_err(|e| classify(region, "read", region_off, len, e))
    }

    fn drain_pool(
        &mut self,
        region: &mut FileRegion,
        pool_off: u64,
        region_off: u64,
        len: u64,
    ) -> Result<(), PoolIoError<FileError>> {
        let pool = self.0.ok_or(PoolIoError::Pool)?;
        pool.drain_to(region.file().as_fd(), Some(region_off), pool_off, len as usize)
            .map_err(|e| classify(region, "write", region_off, len, e))
    }
}
