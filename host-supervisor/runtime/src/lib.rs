//! The event loop every reinc driver binary runs.
//!
//! # Why this crate exists
//! Every driver process must speak the same launch contract and protocol
//! (CONTRACTS.md §1): adopt the IPC socket, die with its supervisor, answer
//! `Init` with `Ready`, handle requests strictly in order, stamp every frame
//! with its generation, send each reply together with its state commit, answer
//! heartbeats even while a request waits for a device interrupt, crash on
//! command for the fault-injection tests, and leave a trace the supervisor can
//! read after a crash. Getting any of that subtly wrong in one driver breaks
//! the replay guarantee for that driver, so it lives here once, and a driver
//! binary only implements [`Driver`]: restore a checkpoint, handle a request,
//! finish a request on an interrupt.
//!
//! # Shape
//! One thread. `poll(2)` over the IPC socket, a signalfd for SIGTERM/SIGINT
//! (treated as `Shutdown`), the driver's interrupt fd (only while a request
//! waits on it) and the wait's timeout; nothing else wakes the process, so an
//! idle driver costs no CPU. Frames are drained without blocking
//! when the socket is readable: pings are answered at once, requests are
//! queued and started one at a time, in arrival order. A request either
//! completes in [`Driver::handle`] ([`Step::Done`]) or parks the loop on its
//! interrupt ([`Step::WaitIrq`]); the next request starts only after it
//! completes. A [`Completion`] says whether the device effect was applied or
//! found already applied (a replay), which drives the trace and the exec log.
//!
//! # Wiring a driver binary
//! ```no_run
//! use reinc_runtime::{Completion, Ctx, Driver, DriverError, Effect, Step};
//! use reinc_proto::RequestId;
//!
//! /// Echoes its request and counts them.
//! struct Echo;
//!
//! impl Driver for Echo {
//!     type State = u64; // the committed state: requests answered
//!     fn describe(&self) -> String {
//!         "echo device".into()
//!     }
//!     fn init(&mut self, _ctx: &mut Ctx<'_>, _state: &u64) -> Result<(), DriverError> {
//!         Ok(()) // open the device, re-apply `state` to it
//!     }
//!     fn handle(&mut self, _ctx: &mut Ctx<'_>, state: &u64, _id: RequestId, body: &[u8])
//!         -> Result<Step<u64>, DriverError> {
//!         Ok(Step::Done(Completion { state: state + 1, reply: body.to_vec(), effect: Effect::None }))
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     // Parse the binary's own arguments inside the closure: an error there
//!     // is reported to the supervisor as `Fatal` at Init.
//!     reinc_runtime::run_driver(|_name| Ok(Echo))
//! }
//! ```
//! A driver with an interrupt returns [`Step::WaitIrq`] from `handle`, exposes
//! its fd (e.g. `/dev/uioN`) in [`Driver::irq_fd`] and finishes the request in
//! [`Driver::on_wake`].
//!
//! # Designs tried and rejected
//! - A thread per concern (IPC reader, interrupt waiter, heartbeat): needs
//!   locks around the driver and makes "strictly in order" a property of the
//!   scheduler. One poll loop gives the ordering for free.
//! - A timer thread or periodic wake-up for heartbeats: the supervisor pings,
//!   the loop answers; an idle driver sleeps in `poll` with no timeout.
//! - `async` (tokio): a large dependency for one socket and one fd, and the
//!   UIO interrupt fd is a plain blocking `read`.
//! - Catching panics around the driver: a panicking driver must die so the
//!   supervisor replays its request on a fresh instance.
//! - A SIGTERM handler setting a flag: async-signal handlers need `unsafe`
//!   (or a self-pipe); a blocked signal read from a signalfd is just one more
//!   fd in the same `poll`.
//! - `OwnedFd::from_raw_fd` for the inherited socket: `unsafe`; see [`launch`]
//!   for the safe routes used instead. Descriptors that arrive later (a
//!   session's shared pool, `ToDriver::AttachPool`) come from rustix's
//!   `recvmsg` as `OwnedFd`s, and are validated in [`pools`].
#![forbid(unsafe_code)]

mod exec_log;
mod fault;
pub mod launch;
pub mod log_limit;
pub mod pools;
mod runtime;
pub mod sandbox;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod trace;

pub use exec_log::ExecLogError;
pub use launch::{Launch, LaunchError};
pub use pools::Pools;
pub use reinc_ringbuf::{Event, Legend, LegendEntry};
pub use reinc_uio::SharedPool;
pub use runtime::{Config, Exit, Runtime, stop_signals};
pub use trace::Tracer;

use reinc_proto::{Generation, RequestId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::os::fd::BorrowedFd;
use std::process::ExitCode;
use std::time::Duration;

/// A driver failure (device I/O, a missing device). The instance reports it
/// as `Fatal` and exits; the supervisor restarts it and replays the request.
pub type DriverError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What the runtime offers a driver while it works.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub(crate) tracer: &'a mut Tracer,
    pub(crate) name: &'a str,
    pub(crate) generation: Generation,
    pub(crate) pools: &'a Pools,
}

impl<'a> Ctx<'a> {
    /// Records a trace event (e.g. [`Event::Irq`] or [`Event::Driver`]).
    pub fn trace(&mut self, event: Event) {
        self.tracer.record(event);
    }

    /// The driver's configured name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.name
    }

    /// This instance's generation.
    #[must_use]
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The shared pool of the session `client` (the `client` of the request
    /// id), if it attached one that passed validation. A request naming a
    /// range in it must still be checked against [`SharedPool::len`].
    #[must_use]
    pub fn pool(&self, client: reinc_proto::ClientId) -> Option<&'a SharedPool> {
        self.pools.get(client)
    }
}

/// Whether a request's device effect happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// No device effect (a read, a refusal).
    None,
    /// This instance applied the effect: counts as one execution.
    Applied,
    /// The device shows an earlier instance applied it already (replay after
    /// a crash between effect and reply); only the reply was recomputed.
    AlreadyApplied,
}

/// The watermark's verdict of a region-backed core (`storage-core`,
/// `net-core`) is exactly the runtime's notion of an effect.
impl From<reinc_region::Effect> for Effect {
    fn from(e: reinc_region::Effect) -> Self {
        match e {
            reinc_region::Effect::None => Self::None,
            reinc_region::Effect::Applied => Self::Applied,
            reinc_region::Effect::AlreadyApplied => Self::AlreadyApplied,
        }
    }
}

/// A finished request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion<S> {
    /// The new committed state (equal to the old one if nothing changed; the
    /// runtime then sends no commit).
    pub state: S,
    /// The postcard-encoded reply body, forwarded verbatim to the client.
    pub reply: Vec<u8>,
    /// What happened at the device.
    pub effect: Effect,
}

/// What [`Driver::handle`] or [`Driver::on_wake`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<S> {
    /// The request is finished.
    Done(Completion<S>),
    /// The request waits for the device: the loop polls [`Driver::irq_fd`]
    /// (and keeps answering pings), then calls [`Driver::on_wake`].
    WaitIrq {
        /// Give up waiting after this long ([`Wake::Timeout`]); `None` waits forever.
        timeout: Option<Duration>,
    },
}

impl<S> Step<S> {
    /// Finishes the request with `reply` postcard-encoded as its body, the
    /// encoding every driver's clients decode.
    ///
    /// # Errors
    /// The reply does not encode (a driver bug: the instance dies and the
    /// request is replayed).
    pub fn done(state: S, reply: &impl Serialize, effect: Effect) -> Result<Self, DriverError> {
        Ok(Self::Done(Completion { state, reply: postcard::to_allocvec(reply)?, effect }))
    }
}

/// Why [`Driver::on_wake`] is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The interrupt fd is readable.
    Irq,
    /// The wait's timeout passed first.
    Timeout,
}

/// A device driver, as the runtime sees it.
pub trait Driver {
    /// The committed state: postcard-encoded into every reply that changes
    /// it, and handed back in `Init` after a restart.
    type State: Serialize + DeserializeOwned + Clone + PartialEq + Debug + Default;

    /// Names of the [`Event::Driver`] codes this driver traces (its core's
    /// `const` legend, declared next to its `Trace` enum). Written once into
    /// the shared trace ring, so the supervisor and `drvctl trace` print
    /// `storage: applied lba=0x1d00 blocks=0x40` rather than the hex code.
    /// Default: none (driver events print in hex).
    const TRACE_LEGEND: Legend = Legend::EMPTY;

    /// One line about the device for the ready log line, e.g. `file=/x, blocks=64`.
    fn describe(&self) -> String;

    /// Takes the device and re-applies the committed `state` to it (absolute
    /// values only). Called once per instance, on `Init`.
    ///
    /// # Errors
    /// The device cannot be used; the instance reports `Fatal` and exits.
    fn init(&mut self, ctx: &mut Ctx<'_>, state: &Self::State) -> Result<(), DriverError>;

    /// Handles one request against the committed `state` (deterministically:
    /// it may run again after a crash, with the same state).
    ///
    /// # Errors
    /// A device failure; the instance dies and the request is replayed.
    fn handle(
        &mut self,
        ctx: &mut Ctx<'_>,
        state: &Self::State,
        id: RequestId,
        body: &[u8],
    ) -> Result<Step<Self::State>, DriverError>;

    /// Continues the request `id` that returned [`Step::WaitIrq`].
    ///
    /// # Errors
    /// A device failure. The default refuses: a driver that never waits
    /// needs no `on_wake`.
    fn on_wake(
        &mut self,
        ctx: &mut Ctx<'_>,
        state: &Self::State,
        id: RequestId,
        wake: Wake,
    ) -> Result<Step<Self::State>, DriverError> {
        let _ = (state, wake);
        Err(format!("driver {} waited for an interrupt for {id} but implements no on_wake", ctx.name()).into())
    }

    /// The device's interrupt fd (e.g. `/dev/uioN`), polled while a request waits.
    fn irq_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// Installs the `tracing` subscriber drivers use: stderr, `RUST_LOG` filter
/// (default `info`), no colours (the supervisor captures the stream), rate
/// limited ([`log_limit`]). Under journald (see [`stderr_is_journal`]) the
/// timestamp is left out: the journal stamps every line itself, and two
/// stamps per line read badly.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let name = std::env::var(launch::ENV_DRIVER_NAME)
        .ok()
        .or_else(|| std::env::args().next())
        .unwrap_or_else(|| "driver".into());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(log_limit::LimitedStderr::new(name))
        .with_ansi(false)
        .with_target(false);
    let _ = if stderr_is_journal(std::env::var("JOURNAL_STREAM").ok().as_deref()) {
        fmt.without_time().try_init()
    } else {
        fmt.try_init()
    };
}

/// True if stderr is the journald stream systemd announced in
/// `JOURNAL_STREAM` (`DEVICE:INODE` of the stream, as `systemd.exec(5)`
/// says to check: the variable alone is inherited by processes whose
/// stderr was redirected elsewhere).
#[must_use]
pub fn stderr_is_journal(journal_stream: Option<&str>) -> bool {
    use std::os::fd::AsFd;
    let Some((dev, ino)) = journal_stream.and_then(|v| v.split_once(':')) else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    nix::sys::stat::fstat(std::io::stderr().as_fd()).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// The whole life of a driver process: logging, the launch contract, then the
/// loop. `make` builds the driver from the binary's arguments (it gets the
/// configured name); if it fails, the instance answers `Init` with `Fatal`.
///
/// SIGTERM and SIGINT are handled like `Shutdown` (finish the current
/// request, exit 0), so a stop never lands between a device effect and its
/// watermark; SIGKILL remains the supervisor's hard stop.
///
/// Exit status: 0 when the supervisor closed the channel, sent `Shutdown` or
/// SIGTERM/SIGINT, 1 after `Fatal`, 2 when the launch contract is violated.
pub fn run_driver<D: Driver>(make: impl FnOnce(&str) -> Result<D, String>) -> ExitCode {
    init_logging();
    let launch = match Launch::from_env() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("[driver] {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = Config::from(launch);
    match stop_signals() {
        Ok(sfd) => config.stop_signals = Some(sfd),
        Err(e) => tracing::warn!("[driver] {}: SIGTERM stays fatal (signalfd: {e})", config.name),
    }
    // Least privilege before the first request is read (reinc-sandbox); a
    // failure is reported at Init like any other reason not to run.
    if let Err(e) = sandbox::enter(&config) {
        let reason = format!("driver {}: cannot enter its sandbox: {e}", config.name);
        return Runtime::new(config, Refused(reason)).run().code();
    }
    let exit = match make(&config.name) {
        Ok(driver) => Runtime::new(config, driver).run(),
        Err(reason) => Runtime::new(config, Refused(reason)).run(),
    };
    exit.code()
}

/// A driver that could not be built: it answers `Init` with `Fatal`.
#[derive(Debug)]
struct Refused(String);

impl Driver for Refused {
    type State = ();
    fn describe(&self) -> String {
        "not built".into()
    }
    fn init(&mut self, _ctx: &mut Ctx<'_>, _state: &()) -> Result<(), DriverError> {
        Err(self.0.clone().into())
    }
    fn handle(&mut self, _: &mut Ctx<'_>, _: &(), id: RequestId, _: &[u8]) -> Result<Step<()>, DriverError> {
        Err(format!("request {id} reached a driver that failed to build: {}", self.0).into())
    }
}

#[cfg(test)]
mod tests;
