//! The I/O half: listening sockets, one thread pair per NBD connection, and
//! the engine that maps NBD requests onto pipelined `reinc-client` calls.
//!
//! Per connection:
//! - the **reader** thread reads request headers and write payloads (into a
//!   write slot of the connection's shared pool, [`crate::bulk`], or a
//!   buffer on the message path), checks them against the export
//!   ([`Export::check`]) and queues a job on a bounded channel (so a client
//!   that sends faster than the driver writes blocks on its own socket, and
//!   memory stays bounded);
//! - the **engine** (the connection's own thread) owns the `reinc-client`
//!   session: it turns each job into storage requests ([`chunks`]: one bulk
//!   request per NBD request up to 4 MiB, or 32 KiB pieces on the message
//!   path), submits them without waiting, collects the completions in any
//!   order, and writes each NBD reply when its last chunk is answered (a
//!   read's data straight from its read slot).
//!
//! A driver crash needs nothing here: the supervisor replays the unanswered
//! storage requests and the library resumes the session, so a chunk is only
//! ever answered once, with the right data.

use crate::bulk::ConnPool;
use crate::proto::{
    self, Command, EINVAL, EIO, Export, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO, OPT_INFO, OPT_LIST, OPTION_HEADER_LEN,
    ProtocolError, REP_ACK, REP_ERR_INVALID, REP_ERR_UNKNOWN, REP_ERR_UNSUP, REP_INFO, REP_SERVER, REQUEST_LEN,
    Request, chunks,
};
use reinc_client::blocksum::BlockError;
use reinc_client::{Client, ClientError};
use reinc_proto::CallError;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::time::Duration;
use storage_core::{
    BLOCK_SIZE, BulkRequest, MAX_BLOCKS_PER_REQUEST, MAX_BULK_BLOCKS, StorageError, StorageReply, StorageRequest,
};

/// A server failure that is not one connection's business.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listening socket could not be set up.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The supervisor could not be reached or refused the session.
    #[error("supervisor at {path}: {source}")]
    Supervisor {
        /// Its client socket.
        path: PathBuf,
        /// Why.
        source: ClientError,
    },
    /// The driver did not answer `Geometry` as a storage driver does.
    #[error("driver {driver} behind {path} did not answer Geometry: {what}")]
    Geometry {
        /// The driver.
        driver: String,
        /// The supervisor's socket.
        path: PathBuf,
        /// What came back.
        what: String,
    },
}

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A Unix stream socket at this path (a stale socket file is replaced).
    Unix(PathBuf),
    /// TCP on 127.0.0.1 at this port (0: any free port).
    Tcp(u16),
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The supervisor's `client.sock`.
    pub supervisor: PathBuf,
    /// The storage driver's name in the supervisor's config.
    pub driver: String,
    /// The export's name (the empty name selects it too).
    pub export_name: String,
    /// Refuse writes with `EPERM`.
    pub read_only: bool,
    /// Largest payload of one NBD request (advertised as the maximum block size).
    pub max_request: u32,
    /// Storage requests in flight per connection.
    pub window: usize,
    /// Concurrent NBD connections; more are closed at once.
    pub max_connections: usize,
    /// A connection that stays silent this long during the handshake is closed.
    pub handshake_timeout: Duration,
}

impl Config {
    /// Defaults for `supervisor` and `driver`.
    #[must_use]
    pub fn new(supervisor: PathBuf, driver: &str) -> Self {
        Self {
            supervisor,
            driver: driver.into(),
            export_name: driver.into(),
            read_only: false,
            max_request: DEFAULT_MAX_REQUEST,
            window: 32,
            max_connections: 16,
            handshake_timeout: Duration::from_secs(30),
        }
    }
}

/// Default largest request: 2 MiB (64 storage requests).
pub const DEFAULT_MAX_REQUEST: u32 = 2 << 20;
/// The spec's default maximum payload: a refused write up to this size has
/// its payload read and discarded, so the connection survives; a longer one
/// cannot be told apart from garbage and ends the connection.
pub const DRAIN_LIMIT: u32 = 32 << 20;
/// Jobs queued per connection between reader and engine.
const QUEUE: usize = 16;
/// Options accepted per handshake before the server gives up on the client.
pub const MAX_OPTIONS: usize = 256;
/// Bytes per storage request.
const CHUNK_BYTES: u32 = MAX_BLOCKS_PER_REQUEST as u32 * BLOCK_SIZE as u32;

/// A connected NBD client, Unix or TCP.
#[derive(Debug)]
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Self::Unix(s) => Self::Unix(s.try_clone()?),
            Self::Tcp(s) => Self::Tcp(s.try_clone()?),
        })
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Self::Unix(s) => s.set_read_timeout(t),
            Self::Tcp(s) => s.set_read_timeout(t),
        }
    }
    fn shutdown(&self) {
        let _ = match self {
            Self::Unix(s) => s.shutdown(Shutdown::Both),
            Self::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Unix(s) => s.as_fd(),
            Self::Tcp(s) => s.as_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.read(buf),
            Self::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.write(buf),
            Self::Tcp(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.write_vectored(bufs),
            Self::Tcp(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

/// A bound, not yet serving, NBD server.
#[derive(Debug)]
pub struct Server {
    config: Arc<Config>,
    export: Arc<Export>,
    listener: Listener,
    active: Arc<AtomicUsize>,
}

/// Asks the driver for its geometry and returns the export it makes.
///
/// # Errors
/// [`ServerError::Supervisor`] or [`ServerError::Geometry`].
pub fn discover_export(config: &Config) -> Result<Export, ServerError> {
    let sup = |source| ServerError::Supervisor { path: config.supervisor.clone(), source };
    let mut client = Client::connect(&config.supervisor).map_err(sup)?;
    let body = postcard::to_allocvec(&StorageRequest::Geometry).expect("Geometry encodes");
    let geo =
        |what: String| ServerError::Geometry { driver: config.driver.clone(), path: config.supervisor.clone(), what };
    let reply = client.call(&config.driver, &body).map_err(sup)?.map_err(|e| geo(e.to_string()))?;
    match postcard::from_bytes::<StorageReply<'_>>(&reply) {
        Ok(StorageReply::Geometry { blocks, block_size }) if block_size as usize == BLOCK_SIZE => Ok(Export {
            name: config.export_name.clone(),
            size: blocks * BLOCK_SIZE as u64,
            read_only: config.read_only,
            block: proto::BlockSize { min: BLOCK_SIZE as u32, preferred: CHUNK_BYTES, max: config.max_request },
        }),
        other => Err(geo(format!("{other:?}"))),
    }
}

impl Server {
    /// Binds `listen` for the export `export`.
    ///
    /// # Errors
    /// [`ServerError::Listen`].
    pub fn bind(config: Config, export: Export, listen: &Listen) -> Result<Self, ServerError> {
        let listener = match listen {
            Listen::Unix(path) => {
                let err = |source| ServerError::Listen { addr: path.display().to_string(), source };
                // A socket file left by a dead instance would make bind fail;
                // anything else at that path is not ours to remove.
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    std::fs::remove_file(path).map_err(err)?;
                }
                Listener::Unix(UnixListener::bind(path).map_err(err)?, path.clone())
            }
            Listen::Tcp(port) => {
                let addr = format!("127.0.0.1:{port}");
                let err = |source| ServerError::Listen { addr: addr.clone(), source };
                Listener::Tcp(TcpListener::bind(&addr).map_err(err)?)
            }
        };
        Ok(Self { config: Arc::new(config), export: Arc::new(export), listener, active: Arc::default() })
    }

    /// The address clients connect to, as `nbd+unix:` / `nbd:` URI.
    #[must_use]
    pub fn uri(&self) -> String {
        match &self.listener {
            Listener::Unix(_, p) => format!("nbd+unix:///{}?socket={}", self.export.name, p.display()),
            Listener::Tcp(l) => {
                let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                format!("nbd://127.0.0.1:{port}/{}", self.export.name)
            }
        }
    }

    /// The export served.
    #[must_use]
    pub fn export(&self) -> &Export {
        &self.export
    }

    /// Accepts connections forever, one thread per connection.
    ///
    /// # Errors
    /// Only if accepting fails for good (the listening socket is gone).
    pub fn serve(self) -> io::Result<()> {
        // Refusals are logged at most once a second, with how many were not:
        // a client retrying in a loop must not fill the log.
        let (mut logged_at, mut unlogged) = (None::<std::time::Instant>, 0u64);
        loop {
            let (stream, peer) = match &self.listener {
                Listener::Unix(l, p) => match l.accept() {
                    Ok((s, _)) => (Stream::Unix(s), format!("unix:{}", p.display())),
                    Err(e) if transient(&e) => {
                        pause_after(&e);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
                Listener::Tcp(l) => match l.accept() {
                    Ok((s, a)) => {
                        let _ = s.set_nodelay(true);
                        (Stream::Tcp(s), format!("tcp:{a}"))
                    }
                    Err(e) if transient(&e) => {
                        pause_after(&e);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            if self.active.load(Ordering::SeqCst) >= self.config.max_connections {
                if logged_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(
                        "[nbd] {peer}: refused, {} connections already open (--max-connections); \
                         {unlogged} earlier refusal(s) not logged",
                        self.config.max_connections
                    );
                    (logged_at, unlogged) = (Some(std::time::Instant::now()), 0);
                } else {
                    unlogged += 1;
                }
                stream.shutdown();
                continue;
            }
            self.active.fetch_add(1, Ordering::SeqCst);
            let (config, export, active) = (self.config.clone(), self.export.clone(), self.active.clone());
            let spawned = std::thread::Builder::new().name(format!("nbd {peer}")).spawn(move || {
                match connection(&config, &export, stream, &peer) {
                    Ok(()) => tracing::info!("[nbd] {peer}: closed"),
                    Err(e) => tracing::warn!("[nbd] {peer}: {e}"),
                }
                active.fetch_sub(1, Ordering::SeqCst);
            });
            if let Err(e) = spawned {
                self.active.fetch_sub(1, Ordering::SeqCst);
                tracing::error!("[nbd] cannot start a thread for a connection: {e}");
            }
        }
    }
}

/// Out of descriptors or memory: accept would fail again at once, so wait a
/// little instead of spinning (connections in progress free some).
fn pause_after(e: &io::Error) {
    if matches!(e.raw_os_error(), Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOMEM)) {
        tracing::warn!("[nbd] accept: {e}; pausing 100 ms");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EINTR | nix::libc::ECONNABORTED | nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOMEM)
    )
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("protocol violation, hard disconnect: {0}")]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("refused write of {0} bytes is longer than the {DRAIN_LIMIT}-byte drain limit; hard disconnect")]
    Undrainable(u32),
    #[error("supervisor session failed; every request in flight was answered EIO: {0}")]
    Session(ClientError),
}

fn connection(config: &Config, export: &Export, mut s: Stream, peer: &str) -> Result<(), ConnError> {
    s.set_read_timeout(Some(config.handshake_timeout))?;
    let Some(()) = handshake(&mut s, export, peer)? else {
        return Ok(());
    };
    s.set_read_timeout(None)?;
    let mut client = match Client::connect(&config.supervisor) {
        Ok(c) => c,
        Err(e) => {
            // In transmission there is no way to tell the client why; every
            // request would fail, so close before it sends one.
            s.shutdown();
            return Err(ConnError::Session(e));
        }
    };
    let max = export.block.max;
    let pool = match ConnPool::attach(&mut client, &config.driver, max as usize) {
        Ok(p) => {
            tracing::info!(
                "[nbd] {peer}: transmission, session {}, data through a {}-byte shared pool",
                client.session(),
                p.pool.len()
            );
            Some(Arc::new(p))
        }
        Err(why) => {
            tracing::info!(
                "[nbd] {peer}: transmission, session {}, data in the messages (no shared pool: {why})",
                client.session()
            );
            None
        }
    };
    let (tx, rx) = sync_channel(QUEUE);
    let reader_stream = s.try_clone()?;
    let export2 = export.clone();
    let reader_pool = pool.clone();
    let reader = std::thread::Builder::new()
        .name(format!("nbd-rd {peer}"))
        .spawn(move || reader(reader_stream, &export2, max, &tx, reader_pool.as_deref()))?;
    let result = Engine::new(config, client, s.try_clone()?, pool.clone()).run(&rx);
    // Unblocks the reader if the engine ended first: a read on the shut
    // socket fails, a send to the full queue fails once `rx` is gone, and a
    // wait for a write slot ends once the pool is closed.
    drop(rx);
    if let Some(p) = &pool {
        p.close();
    }
    s.shutdown();
    let read_end = reader.join().unwrap_or_else(|_| Err(ConnError::Io(io::Error::other("reader thread panicked"))));
    result?;
    read_end
}

/// Why a handshake ended the connection.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The socket failed (a timeout included).
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// The client broke the protocol.
    #[error("protocol violation, hard disconnect: {0}")]
    Protocol(#[from] ProtocolError),
    /// The client kept negotiating without ever entering transmission.
    #[error("too many options ({MAX_OPTIONS}) without entering transmission")]
    TooManyOptions,
}

fn read_opt<S: Read>(s: &mut S) -> io::Result<Option<[u8; OPTION_HEADER_LEN]>> {
    let mut h = [0u8; OPTION_HEADER_LEN];
    match s.read_exact(&mut h) {
        Ok(()) => Ok(Some(h)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// The fixed newstyle handshake on `s` (the server's side): `Some` to enter
/// transmission, `None` when the client aborted or left. `peer` only names
/// the client in log lines.
///
/// Generic over the stream so that it runs over bytes in memory too: the
/// fuzzer (`host-supervisor/fuzz`, target `nbd_handshake`) drives it with a
/// reader of its input and a writer that checks every reply.
///
/// # Errors
/// [`HandshakeError`]: the socket failed, the client broke the protocol, or it
/// sent more than [`MAX_OPTIONS`] options.
pub fn handshake<S: Read + Write>(s: &mut S, export: &Export, peer: &str) -> Result<Option<()>, HandshakeError> {
    s.write_all(&proto::greeting())?;
    let mut f = [0u8; 4];
    s.read_exact(&mut f)?;
    let no_zeroes = proto::client_flags(f)?;
    for _ in 0..MAX_OPTIONS {
        let Some(h) = read_opt(s)? else {
            tracing::info!("[nbd] {peer}: left during the handshake");
            return Ok(None);
        };
        let (opt, len) = proto::option_header(&h)?;
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data)?;
        let mut reply = |rep: u32, payload: &[u8]| s.write_all(&proto::option_reply(opt, rep, payload));
        match opt {
            OPT_EXPORT_NAME => {
                let name = String::from_utf8_lossy(&data).into_owned();
                if !export.matches(&name) {
                    return Err(ProtocolError::UnknownExport(name).into());
                }
                s.write_all(&export.export_name_reply(no_zeroes))?;
                return Ok(Some(()));
            }
            OPT_ABORT => {
                // The client may already have closed; a failed ack is fine.
                let _ = reply(REP_ACK, &[]);
                return Ok(None);
            }
            OPT_LIST if len != 0 => reply(REP_ERR_INVALID, b"NBD_OPT_LIST takes no data")?,
            OPT_LIST => {
                reply(REP_SERVER, &proto::rep_server(&export.name))?;
                reply(REP_ACK, &[])?;
            }
            OPT_INFO | OPT_GO => match proto::info_request(&data) {
                None => reply(REP_ERR_INVALID, b"malformed NBD_OPT_INFO/GO payload")?,
                Some(r) if !export.matches(&r.name) => {
                    reply(REP_ERR_UNKNOWN, format!("no export named {:?}", r.name).as_bytes())?;
                }
                Some(r) => {
                    reply(REP_INFO, &export.info_export())?;
                    if r.items.contains(&proto::INFO_BLOCK_SIZE) {
                        reply(REP_INFO, &export.info_block_size())?;
                    }
                    reply(REP_ACK, &[])?;
                    if opt == OPT_GO {
                        return Ok(Some(()));
                    }
                }
            },
            // STARTTLS, STRUCTURED_REPLY, meta contexts, extended headers and
            // anything unknown: not supported, the client carries on.
            _ => reply(REP_ERR_UNSUP, format!("option {opt} is not supported").as_bytes())?,
        }
    }
    Err(HandshakeError::TooManyOptions)
}

/// One unit of work from the reader.
#[derive(Debug)]
enum Job {
    Read {
        cookie: u64,
        offset: u64,
        length: u32,
    },
    Write {
        cookie: u64,
        offset: u64,
        data: Vec<u8>,
        fua: bool,
    },
    /// A write whose payload is in write slot `slot` of the pool.
    WriteSlot {
        cookie: u64,
        offset: u64,
        length: u32,
        fua: bool,
        slot: usize,
    },
    Flush {
        cookie: u64,
    },
    Refuse {
        cookie: u64,
        errno: u32,
    },
}

fn reader(
    mut s: Stream,
    export: &Export,
    max: u32,
    tx: &SyncSender<Job>,
    pool: Option<&ConnPool>,
) -> Result<(), ConnError> {
    loop {
        let mut h = [0u8; REQUEST_LEN];
        match s.read_exact(&mut h) {
            Ok(()) => {}
            // Closed without DISC: what was received in full still runs.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let r = Request::decode(&h)?;
        let job = match export.check(&r) {
            Command::Disconnect => return Ok(()),
            Command::Read { offset, length } => Job::Read { cookie: r.cookie, offset, length },
            Command::Flush => Job::Flush { cookie: r.cookie },
            Command::Write { offset, length, fua } if pool.is_some() => {
                let p = pool.expect("checked by the guard");
                // Closing: the engine is gone, nothing more will run.
                let Some(slot) = p.take_write() else { return Ok(()) };
                // Straight from the socket into the slot. A client that dies
                // in the middle of a payload: never accepted, never submitted.
                if let Err(e) = p.pool.fill_from(s.as_fd(), None, p.write_offset(slot), length as usize) {
                    p.give_write(slot);
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        return Ok(());
                    }
                    return Err(e.into());
                }
                Job::WriteSlot { cookie: r.cookie, offset, length, fua, slot }
            }
            Command::Write { offset, length, fua } => {
                let mut data = vec![0u8; length as usize];
                // A client that dies in the middle of a payload: this write
                // was never accepted, so it is not submitted at all.
                s.read_exact(&mut data)?;
                Job::Write { cookie: r.cookie, offset, data, fua }
            }
            Command::Refuse { errno } => {
                if r.kind == proto::CMD_WRITE {
                    if r.length > DRAIN_LIMIT.max(max) {
                        let _ = tx.send(Job::Refuse { cookie: r.cookie, errno });
                        return Err(ConnError::Undrainable(r.length));
                    }
                    io::copy(&mut (&mut s).take(u64::from(r.length)), &mut io::sink())?;
                }
                Job::Refuse { cookie: r.cookie, errno }
            }
        };
        if tx.send(job).is_err() {
            // The engine is gone (session failure); nothing more to do.
            return Ok(());
        }
    }
}

#[derive(Debug)]
enum Pending {
    Read {
        buf: Vec<u8>,
    },
    /// Data arrives in read slot `slot` of the pool.
    ReadSlot {
        slot: usize,
        len: usize,
    },
    /// `slot`: the write slot holding the payload, until every chunk is answered.
    Write {
        fua: bool,
        slot: Option<usize>,
    },
    Flush,
}

#[derive(Debug)]
struct Active {
    cookie: u64,
    what: Pending,
    remaining: usize,
    errno: u32,
}

/// One connection's reinc-client session and its jobs in flight.
#[derive(Debug)]
struct Engine<'c> {
    config: &'c Config,
    client: Client,
    out: Stream,
    out_dead: bool,
    jobs: HashMap<u64, Active>,
    /// Storage request seq -> (job, byte offset of its data in the job,
    /// bytes of data a read must return).
    calls: HashMap<u64, (u64, usize, usize, u64)>,
    next_job: u64,
    flush_body: Vec<u8>,
    /// The shared pool, when the supervisor took one.
    pool: Option<Arc<ConnPool>>,
    /// Reads waiting for a free read slot, and every job behind them (kept
    /// in order).
    backlog: VecDeque<Job>,
    /// Bodies of bulk calls in flight, to send again after `NoPool`.
    bulk_bodies: HashMap<u64, Vec<u8>>,
    /// Bulk calls sent again so far (bounded by [`MAX_RESUBMITS`]).
    resubmitted: u32,
}

/// Bulk calls a connection sends again after a `NoPool` answer before it
/// treats `NoPool` as an error.
const MAX_RESUBMITS: u32 = 1024;

impl<'c> Engine<'c> {
    fn new(config: &'c Config, client: Client, out: Stream, pool: Option<Arc<ConnPool>>) -> Self {
        Self {
            config,
            client,
            out,
            out_dead: false,
            jobs: HashMap::new(),
            calls: HashMap::new(),
            next_job: 0,
            flush_body: postcard::to_allocvec(&StorageRequest::Flush).expect("Flush encodes"),
            pool,
            backlog: VecDeque::new(),
            bulk_bodies: HashMap::new(),
            resubmitted: 0,
        }
    }

    fn submit_bulk(&mut self, job: u64, at: usize, len: usize, req: BulkRequest) -> Result<(), ClientError> {
        let body = postcard::to_allocvec(&StorageRequest::Bulk(req)).expect("a bulk request encodes");
        let seq = self.client.submit(&self.config.driver, &body)?;
        let (BulkRequest::ReadInto { lba, .. } | BulkRequest::WriteFrom { lba, .. }) = req;
        self.calls.insert(seq, (job, at, len, lba));
        self.bulk_bodies.insert(seq, body);
        Ok(())
    }

    /// Whether `job` can start now: a read on the pool path needs a free
    /// read slot (which only calls in flight hold, so one comes back).
    fn ready(&self, job: &Job) -> bool {
        match (job, &self.pool) {
            (Job::Read { .. }, Some(p)) => p.free_reads() > 0,
            _ => true,
        }
    }

    fn run(mut self, rx: &Receiver<Job>) -> Result<(), ConnError> {
        let mut reader_done = false;
        loop {
            while self.calls.len() < self.config.window && self.backlog.front().is_some_and(|j| self.ready(j)) {
                let job = self.backlog.pop_front().expect("front exists");
                if let Err(e) = self.start(job) {
                    return Err(self.fail(e));
                }
            }
            while !reader_done && self.calls.len() < self.config.window {
                let job = if self.calls.is_empty() && self.backlog.is_empty() {
                    rx.recv().map_err(|_| TryRecvError::Disconnected)
                } else {
                    rx.try_recv()
                };
                match job {
                    Ok(job) if !self.backlog.is_empty() || !self.ready(&job) => {
                        self.backlog.push_back(job);
                        // Only completions free a read slot.
                        if !self.calls.is_empty() {
                            break;
                        }
                    }
                    Ok(job) => {
                        if let Err(e) = self.start(job) {
                            return Err(self.fail(e));
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => reader_done = true,
                }
            }
            if self.calls.is_empty() {
                if reader_done && self.backlog.is_empty() {
                    return Ok(());
                }
                continue;
            }
            match self.client.wait() {
                Ok(c) => self.complete(c.seq, c.result)?,
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// The session is unusable: every job in flight gets EIO (its outcome is
    /// unknown to us, and an error is the only honest answer), then the
    /// connection is closed.
    fn fail(&mut self, e: ClientError) -> ConnError {
        let cookies: Vec<u64> = self.jobs.values().map(|a| a.cookie).collect();
        for cookie in cookies {
            self.send(cookie, EIO, &[]);
        }
        self.jobs.clear();
        self.calls.clear();
        self.out.shutdown();
        ConnError::Session(e)
    }

    /// Submits a storage call for `job`: its bytes `at..at + len` of a read
    /// start at block `lba` (the end-to-end checksums name blocks).
    fn submit(&mut self, job: u64, (at, len, lba): (usize, usize, u64), body: &[u8]) -> Result<(), ClientError> {
        let seq = self.client.submit(&self.config.driver, body)?;
        self.calls.insert(seq, (job, at, len, lba));
        Ok(())
    }

    fn start(&mut self, job: Job) -> Result<(), ClientError> {
        let id = self.next_job;
        self.next_job += 1;
        let max_blocks = MAX_BLOCKS_PER_REQUEST;
        match job {
            Job::Refuse { cookie, errno } => {
                self.send(cookie, errno, &[]);
            }
            Job::Flush { cookie } => {
                self.jobs.insert(id, Active { cookie, what: Pending::Flush, remaining: 1, errno: 0 });
                let body = std::mem::take(&mut self.flush_body);
                let r = self.submit(id, (0, 0, 0), &body);
                self.flush_body = body;
                r?;
            }
            Job::Read { cookie, offset, length } if self.pool.is_some() => {
                let p = self.pool.clone().expect("checked by the guard");
                let slot = p.take_read().expect("started only with a free read slot");
                let base = p.read_offset(slot);
                let parts: Vec<_> = chunks(offset, length, BLOCK_SIZE as u32, MAX_BULK_BLOCKS as u16).collect();
                let what = Pending::ReadSlot { slot, len: length as usize };
                self.jobs.insert(id, Active { cookie, what, remaining: parts.len(), errno: 0 });
                for c in parts {
                    let req = BulkRequest::ReadInto {
                        lba: c.lba,
                        blocks: u32::from(c.blocks),
                        pool_offset: base + c.at as u64,
                    };
                    self.submit_bulk(id, c.at, usize::from(c.blocks) * BLOCK_SIZE, req)?;
                }
            }
            Job::WriteSlot { cookie, offset, length, fua, slot } => {
                let base = self.pool.as_ref().expect("a write slot implies a pool").write_offset(slot);
                let parts: Vec<_> = chunks(offset, length, BLOCK_SIZE as u32, MAX_BULK_BLOCKS as u16).collect();
                let what = Pending::Write { fua, slot: Some(slot) };
                self.jobs.insert(id, Active { cookie, what, remaining: parts.len(), errno: 0 });
                for c in parts {
                    let req = BulkRequest::WriteFrom {
                        lba: c.lba,
                        blocks: u32::from(c.blocks),
                        pool_offset: base + c.at as u64,
                    };
                    self.submit_bulk(id, c.at, 0, req)?;
                }
            }
            Job::Read { cookie, offset, length } => {
                let parts: Vec<_> = chunks(offset, length, BLOCK_SIZE as u32, max_blocks).collect();
                let buf = vec![0u8; length as usize];
                self.jobs.insert(id, Active { cookie, what: Pending::Read { buf }, remaining: parts.len(), errno: 0 });
                for c in parts {
                    let body = reinc_client::blocksum::read_body(c.lba, c.blocks);
                    self.submit(id, (c.at, usize::from(c.blocks) * BLOCK_SIZE, c.lba), &body)?;
                }
            }
            Job::Write { cookie, offset, data, fua } => {
                let parts: Vec<_> = chunks(offset, data.len() as u32, BLOCK_SIZE as u32, max_blocks).collect();
                let what = Pending::Write { fua, slot: None };
                self.jobs.insert(id, Active { cookie, what, remaining: parts.len(), errno: 0 });
                for c in parts {
                    let bytes = &data[c.at..c.at + usize::from(c.blocks) * BLOCK_SIZE];
                    let body = reinc_client::blocksum::write_body(c.lba, bytes);
                    self.submit(id, (c.at, 0, c.lba), &body)?;
                }
            }
        }
        Ok(())
    }

    fn complete(&mut self, seq: u64, result: Result<Vec<u8>, CallError>) -> Result<(), ConnError> {
        let Some((id, at, len, lba)) = self.calls.remove(&seq) else {
            return Ok(());
        };
        let bulk_body = self.bulk_bodies.remove(&seq);
        if let (Some(body), Ok(reply)) = (&bulk_body, &result)
            && matches!(postcard::from_bytes::<StorageReply<'_>>(reply), Ok(StorageReply::Error(StorageError::NoPool)))
            && self.resubmitted < MAX_RESUBMITS
        {
            // Run by an instance without this session's pool: a journaled
            // request replayed by a restarted supervisor before the library
            // attached the pool again. Refused before any transfer (not
            // executed), the slot still pinned: send it again as a new call.
            self.resubmitted += 1;
            let seq = self.client.submit(&self.config.driver, body).map_err(|e| self.fail(e))?;
            self.calls.insert(seq, (id, at, len, lba));
            self.bulk_bodies.insert(seq, bulk_body.expect("matched above"));
            return Ok(());
        }
        let driver = &self.config.driver;
        let Some(job) = self.jobs.get_mut(&id) else { return Ok(()) };
        let errno = match result {
            Err(e) => {
                tracing::warn!("[nbd] {driver}: storage request {seq} failed: {e}; the NBD client gets EIO");
                EIO
            }
            // Exactly the bytes asked for, each block matching the checksum
            // stored with it: a short, long or damaged read is EIO.
            Ok(body) if matches!(job.what, Pending::Read { .. }) => {
                match (reinc_client::blocksum::check_read(driver, lba, (len / BLOCK_SIZE) as u64, &body), &mut job.what)
                {
                    (Ok(d), Pending::Read { buf }) if at + len <= buf.len() => {
                        buf[at..at + len].copy_from_slice(d);
                        0
                    }
                    (Err(e), _) => {
                        tracing::warn!("[nbd] storage request {seq}: {e}; the NBD client gets EIO");
                        match e {
                            BlockError::Refused {
                                error: StorageError::OutOfRange { .. } | StorageError::Unaligned { .. },
                                ..
                            } => EINVAL,
                            _ => EIO,
                        }
                    }
                    _ => EIO,
                }
            }
            Ok(body) => match (postcard::from_bytes::<StorageReply<'_>>(&body), &mut job.what) {
                (Ok(StorageReply::Filled { blocks, .. }), Pending::ReadSlot { len: total, .. })
                    if blocks as usize * BLOCK_SIZE == len && at + len <= *total =>
                {
                    0
                }
                (Ok(StorageReply::Written { .. }), Pending::Write { .. })
                | (Ok(StorageReply::Flushed), Pending::Write { .. } | Pending::Flush) => 0,
                (Ok(StorageReply::Error(e)), _) => {
                    tracing::warn!("[nbd] {driver}: storage request {seq} refused: {e}");
                    match e {
                        StorageError::OutOfRange { .. } | StorageError::Unaligned { .. } => EINVAL,
                        _ => EIO,
                    }
                }
                (other, _) => {
                    tracing::warn!("[nbd] {driver}: storage request {seq}: unexpected reply {other:?}");
                    EIO
                }
            },
        };
        if job.errno == 0 {
            job.errno = errno;
        }
        job.remaining -= 1;
        if job.remaining > 0 {
            return Ok(());
        }
        if let Pending::Write { slot: slot @ Some(_), .. } = &mut job.what
            && let (Some(i), Some(p)) = (slot.take(), &self.pool)
        {
            // Every chunk answered, so committed: the payload is no longer
            // needed for a replay.
            p.give_write(i);
        }
        if let Pending::Write { fua: true, .. } = job.what
            && job.errno == 0
        {
            // Force unit access: answered only once a flush behind the
            // write's chunks (FIFO) has synced them.
            job.what = Pending::Write { fua: false, slot: None };
            job.remaining = 1;
            let body = std::mem::take(&mut self.flush_body);
            let r = self.submit(id, (0, 0, 0), &body);
            self.flush_body = body;
            return r.map_err(|e| self.fail(e));
        }
        let job = self.jobs.remove(&id).expect("job present");
        match job.what {
            Pending::Read { buf } if job.errno == 0 => self.send(job.cookie, 0, &buf),
            Pending::ReadSlot { slot, len } => {
                if job.errno == 0 {
                    self.send_slot(job.cookie, slot, len);
                } else {
                    self.send(job.cookie, job.errno, &[]);
                }
                if let Some(p) = &self.pool {
                    p.give_read(slot);
                }
            }
            _ => self.send(job.cookie, job.errno, &[]),
        }
        Ok(())
    }

    /// Writes one simple reply; a client that went away gets no more, but
    /// the calls in flight are still collected (they were accepted and run).
    fn send(&mut self, cookie: u64, errno: u32, data: &[u8]) {
        if self.out_dead {
            return;
        }
        let h = proto::simple_reply(errno, cookie);
        let r = if data.is_empty() { self.out.write_all(&h) } else { write_all_vectored(&mut self.out, &h, data) };
        if let Err(e) = r {
            tracing::info!("[nbd] reply to cookie {cookie:#x} not delivered (client gone?): {e}");
            self.out_dead = true;
        }
    }
}

impl Engine<'_> {
    /// A read reply whose data is in read slot `slot`: header and data in
    /// one `writev` straight from the pool.
    fn send_slot(&mut self, cookie: u64, slot: usize, len: usize) {
        if self.out_dead {
            return;
        }
        let Some(p) = &self.pool else { return };
        let h = proto::simple_reply(0, cookie);
        if let Err(e) = p.pool.send_with_head(self.out.as_fd(), &h, p.read_offset(slot), len) {
            tracing::info!("[nbd] reply to cookie {cookie:#x} not delivered (client gone?): {e}");
            self.out_dead = true;
        }
    }
}

/// Header and data in as few syscalls as the socket allows.
fn write_all_vectored(out: &mut Stream, h: &[u8], data: &[u8]) -> io::Result<()> {
    let total = h.len() + data.len();
    let mut done = 0;
    while done < total {
        let n = if done < h.len() {
            out.write_vectored(&[io::IoSlice::new(&h[done..]), io::IoSlice::new(data)])
        } else {
            out.write(&data[done - h.len()..])
        };
        match n {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes the Unix socket file when dropped (best effort, for the binary).
#[derive(Debug)]
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The path of the Unix socket, if `listen` is one.
#[must_use]
pub fn unix_path(listen: &Listen) -> Option<&Path> {
    match listen {
        Listen::Unix(p) => Some(p),
        Listen::Tcp(_) => None,
    }
}
