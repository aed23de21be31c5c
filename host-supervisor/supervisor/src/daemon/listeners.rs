//! The client and control listening sockets: creating them safely, telling
//! a live supervisor from a stale socket, and accepting within the
//! connection caps and the descriptor reserve ([`super::fds`]).
//!
//! Refusing by leaving connections in the backlog was rejected: a listener
//! that stays readable makes epoll spin; taking the connection and closing
//! it lets the loop sleep.

use super::io::{Peer, Source, set_nonblocking};
use super::{Daemon, DaemonError, authz, fds, setup};
use crate::core::{ConnId, Event};
use nix::errno::Errno;
use nix::sys::epoll::{EpollEvent, EpollFlags};
use nix::sys::socket::{
    AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr, bind, connect, listen, recv, send, socket,
};
use reinc_client::control::{ControlRequest, MAX_CONTROL_FRAME};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Instant;
use tracing::warn;

impl Daemon {
    /// Accepts every pending client connection and tells the core.
    pub(super) fn accept_clients(&mut self) {
        while let Some(stream) = self.accept(false) {
            let fd = OwnedFd::from(stream);
            let _ = set_nonblocking(&fd);
            let conn = ConnId(self.next_conn);
            self.next_conn += 1;
            let Ok(token) = self.reg.watch(&fd, Source::Client(conn)) else { continue };
            self.peers.insert(conn, authz::peer_of(&fd));
            self.clients.insert(conn, Peer::new(fd, token));
            let now = self.now();
            let acts = self.core.handle(now, Event::ClientConnected { conn });
            self.execute(acts);
        }
    }

    /// Accepts every pending control connection of an authorised peer.
    pub(super) fn accept_controls(&mut self) {
        while let Some(stream) = self.accept(true) {
            let fd = OwnedFd::from(stream);
            let peer = authz::peer_of(&fd);
            if !authz::may_control(peer) {
                warn!(
                    "[SUP] control connection from uid {} (pid {}) refused: control.sock is for uid {} and root",
                    peer.map_or(u32::MAX, |p| p.uid),
                    peer.map_or(0, |p| p.pid),
                    nix::unistd::geteuid()
                );
                continue;
            }
            let _ = set_nonblocking(&fd);
            let id = self.next_conn;
            self.next_conn += 1;
            let Ok(token) = self.reg.watch(&fd, Source::Control(id)) else { continue };
            self.controls.insert(id, Peer::new(fd, token));
        }
    }

    /// Accepts one connection on the client (or control) listener, within
    /// the caps; `None` when there is nothing (more) to accept now.
    ///
    /// Over a cap, or when the descriptor table is full, the connection is
    /// still taken off the backlog and closed at once, so the listener stops
    /// being readable and the loop sleeps (see [`fds`]).
    pub(super) fn accept(&mut self, control: bool) -> Option<std::os::unix::net::UnixStream> {
        loop {
            let listener = if control { &self.control_listener } else { &self.client_listener };
            let accepted = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.raw_os_error().is_some_and(|n| n == Errno::EMFILE as i32 || n == Errno::ENFILE as i32) => {
                    // The classic trick: free the reserve, take the
                    // connection off the backlog, close it, take the reserve
                    // back.
                    self.reserve.release();
                    let dropped = listener.accept().is_ok();
                    self.reserve.refill();
                    self.refused += 1;
                    if !dropped || self.reserve.held() < fds::RESERVE {
                        self.pause_listeners();
                        return None;
                    }
                    self.summarize_refused("out of file descriptors");
                    continue;
                }
                Err(_) => return None,
            };
            let open = if control { self.controls.len() } else { self.clients.len() };
            let cap = if control { fds::MAX_CONTROL_CONNECTIONS } else { self.conn_cap };
            if open < cap {
                return Some(accepted);
            }
            drop(accepted);
            self.refused += 1;
            self.summarize_refused(if control {
                "control connections at their cap"
            } else {
                "max-connections reached"
            });
        }
    }

    /// One line for the first refused connection and then one per 1024, not
    /// one per connection (a flood must not flood the log).
    pub(super) fn summarize_refused(&mut self, why: &str) {
        if self.refused == 1 || self.refused.is_multiple_of(1024) {
            warn!("[SUP] refusing connections ({why}): {} refused so far", self.refused);
        }
    }

    /// Takes both listeners out of the epoll set for [`fds::ACCEPT_PAUSE`].
    pub(super) fn pause_listeners(&mut self) {
        if self.paused_until.is_some() {
            return;
        }
        warn!(
            "[SUP] out of file descriptors even with the reserve released; not accepting for {:?}",
            fds::ACCEPT_PAUSE
        );
        let _ = self.reg.epoll.delete(&self.client_listener);
        let _ = self.reg.epoll.delete(&self.control_listener);
        self.paused_until = Some(Instant::now() + fds::ACCEPT_PAUSE);
    }

    /// Puts the listeners back once the pause is over.
    pub(super) fn resume_listeners(&mut self) {
        if self.paused_until.is_some_and(|t| Instant::now() >= t) {
            self.paused_until = None;
            let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            for (l, src) in
                [(&self.client_listener, Source::ClientListener), (&self.control_listener, Source::ControlListener)]
            {
                if let Some((&token, _)) = self.reg.tokens.iter().find(|(_, s)| **s == src) {
                    let _ = self.reg.epoll.add(l, EpollEvent::new(flags, token));
                }
            }
        }
    }
}

/// True if a supervisor answers a status request on the control socket at
/// `path` within a second. Connecting is not enough: after a SIGKILL the
/// dead supervisor's listening socket can outlive it for a moment in a
/// child between fork and exec, which accepts nothing.
pub(super) fn supervisor_answers(path: &Path) -> bool {
    let Ok(addr) = UnixAddr::new(path) else { return false };
    let Ok(fd) = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None) else { return false };
    if connect(fd.as_raw_fd(), &addr).is_err() {
        return false;
    }
    let timeout = nix::sys::time::TimeVal::new(1, 0);
    if nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &timeout).is_err() {
        return true;
    }
    let Ok(frame) = reinc_proto::encode_vec(&ControlRequest::Status) else { return true };
    if send(fd.as_raw_fd(), &frame, MsgFlags::MSG_NOSIGNAL).is_err() {
        return false;
    }
    let mut buf = vec![0u8; MAX_CONTROL_FRAME];
    matches!(recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()), Ok(n) if n > 0)
}

/// Creates a listening `SOCK_SEQPACKET` socket at `path` with `mode`.
pub(super) fn listen_seqpacket(path: &Path, mode: u32) -> Result<UnixListener, DaemonError> {
    let what = || format!("socket {}", path.display());
    let addr = UnixAddr::new(path).map_err(setup(what()))?;
    if path.exists() {
        // Stale: `supervisor_answers` found no live supervisor.
        std::fs::remove_file(path).map_err(setup(what()))?;
    }
    let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
        .map_err(setup(what()))?;
    // Restrictive umask while binding, so the socket never exists with a
    // wider mode than asked; then set the exact mode.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = bind(fd.as_raw_fd(), &addr);
    nix::sys::stat::umask(old);
    bound.map_err(setup(what()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(setup(what()))?;
    listen(&fd, Backlog::new(64).unwrap_or(Backlog::MAXCONN)).map_err(setup(what()))?;
    Ok(UnixListener::from(fd))
}
