//! The floors: what the same work costs with nothing of reinc in the way.
//!
//! - **raw round trip**: the harness ↔ an echo process over one
//!   `SOCK_SEQPACKET` socketpair;
//! - **raw two-hop relay**: the harness ↔ a relay process ↔ the echo process.
//!   The relay forwards frames both ways from one `poll(2)` loop: the
//!   supervisor's data path with no decoding, no queue, no session;
//! - **spawn**: fork+exec of a driver binary, `Init`, until its first frame
//!   (`Ready`), with no supervisor: what any restart costs at least;
//! - **ideal supervisor**: the least a supervisor can do on a crash, as a
//!   separate process ([`run_ideal_supervisor`]): fork+exec the child, block
//!   in `waitpid`, and on its death fork+exec again at once, with no backoff,
//!   no bookkeeping and no event loop. The restart row (SIGKILL to the new
//!   instance's first message, [`Announcements`]) is a ratio to it. This is
//!   the supervisor a user could write in twenty lines of C; daemontools,
//!   runit and s6 are all slower than it, so it is the honest floor.
//!
//! The helpers are separate processes (this executable re-run with a hidden
//! role), like client, supervisor and driver, so the floors pay the same
//! cross-process wake-ups as the real path. Their sockets are handed over as
//! stdin/stdout, which needs no `unsafe` on either side.

use crate::BenchError;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};
use reinc_proto::{DriverFrame, FromDriver, Generation, ToDriver};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Size of a floor message: about a no-op request frame.
pub const MSG_BYTES: usize = 32;

/// Hidden argument that makes this executable an echo helper.
pub const ROLE_ECHO: &str = "__echo";
/// Hidden argument that makes this executable a relay helper.
pub const ROLE_RELAY: &str = "__relay";
/// Hidden argument that makes this executable the ideal supervisor
/// ([`run_ideal_supervisor`]); the child's executable and arguments follow.
pub const ROLE_IDEAL: &str = "__ideal-supervisor";

fn pair(what: &str) -> Result<(OwnedFd, OwnedFd), BenchError> {
    socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| BenchError::io(format!("socketpair for {what}"), e.into()))
}

fn sys(what: &str) -> impl FnOnce(nix::errno::Errno) -> BenchError + '_ {
    move |e| BenchError::io(what, e.into())
}

/// The echo helper: answers every frame on stdin with the same bytes, until EOF.
///
/// # Errors
/// A socket error.
pub fn run_echo() -> Result<(), BenchError> {
    let fd = std::io::stdin().as_fd().try_clone_to_owned().map_err(|e| BenchError::io("echo stdin", e))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(sys("echo recv"))?;
        if n == 0 {
            return Ok(());
        }
        send(fd.as_raw_fd(), &buf[..n], MsgFlags::MSG_NOSIGNAL).map_err(sys("echo send"))?;
    }
}

/// The relay helper: forwards frames between stdin (client side) and stdout
/// (echo side) in both directions, until either side closes.
///
/// Like the supervisor, it never blocks on a send: frames a peer cannot take
/// yet wait in a queue and go out on `POLLOUT`. (A blocking relay deadlocks
/// as soon as frames in flight exceed the socket buffers: it blocks sending
/// to the echo helper, which blocks sending back to it.)
///
/// # Errors
/// A socket error.
pub fn run_relay() -> Result<(), BenchError> {
    use std::collections::VecDeque;
    let up = std::io::stdin().as_fd().try_clone_to_owned().map_err(|e| BenchError::io("relay stdin", e))?;
    let down = std::io::stdout().as_fd().try_clone_to_owned().map_err(|e| BenchError::io("relay stdout", e))?;
    let mut buf = vec![0u8; 1 << 16];
    // pending[0]: frames for `down`; pending[1]: frames for `up`.
    let mut pending: [VecDeque<Vec<u8>>; 2] = [VecDeque::new(), VecDeque::new()];
    loop {
        let flags = |out: &VecDeque<Vec<u8>>| {
            if out.is_empty() { PollFlags::POLLIN } else { PollFlags::POLLIN | PollFlags::POLLOUT }
        };
        let mut fds = [PollFd::new(up.as_fd(), flags(&pending[1])), PollFd::new(down.as_fd(), flags(&pending[0]))];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(sys("relay poll")(e)),
        }
        let ready: Vec<PollFlags> = fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())).collect();
        // Frames read from `up` (i = 0) queue for `down` (pending[0]) and
        // the other way round.
        for (i, fd) in [&up, &down].into_iter().enumerate() {
            if !ready[i].intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                continue;
            }
            // Drain what is there, like the supervisor does.
            loop {
                match recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                    Ok(0) => return Ok(()),
                    Ok(n) => pending[i].push_back(buf[..n].to_vec()),
                    Err(nix::errno::Errno::EAGAIN) => break,
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(sys("relay recv")(e)),
                }
            }
        }
        for (fd, q) in [(&down, 0usize), (&up, 1)] {
            while let Some(f) = pending[q].front() {
                match send(fd.as_raw_fd(), f, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL) {
                    Ok(_) => {
                        pending[q].pop_front();
                    }
                    Err(nix::errno::Errno::EAGAIN) => break,
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(sys("relay send")(e)),
                }
            }
        }
    }
}

/// A floor path: the harness's socket and the helper processes behind it.
#[derive(Debug)]
pub struct RawPath {
    fd: Option<OwnedFd>,
    helpers: Vec<Child>,
    buf: Vec<u8>,
}

impl RawPath {
    /// The harness ↔ echo path.
    ///
    /// # Errors
    /// The helper cannot be started.
    pub fn direct(harness: &Path) -> Result<Self, BenchError> {
        let (ours, theirs) = pair("the echo helper")?;
        let echo = helper(harness, ROLE_ECHO, theirs, None)?;
        Ok(Self { fd: Some(ours), helpers: vec![echo], buf: vec![0; 1 << 16] })
    }

    /// The harness ↔ relay ↔ echo path.
    ///
    /// # Errors
    /// A helper cannot be started.
    pub fn relay(harness: &Path) -> Result<Self, BenchError> {
        let (ours, relay_up) = pair("the relay helper")?;
        let (relay_down, echo_end) = pair("the echo helper")?;
        let echo = helper(harness, ROLE_ECHO, echo_end, None)?;
        let relay = helper(harness, ROLE_RELAY, relay_up, Some(relay_down))?;
        Ok(Self { fd: Some(ours), helpers: vec![echo, relay], buf: vec![0; 1 << 16] })
    }

    fn fd(&self) -> i32 {
        self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    fn send(&self, msg: &[u8]) -> Result<(), BenchError> {
        send(self.fd(), msg, MsgFlags::MSG_NOSIGNAL).map(drop).map_err(sys("floor send"))
    }

    fn recv(&mut self) -> Result<(), BenchError> {
        match recv(self.fd(), &mut self.buf, MsgFlags::empty()) {
            Ok(0) => Err(BenchError::Setup("a floor helper closed its socket".into())),
            Ok(_) => Ok(()),
            Err(e) => Err(sys("floor recv")(e)),
        }
    }

    /// `samples` sequential round trips, each timed.
    ///
    /// # Errors
    /// A socket error.
    pub fn round_trips(&mut self, samples: usize) -> Result<Vec<Duration>, BenchError> {
        let msg = [0xa5u8; MSG_BYTES];
        let mut out = Vec::with_capacity(samples);
        for _ in 0..samples {
            let t = Instant::now();
            self.send(&msg)?;
            self.recv()?;
            out.push(t.elapsed());
        }
        Ok(out)
    }

    /// Keeps `depth` messages of `size` bytes in flight for `duration`;
    /// returns messages completed (echoed back) per second.
    ///
    /// # Errors
    /// A socket error.
    pub fn throughput(&mut self, depth: usize, size: usize, duration: Duration) -> Result<f64, BenchError> {
        let msg = vec![0x5au8; size];
        for _ in 0..depth {
            self.send(&msg)?;
        }
        let start = Instant::now();
        let mut done = 0u64;
        while start.elapsed() < duration {
            self.recv()?;
            done += 1;
            self.send(&msg)?;
        }
        let secs = start.elapsed().as_secs_f64();
        for _ in 0..depth {
            self.recv()?;
        }
        Ok(done as f64 / secs)
    }

    /// The helper processes' pids (echo first).
    #[must_use]
    pub fn helper_pids(&self) -> Vec<u32> {
        self.helpers.iter().map(Child::id).collect()
    }

    /// CPU time used so far by the relay helper (the last helper), if any.
    #[must_use]
    pub fn relay_cpu(&self) -> Option<Duration> {
        (self.helpers.len() == 2).then(|| crate::machine::cpu_time(self.helpers[1].id())).flatten()
    }
}

impl Drop for RawPath {
    fn drop(&mut self) {
        // EOF makes every helper exit.
        self.fd = None;
        for h in &mut self.helpers {
            let _ = h.wait();
        }
    }
}

fn helper(harness: &Path, role: &str, stdin: OwnedFd, stdout: Option<OwnedFd>) -> Result<Child, BenchError> {
    let mut cmd = Command::new(harness);
    cmd.arg(role).stdin(Stdio::from(stdin)).stderr(Stdio::inherit());
    cmd.stdout(stdout.map_or_else(Stdio::null, Stdio::from));
    cmd.spawn().map_err(|e| BenchError::io(format!("{} {role}", harness.display()), e))
}

/// The arguments of a `storage_driver` over a 1024-block disk in
/// `dir/floor`, for [`spawn_to_first_message`]: the spawn floor every
/// recovery row is a ratio to.
///
/// # Errors
/// `dir/floor` cannot be created.
pub fn storage_floor_args(dir: &Path) -> Result<Vec<String>, BenchError> {
    let floor = dir.join("floor");
    std::fs::create_dir_all(&floor).map_err(|e| BenchError::io(floor.display(), e))?;
    Ok(["--file", &floor.join("disk.img").to_string_lossy(), "--blocks", "1024"].map(String::from).to_vec())
}

/// Fork+exec of `exec args` as driver `name` under the launch contract, send
/// `Init`, wait for its first frame; `samples` times. The driver exits on EOF.
///
/// # Errors
/// The driver cannot be started or does not answer `Ready`.
pub fn spawn_to_first_message(
    exec: &Path,
    args: &[String],
    name: &str,
    samples: usize,
) -> Result<Vec<Duration>, BenchError> {
    let mut out = Vec::with_capacity(samples);
    let mut buf = vec![0u8; reinc_proto::MAX_FRAME];
    let init = reinc_proto::encode_vec(&ToDriver::Init { generation: Generation(1), checkpoint: None })
        .map_err(|e| BenchError::Setup(format!("encode Init: {e}")))?;
    for _ in 0..samples {
        let (ours, theirs) = pair(name)?;
        let t = Instant::now();
        let mut child = Command::new(exec)
            .args(args)
            .env("REINC_IPC_FD", "0")
            .env("REINC_DRIVER_NAME", name)
            .env("REINC_SUPERVISOR_PID", std::process::id().to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::io(exec.display(), e))?;
        send(ours.as_raw_fd(), &init, MsgFlags::MSG_NOSIGNAL).map_err(sys("send Init"))?;
        let n = recv(ours.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(sys("recv Ready"))?;
        let elapsed = t.elapsed();
        let first = reinc_proto::decode::<DriverFrame<'_>>(&buf[..n]);
        drop(ours);
        let _ = child.wait();
        match first {
            Ok(DriverFrame { msg: FromDriver::Ready, .. }) => out.push(elapsed),
            other => {
                return Err(BenchError::Setup(format!(
                    "{} answered Init with {other:?} instead of Ready",
                    exec.display()
                )));
            }
        }
    }
    Ok(out)
}

/// The ideal supervisor: runs `exec args` under the launch contract (a
/// channel as stdin on which nothing is ever sent, so the driver waits for
/// `Init` forever), blocks in `waitpid` until it dies, and starts it again at
/// once, forever. It is stopped by a signal; its child dies with it
/// (`PR_SET_PDEATHSIG`, armed by the driver's runtime).
///
/// # Errors
/// No executable given, or a spawn or socket error.
pub fn run_ideal_supervisor(args: &[String]) -> Result<(), BenchError> {
    let (exec, rest) = args.split_first().ok_or_else(|| BenchError::Usage(format!("{ROLE_IDEAL} EXEC [ARGS...]")))?;
    let me = std::process::id().to_string();
    loop {
        // Our end stays open while the child lives: EOF would make it exit.
        let (ours, theirs) = pair("the ideal supervisor's child")?;
        let mut child = Command::new(exec)
            .args(rest)
            .env("REINC_IPC_FD", "0")
            .env("REINC_DRIVER_NAME", "ideal")
            .env("REINC_SUPERVISOR_PID", &me)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::io(exec, e))?;
        child.wait().map_err(|e| BenchError::io(format!("waitpid for {exec}"), e))?;
        drop(ours);
    }
}

/// A running ideal supervisor ([`run_ideal_supervisor`]); SIGKILLed and
/// reaped on drop (its child follows by `PR_SET_PDEATHSIG`).
#[derive(Debug)]
pub struct IdealSupervisor(Child);

impl IdealSupervisor {
    /// Starts the harness as the ideal supervisor of `exec args`.
    ///
    /// # Errors
    /// The harness cannot be started.
    pub fn start(harness: &Path, exec: &Path, args: &[String]) -> Result<Self, BenchError> {
        Command::new(harness)
            .arg(ROLE_IDEAL)
            .arg(exec)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map(Self)
            .map_err(|e| BenchError::io(format!("{} {ROLE_IDEAL}", harness.display()), e))
    }
}

impl Drop for IdealSupervisor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The socket on which `reinc-bench-driver --announce PATH` instances send
/// their pid as their very first act: "the instance's first message", timed
/// by the harness's own clock.
#[derive(Debug)]
pub struct Announcements {
    sock: std::os::unix::net::UnixDatagram,
    path: std::path::PathBuf,
}

impl Announcements {
    /// Binds the socket at `path` (a stale one is removed first).
    ///
    /// # Errors
    /// The socket cannot be bound.
    pub fn bind(path: &Path) -> Result<Self, BenchError> {
        let _ = std::fs::remove_file(path);
        let sock = std::os::unix::net::UnixDatagram::bind(path).map_err(|e| BenchError::io(path.display(), e))?;
        Ok(Self { sock, path: path.into() })
    }

    /// The path to pass as `--announce`.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next announcement, and when it was received.
    ///
    /// # Errors
    /// None within `timeout`, or a malformed datagram.
    pub fn next(&self, timeout: Duration) -> Result<(u32, Instant), BenchError> {
        let what = || format!("an announcement on {}", self.path.display());
        self.sock.set_read_timeout(Some(timeout)).map_err(|e| BenchError::io(what(), e))?;
        let mut buf = [0u8; 8];
        match self.sock.recv(&mut buf) {
            Ok(4) => Ok((u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]), Instant::now())),
            Ok(n) => Err(BenchError::Setup(format!("{}: a {n}-byte datagram instead of a pid", what()))),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Err(BenchError::Timeout(what()))
            }
            Err(e) => Err(BenchError::io(what(), e)),
        }
    }

    /// SIGKILLs `pid` and times it until an instance with another pid
    /// announces itself; returns that time and the new pid.
    ///
    /// # Errors
    /// The kill fails, or no new instance announces itself within `timeout`.
    pub fn kill_until_next(&self, pid: u32, timeout: Duration) -> Result<(Duration, u32), BenchError> {
        use nix::sys::signal::{Signal, kill};
        let t = Instant::now();
        kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL)
            .map_err(|e| BenchError::io(format!("SIGKILL pid {pid}"), e.into()))?;
        loop {
            let left = timeout.saturating_sub(t.elapsed()).max(Duration::from_millis(1));
            let (new, at) = self.next(left)?;
            if new != pid {
                return Ok((at - t, new));
            }
        }
    }
}

impl Drop for Announcements {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
