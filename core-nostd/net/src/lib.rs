//! A software loopback packet device whose requests can be replayed after a
//! crash without being executed twice.
//!
//! # Why this crate exists
//! `net_driver` is the second demo device: where the storage device is about
//! absolute block writes, this one is a queue, the classic case of a relative
//! operation ("send the next packet", "take the next packet") that must still
//! be replay-safe. The answer is the driver contract's (CONTRACTS.md §2): resolve the relative
//! request against committed state inside the handler. The committed
//! [`NetState`] holds the transmit and receive counters; `Send` writes the
//! packet to the absolute slot `tx % slots`, `Recv` reads the slot
//! `rx % slots`. Re-running either from the same committed state touches the
//! same slot and produces the same reply.
//!
//! # Layout of the region
//! ```text
//! header [0..64)   magic "REINCNET" | format u32 | slot bytes u32 | slots u32 | applied_count u64
//!                  | last_applied (present u8, client u64, seq u64) | last_base tx u64
//!                  | crc32 of 0..60 at 60
//! slot i [64 + i*SLOT_BYTES ..)   len u16 | crc32 u32 (of len + data) | data (≤ MTU bytes)
//! ```
//! `Send` writes its slot (absolute), then records its id and the committed
//! `tx` it was applied on in the header (`last_applied`, `last_base`,
//! `applied_count`): the same exactly-once watermark as the storage core. A
//! replay (same id, same committed `tx`) skips the write; a reused id on a
//! later committed state (client ids can repeat after a supervisor restart)
//! is a new packet.
//! `Recv` changes no device byte (consumption is the committed `rx`), so it is
//! idempotent without a watermark.
//!
//! # Shape (the device-core template: every core has these files)
//! - `regs.rs`: the layout above as code: [`Header`] and its encoding, the
//!   slot format and its checksum. A region device has no register block;
//!   this is its equivalent, and like every core here it has no `unsafe`
//!   (the region is reached through [`Region`]).
//! - `handler.rs`: requests, replies and errors, the committed [`NetState`],
//!   and [`Net::handle`].
//! - no `model.rs`: the device is a byte region, and [`RamRegion`] (from
//!   `reinc-region`) is the in-memory stand-in the tests run against.
//! - `trace.rs`: the post-mortem [`Trace`] entries and their codes and
//!   [`TRACE_LEGEND`], made from one table by `reinc_ringbuf::trace_legend!`.
//! - `tests.rs`: the handler's behaviour over a RAM region (`trace.rs` keeps
//!   the check of its table).
//!
//! # Designs tried and rejected
//! - Head/tail indices stored in the device and updated by each request:
//!   "advance the tail" is relative, and a replay after the update would skip
//!   or duplicate a packet. The indices are committed state instead.
//! - Marking a slot "consumed" on `Recv`: a device effect that buys nothing,
//!   since the committed `rx` already says which slots are free.
//! - Sharing `storage-core`'s `Region` trait: it would make one device core
//!   depend on another. The trait, the RAM region and the sealed header with
//!   its watermark live in `reinc-region`, which both cores use.
#![no_std]
#![forbid(unsafe_code)]

mod handler;
mod regs;
mod trace;

pub use handler::{
    HandleError, Net, NetError, NetReply, NetRequest, NetState, OpenError, Outcome, StateError, decode_request,
};
pub use regs::{HEADER_BYTES, Header, HeaderError, MAGIC, MTU, SLOT_BYTES, region_bytes};
pub use reinc_region::{Effect, OutOfBounds, RamRegion, Region};
pub use trace::{TRACE_LEGEND, TRACE_SLOTS, Trace};

#[cfg(test)]
mod tests;
