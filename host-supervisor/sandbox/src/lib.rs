//! Least privilege for a driver process, applied by the driver itself right
//! after it has taken over what the supervisor handed it and before it reads
//! a single request.
//!
//! # Why this crate exists
//! A driver parses bytes from clients and from a device. If one of them gets
//! it to run code, what it can do next is what the process may do: under a
//! root supervisor that used to be everything (uid 0, every capability, no
//! `no_new_privs`, no seccomp, the supervisor's whole environment, stray
//! inherited descriptors). The supervisor now sets the user, group and
//! environment at launch (std's `Command`, no `unsafe` needed), and this
//! crate does the rest inside the driver, in this order:
//! 1. [`close_other_fds`]: every descriptor but stdio and the ones the
//!    runtime adopted is closed (`close_range`).
//! 2. [`drop_capabilities`]: the bounding set loses every capability not
//!    listed, the ambient set is cleared, and the permitted, effective and
//!    inheritable sets become the listed ones (none by default).
//! 3. `no_new_privs`: no exec can gain privileges again.
//! 4. [`install_seccomp`]: an allow-list of the system calls the runtime's
//!    event loop and the drivers use ([`allowed_syscalls`]), as a search
//!    tree that loads in a fraction of the time of a chain ([`filter`]);
//!    anything else kills the process (`SECCOMP_RET_KILL_PROCESS`), which
//!    the supervisor sees as `SIGSYS` and handles like any crash. `execve`,
//!    `fork`/`clone`, `socket`, `ptrace`, `mount`, `setuid` and friends are
//!    not on it.
//!
//! The supervisor checks the result from outside after `Ready`
//! (`/proc/<pid>/status`: `NoNewPrivs`, `Seccomp`, `CapEff`), so a driver
//! binary that skipped this is not trusted with requests.
//!
//! # `unsafe`
//! This is the lowest layer of process setup, like `reinc-uio` is for
//! registers: closing descriptors by number and `capset` have no safe
//! wrapper in `std` or `nix`. Each block says why it holds.
//!
//! # Designs rejected
//! - Doing all of it in the supervisor between `fork` and `exec`
//!   (`pre_exec`): the seccomp filter would then have to allow `execve` and
//!   everything the dynamic loader does, i.e. the filter would allow `execve`
//!   for the driver's whole life. Installed by the runtime, the list holds
//!   only the calls of the event loop.
//! - libseccomp through FFI: a C dependency for what seccompiler (Firecracker's
//!   pure-Rust BPF compiler) does.
//! - A per-driver syscall list in the config: the calls are the runtime's, not
//!   the driver's; a per-driver list would drift from the code.

use std::os::fd::RawFd;

pub mod filter;

/// Why the sandbox could not be entered. The driver reports it as `Fatal`
/// and exits: running without it is not an option it takes by itself.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `close_range` failed.
    #[error("closing inherited descriptors: {0}")]
    CloseFds(std::io::Error),
    /// A capability name is unknown.
    #[error("unknown capability {0:?} (expected a name like CAP_SYS_RAWIO)")]
    UnknownCapability(String),
    /// A `prctl` or `capset` call failed.
    #[error("{what}: {source}")]
    Capabilities {
        /// The call.
        what: String,
        /// The errno.
        source: std::io::Error,
    },
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("prctl(PR_SET_NO_NEW_PRIVS): {0}")]
    NoNewPrivs(nix::Error),
    /// The seccomp filter could not be built or installed.
    #[error("seccomp: {0}")]
    Seccomp(String),
}

/// The capability names of Linux, by number (`capability.h`).
pub const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The number of a capability name (`CAP_SYS_RAWIO` or `sys_rawio`).
///
/// # Errors
/// [`SandboxError::UnknownCapability`].
pub fn capability(name: &str) -> Result<u32, SandboxError> {
    let up = name.trim().to_ascii_uppercase();
    let full = if up.starts_with("CAP_") { up } else { format!("CAP_{up}") };
    CAPABILITIES
        .iter()
        .position(|c| *c == full)
        .map(|i| i as u32)
        .ok_or_else(|| SandboxError::UnknownCapability(name.to_owned()))
}

/// Closes every descriptor from 3 up except `keep`.
///
/// # Errors
/// [`SandboxError::CloseFds`].
pub fn close_other_fds(keep: &[RawFd]) -> Result<(), SandboxError> {
    let mut keep: Vec<u32> = keep.iter().filter(|&&fd| fd >= 3).map(|&fd| fd as u32).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from = 3u32;
    for k in keep.into_iter().chain(std::iter::once(u32::MAX)) {
        if k > from {
            close_range(from, k - 1)?;
        }
        from = k.saturating_add(1);
    }
    Ok(())
}

fn close_range(first: u32, last: u32) -> Result<(), SandboxError> {
    // SAFETY: close_range(2) only closes descriptors; the caller keeps every
    // descriptor this process still uses (stdio and the adopted ones) out of
    // the range, so no `OwnedFd` or `File` alive in the program refers to a
    // number closed here. The runtime calls this before it opens anything
    // else.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if rc != 0 {
        return Err(SandboxError::CloseFds(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The highest capability number the kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(CAPABILITIES.len() as u32 - 1)
}

fn prctl(what: &str, op: libc::c_int, arg: libc::c_ulong) -> Result<(), SandboxError> {
    // SAFETY: the prctl operations used here (PR_CAPBSET_DROP,
    // PR_CAP_AMBIENT) take integer arguments only; no memory is passed.
    let rc = unsafe { libc::prctl(op, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if rc != 0 {
        return Err(SandboxError::Capabilities { what: what.into(), source: std::io::Error::last_os_error() });
    }
    Ok(())
}

/// Leaves the process exactly the capabilities `keep` (numbers): dropped
/// from the bounding set (when the process may change it), ambient set
/// cleared, permitted = effective = `keep`, inheritable empty.
///
/// # Errors
/// [`SandboxError::Capabilities`] naming the call.
pub fn drop_capabilities(keep: &[u32]) -> Result<(), SandboxError> {
    let have_setpcap = effective_caps().is_ok_and(|eff| eff & (1 << 8) != 0);
    if have_setpcap {
        for cap in 0..=last_cap() {
            if !keep.contains(&cap) {
                prctl(&format!("prctl(PR_CAPBSET_DROP, {})", cap_name(cap)), libc::PR_CAPBSET_DROP, cap.into())?;
            }
        }
    }
    // SAFETY: integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        let source = std::io::Error::last_os_error();
        // Kernels before 4.3 have no ambient set: nothing to clear.
        if source.raw_os_error() != Some(libc::EINVAL) {
            return Err(SandboxError::Capabilities { what: "prctl(PR_CAP_AMBIENT_CLEAR_ALL)".into(), source });
        }
    }
    let mask: u64 = keep.iter().filter(|&&c| c < 64).fold(0, |m, &c| m | (1u64 << c));
    capset(mask, mask, 0)
}

fn cap_name(cap: u32) -> String {
    CAPABILITIES.get(cap as usize).map_or_else(|| format!("capability {cap}"), |s| (*s).to_owned())
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn capset(effective: u64, permitted: u64, inheritable: u64) -> Result<(), SandboxError> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let lo = |v: u64| v as u32;
    let hi = |v: u64| (v >> 32) as u32;
    let data = [
        CapData { effective: lo(effective), permitted: lo(permitted), inheritable: lo(inheritable) },
        CapData { effective: hi(effective), permitted: hi(permitted), inheritable: hi(inheritable) },
    ];
    // SAFETY: capset(2) with a version-3 header reads exactly two
    // `__user_cap_data_struct`s, which `data` is, laid out as the kernel's
    // (`repr(C)`, three u32 each); both live across the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(SandboxError::Capabilities { what: "capset".into(), source: std::io::Error::last_os_error() });
    }
    Ok(())
}

fn effective_caps() -> Result<u64, SandboxError> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget(2) with a version-3 header writes exactly two
    // `__user_cap_data_struct`s into `data`, which has room for them.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(SandboxError::Capabilities { what: "capget".into(), source: std::io::Error::last_os_error() });
    }
    Ok(u64::from(data[0].effective) | (u64::from(data[1].effective) << 32))
}

/// Sets `no_new_privs`: no exec can gain privileges from now on.
///
/// # Errors
/// [`SandboxError::NoNewPrivs`].
pub fn no_new_privs() -> Result<(), SandboxError> {
    nix::sys::prctl::set_no_new_privs().map_err(SandboxError::NoNewPrivs)
}

/// The system calls a driver may make once sandboxed: those of the runtime's
/// event loop (poll, seqpacket recv/send, signalfd, the trace memfd), of
/// file-backed and UIO devices (open, pread/pwrite, mmap of `/dev/uioN`,
/// fdatasync), of memory allocation, of time, of the fault injection
/// (raising a signal on itself, pause) and of exiting, including a panic's
/// message and backtrace.
#[must_use]
pub fn allowed_syscalls() -> Vec<i64> {
    use libc::*;
    // Mutable only where legacy calls are appended (x86_64); elsewhere
    // (aarch64) the list is complete as written.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut v = vec![
        SYS_read,
        SYS_write,
        SYS_readv,
        SYS_writev,
        SYS_pread64,
        SYS_pwrite64,
        SYS_preadv,
        SYS_pwritev,
        SYS_lseek,
        SYS_openat,
        SYS_close,
        SYS_fstat,
        SYS_newfstatat,
        SYS_statx,
        SYS_fcntl,
        SYS_ftruncate,
        SYS_fallocate,
        SYS_fsync,
        SYS_fdatasync,
        SYS_getdents64,
        SYS_getcwd,
        SYS_readlinkat,
        SYS_faccessat,
        SYS_dup,
        SYS_dup3,
        SYS_ppoll,
        SYS_pselect6,
        SYS_epoll_pwait,
        SYS_recvfrom,
        SYS_recvmsg,
        SYS_sendto,
        SYS_sendmsg,
        SYS_getsockopt,
        SYS_shutdown,
        SYS_signalfd4,
        SYS_rt_sigaction,
        SYS_rt_sigprocmask,
        SYS_rt_sigreturn,
        SYS_sigaltstack,
        SYS_mmap,
        SYS_munmap,
        SYS_mremap,
        SYS_mprotect,
        SYS_madvise,
        SYS_brk,
        SYS_clock_gettime,
        SYS_clock_nanosleep,
        SYS_nanosleep,
        SYS_gettimeofday,
        SYS_getrandom,
        SYS_futex,
        SYS_sched_yield,
        SYS_sched_getaffinity,
        SYS_getpid,
        SYS_gettid,
        SYS_getppid,
        SYS_getuid,
        SYS_geteuid,
        SYS_getgid,
        SYS_getegid,
        SYS_prlimit64,
        SYS_tgkill,
        // musl's raise() signals its own thread with tkill, not tgkill: the
        // static guest and Raspberry Pi binaries are musl.
        SYS_tkill,
        SYS_kill,
        SYS_restart_syscall,
        SYS_exit,
        SYS_exit_group,
        SYS_memfd_create,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([SYS_poll, SYS_select, SYS_open, SYS_stat, SYS_lstat, SYS_access, SYS_readlink, SYS_dup2, SYS_pause]);
    v
}

/// Installs the allow-list of [`allowed_syscalls`] (sets `no_new_privs`
/// too, which the kernel requires for an unprivileged filter).
///
/// # Errors
/// [`SandboxError::Seccomp`].
pub fn install_seccomp() -> Result<(), SandboxError> {
    let prog = filter::allow_list(std::env::consts::ARCH, &allowed_syscalls()).map_err(SandboxError::Seccomp)?;
    seccompiler::apply_filter(&prog).map_err(|e| SandboxError::Seccomp(e.to_string()))
}

/// What to apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Descriptors to keep besides stdio.
    pub keep_fds: Vec<RawFd>,
    /// Capabilities to keep (numbers).
    pub capabilities: Vec<u32>,
    /// Install the seccomp allow-list.
    pub seccomp: bool,
}

/// Applies `policy` in the documented order.
///
/// # Errors
/// The first step that failed.
pub fn enter(policy: &Policy) -> Result<(), SandboxError> {
    close_other_fds(&policy.keep_fds)?;
    drop_capabilities(&policy.capabilities)?;
    no_new_privs()?;
    if policy.seccomp {
        install_seccomp()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_parse_with_or_without_the_prefix() {
        assert_eq!(capability("CAP_SYS_RAWIO").unwrap(), 17);
        assert_eq!(capability("sys_rawio").unwrap(), 17);
        assert_eq!(capability("cap_net_admin").unwrap(), 12);
        assert!(matches!(capability("CAP_FLY"), Err(SandboxError::UnknownCapability(_))));
    }

    #[test]
    fn the_allow_list_leaves_out_what_a_compromised_driver_would_want() {
        let allowed = allowed_syscalls();
        for denied in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_setuid,
            libc::SYS_unlinkat,
        ] {
            assert!(!allowed.contains(&denied), "syscall {denied} must not be allowed");
        }
        // And the filter builds for this architecture.
        filter::allow_list(std::env::consts::ARCH, &allowed).unwrap();
    }
}
