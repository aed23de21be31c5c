//! Benchmarks of the reinc supervisor against floors measured in the same
//! run, and the client workload of `cargo xtask demo`.
//!
//! # Why this crate exists
//! A user choosing a reincarnation server over `systemd` restarts wants
//! numbers: what a request costs through the supervisor, how long a crash
//! stalls clients, what checkpoints cost, how it scales. These machines are
//! shared and noisy (absolute times drift, a cross-core wake-up alone costs
//! tens of µs), so every figure is reported as a ratio to a *floor* measured
//! in the same run: a raw socket round trip, a raw two-hop relay, a bare
//! fork+exec of the driver, reading the file directly ([`floors`]).
//! `cargo xtask bench` builds this crate in release and runs `reinc-bench
//! run`, which prints a table and writes `target/bench/report.{md,json}`
//! ([`report`]). Nothing here is a test that asserts a number: `--quick`
//! only checks that every row was produced with sane values.
//!
//! Section 7 ([`nbd`]) measures the NBD front end (`reinc-nbd`) against nbdkit,
//! `qemu-nbd` and direct I/O.
//!
//! `reinc-bench demo-load` ([`demo`]) is the client half of `cargo xtask
//! demo`: it needs the client library, and the xtask deliberately does not
//! depend on the workspace's crates (it must build fast, before anything
//! else).
//!
//! # Designs rejected
//! - criterion: built for statistically comparing one function across
//!   commits, not for multi-process experiments (a supervisor, 128 drivers,
//!   200 kills) reported as ratios to floors; its analysis would add minutes.
//! - Floors as threads in the harness: cheaper wake-ups than between
//!   processes, which would flatter the floors; the helpers are processes.
//! - Timing recovery from the supervisor's log: its lines carry no clock and
//!   pass through a pipe; the client's own clock around the kill is exact.
#![forbid(unsafe_code)]

pub mod demo;
pub mod floors;
pub mod journal_rows;
pub mod machine;
pub mod nbd;
pub mod report;
pub mod rig;
pub mod rows;
pub mod stats;

/// Body of a `reinc-bench-driver` request that commits nothing.
pub const NULL_NOP: u8 = 0;
/// Body of a `reinc-bench-driver` request whose reply carries a commit.
pub const NULL_COMMIT: u8 = 1;

/// A benchmark or demo failure, naming what was involved.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file, socket or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What (names the file, socket or program).
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A binary the benchmarks need was not built.
    #[error("{0} is missing: build it first (cargo xtask bench does)")]
    MissingBinary(std::path::PathBuf),
    /// The client library failed.
    #[error("client: {0}")]
    Client(String),
    /// Setting up an experiment failed.
    #[error("{0}")]
    Setup(String),
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// A driver answered a call with an error or an unexpected reply.
    #[error("{driver}: {what}")]
    Reply {
        /// The driver.
        driver: String,
        /// What was wrong.
        what: String,
    },
    /// Bad command-line usage.
    #[error("{0}")]
    Usage(String),
}

impl BenchError {
    /// An I/O error about `what`.
    pub fn io(what: impl std::fmt::Display, source: std::io::Error) -> Self {
        Self::Io { what: what.to_string(), source }
    }
}
