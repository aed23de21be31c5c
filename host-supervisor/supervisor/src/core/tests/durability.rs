//! Persisted checkpoints: replies held until their state is durable, write
//! failures retried with backoff, and what a shutdown does with held replies.

use super::shutdown::exits;
use super::*;

fn disk_error(error: &str) -> PersistOutcome {
    PersistOutcome::Failed { path: "/state/storage_driver.ckpt".into(), error: error.into() }
}

const ENOSPC: &str = "/state/storage_driver.ckpt.tmp: No space left on device (os error 28)";

fn persists(acts: &[Action]) -> Vec<Vec<u8>> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Persist { checkpoint, .. } => Some(checkpoint.clone()),
            _ => None,
        })
        .collect()
}

fn count_said(sim: &Sim, prefix: &str) -> usize {
    sim.out.iter().filter(|a| matches!(a, Action::Say(s) if s.starts_with(prefix))).count()
}

#[test]
fn persist_failure_holds_replies_until_the_checkpoint_is_durable() {
    let mut sim = Sim::with(|d| d.persist_checkpoint = true);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"append");
    sim.call(C1, 2, b"read");
    sim.disk.extend([disk_error(ENOSPC), disk_error(ENOSPC)]);
    let acts = sim.reply(STORAGE, c, 1, Some(b"s1"), b"r1");
    assert_eq!(persists(&acts), [b"s1".to_vec()]);
    assert!(client_msgs(&acts, C1).is_empty(), "a reply left before its state was durable: {acts:?}");
    assert!(sim.said(&format!(
        "cannot persist the checkpoint of storage_driver to /state/storage_driver.ckpt: {ENOSPC} (replies held, retrying)"
    )));
    // The commit is applied in memory all the same (a new instance starts from it).
    assert_eq!(sim.sup.checkpoint(STORAGE), Some(&b"s1"[..]));
    // A later reply that commits nothing waits behind it, and waits for the
    // retry's deadline rather than writing again at once.
    let acts = sim.reply(STORAGE, c, 2, None, b"r2");
    assert!(client_msgs(&acts, C1).is_empty() && persists(&acts).is_empty(), "{acts:?}");
    let st = sim.state(STORAGE);
    assert_eq!(st.held_replies, 2);
    assert!(st.checkpoint_error.as_deref().is_some_and(|e| e.contains("No space left on device")), "{st:?}");
    assert_eq!(st.state, DriverState::Running, "the driver itself is fine");
    // Retried at +10 ms (fails again, said once), then at +20 ms more.
    assert_eq!(sim.sup.next_deadline(), Some(Millis(10)));
    assert!(persists(&sim.at(9)).is_empty());
    assert_eq!(persists(&sim.at(10)), [b"s1".to_vec()]);
    assert_eq!(count_said(&sim, "cannot persist the checkpoint"), 1);
    assert_eq!(sim.sup.next_deadline(), Some(Millis(30)));
    let acts = sim.at(30);
    assert_eq!(
        client_msgs(&acts, C1),
        [ClientMsg::Reply { seq: 1, body: b"r1".to_vec() }, ClientMsg::Reply { seq: 2, body: b"r2".to_vec() }]
    );
    assert!(sim.said(
        "checkpoint of storage_driver persisted to /state/storage_driver.ckpt after 2 failed attempts over 30ms; \
         releasing 2 held replies"
    ));
    assert_eq!(sim.written, [b"s1".to_vec()]);
    let st = sim.state(STORAGE);
    assert_eq!((st.held_replies, st.checkpoint_error), (0, None));
    assert_eq!(sim.sup.next_deadline(), Some(Millis(1_000)), "only the heartbeat is due");
    // Healthy again: the next reply goes out with its write, at once.
    sim.call(C1, 3, b"append");
    let acts = sim.reply(STORAGE, c, 3, Some(b"s3"), b"r3");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Reply { seq: 3, body: b"r3".to_vec() }]);
    assert_eq!(sim.written, [b"s1".to_vec(), b"s3".to_vec()]);
}

#[test]
fn commits_made_while_persisting_fails_are_coalesced_into_the_retry() {
    let mut sim = Sim::with(|d| d.persist_checkpoint = true);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"a");
    sim.call(C1, 2, b"b");
    sim.disk.push_back(disk_error(ENOSPC));
    sim.reply(STORAGE, c, 1, Some(b"s1"), b"r1");
    let acts = sim.reply(STORAGE, c, 2, Some(b"s2"), b"r2");
    assert!(persists(&acts).is_empty(), "no write outside the retry schedule: {acts:?}");
    let acts = sim.at(10);
    assert_eq!(persists(&acts), [b"s2".to_vec()], "the retry writes the newest state only");
    assert_eq!(client_msgs(&acts, C1).len(), 2);
    assert_eq!(sim.written, [b"s2".to_vec()]);
}

#[test]
fn persist_retries_back_off_to_a_cap_and_never_spin() {
    let mut sim = Sim::with(|d| {
        d.persist_checkpoint = true;
        d.heartbeat_interval = Millis(3_600_000);
    });
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"a");
    // The write with the reply, then 12 retries, all fail.
    sim.disk.extend((0..13).map(|_| disk_error(ENOSPC)));
    sim.reply(STORAGE, c, 1, Some(b"s1"), b"r1");
    let mut delays = Vec::new();
    for _ in 0..12 {
        let due = sim.sup.next_deadline().expect("a retry is scheduled");
        delays.push(due.0 - sim.now.0);
        // Nothing happens early, however often the daemon wakes up.
        assert!(persists(&sim.at(due.0 - 1)).is_empty());
        assert_eq!(persists(&sim.at(due.0)).len(), 1, "one write per retry");
    }
    assert_eq!(delays[..9], [10, 20, 40, 80, 160, 320, 640, 1_000, 1_000]);
    assert_eq!(delays[9..], [1_000, 1_000, 1_000]);
    assert_eq!(count_said(&sim, "cannot persist the checkpoint"), 1, "one line per episode");
    assert!(!client_msgs(&sim.out, C1).iter().any(|m| matches!(m, ClientMsg::Reply { .. })));
    assert!(sim.state(STORAGE).checkpoint_error.unwrap().contains("(13 attempts over"));
    // The disk recovers: the reply leaves on the next retry.
    let due = sim.sup.next_deadline().unwrap();
    assert_eq!(client_msgs(&sim.at(due.0), C1), [ClientMsg::Reply { seq: 1, body: b"r1".to_vec() }]);
}

#[test]
fn held_replies_survive_a_crash_and_a_reconnect_and_run_once() {
    let mut sim = Sim::with(|d| d.persist_checkpoint = true);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"append");
    sim.disk.push_back(disk_error(ENOSPC));
    sim.reply(STORAGE, c, 1, Some(b"s1"), b"r1");
    // The driver crashes: the new instance starts from the committed state,
    // and the held request is not replayed (it has its reply).
    let acts = sim.crash(STORAGE, SEGV);
    assert!(acts.iter().any(|a| matches!(a,
        Action::ToDriver { msg: DriverMsg::Init { checkpoint: Some(c), .. }, .. } if c == b"s1")));
    assert!(requests_sent(&sim.ready(STORAGE)).is_empty());
    // The client reconnects and retries: attached, not executed again.
    sim.ev(Event::ClientGone { conn: C1 });
    sim.hello(C2, Some(c));
    let acts = sim.call(C2, 1, b"append");
    assert!(acts.is_empty(), "{acts:?}");
    let acts = sim.at(10);
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Reply { seq: 1, body: b"r1".to_vec() }]);
    // And once released, a retry is served from the dedup table.
    let acts = sim.call(C2, 1, b"append");
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Reply { seq: 1, body: b"r1".to_vec() }]);
    assert!(requests_sent(&acts).is_empty());
}

#[test]
fn shutdown_while_persisting_fails_withholds_the_replies_and_says_so() {
    let mut sim = Sim::with(|d| d.persist_checkpoint = true);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"append");
    sim.disk.extend((0..4).map(|_| disk_error(ENOSPC)));
    sim.reply(STORAGE, c, 1, Some(b"s1"), b"r1");
    sim.ev(Event::Shutdown);
    sim.crash(STORAGE, ExitStatus::Code(0));
    assert_eq!(exits(&sim), (1, 1));
    assert_eq!(count_said(&sim, "exiting with 1 replies of storage_driver withheld"), 1, "{:#?}", sim.out);
    let replies = client_msgs(&sim.out, C1).into_iter().filter(|m| matches!(m, ClientMsg::Reply { .. })).count();
    assert_eq!(replies, 0, "no reply without a durable checkpoint");
}

#[test]
fn a_driver_without_persistence_never_holds_replies() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"a");
    sim.disk.push_back(disk_error(ENOSPC));
    let acts = sim.reply(STORAGE, c, 1, Some(b"s1"), b"r1");
    assert!(persists(&acts).is_empty());
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Reply { seq: 1, body: b"r1".to_vec() }]);
}
