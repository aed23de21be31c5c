//! Admission of calls, the window, replay after a crash, poison, dedup,
//! the busy barrier, and replies under commit-with-reply.

use super::*;

#[test]
fn reply_commits_and_persists_before_the_client_sees_it() {
    let mut sim = Sim::with(|d| d.persist_checkpoint = true);
    sim.start();
    let c = sim.hello(C1, None);
    assert_eq!(requests_sent(&sim.call(C1, 1, b"w")), [1]);
    let acts = sim.reply(STORAGE, c, 1, Some(b"state1"), b"ok");
    let persist = acts.iter().position(|a| matches!(a, Action::Persist { .. })).expect("persisted");
    let reply = acts.iter().position(|a| matches!(a, Action::ToClient { .. })).expect("replied");
    assert!(persist < reply, "{acts:?}");
    assert_eq!(sim.sup.checkpoint(STORAGE), Some(&b"state1"[..]));
    // The next instance is initialised from it.
    let acts = sim.crash(STORAGE, SEGV);
    assert!(acts.iter().any(|a| matches!(a,
        Action::ToDriver { msg: DriverMsg::Init { checkpoint: Some(c), .. }, .. } if c == b"state1")));
}

#[test]
fn window_limits_requests_in_flight_and_refills_on_reply() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    let mut sent = Vec::new();
    for s in 1..=4 {
        sent.extend(requests_sent(&sim.call(C1, s, b"x")));
    }
    assert_eq!(sent, [1, 2]);
    assert_eq!(requests_sent(&sim.reply(STORAGE, c, 1, None, b"r1")), [3]);
}

#[test]
fn full_queue_answers_busy_and_keeps_what_it_accepted() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    sim.hello(C1, None);
    for s in 1..=4 {
        sim.call(C1, s, b"x");
    }
    let acts = sim.call(C1, 5, b"x");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 5, error: CallError::Busy }]);
    assert_eq!(sim.state(STORAGE).queue_depth, 4);
}

#[test]
fn each_driver_queue_holds_its_own_configured_depth() {
    // 3000 is beyond the old compile-time capacity of 1024 slots.
    let mut storage = driver("storage_driver");
    storage.queue_depth = 3_000;
    let mut net = driver("net_driver");
    net.queue_depth = 3;
    let mut sim = Sim::new(vec![storage, net]);
    sim.start();
    let c = sim.hello(C1, None);
    for s in 1..=3_000 {
        assert!(client_msgs(&sim.call(C1, s, b"x"), C1).is_empty(), "call {s} refused");
    }
    let acts = sim.call(C1, 3_001, b"x");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 3_001, error: CallError::Busy }]);
    let net_call = |sim: &mut Sim, seq| {
        let acts = sim.ev(Event::Call { conn: C2, seq, driver: "net_driver", body: b"n", acked_below: 0 });
        client_msgs(&acts, C2)
    };
    sim.ev(Event::ClientConnected { conn: C2 });
    sim.ev(Event::Hello { conn: C2, resume: None });
    for s in 1..=3 {
        assert!(net_call(&mut sim, s).is_empty());
    }
    assert_eq!(net_call(&mut sim, 4), [ClientMsg::Failed { seq: 4, error: CallError::Busy }]);
    // The deep queue replays whole and in order after a crash.
    sim.crash(STORAGE, ExitStatus::Signal(11));
    let mut sent = requests_sent(&sim.ready(STORAGE));
    assert!(sim.said("replaying 3000 queued requests"));
    let mut answered = 0;
    while let Some(&seq) = sent.get(answered) {
        let acts = sim.reply(STORAGE, c, seq, None, b"r");
        assert_eq!(client_msgs(&acts, C1), [ClientMsg::Reply { seq, body: b"r".to_vec() }]);
        sent.extend(requests_sent(&acts));
        answered += 1;
    }
    assert_eq!(sent, (1..=3_000).collect::<Vec<u64>>());
    assert_eq!(sim.state(STORAGE).queue_depth, 0);
}

#[test]
fn replay_after_crash_before_reply_resends_in_order_after_ready() {
    let mut sim = Sim::with(|d| d.window = 8);
    sim.start();
    let c = sim.hello(C1, None);
    for s in 1..=3 {
        sim.call(C1, s, b"x");
    }
    sim.reply(STORAGE, c, 1, Some(b"s1"), b"r1");
    let acts = sim.crash(STORAGE, SEGV);
    assert!(requests_sent(&acts).is_empty(), "nothing is sent before Ready");
    let acts = sim.ready(STORAGE);
    assert!(sim.said("replaying 2 queued requests"));
    assert_eq!(requests_sent(&acts), [2, 3]);
    let acts = sim.reply(STORAGE, c, 2, None, b"r2");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Reply { seq: 2, body: b"r2".to_vec() }]);
}

#[test]
fn poisoned_request_is_answered_and_dropped_after_k_crashes() {
    let mut sim = Sim::with(|d| {
        d.fault_policy = FaultPolicyConfig::Restart(BackoffConfig { max_restarts: 64, base: Millis(1), ..backoff() })
    });
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"poison");
    sim.call(C1, 2, b"fine");
    let mut answered = Vec::new();
    for _ in 0..3 {
        answered.extend(client_msgs(&sim.crash(STORAGE, SEGV), C1));
        if let Some(d) = sim.state(STORAGE).backoff_ms {
            let t = sim.now.0 + d;
            sim.at(t);
        }
        sim.ready(STORAGE);
    }
    assert_eq!(answered, [ClientMsg::Failed { seq: 1, error: CallError::Poisoned }]);
    // The driver goes on with the rest.
    assert_eq!(sim.state(STORAGE).queue_depth, 1);
    let acts = sim.reply(STORAGE, c, 2, None, b"ok");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Reply { seq: 2, body: b"ok".to_vec() }]);
    // A retry of the poisoned id is answered from the table, not re-executed.
    let acts = sim.call(C1, 1, b"poison");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 1, error: CallError::Poisoned }]);
    assert!(requests_sent(&acts).is_empty());
}

#[test]
fn crash_while_idle_blames_no_request() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"x");
    sim.reply(STORAGE, c, 1, None, b"r");
    sim.crash(STORAGE, SEGV);
    assert_eq!(sim.sup.status(sim.now)[0].queue_depth, 0);
}

#[test]
fn retried_answered_request_is_served_from_cache_without_reexecution() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"w");
    sim.reply(STORAGE, c, 1, Some(b"s"), b"done");
    // The client lost the reply and reconnects.
    sim.ev(Event::ClientGone { conn: C1 });
    assert_eq!(sim.hello(C2, Some(c)), c);
    let acts = sim.call(C2, 1, b"w");
    assert!(requests_sent(&acts).is_empty(), "must not re-execute");
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Reply { seq: 1, body: b"done".to_vec() }]);
    assert!(sim.sup.trace().any(|(_, t)| *t == Trace::DedupHit(RequestId { client: c, seq: 1 })));
}

#[test]
fn retried_in_flight_request_attaches_to_the_original() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"w");
    sim.ev(Event::ClientGone { conn: C1 });
    sim.hello(C2, Some(c));
    let acts = sim.call(C2, 1, b"w");
    assert!(acts.is_empty(), "{acts:?}");
    assert_eq!(sim.state(STORAGE).queue_depth, 1);
    let acts = sim.reply(STORAGE, c, 1, None, b"r");
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Reply { seq: 1, body: b"r".to_vec() }]);
}

#[test]
fn acked_below_expires_cached_replies() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"a");
    sim.reply(STORAGE, c, 1, None, b"r1");
    let acts = sim.ev(Event::Call { conn: C1, seq: 2, driver: "storage_driver", body: b"b", acked_below: 2 });
    assert_eq!(requests_sent(&acts), [2]);
    let acts = sim.call(C1, 1, b"a");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 1, error: CallError::Expired }]);
    assert!(requests_sent(&acts).is_empty());
}

#[test]
fn dedup_table_is_bounded_per_session() {
    let mut sim = Sim::with(|d| d.queue_depth = 64);
    sim.start();
    let c = sim.hello(C1, None);
    for s in 1..=20 {
        sim.call(C1, s, b"x");
        sim.reply(STORAGE, c, s, None, b"r");
    }
    // 8 cached replies per session: seq 12..=20 served, older expired.
    assert!(matches!(client_msgs(&sim.call(C1, 20, b"x"), C1)[..], [ClientMsg::Reply { seq: 20, .. }]));
    assert_eq!(client_msgs(&sim.call(C1, 3, b"x"), C1), [ClientMsg::Failed { seq: 3, error: CallError::Expired }]);
}

#[test]
fn bad_calls_get_clear_errors_and_lose_nothing() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    sim.ev(Event::ClientConnected { conn: C2 });
    let acts = sim.call(C2, 1, b"x");
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Failed { seq: 1, error: CallError::NoSession }]);
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"good");
    let acts = sim.ev(Event::Call { conn: C1, seq: 2, driver: "nope", body: b"x", acked_below: 0 });
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 2, error: CallError::UnknownDriver }]);
    let big = vec![0u8; MAX_BODY + 1];
    let acts = sim.call(C1, 3, &big);
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 3, error: CallError::TooLarge }]);
    let acts = sim.ev(Event::Hello { conn: C2, resume: Some(ClientId(999)) });
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Failed { seq: 0, error: CallError::NoSession }]);
    let acts = sim.reply(STORAGE, c, 1, None, b"r");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Reply { seq: 1, body: b"r".to_vec() }]);
}

#[test]
fn out_of_order_reply_kills_the_instance_and_replays() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"a");
    sim.call(C1, 2, b"b");
    let acts = sim.reply(STORAGE, c, 2, None, b"wrong");
    assert!(acts.iter().any(|a| matches!(a, Action::Kill { signal: KillSignal::Kill, .. })));
    assert!(client_msgs(&acts, C1).is_empty());
    sim.crash(STORAGE, ExitStatus::Signal(9));
    assert!(sim.state(STORAGE).last_failure.unwrap().contains("protocol error"));
    assert_eq!(requests_sent(&sim.ready(STORAGE)), [1, 2]);
}

#[test]
fn busy_barrier_keeps_later_calls_behind_a_refused_one() {
    let mut sim = Sim::new(vec![driver("storage_driver"), driver("net_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    let mut sent = Vec::new();
    for s in 1..=4 {
        sent.extend(requests_sent(&sim.call(C1, s, b"x")));
    }
    // Queue full (depth 4): 5 is refused.
    assert_eq!(client_msgs(&sim.call(C1, 5, b"x"), C1), [ClientMsg::Failed { seq: 5, error: CallError::Busy }]);
    sent.extend(requests_sent(&sim.reply(STORAGE, c, 1, None, b"r1")));
    sent.extend(requests_sent(&sim.reply(STORAGE, c, 2, None, b"r2")));
    // There is room now, but 6 must not overtake 5, which the client resends later.
    let acts = sim.call(C1, 6, b"x");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 6, error: CallError::Busy }]);
    assert!(sim.sup.trace().any(|(_, t)| *t == Trace::BusyBarrier { id: RequestId { client: c, seq: 6 }, behind: 5 }));
    // Another session, and another driver of this session, are not held back.
    let other = sim.hello(C2, None);
    assert!(client_msgs(&sim.call(C2, 1, b"y"), C2).is_empty(), "accepted");
    let acts = sim.ev(Event::Call { conn: C1, seq: 7, driver: "net_driver", body: b"z", acked_below: 0 });
    assert_eq!(requests_sent(&acts), [7]);
    // The resends, in seq order: 5 is accepted, then 6 (queue full again: Busy,
    // and then accepted once there is room).
    assert!(client_msgs(&sim.call(C1, 5, b"x"), C1).is_empty());
    assert_eq!(client_msgs(&sim.call(C1, 6, b"x"), C1), [ClientMsg::Failed { seq: 6, error: CallError::Busy }]);
    sent.extend(requests_sent(&sim.reply(STORAGE, c, 3, None, b"r3")));
    assert!(client_msgs(&sim.call(C1, 6, b"x"), C1).is_empty());
    for (client, seq) in [(c, 4), (other, 1), (c, 5)] {
        sent.extend(requests_sent(&sim.reply(STORAGE, client, seq, None, b"r")));
    }
    let mine: Vec<u64> = sim
        .out
        .iter()
        .filter_map(|a| match a {
            Action::ToDriver { driver: STORAGE, msg: DriverMsg::Request { id, .. }, .. } if id.client == c => {
                Some(id.seq)
            }
            _ => None,
        })
        .collect();
    assert_eq!(mine, [1, 2, 3, 4, 5, 6], "the driver sees the session's calls in seq order");
}

#[test]
fn a_definite_answer_or_acked_below_lifts_the_busy_barrier() {
    let mut sim = Sim::with(|d| d.queue_depth = 1);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"x");
    assert_eq!(client_msgs(&sim.call(C1, 2, b"x"), C1), [ClientMsg::Failed { seq: 2, error: CallError::Busy }]);
    sim.reply(STORAGE, c, 1, None, b"r1");
    // The client gave up on 2 (its acked_below passed it): 3 goes through.
    let acts = sim.ev(Event::Call { conn: C1, seq: 3, driver: "storage_driver", body: b"x", acked_below: 3 });
    assert_eq!(requests_sent(&acts), [3]);
    sim.reply(STORAGE, c, 3, None, b"r3");
    // A refused call answered definitely (too large) blocks nothing either.
    assert_eq!(client_msgs(&sim.call(C1, 4, b"x"), C1), []);
    assert_eq!(client_msgs(&sim.call(C1, 5, b"x"), C1), [ClientMsg::Failed { seq: 5, error: CallError::Busy }]);
    let big = vec![0u8; MAX_BODY + 1];
    sim.reply(STORAGE, c, 4, None, b"r4");
    assert_eq!(client_msgs(&sim.call(C1, 5, &big), C1), [ClientMsg::Failed { seq: 5, error: CallError::TooLarge }]);
    assert_eq!(requests_sent(&sim.call(C1, 6, b"x")), [6]);
}
