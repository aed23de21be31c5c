//! The runtime and state directories: created private, and refused when
//! another local user could have put something in them.
//!
//! # Why
//! `client.sock`, `control.sock` and the checkpoints are trusted because of
//! where they are. A directory that another user owns, or that group or
//! others can write, lets that user swap the sockets (so `drvctl` talks to
//! them), plant a symlink where a temporary file will be written, or forge a
//! checkpoint. So each directory must be a real directory (not a symlink),
//! owned by the supervisor's effective user, and writable by nobody else.
//!
//! # Modes
//! A directory the supervisor creates gets `0700`. The runtime directory also
//! gets the search bit (`x`, never `r` or `w`) for the classes that
//! `client-socket-mode` opens `client.sock` to, because connecting to a socket
//! needs search permission on its directory: with the default `0660` the
//! runtime directory is `0710`. An existing directory is not chmod'ed: it is
//! accepted if it is ours and not group/other-writable, and refused otherwise.
//!
//! # Designs rejected
//! - `chmod`/`chown` of an existing directory into shape: a directory another
//!   user prepared may already hold their files or a hard link; taking it over
//!   silently hides the attack. Refusing names it, and the operator decides.
//! - Checking only at creation: the fallback `/tmp/reinc-$UID` is usually
//!   created by someone else first in the attack, so the check that matters is
//!   the one of an existing directory.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A directory that must not be trusted.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// The path is a symbolic link.
    #[error("{what} {path} is a symbolic link; refusing to follow it (use the real path)")]
    Symlink {
        /// "runtime directory" or "state directory".
        what: &'static str,
        /// The directory.
        path: PathBuf,
    },
    /// The path exists but is not a directory.
    #[error("{what} {path} exists and is not a directory")]
    NotADirectory {
        /// Which directory.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// Another user owns it.
    #[error("{what} {path} is owned by uid {owner}, not by the supervisor's uid {me}; refusing to use it")]
    ForeignOwner {
        /// Which directory.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        me: u32,
    },
    /// Group or others may write it.
    #[error("{what} {path} has mode {mode:04o}: group or others can write it; refusing to use it (chmod go-w)")]
    Writable {
        /// Which directory.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A system call failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// Which directory.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The runtime directory's mode when the supervisor creates it: `0700`, plus
/// search for the classes that may write `client.sock`.
#[must_use]
pub fn runtime_dir_mode(client_socket_mode: u32) -> u32 {
    let mut mode = 0o700;
    if client_socket_mode & 0o020 != 0 {
        mode |= 0o010;
    }
    if client_socket_mode & 0o002 != 0 {
        mode |= 0o001;
    }
    mode
}

/// Makes sure `path` is a private directory of ours: creates it (and its
/// missing parents) with `mode` if it does not exist, then checks it is a real
/// directory, owned by the effective uid, not writable by group or others.
///
/// # Errors
/// [`DirError`] naming the directory and what is wrong with it.
pub fn ensure_private_dir(what: &'static str, path: &Path, mode: u32) -> Result<(), DirError> {
    let io = |source| DirError::Io { what, path: path.to_path_buf(), source };
    match std::fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            // mkdir applies the umask; the exact mode is set right after,
            // before anything is put in it. EEXIST (someone was faster) falls
            // through to the checks below.
            match std::fs::DirBuilder::new().mode(mode).create(path) {
                Ok(()) => {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        Err(e) => return Err(io(e)),
    }
    check_private_dir(what, path)
}

/// Checks that `path` is a real directory, owned by the effective uid, not
/// writable by group or others.
///
/// # Errors
/// [`DirError`] naming the directory.
pub fn check_private_dir(what: &'static str, path: &Path) -> Result<(), DirError> {
    let meta =
        std::fs::symlink_metadata(path).map_err(|source| DirError::Io { what, path: path.to_path_buf(), source })?;
    let path = path.to_path_buf();
    if meta.file_type().is_symlink() {
        return Err(DirError::Symlink { what, path });
    }
    if !meta.is_dir() {
        return Err(DirError::NotADirectory { what, path });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(DirError::ForeignOwner { what, path, owner: meta.uid(), me });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(DirError::Writable { what, path, mode });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("reinc-dirs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_new_directory_is_created_with_exactly_the_mode_asked() {
        let d = scratch("new");
        let p = d.join("a/b/run");
        ensure_private_dir("runtime directory", &p, 0o710).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o710);
        assert_eq!(m.uid(), nix::unistd::geteuid().as_raw());
        // Idempotent.
        ensure_private_dir("runtime directory", &p, 0o710).unwrap();
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_group_or_world_writable_directory_is_refused_by_name() {
        let d = scratch("wide");
        let p = d.join("run");
        std::fs::create_dir(&p).unwrap();
        for mode in [0o777, 0o770, 0o1777, 0o702] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = ensure_private_dir("runtime directory", &p, 0o700).unwrap_err();
            assert!(matches!(e, DirError::Writable { .. }), "{mode:o}: {e}");
            assert!(e.to_string().contains(&p.display().to_string()), "{e}");
        }
        // Not writable by others: accepted as it is, not chmod'ed.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir("runtime directory", &p, 0o700).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o755);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_symlinked_directory_is_refused_even_if_the_target_is_fine() {
        let d = scratch("link");
        std::fs::create_dir(d.join("real")).unwrap();
        std::fs::set_permissions(d.join("real"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("run")).unwrap();
        let e = ensure_private_dir("state directory", &d.join("run"), 0o700).unwrap_err();
        assert!(matches!(e, DirError::Symlink { .. }), "{e}");
        assert!(e.to_string().starts_with(&format!("state directory {} is a symbolic link", d.join("run").display())));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_file_in_place_of_the_directory_is_refused() {
        let d = scratch("file");
        std::fs::write(d.join("run"), b"").unwrap();
        let e = ensure_private_dir("runtime directory", &d.join("run"), 0o700).unwrap_err();
        assert!(matches!(e, DirError::NotADirectory { .. }), "{e}");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_directory_of_another_user_is_refused_naming_the_owner() {
        // Foreign ownership is simulated with chown to an unused uid; that
        // needs root (or CAP_CHOWN), which the process tests have too.
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chown to another uid needs root");
            return;
        }
        let d = scratch("foreign");
        let p = d.join("run");
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&p, Some(54_321), Some(54_321)).unwrap();
        let e = ensure_private_dir("runtime directory", &p, 0o700).unwrap_err();
        assert!(matches!(e, DirError::ForeignOwner { owner: 54_321, .. }), "{e}");
        assert!(e.to_string().contains("owned by uid 54321"), "{e}");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn the_runtime_directory_is_searchable_only_by_who_may_use_the_client_socket() {
        assert_eq!(runtime_dir_mode(0o600), 0o700);
        assert_eq!(runtime_dir_mode(0o660), 0o710);
        assert_eq!(runtime_dir_mode(0o640), 0o700);
        assert_eq!(runtime_dir_mode(0o666), 0o711);
    }
}
