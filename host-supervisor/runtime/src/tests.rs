//! The loop, driven in-process over a socketpair: the test plays the supervisor.

use super::*;
use crate::testing::{InProcess, LoopOptions, SupEnd};
use reinc_proto::{ClientId, CrashKind, CrashPoint, DriverFrame, FaultPlan, FromDriver, ToDriver};
use serde::Deserialize;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

/// Test requests for [`Adder`].
#[derive(Serialize, Deserialize, Debug)]
enum Req {
    Add(u64),
    Get,
    /// Completes when the fake interrupt (a pipe) becomes readable.
    AddOnIrq(u64),
    /// Waits for an interrupt that never comes, with a timeout.
    AddOnTimeout(u64),
    Fail,
}

/// Sums numbers; `Add` is an effect.
struct Adder {
    irq: (OwnedFd, OwnedFd),
    pending: u64,
}

impl Adder {
    fn new() -> Self {
        Self { irq: nix::unistd::pipe().unwrap(), pending: 0 }
    }
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Debug, Default)]
struct Sum {
    total: u64,
}

impl Driver for Adder {
    type State = Sum;
    fn describe(&self) -> String {
        "adder".into()
    }
    fn init(&mut self, _ctx: &mut Ctx<'_>, _state: &Sum) -> Result<(), DriverError> {
        Ok(())
    }
    fn handle(
        &mut self,
        _ctx: &mut Ctx<'_>,
        state: &Sum,
        _id: RequestId,
        body: &[u8],
    ) -> Result<Step<Sum>, DriverError> {
        let done = |total, effect| {
            Ok(Step::Done(Completion { state: Sum { total }, reply: postcard::to_allocvec(&total).unwrap(), effect }))
        };
        match postcard::from_bytes::<Req>(body)? {
            Req::Add(n) => done(state.total + n, Effect::Applied),
            Req::Get => done(state.total, Effect::None),
            Req::AddOnIrq(n) => {
                self.pending = n;
                Ok(Step::WaitIrq { timeout: None })
            }
            Req::AddOnTimeout(n) => {
                self.pending = n;
                Ok(Step::WaitIrq { timeout: Some(Duration::from_millis(20)) })
            }
            Req::Fail => Err("device on fire".into()),
        }
    }
    fn on_wake(
        &mut self,
        ctx: &mut Ctx<'_>,
        state: &Sum,
        _id: RequestId,
        wake: Wake,
    ) -> Result<Step<Sum>, DriverError> {
        if wake == Wake::Irq {
            let mut b = [0u8; 1];
            nix::unistd::read(&self.irq.0, &mut b)?;
            ctx.trace(Event::Irq { count: 1, missed: 0 });
        }
        let total = state.total + self.pending;
        let reply = postcard::to_allocvec(&(total, wake == Wake::Timeout)).unwrap();
        Ok(Step::Done(Completion { state: Sum { total }, reply, effect: Effect::Applied }))
    }
    fn irq_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.irq.0.as_fd())
    }
}

fn start<D: Driver + Send + 'static>(driver: D, trace: Option<std::fs::File>, exec_log: Option<PathBuf>) -> InProcess {
    InProcess::start("adder", driver, LoopOptions { trace, exec_log, ..LoopOptions::default() })
}

/// Supervisor-side steps of these tests.
trait Steps {
    fn init(&mut self, generation: u32, checkpoint: Option<&[u8]>);
    fn request(&self, seq: u64, req: &Req);
    fn reply(&mut self, seq: u64) -> (Generation, Option<Sum>, Vec<u8>);
    fn pong(&mut self, nonce: u64) -> Generation;
    fn fatal(&mut self) -> (Generation, String);
}

impl Steps for SupEnd {
    fn init(&mut self, generation: u32, checkpoint: Option<&[u8]>) {
        self.send(&ToDriver::Init { generation: Generation(generation), checkpoint });
        let ready = self.recv(|f| f == DriverFrame { generation: Generation(generation), msg: FromDriver::Ready });
        assert_eq!(ready, Some(true));
    }
    fn request(&self, seq: u64, req: &Req) {
        let body = postcard::to_allocvec(req).unwrap();
        self.send(&ToDriver::Request { id: id(seq), body: &body });
    }
    /// Next frame must be the reply to `seq`: (generation, commit, body) owned.
    fn reply(&mut self, seq: u64) -> (Generation, Option<Sum>, Vec<u8>) {
        self.recv(|f| match f.msg {
            FromDriver::Reply { id: got, commit, body } => {
                assert_eq!(got, id(seq));
                (f.generation, commit.map(|c| postcard::from_bytes(c).unwrap()), body.to_vec())
            }
            other => panic!("expected reply to {seq}, got {other:?}"),
        })
        .expect("driver closed the channel")
    }
    fn pong(&mut self, nonce: u64) -> Generation {
        self.recv(|f| {
            assert_eq!(f.msg, FromDriver::Pong { nonce });
            f.generation
        })
        .expect("driver closed the channel")
    }
    fn fatal(&mut self) -> (Generation, String) {
        self.recv(|f| match f.msg {
            FromDriver::Fatal { reason } => (f.generation, reason.to_owned()),
            other => panic!("expected Fatal, got {other:?}"),
        })
        .expect("driver closed the channel")
    }
}

fn id(seq: u64) -> RequestId {
    RequestId { client: ClientId(3), seq }
}

#[test]
fn init_is_answered_ready_with_the_generation() {
    let mut h = start(Adder::new(), None, None);
    h.init(7, None);
    assert_eq!(h.finish(), Exit::SupervisorGone);
}

#[test]
fn reply_carries_a_commit_only_when_state_changes() {
    let mut h = start(Adder::new(), None, None);
    h.init(1, Some(&postcard::to_allocvec(&Sum { total: 40 }).unwrap()));
    h.request(1, &Req::Add(2));
    let (_, commit, body) = h.reply(1);
    assert_eq!(commit, Some(Sum { total: 42 }));
    assert_eq!(postcard::from_bytes::<u64>(&body).unwrap(), 42);
    h.request(2, &Req::Get);
    let (_, commit, body) = h.reply(2);
    assert_eq!(commit, None);
    assert_eq!(postcard::from_bytes::<u64>(&body).unwrap(), 42);
    h.finish();
}

#[test]
fn pipelined_requests_are_answered_in_arrival_order() {
    let mut h = start(Adder::new(), None, None);
    h.init(1, None);
    for seq in 1..=20 {
        h.request(seq, &Req::Add(seq));
    }
    let mut total = 0;
    for seq in 1..=20 {
        total += seq;
        assert_eq!(h.reply(seq).1, Some(Sum { total }));
    }
    h.finish();
}

#[test]
fn ping_is_answered_while_a_request_waits_for_its_interrupt() {
    let adder = Adder::new();
    let irq_writer = adder.irq.1.try_clone().unwrap();
    let mut h = start(adder, None, None);
    h.init(4, None);
    h.request(1, &Req::AddOnIrq(5));
    h.request(2, &Req::Add(1)); // queued behind the waiting request
    h.send(&ToDriver::Ping { nonce: 99 });
    assert_eq!(h.pong(99), Generation(4), "pong comes first: the request is still waiting");
    nix::unistd::write(&irq_writer, &[1]).unwrap();
    let (_, commit, body) = h.reply(1);
    assert_eq!(commit, Some(Sum { total: 5 }));
    assert_eq!(postcard::from_bytes::<(u64, bool)>(&body).unwrap(), (5, false));
    assert_eq!(h.reply(2).1, Some(Sum { total: 6 }), "the queued request runs after the interrupt");
    h.finish();
}

#[test]
fn interrupt_wait_times_out_into_on_wake() {
    let mut h = start(Adder::new(), None, None);
    h.init(1, None);
    h.request(1, &Req::AddOnTimeout(3));
    let (_, _, body) = h.reply(1);
    assert_eq!(postcard::from_bytes::<(u64, bool)>(&body).unwrap(), (3, true));
    h.finish();
}

#[test]
fn bad_frames_are_ignored_and_the_loop_goes_on() {
    let mut h = start(Adder::new(), None, None);
    h.init(2, None);
    h.raw(&[0xFF, 0xFF, 0xFF]); // garbage
    let mut other_version =
        postcard::to_allocvec(&(reinc_proto::PROTOCOL_VERSION + 1, ToDriver::Ping { nonce: 1 })).unwrap();
    h.raw(&other_version);
    other_version.truncate(1);
    h.raw(&other_version); // truncated
    h.raw(&[]); // empty message: not EOF
    h.raw(&vec![0u8; reinc_proto::MAX_FRAME + 10]); // oversized
    h.send(&ToDriver::Init { generation: Generation(9), checkpoint: None }); // second Init
    h.send(&ToDriver::Ping { nonce: 5 });
    assert_eq!(h.pong(5), Generation(2), "still alive, still generation 2");
    h.finish();
}

#[test]
fn every_frame_is_stamped_with_the_init_generation() {
    let mut h = start(Adder::new(), None, None);
    h.send(&ToDriver::Ping { nonce: 1 });
    assert_eq!(h.pong(1), Generation(0), "before Init");
    h.init(11, None);
    h.send(&ToDriver::Ping { nonce: 2 });
    assert_eq!(h.pong(2), Generation(11));
    h.request(1, &Req::Add(1));
    assert_eq!(h.reply(1).0, Generation(11));
    h.finish();
}

#[test]
fn requests_before_init_wait_for_it() {
    let mut h = start(Adder::new(), None, None);
    h.request(1, &Req::Add(2));
    h.init(3, Some(&postcard::to_allocvec(&Sum { total: 10 }).unwrap()));
    assert_eq!(h.reply(1).1, Some(Sum { total: 12 }));
    h.finish();
}

/// Counts what the runtime asked of it, to show what a standby does before
/// `Init`: a real driver opens its device (`/dev/uioN`, registers, irq) in
/// `init` and nowhere else.
#[derive(Clone, Default)]
struct Probe {
    inits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    handled: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    refuse_init: bool,
}

impl Probe {
    fn counts(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering::SeqCst;
        (self.inits.load(SeqCst), self.handled.load(SeqCst))
    }
}

impl Driver for Probe {
    type State = Sum;
    fn describe(&self) -> String {
        "probe".into()
    }
    fn init(&mut self, _ctx: &mut Ctx<'_>, _state: &Sum) -> Result<(), DriverError> {
        self.inits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.refuse_init { Err("no such device /dev/uio9".into()) } else { Ok(()) }
    }
    fn handle(&mut self, _: &mut Ctx<'_>, state: &Sum, _: RequestId, body: &[u8]) -> Result<Step<Sum>, DriverError> {
        self.handled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let Req::Add(n) = postcard::from_bytes::<Req>(body)? else { return Err("probe only adds".into()) };
        let total = state.total + n;
        Ok(Step::Done(Completion {
            state: Sum { total },
            reply: postcard::to_allocvec(&total)?,
            effect: Effect::Applied,
        }))
    }
}

fn standby(probe: &Probe, launched_for: u32) -> InProcess {
    let opts = LoopOptions { generation: Some(Generation(launched_for)), ..LoopOptions::default() };
    InProcess::start("probe", probe.clone(), opts)
}

#[test]
fn a_standby_answers_pings_with_its_launch_generation_and_opens_nothing_before_init() {
    let probe = Probe::default();
    let mut h = standby(&probe, 4);
    for nonce in 1..=3 {
        h.send(&ToDriver::Ping { nonce });
        assert_eq!(h.pong(nonce), Generation(4), "a standby's pongs name the generation it waits to serve");
    }
    assert_eq!(probe.counts(), (0, 0), "no device opened, no request handled before Init");
    h.init(4, None);
    assert_eq!(probe.counts(), (1, 0));
    h.finish();
}

#[test]
fn init_and_the_replay_sent_in_one_burst_are_answered_ready_then_in_order() {
    let probe = Probe::default();
    let mut h = standby(&probe, 2);
    let checkpoint = postcard::to_allocvec(&Sum { total: 100 }).unwrap();
    // No wait for Ready: Init and the replayed window back to back.
    h.send(&ToDriver::Init { generation: Generation(2), checkpoint: Some(&checkpoint) });
    for seq in 1..=4 {
        h.request(seq, &Req::Add(seq));
    }
    let first = h.recv(|f| f.clone() == DriverFrame { generation: Generation(2), msg: FromDriver::Ready });
    assert_eq!(first, Some(true), "Ready comes before any reply");
    let mut total = 100;
    for seq in 1..=4 {
        total += seq;
        let (generation, commit, _) = h.reply(seq);
        assert_eq!(
            (generation, commit),
            (Generation(2), Some(Sum { total })),
            "reply {seq} in order, on the checkpoint"
        );
    }
    h.finish();
}

#[test]
fn a_failed_init_starts_none_of_the_requests_sent_with_it() {
    let probe = Probe { refuse_init: true, ..Probe::default() };
    let mut h = standby(&probe, 3);
    h.send(&ToDriver::Init { generation: Generation(3), checkpoint: None });
    h.request(1, &Req::Add(1));
    h.request(2, &Req::Add(2));
    let (generation, reason) = h.fatal();
    assert_eq!(generation, Generation(3));
    assert!(reason.contains("/dev/uio9"), "{reason}");
    assert!(matches!(h.join().1.unwrap(), Exit::Failed(_)));
    assert_eq!(probe.counts(), (1, 0), "the burst's requests stay unexecuted, for the next instance's replay");
}

#[test]
fn init_decides_the_generation_whatever_the_standby_was_launched_for() {
    let probe = Probe::default();
    let mut h = standby(&probe, 5);
    h.init(6, None);
    h.send(&ToDriver::Ping { nonce: 9 });
    assert_eq!(h.pong(9), Generation(6));
    h.request(1, &Req::Add(1));
    assert_eq!(h.reply(1).0, Generation(6));
    h.finish();
}

#[test]
fn shutdown_finishes_the_current_request_then_exits() {
    let adder = Adder::new();
    let irq_writer = adder.irq.1.try_clone().unwrap();
    let mut h = start(adder, None, None);
    h.init(1, None);
    h.request(1, &Req::AddOnIrq(1));
    h.request(2, &Req::Add(1));
    h.send(&ToDriver::Shutdown);
    h.send(&ToDriver::Ping { nonce: 3 });
    h.pong(3);
    nix::unistd::write(&irq_writer, &[1]).unwrap();
    h.reply(1);
    let (mut end, exit) = h.join();
    assert_eq!(exit.unwrap(), Exit::Shutdown);
    assert_eq!(end.recv(|_| ()), None, "request 2 is left to the supervisor");
}

#[test]
fn corrupt_checkpoint_is_reported_as_fatal() {
    let mut h = start(Adder::new(), None, None);
    h.send(&ToDriver::Init { generation: Generation(5), checkpoint: Some(&[0xFF; 11]) });
    let (generation, reason) = h.fatal();
    assert_eq!(generation, Generation(5));
    assert!(reason.contains("driver adder") && reason.contains("checkpoint of 11 bytes"), "{reason}");
    assert!(matches!(h.join().1.unwrap(), Exit::Failed(_)));
}

#[test]
fn driver_error_during_a_request_is_fatal_and_names_the_request() {
    let mut h = start(Adder::new(), None, None);
    h.init(1, None);
    h.request(8, &Req::Fail);
    let (_, reason) = h.fatal();
    assert!(reason.contains("c3:8") && reason.contains("device on fire"), "{reason}");
    assert!(matches!(h.join().1.unwrap(), Exit::Failed(_)));
}

#[test]
fn a_driver_that_failed_to_build_answers_init_with_fatal() {
    let mut h = start(Refused("--file is required".into()), None, None);
    h.send(&ToDriver::Init { generation: Generation(1), checkpoint: None });
    let (_, reason) = h.fatal();
    assert!(reason.contains("--file is required"), "{reason}");
    assert!(matches!(h.join().1.unwrap(), Exit::Failed(_)));
}

#[test]
fn injected_panic_after_effect_logs_the_execution_but_sends_no_reply() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("exec.log");
    let mut h = start(Adder::new(), None, Some(log.clone()));
    h.init(6, None);
    h.request(1, &Req::Add(1));
    h.reply(1);
    let plan = FaultPlan { point: CrashPoint::AfterEffect, on_request: 1, kind: CrashKind::Panic };
    h.send(&ToDriver::Inject(plan));
    h.request(2, &Req::Add(1));
    let (mut end, exit) = h.join();
    assert!(exit.is_err(), "the runtime thread panicked");
    assert_eq!(end.recv(|_| ()), None, "no reply to request 2");
    assert_eq!(std::fs::read_to_string(log).unwrap(), "6 3 1\n6 3 2\n");
}

#[test]
fn trace_memfd_holds_the_instance_history_after_it_ends() {
    // What the supervisor hands out: a sealed memfd, written through a mapping.
    let pool = reinc_uio::SharedPool::create("trace", reinc_ringbuf::shared::RING_BYTES).unwrap();
    let memfd = std::fs::File::from(pool.fd().try_clone_to_owned().unwrap());
    check_trace_history(memfd);
}

#[test]
fn trace_file_that_cannot_be_mapped_gets_the_same_history_by_pwrite() {
    let file = tempfile::tempfile().unwrap();
    file.set_len(reinc_ringbuf::shared::RING_BYTES as u64).unwrap();
    check_trace_history(file);
}

fn check_trace_history(file: std::fs::File) {
    let mut h = start(Adder::new(), Some(file.try_clone().unwrap()), None);
    h.init(2, None);
    for n in 0..3 {
        h.send(&ToDriver::Ping { nonce: n });
        h.pong(n);
    }
    h.request(1, &Req::Add(1));
    h.reply(1);
    h.finish();
    let mut area = vec![0u8; reinc_ringbuf::shared::RING_BYTES];
    nix::sys::uio::pread(&file, &mut area, 0).unwrap();
    let got: Vec<(Event, u32)> = reinc_ringbuf::shared::records(&area).map(|r| (r.event, r.count)).collect();
    let want = [
        (Event::Init { generation: Generation(2), restored: false }, 1),
        (Event::Ready, 1),
        (Event::Ping, 3),
        (Event::RequestStart { id: id(1), nth: 1 }, 1),
        (Event::Effect { id: id(1) }, 1),
        (Event::Reply { id: id(1), committed: true }, 1),
        (Event::Eof, 1),
    ];
    assert_eq!(got[0].0, Event::Start { pid: std::process::id() });
    assert_eq!(&got[1..], &want);
}

#[test]
fn already_applied_effects_are_traced_as_replays() {
    struct Replayer;
    impl Driver for Replayer {
        type State = u8;
        fn describe(&self) -> String {
            String::new()
        }
        fn init(&mut self, _: &mut Ctx<'_>, _: &u8) -> Result<(), DriverError> {
            Ok(())
        }
        fn handle(&mut self, _: &mut Ctx<'_>, s: &u8, _: RequestId, _: &[u8]) -> Result<Step<u8>, DriverError> {
            Ok(Step::Done(Completion { state: s + 1, reply: vec![], effect: Effect::AlreadyApplied }))
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("exec.log");
    std::fs::write(&log, "1 3 1\n").unwrap();
    let mut h = start(Replayer, None, Some(log.clone()));
    h.init(2, None);
    h.send(&ToDriver::Request { id: id(1), body: &[] });
    h.recv(|_| ());
    h.send(&ToDriver::Request { id: id(2), body: &[] });
    h.recv(|_| ());
    h.finish();
    assert_eq!(std::fs::read_to_string(log).unwrap(), "1 3 1\n2 3 2\n", "logged once per request id");
}

#[test]
fn journald_is_recognised_by_the_device_and_inode_of_stderr_only() {
    use std::os::fd::AsFd;
    let st = nix::sys::stat::fstat(std::io::stderr().as_fd()).unwrap();
    assert!(crate::stderr_is_journal(Some(&format!("{}:{}", st.st_dev, st.st_ino))));
    // Inherited by a process whose stderr goes elsewhere: not the journal.
    assert!(!crate::stderr_is_journal(Some(&format!("{}:{}", st.st_dev, st.st_ino + 1))));
    assert!(!crate::stderr_is_journal(Some("garbage")));
    assert!(!crate::stderr_is_journal(None));
}
