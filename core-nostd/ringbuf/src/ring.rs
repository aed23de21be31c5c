//! The in-memory ring (Hubris `lib/ringbuf` style).

/// One slot of a [`Ringbuf`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<T> {
    /// Sequence number of the first occurrence (grows by one per new entry).
    pub seq: u32,
    /// How many consecutive times `payload` was recorded (at least 1).
    pub count: u32,
    /// The recorded value.
    pub payload: T,
}

/// A fixed-capacity ring of the last `N` distinct consecutive entries.
///
/// Recording the same payload twice in a row bumps the newest entry's
/// [`Entry::count`] instead of using a new slot, so repetitive events (a
/// heartbeat, a spurious interrupt) cannot evict the interesting history.
#[derive(Debug, Clone)]
pub struct Ringbuf<T, const N: usize> {
    entries: [Option<Entry<T>>; N],
    /// Index of the slot the next new entry goes into.
    next: usize,
    /// Sequence number of the next new entry.
    seq: u32,
}

impl<T: Copy + PartialEq, const N: usize> Default for Ringbuf<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + PartialEq, const N: usize> Ringbuf<T, N> {
    /// An empty ring. `const`, so a firmware can keep one in a `static`.
    #[must_use]
    pub const fn new() -> Self {
        assert!(N > 0, "a Ringbuf needs at least one slot");
        Self { entries: [None; N], next: 0, seq: 0 }
    }

    /// Records `payload`, counting it if it equals the newest entry.
    pub fn record(&mut self, payload: T) {
        let newest = (self.next + N - 1) % N;
        if let Some(e) = &mut self.entries[newest]
            && e.payload == payload
            && e.count < u32::MAX
        {
            e.count += 1;
            return;
        }
        self.entries[self.next] = Some(Entry { seq: self.seq, count: 1, payload });
        self.seq = self.seq.wrapping_add(1);
        self.next = (self.next + 1) % N;
    }

    /// The newest entry.
    #[must_use]
    pub fn last(&self) -> Option<&Entry<T>> {
        self.entries[(self.next + N - 1) % N].as_ref()
    }

    /// Number of occupied slots (at most `N`).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.is_some()).count()
    }

    /// True before the first [`Ringbuf::record`].
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<T>> + '_ {
        (0..N).filter_map(move |i| self.entries[(self.next + i) % N].as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_entries_are_counted_not_duplicated() {
        let mut r: Ringbuf<u8, 4> = Ringbuf::new();
        r.record(1);
        r.record(2);
        r.record(2);
        r.record(2);
        r.record(1);
        let got: [(u32, u32, u8); 3] = [(0, 1, 1), (1, 3, 2), (2, 1, 1)];
        assert!(r.iter().map(|e| (e.seq, e.count, e.payload)).eq(got));
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn wraparound_keeps_the_newest_n_oldest_first() {
        let mut r: Ringbuf<u32, 3> = Ringbuf::new();
        for v in 10..17 {
            r.record(v);
        }
        assert!(r.iter().map(|e| e.payload).eq([14, 15, 16]));
        assert!(r.iter().map(|e| e.seq).eq([4, 5, 6]));
        assert_eq!(r.last().map(|e| e.payload), Some(16));
    }

    #[test]
    fn empty_ring_has_no_entries() {
        let r: Ringbuf<u8, 2> = Ringbuf::default();
        assert!(r.is_empty());
        assert!(r.last().is_none());
        assert_eq!(r.iter().count(), 0);
    }

    #[test]
    fn a_repeat_after_wraparound_counts_on_the_newest_slot() {
        let mut r: Ringbuf<u8, 2> = Ringbuf::new();
        r.record(1);
        r.record(2);
        r.record(3); // evicts 1, lands in slot 0
        r.record(3);
        assert!(r.iter().map(|e| (e.payload, e.count)).eq([(2, 1), (3, 2)]));
    }
}
