//! Durability glue: restoring checkpoints and the journal at start,
//! writing a checkpoint when the core asks, handing journal records to the
//! writer thread ([`crate::journal::writer`]) and reporting what it made
//! durable back to the core.
//!
//! The decisions (what to hold, when to release) stay in the core; this
//! module only does the I/O and reports outcomes as events. Syncing the
//! journal on the event loop was rejected: an `fdatasync` would stall every
//! driver and client for its duration.

use super::{Daemon, DaemonError, checkpoint_path, dirs};
use crate::checkpoint;
use crate::config::{Config, CorruptCheckpoint, DriverConfig};
use crate::core::{Action, DriverId, Event, PersistOutcome, Supervisor};
use crate::journal::writer::{FromWriter, ToWriter, Writer};
use crate::journal::{self, Record};
use reinc_policy::Millis;
use std::path::Path;
use tracing::{debug, info, warn};

impl Daemon {
    /// Writes `driver`'s checkpoint and returns the core's answer.
    pub(super) fn persist(&mut self, driver: DriverId, checkpoint: &[u8]) -> Vec<Action> {
        // The core holds this driver's replies until it hears
        // the state is durable; a failure is retried on its
        // deadline, and the core says so once per episode.
        let path = checkpoint_path(&self.cfg, &self.core.config(driver).name);
        let outcome = match checkpoint::write(&path, checkpoint) {
            Ok(()) => PersistOutcome::Durable,
            Err(e) => {
                debug!("checkpoint write failed: {e}");
                PersistOutcome::Failed { path: path.display().to_string(), error: persist_error(&e) }
            }
        };
        let now = self.now();
        self.core.handle(now, Event::Persisted { driver, outcome })
    }

    /// Queues a record for the journal writer (sent with the others of the
    /// same [`Daemon::execute`], see [`Daemon::flush_journal`]); with no
    /// journal nothing waits, so the core hears at once that it is durable.
    pub(super) fn journal_record(&mut self, lsn: u64, record: &Record) -> Vec<Action> {
        if self.journal.is_some() {
            let snapshot = matches!(record, Record::Snapshot(_));
            self.journal_out.push(ToWriter { lsn, bytes: journal::frame(record), snapshot });
            return Vec::new();
        }
        let now = self.now();
        self.core.handle(now, Event::Journaled { upto: lsn })
    }

    /// Sends the records queued by [`Daemon::journal_record`] to the writer
    /// as one message: the thread wakes once for them and never syncs a
    /// batch that has only the first of them (an answer's record would
    /// otherwise often wait one more `fdatasync` behind its own request's
    /// `Accepted` record).
    pub(super) fn flush_journal(&mut self) {
        if let Some(w) = &self.journal {
            w.send_all(std::mem::take(&mut self.journal_out));
        }
    }

    /// Reports of the journal writer: durability moves the core on.
    pub(super) fn on_journal(&mut self) {
        let Some(w) = &self.journal else { return };
        let path = w.path().display().to_string();
        let mut upto = None;
        for r in w.drain() {
            match r {
                FromWriter::Durable { upto: u, records, bytes, sync, .. } => {
                    upto = upto.max(Some(u));
                    self.stats.journal_sync.observe(sync.as_secs_f64());
                    self.stats.journal_batches += 1;
                    self.stats.journal_batch_records += records as u64;
                    self.stats.journal_bytes += bytes as u64;
                }
                FromWriter::Failing { error } => {
                    warn!("[SUP] cannot write the journal: {error} (answers held, retrying)")
                }
                FromWriter::Recovered { attempts } => {
                    info!("[SUP] journal {path} written after {attempts} failed attempts; releasing held answers");
                }
            }
        }
        if let Some(upto) = upto {
            let now = self.now();
            let acts = self.core.handle(now, Event::Journaled { upto });
            self.execute(acts);
        }
    }
}

pub(super) fn durable_lsn(r: &FromWriter) -> Option<u64> {
    match r {
        FromWriter::Durable { upto, .. } => Some(*upto),
        _ => None,
    }
}

/// Reads the journal, restores what it holds into `core`, and starts the
/// writer on a fresh journal that holds exactly that.
pub(super) fn open_journal(cfg: &Config, core: &mut Supervisor) -> Result<Writer, DaemonError> {
    let dir = &cfg.supervisor.state_dir;
    dirs::ensure_private_dir("state directory", dir, 0o700)?;
    let path = journal::path(dir);
    let limit = journal::max_file_bytes(cfg);
    let loaded = journal::load(&path, cfg.supervisor.journal_recovery, limit)
        .map_err(|source| DaemonError::Journal { source })?;
    if loaded.unconfirmed > 0 {
        info!(
            "[SUP] journal {}: ignoring the last {} bytes, a batch written but never confirmed (the previous \
             supervisor died writing it)",
            path.display(),
            loaded.unconfirmed
        );
    }
    if let Some(damage) = &loaded.truncated {
        warn!("[SUP] {damage}; truncated at the last valid record ({} bytes kept)", loaded.valid_bytes);
    }
    let r = core.recover(Millis(0), loaded.image);
    if loaded.records > 0 {
        let requests: usize = r.requests.iter().map(|(_, n)| n).sum();
        info!(
            "[SUP] recovered {} sessions, {requests} accepted requests and {} committed states from {} ({} records)",
            r.sessions,
            r.checkpoints,
            path.display(),
            loaded.records
        );
    }
    for p in &r.dropped {
        warn!("[SUP] journal {}: {p}", path.display());
    }
    keep_previous(&path);
    Writer::start(&path, &core.image()).map_err(|source| DaemonError::Journal { source })
}

/// Keeps the journal the previous lifetime left as `<journal>.prev` for a
/// post-mortem (`supervisor --dump-journal`): the writer is about to replace
/// it by the folded image. A hard link, not a rename, so that a crash
/// before the replacement still finds the journal where it belongs; a
/// failure only costs the post-mortem copy.
fn keep_previous(path: &Path) {
    let prev = journal::previous_path(path);
    let _ = std::fs::remove_file(&prev);
    match std::fs::hard_link(path, &prev) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => debug!("cannot keep {} as {}: {e}", path.display(), prev.display()),
    }
}

/// A driver's configuration and its restored checkpoint, as
/// [`Supervisor::new`] takes them.
pub(super) type Restored = (DriverConfig, Option<Vec<u8>>);

/// Each driver's configuration with its persisted checkpoint, if it keeps
/// one (`persist-checkpoint`), read and checked before anything starts.
pub(super) fn restore_checkpoints(cfg: &Config) -> Result<Vec<Restored>, DaemonError> {
    let mut drivers = Vec::new();
    for d in &cfg.drivers {
        let mut ckpt = None;
        if d.persist_checkpoint {
            warn!(
                "[SUP] {}: persist-checkpoint is deprecated: durability = \"journal\" keeps the committed state \
                 with the sessions and answers, off the event loop",
                d.name
            );
            dirs::ensure_private_dir("state directory", &cfg.supervisor.state_dir, 0o700)?;
            let path = checkpoint_path(cfg, &d.name);
            match checkpoint::read(&path) {
                Ok(c) => {
                    if let Some(c) = &c {
                        info!("[SUP] restored checkpoint of {} ({} bytes) from {}", d.name, c.len(), path.display());
                    }
                    ckpt = c;
                }
                Err(e) if d.on_corrupt_checkpoint == CorruptCheckpoint::StartFresh => {
                    warn!("[SUP] {e}; starting {} from its initial state", d.name);
                }
                Err(source) => return Err(DaemonError::Checkpoint { driver: d.name.clone(), source }),
            }
        }
        drivers.push((d.clone(), ckpt));
    }
    Ok(drivers)
}

/// The error of a failed checkpoint write, naming the file or directory
/// that failed when it is not the checkpoint file itself.
pub(super) fn persist_error(e: &checkpoint::CheckpointError) -> String {
    match e {
        checkpoint::CheckpointError::Io { path, source } => format!("{}: {source}", path.display()),
        other => other.to_string(),
    }
}
