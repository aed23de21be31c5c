//! Random interleavings of calls, retries, reconnects, replies, stale
//! frames, crashes and time, checked against the exactly-once rules.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

#[derive(Debug, Clone)]
enum Op {
    Call,
    Retry(u8),
    Reply,
    StaleReply,
    Crash,
    Ready,
    Advance(u16),
    Reconnect,
    /// The next checkpoint writes fail.
    DiskFails(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Call),
        1 => any::<u8>().prop_map(Op::Retry),
        4 => Just(Op::Reply),
        1 => Just(Op::StaleReply),
        1 => Just(Op::Crash),
        2 => Just(Op::Ready),
        1 => (0u16..200).prop_map(Op::Advance),
        1 => Just(Op::Reconnect),
        1 => (1u8..4).prop_map(Op::DiskFails),
    ]
}

/// What the test observes from outside the core.
#[derive(Default)]
struct World {
    /// Requests the current instance was sent and has not answered.
    inbox: VecDeque<RequestId>,
    /// Requests whose reply reached the supervisor (in any generation).
    replied: BTreeSet<RequestId>,
    /// Reply bodies each seq was answered with.
    answers: BTreeMap<u64, BTreeSet<Vec<u8>>>,
    /// Order in which the driver committed each state (its reply body).
    commits: BTreeMap<Vec<u8>, usize>,
    /// Seqs answered Busy (not accepted).
    busy: BTreeSet<u64>,
    /// Requests forwarded, per generation.
    forwarded: BTreeMap<u32, BTreeSet<RequestId>>,
}

impl World {
    /// Checks that every reply carrying a commit left only once that
    /// commit (or a newer one) was durable.
    fn durable(&self, acts: &[Action], written: &[Vec<u8>]) -> Result<(), TestCaseError> {
        let newest = written.iter().filter_map(|w| self.commits.get(w)).max();
        for a in acts {
            if let Action::ToClient { msg: ClientMsg::Reply { seq, body }, .. } = a
                && let Some(k) = self.commits.get(body)
            {
                prop_assert!(newest.is_some_and(|n| n >= k), "reply to {seq} left before its commit was durable");
            }
        }
        Ok(())
    }

    fn observe(&mut self, acts: &[Action]) -> Result<(), TestCaseError> {
        for a in acts {
            match a {
                Action::ToDriver { generation, msg: DriverMsg::Request { id, .. }, .. } => {
                    prop_assert!(!self.replied.contains(id), "{id} forwarded again after its reply");
                    // The busy barrier keeps a Busy retry ahead of every
                    // later seq, so each instance sees seq order, once.
                    let sent = self.forwarded.entry(generation.0).or_default();
                    prop_assert!(sent.last().is_none_or(|l| l < id), "{id} forwarded to {generation} after {sent:?}");
                    prop_assert!(sent.insert(*id), "{id} forwarded twice to {generation}");
                    self.inbox.push_back(*id);
                }
                Action::ToClient { msg: ClientMsg::Reply { seq, body }, .. } => {
                    self.answers.entry(*seq).or_default().insert(body.clone());
                    self.busy.remove(seq);
                }
                Action::ToClient { msg: ClientMsg::Failed { seq, error: CallError::Busy }, .. } => {
                    self.busy.insert(*seq);
                }
                // The dedup table is bounded (8 per session here): an
                // old retry may expire, but only once it was answered.
                Action::ToClient { msg: ClientMsg::Failed { seq, error: CallError::Expired }, .. } => {
                    prop_assert!(self.answers.contains_key(seq), "unanswered seq {seq} expired");
                }
                Action::ToClient { msg: ClientMsg::Failed { seq, error }, .. } => {
                    prop_assert!(false, "seq {seq} failed with {error:?}");
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn run(ops: Vec<Op>, window: usize) -> Result<(), TestCaseError> {
    let mut sim = Sim::with(|d| {
        d.window = window;
        d.queue_depth = 6;
        d.poison_after = 1_000;
        d.persist_checkpoint = true;
        d.fault_policy = FaultPolicyConfig::Restart(BackoffConfig { max_restarts: 64, base: Millis(1), ..backoff() });
    });
    let mut w = World::default();
    let acts = sim.ev(Event::Start);
    w.observe(&acts)?;
    let mut conn = ConnId(1);
    let client = sim.hello(conn, None);
    let mut next_seq = 1u64;
    let body_of = |id: RequestId, g: Generation| format!("{}@{}", id.seq, g.0).into_bytes();
    for op in ops {
        let acts = match op {
            Op::Call => {
                next_seq += 1;
                sim.ev(Event::Call { conn, seq: next_seq - 1, driver: "storage_driver", body: b"x", acked_below: 0 })
            }
            Op::Retry(k) if next_seq > 1 => {
                let seq = 1 + u64::from(k) % (next_seq - 1);
                sim.ev(Event::Call { conn, seq, driver: "storage_driver", body: b"x", acked_below: 0 })
            }
            Op::Reply => match (sim.sup.current(STORAGE), w.inbox.front().copied()) {
                (Some(g), Some(id)) if sim.state(STORAGE).state == DriverState::Running => {
                    w.inbox.pop_front();
                    w.replied.insert(id);
                    let body = body_of(id, g);
                    let n = w.commits.len();
                    w.commits.insert(body.clone(), n);
                    let msg = FromDriver::Reply { id, commit: Some(&body), body: &body };
                    sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: g, msg })
                }
                _ => Vec::new(),
            },
            Op::StaleReply => match (sim.sup.current(STORAGE), w.inbox.front().copied()) {
                (Some(g), Some(id)) if g.0 > 1 => {
                    let old = Generation(g.0 - 1);
                    let msg = FromDriver::Reply { id, commit: None, body: b"stale" };
                    let acts = sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: old, msg });
                    prop_assert!(acts.is_empty(), "a stale frame had effects: {acts:?}");
                    acts
                }
                _ => Vec::new(),
            },
            Op::Crash => match sim.sup.current(STORAGE) {
                Some(g) => {
                    w.inbox.clear();
                    sim.ev(Event::Exited { driver: STORAGE, generation: g, status: SEGV })
                }
                None => Vec::new(),
            },
            Op::Ready => match sim.sup.current(STORAGE) {
                Some(g) if sim.state(STORAGE).state == DriverState::Starting => {
                    sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: g, msg: FromDriver::Ready })
                }
                _ => Vec::new(),
            },
            Op::Advance(ms) => {
                // Answer pings so heartbeats never interfere.
                let t = sim.now.0 + u64::from(ms);
                let acts = sim.at(t);
                for a in &acts {
                    if let Action::ToDriver { msg: DriverMsg::Ping { nonce }, generation, .. } = a {
                        let msg = FromDriver::Pong { nonce: *nonce };
                        sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: *generation, msg });
                    }
                }
                acts
            }
            Op::Reconnect => {
                sim.ev(Event::ClientGone { conn });
                conn = ConnId(conn.0 + 1);
                prop_assert_eq!(sim.hello(conn, Some(client)), client);
                // As the client library does: every unanswered call again,
                // lowest seq first (answers to calls still running wait
                // for these resends).
                let mut acts = Vec::new();
                for seq in (1..next_seq).filter(|s| !w.answers.contains_key(s) && !w.busy.contains(s)) {
                    acts.extend(sim.ev(Event::Call {
                        conn,
                        seq,
                        driver: "storage_driver",
                        body: b"x",
                        acked_below: 0,
                    }));
                }
                acts
            }
            Op::DiskFails(k) => {
                let fail = PersistOutcome::Failed { path: "/s/x.ckpt".into(), error: "EIO".into() };
                sim.disk.extend((0..k).map(|_| fail.clone()));
                Vec::new()
            }
            Op::Retry(_) => Vec::new(),
        };
        w.durable(&acts, &sim.written)?;
        w.observe(&acts)?;
    }
    // Quiesce: bring the driver up and answer everything.
    for _ in 0..10_000 {
        let st = sim.state(STORAGE);
        let acts = match st.state {
            DriverState::Starting => {
                let g = sim.sup.current(STORAGE).unwrap();
                sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: g, msg: FromDriver::Ready })
            }
            DriverState::BackingOff => {
                let t = sim.now.0 + st.backoff_ms.unwrap();
                sim.at(t)
            }
            DriverState::Running if !w.inbox.is_empty() => {
                let (g, id) = (sim.sup.current(STORAGE).unwrap(), w.inbox.pop_front().unwrap());
                w.replied.insert(id);
                let body = body_of(id, g);
                sim.ev(Event::FromDriver {
                    driver: STORAGE,
                    frame_gen: g,
                    msg: FromDriver::Reply { id, commit: None, body: &body },
                })
            }
            // Held replies wait for the checkpoint's retry.
            _ if st.held_replies > 0 => {
                let t = sim.sup.next_deadline().expect("a held reply has a retry deadline");
                let acts = sim.at(t.0);
                for a in &acts {
                    if let Action::ToDriver { msg: DriverMsg::Ping { nonce }, generation, .. } = a {
                        let msg = FromDriver::Pong { nonce: *nonce };
                        sim.ev(Event::FromDriver { driver: STORAGE, frame_gen: *generation, msg });
                    }
                }
                acts
            }
            _ => break,
        };
        w.durable(&acts, &sim.written)?;
        w.observe(&acts)?;
    }
    prop_assert_eq!(sim.state(STORAGE).queue_depth, 0);
    prop_assert_eq!(sim.state(STORAGE).held_replies, 0);
    for seq in 1..next_seq {
        if w.busy.contains(&seq) {
            continue; // never accepted
        }
        let bodies = w.answers.get(&seq);
        prop_assert!(bodies.is_some(), "accepted seq {seq} was never answered");
        prop_assert_eq!(bodies.unwrap().len(), 1, "seq {} answered with different results", seq);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn random_interleavings_keep_exactly_once(ops in proptest::collection::vec(op(), 0..80), window in 1usize..4) {
        run(ops, window)?;
    }
}
