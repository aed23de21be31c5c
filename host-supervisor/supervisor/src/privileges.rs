//! What a driver may do and who may call it: the per-driver least-privilege
//! keys of `[[driver]]`.
//!
//! ```toml
//! user = "reinc-storage"      # or a uid; default: the supervisor's user
//! group = "reinc-storage"     # or a gid; default: the user's primary group
//! capabilities = []           # kept across the sandbox; none by default
//! sandbox = true              # close fds, drop capabilities, no_new_privs (+ seccomp)
//! seccomp = true              # the runtime's syscall allow-list (reinc-sandbox)
//! env = ["RUST_LOG", "JOURNAL_STREAM"] # variables passed on; the rest is cleared
//! allow-uids = []             # who may call it through client.sock (empty: anyone
//! allow-gids = []             #   who can open the socket); see crate::daemon::authz
//! ```
//!
//! The user and group are set by the supervisor when it launches the driver
//! (std's `Command::uid`/`gid`, which also clears supplementary groups); the
//! rest is applied by the driver's runtime before it reads a request
//! (`reinc_runtime::sandbox`, `reinc-sandbox`), and checked by the supervisor
//! from `/proc/<pid>/status` when the driver says `Ready`.

use std::collections::BTreeSet;

/// Variables passed on to a driver by default (besides the `REINC_*` ones
/// the supervisor sets). `RUST_BACKTRACE` is not among them: symbolizing a
/// panic's backtrace in a debug build takes longer than three heartbeats of
/// a fast config, so the panic would be reported as a hang; the panic
/// message and the trace ring say where it happened. Add it with `env`.
/// `JOURNAL_STREAM` tells a driver whose stderr is the journal to leave out
/// its own timestamps (`reinc_runtime::stderr_is_journal`).
pub const DEFAULT_ENV: [&str; 2] = ["RUST_LOG", "JOURNAL_STREAM"];

/// The least-privilege settings of one driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privileges {
    /// Run as this uid (`user`).
    pub uid: Option<u32>,
    /// Run as this gid (`group`, or the user's primary group).
    pub gid: Option<u32>,
    /// Capability names kept (`capabilities`), validated.
    pub capabilities: Vec<String>,
    /// Enter the sandbox at all (`sandbox`).
    pub sandbox: bool,
    /// Install the seccomp allow-list (`seccomp`).
    pub seccomp: bool,
    /// Environment variables passed on (`env`).
    pub env: Vec<String>,
    /// Client uids allowed to call the driver (`allow-uids`).
    pub allow_uids: BTreeSet<u32>,
    /// Client gids allowed to call the driver (`allow-gids`).
    pub allow_gids: BTreeSet<u32>,
}

impl Default for Privileges {
    fn default() -> Self {
        Self {
            uid: None,
            gid: None,
            capabilities: Vec::new(),
            sandbox: true,
            seccomp: true,
            env: DEFAULT_ENV.iter().map(|s| (*s).to_owned()).collect(),
            allow_uids: BTreeSet::new(),
            allow_gids: BTreeSet::new(),
        }
    }
}

/// A `user` value: a name from the user database or a number. Returns the
/// uid and the user's primary gid (when known).
///
/// # Errors
/// A message for the config problem list.
pub fn resolve_user(v: &toml::Value) -> Result<(u32, Option<u32>), String> {
    match v {
        toml::Value::Integer(n) => u32::try_from(*n).map(|u| (u, None)).map_err(|_| format!("{n} is not a uid")),
        toml::Value::String(name) => match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok((u.uid.as_raw(), Some(u.gid.as_raw()))),
            Ok(None) => Err(format!("no user named {name:?}")),
            Err(e) => Err(format!("looking up user {name:?}: {e}")),
        },
        other => Err(format!("must be a user name or a uid, got {other}")),
    }
}

/// A `group` value: a name from the group database or a number.
///
/// # Errors
/// A message for the config problem list.
pub fn resolve_group(v: &toml::Value) -> Result<u32, String> {
    match v {
        toml::Value::Integer(n) => u32::try_from(*n).map_err(|_| format!("{n} is not a gid")),
        toml::Value::String(name) => match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Ok(g.gid.as_raw()),
            Ok(None) => Err(format!("no group named {name:?}")),
            Err(e) => Err(format!("looking up group {name:?}: {e}")),
        },
        other => Err(format!("must be a group name or a gid, got {other}")),
    }
}

/// What `/proc/<pid>/status` says about a sandboxed driver, or why it is not
/// what the config asks for.
///
/// # Errors
/// A message naming the field that is wrong.
pub fn check_status(status: &str, p: &Privileges) -> Result<(), String> {
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    if !p.sandbox {
        return Ok(());
    }
    if field("NoNewPrivs:") != Some("1") {
        return Err(format!("NoNewPrivs is {}, not 1", field("NoNewPrivs:").unwrap_or("missing")));
    }
    if p.seccomp && field("Seccomp:") != Some("2") {
        return Err(format!("Seccomp is {}, not 2 (filter)", field("Seccomp:").unwrap_or("missing")));
    }
    if p.capabilities.is_empty() && field("CapEff:").is_some_and(|v| !v.trim_start_matches('0').is_empty()) {
        return Err(format!("CapEff is {}, not empty", field("CapEff:").unwrap_or("")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_groups_resolve_by_name_or_number() {
        assert_eq!(resolve_user(&toml::Value::Integer(54_321)), Ok((54_321, None)));
        assert_eq!(resolve_user(&toml::Value::String("root".into())), Ok((0, Some(0))));
        assert!(resolve_user(&toml::Value::String("no-such-user-reinc".into())).unwrap_err().contains("no user named"));
        assert!(resolve_user(&toml::Value::Integer(-1)).is_err());
        assert_eq!(resolve_group(&toml::Value::String("root".into())), Ok(0));
    }

    #[test]
    fn a_driver_that_skipped_its_sandbox_is_caught_from_its_status() {
        let p = Privileges::default();
        let good = "Name:\tx\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n";
        assert_eq!(check_status(good, &p), Ok(()));
        assert!(
            check_status(&good.replace("NoNewPrivs:\t1", "NoNewPrivs:\t0"), &p).unwrap_err().contains("NoNewPrivs")
        );
        assert!(check_status(&good.replace("Seccomp:\t2", "Seccomp:\t0"), &p).unwrap_err().contains("Seccomp"));
        assert!(check_status(&good.replace("CapEff:\t0000000000000000", "CapEff:\t000001ffffffffff"), &p).is_err());
        let off = Privileges { sandbox: false, ..Privileges::default() };
        assert_eq!(check_status("NoNewPrivs:\t0\n", &off), Ok(()));
    }
}
