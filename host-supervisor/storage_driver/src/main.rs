//! `storage_driver`: the storage core over a file, run by the shared driver loop.
//!
//! # Why this binary exists
//! It is the demo device of the reincarnation server: it needs no hardware and
//! no root, yet its effects persist across crashes, so a crash in the middle
//! of a write and the replay that follows can be checked byte for byte
//! (`cargo xtask demo`, the replay tests). All the logic is in `storage_core`
//! (deterministic handler, exactly-once watermark) and `reinc-runtime` (the
//! protocol); the driver only opens the file as a region (`reinc_region::FileRegion`)
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
//! This file is the command line; [`driver`] wires the core to the runtime,
//! and `tests.rs` holds the unit tests.
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
mod driver;

use driver::StorageDriver;
use std::path::PathBuf;
use std::process::ExitCode;

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

fn main() -> ExitCode {
    reinc_runtime::run_driver(|_name| {
        let args = parse_args(std::env::args().skip(1))?;
        Ok(StorageDriver::new(args))
    })
}

#[cfg(test)]
mod tests;
