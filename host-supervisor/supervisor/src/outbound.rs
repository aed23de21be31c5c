//! Flow control of the replies queued for a client connection: when to stop
//! reading its requests, when to read them again, and when it has stopped
//! reading for good. Pure (time passed in); the daemon holds one [`Flow`]
//! per client connection and applies what it says.
//!
//! # Why
//! A client may pipeline: `reinc-nbd --window 256` keeps 256 reads of
//! 32 KiB, 8 MiB of replies, in flight, and reads them as fast as its own
//! client takes them. Those replies are what it asked for, within its
//! window; that they outrun the socket for a moment says nothing about
//! whether it reads. Disconnecting every connection whose unsent replies
//! pass `out-bytes-per-connection` (what the daemon did) cut such a client
//! off as a slow reader and its NBD client saw `EIO`.
//!
//! # Rules
//! - **Backpressure.** While more than `out-bytes-per-connection` are
//!   queued for a connection, or more than `out-bytes-total` over all
//!   connections and some for this one, the daemon does not read the
//!   connection's requests (no `EPOLLIN`): its sends block in the kernel, so
//!   it slows down to the pace it reads at. Reading resumes once the queue is
//!   down to half the per-connection budget (and, if the total was the
//!   cause, the total to half its budget), so the interest is not toggled
//!   per frame.
//! - **Entitled replies are queued.** Replies to requests accepted before
//!   the pause are still queued. They are bounded: a driver accepts at most
//!   `queue-depth` requests, whoever sends them, so over all connections the
//!   queues hold at most `out-bytes-total` plus one reply frame per accepted
//!   request (the daemon's `MAX_OUT_FRAMES` still bounds the frames of one
//!   connection).
//! - **Stall.** A connection with unsent replies of which the kernel takes
//!   none for `out-stall-timeout-ms` does not read; it is disconnected (it
//!   may resume, and gets its replies from the dedup table). Progress is
//!   any frame leaving the queue, so a client reading slowly but steadily
//!   is never cut off, however deep its pipeline.
//!
//! # Designs rejected
//! - A larger `out-bytes-per-connection`: any fixed figure is wrong for
//!   some window, and it only moves the point where a reading client is
//!   disconnected.
//! - Counting each client's window (requests in flight) against the
//!   budget: the supervisor cannot know a client's window, only what it
//!   accepted, and that is bounded by `queue-depth` already.
//! - Answering `Busy` instead of not reading: a client that pipelines would
//!   have to retry; not reading lets the kernel hold its requests and costs
//!   it nothing but time.

use crate::limits::Limits;
use std::time::{Duration, Instant};

/// What changed for the daemon to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing.
    None,
    /// Stop reading the connection's requests.
    Pause,
    /// Read its requests again.
    Resume,
}

/// The flow state of one client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flow {
    paused: bool,
    /// Since when the connection's queue has not moved (set while it holds
    /// unsent replies).
    idle_since: Option<Instant>,
}

impl Flow {
    /// A connection with nothing queued, read as usual.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether its requests are read.
    #[must_use]
    pub fn reads(&self) -> bool {
        !self.paused
    }

    /// Updates the state after frames were queued for the connection or
    /// sent from its queue: `queued` bytes are queued for it now, `total`
    /// over all connections; `progressed` says a frame left its queue.
    pub fn update(&mut self, limits: &Limits, queued: usize, total: usize, progressed: bool, now: Instant) -> Change {
        self.idle_since = match self.idle_since {
            _ if queued == 0 => None,
            Some(_) if progressed => Some(now),
            Some(t) => Some(t),
            None => Some(now),
        };
        let over = queued > limits.out_bytes_per_connection || (queued > 0 && total > limits.out_bytes_total);
        let under =
            queued <= limits.out_bytes_per_connection / 2 && (queued == 0 || total <= limits.out_bytes_total / 2);
        match (self.paused, over, under) {
            (false, true, _) => {
                self.paused = true;
                Change::Pause
            }
            (true, _, true) => {
                self.paused = false;
                Change::Resume
            }
            _ => Change::None,
        }
    }

    /// When the connection counts as not reading if its queue does not move
    /// before; `None` while nothing is queued.
    #[must_use]
    pub fn stall_deadline(&self, limits: &Limits) -> Option<Instant> {
        self.idle_since.map(|t| t + Duration::from_millis(limits.out_stall_ms))
    }

    /// Whether it has held unsent replies without taking any for
    /// `out-stall-timeout-ms`.
    #[must_use]
    pub fn stalled(&self, limits: &Limits, now: Instant) -> bool {
        self.stall_deadline(limits).is_some_and(|d| now >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn a_queue_over_the_budget_pauses_reading_until_half_of_it_is_read() {
        let (l, t0) = (limits(), Instant::now());
        let mut f = Flow::new();
        assert_eq!(f.update(&l, MIB, MIB, false, t0), Change::None);
        assert!(f.reads());
        assert_eq!(f.update(&l, 2 * MIB + 1, 2 * MIB + 1, false, t0), Change::Pause);
        assert!(!f.reads());
        // Entitled replies keep arriving: still paused, not dropped.
        assert_eq!(f.update(&l, 8 * MIB, 8 * MIB, false, t0), Change::None);
        assert_eq!(f.update(&l, 2 * MIB, 2 * MIB, true, t0), Change::None, "no toggling at the threshold");
        assert_eq!(f.update(&l, MIB, MIB, true, t0), Change::Resume);
        assert!(f.reads());
    }

    #[test]
    fn over_the_total_every_connection_with_unsent_replies_pauses() {
        let (l, t0) = (limits(), Instant::now());
        let mut holding = Flow::new();
        let mut empty = Flow::new();
        assert_eq!(holding.update(&l, 64 << 10, 16 * MIB + 1, false, t0), Change::Pause);
        assert_eq!(empty.update(&l, 0, 16 * MIB + 1, false, t0), Change::None, "nothing queued: nothing to slow");
        assert_eq!(holding.update(&l, 64 << 10, 10 * MIB, true, t0), Change::None);
        assert_eq!(holding.update(&l, 64 << 10, 8 * MIB, true, t0), Change::Resume);
        // A connection whose own queue empties resumes whatever the total.
        let mut f = Flow::new();
        f.update(&l, 64 << 10, 16 * MIB + 1, false, t0);
        assert_eq!(f.update(&l, 0, 16 * MIB, true, t0), Change::Resume);
    }

    #[test]
    fn only_a_queue_that_does_not_move_for_the_stall_timeout_counts_as_not_reading() {
        let (l, t0) = (limits(), Instant::now());
        let stall = Duration::from_millis(l.out_stall_ms);
        let mut f = Flow::new();
        assert_eq!(f.stall_deadline(&l), None);
        f.update(&l, 8 * MIB, 8 * MIB, false, t0);
        assert_eq!(f.stall_deadline(&l), Some(t0 + stall));
        // More queued without progress: the clock keeps running.
        f.update(&l, 9 * MIB, 9 * MIB, false, t0 + stall / 2);
        assert!(!f.stalled(&l, t0 + stall - Duration::from_millis(1)));
        assert!(f.stalled(&l, t0 + stall));
        // A steady reader: one frame taken every half timeout, never stalled.
        let mut g = Flow::new();
        g.update(&l, 8 * MIB, 8 * MIB, false, t0);
        for i in 1..100u32 {
            let now = t0 + stall / 2 * i;
            g.update(&l, 8 * MIB - (32 << 10), 8 * MIB, true, now);
            assert!(!g.stalled(&l, now + stall / 2));
        }
        // Nothing queued: nothing to stall on.
        g.update(&l, 0, 0, true, t0);
        assert_eq!(g.stall_deadline(&l), None);
        assert!(!g.stalled(&l, t0 + stall * 10));
    }
}
