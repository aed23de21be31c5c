//! One connection in transmission: the reader thread that turns NBD
//! requests (and write payloads) into jobs, and the engine that turns jobs
//! into pipelined storage requests and writes each reply once its last
//! chunk is answered (see the parent module's doc).
//!
//! # Reads in structured replies
//! A client that negotiated structured replies gets each read through the
//! shared pool in pieces of [`PIECE_BLOCKS`] blocks, one storage request
//! each, all submitted at once; every piece goes out as an `OFFSET_DATA`
//! chunk the moment its storage request is answered, so the socket carries
//! the first pieces while the driver still fills the later ones. A piece
//! the driver refuses (a damaged block, say) is an `ERROR_OFFSET` chunk
//! naming its offset, and the other pieces still arrive. With simple
//! replies that is impossible: the header carries the one error for the
//! whole read, so nothing can be sent before the last piece is answered,
//! and a read stays one storage request.
//!
//! A read is cut into pieces only when no other request of the connection
//! is in flight. Behind other requests the driver has work queued anyway,
//! and pieces would only multiply the storage requests: with pieces always,
//! the bench's 16-in-flight read row fell from 1.1–1.3 to 0.92–0.95 of
//! nbdkit; with this rule it stayed at 1.1–1.3 while the 1-in-flight row
//! went from 0.66–0.73 to 0.77–1.00 over six runs (in two runs each with
//! pieces of 64 KiB: 0.70, 0.82; of 256 KiB: 0.72, 0.79).

use crate::bulk::ConnPool;
use crate::proto::{self, Command, EINVAL, EIO, Export, REQUEST_LEN, Request, chunks};
use reinc_client::blocksum::BlockError;
use reinc_client::{Client, ClientError};
use reinc_proto::CallError;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use storage_core::{
    BLOCK_SIZE, BulkRequest, MAX_BLOCKS_PER_REQUEST, MAX_BULK_BLOCKS, MAX_ZERO_BLOCKS, StorageError, StorageReply,
    StorageRequest,
};

use super::{Config, ConnError, DRAIN_LIMIT, Stream};

/// One unit of work from the reader.
#[derive(Debug)]
pub(super) enum Job {
    Read {
        cookie: u64,
        offset: u64,
        length: u32,
    },
    Write {
        cookie: u64,
        offset: u64,
        data: Vec<u8>,
        fua: bool,
    },
    /// A write whose payload is in write slot `slot` of the pool.
    WriteSlot {
        cookie: u64,
        offset: u64,
        length: u32,
        fua: bool,
        slot: usize,
    },
    Flush {
        cookie: u64,
    },
    /// `WRITE_ZEROES` or `TRIM`.
    Zero {
        cookie: u64,
        offset: u64,
        length: u32,
        fua: bool,
    },
    Refuse {
        cookie: u64,
        errno: u32,
        /// A `READ` (answered in a structured error chunk when negotiated).
        read: bool,
    },
}

pub(super) fn reader(
    mut s: Stream,
    export: &Export,
    max: u32,
    tx: &SyncSender<Job>,
    pool: Option<&ConnPool>,
) -> Result<(), ConnError> {
    loop {
        let mut h = [0u8; REQUEST_LEN];
        match s.read_exact(&mut h) {
            Ok(()) => {}
            // Closed without DISC: what was received in full still runs.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let r = Request::decode(&h)?;
        let job = match export.check(&r) {
            Command::Disconnect => return Ok(()),
            Command::Read { offset, length } => Job::Read { cookie: r.cookie, offset, length },
            Command::Flush => Job::Flush { cookie: r.cookie },
            Command::Zero { offset, length, fua } => Job::Zero { cookie: r.cookie, offset, length, fua },
            Command::Write { offset, length, fua } if pool.is_some() => {
                let p = pool.expect("checked by the guard");
                // Closing: the engine is gone, nothing more will run.
                let Some(slot) = p.take_write() else { return Ok(()) };
                // Straight from the socket into the slot. A client that dies
                // in the middle of a payload: never accepted, never submitted.
                if let Err(e) = p.pool.fill_from(s.as_fd(), None, p.write_offset(slot), length as usize) {
                    p.give_write(slot);
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        return Ok(());
                    }
                    return Err(e.into());
                }
                Job::WriteSlot { cookie: r.cookie, offset, length, fua, slot }
            }
            Command::Write { offset, length, fua } => {
                let mut data = vec![0u8; length as usize];
                // A client that dies in the middle of a payload: this write
                // was never accepted, so it is not submitted at all.
                s.read_exact(&mut data)?;
                Job::Write { cookie: r.cookie, offset, data, fua }
            }
            Command::Refuse { errno } => {
                if r.kind == proto::CMD_WRITE {
                    if r.length > DRAIN_LIMIT.max(max) {
                        let _ = tx.send(Job::Refuse { cookie: r.cookie, errno, read: false });
                        return Err(ConnError::Undrainable(r.length));
                    }
                    io::copy(&mut (&mut s).take(u64::from(r.length)), &mut io::sink())?;
                }
                Job::Refuse { cookie: r.cookie, errno, read: r.kind == proto::CMD_READ }
            }
        };
        if tx.send(job).is_err() {
            // The engine is gone (session failure); nothing more to do.
            return Ok(());
        }
    }
}

#[derive(Debug)]
enum Pending {
    /// Data arrives in the replies (no pool); `offset` in the export.
    Read {
        buf: Vec<u8>,
        offset: u64,
    },
    /// Data arrives in read slot `slot` of the pool; `offset` in the export.
    ReadSlot {
        slot: usize,
        len: usize,
        offset: u64,
    },
    /// `slot`: the write slot holding the payload, until every chunk is answered.
    Write {
        fua: bool,
        slot: Option<usize>,
    },
    Flush,
}

#[derive(Debug)]
struct Active {
    cookie: u64,
    what: Pending,
    remaining: usize,
    errno: u32,
    /// Why the first failed storage request failed (for an error chunk).
    why: String,
}

impl Active {
    fn new(cookie: u64, what: Pending, remaining: usize) -> Self {
        Self { cookie, what, remaining, errno: 0, why: String::new() }
    }

    fn is_read(&self) -> bool {
        matches!(self.what, Pending::Read { .. } | Pending::ReadSlot { .. })
    }
}

/// Blocks per piece of a read answered in structured replies (128 KiB;
/// the module docs give the measurements).
pub const PIECE_BLOCKS: u16 = 256;

/// One connection's reinc-client session and its jobs in flight.
#[derive(Debug)]
pub(super) struct Engine<'c> {
    config: &'c Config,
    client: Client,
    out: Stream,
    out_dead: bool,
    jobs: HashMap<u64, Active>,
    /// Storage request seq -> (job, byte offset of its data in the job,
    /// bytes of data a read must return).
    calls: HashMap<u64, (u64, usize, usize, u64)>,
    next_job: u64,
    flush_body: Vec<u8>,
    /// The shared pool, when the supervisor took one.
    pool: Option<Arc<ConnPool>>,
    /// Reads waiting for a free read slot, and every job behind them (kept
    /// in order).
    backlog: VecDeque<Job>,
    /// Bodies of bulk calls in flight, to send again after `NoPool`.
    bulk_bodies: HashMap<u64, Vec<u8>>,
    /// Bulk calls sent again so far (bounded by [`MAX_RESUBMITS`]).
    resubmitted: u32,
    /// The client negotiated structured replies: reads are answered in
    /// chunks (module docs).
    structured: bool,
}

/// Bulk calls a connection sends again after a `NoPool` answer before it
/// treats `NoPool` as an error.
const MAX_RESUBMITS: u32 = 1024;

impl<'c> Engine<'c> {
    pub(super) fn new(
        config: &'c Config,
        client: Client,
        out: Stream,
        pool: Option<Arc<ConnPool>>,
        structured: bool,
    ) -> Self {
        Self {
            config,
            client,
            out,
            out_dead: false,
            jobs: HashMap::new(),
            calls: HashMap::new(),
            next_job: 0,
            flush_body: postcard::to_allocvec(&StorageRequest::Flush).expect("Flush encodes"),
            pool,
            backlog: VecDeque::new(),
            bulk_bodies: HashMap::new(),
            resubmitted: 0,
            structured,
        }
    }

    fn submit_bulk(&mut self, job: u64, at: usize, len: usize, req: BulkRequest) -> Result<(), ClientError> {
        let body = postcard::to_allocvec(&StorageRequest::Bulk(req)).expect("a bulk request encodes");
        let seq = self.client.submit(&self.config.driver, &body)?;
        let (BulkRequest::ReadInto { lba, .. } | BulkRequest::WriteFrom { lba, .. }) = req;
        self.calls.insert(seq, (job, at, len, lba));
        self.bulk_bodies.insert(seq, body);
        Ok(())
    }

    /// Whether `job` can start now: a read on the pool path needs a free
    /// read slot (which only calls in flight hold, so one comes back).
    fn ready(&self, job: &Job) -> bool {
        match (job, &self.pool) {
            (Job::Read { .. }, Some(p)) => p.free_reads() > 0,
            _ => true,
        }
    }

    pub(super) fn run(mut self, rx: &Receiver<Job>) -> Result<(), ConnError> {
        let mut reader_done = false;
        loop {
            while self.calls.len() < self.config.window && self.backlog.front().is_some_and(|j| self.ready(j)) {
                let job = self.backlog.pop_front().expect("front exists");
                if let Err(e) = self.start(job) {
                    return Err(self.fail(e));
                }
            }
            while !reader_done && self.calls.len() < self.config.window {
                let job = if self.calls.is_empty() && self.backlog.is_empty() {
                    rx.recv().map_err(|_| TryRecvError::Disconnected)
                } else {
                    rx.try_recv()
                };
                match job {
                    Ok(job) if !self.backlog.is_empty() || !self.ready(&job) => {
                        self.backlog.push_back(job);
                        // Only completions free a read slot.
                        if !self.calls.is_empty() {
                            break;
                        }
                    }
                    Ok(job) => {
                        if let Err(e) = self.start(job) {
                            return Err(self.fail(e));
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => reader_done = true,
                }
            }
            if self.calls.is_empty() {
                if reader_done && self.backlog.is_empty() {
                    // The NBD connection is over and everything it asked
                    // for answered: the session (and its pool, at the
                    // driver too) can go now, not after the idle timeout.
                    self.client.close();
                    return Ok(());
                }
                continue;
            }
            match self.client.wait() {
                Ok(c) => self.complete(c.seq, c.result)?,
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// The session is unusable: every job in flight gets EIO (its outcome is
    /// unknown to us, and an error is the only honest answer), then the
    /// connection is closed.
    fn fail(&mut self, e: ClientError) -> ConnError {
        let jobs: Vec<(u64, bool)> = self.jobs.values().map(|a| (a.cookie, a.is_read())).collect();
        let why = format!("the supervisor session failed: {e}");
        for (cookie, read) in jobs {
            self.refuse(cookie, EIO, read, &why);
        }
        self.jobs.clear();
        self.calls.clear();
        self.out.shutdown();
        ConnError::Session(e)
    }

    /// Submits a storage call for `job`: its bytes `at..at + len` of a read
    /// start at block `lba` (the end-to-end checksums name blocks).
    fn submit(&mut self, job: u64, (at, len, lba): (usize, usize, u64), body: &[u8]) -> Result<(), ClientError> {
        let seq = self.client.submit(&self.config.driver, body)?;
        self.calls.insert(seq, (job, at, len, lba));
        Ok(())
    }

    fn start(&mut self, job: Job) -> Result<(), ClientError> {
        let id = self.next_job;
        self.next_job += 1;
        let max_blocks = MAX_BLOCKS_PER_REQUEST;
        match job {
            Job::Refuse { cookie, errno, read } => {
                let why = format!("refused by reinc-nbd: {}", proto::errno_name(errno));
                self.refuse(cookie, errno, read, &why);
            }
            Job::Flush { cookie } => {
                self.jobs.insert(id, Active::new(cookie, Pending::Flush, 1));
                let body = std::mem::take(&mut self.flush_body);
                let r = self.submit(id, (0, 0, 0), &body);
                self.flush_body = body;
                r?;
            }
            Job::Read { cookie, offset, length } if self.pool.is_some() => {
                let p = self.pool.clone().expect("checked by the guard");
                let slot = p.take_read().expect("started only with a free read slot");
                let base = p.read_offset(slot);
                // In pieces only when nothing else is in flight (module
                // docs): then the driver would idle while the socket
                // carries the data.
                let piece = if self.structured && self.jobs.is_empty() { PIECE_BLOCKS } else { MAX_BULK_BLOCKS as u16 };
                let parts: Vec<_> = chunks(offset, length, BLOCK_SIZE as u32, piece).collect();
                let what = Pending::ReadSlot { slot, len: length as usize, offset };
                self.jobs.insert(id, Active::new(cookie, what, parts.len()));
                for c in parts {
                    let req = BulkRequest::ReadInto {
                        lba: c.lba,
                        blocks: u32::from(c.blocks),
                        pool_offset: base + c.at as u64,
                    };
                    self.submit_bulk(id, c.at, usize::from(c.blocks) * BLOCK_SIZE, req)?;
                }
            }
            Job::WriteSlot { cookie, offset, length, fua, slot } => {
                let base = self.pool.as_ref().expect("a write slot implies a pool").write_offset(slot);
                let parts: Vec<_> = chunks(offset, length, BLOCK_SIZE as u32, MAX_BULK_BLOCKS as u16).collect();
                let what = Pending::Write { fua, slot: Some(slot) };
                self.jobs.insert(id, Active::new(cookie, what, parts.len()));
                for c in parts {
                    let req = BulkRequest::WriteFrom {
                        lba: c.lba,
                        blocks: u32::from(c.blocks),
                        pool_offset: base + c.at as u64,
                    };
                    self.submit_bulk(id, c.at, 0, req)?;
                }
            }
            Job::Zero { cookie, offset, length, fua } => {
                // Answered like a write (FUA included) once every part is.
                let max = u16::try_from(MAX_ZERO_BLOCKS).unwrap_or(u16::MAX);
                let parts: Vec<_> = chunks(offset, length, BLOCK_SIZE as u32, max).collect();
                self.jobs.insert(id, Active::new(cookie, Pending::Write { fua, slot: None }, parts.len()));
                for c in parts {
                    let req = StorageRequest::Zero { lba: c.lba, blocks: u32::from(c.blocks) };
                    let body = postcard::to_allocvec(&req).expect("a zero request encodes");
                    self.submit(id, (c.at, 0, c.lba), &body)?;
                }
            }
            Job::Read { cookie, offset, length } => {
                let parts: Vec<_> = chunks(offset, length, BLOCK_SIZE as u32, max_blocks).collect();
                let buf = vec![0u8; length as usize];
                self.jobs.insert(id, Active::new(cookie, Pending::Read { buf, offset }, parts.len()));
                for c in parts {
                    let body = reinc_client::blocksum::read_body(c.lba, c.blocks);
                    self.submit(id, (c.at, usize::from(c.blocks) * BLOCK_SIZE, c.lba), &body)?;
                }
            }
            Job::Write { cookie, offset, data, fua } => {
                let parts: Vec<_> = chunks(offset, data.len() as u32, BLOCK_SIZE as u32, max_blocks).collect();
                let what = Pending::Write { fua, slot: None };
                self.jobs.insert(id, Active::new(cookie, what, parts.len()));
                for c in parts {
                    let bytes = &data[c.at..c.at + usize::from(c.blocks) * BLOCK_SIZE];
                    let body = reinc_client::blocksum::write_body(c.lba, bytes);
                    self.submit(id, (c.at, 0, c.lba), &body)?;
                }
            }
        }
        Ok(())
    }

    fn complete(&mut self, seq: u64, result: Result<Vec<u8>, CallError>) -> Result<(), ConnError> {
        let Some((id, at, len, lba)) = self.calls.remove(&seq) else {
            return Ok(());
        };
        let bulk_body = self.bulk_bodies.remove(&seq);
        if let (Some(body), Ok(reply)) = (&bulk_body, &result)
            && matches!(postcard::from_bytes::<StorageReply<'_>>(reply), Ok(StorageReply::Error(StorageError::NoPool)))
            && self.resubmitted < MAX_RESUBMITS
        {
            // Run by an instance without this session's pool: a journaled
            // request replayed by a restarted supervisor before the library
            // attached the pool again. Refused before any transfer (not
            // executed), the slot still pinned: send it again as a new call.
            self.resubmitted += 1;
            let seq = self.client.submit(&self.config.driver, body).map_err(|e| self.fail(e))?;
            self.calls.insert(seq, (id, at, len, lba));
            self.bulk_bodies.insert(seq, bulk_body.expect("matched above"));
            return Ok(());
        }
        let driver = &self.config.driver;
        let Some(job) = self.jobs.get_mut(&id) else { return Ok(()) };
        let (errno, why) = match result {
            Err(e) => {
                tracing::warn!("[nbd] {driver}: storage request {seq} failed: {e}; the NBD client gets EIO");
                (EIO, format!("{driver}: {e}"))
            }
            // Exactly the bytes asked for, each block matching the checksum
            // stored with it: a short, long or damaged read is EIO.
            Ok(body) if matches!(job.what, Pending::Read { .. }) => {
                match (reinc_client::blocksum::check_read(driver, lba, (len / BLOCK_SIZE) as u64, &body), &mut job.what)
                {
                    (Ok(d), Pending::Read { buf, .. }) if at + len <= buf.len() => {
                        buf[at..at + len].copy_from_slice(d);
                        (0, String::new())
                    }
                    (Err(e), _) => {
                        tracing::warn!("[nbd] storage request {seq}: {e}; the NBD client gets EIO");
                        let errno = match e {
                            BlockError::Refused {
                                error: StorageError::OutOfRange { .. } | StorageError::Unaligned { .. },
                                ..
                            } => EINVAL,
                            _ => EIO,
                        };
                        (errno, e.to_string())
                    }
                    _ => (EIO, format!("{driver}: a reply of the wrong length")),
                }
            }
            Ok(body) => match (postcard::from_bytes::<StorageReply<'_>>(&body), &mut job.what) {
                (Ok(StorageReply::Filled { blocks, .. }), Pending::ReadSlot { len: total, .. })
                    if blocks as usize * BLOCK_SIZE == len && at + len <= *total =>
                {
                    (0, String::new())
                }
                (Ok(StorageReply::Written { .. } | StorageReply::Zeroed { .. }), Pending::Write { .. })
                | (Ok(StorageReply::Flushed), Pending::Write { .. } | Pending::Flush) => (0, String::new()),
                (Ok(StorageReply::Error(e)), _) => {
                    tracing::warn!("[nbd] {driver}: storage request {seq} refused: {e}");
                    let errno = match e {
                        StorageError::OutOfRange { .. } | StorageError::Unaligned { .. } => EINVAL,
                        _ => EIO,
                    };
                    (errno, format!("{driver}: {e}"))
                }
                (other, _) => {
                    tracing::warn!("[nbd] {driver}: storage request {seq}: unexpected reply {other:?}");
                    (EIO, format!("{driver}: an unexpected reply"))
                }
            },
        };
        if job.errno == 0 && errno != 0 {
            (job.errno, job.why) = (errno, why.clone());
        }
        job.remaining -= 1;
        let last = job.remaining == 0;
        if self.structured
            && let Pending::ReadSlot { slot, offset, .. } = job.what
        {
            // Each piece goes out as soon as it is answered (module docs).
            let cookie = job.cookie;
            if errno == 0 {
                self.send_piece(cookie, slot, at, len, offset, last);
            } else {
                self.send_raw(cookie, &proto::error_chunk(last, cookie, errno, &why, Some(offset + at as u64)), &[]);
            }
            if last {
                self.jobs.remove(&id);
                if let Some(p) = &self.pool {
                    p.give_read(slot);
                }
            }
            return Ok(());
        }
        if !last {
            return Ok(());
        }
        if let Pending::Write { slot: slot @ Some(_), .. } = &mut job.what
            && let (Some(i), Some(p)) = (slot.take(), &self.pool)
        {
            // Every chunk answered, so committed: the payload is no longer
            // needed for a replay.
            p.give_write(i);
        }
        if let Pending::Write { fua: true, .. } = job.what
            && job.errno == 0
        {
            // Force unit access: answered only once a flush behind the
            // write's chunks (FIFO) has synced them.
            job.what = Pending::Write { fua: false, slot: None };
            job.remaining = 1;
            let body = std::mem::take(&mut self.flush_body);
            let r = self.submit(id, (0, 0, 0), &body);
            self.flush_body = body;
            return r.map_err(|e| self.fail(e));
        }
        let job = self.jobs.remove(&id).expect("job present");
        let read = job.is_read();
        match job.what {
            Pending::Read { buf, offset } if job.errno == 0 => {
                if self.structured {
                    let head = proto::offset_data_head(true, job.cookie, offset, buf.len());
                    self.send_raw(job.cookie, &head, &buf);
                } else {
                    self.send(job.cookie, 0, &buf);
                }
            }
            Pending::ReadSlot { slot, len, .. } => {
                if job.errno == 0 {
                    self.send_slot(job.cookie, slot, len);
                } else {
                    self.send(job.cookie, job.errno, &[]);
                }
                if let Some(p) = &self.pool {
                    p.give_read(slot);
                }
            }
            _ => self.refuse(job.cookie, job.errno, read, &job.why),
        }
        Ok(())
    }

    /// The reply to a request that failed (or, with `errno` 0, succeeded
    /// without data): a simple reply, or for a read under structured
    /// replies an `ERROR` chunk carrying `why`.
    fn refuse(&mut self, cookie: u64, errno: u32, read: bool, why: &str) {
        if self.structured && read {
            self.send_raw(cookie, &proto::error_chunk(true, cookie, errno.max(1), why, None), &[]);
        } else {
            self.send(cookie, errno, &[]);
        }
    }

    /// Writes one simple reply; a client that went away gets no more, but
    /// the calls in flight are still collected (they were accepted and run).
    fn send(&mut self, cookie: u64, errno: u32, data: &[u8]) {
        if self.out_dead {
            return;
        }
        self.send_raw(cookie, &proto::simple_reply(errno, cookie), data);
    }

    /// Writes `head` and `data` (a whole reply or chunk) to the client.
    fn send_raw(&mut self, cookie: u64, head: &[u8], data: &[u8]) {
        if self.out_dead {
            return;
        }
        let r = if data.is_empty() { self.out.write_all(head) } else { write_all_vectored(&mut self.out, head, data) };
        if let Err(e) = r {
            tracing::info!("[nbd] reply to cookie {cookie:#x} not delivered (client gone?): {e}");
            self.out_dead = true;
        }
    }
}

impl Engine<'_> {
    /// Bytes `at..at + len` of a read at export offset `offset`, in read
    /// slot `slot`: one `OFFSET_DATA` chunk straight from the pool (the
    /// last of its reply with `last`).
    fn send_piece(&mut self, cookie: u64, slot: usize, at: usize, len: usize, offset: u64, last: bool) {
        if self.out_dead {
            return;
        }
        let Some(p) = &self.pool else { return };
        let h = proto::offset_data_head(last, cookie, offset + at as u64, len);
        if let Err(e) = p.pool.send_with_head(self.out.as_fd(), &h, p.read_offset(slot) + at as u64, len) {
            tracing::info!("[nbd] reply to cookie {cookie:#x} not delivered (client gone?): {e}");
            self.out_dead = true;
        }
    }

    /// A read reply whose data is in read slot `slot`: header and data in
    /// one `writev` straight from the pool.
    fn send_slot(&mut self, cookie: u64, slot: usize, len: usize) {
        if self.out_dead {
            return;
        }
        let Some(p) = &self.pool else { return };
        let h = proto::simple_reply(0, cookie);
        if let Err(e) = p.pool.send_with_head(self.out.as_fd(), &h, p.read_offset(slot), len) {
            tracing::info!("[nbd] reply to cookie {cookie:#x} not delivered (client gone?): {e}");
            self.out_dead = true;
        }
    }
}

/// Header and data in as few syscalls as the socket allows.
fn write_all_vectored(out: &mut Stream, h: &[u8], data: &[u8]) -> io::Result<()> {
    let total = h.len() + data.len();
    let mut done = 0;
    while done < total {
        let n = if done < h.len() {
            out.write_vectored(&[io::IoSlice::new(&h[done..]), io::IoSlice::new(data)])
        } else {
            out.write(&data[done - h.len()..])
        };
        match n {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
