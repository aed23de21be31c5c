//! `drvctl blk` as a separate process now and then: a write of
//! [`BLK_BLOCKS`] blocks at [`BLK_LBA`] from a file, a read back into
//! another, the two compared.
//!
//! Across a supervisor kill a run in the middle of its transfer resumes its
//! session (the client library) and must succeed; a run that starts while
//! no supervisor listens is refused at connect, before anything was
//! submitted, and is started again (counted in the final checks).

use super::{BLK_BLOCKS, BLK_LBA, Shared};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
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
            let t0 = Instant::now();
            let out = loop {
                let out = Command::new(drvctl)
                    .arg("--runtime-dir")
                    .arg(runtime)
                    .args(["blk", op, "--bs", "512", "--count", &count, "--offset", &offset, "--window", "4", "--file"])
                    .arg(file)
                    .output();
                match out {
                    // A supervisor being killed and replaced refused the new
                    // session (`Client::connect` does not wait for a
                    // restart): nothing was submitted, so the run is simply
                    // started again, within the clients' reconnect window.
                    Ok(o)
                        if !o.status.success()
                            && refused_at_connect(&String::from_utf8_lossy(&o.stderr))
                            && t0.elapsed() < RECONNECT_WINDOW =>
                    {
                        shared.blk_refused_at_connect.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    other => break other,
                }
            };
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

/// How long a refused `drvctl blk` run is started again: the client
/// library's default reconnect window.
const RECONNECT_WINDOW: Duration = reinc_client::DEFAULT_RECONNECT_TIMEOUT;

/// `drvctl`'s error when it could not open its session: the socket is
/// missing, refuses, or resets the connection (a supervisor being replaced).
fn refused_at_connect(stderr: &str) -> bool {
    stderr.contains("cannot connect to the supervisor")
        && ["ECONNREFUSED", "ENOENT", "ECONNRESET"].iter().any(|e| stderr.contains(e))
}

#[cfg(test)]
mod tests {
    use super::refused_at_connect;

    #[test]
    fn only_a_refused_session_open_counts_as_refused_at_connect() {
        assert!(refused_at_connect(
            "drvctl: cannot connect to the supervisor at /r/client.sock: ECONNREFUSED: Connection refused"
        ));
        assert!(refused_at_connect("drvctl: cannot connect to the supervisor at /r/client.sock: ENOENT: No such file"));
        assert!(!refused_at_connect(
            "drvctl: the supervisor at /r/client.sock did not come back within 30s (last error: ECONNREFUSED)"
        ));
        assert!(!refused_at_connect("drvctl: cannot connect to the supervisor at /r/client.sock: EACCES"));
    }
}
