//! Client sessions under budgets: detaching, idle expiry, and the byte
//! budget of the dedup table.
//!
//! # Rules
//! - A connection has at most one session. A second `Hello` on it detaches
//!   the first (which then counts as idle and can be evicted or expire); the
//!   table used to keep it attached to a connection that had moved on, so 256
//!   `Hello`s on one connection filled it for good.
//! - A session that moves to a new connection (a resume) gets the answers
//!   to the calls it had running only once it resends them
//!   ([`Session::unclaimed`]). The client resends every unanswered call,
//!   lowest seq first, and answers then come in that order. Pushing them at
//!   once let a call still running overtake an answer lost with the old
//!   connection, which the client gets back only by its resend from the
//!   dedup table (the campaign's seed 15 failure).
//! - A session whose client said `Bye` is forgotten as soon as no accepted
//!   request of it is still running, at once if none is: its cached
//!   replies and its pools are freed then, not after the idle timeout. It
//!   cannot be resumed (`NoSession`), as the client promised. The goodbye
//!   itself is not journaled: a supervisor restarted before the last of
//!   those requests is answered recovers the session as a detached one,
//!   which then expires like any idle session.
//! - A session without a connection for `session-idle-timeout-ms`, and with
//!   no accepted request still running, is forgotten. A sweep runs at the
//!   earliest such expiry ([`Supervisor::next_deadline`] includes it), so an
//!   idle supervisor still frees them.
//! - A `Hello` for a new session when the table is full evicts the detached
//!   session idle the longest; if every session has a live connection it is
//!   answered [`CallError::SessionsFull`], not `Busy` (which means "this
//!   driver's queue is full, retry the call").
//! - Cached replies are bounded in bytes as well as in count, per session
//!   (`dedup-bytes-per-session`) and over all sessions
//!   (`dedup-bytes-total`). Beyond either, the oldest cached replies are
//!   forgotten and the session's floor rises past them, exactly as when
//!   `dedup-per-session` is exceeded: a retry of one is answered `Expired`,
//!   never executed again. Over the total, the session caching the most
//!   bytes gives up its oldest first, so one client that never acknowledges
//!   pays for itself.
//!
//! # Designs rejected
//! - Refusing new calls of a session whose cache is over budget: a client
//!   with one slow call and many fast ones would be stopped by its own
//!   replies; expiring the oldest is the dedup table's existing, documented
//!   answer to the same pressure.
//! - Expiring sessions that still have a connection: the connection cap
//!   bounds those, and the client is plainly still there.

use super::vocab::{Action, ClientMsg, ConnId, DriverId};
use super::{ClientId, Supervisor};
use crate::journal::Record;
use crate::limits::Limits;
use reinc_policy::Millis;
use reinc_proto::{CallError, RequestId};
use std::collections::{BTreeMap, BTreeSet};

/// Bytes a cached reply is charged: its body plus the map entry around it.
pub(super) fn cost(c: &Cached) -> usize {
    const ENTRY: usize = 64;
    ENTRY
        + match c {
            Cached::Reply(b) => b.len(),
            Cached::Failed(_) => 0,
        }
}

/// The session-side budgets and what they currently hold.
#[derive(Debug, Default)]
pub(super) struct SessionBudget {
    pub(super) limits: Limits,
    /// Bytes charged for cached replies over all sessions.
    pub(super) cache_total: usize,
    /// When the next detached session may expire (`None`: none detached).
    sweep_at: Option<Millis>,
    /// Sessions that said `Bye` and still have requests running: each
    /// sweep forgets those that have finished.
    closing: usize,
}

impl Supervisor {
    /// Applies the session limits of `[supervisor]` (default: [`Limits::default`]).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.budget.limits = limits;
        self
    }

    /// Bytes charged for cached replies over all sessions (tests, status).
    #[must_use]
    pub fn cached_reply_bytes(&self) -> usize {
        self.budget.cache_total
    }

    /// Sessions in the table.
    #[must_use]
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The session of connection `conn`, once it said `Hello` (the daemon
    /// keys the clients' shared pools by it).
    #[must_use]
    pub fn session_of(&self, conn: ConnId) -> Option<ClientId> {
        self.conns.get(&conn).copied().flatten()
    }

    /// Whether session `c` is still in the table (its pools stay while it is).
    #[must_use]
    pub fn has_session(&self, c: ClientId) -> bool {
        self.sessions.contains_key(&c)
    }

    /// Session `c` has no connection from `now` on, in the journal too.
    pub(super) fn detach(&mut self, c: ClientId, now: Millis, out: &mut Vec<Action>) {
        self.mark_detached(c, now);
        self.journal_session(Record::SessionDetached { client: c }, out);
    }

    /// [`Self::detach`] without the journal record (a recovered session,
    /// whose detachment the journal already holds).
    pub(super) fn mark_detached(&mut self, c: ClientId, now: Millis) {
        if let Some(s) = self.sessions.get_mut(&c) {
            s.conn = None;
            s.last_active = now;
            let at = now.plus(Millis(self.budget.limits.session_idle_ms));
            self.budget.sweep_at = Some(self.budget.sweep_at.map_or(at, |t| t.min(at)));
        }
    }

    /// `Bye` on `conn`: its session ends for good (module docs).
    pub(super) fn on_bye(&mut self, now: Millis, conn: ConnId, out: &mut Vec<Action>) {
        let Some(Some(c)) = self.conns.get(&conn).copied() else { return };
        self.conns.insert(conn, None);
        let Some(s) = self.sessions.get_mut(&c) else { return };
        if s.conn != Some(conn) {
            return;
        }
        if s.pending.is_empty() {
            self.forget_session(c, out);
            return;
        }
        s.closed = true;
        self.budget.closing += 1;
        self.detach(c, now, out);
    }

    /// Removes session `c` and what it is charged for, in the journal too.
    pub(super) fn forget_session(&mut self, c: ClientId, out: &mut Vec<Action>) {
        if let Some(s) = self.sessions.remove(&c) {
            if s.closed {
                self.budget.closing -= 1;
            }
            self.budget.cache_total -= s.cache_bytes;
            self.journal_session(Record::SessionForgotten { client: c }, out);
        }
    }

    /// When [`Self::expire_sessions`] next has something to do.
    pub(super) fn session_deadline(&self) -> Option<Millis> {
        self.budget.sweep_at
    }

    /// Forgets every detached session idle for the timeout, with no request
    /// still running (due at [`Self::session_deadline`]).
    pub(super) fn expire_sessions(&mut self, now: Millis, out: &mut Vec<Action>) {
        if self.budget.closing > 0 {
            let done: Vec<ClientId> =
                self.sessions.iter().filter(|(_, s)| s.closed && s.pending.is_empty()).map(|(c, _)| *c).collect();
            for c in done {
                self.forget_session(c, out);
            }
        }
        if self.budget.sweep_at.is_none_or(|t| now < t) {
            return;
        }
        let idle = Millis(self.budget.limits.session_idle_ms);
        let expired: Vec<ClientId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.conn.is_none() && s.pending.is_empty() && now.since(s.last_active) >= idle)
            .map(|(c, _)| *c)
            .collect();
        for c in &expired {
            self.forget_session(*c, out);
        }
        if !expired.is_empty() {
            out.push(Action::Say(format!(
                "forgot {} client session(s) idle for {idle} without a connection",
                expired.len()
            )));
        }
        // The next expiry; a detached session with requests still running
        // is looked at again one timeout later.
        self.budget.sweep_at = self
            .sessions
            .values()
            .filter(|s| s.conn.is_none())
            .map(|s| if s.pending.is_empty() { s.last_active.plus(idle) } else { now.plus(idle) })
            .min();
    }

    /// Caches `reply` for `rid`, then keeps the dedup table within its count
    /// and byte budgets by forgetting the oldest replies (their seqs expire).
    pub(super) fn cache_reply(&mut self, rid: RequestId, reply: Cached) {
        let per_count = self.dedup_per_session;
        let per_bytes = self.budget.limits.dedup_bytes_per_session;
        let Some(s) = self.sessions.get_mut(&rid.client) else { return };
        let c = cost(&reply);
        if let Some(old) = s.cache.insert(rid.seq, reply) {
            s.cache_bytes -= cost(&old);
            self.budget.cache_total -= cost(&old);
        }
        s.cache_bytes += c;
        self.budget.cache_total += c;
        while s.cache.len() > per_count || (s.cache_bytes > per_bytes && s.cache.len() > 1) {
            let freed = s.expire_oldest();
            self.budget.cache_total -= freed;
        }
        while self.budget.cache_total > self.budget.limits.dedup_bytes_total {
            let Some(top) = self.sessions.values_mut().filter(|s| !s.cache.is_empty()).max_by_key(|s| s.cache_bytes)
            else {
                break;
            };
            let freed = top.expire_oldest();
            self.budget.cache_total -= freed;
        }
    }
}

impl Session {
    /// Forgets the oldest cached reply and raises the floor past it; returns
    /// the bytes freed.
    fn expire_oldest(&mut self) -> usize {
        let Some((oldest, c)) = self.cache.pop_first() else { return 0 };
        let mut freed = cost(&c);
        self.cache_bytes -= freed;
        freed += self.raise_floor(oldest + 1);
        freed
    }
}

#[derive(Debug, Clone)]
pub(super) enum Cached {
    Reply(Vec<u8>),
    Failed(CallError),
}

#[derive(Debug, Default)]
pub(super) struct Session {
    pub(super) conn: Option<ConnId>,
    /// No request below this may be executed or answered from cache.
    pub(super) floor: u64,
    /// Answered requests, by seq.
    pub(super) cache: BTreeMap<u64, Cached>,
    /// Accepted and unanswered requests.
    pub(super) pending: BTreeSet<u64>,
    /// Of `pending`, the calls accepted on an earlier connection and not
    /// resent on this one yet. Their answers are cached but not pushed:
    /// the client resends every unanswered call, lowest seq first, and each
    /// is answered then, so an answer lost with the old connection (waiting
    /// in the dedup table) is never overtaken by a later one. A failure
    /// that is not cached (the call did not run to completion) is withheld
    /// too; the resend then finds the call neither running nor answered and
    /// is taken as new, the retry such a failure allows.
    pub(super) unclaimed: BTreeSet<u64>,
    /// Busy barrier: per driver, the seqs answered `Busy` and not accepted
    /// since. A new call to that driver with a higher seq than the lowest of
    /// them is answered `Busy` too, so a resent call can never be overtaken
    /// by a later one (per-session order under backpressure).
    pub(super) busy: BTreeMap<DriverId, BTreeSet<u64>>,
    pub(super) last_active: Millis,
    /// Among detached sessions equally idle (all recovered ones are at
    /// recovery), which a full table evicts first: lowest first. Recovered
    /// sessions the journal ended detached keep their order; those it ended
    /// attached come last (`u32::MAX`). 0 otherwise.
    pub(super) evict_rank: u32,
    /// Bytes charged for `cache` ([`sessions::cost`]).
    pub(super) cache_bytes: usize,
    /// The client said `Bye`: forgotten once `pending` is empty.
    pub(super) closed: bool,
}

/// Seqs remembered per session and driver for the busy barrier. Only a
/// client with more calls than this refused at once can see its order
/// broken: the barrier keeps the lowest ones, which decide it.
pub const BUSY_SEQS_PER_DRIVER: usize = 1024;

impl Session {
    /// Where the answer to `seq` goes now: the session's connection, unless
    /// the call is still unclaimed since a resume (see [`Session::unclaimed`]).
    pub(super) fn answer_conn(&mut self, seq: u64) -> Option<ConnId> {
        if self.unclaimed.remove(&seq) { None } else { self.conn }
    }

    /// The client will never retry below `floor`: forget cached replies and
    /// busy seqs under it (a barrier must not wait for a call abandoned).
    /// Returns the cache bytes freed.
    pub(super) fn raise_floor(&mut self, floor: u64) -> usize {
        if floor <= self.floor {
            return 0;
        }
        self.floor = floor;
        let kept = self.cache.split_off(&floor);
        let freed: usize = self.cache.values().map(cost).sum();
        self.cache = kept;
        self.cache_bytes -= freed;
        for set in self.busy.values_mut() {
            *set = set.split_off(&floor);
        }
        self.busy.retain(|_, set| !set.is_empty());
        freed
    }

    /// The lowest seq answered `Busy` for `driver` and not accepted since.
    pub(super) fn barrier(&self, driver: DriverId) -> Option<u64> {
        self.busy.get(&driver).and_then(|set| set.first().copied())
    }

    /// `seq` was answered `Busy` for `driver`.
    pub(super) fn refused_busy(&mut self, driver: DriverId, seq: u64) {
        let set = self.busy.entry(driver).or_default();
        set.insert(seq);
        if set.len() > BUSY_SEQS_PER_DRIVER {
            set.pop_last();
        }
    }

    /// `seq` was accepted, or got a definite answer: it blocks nothing now.
    pub(super) fn settled(&mut self, seq: u64) {
        for set in self.busy.values_mut() {
            set.remove(&seq);
        }
        self.busy.retain(|_, set| !set.is_empty());
    }
}

impl Supervisor {
    pub(super) fn on_hello(&mut self, now: Millis, conn: ConnId, resume: Option<ClientId>, out: &mut Vec<Action>) {
        // One session per connection: a new Hello detaches the previous one.
        if let Some(Some(prev)) = self.conns.get(&conn).copied()
            && resume != Some(prev)
            && self.sessions.get(&prev).is_some_and(|s| s.conn == Some(conn))
        {
            self.detach(prev, now, out);
            self.conns.insert(conn, None);
        }
        let (client, new) = match resume {
            // A session that said Bye cannot come back.
            Some(c) if self.sessions.get(&c).is_some_and(|s| !s.closed) => (c, false),
            Some(_) => {
                out.push(Action::ToClient { conn, msg: ClientMsg::Failed { seq: 0, error: CallError::NoSession } });
                return;
            }
            None => {
                if self.sessions.len() >= self.max_sessions {
                    // Forget the detached session idle the longest.
                    let victim = self
                        .sessions
                        .iter()
                        .filter(|(_, s)| s.conn.is_none())
                        .min_by_key(|(_, s)| (s.last_active, s.evict_rank))
                        .map(|(c, _)| *c);
                    match victim {
                        Some(v) => self.forget_session(v, out),
                        None => {
                            out.push(Action::ToClient {
                                conn,
                                msg: ClientMsg::Failed { seq: 0, error: CallError::SessionsFull },
                            });
                            return;
                        }
                    }
                }
                let sessions = &self.sessions;
                let c = self.ids.next(|c| sessions.contains_key(&c));
                self.sessions.insert(c, Session::default());
                (c, true)
            }
        };
        // Detach the session from any older connection.
        let s = self.sessions.get_mut(&client).expect("exists");
        let moved = s.conn != Some(conn);
        if let Some(old) = s.conn.replace(conn)
            && old != conn
        {
            self.conns.insert(old, None);
        }
        if moved {
            // Answers to what is running wait for the client's resends.
            s.unclaimed.clone_from(&s.pending);
        }
        s.last_active = now;
        s.evict_rank = 0;
        if moved && !new {
            self.journal_session(Record::SessionAttached { client }, out);
        }
        self.conns.insert(conn, Some(client));
        // A new session's Welcome waits for its journal record, if any.
        self.welcome(conn, client, new, out);
    }
}

pub(super) fn to_msg(seq: u64, c: Cached) -> ClientMsg {
    match c {
        Cached::Reply(body) => ClientMsg::Reply { seq, body },
        Cached::Failed(error) => ClientMsg::Failed { seq, error },
    }
}
