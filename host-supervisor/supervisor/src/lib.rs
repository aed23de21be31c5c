//! The reincarnation server: launches drivers, watches them, restarts them
//! with backoff, and replays their unanswered requests exactly once.
//!
//! # Why this crate exists
//! It holds the supervision, replay and checkpoint rules of
//! CONTRACTS.md §3–§6 (at the repository root). It is split in two so that the
//! hard part can be tested without processes:
//! - [`core`]: a pure state machine, `handle(now, event) -> actions`, holding
//!   every rule (lifecycle, heartbeats, restart policy, commit-with-reply,
//!   generations, replay, poison, dedup, quarantine, backpressure, and the
//!   hot standby of CONTRACTS.md §9: a launched instance without a device,
//!   promoted at a crash instead of a fork+exec).
//! - thin adapters: [`config`] (TOML), [`checkpoint`] (crash-safe files) and
//!   [`daemon`] (spawning, signalfd, epoll, sockets).
//! - [`identity`]: session ids unique across supervisor lifetimes.
//! - [`journal`]: the write-ahead journal of `durability = "journal"`
//!   drivers, written with group commit by a thread off the event loop.
//! - [`metrics`]: `drvctl metrics` as Prometheus text.
//! - [`notify`]: `sd_notify` (`READY=1`, `STATUS=`, `WATCHDOG=1`) for
//!   systemd, the supervisor's own supervisor.
//! - [`outbound`]: flow control of the replies queued for clients
//!   (backpressure, and when a client counts as not reading).
//!
//! # Designs rejected
//! - Async runtime (tokio): the daemon waits on a handful of fds; one epoll
//!   loop is smaller, has no hidden threads, and keeps event order explicit,
//!   which the ordering rules (drain a dead driver's socket before handling
//!   its exit; persist before replying) depend on.
//! - Polling `waitpid` on a timer: CONTRACTS.md §5 wants immediate detection and
//!   no busy loops; a signalfd for SIGCHLD wakes epoll exactly when needed.
//! - Threads per driver: shared state (queues, dedup table, sessions) would
//!   need locks, and ordering between a driver's frames and its exit would be
//!   lost.
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod config;
pub mod core;
pub mod daemon;
pub mod identity;
pub mod journal;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod outbound;
pub mod privileges;
pub mod trusted;
