//! The one rule for files the supervisor reads back as its own state
//! (checkpoints, the journal): a regular file, owned by the supervisor's
//! effective uid, that neither group nor others can write. Anything else
//! may have been planted or swapped by another local user.
//!
//! Each reader maps [`Untrusted`] into its own typed error, so the message
//! names the file and says which kind of state it is. A check written out
//! in each reader was rejected: the journal's was a copy of the
//! checkpoint's, and two copies of a security rule can drift apart.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// Why a file is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untrusted {
    /// Not a regular file; `kind` says what it is ("a FIFO", ...).
    NotRegular { kind: &'static str },
    /// Owned by `owner`, not by `me`.
    ForeignOwner { owner: u32, me: u32 },
    /// Group- or other-writable (`mode`, permission bits).
    Writable { mode: u32 },
}

/// Checks `meta` (from `fstat` of the opened file) against the rule.
///
/// # Errors
/// The first rule `meta` breaks.
pub fn check(meta: &std::fs::Metadata) -> Result<(), Untrusted> {
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(Untrusted::NotRegular { kind });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Untrusted::ForeignOwner { owner: meta.uid(), me });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Untrusted::Writable { mode });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_a_private_regular_file_of_ours_passes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(check(&std::fs::metadata(&p).unwrap()), Ok(()));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o602)).unwrap();
        assert_eq!(check(&std::fs::metadata(&p).unwrap()), Err(Untrusted::Writable { mode: 0o602 }));
        assert_eq!(check(&std::fs::metadata(dir.path()).unwrap()), Err(Untrusted::NotRegular { kind: "a directory" }));
    }
}
