//! Shared by `nbd-suite` and `nbd-demo` (included with `#[path]`, so the
//! one `unsafe` block, the NBD ioctls, stays in the binaries and out of the
//! `#![forbid(unsafe_code)]` library): the supervisor with `storage_driver`,
//! `reinc-nbd` in front of it, the kernel's NBD client attached to
//! `/dev/nbd0`, the kernel log check, and the real busybox tools
//! (`/bin/dd`, `/bin/sha256sum`, `/bin/kill`) the profile puts into the
//! initramfs.

// Each including binary uses a part of it.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reinc_guest::harness::{Context, Failure};
use reinc_guest::sup::{STATE_WAIT, Supervisor, running, status};

pub const CONFIG: &str = include_str!("../../x86/nbd.toml");
pub const CONFIG_PATH: &str = "/etc/reinc/nbd.toml";
pub const SOCKET: &str = "/run/reinc-nbd.sock";
pub const DEVICE: &str = "/dev/nbd0";
pub const STORAGE: &str = "storage_driver";
/// The export: 24576 blocks of 512 bytes.
pub const SIZE: u64 = 12 << 20;
/// The kernel's block size on /dev/nbd0 (and the O_DIRECT alignment).
pub const KBLOCK: u64 = 4096;

/// The classic NBD ioctls of `linux/nbd.h` (`_IO(0xab, n)`).
pub mod kernel_nbd {
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

/// `/dev/nbd0` attached to `reinc-nbd` in front of the supervised
/// `storage_driver`.
pub struct Attached {
    pub sup: Supervisor,
    pub server: Child,
    /// The control fd of /dev/nbd0 (ioctls). Held open for the whole run,
    /// which also keeps the device's page cache across `dd` processes.
    pub ctl: File,
    pub do_it: JoinHandle<std::io::Result<()>>,
}

pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
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

/// Kernel log lines that would mean a client saw the crash (all of
/// `/dev/kmsg` since boot).
pub fn kernel_complaints() -> Result<Vec<String>, Failure> {
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

/// Starts the supervisor and `reinc-nbd`, negotiates, and hands the socket
/// to the kernel: `/dev/nbd0` is served when this returns.
pub fn attach() -> Result<Attached, String> {
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
    // 32 KiB requests: well under reinc-nbd's 2 MiB maximum, and the size
    // the guest suites' faults are placed for. Each NBD request is one
    // storage request since the shared pool, so with the kernel's default
    // (up to 1 MiB here) a 10 MiB dd is about 10 of them: `after-effect:100`
    // never fires, and a kill finds nothing queued to replay.
    let _ = std::fs::write("/sys/block/nbd0/queue/max_sectors_kb", "32");
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
    Ok(Attached { sup, server: child, ctl, do_it })
}

/// Which direction of `/dev/nbd0` traffic a trigger counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Read,
    Write,
}

/// Bytes read and written on `/dev/nbd0` so far: fields 3 and 7 (sectors)
/// of `/sys/block/nbd0/stat`, counted by the block layer as requests
/// complete.
pub fn nbd0_bytes() -> Result<(u64, u64), Failure> {
    let path = "/sys/block/nbd0/stat";
    let text = std::fs::read_to_string(path).context(|| format!("read {path}"))?;
    let f: Vec<u64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    match (f.get(2), f.get(6)) {
        (Some(r), Some(w)) => Ok((r * 512, w * 512)),
        _ => Err(Failure::check(format!("{path}: unexpected contents {text:?}"))),
    }
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`: the next buffered read of
/// `/dev/nbd0` really goes to the device.
pub fn drop_caches() -> Result<(), Failure> {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3").context(|| "write /proc/sys/vm/drop_caches".into())
}

/// When a trigger fired, as the block layer counted it.
#[derive(Debug, Clone, Copy)]
pub struct Fired {
    /// Bytes moved on /dev/nbd0 in the trigger's direction since dd started.
    pub at_bytes: u64,
    /// Whether dd was still running when the trigger fired (checked after).
    pub dd_running: bool,
}

/// How a real `dd` ended.
#[derive(Debug)]
pub struct Dd {
    pub status: ExitStatus,
    /// busybox dd's report: `10+0 records in`, `10+0 records out`.
    pub stderr: String,
    pub fired: Option<Fired>,
}

impl Dd {
    /// The bytes dd copied in whole 1 MiB blocks, from its `N+M records
    /// out` line (busybox 1.35 as Debian builds it prints no byte count):
    /// `N` MiB when there was no partial record, else `None`.
    #[must_use]
    pub fn bytes_copied(&self) -> Option<u64> {
        let out = self.stderr.lines().find_map(|l| l.strip_suffix(" records out"))?;
        let (full, partial) = out.trim().split_once('+')?;
        (partial == "0").then_some(())?;
        full.parse::<u64>().ok().map(|n| n << 20)
    }

    /// dd exited 0 and copied `want` bytes (all dd runs here use `bs=1M`).
    pub fn ensure_ok(&self, want: u64) -> Result<(), Failure> {
        if !self.status.success() || self.bytes_copied() != Some(want) {
            return Err(Failure::check(format!("dd ended {} having said {:?}", self.status, self.stderr.trim())));
        }
        Ok(())
    }
}

/// Runs the real `/bin/dd` with `args`. With a trigger `(side, bytes)`, calls
/// `fire` once, as soon as the block layer has counted `bytes` on that side
/// of `/dev/nbd0` since dd started, if dd is still running then. `tick` runs
/// at every 2 ms poll (the demo echoes log lines from it).
pub fn dd(
    args: &[&str],
    trigger: Option<(Side, u64)>,
    mut fire: impl FnMut() -> Result<(), Failure>,
    mut tick: impl FnMut(),
) -> Result<Dd, Failure> {
    let base = nbd0_bytes()?;
    let mut child = Command::new("/bin/dd")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context(|| format!("starting /bin/dd {}", args.join(" ")))?;
    let mut err = child.stderr.take().expect("piped");
    // dd's report is a few lines: read it on a thread so it never blocks dd.
    let report = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut fired = None;
    let end = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(st) = child.try_wait().context(|| "waiting for dd".into())? {
            break st;
        }
        if let (Some((side, bytes)), None) = (trigger, fired) {
            let (r, w) = nbd0_bytes()?;
            let moved = match side {
                Side::Read => r - base.0,
                Side::Write => w - base.1,
            };
            if moved >= bytes {
                fire()?;
                let dd_running = child.try_wait().context(|| "waiting for dd".into())?.is_none();
                fired = Some(Fired { at_bytes: moved, dd_running });
            }
        }
        tick();
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Failure::check(format!("/bin/dd {} still running after 90 s", args.join(" "))));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stderr = report.join().unwrap_or_default();
    Ok(Dd { status, stderr, fired })
}

/// The first field of `/bin/sha256sum`'s output, checked to be 64 hex
/// digits.
fn digest_of(what: &str, out: &std::process::Output) -> Result<String, Failure> {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let digest = text.split_whitespace().next().unwrap_or_default().to_string();
    if !out.status.success() || digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Failure::check(format!("sha256sum of {what} ended {} saying {text:?}", out.status)));
    }
    Ok(digest)
}

/// `sha256sum FILE`.
pub fn sha256_file(path: &str) -> Result<String, Failure> {
    let out = Command::new("/bin/sha256sum")
        .arg(path)
        .stderr(Stdio::inherit())
        .output()
        .context(|| format!("running /bin/sha256sum {path}"))?;
    digest_of(path, &out)
}

/// `dd if=/dev/nbd0 bs=1M count=N | sha256sum`: the digest, dd's report, and
/// how many bytes that read fetched from the device (0 when the page cache
/// held every block). Readahead is off meanwhile
/// (`/sys/block/nbd0/queue/read_ahead_kb` = 0, restored after), so the
/// count is of blocks in the range only, not of the window past its end.
pub fn sha256_of_nbd0(count: usize) -> Result<(String, Dd, u64), Failure> {
    let ra = "/sys/block/nbd0/queue/read_ahead_kb";
    let old = std::fs::read_to_string(ra).context(|| format!("read {ra}"))?;
    std::fs::write(ra, "0").context(|| format!("write 0 to {ra}"))?;
    let r = hash_nbd0(count);
    std::fs::write(ra, old.trim()).context(|| format!("restore {ra}"))?;
    r
}

fn hash_nbd0(count: usize) -> Result<(String, Dd, u64), Failure> {
    let before = nbd0_bytes()?.0;
    let args = [format!("if={DEVICE}"), "bs=1M".into(), format!("count={count}")];
    let mut dd = Command::new("/bin/dd")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context(|| format!("starting /bin/dd {}", args.join(" ")))?;
    let pipe = dd.stdout.take().expect("piped");
    let sum = Command::new("/bin/sha256sum")
        .stdin(Stdio::from(pipe))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context(|| "starting /bin/sha256sum".into())?;
    let sum = sum.wait_with_output().context(|| "waiting for sha256sum".into())?;
    let ran = dd.wait_with_output().context(|| "waiting for dd".into())?;
    let report = Dd { status: ran.status, stderr: String::from_utf8_lossy(&ran.stderr).into_owned(), fired: None };
    let digest = digest_of(&format!("dd {}", args.join(" ")), &sum)?;
    Ok((digest, report, nbd0_bytes()?.0 - before))
}

/// The real `/bin/kill -SIG pid`.
pub fn kill(signal: &str, pid: u32) -> Result<(), Failure> {
    let st = Command::new("/bin/kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .context(|| format!("running /bin/kill -{signal} {pid}"))?;
    if st.success() { Ok(()) } else { Err(Failure::check(format!("/bin/kill -{signal} {pid} ended {st}"))) }
}
