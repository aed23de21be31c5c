//! `reinc-bench demo-load`: the client half of `cargo xtask demo`.
//!
//! ```text
//! reinc-bench demo-load --runtime-dir DIR --disk FILE --exec-log FILE --size BYTES [--kill-at PERCENT]
//! ```
//! Against a running supervisor with `storage_driver` and `net_driver`:
//! 1. sends three packets through `net_driver` and receives them back;
//! 2. writes `size` bytes of a known pattern through `storage_driver`,
//!    32 KiB per request, 16 requests in flight, and when `kill-at` percent
//!    of them are answered, looks the driver's pid up through the control
//!    socket and sends it a real SIGSEGV;
//! 3. reads everything back and compares it with the pattern, block by block.
//!
//! Human-readable lines go to stdout as it goes; the figures the xtask
//! verifies come last, as one `RESULT key=value …` line ([`DemoResult`]).
//! The recovery time is measured on this process's clock: from the kill to
//! the first reply of a request that the exec log shows was executed by the
//! new instance.

use crate::BenchError;
use net_core::{NetReply, NetRequest};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reinc_client::control::{ControlRequest, ControlResponse, DriverStatus};
use reinc_client::{Client, ClientError, client_socket, control_request, control_socket};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use storage_core::{BLOCK_SIZE, MAX_BLOCKS_PER_REQUEST, StorageReply, Superblock};

/// Requests kept in flight.
const WINDOW: usize = 16;
const STORAGE: &str = "storage_driver";
const NET: &str = "net_driver";

/// `demo-load` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoArgs {
    /// The supervisor's runtime directory.
    pub runtime_dir: PathBuf,
    /// The storage driver's backing file (for its superblock).
    pub disk: PathBuf,
    /// The storage driver's exec log.
    pub exec_log: PathBuf,
    /// Bytes to write and read back (a multiple of 512).
    pub size: u64,
    /// Kill when this percentage of the write requests is answered.
    pub kill_at: u64,
}

impl DemoArgs {
    /// Parses `--runtime-dir D --disk F --exec-log F --size N [--kill-at P]`.
    ///
    /// # Errors
    /// [`BenchError::Usage`] naming the bad or missing flag.
    pub fn parse(args: &[String]) -> Result<Self, BenchError> {
        let (mut rt, mut disk, mut log, mut size, mut kill_at) = (None, None, None, None, 40);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || it.next().cloned().ok_or_else(|| BenchError::Usage(format!("{a} needs a value")));
            let num = |v: String| v.parse::<u64>().map_err(|e| BenchError::Usage(format!("{a} {v:?}: {e}")));
            match a.as_str() {
                "--runtime-dir" => rt = Some(PathBuf::from(val()?)),
                "--disk" => disk = Some(PathBuf::from(val()?)),
                "--exec-log" => log = Some(PathBuf::from(val()?)),
                "--size" => size = Some(num(val()?)?),
                "--kill-at" => kill_at = num(val()?)?,
                other => return Err(BenchError::Usage(format!("demo-load: unknown argument {other:?}"))),
            }
        }
        let need =
            |v: Option<PathBuf>, f: &str| v.ok_or_else(|| BenchError::Usage(format!("demo-load: {f} is required")));
        let size = size.ok_or_else(|| BenchError::Usage("demo-load: --size is required".into()))?;
        if size == 0 || size % BLOCK_SIZE as u64 != 0 {
            return Err(BenchError::Usage(format!(
                "demo-load: --size {size} must be a positive multiple of {BLOCK_SIZE}"
            )));
        }
        if !(1..=99).contains(&kill_at) {
            return Err(BenchError::Usage(format!("demo-load: --kill-at {kill_at} must be 1..=99")));
        }
        Ok(Self {
            runtime_dir: need(rt, "--runtime-dir")?,
            disk: need(disk, "--disk")?,
            exec_log: need(log, "--exec-log")?,
            size,
            kill_at,
        })
    }
}

/// What the demo measured, as printed on its `RESULT` line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemoResult {
    /// Bytes written (answered `Written`).
    pub bytes_written: u64,
    /// Bytes read back.
    pub bytes_read: u64,
    /// CRC-32 of the data written.
    pub write_crc: u32,
    /// CRC-32 of the data read.
    pub read_crc: u32,
    /// Blocks read back that differ from the pattern.
    pub bad_blocks: u64,
    /// Write requests sent.
    pub write_requests: u64,
    /// Write requests answered `Written` (once each).
    pub write_replies: u64,
    /// Read requests sent.
    pub read_requests: u64,
    /// Read requests answered with the right amount of data.
    pub read_replies: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// The storage superblock's `applied_count` after minus before.
    pub applied_delta: u64,
    /// The client session whose requests the exec log lists.
    pub client: u64,
    /// The pid that received SIGSEGV.
    pub killed_pid: u32,
    /// The storage driver's pid at the end.
    pub new_pid: u32,
    /// Kill → first reply of a request executed by the new instance, µs.
    pub recovery_us: u64,
    /// Packets sent through `net_driver` and received back intact, in order.
    pub net_packets: u64,
    /// Milliseconds spent writing.
    pub write_ms: u64,
    /// Milliseconds spent reading.
    pub read_ms: u64,
}

const FIELDS: [&str; 18] = [
    "bytes_written",
    "bytes_read",
    "write_crc",
    "read_crc",
    "bad_blocks",
    "write_requests",
    "write_replies",
    "read_requests",
    "read_replies",
    "errors",
    "applied_delta",
    "client",
    "killed_pid",
    "new_pid",
    "recovery_us",
    "net_packets",
    "write_ms",
    "read_ms",
];

impl DemoResult {
    fn values(&self) -> [u64; 18] {
        [
            self.bytes_written,
            self.bytes_read,
            u64::from(self.write_crc),
            u64::from(self.read_crc),
            self.bad_blocks,
            self.write_requests,
            self.write_replies,
            self.read_requests,
            self.read_replies,
            self.errors,
            self.applied_delta,
            self.client,
            u64::from(self.killed_pid),
            u64::from(self.new_pid),
            self.recovery_us,
            self.net_packets,
            self.write_ms,
            self.read_ms,
        ]
    }
}

impl fmt::Display for DemoResult {
    /// `RESULT key=value …`: the line `cargo xtask demo` parses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RESULT")?;
        for (k, v) in FIELDS.iter().zip(self.values()) {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// Data of block `lba`: a xorshift stream seeded by the block number, so
/// every block differs and a block written at the wrong place is caught.
pub fn pattern(lba: u64, out: &mut [u8]) {
    let mut x = (lba ^ 0xD1B5_4A32_D192_ED03).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

fn cerr(e: ClientError) -> BenchError {
    BenchError::Client(e.to_string())
}

fn status(runtime: &Path) -> Result<Vec<DriverStatus>, BenchError> {
    match control_request(&control_socket(runtime), &ControlRequest::Status).map_err(cerr)? {
        ControlResponse::Status(rows) => Ok(rows),
        other => Err(BenchError::Setup(format!("unexpected answer to status: {other:?}"))),
    }
}

fn driver(runtime: &Path, name: &str) -> Result<DriverStatus, BenchError> {
    status(runtime)?
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| BenchError::Setup(format!("the supervisor has no driver named {name}")))
}

fn applied_count(disk: &Path) -> Result<u64, BenchError> {
    let bytes = std::fs::read(disk).map_err(|e| BenchError::io(disk.display(), e))?;
    match Superblock::decode(&bytes) {
        Ok(sb) => Ok(sb.map_or(0, |s| s.applied_count)),
        Err(e) => Err(BenchError::Setup(format!("{}: superblock: {e}", disk.display()))),
    }
}

/// `(generation, client, seq)` per line of an exec log; malformed lines are skipped.
#[must_use]
pub fn parse_exec_log(text: &str) -> Vec<(u32, u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect()
}

fn say(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs the workload and prints the `RESULT` line.
///
/// # Errors
/// A client or control failure, naming the driver or socket.
pub fn run(args: &DemoArgs) -> Result<DemoResult, BenchError> {
    let rt = &args.runtime_dir;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = status(rt).is_ok_and(|rows| {
            [STORAGE, NET].iter().all(|n| rows.iter().any(|r| r.name == *n && r.state.name() == "running"))
        });
        if ok {
            break;
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(format!(
                "{STORAGE} and {NET} to be running (control socket in {})",
                rt.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut client = Client::connect(&client_socket(rt)).map_err(cerr)?;
    let mut res = DemoResult { client: client.session().0, ..DemoResult::default() };
    res.net_packets = net(&mut client)?;
    say(&format!("net_driver: sent {0} packets, received the same {0} back in order", res.net_packets));

    let before = applied_count(&args.disk)?;
    let killed_at = write_phase(&mut client, args, &mut res)?;
    res.applied_delta = applied_count(&args.disk)? - before;
    read_phase(&mut client, args, &mut res)?;
    res.new_pid = driver(rt, STORAGE)?.pid.unwrap_or(0);

    // Recovery: the first reply of a request the new instance executed.
    let (t_kill, generation, replies) = killed_at;
    let log = std::fs::read_to_string(&args.exec_log).map_err(|e| BenchError::io(args.exec_log.display(), e))?;
    let first_new = parse_exec_log(&log)
        .into_iter()
        .filter(|&(g, c, _)| c == res.client && g > generation)
        .filter_map(|(_, _, seq)| replies.get(&seq).copied())
        .min();
    res.recovery_us = first_new.map_or(0, |t| t.saturating_duration_since(t_kill).as_micros() as u64);
    Ok(res)
}

/// Whether `pid` is still running (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|s| !s.lines().any(|l| l.starts_with("State:") && l.contains("zombie")))
}

/// Sends one SIGSEGV to `pid`, as an operator would, and checks that it
/// dies of it; returns when the signal was sent.
///
/// The driver runtime makes a *sent* SIGSEGV lethal the first time (std's
/// stack-overflow handler would otherwise absorb it), so one signal must do.
fn kill_segv(pid: u32) -> Result<Instant, BenchError> {
    let t = Instant::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGSEGV)
        .map_err(|e| BenchError::io(format!("kill -SEGV {pid} ({STORAGE})"), e.into()))?;
    let deadline = t + Duration::from_secs(2);
    while alive(pid) {
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(format!("{STORAGE} (pid {pid}) to die of one SIGSEGV")));
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    Ok(t)
}

fn net(client: &mut Client) -> Result<u64, BenchError> {
    let encode = |r: &NetRequest<'_>| postcard::to_allocvec(r).expect("net requests always encode");
    let bad = |what: String| BenchError::Reply { driver: NET.into(), what };
    let packets: Vec<Vec<u8>> = (1..=3).map(|i| format!("hello from the demo, packet {i}").into_bytes()).collect();
    let mut sent = Vec::new();
    for p in &packets {
        let reply = client.call(NET, &encode(&NetRequest::Send { data: p })).map_err(cerr)?;
        let reply = reply.map_err(|e| bad(format!("Send failed: {e}")))?;
        match postcard::from_bytes::<NetReply<'_>>(&reply) {
            Ok(NetReply::Sent { seq }) => sent.push(seq),
            other => return Err(bad(format!("Send answered {other:?}"))),
        }
    }
    for (p, seq) in packets.iter().zip(&sent) {
        let reply = client.call(NET, &encode(&NetRequest::Recv)).map_err(cerr)?;
        let reply = reply.map_err(|e| bad(format!("Recv failed: {e}")))?;
        match postcard::from_bytes::<NetReply<'_>>(&reply) {
            Ok(NetReply::Packet { seq: s, data }) if s == *seq && data == p.as_slice() => {}
            other => return Err(bad(format!("Recv answered {other:?}, expected packet {seq}"))),
        }
    }
    Ok(packets.len() as u64)
}

type KillPoint = (Instant, u32, HashMap<u64, Instant>);

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

fn write_phase(client: &mut Client, args: &DemoArgs, res: &mut DemoResult) -> Result<KillPoint, BenchError> {
    let per = u64::from(MAX_BLOCKS_PER_REQUEST);
    let blocks = args.size / BLOCK_SIZE as u64;
    let requests = blocks.div_ceil(per);
    let kill_after = (requests * args.kill_at / 100).max(1);
    say(&format!(
        "writing {:.1} MiB to storage_driver: {requests} requests of {} KiB, {WINDOW} in flight",
        mib(args.size),
        per * BLOCK_SIZE as u64 / 1024
    ));
    let mut crc = crc32fast::Hasher::new();
    let mut inflight: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut replies = HashMap::new();
    let mut kill_point = None;
    let mut buf = vec![0u8; (per as usize) * BLOCK_SIZE];
    let (mut next, mut answered) = (0u64, 0u64);
    let started = Instant::now();
    while answered < requests {
        while next < requests && inflight.len() < WINDOW {
            let lba = next * per;
            let n = per.min(blocks - lba);
            let data = &mut buf[..n as usize * BLOCK_SIZE];
            for (k, b) in data.chunks_mut(BLOCK_SIZE).enumerate() {
                pattern(lba + k as u64, b);
            }
            crc.update(data);
            let body = reinc_client::blocksum::write_body(lba, data);
            let seq = client.submit(STORAGE, &body).map_err(cerr)?;
            inflight.insert(seq, (lba, n));
            res.write_requests += 1;
            next += 1;
        }
        let c = client.wait().map_err(cerr)?;
        let now = Instant::now();
        let Some((lba, n)) = inflight.remove(&c.seq) else { continue };
        answered += 1;
        replies.insert(c.seq, now);
        match c.result.as_deref().map(postcard::from_bytes::<StorageReply<'_>>) {
            Ok(Ok(StorageReply::Written { lba: l, blocks: b })) if l == lba && u64::from(b) == n => {
                res.write_replies += 1;
                res.bytes_written += n * BLOCK_SIZE as u64;
            }
            other => {
                res.errors += 1;
                say(&format!("  write at block {lba}: unexpected answer {other:?}"));
            }
        }
        if kill_point.is_none() && answered >= kill_after {
            let st = driver(&args.runtime_dir, STORAGE)?;
            let pid = st.pid.ok_or_else(|| BenchError::Setup(format!("{STORAGE} has no pid to kill")))?;
            say(&format!(
                "kill -SEGV {pid}   ({STORAGE}, generation {}; {:.1} of {:.1} MiB written, {} requests in flight)",
                st.generation,
                mib(res.bytes_written),
                mib(args.size),
                inflight.len()
            ));
            let t = kill_segv(pid)?;
            res.killed_pid = pid;
            kill_point = Some((t, st.generation));
        }
    }
    res.write_crc = crc.finalize();
    res.write_ms = started.elapsed().as_millis() as u64;
    say(&format!(
        "wrote {:.1} MiB in {} ms: {} of {requests} requests answered Written, {} errors",
        mib(res.bytes_written),
        res.write_ms,
        res.write_replies,
        res.errors
    ));
    let (t, g) = kill_point.ok_or_else(|| BenchError::Setup("the write finished before the kill point".into()))?;
    Ok((t, g, replies))
}

fn read_phase(client: &mut Client, args: &DemoArgs, res: &mut DemoResult) -> Result<(), BenchError> {
    let per = u64::from(MAX_BLOCKS_PER_REQUEST);
    let blocks = args.size / BLOCK_SIZE as u64;
    let requests = blocks.div_ceil(per);
    let mut crc = crc32fast::Hasher::new();
    let mut inflight: HashMap<u64, (u64, u64)> = HashMap::new();
    // Replies may complete out of submission order only across a resend;
    // the CRC is taken in block order.
    let mut done: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let (mut next, mut answered, mut crc_next) = (0u64, 0u64, 0u64);
    let mut expect = vec![0u8; BLOCK_SIZE];
    let started = Instant::now();
    while answered < requests {
        while next < requests && inflight.len() < WINDOW {
            let lba = next * per;
            let n = per.min(blocks - lba);
            let body = reinc_client::blocksum::read_body(lba, n as u16);
            let seq = client.submit(STORAGE, &body).map_err(cerr)?;
            inflight.insert(seq, (lba, n));
            res.read_requests += 1;
            next += 1;
        }
        let c = client.wait().map_err(cerr)?;
        let Some((lba, n)) = inflight.remove(&c.seq) else { continue };
        answered += 1;
        let checked = c.result.as_deref().map(|b| reinc_client::blocksum::check_read(STORAGE, lba, n, b));
        match checked {
            Ok(Ok(d)) => {
                res.read_replies += 1;
                res.bytes_read += d.len() as u64;
                for (k, b) in d.chunks(BLOCK_SIZE).enumerate() {
                    pattern(lba + k as u64, &mut expect);
                    if b != expect.as_slice() {
                        res.bad_blocks += 1;
                    }
                }
                done.insert(lba, d.to_vec());
            }
            other => {
                res.errors += 1;
                say(&format!("  read at block {lba}: unexpected answer {other:?}"));
                done.insert(lba, Vec::new());
            }
        }
        while let Some(d) = done.remove(&(crc_next * per)) {
            crc.update(&d);
            crc_next += 1;
        }
    }
    res.read_crc = crc.finalize();
    res.read_ms = started.elapsed().as_millis() as u64;
    say(&format!(
        "read back {:.1} MiB in {} ms; {} of {blocks} blocks differ from the pattern",
        mib(res.bytes_read),
        res.read_ms,
        res.bad_blocks
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_lists_every_field_once() {
        let r = DemoResult { bytes_written: 8, recovery_us: 1234, read_ms: 9, ..DemoResult::default() };
        let line = r.to_string();
        assert!(line.starts_with("RESULT bytes_written=8 "), "{line}");
        assert!(line.contains(" recovery_us=1234 ") && line.ends_with(" read_ms=9"), "{line}");
        assert_eq!(line.split(' ').count(), 1 + FIELDS.len());
    }

    #[test]
    fn pattern_differs_per_block_and_is_stable() {
        let (mut a, mut b, mut c) = ([0u8; 512], [0u8; 512], [0u8; 512]);
        pattern(0, &mut a);
        pattern(1, &mut b);
        pattern(0, &mut c);
        assert_ne!(a, b);
        assert_eq!(a, c);
        assert!(a.iter().any(|&x| x != 0));
    }

    #[test]
    fn exec_log_parse_skips_torn_lines() {
        let log = "1 3 1\n1 3 2\n2 3 2\n2 3";
        assert_eq!(parse_exec_log(log), vec![(1, 3, 1), (1, 3, 2), (2, 3, 2)]);
    }

    #[test]
    fn demo_args_require_paths_and_a_block_multiple() {
        let v = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let ok = DemoArgs::parse(&v("--runtime-dir /r --disk /d --exec-log /l --size 1024")).unwrap();
        assert_eq!((ok.size, ok.kill_at), (1024, 40));
        assert!(DemoArgs::parse(&v("--runtime-dir /r --disk /d --exec-log /l --size 1000")).is_err());
        assert!(DemoArgs::parse(&v("--disk /d --exec-log /l --size 1024")).is_err());
        assert!(DemoArgs::parse(&v("--runtime-dir /r --disk /d --exec-log /l --size 1024 --kill-at 100")).is_err());
    }
}
