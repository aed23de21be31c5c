//! Descriptors systemd passes at start (`LISTEN_PID`, `LISTEN_FDS`,
//! `LISTEN_FDNAMES`, as `sd_listen_fds(3)` reads them): here, the listening
//! client socket a previous supervisor put in the fd store
//! ([`crate::notify::Notifier::store_fd`]). Taking it back instead of
//! binding a new one means a client that connected while no supervisor ran
//! waits in the socket's backlog and is served, rather than refused.
//!
//! # Taking over a descriptor by number without `unsafe`
//! `OwnedFd::from_raw_fd` is `unsafe`; this crate is `forbid(unsafe_code)`.
//! As in `reinc_runtime::launch`, `pidfd_getfd(pidfd_open(self), N)` asks the
//! kernel for a duplicate of our own descriptor `N` (close-on-exec). The
//! duplicate is checked before use: a listening `SOCK_SEQPACKET` socket
//! bound to the client socket's path, and that path still there. Then every
//! passed number itself is closed, so no driver the supervisor launches
//! inherits one (systemd passes them without close-on-exec).
//!
//! # Designs rejected
//! - Socket activation (a `.socket` unit creating the socket): the
//!   supervisor creates its sockets itself, with its configured mode, after
//!   checking the runtime directory; the store only carries the socket
//!   across restarts.
//! - Trusting the passed descriptor: a wrong unit (or a stale store holding
//!   a socket whose path was removed) would leave clients connecting to
//!   nothing; such a descriptor is dropped and a new socket bound.

use nix::sys::socket::{SockType, UnixAddr, getsockname, getsockopt, sockopt};
use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
const FIRST: RawFd = 3;

/// Passed descriptors that cannot be used, named by variable or number.
#[derive(Debug, thiserror::Error)]
pub enum ListenFdsError {
    /// A `LISTEN_*` variable does not parse.
    #[error("{var}={value:?}: {why}")]
    Variable {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// The descriptor named `name` is not the socket expected.
    #[error("descriptor {fd} ({name:?}) from LISTEN_FDS: {why}")]
    Descriptor {
        /// Its number.
        fd: RawFd,
        /// Its name in `LISTEN_FDNAMES`.
        name: String,
        /// What is wrong.
        why: String,
    },
}

/// The passed descriptors' names and numbers, from the three variables'
/// values; none when they are absent or `LISTEN_PID` is another process's
/// (they were not meant for us). Names missing from `LISTEN_FDNAMES` are
/// `unknown`, as in `sd_listen_fds_with_names`.
///
/// # Errors
/// [`ListenFdsError::Variable`] when a value does not parse, or the names
/// do not match the count.
pub fn parse(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    ours: u32,
) -> Result<Vec<(String, RawFd)>, ListenFdsError> {
    let bad = |var, value: &str, why: &str| ListenFdsError::Variable { var, value: value.into(), why: why.into() };
    let (Some(pid), Some(fds)) = (pid, fds) else { return Ok(Vec::new()) };
    let pid: u32 = pid.trim().parse().map_err(|_| bad("LISTEN_PID", pid, "not a process id"))?;
    if pid != ours {
        return Ok(Vec::new());
    }
    let n: RawFd = fds.trim().parse().map_err(|_| bad("LISTEN_FDS", fds, "not a descriptor count"))?;
    if !(0..=1024).contains(&n) {
        return Err(bad("LISTEN_FDS", fds, "not a descriptor count from 0 to 1024"));
    }
    let names: Vec<String> = match names {
        None => vec!["unknown".into(); n as usize],
        Some(v) => {
            let names: Vec<String> = v.split(':').map(str::to_owned).collect();
            if names.len() != n as usize {
                return Err(bad("LISTEN_FDNAMES", v, &format!("{} names for LISTEN_FDS={n}", names.len())));
            }
            names
        }
    };
    Ok(names.into_iter().zip(FIRST..FIRST + n).collect())
}

/// Takes the listening socket named `name` that systemd passed, checked to
/// be bound to `path`; closes every passed number. `Ok(None)` when none
/// was passed under that name.
///
/// # Errors
/// [`ListenFdsError`] naming the variable or descriptor; the caller binds a
/// new socket.
pub fn take_listener(name: &str, path: &Path) -> Result<Option<OwnedFd>, ListenFdsError> {
    let var = |k| std::env::var(k).ok();
    let passed = parse(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    )?;
    let mut found = None;
    for (n, fd) in &passed {
        if n == name && found.is_none() {
            let err = |why: String| ListenFdsError::Descriptor { fd: *fd, name: n.clone(), why };
            found = Some(dup_own_fd(*fd).map_err(err).and_then(|owned| check(owned, path).map_err(err)));
        }
    }
    for (_, fd) in &passed {
        // Ours: systemd passed them to this process. An error means the
        // number was not open, which leaves nothing to inherit either.
        let _ = nix::unistd::close(*fd);
    }
    found.transpose()
}

/// A close-on-exec duplicate of this process's descriptor `fd`, through
/// the kernel.
fn dup_own_fd(fd: RawFd) -> Result<OwnedFd, String> {
    let me = pidfd_open(getpid(), PidfdFlags::empty()).map_err(|e| format!("pidfd_open(self): {e}"))?;
    pidfd_getfd(&me, fd, PidfdGetfdFlags::empty()).map_err(|e| format!("pidfd_getfd: {e}"))
}

/// `fd` if it is a listening `SOCK_SEQPACKET` socket bound to `path`, and
/// `path` is still a socket.
fn check(fd: OwnedFd, path: &Path) -> Result<OwnedFd, String> {
    match getsockopt(&fd, sockopt::SockType) {
        Ok(SockType::SeqPacket) => {}
        Ok(t) => return Err(format!("a {t:?} socket, not SOCK_SEQPACKET")),
        Err(e) => return Err(format!("not a socket ({e})")),
    }
    if !getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
        return Err("not a listening socket".into());
    }
    let bound: UnixAddr = getsockname(fd.as_raw_fd()).map_err(|e| format!("getsockname: {e}"))?;
    if bound.path() != Some(path) {
        return Err(format!("bound to {:?}, not {}", bound.path(), path.display()));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => Ok(fd),
        Ok(_) => Err(format!("{} is no longer a socket", path.display())),
        Err(e) => Err(format!("{}: {e} (removed since it was stored)", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passed_descriptors_are_ours_only_for_our_pid_and_named_in_order() {
        assert!(parse(None, None, None, 7).unwrap().is_empty());
        assert!(parse(Some("8"), Some("1"), Some("client"), 7).unwrap().is_empty(), "another process's");
        assert_eq!(
            parse(Some("7"), Some("2"), Some("client:other"), 7).unwrap(),
            [("client".to_owned(), 3), ("other".to_owned(), 4)]
        );
        assert_eq!(parse(Some("7"), Some("1"), None, 7).unwrap(), [("unknown".to_owned(), 3)]);
        let e = parse(Some("7"), Some("2"), Some("client"), 7).unwrap_err().to_string();
        assert_eq!(e, "LISTEN_FDNAMES=\"client\": 1 names for LISTEN_FDS=2");
        assert!(parse(Some("x"), Some("1"), None, 7).unwrap_err().to_string().starts_with("LISTEN_PID=\"x\""));
        assert!(parse(Some("7"), Some("-1"), None, 7).unwrap_err().to_string().starts_with("LISTEN_FDS=\"-1\""));
    }

    #[test]
    fn a_passed_socket_is_used_only_if_it_listens_on_the_expected_path() {
        use nix::sys::socket::{AddressFamily, Backlog, SockFlag, bind, listen, socket};
        let dir = std::env::temp_dir().join(format!("reinc-listen-fds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("client.sock");
        let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).unwrap();
        bind(fd.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
        let not_listening = check(fd.try_clone().unwrap(), &path).unwrap_err();
        assert_eq!(not_listening, "not a listening socket");
        listen(&fd, Backlog::new(4).unwrap()).unwrap();
        let dup = dup_own_fd(fd.as_raw_fd()).unwrap();
        assert!(check(dup, &path).is_ok());
        let other = dir.join("other.sock");
        assert!(check(fd.try_clone().unwrap(), &other).unwrap_err().starts_with("bound to"));
        std::fs::remove_file(&path).unwrap();
        assert!(check(fd.try_clone().unwrap(), &path).unwrap_err().contains("removed since it was stored"));
        let stream = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
        assert!(check(stream, &path).unwrap_err().contains("not SOCK_SEQPACKET"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
