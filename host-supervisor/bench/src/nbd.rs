//! Section 7: the NBD front end (`reinc-nbd`) against the servers a user would
//! pick instead, all on the same file in the same run.
//!
//! - Throughput: `nbdcopy --request-size=1M --connections=1 --requests=R`
//!   (R = 1 and 16), sequential, write (from a page-cache-hot file) then
//!   read (into `null:`), through `reinc-nbd` → supervisor →
//!   `storage_driver`, through nbdkit's file plugin, through `qemu-nbd`, and
//!   direct 1 MiB `pwrite`/`pread`. The peers serve the storage driver's own
//!   file from byte 512 (past the superblock: nbdkit's offset filter,
//!   `qemu-nbd --offset`), so every path moves the same bytes of the same
//!   file. Runs are interleaved (for each direction and depth: reinc, nbdkit,
//!   qemu-nbd), so noise from other tenants hits every side of a ratio.
//! - Recovery as an NBD client sees it: 8 writes in flight on one NBD
//!   connection; the driver is SIGSTOPped for 3 ms (replies already sent
//!   arrive) and SIGKILLed; the figure is kill → the next completed NBD
//!   reply, against fork+exec of the driver to its first message, one floor
//!   sample per kill.
//!
//! A peer that is not installed gives an unmeasured row that says so
//! (`cargo xtask bench` installs nbdkit and qemu-utils first).

use crate::BenchError;
use crate::floors;
use crate::report::{Goal, Row};
use crate::rig::{Bins, DriverSpec, Supervisor};
use crate::rows::Budget;
use crate::stats::{THROUGHPUT_RUNS as RUNS, median, percentiles};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reinc_nbd::client::NbdClient;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use storage_core::BLOCK_SIZE;

const SECTION: u8 = 7;

fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// A server process, killed on drop.
struct Proc(Child, String);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_socket(p: &Path, what: &str) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(p).is_err() {
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(format!("{what} listening on {}", p.display())));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn reinc_nbd(bins: &Bins, sup: &Supervisor, sock: &Path) -> Result<Proc, BenchError> {
    // The default window (32 storage requests of 32 KiB in flight per
    // connection): a deeper one can leave more unread replies queued at the
    // supervisor than its out-bytes-per-connection budget (2 MiB) allows;
    // the supervisor then disconnects the front end, and with 256 it did so
    // mid-transfer in two runs of three (nbdcopy: EIO).
    let mut child = Command::new(&bins.nbd)
        .arg("--runtime-dir")
        .arg(&sup.runtime)
        .arg("--socket")
        .arg(sock)
        .args(["--window", "32", "--max-request", "1048576"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| BenchError::io(bins.nbd.display(), e))?;
    let mut line = String::new();
    let out = child.stdout.take().ok_or_else(|| BenchError::Setup("reinc-nbd stdout".into()))?;
    BufReader::new(out).read_line(&mut line).map_err(|e| BenchError::io("reinc-nbd stdout", e))?;
    if !line.starts_with("nbd+unix://") {
        return Err(BenchError::Setup(format!("reinc-nbd did not come up: {line:?}")));
    }
    Ok(Proc(child, line.trim().into()))
}

fn peer(cmd: &mut Command, sock: &Path, what: &str, uri: String) -> Result<Proc, BenchError> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| BenchError::io(what, e))?;
    let p = Proc(child, uri);
    wait_socket(sock, what)?;
    Ok(p)
}

/// Seconds `nbdcopy` takes to copy `src` to `dst` with `requests` in flight.
fn nbdcopy(nbdcopy: &Path, src: &str, dst: &str, requests: usize) -> Result<f64, BenchError> {
    let t = Instant::now();
    let out = Command::new(nbdcopy)
        .args(["--request-size=1048576", "--connections=1", &format!("--requests={requests}"), src, dst])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BenchError::io(nbdcopy.display(), e))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(BenchError::Setup(format!("nbdcopy {src} {dst} failed: {}", String::from_utf8_lossy(&out.stderr))));
    }
    Ok(secs)
}

fn direct(path: &Path, write: bool, bytes: u64) -> Result<f64, BenchError> {
    let err = |e| BenchError::io(path.display(), e);
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(err)?;
    let mut buf = vec![0x3cu8; 1 << 20];
    let t = Instant::now();
    for i in 0..bytes >> 20 {
        let off = BLOCK_SIZE as u64 + (i << 20);
        if write { f.write_all_at(&buf, off).map_err(err)? } else { f.read_exact_at(&mut buf, off).map_err(err)? }
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Section 7's rows.
///
/// # Errors
/// A failed setup or transfer, naming what failed.
pub fn rows(bins: &Bins, dir: &Path, b: &Budget) -> Result<Vec<Row>, BenchError> {
    // From a clean directory: a socket file left by an interrupted run makes
    // nbdkit and qemu-nbd refuse to listen (EADDRINUSE).
    let _ = std::fs::remove_dir_all(dir);
    let mut rows = throughput(bins, &dir.join("tput"), b)?;
    rows.extend(recovery(bins, &dir.join("recovery"), b)?);
    Ok(rows)
}

fn throughput(bins: &Bins, dir: &Path, b: &Budget) -> Result<Vec<Row>, BenchError> {
    let Some(copy) = tool("nbdcopy") else {
        return Ok(vec![Row::unmeasured(
            SECTION,
            "NBD throughput",
            "MB/s",
            "nbdcopy is not installed (Debian libnbd-bin; cargo xtask bench installs it)",
        )]);
    };
    let mib = if b.mode == "quick" { 16 } else { 256 };
    let bytes = mib << 20;
    let blocks = bytes / BLOCK_SIZE as u64;
    let disk = dir.join("disk.img");
    let spec = DriverSpec::new("storage_driver", &bins.storage_driver).args(&[
        "--file",
        &disk.to_string_lossy(),
        "--blocks",
        &blocks.to_string(),
    ]);
    let sup = Supervisor::start(bins, dir, &[spec], Duration::from_secs(10))?;
    let src = dir.join("src.bin");
    let data: Vec<u8> = (0..bytes as usize).map(|i| (i as u8) ^ ((i >> 12) as u8)).collect();
    std::fs::write(&src, &data).map_err(|e| BenchError::io(src.display(), e))?;
    drop(data);
    let src_s = src.to_string_lossy().into_owned();
    let reinc_sock = dir.join("reinc.sock");
    let reinc = reinc_nbd(bins, &sup, &reinc_sock)?;
    let offset = BLOCK_SIZE.to_string();
    let nbdkit_sock = dir.join("nbdkit.sock");
    let nbdkit = match tool("nbdkit") {
        Some(p) => Some(peer(
            Command::new(p)
                .args(["-f", "-U"])
                .arg(&nbdkit_sock)
                .args(["--filter=offset", "file"])
                .arg(format!("file={}", disk.display()))
                .arg(format!("offset={offset}"))
                .arg(format!("range={bytes}")),
            &nbdkit_sock,
            "nbdkit",
            format!("nbd+unix:///?socket={}", nbdkit_sock.display()),
        )?),
        None => None,
    };
    let qemu_sock = dir.join("qemu-nbd.sock");
    let qemu = match tool("qemu-nbd") {
        Some(p) => Some(peer(
            Command::new(p)
                .args(["-f", "raw", "-t", "-e", "4", "--cache=writeback", "-k"])
                .arg(&qemu_sock)
                .arg(format!("--offset={offset}"))
                .arg(&disk),
            &qemu_sock,
            "qemu-nbd",
            format!("nbd+unix:///?socket={}", qemu_sock.display()),
        )?),
        None => None,
    };
    // Warm-up: the file into the page cache, first connections.
    nbdcopy(&copy, &src_s, &reinc.1, 16)?;
    let mbps = |secs: f64| bytes as f64 / secs / 1e6;
    let mut out = Vec::new();
    for write in [true, false] {
        let mut ds = Vec::new();
        for _ in 0..RUNS {
            ds.push(mbps(direct(&disk, write, bytes)?));
        }
        let direct_mbps = median(ds);
        for depth in [1usize, 16] {
            let run = |uri: &str| {
                if write { nbdcopy(&copy, &src_s, uri, depth) } else { nbdcopy(&copy, uri, "null:", depth) }
            };
            // Alternating, so that a slow moment of the machine falls on
            // one run of each server rather than on every run of one.
            let (mut rs, mut ks, mut qs) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..RUNS {
                rs.push(mbps(run(&reinc.1)?));
                if let Some(p) = &nbdkit {
                    ks.push(mbps(run(&p.1)?));
                }
                if let Some(p) = &qemu {
                    qs.push(mbps(run(&p.1)?));
                }
            }
            let r = median(rs);
            let k = nbdkit.as_ref().map(|_| median(ks));
            let q = qemu.as_ref().map(|_| median(qs));
            let op = if write { "write" } else { "read" };
            let name = |peer: &str| format!("NBD {op}, {depth} in flight, vs {peer}");
            let note = format!(
                "nbdcopy --request-size=1M --connections=1 --requests={depth}, {mib} MiB sequential; reinc-nbd \
                 sends each 1 MiB as one bulk storage request; the data moves through the connection's shared \
                 pool, only the request and its answer through the supervisor; median of {RUNS} runs \
                 alternating with the peers'"
            );
            out.push(match k {
                Some(k) => Row::new(SECTION, &name("nbdkit"), r, "MB/s", "nbdkit file plugin, same file", k)
                    .goal(Goal::RatioAtLeast(0.9))
                    .note(note.clone()),
                None => Row::unmeasured(SECTION, &name("nbdkit"), "MB/s", "nbdkit is not installed (Debian nbdkit)"),
            });
            out.push(match q {
                Some(q) => Row::new(SECTION, &name("qemu-nbd"), r, "MB/s", "qemu-nbd, same file", q),
                None => Row::unmeasured(SECTION, &name("qemu-nbd"), "MB/s", "qemu-nbd is not installed (qemu-utils)"),
            });
            out.push(
                Row::new(SECTION, &name(&format!("direct p{op}")), r, "MB/s", "direct 1 MiB pread/pwrite", direct_mbps)
                    .note("the page cache: what any server could reach at best"),
            );
        }
    }
    drop((reinc, nbdkit, qemu));
    Ok(out)
}

fn recovery(bins: &Bins, dir: &Path, b: &Budget) -> Result<Vec<Row>, BenchError> {
    let floor_args = floors::storage_floor_args(dir)?;
    let spawn_once = || floors::spawn_to_first_message(&bins.storage_driver, &floor_args, "storage_driver", 1);
    for _ in 0..3 {
        spawn_once()?;
    }
    let disk = dir.join("disk.img");
    // As in section 3; the kills below are paced 20 ms apart.
    let spec = DriverSpec::new("storage_driver", &bins.storage_driver)
        .args(&["--file", &disk.to_string_lossy(), "--blocks", "1024"])
        .restart_at_once();
    let sup = Supervisor::start(bins, dir, &[spec], Duration::from_secs(10))?;
    let sock = dir.join("nbd.sock");
    let _server = reinc_nbd(bins, &sup, &sock)?;
    let mut s = NbdClient::connect(&sock).map_err(|e| BenchError::Setup(e.to_string()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let (stop2, done2) = (stop.clone(), done.clone());
    let streamer = std::thread::spawn(move || -> Result<Vec<Instant>, BenchError> {
        let err = |e: reinc_nbd::client::NbdClientError| BenchError::Setup(format!("NBD recovery client: {e}"));
        let data = [0x5au8; 4096];
        let mut k = 0u64;
        let mut send = |s: &mut NbdClient| -> Result<(), BenchError> {
            s.send_write(k, (k % 128) * 4096, &data).map_err(err)?;
            k += 1;
            Ok(())
        };
        for _ in 0..8 {
            send(&mut s)?;
        }
        let (mut times, mut in_flight) = (Vec::new(), 8);
        while in_flight > 0 {
            let errno = s.reply().map_err(err)?.errno;
            if errno != 0 {
                return Err(BenchError::Reply { driver: "storage_driver".into(), what: format!("NBD errno {errno}") });
            }
            times.push(Instant::now());
            done2.fetch_add(1, Ordering::SeqCst);
            in_flight -= 1;
            if !stop2.load(Ordering::SeqCst) {
                send(&mut s)?;
                in_flight += 1;
            }
        }
        Ok(times)
    });
    let kills = b.kills.min(100);
    let mut spawn_samples = Vec::with_capacity(kills);
    let result = (|| -> Result<Vec<Instant>, BenchError> {
        let mut at = Vec::with_capacity(kills);
        for _ in 0..kills {
            let st = sup.driver("storage_driver")?;
            let pid =
                Pid::from_raw(st.pid.ok_or_else(|| BenchError::Setup("storage_driver has no pid".into()))? as i32);
            kill(pid, Signal::SIGSTOP).map_err(|e| BenchError::io("SIGSTOP storage_driver", e.into()))?;
            std::thread::sleep(Duration::from_millis(3));
            let before = done.load(Ordering::SeqCst);
            let t = Instant::now();
            kill(pid, Signal::SIGKILL).map_err(|e| BenchError::io("SIGKILL storage_driver", e.into()))?;
            at.push(t);
            let deadline = t + Duration::from_secs(10);
            while done.load(Ordering::SeqCst) == before {
                if Instant::now() > deadline {
                    return Err(BenchError::Timeout(format!(
                        "an NBD reply after killing storage_driver; {}",
                        sup.tail()
                    )));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            spawn_samples.extend(spawn_once()?);
            std::thread::sleep((t + Duration::from_millis(20)).saturating_duration_since(Instant::now()));
        }
        Ok(at)
    })();
    stop.store(true, Ordering::SeqCst);
    let times = streamer.join().map_err(|_| BenchError::Setup("the NBD client panicked".into()))??;
    let at = result?;
    let rec: Vec<Duration> =
        at.iter().filter_map(|t| times.get(times.partition_point(|x| x <= t)).map(|first| *first - *t)).collect();
    let (r, spawn) = (percentiles(&rec), percentiles(&spawn_samples));
    let ms = |us: f64| us / 1000.0;
    let note = format!(
        "{} SIGKILLs, 8 NBD writes of 4 KiB in flight on one connection; kill -> next NBD reply, through reinc-nbd",
        rec.len()
    );
    Ok(vec![
        Row::new(
            SECTION,
            "NBD recovery p50 (kill -> first NBD reply)",
            ms(r.p50_us),
            "ms",
            "fork+exec to first message p50",
            ms(spawn.p50_us),
        )
        .goal(Goal::RatioAtMost(2.0))
        .note(note),
        Row::new(SECTION, "NBD recovery p99", ms(r.p99_us), "ms", "fork+exec to first message p99", ms(spawn.p99_us)),
    ])
}
