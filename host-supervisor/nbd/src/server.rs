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
//!   session: it turns each job into storage requests ([`proto::chunks`]: one bulk
//!   request per NBD request up to 4 MiB, or 32 KiB pieces on the message
//!   path), submits them without waiting, collects the completions in any
//!   order, and writes each NBD reply when its last chunk is answered (a
//!   read's data straight from its read slot).
//!
//! A driver crash needs nothing here: the supervisor replays the unanswered
//! storage requests and the library resumes the session, so a chunk is only
//! ever answered once, with the right data.
//!
//! Files, by concern: this one holds the listeners and one connection's
//! life (handshake, pool, the two threads); `server/handshake.rs` the option
//! negotiation (fuzzed on its own); `server/engine.rs` the reader and the
//! engine.

mod engine;
mod handshake;

use engine::{Engine, reader};
pub use handshake::{HandshakeError, MAX_OPTIONS, Negotiated, handshake};

use crate::bulk::ConnPool;
use crate::proto::{self, Export, ProtocolError};
use reinc_client::{Client, ClientError};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::Duration;
use storage_core::{BLOCK_SIZE, MAX_BLOCKS_PER_REQUEST, StorageReply, StorageRequest};

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
    /// Acknowledge `NBD_OPT_STRUCTURED_REPLY` (reads then stream in chunks);
    /// without, every reply is simple.
    pub structured_replies: bool,
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
            structured_replies: true,
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
/// Bytes per storage request.
const CHUNK_BYTES: u32 = MAX_BLOCKS_PER_REQUEST as u32 * BLOCK_SIZE as u32;

/// A connected NBD client, Unix or TCP.
#[derive(Debug)]
pub(super) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    pub(super) fn try_clone(&self) -> io::Result<Self> {
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
    pub(super) fn shutdown(&self) {
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
pub(super) enum ConnError {
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
    let Some(agreed) = handshake(&mut s, export, peer, config.structured_replies)? else {
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
                "[nbd] {peer}: transmission, session {}, data through a {}-byte shared pool, {} replies",
                client.session(),
                p.pool.len(),
                if agreed.structured { "structured" } else { "simple" }
            );
            Some(Arc::new(p))
        }
        Err(why) => {
            tracing::info!(
                "[nbd] {peer}: transmission, session {}, data in the messages (no shared pool: {why}), {} replies",
                client.session(),
                if agreed.structured { "structured" } else { "simple" }
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
    let result = Engine::new(config, client, s.try_clone()?, pool.clone(), agreed.structured).run(&rx);
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
