//! Who may do what, decided from the kernel's word about each peer
//! (`SO_PEERCRED`, the credentials the peer had at `connect`).
//!
//! - `control.sock` is for the supervisor's own user (and root): its mode is
//!   `0600` already; a connection from anyone else is closed at once anyway,
//!   in case the socket's mode or directory were widened.
//! - `client.sock` may be open to a group (`client-socket-mode`), but each
//!   driver can narrow who may call it: `allow-uids` and `allow-gids`. When
//!   either is set, a call from a peer whose uid is in neither list and whose
//!   primary gid is not in `allow-gids` is answered `NotAllowed` and never
//!   queued. The supervisor's own user and root are always allowed. An empty
//!   pair of lists allows everyone who can open the socket.
//!
//! Only the primary gid is known from `SO_PEERCRED`; supplementary groups
//! are not consulted (documented in the README's Security section).

use crate::privileges::Privileges;
use nix::sys::socket::{getsockopt, sockopt};
use std::os::fd::OwnedFd;

/// A peer's uid, gid and pid at connect time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its pid (for log lines).
    pub pid: i32,
}

/// The credentials of the process at the other end of `fd`.
#[must_use]
pub fn peer_of(fd: &OwnedFd) -> Option<Peer> {
    getsockopt(fd, sockopt::PeerCredentials).ok().map(|c| Peer { uid: c.uid(), gid: c.gid(), pid: c.pid() })
}

/// May `peer` use the control socket?
#[must_use]
pub fn may_control(peer: Option<Peer>) -> bool {
    let me = nix::unistd::geteuid().as_raw();
    peer.is_some_and(|p| p.uid == me || p.uid == 0)
}

/// May `peer` call a driver with these privileges?
#[must_use]
pub fn may_call(peer: Option<Peer>, p: &Privileges) -> bool {
    if p.allow_uids.is_empty() && p.allow_gids.is_empty() {
        return true;
    }
    let Some(peer) = peer else { return false };
    let me = nix::unistd::geteuid().as_raw();
    peer.uid == me || peer.uid == 0 || p.allow_uids.contains(&peer.uid) || p.allow_gids.contains(&peer.gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allow_list_admits_its_uids_and_gids_and_the_supervisors_own_user() {
        let me = nix::unistd::geteuid().as_raw();
        let open = Privileges::default();
        let peer = |uid, gid| Some(Peer { uid, gid, pid: 1 });
        assert!(may_call(peer(4242, 4242), &open), "no list: anyone who can open the socket");
        let p = Privileges { allow_uids: [1001].into(), allow_gids: [2002].into(), ..Privileges::default() };
        assert!(may_call(peer(1001, 9), &p));
        assert!(may_call(peer(9, 2002), &p));
        assert!(may_call(peer(me, me), &p));
        assert!(may_call(peer(0, 0), &p));
        assert!(!may_call(peer(4242, 4242), &p) || me == 4242);
        assert!(!may_call(None, &p));
        assert!(may_control(peer(me, 0)) && may_control(peer(0, 0)));
        assert!(!may_control(peer(4242, 4242)) || me == 4242);
    }
}
