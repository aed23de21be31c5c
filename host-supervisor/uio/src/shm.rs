//! Shared-memory buffer pools: one sealed memfd, mapped by a client and by a
//! driver, so that bulk data never crosses the supervisor's sockets.
//! The only module besides [`crate::map`] with `unsafe`.
//!
//! # Why it lives here
//! A pool is memory that another process may change at any time, exactly
//! like device memory, and it needs the same care: no `&[u8]` is ever formed
//! over it. It is reached only *by the kernel*: every transfer is one system
//! call (`read`, `write`, `pread`, `pwrite`, `writev`) handed a raw pointer
//! into the mapping, after the range was checked against the pool. A pool is
//! therefore never touched by user-space loads or stores at all: a peer that
//! changes bytes under a transfer gets torn data in its own buffer (its
//! problem), never undefined behaviour here, and a page that cannot be had
//! makes the system call fail with `EFAULT` instead of raising `SIGBUS`.
//! [`SharedPool::copy_in`] and [`SharedPool::copy_out`] use `pwrite`/`pread`
//! on the memfd itself, which needs no `unsafe` at all.
//!
//! There are two exceptions, both stores that this process never reads
//! back: [`WriteOnlyArea`], written with volatile stores (its docs say why
//! that is sound), and [`SharedPool::store`], a plain copy into a range by
//! the pool's creator before it names the range in a request. `drvctl blk`
//! writes its records that way: the `pwrite` into the memfd it replaces
//! (the shmem write path, a page lookup, lock and unlock per 4 KiB) was
//! 44% of `drvctl`'s samples in a profile of `drvctl blk write`, and in
//! three interleaved `--only "6."` runs the write row went from 0.44–0.47 to
//! 0.57–0.65 of direct `pwrite`. Word-sized volatile stores gained nothing
//! measurable. The price is that a pool page the kernel cannot provide
//! raises `SIGBUS` in the pool's creator instead of `EFAULT`; the creator is
//! the client itself, whose memory it is, never the driver or the
//! supervisor.
//!
//! # Seals: what a peer cannot do
//! [`SharedPool::create`] seals the memfd against shrinking and growing and
//! then seals the seals (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`), so its
//! size is fixed for good. [`SharedPool::adopt`], the receiving side, never
//! trusts the descriptor: it must be a memfd (one that answers
//! `F_GET_SEALS`), carry `F_SEAL_SHRINK` (a pool that could be truncated
//! under a mapping would turn the mapping into `SIGBUS`, and replay would
//! lose the bytes), be non-empty and at most the caller's limit, and be
//! mappable for writing (a pool sealed `F_SEAL_WRITE` is refused at mmap).
//!
//! # Designs rejected
//! - `&[u8]` over the mapping (memmap2's `MmapMut`): the peer writes
//!   concurrently, which is a data race in Rust's model, and a truncated
//!   file would make a plain load `SIGBUS`. Raw pointers into system calls
//!   have neither problem.
//! - No mapping at all, `sendfile`/`splice` between the memfd and the
//!   socket or file: `copy_file_range` refuses a memfd → ext4 copy
//!   (`EXDEV`), `sendfile` into a memfd uses the file position, which the
//!   client and the driver share through `SCM_RIGHTS`, and a pipe for
//!   `splice` costs two system calls per 64 KiB. One `pread` into the
//!   mapping is one copy and one call.
//! - A pool per request: a memfd, an `SCM_RIGHTS` message and an mmap per
//!   request cost more than the copies they save.

use memmap2::{MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// Why a pool could not be created, adopted or used.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// A system call on the pool failed.
    #[error("shared pool {what}: {op}: {source}")]
    Sys {
        /// The pool.
        what: String,
        /// The call.
        op: &'static str,
        /// The error.
        source: Errno,
    },
    /// The descriptor is not a sealable memfd.
    #[error("shared pool {what}: not a sealable memfd (F_GET_SEALS: {source})")]
    NotMemfd {
        /// The pool.
        what: String,
        /// What `F_GET_SEALS` said.
        source: Errno,
    },
    /// The memfd may be shrunk, which would turn the mapping into SIGBUS.
    #[error("shared pool {what}: not sealed against shrinking (F_SEAL_SHRINK missing; seals {seals:#x})")]
    NotSealed {
        /// The pool.
        what: String,
        /// The seals it has.
        seals: i32,
    },
    /// Empty, or larger than the receiver accepts.
    #[error("shared pool {what}: size {size} is not within 1..={max}")]
    Size {
        /// The pool.
        what: String,
        /// Its size.
        size: u64,
        /// The receiver's limit.
        max: u64,
    },
    /// The mapping failed (e.g. the memfd is sealed against writing).
    #[error("shared pool {what}: mmap: {source}")]
    Map {
        /// The pool.
        what: String,
        /// Why.
        source: io::Error,
    },
    /// A range runs outside the pool.
    #[error("shared pool {what}: {len} bytes at offset {offset} run past its {size} bytes")]
    OutOfPool {
        /// The pool.
        what: String,
        /// Start of the range.
        offset: u64,
        /// Its length.
        len: u64,
        /// The pool's size.
        size: u64,
    },
}

/// A memfd named `name` (it shows in `/proc/PID/fd`) of `len` bytes, sealed
/// `SHRINK | GROW | SEAL` so its size is fixed for good: what
/// [`SharedPool::adopt`] and [`WriteOnlyArea::adopt`] accept. Not mapped
/// here; the supervisor creates the drivers' trace rings with it and never
/// maps them.
///
/// # Errors
/// [`PoolError`] naming the memfd and the failing step.
pub fn sealed_memfd(name: &str, len: usize) -> Result<OwnedFd, PoolError> {
    let what = format!("memfd:{name}");
    if len == 0 {
        return Err(PoolError::Size { what, size: 0, max: u64::MAX });
    }
    let fd =
        memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).map_err(sys(&what, "memfd_create"))?;
    let size = nix::libc::off_t::try_from(len).map_err(|_| PoolError::Size {
        what: what.clone(),
        size: len as u64,
        max: i64::MAX as u64,
    })?;
    nix::unistd::ftruncate(&fd, size).map_err(sys(&what, "ftruncate"))?;
    let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    fcntl(&fd, FcntlArg::F_ADD_SEALS(seals)).map_err(sys(&what, "F_ADD_SEALS"))?;
    Ok(fd)
}

/// A sealed memfd and its shared mapping. See the module docs.
///
/// `Send` and `Sync`: nothing here touches the memory from user space, so
/// two threads moving data in and out of disjoint (or even overlapping)
/// ranges only ever race inside the kernel, which copies bytes, not values.
#[derive(Debug)]
pub struct SharedPool {
    raw: MmapRaw,
    fd: OwnedFd,
    what: String,
}

fn sys<'a>(what: &'a str, op: &'static str) -> impl FnOnce(Errno) -> PoolError + 'a {
    move |source| PoolError::Sys { what: what.into(), op, source }
}

fn io_result(n: isize) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

impl SharedPool {
    /// Creates a pool of `len` bytes: a memfd named `name` (it shows in
    /// `/proc/PID/fd`), sized, sealed (`SHRINK | GROW | SEAL`) and mapped.
    ///
    /// # Errors
    /// [`PoolError`] naming the pool and the failing step.
    pub fn create(name: &str, len: usize) -> Result<Self, PoolError> {
        let fd = sealed_memfd(name, len)?;
        Self::map(fd, format!("memfd:{name}"), len)
    }

    /// Adopts a pool received from a peer, after checking everything the
    /// module docs list; `max_len` bounds what the caller is willing to map.
    ///
    /// # Errors
    /// [`PoolError::NotMemfd`], [`PoolError::NotSealed`], [`PoolError::Size`],
    /// [`PoolError::Map`].
    pub fn adopt(fd: OwnedFd, what: impl Into<String>, max_len: usize) -> Result<Self, PoolError> {
        let what = what.into();
        let seals =
            fcntl(&fd, FcntlArg::F_GET_SEALS).map_err(|source| PoolError::NotMemfd { what: what.clone(), source })?;
        if seals & nix::libc::F_SEAL_SHRINK == 0 {
            return Err(PoolError::NotSealed { what, seals });
        }
        let st = nix::sys::stat::fstat(&fd).map_err(sys(&what, "fstat"))?;
        let size = u64::try_from(st.st_size).unwrap_or(0);
        let max = max_len as u64;
        if size == 0 || size > max {
            return Err(PoolError::Size { what, size, max });
        }
        // size <= max_len, a usize.
        Self::map(fd, what, size as usize)
    }

    fn map(fd: OwnedFd, what: String, len: usize) -> Result<Self, PoolError> {
        let raw = MmapOptions::new()
            .len(len)
            .map_raw(fd.as_raw_fd())
            .map_err(|source| PoolError::Map { what: what.clone(), source })?;
        Ok(Self { raw, fd, what })
    }

    /// The memfd (to pass it on with `SCM_RIGHTS`).
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Size in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Never: an empty pool is refused.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.raw.len() == 0
    }

    /// What the pool is, for messages.
    #[must_use]
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// Checks that `len` bytes at `offset` lie inside the pool.
    ///
    /// # Errors
    /// [`PoolError::OutOfPool`].
    pub fn check(&self, offset: u64, len: u64) -> Result<Range<usize>, PoolError> {
        let size = self.len() as u64;
        match offset.checked_add(len) {
            // end <= size <= usize::MAX
            Some(end) if end <= size => Ok(offset as usize..end as usize),
            _ => Err(PoolError::OutOfPool { what: self.what.clone(), offset, len, size }),
        }
    }

    fn range(&self, offset: u64, len: usize) -> io::Result<*mut u8> {
        let r = self.check(offset, len as u64).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(self.raw.as_mut_ptr().wrapping_add(r.start))
    }

    /// Copies `data` into the pool at `offset` (a `pwrite` on the memfd).
    ///
    /// # Errors
    /// [`PoolError::OutOfPool`], or the system call's error.
    pub fn copy_in(&self, offset: u64, data: &[u8]) -> Result<(), PoolError> {
        self.check(offset, data.len() as u64)?;
        let mut done = 0;
        while done < data.len() {
            let at = off_t(offset + done as u64).map_err(|_| self.range_err(offset, data.len()))?;
            match nix::sys::uio::pwrite(&self.fd, &data[done..], at) {
                Ok(0) => return Err(PoolError::Sys { what: self.what.clone(), op: "pwrite", source: Errno::EIO }),
                Ok(n) => done += n,
                Err(Errno::EINTR) => {}
                Err(source) => return Err(PoolError::Sys { what: self.what.clone(), op: "pwrite", source }),
            }
        }
        Ok(())
    }

    /// Stores `data` into the pool at `offset` with a plain copy through a
    /// raw pointer (no system call), for a pool's creator that fills a
    /// range and only then names it in a request; it never reads the range
    /// back (the reasoning of [`WriteOnlyArea`], without `volatile`: only
    /// stores, no reference to the bytes, nothing here depends on them).
    ///
    /// # Errors
    /// [`PoolError::OutOfPool`]; nothing is written then.
    pub fn store(&self, offset: u64, data: &[u8]) -> Result<(), PoolError> {
        let range = self.check(offset, data.len() as u64)?;
        let dst = self.raw.as_mut_ptr().wrapping_add(range.start);
        // SAFETY: `dst..dst + data.len()` is `range`, inside the live mapping
        // (unmapped only when `self` drops), whose memfd cannot shrink
        // (sealed at create, checked at adopt), so every page is there to
        // be written; `data` is this process's own memory and cannot
        // overlap a shared mapping it holds no reference to. The bytes are
        // only written, never read here: a peer's concurrent access can
        // tear what it sees, not change what this process computes.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        Ok(())
    }

    /// Copies pool bytes at `offset` into `buf` (a `pread` on the memfd).
    ///
    /// # Errors
    /// [`PoolError::OutOfPool`], or the system call's error.
    pub fn copy_out(&self, offset: u64, buf: &mut [u8]) -> Result<(), PoolError> {
        self.check(offset, buf.len() as u64)?;
        let mut done = 0;
        while done < buf.len() {
            let at = off_t(offset + done as u64).map_err(|_| self.range_err(offset, buf.len()))?;
            match nix::sys::uio::pread(&self.fd, &mut buf[done..], at) {
                Ok(0) => return Err(PoolError::Sys { what: self.what.clone(), op: "pread", source: Errno::EIO }),
                Ok(n) => done += n,
                Err(Errno::EINTR) => {}
                Err(source) => return Err(PoolError::Sys { what: self.what.clone(), op: "pread", source }),
            }
        }
        Ok(())
    }

    fn range_err(&self, offset: u64, len: usize) -> PoolError {
        PoolError::OutOfPool { what: self.what.clone(), offset, len: len as u64, size: self.len() as u64 }
    }

    /// One `read` (or `pread` at `at`) from `src` into `len` pool bytes at
    /// `offset`; returns how many bytes arrived (0: end of file).
    ///
    /// # Errors
    /// `InvalidInput` for a range outside the pool; the system call's error
    /// (`EFAULT` if the pool's pages cannot be had).
    pub fn read_from(&self, src: BorrowedFd<'_>, at: Option<u64>, offset: u64, len: usize) -> io::Result<usize> {
        let ptr = self.range(offset, len)?.cast::<nix::libc::c_void>();
        let n = match at {
            // SAFETY: `ptr..ptr+len` lies inside the live mapping `self.raw`
            // (checked by `range`), which outlives the call; the kernel
            // writes through it and reports a bad page as EFAULT. No Rust
            // reference to the memory exists.
            None => unsafe { nix::libc::read(src.as_raw_fd(), ptr, len) },
            Some(at) => {
                let at = off_t(at)?;
                // SAFETY: as above.
                unsafe { nix::libc::pread(src.as_raw_fd(), ptr, len, at) }
            }
        };
        io_result(n)
    }

    /// One `write` (or `pwrite` at `at`) of `len` pool bytes at `offset` to
    /// `dst`; returns how many were taken.
    ///
    /// # Errors
    /// As [`read_from`](Self::read_from).
    pub fn write_to(&self, dst: BorrowedFd<'_>, at: Option<u64>, offset: u64, len: usize) -> io::Result<usize> {
        let ptr = self.range(offset, len)?.cast::<nix::libc::c_void>().cast_const();
        let n = match at {
            // SAFETY: `ptr..ptr+len` lies inside the live mapping (checked by
            // `range`); the kernel only reads through it. No Rust reference
            // to the memory exists.
            None => unsafe { nix::libc::write(dst.as_raw_fd(), ptr, len) },
            Some(at) => {
                let at = off_t(at)?;
                // SAFETY: as above.
                unsafe { nix::libc::pwrite(dst.as_raw_fd(), ptr, len, at) }
            }
        };
        io_result(n)
    }

    /// One `writev` of `head` followed by `len` pool bytes at `offset` (a
    /// reply header and its data in one call); returns the bytes taken.
    ///
    /// # Errors
    /// As [`read_from`](Self::read_from).
    pub fn write_with_head(&self, dst: BorrowedFd<'_>, head: &[u8], offset: u64, len: usize) -> io::Result<usize> {
        let ptr = self.range(offset, len)?.cast::<nix::libc::c_void>();
        let iov = [
            nix::libc::iovec { iov_base: head.as_ptr().cast_mut().cast(), iov_len: head.len() },
            nix::libc::iovec { iov_base: ptr, iov_len: len },
        ];
        // SAFETY: the first iovec is `head`, borrowed for the call; the second
        // lies inside the live mapping (checked by `range`). writev only reads
        // through both. No Rust reference to the pool memory exists.
        let n = unsafe { nix::libc::writev(dst.as_raw_fd(), iov.as_ptr(), 2) };
        io_result(n)
    }

    /// Fills `len` pool bytes at `offset` from `src`, looping over short
    /// reads and `EINTR` (`at`: file offset for `pread`, `None` for a stream).
    ///
    /// # Errors
    /// `UnexpectedEof` if `src` ends first; otherwise as [`read_from`](Self::read_from).
    pub fn fill_from(&self, src: BorrowedFd<'_>, at: Option<u64>, offset: u64, len: usize) -> io::Result<()> {
        let mut done = 0;
        while done < len {
            match self.read_from(src, at.map(|a| a + done as u64), offset + done as u64, len - done) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes all `len` pool bytes at `offset` to `dst`, looping over short
    /// writes and `EINTR`.
    ///
    /// # Errors
    /// `WriteZero` if `dst` takes nothing; otherwise as [`read_from`](Self::read_from).
    pub fn drain_to(&self, dst: BorrowedFd<'_>, at: Option<u64>, offset: u64, len: usize) -> io::Result<()> {
        let mut done = 0;
        while done < len {
            match self.write_to(dst, at.map(|a| a + done as u64), offset + done as u64, len - done) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes `head`, then `len` pool bytes at `offset`, all of it, to the
    /// stream `dst` (the first call is one `writev`).
    ///
    /// # Errors
    /// As [`drain_to`](Self::drain_to).
    pub fn send_with_head(&self, dst: BorrowedFd<'_>, head: &[u8], offset: u64, len: usize) -> io::Result<()> {
        let mut sent = loop {
            match self.write_with_head(dst, head, offset, len) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        while sent < head.len() {
            let n = nix::unistd::write(dst, &head[sent..]).map_err(io::Error::from)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            sent += n;
        }
        let done = sent - head.len();
        self.drain_to(dst, None, offset + done as u64, len - done)
    }
}

/// A sealed memfd this process *publishes* into with plain stores and never
/// reads: the driver's trace ring, which the supervisor reads with `pread`
/// while the driver runs and after it dies. See the module docs.
///
/// It exists because the trace ring is written several times per request in
/// small pieces (a 64-byte slot, a 4-byte cursor). A `pwrite` for each cost
/// four system calls per request, more than half of a driver's system call
/// time in a profile of the request path; a store into the mapping costs
/// none.
///
/// Why stores are sound here when [`SharedPool`] avoids them: this process
/// never *reads* the area and never forms a reference to it, only volatile
/// byte stores through a raw pointer, the way a register block is written.
/// A peer that writes the same bytes (the only other holder is the
/// supervisor, which does not) can spoil what a reader sees, not this
/// process. `F_SEAL_SHRINK`, checked by [`WriteOnlyArea::adopt`], rules out
/// the `SIGBUS` a truncation under a mapping would raise.
#[derive(Debug)]
pub struct WriteOnlyArea {
    pool: SharedPool,
}

impl WriteOnlyArea {
    /// Maps the memfd `fd` for writing after the checks of
    /// [`SharedPool::adopt`]: a memfd sealed against shrinking, non-empty and
    /// at most `max_len` bytes.
    ///
    /// # Errors
    /// As [`SharedPool::adopt`].
    pub fn adopt(fd: OwnedFd, what: impl Into<String>, max_len: usize) -> Result<Self, PoolError> {
        Ok(Self { pool: SharedPool::adopt(fd, what, max_len)? })
    }

    /// Size in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.pool.len()
    }

    /// Never: an empty area is refused.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pool.is_empty()
    }

    /// Stores `bytes` at `offset`, then a release fence, so that a reader
    /// mapping the same pages sees a slot before the cursor that names it.
    ///
    /// # Errors
    /// [`PoolError::OutOfPool`]; nothing is written then.
    pub fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<(), PoolError> {
        let range = self.pool.check(offset as u64, bytes.len() as u64)?;
        let base = self.pool.raw.as_mut_ptr().wrapping_add(range.start);
        for (i, b) in bytes.iter().enumerate() {
            let at = base.wrapping_add(i);
            // SAFETY: `range.start + i < range.end <= len` (checked above),
            // so the pointer lies inside the live mapping (unmapped only
            // when `self` drops), whose memfd cannot shrink (`F_SEAL_SHRINK`,
            // checked at adopt). The store is volatile and through a raw
            // pointer: no reference to the shared bytes is formed, so a
            // peer's concurrent writes are not a data race in this process
            // (see the type's docs).
            unsafe { at.write_volatile(*b) };
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

fn off_t(at: u64) -> io::Result<nix::libc::off_t> {
    nix::libc::off_t::try_from(at).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn stored_bytes_are_what_the_memfd_and_a_peer_mapping_hold() {
        let pool = SharedPool::create("store", 3 * 4096).unwrap();
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        pool.store(1000, &data).unwrap();
        let mut back = vec![0u8; data.len()];
        pool.copy_out(1000, &mut back).unwrap();
        assert_eq!(back, data, "through the memfd");
        // A peer's own mapping of the same memfd sees them too.
        let peer = SharedPool::adopt(pool.fd().try_clone_to_owned().unwrap(), "peer", 1 << 20).unwrap();
        let mut seen = vec![0u8; data.len()];
        peer.copy_out(1000, &mut seen).unwrap();
        assert_eq!(seen, data, "through another mapping");
        // Outside the pool: an error, and nothing written.
        let before = {
            let mut b = vec![0u8; 4096];
            pool.copy_out(2 * 4096, &mut b).unwrap();
            b
        };
        assert!(matches!(pool.store(2 * 4096 + 1, &[1u8; 4096]), Err(PoolError::OutOfPool { .. })));
        assert!(matches!(pool.store(u64::MAX, &[1u8]), Err(PoolError::OutOfPool { .. })));
        let mut after = vec![0u8; 4096];
        pool.copy_out(2 * 4096, &mut after).unwrap();
        assert_eq!(after, before);
        pool.store(0, &[]).unwrap();
    }

    #[test]
    fn created_pool_is_sealed_and_moves_bytes_both_ways() {
        let pool = SharedPool::create("t", 8192).unwrap();
        let seals = fcntl(pool.fd(), FcntlArg::F_GET_SEALS).unwrap();
        assert_ne!(seals & nix::libc::F_SEAL_SHRINK, 0);
        assert_ne!(seals & nix::libc::F_SEAL_SEAL, 0);
        // Sealed: the size cannot change.
        assert_eq!(nix::unistd::ftruncate(pool.fd(), 100), Err(Errno::EPERM));
        pool.copy_in(4096, b"hello").unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        pool.drain_to(b.as_fd(), None, 4096, 5).unwrap();
        let mut got = [0u8; 5];
        a.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        a.write_all(b"world").unwrap();
        pool.fill_from(b.as_fd(), None, 10, 5).unwrap();
        let mut back = [0u8; 5];
        pool.copy_out(10, &mut back).unwrap();
        assert_eq!(&back, b"world");
    }

    #[test]
    fn write_only_area_stores_are_what_a_reader_of_the_memfd_sees() {
        let pool = SharedPool::create("t", 4096).unwrap();
        let reader = pool.fd().try_clone_to_owned().unwrap();
        let mut area = WriteOnlyArea::adopt(pool.fd().try_clone_to_owned().unwrap(), "t", 4096).unwrap();
        assert_eq!(area.len(), 4096);
        area.write(4090, b"abcdef").unwrap();
        area.write(0, b"xy").unwrap();
        let mut got = [0u8; 6];
        nix::sys::uio::pread(&reader, &mut got, 4090).unwrap();
        assert_eq!(&got, b"abcdef");
        nix::sys::uio::pread(&reader, &mut got[..2], 0).unwrap();
        assert_eq!(&got[..2], b"xy");
        // Past the end, or wrapping: refused, and nothing is written.
        assert!(matches!(area.write(4091, b"abcdef"), Err(PoolError::OutOfPool { offset: 4091, len: 6, .. })));
        assert!(matches!(area.write(usize::MAX, b"a"), Err(PoolError::OutOfPool { .. })));
        nix::sys::uio::pread(&reader, &mut got, 4090).unwrap();
        assert_eq!(&got, b"abcdef");
    }

    #[test]
    fn write_only_area_refuses_a_memfd_that_could_shrink() {
        let fd = memfd_create("u", MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, 4096).unwrap();
        let err = WriteOnlyArea::adopt(fd, "trace of d", 4096).unwrap_err();
        assert!(matches!(err, PoolError::NotMemfd { .. } | PoolError::NotSealed { .. }), "{err}");
        assert!(err.to_string().contains("trace of d"), "{err}");
    }

    #[test]
    fn ranges_outside_the_pool_are_errors_not_faults() {
        let pool = SharedPool::create("t", 4096).unwrap();
        assert!(matches!(pool.check(4096, 1), Err(PoolError::OutOfPool { .. })));
        assert!(matches!(pool.check(u64::MAX, 2), Err(PoolError::OutOfPool { .. })));
        assert!(pool.check(0, 4096).is_ok());
        assert!(pool.copy_in(4090, &[0; 7]).is_err());
        let (_a, b) = UnixStream::pair().unwrap();
        let e = pool.write_to(b.as_fd(), None, 4000, 200).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn adopt_refuses_what_is_not_a_shrink_sealed_memfd() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(4096).unwrap();
        let e = SharedPool::adopt(OwnedFd::from(file), "tmp", 1 << 20).unwrap_err();
        assert!(matches!(e, PoolError::NotMemfd { .. }), "{e}");

        let unsealed = memfd_create("u", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
        nix::unistd::ftruncate(&unsealed, 4096).unwrap();
        let e = SharedPool::adopt(unsealed, "unsealed", 1 << 20).unwrap_err();
        assert!(matches!(e, PoolError::NotSealed { .. }), "{e}");

        let pool = SharedPool::create("big", 8192).unwrap();
        let e = SharedPool::adopt(pool.fd.try_clone().unwrap(), "big", 4096).unwrap_err();
        assert!(matches!(e, PoolError::Size { size: 8192, max: 4096, .. }), "{e}");

        let ok = SharedPool::adopt(pool.fd.try_clone().unwrap(), "peer", 8192).unwrap();
        pool.copy_in(0, b"shared").unwrap();
        let mut got = [0u8; 6];
        ok.copy_out(0, &mut got).unwrap();
        assert_eq!(&got, b"shared");
    }

    #[test]
    fn pool_to_file_and_back_with_positional_io() {
        let pool = SharedPool::create("t", 4096).unwrap();
        pool.copy_in(0, &[7u8; 512]).unwrap();
        let file = tempfile::tempfile().unwrap();
        pool.drain_to(file.as_fd(), Some(1024), 0, 512).unwrap();
        pool.fill_from(file.as_fd(), Some(1024), 2048, 512).unwrap();
        let mut back = [0u8; 512];
        pool.copy_out(2048, &mut back).unwrap();
        assert_eq!(back, [7u8; 512]);
        // Past the end of the file: end of file, not garbage.
        let e = pool.fill_from(file.as_fd(), Some(1 << 20), 0, 512).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
