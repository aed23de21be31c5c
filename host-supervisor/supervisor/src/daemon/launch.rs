//! Launching a driver instance: the socketpair that becomes its stdin, the
//! trace memfd, the clean environment of the launch contract (names from
//! [`reinc_control::env`], which the runtime reads too, so the two sides
//! cannot drift), credentials and process group; and signalling it.
//!
//! Passing the IPC socket by an arbitrary fd number was rejected: fd 0 lets
//! the driver adopt it without `pidfd_getfd`, which seccomp may forbid.

use super::Daemon;
use super::dying::Killed;
use super::fds;
use super::io::{Peer, Source, inheritable, set_nonblocking};
use crate::core::{Action, DriverId, Event, KillSignal, SchedSample};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::Pid;
use reinc_control::env;
use reinc_proto::Generation;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Instant;
use tracing::debug;

#[derive(Debug)]
pub(super) struct Live {
    pub(super) pid: Pid,
    pub(super) peer: Option<Peer>,
    pub(super) trace: Option<File>,
    /// Its sandbox was checked (at its first `Ready`, or a standby's first pong).
    pub(super) checked: bool,
}

/// Why a launch failed, and whether for lack of resources.
#[derive(Debug)]
pub(super) struct SpawnError {
    pub(super) message: String,
    /// Out of descriptors, memory or processes ([`fds::exhausted`]).
    pub(super) exhausted: bool,
}

impl SpawnError {
    pub(super) fn errno(message: String, errno: i32) -> Self {
        Self { message, exhausted: fds::exhausted(errno) }
    }
}

impl Daemon {
    /// Launches `generation` of `driver` (with the descriptor reserve as a
    /// second chance) and returns the core's answer to the outcome.
    pub(super) fn launch(&mut self, driver: DriverId, generation: Generation) -> Vec<Action> {
        let now = self.now();
        // The reserve is for exactly this: a launch must not fail
        // because clients hold every descriptor.
        let mut spawned = self.spawn(driver, generation);
        if matches!(&spawned, Err(e) if e.exhausted) {
            self.reserve.release();
            spawned = self.spawn(driver, generation);
            self.reserve.refill();
        }
        match spawned {
            Ok(pid) => self.core.handle(now, Event::Spawned { driver, generation, pid }),
            Err(SpawnError { message: error, exhausted: true }) => {
                self.core.handle(now, Event::SpawnDeferred { driver, generation, error })
            }
            Err(SpawnError { message: error, .. }) => {
                self.core.handle(now, Event::SpawnFailed { driver, generation, error })
            }
        }
    }

    /// Signals the instance `generation` of `driver`, if it is still the live one.
    /// Answers [`Action::ProbeSched`]: the instance's scheduling figures
    /// from `/proc` (none if it is gone or the kernel keeps none).
    pub(super) fn probe_sched(&mut self, driver: DriverId, generation: Generation) -> Vec<Action> {
        let now = self.now();
        let sample = self.live.get(&(driver, generation)).and_then(|l| {
            let pid = u32::try_from(l.pid.as_raw()).ok()?;
            reinc_procfs::sched(pid).map(|s| SchedSample {
                runnable: s.state == 'R',
                ran_ns: s.ran_ns,
                waited_ns: s.waited_ns,
            })
        });
        self.core.handle(now, Event::Sched { driver, generation, sample })
    }

    pub(super) fn signal(&mut self, driver: DriverId, generation: Generation, signal: KillSignal) {
        if let Some(l) = self.live.get(&(driver, generation)) {
            let sig = match signal {
                KillSignal::Term => Signal::SIGTERM,
                KillSignal::Kill => Signal::SIGKILL,
            };
            if let Err(e) = kill(l.pid, sig) {
                debug!("kill {} {}: {e}", l.pid, sig.as_str());
            }
            // From the first SIGKILL on, its not dying is watched (`dying`).
            if signal == KillSignal::Kill {
                self.dying.entry((driver, generation)).or_insert_with(|| Killed::new(Instant::now()));
            }
        }
    }

    pub(super) fn spawn(&mut self, driver: DriverId, generation: Generation) -> Result<u32, SpawnError> {
        let cfg = self.core.config(driver).clone();
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| SpawnError::errno(format!("socketpair for {}: {e}", cfg.name), e as i32))?;
        let trace = trace_memfd(&cfg.name);
        // The channel becomes the child's stdin: std dup2()s it into place, so
        // our end keeps CLOEXEC and the driver adopts fd 0 without
        // pidfd_getfd (which seccomp profiles may forbid). The trace memfd is
        // inherited by number; only this thread ever forks (the journal's
        // writer thread does not), so no other child can inherit it in the
        // window where it lacks CLOEXEC.
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
            cmd.env(env::ENV_SANDBOX, "1")
                .env(env::ENV_CAPABILITIES, p.capabilities.join(","))
                .env(env::ENV_SECCOMP, if p.seccomp { "1" } else { "0" });
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
            .env(env::ENV_IPC_FD, "0")
            .env(env::ENV_DRIVER_NAME, &cfg.name)
            .env(env::ENV_SUPERVISOR_PID, std::process::id().to_string())
            // Stamps what a standby sends before Init (CONTRACTS.md §9).
            .env(env::ENV_GENERATION, generation.0.to_string())
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
            cmd.env(env::ENV_TRACE_FD, t.as_raw_fd().to_string());
        }
        if let Some(f) = &cfg.fault {
            cmd.env(env::ENV_FAULT, f.to_string());
        }
        if let Some(l) = &cfg.exec_log {
            cmd.env(env::ENV_EXEC_LOG, l);
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
        self.live.insert((driver, generation), Live { pid, peer: Some(Peer::new(ours, token)), trace, checked: false });
        Ok(pid.as_raw() as u32)
    }
}

/// The trace ring's memfd for one instance of `driver`, sealed so the
/// driver may map it and store records without a system call each
/// (`reinc_uio::WriteOnlyArea` refuses a memfd that could shrink under its
/// mapping). `None` when the kernel refuses: the driver then runs without a
/// shared trace.
fn trace_memfd(driver: &str) -> Option<OwnedFd> {
    reinc_uio::sealed_memfd(&format!("reinc-trace-{driver}"), reinc_ringbuf::shared::RING_BYTES)
        .map_err(|e| debug!("{e}"))
        .ok()
}
