//! Trace ring buffers for post-mortem debugging of driver instances.
//!
//! # Why this crate exists
//! When a driver dies, its log may be cut short, but the operator still wants
//! to know what the instance was doing in its last moments (`drvctl trace
//! NAME`). Two rings serve that purpose:
//!
//! - [`Ringbuf`]: an in-memory ring in the style of Hubris' `lib/ringbuf`.
//!   Consecutive identical entries are *counted* instead of duplicated, so a
//!   driver that spins on the same event does not wash older history out of the
//!   ring. It is what firmware and in-process inspection use.
//! - [`shared`]: a fixed cross-process format. The driver runtime writes every
//!   record into a memfd that the supervisor created, with `pwrite` only. The
//!   supervisor still holds the memfd after the driver died and decodes it with
//!   [`shared::records`], which tolerates a slot the dead process tore in half.
//!
//! The shared area is self-describing: a driver registers its core's
//! [`Legend`] (`code -> name`, plus names for `a`/`b`), written once into a
//! CRC-checked area after the header, so the supervisor and `drvctl trace`
//! print `storage: applied lba=0x1d00 blocks=0x40` for a driver they know
//! nothing about, and fall back to hex when the legend is missing or corrupt.
//!
//! [`Event`] is the vocabulary of the driver runtime (and a generic
//! [`Event::Driver`] escape hatch for device cores), [`Record`] one decoded
//! entry of the shared ring.
//!
//! # Designs tried and rejected
//! - Mapping the memfd in the driver and writing records through a pointer:
//!   needs `unsafe` in the runtime, and a torn write is just as possible;
//!   `pwrite` of one 64-byte slot keeps every crate above the UIO layer safe.
//! - Variable-length records in a byte stream: a torn record would desynchronise
//!   the reader from every record after it. Fixed slots confine the damage to
//!   one slot, which its CRC identifies.
//! - Trusting the header cursor alone: the process may die between writing a
//!   slot and advancing the cursor, so the reader also accepts the slot at the
//!   cursor when its own sequence number and CRC say it is complete.
//! - Names for driver events: a registry of every core's legend compiled into
//!   the supervisor and `drvctl` ties them to every driver crate and fails
//!   for third-party binaries; a name inside every record would not fit a
//!   64-byte slot beside its arguments and would be rewritten on every event;
//!   a separate legend file beside the memfd adds a second lifetime to manage.
//!   A fixed-size legend area in the same memfd costs 2 KiB, is written once
//!   per instance with the same `pwrite`, and dies with the ring.
//! - `defmt`/RTT-style host decoding: needs a probe, and the supervisor must
//!   decode traces of processes it supervises with no tooling at all.
#![no_std]
#![forbid(unsafe_code)]

mod event;
mod legend;
mod ring;
pub mod shared;

pub use event::{Event, Record};
pub use legend::{ARG_MAX, LEGEND_ENTRIES, Legend, LegendEntry, LegendProblem, NAME_MAX, NamedEvent, SUBSYSTEM_MAX};
pub use ring::{Entry, Ringbuf};
