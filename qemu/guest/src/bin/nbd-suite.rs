//! The kernel as a client: Linux's own NBD driver (`nbd.ko`) on `/dev/nbd0`,
//! attached to `reinc-nbd` in front of the supervised `storage_driver`, with
//! the driver killed in the middle of block I/O.
//!
//! # Shape
//! - `/bin/supervisor` runs `qemu/x86/nbd.toml` (one storage driver, 12 MiB
//!   in the guest's RAM root), `/bin/reinc-nbd` serves it on a Unix socket.
//! - This program is the `nbd-client`: busybox-static has none. It negotiates with
//!   `NBD_OPT_GO` in user space, then hands the connected socket to the
//!   kernel with the classic ioctls (`NBD_SET_BLKSIZE`, `NBD_SET_SIZE_BLOCKS`,
//!   `NBD_SET_FLAGS`, `NBD_SET_TIMEOUT`, `NBD_SET_SOCK`) and a thread blocked
//!   in `NBD_DO_IT`, exactly what `nbd-client` does.
//! - The I/O is dd's: 1 MiB blocks, `O_DIRECT` on `/dev/nbd0` so every block
//!   really goes through the kernel's NBD client (no page cache in between),
//!   then `fsync` (an NBD `FLUSH`). The bytes read back are compared with the
//!   bytes written.
//! - Crashes: SIGSEGV raised by the driver itself and a hang, both armed on a
//!   request in the middle of the transfer (fault injection), and SIGKILL
//!   from outside after 3 MiB. Each time: the I/O completes without an error,
//!   the kernel log has no I/O error and no NBD complaint, the `[SUP]` lines
//!   show the crash, the restart and the replay, and the exec log shows every
//!   storage write applied once.
//! - Then the same with the real tools: busybox-static's `dd`, `sha256sum`
//!   and `kill` (put into the initramfs by the profile's `guest.busybox`),
//!   and `blkdiscard`, which the kernel sends as NBD `TRIM`.
//!   The literal `dd if=/dev/nbd0 of=/dev/null bs=1M count=10` and `dd
//!   if=FILE of=/dev/nbd0 bs=1M count=10 conv=fsync`, each with `kill -SEGV`,
//!   `kill -KILL` or `kill -STOP` (a hang) sent from outside once the block
//!   layer has counted 3 MiB on /dev/nbd0 and while dd still runs; see
//!   `busybox_case`.
//!
//! # The one `unsafe`
//! The NBD ioctls take an integer argument, and nix generates its ioctl
//! wrappers as `unsafe fn`; [`kernel_nbd`] is the only place they are
//! called, each with its `SAFETY` comment. Everything else is safe code.
#![deny(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::{Child, ExitCode};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reinc_client::control::ControlRequest;
use reinc_guest::harness::{self, Context, Failure, TestResult};
use reinc_guest::sup::{Supervisor, control, running, status, wait_status};
use reinc_guest::{ensure, ensure_eq, test};
use reinc_proto::FaultPlan;

#[path = "../nbd_attach.rs"]
mod nbd_attach;
use nbd_attach::{Attached, DEVICE, KBLOCK, SIZE, STORAGE, Side, attach, kernel_complaints, kernel_nbd, pattern};

const EXEC_LOG: &str = "/tmp/reinc-nbd-exec.log";
/// What each dd moves: `bs=1M count=10`.
const MIB: usize = 1 << 20;
const COUNT: usize = 10;
const SUITE_LIMIT: Duration = Duration::from_secs(360);
/// Where a busybox case sends its signal: once this much has moved on the
/// faulted side of /dev/nbd0.
const KILL_AFTER: u64 = 3 << 20;

struct Ctx {
    sup: Supervisor,
    server: Mutex<Option<Child>>,
    /// The control fd of /dev/nbd0 (ioctls).
    ctl: File,
    /// An O_DIRECT fd of /dev/nbd0 (the dd).
    dev: File,
    do_it: Mutex<Option<JoinHandle<std::io::Result<()>>>>,
    /// What the last dd wrote.
    written: Mutex<Vec<u8>>,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.get_mut().ok().and_then(Option::take) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A 1 MiB buffer aligned for O_DIRECT, carved out of a larger Vec.
struct Aligned {
    buf: Vec<u8>,
    at: usize,
}

impl Aligned {
    fn new() -> Self {
        let buf = vec![0u8; MIB + KBLOCK as usize];
        let at = (KBLOCK as usize - (buf.as_ptr() as usize % KBLOCK as usize)) % KBLOCK as usize;
        Self { buf, at }
    }
    fn get(&mut self) -> &mut [u8] {
        &mut self.buf[self.at..self.at + MIB]
    }
}

/// `dd of=/dev/nbd0 bs=1M count=10 oflag=direct conv=fsync`, calling
/// `after(i)` once block `i` is written.
fn dd_write(dev: &File, data: &[u8], mut after: impl FnMut(usize)) -> Result<Duration, Failure> {
    let mut a = Aligned::new();
    let t = Instant::now();
    for (i, block) in data.chunks(MIB).enumerate() {
        a.get().copy_from_slice(block);
        dev.write_all_at(a.get(), (i * MIB) as u64).context(|| format!("dd write of block {i} to {DEVICE}"))?;
        after(i);
    }
    dev.sync_all().context(|| format!("fsync of {DEVICE} (NBD FLUSH)"))?;
    Ok(t.elapsed())
}

/// `dd if=/dev/nbd0 bs=1M count=10 iflag=direct`.
fn dd_read(dev: &File, mut after: impl FnMut(usize)) -> Result<(Vec<u8>, Duration), Failure> {
    let mut a = Aligned::new();
    let mut out = Vec::with_capacity(COUNT * MIB);
    let t = Instant::now();
    for i in 0..COUNT {
        dev.read_exact_at(a.get(), (i * MIB) as u64).context(|| format!("dd read of block {i} from {DEVICE}"))?;
        out.extend_from_slice(a.get());
        after(i);
    }
    Ok((out, t.elapsed()))
}

/// Every storage write in the exec log at most once; returns how many.
fn exec_log_once() -> Result<usize, Failure> {
    let text = std::fs::read_to_string(EXEC_LOG).context(|| format!("read {EXEC_LOG}"))?;
    let mut seen = std::collections::HashMap::new();
    for l in text.lines() {
        let mut it = l.split_whitespace();
        let (_gen, id) = (it.next(), it.collect::<Vec<_>>().join(" "));
        *seen.entry(id).or_insert(0u32) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(twice.is_empty(), "storage writes applied more than once: {twice:?}");
    Ok(seen.len())
}

fn inject(plan: &str) -> TestResult {
    let plan: FaultPlan = plan.parse().map_err(|e| Failure::check(format!("plan {plan}: {e:?}")))?;
    control(ControlRequest::Inject { driver: STORAGE.into(), plan })?;
    Ok(())
}

/// One dd write then read back under a fault armed with `plan` (or, with
/// `None`, a SIGKILL from outside after 3 MiB), checking the bytes, one
/// restart, the `[SUP]` lines and exactly-once.
fn crash_case(ctx: &Ctx, plan: Option<&str>, seed: u64, read_side: bool) -> TestResult {
    let before = status(STORAGE)?;
    let replays = ctx.sup.count_logged("[SUP] replaying");
    let data = pattern(COUNT * MIB, seed);
    let outside_kill = |i: usize| {
        if plan.is_none() && i == 2 {
            let pid = before.pid.expect("running driver has a pid");
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    };
    if read_side {
        // Write without a fault, then the read is the faulted transfer.
        dd_write(&ctx.dev, &data, |_| {})?;
        if let Some(p) = plan {
            inject(p)?;
        }
        println!("$ dd if={DEVICE} of=/dev/null bs=1M count={COUNT} iflag=direct");
        let (got, took) = dd_read(&ctx.dev, outside_kill)?;
        println!("{COUNT} MB read successfully ({} ms)", took.as_millis());
        ensure!(got == data, "the bytes read back differ from the bytes written");
    } else {
        if let Some(p) = plan {
            inject(p)?;
        }
        println!("$ dd if=pattern of={DEVICE} bs=1M count={COUNT} oflag=direct conv=fsync");
        let took = dd_write(&ctx.dev, &data, outside_kill)?;
        println!("{COUNT} MB written successfully ({} ms)", took.as_millis());
        let (got, _) = dd_read(&ctx.dev, |_| {})?;
        ensure!(got == data, "the bytes read back differ from the bytes written");
    }
    *ctx.written.lock().unwrap() = data;
    let after = wait_status(STORAGE, "restarted once", |s| running(s) && s.generation == before.generation + 1)?;
    ensure_eq!(after.generation, before.generation + 1, "one crash, one restart");
    let end = Instant::now() + Duration::from_secs(2);
    while ctx.sup.count_logged("[SUP] replaying") == replays && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    ensure!(ctx.sup.count_logged("[SUP] replaying") > replays, "the supervisor replayed the queued requests");
    ensure!(ctx.sup.logged("[SUP] restarting storage_driver"), "the restart is logged");
    let bad = kernel_complaints()?;
    ensure!(bad.is_empty(), "the kernel logged I/O trouble: {bad:?}");
    exec_log_once()?;
    Ok(())
}

fn kernel_nbd_client_serves_dev_nbd0_through_reinc_nbd(ctx: &Ctx) -> TestResult {
    let sectors: u64 = std::fs::read_to_string("/sys/block/nbd0/size")
        .context(|| "read /sys/block/nbd0/size".into())?
        .trim()
        .parse()
        .map_err(|_| Failure::check("/sys/block/nbd0/size is not a number"))?;
    ensure_eq!(sectors * 512, SIZE, "the kernel sees the export's size");
    let (got, _) = dd_read(&ctx.dev, |_| {})?;
    ensure!(got.iter().all(|&b| b == 0), "a fresh disk reads as zeros");
    Ok(())
}

fn dd_write_survives_a_sigsegv_mid_transfer(ctx: &Ctx) -> TestResult {
    crash_case(ctx, Some("after-effect:100:segv"), 1, false)?;
    ensure!(ctx.sup.logged("[SUP] storage_driver crashed (SIGSEGV)"), "the crash is logged with its signal");
    Ok(())
}

fn dd_read_survives_a_sigsegv_mid_transfer(ctx: &Ctx) -> TestResult {
    crash_case(ctx, Some("before-effect:120:segv"), 2, true)
}

fn dd_write_survives_a_sigkill_from_outside_mid_transfer(ctx: &Ctx) -> TestResult {
    crash_case(ctx, None, 3, false)?;
    ensure!(ctx.sup.logged("[SUP] storage_driver crashed (SIGKILL)"), "the crash is logged with its signal");
    Ok(())
}

fn dd_read_survives_a_sigkill_from_outside_mid_transfer(ctx: &Ctx) -> TestResult {
    crash_case(ctx, None, 4, true)
}

fn dd_write_survives_a_hang_mid_transfer(ctx: &Ctx) -> TestResult {
    crash_case(ctx, Some("after-effect:100:hang"), 5, false)?;
    ensure!(ctx.sup.logged("hung (missed"), "the hang is detected by heartbeats");
    Ok(())
}

/// The real busybox `dd` (and `sha256sum`, `kill`) under a storage_driver
/// fault that lands mid-transfer: `signal` is sent with `/bin/kill` as soon
/// as the block layer has counted [`KILL_AFTER`] bytes on the faulted side of
/// /dev/nbd0, while dd is still running (checked). `STOP` is the hang: the
/// supervisor notices the missed heartbeats and kills the driver itself.
///
/// A write is `dd if=FILE of=/dev/nbd0 bs=1M count=10 conv=fsync`, read
/// back after dropping the page cache. A read is the literal `dd
/// if=/dev/nbd0 of=/dev/null bs=1M count=10` after dropping the page cache;
/// its bytes are then hashed by `dd if=/dev/nbd0 bs=1M count=10 |
/// sha256sum` without dropping the page cache (readahead off), so the
/// digest is mostly of the pages the interrupted dd brought in; how many
/// bytes came from the device again is printed (0 or 1 MiB so far, not
/// understood yet).
fn busybox_case(ctx: &Ctx, signal: &str, side: Side, seed: u64) -> TestResult {
    let before = status(STORAGE)?;
    let pid = before.pid.ok_or_else(|| Failure::check("the running driver has no pid"))?;
    let replays = ctx.sup.count_logged("[SUP] replaying");
    let restarts = ctx.sup.count_logged("[SUP] restarting storage_driver");
    let needle = match signal {
        "STOP" => "[SUP] storage_driver failed (hung (missed",
        "SEGV" => "[SUP] storage_driver crashed (SIGSEGV)",
        _ => "[SUP] storage_driver crashed (SIGKILL)",
    };
    let faults = ctx.sup.count_logged(needle);
    let data = pattern(COUNT * MIB, seed);
    let file = format!("/tmp/busybox-{seed}.bin");
    std::fs::write(&file, &data).context(|| format!("write {file}"))?;
    let written = nbd_attach::sha256_file(&file)?;
    let (iff, of, count) = (format!("if={file}"), format!("of={DEVICE}"), format!("count={COUNT}"));
    let write_args = [iff.as_str(), of.as_str(), "bs=1M", count.as_str(), "conv=fsync"];
    let total = (COUNT * MIB) as u64;
    let fire = || nbd_attach::kill(signal, pid);
    let run = match side {
        Side::Write => {
            println!("$ dd {}   # kill -{signal} {pid} after 3 MiB reach the device", write_args.join(" "));
            let run = nbd_attach::dd(&write_args, Some((Side::Write, KILL_AFTER)), fire, || {})?;
            run.ensure_ok(total)?;
            nbd_attach::drop_caches()?;
            let (read, again, _) = nbd_attach::sha256_of_nbd0(COUNT)?;
            again.ensure_ok(total)?;
            ensure_eq!(read, written, "sha256 of /dev/nbd0 read back = sha256sum {file}");
            run
        }
        Side::Read => {
            nbd_attach::dd(&write_args, None, || Ok(()), || {})?.ensure_ok(total)?;
            nbd_attach::drop_caches()?;
            let iff = format!("if={DEVICE}");
            let read_args = [iff.as_str(), "of=/dev/null", "bs=1M", count.as_str()];
            println!("$ dd {}   # kill -{signal} {pid} after 3 MiB read", read_args.join(" "));
            let run = nbd_attach::dd(&read_args, Some((Side::Read, KILL_AFTER)), fire, || {})?;
            run.ensure_ok(total)?;
            let (read, again, fetched) = nbd_attach::sha256_of_nbd0(COUNT)?;
            again.ensure_ok(total)?;
            println!(
                "re-read for sha256: {fetched} bytes from {DEVICE}, the rest from the interrupted dd's page cache"
            );
            ensure_eq!(read, written, "sha256 of what dd read = sha256sum {file}");
            run
        }
    };
    let _ = std::fs::remove_file(&file);
    let fired = run.fired.ok_or_else(|| Failure::check("the signal was never sent"))?;
    ensure!(
        fired.dd_running && fired.at_bytes < total,
        "kill -{signal} landed mid-transfer: dd running {}, {} of {total} bytes moved",
        fired.dd_running,
        fired.at_bytes
    );
    println!(
        "{COUNT} MB {} successfully; kill -{signal} landed after {} KiB",
        if side == Side::Read { "read" } else { "written" },
        fired.at_bytes >> 10
    );
    *ctx.written.lock().unwrap() = data;
    let after = wait_status(STORAGE, "restarted once", |s| running(s) && s.generation == before.generation + 1)?;
    ensure_eq!(after.generation, before.generation + 1, "one fault, one restart");
    ensure!(ctx.sup.logged(needle) && ctx.sup.count_logged(needle) > faults, "the supervisor logged `{needle}`");
    ensure!(ctx.sup.count_logged("[SUP] restarting storage_driver") > restarts, "the restart is logged");
    let end = Instant::now() + Duration::from_secs(2);
    while ctx.sup.count_logged("[SUP] replaying") == replays && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let replayed = ctx.sup.count_logged("[SUP] replaying") > replays;
    // A signal from outside lands at a moment of its own. Under a write it
    // is sent once 3 MiB have reached the device, while writeback of the
    // rest is under way; under a read, dd may be
    // consuming readahead from the page cache with no NBD request out, and
    // then there is nothing to replay. The injected faults
    // (dd_read_survives_a_sigsegv_mid_transfer, ...) land inside a request
    // and prove the read-side replay; here bytes, exit status, one restart
    // and exactly-once are what must hold.
    if side == Side::Write {
        ensure!(replayed, "the supervisor replayed the queued requests");
    } else {
        println!(
            "replay after kill -{signal} during the read: {}",
            if replayed { "yes" } else { "nothing was queued" }
        );
    }
    let bad = kernel_complaints()?;
    ensure!(bad.is_empty(), "the kernel logged I/O trouble: {bad:?}");
    exec_log_once()?;
    Ok(())
}

fn busybox_dd_read_survives_kill_segv_mid_transfer(ctx: &Ctx) -> TestResult {
    busybox_case(ctx, "SEGV", Side::Read, 11)
}

fn busybox_dd_write_survives_kill_segv_mid_transfer(ctx: &Ctx) -> TestResult {
    busybox_case(ctx, "SEGV", Side::Write, 12)
}

fn busybox_dd_read_survives_kill_sigkill_mid_transfer(ctx: &Ctx) -> TestResult {
    busybox_case(ctx, "KILL", Side::Read, 13)
}

fn busybox_dd_write_survives_kill_sigkill_mid_transfer(ctx: &Ctx) -> TestResult {
    busybox_case(ctx, "KILL", Side::Write, 14)
}

fn busybox_dd_read_survives_a_hang_mid_transfer(ctx: &Ctx) -> TestResult {
    busybox_case(ctx, "STOP", Side::Read, 15)
}

fn busybox_dd_write_survives_a_hang_mid_transfer(ctx: &Ctx) -> TestResult {
    busybox_case(ctx, "STOP", Side::Write, 16)
}

/// busybox's `blkdiscard` on part of /dev/nbd0: the kernel turns it into
/// NBD `TRIM`s (advertised with `SEND_TRIM`, passed on by `NBD_SET_FLAGS`),
/// `reinc-nbd` into storage zero requests. The range then reads as zeros
/// through the kernel, the rest is untouched, the kernel logs no trouble,
/// and every zero request is applied once like a write.
fn busybox_blkdiscard_leaves_zeros_where_it_discarded(ctx: &Ctx) -> TestResult {
    let (before, _) = dd_read(&ctx.dev, |_| {})?;
    let (off, len) = (MIB, 3 * MIB);
    let args = ["-o".to_string(), off.to_string(), "-l".to_string(), len.to_string(), DEVICE.to_string()];
    println!("$ blkdiscard {}", args.join(" "));
    let out =
        std::process::Command::new("/bin/blkdiscard").args(&args).output().context(|| "run /bin/blkdiscard".into())?;
    ensure!(out.status.success(), "blkdiscard failed: {}", String::from_utf8_lossy(&out.stderr));
    let (after, _) = dd_read(&ctx.dev, |_| {})?;
    let mut want = before;
    want[off..off + len].fill(0);
    ensure!(after == want, "the discarded range reads as zeros and nothing else changed");
    *ctx.written.lock().unwrap() = want;
    let bad = kernel_complaints()?;
    ensure!(bad.is_empty(), "the kernel logged I/O trouble: {bad:?}");
    exec_log_once()?;
    Ok(())
}

fn every_storage_write_was_applied_exactly_once(ctx: &Ctx) -> TestResult {
    let n = exec_log_once()?;
    ensure!(n >= 11 * COUNT * 32, "{n} storage writes logged for 11 dd writes of 10 MiB");
    let mut sb = [0u8; 512];
    File::open("/tmp/reinc-nbd-disk.img")
        .and_then(|f| f.read_exact_at(&mut sb, 0))
        .context(|| "read the superblock".into())?;
    let sb = storage_core::Superblock::decode(&sb).map_err(|e| Failure::check(format!("superblock: {e}")))?;
    let applied = sb.map_or(0, |s| s.applied_count);
    ensure_eq!(applied, n as u64, "superblock applied_count = distinct writes in the exec log");
    let data = ctx.written.lock().unwrap().clone();
    let (got, _) = dd_read(&ctx.dev, |_| {})?;
    ensure!(got == data, "the last data written is still there");
    Ok(())
}

fn disconnect_detaches_dev_nbd0_cleanly(ctx: &Ctx) -> TestResult {
    kernel_nbd::disconnect(&ctx.ctl).context(|| format!("NBD_DISCONNECT on {DEVICE}"))?;
    let h = ctx.do_it.lock().unwrap().take().ok_or_else(|| Failure::check("NBD_DO_IT thread gone"))?;
    let end = Instant::now() + Duration::from_secs(10);
    while !h.is_finished() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    ensure!(h.is_finished(), "NBD_DO_IT returned after the disconnect");
    let _ = h.join();
    ensure!(ctx.sup.stop()? == Some(0), "the supervisor stopped cleanly");
    Ok(())
}

fn start() -> Result<Ctx, String> {
    let Attached { sup, server, ctl, do_it } = attach()?;
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(DEVICE)
        .map_err(|e| format!("open {DEVICE} O_DIRECT: {e}"))?;
    Ok(Ctx {
        sup,
        server: Mutex::new(Some(server)),
        ctl,
        dev,
        do_it: Mutex::new(Some(do_it)),
        written: Mutex::new(vec![0; COUNT * MIB]),
    })
}

fn main() -> ExitCode {
    reinc_guest::init_logging();
    let tests = [
        test!(kernel_nbd_client_serves_dev_nbd0_through_reinc_nbd),
        test!(dd_write_survives_a_sigsegv_mid_transfer),
        test!(dd_read_survives_a_sigsegv_mid_transfer),
        test!(dd_write_survives_a_sigkill_from_outside_mid_transfer),
        test!(dd_read_survives_a_sigkill_from_outside_mid_transfer),
        test!(dd_write_survives_a_hang_mid_transfer),
        test!(busybox_dd_read_survives_kill_segv_mid_transfer),
        test!(busybox_dd_write_survives_kill_segv_mid_transfer),
        test!(busybox_dd_read_survives_kill_sigkill_mid_transfer),
        test!(busybox_dd_write_survives_kill_sigkill_mid_transfer),
        test!(busybox_dd_read_survives_a_hang_mid_transfer),
        test!(busybox_dd_write_survives_a_hang_mid_transfer),
        test!(busybox_blkdiscard_leaves_zeros_where_it_discarded),
        test!(every_storage_write_was_applied_exactly_once),
        test!(disconnect_detaches_dev_nbd0_cleanly),
    ];
    let ctx = match start() {
        Ok(c) => c,
        Err(e) => return harness::fail_all("nbd", &tests, &e),
    };
    std::thread::spawn(|| {
        std::thread::sleep(SUITE_LIMIT);
        println!("{}", reinc_guest_protocol::Marker::Error(format!("nbd-suite still running after {SUITE_LIMIT:?}")));
        std::process::exit(1);
    });
    harness::run("nbd", &ctx, &tests)
}
