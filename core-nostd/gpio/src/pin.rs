//! Pins, pin sets, levels, directions and edge-detect kinds: the vocabulary of
//! the GPIO block, independent of how the registers are reached.

use bitflags::bitflags;
use serde::{Deserialize, Serialize};

use crate::GpioError;

/// Number of GPIO pins on the BCM2835/BCM2837 (GPIO0..=GPIO53).
pub const PIN_COUNT: u8 = 54;

/// A validated BCM2835 pin number (`0..=53`).
///
/// Requests carry raw `u8` pin numbers (the wire is untrusted); the handler
/// turns them into a `Pin` before touching any register, so an invalid number
/// is an error reply and never a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pin(u8);

impl Pin {
    /// Validates `n`.
    ///
    /// # Errors
    /// [`GpioError::InvalidPin`] when `n > 53`.
    pub const fn new(n: u8) -> Result<Self, GpioError> {
        if n < PIN_COUNT { Ok(Self(n)) } else { Err(GpioError::InvalidPin { pin: n }) }
    }

    /// The pin number.
    #[must_use]
    pub const fn number(self) -> u8 {
        self.0
    }

    /// The 32-pin bank (register index 0 or 1 of the two-register families).
    #[must_use]
    pub const fn bank(self) -> Bank {
        if self.0 < 32 { Bank::B0 } else { Bank::B1 }
    }

    /// This pin's bit inside its bank's register.
    #[must_use]
    pub const fn bank_bit(self) -> u32 {
        1 << (self.0 % 32)
    }

    /// The GPFSEL register index (`0..=5`) that holds this pin's function.
    #[must_use]
    pub const fn fsel_index(self) -> usize {
        (self.0 / 10) as usize
    }

    /// The bit offset of this pin's 3-bit field inside its GPFSEL register.
    #[must_use]
    pub const fn fsel_shift(self) -> u32 {
        (self.0 % 10) as u32 * 3
    }

    /// This pin as a one-element [`PinSet`].
    #[must_use]
    pub const fn as_set(self) -> PinSet {
        PinSet(1 << self.0)
    }
}

/// One of the two 32-pin banks of the level/set/clear/event registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bank {
    /// GPIO0..=GPIO31 (register 0 of each family).
    B0,
    /// GPIO32..=GPIO53 (register 1; bits 22..31 do not exist).
    B1,
}

impl Bank {
    /// Both banks, in order.
    pub const ALL: [Bank; 2] = [Bank::B0, Bank::B1];

    /// Index into a two-register family.
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            Bank::B0 => 0,
            Bank::B1 => 1,
        }
    }
}

/// A set of pins as a bitmask (bit `n` = GPIO`n`). Only bits `0..54` may be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct PinSet(u64);

impl PinSet {
    /// No pin.
    pub const EMPTY: PinSet = PinSet(0);
    /// Every pin of the BCM2835.
    pub const ALL: PinSet = PinSet((1 << PIN_COUNT) - 1);

    /// Validates a raw mask.
    ///
    /// # Errors
    /// [`GpioError::InvalidPinSet`] when a bit at or above 54 is set.
    pub const fn from_bits(bits: u64) -> Result<Self, GpioError> {
        if bits & !Self::ALL.0 == 0 { Ok(Self(bits)) } else { Err(GpioError::InvalidPinSet { bits }) }
    }

    /// The raw mask.
    #[must_use]
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether every bit is a real pin (deserialised sets are not trusted).
    #[must_use]
    pub const fn is_valid(self) -> bool {
        self.0 & !Self::ALL.0 == 0
    }

    /// Whether `pin` is in the set.
    #[must_use]
    pub const fn contains(self, pin: Pin) -> bool {
        self.0 & (1 << pin.0) != 0
    }

    /// Whether every pin of `other` is in `self`.
    #[must_use]
    pub const fn is_superset_of(self, other: PinSet) -> bool {
        other.0 & !self.0 == 0
    }

    /// `self` with `pin` added or removed.
    #[must_use]
    pub const fn with(self, pin: Pin, present: bool) -> PinSet {
        if present { PinSet(self.0 | (1 << pin.0)) } else { PinSet(self.0 & !(1 << pin.0)) }
    }

    /// Set union.
    #[must_use]
    pub const fn union(self, other: PinSet) -> PinSet {
        PinSet(self.0 | other.0)
    }

    /// Set intersection.
    #[must_use]
    pub const fn intersection(self, other: PinSet) -> PinSet {
        PinSet(self.0 & other.0)
    }

    /// Pins of `self` not in `other`.
    #[must_use]
    pub const fn difference(self, other: PinSet) -> PinSet {
        PinSet(self.0 & !other.0)
    }

    /// Whether the set is empty.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of pins in the set.
    #[must_use]
    pub const fn len(self) -> u32 {
        self.0.count_ones()
    }

    /// The part of the set that lives in `bank`, as that bank's register mask.
    #[must_use]
    pub const fn bank_mask(self, bank: Bank) -> u32 {
        match bank {
            Bank::B0 => self.0 as u32,
            Bank::B1 => (self.0 >> 32) as u32,
        }
    }

    /// Builds a set from the two bank registers, dropping bits of pins that do
    /// not exist (bank 1 bits 22..31 read as whatever the silicon returns).
    #[must_use]
    pub const fn from_banks(b0: u32, b1: u32) -> PinSet {
        PinSet(((b1 as u64) << 32 | b0 as u64) & Self::ALL.0)
    }

    /// The pins of the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = Pin> {
        (0..PIN_COUNT).filter(move |n| self.0 & (1 << n) != 0).map(Pin)
    }
}

/// A pin's logic level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Level {
    /// 0 V.
    Low,
    /// 3.3 V.
    High,
}

impl Level {
    /// The other level.
    #[must_use]
    pub const fn inverted(self) -> Level {
        match self {
            Level::Low => Level::High,
            Level::High => Level::Low,
        }
    }

    /// `High` for a set bit.
    #[must_use]
    pub const fn from_bit(bit: bool) -> Level {
        if bit { Level::High } else { Level::Low }
    }
}

/// The two GPIO functions this driver manages. The six alternate functions
/// belong to other peripherals (UART, SPI, I2C, PWM, ...) and are refused by
/// design: switching a pin to an alternate function is a board-configuration
/// decision, made by the device tree, not by a client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// GPFSEL field `000`.
    Input,
    /// GPFSEL field `001`.
    Output,
}

/// The 3-bit GPFSEL function field, decoded. Used to report what a pin is
/// currently doing (which may be an alternate function set by the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Function {
    /// `000`.
    Input,
    /// `001`.
    Output,
    /// `100`.
    Alt0,
    /// `101`.
    Alt1,
    /// `110`.
    Alt2,
    /// `111`.
    Alt3,
    /// `011`.
    Alt4,
    /// `010`.
    Alt5,
}

impl Function {
    /// Decodes a GPFSEL field (only the low 3 bits are looked at).
    #[must_use]
    pub const fn from_field(field: u32) -> Function {
        match field & 0b111 {
            0b000 => Function::Input,
            0b001 => Function::Output,
            0b100 => Function::Alt0,
            0b101 => Function::Alt1,
            0b110 => Function::Alt2,
            0b111 => Function::Alt3,
            0b011 => Function::Alt4,
            _ => Function::Alt5,
        }
    }

    /// The GPFSEL field encoding.
    #[must_use]
    pub const fn field(self) -> u32 {
        match self {
            Function::Input => 0b000,
            Function::Output => 0b001,
            Function::Alt0 => 0b100,
            Function::Alt1 => 0b101,
            Function::Alt2 => 0b110,
            Function::Alt3 => 0b111,
            Function::Alt4 => 0b011,
            Function::Alt5 => 0b010,
        }
    }
}

impl From<Direction> for Function {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Input => Function::Input,
            Direction::Output => Function::Output,
        }
    }
}

/// One register family of the event-detect block, i.e. one kind of event a pin
/// can be told to latch into GPEDS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DetectKind {
    /// GPREN: synchronous (debounced by the 2-sample filter) rising edge.
    Rising,
    /// GPFEN: synchronous falling edge.
    Falling,
    /// GPHEN: level high (re-latches while the pin stays high).
    High,
    /// GPLEN: level low.
    Low,
    /// GPAREN: asynchronous rising edge (no sampling filter).
    AsyncRising,
    /// GPAFEN: asynchronous falling edge.
    AsyncFalling,
}

impl DetectKind {
    /// All six families, in register order.
    pub const ALL: [DetectKind; 6] = [
        DetectKind::Rising,
        DetectKind::Falling,
        DetectKind::High,
        DetectKind::Low,
        DetectKind::AsyncRising,
        DetectKind::AsyncFalling,
    ];

    /// Position in [`DetectKind::ALL`].
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            DetectKind::Rising => 0,
            DetectKind::Falling => 1,
            DetectKind::High => 2,
            DetectKind::Low => 3,
            DetectKind::AsyncRising => 4,
            DetectKind::AsyncFalling => 5,
        }
    }

    /// The matching flag of [`Detect`].
    #[must_use]
    pub const fn flag(self) -> Detect {
        match self {
            DetectKind::Rising => Detect::RISING,
            DetectKind::Falling => Detect::FALLING,
            DetectKind::High => Detect::HIGH,
            DetectKind::Low => Detect::LOW,
            DetectKind::AsyncRising => Detect::ASYNC_RISING,
            DetectKind::AsyncFalling => Detect::ASYNC_FALLING,
        }
    }
}

bitflags! {
    /// Which events a pin latches into GPEDS: one flag per enable-register
    /// family. A `ConfigureEdge` request carries the complete set for a pin
    /// (absolute, so replaying it is harmless).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
    pub struct Detect: u8 {
        /// GPREN.
        const RISING = 1 << 0;
        /// GPFEN.
        const FALLING = 1 << 1;
        /// GPHEN.
        const HIGH = 1 << 2;
        /// GPLEN.
        const LOW = 1 << 3;
        /// GPAREN.
        const ASYNC_RISING = 1 << 4;
        /// GPAFEN.
        const ASYNC_FALLING = 1 << 5;
    }
}
