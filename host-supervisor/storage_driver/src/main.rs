//! `storage_driver`: the storage core over a file, run by the shared driver loop.
//!
//! # Why this binary exists
//! It is the demo device of the reincarnation server: it needs no hardware and
//! no root, yet its effects persist across crashes, so a crash in the middle
//! of a write and the replay that follows can be checked byte for byte
//! (`cargo xtask demo`, the replay tests). All the logic is in `storage-core`
//! (deterministic handler, exactly-once watermark) and `reinc-runtime` (the
//! protocol); this file only opens the file as a region (`reinc_region::FileRegion`)
//! and maps the core's outcome onto the runtime's. Bulk requests (data in the
//! session's shared pool, `storage_core::BulkRequest`) move their bytes with
//! one `pread`/`pwrite` between the file and the pool mapping (`src/bulk.rs`).
//!
//! ```text
//! storage_driver --file PATH --blocks N [--sync-data]
//! ```
//! The file is created or extended to `storage_core::region_bytes(N)` bytes
//! (block 0 is the superblock, then the data, then one 4-byte checksum per
//! block: `storage_core::integrity`) and never shrunk. A file of an older
//! format (no checksums) is extended and gets its checksum table at Init. A
//! file that holds something else, or was formatted with another
//! `--blocks`, is refused at Init with `Fatal`.
//!
//! # Designs rejected
//! - `memmap2` over the file: mapping is `unsafe` (another process may
//!   truncate the file, turning a load into SIGBUS), and this crate is
//!   `forbid(unsafe_code)`. `pread`/`pwrite` (`FileExt`) cost one syscall per
//!   request, which is noise next to the IPC round trip.
//! - `fdatasync` after every write by default: the failure model is a crashing
//!   driver process, and the page cache outlives the process. `--sync-data`
//!   adds it for those who also want power-loss durability; a `Flush`
//!   request (what the NBD front end sends for `FLUSH` and `FUA`) syncs on
//!   demand.
#![forbid(unsafe_code)]

mod bulk;

use reinc_proto::RequestId;
use reinc_region::FileRegion;
use reinc_runtime::{Ctx, Driver, DriverError, Effect, Step};
use std::path::PathBuf;
use std::process::ExitCode;
use storage_core::{
    MAX_REPLY_DATA, Storage, StorageReply, StorageRequest, StorageState, Trace, decode_request, region_bytes,
};

/// Command-line arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Args {
    file: PathBuf,
    blocks: u64,
    sync_data: bool,
}

const USAGE: &str = "usage: storage_driver --file PATH --blocks N [--sync-data]";

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let (mut file, mut blocks, mut sync_data) = (None, None, false);
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--file" => file = Some(PathBuf::from(it.next().ok_or(format!("--file needs a path; {USAGE}"))?)),
            "--blocks" => {
                let v = it.next().ok_or(format!("--blocks needs a number; {USAGE}"))?;
                let n: u64 = v.parse().map_err(|e| format!("--blocks {v:?}: {e}; {USAGE}"))?;
                if n == 0 || n > (1 << 40) {
                    return Err(format!("--blocks {n} is out of range (1..=2^40); {USAGE}"));
                }
                blocks = Some(n);
            }
            "--sync-data" => sync_data = true,
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(Args {
        file: file.ok_or(format!("--file is required; {USAGE}"))?,
        blocks: blocks.ok_or(format!("--blocks is required; {USAGE}"))?,
        sync_data,
    })
}

/// The driver: arguments until Init, then the open device.
#[derive(Debug)]
struct StorageDriver {
    args: Args,
    dev: Option<Storage<FileRegion>>,
    reply_buf: Vec<u8>,
}

impl StorageDriver {
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
            _ => dev.handle(state, id, &req, &mut self.reply_buf)?,
        };
        let trace = match &req {
            StorageRequest::Bulk(b) => storage_core::bulk_trace(b, &out),
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

fn main() -> ExitCode {
    reinc_runtime::run_driver(|_name| {
        let args = parse_args(std::env::args().skip(1))?;
        Ok(StorageDriver { args, dev: None, reply_buf: vec![0; MAX_REPLY_DATA] })
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
        assert_eq!(args("--file /x --blocks 8"), Ok(Args { file: "/x".into(), blocks: 8, sync_data: false }));
        assert!(args("--file /x --blocks 8 --sync-data").unwrap().sync_data);
        assert!(args("--blocks 8").unwrap_err().starts_with("--file is required"));
        assert!(args("--file /x").unwrap_err().starts_with("--blocks is required"));
        assert!(args("--file /x --blocks lots").unwrap_err().starts_with("--blocks \"lots\""));
        assert!(args("--file /x --blocks 0").unwrap_err().contains("out of range"));
        assert!(args("--file /x --blocks 8 --fast").unwrap_err().starts_with("unknown argument \"--fast\""));
    }
}
