//! The client's half of the bulk-data path: a session attaches a shared
//! pool (a sealed memfd, [`SharedPool`]) for a driver once, and its calls
//! then name byte ranges of it instead of carrying the bytes.
//!
//! # The client's rules
//! - **Pinning.** A range named by a call must not be changed or reused
//!   until that call is answered: the supervisor may replay the request to a
//!   new driver instance, which reads (or fills) the same range again.
//!   [`Slots`] hands out fixed-size slots and takes one back only when the
//!   caller says the call that used it was answered.
//! - **Re-attaching.** The supervisor keeps the descriptor for the session
//!   and gives it to every new driver instance itself. After a reconnect
//!   the library attaches every pool again before it resends anything, so
//!   a supervisor that restarted (and lost the descriptor) has it back
//!   before any resent call needs it.
//!
//! # Designs rejected
//! - A pool per call: a memfd, an `SCM_RIGHTS` message and two mmaps per
//!   call cost more than the copies saved.
//! - Letting the library pick ranges inside [`Client::submit`]: the caller
//!   knows when a range is free (when *its* call is answered), and the NBD
//!   front end reads payloads straight from its socket into a slot before
//!   the call exists.

use crate::{Client, ClientError};
use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, recv, sendmsg};
use reinc_proto::{ClientToSup, SupToClient};
use reinc_uio::SharedPool;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

impl Client {
    /// Attaches `pool` as this session's bulk-data pool for `driver`, and
    /// keeps a duplicate of its descriptor to attach it again after a
    /// reconnect. Answers to calls in flight that arrive meanwhile are kept
    /// for [`wait`](Self::wait).
    ///
    /// # Errors
    /// [`ClientError::PoolRefused`] (unknown driver, not allowed, not a
    /// sealed memfd), or a connection error.
    pub fn attach_pool(&mut self, driver: &str, pool: &SharedPool) -> Result<(), ClientError> {
        let fd = pool.fd().try_clone_to_owned().map_err(|e| ClientError::Connect {
            path: self.path.clone(),
            source: Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO)),
        })?;
        self.send_attach(driver, fd.as_fd())?;
        self.pools.retain(|(d, _)| d != driver);
        self.pools.push((driver.to_owned(), fd));
        Ok(())
    }

    /// Sends `AttachPool` with `fd` and waits for its answer.
    pub(crate) fn send_attach(&mut self, driver: &str, fd: BorrowedFd<'_>) -> Result<(), ClientError> {
        let conn = |source| ClientError::Connect { path: self.path.clone(), source };
        let frame = reinc_proto::encode_vec(&ClientToSup::AttachPool { driver })
            .map_err(|error| ClientError::Rejected { path: self.path.clone(), error })?;
        let fds = [fd.as_raw_fd()];
        sendmsg::<()>(
            self.fd.as_raw_fd(),
            &[std::io::IoSlice::new(&frame)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(conn)?;
        loop {
            let n = match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_TRUNC) {
                Ok(0) => return Err(conn(Errno::ECONNRESET)),
                Ok(n) => n.min(self.buf.len()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(conn(e)),
            };
            match reinc_proto::decode::<SupToClient<'_>>(&self.buf[..n]) {
                Ok(SupToClient::PoolAttached { driver: d }) if d == driver => return Ok(()),
                Ok(SupToClient::PoolRefused { driver: d, error }) if d == driver => {
                    return Err(ClientError::PoolRefused { path: self.path.clone(), driver: driver.into(), error });
                }
                Ok(SupToClient::Rejected { error }) => {
                    return Err(ClientError::Rejected { path: self.path.clone(), error });
                }
                // A reply to a call in flight: delivered by `wait` later.
                _ => self.inbox.push_back(self.buf[..n].to_vec()),
            }
        }
    }

    /// Attaches every kept pool again (after a reconnect).
    pub(crate) fn reattach_pools(&mut self) -> Result<(), ClientError> {
        let pools: Vec<(String, OwnedFd)> = std::mem::take(&mut self.pools);
        let mut result = Ok(());
        for (driver, fd) in &pools {
            if result.is_ok() {
                result = self.send_attach(driver, fd.as_fd());
            }
        }
        self.pools = pools;
        result
    }
}

/// Fixed-size slots of a pool, handed out and taken back by the caller
/// (see "Pinning" in the module docs).
#[derive(Debug)]
pub struct Slots {
    slot: usize,
    free: Vec<usize>,
    count: usize,
}

impl Slots {
    /// `count` slots of `slot` bytes (a pool of `slot * count` bytes).
    #[must_use]
    pub fn new(slot: usize, count: usize) -> Self {
        Self { slot, free: (0..count).rev().collect(), count }
    }

    /// Bytes per slot.
    #[must_use]
    pub fn slot_len(&self) -> usize {
        self.slot
    }

    /// Bytes the pool needs.
    #[must_use]
    pub fn pool_len(&self) -> usize {
        self.slot * self.count
    }

    /// A free slot's index, if any.
    pub fn take(&mut self) -> Option<usize> {
        self.free.pop()
    }

    /// The byte offset of slot `i` in the pool.
    #[must_use]
    pub fn offset(&self, i: usize) -> u64 {
        (i * self.slot) as u64
    }

    /// Gives slot `i` back: only once the call that named it was answered.
    ///
    /// # Panics
    /// If `i` is not a slot of this pool or is already free (a caller bug
    /// that would let two calls share bytes).
    pub fn give_back(&mut self, i: usize) {
        assert!(i < self.count && !self.free.contains(&i), "slot {i} given back twice or never taken");
        self.free.push(i);
    }

    /// Slots free now.
    #[must_use]
    pub fn free(&self) -> usize {
        self.free.len()
    }
}
