//! The supervisor's write-ahead journal: what clients must not lose when the
//! supervisor itself crashes.
//!
//! # Why it exists
//! With `durability = "memory"` the supervisor survives a driver's crash but
//! not its own: the sessions, the dedup table, the accepted requests and the
//! drivers' committed state are in its memory only. A driver configured with
//! `durability = "journal"` has all of that in this journal before a client
//! sees an answer, so a restarted supervisor (systemd's `Restart=always`)
//! relaunches the driver with its last committed state, replays the
//! requests it had accepted, and answers resumed sessions exactly as the old
//! one would have.
//!
//! # What is in it
//! One file, `<state-dir>/supervisor.journal`: a header, then [`Record`]s,
//! each framed as `len u32 LE | crc32 u32 LE (of the payload) | payload`
//! (postcard), zero-padded to a multiple of 8 bytes so that no frame header
//! ever crosses a page boundary.
//!
//! # A SIGKILL never tears it
//! The kernel may cut a `pwrite` that spans pages when a fatal signal
//! arrives between them, so a batch written in one piece could be left
//! half written (the bench's 200 SIGKILLs found one). The writer therefore
//! writes each batch with its first frame header zeroed, then that 8-byte
//! header (aligned, so within one page), then syncs. A zero header at a
//! record boundary is the end of the journal: the batch behind it was never
//! confirmed, so nobody was told about it. What remains as damage (a torn
//! tail, a bad checksum) comes from the disk, not from a crash of the
//! process, and `journal-recovery` decides. A [`Record::Snapshot`] holds the whole recovered image; the
//! file always starts with one, and compaction writes a new file that holds
//! only a snapshot (temporary file, fsync, rename, fsync of the directory),
//! so the journal never grows beyond one snapshot plus
//! `journal-compact-bytes` of records.
//!
//! # How it is written
//! The core stays pure: it emits [`crate::core::Action::Journal`] with a
//! record and its log sequence number (LSN) and holds every answer (and the
//! `Welcome` of a new session) that depends on the record until
//! [`crate::core::Event::Journaled`] reports the LSN durable. The daemon
//! hands records to a writer thread ([`writer`]) that writes every record
//! waiting and covers them with one `fdatasync` (group commit), then wakes
//! the event loop through an eventfd. The event loop never blocks on disk.
//!
//! # Exactly once across a supervisor crash
//! The device-side watermark of a driver recognises one request: the one it
//! applied last. So for a journal driver at most one request may be in
//! doubt at any time (forwarded, and its answer not durable yet): the next
//! request is forwarded only once the previous answer is durable. After a
//! crash the in-doubt request is replayed first, on the committed state it
//! was forwarded with, and the watermark skips its effect.
//!
//! # Reading it safely
//! The journal decides what a restarted supervisor tells its clients, so it
//! is trusted only as a checkpoint is (`crate::checkpoint`): its directory
//! must pass the state directory's checks (`crate::daemon::dirs`), and the
//! file is opened with `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat` on
//! the open descriptor. A symlink (say to `/dev/zero`), a FIFO, a device, a
//! file another user owns or one that group or others can write is refused
//! with an error naming it, without a byte read. At most [`max_file_bytes`]
//! are read: what the configured budgets let a journal grow to (one snapshot
//! plus `journal-compact-bytes` of records); anything larger was not written
//! by this configuration and is refused by size rather than read into
//! memory. The writer creates its temporary file with
//! `O_CREAT | O_EXCL | O_NOFOLLOW`, so a symlink planted there is never
//! followed.
//!
//! # Designs rejected
//! - Truncating every torn tail silently: after a SIGKILL there is none to
//!   truncate (see above), so a torn tail means the disk lost data, which
//!   an operator must see unless `journal-recovery = "truncate"` says not.
//! - Pipelining journal drivers as memory drivers are (`window` requests in
//!   flight while their answers are being synced): after a crash several
//!   applied requests could be in doubt, and replaying the first of them
//!   would re-apply it over the later ones. A device watermark of the last W
//!   requests would lift this; it changes every device format, so it waits.
//! - One fsync per record on the event loop (what `persist-checkpoint` does):
//!   0.028x the in-memory throughput in issue 13, and the event loop stalls.
//! - io_uring: a thread and a channel are enough for one file, and need no
//!   new dependency or kernel feature.
//! - A journal per driver: the sessions and the dedup table are shared by
//!   every driver; one file keeps one order and needs one fsync per batch.
//! - SQLite or another embedded database: a dependency far larger than the
//!   four record kinds need, with its own fsync policy to audit.

pub mod dump;
pub mod writer;

pub use dump::dump;

use reinc_proto::{CallError, ClientId, RequestId};
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config::{Config, DurabilityMode, JournalRecovery};
use crate::daemon::dirs::{self, DirError};

/// The journal file's magic number (bytes 0..8).
pub const MAGIC: [u8; 8] = *b"REINCJNL";
/// The journal format version (bytes 8..12). 2: frames padded to
/// [`ALIGN`] bytes (version 1 never left development).
pub const VERSION: u32 = 2;
/// Bytes before the first record.
pub const HEADER_BYTES: usize = 16;
/// Bytes of a record's frame header (length and CRC).
pub const FRAME_BYTES: usize = 8;
/// Frames start at multiples of this (the header is 16 bytes).
pub const ALIGN: usize = 8;

/// `n` rounded up to [`ALIGN`].
#[must_use]
pub const fn padded(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}
/// Largest record payload accepted when reading (a snapshot of many
/// sessions with cached replies can be large; anything beyond is damage).
pub const MAX_RECORD: usize = 1 << 30;

/// Bytes a journal written under `cfg` can hold at most, with room to
/// spare: the header, the largest snapshot the budgets allow, and
/// `journal-compact-bytes` of records behind it (plus the largest record,
/// which may cross the threshold before the next snapshot is cut).
///
/// The snapshot is bounded by the cached replies (`dedup-bytes-total`, plus
/// a per-entry overhead for `max-sessions` × `dedup-per-session` entries)
/// and, for each journal driver, its committed state and `queue-depth`
/// accepted bodies.
#[must_use]
pub fn max_file_bytes(cfg: &Config) -> u64 {
    /// Generous postcard overhead of one cached reply, session, pending
    /// request or driver entry (ids, lengths, enum tags).
    const ENTRY: u64 = 64;
    let s = &cfg.supervisor;
    let sessions = s.max_sessions as u64;
    let cache = s.limits.dedup_bytes_total as u64 + sessions * (s.dedup_per_session as u64 + 1) * ENTRY;
    let drivers: u64 = cfg
        .drivers
        .iter()
        .filter(|d| d.durability == DurabilityMode::Journal)
        .map(|d| {
            let depth = d.queue_depth as u64;
            ENTRY
                + d.name.len() as u64
                + reinc_proto::MAX_CHECKPOINT as u64
                + depth * (reinc_proto::MAX_BODY as u64 + ENTRY)
        })
        .sum();
    let record = (FRAME_BYTES + ALIGN + reinc_proto::MAX_FRAME) as u64 + ENTRY;
    HEADER_BYTES as u64 + (FRAME_BYTES + ALIGN) as u64 + cache + drivers + s.journal_compact_bytes + 2 * record
}

/// The journal of `state_dir`.
#[must_use]
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("supervisor.journal")
}

/// Where the daemon keeps the previous lifetime's journal at `journal` ([`dump()`]).
#[must_use]
pub fn previous_path(journal: &Path) -> PathBuf {
    journal.with_extension("journal.prev")
}

/// An answer as journaled (the core's cached reply).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The driver's reply body.
    Reply(Vec<u8>),
    /// The call failed.
    Failed(CallError),
}

/// A session as a snapshot holds it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SessionImage {
    /// The session.
    pub client: ClientId,
    /// No seq below this is retried (answers below it are forgotten).
    pub floor: u64,
    /// The dedup table: answers by seq.
    pub cache: Vec<(u64, Answer)>,
}

impl Default for SessionImage {
    fn default() -> Self {
        Self { client: ClientId(0), floor: 0, cache: Vec::new() }
    }
}

/// A request accepted and not answered.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PendingImage {
    /// Its id.
    pub rid: RequestId,
    /// Its body.
    pub body: Vec<u8>,
}

/// A journal driver as a snapshot holds it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct DriverImage {
    /// Its configured name.
    pub name: String,
    /// Its committed state.
    pub checkpoint: Option<Vec<u8>>,
    /// Its accepted, unanswered requests in queue order.
    pub pending: Vec<PendingImage>,
}

/// Everything a restarted supervisor recovers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Image {
    /// The sessions (all of them: a resumed session must be known).
    pub sessions: Vec<SessionImage>,
    /// The journal drivers.
    pub drivers: Vec<DriverImage>,
    /// Supervisor lifetimes that wrote this journal (a restart counter).
    pub lifetimes: u64,
    /// The sessions that had no connection, the one idle the longest
    /// first (from [`Record::SessionDetached`]; not part of a snapshot's
    /// bytes, which are followed by one such record per detached session).
    /// The others had one when the journal ended: their clients are
    /// expected back, so a full table evicts these first after recovery.
    #[serde(skip)]
    pub detached: Vec<ClientId>,
}

/// One journal record.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The whole image; everything before it is superseded.
    Snapshot(Image),
    /// A new session was opened (its `Welcome` waits for this).
    Session {
        /// The session.
        client: ClientId,
    },
    /// A request to a journal driver was accepted.
    Accepted {
        /// The driver's name.
        driver: String,
        /// The request.
        rid: RequestId,
        /// Its body.
        body: Vec<u8>,
        /// The session's `acked_below` with it.
        floor: u64,
    },
    /// A request of a journal driver was answered (its client's answer
    /// waits for this record).
    Answered {
        /// The driver's name.
        driver: String,
        /// The request.
        rid: RequestId,
        /// The driver's committed state after it, if the answer changed it.
        commit: Option<Vec<u8>>,
        /// The answer.
        answer: Answer,
        /// Kept in the dedup table (a failure that did not execute is not:
        /// a retry may run it).
        cached: bool,
    },
    /// A session lost its connection (its client left, or it is waiting to
    /// resume). Appended in this version's format without changing older
    /// records: a journal that has one cannot be read by an older build.
    SessionDetached {
        /// The session.
        client: ClientId,
    },
    /// A detached session was resumed on a new connection.
    SessionAttached {
        /// The session.
        client: ClientId,
    },
    /// A session was forgotten (idle expiry, or evicted for a new one from
    /// a full table): it is not recovered.
    SessionForgotten {
        /// The session.
        client: ClientId,
    },
}

impl Image {
    fn session(&mut self, client: ClientId) -> &mut SessionImage {
        if let Some(i) = self.sessions.iter().position(|s| s.client == client) {
            return &mut self.sessions[i];
        }
        self.sessions.push(SessionImage { client, ..SessionImage::default() });
        self.sessions.last_mut().expect("just pushed")
    }

    fn driver(&mut self, name: &str) -> &mut DriverImage {
        if let Some(i) = self.drivers.iter().position(|d| d.name == name) {
            return &mut self.drivers[i];
        }
        self.drivers.push(DriverImage { name: name.into(), ..DriverImage::default() });
        self.drivers.last_mut().expect("just pushed")
    }

    /// Applies one record, in journal order.
    pub fn apply(&mut self, r: Record) {
        match r {
            Record::Snapshot(image) => *self = image,
            Record::Session { client } => {
                self.session(client);
            }
            Record::SessionDetached { client } => {
                if self.sessions.iter().any(|s| s.client == client) {
                    self.detached.retain(|c| *c != client);
                    self.detached.push(client);
                }
            }
            Record::SessionAttached { client } => self.detached.retain(|c| *c != client),
            Record::SessionForgotten { client } => {
                self.sessions.retain(|s| s.client != client);
                self.detached.retain(|c| *c != client);
            }
            Record::Accepted { driver, rid, body, floor } => {
                let s = self.session(rid.client);
                s.floor = s.floor.max(floor);
                let d = self.driver(&driver);
                if !d.pending.iter().any(|p| p.rid == rid) {
                    d.pending.push(PendingImage { rid, body });
                }
            }
            Record::Answered { driver, rid, commit, answer, cached } => {
                let d = self.driver(&driver);
                d.pending.retain(|p| p.rid != rid);
                if commit.is_some() {
                    d.checkpoint = commit;
                }
                // A forgotten session's answer is dropped, as it is in memory.
                if cached
                    && let Some(s) = self.sessions.iter_mut().find(|s| s.client == rid.client)
                    && rid.seq >= s.floor
                {
                    s.cache.retain(|(seq, _)| *seq != rid.seq);
                    s.cache.push((rid.seq, answer));
                }
            }
        }
    }
}

/// The records that hold `image` in a journal: its snapshot, then one
/// [`Record::SessionDetached`] per session it has without a connection,
/// idle the longest first (the snapshot's bytes do not hold them). Every
/// compaction writes exactly these, so an image survives one.
#[must_use]
pub fn snapshot_records(image: Image) -> Vec<Record> {
    let detached: Vec<Record> = image.detached.iter().map(|&client| Record::SessionDetached { client }).collect();
    std::iter::once(Record::Snapshot(image)).chain(detached).collect()
}

/// The header of a journal file.
#[must_use]
pub fn header() -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// A record's bytes, framed.
///
/// # Panics
/// Never: postcard encodes every record into a `Vec`.
#[must_use]
pub fn frame(r: &Record) -> Vec<u8> {
    let payload = postcard::to_allocvec(r).expect("records always encode");
    let mut out = Vec::with_capacity(FRAME_BYTES + padded(payload.len()));
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out.resize(FRAME_BYTES + padded(payload.len()), 0);
    out
}

/// Why a journal cannot be used. Every message names the file, and the
/// byte offset where the damage starts.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file could not be read or written.
    #[error("journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not start with a journal header of this version.
    #[error("journal {path}: not a version-{VERSION} reinc journal (bad header)")]
    Header {
        /// The file.
        path: PathBuf,
    },
    /// The last record is incomplete: the write of its batch was cut short,
    /// so it was never durable and nobody was told about it.
    #[error("journal {path}: torn tail at offset {offset} ({have} of {need} bytes of the last record)")]
    TornTail {
        /// The file.
        path: PathBuf,
        /// Where the incomplete record starts.
        offset: u64,
        /// Bytes present.
        have: u64,
        /// Bytes its frame announces.
        need: u64,
    },
    /// The directory the journal lives in is not a private directory of
    /// ours (the error names it).
    #[error("journal {path}: {source}")]
    Directory {
        /// The journal file.
        path: PathBuf,
        /// What is wrong with its directory.
        source: DirError,
    },
    /// A symlink, FIFO, device or directory where the journal should be.
    #[error("journal {path}: not a regular file ({kind}); refusing to read it")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Owned by another user: it may be forged.
    #[error("journal {path}: owned by uid {owner}, not by the supervisor's uid {me}; refusing to recover from it")]
    ForeignOwner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        me: u32,
    },
    /// Group or others may write it: it may be forged.
    #[error("journal {path}: mode {mode:04o} lets group or others write it; refusing to recover from it (chmod go-w)")]
    Writable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Larger than anything the configuration lets the journal grow to.
    #[error(
        "journal {path}: {len} bytes exceeds the {limit}-byte limit of this configuration (one snapshot within the \
         budgets plus journal-compact-bytes); refusing to read it"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (or a lower bound, for a file that kept growing).
        len: u64,
        /// The limit ([`max_file_bytes`]).
        limit: u64,
    },
    /// A complete record is damaged (checksum, size or decoding).
    #[error("journal {path}: corrupt record at offset {offset}: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// What is wrong.
        what: String,
    },
}

impl JournalError {
    /// The offset of the damage, for truncation.
    fn offset(&self) -> Option<u64> {
        match self {
            Self::TornTail { offset, .. } | Self::Corrupt { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}

/// What [`load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The recovered image.
    pub image: Image,
    /// Records read (the snapshot included).
    pub records: u64,
    /// Bytes of valid journal.
    pub valid_bytes: u64,
    /// The damage cut off under `journal-recovery = "truncate"`.
    pub truncated: Option<String>,
    /// Bytes of a batch that was written but never confirmed (its first
    /// header is still zero): ignored, as nobody was told about it.
    pub unconfirmed: u64,
}

/// Reads the journal at `path` (a missing file is an empty image), at most
/// `limit` bytes of it ([`max_file_bytes`]). Its directory and the file
/// itself must be the supervisor's and writable by nobody else (see the
/// module doc). A torn or corrupt record is refused, or with
/// [`JournalRecovery::Truncate`] the journal is cut at the last valid
/// record (the file itself is rewritten by the next snapshot).
///
/// # Errors
/// [`JournalError`] naming the file (and the offset of any damage).
pub fn load(path: &Path, policy: JournalRecovery, limit: u64) -> Result<Loaded, JournalError> {
    let io = |source| JournalError::Io { path: path.into(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    dirs::check_private_dir("state directory", dir)
        .map_err(|source| JournalError::Directory { path: path.into(), source })?;
    // O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(JournalError::NotRegular { path: path.into(), kind: "a symbolic link" });
        }
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    check_trusted(path, &meta)?;
    let too_large = |len| JournalError::TooLarge { path: path.into(), len, limit };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    // Bounded even if the file grows between fstat and read.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    parse(path, &bytes, policy)
}

/// A journal is trusted only as a regular file of ours that nobody else can
/// write.
fn check_trusted(path: &Path, meta: &std::fs::Metadata) -> Result<(), JournalError> {
    use crate::trusted::Untrusted;
    crate::trusted::check(meta).map_err(|u| match u {
        Untrusted::NotRegular { kind } => JournalError::NotRegular { path: path.into(), kind },
        Untrusted::ForeignOwner { owner, me } => JournalError::ForeignOwner { path: path.into(), owner, me },
        Untrusted::Writable { mode } => JournalError::Writable { path: path.into(), mode },
    })
}

/// [`load`] over bytes already read (pure: the tests use it).
///
/// # Errors
/// [`JournalError`] naming `path` and the offset.
pub fn parse(path: &Path, bytes: &[u8], policy: JournalRecovery) -> Result<Loaded, JournalError> {
    parse_with(path, bytes, policy, |_, _| {})
}

/// [`parse`], showing each valid record and its offset to `visit` before it
/// is applied ([`dump()`] prints them).
///
/// # Errors
/// [`JournalError`] naming `path` and the offset.
pub fn parse_with(
    path: &Path,
    bytes: &[u8],
    policy: JournalRecovery,
    mut visit: impl FnMut(u64, &Record),
) -> Result<Loaded, JournalError> {
    if bytes.len() < HEADER_BYTES || bytes[..HEADER_BYTES] != header() {
        return Err(JournalError::Header { path: path.into() });
    }
    let mut loaded = Loaded { valid_bytes: HEADER_BYTES as u64, ..Loaded::default() };
    let mut off = HEADER_BYTES;
    while off < bytes.len() {
        match record_at(path, bytes, off) {
            Ok(None) => {
                loaded.unconfirmed = (bytes.len() - off) as u64;
                break;
            }
            Ok(Some((r, next))) => {
                visit(off as u64, &r);
                loaded.image.apply(r);
                loaded.records += 1;
                off = next;
                loaded.valid_bytes = off as u64;
            }
            Err(e) => match policy {
                JournalRecovery::Refuse => return Err(e),
                JournalRecovery::Truncate => {
                    debug_assert_eq!(e.offset(), Some(off as u64));
                    loaded.truncated = Some(e.to_string());
                    break;
                }
            },
        }
    }
    Ok(loaded)
}

/// The record at `off` and the offset after it; `None` at an unconfirmed
/// batch (a zero frame header).
fn record_at(path: &Path, bytes: &[u8], off: usize) -> Result<Option<(Record, usize)>, JournalError> {
    let rest = &bytes[off..];
    let torn = |need: usize| JournalError::TornTail {
        path: path.into(),
        offset: off as u64,
        have: rest.len() as u64,
        need: need as u64,
    };
    let corrupt = |what: String| JournalError::Corrupt { path: path.into(), offset: off as u64, what };
    if rest.len() < FRAME_BYTES {
        return Err(torn(FRAME_BYTES));
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let stored = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if len == 0 && stored == 0 {
        // No record is empty: this is a batch whose header was not written.
        return Ok(None);
    }
    if len > MAX_RECORD {
        return Err(corrupt(format!("length {len} exceeds the {MAX_RECORD}-byte limit")));
    }
    if rest.len() < FRAME_BYTES + padded(len) {
        return Err(torn(FRAME_BYTES + padded(len)));
    }
    let payload = &rest[FRAME_BYTES..FRAME_BYTES + len];
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(corrupt(format!("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")));
    }
    let r = postcard::from_bytes::<Record>(payload).map_err(|e| corrupt(format!("does not decode: {e}")))?;
    Ok(Some((r, off + FRAME_BYTES + padded(len))))
}

#[cfg(test)]
mod tests;
