//! systemd's notification protocol (`sd_notify`), spoken directly: the
//! supervisor's own supervisor is systemd (`Type=notify`, `Restart=always`,
//! `WatchdogSec=`; see `host-supervisor/supervisor/reinc-supervisor.service`).
//!
//! # What is sent
//! - `READY=1` once every driver has settled after start (running, or given
//!   up on), with a `STATUS=` line;
//! - `STATUS=` whenever the number of running drivers changes;
//! - `WATCHDOG=1` from the event loop every half `WATCHDOG_USEC`, so a
//!   wedged event loop (not only a dead process) gets the service restarted;
//! - `STOPPING=1` when a shutdown begins;
//! - `FDSTORE=1` + `FDNAME=client` with the listening client socket
//!   attached, when systemd offers an fd store (`$FDSTORE`, set from the
//!   unit's `FileDescriptorStoreMax=`): systemd keeps the socket open while
//!   the supervisor restarts and hands it back in `LISTEN_FDS` (see
//!   `daemon/listen_fds.rs`), so clients that connect in between wait in its
//!   backlog instead of being refused.
//!
//! # The protocol
//! `NOTIFY_SOCKET` names a Unix datagram socket: a path, or `@name` for the
//! abstract namespace (the `@` stands for the leading NUL byte). Each
//! message is one datagram of `KEY=VALUE` lines. `WATCHDOG_PID`, when set,
//! must be our pid or the watchdog is someone else's. Without
//! `NOTIFY_SOCKET` every call does nothing, so the daemon runs the same
//! under systemd, under a test harness, or by hand.
//!
//! # Designs rejected
//! - The `sd-notify` or `libsystemd` crates: the protocol is one `sendto`,
//!   and a dependency for it would still need the same abstract-socket and
//!   watchdog-pid handling audited.
//! - A watchdog thread: it would keep pinging while the event loop is stuck,
//!   which defeats the watchdog.

use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, sendmsg, sendto, socket,
};
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// Where notifications go, and the watchdog period.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(OwnedFd, UnixAddr, String)>,
    watchdog: Option<Duration>,
    next_ping: Option<Instant>,
}

/// `NOTIFY_SOCKET` does not name a usable socket.
#[derive(Debug, thiserror::Error)]
#[error("NOTIFY_SOCKET={value:?}: {why}")]
pub struct NotifyError {
    /// The variable's value.
    pub value: String,
    /// What is wrong.
    pub why: String,
}

impl Notifier {
    /// From the environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`).
    ///
    /// # Errors
    /// [`NotifyError`] when `NOTIFY_SOCKET` is set but unusable.
    pub fn from_env() -> Result<Self, NotifyError> {
        let socket = std::env::var("NOTIFY_SOCKET").ok().filter(|s| !s.is_empty());
        let usec = std::env::var("WATCHDOG_USEC").ok().and_then(|v| v.parse::<u64>().ok()).filter(|&u| u > 0);
        let ours = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        Self::new(socket.as_deref(), usec.filter(|_| ours).map(Duration::from_micros))
    }

    /// Notifications to `socket` (a path, or `@name`), pinging the watchdog
    /// every half `watchdog`.
    ///
    /// # Errors
    /// [`NotifyError`] when the socket name is unusable.
    pub fn new(path: Option<&str>, watchdog: Option<Duration>) -> Result<Self, NotifyError> {
        let target = match path {
            None => None,
            Some(s) => {
                let bad = |why: String| NotifyError { value: s.into(), why };
                let addr = match s.strip_prefix('@') {
                    Some(name) => UnixAddr::new_abstract(name.as_bytes()),
                    None if s.starts_with('/') => UnixAddr::new(s),
                    None => return Err(bad("must be an absolute path or start with @".into())),
                }
                .map_err(|e| bad(e.to_string()))?;
                let fd = socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
                    .map_err(|e| bad(format!("socket: {e}")))?;
                Some((fd, addr, s.to_owned()))
            }
        };
        let watchdog = watchdog.filter(|_| target.is_some());
        Ok(Self { target, watchdog, next_ping: watchdog.map(|_| Instant::now()) })
    }

    /// True when systemd listens.
    #[must_use]
    pub fn active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one message (`KEY=VALUE` lines). A failure is logged, never
    /// fatal: systemd restarts a service whose watchdog it misses anyway.
    pub fn send(&self, msg: &str) {
        let Some((fd, addr, name)) = &self.target else { return };
        if let Err(e) = sendto(fd.as_raw_fd(), msg.as_bytes(), addr, MsgFlags::MSG_NOSIGNAL) {
            tracing::debug!("sd_notify to {name}: {e}");
        }
    }

    /// True when systemd offers an fd store: `$FDSTORE` (the unit's
    /// `FileDescriptorStoreMax=`) is at least 1 and systemd listens.
    #[must_use]
    pub fn fd_store(&self) -> bool {
        self.active() && std::env::var("FDSTORE").ok().and_then(|v| v.parse::<u32>().ok()).is_some_and(|n| n >= 1)
    }

    /// Hands `fd` to systemd's fd store under `name` (`FDSTORE=1`,
    /// `FDNAME=`). Returns whether the message went out; a failure is
    /// logged, never fatal: without the store a restart only refuses
    /// connections for a moment, as it would have anyway.
    pub fn store_fd(&self, name: &str, fd: BorrowedFd<'_>) -> bool {
        let Some((sock, addr, path)) = &self.target else { return false };
        let msg = format!("FDSTORE=1\nFDNAME={name}");
        let fds = [fd.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        match sendmsg(sock.as_raw_fd(), &[IoSlice::new(msg.as_bytes())], &cmsg, MsgFlags::MSG_NOSIGNAL, Some(addr)) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!("[SUP] cannot hand the {name} socket to systemd's fd store at {path}: {e}");
                false
            }
        }
    }

    /// When the watchdog must next be pinged (the event loop wakes for it).
    #[must_use]
    pub fn next_ping(&self) -> Option<Instant> {
        self.next_ping
    }

    /// Pings the watchdog if it is due.
    pub fn ping_if_due(&mut self, now: Instant) {
        if let (Some(period), Some(at)) = (self.watchdog, self.next_ping)
            && now >= at
        {
            self.send("WATCHDOG=1");
            self.next_ping = Some(now + period / 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn recv(s: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = s.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn notifications_reach_a_path_socket_and_an_abstract_one() {
        let path = std::env::temp_dir().join(format!("reinc-notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str(), None).unwrap();
        n.send("READY=1\nSTATUS=ok");
        assert_eq!(recv(&listener), "READY=1\nSTATUS=ok");
        let _ = std::fs::remove_file(&path);

        use std::os::linux::net::SocketAddrExt;
        let name = format!("reinc-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abs = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::new(Some(&format!("@{name}")), None).unwrap();
        n.send("STOPPING=1");
        assert_eq!(recv(&abs), "STOPPING=1");
    }

    #[test]
    fn the_watchdog_is_pinged_every_half_period_and_only_with_a_socket() {
        let path = std::env::temp_dir().join(format!("reinc-notify-wd-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let mut n = Notifier::new(path.to_str(), Some(Duration::from_millis(200))).unwrap();
        let t0 = n.next_ping().unwrap();
        n.ping_if_due(t0);
        assert_eq!(recv(&listener), "WATCHDOG=1");
        assert_eq!(n.next_ping(), Some(t0 + Duration::from_millis(100)));
        n.ping_if_due(t0 + Duration::from_millis(50));
        listener.set_nonblocking(true).unwrap();
        assert!(listener.recv(&mut [0u8; 16]).is_err(), "pinged before it was due");
        let _ = std::fs::remove_file(&path);
        let quiet = Notifier::new(None, Some(Duration::from_secs(1))).unwrap();
        assert!(!quiet.active() && quiet.next_ping().is_none());
        assert!(Notifier::new(Some("relative.sock"), None).unwrap_err().to_string().contains("absolute path"));
    }
}
