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
//!
//! # Layout
//! This file holds setup, the loop and the dispatch of the core's
//! [`Action`]s; each kind of descriptor has its module. None of them
//! decides anything: they turn what the kernel says into [`Event`]s and
//! carry out actions.
//!
//! | module | owns |
//! |---|---|
//! | `io` | non-blocking peers with bounded send queues; the epoll registry |
//! | `listeners` | creating the sockets, stale-socket detection, accept within the caps |
//! | `clients` | client frames to events, replies out, slow-client disconnects |
//! | `control` | `drvctl` requests, the daemon's metrics, systemd notifications |
//! | `launch` | spawning an instance under the launch contract; signalling it |
//! | `channels` | signals, reaping, draining driver frames, sending to drivers |
//! | `persist` | checkpoint and journal I/O, reported back as events |
//! | [`authz`], [`dirs`], [`fds`] | peer credentials, private directories, descriptor budgets |

use crate::checkpoint;
use crate::config::Config;
use crate::core::{Action, ClientMsg, ConnId, DriverId, Event, Supervisor};
use crate::journal::writer::{ToWriter, Writer};
use crate::notify::Notifier;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use reinc_control::control::MAX_CONTROL_FRAME;
use reinc_policy::Millis;
use reinc_proto::{Generation, MAX_FRAME, SupToClient};
use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tracing::{info, warn};

pub mod authz;
mod channels;
mod clients;
mod control;
pub mod dirs;
mod dying;
pub mod fds;
mod io;
mod launch;
pub mod listen_fds;
mod listeners;
mod persist;
pub mod pools;
use io::{Peer, Registry, Source, flush};
use launch::Live;
use listeners::{client_listener, listen_seqpacket, supervisor_answers};
use persist::{durable_lsn, open_journal, restore_checkpoints};

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

/// Milliseconds from now until `t`, rounded up (an `epoll_wait` timeout
/// that ends before `t` would find nothing due yet).
fn ms_until(t: Instant) -> u64 {
    let d = t.saturating_duration_since(Instant::now());
    d.as_millis() as u64 + u64::from(!d.subsec_micros().is_multiple_of(1000))
}

/// The running daemon.
#[derive(Debug)]
pub struct Daemon {
    core: Supervisor,
    cfg: Config,
    reg: Registry,
    signals: SignalFd,
    started: Instant,
    /// Every driver process, by driver and generation: the running instance
    /// and, with `standby = true`, its standby (CONTRACTS.md §9).
    live: HashMap<(DriverId, Generation), Live>,
    /// Instances sent the supervisor's SIGKILL and not reaped yet (`dying`).
    dying: HashMap<(DriverId, Generation), dying::Killed>,
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
    /// Records for the writer, sent together at the end of `execute`.
    journal_out: Vec<ToWriter>,
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
    /// `out_total` went over `out-bytes-total` and not yet back under half
    /// of it: no client with unsent replies is read ([`crate::outbound`]).
    out_total_over: bool,
    /// Clients disconnected for not reading, for the summary line.
    slow_dropped: u64,
    /// Each client connection's credentials ([`authz`]).
    peers: HashMap<ConnId, Option<authz::Peer>>,
    /// Calls refused by a driver's allow-list, for the summary line.
    denied: u64,
    /// The clients' shared pools, by session and driver ([`pools`]).
    pools: pools::PoolTable,
    /// Sessions in the core's table at the last pool sweep.
    sessions_seen: usize,
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
        let control_path = reinc_control::paths::control_socket(runtime_dir);
        if supervisor_answers(&control_path) {
            return Err(DaemonError::AlreadyRunning(control_path));
        }
        let drivers = restore_checkpoints(&cfg)?;
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
        let client_path = reinc_control::paths::client_socket(runtime_dir);
        let control_path = reinc_control::paths::control_socket(runtime_dir);
        // Who may write client.sock may call every driver: configurable,
        // 0660 by default (owner and group), never wider than asked.
        let (client_listener, taken_back) = client_listener(&client_path, cfg.supervisor.client_socket_mode)?;
        let control_listener = listen_seqpacket(&control_path, 0o600)?;

        let mut d = Self {
            core,
            cfg,
            reg: Registry { epoll, tokens: HashMap::new(), next_token: 1 },
            signals,
            started: Instant::now(),
            live: HashMap::new(),
            dying: HashMap::new(),
            last_trace: HashMap::new(),
            client_listener,
            control_listener,
            clients: HashMap::new(),
            controls: HashMap::new(),
            next_conn: 1,
            socket_paths: vec![client_path.clone(), control_path],
            buf: vec![0; MAX_CONTROL_FRAME.max(MAX_FRAME + 1)],
            exit: false,
            journal,
            journal_out: Vec::new(),
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
            out_total_over: false,
            slow_dropped: 0,
            peers: HashMap::new(),
            denied: 0,
            pools: pools::PoolTable::default(),
            sessions_seen: 0,
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
        // In systemd's fd store (kept from a previous supervisor, or handed
        // over now), the socket outlives us: its path must stay, or the next
        // supervisor's clients could not reach the backlog it keeps.
        if taken_back || (d.notify.fd_store() && d.notify.store_fd("client", d.client_listener.as_fd())) {
            d.socket_paths.retain(|p| *p != client_path);
            info!("[SUP] client socket {} is kept in systemd's fd store across restarts", client_path.display());
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
            // Rounded up: waking a millisecond early would find nothing due.
            let stall = self.check_stalls().map(ms_until);
            let dying = self.check_dying().map(ms_until);
            for w in [ping, paused, stall, dying].into_iter().flatten() {
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
            Source::ClientListener => self.accept_clients(),
            Source::ControlListener => self.accept_controls(),
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
                    self.flush_driver(driver, generation);
                }
                self.drain_driver(driver, generation);
            }
        }
    }

    fn execute(&mut self, acts: Vec<Action>) {
        let mut work: VecDeque<Action> = acts.into();
        while let Some(a) = work.pop_front() {
            match a {
                Action::Spawn { driver, generation } => {
                    let more = self.launch(driver, generation);
                    for m in more.into_iter().rev() {
                        work.push_front(m);
                    }
                }
                Action::ToDriver { driver, generation, msg } => self.send_driver(driver, generation, &msg),
                Action::Kill { driver, generation, signal } => self.signal(driver, generation, signal),
                Action::ProbeSched { driver, generation } => {
                    let more = self.probe_sched(driver, generation);
                    for m in more.into_iter().rev() {
                        work.push_front(m);
                    }
                }
                Action::Persist { driver, checkpoint } => {
                    let more = self.persist(driver, &checkpoint);
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
                    let more = self.journal_record(lsn, &record);
                    for m in more.into_iter().rev() {
                        work.push_front(m);
                    }
                }
                Action::Say(line) => info!("[SUP] {line}"),
                Action::Exit => self.exit = true,
            }
        }
        self.sweep_pools();
        self.flush_journal();
    }
}
