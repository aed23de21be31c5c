//! The runtime directory and the sockets the supervisor listens on in it.
//!
//! The supervisor binds [`CLIENT_SOCKET`] (driver calls, mode
//! `client-socket-mode`) and [`CONTROL_SOCKET`] (`drvctl`, owner only) in
//! its runtime directory; clients find them from the same directory with the
//! same rule.

use crate::env::ENV_RUNTIME_DIR;
use std::path::{Path, PathBuf};

/// File name of the socket clients call drivers through.
pub const CLIENT_SOCKET: &str = "client.sock";
/// File name of the operator's control socket.
pub const CONTROL_SOCKET: &str = "control.sock";

/// The supervisor's client socket in `runtime_dir`.
#[must_use]
pub fn client_socket(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join(CLIENT_SOCKET)
}

/// The supervisor's control socket in `runtime_dir`.
#[must_use]
pub fn control_socket(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join(CONTROL_SOCKET)
}

/// The runtime directory when none is given: `$REINC_RUNTIME_DIR`, else
/// `/run/reinc` for root, else `$XDG_RUNTIME_DIR/reinc`, else
/// `/tmp/reinc-$UID`. The supervisor and its clients use the same rule.
#[must_use]
pub fn default_runtime_dir() -> PathBuf {
    runtime_dir_from(
        std::env::var_os(ENV_RUNTIME_DIR).map(PathBuf::from),
        nix::unistd::getuid().as_raw(),
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
    )
}

/// [`default_runtime_dir`]'s rule over explicit inputs.
fn runtime_dir_from(explicit: Option<PathBuf>, uid: u32, xdg: Option<PathBuf>) -> PathBuf {
    if let Some(d) = explicit {
        return d;
    }
    if uid == 0 {
        return "/run/reinc".into();
    }
    if let Some(d) = xdg {
        return d.join("reinc");
    }
    PathBuf::from(format!("/tmp/reinc-{uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_directory_rule_prefers_the_variable_then_root_then_xdg() {
        let xdg = Some(PathBuf::from("/run/user/1000"));
        assert_eq!(runtime_dir_from(Some("/srv/r".into()), 0, xdg.clone()), PathBuf::from("/srv/r"));
        assert_eq!(runtime_dir_from(None, 0, xdg.clone()), PathBuf::from("/run/reinc"));
        assert_eq!(runtime_dir_from(None, 1000, xdg), PathBuf::from("/run/user/1000/reinc"));
        assert_eq!(runtime_dir_from(None, 1000, None), PathBuf::from("/tmp/reinc-1000"));
    }

    #[test]
    fn sockets_live_in_the_runtime_directory() {
        let dir = Path::new("/run/reinc");
        assert_eq!(client_socket(dir), PathBuf::from("/run/reinc/client.sock"));
        assert_eq!(control_socket(dir), PathBuf::from("/run/reinc/control.sock"));
    }
}
