//! `supervisor --dump-journal FILE`: the journal as text, one record per
//! line, for post-mortems.
//!
//! A restarted supervisor folds the journal into one image and rewrites the
//! file, so what the previous lifetime left is gone unless it was kept. The
//! daemon keeps it as `supervisor.journal.prev` (a hard link taken before
//! the rewrite, see `crate::daemon::persist`), and this prints either file:
//! every valid record with its offset, then how the file ends (cleanly, at
//! a batch never confirmed, or at damage, which is shown, not refused).
//!
//! Bodies and committed states are printed in hex when short (a driver's
//! counter or cursor is then readable) and by length otherwise.
//!
//! # Designs rejected
//! - A `drvctl` subcommand: `drvctl` talks to a running supervisor over its
//!   control socket and does not link the journal's format; a dead
//!   supervisor's file is read by the binary that wrote it.
//! - Printing the folded image only: the order of records is what a
//!   post-mortem needs (which answer was durable before which request).

use super::{Answer, HEADER_BYTES, Image, JournalError, Loaded, Record, parse_with};
use crate::config::JournalRecovery;
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest file dumped: one record's limit ([`super::MAX_RECORD`]) and
/// as much again of smaller ones.
const DUMP_LIMIT: u64 = 2 * super::MAX_RECORD as u64;

/// Bytes printed in hex before a body is shown by its length only.
const HEX_MAX: usize = 32;

fn bytes(b: &[u8]) -> String {
    if b.len() <= HEX_MAX {
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!("{} bytes [{hex}]", b.len())
    } else {
        format!("{} bytes", b.len())
    }
}

fn answer(a: &Answer) -> String {
    match a {
        Answer::Reply(b) => format!("reply {}", bytes(b)),
        Answer::Failed(e) => format!("failed {e:?}"),
    }
}

fn image(out: &mut String, i: &Image) {
    let _ = writeln!(
        out,
        "snapshot: lifetimes {}, {} sessions, {} journal drivers",
        i.lifetimes,
        i.sessions.len(),
        i.drivers.len()
    );
    for s in &i.sessions {
        let seqs: Vec<String> = s.cache.iter().map(|(seq, a)| format!("{seq}={}", answer(a))).collect();
        let _ = writeln!(out, "    session {}: floor {}, cached [{}]", s.client, s.floor, seqs.join(", "));
    }
    for d in &i.drivers {
        let checkpoint = d.checkpoint.as_deref().map_or_else(|| "none".to_owned(), bytes);
        let pending: Vec<String> = d.pending.iter().map(|p| format!("{} ({})", p.rid, bytes(&p.body))).collect();
        let _ = writeln!(out, "    driver {}: checkpoint {checkpoint}, pending [{}]", d.name, pending.join(", "));
    }
}

/// One record as a line (a snapshot as several).
#[must_use]
pub fn describe(r: &Record) -> String {
    let mut out = String::new();
    match r {
        Record::Snapshot(i) => image(&mut out, i),
        Record::Session { client } => {
            let _ = writeln!(out, "session {client}");
        }
        Record::SessionDetached { client } => {
            let _ = writeln!(out, "session {client} detached");
        }
        Record::SessionAttached { client } => {
            let _ = writeln!(out, "session {client} attached");
        }
        Record::SessionForgotten { client } => {
            let _ = writeln!(out, "session {client} forgotten");
        }
        Record::Accepted { driver, rid, body, floor } => {
            let _ = writeln!(out, "accepted {driver} {rid}: body {}, floor {floor}", bytes(body));
        }
        Record::Answered { driver, rid, commit, answer: a, cached } => {
            let commit = commit.as_deref().map_or_else(|| "none".to_owned(), bytes);
            let cached = if *cached { "cached" } else { "not cached" };
            let _ = writeln!(out, "answered {driver} {rid}: {}, commit {commit}, {cached}", answer(a));
        }
    }
    out
}

/// Prints the journal at `path` as text (see the module doc).
///
/// # Errors
/// [`JournalError`] naming the file: it cannot be read, is not a regular
/// file, is larger than any journal, or has no journal header.
pub fn dump(path: &Path) -> Result<String, JournalError> {
    let io = |source| JournalError::Io { path: path.into(), source };
    // O_NONBLOCK: a FIFO given by mistake must not wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    // Only the kind matters here: a copy owned by someone else may be read.
    if let Err(crate::trusted::Untrusted::NotRegular { kind }) = crate::trusted::check(&meta) {
        return Err(JournalError::NotRegular { path: path.into(), kind });
    }
    // A bound all the same: no configuration says how large this journal
    // may be, but one beyond this was not written by a supervisor.
    if meta.len() > DUMP_LIMIT {
        let why = format!("{} bytes is larger than any journal (the dump reads at most {DUMP_LIMIT})", meta.len());
        return Err(io(std::io::Error::other(why)));
    }
    let mut buf = Vec::new();
    file.take(DUMP_LIMIT + 1).read_to_end(&mut buf).map_err(io)?;
    let mut out = String::new();
    let loaded: Loaded = parse_with(path, &buf, JournalRecovery::Truncate, |off, r| {
        let _ = write!(out, "@{off} {}", describe(r));
    })?;
    let _ =
        write!(out, "end: {} records in {} valid bytes (header {HEADER_BYTES})", loaded.records, loaded.valid_bytes);
    if loaded.unconfirmed > 0 {
        let _ = write!(out, "; then {} bytes of a batch never confirmed (ignored on recovery)", loaded.unconfirmed);
    }
    if let Some(d) = &loaded.truncated {
        let _ = write!(out, "; then damage: {d}");
    }
    out.push('\n');
    Ok(out)
}
