//! The loopback driver as the runtime sees it: open the file as a region at
//! `Init` (checking the checkpoint against it), then one `net_core` request
//! per client request, with the core's outcome mapped onto the runtime's.

use crate::Args;
use net_core::{MTU, Net, NetReply, NetState, Trace, decode_request, region_bytes};
use reinc_proto::RequestId;
use reinc_region::FileRegion;
use reinc_runtime::{Ctx, Driver, DriverError, Effect, Step};

/// The driver: its arguments, and the device once `Init` has opened it.
#[derive(Debug)]
pub struct NetDriver {
    args: Args,
    dev: Option<Net<FileRegion>>,
    reply_buf: Box<[u8; MTU]>,
}

impl NetDriver {
    /// A driver for the ring the arguments name; the file is opened at `Init`.
    pub fn new(args: Args) -> Self {
        NetDriver { args, dev: None, reply_buf: Box::new([0; MTU]) }
    }
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
