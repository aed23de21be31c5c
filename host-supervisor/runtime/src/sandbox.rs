//! Entering the driver's sandbox ([`reinc_sandbox`]) as the supervisor asks,
//! right after the launch contract is read.
//!
//! The supervisor sets [`ENV_SANDBOX`]` = 1` for every driver whose config
//! keeps the default `sandbox = true`, with the capabilities to keep in
//! [`ENV_CAPABILITIES`] (none by default) and [`ENV_SECCOMP`] (`1` unless
//! `seccomp = false`). Without [`ENV_SANDBOX`] (a driver run by hand or by a
//! crate's own process tests) nothing is changed.
//!
//! [`ENV_SANDBOX`]: reinc_control::env::ENV_SANDBOX
//! [`ENV_CAPABILITIES`]: reinc_control::env::ENV_CAPABILITIES
//! [`ENV_SECCOMP`]: reinc_control::env::ENV_SECCOMP

use crate::runtime::Config;
use std::os::fd::AsRawFd;

use reinc_control::env::{ENV_CAPABILITIES, ENV_SANDBOX, ENV_SECCOMP};

/// Applies the sandbox the environment asks for, keeping the descriptors
/// `config` holds.
///
/// # Errors
/// A message naming the step that failed.
pub fn enter(config: &Config) -> Result<(), reinc_sandbox::SandboxError> {
    if std::env::var(ENV_SANDBOX).ok().as_deref() != Some("1") {
        return Ok(());
    }
    let mut keep = vec![config.ipc.as_raw_fd()];
    keep.extend(config.trace.as_ref().map(AsRawFd::as_raw_fd));
    keep.extend(config.stop_signals.as_ref().map(AsRawFd::as_raw_fd));
    let capabilities = std::env::var(ENV_CAPABILITIES)
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(reinc_sandbox::capability)
        .collect::<Result<Vec<_>, _>>()?;
    let seccomp = std::env::var(ENV_SECCOMP).ok().as_deref() != Some("0");
    reinc_sandbox::enter(&reinc_sandbox::Policy { keep_fds: keep, capabilities, seccomp })
}
