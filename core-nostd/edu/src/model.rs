//! An in-memory behavioural model of QEMU's edu device, for tests.
//!
//! It follows `hw/misc/edu.c`: liveness stores the inverse of what is written;
//! a factorial write is ignored while a computation runs, otherwise it stores
//! n and sets `COMPUTING`; the computation finishes after a configurable number
//! of register reads (standing in for QEMU's worker thread), stores n! modulo
//! 2^32, clears `COMPUTING` and raises [`IrqBits::FACTORIAL`] if
//! `IRQ_ON_DONE` is set; raise ORs into the interrupt status and ack clears
//! bits; only `IRQ_ON_DONE` of the status register is writable.
//!
//! The model is public so that host crates (the edu driver, cross-crate tests)
//! can run the real driver logic without QEMU.

use crate::regs::{EduRegisters, IrqBits, ReadReg, Status, WriteReg};

/// The id register of QEMU's edu device (version 1.0).
pub const MODEL_ID: u32 = 0x0100_00ed;

/// The behavioural model. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EduModel {
    id: u32,
    liveness: u32,
    factorial: u32,
    status: Status,
    irq_status: IrqBits,
    /// Reads left before the running computation completes; `None` when idle.
    remaining: Option<u32>,
    /// Reads a computation takes; `u32::MAX` means it never finishes.
    latency: u32,
    /// Times the interrupt line went from low to high (what a UIO event
    /// counter would see on a level-triggered, masked-on-fire line).
    line_raises: u32,
    /// Register accesses so far (reads and writes).
    accesses: u64,
}

impl Default for EduModel {
    fn default() -> Self {
        Self::new()
    }
}

impl EduModel {
    /// A freshly reset device whose computations finish after 3 register reads.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            id: MODEL_ID,
            liveness: 0,
            factorial: 0,
            status: Status::empty(),
            irq_status: IrqBits::empty(),
            remaining: None,
            latency: 3,
            line_raises: 0,
            accesses: 0,
        }
    }

    /// Sets how many register reads a computation takes (`u32::MAX`: it never
    /// finishes, modelling a wedged device).
    #[must_use]
    pub const fn with_latency(mut self, reads: u32) -> Self {
        self.latency = reads;
        self
    }

    /// Replaces the id register (to model a device that is not edu).
    #[must_use]
    pub const fn with_id(mut self, id: u32) -> Self {
        self.id = id;
        self
    }

    /// Lets time pass until the running computation (if any) is finished, as
    /// QEMU's worker thread would while a driver sleeps waiting for the interrupt.
    pub fn finish_computation(&mut self) {
        if self.remaining.is_some() && self.latency != u32::MAX {
            self.complete();
        }
    }

    /// Whether the interrupt line is asserted (any interrupt status bit set).
    #[must_use]
    pub fn irq_line(&self) -> bool {
        !self.irq_status.is_empty()
    }

    /// How many times the line went from low to high.
    #[must_use]
    pub const fn line_raises(&self) -> u32 {
        self.line_raises
    }

    /// The status register as the device holds it.
    #[must_use]
    pub const fn status(&self) -> Status {
        self.status
    }

    /// The interrupt status register as the device holds it.
    #[must_use]
    pub const fn irq_status(&self) -> IrqBits {
        self.irq_status
    }

    /// Register accesses so far.
    #[must_use]
    pub const fn accesses(&self) -> u64 {
        self.accesses
    }

    fn raise(&mut self, bits: IrqBits) {
        let was_low = self.irq_status.is_empty();
        self.irq_status |= bits;
        if was_low && !self.irq_status.is_empty() {
            self.line_raises = self.line_raises.wrapping_add(1);
        }
    }

    fn complete(&mut self) {
        let n = self.factorial;
        self.factorial = (1..=n).fold(1u32, u32::wrapping_mul);
        self.remaining = None;
        self.status.remove(Status::COMPUTING);
        if self.status.contains(Status::IRQ_ON_DONE) {
            self.raise(IrqBits::FACTORIAL);
        }
    }

    /// Time passes by one register read.
    fn tick(&mut self) {
        if self.latency == u32::MAX {
            return;
        }
        match self.remaining {
            Some(0) | Some(1) => self.complete(),
            Some(left) => self.remaining = Some(left - 1),
            None => {}
        }
    }
}

impl EduRegisters for EduModel {
    fn read(&mut self, reg: ReadReg) -> u32 {
        self.accesses += 1;
        self.tick();
        match reg {
            ReadReg::Id => self.id,
            ReadReg::Liveness => self.liveness,
            ReadReg::Factorial => self.factorial,
            ReadReg::Status => self.status.bits(),
            ReadReg::IrqStatus => self.irq_status.bits(),
            ReadReg::DmaSrc | ReadReg::DmaDst | ReadReg::DmaCount | ReadReg::DmaCmd => 0,
        }
    }

    fn write(&mut self, reg: WriteReg, value: u32) {
        self.accesses += 1;
        match reg {
            WriteReg::Liveness => self.liveness = !value,
            WriteReg::Factorial => {
                if !self.status.contains(Status::COMPUTING) {
                    self.factorial = value;
                    self.status.insert(Status::COMPUTING);
                    self.remaining = Some(self.latency);
                }
            }
            WriteReg::Status => {
                self.status.set(Status::IRQ_ON_DONE, value & Status::IRQ_ON_DONE.bits() != 0);
            }
            WriteReg::IrqRaise => self.raise(IrqBits::from_bits_retain(value)),
            WriteReg::IrqAck => self.irq_status.remove(IrqBits::from_bits_retain(value)),
        }
    }
}
