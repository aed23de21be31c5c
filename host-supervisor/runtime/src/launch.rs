//! The launch contract (CONTRACTS.md §1): what a driver process inherits from
//! the supervisor, read and checked once at startup.
//!
//! # Adopting an inherited descriptor without `unsafe`
//! The supervisor passes the IPC socket (and the trace memfd) by *number* in
//! the environment. `OwnedFd::from_raw_fd` is `unsafe` because the compiler
//! cannot know that nothing else owns that number; this crate is
//! `forbid(unsafe_code)`, so it uses routes where the kernel or `std` vouches
//! for the descriptor instead:
//! - IPC fd **0**: the supervisor hands the socket over as the child's stdin
//!   (`Command::stdin(Stdio::from(owned_fd))`, which also needs no
//!   `CLOEXEC` juggling in the supervisor). `std` owns stdin for the life of
//!   the process, so `stdin().as_fd().try_clone_to_owned()` is a safe `dup`.
//! - any other IPC fd number: `pidfd_getfd(pidfd_open(self), N)` asks the
//!   kernel for a duplicate of our own descriptor `N` (Linux ≥ 5.6; a seccomp
//!   policy may forbid it, which is reported as [`LaunchError::Adopt`]). The
//!   original number stays open and unowned: one extra reference to the same
//!   socket end, harmless because nothing reads it and drivers do not exec.
//! - the trace memfd: a memfd is a file, so `/proc/self/fd/N` reopens it
//!   (plain `std::fs`), with `pidfd_getfd` as the fallback when `/proc` is not
//!   mounted.
//!
//! `/proc/self/fd/N` cannot reopen a socket (`ENXIO`), and `nix::unistd::dup`
//! needs an `AsFd`, i.e. a `BorrowedFd`, whose constructor is `unsafe` too.
//! Every adopted descriptor is checked for the expected type before use.

use nix::sys::socket::{SockType, getsockopt, sockopt};
use reinc_proto::FaultPlan;
use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::PathBuf;

// The launch contract's environment names, defined once for both sides in
// `reinc_control::env`.
pub(crate) use reinc_control::env::{ENV_DRIVER_NAME, ENV_EXEC_LOG, ENV_FAULT, ENV_IPC_FD, ENV_SUPERVISOR_PID, ENV_TRACE_FD};

/// A launch contract violation. The driver cannot talk to its supervisor, so
/// it logs this and exits with status 2.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A required variable is missing.
    #[error("{var} is not set: driver {name} must be launched by the reinc supervisor")]
    Missing {
        /// The variable.
        var: &'static str,
        /// The driver (or binary) name.
        name: String,
    },
    /// A variable does not parse.
    #[error("{var}={value:?} is invalid for driver {name}: {reason}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// The driver name.
        name: String,
        /// Why.
        reason: String,
    },
    /// `prctl(PR_SET_PDEATHSIG)` failed.
    #[error("driver {name}: prctl(PR_SET_PDEATHSIG, SIGKILL) failed: {source}")]
    DeathSignal {
        /// The driver name.
        name: String,
        /// The errno.
        source: nix::Error,
    },
    /// The parent is not the supervisor (it died before we armed PDEATHSIG).
    #[error("driver {name}: parent is pid {parent}, not supervisor pid {supervisor}: the supervisor is gone")]
    Orphan {
        /// The driver name.
        name: String,
        /// `getppid()`.
        parent: i32,
        /// The supervisor pid from the environment.
        supervisor: i32,
    },
    /// A descriptor could not be taken over.
    #[error("driver {name}: cannot adopt {var}={fd}: {reason}")]
    Adopt {
        /// The driver name.
        name: String,
        /// The variable.
        var: &'static str,
        /// The descriptor number.
        fd: RawFd,
        /// Why.
        reason: String,
    },
}

/// Everything the supervisor handed over, validated.
#[derive(Debug)]
pub struct Launch {
    /// The driver's configured name.
    pub name: String,
    /// The IPC channel (a `SOCK_SEQPACKET` socket).
    pub ipc: OwnedFd,
    /// The trace memfd, if any.
    pub trace: Option<std::fs::File>,
    /// A fault plan armed in this instance, if any.
    pub fault: Option<FaultPlan>,
    /// The exec log path, if any.
    pub exec_log: Option<PathBuf>,
}

impl Launch {
    /// Arms `PR_SET_PDEATHSIG(SIGKILL)` first, then checks that the parent is
    /// still the supervisor, then reads and adopts everything else.
    ///
    /// # Errors
    /// [`LaunchError`] naming the variable and the driver.
    pub fn from_env() -> Result<Self, LaunchError> {
        let argv0 = std::env::args().next().unwrap_or_else(|| "driver".into());
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
            .map_err(|source| LaunchError::DeathSignal { name: argv0.clone(), source })?;
        let supervisor: i32 = parse_var(ENV_SUPERVISOR_PID, &argv0)?;
        let parent = nix::unistd::getppid().as_raw();
        if parent != supervisor {
            return Err(LaunchError::Orphan { name: argv0, parent, supervisor });
        }
        let name = optional_var(ENV_DRIVER_NAME).ok_or(LaunchError::Missing { var: ENV_DRIVER_NAME, name: argv0 })?;
        let ipc_fd: RawFd = parse_var(ENV_IPC_FD, &name)?;
        let ipc = adopt_socket(ipc_fd).map_err(|reason| LaunchError::Adopt {
            name: name.clone(),
            var: ENV_IPC_FD,
            fd: ipc_fd,
            reason,
        })?;
        let trace = match optional_var(ENV_TRACE_FD) {
            None => None,
            Some(_) => {
                let fd: RawFd = parse_var(ENV_TRACE_FD, &name)?;
                Some(adopt_file(fd).map_err(|reason| LaunchError::Adopt {
                    name: name.clone(),
                    var: ENV_TRACE_FD,
                    fd,
                    reason,
                })?)
            }
        };
        let fault = match optional_var(ENV_FAULT) {
            None => None,
            Some(text) => Some(text.parse::<FaultPlan>().map_err(|e| LaunchError::Invalid {
                var: ENV_FAULT,
                value: text.clone(),
                name: name.clone(),
                reason: e.to_string(),
            })?),
        };
        let exec_log = optional_var(ENV_EXEC_LOG).map(PathBuf::from);
        Ok(Self { name, ipc, trace, fault, exec_log })
    }
}

fn optional_var(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

fn parse_var<T: std::str::FromStr>(var: &'static str, name: &str) -> Result<T, LaunchError>
where
    T::Err: std::fmt::Display,
{
    let value = std::env::var(var).map_err(|_| LaunchError::Missing { var, name: name.to_owned() })?;
    value.trim().parse().map_err(|e: T::Err| LaunchError::Invalid {
        var,
        value: value.clone(),
        name: name.to_owned(),
        reason: e.to_string(),
    })
}

/// Duplicates this process's descriptor `fd` through the kernel.
fn dup_own_fd(fd: RawFd) -> Result<OwnedFd, String> {
    if fd < 0 {
        return Err("negative descriptor number".into());
    }
    let me = pidfd_open(getpid(), PidfdFlags::empty()).map_err(|e| format!("pidfd_open(self): {e}"))?;
    pidfd_getfd(&me, fd, PidfdGetfdFlags::empty()).map_err(|e| {
        format!("pidfd_getfd: {e} (descriptor not open, or forbidden by seccomp; pass the socket as fd 0 instead)")
    })
}

/// Takes over the IPC socket `fd` and checks it is a `SOCK_SEQPACKET` socket.
pub(crate) fn adopt_socket(fd: RawFd) -> Result<OwnedFd, String> {
    let owned = if fd == 0 {
        std::io::stdin().as_fd().try_clone_to_owned().map_err(|e| format!("dup(stdin): {e}"))?
    } else {
        dup_own_fd(fd)?
    };
    match getsockopt(&owned, sockopt::SockType) {
        Ok(SockType::SeqPacket) => Ok(owned),
        Ok(other) => Err(format!("socket type is {other:?}, SOCK_SEQPACKET expected")),
        Err(e) => Err(format!("not a socket ({e})")),
    }
}

/// Takes over the trace memfd `fd`.
pub(crate) fn adopt_file(fd: RawFd) -> Result<std::fs::File, String> {
    let file = match std::fs::OpenOptions::new().read(true).write(true).open(format!("/proc/self/fd/{fd}")) {
        Ok(f) => f,
        Err(proc_err) => {
            std::fs::File::from(dup_own_fd(fd).map_err(|e| format!("/proc/self/fd/{fd}: {proc_err}; {e}"))?)
        }
    };
    let meta = file.metadata().map_err(|e| format!("fstat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file or memfd".into());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, socketpair};
    use std::os::fd::AsRawFd;

    #[test]
    fn adopting_a_seqpacket_socket_by_number_yields_a_new_descriptor() {
        let (a, _b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap();
        let adopted = adopt_socket(a.as_raw_fd()).expect("pidfd_getfd on our own fd");
        assert_ne!(adopted.as_raw_fd(), a.as_raw_fd());
        assert_eq!(getsockopt(&adopted, sockopt::SockType).unwrap(), SockType::SeqPacket);
    }

    #[test]
    fn adopting_a_stream_socket_is_refused_with_the_reason() {
        let (a, _b) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC).unwrap();
        let err = adopt_socket(a.as_raw_fd()).unwrap_err();
        assert!(err.contains("SOCK_SEQPACKET expected"), "{err}");
    }

    #[test]
    fn adopting_a_closed_or_file_descriptor_as_socket_fails_clearly() {
        assert!(adopt_socket(-3).unwrap_err().contains("negative"));
        let f = tempfile::tempfile().unwrap();
        assert!(adopt_socket(f.as_raw_fd()).unwrap_err().contains("not a socket"));
        let n = f.as_raw_fd();
        drop(f);
        assert!(adopt_socket(n).is_err());
    }

    #[test]
    fn adopting_a_file_reopens_it_through_proc() {
        use std::io::{Read, Seek, Write};
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"trace").unwrap();
        let mut again = adopt_file(f.as_raw_fd()).unwrap();
        let mut s = String::new();
        again.rewind().unwrap();
        again.read_to_string(&mut s).unwrap();
        assert_eq!(s, "trace");
    }
}
