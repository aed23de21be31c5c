//! File descriptors as a budget: a connection cap derived from
//! `RLIMIT_NOFILE`, descriptors held in reserve for driver launches, and
//! `accept` that never spins when the table is full.
//!
//! # Why
//! With `nofile` at 1024 and 1075 idle connections the supervisor used to
//! spin at 100 % CPU (the listener stays readable while `accept` fails with
//! `EMFILE`), `status` timed out, and a driver that crashed meanwhile failed
//! six relaunches with `socketpair: EMFILE` and was quarantined.
//!
//! # Rules
//! - Client connections are capped at `max-connections`, and lower if the
//!   descriptor limit demands: [`connection_cap`] leaves room for every
//!   driver's launch, the control connections and [`RESERVE`]. One more is
//!   accepted and closed at once, so the backlog drains.
//! - Control connections (the operator's) have their own small cap,
//!   [`MAX_CONTROL_CONNECTIONS`], so a client flood cannot lock `drvctl` out.
//! - [`FdReserve`] keeps [`RESERVE`] descriptors open (on `/dev/null`). When
//!   `accept` or a launch still meets `EMFILE`, the reserve is released for
//!   that one operation (the classic accept-and-drop trick), then refilled.
//! - If even that fails (`ENFILE`: the system table is full) the listeners
//!   are paused for [`ACCEPT_PAUSE`] instead of being polled in a loop.
//!
//! # Designs rejected
//! - Raising `RLIMIT_NOFILE` to the hard limit and hoping: it moves the cliff,
//!   and the hard limit may equal the soft one.
//! - Closing the oldest idle connection to make room: a flood would then
//!   evict the legitimate clients first.

use std::fs::File;
use std::time::Duration;

/// Descriptors held in reserve for a launch or an accept-and-drop.
pub const RESERVE: usize = 8;
/// Descriptors a driver launch needs at most (socketpair, trace memfd,
/// std's exec-error pipe, and one to spare).
pub const PER_LAUNCH: usize = 6;
/// Descriptors a running driver holds (its channel and trace memfd).
pub const PER_DRIVER: usize = 2;
/// Control connections open at once.
pub const MAX_CONTROL_CONNECTIONS: usize = 16;
/// How long the listeners are left alone after `accept` failed for lack of
/// descriptors even with the reserve released.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Descriptors the daemon holds besides connections and drivers: std
/// streams, epoll, signalfd, the two listeners, and a margin.
const BASE: usize = 16;

/// The effective client-connection cap: `configured`, lowered so that
/// `nofile` descriptors always leave room for the daemon itself, the reserve,
/// the control connections, every driver's descriptors and one launch.
#[must_use]
pub fn connection_cap(configured: usize, nofile: u64, drivers: usize) -> usize {
    let fixed = BASE + RESERVE + MAX_CONTROL_CONNECTIONS + drivers * PER_DRIVER + PER_LAUNCH;
    let room = usize::try_from(nofile).unwrap_or(usize::MAX).saturating_sub(fixed);
    configured.min(room).max(1)
}

/// The soft `RLIMIT_NOFILE`.
#[must_use]
pub fn nofile() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}

/// Descriptors kept open so that an operation that meets `EMFILE` can still
/// be done once.
#[derive(Debug)]
pub struct FdReserve {
    held: Vec<File>,
}

impl FdReserve {
    /// Opens [`RESERVE`] descriptors (fewer if the table is already full).
    #[must_use]
    pub fn new() -> Self {
        let mut r = Self { held: Vec::new() };
        r.refill();
        r
    }

    /// Descriptors currently held.
    #[must_use]
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Closes every reserved descriptor.
    pub fn release(&mut self) {
        self.held.clear();
    }

    /// Reopens descriptors up to [`RESERVE`]; stops at the first failure.
    pub fn refill(&mut self) {
        while self.held.len() < RESERVE {
            match File::open("/dev/null") {
                Ok(f) => self.held.push(f),
                Err(_) => break,
            }
        }
    }
}

impl Default for FdReserve {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether an errno means "out of descriptors, memory or processes": a
/// launch that fails so is not the driver's fault.
#[must_use]
pub fn exhausted(errno: i32) -> bool {
    use nix::libc::{EAGAIN, EMFILE, ENFILE, ENOBUFS, ENOMEM};
    [EMFILE, ENFILE, ENOMEM, ENOBUFS, EAGAIN].contains(&errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_drivers_controls_and_the_reserve() {
        assert_eq!(connection_cap(512, 1 << 20, 2), 512);
        // nofile 1024 with two drivers: 1024 - (16 + 8 + 16 + 4 + 6).
        assert_eq!(connection_cap(5_000, 1024, 2), 974);
        assert_eq!(connection_cap(512, 10, 1), 1, "never zero");
    }

    #[test]
    fn the_reserve_is_released_and_refilled() {
        let mut r = FdReserve::new();
        assert_eq!(r.held(), RESERVE);
        r.release();
        assert_eq!(r.held(), 0);
        r.refill();
        assert_eq!(r.held(), RESERVE);
    }

    #[test]
    fn resource_errors_are_told_from_the_drivers_own() {
        assert!(exhausted(nix::libc::EMFILE) && exhausted(nix::libc::ENFILE) && exhausted(nix::libc::EAGAIN));
        assert!(!exhausted(nix::libc::ENOENT) && !exhausted(nix::libc::EACCES));
    }
}
