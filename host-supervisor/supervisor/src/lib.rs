//! The reincarnation server: launches drivers, watches them, restarts them
//! with backoff, and replays their unanswered requests exactly once.
//!
//! # Why this crate exists
//! It is the supervisor of the design brief. It is split in two so that the
//! hard part can be tested without processes:
//! - [`core`]: a pure state machine, `handle(now, event) -> actions`, holding
//!   every rule (lifecycle, heartbeats, restart policy, commit-with-reply,
//!   generations, replay, poison, dedup, quarantine, backpressure).
//! - thin adapters: [`config`] (TOML), [`checkpoint`] (crash-safe files) and
//!   [`daemon`] (spawning, signalfd, epoll, sockets).
//!
//! # Designs rejected
//! - Async runtime (tokio): the daemon waits on a handful of fds; one epoll
//!   loop is smaller, has no hidden threads, and keeps event order explicit,
//!   which the ordering rules (drain a dead driver's socket before handling
//!   its exit; persist before replying) depend on.
//! - Polling `waitpid` on a timer: the brief wants immediate detection and
//!   no busy loops; a signalfd for SIGCHLD wakes epoll exactly when needed.
//! - Threads per driver: shared state (queues, dedup table, sessions) would
//!   need locks, and ordering between a driver's frames and its exit would be
//!   lost.
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod config;
pub mod core;
pub mod daemon;
pub mod limits;
pub mod privileges;
