//! Non-blocking `SOCK_SEQPACKET` peers and the epoll set: what every socket
//! of the daemon (driver channel, client, control) is built on.
//!
//! A [`Peer`] queues frames the other end has not read yet (bounded by
//! [`MAX_OUT_FRAMES`]) and the [`Registry`] asks for `EPOLLOUT` exactly while
//! a queue is non-empty, and for `EPOLLIN` while the peer's [`Flow`] says its
//! requests are read (a client whose replies are over budget is not read:
//! [`crate::outbound`]). Blocking sends with a timeout were rejected: one
//! slow reader would stall every driver and client behind it.

use super::{DaemonError, setup};
use crate::core::{ConnId, DriverId};
use crate::outbound::Flow;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::socket::{MsgFlags, send};
use reinc_proto::Generation;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Frames queued for a peer that does not read before it is disconnected.
pub(super) const MAX_OUT_FRAMES: usize = 4096;

/// A non-blocking seqpacket peer with a bounded queue of unsent frames.
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) fd: OwnedFd,
    /// Unsent frames, each with the descriptor it carries, if any (a
    /// client's shared pool in `AttachPool`, [`super::pools`]).
    pub(super) out: VecDeque<(Vec<u8>, Option<OwnedFd>)>,
    /// Bytes in `out`.
    pub(super) queued: usize,
    pub(super) token: u64,
    /// `EPOLLOUT` is asked for.
    pub(super) want_out: bool,
    /// `EPOLLIN` is asked for.
    pub(super) want_in: bool,
    /// Whether its frames are read (clients only; drivers and control
    /// connections are always read).
    pub(super) flow: Flow,
}

impl Peer {
    pub(super) fn new(fd: OwnedFd, token: u64) -> Self {
        Self { fd, out: VecDeque::new(), queued: 0, token, want_out: false, want_in: true, flow: Flow::new() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Signals,
    ClientListener,
    ControlListener,
    Client(ConnId),
    Control(u64),
    Driver(DriverId, Generation),
    Journal,
}

/// The epoll set and what each token stands for.
#[derive(Debug)]
pub(super) struct Registry {
    pub(super) epoll: Epoll,
    pub(super) tokens: HashMap<u64, Source>,
    pub(super) next_token: u64,
}

impl Registry {
    pub(super) fn watch(&mut self, fd: impl AsFd, src: Source) -> Result<u64, DaemonError> {
        let token = self.next_token;
        self.next_token += 1;
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
        self.epoll.add(fd, EpollEvent::new(flags, token)).map_err(setup("epoll_ctl"))?;
        self.tokens.insert(token, src);
        Ok(token)
    }

    pub(super) fn unwatch(&mut self, peer: &Peer) {
        let _ = self.epoll.delete(peer.fd.as_fd());
        self.tokens.remove(&peer.token);
    }

    /// Asks for `EPOLLOUT` on `peer` exactly while it has unsent frames, and
    /// for `EPOLLIN` while its flow says it is read (`EPOLLRDHUP` always,
    /// so a hang-up is seen while it is not read).
    pub(super) fn update_out(&mut self, peer: &mut Peer) {
        let want_out = !peer.out.is_empty();
        let want_in = peer.flow.reads();
        if peer.want_out == want_out && peer.want_in == want_in {
            return;
        }
        peer.want_out = want_out;
        peer.want_in = want_in;
        let mut flags = EpollFlags::EPOLLRDHUP;
        if want_in {
            flags |= EpollFlags::EPOLLIN;
        }
        if want_out {
            flags |= EpollFlags::EPOLLOUT;
        }
        let mut ev = EpollEvent::new(flags, peer.token);
        let _ = self.epoll.modify(peer.fd.as_fd(), &mut ev);
    }
}

/// Why a frame could not be queued for a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SendError {
    /// The peer closed its end.
    Gone,
    /// The peer has not read [`MAX_OUT_FRAMES`] frames.
    Overflow,
}

pub(super) fn queue_or_send(peer: &mut Peer, frame: Vec<u8>) -> Result<usize, SendError> {
    queue_or_send_fd(peer, frame, None)
}

/// [`queue_or_send`] of a frame that carries `fd` (sent with it, in order);
/// `Ok(frames sent)`.
pub(super) fn queue_or_send_fd(peer: &mut Peer, frame: Vec<u8>, fd: Option<OwnedFd>) -> Result<usize, SendError> {
    peer.queued += frame.len();
    peer.out.push_back((frame, fd));
    let sent = flush(peer).map_err(|()| SendError::Gone)?;
    if peer.out.len() > MAX_OUT_FRAMES {
        peer.out.clear();
        peer.queued = 0;
        return Err(SendError::Overflow);
    }
    Ok(sent)
}

/// Sends queued frames until the socket would block; `Ok(frames sent)`.
/// `Err` if the peer is gone.
pub(super) fn flush(peer: &mut Peer) -> Result<usize, ()> {
    let mut sent = 0;
    while let Some((f, fd)) = peer.out.front() {
        let res = match fd {
            Some(fd) => super::pools::send_with_fd(peer.fd.as_fd(), f, fd.as_fd()),
            None => send(peer.fd.as_raw_fd(), f, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL),
        };
        match res {
            Ok(_) => {
                let (f, _) = peer.out.pop_front().expect("front exists");
                peer.queued -= f.len();
                sent += 1;
            }
            Err(Errno::EAGAIN) => return Ok(sent),
            Err(Errno::EINTR) => {}
            Err(_) => {
                peer.out.clear();
                peer.queued = 0;
                return Err(());
            }
        }
    }
    Ok(sent)
}

/// After `recv` returned 0 on a `SOCK_SEQPACKET` socket: did the peer hang
/// up, or did it send an empty frame? Both read as 0 bytes; only a hang-up
/// sets `POLLRDHUP` (the kernel marks the socket shut down before it wakes
/// the reader, so the flag is visible once EOF is).
pub(super) fn hung_up(fd: &OwnedFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    // nix names no POLLRDHUP; the bit is libc's.
    let rdhup = PollFlags::from_bits_retain(nix::libc::POLLRDHUP);
    let mut fds = [PollFd::new(fd.as_fd(), rdhup)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0].revents().is_none_or(|r| r.intersects(rdhup | PollFlags::POLLHUP | PollFlags::POLLERR)),
        Err(_) => true,
    }
}

pub(super) fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    let fl = nix::fcntl::OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(fl | nix::fcntl::OFlag::O_NONBLOCK)).map(drop)
}

pub(super) fn inheritable(fd: &OwnedFd, yes: bool) -> nix::Result<()> {
    let flags = if yes { FdFlag::empty() } else { FdFlag::FD_CLOEXEC };
    fcntl(fd, FcntlArg::F_SETFD(flags)).map(drop)
}
