//! Section 6: `drvctl blk` through the supervised storage driver against
//! direct `pread`/`pwrite` of the same file.

use super::{Budget, storage_spec};
use crate::BenchError;
use crate::floors::RawPath;
use crate::report::{Goal, Row};
use crate::rig::{Bins, Supervisor};
use crate::stats::{THROUGHPUT_RUNS as RUNS, median};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use storage_core::{BLOCK_SIZE, MAX_REPLY_DATA};

/// Seconds from `drvctl blk` output (`... copied, 0.123 s, 45.6 MB/s`).
fn dd_seconds(out: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.contains(" copied, "))?;
    line.split(" copied, ").nth(1)?.split(" s,").next()?.trim().parse().ok()
}

/// MB/s of one `drvctl blk` run, and how its data travelled (its report's
/// last words: "data through a shared pool" or "data in the messages (…)").
fn drvctl_blk(bins: &Bins, sup: &Supervisor, op: &str, mib: u64) -> Result<(f64, String), BenchError> {
    let out = std::process::Command::new(&bins.drvctl)
        .arg("--runtime-dir")
        .arg(&sup.runtime)
        .args(["blk", op, "--bs", "1M", "--count", &mib.to_string()])
        .output()
        .map_err(|e| BenchError::io(bins.drvctl.display(), e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(BenchError::Setup(format!(
            "drvctl blk {op} failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let secs = dd_seconds(&text).ok_or_else(|| BenchError::Setup(format!("drvctl blk {op}: no timing in {text:?}")))?;
    let path = text.lines().last().and_then(|l| l.split(" reconnects, ").nth(1)).unwrap_or("data path not reported");
    Ok(((mib << 20) as f64 / secs / 1e6, path.to_owned()))
}

fn direct_io(path: &PathBuf, write: bool, mib: u64) -> Result<f64, BenchError> {
    use std::os::unix::fs::FileExt;
    let err = |e| BenchError::io(path.display(), e);
    let mut buf = vec![0x6bu8; 1 << 20];
    let t = Instant::now();
    if write {
        // Over the blocks of the run before, as `drvctl blk write` writes
        // over the driver's file: a truncated file would make every run
        // allocate its pages afresh, which the supervised path does not pay.
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(err)?;
        for i in 0..mib {
            f.write_all_at(&buf, i << 20).map_err(err)?;
        }
    } else {
        let f = std::fs::File::open(path).map_err(err)?;
        for i in 0..mib {
            f.read_exact_at(&mut buf, BLOCK_SIZE as u64 + (i << 20)).map_err(err)?;
        }
    }
    Ok((mib << 20) as f64 / t.elapsed().as_secs_f64() / 1e6)
}

/// Section 6: dd-like 1 MiB blocks through the supervised storage driver.
pub(super) fn storage(bins: &Bins, dir: &Path, b: &Budget) -> Result<Vec<Row>, BenchError> {
    let blocks = (b.storage_mib << 20) / BLOCK_SIZE as u64;
    let sup = Supervisor::start(bins, dir, &[storage_spec(bins, dir, blocks)], Duration::from_secs(10))?;
    let (mut ws, mut rs, mut dws, mut drs) = (vec![], vec![], vec![], vec![]);
    let (mut w_path, mut r_path) = (String::new(), String::new());
    for _ in 0..RUNS {
        let w;
        (w, w_path) = drvctl_blk(bins, &sup, "write", b.storage_mib)?;
        ws.push(w);
        let r;
        (r, r_path) = drvctl_blk(bins, &sup, "read", b.storage_mib)?;
        rs.push(r);
        dws.push(direct_io(&dir.join("direct.img"), true, b.storage_mib)?);
        drs.push(direct_io(&dir.join("disk.img"), false, b.storage_mib)?);
    }
    let (w, r, direct_w, direct_r) = (median(ws), median(rs), median(dws), median(drs));
    // What the architecture allows at best: 32 KiB frames through two raw
    // hops, 16 in flight (echoed back, so twice the bytes of a read).
    let mut relay = RawPath::relay(&bins.harness)?;
    let frame = MAX_REPLY_DATA;
    relay.throughput(16, frame, Duration::from_millis(100))?;
    let relay_mb = relay.throughput(16, frame, b.tput)? * frame as f64 / 1e6;
    drop(relay);
    let in_flight = reinc_client::blk::pool_slots(reinc_client::blk::DEFAULT_WINDOW, 1 << 20);
    let note = |path: &str| {
        format!(
            "drvctl blk --bs 1M --count {}: one request per 1 MiB record, {in_flight} in flight, {path}; median of {RUNS} runs, as the floor",
            b.storage_mib
        )
    };
    Ok(vec![
        Row::new(6, "dd-like write through the supervisor", w, "MB/s", "direct 1 MiB pwrite, same size", direct_w)
            .goal(Goal::RatioAtLeast(0.5))
            .note(note(&w_path)),
        Row::new(6, "dd-like read through the supervisor", r, "MB/s", "direct 1 MiB pread of the same file", direct_r)
            .goal(Goal::RatioAtLeast(0.5))
            .note(note(&r_path)),
        Row::new(
            6,
            "dd-like read against a raw 32 KiB relay",
            r,
            "MB/s",
            "raw relay, 32 KiB frames, 16 in flight",
            relay_mb,
        )
        .note("the message path's ceiling (one request per 32 KiB, two hops); the shared pool is not bound by it"),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dd_seconds_come_from_the_copied_line() {
        let out = "4+0 records in\n4+0 records out\n4194304 bytes (4.2 MB, 4.0 MiB) copied, 0.052 s, 80.6 MB/s\n";
        assert_eq!(dd_seconds(out), Some(0.052));
        assert_eq!(dd_seconds("nothing"), None);
    }
}
