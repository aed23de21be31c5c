//! Routing the clients' shared pools (bulk data) to their drivers: the
//! supervisor holds each pool's descriptor, never maps it, and passes it to
//! every instance of the driver.
//!
//! # Rules
//! - A client attaches one pool per driver for its session
//!   (`ClientToSup::AttachPool` with one `SCM_RIGHTS` descriptor). It is
//!   refused with `BadPool` unless it is a memfd sealed against shrinking
//!   (checked here with `F_GET_SEALS`, so a client gets the answer at once;
//!   the driver checks again and never trusts it), `NoSession` before
//!   `Hello`, `UnknownDriver`, `NotAllowed` (the driver's allow-list), and
//!   `Busy` when [`MAX_POOLS`] are held. A second attach for the same
//!   (session, driver) replaces the first.
//! - The pool goes to the running instance at once, and to every new
//!   instance right behind its `Init` and before anything is replayed, so a
//!   replayed request always finds its pool (CONTRACTS.md "Bulk data").
//! - When a session is forgotten (expired, evicted) its pools are dropped
//!   and the drivers told `DetachPool`.
//! - Descriptors that arrive with any other frame are closed.
//!
//! # Designs rejected
//! - Mapping the pool here to copy the bytes into the driver's socket: that
//!   is the copy through the supervisor this path exists to remove.
//! - Keeping pools in the pure core: a descriptor is not data the core can
//!   replay or test by value; the core only answers which session a
//!   connection has and whether a session still exists.

use super::Daemon;
use super::io::{SendError, queue_or_send_fd};
use crate::core::{ConnId, DriverId};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use reinc_proto::{CallError, ClientId, Generation, SupToClient, ToDriver};
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use tracing::{debug, warn};

/// Pools held at most (each is one descriptor).
pub const MAX_POOLS: usize = 1024;

/// The pools, by (session, driver).
#[derive(Debug, Default)]
pub struct PoolTable {
    map: HashMap<(ClientId, DriverId), OwnedFd>,
}

impl PoolTable {
    /// Keeps `fd` as the pool of `client` for `driver`, after checking it.
    ///
    /// # Errors
    /// [`CallError::BadPool`] or [`CallError::Busy`].
    pub fn attach(&mut self, client: ClientId, driver: DriverId, fd: Option<OwnedFd>) -> Result<(), CallError> {
        let fd = fd.ok_or(CallError::BadPool)?;
        check_memfd(fd.as_fd())?;
        if !self.map.contains_key(&(client, driver)) && self.map.len() >= MAX_POOLS {
            return Err(CallError::Busy);
        }
        self.map.insert((client, driver), fd);
        Ok(())
    }

    /// The pool of `client` for `driver`.
    #[must_use]
    pub fn get(&self, client: ClientId, driver: DriverId) -> Option<BorrowedFd<'_>> {
        self.map.get(&(client, driver)).map(AsFd::as_fd)
    }

    /// Every pool for `driver`, for a new instance.
    pub fn for_driver(&self, driver: DriverId) -> impl Iterator<Item = (ClientId, BorrowedFd<'_>)> {
        self.map.iter().filter(move |((_, d), _)| *d == driver).map(|((c, _), fd)| (*c, fd.as_fd()))
    }

    /// Drops the pools of sessions `alive` says are gone; returns the
    /// (session, driver) pairs dropped, for `DetachPool`.
    pub fn sweep(&mut self, alive: impl Fn(ClientId) -> bool) -> Vec<(ClientId, DriverId)> {
        let gone: Vec<_> = self.map.keys().filter(|(c, _)| !alive(*c)).copied().collect();
        for k in &gone {
            self.map.remove(k);
        }
        gone
    }

    /// Pools held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// None held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl Daemon {
    /// `AttachPool` from `conn`: keep the descriptor, pass it to the running
    /// instance, answer.
    pub(super) fn attach_pool(&mut self, conn: ConnId, driver: &str, fd: Option<OwnedFd>) {
        let result = match (self.core.driver_id(driver), self.core.session_of(conn)) {
            (None, _) => Err(CallError::UnknownDriver),
            (_, None) => Err(CallError::NoSession),
            (Some(_), Some(_)) if !self.may_call(conn, driver) => Err(CallError::NotAllowed),
            (Some(id), Some(client)) => self.pools.attach(client, id, fd).map(|()| (id, client)),
        };
        match result {
            Ok((id, client)) => {
                debug!("client {} attached a shared pool for {driver} (session {client})", conn.0);
                if let Some(generation) = self.live.get(&id).map(|l| l.generation) {
                    self.send_pool(id, generation, client);
                }
                self.send_client(conn, &SupToClient::PoolAttached { driver });
            }
            Err(error) => {
                debug!("client {}: shared pool for {driver} refused: {error}", conn.0);
                self.send_client(conn, &SupToClient::PoolRefused { driver, error });
            }
        }
    }

    /// Every pool of `driver` to its instance `generation` (after `Init`).
    pub(super) fn send_pools(&mut self, driver: DriverId, generation: Generation) {
        let clients: Vec<ClientId> = self.pools.for_driver(driver).map(|(c, _)| c).collect();
        for client in clients {
            self.send_pool(driver, generation, client);
        }
    }

    /// Queues `AttachPool` with a duplicate of `client`'s pool descriptor
    /// to instance `generation` of `driver`.
    fn send_pool(&mut self, driver: DriverId, generation: Generation, client: ClientId) {
        let Some(fd) = self.pools.get(client, driver).and_then(|fd| fd.try_clone_to_owned().ok()) else {
            warn!("{}: cannot duplicate the pool of session {client}", self.core.config(driver).name);
            return;
        };
        self.queue_to_driver(driver, generation, &ToDriver::AttachPool { client }, Some(fd));
    }

    /// Queues one frame (with its descriptor, if any) to instance
    /// `generation` of `driver`.
    fn queue_to_driver(&mut self, driver: DriverId, generation: Generation, msg: &ToDriver<'_>, fd: Option<OwnedFd>) {
        let Ok(frame) = reinc_proto::encode_vec(msg) else { return };
        let Some(live) = self.live.get_mut(&driver).filter(|l| l.generation == generation) else { return };
        let Some(peer) = live.peer.as_mut() else { return };
        if queue_or_send_fd(peer, frame, fd) == Err(SendError::Overflow) {
            warn!("{}: outgoing queue overflow; dropping frames", self.core.config(driver).name);
        }
        self.reg.update_out(peer);
    }

    /// Drops the pools of sessions the core has forgotten and tells their
    /// drivers (`DetachPool`). Does nothing unless the session count moved.
    pub(super) fn sweep_pools(&mut self) {
        let now = self.core.session_count();
        let moved = now != self.sessions_seen;
        self.sessions_seen = now;
        if !moved || self.pools.is_empty() {
            return;
        }
        let core = &self.core;
        for (client, driver) in self.pools.sweep(|c| core.has_session(c)) {
            if let Some(generation) = self.live.get(&driver).map(|l| l.generation) {
                self.queue_to_driver(driver, generation, &ToDriver::DetachPool { client }, None);
            }
        }
    }
}

/// A memfd sealed against shrinking, or [`CallError::BadPool`].
///
/// # Errors
/// [`CallError::BadPool`].
pub fn check_memfd(fd: BorrowedFd<'_>) -> Result<(), CallError> {
    match fcntl(fd, FcntlArg::F_GET_SEALS) {
        Ok(seals) if seals & nix::libc::F_SEAL_SHRINK != 0 => Ok(()),
        _ => Err(CallError::BadPool),
    }
}

/// One non-blocking `recvmsg` that also takes at most one `SCM_RIGHTS`
/// descriptor (close-on-exec); any beyond the first are closed.
///
/// # Errors
/// The errno of `recvmsg`.
pub fn recv_with_fd(sock: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(usize, Option<OwnedFd>), Errno> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        sock,
        &mut [std::io::IoSliceMut::new(buf)],
        &mut cmsg,
        RecvFlags::DONTWAIT | RecvFlags::TRUNC | RecvFlags::CMSG_CLOEXEC,
    );
    let mut fd = None;
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for f in fds {
                fd.get_or_insert(f);
            }
        }
    }
    let n = got.map_err(|e| Errno::from_raw(e.raw_os_error()))?.bytes;
    Ok((n, fd))
}

/// One non-blocking `sendmsg` of `frame` with `fd` as its descriptor.
///
/// # Errors
/// The errno of `sendmsg` (`EAGAIN` when the socket is full).
pub fn send_with_fd(sock: BorrowedFd<'_>, frame: &[u8], fd: BorrowedFd<'_>) -> Result<usize, Errno> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    cmsg.push(SendAncillaryMessage::ScmRights(&fds));
    sendmsg(sock, &[std::io::IoSlice::new(frame)], &mut cmsg, SendFlags::DONTWAIT | SendFlags::NOSIGNAL)
        .map_err(|e| Errno::from_raw(e.raw_os_error()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::memfd::{MFdFlags, memfd_create};
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

    fn sealed() -> OwnedFd {
        let fd = memfd_create("t", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
        nix::unistd::ftruncate(&fd, 4096).unwrap();
        fcntl(&fd, FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::F_SEAL_SHRINK)).unwrap();
        fd
    }

    #[test]
    fn only_shrink_sealed_memfds_are_kept_and_sweeps_drop_gone_sessions() {
        let mut t = PoolTable::default();
        let (a, b) = (ClientId(1), ClientId(2));
        assert_eq!(t.attach(a, DriverId(0), None), Err(CallError::BadPool));
        let unsealed = memfd_create("u", MFdFlags::MFD_CLOEXEC).unwrap();
        assert_eq!(t.attach(a, DriverId(0), Some(unsealed)), Err(CallError::BadPool));
        let file = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        assert_eq!(t.attach(a, DriverId(0), Some(file)), Err(CallError::BadPool));
        t.attach(a, DriverId(0), Some(sealed())).unwrap();
        t.attach(a, DriverId(0), Some(sealed())).unwrap();
        t.attach(b, DriverId(0), Some(sealed())).unwrap();
        t.attach(b, DriverId(1), Some(sealed())).unwrap();
        assert_eq!(t.len(), 3, "a second attach replaces the first");
        assert_eq!(t.for_driver(DriverId(0)).count(), 2);
        let gone = t.sweep(|c| c == a);
        assert_eq!(gone.len(), 2);
        assert!(t.get(b, DriverId(0)).is_none() && t.get(a, DriverId(0)).is_some());
    }

    #[test]
    fn a_descriptor_travels_with_its_frame() {
        let (x, y) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap();
        let pool = sealed();
        send_with_fd(x.as_fd(), b"frame", pool.as_fd()).unwrap();
        let mut buf = [0u8; 16];
        let (n, fd) = recv_with_fd(y.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"frame");
        assert!(check_memfd(fd.expect("descriptor received").as_fd()).is_ok());
        nix::sys::socket::send(std::os::fd::AsRawFd::as_raw_fd(&x), b"plain", nix::sys::socket::MsgFlags::empty())
            .unwrap();
        let (n, fd) = recv_with_fd(y.as_fd(), &mut buf).unwrap();
        assert_eq!((&buf[..n], fd.is_none()), (&b"plain"[..], true));
    }
}
