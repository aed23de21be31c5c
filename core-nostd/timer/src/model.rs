//! A behavioural model of the BCM2835 system timer with a simulated clock.
//!
//! - The 64-bit counter moves only when told to ([`TimerModel::advance`]),
//!   or by [`TimerModel::set_ticks_per_read`] microseconds on every CLO/CHI
//!   read, which reproduces the CHI/CLO carry race deterministically.
//! - A compare channel latches its M bit when the counter's low word passes
//!   its compare value, as the hardware does (it compares CLO only, so a
//!   deadline more than 2^32 µs ahead would alias).
//! - CS is write-1-to-clear; the GPU's channels 0 and 2 also run, so tests
//!   can check that the driver never clears their bits.
//! - [`TimerModel::set_unstable_high`] makes CHI change on every read, a
//!   broken device, to test that the counter read gives up.
//! - [`TimerModel::irq_line`] is the level of the channel's interrupt line.
//!
//! It needs no allocator, so firmware tests and the host driver's tests can
//! use it.

use core::cell::Cell;

use crate::regs::TimerRegisters;
use crate::{Channel, Match};

/// The modelled system timer.
#[derive(Debug, Clone, Default)]
pub struct TimerModel {
    now: Cell<u64>,
    cs: Cell<u32>,
    c: [u32; 4],
    ticks_per_read: u64,
    unstable_high: Cell<Option<u32>>,
    writes: usize,
    cs_log: [u32; 8],
    cs_len: usize,
}

impl TimerModel {
    /// A timer at counter `now`, no matches latched, compares zero.
    #[must_use]
    pub fn new(now: u64) -> Self {
        Self { now: Cell::new(now), ..Self::default() }
    }

    /// The counter value.
    #[must_use]
    pub fn now(&self) -> u64 {
        self.now.get()
    }

    /// Lets `micros` microseconds pass, latching any compare match on the way.
    pub fn advance(&mut self, micros: u64) {
        self.tick(micros);
    }

    /// Every later CLO or CHI read lets `ticks` microseconds pass first.
    pub fn set_ticks_per_read(&mut self, ticks: u64) {
        self.ticks_per_read = ticks;
    }

    /// A broken device whose CHI differs on every read.
    pub fn set_unstable_high(&mut self, unstable: bool) {
        self.unstable_high.set(unstable.then_some(0));
    }

    /// Programs a GPU-owned compare channel (0 or 2), as the firmware would.
    pub fn set_gpu_compare(&mut self, hw_index: usize, value: u32) {
        assert!(hw_index == 0 || hw_index == 2, "channels 1 and 3 belong to the ARM");
        self.c[hw_index] = value;
    }

    /// Whether the interrupt line of `ch` is asserted (its M bit, a level).
    #[must_use]
    pub fn irq_line(&self, ch: Channel) -> bool {
        self.cs.get() & ch.match_bit().bits() != 0
    }

    /// The raw CS value (all four match bits).
    #[must_use]
    pub fn raw_status(&self) -> u32 {
        self.cs.get()
    }

    /// Number of register writes so far (CS and compare registers).
    #[must_use]
    pub fn write_count(&self) -> usize {
        self.writes
    }

    /// The first CS values written (up to 8), to check what was cleared.
    #[must_use]
    pub fn cs_writes(&self) -> &[u32] {
        &self.cs_log[..self.cs_len]
    }

    /// Simulates a reset of the ARM-side configuration (compare registers of
    /// channels 1 and 3 zeroed), as if something else reprogrammed the timer
    /// while the driver was down. The counter keeps running.
    pub fn scramble_arm_compares(&mut self) {
        self.c[1] = 0;
        self.c[3] = 0;
    }

    fn tick(&self, micros: u64) {
        if micros == 0 {
            return;
        }
        let old = self.now.get();
        let new = old.wrapping_add(micros);
        let mut cs = self.cs.get();
        for (i, c) in self.c.iter().enumerate() {
            // Ticks old+1 ..= new are `micros` ticks; the low word equals `c`
            // for the first time `offset` ticks after old+1.
            let offset = u64::from(c.wrapping_sub((old.wrapping_add(1)) as u32));
            if offset < micros {
                cs |= 1 << i;
            }
        }
        self.cs.set(cs);
        self.now.set(new);
    }
}

impl TimerRegisters for TimerModel {
    fn status(&self) -> Match {
        Match::from_bits_truncate(self.cs.get())
    }

    fn clear_match(&mut self, m: Match) {
        if let Some(slot) = self.cs_log.get_mut(self.cs_len) {
            *slot = m.bits();
            self.cs_len += 1;
        }
        self.writes += 1;
        // Faithful to the silicon: whatever is written is cleared, GPU bits
        // included. The handler's tests check (through `cs_writes`) that it
        // never asks for M0/M2; the real block additionally masks them.
        self.cs.set(self.cs.get() & !m.bits());
    }

    fn counter_low(&self) -> u32 {
        self.tick(self.ticks_per_read);
        self.now.get() as u32
    }

    fn counter_high(&self) -> u32 {
        self.tick(self.ticks_per_read);
        match self.unstable_high.get() {
            Some(n) => {
                self.unstable_high.set(Some(n.wrapping_add(1)));
                n
            }
            None => (self.now.get() >> 32) as u32,
        }
    }

    fn compare(&self, ch: Channel) -> u32 {
        self.c[ch.hw_index()]
    }

    fn write_compare(&mut self, ch: Channel, value: u32) {
        self.writes += 1;
        self.c[ch.hw_index()] = value;
    }
}
