//! Sessions under budgets: one session per connection, idle expiry, and the
//! byte budgets of the dedup table.

use super::*;

#[test]
fn session_table_is_bounded_and_evicts_detached_sessions() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    let first = sim.hello(ConnId(10), None);
    sim.ev(Event::ClientGone { conn: ConnId(10) });
    for i in 11..14 {
        sim.hello(ConnId(i), None);
    }
    // Table full (4): the detached one is evicted for a newcomer.
    sim.hello(ConnId(20), None);
    let acts = sim.ev(Event::Hello { conn: ConnId(21), resume: Some(first) });
    assert_eq!(client_msgs(&acts, ConnId(21)), [ClientMsg::Failed { seq: 0, error: CallError::NoSession }]);
    // All attached: a newcomer is told the table is full (not Busy, which
    // means a driver's queue is full).
    sim.ev(Event::ClientConnected { conn: ConnId(22) });
    let acts = sim.ev(Event::Hello { conn: ConnId(22), resume: None });
    assert_eq!(client_msgs(&acts, ConnId(22)), [ClientMsg::Failed { seq: 0, error: CallError::SessionsFull }]);
}

fn with_limits(f: impl FnOnce(&mut crate::limits::Limits)) -> Sim {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    let mut l = crate::limits::Limits::default();
    f(&mut l);
    sim.sup = Supervisor::new(vec![(driver("storage_driver"), None)], 42, 4, 8).with_limits(l);
    sim
}

#[test]
fn a_second_hello_on_a_connection_detaches_its_first_session() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.ev(Event::ClientConnected { conn: C1 });
    // 256 Hellos on one connection, then it closes: the table (4) must not
    // be left full of sessions attached to a connection that moved on.
    for _ in 0..256 {
        let acts = sim.ev(Event::Hello { conn: C1, resume: None });
        assert!(matches!(client_msgs(&acts, C1).as_slice(), [ClientMsg::Welcome { .. }]), "{acts:?}");
    }
    sim.ev(Event::ClientGone { conn: C1 });
    for i in 0..4 {
        sim.hello(ConnId(100 + i), None);
    }
    assert_eq!(sim.sup.session_count(), 4);
}

#[test]
fn a_second_hello_resuming_the_same_session_keeps_it() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    let c = sim.hello(C1, None);
    let acts = sim.ev(Event::Hello { conn: C1, resume: Some(c) });
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Welcome { client: c }]);
    assert!(sim.sup.sessions[&c].conn == Some(C1));
}

#[test]
fn a_detached_session_expires_after_the_idle_timeout_even_when_nothing_else_happens() {
    let mut sim = with_limits(|l| l.session_idle_ms = 1_000);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"w");
    sim.reply(STORAGE, c, 1, None, b"ok");
    assert!(sim.sup.cached_reply_bytes() > 0);
    sim.now = Millis(500);
    sim.ev(Event::ClientGone { conn: C1 });
    // The daemon would sleep until the next deadline: the expiry is one.
    assert!(sim.sup.next_deadline().is_some_and(|t| t <= Millis(1_500)), "{:?}", sim.sup.next_deadline());
    sim.at(1_499);
    assert_eq!(sim.sup.session_count(), 1);
    sim.at(1_500);
    assert_eq!(sim.sup.session_count(), 0);
    assert_eq!(sim.sup.cached_reply_bytes(), 0, "its cached replies are freed");
    assert!(sim.said("forgot 1 client session(s) idle for 1000ms without a connection"), "{:?}", sim.out);
    let acts = sim.ev(Event::Hello { conn: C2, resume: Some(c) });
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Failed { seq: 0, error: CallError::NoSession }]);
}

#[test]
fn an_attached_session_never_expires() {
    let mut sim = with_limits(|l| l.session_idle_ms = 100);
    sim.start();
    sim.hello(C1, None);
    sim.at(10_000);
    assert_eq!(sim.sup.session_count(), 1);
}

#[test]
fn a_client_that_never_acknowledges_is_bounded_by_the_per_session_byte_budget() {
    let mut sim = with_limits(|l| l.dedup_bytes_per_session = 100_000);
    sim.sup.dedup_per_session = 1_000_000;
    sim.start();
    let c = sim.hello(C1, None);
    let body = vec![7u8; 30_000];
    for seq in 1..=10 {
        sim.call(C1, seq, b"w");
        sim.reply(STORAGE, c, seq, None, &body);
    }
    // Three 30 000-byte replies (plus their entries) fit; the older ones
    // expired, and a retry of one gets Expired, never a second execution.
    assert!(sim.sup.cached_reply_bytes() <= 100_000, "{}", sim.sup.cached_reply_bytes());
    assert_eq!(sim.sup.sessions[&c].cache.len(), 3);
    let acts = sim.call(C1, 1, b"w");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Failed { seq: 1, error: CallError::Expired }]);
    assert!(requests_sent(&acts).is_empty());
    let acts = sim.call(C1, 10, b"w");
    assert_eq!(client_msgs(&acts, C1), [ClientMsg::Reply { seq: 10, body: body.clone() }]);
}

#[test]
fn the_total_byte_budget_takes_from_the_session_caching_the_most() {
    let mut sim = with_limits(|l| {
        l.dedup_bytes_per_session = 1 << 20;
        l.dedup_bytes_total = 200_000;
    });
    sim.sup.dedup_per_session = 1_000_000;
    sim.start();
    let hog = sim.hello(C1, None);
    let small = sim.hello(C2, None);
    sim.call(C2, 1, b"w");
    sim.reply(STORAGE, small, 1, None, b"mine");
    for seq in 1..=20 {
        sim.call(C1, seq, b"w");
        sim.reply(STORAGE, hog, seq, None, &[1u8; 30_000]);
    }
    assert!(sim.sup.cached_reply_bytes() <= 200_000, "{}", sim.sup.cached_reply_bytes());
    // The small session kept its reply.
    let acts = sim.call(C2, 1, b"w");
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Reply { seq: 1, body: b"mine".to_vec() }]);
    // Acknowledging frees, and the figure follows.
    sim.ev(Event::Call { conn: C1, seq: 21, driver: "storage_driver", body: b"w", acked_below: 21 });
    assert!(sim.sup.cached_reply_bytes() < 1_000, "{}", sim.sup.cached_reply_bytes());
}

/// A resumed session's answers reach the client in the order it resends
/// its calls. The answer to call 1 was lost with the old connection and
/// waits in the dedup table; call 2, still running, is answered on the new
/// connection before the client has resent anything. Pushed at once, it
/// would overtake answer 1, and a client that pipelines to one driver would
/// see its answers out of execution order (the campaign's seed 15 failure,
/// seen as a counter that skipped and came back).
#[test]
fn a_resumed_session_gets_its_answers_in_the_order_it_resends_its_calls() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    assert_eq!(requests_sent(&sim.call(C1, 1, b"a")), [1]);
    assert_eq!(requests_sent(&sim.call(C1, 2, b"b")), [2]);
    // Answer 1 goes out on C1, which dies before the client reads it.
    assert_eq!(client_msgs(&sim.reply(STORAGE, c, 1, None, b"1"), C1).len(), 1);
    sim.ev(Event::ClientGone { conn: C1 });
    assert_eq!(sim.hello(C2, Some(c)), c);
    // Call 2 ends before the client's resends arrive: it is not pushed.
    let acts = sim.reply(STORAGE, c, 2, None, b"2");
    assert!(client_msgs(&acts, C2).is_empty(), "answer 2 overtook the resends: {acts:?}");
    // The resends, lowest seq first, get their answers in that order.
    assert_eq!(client_msgs(&sim.call(C2, 1, b"a"), C2), [ClientMsg::Reply { seq: 1, body: b"1".to_vec() }]);
    assert_eq!(client_msgs(&sim.call(C2, 2, b"b"), C2), [ClientMsg::Reply { seq: 2, body: b"2".to_vec() }]);
}

/// A session on C1 with call 1 forwarded; C1 is lost and the session
/// resumed on C2, nothing resent yet.
fn resumed_on_c2_with_call_1_running() -> (Sim, ClientId) {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    assert_eq!(requests_sent(&sim.call(C1, 1, b"a")), [1]);
    sim.ev(Event::ClientGone { conn: C1 });
    assert_eq!(sim.hello(C2, Some(c)), c);
    (sim, c)
}

/// A call still running when its session resumes is answered on the new
/// connection once the client has resent it, as before the resume.
#[test]
fn a_resent_call_that_is_still_running_is_answered_on_the_new_connection() {
    let (mut sim, c) = resumed_on_c2_with_call_1_running();
    let acts = sim.call(C2, 1, b"a");
    assert!(requests_sent(&acts).is_empty() && client_msgs(&acts, C2).is_empty(), "{acts:?}");
    let acts = sim.reply(STORAGE, c, 1, None, b"1");
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Reply { seq: 1, body: b"1".to_vec() }]);
}

/// A failure that is not cached (the call did not run to completion) is
/// withheld like an answer while its call is unclaimed after a resume; the
/// client's resend then finds the call neither running nor answered and is
/// answered as a new call would be, here `DriverFailed` from the stopped
/// driver: definite either way, never silent.
#[test]
fn a_failure_withheld_after_a_resume_is_answered_definitely_on_the_resend() {
    let (mut sim, _) = resumed_on_c2_with_call_1_running();
    sim.sup.control(sim.now, &ControlRequest::Stop { driver: "storage_driver".into() });
    let acts = sim.crash(STORAGE, ExitStatus::Signal(15));
    assert!(client_msgs(&acts, C2).is_empty(), "{acts:?}");
    assert_eq!(client_msgs(&sim.call(C2, 1, b"a"), C2), [ClientMsg::Failed { seq: 1, error: CallError::DriverFailed }]);
}

#[test]
fn bye_forgets_an_idle_session_at_once_without_waiting_for_the_timeout() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"w");
    sim.reply(STORAGE, c, 1, None, b"ok");
    assert!(sim.sup.cached_reply_bytes() > 0);
    sim.ev(Event::Bye { conn: C1 });
    assert_eq!(sim.sup.session_count(), 0, "forgotten at once");
    assert_eq!(sim.sup.cached_reply_bytes(), 0, "its cached replies are freed");
    assert!(!sim.said("forgot 1 client session(s)"), "a goodbye is not an expiry worth a line");
    let acts = sim.ev(Event::Hello { conn: C2, resume: Some(c) });
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Failed { seq: 0, error: CallError::NoSession }]);
}

#[test]
fn bye_with_calls_running_forgets_the_session_when_the_last_one_is_answered() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.start();
    let c = sim.hello(C1, None);
    sim.call(C1, 1, b"w");
    sim.call(C1, 2, b"w");
    sim.ev(Event::Bye { conn: C1 });
    assert_eq!(sim.sup.session_count(), 1, "accepted calls still run");
    // It cannot be resumed meanwhile: the client said it would not.
    let acts = sim.ev(Event::Hello { conn: C2, resume: Some(c) });
    assert_eq!(client_msgs(&acts, C2), [ClientMsg::Failed { seq: 0, error: CallError::NoSession }]);
    let acts = sim.reply(STORAGE, c, 1, None, b"ok");
    assert!(client_msgs(&acts, C1).is_empty(), "no connection to answer on");
    assert_eq!(sim.sup.session_count(), 1);
    sim.reply(STORAGE, c, 2, None, b"ok");
    assert_eq!(sim.sup.session_count(), 0, "forgotten with its last call answered");
    assert_eq!(sim.sup.cached_reply_bytes(), 0);
}

#[test]
fn bye_on_a_connection_without_a_session_or_twice_changes_nothing() {
    let mut sim = Sim::new(vec![driver("storage_driver")]);
    sim.ev(Event::ClientConnected { conn: C1 });
    assert!(sim.ev(Event::Bye { conn: C1 }).is_empty());
    let c = sim.hello(C2, None);
    sim.ev(Event::Bye { conn: C2 });
    sim.ev(Event::Bye { conn: C2 });
    sim.ev(Event::ClientGone { conn: C2 });
    assert_eq!(sim.sup.session_count(), 0);
    // A new session on the same connection after a Bye is an ordinary one.
    let d = sim.hello(C2, None);
    assert_ne!(c, d);
    assert_eq!(sim.sup.session_count(), 1);
}
