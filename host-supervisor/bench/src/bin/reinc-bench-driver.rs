//! `reinc-bench-driver`: a driver with no device, for the benchmarks.
//!
//! # Why it exists
//! The supervisor's own costs (relaying, commit-with-reply, persisting a
//! checkpoint, holding many drivers) are what the benchmarks measure; a real
//! device's cost (a `pwrite` to a file, an interrupt) would be mixed into
//! every figure. This driver runs the same event loop as every real driver
//! (`reinc-runtime`) and does nothing else:
//! - body `[0]` ([`reinc_bench::NULL_NOP`]): reply `[0]`, state unchanged, so
//!   the runtime sends no commit;
//! - body `[1]` ([`reinc_bench::NULL_COMMIT`]): the state (a counter and a
//!   fixed 64-byte pad, so a commit has a realistic size) changes, so every
//!   reply carries a commit.
//!
//! - `--announce PATH` (for the restart rows): the first thing the process
//!   does, before the launch contract is even read, is send its pid as one
//!   datagram to the Unix socket at `PATH`. That is "the instance's first
//!   message", timed the same way whether reinc or the harness's ideal
//!   supervisor ([`reinc_bench::floors::run_ideal_supervisor`]) restarted it.
//!
//! It is not a device driver, so the naming rule (`X` → `X_driver`) does not
//! apply; it lives in the bench crate because nothing else needs it.
#![forbid(unsafe_code)]

use reinc_proto::RequestId;
use reinc_runtime::{Completion, Ctx, Driver, DriverError, Effect, Step};
use serde::{Deserialize, Serialize};
use std::process::ExitCode;

/// The committed state: a counter plus a pad of the size of a small real
/// driver state.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
struct State {
    commits: u64,
    pad: [u64; 8],
}

impl Default for State {
    fn default() -> Self {
        Self { commits: 0, pad: [0x5a5a_5a5a_5a5a_5a5a; 8] }
    }
}

#[derive(Debug)]
struct Null;

impl Driver for Null {
    type State = State;

    fn describe(&self) -> String {
        "no device (benchmark driver)".into()
    }

    fn init(&mut self, _ctx: &mut Ctx<'_>, _state: &State) -> Result<(), DriverError> {
        Ok(())
    }

    fn handle(
        &mut self,
        _ctx: &mut Ctx<'_>,
        state: &State,
        _id: RequestId,
        body: &[u8],
    ) -> Result<Step<State>, DriverError> {
        let mut next = state.clone();
        let effect = if body.first() == Some(&reinc_bench::NULL_COMMIT) {
            next.commits += 1;
            Effect::Applied
        } else {
            Effect::None
        };
        Ok(Step::Done(Completion { state: next, reply: vec![0], effect }))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let announce = match args.as_slice() {
        [] => None,
        [flag, path] if flag == "--announce" => Some(path.clone()),
        other => {
            // Reported to the supervisor as Fatal at Init, like any driver's bad arguments.
            let reason = format!("reinc-bench-driver: unexpected arguments {other:?} (usage: [--announce PATH])");
            return reinc_runtime::run_driver(move |_name| Err::<Null, String>(reason));
        }
    };
    if let Some(path) = announce {
        // Best effort: a harness that stopped listening only loses a sample.
        let _ = std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.send_to(&std::process::id().to_le_bytes(), &path));
    }
    reinc_runtime::run_driver(|_name| Ok(Null))
}
