//! The storage driver as the runtime sees it: open the file as a region at
//! `Init` (checking the checkpoint against it), then one `storage_core`
//! request per client request, with the core's outcome mapped onto the
//! runtime's, and `fdatasync` where a flush (or `--sync-data`) asks for it.

use crate::{Args, bulk};
use reinc_proto::RequestId;
use reinc_region::FileRegion;
use reinc_runtime::{Ctx, Driver, DriverError, Effect, Step};
use storage_core::{
    MAX_REPLY_DATA, Storage, StorageReply, StorageRequest, StorageState, Trace, decode_request, region_bytes,
};

/// The driver: arguments until Init, then the open device.
#[derive(Debug)]
pub struct StorageDriver {
    args: Args,
    dev: Option<Storage<FileRegion>>,
    reply_buf: Vec<u8>,
}

impl StorageDriver {
    /// A driver for the region the arguments name; the file is opened at `Init`.
    pub fn new(args: Args) -> Self {
        StorageDriver { args, dev: None, reply_buf: vec![0; MAX_REPLY_DATA] }
    }

    fn open(&self) -> Result<Storage<FileRegion>, DriverError> {
        let path = &self.args.file;
        let region = FileRegion::open_at_least(path, region_bytes(self.args.blocks))?;
        Storage::open(region, self.args.blocks).map_err(|e| format!("{}: {e}", path.display()).into())
    }
}

impl Driver for StorageDriver {
    type State = StorageState;
    const TRACE_LEGEND: reinc_runtime::Legend = storage_core::TRACE_LEGEND;

    fn describe(&self) -> String {
        format!("file={}, blocks={}", self.args.file.display(), self.args.blocks)
    }

    fn init(&mut self, ctx: &mut Ctx<'_>, state: &StorageState) -> Result<(), DriverError> {
        let dev = self.open()?;
        dev.check_state(state).map_err(|e| format!("{}: {e}", self.args.file.display()))?;
        if let Some(e) = dev.trace().last() {
            ctx.trace(e.payload.event());
        }
        // Nothing to re-apply: the data lives in the file, and the committed
        // state (append cursor) is consulted by every request.
        self.dev = Some(dev);
        Ok(())
    }

    fn handle(
        &mut self,
        ctx: &mut Ctx<'_>,
        state: &StorageState,
        id: RequestId,
        body: &[u8],
    ) -> Result<Step<StorageState>, DriverError> {
        let dev = self.dev.as_mut().ok_or("storage device used before Init")?;
        let req = match decode_request(body) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("[driver] storage_driver: request {id} has a malformed body ({} bytes)", body.len());
                return Step::done(*state, &StorageReply::Error(e), Effect::None);
            }
        };
        let out = match req {
            // Data in the session's pool: moved by one pread/pwrite (bulk.rs).
            StorageRequest::Bulk(b) => dev.handle_bulk(state, id, &b, &mut bulk::FilePool(ctx.pool(id.client)))?,
            // The same, the client computing and checking the tags.
            StorageRequest::BulkTagged { req: b, tags } => {
                let pool = &mut bulk::FilePool(ctx.pool(id.client));
                dev.handle_bulk_tagged(state, id, &b, tags, pool, &mut self.reply_buf)?
            }
            _ => dev.handle(state, id, &req, &mut self.reply_buf)?,
        };
        let trace = match &req {
            StorageRequest::Bulk(b) | StorageRequest::BulkTagged { req: b, .. } => storage_core::bulk_trace(b, &out),
            _ => Trace::of(&req, &out),
        };
        if let Some(t) = trace {
            ctx.trace(t.event());
        }
        let effect = Effect::from(out.effect);
        // A flush syncs whatever the page cache holds, so every write
        // answered before it is on stable storage when it is answered. A
        // failed sync kills this instance, and the flush is replayed.
        let flush = matches!(req, StorageRequest::Flush);
        if flush || (effect == Effect::Applied && self.args.sync_data) {
            let r = dev.region();
            r.file().sync_data().map_err(|e| format!("fdatasync of {}: {e}", r.path().display()))?;
        }
        Step::done(out.state, &out.reply, effect)
    }
}
