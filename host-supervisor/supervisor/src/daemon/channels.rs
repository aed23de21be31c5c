//! Driver channels and exits: signals (SIGCHLD reaping, SIGTERM/SIGINT),
//! draining an instance's frames into core events, the post-mortem line
//! from its trace ring, and sending the core's messages to it.
//!
//! The order the core relies on lives here: an instance's socket is
//! drained before its exit is reported, so frames sent just before death
//! count. Reaping by pid per driver was rejected: SIGCHLD coalesces, so
//! `waitpid(-1, WNOHANG)` until nothing is left is the only way not to miss
//! one.

use super::Daemon;
use super::io::{SendError, flush, queue_or_send};
use crate::core::{Action, DriverId, DriverMsg, Event, ExitStatus, signal_name};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::socket::{MsgFlags, recv};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use reinc_proto::{DriverFrame, Generation, MAX_FRAME, ToDriver, WireError};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use tracing::{debug, info, warn};

impl Daemon {
    pub(super) fn on_signals(&mut self) {
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
    pub(super) fn reap(&mut self) {
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
            let Some((&(driver, generation), _)) = self.live.iter().find(|(_, l)| l.pid == pid) else {
                debug!("reaped unknown child {pid}");
                continue;
            };
            // Contract: frames sent just before death count, so drain first.
            self.drain_driver(driver, generation);
            let live = self.live.remove(&(driver, generation)).expect("found above");
            self.dying.remove(&(driver, generation));
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
    pub(super) fn last_events(&self, driver: DriverId, generation: Generation, ring: &[u8]) -> Option<String> {
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

    pub(super) fn drain_driver(&mut self, driver: DriverId, generation: Generation) {
        loop {
            let Some(live) = self.live.get(&(driver, generation)) else { return };
            let Some(peer) = &live.peer else { return };
            let n = match recv(peer.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC) {
                Ok(0) => {
                    // EOF: the instance closed its end (it is exiting).
                    let peer = self.live.get_mut(&(driver, generation)).and_then(|l| l.peer.take()).expect("peer");
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
                    // Checked once per process, at the first sign that it is
                    // past start-up: `Ready`, or a standby's first pong.
                    Ok(f)
                        if matches!(f.msg, reinc_proto::FromDriver::Ready | reinc_proto::FromDriver::Pong { .. })
                            && self.first_check(driver, generation)
                            && let Some(error) = self.unsandboxed(driver, generation) =>
                    {
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

    /// The generation of the instance of `driver` that serves requests, if
    /// it has a process: never its standby (CONTRACTS.md §9), which gets no
    /// pool before its `Init`, and all of them behind it.
    pub(super) fn running(&self, driver: DriverId) -> Option<Generation> {
        self.core.instance_generation(driver).filter(|g| self.live.contains_key(&(driver, *g)))
    }

    /// True the first time it is asked for a process: its sandbox is to be
    /// checked now.
    fn first_check(&mut self, driver: DriverId, generation: Generation) -> bool {
        self.live.get_mut(&(driver, generation)).is_some_and(|l| !std::mem::replace(&mut l.checked, true))
    }

    /// Checked from outside when a driver says `Ready` (a standby: at its
    /// first pong): is it in the sandbox its config asks for? `Some(why)` if
    /// not (it is then killed as misbehaving, before any request reaches it).
    pub(super) fn unsandboxed(&self, driver: DriverId, generation: Generation) -> Option<String> {
        let p = &self.core.config(driver).privileges;
        if !p.sandbox {
            return None;
        }
        let pid = self.live.get(&(driver, generation))?.pid;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        crate::privileges::check_status(&status, p).err().map(|e| format!("did not enter its sandbox: {e}"))
    }

    pub(super) fn send_driver(&mut self, driver: DriverId, generation: Generation, msg: &DriverMsg) {
        let wire = match msg {
            DriverMsg::Init { generation, checkpoint } => {
                ToDriver::Init { generation: *generation, checkpoint: checkpoint.as_deref() }
            }
            DriverMsg::Request { id, body } => ToDriver::Request { id: *id, body },
            DriverMsg::Ping { nonce } => ToDriver::Ping { nonce: *nonce },
            DriverMsg::Inject(p) => ToDriver::Inject(*p),
            DriverMsg::Shutdown => ToDriver::Shutdown,
        };
        let init = matches!(msg, DriverMsg::Init { .. });
        let frame = match reinc_proto::encode_vec(&wire) {
            Ok(f) => f,
            Err(e) => {
                warn!("cannot encode a message for {}: {e}", self.core.config(driver).name);
                return;
            }
        };
        let Some(live) = self.live.get_mut(&(driver, generation)) else { return };
        let Some(peer) = live.peer.as_mut() else { return };
        if matches!(queue_or_send(peer, frame), Err(SendError::Overflow)) {
            // The instance does not read at all; heartbeats will catch it.
            warn!("{}: outgoing queue overflow; dropping frames", self.core.config(driver).name);
        }
        self.reg.update_out(peer);
        if init {
            // Every session's pool right behind Init, before any replayed
            // request can need it (CONTRACTS.md §8).
            self.send_pools(driver, generation);
        }
    }

    pub(super) fn flush_driver(&mut self, driver: DriverId, generation: Generation) {
        let Some(peer) = self.live.get_mut(&(driver, generation)).and_then(|l| l.peer.as_mut()) else { return };
        let _ = flush(peer);
        self.reg.update_out(peer);
    }
}
