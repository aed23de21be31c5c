//! `net_driver`: the software loopback packet device over a file, run by the
//! shared driver loop.
//!
//! # Why this binary exists
//! The second demo device the supervisor runs without hardware or root. It
//! exercises the queue-shaped, relative requests (`Send` next, `Recv` next)
//! that `net-core` makes replay-safe; this file only opens the file as
//! a region (`reinc_region::FileRegion`) and maps the core's outcome onto the
//! runtime's.
//!
//! ```text
//! net_driver --file PATH --slots N
//! ```
//! The file is created or extended to `64 + N * 2048` bytes and never shrunk;
//! a foreign file or one formatted with another `--slots` is refused at Init.
//!
//! # Designs rejected
//! - A real network interface (TUN/TAP): needs root and `CAP_NET_ADMIN`, and
//!   the demo must run anywhere; a loopback ring shows the same replay problem.
//! - `memmap2` over the file: `unsafe`, and SIGBUS if the file is truncated;
//!   `pread`/`pwrite` are safe and cheap next to the IPC round trip.
#![forbid(unsafe_code)]

use net_core::{MTU, Net, NetReply, NetState, Trace, decode_request, region_bytes};
use reinc_proto::RequestId;
use reinc_region::FileRegion;
use reinc_runtime::{Ctx, Driver, DriverError, Effect, Step};
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

#[derive(Debug)]
struct NetDriver {
    args: Args,
    dev: Option<Net<FileRegion>>,
    reply_buf: Box<[u8; MTU]>,
}

impl Driver for NetDriver {
    type State = NetState;
    const TRACE_LEGEND: reinc_runtime::Legend = net_core::TRACE_LEGEND;

    fn describe(&self) -> String {
        format!("file={}, slots={}, mtu={MTU}", self.args.file.display(), self.args.slots)
    }

    fn init(&mut self, ctx: &mut Ctx<'_>, state: &NetState) -> Result<(), DriverError> {
        let path = &self.args.file;
        let region = FileRegion::open_at_least(path, region_bytes(self.args.slots))?;
        let dev = Net::open(region, self.args.slots).map_err(|e| format!("{}: {e}", path.display()))?;
        dev.check_state(state).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(e) = dev.trace().last() {
            ctx.trace(e.payload.event());
        }
        self.dev = Some(dev);
        Ok(())
    }

    fn handle(
        &mut self,
        ctx: &mut Ctx<'_>,
        state: &NetState,
        id: RequestId,
        body: &[u8],
    ) -> Result<Step<NetState>, DriverError> {
        let dev = self.dev.as_mut().ok_or("net device used before Init")?;
        let req = match decode_request(body) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("[driver] net_driver: request {id} has a malformed body ({} bytes)", body.len());
                return Step::done(*state, &NetReply::Error(e), Effect::None);
            }
        };
        let out = dev.handle(state, id, &req, &mut self.reply_buf)?;
        if let Some(t) = Trace::of(&out) {
            ctx.trace(t.event());
        }
        let effect = Effect::from(out.effect);
        Step::done(out.state, &out.reply, effect)
    }
}

fn main() -> ExitCode {
    reinc_runtime::run_driver(|_name| {
        let args = parse_args(std::env::args().skip(1))?;
        Ok(NetDriver { args, dev: None, reply_buf: Box::new([0; MTU]) })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(s.split_whitespace().map(String::from))
    }

    #[test]
    fn arguments_parse_and_errors_name_the_flag() {
        assert_eq!(args("--file /r --slots 16"), Ok(Args { file: "/r".into(), slots: 16 }));
        assert!(args("--slots 16").unwrap_err().starts_with("--file is required"));
        assert!(args("--file /r").unwrap_err().starts_with("--slots is required"));
        assert!(args("--file /r --slots 0").unwrap_err().contains("out of range"));
        assert!(args("--file /r --slots -1").unwrap_err().starts_with("--slots \"-1\""));
        assert!(args("--file /r --slots 2 --mtu 9000").unwrap_err().starts_with("unknown argument \"--mtu\""));
    }
}
