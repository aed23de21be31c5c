//! Restart-policy and backoff arithmetic: a pure function of time passed in.
//!
//! # Why this crate exists
//! The supervisor's decision "restart now, restart later, or give up" is the
//! part of a reincarnation server that is easiest to get subtly wrong (storms
//! that spin the CPU, counters that never reset, quarantine that never
//! triggers) and hardest to test through real processes. Here it is plain
//! arithmetic: the caller passes the current time ([`Millis`]) and a random
//! `u32` for jitter, so every decision is reproducible in a unit or property
//! test, and the same code could run in firmware (`#![no_std]`, no allocator).
//!
//! # Semantics (CONTRACTS.md §5)
//! - The first restart after a healthy period is immediate.
//! - Restart `k ≥ 1` after that waits `min(cap, base · 2^(k-1))`, minus up to
//!   `jitter_percent` of it (chosen by the caller's random number). Jitter only
//!   ever *shortens* a delay, so the cap is a hard upper bound and the nominal
//!   delay sequence is monotone.
//! - An instance that ran for at least `healthy_after` before failing resets
//!   the backoff counter: its failure counts as the first one again.
//! - More than `max_restarts` restarts within `window` quarantines the driver:
//!   the tracker remembers the times of the last `max_restarts` restarts and
//!   refuses the next one if they all fall in the window.
//!
//! # Fault policies
//! Like Tock's `kernel::process::ProcessFaultPolicy`, the reaction to a fault
//! is a small named type implementing [`FaultPolicy`] rather than a set of
//! flags: [`BackoffRestart`] (the normal policy above) and [`StopOnFault`]
//! (never restart; the driver is quarantined at its first fault, useful for a
//! driver whose device must not be touched again after an error).
//!
//! # Designs rejected
//! - A token bucket for storm detection: it cannot express "R restarts within
//!   T seconds" exactly, which is what operators configure and what CONTRACTS.md §5
//!   asks for. A deque of the last R restart times is exact and small.
//! - Jitter in both directions (±j%): then a jittered delay can exceed the
//!   cap and the sequence is no longer monotone, which makes the operator's
//!   `cap` a lie.
//! - Reading a clock inside the policy: untestable without sleeping.
#![no_std]
#![forbid(unsafe_code)]

use core::fmt;
use heapless::Deque;

/// The most restarts a [`BackoffRestart`] can be configured to tolerate within
/// its window (`max_restarts`). The tracker stores one timestamp per restart.
pub const MAX_RESTARTS_IN_WINDOW: usize = 64;

/// A point in time or a duration, in milliseconds, on a monotonic clock chosen
/// by the caller (the supervisor uses `CLOCK_MONOTONIC` since its start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Millis {
    /// Zero.
    pub const ZERO: Self = Self(0);

    /// `self + d`, saturating at `u64::MAX`.
    #[must_use]
    pub const fn plus(self, d: Millis) -> Self {
        Self(self.0.saturating_add(d.0))
    }

    /// `self - earlier`, or zero if `earlier` is later.
    #[must_use]
    pub const fn since(self, earlier: Millis) -> Self {
        Self(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// What to do about a driver instance that just failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Launch a new instance after `delay` (zero: at once).
    Restart {
        /// How long to back off first.
        delay: Millis,
        /// The 0-based index of this restart since the last healthy period
        /// (0 is the immediate first restart).
        attempt: u32,
    },
    /// Do not restart until an operator revives the driver.
    Quarantine,
}

/// A reaction to faults. Implementations keep whatever history they need.
pub trait FaultPolicy {
    /// A driver instance failed at `now` after running for `ran_for`
    /// (from launch to failure). `random` is a uniformly random number used
    /// for jitter only.
    fn on_fault(&mut self, now: Millis, ran_for: Millis, random: u32) -> FaultAction;

    /// Forgets all history (an operator revived the driver).
    fn reset(&mut self);
}

/// Never restart: the first fault quarantines the driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StopOnFault;

impl FaultPolicy for StopOnFault {
    fn on_fault(&mut self, _now: Millis, _ran_for: Millis, _random: u32) -> FaultAction {
        FaultAction::Quarantine
    }

    fn reset(&mut self) {}
}

/// The figures of a [`BackoffRestart`] policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The delay before the second restart after a healthy period.
    pub base: Millis,
    /// No delay is ever longer than this.
    pub cap: Millis,
    /// Each delay is shortened by a random fraction of at most this many
    /// percent of it (0..=100).
    pub jitter_percent: u8,
    /// An instance that ran at least this long is considered healthy: its
    /// failure resets the backoff counter.
    pub healthy_after: Millis,
    /// More than this many restarts within `window` quarantine the driver.
    pub max_restarts: u32,
    /// The window for `max_restarts`.
    pub window: Millis,
}

/// Why a [`BackoffConfig`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `jitter_percent` above 100.
    #[error("jitter must be between 0 and 100 percent, got {0}")]
    Jitter(u8),
    /// `cap` below `base`.
    #[error("backoff cap ({cap}) is below the base delay ({base})")]
    CapBelowBase {
        /// The base delay.
        base: Millis,
        /// The cap.
        cap: Millis,
    },
    /// `max_restarts` larger than [`MAX_RESTARTS_IN_WINDOW`].
    #[error("at most {MAX_RESTARTS_IN_WINDOW} restarts per window can be tracked, got {0}")]
    TooManyRestarts(u32),
}

impl BackoffConfig {
    /// Checks the figures.
    ///
    /// # Errors
    /// The first figure that is out of range.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.jitter_percent > 100 {
            return Err(PolicyError::Jitter(self.jitter_percent));
        }
        if self.cap < self.base {
            return Err(PolicyError::CapBelowBase { base: self.base, cap: self.cap });
        }
        if self.max_restarts as usize > MAX_RESTARTS_IN_WINDOW {
            return Err(PolicyError::TooManyRestarts(self.max_restarts));
        }
        Ok(())
    }

    /// The delay before restart `attempt` (0-based since the last healthy
    /// period) before jitter: 0, base, 2·base, 4·base, … capped at `cap`.
    #[must_use]
    pub fn nominal_delay(&self, attempt: u32) -> Millis {
        if attempt == 0 {
            return Millis::ZERO;
        }
        let shift = attempt - 1;
        let factor = if shift >= 64 { u64::MAX } else { 1u64 << shift };
        Millis(self.base.0.saturating_mul(factor).min(self.cap.0))
    }

    /// The nominal delay shortened by jitter: `nominal - nominal·j%·random/2^32`.
    /// Always within `[nominal·(100-j)/100, nominal]`.
    #[must_use]
    pub fn jittered_delay(&self, attempt: u32, random: u32) -> Millis {
        let nominal = self.nominal_delay(attempt).0;
        let max_cut = u128::from(nominal) * u128::from(self.jitter_percent.min(100)) / 100;
        let cut = max_cut * u128::from(random) / (u128::from(u32::MAX) + 1);
        // `cut <= max_cut <= nominal`, so this cannot underflow or truncate.
        Millis(nominal - cut as u64)
    }
}

/// The normal policy: immediate first restart, exponential backoff with
/// jitter up to a cap, reset after a healthy run, quarantine in a storm.
#[derive(Clone, Debug)]
pub struct BackoffRestart {
    config: BackoffConfig,
    /// Restarts since the last healthy run.
    attempt: u32,
    /// Times of the most recent restarts (at most `max_restarts`), oldest first.
    recent: Deque<Millis, MAX_RESTARTS_IN_WINDOW>,
}

impl BackoffRestart {
    /// A policy with no history.
    ///
    /// # Errors
    /// The configuration is out of range ([`BackoffConfig::validate`]).
    pub fn new(config: BackoffConfig) -> Result<Self, PolicyError> {
        config.validate()?;
        Ok(Self { config, attempt: 0, recent: Deque::new() })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// Restarts since the last healthy run (what the next fault's `attempt` will be).
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How many restarts fall within the window ending at `now`.
    #[must_use]
    pub fn restarts_in_window(&self, now: Millis) -> usize {
        self.recent.iter().filter(|t| now.since(**t) < self.config.window).count()
    }
}

impl FaultPolicy for BackoffRestart {
    fn on_fault(&mut self, now: Millis, ran_for: Millis, random: u32) -> FaultAction {
        if ran_for >= self.config.healthy_after {
            self.attempt = 0;
        }
        while let Some(oldest) = self.recent.front() {
            if now.since(*oldest) >= self.config.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= self.config.max_restarts as usize {
            return FaultAction::Quarantine;
        }
        // Cannot fail: len < max_restarts <= capacity (checked in `new`).
        let _ = self.recent.push_back(now);
        let attempt = self.attempt;
        self.attempt = self.attempt.saturating_add(1);
        FaultAction::Restart { delay: self.config.jittered_delay(attempt, random), attempt }
    }

    fn reset(&mut self) {
        self.attempt = 0;
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests;
