//! Fixed-capacity FIFO of in-flight requests, keyed by request id.
//!
//! # Why this crate exists
//! The supervisor holds, per driver, every request it accepted and that has no
//! reply yet. That queue is what makes a driver crash invisible to clients:
//! after a restart it is replayed from its head, in order. It must be bounded
//! (a full queue is backpressure, reported as an explicit error, never a
//! silent drop), must keep arrival order, must refuse a second copy of an id
//! (a duplicate would execute twice), and must know which entries the current
//! driver instance has already been sent (the in-flight *window*), so that
//! the supervisor can pipeline a few requests without flooding the driver.
//!
//! # Model
//! ```text
//!   head                                   tail
//!   [ e0 | e1 | e2 | e3 | e4 | e5 ]
//!   \____ forwarded ___/\ waiting /
//! ```
//! Entries `0..forwarded` were sent to the current instance; a reply must be
//! for `e0` (drivers answer in FIFO order). [`RequestQueue::rewind`] after a
//! restart sets `forwarded` to 0, so everything is sent again from the head.
//!
//! # Designs rejected
//! - A map keyed by id plus a separate order list: two structures to keep in
//!   step, for a queue that holds a few dozen entries; a linear scan for
//!   duplicates over a contiguous ring is cheaper than hashing at this size.
//! - Removing an entry when it is forwarded (keeping only "waiting" ones): the
//!   entry would be lost if the driver crashed before replying. An entry
//!   leaves the queue only with its reply (or a definite error).
//! - Dynamic allocation: the crate must build for firmware with no allocator,
//!   so capacity is a const generic over `heapless::Deque`.
#![no_std]
#![forbid(unsafe_code)]

use heapless::Deque;
use reinc_proto::RequestId;

/// One accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<P> {
    /// The request's id.
    pub id: RequestId,
    /// Whatever the owner needs to forward it again (the encoded body).
    pub payload: P,
    /// Arrival time, in the owner's clock (milliseconds).
    pub arrived_ms: u64,
    /// How many driver instances died while this entry was the oldest
    /// forwarded one (poison detection).
    pub crashes: u32,
}

/// Why the queue refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError<P> {
    /// The queue holds `capacity` entries already (backpressure). The
    /// payload is handed back.
    #[error("request queue is full ({capacity} entries)")]
    Full {
        /// The queue's capacity.
        capacity: usize,
        /// The refused payload.
        payload: P,
    },
    /// An entry with this id is already queued.
    #[error("request {id} is already queued")]
    Duplicate {
        /// The id.
        id: RequestId,
        /// The refused payload.
        payload: P,
    },
}

/// A reply did not match the queue's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CompleteError {
    /// The queue has no forwarded entry.
    #[error("reply for {got} but nothing was forwarded")]
    NothingInFlight {
        /// The reply's id.
        got: RequestId,
    },
    /// The reply is for another request than the oldest forwarded one.
    #[error("reply for {got} but the oldest forwarded request is {expected}")]
    OutOfOrder {
        /// The head's id.
        expected: RequestId,
        /// The reply's id.
        got: RequestId,
    },
}

/// A bounded FIFO of requests with an in-flight window.
#[derive(Debug)]
pub struct RequestQueue<P, const N: usize> {
    entries: Deque<Entry<P>, N>,
    /// Entries `0..forwarded` were sent to the current instance.
    forwarded: usize,
}

impl<P, const N: usize> Default for RequestQueue<P, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P, const N: usize> RequestQueue<P, N> {
    /// An empty queue.
    #[must_use]
    pub const fn new() -> Self {
        Self { entries: Deque::new(), forwarded: 0 }
    }

    /// The capacity, `N`.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Number of queued entries (forwarded or not).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of entries sent to the current instance and not yet answered.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.forwarded
    }

    /// True if an entry with `id` is queued.
    #[must_use]
    pub fn contains(&self, id: RequestId) -> bool {
        self.entries.iter().any(|e| e.id == id)
    }

    /// Appends a request at the tail.
    ///
    /// # Errors
    /// [`QueueError::Duplicate`] if `id` is queued already (checked first, so
    /// a retry of a queued request is never reported as backpressure),
    /// [`QueueError::Full`] if the queue is full.
    pub fn push(&mut self, id: RequestId, payload: P, arrived_ms: u64) -> Result<(), QueueError<P>> {
        if self.contains(id) {
            return Err(QueueError::Duplicate { id, payload });
        }
        self.entries
            .push_back(Entry { id, payload, arrived_ms, crashes: 0 })
            .map_err(|e| QueueError::Full { capacity: N, payload: e.payload })
    }

    /// The next entry to send to the driver, if fewer than `window` are in
    /// flight; it counts as forwarded from now on.
    pub fn forward_next(&mut self, window: usize) -> Option<&Entry<P>> {
        if self.forwarded >= window {
            return None;
        }
        let e = self.entries.get(self.forwarded)?;
        self.forwarded += 1;
        Some(e)
    }

    /// Removes and returns the head, which must be the forwarded entry `id`
    /// (drivers answer in FIFO order).
    ///
    /// # Errors
    /// [`CompleteError`] if `id` is not the oldest forwarded entry; the queue
    /// is unchanged.
    pub fn complete(&mut self, id: RequestId) -> Result<Entry<P>, CompleteError> {
        match self.entries.front() {
            Some(head) if self.forwarded > 0 => {
                if head.id != id {
                    return Err(CompleteError::OutOfOrder { expected: head.id, got: id });
                }
            }
            _ => return Err(CompleteError::NothingInFlight { got: id }),
        }
        self.forwarded -= 1;
        self.entries.pop_front().ok_or(CompleteError::NothingInFlight { got: id })
    }

    /// The current instance is gone: nothing is in flight any more, and the
    /// next [`forward_next`](Self::forward_next) starts again at the head.
    /// Returns how many entries will be replayed.
    pub fn rewind(&mut self) -> usize {
        self.forwarded = 0;
        self.entries.len()
    }

    /// The oldest entry.
    #[must_use]
    pub fn head(&self) -> Option<&Entry<P>> {
        self.entries.front()
    }

    /// The oldest entry, mutably (to count crashes attributed to it).
    pub fn head_mut(&mut self) -> Option<&mut Entry<P>> {
        self.entries.front_mut()
    }

    /// True if the head was forwarded to the current instance.
    #[must_use]
    pub fn head_in_flight(&self) -> bool {
        self.forwarded > 0
    }

    /// Removes the head without a reply (poisoned request). Only allowed
    /// while nothing is in flight (between instances), so the window stays
    /// consistent.
    pub fn drop_head(&mut self) -> Option<Entry<P>> {
        if self.forwarded > 0 {
            return None;
        }
        self.entries.pop_front()
    }

    /// Removes every entry, oldest first (quarantine: each gets a definite error).
    pub fn drain(&mut self) -> impl Iterator<Item = Entry<P>> + '_ {
        self.forwarded = 0;
        core::iter::from_fn(move || self.entries.pop_front())
    }

    /// The entries, oldest first, each with whether it is in flight.
    pub fn iter(&self) -> impl Iterator<Item = (&Entry<P>, bool)> + '_ {
        self.entries.iter().enumerate().map(move |(i, e)| (e, i < self.forwarded))
    }
}

#[cfg(test)]
mod tests;
