//! The supervisor's bookkeeping for one driver task, without any hardware:
//! its request FIFO (`reinc-queue`), its restart policy (`reinc-policy`),
//! its committed checkpoint, its generation and its armed fault plan.
//!
//! The kernel in `main.rs` calls these methods from its trap handlers and
//! does the parts that need the CPU (resetting a task's stack, copying
//! bodies into a task's buffer); everything that decides *what* happens is
//! here and unit-tested on the host. The rules are the Linux supervisor's:
//! commit-with-reply, replay of every request without a reply, in order,
//! after `Init { checkpoint }`, backoff and quarantine from `reinc-policy`,
//! and a definite `DriverFailed` for what is pending at quarantine.

use reinc_policy::{BackoffConfig, BackoffRestart, FaultAction, FaultPolicy, Millis, PolicyError};
use reinc_proto::{CrashKind, CrashPoint, FaultPlan, Generation, RequestId};
use reinc_queue::{ArrayQueue, CompleteError, Entry, QueueError};

/// Depth of each driver's FIFO of accepted requests.
pub const QUEUE_DEPTH: usize = 8;
/// Largest request or reply body (postcard). The biggest one used,
/// `TimerReply::Status`, takes about 60 bytes.
pub const BODY_MAX: usize = 64;
/// Largest checkpoint (a postcard `GpioState` takes at most ~110 bytes).
pub const CHECKPOINT_MAX: usize = 192;

/// A postcard-encoded request or reply body, inline (no allocator).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Body {
    len: u8,
    bytes: [u8; BODY_MAX],
}

impl core::fmt::Debug for Body {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Body({:02x?})", self.as_slice())
    }
}

impl Body {
    /// A copy of `bytes`, or `None` if it is longer than [`BODY_MAX`].
    #[must_use]
    pub fn new(bytes: &[u8]) -> Option<Body> {
        if bytes.len() > BODY_MAX {
            return None;
        }
        let mut b = Body { len: bytes.len() as u8, bytes: [0; BODY_MAX] };
        b.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(b)
    }

    /// The bytes.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The last committed state of a driver: postcard bytes, as on Linux.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    len: u16,
    bytes: [u8; CHECKPOINT_MAX],
}

impl core::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Checkpoint({} bytes)", self.len)
    }
}

impl Checkpoint {
    /// The bytes.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Where a driver is in its life (the states of CONTRACTS.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Launched, restoring its checkpoint; not yet `Ready`.
    Starting,
    /// Serving requests since this time.
    Running {
        /// When it became ready.
        since: Millis,
    },
    /// Failed; the next instance starts at `until`.
    BackingOff {
        /// When to launch again.
        until: Millis,
    },
    /// Too many restarts in the window: no instance until revived.
    Quarantined,
}

/// Why a request was not accepted. Each is a definite answer to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The FIFO is full (backpressure, like `Busy` on Linux).
    Busy,
    /// The driver is quarantined (`DriverFailed`).
    DriverFailed,
    /// The same id is queued already.
    Duplicate,
    /// The body is longer than [`BODY_MAX`].
    TooLarge,
}

/// How an injected fault kills a task: one of `reinc-proto`'s kinds (the
/// plans `drvctl inject` takes), or a stack overflow into the guard page,
/// which `CrashKind` has no name for because no Linux driver needs one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// As a [`FaultPlan`] says.
    Plan(CrashKind),
    /// Recurse until the stack runs into its guard page.
    StackOverflow,
}

impl FaultKind {
    /// The kind's name in console lines (`segv`, …, `stack-overflow`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Plan(k) => k.name(),
            FaultKind::StackOverflow => "stack-overflow",
        }
    }
}

/// A request handed to the driver task, with the fault to inject while
/// handling it, if an armed plan says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The request's id.
    pub id: RequestId,
    /// Its body.
    pub body: Body,
    /// Crash at this point, this way (an armed [`FaultPlan`] fired).
    pub crash: Option<(CrashPoint, FaultKind)>,
    /// True when this is a replay: the request was forwarded to an earlier
    /// instance that died before replying.
    pub replay: bool,
}

/// What a new instance starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// Its generation.
    pub generation: Generation,
    /// The committed state to restore (`None`: fresh start).
    pub checkpoint: Option<Checkpoint>,
    /// Crash while restoring (a plan at [`CrashPoint::Init`]).
    pub crash_at_init: Option<FaultKind>,
}

/// What the supervisor does about a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Launch again once `delay` has passed.
    Restart {
        /// The policy's delay (zero for the first restart).
        delay: Millis,
        /// 0-based restart count since the last healthy run.
        attempt: u32,
        /// Requests that will be replayed to the next instance.
        replay: usize,
    },
    /// Quarantined: call [`Supervised::drain_failed`] and answer each
    /// entry `DriverFailed`.
    Quarantine {
        /// Restarts that fell in the policy's window.
        restarts_in_window: usize,
    },
}

/// A fault plan and whether it is re-armed in every new instance (the
/// Linux driver's `fault = "…"` config key) or fires once (`drvctl inject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Armed {
    point: CrashPoint,
    on_request: u32,
    kind: FaultKind,
    every_instance: bool,
    /// Requests delivered since the plan was armed or the instance launched.
    seen: u32,
    fired: bool,
}

/// One supervised driver task.
#[derive(Debug)]
pub struct Supervised {
    name: &'static str,
    queue: ArrayQueue<Body, QUEUE_DEPTH>,
    policy: BackoffRestart,
    lifecycle: Lifecycle,
    generation: Generation,
    checkpoint: Option<Checkpoint>,
    launched: Millis,
    /// Entries forwarded to the current instance were queued before it
    /// launched (they are replays), up to this many from the head.
    replays_left: usize,
    armed: Option<Armed>,
    restarts: u32,
}

impl Supervised {
    /// A driver with no instance yet, supervised by `config`.
    ///
    /// # Errors
    /// The policy figures are out of range.
    pub fn new(name: &'static str, config: BackoffConfig) -> Result<Supervised, PolicyError> {
        Ok(Supervised {
            name,
            queue: ArrayQueue::new_const(),
            policy: BackoffRestart::new(config)?,
            lifecycle: Lifecycle::BackingOff { until: Millis::ZERO },
            generation: Generation(0),
            checkpoint: None,
            launched: Millis::ZERO,
            replays_left: 0,
            armed: None,
            restarts: 0,
        })
    }

    /// The driver's name (`gpio`, `timer`).
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Where it is in its life.
    #[must_use]
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
    }

    /// The current (or last) instance's generation.
    #[must_use]
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The committed state.
    #[must_use]
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    /// Accepted requests without a reply.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Restarts so far (all lifetimes).
    #[must_use]
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// The oldest request forwarded to the current instance, if any.
    #[must_use]
    pub fn in_flight(&self) -> Option<RequestId> {
        if self.queue.head_in_flight() { self.queue.head().map(|e| e.id) } else { None }
    }

    /// The restart policy (for its figures and window).
    #[must_use]
    pub fn policy(&self) -> &BackoffRestart {
        &self.policy
    }

    /// A client's request: queued at the tail, or refused with a definite
    /// reason (nothing is silently dropped).
    ///
    /// # Errors
    /// [`Refused`] saying why.
    pub fn accept(&mut self, id: RequestId, body: &[u8], now: Millis) -> Result<(), Refused> {
        if self.lifecycle == Lifecycle::Quarantined {
            return Err(Refused::DriverFailed);
        }
        let body = Body::new(body).ok_or(Refused::TooLarge)?;
        self.queue.push(id, body, now.0).map_err(|e| match e {
            QueueError::Full { .. } => Refused::Busy,
            QueueError::Duplicate { .. } => Refused::Duplicate,
        })
    }

    /// Arms a fault plan: the instance crashes at `plan.point` of the
    /// `plan.on_request`-th request it receives from now on; with
    /// `every_instance`, every later instance does the same (a storm).
    pub fn inject(&mut self, plan: FaultPlan, every_instance: bool) {
        self.arm(plan.point, plan.on_request, FaultKind::Plan(plan.kind), every_instance);
    }

    /// Arms a stack overflow at `point` of the `on_request`-th request
    /// (the firmware's own fault, which a [`FaultPlan`] cannot name).
    pub fn inject_stack_overflow(&mut self, point: CrashPoint, on_request: u32, every_instance: bool) {
        self.arm(point, on_request, FaultKind::StackOverflow, every_instance);
    }

    fn arm(&mut self, point: CrashPoint, on_request: u32, kind: FaultKind, every_instance: bool) {
        self.armed = Some(Armed { point, on_request, kind, every_instance, seen: 0, fired: false });
    }

    /// Disarms any fault plan.
    pub fn disarm(&mut self) {
        self.armed = None;
    }

    /// True when a backing-off driver's delay has passed at `now`.
    #[must_use]
    pub fn due(&self, now: Millis) -> bool {
        matches!(self.lifecycle, Lifecycle::BackingOff { until } if until <= now)
    }

    /// Starts a new instance: the next generation, from the committed
    /// checkpoint. Every queued request will be delivered again, in order.
    pub fn launch(&mut self, now: Millis) -> Launch {
        if self.generation.0 > 0 {
            self.restarts += 1;
        }
        self.generation = self.generation.next();
        self.launched = now;
        self.lifecycle = Lifecycle::Starting;
        self.replays_left = self.queue.rewind();
        let mut crash_at_init = None;
        if let Some(a) = &mut self.armed {
            a.seen = 0;
            if a.point == CrashPoint::Init && !a.fired {
                a.fired = true;
                crash_at_init = Some(a.kind);
            }
        }
        Launch { generation: self.generation, checkpoint: self.checkpoint, crash_at_init }
    }

    /// The instance restored its state and serves requests. Returns how
    /// many queued requests it is about to be given again (the replay).
    pub fn ready(&mut self, now: Millis) -> usize {
        self.lifecycle = Lifecycle::Running { since: now };
        self.replays_left
    }

    /// The next request for a running instance that has none in flight
    /// (the window is one request: a task handles one at a time).
    pub fn next_request(&mut self) -> Option<Delivery> {
        if !matches!(self.lifecycle, Lifecycle::Running { .. }) {
            return None;
        }
        let entry = self.queue.forward_next(1)?;
        let (id, body) = (entry.id, entry.payload);
        let replay = self.replays_left > 0;
        self.replays_left = self.replays_left.saturating_sub(1);
        let mut crash = None;
        if let Some(a) = &mut self.armed
            && a.point != CrashPoint::Init
            && !a.fired
        {
            a.seen += 1;
            if a.seen == a.on_request {
                a.fired = true;
                crash = Some((a.point, a.kind));
            }
        }
        Some(Delivery { id, body, crash, replay })
    }

    /// The instance answered `id` with `commit` as its new state: the
    /// commit is applied *before* the reply goes to the client
    /// (commit-with-reply), and the request leaves the FIFO.
    ///
    /// # Errors
    /// [`ReplyError`] when `id` is not the request in flight or the commit
    /// does not fit; the queue and the checkpoint are unchanged then.
    pub fn reply(&mut self, id: RequestId, commit: &[u8]) -> Result<Entry<Body>, ReplyError> {
        if commit.len() > CHECKPOINT_MAX {
            return Err(ReplyError::CheckpointTooLarge { len: commit.len() });
        }
        let entry = self.queue.complete(id).map_err(ReplyError::NotInFlight)?;
        let mut cp = Checkpoint { len: commit.len() as u16, bytes: [0; CHECKPOINT_MAX] };
        cp.bytes[..commit.len()].copy_from_slice(commit);
        self.checkpoint = Some(cp);
        Ok(entry)
    }

    /// The instance faulted at `now`. Counts the fault against the request
    /// in flight, rewinds the FIFO for replay, and asks the policy.
    /// `random` feeds the policy's jitter.
    pub fn fault(&mut self, now: Millis, random: u32) -> Outcome {
        if self.queue.head_in_flight() {
            self.queue.blame_head();
        }
        let replay = self.queue.rewind();
        if let Some(a) = self.armed {
            if a.every_instance {
                self.armed = Some(Armed { fired: false, seen: 0, ..a });
            } else if a.fired {
                self.armed = None;
            }
        }
        let ran_for = match self.lifecycle {
            Lifecycle::Running { .. } | Lifecycle::Starting => now.since(self.launched),
            _ => Millis::ZERO,
        };
        match self.policy.on_fault(now, ran_for, random) {
            FaultAction::Restart { delay, attempt } => {
                self.lifecycle = Lifecycle::BackingOff { until: now.plus(delay) };
                Outcome::Restart { delay, attempt, replay }
            }
            FaultAction::Quarantine => {
                self.lifecycle = Lifecycle::Quarantined;
                Outcome::Quarantine { restarts_in_window: self.policy.restarts_in_window(now) }
            }
        }
    }

    /// After a quarantine: every pending request, oldest first, to be
    /// answered `DriverFailed`.
    pub fn drain_failed(&mut self) -> impl Iterator<Item = Entry<Body>> + '_ {
        self.queue.drain()
    }

    /// The operator's revive: forget the restart history, disarm any fault
    /// plan, and make the driver due for a launch at once.
    pub fn revive(&mut self) {
        self.policy.reset();
        self.armed = None;
        self.lifecycle = Lifecycle::BackingOff { until: Millis::ZERO };
    }
}

impl Supervised {
    /// When a task that last trapped into the kernel at `last_trap` counts
    /// as hung, if it can hang now: it must be starting (it owes `Ready`) or
    /// hold a request in flight, and be runnable (a task blocked in the
    /// kernel, such as the timer task waiting for its interrupt, is waiting,
    /// not hung). The firmware's heartbeat: a task that traps into the
    /// kernel at least every `limit` is alive, like a Linux driver that
    /// answers its pings.
    #[must_use]
    pub fn hang_deadline(&self, runnable: bool, last_trap: Millis, limit: Millis) -> Option<Millis> {
        let owes = match self.lifecycle {
            Lifecycle::Starting => true,
            Lifecycle::Running { .. } => self.queue.head_in_flight(),
            Lifecycle::BackingOff { .. } | Lifecycle::Quarantined => false,
        };
        (owes && runnable).then(|| last_trap.plus(limit))
    }
}

/// A reply the supervisor could not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// Not the request in flight.
    NotInFlight(CompleteError),
    /// The commit is larger than [`CHECKPOINT_MAX`].
    CheckpointTooLarge {
        /// Its length.
        len: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use reinc_proto::ClientId;

    const CONFIG: BackoffConfig = BackoffConfig {
        base: Millis(10),
        cap: Millis(80),
        jitter_percent: 0,
        healthy_after: Millis(500),
        max_restarts: 3,
        window: Millis(1000),
    };

    fn id(seq: u64) -> RequestId {
        RequestId { client: ClientId(1), seq }
    }

    fn running(now: u64) -> Supervised {
        let mut s = Supervised::new("gpio", CONFIG).unwrap();
        assert!(s.due(Millis(now)), "a new driver is due for its first launch");
        let l = s.launch(Millis(now));
        assert_eq!((l.generation, l.checkpoint), (Generation(1), None));
        assert_eq!(s.ready(Millis(now)), 0);
        s
    }

    #[test]
    fn reply_commits_the_checkpoint_and_removes_the_request() {
        let mut s = running(0);
        s.accept(id(1), b"req", Millis(1)).unwrap();
        let d = s.next_request().unwrap();
        assert_eq!((d.id, d.body.as_slice(), d.crash, d.replay), (id(1), &b"req"[..], None, false));
        assert_eq!(s.next_request(), None, "one request in flight at a time");
        s.reply(id(1), b"state-1").unwrap();
        assert_eq!(s.checkpoint().unwrap().as_slice(), b"state-1");
        assert_eq!(s.queued(), 0);
    }

    #[test]
    fn reply_for_another_request_changes_nothing() {
        let mut s = running(0);
        s.accept(id(1), b"a", Millis(1)).unwrap();
        s.next_request().unwrap();
        assert!(matches!(s.reply(id(2), b"x"), Err(ReplyError::NotInFlight(_))));
        assert_eq!((s.queued(), s.checkpoint()), (1, None));
    }

    #[test]
    fn fault_before_reply_replays_the_same_request_to_the_next_generation_from_the_checkpoint() {
        let mut s = running(0);
        s.accept(id(1), b"one", Millis(1)).unwrap();
        s.next_request().unwrap();
        s.reply(id(1), b"committed").unwrap();
        s.accept(id(2), b"two", Millis(2)).unwrap();
        s.accept(id(3), b"three", Millis(2)).unwrap();
        assert_eq!(s.next_request().unwrap().id, id(2));
        assert_eq!(s.in_flight(), Some(id(2)));
        let out = s.fault(Millis(3), 0);
        assert_eq!(out, Outcome::Restart { delay: Millis::ZERO, attempt: 0, replay: 2 });
        assert!(s.due(Millis(3)), "the first restart is immediate");
        let l = s.launch(Millis(3));
        assert_eq!(l.generation, Generation(2));
        assert_eq!(l.checkpoint.unwrap().as_slice(), b"committed", "restart from the committed state");
        assert_eq!(s.next_request(), None, "nothing is delivered before Ready");
        assert_eq!(s.ready(Millis(4)), 2);
        let d = s.next_request().unwrap();
        assert_eq!((d.id, d.body.as_slice(), d.replay), (id(2), &b"two"[..], true));
        s.reply(id(2), b"c2").unwrap();
        let d = s.next_request().unwrap();
        assert_eq!((d.id, d.replay), (id(3), true), "queued before the restart, so replayed in order");
        assert_eq!(s.restarts(), 1);
    }

    #[test]
    fn restarts_back_off_exponentially_and_a_storm_quarantines_and_fails_what_is_pending() {
        let mut s = running(0);
        s.accept(id(1), b"x", Millis(0)).unwrap();
        let mut delays = [Millis::ZERO; 3];
        for (i, d) in delays.iter_mut().enumerate() {
            let now = Millis(10 * i as u64);
            let Outcome::Restart { delay, attempt, replay } = s.fault(now, 0) else { panic!("restart {i}") };
            assert_eq!((attempt, replay), (i as u32, 1));
            *d = delay;
            assert!(!s.due(now.plus(delay).since(Millis(1))) || delay == Millis::ZERO);
            s.launch(now.plus(delay));
            s.ready(now.plus(delay));
        }
        assert_eq!(delays, [Millis(0), Millis(10), Millis(20)]);
        let out = s.fault(Millis(40), 0);
        assert_eq!(out, Outcome::Quarantine { restarts_in_window: 3 });
        assert_eq!(s.lifecycle(), Lifecycle::Quarantined);
        let failed: heapless::Vec<RequestId, 4> = s.drain_failed().map(|e| e.id).collect();
        assert_eq!(&failed[..], &[id(1)]);
        assert_eq!(s.accept(id(2), b"y", Millis(41)), Err(Refused::DriverFailed));
        assert!(!s.due(Millis(10_000)), "quarantine lasts until revived");
    }

    #[test]
    fn a_healthy_run_makes_the_next_restart_immediate_again() {
        let mut s = running(0);
        assert!(matches!(s.fault(Millis(0), 0), Outcome::Restart { attempt: 0, .. }));
        s.launch(Millis(0));
        s.ready(Millis(0));
        assert!(matches!(s.fault(Millis(5), 0), Outcome::Restart { attempt: 1, .. }));
        s.launch(Millis(15));
        s.ready(Millis(15));
        let out = s.fault(Millis(2000), 0);
        assert_eq!(out, Outcome::Restart { delay: Millis::ZERO, attempt: 0, replay: 0 });
    }

    #[test]
    fn revive_restarts_a_quarantined_driver_from_its_checkpoint() {
        let mut s = running(0);
        s.accept(id(1), b"a", Millis(0)).unwrap();
        s.next_request().unwrap();
        s.reply(id(1), b"kept").unwrap();
        for t in 0..4 {
            s.fault(Millis(t), 0);
            if s.lifecycle() != Lifecycle::Quarantined {
                s.launch(Millis(t));
                s.ready(Millis(t));
            }
        }
        assert_eq!(s.lifecycle(), Lifecycle::Quarantined);
        s.revive();
        assert!(s.due(Millis(5)));
        let l = s.launch(Millis(5));
        assert_eq!(l.checkpoint.unwrap().as_slice(), b"kept");
        s.ready(Millis(5));
        s.accept(id(2), b"b", Millis(6)).unwrap();
        assert_eq!(s.next_request().unwrap().id, id(2));
    }

    #[test]
    fn a_one_shot_plan_fires_once_and_an_every_instance_plan_fires_in_each() {
        let plan = FaultPlan { point: CrashPoint::AfterEffect, on_request: 2, kind: CrashKind::Panic };
        let mut s = running(0);
        s.inject(plan, false);
        for n in 1..=3 {
            s.accept(id(n), b"r", Millis(0)).unwrap();
        }
        assert_eq!(s.next_request().unwrap().crash, None);
        s.reply(id(1), b"c").unwrap();
        assert_eq!(s.next_request().unwrap().crash, Some((CrashPoint::AfterEffect, FaultKind::Plan(CrashKind::Panic))));
        s.fault(Millis(1), 0);
        s.launch(Millis(1));
        s.ready(Millis(1));
        assert_eq!(s.next_request().unwrap().crash, None, "the replay of the crashing request runs clean");
        s.reply(id(2), b"c").unwrap();
        assert_eq!(s.next_request().unwrap().crash, None, "fired once");

        let storm = FaultPlan { point: CrashPoint::BeforeEffect, on_request: 1, kind: CrashKind::Segv };
        let mut s = running(0);
        s.inject(storm, true);
        s.accept(id(1), b"r", Millis(0)).unwrap();
        for g in 0..2 {
            assert!(s.next_request().unwrap().crash.is_some(), "instance {g} crashes too");
            s.fault(Millis(g), 0);
            s.launch(Millis(g + 100));
            s.ready(Millis(g + 100));
        }
        s.disarm();
        assert_eq!(s.next_request().unwrap().crash, None);
    }

    #[test]
    fn a_stack_overflow_is_armed_like_a_plan() {
        let mut s = running(0);
        s.inject_stack_overflow(CrashPoint::BeforeEffect, 2, false);
        s.accept(id(1), b"a", Millis(0)).unwrap();
        assert_eq!(s.next_request().unwrap().crash, None);
        s.reply(id(1), b"c").unwrap();
        s.accept(id(2), b"b", Millis(0)).unwrap();
        assert_eq!(s.next_request().unwrap().crash, Some((CrashPoint::BeforeEffect, FaultKind::StackOverflow)));
        assert_eq!(FaultKind::StackOverflow.name(), "stack-overflow");
        assert_eq!(FaultKind::Plan(CrashKind::Segv).name(), "segv");
    }

    #[test]
    fn a_plan_at_init_crashes_the_next_launch() {
        let mut s = running(0);
        s.inject(FaultPlan { point: CrashPoint::Init, on_request: 1, kind: CrashKind::Abrt }, false);
        s.fault(Millis(1), 0);
        assert_eq!(s.launch(Millis(1)).crash_at_init, Some(FaultKind::Plan(CrashKind::Abrt)));
        s.fault(Millis(2), 0);
        assert_eq!(s.launch(Millis(12)).crash_at_init, None);
    }

    #[test]
    fn only_a_runnable_task_that_owes_an_answer_can_hang() {
        let limit = Millis(50);
        let mut s = Supervised::new("gpio", CONFIG).unwrap();
        assert_eq!(s.hang_deadline(true, Millis(0), limit), None, "not launched");
        s.launch(Millis(0));
        assert_eq!(s.hang_deadline(true, Millis(3), limit), Some(Millis(53)), "owes Ready");
        s.ready(Millis(4));
        assert_eq!(s.hang_deadline(true, Millis(4), limit), None, "idle, nothing in flight");
        s.accept(id(1), b"r", Millis(5)).unwrap();
        s.next_request().unwrap();
        assert_eq!(s.hang_deadline(true, Millis(6), limit), Some(Millis(56)), "holds a request");
        assert_eq!(s.hang_deadline(false, Millis(6), limit), None, "blocked in the kernel: waiting, not hung");
        s.fault(Millis(60), 0);
        assert_eq!(s.hang_deadline(true, Millis(60), limit), None, "down");
    }

    #[test]
    fn oversized_and_duplicate_and_overflowing_requests_are_refused_with_a_reason() {
        let mut s = running(0);
        assert_eq!(s.accept(id(1), &[0; BODY_MAX + 1], Millis(0)), Err(Refused::TooLarge));
        s.accept(id(1), b"a", Millis(0)).unwrap();
        assert_eq!(s.accept(id(1), b"a", Millis(0)), Err(Refused::Duplicate));
        for n in 2..=QUEUE_DEPTH as u64 {
            s.accept(id(n), b"a", Millis(0)).unwrap();
        }
        assert_eq!(s.accept(id(99), b"a", Millis(0)), Err(Refused::Busy));
        s.next_request().unwrap();
        assert_eq!(
            s.reply(id(1), &[0; CHECKPOINT_MAX + 1]),
            Err(ReplyError::CheckpointTooLarge { len: CHECKPOINT_MAX + 1 })
        );
    }
}
