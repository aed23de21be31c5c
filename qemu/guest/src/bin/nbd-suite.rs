//! The kernel as a client: Linux's own NBD driver (`nbd.ko`) on `/dev/nbd0`,
//! attached to `reinc-nbd` in front of the supervised `storage_driver`, with
//! the driver killed in the middle of block I/O.
//!
//! # Shape
//! - `/bin/supervisor` runs `qemu/x86/nbd.toml` (one storage driver, 12 MiB
//!   in the guest's RAM root), `/bin/reinc-nbd` serves it on a Unix socket.
//! - This program is the `nbd-client`: busybox-static has none, and the
//!   guest has no busybox at all (see the crate doc). It negotiates with
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
//!
//! # The one `unsafe`
//! The NBD ioctls take an integer argument, and nix generates its ioctl
//! wrappers as `unsafe fn`; [`kernel_nbd`] is the only place they are
//! called, each with its `SAFETY` comment. Everything else is safe code.
#![deny(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reinc_client::control::ControlRequest;
use reinc_guest::harness::{self, Context, Failure, TestResult};
use reinc_guest::sup::{STATE_WAIT, Supervisor, control, running, status, wait_status};
use reinc_guest::{ensure, ensure_eq, test};
use reinc_proto::FaultPlan;

const CONFIG: &str = include_str!("../../../x86/nbd.toml");
const CONFIG_PATH: &str = "/etc/reinc/nbd.toml";
const SOCKET: &str = "/run/reinc-nbd.sock";
const DEVICE: &str = "/dev/nbd0";
const EXEC_LOG: &str = "/tmp/reinc-nbd-exec.log";
const STORAGE: &str = "storage_driver";
/// The export: 24576 blocks of 512 bytes.
const SIZE: u64 = 12 << 20;
/// What each dd moves: `bs=1M count=10`.
const MIB: usize = 1 << 20;
const COUNT: usize = 10;
/// The kernel's block size on /dev/nbd0 (and the O_DIRECT alignment).
const KBLOCK: u64 = 4096;
const SUITE_LIMIT: Duration = Duration::from_secs(150);

/// The classic NBD ioctls of `linux/nbd.h` (`_IO(0xab, n)`).
mod kernel_nbd {
    #![allow(unsafe_code)]
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;

    const SET_SOCK: u8 = 0;
    const SET_BLKSIZE: u8 = 1;
    const DO_IT: u8 = 3;
    const CLEAR_SOCK: u8 = 4;
    const SET_SIZE_BLOCKS: u8 = 7;
    const DISCONNECT: u8 = 8;
    const SET_TIMEOUT: u8 = 9;
    const SET_FLAGS: u8 = 10;

    fn ioctl(dev: &File, nr: u8, arg: u64) -> io::Result<()> {
        let request = nix::request_code_none!(0xab, nr);
        // SAFETY: every NBD ioctl used here takes its argument by value (an
        // integer or a file descriptor number, never a pointer), so the kernel
        // reads and writes none of this process's memory; `dev` is an open
        // file for the whole call.
        let r = unsafe { nix::libc::ioctl(dev.as_raw_fd(), request, arg as nix::libc::c_ulong) };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Block size, size in blocks, transmission flags, request timeout, and
    /// the connected (already negotiated) socket.
    pub fn configure(dev: &File, block: u64, blocks: u64, flags: u16, timeout_s: u64, sock: i32) -> io::Result<()> {
        ioctl(dev, SET_BLKSIZE, block)?;
        ioctl(dev, SET_SIZE_BLOCKS, blocks)?;
        ioctl(dev, SET_FLAGS, u64::from(flags))?;
        ioctl(dev, SET_TIMEOUT, timeout_s)?;
        ioctl(dev, SET_SOCK, u64::try_from(sock).map_err(|_| io::Error::other("negative fd"))?)
    }

    /// Serves the device until it is disconnected (blocks).
    pub fn do_it(dev: &File) -> io::Result<()> {
        ioctl(dev, DO_IT, 0)
    }

    /// Asks the kernel to send `NBD_CMD_DISC` and end `do_it`.
    pub fn disconnect(dev: &File) -> io::Result<()> {
        ioctl(dev, DISCONNECT, 0)?;
        ioctl(dev, CLEAR_SOCK, 0)
    }
}

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

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
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

/// Kernel log lines that would mean a client saw the crash.
fn kernel_complaints() -> Result<Vec<String>, Failure> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .context(|| "open /dev/kmsg".into())?;
    let mut bad = Vec::new();
    let mut rec = vec![0u8; 8192];
    loop {
        match f.read(&mut rec) {
            Ok(0) => break,
            Ok(n) => {
                let line = String::from_utf8_lossy(&rec[..n]);
                let msg = line.split_once(';').map_or(&*line, |(_, m)| m).trim().to_string();
                let nbd = msg.contains("nbd0") || msg.starts_with("block nbd");
                let lower = msg.to_lowercase();
                if msg.contains("I/O error")
                    || (nbd && ["error", "timed out", "dead", "failed"].iter().any(|w| lower.contains(w)))
                {
                    bad.push(msg);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // A record overwritten while we read: skip on.
            Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => {}
            Err(e) => return Err(Failure::check(format!("read /dev/kmsg: {e}"))),
        }
    }
    Ok(bad)
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

fn every_storage_write_was_applied_exactly_once(ctx: &Ctx) -> TestResult {
    let n = exec_log_once()?;
    ensure!(n >= 5 * COUNT * 32, "{n} storage writes logged for 5 dd writes of 10 MiB");
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

/// The client half of the fixed newstyle handshake: `NBD_OPT_GO` on the
/// default export. Returns (size, transmission flags).
fn negotiate(s: &mut UnixStream) -> Result<(u64, u16), String> {
    let io = |e: std::io::Error| format!("handshake with reinc-nbd on {SOCKET}: {e}");
    let mut g = [0u8; 18];
    s.read_exact(&mut g).map_err(io)?;
    if &g[..16] != b"NBDMAGICIHAVEOPT" {
        return Err(format!("not a newstyle NBD server: {g:02x?}"));
    }
    s.write_all(&3u32.to_be_bytes()).map_err(io)?;
    let mut opt = b"IHAVEOPT".to_vec();
    opt.extend_from_slice(&7u32.to_be_bytes()); // NBD_OPT_GO
    opt.extend_from_slice(&8u32.to_be_bytes());
    opt.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 3]); // "" + NBD_INFO_BLOCK_SIZE
    s.write_all(&opt).map_err(io)?;
    let mut export = None;
    loop {
        let mut h = [0u8; 20];
        s.read_exact(&mut h).map_err(io)?;
        let ty = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let mut p = vec![0u8; u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize];
        s.read_exact(&mut p).map_err(io)?;
        match ty {
            1 => return export.ok_or_else(|| "NBD_OPT_GO acknowledged without NBD_INFO_EXPORT".into()),
            3 if p.len() >= 12 && p[..2] == [0, 0] => {
                export = Some((u64::from_be_bytes(p[2..10].try_into().unwrap()), u16::from_be_bytes([p[10], p[11]])));
            }
            3 => {}
            other => return Err(format!("NBD_OPT_GO answered {other:#x}: {}", String::from_utf8_lossy(&p))),
        }
    }
}

fn start() -> Result<Ctx, String> {
    std::fs::write(CONFIG_PATH, CONFIG).map_err(|e| format!("writing {CONFIG_PATH}: {e}"))?;
    let sup = Supervisor::default();
    sup.start(CONFIG_PATH).map_err(|f| f.to_string())?;
    // The control socket appears once the supervisor is up.
    let end = Instant::now() + STATE_WAIT;
    loop {
        match status(STORAGE) {
            Ok(s) if running(&s) => break,
            _ if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            Ok(s) => return Err(format!("{STORAGE} not running after {STATE_WAIT:?}: {s:?}")),
            Err(e) => return Err(format!("supervisor control socket: {e}")),
        }
    }
    let mut child = Command::new("/bin/reinc-nbd")
        .args(["--runtime-dir", "/run/reinc", "--socket", SOCKET, "--max-request", "2097152"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting /bin/reinc-nbd: {e}"))?;
    let mut line = String::new();
    let out = child.stdout.take().expect("piped");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
        .map_err(|e| format!("reinc-nbd's stdout: {e}"))?;
    if !line.starts_with("nbd+unix://") {
        return Err(format!("reinc-nbd did not come up (said {line:?})"));
    }
    let mut sock = UnixStream::connect(SOCKET).map_err(|e| format!("connect {SOCKET}: {e}"))?;
    let (size, flags) = negotiate(&mut sock)?;
    if size != SIZE {
        return Err(format!("export is {size} bytes, {SIZE} expected"));
    }
    let ctl = OpenOptions::new().read(true).write(true).open(DEVICE).map_err(|e| format!("open {DEVICE}: {e}"))?;
    // Requests no larger than reinc-nbd's 2 MiB maximum.
    let _ = std::fs::write("/sys/block/nbd0/queue/max_sectors_kb", "1024");
    kernel_nbd::configure(&ctl, KBLOCK, SIZE / KBLOCK, flags, 60, sock.as_raw_fd())
        .map_err(|e| format!("NBD ioctls on {DEVICE}: {e}"))?;
    let ctl2 = ctl.try_clone().map_err(|e| format!("dup {DEVICE}: {e}"))?;
    let do_it = std::thread::spawn(move || {
        // The kernel now owns the socket; keep our end open while it serves.
        let _sock = sock;
        kernel_nbd::do_it(&ctl2)
    });
    // NBD_DO_IT sets the capacity when it starts serving.
    let end = Instant::now() + STATE_WAIT;
    while std::fs::read_to_string("/sys/block/nbd0/size").map(|s| s.trim() == "0").unwrap_or(true) {
        if do_it.is_finished() {
            return Err(format!("NBD_DO_IT on {DEVICE} returned at once: {:?}", do_it.join()));
        }
        if Instant::now() > end {
            return Err(format!("{DEVICE} has no size {STATE_WAIT:?} after NBD_DO_IT"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(DEVICE)
        .map_err(|e| format!("open {DEVICE} O_DIRECT: {e}"))?;
    Ok(Ctx {
        sup,
        server: Mutex::new(Some(child)),
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
