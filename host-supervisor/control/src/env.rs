//! Every `REINC_*` environment variable, with who sets it and who reads it.
//!
//! The launch contract (CONTRACTS.md §1) is what the supervisor sets for each
//! driver instance and `reinc-runtime` reads at start-up; the sandbox
//! variables are read right after it. The client variables are set by an
//! operator or a test for `drvctl` and the client library. No driver
//! configuration may set a name under [`RESERVED_PREFIX`].

/// The prefix every variable here shares. A driver's configured environment
/// may not use it: those names are the supervisor's to set.
pub const RESERVED_PREFIX: &str = "REINC_";

/// Launch: the IPC socket's descriptor number (`0`: stdin).
pub const ENV_IPC_FD: &str = "REINC_IPC_FD";
/// Launch: the driver's configured name.
pub const ENV_DRIVER_NAME: &str = "REINC_DRIVER_NAME";
/// Launch: the supervisor's pid (the driver checks it against `getppid`).
pub const ENV_SUPERVISOR_PID: &str = "REINC_SUPERVISOR_PID";
/// Launch (optional): the trace memfd's descriptor number.
pub const ENV_TRACE_FD: &str = "REINC_TRACE_FD";
/// Launch (optional): a fault plan `POINT:K:KIND` (`reinc_proto::FaultPlan`).
pub const ENV_FAULT: &str = "REINC_FAULT";
/// Launch (optional, tests): the path of the append-only exec log.
pub const ENV_EXEC_LOG: &str = "REINC_EXEC_LOG";

/// Sandbox: `1` to enter the sandbox after the launch contract is read.
pub const ENV_SANDBOX: &str = "REINC_SANDBOX";
/// Sandbox: the capabilities to keep, comma-separated names.
pub const ENV_CAPABILITIES: &str = "REINC_CAPABILITIES";
/// Sandbox: `0` to skip the seccomp allow-list.
pub const ENV_SECCOMP: &str = "REINC_SECCOMP";

/// Client: the runtime directory, overriding [`crate::paths::default_runtime_dir`]'s
/// other rules (the supervisor follows it too).
pub const ENV_RUNTIME_DIR: &str = "REINC_RUNTIME_DIR";
/// Client: one more uid a trusted supervisor may run as (besides the
/// client's own and root).
pub const ENV_SUPERVISOR_UID: &str = "REINC_SUPERVISOR_UID";
/// Client: how long a lost connection is retried, in milliseconds.
pub const ENV_RECONNECT_TIMEOUT_MS: &str = "REINC_RECONNECT_TIMEOUT_MS";

/// What the supervisor sets for a driver instance: the launch contract and
/// the sandbox.
pub const SET_FOR_DRIVERS: [&str; 9] = [
    ENV_IPC_FD,
    ENV_DRIVER_NAME,
    ENV_SUPERVISOR_PID,
    ENV_TRACE_FD,
    ENV_FAULT,
    ENV_EXEC_LOG,
    ENV_SANDBOX,
    ENV_CAPABILITIES,
    ENV_SECCOMP,
];

/// What the client side reads.
pub const READ_BY_CLIENTS: [&str; 3] = [ENV_RUNTIME_DIR, ENV_SUPERVISOR_UID, ENV_RECONNECT_TIMEOUT_MS];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_reserved_and_distinct() {
        let all: Vec<&str> = SET_FOR_DRIVERS.iter().chain(&READ_BY_CLIENTS).copied().collect();
        for name in &all {
            assert!(name.starts_with(RESERVED_PREFIX) && name.len() > RESERVED_PREFIX.len(), "{name}");
            assert!(name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{name}");
        }
        let mut sorted = all.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len(), "a name is listed twice: {all:?}");
    }
}
