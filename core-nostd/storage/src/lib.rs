//! A block device over a byte region, whose requests can be replayed after a
//! crash without being executed twice.
//!
//! # Why this crate exists
//! `storage_driver` is the demo device of the reincarnation server: a block
//! device that persists (a file on Linux, RAM in firmware), so a crash in the
//! middle of a write is visible and the replay rules of CONTRACTS.md §2–§3 can be
//! checked byte for byte. The request handler is a deterministic function of
//! (committed [`StorageState`], request, device contents); it is `no_std`, needs
//! no allocator, and never panics on client input.
//!
//! # Layout of the region
//! Block 0 is the [`Superblock`]; client block `lba` (0-based, `0..blocks`) is
//! region block `lba + 1`. A region therefore holds [`region_bytes`]`(blocks)`
//! bytes.
//!
//! # Exactly once at the device
//! Requests arrive in FIFO order, one at a time, so at most one write can have
//! reached the device without its reply (and state commit) reaching the
//! supervisor. A write-type request writes its data (absolute), then records
//! its id in the superblock (`last_applied`, with the committed `writes` count
//! it was applied on, `last_base`) and bumps `applied_count`. When a request
//! arrives whose id is `last_applied` *and* whose committed state is still
//! `last_base`, its effect is not applied
//! again ([`Effect::AlreadyApplied`]): the reply and new state are recomputed
//! from the committed state, exactly as the first attempt computed them. A
//! crash between data and superblock simply re-writes the same bytes. Append is
//! relative: a replay of the watermarked request is resolved against the
//! cursor the superblock recorded for it, so it lands on the same blocks;
//! any other request appends at the larger of its committed cursor and the
//! device's (also in the superblock), so a supervisor that kept no
//! checkpoint never appends over blocks appended in an earlier lifetime.
//!
//! # Shape (the device-core template: every core has these files)
//! - `regs.rs`: the layout above as code: the [`Superblock`] and its
//!   encoding, [`BLOCK_SIZE`], where a client block lives. A region device
//!   has no register block; this is its equivalent, and like every core here
//!   it has no `unsafe` (the region is reached through [`Region`]).
//! - `handler.rs`: requests, replies and errors, the committed
//!   [`StorageState`], and [`Storage::handle`] with the watermark;
//!   `bulk.rs` is its second entry, [`Storage::handle_bulk`], for data in a
//!   session's shared pool.
//! - no `model.rs`: the device is a byte region, and [`RamRegion`] (from
//!   `reinc-region`) is the in-memory stand-in the tests run against.
//! - `trace.rs`: the post-mortem [`Trace`] entries and their codes and
//!   [`TRACE_LEGEND`], made from one table by `reinc_ringbuf::trace_legend!`.
//! - `tests.rs`: the handler's behaviour over a RAM region, and a model
//!   check of crash and replay (`trace.rs` keeps the check of its table).
//!
//! # Designs tried and rejected
//! - Keeping `last_applied` only in the supervisor's checkpoint: the checkpoint
//!   is committed with the reply, which is exactly what is missing after a crash
//!   between effect and reply. The watermark must live with the effect.
//! - A journal of recent request ids: one id suffices because only one request
//!   is ever in doubt (FIFO, one at a time).
//! - Letting Append read only a tail pointer from the device: a replay after
//!   the superblock update would append a second time. The superblock keeps
//!   the cursor its last request was applied at too, which a replay uses.
//! - Recovering the whole state from the device at `Init` when no checkpoint
//!   is given: whether the last applied request was answered (take the state
//!   after it) or is about to be replayed (take the state before it) is not
//!   on the device; resolving per request, as above, needs no such guess.
//! - Mapping the backing file (`memmap2`) in the host driver: needs `unsafe`
//!   above the UIO layer, and a file truncated by someone else becomes SIGBUS.
//!   [`Region`] is `read_at`/`write_at`, which `pread`/`pwrite` implement safely.
//! - A private copy of [`Region`], [`RamRegion`] and the superblock's seal and
//!   watermark code: `net_core` needs the very same, so it lives once in
//!   `reinc-region` (re-exported here); the superblock layout stays here.
#![no_std]
#![forbid(unsafe_code)]

mod bulk;
mod handler;
pub mod integrity;
mod regs;
mod trace;

pub use bulk::{BulkRequest, MAX_BULK_BLOCKS, PoolIo, PoolIoError, bulk_tag_bytes, bulk_trace};
pub use handler::{
    HandleError, MAX_BLOCKS_PER_REQUEST, MAX_REPLY_DATA, MAX_ZERO_BLOCKS, OpenError, Outcome, StateError, Storage,
    StorageError, StorageReply, StorageRequest, StorageState, decode_request,
};
pub use integrity::{Mismatch, TAG_BYTES, block_tag};
pub use regs::{BLOCK_SIZE, SUPERBLOCK_MAGIC, Superblock, SuperblockError, region_bytes};
pub use reinc_region::{Effect, OutOfBounds, RamRegion, Region};
pub use trace::{TRACE_LEGEND, TRACE_SLOTS, Trace};

#[cfg(test)]
mod tests;
