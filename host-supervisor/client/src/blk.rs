//! Bulk block transfer through the storage driver, like `dd` (`drvctl blk`).
//!
//! [`run`] moves `count` blocks of `bs` bytes between a file (or, for a
//! write without a file, a deterministic [`pattern`]) and a storage driver.
//! The data goes through a shared pool ([`crate::pool`]) when the
//! supervisor takes one: one request per record (`bs`, split beyond
//! [`MAX_BULK_BLOCKS`] blocks) names a slot of it, and the bytes never
//! cross a socket. Otherwise (an older supervisor) they travel
//! in the messages, in requests of at most [`MAX_BLOCKS_PER_REQUEST`]
//! blocks. Either way requests are kept [`BlkOptions::window`] deep in
//! flight through one pipelined [`Client`] session, and completions are
//! consumed in request order, so a read writes its file sequentially and the
//! CRC-32 covers the data in device order. A driver crash mid-transfer costs
//! latency only: the supervisor replays what was in flight.
//!
//! A `write` from a file shorter than `bs × count` is refused before anything
//! is sent, unless [`BlkOptions::pad`] asks for the rest to be zeros; a pipe
//! that ends early is an error at the request that would have been short.
//!
//! # Why this is a library module
//! `drvctl` is a thin command line; the transfer itself is what the bench and
//! future data paths (shared-memory buffers) change, and it is tested here
//! without a process in between.
//!
//! # Designs rejected
//! - Completing requests in whatever order they are answered and seeking the
//!   output file: the CRC would depend on timing, and a pipe cannot seek.
//! - Reading a short file and writing what there is: a partial write with a
//!   success status loses data silently; the caller must ask for `--pad`.

use crate::blocksum::{self, BlockError};
use crate::pool::Slots;
use crate::{Client, ClientError, SharedPool};
use reinc_proto::CallError;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use storage_core::{
    BLOCK_SIZE, BulkRequest, MAX_BLOCKS_PER_REQUEST, MAX_BULK_BLOCKS, StorageError, StorageReply, bulk_tag_bytes,
};

/// The driver `blk` talks to unless told otherwise.
pub const DEFAULT_DRIVER: &str = "storage_driver";
/// Requests kept in flight unless told otherwise.
pub const DEFAULT_WINDOW: usize = 16;

/// Which way the data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Device → file (or only the CRC when there is no file).
    Read,
    /// File (or [`pattern`]) → device.
    Write,
}

/// What to transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkOptions {
    /// Read or write.
    pub direction: Direction,
    /// Bytes per record; a multiple of [`BLOCK_SIZE`].
    pub bs: u64,
    /// Records to transfer.
    pub count: u64,
    /// Byte offset on the device; a multiple of [`BLOCK_SIZE`].
    pub offset: u64,
    /// The file to write from or read into; `None` writes [`pattern`] or
    /// reads only to compute the CRC.
    pub file: Option<PathBuf>,
    /// A write from a file shorter than `bs × count` fills the rest with zeros
    /// instead of failing.
    pub pad: bool,
    /// The storage driver's configured name.
    pub driver: String,
    /// Requests kept in flight (at least one is). Through the shared pool,
    /// also at most [`POOL_BYTES`] of records, but two records at least
    /// ([`pool_slots`]).
    pub window: usize,
}

impl BlkOptions {
    /// `count` records of `bs` bytes from offset 0 of [`DEFAULT_DRIVER`], no
    /// file, [`DEFAULT_WINDOW`] deep.
    #[must_use]
    pub fn new(direction: Direction, bs: u64, count: u64) -> Self {
        Self {
            direction,
            bs,
            count,
            offset: 0,
            file: None,
            pad: false,
            driver: DEFAULT_DRIVER.to_string(),
            window: DEFAULT_WINDOW,
        }
    }
}

/// Why a transfer did not complete.
#[derive(Debug, thiserror::Error)]
pub enum BlkError {
    /// `bs` is zero, or `bs` or `offset` is not a whole number of blocks.
    #[error("--bs and --offset must be multiples of {BLOCK_SIZE}")]
    Misaligned,
    /// `bs × count` does not fit in 64 bits.
    #[error("--bs × --count overflows")]
    Overflow,
    /// A write's source file is shorter than the transfer; nothing was sent.
    #[error(
        "{} has {len} bytes, less than --bs × --count = {total}; nothing written (--pad fills the rest with zeros)",
        path.display()
    )]
    ShortFile {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The bytes asked for.
        total: u64,
    },
    /// Opening, reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The supervisor could not be reached or lost the session.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The supervisor answered a request with an error.
    #[error("{driver}: request {index}: {error}")]
    Call {
        /// The driver.
        driver: String,
        /// The request's index within the transfer.
        index: u64,
        /// The supervisor's answer.
        error: CallError,
    },
    /// The driver refused a request.
    #[error("{driver}: request {index}: {error}")]
    Storage {
        /// The driver.
        driver: String,
        /// The request's index within the transfer.
        index: u64,
        /// The driver's answer.
        error: StorageError,
    },
    /// A read's block checksums failed: a block damaged on its way here,
    /// or, through the pool, on the device (see [`crate::blocksum`]).
    #[error("request {index}: {source}")]
    Block {
        /// The request's index within the transfer.
        index: u64,
        /// What [`crate::blocksum`] found.
        source: BlockError,
    },
    /// The driver's answer does not fit the request (wrong kind or length).
    #[error("{driver}: request {index}: unexpected reply {reply}")]
    Unexpected {
        /// The driver.
        driver: String,
        /// The request's index within the transfer.
        index: u64,
        /// The reply, as decoded.
        reply: String,
    },
    /// The shared pool failed (it is this process's own memfd).
    #[error("shared pool: {0}")]
    Pool(String),
    /// A request could not be encoded.
    #[error("{driver}: request {index}: {source}")]
    Encode {
        /// The driver.
        driver: String,
        /// The request's index within the transfer.
        index: u64,
        /// The encoder's error.
        source: postcard::Error,
    },
}

impl BlkError {
    /// The options themselves are wrong (a usage error, not a failed run).
    #[must_use]
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Misaligned | Self::Overflow)
    }
}

/// What a completed transfer moved.
#[derive(Debug, Clone, PartialEq)]
pub struct BlkReport {
    /// Read or write.
    pub direction: Direction,
    /// Records transferred.
    pub records: u64,
    /// Bytes transferred.
    pub bytes: u64,
    /// Wall time from connecting to the last completion.
    pub elapsed: Duration,
    /// CRC-32 of the data, in device order.
    pub crc32: u32,
    /// Requests sent.
    pub requests: u64,
    /// Times the session reconnected during the transfer.
    pub reconnects: u32,
    /// Where the data went.
    pub data_path: DataPath,
}

/// How a transfer's data travelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataPath {
    /// Through the session's shared pool (one request per record).
    SharedPool,
    /// In the messages (32 KiB requests), because no pool could be
    /// attached, for this reason.
    Messages(String),
}

impl fmt::Display for BlkReport {
    /// `dd`'s summary, plus the CRC, the request and the reconnect counts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (into, out_of) = match self.direction {
            Direction::Write => ("in", "out"),
            Direction::Read => ("out", "in"),
        };
        let secs = self.elapsed.as_secs_f64();
        let total = self.bytes as f64;
        writeln!(f, "{}+0 records {into}", self.records)?;
        writeln!(f, "{}+0 records {out_of}", self.records)?;
        writeln!(
            f,
            "{} bytes ({:.1} MB, {:.1} MiB) copied, {secs:.3} s, {:.1} MB/s",
            self.bytes,
            total / 1e6,
            total / f64::from(1u32 << 20),
            total / secs.max(1e-9) / 1e6
        )?;
        write!(f, "crc32 {:#010x}, {} requests, {} reconnects, ", self.crc32, self.requests, self.reconnects)?;
        match &self.data_path {
            DataPath::SharedPool => write!(f, "data through a shared pool"),
            DataPath::Messages(why) => write!(f, "data in the messages ({why})"),
        }
    }
}

/// Deterministic test data for block `lba` (what a write without a file
/// sends): an xorshift stream seeded by the block number, so any block can
/// be checked on its own.
pub fn pattern(lba: u64, out: &mut [u8]) {
    let mut x = lba.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x.to_le_bytes()
    };
    // Whole words by fixed-size copies: a `copy_from_slice` of a length
    // known only at run time was a `memmove` call per 8 bytes, a quarter of
    // a `drvctl blk write`'s time.
    let mut words = out.chunks_exact_mut(8);
    for word in &mut words {
        word.copy_from_slice(&next());
    }
    let tail = words.into_remainder();
    if !tail.is_empty() {
        let n = tail.len();
        tail.copy_from_slice(&next()[..n]);
    }
}

/// [`pattern`] of every whole block of `out`, the first at block `lba`
/// (a partial last block gets the start of its stream).
///
/// Each block's stream is a serial chain (every word depends on the one
/// before), so one block at a time runs at the latency of its shifts;
/// eight blocks advanced side by side are independent chains the CPU
/// (and the compiler's vector code) runs at once. Same bytes as
/// [`pattern`], block by block.
pub fn pattern_blocks(lba: u64, out: &mut [u8]) {
    const WORDS: usize = BLOCK_SIZE / 8;
    let mut groups = out.chunks_exact_mut(LANES * BLOCK_SIZE);
    let mut at = lba;
    for group in &mut groups {
        let mut x: [u64; LANES] = core::array::from_fn(|k| (at + k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        for w in 0..WORDS {
            for s in &mut x {
                *s ^= *s << 13;
                *s ^= *s >> 7;
                *s ^= *s << 17;
            }
            for (k, s) in x.iter().enumerate() {
                let i = k * BLOCK_SIZE + w * 8;
                group[i..i + 8].copy_from_slice(&s.to_le_bytes());
            }
        }
        at += LANES as u64;
    }
    for (k, block) in groups.into_remainder().chunks_mut(BLOCK_SIZE).enumerate() {
        pattern(at + k as u64, block);
    }
}

/// Blocks [`pattern_blocks`] generates side by side.
const LANES: usize = 8;

/// Runs the transfer against the supervisor's client socket `socket`.
///
/// The options and a write's source file are checked before connecting.
///
/// # Errors
/// [`BlkError`]; every variant names the file or the driver and request.
pub fn run(socket: &Path, opts: &BlkOptions) -> Result<BlkReport, BlkError> {
    let write = opts.direction == Direction::Write;
    let b = BLOCK_SIZE as u64;
    if opts.bs == 0 || !opts.bs.is_multiple_of(b) || !opts.offset.is_multiple_of(b) {
        return Err(BlkError::Misaligned);
    }
    let total = opts.bs.checked_mul(opts.count).ok_or(BlkError::Overflow)?;
    let first_lba = opts.offset / b;
    let total_blocks = total / b;
    let per_req = u64::from(MAX_BLOCKS_PER_REQUEST);
    let file_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BlkError::File { path, source }
    };
    let mut source = match (&opts.file, write) {
        (Some(f), true) => {
            let src = File::open(f).map_err(file_err(f))?;
            let meta = src.metadata().map_err(file_err(f))?;
            // A short regular file is known before anything is sent; a pipe
            // is checked as it is read (read_full).
            if meta.is_file() && meta.len() < total && !opts.pad {
                return Err(BlkError::ShortFile { path: f.clone(), len: meta.len(), total });
            }
            Some(src)
        }
        _ => None,
    };
    let mut sink = match (&opts.file, write) {
        (Some(f), false) => Some(File::create(f).map_err(file_err(f))?),
        _ => None,
    };
    let driver = opts.driver.as_str();
    let mut client = OwnSession(Some(Client::connect(socket)?));
    let started = Instant::now();
    let mut crc = crc32fast::Hasher::new();
    // The shared-memory path when the supervisor takes a pool; the copy
    // path (bytes in the messages) when it does not.
    // On the pool path one request is one record, like dd (split only
    // beyond MAX_BULK_BLOCKS).
    let record_blocks = (opts.bs / b).min(u64::from(MAX_BULK_BLOCKS));
    let (mut bulk, data_path) = match Bulk::attach(&mut client, driver, opts.window.max(1), record_blocks) {
        Ok(k) => (Some(k), DataPath::SharedPool),
        Err(why) => (None, DataPath::Messages(why)),
    };
    let per_req = if bulk.is_some() { record_blocks } else { per_req };
    // seq -> the request; completions are kept until in order.
    let mut inflight: BTreeMap<u64, Flight> = BTreeMap::new();
    let mut resubmitted = 0u32;
    let mut done: BTreeMap<u64, Done> = BTreeMap::new();
    let requests = total_blocks.div_ceil(per_req);
    let (mut next_req, mut next_out) = (0u64, 0u64);
    let mut buf = vec![0u8; (per_req * b) as usize];
    let encode_err = |index| move |source| BlkError::Encode { driver: driver.to_string(), index, source };
    while next_out < requests {
        while next_req < requests
            && inflight.len() < opts.window.max(1)
            && bulk.as_ref().is_none_or(|k| k.slots.free() > 0)
        {
            let lba = first_lba + next_req * per_req;
            let blocks = per_req.min(total_blocks - next_req * per_req);
            let len = (blocks * b) as usize;
            if write {
                let data = &mut buf[..len];
                match (&mut source, &opts.file) {
                    (Some(f), Some(path)) => read_full(f, data, opts.pad).map_err(file_err(path))?,
                    _ => pattern_blocks(lba, data),
                }
                crc.update(data);
            }
            let slot = bulk.as_mut().and_then(|k| k.slots.take());
            let (body, tagged, req) = match (&bulk, slot) {
                (Some(k), Some(slot)) => {
                    let pool_offset = k.slots.offset(slot);
                    // blocks <= MAX_BULK_BLOCKS, a u32.
                    let blocks = blocks as u32;
                    let req = if write {
                        // A plain copy into the mapping, no system call
                        // (reinc_uio's shm module says why it is sound and
                        // what it bought).
                        k.pool.store(pool_offset, &buf[..len]).map_err(|e| BlkError::Pool(e.to_string()))?;
                        BulkRequest::WriteFrom { lba, blocks, pool_offset }
                    } else {
                        BulkRequest::ReadInto { lba, blocks, pool_offset }
                    };
                    // The tags of a write come from `buf`, where the data was
                    // born (the pool is never read here).
                    let data = if write { &buf[..len] } else { &[][..] };
                    (blocksum::bulk_body(req, k.tagged.then_some(data)), k.tagged, Some(req))
                }
                // In the messages, every block carries its end-to-end checksum.
                _ if write => (Ok(blocksum::write_body(lba, &buf[..len])), false, None),
                // blocks <= MAX_BLOCKS_PER_REQUEST, a u16.
                _ => (Ok(blocksum::read_body(lba, blocks as u16)), false, None),
            };
            let body = body.map_err(encode_err(next_req))?;
            let seq = client.submit(driver, &body)?;
            inflight.insert(seq, Flight { index: next_req, blocks, slot, lba, req, tagged, body });
            next_req += 1;
        }
        let c = client.wait()?;
        let Some(flight) = inflight.remove(&c.seq) else { continue };
        let Flight { index, blocks, slot, lba, req, tagged, .. } = flight;
        let reply = c.result.map_err(|error| BlkError::Call { driver: driver.to_string(), index, error })?;
        let decoded = postcard::from_bytes::<StorageReply<'_>>(&reply);
        let again = match (&decoded, slot) {
            // Run by an instance that had no pool for this session: a
            // journaled request replayed by a restarted supervisor before
            // this session attached its pool again. Refused before any
            // transfer, so it did not execute; the pool is attached again
            // (the library does it on reconnect), and the slot still holds
            // the bytes, so it goes out once more as a new call.
            (Ok(StorageReply::Error(StorageError::NoPool)), Some(_)) => Some((flight.body, tagged)),
            // A driver older than the client-checked form cannot decode
            // it: refused before anything ran. The rest of the transfer
            // goes in the driver-checked form.
            (Ok(StorageReply::Error(StorageError::BadRequest)), _)
                if let (true, Some(req), Some(k)) = (tagged, req, &mut bulk) =>
            {
                k.tagged = false;
                Some((blocksum::bulk_body(req, None).map_err(encode_err(index))?, false))
            }
            _ => None,
        };
        if let Some((body, tagged)) = again
            && resubmitted < MAX_RESUBMITS
        {
            resubmitted += 1;
            let seq = client.submit(driver, &body)?;
            inflight.insert(seq, Flight { index, blocks, slot, lba, req, tagged, body });
            continue;
        }
        let d = match decoded {
            Ok(StorageReply::Data(d)) if !write && d.len() as u64 == blocks * b => Done::Bytes(d.to_vec()),
            Ok(StorageReply::DataChecked { .. }) if !write => Done::Bytes(
                blocksum::check_read(driver, lba, blocks, &reply)
                    .map_err(|source| BlkError::Block { index, source })?
                    .to_vec(),
            ),
            Ok(StorageReply::Filled { blocks: r, .. }) if !write && !tagged && u64::from(r) == blocks => match slot {
                Some(slot) => Done::Slot { slot, len: (blocks * b) as usize, lba, tags: None },
                None => Done::Bytes(Vec::new()),
            },
            Ok(StorageReply::FilledTagged { lba: l, blocks: r, tags })
                if !write && tagged && l == lba && u64::from(r) == blocks && tags.len() == bulk_tag_bytes(r) =>
            {
                match slot {
                    Some(slot) => Done::Slot { slot, len: (blocks * b) as usize, lba, tags: Some(tags.to_vec()) },
                    None => Done::Bytes(Vec::new()),
                }
            }
            Ok(StorageReply::Written { blocks: w, .. }) if write && u64::from(w) == blocks => {
                // Answered, so committed: the slot may be reused.
                if let (Some(k), Some(slot)) = (bulk.as_mut(), slot) {
                    k.slots.give_back(slot);
                }
                Done::Bytes(Vec::new())
            }
            Ok(StorageReply::Error(error)) => {
                return Err(BlkError::Storage { driver: driver.to_string(), index, error });
            }
            other => {
                return Err(BlkError::Unexpected { driver: driver.to_string(), index, reply: format!("{other:?}") });
            }
        };
        done.insert(index, d);
        while let Some(d) = done.remove(&next_out) {
            if !write {
                let data: &[u8] = match d {
                    Done::Bytes(ref v) => v,
                    Done::Slot { slot, len, lba, tags } => {
                        let k = bulk.as_mut().expect("a slot implies the pool path");
                        k.pool
                            .copy_out(k.slots.offset(slot), &mut buf[..len])
                            .map_err(|e| BlkError::Pool(e.to_string()))?;
                        k.slots.give_back(slot);
                        // Checked where it landed, against the tags stored
                        // with it (storage_core::bulk).
                        if let Some(tags) = tags {
                            blocksum::check_landed(driver, lba, &buf[..len], &tags)
                                .map_err(|source| BlkError::Block { index: next_out, source })?;
                        }
                        &buf[..len]
                    }
                };
                crc.update(data);
                if let (Some(s), Some(path)) = (&mut sink, &opts.file) {
                    s.write_all(data).map_err(file_err(path))?;
                }
            }
            next_out += 1;
        }
    }
    Ok(BlkReport {
        direction: opts.direction,
        records: opts.count,
        bytes: total,
        elapsed: started.elapsed(),
        crc32: crc.finalize(),
        requests,
        reconnects: client.reconnects(),
        data_path,
    })
}

/// A transfer's session, its alone: `Bye` when the transfer ends, however
/// it ends, so the supervisor frees the session and its pool at once
/// (`Client::close`) instead of after its idle timeout.
struct OwnSession(Option<Client>);

impl std::ops::Deref for OwnSession {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.0.as_ref().expect("closed only on drop")
    }
}

impl std::ops::DerefMut for OwnSession {
    fn deref_mut(&mut self) -> &mut Client {
        self.0.as_mut().expect("closed only on drop")
    }
}

impl Drop for OwnSession {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.close();
        }
    }
}

/// How many bulk requests a transfer sends again after a `NoPool` answer
/// (see [`run`]) before it gives up.
const MAX_RESUBMITS: u32 = 1024;

/// A request in flight.
#[derive(Debug)]
struct Flight {
    /// Its index within the transfer.
    index: u64,
    blocks: u64,
    /// Its pool slot (pool path).
    slot: Option<usize>,
    lba: u64,
    /// The transfer it names in the pool (pool path).
    req: Option<BulkRequest>,
    /// Sent in the client-checked form (`StorageRequest::BulkTagged`).
    tagged: bool,
    /// What was sent, for sending it again.
    body: Vec<u8>,
}

/// A completion kept until its turn.
#[derive(Debug)]
enum Done {
    /// Data that came in the reply (copy path), or nothing (a write).
    Bytes(Vec<u8>),
    /// `len` bytes of blocks from `lba` in pool slot `slot` (pool path),
    /// with the tags stored with them when the driver left the check to us.
    Slot { slot: usize, len: usize, lba: u64, tags: Option<Vec<u8>> },
}

/// The shared-memory path: the session's pool and its slots.
#[derive(Debug)]
struct Bulk {
    pool: SharedPool,
    slots: Slots,
    /// Requests go in the client-checked form (`storage_core::bulk`) until
    /// a driver refuses it as unknown.
    tagged: bool,
}

impl Bulk {
    /// One slot per request in flight, at most [`POOL_BYTES`] of them
    /// (see [`pool_slots`]). `None` (and a log line) when the supervisor or
    /// driver does not take a pool: the copy path then works as before.
    fn attach(client: &mut Client, driver: &str, window: usize, blocks: u64) -> Result<Self, String> {
        let slot = blocks as usize * BLOCK_SIZE;
        let slots = Slots::new(slot, pool_slots(window, slot));
        let pool = SharedPool::create("drvctl-blk", slots.pool_len()).map_err(|e| e.to_string())?;
        client.attach_pool(driver, &pool).map_err(|e| e.to_string())?;
        Ok(Self { pool, slots, tagged: true })
    }
}

/// Bytes of records a transfer keeps in flight through the pool, unless
/// that is fewer than two records.
///
/// Measured (2026-12-04, 2 cores, 2 MiB of L2 each): 128 MiB in 1 MiB
/// records read at 2.7–3.0 GB/s with 16 in flight (a 16 MiB pool) and at
/// 3.3–3.9 GB/s with 4 (4 MiB); writes went from 2.3 to 2.8–3.0 GB/s. With
/// 3, 6 or 8 in flight it was no better than 4. A deeper pool does not feed
/// the driver any faster (one request per record keeps it busy at two),
/// but every one of its pages is allocated and zeroed by the kernel on
/// first use in each transfer, and a pool larger than the cache makes
/// every copy into or out of it miss.
pub const POOL_BYTES: usize = 4 << 20;

/// Slots of `slot` bytes for a transfer `window` requests deep: the window,
/// capped at [`POOL_BYTES`] worth of slots, but never fewer than two (one
/// being filled or drained while the other is in flight).
#[must_use]
pub fn pool_slots(window: usize, slot: usize) -> usize {
    window.max(1).min((POOL_BYTES / slot.max(1)).max(2))
}

/// Fills `out` from `f`; at end of file the rest is zeros with `pad`, an
/// error without.
fn read_full(f: &mut File, out: &mut [u8], pad: bool) -> std::io::Result<()> {
    let mut n = 0;
    while n < out.len() {
        let k = f.read(&mut out[n..])?;
        if k == 0 {
            if !pad {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "ended before --bs × --count bytes (--pad fills the rest with zeros)",
                ));
            }
            out[n..].fill(0);
            return Ok(());
        }
        n += k;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket path where nothing listens: any attempt to connect fails.
    fn nowhere() -> PathBuf {
        std::env::temp_dir().join(format!("reinc-blk-nowhere-{}", std::process::id())).join("client.sock")
    }

    #[test]
    fn misaligned_or_zero_sizes_are_usage_errors_before_connecting() {
        for (bs, offset) in [(0, 0), (100, 0), (512, 100)] {
            let mut o = BlkOptions::new(Direction::Read, bs, 1);
            o.offset = offset;
            let e = run(&nowhere(), &o).unwrap_err();
            assert!(matches!(e, BlkError::Misaligned) && e.is_usage(), "bs {bs} offset {offset}: {e}");
        }
        let e = run(&nowhere(), &BlkOptions::new(Direction::Write, 1 << 20, u64::MAX)).unwrap_err();
        assert!(matches!(e, BlkError::Overflow) && e.is_usage(), "{e}");
    }

    #[test]
    fn a_short_source_file_is_refused_before_connecting_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.bin");
        std::fs::write(&path, vec![7u8; BLOCK_SIZE * 3]).unwrap();
        let mut o = BlkOptions::new(Direction::Write, BLOCK_SIZE as u64, 4);
        o.file = Some(path.clone());
        let e = run(&nowhere(), &o).unwrap_err();
        assert!(matches!(e, BlkError::ShortFile { len: 1536, total: 2048, .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.starts_with(&path.display().to_string()) && text.contains("nothing written"), "{text}");
        assert!(!e.is_usage());
        // With padding the file is accepted; what fails is the connection.
        o.pad = true;
        let e = run(&nowhere(), &o).unwrap_err();
        assert!(matches!(e, BlkError::Client(ClientError::Connect { .. })), "{e:?}");
    }

    #[test]
    fn a_missing_source_file_is_named() {
        let mut o = BlkOptions::new(Direction::Write, BLOCK_SIZE as u64, 1);
        o.file = Some(PathBuf::from("/nonexistent/reinc-blk-source"));
        let e = run(&nowhere(), &o).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/reinc-blk-source: "), "{e}");
    }

    #[test]
    fn read_full_pads_with_zeros_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("three");
        std::fs::write(&path, [1, 2, 3]).unwrap();
        let mut out = [9u8; 5];
        read_full(&mut File::open(&path).unwrap(), &mut out, true).unwrap();
        assert_eq!(out, [1, 2, 3, 0, 0]);
        let e = read_full(&mut File::open(&path).unwrap(), &mut out, false).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    /// The stream is what readers check blocks against, so the fast
    /// version must give the bytes of the plain definition, for any length.
    #[test]
    fn pattern_is_the_xorshift_stream_of_its_definition_at_any_length() {
        fn reference(lba: u64, out: &mut [u8]) {
            let mut x = lba.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            for (i, b) in out.iter_mut().enumerate() {
                if i % 8 == 0 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                }
                *b = x.to_le_bytes()[i % 8];
            }
        }
        for len in [0, 1, 7, 8, 13, 512, 4099] {
            let (mut fast, mut slow) = (vec![0u8; len], vec![1u8; len]);
            pattern(42, &mut fast);
            reference(42, &mut slow);
            assert_eq!(fast, slow, "length {len}");
        }
    }

    #[test]
    fn the_pool_keeps_at_most_four_mib_of_records_in_flight_but_two_records_at_least() {
        // Small records: the window decides.
        assert_eq!(pool_slots(16, 64 << 10), 16);
        assert_eq!(pool_slots(1, 64 << 10), 1);
        assert_eq!(pool_slots(0, 64 << 10), 1);
        // 1 MiB records: four, whatever the window above that.
        assert_eq!(pool_slots(16, 1 << 20), 4);
        assert_eq!(pool_slots(256, 1 << 20), 4);
        assert_eq!(pool_slots(3, 1 << 20), 3);
        // Records larger than the budget: still two, so one is filled while
        // the other is in flight.
        assert_eq!(pool_slots(16, MAX_BULK_BLOCKS as usize * BLOCK_SIZE), 2);
        assert_eq!(pool_slots(16, 3 << 20), 2);
        for (window, slot) in [(16, 1 << 20), (16, 64 << 10), (5, 512)] {
            assert!(pool_slots(window, slot) * slot <= POOL_BYTES.max(2 * slot));
        }
    }

    #[test]
    fn pattern_blocks_gives_each_block_its_own_pattern() {
        for blocks in [0usize, 1, 7, 8, 9, 17, 2048] {
            for tail in [0, 100] {
                let mut fast = vec![0u8; blocks * BLOCK_SIZE + tail];
                pattern_blocks(1000, &mut fast);
                let mut slow = vec![1u8; fast.len()];
                for (k, block) in slow.chunks_mut(BLOCK_SIZE).enumerate() {
                    pattern(1000 + k as u64, block);
                }
                assert!(fast == slow, "{blocks} blocks and {tail} bytes");
            }
        }
    }

    #[test]
    fn pattern_depends_only_on_the_block_number() {
        let (mut a, mut b, mut c) = ([0u8; BLOCK_SIZE], [0u8; BLOCK_SIZE], [0u8; BLOCK_SIZE]);
        pattern(7, &mut a);
        pattern(7, &mut b);
        pattern(8, &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().any(|&x| x != 0));
    }

    #[test]
    fn the_report_reads_like_dd() {
        let r = BlkReport {
            direction: Direction::Write,
            records: 8,
            bytes: 524_288,
            elapsed: Duration::from_millis(250),
            crc32: 0xDEAD_BEEF,
            requests: 16,
            reconnects: 1,
            data_path: DataPath::SharedPool,
        };
        assert_eq!(
            r.to_string(),
            "8+0 records in\n8+0 records out\n524288 bytes (0.5 MB, 0.5 MiB) copied, 0.250 s, 2.1 MB/s\n\
             crc32 0xdeadbeef, 16 requests, 1 reconnects, data through a shared pool"
        );
        let copied = BlkReport { data_path: DataPath::Messages("refused".into()), ..r.clone() };
        assert!(copied.to_string().ends_with("data in the messages (refused)"));
        let read = BlkReport { direction: Direction::Read, ..r };
        assert!(read.to_string().starts_with("8+0 records out\n8+0 records in\n"));
    }
}
