//! Client calls: admission of a `Call` (dedup, expiry, size, driver state,
//! the busy barrier, backpressure), forwarding queued requests within the
//! driver's window, the driver's reply under commit-with-reply, and failing
//! a queue so nothing is lost silently.
//!
//! A call arrives as one [`Call`] value rather than six arguments, so the
//! admission rules read in order from one place. Putting admission in the
//! session module was rejected: it decides as much about the driver's queue
//! as about the session.

use super::durability;
use super::vocab::{Action, ClientMsg, ConnId, DriverId, DriverMsg, Trace};
use super::wal::JournalAnswer;
use super::{Cached, Supervisor, lifecycle::AfterExit, lifecycle::Phase, to_msg};
use reinc_policy::Millis;
use reinc_proto::{CallError, MAX_BODY, RequestId};

/// One `Call` from a client, as [`Event::Call`](super::Event::Call) carries it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Call<'a> {
    /// The connection it came on.
    pub(super) conn: ConnId,
    /// The request's sequence number in its session.
    pub(super) seq: u64,
    /// The driver's name.
    pub(super) driver: &'a str,
    /// The encoded request.
    pub(super) body: &'a [u8],
    /// The client will not retry below this seq.
    pub(super) acked_below: u64,
}

impl Supervisor {
    pub(super) fn on_reply(
        &mut self,
        now: Millis,
        id: DriverId,
        rid: RequestId,
        commit: Option<&[u8]>,
        body: &[u8],
        out: &mut Vec<Action>,
    ) {
        let journal = self.is_journal(id);
        let d = &mut self.drivers[id.0];
        if !matches!(d.phase, Phase::Running { .. } | Phase::Stopping { .. } | Phase::Hung) {
            let reason = format!("protocol error: reply for {rid} before Ready");
            self.kill_instance(id, reason, AfterExit::Policy, out);
            return;
        }
        if let Err(e) = d.queue.complete(rid) {
            let reason = format!("protocol error: {e}");
            self.kill_instance(id, reason, AfterExit::Policy, out);
            return;
        }
        self.standby_reply_seen(id);
        let d = &mut self.drivers[id.0];
        if journal {
            // Commit-with-reply through the journal: the state, the dedup
            // entry and the reply are one record; the reply waits for it.
            if let Some(c) = commit {
                self.drivers[id.0].checkpoint = Some(c.to_vec());
            }
            let reply = Cached::Reply(body.to_vec());
            self.journal_answer(
                now,
                JournalAnswer { id, rid, commit: commit.map(<[u8]>::to_vec), reply, cached: true },
                out,
            );
            self.pump(id, out);
            return;
        }
        // Commit-with-reply: the state is committed before the client can
        // observe the reply, and when it persists, the reply waits until it
        // is durable (after every older held reply of this driver).
        let mut needs = d.durability.current();
        if let Some(c) = commit {
            d.checkpoint = Some(c.to_vec());
            if d.cfg.persist_checkpoint {
                needs = d.durability.commit();
            }
        }
        if d.durability.may_release(needs) {
            self.answer(now, rid, Cached::Reply(body.to_vec()), out);
        } else {
            d.durability.held.push_back(durability::HeldReply { rid, body: body.to_vec(), needs });
            self.request_persist(id, out);
        }
        self.pump(id, out);
    }

    /// Answers an accepted request: caches it in its session and sends it to
    /// the session's connection, if any.
    pub(super) fn answer(&mut self, now: Millis, rid: RequestId, reply: Cached, out: &mut Vec<Action>) {
        let Some(s) = self.sessions.get_mut(&rid.client) else { return };
        s.pending.remove(&rid.seq);
        s.last_active = now;
        let conn = s.answer_conn(rid.seq);
        if rid.seq >= s.floor {
            self.cache_reply(rid, reply.clone());
        }
        if let Some(conn) = conn {
            out.push(Action::ToClient { conn, msg: to_msg(rid.seq, reply) });
        }
    }

    pub(super) fn pump(&mut self, id: DriverId, out: &mut Vec<Action>) {
        // A journal driver has at most one request in doubt (see `wal`).
        let journal_window = self.journal_window(id, out);
        let d = &mut self.drivers[id.0];
        if !matches!(d.phase, Phase::Running { .. }) {
            return;
        }
        let generation = d.instance.as_ref().expect("running instance").generation;
        let window = journal_window.unwrap_or(d.cfg.window);
        while let Some(e) = d.queue.forward_next(window) {
            out.push(Action::ToDriver {
                driver: id,
                generation,
                msg: DriverMsg::Request { id: e.id, body: e.payload.clone() },
            });
        }
    }

    /// Answers every queued request of `id` with `error` (nothing is lost silently).
    pub(super) fn fail_queue(&mut self, now: Millis, id: DriverId, error: CallError, out: &mut Vec<Action>) {
        let drained: Vec<RequestId> = self.drivers[id.0].queue.drain().map(|e| e.id).collect();
        let journal = self.is_journal(id);
        for rid in drained {
            if journal {
                // Journaled first, so a restarted supervisor does not replay it.
                self.journal_answer(
                    now,
                    JournalAnswer { id, rid, commit: None, reply: Cached::Failed(error), cached: false },
                    out,
                );
                self.record(now, Trace::Refused(rid, error));
                continue;
            }
            // Not cached: the request was never executed to completion, so a
            // retry after the driver is revived is legitimate.
            if let Some(s) = self.sessions.get_mut(&rid.client) {
                s.pending.remove(&rid.seq);
                if let Some(conn) = s.answer_conn(rid.seq) {
                    out.push(Action::ToClient { conn, msg: ClientMsg::Failed { seq: rid.seq, error } });
                }
            }
            self.record(now, Trace::Refused(rid, error));
        }
    }

    /// Admits a client's call, answers it from the dedup table, or refuses
    /// it with a definite error or `Busy`.
    pub(super) fn on_call(&mut self, now: Millis, call: Call<'_>, out: &mut Vec<Action>) {
        let Call { conn, seq, driver, body, acked_below } = call;
        let fail = |error| Action::ToClient { conn, msg: ClientMsg::Failed { seq, error } };
        let Some(Some(client)) = self.conns.get(&conn).copied() else {
            out.push(fail(CallError::NoSession));
            return;
        };
        let rid = RequestId { client, seq };
        let s = self.sessions.get_mut(&client).expect("connection's session exists");
        s.last_active = now;
        self.budget.cache_total -= s.raise_floor(acked_below);
        if let Some(c) = s.cache.get(&seq).cloned() {
            // An answer whose journal record is not durable yet waits for it.
            self.dedup_hit(rid, Action::ToClient { conn, msg: to_msg(seq, c) }, out);
            self.record(now, Trace::DedupHit(rid));
            return;
        }
        if s.pending.contains(&seq) {
            // The original is queued; its reply goes to this session's
            // current connection, which is this one.
            s.unclaimed.remove(&seq);
            self.record(now, Trace::Attached(rid));
            return;
        }
        // Every answer here but Busy is definite (the client will not resend
        // the call), so the seq stops holding back later calls.
        let refuse = |me: &mut Self, out: &mut Vec<Action>, error| {
            out.push(fail(error));
            if let Some(s) = me.sessions.get_mut(&client) {
                s.settled(seq);
            }
            me.record(now, Trace::Refused(rid, error));
        };
        if seq < s.floor {
            return refuse(self, out, CallError::Expired);
        }
        if body.len() > MAX_BODY {
            return refuse(self, out, CallError::TooLarge);
        }
        if self.shutting_down {
            return refuse(self, out, CallError::ShuttingDown);
        }
        let Some(id) = self.driver_id(driver) else {
            return refuse(self, out, CallError::UnknownDriver);
        };
        let d = &mut self.drivers[id.0];
        if matches!(d.phase, Phase::Quarantined | Phase::Stopped | Phase::Stopping { .. }) {
            return refuse(self, out, CallError::DriverFailed);
        }
        let s = self.sessions.get_mut(&client).expect("exists");
        // Busy barrier: once a call got Busy, later calls of the session to
        // this driver wait behind it, so the client's resend cannot be
        // overtaken and the driver sees the session's calls in seq order.
        let behind = s.barrier(id).filter(|&b| b < seq);
        // A full queue answers Busy before the body is copied (the session's
        // `pending` set has already ruled out a duplicate).
        let full = d.queue.len() == d.queue.capacity();
        if behind.is_some() || full || d.queue.push(rid, body.to_vec(), now.0).is_err() {
            s.refused_busy(id, seq);
            out.push(fail(CallError::Busy));
            let t = match behind {
                Some(behind) => Trace::BusyBarrier { id: rid, behind },
                None => Trace::Refused(rid, CallError::Busy),
            };
            self.record(now, t);
            return;
        }
        s.settled(seq);
        s.pending.insert(seq);
        self.journal_accepted(id, rid, body, acked_below);
        self.pump(id, out);
    }
}
