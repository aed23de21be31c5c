//! The journal's writer thread: group commit off the event loop.
//!
//! The event loop sends framed records over a channel and never waits; the
//! records one event produced go as one message ([`Writer::send_all`]), so a
//! batch never splits them and the thread is woken once for them. The
//! thread blocks for the first message, takes every record that is waiting
//! behind it, writes them with one `pwrite` and covers them with one
//! `fdatasync`, then reports the highest LSN durable and wakes the event
//! loop through an eventfd. Records that arrive while a sync runs form the
//! next batch, so the batch grows with the load and one sync covers it.
//!
//! A snapshot in a batch supersedes everything before it: the thread writes
//! a new file (header, snapshot, the batch's later records) to a temporary
//! name (created with `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600: a symlink
//! planted there is unlinked, never followed), syncs it, renames it over the
//! journal and syncs the directory.
//!
//! A failed write (ENOSPC, EIO) is retried at the same offset with backoff
//! (10 ms doubling to 1 s) after truncating whatever part of it landed;
//! the event loop hears of the episode once ([`FromWriter::Failing`]) and
//! keeps holding the answers that wait for the batch.

use super::{JournalError, frame, header};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A record for the writer.
#[derive(Debug)]
pub struct ToWriter {
    /// Its log sequence number (increasing).
    pub lsn: u64,
    /// The framed record ([`frame`]).
    pub bytes: Vec<u8>,
    /// A snapshot: it supersedes every record before it.
    pub snapshot: bool,
}

/// What the writer reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromWriter {
    /// Every record up to `upto` is durable.
    Durable {
        /// The highest LSN durable.
        upto: u64,
        /// Records in the batch.
        records: usize,
        /// Bytes written.
        bytes: usize,
        /// How long the `fdatasync` (or the snapshot's syncs) took.
        sync: Duration,
        /// The batch compacted the journal.
        compacted: bool,
    },
    /// A batch could not be written; it is being retried.
    Failing {
        /// Why, naming the file.
        error: String,
    },
    /// The batch that was failing is durable now (a `Durable` follows).
    Recovered {
        /// Failed attempts.
        attempts: u32,
    },
}

/// The writer thread and its channels.
#[derive(Debug)]
pub struct Writer {
    tx: Option<Sender<Vec<ToWriter>>>,
    rx: Receiver<FromWriter>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

/// The file side of the thread.
#[derive(Debug)]
struct Log {
    path: PathBuf,
    file: File,
    len: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.into(), source }
}

impl Log {
    /// Writes a new journal holding `first` (a framed snapshot) and `rest`,
    /// crash-safely: temporary file, sync, rename, directory sync.
    fn replace(path: &Path, first: &[u8], rest: &[u8]) -> Result<Self, JournalError> {
        let tmp = path.with_extension("journal.tmp");
        let file = match create_tmp(&tmp) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // A stale temporary file (a crash mid-compaction) or a planted
                // symlink: unlink removes the entry, never what a link points
                // to; then the exclusive create is tried once more.
                std::fs::remove_file(&tmp).map_err(io(&tmp))?;
                create_tmp(&tmp)
            }
            other => other,
        }
        .map_err(io(&tmp))?;
        let mut buf = Vec::with_capacity(super::HEADER_BYTES + first.len() + rest.len());
        buf.extend_from_slice(&header());
        buf.extend_from_slice(first);
        buf.extend_from_slice(rest);
        file.write_all_at(&buf, 0).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        Ok(Self { path: path.into(), file, len: buf.len() as u64 })
    }

    /// Appends `bytes` (whole frames) and syncs them: first with the first
    /// frame header zeroed, then that header, so that a write cut short by
    /// a SIGKILL leaves a batch the reader ignores rather than a torn tail.
    fn append(&mut self, bytes: &[u8]) -> Result<(), JournalError> {
        let mut body = bytes.to_vec();
        body[..super::FRAME_BYTES].fill(0);
        let res = self
            .file
            .write_all_at(&body, self.len)
            .and_then(|()| self.file.write_all_at(&bytes[..super::FRAME_BYTES], self.len))
            .and_then(|()| self.file.sync_data());
        if let Err(e) = res {
            // Whatever part landed must not stay as a torn record in the
            // middle of the journal once a retry succeeds behind it.
            let _ = self.file.set_len(self.len);
            return Err(io(&self.path)(e));
        }
        self.len += bytes.len() as u64;
        Ok(())
    }
}

/// Creates `tmp` exclusively (mode 0600), never through a symlink.
fn create_tmp(tmp: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(tmp)
}

/// First retry delay after a failed batch.
const RETRY_BASE: Duration = Duration::from_millis(10);
/// Longest retry delay.
const RETRY_CAP: Duration = Duration::from_secs(1);

impl Writer {
    /// Writes the journal at `path` afresh, holding only `image` (the
    /// recovered one: a snapshot and its detached sessions; this also cuts
    /// off a truncated tail), and starts the thread.
    ///
    /// # Errors
    /// [`JournalError::Io`] naming the file or directory.
    pub fn start(path: &Path, image: &super::Image) -> Result<Self, JournalError> {
        let records = super::snapshot_records(image.clone());
        let rest: Vec<u8> = records[1..].iter().flat_map(frame).collect();
        let log = Log::replace(path, &frame(&records[0]), &rest)?;
        let wake = Arc::new(
            EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| JournalError::Io { path: path.into(), source: e.into() })?,
        );
        let (tx, thread_rx) = channel::<Vec<ToWriter>>();
        let (thread_tx, rx) = channel::<FromWriter>();
        let w = Arc::clone(&wake);
        let thread = std::thread::Builder::new()
            .name("reinc-journal".into())
            .spawn(move || run(log, &thread_rx, &thread_tx, &w))
            .map_err(io(path))?;
        Ok(Self { tx: Some(tx), rx, wake, thread: Some(thread), path: path.into() })
    }

    /// The journal file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a record (never blocks).
    pub fn send(&self, msg: ToWriter) {
        self.send_all(vec![msg]);
    }

    /// Queues records, in LSN order, to be written in the same batch (never
    /// blocks; nothing is sent for an empty list).
    pub fn send_all(&self, msgs: Vec<ToWriter>) {
        if let (Some(tx), false) = (&self.tx, msgs.is_empty()) {
            // The thread only ends when `tx` is dropped.
            let _ = tx.send(msgs);
        }
    }

    /// The eventfd that becomes readable when reports are waiting.
    #[must_use]
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// The reports waiting (clears the eventfd).
    pub fn drain(&self) -> Vec<FromWriter> {
        let _ = self.wake.read();
        self.rx.try_iter().collect()
    }

    /// Stops the thread once every queued record is durable (or its batch
    /// keeps failing for `patience`), and returns the last reports.
    pub fn finish(mut self, patience: Duration) -> Vec<FromWriter> {
        self.tx = None;
        let deadline = Instant::now() + patience;
        if let Some(t) = self.thread.take() {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        self.rx.try_iter().collect()
    }
}

fn run(mut log: Log, rx: &Receiver<Vec<ToWriter>>, tx: &Sender<FromWriter>, wake: &EventFd) {
    let report = |m: FromWriter| {
        let _ = tx.send(m);
        let _ = wake.write(1);
    };
    while let Ok(first) = rx.recv() {
        let mut batch = first;
        batch.extend(rx.try_iter().flatten());
        if batch.is_empty() {
            continue;
        }
        let upto = batch.iter().map(|m| m.lsn).max().unwrap_or(0);
        let snap = batch.iter().rposition(|m| m.snapshot);
        let live = &batch[snap.unwrap_or(0)..];
        let bytes: usize = live.iter().map(|m| m.bytes.len()).sum();
        let mut attempts = 0u32;
        let mut delay = RETRY_BASE;
        loop {
            let started = Instant::now();
            let res = match snap {
                Some(_) => {
                    let rest = live[1..].iter().map(|m| m.bytes.as_slice()).collect::<Vec<_>>().concat();
                    Log::replace(&log.path, &live[0].bytes, &rest).map(|l| log = l)
                }
                None => {
                    let buf = live.iter().map(|m| m.bytes.as_slice()).collect::<Vec<_>>().concat();
                    log.append(&buf)
                }
            };
            match res {
                Ok(()) => {
                    let sync = started.elapsed();
                    if attempts > 0 {
                        report(FromWriter::Recovered { attempts });
                    }
                    report(FromWriter::Durable { upto, records: live.len(), bytes, sync, compacted: snap.is_some() });
                    break;
                }
                Err(e) => {
                    if attempts == 0 {
                        report(FromWriter::Failing { error: e.to_string() });
                    }
                    attempts += 1;
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(RETRY_CAP);
                }
            }
        }
    }
}
