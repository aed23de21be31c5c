//! A behavioural model of the BCM2835 GPIO block, in ordinary memory.
//!
//! It implements [`GpioRegisters`] with the datasheet semantics that the
//! handler relies on, so the handler's tests exercise behaviour rather than
//! "which word was written":
//! - GPSET/GPCLR change only the output latch of the pins whose bit is 1;
//! - GPLEV shows the latch for pins whose function is output, and the level
//!   driven from outside (see [`GpioModel::drive`]) for every other pin;
//! - edge and level detection latch into GPEDS according to the six enable
//!   families, and writing 1 to GPEDS clears a bit (a level-detect bit
//!   re-latches at once while its condition still holds);
//! - bits of pins 54..63 do not exist and are ignored.
//!
//! Every write is logged (up to [`LOG_CAPACITY`] entries) so tests can check
//! what reached the device and in which order, e.g. that an invalid request
//! produced no write at all. It needs no allocator, so host and firmware tests
//! can both use it; the host driver's tests use it as a stand-in device.

use heapless::Vec;

use crate::pin::{Bank, DetectKind, Function, Level, Pin, PinSet};
use crate::regs::GpioRegisters;

/// Number of writes the model remembers.
pub const LOG_CAPACITY: usize = 128;

/// One register write seen by the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// GPFSEL`index` = value.
    Fsel {
        /// Register index.
        index: usize,
        /// Value written.
        value: u32,
    },
    /// GPSET of a bank.
    Set(Bank, u32),
    /// GPCLR of a bank.
    Clear(Bank, u32),
    /// GPEDS of a bank (write 1 to clear).
    ClearEvents(Bank, u32),
    /// A detect-enable register.
    Detect(DetectKind, Bank, u32),
}

/// The modelled GPIO block. Reset state: every pin an input, latches low,
/// nothing driven, no detection enabled.
#[derive(Debug, Clone, Default)]
pub struct GpioModel {
    fsel: [u32; 6],
    latch: u64,
    pads: u64,
    eds: u64,
    detect: [u64; 6],
    log: Vec<Write, LOG_CAPACITY>,
    writes: usize,
}

impl GpioModel {
    /// A block in its reset state.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Drives `pin` from outside the chip (a button, a jumper). Visible in
    /// GPLEV while the pin is not an output; may latch an event.
    pub fn drive(&mut self, pin: Pin, level: Level) {
        let before = self.levels();
        let bit = pin.as_set().bits();
        self.pads = if level == Level::High { self.pads | bit } else { self.pads & !bit };
        self.settle(before);
    }

    /// The function currently selected for `pin`.
    #[must_use]
    pub fn function(&self, pin: Pin) -> Function {
        Function::from_field(self.fsel[pin.fsel_index()] >> pin.fsel_shift())
    }

    /// The output latch of `pin` (what it drives when it is an output).
    #[must_use]
    pub fn latch(&self, pin: Pin) -> Level {
        Level::from_bit(self.latch & pin.as_set().bits() != 0)
    }

    /// The level GPLEV reports for `pin`.
    #[must_use]
    pub fn pin_level(&self, pin: Pin) -> Level {
        Level::from_bit(self.levels() & pin.as_set().bits() != 0)
    }

    /// Latched events (GPEDS of both banks).
    #[must_use]
    pub fn pending_events(&self) -> PinSet {
        PinSet::from_banks(self.eds as u32, (self.eds >> 32) as u32)
    }

    /// The logged writes, oldest first (at most [`LOG_CAPACITY`]).
    #[must_use]
    pub fn log(&self) -> &[Write] {
        &self.log
    }

    /// Total number of register writes, including those the log dropped.
    #[must_use]
    pub fn write_count(&self) -> usize {
        self.writes
    }

    /// Forgets the write log (the device state stays).
    pub fn clear_log(&mut self) {
        self.log.clear();
        self.writes = 0;
    }

    /// Simulates a power cycle of the block (everything back to reset), as a
    /// stand-in for "somebody else reconfigured the pins while the driver was
    /// down". The external drive stays: it is not part of the chip.
    pub fn reset(&mut self) {
        let pads = self.pads;
        *self = Self { pads, ..Self::default() };
    }

    fn record(&mut self, w: Write) {
        self.writes += 1;
        // A full log drops new entries; `write_count` still counts them.
        let _ = self.log.push(w);
    }

    /// GPLEV of both banks as one mask.
    fn levels(&self) -> u64 {
        let mut outputs = 0u64;
        for n in 0..crate::pin::PIN_COUNT {
            let pin = Pin::new(n).expect("n < PIN_COUNT");
            if self.function(pin) == Function::Output {
                outputs |= pin.as_set().bits();
            }
        }
        ((self.latch & outputs) | (self.pads & !outputs)) & PinSet::ALL.bits()
    }

    /// Latches events caused by a change of levels from `before`.
    fn settle(&mut self, before: u64) {
        let after = self.levels();
        let rose = !before & after;
        let fell = before & !after;
        let d = &self.detect;
        let new = (rose & (d[DetectKind::Rising.index()] | d[DetectKind::AsyncRising.index()]))
            | (fell & (d[DetectKind::Falling.index()] | d[DetectKind::AsyncFalling.index()]))
            | (after & d[DetectKind::High.index()])
            | (!after & d[DetectKind::Low.index()]);
        self.eds |= new & PinSet::ALL.bits();
    }

    fn bank_shift(bank: Bank) -> u32 {
        bank.index() as u32 * 32
    }
}

impl GpioRegisters for GpioModel {
    fn fsel(&self, index: usize) -> u32 {
        self.fsel[index]
    }

    fn write_fsel(&mut self, index: usize, value: u32) {
        self.record(Write::Fsel { index, value });
        let before = self.levels();
        // GPFSEL5 holds only pins 50..53 (12 bits); the rest reads as zero.
        self.fsel[index] = if index == 5 { value & 0xFFF } else { value & 0x3FFF_FFFF };
        self.settle(before);
    }

    fn set(&mut self, bank: Bank, mask: u32) {
        self.record(Write::Set(bank, mask));
        let before = self.levels();
        self.latch |= (u64::from(mask) << Self::bank_shift(bank)) & PinSet::ALL.bits();
        self.settle(before);
    }

    fn clear(&mut self, bank: Bank, mask: u32) {
        self.record(Write::Clear(bank, mask));
        let before = self.levels();
        self.latch &= !(u64::from(mask) << Self::bank_shift(bank));
        self.settle(before);
    }

    fn level(&self, bank: Bank) -> u32 {
        (self.levels() >> Self::bank_shift(bank)) as u32
    }

    fn events(&self, bank: Bank) -> u32 {
        (self.eds >> Self::bank_shift(bank)) as u32
    }

    fn clear_events(&mut self, bank: Bank, mask: u32) {
        self.record(Write::ClearEvents(bank, mask));
        self.eds &= !(u64::from(mask) << Self::bank_shift(bank));
        // Level detection re-latches immediately while its condition holds.
        let now = self.levels();
        self.settle(now);
    }

    fn detect(&self, kind: DetectKind, bank: Bank) -> u32 {
        (self.detect[kind.index()] >> Self::bank_shift(bank)) as u32
    }

    fn write_detect(&mut self, kind: DetectKind, bank: Bank, value: u32) {
        self.record(Write::Detect(kind, bank, value));
        let shift = Self::bank_shift(bank);
        let reg = &mut self.detect[kind.index()];
        *reg = (*reg & !(u64::from(u32::MAX) << shift)) | ((u64::from(value) << shift) & PinSet::ALL.bits());
        let now = self.levels();
        self.settle(now);
    }
}
