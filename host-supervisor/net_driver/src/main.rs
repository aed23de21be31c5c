//! `net_driver`: the software loopback packet device over a file, run by the
//! shared driver loop.
//!
//! # Why this binary exists
//! The second demo device the supervisor runs without hardware or root. It
//! exercises the queue-shaped, relative requests (`Send` next, `Recv` next)
//! that `net_core` makes replay-safe; this file only opens the file as
//! a region (`reinc_region::FileRegion`) and maps the core's outcome onto the
//! runtime's.
//!
//! ```text
//! net_driver --file PATH --slots N
//! ```
//! The file is created or extended to `64 + N * 2048` bytes and never shrunk;
//! a foreign file or one formatted with another `--slots` is refused at Init.
//!
//! This file is the command line; [`driver`] wires the core to the runtime,
//! and `tests.rs` holds the unit tests.
//!
//! # Designs rejected
//! - A real network interface (TUN/TAP): needs root and `CAP_NET_ADMIN`, and
//!   the demo must run anywhere; a loopback ring shows the same replay problem.
//! - `memmap2` over the file: `unsafe`, and SIGBUS if the file is truncated;
//!   `pread`/`pwrite` are safe and cheap next to the IPC round trip.
#![forbid(unsafe_code)]

mod driver;

use driver::NetDriver;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Args {
    file: PathBuf,
    slots: u32,
}

const USAGE: &str = "usage: net_driver --file PATH --slots N";

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let (mut file, mut slots) = (None, None);
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--file" => file = Some(PathBuf::from(it.next().ok_or(format!("--file needs a path; {USAGE}"))?)),
            "--slots" => {
                let v = it.next().ok_or(format!("--slots needs a number; {USAGE}"))?;
                let n: u32 = v.parse().map_err(|e| format!("--slots {v:?}: {e}; {USAGE}"))?;
                if n == 0 || n > 65_536 {
                    return Err(format!("--slots {n} is out of range (1..=65536); {USAGE}"));
                }
                slots = Some(n);
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(Args {
        file: file.ok_or(format!("--file is required; {USAGE}"))?,
        slots: slots.ok_or(format!("--slots is required; {USAGE}"))?,
    })
}

fn main() -> ExitCode {
    reinc_runtime::run_driver(|_name| {
        let args = parse_args(std::env::args().skip(1))?;
        Ok(NetDriver::new(args))
    })
}

#[cfg(test)]
mod tests;
