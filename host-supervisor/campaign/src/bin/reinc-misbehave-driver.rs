//! `reinc-misbehave-driver --markers DIR`: a driver that misbehaves on request.
//!
//! # Why it exists
//! The campaign must show what the supervisor does with a driver that
//! misbehaves *without dying*: a malformed or oversized frame, a second
//! reply, a reply with a wrong generation or request id, a flood of frames,
//! a driver that stops reading its socket, bit flips in a reply or in its
//! state, running out of descriptors, hitting `RLIMIT_AS`. `reinc-runtime`
//! makes every one of those impossible by construction, so this driver
//! speaks the wire protocol by hand (`reinc-proto` frames over the inherited
//! socket, the launch contract through `reinc_runtime::Launch`) and is
//! deliberately wrong when a request asks it to be
//! (`reinc_campaign::misbehave`).
//!
//! Its committed state is a counter and the counter's crc32. Every request
//! increments the counter and commits it with the reply, so the client can
//! check exactly-once execution from the replies alone (`counter` goes up by
//! exactly one per answered request, in order).
//!
//! A misbehaviour fires once per request id: the driver claims a marker file
//! `DIR/<client>-<seq>` (`O_CREAT|O_EXCL`) first, so the replay after a
//! restart behaves. `Poison` ignores the marker and crashes every time.
//!
//! # Designs rejected
//! - Misbehaving through the bench driver: it runs on `reinc-runtime`, which
//!   cannot send a malformed frame or a second reply.
//! - Arming misbehaviours over the control socket: that needs a new
//!   `ToDriver` message, i.e. a supervisor change; a request body is already
//!   delivered in order, to exactly the instance that must misbehave.
#![forbid(unsafe_code)]

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{SigSet, Signal, raise};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{MsgFlags, recv, send};
use reinc_campaign::misbehave::{self, Misbehaviour};
use reinc_proto::{DriverFrame, FromDriver, Generation, MAX_FRAME, RequestId, ToDriver, decode, encode_vec};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tracing::{error, info, warn};

/// The committed state: a counter and its checksum.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    counter: u64,
    crc: u32,
}

impl State {
    fn new(counter: u64) -> Self {
        Self { counter, crc: crc32fast::hash(&counter.to_le_bytes()) }
    }
    fn intact(&self) -> bool {
        crc32fast::hash(&self.counter.to_le_bytes()) == self.crc
    }
}

struct Driver {
    name: String,
    ipc: OwnedFd,
    markers: PathBuf,
    generation: Generation,
    state: State,
    /// SIGTERM/SIGINT/SIGSEGV/SIGBUS, blocked and read here: std's SIGSEGV
    /// handler would swallow the first *sent* SIGSEGV (see `reinc_runtime::stop_signals`).
    signals: Option<SignalFd>,
}

/// Why the instance ends (it always ends by exiting or dying).
enum End {
    /// The supervisor closed the channel or asked us to stop.
    Orderly,
    /// A failure reported as `Fatal`.
    Failed,
}

impl Driver {
    fn send_raw(&self, bytes: &[u8]) -> Result<(), End> {
        loop {
            match send(self.ipc.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(End::Orderly),
                Err(e) => {
                    error!("[driver] {}: send of {} bytes on the IPC socket failed: {e}", self.name, bytes.len());
                    return Err(End::Failed);
                }
            }
        }
    }

    fn send_as(&self, generation: Generation, msg: FromDriver<'_>) -> Result<(), End> {
        let frame = DriverFrame { generation, msg };
        match encode_vec(&frame) {
            Ok(bytes) => self.send_raw(&bytes),
            Err(e) => {
                error!("[driver] {}: cannot encode a frame: {e}", self.name);
                Err(End::Failed)
            }
        }
    }

    fn send(&self, msg: FromDriver<'_>) -> Result<(), End> {
        self.send_as(self.generation, msg)
    }

    fn fatal(&self, reason: &str) -> End {
        let reason = format!("driver {}: {reason}", self.name);
        error!("[driver] {} {}: fatal: {reason}", self.name, self.generation);
        let _ = self.send(FromDriver::Fatal { reason: &reason });
        End::Failed
    }

    /// Claims the one-shot marker of `id`; false if an earlier instance did.
    fn claim(&self, id: RequestId) -> bool {
        let path = self.markers.join(format!("{}-{}", id.client.0, id.seq));
        std::fs::OpenOptions::new().write(true).create_new(true).open(path).is_ok()
    }

    fn run(&mut self) -> End {
        let mut rx = vec![0u8; MAX_FRAME + 1];
        loop {
            let (ipc_ready, sig_ready) = {
                let mut fds = vec![PollFd::new(self.ipc.as_fd(), PollFlags::POLLIN)];
                if let Some(s) = &self.signals {
                    fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return self.fatal(&format!("poll on the IPC socket failed: {e}")),
                }
                let ready = |i: usize| fds.get(i).and_then(PollFd::revents).is_some_and(|r| !r.is_empty());
                (ready(0), ready(1))
            };
            if sig_ready
                && let Some(s) = &self.signals
                && let Ok(Some(info)) = s.read_signal()
            {
                if let Ok(sig @ (Signal::SIGSEGV | Signal::SIGBUS)) =
                    Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0))
                {
                    warn!("[driver] {}: {sig} sent by pid {}, dying by it", self.name, info.ssi_pid);
                    die_by(sig);
                }
                // SIGTERM/SIGINT: an orderly stop.
                return End::Orderly;
            }
            if !ipc_ready {
                continue;
            }
            let n = match recv(self.ipc.as_raw_fd(), &mut rx, MsgFlags::empty()) {
                Ok(0) => return End::Orderly,
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET) => return End::Orderly,
                Err(e) => return self.fatal(&format!("recv on the IPC socket failed: {e}")),
            };
            let step = match decode::<ToDriver<'_>>(&rx[..n]) {
                Err(e) => {
                    warn!("[driver] {}: ignoring a bad frame from the supervisor: {e}", self.name);
                    Ok(())
                }
                Ok(ToDriver::Init { generation, checkpoint }) => self.init(generation, checkpoint),
                Ok(ToDriver::Ping { nonce }) => self.send(FromDriver::Pong { nonce }),
                Ok(ToDriver::Inject(plan)) => {
                    warn!("[driver] {}: fault {plan} ignored (this driver misbehaves by request body)", self.name);
                    Ok(())
                }
                Ok(ToDriver::Shutdown) => return End::Orderly,
                // This driver has no bulk requests; a pool's descriptor (if
                // any came) was closed by `recv`.
                Ok(ToDriver::AttachPool { .. } | ToDriver::DetachPool { .. }) => Ok(()),
                Ok(ToDriver::Request { id, body }) => {
                    let body = body.to_vec();
                    self.request(id, &body)
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    fn init(&mut self, generation: Generation, checkpoint: Option<&[u8]>) -> Result<(), End> {
        self.generation = generation;
        self.state = match checkpoint {
            None => State::new(0),
            Some(b) => match postcard::from_bytes::<State>(b) {
                Ok(s) if s.intact() => s,
                Ok(s) => return Err(self.fatal(&format!("checkpoint fails its checksum: {s:?}"))),
                Err(e) => return Err(self.fatal(&format!("checkpoint of {} bytes does not decode: {e}", b.len()))),
            },
        };
        info!("[driver] {} {generation} ready (counter {})", self.name, self.state.counter);
        self.send(FromDriver::Ready)
    }

    fn request(&mut self, id: RequestId, body: &[u8]) -> Result<(), End> {
        if !self.state.intact() {
            return Err(self.fatal(&format!("state fails its checksum before {id}: {:?}", self.state)));
        }
        let Some((nonce, fault)) = misbehave::parse_request(body) else {
            return Err(self.fatal(&format!("request {id}: body of {} bytes is not a misbehave request", body.len())));
        };
        let fault = fault.filter(|f| *f == Misbehaviour::Poison || self.claim(id));
        if let Some(f) = fault {
            warn!("[driver] {} {}: misbehaving on {id}: {}", self.name, self.generation, f.name());
        }
        let mut next = State::new(self.state.counter + 1);
        if fault == Some(Misbehaviour::StateBitFlipUnchecked) {
            // Flipped before the checksum is computed: nothing can tell.
            next = State::new(next.counter ^ (1 << (nonce % 48)));
        }
        let mut body = misbehave::reply(next.counter, self.generation.0, nonce);
        let commit = postcard::to_allocvec(&next).map_err(|e| self.fatal(&format!("state does not encode: {e}")))?;
        match fault {
            None | Some(Misbehaviour::StateBitFlipUnchecked | Misbehaviour::StateBitFlipChecked) => {}
            Some(Misbehaviour::Malformed) => self.send_raw(&[1, 0xff, 0xff, 0xff, 0x7f, 0x13, 0x37])?,
            Some(Misbehaviour::SecondReply) => {
                self.send(FromDriver::Reply { id, commit: Some(&commit), body: &body })?;
            }
            Some(Misbehaviour::WrongGeneration) => {
                let other = Generation(self.generation.0.wrapping_add(1 + (nonce % 7) as u32));
                self.send_as(other, FromDriver::Reply { id, commit: Some(&commit), body: &body })?;
            }
            Some(Misbehaviour::WrongId) => {
                let wrong = RequestId { client: id.client, seq: id.seq.wrapping_add(1_000_000) };
                self.send(FromDriver::Reply { id: wrong, commit: Some(&commit), body: &body })?;
            }
            Some(Misbehaviour::Oversized) => self.send_raw(&vec![0x5a; MAX_FRAME + 512])?,
            Some(Misbehaviour::Flood) => {
                for i in 0..4096u64 {
                    self.send(FromDriver::Pong { nonce: u64::MAX - i })?;
                }
            }
            Some(Misbehaviour::StopReading) => loop {
                // Alive, but neither reading nor answering: only heartbeats tell.
                std::thread::sleep(Duration::from_secs(3600));
            },
            Some(Misbehaviour::ReplyBitFlip) => body[(nonce % 20) as usize] ^= 1 << (nonce % 8),
            Some(Misbehaviour::FdExhaustion) => return Err(self.exhaust_fds(id)),
            Some(Misbehaviour::MemoryLimit) => memory_limit(&self.name),
            Some(Misbehaviour::Poison) => die_by(Signal::SIGSEGV),
        }
        self.send(FromDriver::Reply { id, commit: Some(&commit), body: &body })?;
        self.state = next;
        if fault == Some(Misbehaviour::StateBitFlipChecked) {
            // A memory error after the commit: the checksum catches it at the next request.
            self.state.counter ^= 1 << (nonce % 48);
        }
        Ok(())
    }

    /// Opens descriptors until the limit, then needs one more for the request.
    fn exhaust_fds(&self, id: RequestId) -> End {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
        let _ = setrlimit(Resource::RLIMIT_NOFILE, 64.min(hard), hard);
        let mut held = Vec::new();
        let err = loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => held.push(f),
                Err(e) => break e,
            }
            if held.len() > 100_000 {
                break std::io::Error::other("no descriptor limit reached after 100000 files");
            }
        };
        let device = self.markers.join("device");
        match std::fs::OpenOptions::new().create(true).append(true).open(&device) {
            Ok(_) => self.fatal(&format!(
                "request {id}: {} descriptors held ({err}), yet {} opened",
                held.len(),
                device.display()
            )),
            Err(e) => self.fatal(&format!(
                "request {id}: cannot open {}: {e} ({} descriptors held)",
                device.display(),
                held.len()
            )),
        }
    }
}

/// Lowers `RLIMIT_AS` to 64 MiB above the current size and allocates past it:
/// the allocation fails and Rust aborts (SIGABRT), as a real driver would.
fn memory_limit(name: &str) -> ! {
    let vm_kib: u64 = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmSize:"))?.split_whitespace().next()?.parse().ok())
        .unwrap_or(1 << 20);
    let limit = (vm_kib + 64 * 1024) * 1024;
    if let Err(e) = setrlimit(Resource::RLIMIT_AS, limit, limit) {
        error!("[driver] {name}: setrlimit(RLIMIT_AS, {limit}) failed: {e}");
    }
    let big = vec![0x11u8; 512 << 20];
    // Only reached if the limit did not hold.
    error!("[driver] {name}: allocated {} bytes past RLIMIT_AS", big.len());
    std::process::abort()
}

fn die_by(sig: Signal) -> ! {
    let mut set = SigSet::empty();
    set.add(sig);
    let _ = set.thread_unblock();
    // std's SIGSEGV handler swallows the first raised one (see reinc-runtime).
    let _ = raise(sig);
    let _ = raise(sig);
    std::process::abort()
}

fn parse_markers() -> Result<PathBuf, String> {
    let mut it = std::env::args().skip(1);
    match (it.next().as_deref(), it.next(), it.next()) {
        (Some("--markers"), Some(dir), None) => Ok(PathBuf::from(dir)),
        _ => Err("usage: reinc-misbehave-driver --markers DIR".into()),
    }
}

fn main() -> ExitCode {
    reinc_runtime::init_logging();
    let launch = match reinc_runtime::Launch::from_env() {
        Ok(l) => l,
        Err(e) => {
            error!("[driver] {e}");
            return ExitCode::from(2);
        }
    };
    let markers = match parse_markers() {
        Ok(m) => m,
        Err(e) => {
            error!("[driver] {}: {e}", launch.name);
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&markers) {
        error!("[driver] {}: cannot create marker directory {}: {e}", launch.name, markers.display());
        return ExitCode::from(2);
    }
    let mut d = Driver {
        name: launch.name,
        ipc: launch.ipc,
        markers: Path::new(&markers).to_path_buf(),
        generation: Generation(0),
        state: State::new(0),
        signals: reinc_runtime::stop_signals().ok(),
    };
    match d.run() {
        End::Orderly => ExitCode::SUCCESS,
        End::Failed => ExitCode::FAILURE,
    }
}
