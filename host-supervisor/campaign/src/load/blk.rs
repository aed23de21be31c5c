//! `drvctl blk` as a separate process now and then: a write of
//! [`BLK_BLOCKS`] blocks at [`BLK_LBA`] from a file, a read back into
//! another, the two compared.

use super::{BLK_BLOCKS, BLK_LBA, Shared};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use storage_core::BLOCK_SIZE;

pub(crate) fn blk_load(shared: &Shared, drvctl: &Path, runtime: &Path, dir: &Path) -> u32 {
    let mut runs = 0;
    let (src, dst) = (dir.join("blk-in.bin"), dir.join("blk-out.bin"));
    while !shared.stopped() {
        let data: Vec<u8> = (0..BLK_BLOCKS as usize * BLOCK_SIZE).map(|i| (i as u32 ^ (runs * 0x45)) as u8).collect();
        if let Err(e) = std::fs::write(&src, &data) {
            shared.fail(format!("{}: {e}", src.display()));
            return runs;
        }
        let offset = (BLK_LBA * BLOCK_SIZE as u64).to_string();
        let count = BLK_BLOCKS.to_string();
        for (op, file) in [("write", &src), ("read", &dst)] {
            let out = Command::new(drvctl)
                .arg("--runtime-dir")
                .arg(runtime)
                .args(["blk", op, "--bs", "512", "--count", &count, "--offset", &offset, "--window", "4", "--file"])
                .arg(file)
                .output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    shared.fail(format!(
                        "drvctl blk {op}: {}: {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    ));
                    return runs;
                }
                Err(e) => {
                    shared.fail(format!("{}: {e}", drvctl.display()));
                    return runs;
                }
            }
        }
        match std::fs::read(&dst) {
            Ok(back) if back == data => runs += 1,
            Ok(_) => {
                shared.fail(format!("drvctl blk read of blocks {BLK_LBA}.. differs from what drvctl blk wrote"));
                return runs;
            }
            Err(e) => {
                shared.fail(format!("{}: {e}", dst.display()));
                return runs;
            }
        }
        for _ in 0..20 {
            if shared.stopped() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    runs
}
