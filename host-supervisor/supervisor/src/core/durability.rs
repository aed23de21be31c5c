//! Commit-with-reply when the checkpoint persists: a reply is released to its
//! client only once the state it commits is durable on disk.
//!
//! # Why replies are held
//! With `persist-checkpoint = true` a client that saw a reply may rely on
//! its effect surviving a supervisor restart. If the checkpoint write fails
//! (ENOSPC, EIO, a read-only directory) and the reply went out anyway, a
//! restarted supervisor would restore an older checkpoint than the one the
//! client observed: an `Append` would be given the same position again and
//! overwrite acknowledged data. So a failed write holds the reply, and every
//! later reply of that driver (they may depend on the held state, and per
//! driver they leave in commit order), until a retry succeeds. Clients see
//! latency, never a durability promise that was not kept.
//!
//! # Shape
//! The core stays pure: [`Action::Persist`] asks for a write of the latest
//! checkpoint and the daemon answers with [`Event::Persisted`](super::Event::Persisted) (at once, like
//! `Spawn`). Commits are numbered per driver (`version`); a held reply waits
//! for `durable >= version-at-its-commit`. One write is outstanding at a
//! time and always carries the newest state, so commits made meanwhile are
//! coalesced. After a failure the write is retried on a deadline with
//! bounded exponential backoff ([`PERSIST_RETRY_BASE`] doubling up to
//! [`PERSIST_RETRY_CAP`]): never a spin, never more than about one write a
//! second while the disk stays broken. One `[SUP]` line starts an episode
//! and one ends it.
//!
//! # Designs rejected
//! - Failing the held requests: they executed and their state is committed
//!   in memory (the next instance starts from it), so a failure would be a
//!   lie too, and a retried id would then run twice.
//! - Stopping the driver: its device and its in-memory state are fine; only
//!   the durability promise is missing, and holding replies is exactly the
//!   part of the service that depends on it.
//! - Retrying inside the daemon: the hold and its release are the
//!   commit-with-reply rule, which belongs with the other rules here, where
//!   it is tested without a disk.

use super::{Action, DriverId, Supervisor, Trace};
use reinc_policy::Millis;
use reinc_proto::RequestId;
use std::collections::VecDeque;

/// First retry delay after a failed checkpoint write.
pub const PERSIST_RETRY_BASE: Millis = Millis(10);
/// Longest retry delay while the checkpoint write keeps failing.
pub const PERSIST_RETRY_CAP: Millis = Millis(1_000);

/// How an [`Action::Persist`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistOutcome {
    /// Written, synced, renamed and the directory synced: durable.
    Durable,
    /// The write failed; nothing new is durable.
    Failed {
        /// The checkpoint file that was being written.
        path: String,
        /// Why, naming the file or directory that failed.
        error: String,
    },
}

/// A reply whose commit is not durable yet.
#[derive(Debug)]
pub(super) struct HeldReply {
    pub(super) rid: RequestId,
    pub(super) body: Vec<u8>,
    /// The commit version that must be durable before it may leave.
    pub(super) needs: u64,
}

/// An episode of failed checkpoint writes.
#[derive(Debug)]
pub(super) struct PersistFailure {
    since: Millis,
    attempts: u32,
    retry_at: Millis,
    path: String,
    error: String,
}

/// Per-driver durability bookkeeping.
#[derive(Debug, Default)]
pub(super) struct Durability {
    /// Commits applied in memory so far.
    version: u64,
    /// Highest commit version known to be durable.
    durable: u64,
    /// Version of the write awaiting its [`Event::Persisted`](super::Event::Persisted).
    writing: Option<u64>,
    /// Set while writes fail.
    failing: Option<PersistFailure>,
    /// Replies waiting for durability, in commit order.
    pub(super) held: VecDeque<HeldReply>,
}

impl Durability {
    /// Records a commit; returns the version a reply carrying it needs.
    pub(super) fn commit(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// The version the next reply needs when it commits nothing new.
    pub(super) fn current(&self) -> u64 {
        self.version
    }

    /// True if a reply needing `needs` may leave now (and nothing older waits).
    pub(super) fn may_release(&self, needs: u64) -> bool {
        self.held.is_empty() && self.durable >= needs
    }

    /// When a failed write is to be retried.
    pub(super) fn retry_deadline(&self) -> Option<Millis> {
        match (&self.failing, self.writing) {
            (Some(f), None) => Some(f.retry_at),
            _ => None,
        }
    }

    /// `drvctl status`'s description of a failing episode.
    pub(super) fn describe_failure(&self, now: Millis) -> Option<String> {
        self.failing.as_ref().map(|f| {
            format!("cannot persist to {}: {} ({} attempts over {})", f.path, f.error, f.attempts, now.since(f.since))
        })
    }
}

fn retry_delay(attempts: u32) -> Millis {
    let shift = attempts.saturating_sub(1).min(20);
    Millis(PERSIST_RETRY_BASE.0.saturating_mul(1 << shift).min(PERSIST_RETRY_CAP.0))
}

impl Supervisor {
    /// Asks for a write of `id`'s newest checkpoint if it is newer than what
    /// is durable and no write is outstanding or waiting for its retry time.
    pub(super) fn request_persist(&mut self, id: DriverId, out: &mut Vec<Action>) {
        let d = &mut self.drivers[id.0];
        let p = &mut d.durability;
        if p.writing.is_some() || p.failing.is_some() || p.version <= p.durable {
            return;
        }
        let Some(checkpoint) = d.checkpoint.clone() else { return };
        p.writing = Some(p.version);
        out.push(Action::Persist { driver: id, checkpoint });
    }

    /// Retries failed writes whose time has come, among the `due` drivers.
    pub(super) fn persist_retries(&mut self, now: Millis, due: &[usize], out: &mut Vec<Action>) {
        for &i in due {
            let d = &mut self.drivers[i];
            let p = &mut d.durability;
            if p.retry_deadline().is_some_and(|t| now >= t)
                && let Some(checkpoint) = d.checkpoint.clone()
            {
                p.writing = Some(p.version);
                out.push(Action::Persist { driver: DriverId(i), checkpoint });
            }
        }
    }

    /// The daemon's answer to an [`Action::Persist`].
    pub(super) fn on_persisted(&mut self, now: Millis, id: DriverId, outcome: PersistOutcome, out: &mut Vec<Action>) {
        let d = &mut self.drivers[id.0];
        let name = d.cfg.name.clone();
        let p = &mut d.durability;
        let Some(version) = p.writing.take() else { return };
        match outcome {
            PersistOutcome::Durable => {
                p.durable = p.durable.max(version);
                if let Some(f) = p.failing.take() {
                    out.push(Action::Say(format!(
                        "checkpoint of {name} persisted to {} after {} failed attempts over {}; releasing {} held \
                         replies",
                        f.path,
                        f.attempts,
                        now.since(f.since),
                        p.held.iter().filter(|h| h.needs <= p.durable).count()
                    )));
                }
                let mut released = Vec::new();
                while p.held.front().is_some_and(|h| h.needs <= p.durable) {
                    released.push(p.held.pop_front().expect("checked"));
                }
                if !released.is_empty() {
                    self.record(now, Trace::Released { driver: id, replies: released.len() as u32 });
                }
                for h in released {
                    self.answer(now, h.rid, super::Cached::Reply(h.body), out);
                }
                // Commits made while this write was outstanding.
                self.request_persist(id, out);
            }
            PersistOutcome::Failed { path, error } => {
                let held = p.held.len();
                let attempts = match &mut p.failing {
                    Some(f) => {
                        f.attempts += 1;
                        f.path = path;
                        f.error = error;
                        f.attempts
                    }
                    None => {
                        out.push(Action::Say(format!(
                            "cannot persist the checkpoint of {name} to {path}: {error} (replies held, retrying)"
                        )));
                        p.failing = Some(PersistFailure { since: now, attempts: 1, retry_at: now, path, error });
                        1
                    }
                };
                let f = p.failing.as_mut().expect("set above");
                f.retry_at = now.plus(retry_delay(attempts));
                self.record(now, Trace::PersistFailed { driver: id, attempts, held: held as u32 });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persist_retry_delay_doubles_from_base_to_cap() {
        let delays: Vec<u64> = (1..=10).map(|a| retry_delay(a).0).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1_000, 1_000, 1_000]);
        assert_eq!(retry_delay(u32::MAX), PERSIST_RETRY_CAP);
    }
}
