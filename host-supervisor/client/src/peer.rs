//! Who is listening: a client only talks to a supervisor it trusts.
//!
//! A socket path proves nothing by itself. Another local user who could
//! create the runtime directory first (the `/tmp/reinc-$UID` fallback), or
//! write into it, can listen there and answer `drvctl status` with their own
//! text, or collect the requests meant for a driver. So after `connect` the
//! client asks the kernel who the listener is (`SO_PEERCRED`, the credentials
//! the listening process had at `listen`, which it cannot forge) and accepts
//! only:
//! - its own effective uid (the usual case: one user runs both);
//! - root (who can take over any socket anyway);
//! - the uid in `$REINC_SUPERVISOR_UID`, when a supervisor deliberately runs
//!   as a service user that other users' clients reach through the group
//!   permission of `client.sock`.
//!
//! # Designs rejected
//! - Checking the directory's owner and mode instead: `/tmp` is
//!   world-writable and sticky, and an explicit `--runtime-dir` may be any
//!   directory; the listener's credentials are the fact that matters, and
//!   the kernel states it directly.

use nix::sys::socket::{getsockopt, sockopt};
use std::os::fd::OwnedFd;
use std::path::Path;

use reinc_control::env::ENV_SUPERVISOR_UID;

/// Checks the listener on the connected socket `fd` (at `path`).
///
/// # Errors
/// A message naming the socket, the listener's uid and the uids accepted.
pub(crate) fn verify(path: &Path, fd: &OwnedFd) -> Result<(), String> {
    let creds = getsockopt(fd, sockopt::PeerCredentials)
        .map_err(|e| format!("cannot read the credentials of the listener on {}: {e}", path.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    let extra = std::env::var(ENV_SUPERVISOR_UID).ok().and_then(|v| v.trim().parse::<u32>().ok());
    let uid = creds.uid();
    if uid == me || uid == 0 || Some(uid) == extra {
        return Ok(());
    }
    let also = extra.map_or(String::new(), |u| format!(", {u} (${ENV_SUPERVISOR_UID})"));
    Err(format!(
        "the process listening on {} (pid {}) runs as uid {uid}, not as uid {me}, root{also}: \
         not talking to it (another user may have taken over the runtime directory; \
         set ${ENV_SUPERVISOR_UID} if the supervisor really runs as uid {uid})",
        path.display(),
        creds.pid()
    ))
}
