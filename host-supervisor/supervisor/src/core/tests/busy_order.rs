//! Several sessions pipeline into a tiny queue faster than the driver
//! answers; Busy calls are resent in any order the client likes (the
//! core must not rely on the library's seq-order resends). The driver
//! must see each session's calls in seq order, every call must be
//! answered exactly once, and nothing may be lost.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
enum Op {
    /// Session k sends its next seq at once (pipelining).
    Submit(u8),
    /// Session k resends one of its Busy calls (picked by the u8).
    Resend(u8, u8),
    /// The driver answers its oldest request.
    Reply,
    /// The driver crashes (its unanswered calls are replayed).
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u8>().prop_map(Op::Submit),
        3 => (any::<u8>(), any::<u8>()).prop_map(|(k, p)| Op::Resend(k, p)),
        3 => Just(Op::Reply),
        1 => Just(Op::Crash),
    ]
}

const SESSIONS: usize = 3;

#[derive(Default)]
struct ClientModel {
    next_seq: u64,
    /// Answered Busy, to be resent.
    busy: BTreeSet<u64>,
    /// Replies received, per seq.
    replies: BTreeMap<u64, u32>,
}

struct World {
    clients: Vec<(ConnId, ClientId, ClientModel)>,
    /// Requests the current instance has and has not answered.
    inbox: VecDeque<RequestId>,
    /// Per session: seqs in the order the driver first saw them.
    first_seen: BTreeMap<ClientId, Vec<u64>>,
    /// Per generation and session: seqs in the order forwarded.
    per_gen: BTreeMap<(u32, ClientId), Vec<u64>>,
}

impl World {
    fn observe(&mut self, acts: &[Action]) -> Result<(), TestCaseError> {
        for a in acts {
            match a {
                Action::ToDriver { generation, msg: DriverMsg::Request { id, .. }, .. } => {
                    let g = self.per_gen.entry((generation.0, id.client)).or_default();
                    prop_assert!(g.last().is_none_or(|&l| l < id.seq), "{id} sent to {generation} after {g:?}");
                    g.push(id.seq);
                    let seen = self.first_seen.entry(id.client).or_default();
                    if !seen.contains(&id.seq) {
                        prop_assert!(seen.last().is_none_or(|&l| l < id.seq), "{id} reached the driver after {seen:?}");
                        seen.push(id.seq);
                    }
                    self.inbox.push_back(*id);
                }
                Action::ToClient { conn, msg } => {
                    let (_, _, m) = self.clients.iter_mut().find(|(c, _, _)| c == conn).expect("known conn");
                    match msg {
                        ClientMsg::Reply { seq, .. } => *m.replies.entry(*seq).or_default() += 1,
                        ClientMsg::Failed { seq, error: CallError::Busy } => {
                            m.busy.insert(*seq);
                        }
                        other => prop_assert!(false, "unexpected answer {other:?}"),
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut sim = Sim::with(|d| {
        d.queue_depth = 2;
        d.window = 1;
        d.poison_after = 1_000;
        d.heartbeat_interval = Millis(3_600_000);
        d.fault_policy = FaultPolicyConfig::Restart(BackoffConfig { max_restarts: 64, base: Millis(1), ..backoff() });
    });
    sim.start();
    let mut w =
        World { clients: Vec::new(), inbox: VecDeque::new(), first_seen: BTreeMap::new(), per_gen: BTreeMap::new() };
    for k in 0..SESSIONS {
        let conn = ConnId(k as u64 + 1);
        let client = sim.hello(conn, None);
        w.clients.push((conn, client, ClientModel { next_seq: 1, ..ClientModel::default() }));
    }
    let call = |sim: &mut Sim, conn, seq| sim.call(conn, seq, format!("{seq}").as_bytes());
    let reply = |sim: &mut Sim, w: &mut World| match w.inbox.pop_front() {
        Some(id) => {
            let g = sim.generation(STORAGE);
            let body = format!("r{}", id.seq).into_bytes();
            sim.ev(Event::FromDriver {
                driver: STORAGE,
                frame_gen: g,
                msg: FromDriver::Reply { id, commit: None, body: &body },
            })
        }
        None => Vec::new(),
    };
    let bring_up = |sim: &mut Sim| {
        // Restart immediately or after the backoff, then Ready.
        if let Some(d) = sim.state(STORAGE).backoff_ms {
            let t = sim.now.0 + d;
            sim.at(t);
        }
        sim.ready(STORAGE)
    };
    for op in ops {
        let acts = match op {
            Op::Submit(k) => {
                let (conn, _, m) = &mut w.clients[usize::from(k) % SESSIONS];
                let (conn, seq) = (*conn, m.next_seq);
                m.next_seq += 1;
                call(&mut sim, conn, seq)
            }
            Op::Resend(k, pick) => {
                let (conn, _, m) = &mut w.clients[usize::from(k) % SESSIONS];
                match m.busy.iter().nth(usize::from(pick) % m.busy.len().max(1)).copied() {
                    Some(seq) => {
                        m.busy.remove(&seq);
                        let conn = *conn;
                        call(&mut sim, conn, seq)
                    }
                    None => Vec::new(),
                }
            }
            Op::Reply => reply(&mut sim, &mut w),
            Op::Crash => {
                w.inbox.clear();
                let mut acts = sim.crash(STORAGE, SEGV);
                w.observe(&acts)?;
                acts = bring_up(&mut sim);
                acts
            }
        };
        w.observe(&acts)?;
    }
    // Quiesce like the client library: answer everything, resend Busy
    // calls lowest seq first.
    for _ in 0..100_000 {
        let acts = if !w.inbox.is_empty() {
            reply(&mut sim, &mut w)
        } else if let Some(k) = (0..SESSIONS).find(|&k| !w.clients[k].2.busy.is_empty()) {
            let (conn, _, m) = &mut w.clients[k];
            let seq = m.busy.pop_first().expect("non-empty");
            let conn = *conn;
            call(&mut sim, conn, seq)
        } else {
            break;
        };
        w.observe(&acts)?;
    }
    prop_assert_eq!(sim.state(STORAGE).queue_depth, 0);
    for (_, client, m) in &w.clients {
        prop_assert!(m.busy.is_empty());
        let submitted: Vec<u64> = (1..m.next_seq).collect();
        // Nothing lost, nothing answered twice.
        prop_assert_eq!(m.replies.keys().copied().collect::<Vec<_>>(), submitted.clone());
        prop_assert!(m.replies.values().all(|&n| n == 1), "{:?}", m.replies);
        // The driver saw every call, in seq order (checked as it went).
        prop_assert_eq!(w.first_seen.get(client).cloned().unwrap_or_default(), submitted);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn pipelined_sessions_reach_the_driver_in_seq_order_under_backpressure(
        ops in proptest::collection::vec(op(), 0..120)
    ) {
        run(ops)?;
    }
}
