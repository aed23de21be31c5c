//! A fault-injection campaign under live load, and its reliability report.
//!
//! # Why this crate exists
//! The chaos test (`tests/tests/chaos.rs`) kills one driver about fifty
//! times. A user choosing this framework wants the kind of evidence MINIX 3
//! published (DSN 2009: millions of faults injected into its drivers, no OS
//! crash): many faults of every class, under load, with invariants checked
//! all along, and a report with pictures. `cargo xtask campaign` builds the
//! binaries in release and runs `reinc-campaign run`, which:
//! - runs `--lanes L` lanes side by side (default [`run::DEFAULT_LANES`]);
//!   each lane starts a supervisor in a private directory with
//!   `storage_driver`, `net_driver`, the bench driver, this crate's
//!   misbehaving driver and one crash-at-init driver per crash kind
//!   ([`run`] merges the lanes; `lane.rs` runs one), and applies the faults
//!   `i` with `i mod L` equal to its number;
//! - drives them with concurrent pipelining clients whose models predict
//!   every reply, an NBD client through `reinc-nbd` on the storage driver,
//!   plus `drvctl blk` processes now and then (`load/`, one module per
//!   client);
//! - walks a seeded schedule ([`schedule`]): every crash point × kind
//!   through the control socket's `Inject`, external SIGKILL/SIGSEGV/SIGBUS/
//!   SIGSTOP, misbehaviours that do not kill the driver ([`misbehave`]),
//!   exec failures, descriptor and address-space exhaustion, and bit flips
//!   (SWIFI) in replies, driver state and the device, and SIGKILLs of the
//!   lane's supervisor, which is replaced at once as systemd's
//!   `Restart=always` would; one at a time (`inject.rs`);
//! - stops at the first violated invariant, naming the seed and the fault
//!   index (`--seed S --faults i+1` replays the same schedule prefix);
//! - writes `report.md`, `report.json` and SVG plots ([`report`], [`plot`]).
//!
//! # Invariants
//! - No accepted request lost: every submitted request is answered exactly
//!   once (the client models track every seq).
//! - None executed twice: the exec logs (`REINC_EXEC_LOG`) of storage and
//!   net hold every effect once, over every supervisor lifetime, and
//!   exactly the effectful requests the clients had answered; the storage superblock's `applied_count` equals
//!   the log; the net transmit counter and the misbehave driver's counter
//!   rise by exactly one per answered request.
//! - The device equals the model: every read is compared when answered, and
//!   every block is read back at the end, through the driver and from the file.
//! - The supervisor never crashes: it is checked alive after every fault
//!   (a supervisor-kill fault must find it alive before its SIGKILL, and
//!   the SIGKILL must be what ended it) and must exit 0 on SIGTERM at the end.
//! - Every client error is definite: any `ClientError` (unknown outcome) is
//!   a failure, and `CallError`s are only accepted where designed
//!   (`DriverFailed` from a quarantined init-crash driver, `Poisoned` for a
//!   poison request).
//!
//! # Durability, for the supervisor kills
//! `storage_driver`, `net_driver` and the misbehave driver run with
//! `durability = "journal"`: their clients check exactly-once against a
//! model, so what they were told, the accepted requests and the committed
//! state must outlive the supervisor. The bench driver keeps `memory`: a
//! new supervisor runs its in-flight null commits again, which memory
//! durability allows and a null commit cannot show. The journal lives on
//! tmpfs when there is one (`lane.rs`, `state_dir`): the faults are process
//! faults, which the page cache survives.
//!
//! # Designs rejected
//! - Faults concurrently on several drivers of one supervisor: recovery
//!   times would mix, and a failure would not map to one fault index.
//!   Within a lane faults come one at a time, under load on every driver,
//!   which keeps each outcome attributable; lanes share nothing but the
//!   cores, so a failure names its lane and fault index.
//! - One lane only: a fault costs ~20 ms end to end, most of it waiting
//!   (fork and exec, `Init`, replay, heartbeat timeouts for hangs), so one
//!   lane stays near 50 faults a second; and the supervisor's floor of 64
//!   restarts per driver and second would cap one set of drivers anyway.
//! - Data without checksums on the storage path: a bit flipped on the
//!   device came back as valid data. Every storage client here goes through
//!   `reinc_client::blocksum`, and a flip anywhere is a definite error.
//! - A fault kind added to the supervisor or runtime for misbehaviour: the
//!   supervisor is what is tested, and `reinc-runtime` cannot misbehave by
//!   construction; a separate driver binary speaks the protocol by hand.
//! - Timing recovery from the supervisor's log: no clock in its lines; the
//!   exec log says which instance executed a request, and the client's
//!   clock says when its reply arrived (as in `cargo xtask bench`).
//! - Plots with a font-rendering backend: SVG text elements need no fonts,
//!   so the report renders on a machine without fontconfig.
#![forbid(unsafe_code)]

mod inject;
mod lane;
mod load;
pub mod misbehave;
pub mod plot;
pub mod report;
pub mod run;
pub mod schedule;

use schedule::Fault;

/// How a fault ended, for the outcome table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Outcome {
    /// The driver came back (or never went away) and every request was answered correctly.
    Recovered,
    /// Quarantine or poisoning, as the policy says, with a definite error to the caller.
    Quarantined,
    /// Corrupted data or state was caught by a checksum of the system.
    CorruptionDetected,
    /// Corrupted data reached a client as valid data (only the campaign's model noticed).
    CorruptionSilent,
}

impl Outcome {
    /// Every outcome, in table order.
    pub const ALL: [Self; 4] = [Self::Recovered, Self::Quarantined, Self::CorruptionDetected, Self::CorruptionSilent];

    /// Column title.
    #[must_use]
    pub fn title(self) -> &'static str {
        match self {
            Self::Recovered => "recovered",
            Self::Quarantined => "quarantined as designed",
            Self::CorruptionDetected => "corruption detected",
            Self::CorruptionSilent => "corruption silent",
        }
    }
}

/// What the supervisor did about a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Handling {
    /// Killed (or saw die) the instance and started a new generation.
    Restarted,
    /// Dropped or ignored it; the instance went on.
    Ignored,
    /// Quarantined the driver.
    Quarantined,
    /// Dropped the request as poisoned.
    Poisoned,
}

impl Handling {
    /// Every handling, in table order.
    pub const ALL: [Self; 4] = [Self::Restarted, Self::Ignored, Self::Quarantined, Self::Poisoned];
}

/// One applied fault.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    /// Its index in the schedule.
    pub index: usize,
    /// The fault.
    pub fault: Fault,
    /// Its class (outcome-table row).
    pub class: String,
    /// When it was applied, in ms since the load started.
    pub at_ms: f64,
    /// How it ended.
    pub outcome: Outcome,
    /// What the supervisor did.
    pub handling: Handling,
    /// Fault → first reply executed by the new instance, when measured
    /// (for a supervisor kill: by a driver of the new supervisor).
    pub recovery_us: Option<u64>,
    /// A supervisor kill only: kill → every load driver of the new
    /// supervisor running.
    pub restart_us: Option<u64>,
    /// A detail (failure reason, what caught a corruption).
    pub note: String,
}

/// A violated invariant.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Violation {
    /// The index of the fault being applied when it was seen.
    pub fault_index: usize,
    /// What was violated, naming the driver and request.
    pub what: String,
}

/// A campaign that could not run (not a violated invariant).
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// The file, socket or program.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A binary was not built.
    #[error("{0} is missing: build it first (cargo xtask campaign does)")]
    MissingBinary(std::path::PathBuf),
    /// The supervisor or a driver did not come up.
    #[error("setup: {0}")]
    Setup(String),
    /// The plots could not be drawn.
    #[error("plot {file}: {what}")]
    Plot {
        /// The SVG file.
        file: String,
        /// The plotters error.
        what: String,
    },
}

impl CampaignError {
    /// An I/O error about `what`.
    pub fn io(what: impl std::fmt::Display, source: std::io::Error) -> Self {
        Self::Io { what: what.to_string(), source }
    }
}
