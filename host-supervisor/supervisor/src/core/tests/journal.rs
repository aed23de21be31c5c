//! The journal rules of the core (`core/wal.rs`), without a disk: the test
//! plays the writer thread, deciding when each record becomes durable.

use super::*;
use crate::config::DurabilityMode;
use crate::journal::{Image, Record};

fn journal_sim() -> Sim {
    let mut d = driver("storage_driver");
    d.durability = DurabilityMode::Journal;
    journal_sim_with(vec![d], None)
}

/// A supervisor on `drivers`; with an `image`, a restarted one: it
/// recovers the image and numbers its sessions from a new epoch, as a real
/// restart does.
fn journal_sim_with(drivers: Vec<DriverConfig>, image: Option<Image>) -> Sim {
    let mut sup = Supervisor::new(drivers.into_iter().map(|d| (d, None)).collect(), 42, 4, 8).with_journal(1 << 30);
    if let Some(image) = image {
        sup = sup.with_epoch(crate::identity::Epoch(1 << 40));
        sup.recover(Millis(0), image);
    }
    Sim::of(sup)
}

/// The journal records in `acts`, with their LSNs.
fn records(acts: &[Action]) -> Vec<(u64, Record)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Journal { lsn, record } => Some((*lsn, record.clone())),
            _ => None,
        })
        .collect()
}

fn last_lsn(acts: &[Action]) -> u64 {
    records(acts).last().expect("a journal record").0
}

/// Hello whose Welcome waits for the session record; returns the session.
fn durable_hello(sim: &mut Sim, conn: ConnId) -> ClientId {
    sim.ev(Event::ClientConnected { conn });
    let acts = sim.ev(Event::Hello { conn, resume: None });
    assert!(client_msgs(&acts, conn).is_empty(), "Welcome before its session is durable: {acts:?}");
    let Some((_, Record::Session { client })) =
        records(&acts).into_iter().find(|(_, r)| matches!(r, Record::Session { .. }))
    else {
        panic!("no session record: {acts:?}")
    };
    let acts = sim.ev(Event::Journaled { upto: last_lsn(&acts) });
    assert_eq!(client_msgs(&acts, conn), [ClientMsg::Welcome { client }]);
    client
}

#[test]
fn a_journal_drivers_answer_waits_until_its_record_is_durable() {
    let mut sim = journal_sim();
    sim.start();
    let c = durable_hello(&mut sim, C1);
    let acts = sim.call(C1, 1, b"w1");
    // Forwarded only once its acceptance is durable (the in-doubt request
    // must be known after a crash).
    assert!(requests_sent(&acts).is_empty());
    let rid = RequestId { client: c, seq: 1 };
    assert!(matches!(records(&acts).as_slice(), [(_, Record::Accepted { rid: r, .. })] if *r == rid));
    assert_eq!(requests_sent(&sim.ev(Event::Journaled { upto: last_lsn(&acts) })), [1]);
    let acts = sim.reply(STORAGE, c, 1, Some(b"state1"), b"ok1");
    assert!(client_msgs(&acts, C1).is_empty(), "the answer left before its record was durable");
    let answered = records(&acts);
    let [(lsn, Record::Answered { commit, answer, cached, .. })] = answered.as_slice() else {
        panic!("expected one Answered record: {answered:?}")
    };
    assert_eq!(
        (commit.as_deref(), answer, cached),
        (Some(&b"state1"[..]), &crate::journal::Answer::Reply(b"ok1".to_vec()), &true)
    );
    // The committed state is applied at once (the next instance starts from it).
    assert_eq!(sim.sup.checkpoint(STORAGE), Some(&b"state1"[..]));
    // An older LSN is not enough.
    assert!(client_msgs(&sim.ev(Event::Journaled { upto: lsn - 1 }), C1).is_empty());
    let acts = sim.ev(Event::Journaled { upto: *lsn });
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Reply { seq: 1, body: b"ok1".to_vec() }]);
}

#[test]
fn a_journal_driver_gets_its_next_request_only_once_nothing_of_it_is_in_doubt() {
    let mut sim = journal_sim();
    sim.start();
    let c = durable_hello(&mut sim, C1);
    let acts = sim.call(C1, 1, b"a");
    assert_eq!(requests_sent(&sim.ev(Event::Journaled { upto: last_lsn(&acts) })), [1]);
    // window = 2 in the test config, but one request in flight is the limit;
    // the second acceptance waits to ride with the first answer.
    let acts = sim.call(C1, 2, b"b");
    assert!(requests_sent(&acts).is_empty() && records(&acts).is_empty(), "{acts:?}");
    let acts = sim.reply(STORAGE, c, 1, None, b"1");
    assert!(requests_sent(&acts).is_empty(), "forwarded while the previous answer was in doubt");
    let recs = records(&acts);
    assert!(
        matches!(recs.as_slice(), [(_, Record::Accepted { rid, .. }), (_, Record::Answered { .. })] if rid.seq == 2),
        "one batch carries the answer and the next acceptance: {recs:?}"
    );
    let acts = sim.ev(Event::Journaled { upto: last_lsn(&acts) });
    assert_eq!(requests_sent(&acts), [2]);
}

#[test]
fn a_dedup_hit_on_an_answer_not_yet_durable_waits_for_it() {
    let mut sim = journal_sim();
    sim.start();
    let c = durable_hello(&mut sim, C1);
    let acts = sim.call(C1, 1, b"a");
    sim.ev(Event::Journaled { upto: last_lsn(&acts) });
    let acts = sim.reply(STORAGE, c, 1, None, b"1");
    let lsn = last_lsn(&acts);
    // The client reconnects and resends before the record is durable.
    sim.ev(Event::ClientGone { conn: C1 });
    assert_eq!(sim.hello(C2, Some(c)), c);
    assert!(client_msgs(&sim.call(C2, 1, b"a"), C2).is_empty());
    let acts = sim.ev(Event::Journaled { upto: lsn });
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Reply { seq: 1, body: b"1".to_vec() }]);
}

#[test]
fn memory_drivers_next_to_a_journal_driver_neither_journal_nor_wait() {
    let mut j = driver("journal_driver");
    j.durability = DurabilityMode::Journal;
    let mut sim = journal_sim_with(vec![driver("storage_driver"), j], None);
    sim.start();
    let c = durable_hello(&mut sim, C1);
    let acts = sim.call(C1, 1, b"m");
    assert!(records(&acts).is_empty());
    let acts = sim.reply(STORAGE, c, 1, Some(b"s"), b"m1");
    assert!(records(&acts).is_empty());
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Reply { seq: 1, body: b"m1".to_vec() }]);
}

/// The records of a run, folded as recovery folds the durable journal.
fn image_of(recs: &[(u64, Record)], upto: u64) -> Image {
    let mut image = Image::default();
    for (lsn, r) in recs {
        if *lsn <= upto {
            image.apply(r.clone());
        }
    }
    image
}

/// Supervisor A with call 1 answered (durably) and call 2 forwarded, its
/// acceptance durable: the moment a crash leaves one request in doubt.
fn answered_1_and_forwarded_2() -> (Sim, ClientId) {
    let mut a = journal_sim();
    a.start();
    let c = durable_hello(&mut a, C1);
    let acts = a.call(C1, 1, b"w1");
    a.ev(Event::Journaled { upto: last_lsn(&acts) });
    let acts = a.reply(STORAGE, c, 1, Some(b"s1"), b"r1");
    a.ev(Event::Journaled { upto: last_lsn(&acts) });
    let acts = a.call(C1, 2, b"w2");
    assert_eq!(requests_sent(&a.ev(Event::Journaled { upto: last_lsn(&acts) })), [2]);
    (a, c)
}

/// Supervisor B, recovered from `image`, not started.
fn recovered(image: Image) -> Sim {
    let mut d = driver("storage_driver");
    d.durability = DurabilityMode::Journal;
    d.queue_depth = 4;
    journal_sim_with(vec![d], Some(image))
}

#[test]
fn recovery_replays_accepted_requests_in_order_and_answers_resumed_sessions_as_before() {
    let (mut a, c) = answered_1_and_forwarded_2();
    // Call 3's acceptance waits to ride with the next record: supervisor A
    // dies while 2 executes, and 3 is not in the journal.
    assert!(records(&a.call(C1, 3, b"w3")).is_empty());
    let recs = records(&a.out);
    let image = image_of(&recs, u64::MAX);

    let mut b = recovered(image);
    b.ev(Event::Start);
    let init = b.out.iter().find_map(|a| match a {
        Action::ToDriver { msg: DriverMsg::Init { checkpoint, .. }, .. } => Some(checkpoint.clone()),
        _ => None,
    });
    assert_eq!(init, Some(Some(b"s1".to_vec())), "relaunched with the last committed state");
    let acts = b.ready(STORAGE);
    assert_eq!(requests_sent(&acts), [2], "the accepted requests are replayed in order, one in doubt at a time");
    // The client resumes: the answered call gets the same answer, from the
    // recovered dedup table; the pending ones attach to their replay.
    assert_eq!(b.hello(C2, Some(c)), c);
    assert_eq!(client_msgs(&b.call(C2, 1, b"w1"), C2), [ClientMsg::Reply { seq: 1, body: b"r1".to_vec() }]);
    assert!(client_msgs(&b.call(C2, 2, b"w2"), C2).is_empty());
    // The resent call 3 is new to B; it waits behind the request in doubt.
    assert!(requests_sent(&b.call(C2, 3, b"w3")).is_empty());
    let acts = b.reply(STORAGE, c, 2, Some(b"s2"), b"r2");
    let acts = b.ev(Event::Journaled { upto: last_lsn(&acts) });
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Reply { seq: 2, body: b"r2".to_vec() }]);
    assert_eq!(requests_sent(&acts), [3]);
}

#[test]
fn an_answer_whose_record_was_lost_is_replayed_not_remembered() {
    let mut a = journal_sim();
    a.start();
    let c = durable_hello(&mut a, C1);
    let acts = a.call(C1, 1, b"w1");
    let accepted = last_lsn(&acts);
    a.ev(Event::Journaled { upto: accepted });
    a.reply(STORAGE, c, 1, Some(b"s1"), b"r1");
    // Only the Accepted record made it to disk.
    let image = image_of(&records(&a.out), accepted);
    let mut b = journal_sim_with(
        vec![{
            let mut d = driver("storage_driver");
            d.durability = DurabilityMode::Journal;
            d
        }],
        Some(image),
    );
    b.ev(Event::Start);
    assert_eq!(requests_sent(&b.ready(STORAGE)), [1], "replayed on the state it was forwarded with");
    assert_eq!(b.sup.checkpoint(STORAGE), None);
}

#[test]
fn a_failure_of_a_journal_driver_is_journaled_before_the_client_sees_it() {
    let mut sim = journal_sim();
    sim.start();
    let _ = durable_hello(&mut sim, C1);
    sim.call(C1, 1, b"a");
    let (resp, acts) = sim.sup.control(sim.now, &ControlRequest::Stop { driver: "storage_driver".into() });
    assert!(matches!(resp, ControlResponse::Done(_)));
    let g = sim.generation(STORAGE);
    let mut acts = acts;
    acts.extend(sim.ev(Event::Exited { driver: STORAGE, generation: g, status: ExitStatus::Code(0) }));
    assert!(client_msgs(&acts, C1).is_empty(), "failure sent before it was journaled");
    let recs = records(&acts);
    assert!(matches!(recs.last(), Some((_, Record::Answered { cached: false, .. }))), "{recs:?}");
    let acts = sim.ev(Event::Journaled { upto: recs.last().unwrap().0 });
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 1, error: CallError::DriverFailed }]);
}

#[test]
fn a_snapshot_follows_once_enough_was_journaled_and_holds_everything() {
    let mut d = driver("storage_driver");
    d.durability = DurabilityMode::Journal;
    let sup = Supervisor::new(vec![(d, None)], 42, 4, 8).with_journal(64 * 1024);
    let mut sim = Sim::of(sup);
    sim.start();
    let c = durable_hello(&mut sim, C1);
    let body = vec![7u8; 20_000];
    let durable = |sim: &mut Sim| {
        let lsn = records(&sim.out).last().unwrap().0;
        sim.ev(Event::Journaled { upto: lsn });
    };
    for seq in 1..=5 {
        sim.call(C1, seq, &body);
        durable(&mut sim);
        sim.reply(STORAGE, c, seq, Some(&[seq as u8]), b"ok");
        durable(&mut sim);
    }
    let recs = records(&sim.out);
    let snaps: Vec<&(u64, Record)> = recs.iter().filter(|(_, r)| matches!(r, Record::Snapshot(_))).collect();
    let [(lsn, Record::Snapshot(image))] = snaps.as_slice() else { panic!("one snapshot after 64 KiB: {snaps:?}") };
    // It holds exactly what the records before it describe.
    assert_eq!(image, &image_of(&recs, lsn - 1));
    assert_eq!(sim.sup.journal_stats().snapshots, 1);
}

#[test]
fn a_durable_answer_forwards_the_next_request_before_it_releases_the_answer() {
    let mut sim = journal_sim();
    sim.start();
    let c = durable_hello(&mut sim, C1);
    let acts = sim.call(C1, 1, b"w1");
    sim.ev(Event::Journaled { upto: last_lsn(&acts) });
    sim.call(C1, 2, b"w2");
    let acts = sim.reply(STORAGE, c, 1, Some(b"s1"), b"ok1");
    // The answer's record carries request 2's acceptance ahead of it.
    let acts = sim.ev(Event::Journaled { upto: last_lsn(&acts) });
    let to_driver = acts.iter().position(|a| matches!(a, Action::ToDriver { msg: DriverMsg::Request { .. }, .. }));
    let to_client = acts.iter().position(|a| matches!(a, Action::ToClient { .. }));
    assert!(to_driver.is_some() && to_client.is_some(), "{acts:?}");
    // The driver works while the client is answered: its request is on the
    // critical path of the next batch, the answer is not.
    assert!(to_driver < to_client, "{acts:?}");
    assert_eq!(requests_sent(&acts), [2]);
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Reply { seq: 1, body: b"ok1".to_vec() }]);
}

/// The campaign's seed 15 failure, in the core: after a supervisor crash,
/// answer 1 (durable, lost with the old connection) waits in the recovered
/// dedup table while call 2 is replayed. Call 2 ends after the client's
/// `Hello` but before its resends: pushed at once, answer 2 would reach the
/// client before answer 1.
#[test]
fn after_recovery_a_replayed_answer_does_not_overtake_one_from_the_dedup_table() {
    let (a, c) = answered_1_and_forwarded_2();
    let mut b = recovered(image_of(&records(&a.out), u64::MAX));
    b.ev(Event::Start);
    assert_eq!(requests_sent(&b.ready(STORAGE)), [2]);
    assert_eq!(b.hello(C2, Some(c)), c);
    let acts = b.reply(STORAGE, c, 2, Some(b"s2"), b"r2");
    let acts = b.ev(Event::Journaled { upto: last_lsn(&acts) });
    assert!(client_msgs(&acts, C2).is_empty(), "answer 2 went out before the resends: {acts:?}");
    assert_eq!(client_msgs(&b.call(C2, 1, b"w1"), C2), [ClientMsg::Reply { seq: 1, body: b"r1".to_vec() }]);
    assert_eq!(client_msgs(&b.call(C2, 2, b"w2"), C2), [ClientMsg::Reply { seq: 2, body: b"r2".to_vec() }]);
}

/// The image a restarted supervisor would load: every record `sim` emitted
/// so far, folded in order.
fn folded(sim: &Sim) -> Image {
    let mut image = Image::default();
    for (_, r) in records(&sim.out) {
        image.apply(r);
    }
    image
}

/// A supervisor restarted on `image`, started (one journal driver, 4
/// sessions at most).
fn restarted(image: Image) -> Sim {
    let mut d = driver("storage_driver");
    d.durability = DurabilityMode::Journal;
    let mut sim = journal_sim_with(vec![d], Some(image));
    sim.start();
    sim
}

#[test]
fn after_recovery_a_full_table_evicts_the_sessions_that_had_left_not_a_client_coming_back() {
    // The campaign's failure (seed 20261203, fault 69 583): the table was
    // full of sessions of `drvctl` runs long gone; after a supervisor kill
    // every recovered session looked equally idle, and the first new ones
    // evicted the session of a client that was still reconnecting.
    // Old lifetime (4 sessions at most): A stays connected, B, C and D
    // come and go.
    let mut sim = journal_sim();
    sim.start();
    let a = durable_hello(&mut sim, C1);
    let mut gone = Vec::new();
    for n in 2..5 {
        gone.push(durable_hello(&mut sim, ConnId(n)));
        sim.ev(Event::ClientGone { conn: ConnId(n) });
    }
    let image = folded(&sim);
    assert_eq!(image.sessions.len(), 4);
    assert_eq!(image.detached, gone, "the journal knows who had left, in order");
    // Killed. In the new lifetime three new clients arrive before A is back:
    // each evicts one of those that had left, oldest first.
    let mut sim = restarted(image);
    for n in 10..13 {
        durable_hello(&mut sim, ConnId(n));
    }
    for c in &gone {
        assert!(!sim.sup.sessions.contains_key(c), "{c} should have been evicted: {:?}", sim.sup.sessions.keys());
    }
    sim.ev(Event::ClientConnected { conn: ConnId(20) });
    let acts = sim.ev(Event::Hello { conn: ConnId(20), resume: Some(a) });
    assert_eq!(client_msgs(&acts, ConnId(20)), [ClientMsg::Welcome { client: a }], "A resumes its session");
}

#[test]
fn a_session_forgotten_in_one_lifetime_is_not_recovered_in_the_next() {
    let mut sim = journal_sim();
    sim.start();
    let a = durable_hello(&mut sim, C1);
    let b = durable_hello(&mut sim, C2);
    sim.ev(Event::ClientGone { conn: C2 });
    // Idle past session-idle-timeout-ms (10 min by default): forgotten.
    sim.at(600_001);
    assert!(!sim.sup.sessions.contains_key(&b));
    let image = folded(&sim);
    let kept: Vec<ClientId> = image.sessions.iter().map(|s| s.client).collect();
    assert_eq!(kept, [a], "only the session the old lifetime still knew");
    assert!(image.detached.is_empty());
    // And a resume of it in the next lifetime is refused, as it was before.
    let mut sim = restarted(image);
    sim.ev(Event::ClientConnected { conn: C2 });
    let acts = sim.ev(Event::Hello { conn: C2, resume: Some(b) });
    assert!(matches!(client_msgs(&acts, C2).as_slice(), [ClientMsg::Failed { error: CallError::NoSession, .. }]));
}

#[test]
fn a_session_that_said_bye_is_not_recovered_in_the_next_lifetime() {
    let mut sim = journal_sim();
    sim.start();
    let a = durable_hello(&mut sim, C1);
    let b = durable_hello(&mut sim, C2);
    sim.ev(Event::Bye { conn: C2 });
    let image = folded(&sim);
    let kept: Vec<ClientId> = image.sessions.iter().map(|s| s.client).collect();
    assert_eq!(kept, [a], "the goodbye is in the journal");
    let mut sim = restarted(image);
    sim.ev(Event::ClientConnected { conn: C2 });
    let acts = sim.ev(Event::Hello { conn: C2, resume: Some(b) });
    assert!(matches!(client_msgs(&acts, C2).as_slice(), [ClientMsg::Failed { error: CallError::NoSession, .. }]));
}

#[test]
fn a_snapshot_keeps_which_sessions_had_left_and_in_which_order() {
    let mut d = driver("storage_driver");
    d.durability = DurabilityMode::Journal;
    // Compaction after every record.
    let sup = Supervisor::new(vec![(d, None)], 42, 4, 8).with_journal(1);
    let mut sim = Sim::of(sup);
    sim.start();
    let a = durable_hello(&mut sim, C1);
    let b = durable_hello(&mut sim, C2);
    sim.now = Millis(5);
    sim.ev(Event::ClientGone { conn: C2 });
    sim.now = Millis(9);
    sim.ev(Event::ClientGone { conn: C1 });
    let c = durable_hello(&mut sim, ConnId(3));
    let snapshots = records(&sim.out).iter().filter(|(_, r)| matches!(r, Record::Snapshot(_))).count();
    assert!(snapshots >= 2, "compacted");
    let image = folded(&sim);
    assert_eq!(image.detached, [b, a], "b left first");
    assert_eq!(image.sessions.len(), 3);
    assert!(!image.detached.contains(&c));
}
