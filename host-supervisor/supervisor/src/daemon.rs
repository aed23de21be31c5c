//! The daemon: the thin adapter between Linux and the pure [`core`](crate::core).
//!
//! One thread, one `epoll` set:
//! - a `signalfd` for SIGCHLD (exit detection the moment it happens, no
//!   polling: every wake-up reaps with `waitpid(WNOHANG)` until nothing is
//!   left) and SIGTERM/SIGINT (shutdown);
//! - one `SOCK_SEQPACKET` socketpair per driver instance;
//! - the client and control listening sockets and their connections.
//!
//! The epoll timeout is the core's next deadline, so an idle supervisor (or
//! one whose driver is quarantined or backing off) sleeps in the kernel; a
//! restart storm costs one wake-up per launch, never a spin.
//!
//! Every socket is non-blocking; a peer that does not read has its frames
//! queued (bounded) and sent when `EPOLLOUT` says so, so one slow client can
//! never stall the supervisor.

use crate::checkpoint;
use crate::config::{Config, CorruptCheckpoint};
use crate::core::{
    Action, ClientMsg, ConnId, DriverId, DriverMsg, Event, ExitStatus, KillSignal, PersistOutcome, Supervisor,
    signal_name,
};
use crate::journal::writer::{FromWriter, ToWriter, Writer};
use crate::journal::{self, Record};
use crate::notify::Notifier;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr, bind, connect, listen, recv, send, socket,
    socketpair,
};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use reinc_client::control::{ControlRequest, ControlResponse, MAX_CONTROL_FRAME};
use reinc_policy::Millis;
use reinc_proto::{ClientToSup, DriverFrame, Generation, MAX_FRAME, SupToClient, ToDriver, WireError};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use tracing::{debug, info, warn};

pub mod authz;
pub mod dirs;
pub mod fds;

/// Frames queued for a peer that does not read before it is disconnected.
const MAX_OUT_FRAMES: usize = 4096;

/// The daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A system call failed while setting up.
    #[error("{what}: {source}")]
    Setup {
        /// What was being set up (names the file or socket).
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A persisted checkpoint is torn or corrupt and the driver's config
    /// says to refuse it.
    #[error("{source}; refusing to start {driver} (set on-corrupt-checkpoint = \"start-fresh\" to discard it)")]
    Checkpoint {
        /// The driver.
        driver: String,
        /// The checkpoint error (names the file).
        source: checkpoint::CheckpointError,
    },
    /// The runtime or state directory cannot be trusted.
    #[error(transparent)]
    Dir(#[from] dirs::DirError),
    /// Another supervisor answers on the socket path.
    #[error("another supervisor is already listening on {0}")]
    AlreadyRunning(PathBuf),
    /// The journal is torn or corrupt and `journal-recovery` says to refuse
    /// it, or it cannot be read or written.
    #[error("{source}; refusing to start (set journal-recovery = \"truncate\" to cut it at the last valid record)")]
    Journal {
        /// The journal error (names the file and the offset).
        source: crate::journal::JournalError,
    },
}

fn setup<E: Into<std::io::Error>>(what: impl Into<String>) -> impl FnOnce(E) -> DaemonError {
    let what = what.into();
    move |e| DaemonError::Setup { what, source: e.into() }
}

/// A non-blocking seqpacket peer with a bounded queue of unsent frames.
#[derive(Debug)]
struct Peer {
    fd: OwnedFd,
    out: VecDeque<Vec<u8>>,
    /// Bytes in `out`.
    queued: usize,
    token: u64,
    want_out: bool,
}

impl Peer {
    fn new(fd: OwnedFd, token: u64) -> Self {
        Self { fd, out: VecDeque::new(), queued: 0, token, want_out: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Signals,
    ClientListener,
    ControlListener,
    Client(ConnId),
    Control(u64),
    Driver(DriverId, Generation),
    Journal,
}

#[derive(Debug)]
struct Live {
    generation: Generation,
    pid: Pid,
    peer: Option<Peer>,
    trace: Option<File>,
}

/// The epoll set and what each token stands for.
#[derive(Debug)]
struct Registry {
    epoll: Epoll,
    tokens: HashMap<u64, Source>,
    next_token: u64,
}

impl Registry {
    fn watch(&mut self, fd: impl AsFd, src: Source) -> Result<u64, DaemonError> {
        let token = self.next_token;
        self.next_token += 1;
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
        self.epoll.add(fd, EpollEvent::new(flags, token)).map_err(setup("epoll_ctl"))?;
        self.tokens.insert(token, src);
        Ok(token)
    }

    fn unwatch(&mut self, peer: &Peer) {
        let _ = self.epoll.delete(peer.fd.as_fd());
        self.tokens.remove(&peer.token);
    }

    /// Asks for `EPOLLOUT` on `peer` exactly while it has unsent frames.
    fn update_out(&mut self, peer: &mut Peer) {
        let want = !peer.out.is_empty();
        if peer.want_out == want {
            return;
        }
        peer.want_out = want;
        let mut flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
        if want {
            flags |= EpollFlags::EPOLLOUT;
        }
        let mut ev = EpollEvent::new(flags, peer.token);
        let _ = self.epoll.modify(peer.fd.as_fd(), &mut ev);
    }
}

/// The running daemon.
#[derive(Debug)]
pub struct Daemon {
    core: Supervisor,
    cfg: Config,
    reg: Registry,
    signals: SignalFd,
    started: Instant,
    live: HashMap<DriverId, Live>,
    /// The trace ring of each driver's last ended instance.
    last_trace: HashMap<DriverId, Vec<u8>>,
    client_listener: UnixListener,
    control_listener: UnixListener,
    clients: HashMap<ConnId, Peer>,
    controls: HashMap<u64, Peer>,
    next_conn: u64,
    socket_paths: Vec<PathBuf>,
    buf: Vec<u8>,
    exit: bool,
    /// The journal's writer thread, when a driver journals.
    journal: Option<Writer>,
    /// systemd's notification socket ([`crate::notify`]).
    notify: Notifier,
    /// `READY=1` went out.
    ready_sent: bool,
    /// The last `STATUS=` sent.
    last_status: String,
    /// Journal and start-up figures only the daemon sees.
    stats: DaemonStats,
    /// Descriptors held for launches and accept-and-drop ([`fds`]).
    reserve: fds::FdReserve,
    /// The effective client-connection cap ([`fds::connection_cap`]).
    conn_cap: usize,
    /// The listeners are out of the epoll set until then (`ENFILE`).
    paused_until: Option<Instant>,
    /// Connections refused at the caps since the last summary line.
    refused: u64,
    /// Bytes queued for all client connections.
    out_total: usize,
    /// Clients disconnected for not reading, for the summary line.
    slow_dropped: u64,
    /// Each client connection's credentials ([`authz`]).
    peers: HashMap<ConnId, Option<authz::Peer>>,
    /// Calls refused by a driver's allow-list, for the summary line.
    denied: u64,
}

/// Figures for `drvctl metrics` that only the daemon sees.
#[derive(Debug, Default)]
struct DaemonStats {
    /// `fdatasync` (or snapshot) time per journal batch.
    journal_sync: crate::metrics::Histogram,
    /// Records and bytes written, in batches.
    journal_batches: u64,
    journal_batch_records: u64,
    journal_bytes: u64,
    /// Reading and restoring the journal at start.
    recovery: std::time::Duration,
    /// From start to every driver settled (READY=1).
    ready_after: Option<std::time::Duration>,
}

/// Where each driver's checkpoint lives.
#[must_use]
pub fn checkpoint_path(cfg: &Config, driver: &str) -> PathBuf {
    cfg.supervisor.state_dir.join(format!("{driver}.ckpt"))
}

impl Daemon {
    /// Sets everything up: restores checkpoints, blocks signals, creates the
    /// sockets in `runtime_dir`. Launches nothing yet.
    ///
    /// # Errors
    /// [`DaemonError`] naming the file, socket or driver involved.
    pub fn new(cfg: Config, runtime_dir: &Path) -> Result<Self, DaemonError> {
        // First of all, before the journal is read and rewritten: a live
        // supervisor answers on its control socket; a socket that only
        // accepts (held by a dead supervisor's child between fork and exec)
        // or refuses is stale.
        let control_path = reinc_client::control_socket(runtime_dir);
        if supervisor_answers(&control_path) {
            return Err(DaemonError::AlreadyRunning(control_path));
        }
        let mut drivers = Vec::new();
        for d in &cfg.drivers {
            let mut ckpt = None;
            if d.persist_checkpoint {
                warn!(
                    "[SUP] {}: persist-checkpoint is deprecated: durability = \"journal\" keeps the committed state \
                     with the sessions and answers, off the event loop",
                    d.name
                );
                dirs::ensure_private_dir("state directory", &cfg.supervisor.state_dir, 0o700)?;
                let path = checkpoint_path(&cfg, &d.name);
                match checkpoint::read(&path) {
                    Ok(c) => {
                        if let Some(c) = &c {
                            info!(
                                "[SUP] restored checkpoint of {} ({} bytes) from {}",
                                d.name,
                                c.len(),
                                path.display()
                            );
                        }
                        ckpt = c;
                    }
                    Err(e) if d.on_corrupt_checkpoint == CorruptCheckpoint::StartFresh => {
                        warn!("[SUP] {e}; starting {} from its initial state", d.name);
                    }
                    Err(source) => return Err(DaemonError::Checkpoint { driver: d.name.clone(), source }),
                }
            }
            drivers.push((d.clone(), ckpt));
        }
        // Jitter only needs to differ between supervisors started together.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let seed = (u64::from(std::process::id()) << 32) ^ (now.as_nanos() as u64);
        let epoch = crate::identity::Epoch::random().map_err(|e| DaemonError::Setup {
            what: "session-id epoch".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let mut core = Supervisor::new(drivers, seed, cfg.supervisor.max_sessions, cfg.supervisor.dedup_per_session)
            .with_epoch(epoch)
            .with_journal(cfg.supervisor.journal_compact_bytes)
            .with_limits(cfg.supervisor.limits);

        let mut mask = SigSet::empty();
        for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            mask.add(s);
        }
        mask.thread_block().map_err(setup("blocking signals"))?;
        // A client that disappears mid-send must not kill us.
        let _ = nix::sys::signal::SigSet::from(Signal::SIGPIPE).thread_block();
        let signals =
            SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).map_err(setup("signalfd"))?;
        // After the mask: the writer thread inherits it, so SIGTERM reaches
        // the signalfd, not the thread's default action.
        let recovery_started = Instant::now();
        let journal = if core.journaling() { Some(open_journal(&cfg, &mut core)?) } else { None };
        let recovery_time = recovery_started.elapsed();
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(setup("epoll"))?;

        let mode = dirs::runtime_dir_mode(cfg.supervisor.client_socket_mode);
        dirs::ensure_private_dir("runtime directory", runtime_dir, mode)?;
        let client_path = reinc_client::client_socket(runtime_dir);
        let control_path = reinc_client::control_socket(runtime_dir);
        // Who may write client.sock may call every driver: configurable,
        // 0660 by default (owner and group), never wider than asked.
        let client_listener = listen_seqpacket(&client_path, cfg.supervisor.client_socket_mode)?;
        let control_listener = listen_seqpacket(&control_path, 0o600)?;

        let mut d = Self {
            core,
            cfg,
            reg: Registry { epoll, tokens: HashMap::new(), next_token: 1 },
            signals,
            started: Instant::now(),
            live: HashMap::new(),
            last_trace: HashMap::new(),
            client_listener,
            control_listener,
            clients: HashMap::new(),
            controls: HashMap::new(),
            next_conn: 1,
            socket_paths: vec![client_path, control_path],
            buf: vec![0; MAX_CONTROL_FRAME.max(MAX_FRAME + 1)],
            exit: false,
            journal,
            notify: Notifier::from_env().unwrap_or_else(|e| {
                warn!("[SUP] {e}; not notifying systemd");
                Notifier::new(None, None).expect("no socket never fails")
            }),
            ready_sent: false,
            last_status: String::new(),
            stats: DaemonStats { recovery: recovery_time, ..DaemonStats::default() },
            reserve: fds::FdReserve::new(),
            conn_cap: 0,
            paused_until: None,
            refused: 0,
            out_total: 0,
            slow_dropped: 0,
            peers: HashMap::new(),
            denied: 0,
        };
        let nofile = fds::nofile();
        d.conn_cap = fds::connection_cap(d.cfg.supervisor.limits.max_connections, nofile, d.cfg.drivers.len());
        if d.conn_cap < d.cfg.supervisor.limits.max_connections {
            info!(
                "[SUP] client connections capped at {} (max-connections {}, RLIMIT_NOFILE {nofile})",
                d.conn_cap, d.cfg.supervisor.limits.max_connections
            );
        }
        d.reg.watch(&d.signals, Source::Signals)?;
        if let Some(w) = &d.journal {
            let token = d.reg.next_token;
            d.reg.next_token += 1;
            d.reg
                .epoll
                .add(w.wake_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
                .map_err(setup("epoll_ctl journal"))?;
            d.reg.tokens.insert(token, Source::Journal);
        }
        d.reg.watch(&d.client_listener, Source::ClientListener)?;
        d.reg.watch(&d.control_listener, Source::ControlListener)?;
        Ok(d)
    }

    fn now(&self) -> Millis {
        Millis(self.started.elapsed().as_millis() as u64)
    }

    /// Runs until shutdown completes.
    ///
    /// # Errors
    /// Only if `epoll_wait` itself fails.
    pub fn run(mut self) -> Result<(), DaemonError> {
        let now = self.now();
        let acts = self.core.handle(now, Event::Start);
        self.execute(acts);
        let mut events = vec![EpollEvent::empty(); 64];
        while !self.exit {
            self.tell_systemd();
            let mut wait = self.core.next_deadline().map(|d| d.0.saturating_sub(self.now().0));
            let ping = self.notify.next_ping().map(|t| t.saturating_duration_since(Instant::now()).as_millis() as u64);
            let paused =
                self.paused_until.map(|until| until.saturating_duration_since(Instant::now()).as_millis() as u64);
            for w in [ping, paused].into_iter().flatten() {
                wait = Some(wait.map_or(w, |x| x.min(w)));
            }
            let timeout = match wait {
                Some(w) => EpollTimeout::try_from(w.min(60_000)).unwrap_or(EpollTimeout::NONE),
                None => EpollTimeout::NONE,
            };
            let n = match self.reg.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(setup("epoll_wait")(e)),
            };
            for ev in &events[..n] {
                let Some(src) = self.reg.tokens.get(&ev.data()).copied() else { continue };
                self.on_ready(src, ev.events());
            }
            self.resume_listeners();
            let now = self.now();
            let acts = self.core.handle(now, Event::Tick);
            self.execute(acts);
        }
        if let Some(w) = self.journal.take() {
            // Answers held for the last records go out once they are durable.
            let upto = w.finish(std::time::Duration::from_secs(5)).iter().filter_map(durable_lsn).max();
            if let Some(upto) = upto {
                let now = self.now();
                let acts = self.core.handle(now, Event::Journaled { upto });
                self.execute(acts);
            }
            for (_, peer) in self.clients.iter_mut() {
                let _ = flush(peer);
            }
        }
        for p in &self.socket_paths {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }

    fn on_ready(&mut self, src: Source, flags: EpollFlags) {
        match src {
            Source::Signals => self.on_signals(),
            Source::ClientListener => {
                while let Some(stream) = self.accept(false) {
                    let fd = OwnedFd::from(stream);
                    let _ = set_nonblocking(&fd);
                    let conn = ConnId(self.next_conn);
                    self.next_conn += 1;
                    let Ok(token) = self.reg.watch(&fd, Source::Client(conn)) else { continue };
                    self.peers.insert(conn, authz::peer_of(&fd));
                    self.clients.insert(conn, Peer::new(fd, token));
                    let now = self.now();
                    let acts = self.core.handle(now, Event::ClientConnected { conn });
                    self.execute(acts);
                }
            }
            Source::ControlListener => {
                while let Some(stream) = self.accept(true) {
                    let fd = OwnedFd::from(stream);
                    let peer = authz::peer_of(&fd);
                    if !authz::may_control(peer) {
                        warn!(
                            "[SUP] control connection from uid {} (pid {}) refused: control.sock is for uid {} and root",
                            peer.map_or(u32::MAX, |p| p.uid),
                            peer.map_or(0, |p| p.pid),
                            nix::unistd::geteuid()
                        );
                        continue;
                    }
                    let _ = set_nonblocking(&fd);
                    let id = self.next_conn;
                    self.next_conn += 1;
                    let Ok(token) = self.reg.watch(&fd, Source::Control(id)) else { continue };
                    self.controls.insert(id, Peer::new(fd, token));
                }
            }
            Source::Client(conn) => {
                if flags.contains(EpollFlags::EPOLLOUT) {
                    self.flush_client(conn);
                }
                self.on_client_readable(conn);
            }
            Source::Control(id) => self.on_control_readable(id),
            Source::Journal => self.on_journal(),
            Source::Driver(driver, generation) => {
                if flags.contains(EpollFlags::EPOLLOUT) {
                    self.flush_driver(driver);
                }
                self.drain_driver(driver, generation);
            }
        }
    }

    /// Reports of the journal writer: durability moves the core on.
    fn on_journal(&mut self) {
        let Some(w) = &self.journal else { return };
        let path = w.path().display().to_string();
        let mut upto = None;
        for r in w.drain() {
            match r {
                FromWriter::Durable { upto: u, records, bytes, sync, .. } => {
                    upto = upto.max(Some(u));
                    self.stats.journal_sync.observe(sync.as_secs_f64());
                    self.stats.journal_batches += 1;
                    self.stats.journal_batch_records += records as u64;
                    self.stats.journal_bytes += bytes as u64;
                }
                FromWriter::Failing { error } => {
                    warn!("[SUP] cannot write the journal: {error} (answers held, retrying)")
                }
                FromWriter::Recovered { attempts } => {
                    info!("[SUP] journal {path} written after {attempts} failed attempts; releasing held answers");
                }
            }
        }
        if let Some(upto) = upto {
            let now = self.now();
            let acts = self.core.handle(now, Event::Journaled { upto });
            self.execute(acts);
        }
    }

    /// `READY=1` once every driver has settled, `STATUS=` when the picture
    /// changes, and the watchdog ping; all from the event loop.
    fn tell_systemd(&mut self) {
        if self.stats.ready_after.is_none() {
            let rows = self.core.status(self.now());
            if rows.iter().all(|r| matches!(r.state.name(), "running" | "quarantined" | "stopped")) {
                self.stats.ready_after = Some(self.started.elapsed());
            }
        }
        if !self.notify.active() {
            return;
        }
        self.notify.ping_if_due(Instant::now());
        let rows = self.core.status(self.now());
        let running = rows.iter().filter(|r| r.state.name() == "running").count();
        let quarantined = rows.iter().filter(|r| r.state.name() == "quarantined").count();
        let status = format!("{running} of {} drivers running, {quarantined} quarantined", rows.len());
        let settled = rows.iter().all(|r| matches!(r.state.name(), "running" | "quarantined" | "stopped"));
        if settled && !self.ready_sent {
            self.ready_sent = true;
            self.notify.send(&format!("READY=1\nSTATUS={status}\nMAINPID={}", std::process::id()));
            self.last_status = status;
        } else if self.ready_sent && status != self.last_status {
            self.notify.send(&format!("STATUS={status}"));
            self.last_status = status;
        }
    }

    /// Accepts one connection on the client (or control) listener, within
    /// the caps; `None` when there is nothing (more) to accept now.
    ///
    /// Over a cap, or when the descriptor table is full, the connection is
    /// still taken off the backlog and closed at once, so the listener stops
    /// being readable and the loop sleeps (see [`fds`]).
    fn accept(&mut self, control: bool) -> Option<std::os::unix::net::UnixStream> {
        loop {
            let listener = if control { &self.control_listener } else { &self.client_listener };
            let accepted = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.raw_os_error().is_some_and(|n| n == Errno::EMFILE as i32 || n == Errno::ENFILE as i32) => {
                    // The classic trick: free the reserve, take the
                    // connection off the backlog, close it, take the reserve
                    // back.
                    self.reserve.release();
                    let dropped = listener.accept().is_ok();
                    self.reserve.refill();
                    self.refused += 1;
                    if !dropped || self.reserve.held() < fds::RESERVE {
                        self.pause_listeners();
                        return None;
                    }
                    self.summarize_refused("out of file descriptors");
                    continue;
                }
                Err(_) => return None,
            };
            let open = if control { self.controls.len() } else { self.clients.len() };
            let cap = if control { fds::MAX_CONTROL_CONNECTIONS } else { self.conn_cap };
            if open < cap {
                return Some(accepted);
            }
            drop(accepted);
            self.refused += 1;
            self.summarize_refused(if control {
                "control connections at their cap"
            } else {
                "max-connections reached"
            });
        }
    }

    /// One line for the first refused connection and then one per 1024, not
    /// one per connection (a flood must not flood the log).
    fn summarize_refused(&mut self, why: &str) {
        if self.refused == 1 || self.refused.is_multiple_of(1024) {
            warn!("[SUP] refusing connections ({why}): {} refused so far", self.refused);
        }
    }

    /// Takes both listeners out of the epoll set for [`fds::ACCEPT_PAUSE`].
    fn pause_listeners(&mut self) {
        if self.paused_until.is_some() {
            return;
        }
        warn!(
            "[SUP] out of file descriptors even with the reserve released; not accepting for {:?}",
            fds::ACCEPT_PAUSE
        );
        let _ = self.reg.epoll.delete(&self.client_listener);
        let _ = self.reg.epoll.delete(&self.control_listener);
        self.paused_until = Some(Instant::now() + fds::ACCEPT_PAUSE);
    }

    /// Puts the listeners back once the pause is over.
    fn resume_listeners(&mut self) {
        if self.paused_until.is_some_and(|t| Instant::now() >= t) {
            self.paused_until = None;
            let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            for (l, src) in
                [(&self.client_listener, Source::ClientListener), (&self.control_listener, Source::ControlListener)]
            {
                if let Some((&token, _)) = self.reg.tokens.iter().find(|(_, s)| **s == src) {
                    let _ = self.reg.epoll.add(l, EpollEvent::new(flags, token));
                }
            }
        }
    }

    fn on_signals(&mut self) {
        let mut reap = false;
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => reap = true,
                Ok(s @ (Signal::SIGTERM | Signal::SIGINT)) => {
                    info!("[SUP] received {}", s.as_str());
                    self.notify.send(&format!("STOPPING=1\nSTATUS=stopping drivers ({})", s.as_str()));
                    let now = self.now();
                    let acts = self.core.handle(now, Event::Shutdown);
                    self.execute(acts);
                }
                Ok(s) => debug!("ignoring {}", s.as_str()),
                Err(_) => {}
            }
        }
        if reap {
            self.reap();
        }
    }

    /// Reaps every exited child. SIGCHLD coalesces, so loop until none is left.
    fn reap(&mut self) {
        loop {
            let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!("waitpid failed: {e}");
                    return;
                }
            };
            let Some((&driver, live)) = self.live.iter().find(|(_, l)| l.pid == pid) else {
                debug!("reaped unknown child {pid}");
                continue;
            };
            let generation = live.generation;
            // Contract: frames sent just before death count, so drain first.
            self.drain_driver(driver, generation);
            let live = self.live.remove(&driver).expect("found above");
            if let Some(peer) = live.peer {
                self.reg.unwatch(&peer);
            }
            let mut post_mortem = None;
            if let Some(t) = live.trace {
                let mut ring = vec![0u8; reinc_ringbuf::shared::RING_BYTES];
                if t.read_exact_at(&mut ring, 0).is_ok() {
                    post_mortem = self.last_events(driver, generation, &ring);
                    self.last_trace.insert(driver, ring);
                }
            }
            if let ExitStatus::Signal(s) = status {
                debug!("{} (pid {pid}) killed by {}", self.core.config(driver).name, signal_name(s));
            }
            let now = self.now();
            let mut acts = self.core.handle(now, Event::Exited { driver, generation, status });
            // The post-mortem goes right under the "crashed" line.
            let at = acts
                .iter()
                .position(|a| matches!(a, Action::Say(l) if l.contains(" crashed (") || l.contains(" failed (")));
            if let (Some(i), Some(line)) = (at, post_mortem) {
                acts.insert(i + 1, Action::Say(line));
            }
            self.execute(acts);
        }
    }

    /// One line with the last events of a dead instance's trace ring
    /// (post-mortem; `drvctl trace NAME` shows the whole ring).
    fn last_events(&self, driver: DriverId, generation: Generation, ring: &[u8]) -> Option<String> {
        let records: Vec<_> = reinc_ringbuf::shared::records(ring).collect();
        // A missing or corrupt legend only costs the names: driver codes print in hex.
        let legend = reinc_ringbuf::shared::legend(ring).ok();
        let last: Vec<String> = records
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(|r| reinc_ringbuf::shared::describe(r, legend.as_ref()).to_string())
            .collect();
        if last.is_empty() {
            return None;
        }
        Some(format!("{} {generation} last events: {}", self.core.config(driver).name, last.join("; ")))
    }

    fn drain_driver(&mut self, driver: DriverId, generation: Generation) {
        loop {
            let Some(live) = self.live.get(&driver).filter(|l| l.generation == generation) else { return };
            let Some(peer) = &live.peer else { return };
            let n = match recv(peer.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC) {
                Ok(0) => {
                    // EOF: the instance closed its end (it is exiting).
                    let peer = self.live.get_mut(&driver).and_then(|l| l.peer.take()).expect("peer");
                    self.reg.unwatch(&peer);
                    return;
                }
                Ok(n) => n,
                Err(Errno::EAGAIN) => return,
                // A peer that died with unread requests in its queue makes the
                // kernel report ECONNRESET once, *before* the frames it sent
                // are read (sock_error is checked ahead of the queue). Those
                // frames are replies that must be applied, so keep reading.
                Err(Errno::EINTR | Errno::ECONNRESET) => continue,
                Err(e) => {
                    warn!("recv from {}: {e}", self.core.config(driver).name);
                    return;
                }
            };
            let now = self.now();
            let buf = std::mem::take(&mut self.buf);
            let acts = if n > MAX_FRAME {
                let error = WireError::Oversized { len: n as u32 }.to_string();
                self.core.handle(now, Event::DriverGarbage { driver, generation, error })
            } else {
                match reinc_proto::decode::<DriverFrame<'_>>(&buf[..n]) {
                    Ok(f) if matches!(f.msg, reinc_proto::FromDriver::Ready) && self.unsandboxed(driver).is_some() => {
                        let error = self.unsandboxed(driver).unwrap_or_default();
                        self.core.handle(now, Event::DriverGarbage { driver, generation, error })
                    }
                    Ok(f) => self.core.handle(now, Event::FromDriver { driver, frame_gen: f.generation, msg: f.msg }),
                    Err(e) => self.core.handle(now, Event::DriverGarbage { driver, generation, error: e.to_string() }),
                }
            };
            self.buf = buf;
            self.execute(acts);
        }
    }

    /// Checked from outside when a driver says `Ready`: is it in the sandbox
    /// its config asks for? `Some(why)` if not (it is then killed as
    /// misbehaving, before any request reaches it).
    fn unsandboxed(&self, driver: DriverId) -> Option<String> {
        let p = &self.core.config(driver).privileges;
        if !p.sandbox {
            return None;
        }
        let pid = self.live.get(&driver)?.pid;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        crate::privileges::check_status(&status, p).err().map(|e| format!("did not enter its sandbox: {e}"))
    }

    fn on_client_readable(&mut self, conn: ConnId) {
        loop {
            let Some(peer) = self.clients.get(&conn) else { return };
            let n = match recv(peer.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC) {
                Ok(0) if hung_up(&peer.fd) => {
                    self.drop_client(conn);
                    return;
                }
                // An empty frame (not EOF): decoded below, it is Truncated.
                Ok(n) => n,
                Err(Errno::EAGAIN) => return,
                // Reported once ahead of frames still queued (see drain_driver).
                Err(Errno::EINTR | Errno::ECONNRESET) => continue,
                Err(e) => {
                    warn!("recv from client {}: {e}", conn.0);
                    self.drop_client(conn);
                    return;
                }
            };
            let now = self.now();
            let buf = std::mem::take(&mut self.buf);
            let decoded = if n > MAX_FRAME {
                Err(WireError::Oversized { len: u32::try_from(n).unwrap_or(u32::MAX) })
            } else {
                reinc_proto::decode::<ClientToSup<'_>>(&buf[..n])
            };
            let acts = match decoded {
                Ok(ClientToSup::Hello { resume }) => self.core.handle(now, Event::Hello { conn, resume }),
                Ok(ClientToSup::Call { seq, driver, .. }) if !self.may_call(conn, driver) => {
                    self.deny(conn, seq, driver);
                    Vec::new()
                }
                Ok(ClientToSup::Call { seq, driver, body, acked_below }) => {
                    self.core.handle(now, Event::Call { conn, seq, driver, body, acked_below })
                }
                Err(error) => {
                    debug!("client {} sent a bad frame: {error}", conn.0);
                    self.send_client(conn, &SupToClient::Rejected { error });
                    Vec::new()
                }
            };
            self.buf = buf;
            self.execute(acts);
        }
    }

    /// The allow-list of `driver` ([`authz::may_call`]); an unknown driver
    /// is the core's to answer.
    fn may_call(&self, conn: ConnId, driver: &str) -> bool {
        let Some(id) = self.core.driver_id(driver) else { return true };
        authz::may_call(self.peers.get(&conn).copied().flatten(), &self.core.config(id).privileges)
    }

    /// Answers a call refused by the allow-list: definite, never queued.
    fn deny(&mut self, conn: ConnId, seq: u64, driver: &str) {
        self.denied += 1;
        if self.denied == 1 || self.denied.is_multiple_of(1024) {
            let peer = self.peers.get(&conn).copied().flatten();
            warn!(
                "[SUP] client {} (uid {}, gid {}) may not call {driver}: not in its allow-uids/allow-gids; {} refused so far",
                conn.0,
                peer.map_or(u32::MAX, |p| p.uid),
                peer.map_or(u32::MAX, |p| p.gid),
                self.denied
            );
        }
        self.send_client(conn, &SupToClient::Failed { seq, error: reinc_proto::CallError::NotAllowed });
    }

    fn drop_client(&mut self, conn: ConnId) {
        self.peers.remove(&conn);
        if let Some(peer) = self.clients.remove(&conn) {
            self.out_total -= peer.queued;
            self.reg.unwatch(&peer);
        }
        let now = self.now();
        let acts = self.core.handle(now, Event::ClientGone { conn });
        self.execute(acts);
    }

    fn on_control_readable(&mut self, id: u64) {
        loop {
            let Some(peer) = self.controls.get(&id) else { return };
            let n = match recv(peer.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC) {
                Ok(n) if n > 0 || !hung_up(&peer.fd) => n,
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                _ => {
                    // EOF or error: drvctl is done.
                    let peer = self.controls.remove(&id).expect("present");
                    self.reg.unwatch(&peer);
                    return;
                }
            };
            let resp = if n > MAX_FRAME {
                ControlResponse::Error(format!("control request of {n} bytes is too large"))
            } else {
                match reinc_proto::decode::<ControlRequest>(&self.buf[..n]) {
                    Ok(req) => self.control(&req),
                    Err(e) => ControlResponse::Error(format!("bad control request: {e}")),
                }
            };
            let frame = match reinc_proto::encode_vec(&resp) {
                Ok(f) => f,
                Err(_) => match reinc_proto::encode_vec(&ControlResponse::Error("response too large".into())) {
                    Ok(f) => f,
                    Err(_) => return,
                },
            };
            // Control responses may exceed MAX_FRAME (a trace ring); the
            // socket carries up to the kernel's limit, so send directly.
            let Some(peer) = self.controls.get(&id) else { return };
            if let Err(e) = send(peer.fd.as_raw_fd(), &frame, MsgFlags::MSG_NOSIGNAL) {
                debug!("control reply: {e}");
            }
        }
    }

    fn control(&mut self, req: &ControlRequest) -> ControlResponse {
        let now = self.now();
        if let ControlRequest::Trace { driver } = req {
            let Some(id) = self.core.driver_id(driver) else {
                return ControlResponse::Error(format!(
                    "no driver named {} is configured",
                    crate::limits::quoted(driver)
                ));
            };
            if let Some(ring) = self.last_trace.get(&id) {
                return ControlResponse::Trace(ring.clone());
            }
            if let Some(t) = self.live.get(&id).and_then(|l| l.trace.as_ref()) {
                let mut ring = vec![0u8; reinc_ringbuf::shared::RING_BYTES];
                if t.read_exact_at(&mut ring, 0).is_ok() {
                    return ControlResponse::Trace(ring);
                }
            }
            return ControlResponse::Error(format!("{driver} has no trace yet"));
        }
        let (mut resp, acts) = self.core.control(now, req);
        self.execute(acts);
        if let ControlResponse::Metrics(text) = &mut resp {
            text.push_str(&self.daemon_metrics());
        }
        resp
    }

    /// The families only the daemon can fill.
    fn daemon_metrics(&self) -> String {
        use crate::metrics::Text;
        let s = &self.stats;
        let mut t = Text::default();
        t.family("reinc_journal_sync_seconds", "histogram", "Time to make one journal batch durable (fdatasync).");
        t.histogram("reinc_journal_sync_seconds", &[], &s.journal_sync);
        t.family("reinc_journal_batches_total", "counter", "Journal batches written (one fdatasync each).");
        t.sample("reinc_journal_batches_total", &[], s.journal_batches);
        t.family("reinc_journal_batch_records_total", "counter", "Records written in journal batches.");
        t.sample("reinc_journal_batch_records_total", &[], s.journal_batch_records);
        t.family("reinc_journal_bytes_total", "counter", "Bytes written to the journal.");
        t.sample("reinc_journal_bytes_total", &[], s.journal_bytes);
        t.family(
            "reinc_supervisor_recovery_seconds",
            "gauge",
            "Time spent reading and restoring the journal at start.",
        );
        t.sample("reinc_supervisor_recovery_seconds", &[], s.recovery.as_secs_f64());
        t.family(
            "reinc_supervisor_ready_seconds",
            "gauge",
            "Time from start until every driver had settled (READY=1).",
        );
        t.sample("reinc_supervisor_ready_seconds", &[], s.ready_after.map_or(f64::NAN, |d| d.as_secs_f64()));
        t.family("reinc_supervisor_uptime_seconds", "gauge", "Time since this supervisor started.");
        t.sample("reinc_supervisor_uptime_seconds", &[], self.started.elapsed().as_secs_f64());
        t.finish()
    }

    fn execute(&mut self, acts: Vec<Action>) {
        let mut work: VecDeque<Action> = acts.into();
        while let Some(a) = work.pop_front() {
            match a {
                Action::Spawn { driver, generation } => {
                    let now = self.now();
                    // The reserve is for exactly this: a launch must not fail
                    // because clients hold every descriptor.
                    let mut spawned = self.spawn(driver, generation);
                    if matches!(&spawned, Err(e) if e.exhausted) {
                        self.reserve.release();
                        spawned = self.spawn(driver, generation);
                        self.reserve.refill();
                    }
                    let more = match spawned {
                        Ok(pid) => self.core.handle(now, Event::Spawned { driver, generation, pid }),
                        Err(SpawnError { message: error, exhausted: true }) => {
                            self.core.handle(now, Event::SpawnDeferred { driver, generation, error })
                        }
                        Err(SpawnError { message: error, .. }) => {
                            self.core.handle(now, Event::SpawnFailed { driver, generation, error })
                        }
                    };
                    for m in more.into_iter().rev() {
                        work.push_front(m);
                    }
                }
                Action::ToDriver { driver, generation, msg } => self.send_driver(driver, generation, &msg),
                Action::Kill { driver, generation, signal } => {
                    if let Some(l) = self.live.get(&driver).filter(|l| l.generation == generation) {
                        let sig = match signal {
                            KillSignal::Term => Signal::SIGTERM,
                            KillSignal::Kill => Signal::SIGKILL,
                        };
                        if let Err(e) = kill(l.pid, sig) {
                            debug!("kill {} {}: {e}", l.pid, sig.as_str());
                        }
                    }
                }
                Action::Persist { driver, checkpoint } => {
                    // The core holds this driver's replies until it hears
                    // the state is durable; a failure is retried on its
                    // deadline, and the core says so once per episode.
                    let path = checkpoint_path(&self.cfg, &self.core.config(driver).name);
                    let outcome = match checkpoint::write(&path, &checkpoint) {
                        Ok(()) => PersistOutcome::Durable,
                        Err(e) => {
                            debug!("checkpoint write failed: {e}");
                            PersistOutcome::Failed { path: path.display().to_string(), error: persist_error(&e) }
                        }
                    };
                    let now = self.now();
                    let more = self.core.handle(now, Event::Persisted { driver, outcome });
                    for m in more.into_iter().rev() {
                        work.push_front(m);
                    }
                }
                Action::ToClient { conn, msg } => {
                    let wire = match &msg {
                        ClientMsg::Welcome { client } => SupToClient::Welcome { client: *client },
                        ClientMsg::Reply { seq, body } => SupToClient::Reply { seq: *seq, body },
                        ClientMsg::Failed { seq, error } => SupToClient::Failed { seq: *seq, error: *error },
                    };
                    self.send_client(conn, &wire);
                }
                Action::Journal { lsn, record } => {
                    let snapshot = matches!(record, Record::Snapshot(_));
                    match &self.journal {
                        Some(w) => w.send(ToWriter { lsn, bytes: journal::frame(&record), snapshot }),
                        // Not journaling: nothing to wait for.
                        None => {
                            let now = self.now();
                            let more = self.core.handle(now, Event::Journaled { upto: lsn });
                            for m in more.into_iter().rev() {
                                work.push_front(m);
                            }
                        }
                    }
                }
                Action::Say(line) => info!("[SUP] {line}"),
                Action::Exit => self.exit = true,
            }
        }
    }

    fn spawn(&mut self, driver: DriverId, generation: Generation) -> Result<u32, SpawnError> {
        let cfg = self.core.config(driver).clone();
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| SpawnError::errno(format!("socketpair for {}: {e}", cfg.name), e as i32))?;
        let trace = memfd_create(format!("reinc-trace-{}", cfg.name).as_str(), MFdFlags::MFD_CLOEXEC)
            .ok()
            .and_then(|fd| nix::unistd::ftruncate(&fd, reinc_ringbuf::shared::RING_BYTES as i64).ok().map(|()| fd));
        // The channel becomes the child's stdin: std dup2()s it into place, so
        // our end keeps CLOEXEC and the driver adopts fd 0 without
        // pidfd_getfd (which seccomp profiles may forbid). The trace memfd is
        // inherited by number; the daemon is single-threaded, so no other
        // fork can inherit it in the window where it lacks CLOEXEC.
        let mut cmd = Command::new(&cfg.exec);
        // A clean environment: only the allow-listed variables pass on.
        cmd.env_clear();
        for k in &cfg.privileges.env {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        let p = &cfg.privileges;
        if p.sandbox {
            cmd.env("REINC_SANDBOX", "1")
                .env("REINC_CAPABILITIES", p.capabilities.join(","))
                .env("REINC_SECCOMP", if p.seccomp { "1" } else { "0" });
        }
        // std sets the gid, clears the supplementary groups (when root) and
        // sets the uid in the child, just before exec.
        if let Some(g) = p.gid {
            cmd.gid(g);
        }
        if let Some(u) = p.uid {
            cmd.uid(u);
        }
        cmd.args(&cfg.args)
            .env("REINC_IPC_FD", "0")
            .env("REINC_DRIVER_NAME", &cfg.name)
            .env("REINC_SUPERVISOR_PID", std::process::id().to_string())
            // systemd's notifications are the supervisor's, not a driver's.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::from(theirs))
            // Own process group: a terminal's Ctrl-C reaches the supervisor
            // only, which then stops drivers in order.
            .process_group(0);
        if let Some(t) = &trace {
            let _ = inheritable(t, true);
            cmd.env("REINC_TRACE_FD", t.as_raw_fd().to_string());
        }
        if let Some(f) = &cfg.fault {
            cmd.env("REINC_FAULT", f.to_string());
        }
        if let Some(l) = &cfg.exec_log {
            cmd.env("REINC_EXEC_LOG", l);
        }
        let spawned = cmd.spawn();
        // `cmd` owns the child's end; drop it so EOF reaches us when the child dies.
        drop(cmd);
        let trace = trace.map(|t| {
            let _ = inheritable(&t, false);
            File::from(t)
        });
        let child = spawned
            .map_err(|e| SpawnError::errno(format!("{}: {e}", cfg.exec.display()), e.raw_os_error().unwrap_or(0)))?;
        let pid = Pid::from_raw(child.id() as i32);
        // The child is reaped through waitpid(-1); std's handle is not needed.
        drop(child);
        set_nonblocking(&ours).map_err(|e| SpawnError::errno(format!("fcntl: {e}"), e as i32))?;
        let token = self
            .reg
            .watch(&ours, Source::Driver(driver, generation))
            .map_err(|e| SpawnError { message: format!("epoll: {e}"), exhausted: false })?;
        self.live.insert(driver, Live { generation, pid, peer: Some(Peer::new(ours, token)), trace });
        Ok(pid.as_raw() as u32)
    }

    fn send_driver(&mut self, driver: DriverId, generation: Generation, msg: &DriverMsg) {
        let wire = match msg {
            DriverMsg::Init { generation, checkpoint } => {
                ToDriver::Init { generation: *generation, checkpoint: checkpoint.as_deref() }
            }
            DriverMsg::Request { id, body } => ToDriver::Request { id: *id, body },
            DriverMsg::Ping { nonce } => ToDriver::Ping { nonce: *nonce },
            DriverMsg::Inject(p) => ToDriver::Inject(*p),
            DriverMsg::Shutdown => ToDriver::Shutdown,
        };
        let frame = match reinc_proto::encode_vec(&wire) {
            Ok(f) => f,
            Err(e) => {
                warn!("cannot encode a message for {}: {e}", self.core.config(driver).name);
                return;
            }
        };
        let Some(live) = self.live.get_mut(&driver).filter(|l| l.generation == generation) else { return };
        let Some(peer) = live.peer.as_mut() else { return };
        if queue_or_send(peer, frame) == Err(SendError::Overflow) {
            // The instance does not read at all; heartbeats will catch it.
            warn!("{}: outgoing queue overflow; dropping frames", self.core.config(driver).name);
        }
        self.reg.update_out(peer);
    }

    fn flush_driver(&mut self, driver: DriverId) {
        let Some(peer) = self.live.get_mut(&driver).and_then(|l| l.peer.as_mut()) else { return };
        let _ = flush(peer);
        self.reg.update_out(peer);
    }

    fn send_client(&mut self, conn: ConnId, msg: &SupToClient<'_>) {
        let Ok(frame) = reinc_proto::encode_vec(msg) else { return };
        let limits = self.cfg.supervisor.limits;
        let Some(peer) = self.clients.get_mut(&conn) else { return };
        let before = peer.queued;
        let sent = queue_or_send(peer, frame);
        self.out_total = self.out_total + peer.queued - before;
        let over = peer.queued > limits.out_bytes_per_connection;
        match sent {
            Ok(()) if !over => {}
            Err(SendError::Gone) => {
                self.drop_client(conn);
                return;
            }
            Ok(()) | Err(SendError::Overflow) => {
                self.drop_slow_client(conn, "does not read its replies");
                return;
            }
        }
        if let Some(peer) = self.clients.get_mut(&conn) {
            self.reg.update_out(peer);
        }
        // Over the total: the connection with the most queued goes first.
        while self.out_total > limits.out_bytes_total {
            let Some((&worst, _)) = self.clients.iter().max_by_key(|(_, p)| p.queued) else { break };
            self.drop_slow_client(worst, "holds the most unsent replies while out-bytes-total is exceeded");
        }
    }

    /// Disconnects a client that does not read (it may resume and get its
    /// replies from the dedup table); one summary line per 64.
    fn drop_slow_client(&mut self, conn: ConnId, why: &str) {
        let queued = self.clients.get(&conn).map_or(0, |p| p.queued);
        self.slow_dropped += 1;
        if self.slow_dropped == 1 || self.slow_dropped.is_multiple_of(64) {
            warn!(
                "[SUP] client {} {why} ({queued} bytes queued); disconnecting it (it may resume); {} so far",
                conn.0, self.slow_dropped
            );
        }
        self.drop_client(conn);
    }

    fn flush_client(&mut self, conn: ConnId) {
        let Some(peer) = self.clients.get_mut(&conn) else { return };
        let before = peer.queued;
        let flushed = flush(peer);
        self.out_total = self.out_total + peer.queued - before;
        if flushed.is_err() {
            self.drop_client(conn);
            return;
        }
        self.reg.update_out(peer);
    }
}

/// Why a launch failed, and whether for lack of resources.
#[derive(Debug)]
struct SpawnError {
    message: String,
    /// Out of descriptors, memory or processes ([`fds::exhausted`]).
    exhausted: bool,
}

impl SpawnError {
    fn errno(message: String, errno: i32) -> Self {
        Self { message, exhausted: fds::exhausted(errno) }
    }
}

/// Why a frame could not be queued for a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendError {
    /// The peer closed its end.
    Gone,
    /// The peer has not read [`MAX_OUT_FRAMES`] frames.
    Overflow,
}

fn queue_or_send(peer: &mut Peer, frame: Vec<u8>) -> Result<(), SendError> {
    peer.queued += frame.len();
    peer.out.push_back(frame);
    flush(peer).map_err(|()| SendError::Gone)?;
    if peer.out.len() > MAX_OUT_FRAMES {
        peer.out.clear();
        peer.queued = 0;
        return Err(SendError::Overflow);
    }
    Ok(())
}

/// Sends queued frames until the socket would block. `Err` if the peer is gone.
fn flush(peer: &mut Peer) -> Result<(), ()> {
    while let Some(f) = peer.out.front() {
        match send(peer.fd.as_raw_fd(), f, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL) {
            Ok(_) => {
                let f = peer.out.pop_front().expect("front exists");
                peer.queued -= f.len();
            }
            Err(Errno::EAGAIN) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(_) => {
                peer.out.clear();
                peer.queued = 0;
                return Err(());
            }
        }
    }
    Ok(())
}

fn durable_lsn(r: &FromWriter) -> Option<u64> {
    match r {
        FromWriter::Durable { upto, .. } => Some(*upto),
        _ => None,
    }
}

/// Reads the journal, restores what it holds into `core`, and starts the
/// writer on a fresh journal that holds exactly that.
fn open_journal(cfg: &Config, core: &mut Supervisor) -> Result<Writer, DaemonError> {
    let dir = &cfg.supervisor.state_dir;
    std::fs::create_dir_all(dir).map_err(setup(format!("state directory {}", dir.display())))?;
    let path = journal::path(dir);
    let loaded =
        journal::load(&path, cfg.supervisor.journal_recovery).map_err(|source| DaemonError::Journal { source })?;
    if loaded.unconfirmed > 0 {
        info!(
            "[SUP] journal {}: ignoring the last {} bytes, a batch written but never confirmed (the previous \
             supervisor died writing it)",
            path.display(),
            loaded.unconfirmed
        );
    }
    if let Some(damage) = &loaded.truncated {
        warn!("[SUP] {damage}; truncated at the last valid record ({} bytes kept)", loaded.valid_bytes);
    }
    let r = core.recover(Millis(0), loaded.image);
    if loaded.records > 0 {
        let requests: usize = r.requests.iter().map(|(_, n)| n).sum();
        info!(
            "[SUP] recovered {} sessions, {requests} accepted requests and {} committed states from {} ({} records)",
            r.sessions,
            r.checkpoints,
            path.display(),
            loaded.records
        );
    }
    for p in &r.dropped {
        warn!("[SUP] journal {}: {p}", path.display());
    }
    Writer::start(&path, &Record::Snapshot(core.image())).map_err(|source| DaemonError::Journal { source })
}

/// The error of a failed checkpoint write, naming the file or directory
/// that failed when it is not the checkpoint file itself.
fn persist_error(e: &checkpoint::CheckpointError) -> String {
    match e {
        checkpoint::CheckpointError::Io { path, source } => format!("{}: {source}", path.display()),
        other => other.to_string(),
    }
}

/// After `recv` returned 0 on a `SOCK_SEQPACKET` socket: did the peer hang
/// up, or did it send an empty frame? Both read as 0 bytes; only a hang-up
/// sets `POLLRDHUP` (the kernel marks the socket shut down before it wakes
/// the reader, so the flag is visible once EOF is).
fn hung_up(fd: &OwnedFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    // nix names no POLLRDHUP; the bit is libc's.
    let rdhup = PollFlags::from_bits_retain(nix::libc::POLLRDHUP);
    let mut fds = [PollFd::new(fd.as_fd(), rdhup)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0].revents().is_none_or(|r| r.intersects(rdhup | PollFlags::POLLHUP | PollFlags::POLLERR)),
        Err(_) => true,
    }
}

fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    let fl = nix::fcntl::OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(fl | nix::fcntl::OFlag::O_NONBLOCK)).map(drop)
}

fn inheritable(fd: &OwnedFd, yes: bool) -> nix::Result<()> {
    let flags = if yes { FdFlag::empty() } else { FdFlag::FD_CLOEXEC };
    fcntl(fd, FcntlArg::F_SETFD(flags)).map(drop)
}

/// True if a supervisor answers a status request on the control socket at
/// `path` within a second. Connecting is not enough: after a SIGKILL the
/// dead supervisor's listening socket can outlive it for a moment in a
/// child between fork and exec, which accepts nothing.
fn supervisor_answers(path: &Path) -> bool {
    let Ok(addr) = UnixAddr::new(path) else { return false };
    let Ok(fd) = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None) else { return false };
    if connect(fd.as_raw_fd(), &addr).is_err() {
        return false;
    }
    let timeout = nix::sys::time::TimeVal::new(1, 0);
    if nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &timeout).is_err() {
        return true;
    }
    let Ok(frame) = reinc_proto::encode_vec(&ControlRequest::Status) else { return true };
    if send(fd.as_raw_fd(), &frame, MsgFlags::MSG_NOSIGNAL).is_err() {
        return false;
    }
    let mut buf = vec![0u8; MAX_CONTROL_FRAME];
    matches!(recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()), Ok(n) if n > 0)
}

/// Creates a listening `SOCK_SEQPACKET` socket at `path` with `mode`.
fn listen_seqpacket(path: &Path, mode: u32) -> Result<UnixListener, DaemonError> {
    let what = || format!("socket {}", path.display());
    let addr = UnixAddr::new(path).map_err(setup(what()))?;
    if path.exists() {
        // Stale: `supervisor_answers` found no live supervisor.
        std::fs::remove_file(path).map_err(setup(what()))?;
    }
    let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
        .map_err(setup(what()))?;
    // Restrictive umask while binding, so the socket never exists with a
    // wider mode than asked; then set the exact mode.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = bind(fd.as_raw_fd(), &addr);
    nix::sys::stat::umask(old);
    bound.map_err(setup(what()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(setup(what()))?;
    listen(&fd, Backlog::new(64).unwrap_or(Backlog::MAXCONN)).map_err(setup(what()))?;
    Ok(UnixListener::from(fd))
}
