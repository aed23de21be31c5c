//! The core's half of the journal (see [`crate::journal`]): which records to
//! write, what waits for them, and recovery from a journal image.
//!
//! # Rules
//! - A new session's `Welcome` leaves once its [`Record::Session`] is
//!   durable, so a client that was welcomed is known after a crash.
//! - A session that loses its connection, is resumed, or is forgotten
//!   (idle expiry, eviction from a full table) is journaled too
//!   ([`Record::SessionDetached`], [`Record::SessionAttached`],
//!   [`Record::SessionForgotten`]), waited on by nothing. A recovered table
//!   then holds exactly the sessions the old lifetime knew, and a full one
//!   evicts first those that had left, idle the longest first, and last
//!   those whose clients were connected at the crash and are coming back.
//!   Without these records the table came back full of sessions of
//!   `drvctl` runs long gone, all equally idle, and a new session could
//!   evict one whose client was still reconnecting (the campaign's seed
//!   20261203, fault 69 583).
//! - A request accepted for a journal driver is journaled
//!   ([`Record::Accepted`]) before it is forwarded, so that after a crash
//!   the request in doubt is known and replayed first, on the state it was
//!   forwarded with, before any resumed client's new call can move the
//!   device watermark. The record does not go out at once: it rides with
//!   the next record the core emits (an answer, usually), and is flushed on
//!   its own only when its request is next to be forwarded. Otherwise every
//!   request would cost two `fdatasync`s: the writer would sync the lone
//!   Accepted record while the answer arrives behind it.
//! - An answer of a journal driver, its committed state and its dedup entry
//!   are one [`Record::Answered`]; the client's answer (and any dedup hit
//!   on it) waits until that record is durable.
//! - A journal driver gets its next request only when nothing of it is in
//!   doubt: no request in flight and its last answer durable (the device
//!   watermark recognises one replay, see [`crate::journal`]).
//! - A snapshot is emitted at the end of an event, once
//!   `journal-compact-bytes` of records were written since the last one, so
//!   it holds every change the records before it describe.

use super::{Action, Cached, ClientMsg, DriverId, Session, Supervisor};
use crate::config::DurabilityMode;
use crate::journal::{Answer, DriverImage, Image, PendingImage, Record, SessionImage};
use reinc_policy::Millis;
use reinc_proto::{ClientId, RequestId};
use std::collections::{BTreeMap, HashMap};

/// An answer of a journal driver, for [`Supervisor::journal_answer`].
#[derive(Debug)]
pub(super) struct JournalAnswer {
    /// The driver.
    pub(super) id: DriverId,
    /// The request answered.
    pub(super) rid: RequestId,
    /// The state the answer commits, if any.
    pub(super) commit: Option<Vec<u8>>,
    /// The answer.
    pub(super) reply: Cached,
    /// Whether it goes to the dedup table (a retry is answered from it) or
    /// is a failure the client may retry once the driver is back.
    pub(super) cached: bool,
}

/// Journal bookkeeping of the core.
#[derive(Debug, Default)]
pub(super) struct Wal {
    /// Some driver journals: sessions are journaled too.
    pub(super) enabled: bool,
    /// The LSN of the last record emitted.
    last: u64,
    /// The highest LSN reported durable.
    durable: u64,
    /// Actions held until their LSN is durable.
    waiting: BTreeMap<u64, Vec<Action>>,
    /// Answers whose record is not durable yet (dedup hits on them wait).
    undurable: HashMap<RequestId, u64>,
    /// Per journal driver, the LSN of its last answer.
    answered: HashMap<DriverId, u64>,
    /// Accepted records not emitted yet (they ride with the next record).
    unflushed: Vec<Record>,
    /// LSNs of emitted Accepted records not known durable yet.
    accepted: HashMap<RequestId, u64>,
    /// Framed bytes (about) emitted since the last snapshot.
    since_snapshot: u64,
    /// Snapshot after this many bytes.
    compact_bytes: u64,
    /// Counters for metrics.
    pub(super) stats: WalStats,
}

/// What the journal did, for `drvctl metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalStats {
    /// Records emitted.
    pub records: u64,
    /// Snapshots emitted (compactions).
    pub snapshots: u64,
    /// Sessions recovered at start.
    pub recovered_sessions: u64,
    /// Accepted requests recovered at start (replayed to their drivers).
    pub recovered_requests: u64,
    /// Actions held for durability right now.
    pub held: u64,
    /// Supervisor lifetimes recorded in the journal, this one included.
    pub lifetimes: u64,
}

/// What [`Supervisor::recover`] restored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Sessions restored.
    pub sessions: usize,
    /// Accepted requests queued for replay, per driver name.
    pub requests: Vec<(String, usize)>,
    /// Drivers whose committed state was restored.
    pub checkpoints: usize,
    /// Problems (a driver no longer configured, a queue now too small).
    pub dropped: Vec<String>,
}

fn to_answer(c: &Cached) -> Answer {
    match c {
        Cached::Reply(b) => Answer::Reply(b.clone()),
        Cached::Failed(e) => Answer::Failed(*e),
    }
}

fn from_answer(a: Answer) -> Cached {
    match a {
        Answer::Reply(b) => Cached::Reply(b),
        Answer::Failed(e) => Cached::Failed(e),
    }
}

impl Supervisor {
    /// Journals for the drivers with `durability = "journal"`, compacting
    /// after `compact_bytes`. Without it (or without such a driver) nothing
    /// is journaled and nothing waits.
    #[must_use]
    pub fn with_journal(mut self, compact_bytes: u64) -> Self {
        self.wal.enabled = self.drivers.iter().any(|d| d.cfg.durability == DurabilityMode::Journal);
        self.wal.compact_bytes = compact_bytes;
        self
    }

    /// True when the journal is on.
    #[must_use]
    pub fn journaling(&self) -> bool {
        self.wal.enabled
    }

    /// The journal counters.
    #[must_use]
    pub fn journal_stats(&self) -> WalStats {
        WalStats { held: self.wal.waiting.values().map(|v| v.len() as u64).sum(), ..self.wal.stats }
    }

    pub(super) fn is_journal(&self, id: DriverId) -> bool {
        self.wal.enabled && self.drivers[id.0].cfg.durability == DurabilityMode::Journal
    }

    /// Emits `record` (after the Accepted records waiting to ride with it);
    /// returns its LSN.
    fn journal(&mut self, record: Record, out: &mut Vec<Action>) -> u64 {
        self.flush_accepted(out);
        self.emit(record, out)
    }

    /// Emits the Accepted records waiting.
    fn flush_accepted(&mut self, out: &mut Vec<Action>) {
        for r in std::mem::take(&mut self.wal.unflushed) {
            let rid = match &r {
                Record::Accepted { rid, .. } => *rid,
                _ => unreachable!("only Accepted records wait"),
            };
            let lsn = self.emit(r, out);
            self.wal.accepted.insert(rid, lsn);
        }
    }

    fn emit(&mut self, record: Record, out: &mut Vec<Action>) -> u64 {
        self.wal.last += 1;
        self.wal.stats.records += 1;
        self.wal.since_snapshot += approx_len(&record);
        out.push(Action::Journal { lsn: self.wal.last, record });
        self.wal.last
    }

    /// Sends `a` once `lsn` is durable (at once if it is).
    fn after(&mut self, lsn: u64, a: Action, out: &mut Vec<Action>) {
        if lsn <= self.wal.durable {
            out.push(a);
        } else {
            self.wal.waiting.entry(lsn).or_default().push(a);
        }
    }

    /// The `Welcome` of a new session `client` on `conn`.
    pub(super) fn welcome(&mut self, conn: super::ConnId, client: ClientId, new: bool, out: &mut Vec<Action>) {
        let a = Action::ToClient { conn, msg: ClientMsg::Welcome { client } };
        if new && self.wal.enabled {
            let lsn = self.journal(Record::Session { client }, out);
            self.after(lsn, a, out);
        } else {
            out.push(a);
        }
    }

    /// Journals a change of the session table (detached, attached again,
    /// forgotten), so that a recovered table has the same sessions and
    /// evicts the same ones first.
    pub(super) fn journal_session(&mut self, record: Record, out: &mut Vec<Action>) {
        if self.wal.enabled {
            self.journal(record, out);
        }
    }

    /// A request was accepted for `id`.
    pub(super) fn journal_accepted(&mut self, id: DriverId, rid: RequestId, body: &[u8], floor: u64) {
        if self.is_journal(id) {
            let driver = self.drivers[id.0].cfg.name.clone();
            self.wal.unflushed.push(Record::Accepted { driver, rid, body: body.to_vec(), floor });
        }
    }

    /// A cached answer to a retried call: it waits if its record does.
    pub(super) fn dedup_hit(&mut self, rid: RequestId, a: Action, out: &mut Vec<Action>) {
        match self.wal.undurable.get(&rid).copied() {
            Some(lsn) => self.after(lsn, a, out),
            None => out.push(a),
        }
    }

    /// Answers a request of a journal driver once its record is durable;
    /// `cached` answers go to the dedup table (see [`Supervisor::answer`]),
    /// the others only leave the session's pending set.
    pub(super) fn journal_answer(&mut self, now: Millis, a: JournalAnswer, out: &mut Vec<Action>) {
        let JournalAnswer { id, rid, commit, reply, cached } = a;
        let driver = self.drivers[id.0].cfg.name.clone();
        let record = Record::Answered { driver, rid, commit, answer: to_answer(&reply), cached };
        let lsn = self.journal(record, out);
        self.wal.answered.insert(id, lsn);
        let mut now_out = Vec::new();
        if cached {
            self.wal.undurable.insert(rid, lsn);
            self.answer(now, rid, reply, &mut now_out);
        } else if let Some(s) = self.sessions.get_mut(&rid.client) {
            s.pending.remove(&rid.seq);
            if let (Some(conn), Cached::Failed(error)) = (s.answer_conn(rid.seq), reply) {
                now_out.push(Action::ToClient { conn, msg: ClientMsg::Failed { seq: rid.seq, error } });
            }
        }
        for a in now_out {
            self.after(lsn, a, out);
        }
    }

    /// The window of the journal driver `id` right now: 0 while a request
    /// or an answer of it is in doubt or the next request's Accepted record
    /// is not durable (flushing it if it still waits), else 1; `None` for
    /// other drivers.
    pub(super) fn journal_window(&mut self, id: DriverId, out: &mut Vec<Action>) -> Option<usize> {
        if !self.is_journal(id) {
            return None;
        }
        let d = &self.drivers[id.0];
        let answered = self.wal.answered.get(&id).copied().unwrap_or(0);
        if d.queue.in_flight() > 0 || answered > self.wal.durable {
            return Some(0);
        }
        let Some(next) = d.queue.iter().find(|(_, in_flight)| !in_flight).map(|(e, _)| e.id) else {
            return Some(0);
        };
        if self.wal.unflushed.iter().any(|r| matches!(r, Record::Accepted { rid, .. } if *rid == next)) {
            self.flush_accepted(out);
        }
        // Absent: recovered from the journal, or known durable.
        let accepted = self.wal.accepted.get(&next).copied().unwrap_or(0);
        Some(usize::from(accepted <= self.wal.durable))
    }

    /// The daemon's report that every record up to `upto` is durable.
    pub(super) fn on_journaled(&mut self, upto: u64, out: &mut Vec<Action>) {
        if upto <= self.wal.durable {
            return;
        }
        self.wal.durable = upto;
        let later = self.wal.waiting.split_off(&(upto + 1));
        let released = std::mem::replace(&mut self.wal.waiting, later);
        self.wal.undurable.retain(|_, lsn| *lsn > upto);
        self.wal.accepted.retain(|_, lsn| *lsn > upto);
        // The drivers' next requests first: a journal driver waits for this
        // record before it may work again, so its request is on the critical
        // path of every batch, and the clients' answers are not.
        for i in 0..self.drivers.len() {
            if self.is_journal(DriverId(i)) {
                self.pump(DriverId(i), out);
            }
        }
        for (_, acts) in released {
            out.extend(acts);
        }
    }

    /// Emits a snapshot when enough was written since the last one.
    pub(super) fn maybe_compact(&mut self, out: &mut Vec<Action>) {
        if self.wal.enabled && self.wal.since_snapshot >= self.wal.compact_bytes {
            // Before the snapshot, so the LSNs of their rides stay ordered.
            self.flush_accepted(out);
            let mut records = crate::journal::snapshot_records(self.image()).into_iter();
            let snapshot = records.next().expect("the snapshot comes first");
            self.wal.last += 1;
            self.wal.stats.snapshots += 1;
            self.wal.since_snapshot = 0;
            out.push(Action::Journal { lsn: self.wal.last, record: snapshot });
            // Which sessions had no connection, idle the longest first.
            for r in records {
                self.emit(r, out);
            }
        }
    }

    /// Everything a restarted supervisor needs, as of now (answers held for
    /// durability included: the snapshot makes them durable).
    #[must_use]
    pub fn image(&self) -> Image {
        let mut sessions: Vec<SessionImage> = self
            .sessions
            .iter()
            .map(|(&client, s)| SessionImage {
                client,
                floor: s.floor,
                cache: s.cache.iter().map(|(&seq, c)| (seq, to_answer(c))).collect(),
            })
            .collect();
        sessions.sort_by_key(|s| s.client);
        let drivers = self
            .drivers
            .iter()
            .filter(|d| d.cfg.durability == DurabilityMode::Journal)
            .map(|d| DriverImage {
                name: d.cfg.name.clone(),
                checkpoint: d.checkpoint.clone(),
                pending: d.queue.iter().map(|(e, _)| PendingImage { rid: e.id, body: e.payload.clone() }).collect(),
            })
            .collect();
        let mut detached: Vec<(&ClientId, &Session)> = self.sessions.iter().filter(|(_, s)| s.conn.is_none()).collect();
        detached.sort_by_key(|(_, s)| (s.last_active, s.evict_rank));
        let detached = detached.into_iter().map(|(c, _)| *c).collect();
        Image { sessions, drivers, lifetimes: self.wal.stats.lifetimes, detached }
    }

    /// Restores a journal image before [`Event::Start`](super::Event::Start):
    /// sessions (detached, to be resumed), the committed state of each
    /// journal driver, and its accepted requests, queued in order for replay.
    pub fn recover(&mut self, now: Millis, image: Image) -> Recovery {
        let mut r = Recovery::default();
        self.wal.stats.lifetimes = image.lifetimes + 1;
        for si in image.sessions {
            let s = Session { last_active: now, floor: si.floor, ..Session::default() };
            self.sessions.insert(si.client, s);
            // Detached until resumed: the idle expiry applies to it too.
            self.mark_detached(si.client, now);
            // Through the dedup table's own door, so its count and byte
            // budgets (and their running totals) hold for recovered answers.
            for (seq, a) in si.cache {
                if seq >= si.floor {
                    self.cache_reply(RequestId { client: si.client, seq }, from_answer(a));
                }
            }
            r.sessions += 1;
        }
        // Equally idle now; a full table evicts first the sessions the
        // journal ended detached (idle the longest first), last those it
        // ended attached, whose clients are coming back.
        for s in self.sessions.values_mut() {
            s.evict_rank = u32::MAX;
        }
        for (rank, c) in image.detached.iter().enumerate() {
            if let Some(s) = self.sessions.get_mut(c) {
                s.evict_rank = rank as u32;
            }
        }
        for di in image.drivers {
            let Some(id) = self.driver_id(&di.name) else {
                r.dropped.push(format!(
                    "{}: not configured any more; {} accepted requests dropped",
                    di.name,
                    di.pending.len()
                ));
                continue;
            };
            if self.drivers[id.0].cfg.durability != DurabilityMode::Journal {
                r.dropped.push(format!("{}: durability is not \"journal\" any more; journal state ignored", di.name));
                continue;
            }
            if di.checkpoint.is_some() {
                self.drivers[id.0].checkpoint = di.checkpoint;
                r.checkpoints += 1;
            }
            let mut queued = 0;
            for p in di.pending {
                let d = &mut self.drivers[id.0];
                if d.queue.push(p.rid, p.body, now.0).is_err() {
                    r.dropped.push(format!("{}: request {} does not fit the queue-depth; dropped", di.name, p.rid));
                    continue;
                }
                self.sessions.entry(p.rid.client).or_default().pending.insert(p.rid.seq);
                queued += 1;
            }
            r.requests.push((di.name, queued));
        }
        self.wal.stats.recovered_sessions = r.sessions as u64;
        self.wal.stats.recovered_requests = r.requests.iter().map(|(_, n)| *n as u64).sum();
        self.drivers.refresh();
        r
    }
}

/// About the framed size of `r` (for the compaction threshold only).
fn approx_len(r: &Record) -> u64 {
    let body = match r {
        Record::Snapshot(_)
        | Record::Session { .. }
        | Record::SessionDetached { .. }
        | Record::SessionAttached { .. }
        | Record::SessionForgotten { .. } => 0,
        Record::Accepted { body, .. } => body.len(),
        Record::Answered { commit, answer, .. } => {
            commit.as_ref().map_or(0, Vec::len) + if let Answer::Reply(b) = answer { b.len() } else { 0 }
        }
    };
    (body + 48) as u64
}
