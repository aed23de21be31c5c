//! The event loop.

use crate::exec_log::ExecLog;
use crate::fault::{Faults, die};
use crate::pools::Pools;
use crate::trace::Tracer;
use crate::{Completion, Ctx, Driver, Effect, Launch, Step, Wake};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{MsgFlags, send};
use reinc_proto::{
    CrashPoint, DriverFrame, FaultPlan, FromDriver, Generation, MAX_CHECKPOINT, MAX_FRAME, RequestId, ToDriver, decode,
    encode,
};
use reinc_ringbuf::Event;
use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// What the loop needs from the outside world (normally from [`Launch`]).
#[derive(Debug)]
pub struct Config {
    /// The driver's configured name (for logs and errors).
    pub name: String,
    /// The IPC channel, a `SOCK_SEQPACKET` socket.
    pub ipc: OwnedFd,
    /// The trace memfd, if any.
    pub trace: Option<File>,
    /// A fault plan armed at launch.
    pub fault: Option<FaultPlan>,
    /// The exec log path (tests).
    pub exec_log: Option<PathBuf>,
    /// SIGTERM/SIGINT, blocked and delivered here: they mean `Shutdown`
    /// (finish the current request, exit 0) instead of dying mid-request.
    pub stop_signals: Option<SignalFd>,
}

impl From<Launch> for Config {
    fn from(l: Launch) -> Self {
        Self { name: l.name, ipc: l.ipc, trace: l.trace, fault: l.fault, exec_log: l.exec_log, stop_signals: None }
    }
}

/// Blocks SIGTERM, SIGINT, SIGSEGV and SIGBUS in the calling thread (call it
/// before any other thread exists, so the whole process inherits the mask)
/// and returns a signalfd that receives them, for [`Config::stop_signals`].
///
/// SIGTERM/SIGINT mean an orderly stop. SIGSEGV/SIGBUS are here because std
/// installs a handler for them (stack-overflow detection) that swallows the
/// first one *sent* by `kill` (it restores the default action and returns),
/// so an operator's `kill -SEGV` would otherwise be ignored once. Blocked, a
/// sent one is read from the signalfd and the driver dies by it; a real
/// fault is unaffected, because the kernel forces the default action for a
/// synchronous fault whose signal is blocked.
///
/// # Errors
/// The mask or the signalfd could not be set up.
pub fn stop_signals() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGSEGV, Signal::SIGBUS] {
        mask.add(sig);
    }
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// Why the loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The supervisor closed the channel (EOF) or is gone (EPIPE).
    SupervisorGone,
    /// `Shutdown` was received and the current request finished.
    Shutdown,
    /// The instance cannot go on; `Fatal` was sent with this reason.
    Failed(String),
}

impl Exit {
    /// The process exit status: 0 for an orderly end, 1 after a failure.
    #[must_use]
    pub fn code(&self) -> ExitCode {
        match self {
            Self::SupervisorGone | Self::Shutdown => ExitCode::SUCCESS,
            Self::Failed(_) => ExitCode::FAILURE,
        }
    }
}

#[derive(Debug)]
struct Pending {
    id: RequestId,
    body: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Waiting {
    id: RequestId,
    deadline: Option<Instant>,
}

/// One driver instance's event loop.
#[derive(Debug)]
pub struct Runtime<D: Driver> {
    name: String,
    ipc: OwnedFd,
    driver: D,
    tracer: Tracer,
    faults: Faults,
    exec_log: Option<ExecLog>,
    stop_signals: Option<SignalFd>,
    generation: Generation,
    state: D::State,
    ready: bool,
    queue: VecDeque<Pending>,
    waiting: Option<Waiting>,
    /// Requests started by this instance (the fault plans' `K`).
    handled: u32,
    shutdown: bool,
    tx: Vec<u8>,
    pools: Pools,
}

/// `Err(exit)` ends the loop.
type Flow = Result<(), Exit>;

impl<D: Driver> Runtime<D> {
    /// A loop over `config.ipc` driving `driver`. Nothing happens until [`Runtime::run`].
    pub fn new(config: Config, driver: D) -> Self {
        let tracer = Tracer::new(config.trace, &D::TRACE_LEGEND);
        Self {
            name: config.name,
            ipc: config.ipc,
            driver,
            tracer,
            faults: Faults::new(config.fault),
            exec_log: config.exec_log.map(ExecLog::new),
            stop_signals: config.stop_signals,
            generation: Generation(0),
            state: D::State::default(),
            ready: false,
            queue: VecDeque::new(),
            waiting: None,
            handled: 0,
            shutdown: false,
            tx: vec![0; MAX_FRAME],
            pools: Pools::default(),
        }
    }

    /// The trace recorded so far.
    #[must_use]
    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    /// Runs until the supervisor goes away, says `Shutdown`, or the instance fails.
    pub fn run(mut self) -> Exit {
        self.tracer.record(Event::Start { pid: std::process::id() });
        if let Some(plan) = self.faults.launch() {
            self.tracer.record(Event::FaultArmed { plan });
            info!("[driver] {} armed fault {plan} (from launch)", self.name);
        }
        let mut rx = vec![0u8; MAX_FRAME + 1];
        loop {
            if let Err(exit) = self.step(&mut rx) {
                return exit;
            }
        }
    }

    /// One turn of the loop: start work, sleep in `poll`, react.
    fn step(&mut self, rx: &mut [u8]) -> Flow {
        self.pump()?;
        if self.shutdown && self.waiting.is_none() {
            info!("[driver] {} {} shutting down", self.name, self.generation);
            return Err(Exit::Shutdown);
        }
        let deadline = self.waiting.and_then(|w| w.deadline);
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                // Round up so we never wake a hair early and spin once more.
                let left = d.saturating_duration_since(Instant::now()) + Duration::from_micros(999);
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
            }
        };
        let (ipc_events, irq_ready, stop_ready) = {
            let mut fds = vec![PollFd::new(self.ipc.as_fd(), PollFlags::POLLIN)];
            let stop_at = self.stop_signals.as_ref().map(|sfd| {
                fds.push(PollFd::new(sfd.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let irq_fd = if self.waiting.is_some() { self.driver.irq_fd() } else { None };
            let irq_at = irq_fd.map(|fd| {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                fds.len() - 1
            });
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => return Ok(()),
                Err(e) => return Err(self.fatal(format!("poll on the IPC socket and interrupt fd failed: {e}"))),
            }
            let ready = |at: Option<usize>| at.and_then(|i| fds[i].revents()).is_some_and(|r| !r.is_empty());
            (fds[0].revents().unwrap_or(PollFlags::empty()), ready(irq_at), ready(stop_at))
        };
        if stop_ready {
            self.on_stop_signal();
        }
        if irq_ready {
            self.wake(Wake::Irq)?;
        } else if deadline.is_some_and(|d| Instant::now() >= d) {
            self.wake(Wake::Timeout)?;
        }
        if !ipc_events.is_empty() {
            self.drain(rx)?;
        }
        Ok(())
    }

    /// Starts queued requests, in order, while the driver is idle. Called as
    /// soon as a request arrives, so "the current request" (the one `Shutdown`
    /// lets finish) is always the oldest one received, whatever the batching.
    fn pump(&mut self) -> Flow {
        while self.ready && self.waiting.is_none() && !self.shutdown {
            let Some(p) = self.queue.pop_front() else { break };
            self.start(p)?;
        }
        Ok(())
    }

    /// Reads every frame queued on the socket, without blocking. A frame
    /// may carry one descriptor (`SCM_RIGHTS`, for `AttachPool`); the
    /// kernel closes any beyond the one there is room for.
    fn drain(&mut self, rx: &mut [u8]) -> Flow {
        use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
        let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        loop {
            let mut cmsg = RecvAncillaryBuffer::new(&mut space);
            let got = recvmsg(
                &self.ipc,
                &mut [std::io::IoSliceMut::new(rx)],
                &mut cmsg,
                RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
            );
            let mut fd = None;
            for m in cmsg.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = m {
                    for f in fds {
                        // More than one: all but the first are dropped (closed).
                        fd.get_or_insert(f);
                    }
                }
            }
            match got.map(|r| r.bytes).map_err(|e| Errno::from_raw(e.raw_os_error())) {
                Ok(0) => {
                    if self.peer_closed() {
                        self.tracer.record(Event::Eof);
                        info!("[driver] {} {}: supervisor closed the channel, exiting", self.name, self.generation);
                        return Err(Exit::SupervisorGone);
                    }
                    self.bad_frame(reinc_proto::WireError::Truncated);
                }
                Ok(n) => self.on_frame(&rx[..n.min(rx.len())], fd)?,
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(Errno::ECONNRESET) => return Err(Exit::SupervisorGone),
                Err(e) => return Err(self.fatal(format!("recv on the IPC socket failed: {e}"))),
            }
        }
    }

    /// After a zero-length `recv`: was it EOF, or an empty message?
    fn peer_closed(&self) -> bool {
        let mut fds = [PollFd::new(self.ipc.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLHUP)),
            Err(_) => true,
        }
    }

    /// SIGTERM/SIGINT: the same as a `Shutdown` frame.
    fn on_stop_signal(&mut self) {
        let Some(sfd) = &self.stop_signals else { return };
        let mut names = Vec::new();
        while let Ok(Some(info)) = sfd.read_signal() {
            let signo = i32::try_from(info.ssi_signo).unwrap_or(0);
            let sig = Signal::try_from(signo).ok();
            if let Some(fatal @ (Signal::SIGSEGV | Signal::SIGBUS)) = sig {
                warn!(
                    "[driver] {} {}: {} sent by pid {}, dying by it",
                    self.name, self.generation, fatal, info.ssi_pid
                );
                crate::fault::die_by_signal(fatal);
            }
            names.push(sig.map_or("signal", Signal::as_str));
        }
        if names.is_empty() {
            return;
        }
        info!("[driver] {} {}: {} received, stopping like Shutdown", self.name, self.generation, names.join("+"));
        self.begin_shutdown();
    }

    fn begin_shutdown(&mut self) {
        // The supervisor sends a Shutdown frame *and* SIGTERM; act once.
        if self.shutdown {
            return;
        }
        self.tracer.record(Event::Shutdown);
        self.shutdown = true;
        let dropped = self.queue.len();
        self.queue.clear();
        info!(
            "[driver] {} {}: shutdown requested ({} current request, {dropped} queued left to the supervisor)",
            self.name,
            self.generation,
            if self.waiting.is_some() { "finishing the" } else { "no" },
        );
    }

    fn bad_frame(&mut self, error: reinc_proto::WireError) {
        warn!("[driver] {} {}: ignoring bad frame from the supervisor: {error}", self.name, self.generation);
        self.tracer.record(Event::BadFrame { error });
    }

    fn on_frame(&mut self, frame: &[u8], fd: Option<OwnedFd>) -> Flow {
        let msg = match decode::<ToDriver<'_>>(frame) {
            Ok(m) => m,
            Err(e) => {
                self.bad_frame(e);
                return Ok(());
            }
        };
        if fd.is_some() && !matches!(msg, ToDriver::AttachPool { .. }) {
            warn!(
                "[driver] {} {}: closing a descriptor that came with a frame other than AttachPool",
                self.name, self.generation
            );
        }
        match msg {
            ToDriver::AttachPool { client } => {
                match self.pools.attach(&self.name, client, fd) {
                    Ok(len) => debug!(
                        "[driver] {} {}: pool of session {client} mapped ({len} bytes)",
                        self.name, self.generation
                    ),
                    Err(reason) => {
                        warn!("[driver] {} {}: {reason}; its bulk requests will be refused", self.name, self.generation)
                    }
                }
                Ok(())
            }
            ToDriver::DetachPool { client } => {
                if self.pools.detach(client) {
                    debug!("[driver] {} {}: pool of session {client} unmapped", self.name, self.generation);
                }
                Ok(())
            }
            ToDriver::Init { generation, checkpoint } => {
                if self.ready {
                    warn!("[driver] {} {}: ignoring a second Init ({generation})", self.name, self.generation);
                    return Ok(());
                }
                self.init(generation, checkpoint)
            }
            ToDriver::Request { id, body } => {
                if self.shutdown {
                    warn!("[driver] {} {}: ignoring request {id} received after Shutdown", self.name, self.generation);
                } else {
                    self.queue.push_back(Pending { id, body: body.to_vec() });
                }
                self.pump()
            }
            ToDriver::Ping { nonce } => {
                self.tracer.record(Event::Ping);
                debug!("[driver] {} {}: pong {nonce}", self.name, self.generation);
                self.send(&FromDriver::Pong { nonce })
            }
            ToDriver::Inject(plan) => {
                match self.faults.inject(plan, self.handled) {
                    Ok(()) => {
                        self.tracer.record(Event::FaultArmed { plan });
                        info!("[driver] {} {} armed fault {plan}", self.name, self.generation);
                    }
                    Err(e) => warn!("[driver] {} {}: fault {plan} not armed: {e}", self.name, self.generation),
                }
                Ok(())
            }
            ToDriver::Shutdown => {
                self.begin_shutdown();
                Ok(())
            }
        }
    }

    fn ctx<'a>(tracer: &'a mut Tracer, name: &'a str, generation: Generation, pools: &'a Pools) -> Ctx<'a> {
        // A free function over disjoint fields, so `self.driver` stays borrowable.
        Ctx { tracer, name, generation, pools }
    }

    fn init(&mut self, generation: Generation, checkpoint: Option<&[u8]>) -> Flow {
        self.generation = generation;
        self.tracer.record(Event::Init { generation, restored: checkpoint.is_some() });
        let state = match checkpoint {
            None => D::State::default(),
            Some(bytes) => match postcard::from_bytes::<D::State>(bytes) {
                Ok(s) => s,
                Err(e) => {
                    return Err(self.fatal(format!(
                        "checkpoint of {} bytes does not decode as this driver's state: {e}",
                        bytes.len()
                    )));
                }
            },
        };
        let mut ctx = Self::ctx(&mut self.tracer, &self.name, generation, &self.pools);
        if let Err(e) = self.driver.init(&mut ctx, &state) {
            return Err(self.fatal(format!("init failed: {e}")));
        }
        self.maybe_fault(CrashPoint::Init);
        self.state = state;
        self.ready = true;
        self.send(&FromDriver::Ready)?;
        self.tracer.record(Event::Ready);
        info!("[driver] {} {generation} ready ({})", self.name, self.driver.describe());
        self.pump()
    }

    fn start(&mut self, p: Pending) -> Flow {
        self.handled = self.handled.saturating_add(1);
        self.tracer.record(Event::RequestStart { id: p.id, nth: self.handled });
        debug!("[driver] {} {}: request {} (#{})", self.name, self.generation, p.id, self.handled);
        self.maybe_fault(CrashPoint::BeforeEffect);
        let mut ctx = Self::ctx(&mut self.tracer, &self.name, self.generation, &self.pools);
        match self.driver.handle(&mut ctx, &self.state, p.id, &p.body) {
            Ok(step) => self.after_step(p.id, step),
            Err(e) => Err(self.fatal(format!("request {}: {e}", p.id))),
        }
    }

    fn wake(&mut self, wake: Wake) -> Flow {
        let Some(w) = self.waiting.take() else { return Ok(()) };
        if wake == Wake::Timeout {
            self.tracer.record(Event::IrqTimeout { id: w.id });
        }
        let mut ctx = Self::ctx(&mut self.tracer, &self.name, self.generation, &self.pools);
        match self.driver.on_wake(&mut ctx, &self.state, w.id, wake) {
            Ok(step) => self.after_step(w.id, step),
            Err(e) => Err(self.fatal(format!("request {} after {wake:?}: {e}", w.id))),
        }
    }

    fn after_step(&mut self, id: RequestId, step: Step<D::State>) -> Flow {
        match step {
            Step::Done(c) => self.complete(id, c),
            Step::WaitIrq { timeout } => {
                if timeout.is_none() && self.driver.irq_fd().is_none() {
                    return Err(self.fatal(format!(
                        "request {id} waits for an interrupt, but the driver has no interrupt fd and no timeout"
                    )));
                }
                self.tracer.record(Event::WaitIrq { id });
                self.waiting = Some(Waiting { id, deadline: timeout.map(|t| Instant::now() + t) });
                Ok(())
            }
        }
    }

    fn complete(&mut self, id: RequestId, c: Completion<D::State>) -> Flow {
        let logged = match c.effect {
            Effect::None => Ok(()),
            Effect::Applied => {
                self.tracer.record(Event::Effect { id });
                self.exec_log.as_ref().map_or(Ok(()), |l| l.applied(self.generation, id))
            }
            Effect::AlreadyApplied => {
                self.tracer.record(Event::EffectReplayed { id });
                info!(
                    "[driver] {} {}: {id} was applied by an earlier instance; reply recomputed",
                    self.name, self.generation
                );
                self.exec_log.as_ref().map_or(Ok(()), |l| l.already_applied(self.generation, id))
            }
        };
        if let Err(e) = logged {
            return Err(self.fatal(e.to_string()));
        }
        self.maybe_fault(CrashPoint::AfterEffect);
        let commit = if c.state == self.state {
            None
        } else {
            match postcard::to_allocvec(&c.state) {
                Ok(bytes) if bytes.len() <= MAX_CHECKPOINT => Some(bytes),
                Ok(bytes) => {
                    return Err(self.fatal(format!(
                        "state after {id} encodes to {} bytes, over the {MAX_CHECKPOINT}-byte checkpoint limit",
                        bytes.len()
                    )));
                }
                Err(e) => return Err(self.fatal(format!("state after {id} does not encode: {e}"))),
            }
        };
        let committed = commit.is_some();
        self.send(&FromDriver::Reply { id, commit: commit.as_deref(), body: &c.reply })?;
        self.state = c.state;
        self.tracer.record(Event::Reply { id, committed });
        self.maybe_fault(CrashPoint::AfterReply);
        Ok(())
    }

    /// Dies here if a fault plan says so.
    fn maybe_fault(&mut self, point: CrashPoint) {
        if let Some(plan) = self.faults.check(point, self.handled) {
            self.tracer.record(Event::Fault { plan });
            warn!("[driver] {} {}: injecting fault {plan}", self.name, self.generation);
            die(plan);
        }
    }

    /// Reports `reason` to the supervisor (best effort) and ends the loop.
    fn fatal(&mut self, reason: String) -> Exit {
        let reason = format!("driver {}: {reason}", self.name);
        error!("[driver] {} {}: fatal: {reason}", self.name, self.generation);
        if !self.ready {
            self.tracer.record(Event::InitFailed);
        }
        let _ = self.send(&FromDriver::Fatal { reason: &reason });
        Exit::Failed(reason)
    }

    fn send(&mut self, msg: &FromDriver<'_>) -> Flow {
        let frame = DriverFrame { generation: self.generation, msg: msg.clone() };
        let bytes = match encode(&frame, &mut self.tx) {
            Ok(b) => &*b,
            Err(e) => {
                // Only a reply body over MAX_BODY gets here: a driver bug.
                let reason = format!("driver {}: cannot encode a frame: {e}", self.name);
                error!("[driver] {reason}");
                return Err(Exit::Failed(reason));
            }
        };
        loop {
            match send(self.ipc.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(Errno::EPIPE | Errno::ECONNRESET) => {
                    info!("[driver] {} {}: supervisor is gone, exiting", self.name, self.generation);
                    return Err(Exit::SupervisorGone);
                }
                Err(e) => {
                    let reason = format!("driver {}: send on the IPC socket failed: {e}", self.name);
                    error!("[driver] {reason}");
                    return Err(Exit::Failed(reason));
                }
            }
        }
    }
}
