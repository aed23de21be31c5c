//! Bulk requests: the data lives in the client session's shared pool, and
//! the request names only a byte range of it.
//!
//! # Why
//! A [`StorageRequest::Write`] carries its bytes in the message, so they are
//! copied through the supervisor's two sockets each way, 32 KiB at a time;
//! that is what held `drvctl blk` and the NBD front end far below a plain
//! file server. A [`BulkRequest`] instead names `(lba, blocks, pool_offset)`
//! in a sealed memfd that the client and this driver both map (the
//! supervisor passes the descriptor on, CONTRACTS.md "Bulk data"), so a
//! request is a few dozen bytes whatever its size, and one may move up to
//! [`MAX_BULK_BLOCKS`] blocks (4 MiB) instead of 32 KiB.
//!
//! # Replay and exactly once
//! The rules of the crate docs hold unchanged: a bulk write records its id
//! in the superblock watermark with its data, and a replay of the
//! watermarked write is recognised and not applied again. Replay reads the
//! pool again, which is correct because a client keeps a range pinned (does
//! not reuse it) until the request that names it is answered; and the
//! supervisor hands the pool to every new instance before it replays.
//!
//! # Checked by the driver, or by the client
//! A [`StorageRequest::Bulk`] leaves the block checksums
//! ([`crate::integrity`]) to the driver: a read checks the blocks against
//! their stored tags before it fills the pool, a write computes the tags of
//! what it wrote. That costs the driver a second pass over every byte (a
//! read of the range, then the transfer), and it checks only the device:
//! damage on the way into or out of the pool goes unseen.
//! A [`StorageRequest::BulkTagged`] moves that work to the client, where the
//! data is born and where it lands, which is both cheaper and end to end:
//! - a write carries the client's tag of every block, and the driver stores
//!   them as they are, next to the data it moved with one `pwrite`; a block
//!   that changed on its way (or a client that sent wrong tags) is caught by
//!   the next read of it, naming the block;
//! - a read moves the data with one `pread` and answers
//!   [`StorageReply::FilledTagged`] with the stored tags, which the client
//!   checks against the bytes it finds in the pool.
//!
//! The driver verifies nothing in either, and needs no buffer for the data
//! (only [`TAG_BYTES`] per block for the reply). `drvctl blk` uses it; the
//! NBD front end, which never copies the pool's bytes into its own memory,
//! keeps the driver-checked form.
//!
//! # Never trusting the range
//! `pool_offset` and the length come from the client. They are checked
//! against the pool's size before any transfer; a bad range, a session with
//! no pool, or a pool whose pages cannot be had ([`StorageError::PoolFault`])
//! are definite refusals, like any other bad request: the driver neither
//! crashes nor writes anything (for `PoolFault` on a write: nothing beyond
//! the bytes the kernel managed to copy before the fault, and the watermark
//! does not move, so the client knows the write did not happen and may
//! resend it). A pool that could shrink is refused when it is attached, in
//! the host, so the mapping can never turn into `SIGBUS`.
//!
//! # Designs rejected
//! - Extending [`StorageRequest::Write`] with an optional pool range: every
//!   existing request would change its bytes, and the 32 KiB limit that
//!   keeps socket frames small has no reason to bind a pool range.
//! - Moving the bytes between the pool and the region inside this crate:
//!   the core has no pool and no file, only [`Region`]; [`PoolIo`] lets the
//!   host do the transfer with one `pread`/`pwrite` straight between its
//!   file and the mapping (no copy through a buffer of ours).

use crate::integrity::TAG_BYTES;
use crate::regs::data_offset;
use crate::{
    BLOCK_SIZE, Effect, HandleError, Outcome, Region, Storage, StorageError, StorageReply, StorageState, Trace,
};
use reinc_proto::RequestId;
use serde::{Deserialize, Serialize};

/// Most blocks one bulk request may move (4 MiB).
pub const MAX_BULK_BLOCKS: u32 = 8192;

/// A request whose data is in the session's pool
/// ([`StorageRequest::Bulk`](crate::StorageRequest::Bulk)).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkRequest {
    /// Reads `blocks` blocks at `lba` into the pool at `pool_offset`;
    /// answered [`StorageReply::Filled`].
    ReadInto {
        /// First block.
        lba: u64,
        /// Blocks, `1..=MAX_BULK_BLOCKS`.
        blocks: u32,
        /// Byte offset in the pool.
        pool_offset: u64,
    },
    /// Writes `blocks` blocks at `lba` from the pool at `pool_offset`
    /// (absolute); answered [`StorageReply::Written`].
    WriteFrom {
        /// First block.
        lba: u64,
        /// Blocks, `1..=MAX_BULK_BLOCKS`.
        blocks: u32,
        /// Byte offset in the pool.
        pool_offset: u64,
    },
}

/// Why a transfer between region and pool failed.
#[derive(Debug)]
pub enum PoolIoError<E> {
    /// The region (the device) failed: a host failure, the request is replayed.
    Region(E),
    /// The pool's memory could not be read or written (`EFAULT`): the
    /// client's fault, answered [`StorageError::PoolFault`].
    Pool,
}

/// The host's half of a bulk request: the session's pool, and the transfer
/// between it and the region.
pub trait PoolIo<R: Region> {
    /// The pool's size in bytes; `None` when the session attached none (or
    /// the one it attached was refused).
    fn pool_len(&self) -> Option<u64>;
    /// Copies `len` region bytes at `region_off` into the pool at `pool_off`.
    ///
    /// # Errors
    /// [`PoolIoError`].
    fn fill_pool(
        &mut self,
        region: &mut R,
        region_off: u64,
        pool_off: u64,
        len: u64,
    ) -> Result<(), PoolIoError<R::Error>>;
    /// Copies `len` pool bytes at `pool_off` into the region at `region_off`.
    ///
    /// # Errors
    /// [`PoolIoError`].
    fn drain_pool(
        &mut self,
        region: &mut R,
        pool_off: u64,
        region_off: u64,
        len: u64,
    ) -> Result<(), PoolIoError<R::Error>>;
}

/// Who computes and checks the block tags of a bulk request (module docs,
/// "Checked by the driver, or by the client").
#[derive(Debug, Clone, Copy)]
enum Checks<'t> {
    /// [`StorageRequest::Bulk`](crate::StorageRequest::Bulk).
    Driver,
    /// [`StorageRequest::BulkTagged`](crate::StorageRequest::BulkTagged):
    /// the client's tags of a write (empty for a read).
    Client(&'t [u8]),
}

/// Bytes of tags the reply to a [`StorageRequest::BulkTagged`](crate::StorageRequest::BulkTagged)
/// read of `blocks` blocks carries: what the reply buffer of
/// [`Storage::handle_bulk_tagged`] must hold.
#[must_use]
pub const fn bulk_tag_bytes(blocks: u32) -> usize {
    blocks as usize * TAG_BYTES
}

// The host drivers' reply buffer holds the tags of the largest bulk read.
const _: () = assert!(bulk_tag_bytes(MAX_BULK_BLOCKS) <= crate::MAX_REPLY_DATA);

impl<R: Region> Storage<R> {
    /// Handles one bulk request against the committed `state`, moving data
    /// through `pool`, the driver checking and computing the block tags.
    /// Same determinism and replay rules as [`handle`](Self::handle).
    ///
    /// # Errors
    /// [`HandleError::Io`] when the region fails (never for the pool's
    /// faults, which are refusals).
    pub fn handle_bulk<P: PoolIo<R>>(
        &mut self,
        state: &StorageState,
        id: RequestId,
        req: &BulkRequest,
        pool: &mut P,
    ) -> Result<Outcome<'static>, HandleError<R::Error>> {
        self.run_bulk(state, id, req, Checks::Driver, pool, &mut [])
    }

    /// Handles a [`StorageRequest::BulkTagged`](crate::StorageRequest::BulkTagged):
    /// as [`handle_bulk`](Self::handle_bulk), but the tags are the client's
    /// (`tags`, one per block of a write, empty for a read), and a read's
    /// answer carries the stored tags in `reply_buf`
    /// ([`bulk_tag_bytes`] of it are needed).
    ///
    /// # Errors
    /// [`HandleError::Io`] when the region fails;
    /// [`HandleError::ReplyBuffer`] when `reply_buf` cannot hold the tags.
    pub fn handle_bulk_tagged<'r, P: PoolIo<R>>(
        &mut self,
        state: &StorageState,
        id: RequestId,
        req: &BulkRequest,
        tags: &[u8],
        pool: &mut P,
        reply_buf: &'r mut [u8],
    ) -> Result<Outcome<'r>, HandleError<R::Error>> {
        self.run_bulk(state, id, req, Checks::Client(tags), pool, reply_buf)
    }

    fn run_bulk<'r, P: PoolIo<R>>(
        &mut self,
        state: &StorageState,
        id: RequestId,
        req: &BulkRequest,
        checks: Checks<'_>,
        pool: &mut P,
        reply_buf: &'r mut [u8],
    ) -> Result<Outcome<'r>, HandleError<R::Error>> {
        let out = self.decide_bulk(state, id, req, checks, pool, reply_buf);
        match &out {
            Ok(o) => {
                if let Some(t) = bulk_trace(req, o) {
                    self.trace.record(t);
                }
            }
            Err(HandleError::Io { off, .. }) => self.trace.record(Trace::IoFailed { off: *off }),
            Err(HandleError::ReplyBuffer { .. }) => {}
        }
        out
    }

    fn decide_bulk<'r, P: PoolIo<R>>(
        &mut self,
        state: &StorageState,
        id: RequestId,
        req: &BulkRequest,
        checks: Checks<'_>,
        pool: &mut P,
        reply_buf: &'r mut [u8],
    ) -> Result<Outcome<'r>, HandleError<R::Error>> {
        let refuse = |e| Ok(Outcome { state: *state, reply: StorageReply::Error(e), effect: Effect::None });
        let (BulkRequest::ReadInto { lba, blocks, pool_offset } | BulkRequest::WriteFrom { lba, blocks, pool_offset }) =
            *req;
        if let Err(e) = check_bulk(lba, blocks, self.sb.blocks) {
            return refuse(e);
        }
        let len = u64::from(blocks) * BLOCK_SIZE as u64;
        let Some(pool_len) = pool.pool_len() else { return refuse(StorageError::NoPool) };
        if pool_offset.checked_add(len).is_none_or(|end| end > pool_len) {
            return refuse(StorageError::PoolRange { pool_offset, len, pool: pool_len });
        }
        let off = data_offset(lba);
        // check_bulk bounds blocks by MAX_BULK_BLOCKS, which fits u16.
        let short = blocks as u16;
        let tag_len = bulk_tag_bytes(blocks);
        // A client-checked request carries one tag per block for a write,
        // none for a read.
        if let Checks::Client(t) = checks {
            let expected = if matches!(req, BulkRequest::WriteFrom { .. }) { tag_len } else { 0 };
            if t.len() != expected {
                return refuse(StorageError::Tags { len: u32::try_from(t.len()).unwrap_or(u32::MAX), blocks: short });
            }
        }
        match (*req, checks) {
            // A block damaged on the device is refused, not copied out
            // (storage_core::integrity).
            (BulkRequest::ReadInto { .. }, Checks::Driver)
                if let Err(e) = self.check_range_stored(lba, u64::from(blocks))? =>
            {
                refuse(e)
            }
            (BulkRequest::ReadInto { .. }, _) => {
                let have = reply_buf.len();
                let tags = match checks {
                    Checks::Driver => None,
                    Checks::Client(_) => {
                        Some(reply_buf.get_mut(..tag_len).ok_or(HandleError::ReplyBuffer { need: tag_len, have })?)
                    }
                };
                match pool.fill_pool(&mut self.region, off, pool_offset, len) {
                    Ok(()) => {}
                    Err(PoolIoError::Pool) => return refuse(StorageError::PoolFault),
                    Err(PoolIoError::Region(source)) => return Err(HandleError::Io { off, source }),
                }
                let reply = match tags {
                    None => StorageReply::Filled { lba, blocks },
                    // The client checks the pool's bytes against these.
                    Some(tags) => {
                        self.read_tags(lba, tags)?;
                        StorageReply::FilledTagged { lba, blocks, tags }
                    }
                };
                Ok(Outcome { state: *state, reply, effect: Effect::None })
            }
            (BulkRequest::WriteFrom { .. }, _) => {
                let cursor = self.cursor(id, state);
                let effect = if self.sb.watermark().is_replay(id, state.writes) {
                    Effect::AlreadyApplied
                } else {
                    match pool.drain_pool(&mut self.region, pool_offset, off, len) {
                        Ok(()) => {}
                        Err(PoolIoError::Pool) => return refuse(StorageError::PoolFault),
                        Err(PoolIoError::Region(source)) => return Err(HandleError::Io { off, source }),
                    }
                    match checks {
                        // The pool's data came without checksums: tag it as written.
                        Checks::Driver => self.retag(lba, u64::from(blocks))?,
                        // Stored as the client computed them, unchecked:
                        // a mismatch is caught by the next read.
                        Checks::Client(tags) => self.write_tags(lba, tags)?,
                    }
                    self.advance_watermark(id, state.writes, (cursor, cursor))?
                };
                let state = StorageState { append_cursor: cursor, writes: state.writes + 1 };
                Ok(Outcome { state, reply: StorageReply::Written { lba, blocks: short }, effect })
            }
        }
    }
}

/// The trace entry of a bulk outcome.
#[must_use]
pub fn bulk_trace(req: &BulkRequest, out: &Outcome<'_>) -> Option<Trace> {
    match (*req, out.reply, out.effect) {
        (_, StorageReply::Error(e), _) => Some(Trace::Refused(e)),
        (BulkRequest::ReadInto { lba, blocks, .. }, _, _) => Some(Trace::Read { lba, blocks: blocks as u16 }),
        (BulkRequest::WriteFrom { .. }, StorageReply::Written { lba, blocks }, Effect::Applied) => {
            Some(Trace::Applied { lba, blocks })
        }
        (BulkRequest::WriteFrom { .. }, StorageReply::Written { lba, blocks }, _) => {
            Some(Trace::AlreadyApplied { lba, blocks })
        }
        _ => None,
    }
}

fn check_bulk(lba: u64, blocks: u32, capacity: u64) -> Result<(), StorageError> {
    let too_large = |blocks| StorageError::BulkTooLarge { blocks };
    crate::handler::check_extent(lba, blocks, (MAX_BULK_BLOCKS, too_large), capacity)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::{RamRegion, StorageRequest, region_bytes};
    use reinc_proto::ClientId;
    use std::{vec, vec::Vec};

    const BLOCKS: u64 = 16;

    /// A pool in RAM; `fault` makes every transfer fail as `EFAULT` would.
    struct RamPool {
        bytes: Option<Vec<u8>>,
        fault: bool,
    }

    impl<R: Region> PoolIo<R> for RamPool {
        fn pool_len(&self) -> Option<u64> {
            self.bytes.as_ref().map(|b| b.len() as u64)
        }
        fn fill_pool(
            &mut self,
            region: &mut R,
            region_off: u64,
            pool_off: u64,
            len: u64,
        ) -> Result<(), PoolIoError<R::Error>> {
            if self.fault {
                return Err(PoolIoError::Pool);
            }
            let pool = self.bytes.as_mut().expect("pool present");
            let at = pool_off as usize;
            region.read_at(region_off, &mut pool[at..at + len as usize]).map_err(PoolIoError::Region)
        }
        fn drain_pool(
            &mut self,
            region: &mut R,
            pool_off: u64,
            region_off: u64,
            len: u64,
        ) -> Result<(), PoolIoError<R::Error>> {
            if self.fault {
                return Err(PoolIoError::Pool);
            }
            let pool = self.bytes.as_ref().expect("pool present");
            let at = pool_off as usize;
            region.write_at(region_off, &pool[at..at + len as usize]).map_err(PoolIoError::Region)
        }
    }

    fn id(seq: u64) -> RequestId {
        RequestId { client: ClientId(9), seq }
    }

    /// A RAM region that counts the calls made of it (each is a system
    /// call on a file region).
    struct Counting<'a> {
        inner: RamRegion<'a>,
        calls: usize,
    }

    impl Region for Counting<'_> {
        type Error = reinc_region::OutOfBounds;
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn read_at(&mut self, off: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
            self.calls += 1;
            self.inner.read_at(off, buf)
        }
        fn write_at(&mut self, off: u64, data: &[u8]) -> Result<(), Self::Error> {
            self.calls += 1;
            self.inner.write_at(off, data)
        }
    }

    #[test]
    fn a_megabyte_bulk_read_or_write_costs_tens_of_region_calls_not_hundreds() {
        const MIB_BLOCKS: u64 = (1 << 20) / BLOCK_SIZE as u64;
        let mut ram = vec![0u8; region_bytes(MIB_BLOCKS) as usize];
        Storage::open(RamRegion(&mut ram), MIB_BLOCKS).unwrap();
        let mut dev = Storage::open(Counting { inner: RamRegion(&mut ram), calls: 0 }, MIB_BLOCKS).unwrap();
        let mut p = pool(1 << 20);
        let blocks = MIB_BLOCKS as u32;
        let before = dev.region().calls;
        let w = BulkRequest::WriteFrom { lba: 0, blocks, pool_offset: 0 };
        let out = dev.handle_bulk(&StorageState::default(), id(1), &w, &mut p).unwrap();
        assert_eq!(out.reply, StorageReply::Written { lba: 0, blocks: blocks as u16 });
        let writes = dev.region().calls - before;
        let r = BulkRequest::ReadInto { lba: 0, blocks, pool_offset: 0 };
        let out = dev.handle_bulk(&out.state, id(2), &r, &mut p).unwrap();
        assert_eq!(out.reply, StorageReply::Filled { lba: 0, blocks });
        let reads = dev.region().calls - before - writes;
        // 2 048 blocks in 64-block chunks: 32 chunks, each a data call and
        // a tag call, plus the transfer itself and the superblock.
        assert!(writes <= 2 * 32 + 2, "{writes} region calls for a 1 MiB bulk write");
        assert!(reads <= 2 * 32 + 1, "{reads} region calls for a 1 MiB bulk read");
    }

    fn pool(len: usize) -> RamPool {
        RamPool { bytes: Some((0..len).map(|i| (i as u8).wrapping_mul(13).wrapping_add(5)).collect()), fault: false }
    }

    #[test]
    fn bulk_write_then_bulk_read_moves_the_pool_bytes() {
        let mut ram = vec![0u8; region_bytes(BLOCKS) as usize];
        let mut dev = Storage::open(RamRegion(&mut ram), BLOCKS).unwrap();
        let mut p = pool(8 * BLOCK_SIZE);
        let written: Vec<u8> = p.bytes.as_ref().unwrap()[BLOCK_SIZE..3 * BLOCK_SIZE].to_vec();
        let w = BulkRequest::WriteFrom { lba: 4, blocks: 2, pool_offset: BLOCK_SIZE as u64 };
        let out = dev.handle_bulk(&StorageState::default(), id(1), &w, &mut p).unwrap();
        assert_eq!(out.reply, StorageReply::Written { lba: 4, blocks: 2 });
        assert_eq!(out.effect, Effect::Applied);
        assert_eq!(out.state.writes, 1);
        let r = BulkRequest::ReadInto { lba: 4, blocks: 2, pool_offset: 5 * BLOCK_SIZE as u64 };
        let out2 = dev.handle_bulk(&out.state, id(2), &r, &mut p).unwrap();
        assert_eq!(out2.reply, StorageReply::Filled { lba: 4, blocks: 2 });
        assert_eq!(out2.effect, Effect::None);
        assert_eq!(&p.bytes.as_ref().unwrap()[5 * BLOCK_SIZE..7 * BLOCK_SIZE], &written[..]);
        let _ = dev.into_region();
        assert_eq!(&ram[5 * BLOCK_SIZE..7 * BLOCK_SIZE], &written[..], "lba 4 is region block 5");
    }

    /// Bulk data passes no client checksum, but the table stays right: a
    /// checked read of bulk-written blocks verifies, and a block damaged on
    /// the device is refused by a bulk read as by any other.
    #[test]
    fn bulk_writes_keep_the_checksum_table_and_bulk_reads_refuse_a_damaged_block() {
        let mut ram = vec![0u8; region_bytes(BLOCKS) as usize];
        let mut dev = Storage::open(RamRegion(&mut ram), BLOCKS).unwrap();
        let mut p = pool(8 * BLOCK_SIZE);
        let w = BulkRequest::WriteFrom { lba: 2, blocks: 3, pool_offset: 0 };
        let out = dev.handle_bulk(&StorageState::default(), id(1), &w, &mut p).unwrap();
        let mut buf = vec![0u8; crate::MAX_REPLY_DATA];
        let read = StorageRequest::ReadChecked { lba: 2, blocks: 3 };
        match dev.handle(&out.state, id(2), &read, &mut buf).unwrap().reply {
            StorageReply::DataChecked { data, tags } => assert_eq!(crate::integrity::verify(2, data, tags), Ok(())),
            other => panic!("{other:?}"),
        }
        let _ = dev.into_region();
        ram[(3 + 1) * BLOCK_SIZE + 9] ^= 0x20; // client block 3
        let mut dev = Storage::open(RamRegion(&mut ram), BLOCKS).unwrap();
        let r = BulkRequest::ReadInto { lba: 2, blocks: 3, pool_offset: 4 * BLOCK_SIZE as u64 };
        let got = dev.handle_bulk(&out.state, id(3), &r, &mut p).unwrap();
        assert!(matches!(got.reply, StorageReply::Error(StorageError::Corrupt { lba: 3, .. })), "{:?}", got.reply);
    }

    #[test]
    fn replay_of_the_watermarked_bulk_write_is_not_applied_twice() {
        let mut ram = vec![0u8; region_bytes(BLOCKS) as usize];
        let mut dev = Storage::open(RamRegion(&mut ram), BLOCKS).unwrap();
        let mut p = pool(4 * BLOCK_SIZE);
        let w = BulkRequest::WriteFrom { lba: 0, blocks: 4, pool_offset: 0 };
        let state = StorageState::default();
        let first = dev.handle_bulk(&state, id(1), &w, &mut p).unwrap();
        // The instance died before its reply: the same request, from the
        // same committed state, on a new instance over the same region.
        let _ = dev.into_region();
        let mut dev = Storage::open(RamRegion(&mut ram), BLOCKS).unwrap();
        let again = dev.handle_bulk(&state, id(1), &w, &mut p).unwrap();
        assert_eq!(again.effect, Effect::AlreadyApplied);
        assert_eq!((again.state, again.reply), (first.state, first.reply));
        assert_eq!(dev.superblock().applied_count, 1);
    }

    #[test]
    fn bad_ranges_and_missing_pools_are_refused_and_write_nothing() {
        let mut ram = vec![0u8; region_bytes(BLOCKS) as usize];
        let before = ram.clone();
        let mut dev = Storage::open(RamRegion(&mut ram), BLOCKS).unwrap();
        let state = StorageState::default();
        let pool_len = 4 * BLOCK_SIZE as u64;
        let cases = [
            (
                BulkRequest::WriteFrom { lba: 0, blocks: 2, pool_offset: 3 * BLOCK_SIZE as u64 },
                StorageError::PoolRange {
                    pool_offset: 3 * BLOCK_SIZE as u64,
                    len: 2 * BLOCK_SIZE as u64,
                    pool: pool_len,
                },
            ),
            (
                BulkRequest::ReadInto { lba: 0, blocks: 1, pool_offset: u64::MAX },
                StorageError::PoolRange { pool_offset: u64::MAX, len: BLOCK_SIZE as u64, pool: pool_len },
            ),
            (BulkRequest::WriteFrom { lba: 0, blocks: 0, pool_offset: 0 }, StorageError::Empty),
            (
                BulkRequest::WriteFrom { lba: 0, blocks: MAX_BULK_BLOCKS + 1, pool_offset: 0 },
                StorageError::BulkTooLarge { blocks: MAX_BULK_BLOCKS + 1 },
            ),
            (
                BulkRequest::WriteFrom { lba: BLOCKS - 1, blocks: 2, pool_offset: 0 },
                StorageError::OutOfRange { lba: BLOCKS - 1, blocks: 2, capacity: BLOCKS },
            ),
            (
                BulkRequest::WriteFrom { lba: u64::MAX, blocks: 1, pool_offset: 0 },
                StorageError::OutOfRange { lba: u64::MAX, blocks: 1, capacity: BLOCKS },
            ),
        ];
        for (seq, (req, want)) in cases.into_iter().enumerate() {
            let out = dev.handle_bulk(&state, id(seq as u64 + 1), &req, &mut pool(pool_len as usize)).unwrap();
            assert_eq!(out.reply, StorageReply::Error(want), "{req:?}");
            assert_eq!((out.state, out.effect), (state, Effect::None), "{req:?}");
        }
        let w = BulkRequest::WriteFrom { lba: 0, blocks: 1, pool_offset: 0 };
        let no_pool = dev.handle_bulk(&state, id(50), &w, &mut RamPool { bytes: None, fault: false }).unwrap();
        assert_eq!(no_pool.reply, StorageReply::Error(StorageError::NoPool));
        let mut faulty = pool(pool_len as usize);
        faulty.fault = true;
        let fault = dev.handle_bulk(&state, id(51), &w, &mut faulty).unwrap();
        assert_eq!(fault.reply, StorageReply::Error(StorageError::PoolFault));
        assert_eq!(dev.superblock().applied_count, 0, "no refused request moved the watermark");
        // Without a pool at all (the plain handler) a bulk request is refused too.
        let mut buf = [0u8; 16];
        let plain = dev.handle(&state, id(52), &StorageRequest::Bulk(w), &mut buf).unwrap();
        assert_eq!(plain.reply, StorageReply::Error(StorageError::NoPool));
        let _ = dev.into_region();
        assert_eq!(ram[BLOCK_SIZE..], before[BLOCK_SIZE..], "no data block changed");
    }

    #[test]
    fn bulk_requests_have_fixed_wire_bytes() {
        let req = StorageRequest::Bulk(BulkRequest::WriteFrom { lba: 1, blocks: 2, pool_offset: 3 });
        assert_eq!(postcard::to_allocvec(&req).unwrap(), [6, 1, 1, 2, 3]);
        let reply = StorageReply::Filled { lba: 1, blocks: 2 };
        assert_eq!(postcard::to_allocvec(&reply).unwrap(), [7, 1, 2]);
        // The client-checked forms came later, as new variants at the end:
        // every older encoding above is unchanged.
        let tagged =
            StorageRequest::BulkTagged { req: BulkRequest::ReadInto { lba: 1, blocks: 2, pool_offset: 3 }, tags: &[] };
        assert_eq!(postcard::to_allocvec(&tagged).unwrap(), [9, 0, 1, 2, 3, 0]);
        let reply = StorageReply::FilledTagged { lba: 1, blocks: 1, tags: &[1, 2, 3, 4] };
        assert_eq!(postcard::to_allocvec(&reply).unwrap(), [9, 1, 1, 4, 1, 2, 3, 4]);
    }

    /// The client's tags of `blocks` blocks at `lba` of the pool at `at`.
    fn client_tags(p: &RamPool, lba: u64, blocks: usize, at: usize) -> Vec<u8> {
        let data = &p.bytes.as_ref().unwrap()[at..at + blocks * BLOCK_SIZE];
        let mut tags = vec![0u8; blocks * crate::integrity::TAG_BYTES];
        crate::integrity::tags_into(lba, data, &mut tags);
        tags
    }

    #[test]
    fn a_tagged_write_stores_the_clients_tags_and_a_tagged_read_answers_them_with_the_data() {
        let mut ram = vec![0u8; region_bytes(BLOCKS) as usize];
        let mut dev = Storage::open(RamRegion(&mut ram), BLOCKS).unwrap();
        let mut p = pool(8 * BLOCK_SIZE);
        let tags = client_tags(&p, 2, 3, 0);
        let w = BulkRequest::WriteFrom { lba: 2, blocks: 3, pool_offset: 0 };
        let mut buf = vec![0u8; crate::MAX_REPLY_DATA];
        let out = dev.handle_bulk_tagged(&StorageState::default(), id(1), &w, &tags, &mut p, &mut buf).unwrap();
        assert_eq!((out.reply, out.effect), (StorageReply::Written { lba: 2, blocks: 3 }, Effect::Applied));
        assert_eq!(out.state.writes, 1);
        let state = out.state;
        let r = BulkRequest::ReadInto { lba: 2, blocks: 3, pool_offset: 4 * BLOCK_SIZE as u64 };
        let got = dev.handle_bulk_tagged(&state, id(2), &r, &[], &mut p, &mut buf).unwrap();
        match got.reply {
            StorageReply::FilledTagged { lba: 2, blocks: 3, tags: stored } => assert_eq!(stored, &tags[..]),
            other => panic!("{other:?}"),
        }
        let bytes = p.bytes.as_ref().unwrap();
        assert_eq!(bytes[4 * BLOCK_SIZE..7 * BLOCK_SIZE], bytes[..3 * BLOCK_SIZE]);
        assert_eq!(crate::integrity::verify(2, &bytes[4 * BLOCK_SIZE..7 * BLOCK_SIZE], &tags), Ok(()));
        // The driver-checked forms agree with what the client stored.
        let r = BulkRequest::ReadInto { lba: 2, blocks: 3, pool_offset: 0 };
        assert_eq!(
            dev.handle_bulk(&state, id(3), &r, &mut p).unwrap().reply,
            StorageReply::Filled { lba: 2, blocks: 3 }
        );
    }

    #[test]
    fn a_block_changed_on_its_way_into_a_tagged_write_is_caught_by_every_later_read() {
        let mut ram = vec![0u8; region_bytes(BLOCKS) as usize];
        let mut dev = Storage::open(RamRegion(&mut ram), BLOCKS).unwrap();
        let mut p = pool(8 * BLOCK_SIZE);
        let tags = client_tags(&p, 2, 3, 0);
        // Damage between the client's buffer (where the tags were computed)
        // and the pool: the driver stores it, unchecked.
        p.bytes.as_mut().unwrap()[BLOCK_SIZE + 5] ^= 0x08;
        let w = BulkRequest::WriteFrom { lba: 2, blocks: 3, pool_offset: 0 };
        let mut buf = vec![0u8; crate::MAX_REPLY_DATA];
        let out = dev.handle_bulk_tagged(&StorageState::default(), id(1), &w, &tags, &mut p, &mut buf).unwrap();
        assert_eq!(out.reply, StorageReply::Written { lba: 2, blocks: 3 });
        let out = Outcome { reply: StorageReply::Nop, ..out };
        // A tagged read hands the client data and tags that disagree at block 3.
        let r = BulkRequest::ReadInto { lba: 2, blocks: 3, pool_offset: 4 * BLOCK_SIZE as u64 };
        let got = dev.handle_bulk_tagged(&out.state, id(2), &r, &[], &mut p, &mut buf).unwrap();
        let StorageReply::FilledTagged { tags: stored, .. } = got.reply else { panic!("{:?}", got.reply) };
        let data = &p.bytes.as_ref().unwrap()[4 * BLOCK_SIZE..7 * BLOCK_SIZE];
        assert_eq!(crate::integrity::verify(2, data, stored).map_err(|m| m.lba), Err(3));
        // The driver-checked read and the message read refuse it.
        let r = BulkRequest::ReadInto { lba: 2, blocks: 3, pool_offset: 0 };
        let got = dev.handle_bulk(&out.state, id(3), &r, &mut p).unwrap();
        assert!(matches!(got.reply, StorageReply::Error(StorageError::Corrupt { lba: 3, .. })), "{:?}", got.reply);
        let got = dev.handle(&out.state, id(4), &StorageRequest::ReadChecked { lba: 2, blocks: 3 }, &mut buf).unwrap();
        assert!(matches!(got.reply, StorageReply::Error(StorageError::Corrupt { lba: 3, .. })), "{:?}", got.reply);
    }

    #[test]
    fn tagged_requests_with_tags_that_do_not_fit_are_refused_and_write_nothing() {
        let mut ram = vec![0u8; region_bytes(BLOCKS) as usize];
        Storage::open(RamRegion(&mut ram), BLOCKS).unwrap();
        let before = ram.clone();
        let mut dev = Storage::open(RamRegion(&mut ram), BLOCKS).unwrap();
        let mut p = pool(8 * BLOCK_SIZE);
        let state = StorageState::default();
        let mut buf = vec![0u8; crate::MAX_REPLY_DATA];
        let w = BulkRequest::WriteFrom { lba: 2, blocks: 3, pool_offset: 0 };
        let r = BulkRequest::ReadInto { lba: 2, blocks: 3, pool_offset: 0 };
        let eleven = [0u8; 11];
        for (req, tags) in [(w, &[][..]), (w, &eleven[..8]), (w, &eleven[..]), (r, &eleven[..4])] {
            let out = dev.handle_bulk_tagged(&state, id(1), &req, tags, &mut p, &mut buf).unwrap();
            let len = tags.len() as u32;
            assert_eq!(out.reply, StorageReply::Error(StorageError::Tags { len, blocks: 3 }), "{req:?}");
            assert_eq!((out.state, out.effect), (state, Effect::None));
        }
        // A reply buffer that cannot hold the tags is the host's error.
        let e = dev.handle_bulk_tagged(&state, id(2), &r, &[], &mut p, &mut buf[..11]);
        assert!(matches!(e, Err(HandleError::ReplyBuffer { need: 12, have: 11 })), "{e:?}");
        // Without a pool (the message path) the tagged form is refused.
        let req = StorageRequest::BulkTagged { req: r, tags: &[] };
        assert_eq!(dev.handle(&state, id(3), &req, &mut buf).unwrap().reply, StorageReply::Error(StorageError::NoPool));
        let _ = dev.into_region();
        assert_eq!(ram, before, "nothing changed on the device");
    }

    #[test]
    fn replay_of_the_watermarked_tagged_write_is_not_applied_twice() {
        let mut ram = vec![0u8; region_bytes(BLOCKS) as usize];
        let mut dev = Storage::open(RamRegion(&mut ram), BLOCKS).unwrap();
        let mut p = pool(8 * BLOCK_SIZE);
        let tags = client_tags(&p, 0, 2, 0);
        let w = BulkRequest::WriteFrom { lba: 0, blocks: 2, pool_offset: 0 };
        let mut buf = vec![0u8; crate::MAX_REPLY_DATA];
        let state = StorageState::default();
        let first = dev.handle_bulk_tagged(&state, id(1), &w, &tags, &mut p, &mut buf).unwrap();
        assert_eq!(first.effect, Effect::Applied);
        assert_eq!(first.reply, StorageReply::Written { lba: 0, blocks: 2 });
        let next = first.state;
        // The instance died before its reply was committed: the same
        // request from the same committed state.
        let again = dev.handle_bulk_tagged(&state, id(1), &w, &tags, &mut p, &mut buf).unwrap();
        assert_eq!(
            (again.reply, again.state, again.effect),
            (StorageReply::Written { lba: 0, blocks: 2 }, next, Effect::AlreadyApplied)
        );
    }

    #[test]
    fn a_tagged_megabyte_read_or_write_costs_a_few_region_calls() {
        const MIB_BLOCKS: u64 = (1 << 20) / BLOCK_SIZE as u64;
        let mut ram = vec![0u8; region_bytes(MIB_BLOCKS) as usize];
        Storage::open(RamRegion(&mut ram), MIB_BLOCKS).unwrap();
        let mut dev = Storage::open(Counting { inner: RamRegion(&mut ram), calls: 0 }, MIB_BLOCKS).unwrap();
        let mut p = pool(1 << 20);
        let tags = client_tags(&p, 0, MIB_BLOCKS as usize, 0);
        let mut buf = vec![0u8; crate::MAX_REPLY_DATA];
        let blocks = MIB_BLOCKS as u32;
        let before = dev.region().calls;
        let w = BulkRequest::WriteFrom { lba: 0, blocks, pool_offset: 0 };
        let out = dev.handle_bulk_tagged(&StorageState::default(), id(1), &w, &tags, &mut p, &mut buf).unwrap();
        let state = out.state;
        let writes = dev.region().calls - before;
        let r = BulkRequest::ReadInto { lba: 0, blocks, pool_offset: 0 };
        dev.handle_bulk_tagged(&state, id(2), &r, &[], &mut p, &mut buf).unwrap();
        let reads = dev.region().calls - before - writes;
        // The superblock, the tags, the data (the RAM pool's transfer is
        // one region call, like the host's pwrite): no pass of our own.
        assert_eq!((writes, reads), (3, 2));
    }
}
