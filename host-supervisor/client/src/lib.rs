//! Client library and control protocol of the reinc supervisor.
//!
//! # Why this crate exists
//! A client must never notice a driver crash except as latency. The
//! supervisor does most of that (replay, dedup), but the client has its half
//! of the contract: it numbers its calls, keeps every unanswered call, and
//! after losing its connection (supervisor restarted its socket, or the
//! client was disconnected for not reading) it resumes its session and
//! resends each unanswered call *with the same sequence number*, so the
//! supervisor's dedup table answers the ones that already ran instead of
//! running them twice. It also tells the supervisor which replies it will
//! never ask for again (`acked_below` = its lowest unanswered seq), which is
//! what keeps the dedup table small (Raft's client sessions).
//!
//! [`Client`] does exactly that, with pipelining: [`Client::submit`] sends
//! without waiting, [`Client::wait`] returns the next completion. Bulk data
//! goes through a shared pool ([`pool`]: [`Client::attach_pool`]), which
//! the library attaches again after every reconnect, before it resends.
//! [`control_request`] sends one request of the `drvctl` ↔ supervisor
//! control protocol, whose types ([`control`]) and socket paths
//! ([`client_socket`], [`control_socket`], [`default_runtime_dir`]) are
//! defined in `reinc-control` and re-exported here because this crate's own
//! signatures use them. [`blk`] is `drvctl blk`'s bulk
//! transfer through the storage driver.
//!
//! # Designs rejected
//! - A new session on reconnect: replies of calls executed just before the
//!   disconnect would be lost, and their retries would execute twice.
//! - Blocking `call` only: one request in flight cannot keep a driver busy;
//!   `blk` and the chaos test keep 8+ in flight.
//! - Resending each `Busy` call as soon as its answer arrives: answers can
//!   arrive out of seq order and fresh calls slip in between, so execution
//!   order depended on timing. Resends now go out together, lowest seq
//!   first, after a short pause, new calls to that driver queue behind them,
//!   and the supervisor's busy barrier refuses any call that would overtake.
//! - Giving up on the first failed reconnect attempt: a supervisor being
//!   SIGKILLed still accepts connections on its listening socket and then
//!   resets them, and its successor binds the socket a moment later; every
//!   step of a reconnect is retried within [`Client::reconnect_timeout`].
#![forbid(unsafe_code)]

pub mod blk;
pub mod blocksum;
pub mod peer;
pub mod pool;

pub use reinc_uio::SharedPool;

pub use reinc_control::control;
pub use reinc_control::paths::{client_socket, control_socket, default_runtime_dir};

use control::{ControlRequest, ControlResponse, MAX_CONTROL_FRAME};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, recv, send, socket};
use reinc_proto::{CallError, ClientId, ClientToSup, MAX_FRAME, SupToClient, WireError};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A client-side failure (not a driver's answer).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not reach the supervisor's socket.
    #[error("cannot connect to the supervisor at {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The last error.
        source: Errno,
    },
    /// The connection was lost and the supervisor did not come back within
    /// the reconnect window ([`Client::reconnect_timeout`]).
    #[error("the supervisor at {path} did not come back within {window:?} (last error: {source})")]
    Unreachable {
        /// The socket.
        path: PathBuf,
        /// How long the client kept trying.
        window: Duration,
        /// The last error.
        source: Errno,
    },
    /// The supervisor no longer knows our session (it restarted): replies of
    /// unanswered calls are lost, and resending them could execute them twice.
    #[error(
        "the supervisor at {path} no longer knows session {client}; {pending} unanswered call(s) have unknown outcome"
    )]
    SessionLost {
        /// The socket.
        path: PathBuf,
        /// The lost session.
        client: ClientId,
        /// Calls whose outcome is unknown.
        pending: usize,
    },
    /// The supervisor refused a frame we sent (a bug in this library or a
    /// version mismatch).
    #[error("the supervisor at {path} rejected a frame: {error}")]
    Rejected {
        /// The socket.
        path: PathBuf,
        /// Why.
        error: WireError,
    },
    /// A frame from the supervisor did not decode.
    #[error("bad frame from the supervisor at {path}: {error}")]
    BadFrame {
        /// The socket.
        path: PathBuf,
        /// Why.
        error: WireError,
    },
    /// The session could not be opened.
    #[error("the supervisor at {path} refused the session: {error}")]
    Refused {
        /// The socket.
        path: PathBuf,
        /// Why.
        error: CallError,
    },
    /// The process listening on the socket is not one this client trusts.
    #[error("{reason}")]
    Untrusted {
        /// The socket.
        path: PathBuf,
        /// Who listens, and who was expected.
        reason: String,
    },
    /// The supervisor did not answer in time.
    #[error("no answer from the supervisor at {path} within {after:?}")]
    Timeout {
        /// The socket.
        path: PathBuf,
        /// The timeout.
        after: Duration,
    },
    /// `wait` with nothing in flight.
    #[error("no call is in flight")]
    Idle,
    /// The request does not fit a frame.
    #[error("request of {len} bytes does not fit in a frame")]
    TooLarge {
        /// Body size.
        len: usize,
    },
    /// The supervisor did not keep a shared pool ([`pool`]).
    #[error("the supervisor at {path} refused the shared pool for driver {driver}: {error}")]
    PoolRefused {
        /// The socket.
        path: PathBuf,
        /// The driver.
        driver: String,
        /// Why.
        error: CallError,
    },
}

/// The outcome of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The call's sequence number.
    pub seq: u64,
    /// The driver's reply body, or why the call failed.
    pub result: Result<Vec<u8>, CallError>,
}

#[derive(Debug)]
struct Pending {
    driver: String,
    body: Vec<u8>,
    /// A send of this call succeeded since it was last known not executed
    /// (submitted, or answered `Busy`): a supervisor may have run it.
    sent: bool,
}

/// A client session with pipelining and transparent resume.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    fd: OwnedFd,
    session: ClientId,
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
    buf: Vec<u8>,
    /// Frames read while resending after a reconnect, not yet delivered.
    inbox: std::collections::VecDeque<Vec<u8>>,
    /// How long to keep trying to reconnect after the connection is lost
    /// (default 30 s, or `REINC_RECONNECT_TIMEOUT_MS`). Within it, a reset
    /// connection (`ECONNRESET`, `EPIPE`, `ENOTCONN`), a refused one
    /// (`ECONNREFUSED`) and a missing socket (`ENOENT`) all mean "the
    /// supervisor is restarting": the client retries with exponential
    /// backoff ([`RECONNECT_BACKOFF_MIN`] to [`RECONNECT_BACKOFF_MAX`]).
    pub reconnect_timeout: Duration,
    /// Resend a call answered `Busy` (not executed) after a short pause,
    /// instead of returning it (default).
    ///
    /// Per-session order holds under backpressure: calls answered `Busy` are
    /// resent together, lowest seq first, and a new call to a driver that
    /// has a call waiting for its resend is queued behind it. The supervisor
    /// enforces the same rule (its busy barrier answers `Busy` to any call
    /// that would overtake an earlier `Busy` call of the session to the same
    /// driver), so a driver executes each session's calls in seq order.
    ///
    /// With `false`, `Busy` is returned as the call's result; later calls of
    /// this session to that driver are then answered `Busy` too until the
    /// call is resubmitted or abandoned, which the supervisor learns once no
    /// older call is pending (`acked_below` passes it).
    pub retry_busy: bool,
    /// Calls answered `Busy` (or queued behind one), waiting for `resend_at`.
    busy: BTreeSet<u64>,
    resend_at: Option<Instant>,
    reconnects: u32,
    /// Shared pools attached, by driver, to attach again after a reconnect.
    pools: Vec<(String, OwnedFd)>,
}

/// Pause before calls answered `Busy` are resent.
const BUSY_PAUSE: Duration = Duration::from_millis(2);

/// First pause between reconnect attempts.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause between reconnect attempts.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(250);
/// Default reconnect window.
pub const DEFAULT_RECONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The reconnect window from `REINC_RECONNECT_TIMEOUT_MS`, else the default.
fn reconnect_timeout_from_env() -> Duration {
    std::env::var(reinc_control::env::ENV_RECONNECT_TIMEOUT_MS)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(DEFAULT_RECONNECT_TIMEOUT, Duration::from_millis)
}

/// Errors that mean "the supervisor is restarting" (or its connection is
/// gone): worth another attempt within the reconnect window.
fn restarting(e: Errno) -> bool {
    matches!(
        e,
        Errno::ECONNRESET
            | Errno::ECONNREFUSED
            | Errno::ECONNABORTED
            | Errno::EPIPE
            | Errno::ENOTCONN
            | Errno::ENOENT
            | Errno::EAGAIN
            | Errno::EINTR
    )
}

fn connect_seqpacket(path: &Path, timeout: Option<Duration>) -> Result<OwnedFd, Errno> {
    let addr = UnixAddr::new(path)?;
    let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)?;
    if let Some(t) = timeout {
        // SO_SNDTIMEO bounds connect() too (a full backlog blocks it) and
        // send(); SO_RCVTIMEO bounds recv(): EAGAIN once it passes.
        let tv = nix::sys::time::TimeVal::new(t.as_secs() as i64, i64::from(t.subsec_micros()));
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::SendTimeout, &tv)?;
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &tv)?;
    }
    connect(fd.as_raw_fd(), &addr)?;
    Ok(fd)
}

/// Connects to `path` and checks who listens there ([`peer`]).
fn connect_trusted(path: &Path, timeout: Option<Duration>) -> Result<OwnedFd, ClientError> {
    let fd = connect_seqpacket(path, timeout).map_err(|source| match source {
        Errno::EAGAIN | Errno::EINPROGRESS if timeout.is_some() => {
            ClientError::Timeout { path: path.into(), after: timeout.unwrap_or_default() }
        }
        source => ClientError::Connect { path: path.into(), source },
    })?;
    peer::verify(path, &fd).map_err(|reason| ClientError::Untrusted { path: path.into(), reason })?;
    Ok(fd)
}

impl Client {
    /// Opens a new session on the client socket at `path`.
    ///
    /// # Errors
    /// [`ClientError::Connect`] or [`ClientError::Refused`].
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let fd = connect_trusted(path, None)?;
        let mut c = Self {
            path: path.into(),
            fd,
            session: ClientId(0),
            next_seq: 1,
            pending: BTreeMap::new(),
            buf: vec![0; MAX_FRAME + 1],
            inbox: std::collections::VecDeque::new(),
            reconnect_timeout: reconnect_timeout_from_env(),
            retry_busy: true,
            busy: BTreeSet::new(),
            resend_at: None,
            reconnects: 0,
            pools: Vec::new(),
        };
        c.session = c.hello(None)?;
        Ok(c)
    }

    /// The session id.
    #[must_use]
    pub fn session(&self) -> ClientId {
        self.session
    }

    /// Calls sent and not yet answered.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// How many times the connection was re-established.
    #[must_use]
    pub fn reconnects(&self) -> u32 {
        self.reconnects
    }

    /// Ends the session for good (`ClientToSup::Bye`) and closes the
    /// connection. Calls still running finish at the supervisor, which
    /// then forgets the session, its cached replies and its pools at once
    /// instead of after `session-idle-timeout-ms`; it can no longer be
    /// resumed. Best effort: a supervisor that is gone, or predates `Bye`,
    /// frees them at the timeout as before.
    ///
    /// Dropping a `Client` does not say `Bye`: the session then stays
    /// resumable until it expires, which is what a client that crashes
    /// gets too.
    pub fn close(self) {
        if let Ok(frame) = reinc_proto::encode_vec(&ClientToSup::Bye) {
            let _ = send(self.fd.as_raw_fd(), &frame, MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT);
        }
    }

    /// The seq the next [`submit`](Self::submit) will use.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn hello(&mut self, resume: Option<ClientId>) -> Result<ClientId, ClientError> {
        let frame = reinc_proto::encode_vec(&ClientToSup::Hello { resume })
            .map_err(|error| ClientError::Rejected { path: self.path.clone(), error })?;
        send(self.fd.as_raw_fd(), &frame, MsgFlags::MSG_NOSIGNAL)
            .map_err(|source| ClientError::Connect { path: self.path.clone(), source })?;
        let n = recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty())
            .map_err(|source| ClientError::Connect { path: self.path.clone(), source })?;
        if n == 0 {
            return Err(ClientError::Connect { path: self.path.clone(), source: Errno::ECONNRESET });
        }
        match reinc_proto::decode::<SupToClient<'_>>(&self.buf[..n]) {
            Ok(SupToClient::Welcome { client }) => Ok(client),
            Ok(SupToClient::Failed { error: CallError::NoSession, .. }) if resume.is_some() => {
                Err(ClientError::SessionLost {
                    path: self.path.clone(),
                    client: self.session,
                    pending: self.pending.len(),
                })
            }
            Ok(SupToClient::Failed { error, .. }) => Err(ClientError::Refused { path: self.path.clone(), error }),
            Ok(SupToClient::Rejected { error }) => Err(ClientError::Rejected { path: self.path.clone(), error }),
            Ok(SupToClient::Reply { .. } | SupToClient::PoolAttached { .. } | SupToClient::PoolRefused { .. }) => {
                Err(ClientError::BadFrame { path: self.path.clone(), error: WireError::Malformed })
            }
            Err(error) => Err(ClientError::BadFrame { path: self.path.clone(), error }),
        }
    }

    /// The lowest seq that may still be retried.
    fn acked_below(&self) -> u64 {
        self.pending.keys().next().copied().unwrap_or(self.next_seq)
    }

    fn send_call(&mut self, seq: u64) -> Result<(), Errno> {
        let p = &self.pending[&seq];
        let msg = ClientToSup::Call { seq, driver: &p.driver, body: &p.body, acked_below: self.acked_below() };
        let frame = reinc_proto::encode_vec(&msg).map_err(|_| Errno::EMSGSIZE)?;
        send(self.fd.as_raw_fd(), &frame, MsgFlags::MSG_NOSIGNAL)?;
        // A SOCK_SEQPACKET send is all or nothing: only now may it run.
        if let Some(p) = self.pending.get_mut(&seq) {
            p.sent = true;
        }
        Ok(())
    }

    /// Sends a call without waiting for its reply; returns its seq.
    ///
    /// # Errors
    /// [`ClientError::TooLarge`], or a reconnect failure.
    pub fn submit(&mut self, driver: &str, body: &[u8]) -> Result<u64, ClientError> {
        if body.len() + driver.len() + 64 > MAX_FRAME {
            return Err(ClientError::TooLarge { len: body.len() });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(seq, Pending { driver: driver.into(), body: body.to_vec(), sent: false });
        if self.retry_busy && self.busy.iter().any(|s| self.pending[s].driver == driver) {
            // An earlier call to this driver waits for its resend; the
            // supervisor would answer this one Busy anyway. Go out behind it.
            self.busy.insert(seq);
            return Ok(seq);
        }
        if self.send_call(seq).is_err() {
            self.reconnect()?;
        }
        Ok(seq)
    }

    /// Waits for the next completion of any call in flight.
    ///
    /// # Errors
    /// [`ClientError::Idle`] if nothing is in flight; a reconnect failure.
    pub fn wait(&mut self) -> Result<Completion, ClientError> {
        loop {
            if self.pending.is_empty() {
                return Err(ClientError::Idle);
            }
            if let Some(frame) = self.inbox.pop_front() {
                if let Some(c) = self.deliver(&frame)? {
                    return Ok(c);
                }
                continue;
            }
            if let Some(at) = self.resend_at {
                let now = Instant::now();
                if now >= at {
                    self.resend_busy()?;
                    continue;
                }
                // Wait for a frame, but no longer than the resend time.
                let ms = u32::try_from((at - now).as_millis().max(1)).unwrap_or(u32::MAX);
                let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)) {
                    Ok(0) | Err(Errno::EINTR) => continue,
                    Ok(_) => {}
                    Err(source) => return Err(ClientError::Connect { path: self.path.clone(), source }),
                }
            }
            let n = match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_TRUNC) {
                Ok(0) | Err(Errno::ECONNRESET | Errno::ENOTCONN | Errno::EPIPE | Errno::ECONNABORTED) => {
                    self.reconnect()?;
                    continue;
                }
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(source) => return Err(ClientError::Connect { path: self.path.clone(), source }),
            };
            let n = n.min(self.buf.len());
            let frame = std::mem::take(&mut self.buf);
            let delivered = self.deliver(&frame[..n]);
            self.buf = frame;
            if let Some(c) = delivered? {
                return Ok(c);
            }
        }
    }

    /// Handles one frame from the supervisor: the completion it carries, if
    /// it completes a call (not a duplicate, not a `Busy` to resend).
    fn deliver(&mut self, frame: &[u8]) -> Result<Option<Completion>, ClientError> {
        let (seq, result) = match reinc_proto::decode::<SupToClient<'_>>(frame) {
            Ok(SupToClient::Reply { seq, body }) => (seq, Ok(body.to_vec())),
            Ok(SupToClient::Failed { seq, error }) => (seq, Err(error)),
            Ok(SupToClient::Rejected { error }) => {
                return Err(ClientError::Rejected { path: self.path.clone(), error });
            }
            // Answers to AttachPool are read by `attach_pool` itself; a late
            // one has nothing to complete.
            Ok(SupToClient::Welcome { .. } | SupToClient::PoolAttached { .. } | SupToClient::PoolRefused { .. }) => {
                return Ok(None);
            }
            Err(error) => return Err(ClientError::BadFrame { path: self.path.clone(), error }),
        };
        if !self.pending.contains_key(&seq) {
            // A duplicate answer (we resent after a reconnect): already delivered.
            return Ok(None);
        }
        if result == Err(CallError::Busy)
            && let Some(p) = self.pending.get_mut(&seq)
        {
            // Definitely not executed.
            p.sent = false;
        }
        if result == Err(CallError::Busy) && self.retry_busy {
            self.busy.insert(seq);
            self.resend_at.get_or_insert_with(|| Instant::now() + BUSY_PAUSE);
            return Ok(None);
        }
        self.pending.remove(&seq);
        Ok(Some(Completion { seq, result }))
    }

    /// Calls and waits for this call's reply (other completions that arrive
    /// meanwhile are dropped, so use either this or `submit`/`wait`).
    ///
    /// # Errors
    /// A [`ClientError`]; the driver's failure is in the inner `Result`.
    pub fn call(&mut self, driver: &str, body: &[u8]) -> Result<Result<Vec<u8>, CallError>, ClientError> {
        let seq = self.submit(driver, body)?;
        loop {
            let c = self.wait()?;
            if c.seq == seq {
                return Ok(c.result);
            }
        }
    }

    /// Resends every call answered `Busy`, lowest seq first, so that the
    /// supervisor accepts them in seq order.
    fn resend_busy(&mut self) -> Result<(), ClientError> {
        self.resend_at = None;
        for seq in std::mem::take(&mut self.busy) {
            if self.send_call(seq).is_err() {
                // Resends every unanswered call, these included.
                return self.reconnect();
            }
        }
        Ok(())
    }

    /// Re-establishes the connection, resumes the session and resends every
    /// unanswered call with its original seq, lowest first.
    ///
    /// Every step (connect, `Hello`, the resends) that fails with an error
    /// meaning "the supervisor is restarting" starts over after a backoff
    /// pause, until [`reconnect_timeout`](Self::reconnect_timeout) has
    /// passed: a supervisor killed in the middle still accepts connections
    /// on its listening socket and then resets them, and its successor
    /// binds the socket a moment later.
    fn reconnect(&mut self) -> Result<(), ClientError> {
        self.busy.clear();
        self.resend_at = None;
        let window = self.reconnect_timeout;
        let deadline = Instant::now() + window;
        let mut pause = RECONNECT_BACKOFF_MIN;
        loop {
            let source = match self.try_reconnect() {
                Ok(()) => {
                    self.reconnects += 1;
                    return Ok(());
                }
                Err(Attempt::Retry(e)) => e,
                Err(Attempt::Fatal(e)) => return Err(e),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Unreachable { path: self.path.clone(), window, source });
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(RECONNECT_BACKOFF_MAX);
        }
    }

    /// One attempt of [`reconnect`](Self::reconnect).
    fn try_reconnect(&mut self) -> Result<(), Attempt> {
        let retry_or = |path: &Path, e: Errno| {
            if restarting(e) {
                Attempt::Retry(e)
            } else {
                Attempt::Fatal(ClientError::Connect { path: path.into(), source: e })
            }
        };
        // Connects and checks who listens there: an untrusted listener is
        // fatal, never retried.
        let connect = |path: &Path| -> Result<OwnedFd, Attempt> {
            let fd = connect_seqpacket(path, None).map_err(|e| retry_or(path, e))?;
            peer::verify(path, &fd)
                .map_err(|reason| Attempt::Fatal(ClientError::Untrusted { path: path.into(), reason }))?;
            Ok(fd)
        };
        self.fd = connect(&self.path)?;
        match self.hello(Some(self.session)) {
            Ok(_) => {}
            Err(ClientError::Connect { source, path }) => return Err(retry_or(&path, source)),
            // Nothing unanswered could have run: a new session loses nothing.
            Err(ClientError::SessionLost { .. }) if self.pending.values().all(|p| !p.sent) => {
                // The refusal may leave the connection closed: reconnect for
                // the new session.
                self.fd = connect(&self.path)?;
                match self.hello(None) {
                    Ok(id) => self.session = id,
                    Err(ClientError::Connect { source, path }) => return Err(retry_or(&path, source)),
                    Err(e) => return Err(Attempt::Fatal(e)),
                }
            }
            Err(e) => return Err(Attempt::Fatal(e)),
        }
        // Pools first: a resent call may name a range of one.
        match self.reattach_pools() {
            Ok(()) => {}
            Err(ClientError::Connect { source, path }) => return Err(retry_or(&path, source)),
            Err(e) => return Err(Attempt::Fatal(e)),
        }
        let seqs: Vec<u64> = self.pending.keys().copied().collect();
        for seq in seqs {
            self.send_call(seq).map_err(|e| retry_or(&self.path, e))?;
            // Answers to the resends (from the dedup table, at once) are
            // read as they come: a client that sent thousands before reading
            // would be disconnected for not reading, and resend again.
            self.read_ready().map_err(|e| retry_or(&self.path, e))?;
        }
        Ok(())
    }

    /// Moves the frames already waiting on the socket to the inbox. An end
    /// of stream is left for [`wait`](Self::wait) to find, after the inbox.
    fn read_ready(&mut self) -> Result<(), Errno> {
        loop {
            match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC) {
                Ok(0) => return Ok(()),
                Ok(n) => self.inbox.push_back(self.buf[..n.min(self.buf.len())].to_vec()),
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// How one reconnect attempt failed.
enum Attempt {
    /// The supervisor is restarting: try again.
    Retry(Errno),
    /// Retrying cannot help.
    Fatal(ClientError),
}

/// How long [`control_request`] waits for the supervisor.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one control request to the control socket at `path`, waiting at
/// most [`CONTROL_TIMEOUT`] to connect, send and receive.
///
/// # Errors
/// A connection error, a timeout or a bad frame, naming the socket.
pub fn control_request(path: &Path, req: &ControlRequest) -> Result<ControlResponse, ClientError> {
    control_request_timeout(path, req, CONTROL_TIMEOUT)
}

/// [`control_request`] with its own timeout for each of connect, send and
/// receive (a supervisor out of descriptors, or stopped with SIGSTOP, must
/// not hang `drvctl`).
///
/// # Errors
/// A connection error, [`ClientError::Timeout`] or a bad frame, naming the socket.
pub fn control_request_timeout(
    path: &Path,
    req: &ControlRequest,
    timeout: Duration,
) -> Result<ControlResponse, ClientError> {
    ControlConn::connect(path, timeout)?.request(req)
}

/// A control connection kept open for many requests, for a monitor that
/// polls (the campaign's injector asks for the status every millisecond
/// while it waits for a recovery). One connection and one receive buffer
/// serve every request, where [`control_request`] pays a connect, the
/// supervisor's accept and peer check, and a 1 MiB buffer each time.
#[derive(Debug)]
pub struct ControlConn {
    path: PathBuf,
    fd: OwnedFd,
    buf: Vec<u8>,
    timeout: Duration,
}

impl ControlConn {
    /// Connects to the control socket at `path`; every step of a request
    /// waits at most `timeout`.
    ///
    /// # Errors
    /// A connection error or [`ClientError::Timeout`], naming the socket.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, ClientError> {
        let fd = connect_trusted(path, Some(timeout))?;
        Ok(Self { path: path.into(), fd, buf: vec![0u8; MAX_CONTROL_FRAME], timeout })
    }

    /// Sends `req` and waits for its response.
    ///
    /// # Errors
    /// A connection error, [`ClientError::Timeout`] or a bad frame, naming
    /// the socket. After an error the connection is of no further use.
    pub fn request(&mut self, req: &ControlRequest) -> Result<ControlResponse, ClientError> {
        let (path, timeout) = (&self.path, self.timeout);
        let err = |source| match source {
            Errno::EAGAIN => ClientError::Timeout { path: path.clone(), after: timeout },
            source => ClientError::Connect { path: path.clone(), source },
        };
        let frame =
            reinc_proto::encode_vec(req).map_err(|error| ClientError::Rejected { path: path.clone(), error })?;
        send(self.fd.as_raw_fd(), &frame, MsgFlags::MSG_NOSIGNAL).map_err(err)?;
        let n = recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty()).map_err(err)?;
        if n == 0 {
            return Err(err(Errno::ECONNRESET));
        }
        reinc_proto::decode(&self.buf[..n]).map_err(|error| ClientError::BadFrame { path: path.clone(), error })
    }
}

#[cfg(test)]
mod tests;
