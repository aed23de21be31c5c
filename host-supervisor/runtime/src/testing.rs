//! Play the supervisor's side of the protocol in a driver crate's own tests
//! (feature `testing`; also used by this crate's unit tests).
//!
//! - [`InProcess`]: runs a [`Driver`] in the real [`Runtime`] on a thread,
//!   over a socketpair. Fast; for protocol and handler behaviour. Faults that
//!   kill (signals, exit, hang) would kill the test process, so use
//!   [`DriverProcess`] for those.
//! - [`DriverProcess`]: spawns the driver binary per the launch contract.
//!   The calling thread becomes the driver's parent *thread*:
//!   `PR_SET_PDEATHSIG` fires when that thread exits, so keep the
//!   [`DriverProcess`] on the thread that spawned it.
//!
//! Both dereference to [`SupEnd`], the supervisor's end of the channel.

use crate::launch::{ENV_DRIVER_NAME, ENV_EXEC_LOG, ENV_FAULT, ENV_IPC_FD, ENV_SUPERVISOR_PID, ENV_TRACE_FD};
use crate::{Config, Driver, Exit, Runtime};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, setsockopt, socketpair, sockopt};
use nix::sys::time::TimeVal;
use reinc_proto::{DriverFrame, FaultPlan, FromDriver, Generation, ToDriver, decode, encode_vec};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the IPC socket reaches the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpcFd {
    /// As stdin (`REINC_IPC_FD=0`).
    Stdin,
    /// Inherited under its own number (non-`CLOEXEC`).
    Inherited,
}

/// Launch options beyond the binary and its arguments.
#[derive(Debug, Default)]
pub struct Options {
    /// `REINC_FAULT`.
    pub fault: Option<String>,
    /// `REINC_EXEC_LOG`.
    pub exec_log: Option<PathBuf>,
    /// A file passed as `REINC_TRACE_FD` (inherited by number).
    pub trace: Option<std::fs::File>,
    /// Override `REINC_SUPERVISOR_PID` (to test the orphan check).
    pub supervisor_pid: Option<i32>,
    /// Pass the socket as stdin (default) or by number.
    pub ipc: Option<IpcFd>,
}

/// The supervisor's end of a driver's channel.
#[derive(Debug)]
pub struct SupEnd {
    sup: OwnedFd,
    buf: Vec<u8>,
}

impl SupEnd {
    fn new(sup: OwnedFd) -> Self {
        setsockopt(&sup, sockopt::ReceiveTimeout, &TimeVal::new(10, 0)).expect("SO_RCVTIMEO");
        Self { sup, buf: vec![0; reinc_proto::MAX_FRAME] }
    }

    /// Sends one frame.
    ///
    /// # Panics
    /// When the send fails.
    pub fn send(&self, msg: &ToDriver<'_>) {
        self.raw(&encode_vec(msg).expect("encode"));
    }

    /// Sends one frame with `fd` as its `SCM_RIGHTS` descriptor, as the
    /// supervisor sends `AttachPool`.
    ///
    /// # Panics
    /// When the send fails.
    pub fn send_with_fd(&self, msg: &ToDriver<'_>, fd: std::os::fd::BorrowedFd<'_>) {
        use nix::sys::socket::{ControlMessage, sendmsg};
        let bytes = encode_vec(msg).expect("encode");
        let fds = [fd.as_raw_fd()];
        sendmsg::<()>(
            self.sup.as_raw_fd(),
            &[std::io::IoSlice::new(&bytes)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .expect("sendmsg to driver");
    }

    /// Sends arbitrary bytes as one message (bad-input tests).
    ///
    /// # Panics
    /// When the send fails.
    pub fn raw(&self, bytes: &[u8]) {
        send(self.sup.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL).expect("send to driver");
    }

    /// Sends one frame to a driver that may have died (`EPIPE`,
    /// `ECONNRESET`): the failure is returned, not a panic.
    ///
    /// # Errors
    /// The send's errno.
    pub fn try_send(&self, msg: &ToDriver<'_>) -> nix::Result<()> {
        let bytes = encode_vec(msg).expect("encode");
        send(self.sup.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL).map(drop)
    }

    /// Receives one frame (10 s timeout) and lets `f` look at it; `None` on EOF.
    ///
    /// # Panics
    /// On timeout or a frame that does not decode.
    pub fn recv<T>(&mut self, f: impl FnOnce(DriverFrame<'_>) -> T) -> Option<T> {
        let n = loop {
            match recv(self.sup.as_raw_fd(), &mut self.buf, MsgFlags::empty()) {
                Ok(n) => break n,
                // A driver that died with unread requests makes the kernel
                // report ECONNRESET once, ahead of the frames it did send:
                // keep reading them, as the supervisor must.
                Err(nix::errno::Errno::ECONNRESET | nix::errno::Errno::EINTR) => {}
                Err(e) => panic!("no frame from the driver within 10 s: {e}"),
            }
        };
        if n == 0 {
            return None;
        }
        Some(f(decode::<DriverFrame<'_>>(&self.buf[..n]).expect("driver frame decodes")))
    }

    /// Receives one frame, which must be `Fatal`, and returns its reason.
    ///
    /// # Panics
    /// On any other frame, end of file, or the 10 s timeout.
    pub fn expect_fatal(&mut self) -> String {
        self.recv(|f| match f.msg {
            FromDriver::Fatal { reason } => reason.to_owned(),
            other => panic!("expected Fatal, got {other:?}"),
        })
        .expect("a Fatal frame before EOF")
    }

    /// Closes the supervisor's end (the driver sees EOF).
    pub fn close(&mut self) {
        let (a, _b) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).expect("socketpair");
        drop(std::mem::replace(&mut self.sup, a));
    }
}

/// Options for [`InProcess::start`].
#[derive(Debug, Default)]
pub struct LoopOptions {
    /// The trace area.
    pub trace: Option<std::fs::File>,
    /// The exec log.
    pub exec_log: Option<PathBuf>,
    /// A launch fault plan (only `panic` is survivable in-process).
    pub fault: Option<FaultPlan>,
}

/// A driver running in the real event loop on a thread of this process.
#[derive(Debug)]
pub struct InProcess {
    end: SupEnd,
    thread: JoinHandle<Exit>,
}

impl InProcess {
    /// Starts `driver` named `name`.
    ///
    /// # Panics
    /// When the socketpair or the thread cannot be created.
    pub fn start<D: Driver + Send + 'static>(name: &str, driver: D, opts: LoopOptions) -> Self {
        let (sup, drv) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).expect("socketpair");
        let config = Config {
            name: name.into(),
            ipc: drv,
            trace: opts.trace,
            fault: opts.fault,
            exec_log: opts.exec_log,
            stop_signals: None,
        };
        let thread = std::thread::spawn(move || Runtime::new(config, driver).run());
        Self { end: SupEnd::new(sup), thread }
    }

    /// Waits for the loop to end, keeping the channel open (so it must end by
    /// itself: `Shutdown`, a failure or a panic). `Err` if it panicked.
    pub fn join(self) -> (SupEnd, std::thread::Result<Exit>) {
        let Self { end, thread } = self;
        let r = thread.join();
        (end, r)
    }

    /// Closes the channel and waits for the loop to end.
    ///
    /// # Panics
    /// If the loop panicked.
    pub fn finish(mut self) -> Exit {
        self.end.close();
        self.thread.join().expect("runtime thread panicked")
    }
}

impl Deref for InProcess {
    type Target = SupEnd;
    fn deref(&self) -> &SupEnd {
        &self.end
    }
}

impl DerefMut for InProcess {
    fn deref_mut(&mut self) -> &mut SupEnd {
        &mut self.end
    }
}

/// A driver process under test.
#[derive(Debug)]
pub struct DriverProcess {
    end: SupEnd,
    child: Child,
}

impl Deref for DriverProcess {
    type Target = SupEnd;
    fn deref(&self) -> &SupEnd {
        &self.end
    }
}

impl DerefMut for DriverProcess {
    fn deref_mut(&mut self) -> &mut SupEnd {
        &mut self.end
    }
}

fn inheritable(fd: &impl std::os::fd::AsFd) {
    use nix::fcntl::{F_SETFD, FdFlag, fcntl};
    fcntl(fd, F_SETFD(FdFlag::empty())).expect("clear FD_CLOEXEC");
}

impl DriverProcess {
    /// Spawns `bin args…` as driver `name`. Its stderr goes to the test's stderr.
    ///
    /// # Panics
    /// When the socketpair or the spawn fails.
    pub fn spawn(bin: &Path, name: &str, args: &[&str], opts: Options) -> Self {
        let ipc = opts.ipc.unwrap_or(IpcFd::Stdin);
        let flags = if ipc == IpcFd::Stdin { SockFlag::SOCK_CLOEXEC } else { SockFlag::empty() };
        let (sup, drv) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, flags).expect("socketpair");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env(ENV_DRIVER_NAME, name)
            .env(ENV_SUPERVISOR_PID, opts.supervisor_pid.unwrap_or(std::process::id() as i32).to_string())
            .env_remove(ENV_FAULT)
            .env_remove(ENV_EXEC_LOG)
            .env_remove(ENV_TRACE_FD);
        match ipc {
            IpcFd::Stdin => {
                cmd.env(ENV_IPC_FD, "0");
            }
            IpcFd::Inherited => {
                cmd.env(ENV_IPC_FD, drv.as_raw_fd().to_string()).stdin(Stdio::null());
            }
        }
        if let Some(f) = &opts.fault {
            cmd.env(ENV_FAULT, f);
        }
        if let Some(p) = &opts.exec_log {
            cmd.env(ENV_EXEC_LOG, p);
        }
        if let Some(t) = &opts.trace {
            inheritable(t);
            cmd.env(ENV_TRACE_FD, t.as_raw_fd().to_string());
        }
        if ipc == IpcFd::Stdin {
            cmd.stdin(Stdio::from(drv));
            let child = cmd.spawn().expect("spawn driver");
            return Self { end: SupEnd::new(sup), child };
        }
        let child = cmd.spawn().expect("spawn driver");
        drop(drv);
        Self { end: SupEnd::new(sup), child }
    }

    /// Spawns `bin args…` as driver `name`, sends `Init` (generation 1, no
    /// checkpoint), and expects `Fatal`: returns its reason and how the
    /// process ended ([`describe`]), waiting up to 10 s for it to exit.
    ///
    /// # Panics
    /// When the driver answers anything but `Fatal` or does not exit.
    pub fn fatal_at_init(bin: &Path, name: &str, args: &[&str]) -> (String, String) {
        let mut p = Self::spawn(bin, name, args, Options::default());
        p.send(&ToDriver::Init { generation: Generation(1), checkpoint: None });
        let reason = p.expect_fatal();
        let status = p.wait_for(Duration::from_secs(10)).expect("the driver exits after Fatal");
        (reason, describe(status))
    }

    /// The child's pid.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the process to exit.
    ///
    /// # Panics
    /// When waiting fails.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait for driver") {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process and reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("reap driver")
    }
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `"SIGSEGV"`, `"exit 1"`, … for assertion messages.
#[must_use]
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => {
            nix::sys::signal::Signal::try_from(s).map_or(format!("signal {s}"), |s| s.as_str().to_owned())
        }
        (None, None) => "unknown".into(),
    }
}
