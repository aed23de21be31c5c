//! The replay-safe handler: requests, replies and errors, the committed
//! [`StorageState`], and [`Storage::handle`] with its exactly-once watermark
//! (the crate documentation says how a replay is recognised).

use crate::bulk::{BulkRequest, MAX_BULK_BLOCKS};
use crate::integrity::{self, TAG_BYTES};
use crate::regs::{BLOCK_SIZE, Superblock, SuperblockError, data_offset, region_bytes};
use crate::trace::{TRACE_SLOTS, Trace};
use reinc_region::{Effect, Region};

use reinc_proto::RequestId;

use reinc_ringbuf::Ringbuf;

use serde::{Deserialize, Serialize};

/// Most blocks one request may read or write (32 KiB).
pub const MAX_BLOCKS_PER_REQUEST: u16 = 64;

/// Reply buffer size that fits any reply's payload (data and its tags).
pub const MAX_REPLY_DATA: usize = MAX_BLOCKS_PER_REQUEST as usize * (BLOCK_SIZE + TAG_BYTES);

/// A client request (postcard-encoded in `ToDriver::Request::body`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageRequest<'a> {
    /// No device access at all; measures the request path (benchmarks).
    Nop,
    /// Asks for the geometry.
    Geometry,
    /// Reads `blocks` blocks from `lba`.
    Read {
        /// First block.
        lba: u64,
        /// Number of blocks, `1..=MAX_BLOCKS_PER_REQUEST`.
        blocks: u16,
    },
    /// Writes `data` at `lba` (absolute).
    Write {
        /// First block.
        lba: u64,
        /// A non-empty multiple of [`BLOCK_SIZE`], at most 64 blocks.
        #[serde(borrow)]
        data: &'a [u8],
    },
    /// Writes `data` at the committed append cursor (relative; resolved
    /// against committed state, so a replay lands on the same blocks).
    Append {
        /// A non-empty multiple of [`BLOCK_SIZE`], at most 64 blocks.
        #[serde(borrow)]
        data: &'a [u8],
    },
    /// Makes every write answered so far durable on stable storage: the host
    /// driver `fdatasync`s its file before it replies. No device effect and
    /// no state change, so a replay simply syncs again. Front ends map their
    /// protocol's flush (NBD `FLUSH`, `FUA`) onto it; requests execute in FIFO
    /// order, so a flush covers every write submitted before it.
    Flush,
    /// Data in the session's shared pool instead of the message (the
    /// `bulk` module; host drivers run it with [`Storage::handle_bulk`]).
    /// [`Storage::handle`] has no pool and refuses it with
    /// [`StorageError::NoPool`].
    Bulk(BulkRequest),
    /// [`StorageRequest::Write`] with the client's [`block_tag`](crate::block_tag) of every
    /// block ([`TAG_BYTES`] each, little-endian): the driver refuses data
    /// that does not match them ([`StorageError::Corrupt`], nothing written)
    /// and stores these tags with the data ([`integrity`]).
    WriteChecked {
        /// First block.
        lba: u64,
        /// As for `Write`.
        #[serde(borrow)]
        data: &'a [u8],
        /// One tag per block of `data`.
        #[serde(borrow)]
        tags: &'a [u8],
    },
    /// [`StorageRequest::Read`] answered with [`StorageReply::DataChecked`]:
    /// the data and its stored tags, for the client to verify.
    ReadChecked {
        /// First block.
        lba: u64,
        /// Number of blocks, `1..=MAX_BLOCKS_PER_REQUEST`.
        blocks: u16,
    },
    /// A [`BulkRequest`] whose block tags are the client's work (the `bulk`
    /// module, "Checked by the driver, or by the client"): a `WriteFrom`
    /// carries the client's tag of every block in `tags`, stored with the
    /// data unchecked; a `ReadInto` has empty `tags` and is answered
    /// [`StorageReply::FilledTagged`]. Host drivers run it with
    /// [`Storage::handle_bulk_tagged`]; [`Storage::handle`] refuses it with
    /// [`StorageError::NoPool`].
    BulkTagged {
        /// The transfer.
        req: BulkRequest,
        /// One tag per block of a write ([`TAG_BYTES`] each,
        /// little-endian); empty for a read.
        #[serde(borrow)]
        tags: &'a [u8],
    },
    /// Zeroes `blocks` blocks from `lba` (absolute; at most
    /// [`MAX_ZERO_BLOCKS`]): they read as zeros afterwards, and their tags
    /// say "never written", which vouches for zeros ([`integrity`]). A write
    /// like any other for the watermark (exactly once) and the append
    /// cursor. Front ends map NBD `WRITE_ZEROES` and `TRIM` onto it.
    /// Appended after `BulkTagged`.
    Zero {
        /// First block.
        lba: u64,
        /// Blocks, `1..=MAX_ZERO_BLOCKS`.
        blocks: u32,
    },
}

/// Blocks one [`StorageRequest::Zero`] may cover (4 MiB).
pub const MAX_ZERO_BLOCKS: u32 = 8192;

/// The reply to a [`StorageRequest`] (postcard-encoded reply body).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageReply<'a> {
    /// Answer to `Nop`.
    Nop,
    /// Answer to `Geometry`.
    Geometry {
        /// Data blocks clients may address (`0..blocks`).
        blocks: u64,
        /// Bytes per block.
        block_size: u32,
    },
    /// The blocks read.
    Data(#[serde(borrow)] &'a [u8]),
    /// The write is durable in the region.
    Written {
        /// First block written.
        lba: u64,
        /// Blocks written.
        blocks: u16,
    },
    /// The append is durable in the region.
    Appended {
        /// Where the data went.
        lba: u64,
        /// Blocks written.
        blocks: u16,
    },
    /// Answer to `Flush`: every write answered before it is on stable storage.
    Flushed,

    /// The request was refused; nothing was written. Deterministic: a replay
    /// of the same request from the same state gives the same error.
    Error(StorageError),
    /// Answer to [`BulkRequest::ReadInto`]: the blocks are in the pool.
    Filled {
        /// First block read.
        lba: u64,
        /// Blocks read.
        blocks: u32,
    },
    /// Answer to `ReadChecked`: the blocks and the tags stored with them.
    DataChecked {
        /// The blocks read.
        #[serde(borrow)]
        data: &'a [u8],
        /// One stored tag per block ([`TAG_BYTES`] each, little-endian).
        #[serde(borrow)]
        tags: &'a [u8],
    },
    /// Answer to a [`StorageRequest::BulkTagged`] read: the blocks are in
    /// the pool, unchecked, and these are the tags stored with them, for
    /// the client to check the pool's bytes against.
    FilledTagged {
        /// First block read.
        lba: u64,
        /// Blocks read.
        blocks: u32,
        /// One stored tag per block ([`TAG_BYTES`] each, little-endian).
        #[serde(borrow)]
        tags: &'a [u8],
    },
    /// Answer to [`StorageRequest::Zero`]: the blocks are zeros in the region.
    Zeroed {
        /// First block zeroed.
        lba: u64,
        /// Blocks zeroed.
        blocks: u32,
    },
}

/// Why a request was refused.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The request body is not a postcard [`StorageRequest`].
    #[error("request is not a valid storage request")]
    BadRequest,
    /// Zero blocks requested, or empty data.
    #[error("request covers zero blocks")]
    Empty,
    /// Data length is not a multiple of the block size.
    #[error("data length {len} is not a multiple of {BLOCK_SIZE}")]
    Unaligned {
        /// The data length.
        len: u32,
    },
    /// More than [`MAX_BLOCKS_PER_REQUEST`] blocks.
    #[error("{blocks} blocks exceed the limit of {MAX_BLOCKS_PER_REQUEST} per request")]
    TooLarge {
        /// Blocks requested.
        blocks: u32,
    },
    /// The range leaves the device.
    #[error("{blocks} blocks at lba {lba} run past the end of the device ({capacity} blocks)")]
    OutOfRange {
        /// First block.
        lba: u64,
        /// Blocks.
        blocks: u16,
        /// Device size in blocks.
        capacity: u64,
    },
    /// The append does not fit behind the append cursor.
    #[error("append of {blocks} blocks at {cursor} does not fit the device's {capacity} blocks")]
    NoSpace {
        /// The committed append cursor.
        cursor: u64,
        /// Blocks to append.
        blocks: u16,
        /// Device size in blocks.
        capacity: u64,
    },
    /// A bulk request names more than [`MAX_BULK_BLOCKS`] blocks.
    #[error("{blocks} blocks exceed the limit of {MAX_BULK_BLOCKS} per bulk request")]
    BulkTooLarge {
        /// Blocks requested.
        blocks: u32,
    },
    /// A bulk request, but the session has no pool (none attached, or the
    /// one attached was refused).
    #[error("bulk request from a session without a shared pool")]
    NoPool,
    /// A bulk request's range runs outside the session's pool.
    #[error("{len} bytes at pool offset {pool_offset} run past the {pool}-byte pool")]
    PoolRange {
        /// Start of the range in the pool.
        pool_offset: u64,
        /// Its length.
        len: u64,
        /// The pool's size.
        pool: u64,
    },
    /// The pool's memory could not be read or written (`EFAULT`).
    #[error("the session's shared pool could not be accessed")]
    PoolFault,
    /// A block does not match its checksum: the data of a `WriteChecked`
    /// was damaged on its way (nothing was written), or a stored block was
    /// damaged on the device (nothing is returned).
    #[error("block {lba} does not match its checksum (stored {stored:#010x}, computed {computed:#010x})")]
    Corrupt {
        /// The block.
        lba: u64,
        /// The tag that came with it, or was stored with it.
        stored: u32,
        /// The tag of the data as it is.
        computed: u32,
    },
    /// A `WriteChecked` whose tags do not cover its blocks one each.
    #[error("{len} bytes of checksums for {blocks} blocks ({TAG_BYTES} bytes each expected)")]
    Tags {
        /// Bytes of tags sent.
        len: u32,
        /// Blocks of data.
        blocks: u16,
    },
}

/// The driver's committed state: the supervisor's checkpoint.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorageState {
    /// The next block `Append` writes to.
    pub append_cursor: u64,
    /// Write-type requests accepted so far (Write and Append).
    pub writes: u64,
}

/// The result of [`Storage::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome<'r> {
    /// The new committed state (equal to the old one when nothing changed).
    pub state: StorageState,
    /// The reply, borrowing read data from the caller's reply buffer.
    pub reply: StorageReply<'r>,
    /// What happened at the device.
    pub effect: Effect,
}

/// Why a region cannot be opened as a storage device.
#[derive(Debug, thiserror::Error)]
pub enum OpenError<E: core::fmt::Debug + core::fmt::Display> {
    /// The region is smaller than the geometry needs.
    #[error("region holds {have} bytes, {need} needed for {blocks} blocks plus the superblock")]
    TooSmall {
        /// Region size.
        have: u64,
        /// Size needed.
        need: u64,
        /// Requested data blocks.
        blocks: u64,
    },
    /// Zero data blocks requested.
    #[error("a storage device needs at least one data block")]
    NoBlocks,
    /// The superblock is damaged, foreign or of another geometry.
    #[error("superblock: {0}")]
    Superblock(#[from] SuperblockError),
    /// The region failed.
    #[error("region I/O: {0}")]
    Io(E),
}

/// A failure of the host, not of the request: the driver cannot go on, and
/// the request must be replayed by a fresh instance.
#[derive(Debug, thiserror::Error)]
pub enum HandleError<E: core::fmt::Debug + core::fmt::Display> {
    /// The region failed at byte offset `off`.
    #[error("region I/O at byte offset {off}: {source}")]
    Io {
        /// Offset of the failed access.
        off: u64,
        /// The region's error.
        source: E,
    },
    /// The caller's reply buffer is smaller than [`MAX_REPLY_DATA`] needs.
    #[error("reply buffer of {have} bytes cannot hold {need} bytes of data")]
    ReplyBuffer {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

/// Why a checkpoint cannot be restored on this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint append cursor {append_cursor} is beyond the device's {capacity} blocks")]
pub struct StateError {
    /// The checkpoint's cursor.
    pub append_cursor: u64,
    /// Device size in blocks.
    pub capacity: u64,
}

/// Decodes a request body; a malformed body is a deterministic
/// [`StorageError::BadRequest`], answered like any other refusal.
///
/// # Errors
/// [`StorageError::BadRequest`].
pub fn decode_request(body: &[u8]) -> Result<StorageRequest<'_>, StorageError> {
    match postcard::take_from_bytes::<StorageRequest<'_>>(body) {
        Ok((req, [])) => Ok(req),
        _ => Err(StorageError::BadRequest),
    }
}

/// The device: a region plus its cached superblock.
#[derive(Debug)]
pub struct Storage<R: Region> {
    pub(crate) region: R,
    pub(crate) sb: Superblock,
    pub(crate) trace: Ringbuf<Trace, TRACE_SLOTS>,
}

impl<R: Region> Storage<R> {
    /// Opens `region` as a device of `blocks` data blocks. A region whose
    /// block 0 is all zeros is formatted; a foreign, corrupt or differently
    /// sized one is refused (and left untouched).
    ///
    /// # Errors
    /// [`OpenError`].
    pub fn open(mut region: R, blocks: u64) -> Result<Self, OpenError<R::Error>> {
        if blocks == 0 {
            return Err(OpenError::NoBlocks);
        }
        let need = region_bytes(blocks);
        if region.size() < need {
            return Err(OpenError::TooSmall { have: region.size(), need, blocks });
        }
        let mut block0 = [0u8; BLOCK_SIZE];
        region.read_at(0, &mut block0).map_err(OpenError::Io)?;
        let mut trace = Ringbuf::new();
        let sb = match Superblock::decode(&block0)? {
            Some(sb) if sb.blocks != blocks => {
                return Err(SuperblockError::Geometry { found: sb.blocks, expected: blocks }.into());
            }
            Some(sb) => {
                if integrity::format_version(&block0) < integrity::INTEGRITY_VERSION {
                    integrity::build_table(&mut region, blocks, false).map_err(OpenError::Io)?;
                    region.write_at(0, &sb.encode()).map_err(OpenError::Io)?;
                }
                trace.record(Trace::Opened { applied_count: sb.applied_count });
                sb
            }
            None => {
                integrity::build_table(&mut region, blocks, true).map_err(OpenError::Io)?;
                let sb = Superblock::new(blocks, reinc_region::header::Watermark::default());
                region.write_at(0, &sb.encode()).map_err(OpenError::Io)?;
                trace.record(Trace::Formatted { blocks });
                sb
            }
        };
        Ok(Self { region, sb, trace })
    }

    /// Data blocks clients may address.
    #[must_use]
    pub fn blocks(&self) -> u64 {
        self.sb.blocks
    }

    /// What this device did lately (Hubris-style ring, newest last).
    #[must_use]
    pub fn trace(&self) -> &Ringbuf<Trace, TRACE_SLOTS> {
        &self.trace
    }

    /// The cached superblock (the watermark).
    #[must_use]
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The region (e.g. to flush a file after an effect).
    #[must_use]
    pub fn region(&self) -> &R {
        &self.region
    }

    /// The region, e.g. to inspect it in tests.
    #[must_use]
    pub fn into_region(self) -> R {
        self.region
    }

    /// Checks that a restored checkpoint fits this device.
    ///
    /// # Errors
    /// [`StateError`] when the append cursor lies beyond the device.
    pub fn check_state(&self, state: &StorageState) -> Result<(), StateError> {
        if state.append_cursor > self.sb.blocks {
            return Err(StateError { append_cursor: state.append_cursor, capacity: self.sb.blocks });
        }
        Ok(())
    }

    /// Handles one request against the committed `state`.
    ///
    /// Deterministic: the same (state, id, request) on the same device
    /// contents gives the same outcome, and a replay of the request last
    /// applied skips the effect but recomputes the same reply and state.
    ///
    /// # Errors
    /// [`HandleError`] when the region fails: the instance must die and the
    /// request be replayed; no state was committed.
    pub fn handle<'r>(
        &mut self,
        state: &StorageState,
        id: RequestId,
        req: &StorageRequest<'_>,
        reply_buf: &'r mut [u8],
    ) -> Result<Outcome<'r>, HandleError<R::Error>> {
        match self.decide(state, id, req, reply_buf) {
            Ok(out) => {
                if let Some(t) = Trace::of(req, &out) {
                    self.trace.record(t);
                }
                Ok(out)
            }
            Err(e) => {
                let off = match &e {
                    HandleError::Io { off, .. } => *off,
                    HandleError::ReplyBuffer { .. } => u64::MAX,
                };
                self.trace.record(Trace::IoFailed { off });
                Err(e)
            }
        }
    }

    fn decide<'r>(
        &mut self,
        state: &StorageState,
        id: RequestId,
        req: &StorageRequest<'_>,
        reply_buf: &'r mut [u8],
    ) -> Result<Outcome<'r>, HandleError<R::Error>> {
        let refuse = |e| Ok(Outcome { state: *state, reply: StorageReply::Error(e), effect: Effect::None });
        let capacity = self.sb.blocks;
        match *req {
            StorageRequest::Nop => Ok(Outcome { state: *state, reply: StorageReply::Nop, effect: Effect::None }),
            // The sync itself is the host's (the region trait has no notion
            // of stable storage): see `StorageRequest::Flush`.
            StorageRequest::Flush => Ok(Outcome { state: *state, reply: StorageReply::Flushed, effect: Effect::None }),
            StorageRequest::Geometry => Ok(Outcome {
                state: *state,
                reply: StorageReply::Geometry { blocks: capacity, block_size: BLOCK_SIZE as u32 },
                effect: Effect::None,
            }),
            StorageRequest::Read { lba, blocks } => {
                if let Err(e) = check_blocks(u32::from(blocks)).and_then(|()| check_range(lba, blocks, capacity)) {
                    return refuse(e);
                }
                let need = usize::from(blocks) * BLOCK_SIZE;
                let have = reply_buf.len();
                let buf = reply_buf.get_mut(..need).ok_or(HandleError::ReplyBuffer { need, have })?;
                let off = data_offset(lba);
                self.region.read_at(off, buf).map_err(|source| HandleError::Io { off, source })?;
                if let Err(e) = self.check_stored(lba, buf)? {
                    return refuse(e);
                }
                Ok(Outcome { state: *state, reply: StorageReply::Data(buf), effect: Effect::None })
            }
            StorageRequest::ReadChecked { lba, blocks } => {
                if let Err(e) = check_blocks(u32::from(blocks)).and_then(|()| check_range(lba, blocks, capacity)) {
                    return refuse(e);
                }
                match self.read_checked(lba, blocks, reply_buf)? {
                    Ok((data, tags)) => Ok(Outcome {
                        state: *state,
                        reply: StorageReply::DataChecked { data, tags },
                        effect: Effect::None,
                    }),
                    Err(e) => refuse(e),
                }
            }
            StorageRequest::Write { lba, data } => {
                let blocks = match check_data(data).and_then(|b| check_range(lba, b, capacity).map(|()| b)) {
                    Ok(b) => b,
                    Err(e) => return refuse(e),
                };
                let cursor = self.cursor(id, state);
                let effect = self.apply(id, state.writes, lba, data, None, (cursor, cursor))?;
                let state = StorageState { append_cursor: cursor, writes: state.writes + 1 };
                Ok(Outcome { state, reply: StorageReply::Written { lba, blocks }, effect })
            }
            StorageRequest::WriteChecked { lba, data, tags } => {
                let checked = check_data(data)
                    .and_then(|b| check_range(lba, b, capacity).map(|()| b))
                    .and_then(|b| integrity::check_request(lba, b, data, tags).map(|()| b));
                let blocks = match checked {
                    Ok(b) => b,
                    Err(e) => return refuse(e),
                };
                let cursor = self.cursor(id, state);
                let effect = self.apply(id, state.writes, lba, data, Some(tags), (cursor, cursor))?;
                let state = StorageState { append_cursor: cursor, writes: state.writes + 1 };
                Ok(Outcome { state, reply: StorageReply::Written { lba, blocks }, effect })
            }
            StorageRequest::Append { data } => {
                let blocks = match check_data(data) {
                    Ok(b) => b,
                    Err(e) => return refuse(e),
                };
                let lba = self.cursor(id, state);
                if check_range(lba, blocks, capacity).is_err() {
                    return refuse(StorageError::NoSpace { cursor: lba, blocks, capacity });
                }
                let next = lba + u64::from(blocks);
                let effect = self.apply(id, state.writes, lba, data, None, (lba, next))?;
                let state = StorageState { append_cursor: next, writes: state.writes + 1 };
                Ok(Outcome { state, reply: StorageReply::Appended { lba, blocks }, effect })
            }
            StorageRequest::Zero { lba, blocks } => {
                let too_large = |blocks| StorageError::TooLarge { blocks };
                if let Err(e) = check_extent(lba, blocks, (MAX_ZERO_BLOCKS, too_large), capacity) {
                    return refuse(e);
                }
                let cursor = self.cursor(id, state);
                let effect = self.apply_zero(id, state.writes, lba, blocks, cursor)?;
                let state = StorageState { append_cursor: cursor, writes: state.writes + 1 };
                Ok(Outcome { state, reply: StorageReply::Zeroed { lba, blocks }, effect })
            }
            StorageRequest::Bulk(_) | StorageRequest::BulkTagged { .. } => refuse(StorageError::NoPool),
        }
    }

    /// [`Self::apply`] for [`StorageRequest::Zero`]: zeros over the blocks,
    /// then zero tags ("never written"), then the watermark.
    fn apply_zero(
        &mut self,
        id: RequestId,
        base: u64,
        lba: u64,
        blocks: u32,
        cursor: u64,
    ) -> Result<Effect, HandleError<R::Error>> {
        const CHUNK: usize = 32 << 10;
        static ZEROS: [u8; CHUNK] = [0; CHUNK];
        if self.sb.watermark().is_replay(id, base) {
            return Ok(Effect::AlreadyApplied);
        }
        let mut zero = |off: u64, len: u64| -> Result<(), HandleError<R::Error>> {
            let mut done = 0;
            while done < len {
                let n = (len - done).min(CHUNK as u64);
                let at = off + done;
                // n <= CHUNK, a usize.
                self.region.write_at(at, &ZEROS[..n as usize]).map_err(|source| HandleError::Io { off: at, source })?;
                done += n;
            }
            Ok(())
        };
        zero(data_offset(lba), u64::from(blocks) * BLOCK_SIZE as u64)?;
        let tags = integrity::tag_offset(self.sb.blocks, lba);
        zero(tags, u64::from(blocks) * TAG_BYTES as u64)?;
        self.advance_watermark(id, base, (cursor, cursor))
    }

    /// The append cursor the write-type request `id` works at: for a replay
    /// of the request applied last, the cursor it was applied at (so it
    /// computes the same reply and state again); otherwise the larger of the
    /// committed state's cursor and the device's, so that a supervisor which
    /// lost its checkpoint (or never kept one) does not append over data
    /// appended before.
    pub(crate) fn cursor(&self, id: RequestId, state: &StorageState) -> u64 {
        if self.sb.watermark().is_replay(id, state.writes) {
            self.sb.last_cursor
        } else {
            state.append_cursor.max(self.sb.append_cursor)
        }
    }

    /// Writes `data` at `lba`, then its tags (the client's `tags`, already
    /// verified, or computed here for an unchecked request), then advances
    /// the watermark and records the append cursors `(at, after)`, unless
    /// `id` is the watermark already, applied on the same committed state
    /// (`base` writes).
    fn apply(
        &mut self,
        id: RequestId,
        base: u64,
        lba: u64,
        data: &[u8],
        tags: Option<&[u8]>,
        (at, after): (u64, u64),
    ) -> Result<Effect, HandleError<R::Error>> {
        if self.sb.watermark().is_replay(id, base) {
            return Ok(Effect::AlreadyApplied);
        }
        let off = data_offset(lba);
        self.region.write_at(off, data).map_err(|source| HandleError::Io { off, source })?;
        self.store_tags(lba, data, tags)?;
        self.advance_watermark(id, base, (at, after))
    }

    /// The last step of every write-type request, once its data and tags are
    /// in the region: the superblock records `id` as applied on `base`
    /// committed writes, with the append cursors `(at, after)`.
    pub(crate) fn advance_watermark(
        &mut self,
        id: RequestId,
        base: u64,
        (at, after): (u64, u64),
    ) -> Result<Effect, HandleError<R::Error>> {
        let mut next = Superblock::new(self.sb.blocks, self.sb.watermark().advanced(id, base));
        (next.last_cursor, next.append_cursor) = (at, after);
        self.region.write_at(0, &next.encode()).map_err(|source| HandleError::Io { off: 0, source })?;
        self.sb = next;
        Ok(Effect::Applied)
    }
}

fn check_blocks(blocks: u32) -> Result<(), StorageError> {
    if blocks == 0 {
        Err(StorageError::Empty)
    } else if blocks > u32::from(MAX_BLOCKS_PER_REQUEST) {
        Err(StorageError::TooLarge { blocks })
    } else {
        Ok(())
    }
}

/// Validates write data and returns its block count.
fn check_data(data: &[u8]) -> Result<u16, StorageError> {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    if data.is_empty() {
        return Err(StorageError::Empty);
    }
    if !data.len().is_multiple_of(BLOCK_SIZE) {
        return Err(StorageError::Unaligned { len });
    }
    let blocks = len / BLOCK_SIZE as u32;
    check_blocks(blocks)?;
    Ok(blocks as u16)
}

/// Checks a request of `blocks` blocks (at most `max.0`, else `max.1(blocks)`)
/// at `lba` against a device of `capacity` blocks: the rule every request
/// that names a run of blocks by a `u32` count (bulk, zero) follows.
pub(crate) fn check_extent(
    lba: u64,
    blocks: u32,
    max: (u32, fn(u32) -> StorageError),
    capacity: u64,
) -> Result<(), StorageError> {
    if blocks == 0 {
        return Err(StorageError::Empty);
    }
    if blocks > max.0 {
        return Err((max.1)(blocks));
    }
    match lba.checked_add(u64::from(blocks)) {
        Some(end) if end <= capacity => Ok(()),
        // The error's count is a u16; every max here (8192) fits it.
        _ => Err(StorageError::OutOfRange { lba, blocks: u16::try_from(blocks).unwrap_or(u16::MAX), capacity }),
    }
}

fn check_range(lba: u64, blocks: u16, capacity: u64) -> Result<(), StorageError> {
    match lba.checked_add(u64::from(blocks)) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(StorageError::OutOfRange { lba, blocks, capacity }),
    }
}
