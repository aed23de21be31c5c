//! Running a campaign: the supervisor, the live load with its models, and
//! the injector walking the schedule.
//!
//! Threads: one per load client (two storage clients on disjoint block
//! ranges, one net client, one bench-driver client, one misbehave client),
//! one that runs `drvctl blk` as a process now and then, one sampling
//! throughput, and the injector (this thread). Faults are applied one at a
//! time: the injector waits until the target is running, applies the fault,
//! and waits for its outcome (new generation running, a reply, a quarantine)
//! before the next one. Every thread checks its invariants on every
//! completion; the first violation stops everything and is reported with
//! the index of the fault being applied.

use crate::misbehave::{self, Misbehaviour};
use crate::schedule::{Fault, FlipPlace, Target};
use crate::{CampaignError, Handling, Outcome, Record, Violation};
use net_core::{NetReply, NetRequest};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reinc_bench::rig::{DriverSpec, config_text};
use reinc_client::control::{ControlRequest, ControlResponse, DriverStatus};
use reinc_client::{Client, blocksum, client_socket, control_request, control_socket};
use reinc_proto::{CallError, CrashKind};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use storage_core::BLOCK_SIZE;

/// Blocks of the storage device.
const DISK_BLOCKS: u64 = 1024;
/// Blocks each storage load client owns (client `i` owns `i*RANGE..`).
const RANGE: u64 = 256;
/// Block range the injector owns for device bit flips.
const VICTIM: u64 = 512;
/// Block range `drvctl blk` uses.
const BLK_LBA: u64 = 768;
/// Blocks per `drvctl blk` run.
const BLK_BLOCKS: u64 = 64;
/// Net ring slots.
const NET_SLOTS: u32 = 64;
/// What the supervisor says when a fault is injected into a driver between
/// two instances.
const NO_INSTANCE: &str = "has no running instance";
/// How often a fault is applied again to the next instance after that.
const REAPPLY: u32 = 20;
/// How long any single fault may take to resolve before it is a failure.
const FAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// The executables a campaign runs.
#[derive(Debug, Clone)]
pub struct Bins {
    /// The daemon.
    pub supervisor: PathBuf,
    /// The CLI.
    pub drvctl: PathBuf,
    /// The storage driver.
    pub storage_driver: PathBuf,
    /// The net driver.
    pub net_driver: PathBuf,
    /// The bench (null) driver.
    pub bench_driver: PathBuf,
    /// The misbehaving driver.
    pub misbehave_driver: PathBuf,
}

impl Bins {
    /// The binaries in `dir` (a cargo profile directory).
    ///
    /// # Errors
    /// [`CampaignError::MissingBinary`] naming the first one missing.
    pub fn in_dir(dir: &Path) -> Result<Self, CampaignError> {
        let find = |name: &str| {
            let p = dir.join(name);
            if p.is_file() { Ok(p) } else { Err(CampaignError::MissingBinary(p)) }
        };
        Ok(Self {
            supervisor: find("supervisor")?,
            drvctl: find("drvctl")?,
            storage_driver: find("storage_driver")?,
            net_driver: find("net_driver")?,
            bench_driver: find("reinc-bench-driver")?,
            misbehave_driver: find("reinc-misbehave-driver")?,
        })
    }
}

/// State shared by the injector and the load threads.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    completions: AtomicU64,
    fault_index: AtomicUsize,
    violation: Mutex<Option<Violation>>,
    /// Reply times of effectful requests (storage writes, net sends), by
    /// `(client, seq)`; cleared at every fault.
    storage_replies: Mutex<HashMap<(u64, u64), Instant>>,
    net_replies: Mutex<HashMap<(u64, u64), Instant>>,
    /// The misbehave client's first reply from a generation above `.0`.
    mis_watch: Mutex<(u32, Option<Instant>)>,
    /// An exec-fails fault is under way: the bench driver may be
    /// quarantined for it (when its launches keep failing for longer than
    /// the restart policy allows), and its callers then get a definite
    /// `DriverFailed`.
    exec_fault: AtomicBool,
    /// Bench calls answered `DriverFailed` that way.
    bench_quarantined: AtomicU64,
}

impl Shared {
    fn fail(&self, what: String) {
        let mut v = self.violation.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if v.is_none() {
            *v = Some(Violation { fault_index: self.fault_index.load(Ordering::SeqCst), what });
        }
        self.stop.store(true, Ordering::SeqCst);
    }
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Data of storage block `lba` at write `version` of it.
#[must_use]
pub fn block_data(lba: u64, version: u32) -> Vec<u8> {
    (0..BLOCK_SIZE as u64)
        .map(|i| (lba.wrapping_mul(31) ^ u64::from(version).wrapping_mul(0x9E37) ^ i.wrapping_mul(7)) as u8)
        .collect()
}

/// The bytes of `data` inside an encoded request or reply `body`.
fn data_in<'b>(body: &'b mut [u8], data: &[u8]) -> Result<&'b mut [u8], String> {
    let at = body.windows(data.len()).position(|w| w == data).ok_or("the block is not in the message body")?;
    Ok(&mut body[at..at + data.len()])
}

fn net_body(r: &NetRequest<'_>) -> Vec<u8> {
    postcard::to_allocvec(r).unwrap_or_default()
}

/// What a storage load client leaves behind.
#[derive(Debug, Default)]
struct StorageOut {
    session: u64,
    model: BTreeMap<u64, u32>,
    writes: BTreeSet<u64>,
    answered: u64,
}

fn storage_load(shared: &Shared, runtime: &Path, first_lba: u64, seed: u64) -> StorageOut {
    let mut out = StorageOut::default();
    let mut client = match Client::connect(&client_socket(runtime)) {
        Ok(c) => c,
        Err(e) => {
            shared.fail(format!("storage client: {e}"));
            return out;
        }
    };
    out.session = client.session().0;
    let mut rng = crate::schedule::Rng::new(seed);
    // seq -> (lba, Some(version) for a write, expected version for a read)
    let mut expect: HashMap<u64, (u64, bool, u32)> = HashMap::new();
    let mut versions: BTreeMap<u64, u32> = BTreeMap::new();
    loop {
        while !shared.stopped() && client.in_flight() < 8 {
            let lba = first_lba + rng.below(RANGE);
            let write = rng.below(10) < 6;
            let (body, v) = if write {
                let v = versions.get(&lba).copied().unwrap_or(0) + 1;
                versions.insert(lba, v);
                (blocksum::write_body(lba, &block_data(lba, v)), v)
            } else {
                (blocksum::read_body(lba, 1), versions.get(&lba).copied().unwrap_or(0))
            };
            match client.submit("storage_driver", &body) {
                Ok(seq) => {
                    expect.insert(seq, (lba, write, v));
                    if write {
                        out.writes.insert(seq);
                    }
                }
                Err(e) => {
                    shared.fail(format!("storage client c{}: unknown outcome: {e}", out.session));
                    return out;
                }
            }
        }
        if client.in_flight() == 0 {
            break;
        }
        let c = match client.wait() {
            Ok(c) => c,
            Err(e) => {
                shared.fail(format!("storage client c{}: unknown outcome: {e}", out.session));
                return out;
            }
        };
        let now = Instant::now();
        let Some((lba, write, v)) = expect.remove(&c.seq) else {
            shared.fail(format!("storage client c{}: seq {} answered twice", out.session, c.seq));
            return out;
        };
        let body = match c.result {
            Ok(b) => b,
            Err(e) => {
                shared.fail(format!(
                    "storage_driver: c{}:{} failed with {e:?} (not expected for this driver)",
                    out.session, c.seq
                ));
                return out;
            }
        };
        out.answered += 1;
        shared.completions.fetch_add(1, Ordering::Relaxed);
        // Nothing is injected into these blocks: a checksum error is a failure too.
        let checked = if write {
            blocksum::check_write("storage_driver", lba, 1, &body).map(|()| {
                shared.storage_replies.lock().map(|mut m| m.insert((out.session, c.seq), now)).ok();
                true
            })
        } else {
            blocksum::check_read("storage_driver", lba, 1, &body).map(|d| {
                let want = if v == 0 { vec![0; BLOCK_SIZE] } else { block_data(lba, v) };
                d == want.as_slice()
            })
        };
        let ok = match checked {
            Ok(ok) => ok,
            Err(e) => {
                shared.fail(format!("c{}:{}: {e}", out.session, c.seq));
                return out;
            }
        };
        if !ok {
            shared.fail(format!(
                "storage_driver: c{}:{} ({} of block {lba}, version {v}) got a wrong reply: the device differs from the model",
                out.session,
                c.seq,
                if write { "write" } else { "read" }
            ));
            return out;
        }
    }
    out.model = versions;
    out
}

/// What the net client leaves behind.
#[derive(Debug, Default)]
struct NetOut {
    session: u64,
    sends: BTreeSet<u64>,
    answered: u64,
}

fn net_load(shared: &Shared, runtime: &Path) -> NetOut {
    let mut out = NetOut::default();
    let mut client = match Client::connect(&client_socket(runtime)) {
        Ok(c) => c,
        Err(e) => {
            shared.fail(format!("net client: {e}"));
            return out;
        }
    };
    out.session = client.session().0;
    let packet = |i: u64| -> Vec<u8> { (0..(16 + i % 48)).map(|k| (i ^ (k * 13)) as u8).collect() };
    // seq -> Some(i): Send of packet i; None: Recv expecting the next packet.
    let mut expect: HashMap<u64, Option<u64>> = HashMap::new();
    let (mut next_send, mut next_recv, mut send_turn) = (0u64, 0u64, true);
    let mut recv_queue: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
    loop {
        while !shared.stopped() && client.in_flight() < 8 {
            let (body, what) = if send_turn {
                next_send += 1;
                (net_body(&NetRequest::Send { data: &packet(next_send - 1) }), Some(next_send - 1))
            } else {
                (net_body(&NetRequest::Recv), None)
            };
            send_turn = !send_turn;
            match client.submit("net_driver", &body) {
                Ok(seq) => {
                    expect.insert(seq, what);
                    match what {
                        Some(_) => {
                            out.sends.insert(seq);
                        }
                        None => recv_queue.push_back(seq),
                    }
                }
                Err(e) => {
                    shared.fail(format!("net client c{}: unknown outcome: {e}", out.session));
                    return out;
                }
            }
        }
        if client.in_flight() == 0 {
            break;
        }
        let c = match client.wait() {
            Ok(c) => c,
            Err(e) => {
                shared.fail(format!("net client c{}: unknown outcome: {e}", out.session));
                return out;
            }
        };
        let now = Instant::now();
        let Some(what) = expect.remove(&c.seq) else {
            shared.fail(format!("net client c{}: seq {} answered twice", out.session, c.seq));
            return out;
        };
        let body = match c.result {
            Ok(b) => b,
            Err(e) => {
                shared.fail(format!("net_driver: c{}:{} failed with {e:?}", out.session, c.seq));
                return out;
            }
        };
        out.answered += 1;
        shared.completions.fetch_add(1, Ordering::Relaxed);
        let ok = match (what, postcard::from_bytes::<NetReply<'_>>(&body)) {
            // Exactly once: the transmit counter equals the number of sends before this one.
            (Some(i), Ok(NetReply::Sent { seq })) => {
                shared.net_replies.lock().map(|mut m| m.insert((out.session, c.seq), now)).ok();
                seq == i
            }
            (None, Ok(NetReply::Packet { seq, data })) => {
                let ok = seq == next_recv && data == packet(next_recv).as_slice();
                next_recv += 1;
                ok
            }
            _ => false,
        };
        if !ok {
            shared.fail(format!(
                "net_driver: c{}:{} got a reply that differs from the model (sends {next_send}, receives {next_recv}): {:?}",
                out.session,
                c.seq,
                postcard::from_bytes::<NetReply<'_>>(&body)
            ));
            return out;
        }
    }
    out
}

fn bench_load(shared: &Shared, runtime: &Path) -> u64 {
    let mut client = match Client::connect(&client_socket(runtime)) {
        Ok(c) => c,
        Err(e) => {
            shared.fail(format!("bench client: {e}"));
            return 0;
        }
    };
    let mut answered = 0;
    loop {
        while !shared.stopped() && client.in_flight() < 4 {
            if let Err(e) = client.submit("bench_driver", &[reinc_bench::NULL_COMMIT]) {
                shared.fail(format!("bench client: unknown outcome: {e}"));
                return answered;
            }
        }
        if client.in_flight() == 0 {
            return answered;
        }
        match client.wait() {
            Ok(c) if c.result.as_deref() == Ok(&[0u8][..]) => {
                answered += 1;
                shared.completions.fetch_add(1, Ordering::Relaxed);
            }
            // Quarantine as designed: definite, nothing left unknown.
            Ok(c) if c.result == Err(CallError::DriverFailed) && shared.exec_fault.load(Ordering::SeqCst) => {
                answered += 1;
                shared.bench_quarantined.fetch_add(1, Ordering::Relaxed);
            }
            Ok(c) => {
                shared.fail(format!("bench_driver: seq {} answered {:?}, expected [0]", c.seq, c.result));
                return answered;
            }
            Err(e) => {
                shared.fail(format!("bench client: unknown outcome: {e}"));
                return answered;
            }
        }
    }
}

/// A request to the misbehave client: misbehave this way, tell me the outcome.
type MisOrder = (Misbehaviour, mpsc::Sender<MisResult>);

/// How one misbehaviour ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MisResult {
    /// A correct reply.
    Replied,
    /// The reply's end-to-end checksum failed.
    ChecksumFailed,
    /// A checksum-valid reply whose counter is wrong.
    WrongValue,
    /// `Poisoned`.
    Poisoned,
}

fn misbehave_load(shared: &Shared, runtime: &Path, orders: &mpsc::Receiver<MisOrder>) -> u64 {
    let mut client = match Client::connect(&client_socket(runtime)) {
        Ok(c) => c,
        Err(e) => {
            shared.fail(format!("misbehave client: {e}"));
            return 0;
        }
    };
    let mut nonce = 0u64;
    let mut counter: Option<u64> = None;
    let mut faults: HashMap<u64, (Misbehaviour, mpsc::Sender<MisResult>)> = HashMap::new();
    let mut answered = 0;
    loop {
        while !shared.stopped() && client.in_flight() < 4 {
            let fault = orders.try_recv().ok();
            nonce += 1;
            let body = misbehave::request(nonce, fault.as_ref().map(|o| o.0));
            match client.submit("misbehave_driver", &body) {
                Ok(seq) => {
                    if let Some(o) = fault {
                        faults.insert(seq, o);
                    }
                }
                Err(e) => {
                    shared.fail(format!("misbehave client: unknown outcome: {e}"));
                    return answered;
                }
            }
        }
        if client.in_flight() == 0 {
            return answered;
        }
        let c = match client.wait() {
            Ok(c) => c,
            Err(e) => {
                shared.fail(format!("misbehave client: unknown outcome: {e}"));
                return answered;
            }
        };
        let fault = faults.remove(&c.seq);
        let result = match (c.result, fault.as_ref().map(|f| f.0)) {
            (Err(CallError::Poisoned), Some(Misbehaviour::Poison)) => MisResult::Poisoned,
            (Err(e), _) => {
                shared.fail(format!("misbehave_driver: seq {} failed with {e:?} ({fault:?})", c.seq));
                return answered;
            }
            (Ok(body), _) => match misbehave::parse_reply(&body) {
                Err(_) => MisResult::ChecksumFailed,
                Ok(r) => {
                    {
                        let mut w = shared.mis_watch.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        if r.generation > w.0 && w.1.is_none() {
                            w.1 = Some(Instant::now());
                        }
                    }
                    let want = counter.map_or(r.counter, |k| k + 1);
                    counter = Some(r.counter);
                    if r.counter == want { MisResult::Replied } else { MisResult::WrongValue }
                }
            },
        };
        if let Some(k) = counter.as_mut().filter(|_| result == MisResult::ChecksumFailed) {
            // The request executed (its commit is in); only its reply was corrupted.
            *k += 1;
        }
        answered += 1;
        shared.completions.fetch_add(1, Ordering::Relaxed);
        match fault {
            Some((_, tx)) => {
                let _ = tx.send(result);
            }
            None if result != MisResult::Replied => {
                shared.fail(format!(
                    "misbehave_driver: seq {} (a normal request) got {result:?}: lost or repeated execution",
                    c.seq
                ));
                return answered;
            }
            None => {}
        }
    }
}

fn blk_load(shared: &Shared, drvctl: &Path, runtime: &Path, dir: &Path) -> u32 {
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

/// Incremental reader of an exec log: `(generation, client, seq)` lines.
#[derive(Debug)]
struct ExecTail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl ExecTail {
    fn new(path: PathBuf) -> Self {
        Self { path, offset: 0, partial: String::new() }
    }
    fn read_new(&mut self) -> Vec<(u32, u64, u64)> {
        let Ok(mut f) = std::fs::File::open(&self.path) else { return Vec::new() };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut s = String::new();
        let n = f.read_to_string(&mut s).unwrap_or(0);
        self.offset += n as u64;
        self.partial.push_str(&s);
        let mut out = Vec::new();
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            if let Some(e) = parse_exec_line(&line) {
                out.push(e);
            }
        }
        out
    }
}

fn parse_exec_line(l: &str) -> Option<(u32, u64, u64)> {
    let mut it = l.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.trim_start_matches('c').parse().ok()?, it.next()?.parse().ok()?))
}

/// The supervisor under test.
#[derive(Debug)]
struct Sup {
    child: Child,
    runtime: PathBuf,
    log: PathBuf,
}

impl Sup {
    fn status(&self) -> Result<Vec<DriverStatus>, String> {
        match control_request(&control_socket(&self.runtime), &ControlRequest::Status) {
            Ok(ControlResponse::Status(rows)) => Ok(rows),
            Ok(other) => Err(format!("unexpected status answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
    fn driver(&self, name: &str) -> Result<DriverStatus, String> {
        self.status()?.into_iter().find(|r| r.name == name).ok_or_else(|| format!("no driver {name}"))
    }
    fn control(&self, req: &ControlRequest) -> Result<ControlResponse, String> {
        control_request(&control_socket(&self.runtime), req).map_err(|e| e.to_string())
    }
    fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(st)) => Err(format!("the supervisor (pid {}) exited: {st}; {}", self.child.id(), self.tail())),
            Err(e) => Err(format!("waitpid on the supervisor: {e}")),
        }
    }
    fn tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!("log {}:\n{}", self.log.display(), lines[lines.len().saturating_sub(12)..].join("\n"))
    }
    /// Waits until `name` satisfies `f`; the supervisor must stay alive.
    fn wait(
        &mut self,
        name: &str,
        timeout: Duration,
        f: impl Fn(&DriverStatus) -> bool,
    ) -> Result<DriverStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.alive()?;
            let last = match self.driver(name) {
                Ok(s) if f(&s) => return Ok(s),
                Ok(s) => format!("{s:?}"),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(format!("{name}: condition not met in {timeout:?}; last status {last}; {}", self.tail()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Sup {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn running(s: &DriverStatus) -> bool {
    s.state.name() == "running"
}

const INIT_KINDS: [CrashKind; 6] = crate::schedule::KINDS;

fn init_driver(kind: CrashKind) -> String {
    format!("init_{}", kind.name())
}

fn specs(bins: &Bins, dir: &Path, bench_copy: &Path) -> Vec<DriverSpec> {
    // Every driver: fast heartbeats, immediate restarts, no quarantine for
    // the main drivers: the supervisor's config floor allows at most 64
    // restarts a second, and the campaign's faults (about 50 a second over
    // all drivers) stay below 64 restarts of one driver within 1 s; `over`
    // replaces a default.
    let fast = |mut s: DriverSpec, over: &[(&str, String)]| {
        let defaults: [(&str, String); 11] = [
            ("heartbeat-interval-ms", "20".into()),
            ("heartbeat-misses", "3".into()),
            ("backoff-base-ms", "0".into()),
            ("backoff-cap-ms", "0".into()),
            ("jitter-percent", "0".into()),
            ("healthy-after-ms", "1".into()),
            ("max-restarts", "64".into()),
            ("restart-window-ms", "1000".into()),
            ("init-timeout-ms", "2000".into()),
            ("shutdown-timeout-ms", "500".into()),
            ("window", "8".into()),
        ];
        for (k, v) in defaults.iter().chain(over.iter().filter(|(k, _)| !defaults.iter().any(|(d, _)| d == k))) {
            let v = over.iter().find(|(o, _)| o == k).map_or(v, |(_, x)| x);
            s = s.set(k, v);
        }
        s
    };
    let p = |x: &Path| x.to_string_lossy().into_owned();
    let mut v = vec![
        fast(
            DriverSpec::new("storage_driver", &bins.storage_driver).args(&[
                "--file",
                &p(&dir.join("disk.img")),
                "--blocks",
                &DISK_BLOCKS.to_string(),
            ]),
            &[("exec-log", format!("{:?}", p(&dir.join("storage.exec.log")))), ("poison-after", "1000".into())],
        ),
        fast(
            DriverSpec::new("net_driver", &bins.net_driver).args(&[
                "--file",
                &p(&dir.join("net.img")),
                "--slots",
                &NET_SLOTS.to_string(),
            ]),
            &[("exec-log", format!("{:?}", p(&dir.join("net.exec.log")))), ("poison-after", "1000".into())],
        ),
        // A spawn failure is retried with a backoff, not in a tight loop;
        // up to 200 ms, so the 64 restarts that quarantine it take ~12 s of
        // failing launches (an injector starved by a loaded host restores
        // the x bit long before).
        fast(
            DriverSpec::new("bench_driver", bench_copy),
            &[("backoff-base-ms", "2".into()), ("backoff-cap-ms", "200".into()), ("poison-after", "1000".into())],
        ),
        fast(
            DriverSpec::new("misbehave_driver", &bins.misbehave_driver).args(&["--markers", &p(&dir.join("markers"))]),
            // It speaks the driver protocol by hand, without reinc-runtime,
            // so it does not sandbox itself (and must not be killed for that).
            &[("poison-after", "3".into()), ("sandbox", "false".into())],
        ),
    ];
    for kind in INIT_KINDS {
        v.push(fast(
            DriverSpec::new(init_driver(kind), &bins.bench_driver),
            &[
                ("fault", format!("\"init:1:{}\"", kind.name())),
                ("max-restarts", "2".into()),
                ("restart-window-ms", "600000".into()),
                ("init-timeout-ms", "100".into()),
            ],
        ));
    }
    v
}

/// Lanes when `--lanes` is not given.
pub const DEFAULT_LANES: usize = 4;

/// Settings of one campaign.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many faults.
    pub faults: usize,
    /// The schedule's seed.
    pub seed: u64,
    /// Where the run's directory (config, logs, device files) goes; lane
    /// `j` works in `work/lane{j}`.
    pub work: PathBuf,
    /// Independent lanes run side by side, each a supervisor with its own
    /// drivers, load and injector; fault `i` of the schedule runs in lane
    /// `i % lanes`, so the lanes' faults in order are the schedule.
    pub lanes: usize,
}

/// Everything a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    /// The seed.
    pub seed: u64,
    /// Faults planned.
    pub planned: usize,
    /// One record per fault applied.
    pub records: Vec<Record>,
    /// `(seconds since start, completed requests per second)` samples.
    pub throughput: Vec<(f64, f64)>,
    /// Seconds from the first fault to the last.
    pub fault_seconds: f64,
    /// Requests answered, per load.
    pub answered: BTreeMap<String, u64>,
    /// `drvctl blk` write+read rounds verified.
    pub blk_rounds: u32,
    /// The final checks, as lines (`ok ...`).
    pub checks: Vec<String>,
    /// The first violation, if any.
    pub violation: Option<Violation>,
    /// How the supervisor exited at the end.
    pub supervisor_exit: String,
    /// Driver restarts counted by the supervisors.
    pub restarts: BTreeMap<String, u32>,
    /// Hang verdicts of the supervisors (`drvctl metrics`): instances that
    /// missed their heartbeats only waiting for a CPU and were left running
    /// (`reinc_driver_starved_total`), and instances killed as hung.
    pub hang_verdicts: HangVerdicts,
    /// Lanes (supervisors) the faults ran in.
    pub lanes: usize,
}

/// Hang verdicts counted by the supervisors (see [`RunResult::hang_verdicts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HangVerdicts {
    /// Starved, not hung: left running.
    pub starved: u64,
    /// Hung: killed.
    pub hung: u64,
}

impl HangVerdicts {
    /// The verdicts in a supervisor's metrics text: every driver's
    /// `reinc_driver_starved_total`, and its crashes with `cause="hung"`.
    #[must_use]
    pub fn from_metrics(text: &str) -> Self {
        let mut v = Self::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((key, n)) = line.rsplit_once(' ') else { continue };
            let Ok(n) = n.trim().parse::<u64>() else { continue };
            if key.starts_with("reinc_driver_starved_total{") {
                v.starved += n;
            } else if key.starts_with("reinc_driver_crashes_total{") && key.contains("cause=\"hung\"") {
                v.hung += n;
            }
        }
        v
    }
}

/// What the lanes of one run share.
#[derive(Debug)]
struct Lanes {
    /// When the run started: every lane's clock.
    epoch: Instant,
    /// Set by the first lane that sees a violation: the others stop too.
    stop: AtomicBool,
    /// Faults applied, over every lane.
    done: AtomicUsize,
}

/// Runs a campaign in [`Options::lanes`] lanes side by side and merges
/// what they measured. One lane's failure stops every lane; the report
/// names the lowest fault index that failed.
///
/// # Errors
/// Setup failures (a supervisor does not start); a violated invariant is
/// not an error but [`RunResult::violation`].
pub fn run(bins: &Bins, opts: &Options) -> Result<RunResult, CampaignError> {
    let lanes = opts.lanes.max(1);
    let _ = std::fs::remove_dir_all(&opts.work);
    let shared = Lanes { epoch: Instant::now(), stop: AtomicBool::new(false), done: AtomicUsize::new(0) };
    let results: Vec<Result<(RunResult, Instant, Instant), CampaignError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..lanes)
            .map(|lane| {
                scope.spawn({
                    let shared = &shared;
                    move || run_lane(bins, opts, lane, shared)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(CampaignError::Setup("a lane's thread panicked".into()))))
            .collect()
    });
    let mut merged = RunResult {
        seed: opts.seed,
        planned: opts.faults,
        records: Vec::new(),
        throughput: Vec::new(),
        fault_seconds: 0.0,
        answered: BTreeMap::new(),
        blk_rounds: 0,
        checks: Vec::new(),
        violation: None,
        supervisor_exit: String::new(),
        restarts: BTreeMap::new(),
        hang_verdicts: HangVerdicts::default(),
        lanes,
    };
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    let mut exits = Vec::new();
    for (lane, r) in results.into_iter().enumerate() {
        let (r, start, end) = r?;
        first = Some(first.map_or(start, |f| f.min(start)));
        last = Some(last.map_or(end, |l| l.max(end)));
        merged.records.extend(r.records);
        for (t, v) in r.throughput {
            *buckets.entry((t * 4.0).round() as u64).or_default() += v;
        }
        for (k, v) in r.answered {
            *merged.answered.entry(k).or_default() += v;
        }
        for (k, v) in r.restarts {
            *merged.restarts.entry(k).or_default() += v;
        }
        merged.hang_verdicts.starved += r.hang_verdicts.starved;
        merged.hang_verdicts.hung += r.hang_verdicts.hung;
        merged.blk_rounds += r.blk_rounds;
        let prefix = if lanes > 1 { format!("lane {lane}: ") } else { String::new() };
        merged.checks.extend(r.checks.into_iter().map(|c| format!("{prefix}{c}")));
        if let Some(v) = r.violation {
            let v = Violation { fault_index: v.fault_index, what: format!("{prefix}{}", v.what) };
            if merged.violation.as_ref().is_none_or(|m| v.fault_index < m.fault_index) {
                merged.violation = Some(v);
            }
        }
        exits.push(format!("{prefix}{}", r.supervisor_exit));
    }
    exits.dedup_by(|a, b| a.split(": ").skip(1).eq(b.split(": ").skip(1)));
    merged.supervisor_exit = if lanes > 1 && exits.len() == 1 {
        format!("all {lanes} {}", exits[0].split_once(": ").map_or("", |x| x.1))
    } else {
        exits.join("; ")
    };
    merged.records.sort_by_key(|r| r.index);
    merged.throughput = buckets.into_iter().map(|(b, v)| (b as f64 / 4.0, v)).collect();
    merged.fault_seconds = match (first, last) {
        (Some(f), Some(l)) => l.saturating_duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    Ok(merged)
}

/// Runs lane `lane` of a campaign: its supervisor, load and faults; returns
/// what it measured and when its fault phase started and ended.
fn run_lane(
    bins: &Bins,
    opts: &Options,
    lane: usize,
    lanes: &Lanes,
) -> Result<(RunResult, Instant, Instant), CampaignError> {
    let dir = &opts.work.join(format!("lane{lane}"));
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| CampaignError::io(dir.display(), e))?;
    let bench_copy = dir.join("bench-driver-exec");
    std::fs::copy(&bins.bench_driver, &bench_copy).map_err(|e| CampaignError::io(bench_copy.display(), e))?;
    let config = dir.join("supervisor.toml");
    std::fs::write(&config, config_text(&dir.join("state"), &specs(bins, dir, &bench_copy)))
        .map_err(|e| CampaignError::io(config.display(), e))?;
    let log = dir.join("supervisor.log");
    let out = std::fs::File::create(&log).map_err(|e| CampaignError::io(log.display(), e))?;
    let err = out.try_clone().map_err(|e| CampaignError::io(log.display(), e))?;
    let runtime = dir.join("run");
    let child = Command::new(&bins.supervisor)
        .arg("--config")
        .arg(&config)
        .arg("--runtime-dir")
        .arg(&runtime)
        // The supervisor's `[SUP]` lines (restarts and their reasons) are kept;
        // drivers say only warnings.
        .env("RUST_LOG", "warn,reinc_supervisor=info")
        // Drivers inherit the environment: with RUST_BACKTRACE set, every
        // injected panic spends ~100 ms symbolising a backtrace, which is
        // the shell's setting, not the supervisor's recovery.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| CampaignError::io(bins.supervisor.display(), e))?;
    let mut sup = Sup { child, runtime: runtime.clone(), log };
    for t in [Target::Storage, Target::Net, Target::Null, Target::Misbehave] {
        sup.wait(t.driver(), Duration::from_secs(20), running).map_err(CampaignError::Setup)?;
    }
    for k in INIT_KINDS {
        sup.wait(&init_driver(k), Duration::from_secs(20), |s| s.state.name() == "quarantined")
            .map_err(CampaignError::Setup)?;
    }

    let shared = Arc::new(Shared::default());
    let t_start = lanes.epoch;
    let (mis_tx, mis_rx) = mpsc::channel::<MisOrder>();
    let spawn_storage = |i: u64| {
        let (s, rt) = (shared.clone(), runtime.clone());
        std::thread::spawn(move || storage_load(&s, &rt, i * RANGE, opts_seed(i)))
    };
    fn opts_seed(i: u64) -> u64 {
        0x5107_A6E0 + i
    }
    let storage_threads = [spawn_storage(0), spawn_storage(1)];
    let net_thread = {
        let (s, rt) = (shared.clone(), runtime.clone());
        std::thread::spawn(move || net_load(&s, &rt))
    };
    let bench_thread = {
        let (s, rt) = (shared.clone(), runtime.clone());
        std::thread::spawn(move || bench_load(&s, &rt))
    };
    let mis_thread = {
        let (s, rt) = (shared.clone(), runtime.clone());
        std::thread::spawn(move || misbehave_load(&s, &rt, &mis_rx))
    };
    let blk_thread = {
        let (s, rt, d, drvctl) = (shared.clone(), runtime.clone(), dir.clone(), bins.drvctl.clone());
        std::thread::spawn(move || blk_load(&s, &drvctl, &rt, &d))
    };
    let sampler = {
        let s = shared.clone();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let (mut last_t, mut last_n) = (Instant::now(), 0u64);
            while !s.stopped() {
                std::thread::sleep(Duration::from_millis(250));
                let (now, n) = (Instant::now(), s.completions.load(Ordering::Relaxed));
                let dt = (now - last_t).as_secs_f64();
                v.push(((now - t_start).as_secs_f64(), (n - last_n) as f64 / dt));
                (last_t, last_n) = (now, n);
            }
            v
        })
    };

    let n_lanes = opts.lanes.max(1);
    let schedule: Vec<(usize, Fault)> = crate::schedule::schedule(opts.seed, opts.faults)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % n_lanes == lane)
        .collect();
    let mut inj = Injector {
        sup: &mut sup,
        shared: &shared,
        mis: mis_tx,
        client: None,
        storage_tail: ExecTail::new(dir.join("storage.exec.log")),
        net_tail: ExecTail::new(dir.join("net.exec.log")),
        bench_copy: &bench_copy,
        disk: dir.join("disk.img"),
        victim_version: 0,
        t_start,
    };
    let mut records = Vec::with_capacity(schedule.len());
    let t_faults = Instant::now();
    let mut last_progress = Instant::now();
    for &(i, ref fault) in &schedule {
        if shared.stopped() || lanes.stop.load(Ordering::SeqCst) {
            break;
        }
        shared.fault_index.store(i, Ordering::SeqCst);
        match inj.apply(i, fault) {
            Ok(r) => records.push(r),
            Err(what) => {
                shared.fail(format!("fault #{i} {fault:?}: {what}"));
                break;
            }
        }
        let done = lanes.done.fetch_add(1, Ordering::Relaxed) + 1;
        if lane == 0 && last_progress.elapsed() > Duration::from_secs(10) {
            last_progress = Instant::now();
            let rate = done as f64 / t_faults.elapsed().as_secs_f64();
            eprintln!("campaign: {done} of {} faults ({rate:.0}/s)", opts.faults);
        }
    }
    if shared.stopped() {
        lanes.stop.store(true, Ordering::SeqCst);
    }
    let t_end = Instant::now();
    let fault_seconds = (t_end - t_faults).as_secs_f64();
    let violation_during = shared.violation.lock().ok().and_then(|v| v.clone());
    shared.stop.store(true, Ordering::SeqCst);
    drop(inj);

    let join_err = |what: &str| CampaignError::Setup(format!("the {what} thread panicked"));
    let storage: Vec<StorageOut> = storage_threads
        .into_iter()
        .map(|t| t.join().map_err(|_| join_err("storage client")))
        .collect::<Result<_, _>>()?;
    let net = net_thread.join().map_err(|_| join_err("net client"))?;
    let bench = bench_thread.join().map_err(|_| join_err("bench client"))?;
    let mis = mis_thread.join().map_err(|_| join_err("misbehave client"))?;
    let blk_rounds = blk_thread.join().map_err(|_| join_err("drvctl blk"))?;
    let throughput = sampler.join().map_err(|_| join_err("sampler"))?;

    let mut answered = BTreeMap::new();
    answered.insert("storage_driver".into(), storage.iter().map(|s| s.answered).sum());
    answered.insert("net_driver".into(), net.answered);
    answered.insert("bench_driver".into(), bench);
    answered.insert("misbehave_driver".into(), mis);
    let restarts = sup.status().unwrap_or_default().into_iter().map(|s| (s.name, s.restarts)).collect();
    let hang_verdicts = match sup.control(&ControlRequest::Metrics) {
        Ok(ControlResponse::Metrics(text)) => HangVerdicts::from_metrics(&text),
        _ => HangVerdicts::default(),
    };

    let mut checks = Vec::new();
    let mut violation = shared.violation.lock().ok().and_then(|v| v.clone()).or(violation_during);
    if violation.is_none() {
        let fault_index = records.len();
        if let Err(what) = final_checks(&mut sup, dir, &storage, &net, &mut checks) {
            violation = Some(Violation { fault_index, what });
        }
    }
    // The supervisor must still be alive, and stop cleanly.
    let supervisor_exit = match sup.alive() {
        Err(e) => {
            violation.get_or_insert(Violation { fault_index: records.len(), what: e.clone() });
            e
        }
        Ok(()) => {
            let _ = kill(Pid::from_raw(sup.child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match sup.child.try_wait() {
                    Ok(Some(st)) if st.success() => break format!("alive throughout; SIGTERM at the end: {st}"),
                    Ok(Some(st)) => {
                        let e = format!("the supervisor ended badly after SIGTERM: {st}");
                        violation.get_or_insert(Violation { fault_index: records.len(), what: e.clone() });
                        break e;
                    }
                    _ if Instant::now() > deadline => {
                        let e = "the supervisor ignored SIGTERM for 15 s".to_owned();
                        violation.get_or_insert(Violation { fault_index: records.len(), what: e.clone() });
                        break e;
                    }
                    _ => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    };
    if violation.is_none() {
        checks.push(format!("ok  supervisor       {supervisor_exit}"));
    }
    let quarantined = shared.bench_quarantined.load(Ordering::Relaxed);
    if violation.is_none() && quarantined > 0 {
        checks.push(format!(
            "ok  definite       {quarantined} bench calls answered DriverFailed while an exec-fails fault quarantined it"
        ));
    }
    Ok((
        RunResult {
            seed: opts.seed,
            planned: opts.faults,
            records,
            throughput,
            fault_seconds,
            answered,
            blk_rounds,
            checks,
            violation,
            supervisor_exit,
            restarts,
            hang_verdicts,
            lanes: 1,
        },
        t_faults,
        t_end,
    ))
}

fn exec_entries(path: &Path) -> Vec<(u32, u64, u64)> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(parse_exec_line).collect()
}

/// After the load stopped: the device equals the model, every effectful
/// request executed exactly once.
fn final_checks(
    sup: &mut Sup,
    dir: &Path,
    storage: &[StorageOut],
    net: &NetOut,
    checks: &mut Vec<String>,
) -> Result<(), String> {
    for t in [Target::Storage, Target::Net] {
        sup.wait(t.driver(), FAULT_TIMEOUT, running)?;
    }
    // Exactly once, by the exec logs.
    for (name, log, sessions) in [
        ("storage_driver", "storage.exec.log", storage.iter().map(|s| (s.session, &s.writes)).collect::<Vec<_>>()),
        ("net_driver", "net.exec.log", vec![(net.session, &net.sends)]),
    ] {
        let entries = exec_entries(&dir.join(log));
        let mut seen: HashMap<(u64, u64), u32> = HashMap::new();
        for (g, c, s) in &entries {
            if let Some(g0) = seen.insert((*c, *s), *g) {
                return Err(format!("{name}: request c{c}:{s} executed twice (generations {g0} and {g})"));
            }
        }
        let mut answered = 0;
        for (session, effectful) in sessions {
            let logged: BTreeSet<u64> = seen.keys().filter(|(c, _)| *c == session).map(|(_, s)| *s).collect();
            if &logged != effectful {
                let lost: Vec<_> = effectful.difference(&logged).take(5).collect();
                let extra: Vec<_> = logged.difference(effectful).take(5).collect();
                return Err(format!(
                    "{name}: session c{session}: {} answered, {} executed (answered, not executed: {lost:?}; executed, not answered: {extra:?})",
                    effectful.len(),
                    logged.len()
                ));
            }
            answered += effectful.len();
        }
        checks.push(format!(
            "ok  exactly once    {name}: {} executions in the exec log, no request twice; the {answered} the model clients sent all once",
            seen.len()
        ));
        if name == "storage_driver" {
            let bytes = std::fs::read(dir.join("disk.img")).map_err(|e| format!("disk.img: {e}"))?;
            let sb = storage_core::Superblock::decode(&bytes[..BLOCK_SIZE])
                .map_err(|e| format!("disk.img superblock: {e:?}"))?
                .ok_or("disk.img has no superblock")?;
            // Bit-flip victims are rewritten by the injector: those writes are in the log too.
            if sb.applied_count != seen.len() as u64 {
                return Err(format!(
                    "storage superblock applied_count {} != {} distinct executions in the exec log",
                    sb.applied_count,
                    seen.len()
                ));
            }
            checks.push(format!("ok  applied_count   superblock says {}, equal to the exec log", sb.applied_count));
        }
    }
    // The device equals the model: read back through the supervisor and from the file.
    let mut client = Client::connect(&client_socket(&sup.runtime)).map_err(|e| format!("final read client: {e}"))?;
    let bytes = std::fs::read(dir.join("disk.img")).map_err(|e| format!("disk.img: {e}"))?;
    let mut blocks = 0;
    for (i, s) in storage.iter().enumerate() {
        let first = i as u64 * RANGE;
        for lba in first..first + RANGE {
            let want = s.model.get(&lba).map_or_else(|| vec![0; BLOCK_SIZE], |v| block_data(lba, *v));
            let got = client
                .call("storage_driver", &blocksum::read_body(lba, 1))
                .map_err(|e| format!("final read of block {lba}: {e}"))?
                .map_err(|e| format!("final read of block {lba}: {e:?}"))?;
            match blocksum::check_read("storage_driver", lba, 1, &got) {
                Ok(d) if d == want.as_slice() => {}
                other => return Err(format!("block {lba} read back differs from the model: {other:?}")),
            }
            let off = (lba as usize + 1) * BLOCK_SIZE;
            if bytes.get(off..off + BLOCK_SIZE) != Some(want.as_slice()) {
                return Err(format!("block {lba} in disk.img differs from the model"));
            }
            blocks += 1;
        }
    }
    checks.push(format!(
        "ok  device = model  {blocks} blocks read back through the supervisor and from disk.img, all equal to the model"
    ));
    Ok(())
}

struct Injector<'a> {
    sup: &'a mut Sup,
    shared: &'a Shared,
    mis: mpsc::Sender<MisOrder>,
    client: Option<Client>,
    storage_tail: ExecTail,
    net_tail: ExecTail,
    bench_copy: &'a Path,
    disk: PathBuf,
    victim_version: u32,
    t_start: Instant,
}

impl Injector<'_> {
    fn client(&mut self) -> Result<&mut Client, String> {
        if self.client.is_none() {
            self.client = Some(Client::connect(&client_socket(&self.sup.runtime)).map_err(|e| e.to_string())?);
        }
        self.client.as_mut().ok_or_else(|| "no client".into())
    }

    fn apply(&mut self, index: usize, fault: &Fault) -> Result<Record, String> {
        let at_ms = self.t_start.elapsed().as_secs_f64() * 1000.0;
        let (outcome, handling, recovery_us, note) = match *fault {
            Fault::Inject { target, point, kind, k } => {
                let plan = format!("{}:{k}:{}", point.name(), kind.name())
                    .parse()
                    .map_err(|e| format!("plan {point:?}:{k}:{kind:?}: {e}"))?;
                let (r, h) = self.crash(target, |s, _| {
                    match s.control(&ControlRequest::Inject { driver: target.driver().into(), plan })? {
                        ControlResponse::Done(_) => Ok(()),
                        other => Err(format!("inject {plan} into {}: {other:?}", target.driver())),
                    }
                })?;
                (Outcome::Recovered, h, r, String::new())
            }
            Fault::Signal { target, signal, delay_us } => {
                let (r, h) = self.crash(target, |_, pid| {
                    std::thread::sleep(Duration::from_micros(u64::from(delay_us)));
                    kill(Pid::from_raw(pid as i32), signal.signal()).map_err(|e| match e {
                        // Gone (and reaped) since the status: the next instance gets it.
                        nix::errno::Errno::ESRCH => format!("{} {NO_INSTANCE} (pid {pid} is gone)", target.driver()),
                        e => format!("kill -{} {pid} ({}): {e}", signal.signal(), target.driver()),
                    })
                })?;
                (Outcome::Recovered, h, r, String::new())
            }
            Fault::InitCrash { kind } => {
                let name = init_driver(kind);
                let before = self.sup.driver(&name)?.restarts;
                self.sup.control(&ControlRequest::Restart { driver: name.clone() })?;
                self.sup.wait(&name, FAULT_TIMEOUT, |s| s.restarts > before && s.state.name() == "quarantined")?;
                // A client of a quarantined driver gets a definite error, at once.
                match self
                    .client()?
                    .call(&name, &[reinc_bench::NULL_COMMIT])
                    .map_err(|e| format!("{name}: unknown outcome: {e}"))?
                {
                    Err(CallError::DriverFailed) => {}
                    other => return Err(format!("{name} is quarantined, yet a call got {other:?}")),
                }
                (Outcome::Quarantined, Handling::Quarantined, None, "caller got DriverFailed".into())
            }
            Fault::Misbehave(m) => self.misbehave(m)?,
            Fault::ExecFails => self.exec_fails()?,
            Fault::StorageBitFlip { bit, place } => self.storage_bit_flip(index, bit, place)?,
        };
        Ok(Record { index, fault: *fault, class: fault.class(), at_ms, outcome, handling, recovery_us, note })
    }

    fn clear_watches(&self) {
        if let Ok(mut m) = self.shared.storage_replies.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.shared.net_replies.lock() {
            m.clear();
        }
    }

    /// Applies a crash fault to `target`, waits for the next generation to
    /// run and measures recovery: from the fault to the first reply of a
    /// request the new instance executed.
    ///
    /// An instance that died on its own between the status and the fault
    /// (a heartbeat missed on a loaded host) cannot take the fault: the
    /// supervisor says it has no running instance, and the fault is applied
    /// to the next one (at most [`REAPPLY`] times).
    fn crash(
        &mut self,
        target: Target,
        mut apply: impl FnMut(&Sup, u32) -> Result<(), String>,
    ) -> Result<(Option<u64>, Handling), String> {
        let mut tries = 0;
        let (g, t0) = loop {
            let st = self.sup.wait(target.driver(), FAULT_TIMEOUT, |s| running(s) && s.pid.is_some())?;
            let (g, pid) = (st.generation, st.pid.unwrap_or(0));
            self.before_crash(g);
            let t0 = Instant::now();
            match apply(self.sup, pid) {
                Err(e) if e.contains(NO_INSTANCE) && tries < REAPPLY => tries += 1,
                Err(e) => return Err(e),
                Ok(()) => break (g, t0),
            }
        };
        self.sup.wait(target.driver(), FAULT_TIMEOUT, |s| running(s) && s.generation > g)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut candidates: Vec<(u64, u64)> = Vec::new();
        let recovery = loop {
            let first = match target {
                Target::Storage | Target::Net => {
                    let (tail, map) = if target == Target::Storage {
                        (&mut self.storage_tail, &self.shared.storage_replies)
                    } else {
                        (&mut self.net_tail, &self.shared.net_replies)
                    };
                    candidates.extend(tail.read_new().into_iter().filter(|e| e.0 > g).map(|e| (e.1, e.2)));
                    let m = map.lock().map_err(|_| "reply map poisoned".to_owned())?;
                    candidates.iter().filter_map(|k| m.get(k).copied()).min()
                }
                Target::Misbehave => self.shared.mis_watch.lock().ok().and_then(|w| w.1),
                Target::Null => None,
            };
            if let Some(t) = first {
                break Some(t.saturating_duration_since(t0).as_micros() as u64);
            }
            if target == Target::Null || Instant::now() > deadline || self.shared.stopped() {
                break None;
            }
            std::thread::sleep(Duration::from_micros(300));
        };
        Ok((recovery, Handling::Restarted))
    }

    /// Catches up on the exec logs, so only new entries are looked at, and
    /// watches for replies of generations above `g`.
    fn before_crash(&mut self, g: u32) {
        self.storage_tail.read_new();
        self.net_tail.read_new();
        self.clear_watches();
        if let Ok(mut w) = self.shared.mis_watch.lock() {
            *w = (g, None);
        }
    }

    fn misbehave(&mut self, m: Misbehaviour) -> Result<(Outcome, Handling, Option<u64>, String), String> {
        let name = Target::Misbehave.driver();
        let st = self.sup.wait(name, FAULT_TIMEOUT, |s| running(s) && s.pid.is_some())?;
        let g = st.generation;
        let (tx, rx) = mpsc::channel();
        self.mis.send((m, tx)).map_err(|_| "the misbehave client is gone".to_owned())?;
        let deadline = Instant::now() + FAULT_TIMEOUT;
        let result = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => break r,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline && !self.shared.stopped() => {
                    self.sup.alive()?;
                }
                Err(_) => {
                    return Err(format!("{}: no outcome within {FAULT_TIMEOUT:?}; {}", m.name(), self.sup.tail()));
                }
            }
        };
        // Was the instance killed for it? A checked state flip is caught at
        // the next request; give the load a moment to send one.
        let expect_restart = !matches!(
            m,
            Misbehaviour::WrongGeneration
                | Misbehaviour::Flood
                | Misbehaviour::ReplyBitFlip
                | Misbehaviour::StateBitFlipUnchecked
        );
        let wait = if expect_restart { Duration::from_secs(5) } else { Duration::from_millis(20) };
        let t = Instant::now();
        let restarted = loop {
            let s = self.sup.driver(name)?;
            if s.generation > g && running(&s) {
                break true;
            }
            if t.elapsed() > wait {
                break false;
            }
            std::thread::sleep(Duration::from_micros(500));
        };
        self.sup.wait(name, FAULT_TIMEOUT, running)?;
        let handling = match result {
            MisResult::Poisoned => Handling::Poisoned,
            _ if restarted => Handling::Restarted,
            _ => Handling::Ignored,
        };
        let last = self.sup.driver(name)?.last_failure.unwrap_or_default();
        let (outcome, note) = match (m, result) {
            (_, MisResult::Poisoned) => (Outcome::Quarantined, "request poisoned; caller got Poisoned".to_owned()),
            (_, MisResult::ChecksumFailed) => {
                (Outcome::CorruptionDetected, "client's end-to-end crc32 caught it".into())
            }
            (Misbehaviour::StateBitFlipUnchecked, MisResult::WrongValue) => (
                Outcome::CorruptionSilent,
                "checksum computed over the flipped state; only the campaign's model saw it".into(),
            ),
            (Misbehaviour::StateBitFlipChecked, MisResult::Replied) if restarted => {
                (Outcome::CorruptionDetected, format!("driver's state crc32 caught it; {last}"))
            }
            (Misbehaviour::StateBitFlipChecked, _) => (Outcome::CorruptionSilent, "state flip not caught".into()),
            (_, MisResult::WrongValue) => return Err(format!("{}: a reply with a wrong counter", m.name())),
            (_, MisResult::Replied) => (Outcome::Recovered, if restarted { last } else { String::new() }),
        };
        Ok((outcome, handling, None, note))
    }

    fn exec_fails(&mut self) -> Result<(Outcome, Handling, Option<u64>, String), String> {
        let name = Target::Null.driver();
        let st = self.sup.wait(name, FAULT_TIMEOUT, |s| running(s) && s.pid.is_some())?;
        let set_mode = |mode: u32| {
            std::fs::set_permissions(self.bench_copy, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("chmod {mode:o} {}: {e}", self.bench_copy.display()))
        };
        self.shared.exec_fault.store(true, Ordering::SeqCst);
        set_mode(0o644)?;
        let t0 = Instant::now();
        kill(Pid::from_raw(st.pid.unwrap_or(0) as i32), Signal::SIGKILL).map_err(|e| format!("kill {name}: {e}"))?;
        let failed = self.sup.wait(name, FAULT_TIMEOUT, |s| {
            s.generation > st.generation && s.last_failure.as_deref().is_some_and(|f| f.contains("spawn failed"))
        });
        set_mode(0o755)?;
        let failed = failed?;
        let s = self.sup.wait(name, FAULT_TIMEOUT, |s| running(s) || s.state.name() == "quarantined")?;
        let note = failed.last_failure.unwrap_or_default();
        if s.state.name() == "quarantined" {
            self.sup.control(&ControlRequest::Restart { driver: name.into() })?;
            self.sup.wait(name, FAULT_TIMEOUT, running)?;
            self.shared.exec_fault.store(false, Ordering::SeqCst);
            return Ok((
                Outcome::Quarantined,
                Handling::Quarantined,
                None,
                format!("{note}; callers got DriverFailed"),
            ));
        }
        self.shared.exec_fault.store(false, Ordering::SeqCst);
        let back = format!("{note}; running again {:.1} ms after the kill", t0.elapsed().as_secs_f64() * 1000.0);
        Ok((Outcome::Recovered, Handling::Restarted, None, back))
    }

    /// Writes a known block in the victim range and flips one bit of it:
    /// in the device's file after the write (then reads it back through the
    /// driver), in the write request's data after its checksums were
    /// computed, or in the read reply's data before the client checks it.
    /// Then restores the block, so the device matches the injector's model.
    fn storage_bit_flip(
        &mut self,
        index: usize,
        bit: u32,
        place: FlipPlace,
    ) -> Result<(Outcome, Handling, Option<u64>, String), String> {
        const DRIVER: &str = "storage_driver";
        self.sup.wait(DRIVER, FAULT_TIMEOUT, running)?;
        let lba = VICTIM + (index as u64 % RANGE);
        self.victim_version += 1;
        let data = block_data(lba, self.victim_version);
        let flip = |b: &mut [u8]| b[bit as usize / 8] ^= 1 << (bit % 8);
        let call = |c: &mut Client, body: &[u8], what: &str| -> Result<Vec<u8>, String> {
            c.call(DRIVER, body)
                .map_err(|e| format!("{what} of victim block {lba}: unknown outcome: {e}"))?
                .map_err(|e| format!("{what} of victim block {lba}: {e:?}"))
        };
        let write = |c: &mut Client, d: &[u8]| -> Result<(), String> {
            let body = call(c, &blocksum::write_body(lba, d), "write")?;
            blocksum::check_write(DRIVER, lba, 1, &body).map_err(|e| e.to_string())
        };
        // What the client got for the damaged block: data (silent if it is
        // not the data written), or a definite error.
        let got: Result<Vec<u8>, blocksum::BlockError> = match place {
            FlipPlace::Device => {
                write(self.client()?, &data)?;
                self.flip_in_file(lba, bit)?;
                let body = call(self.client()?, &blocksum::read_body(lba, 1), "read")?;
                blocksum::check_read(DRIVER, lba, 1, &body).map(<[u8]>::to_vec)
            }
            FlipPlace::Request => {
                let mut body = blocksum::write_body(lba, &data);
                flip(data_in(&mut body, &data)?);
                let reply = call(self.client()?, &body, "write")?;
                match blocksum::check_write(DRIVER, lba, 1, &reply) {
                    Err(e) => Err(e),
                    Ok(()) => {
                        let body = call(self.client()?, &blocksum::read_body(lba, 1), "read")?;
                        blocksum::check_read(DRIVER, lba, 1, &body).map(<[u8]>::to_vec)
                    }
                }
            }
            FlipPlace::Reply => {
                write(self.client()?, &data)?;
                let mut body = call(self.client()?, &blocksum::read_body(lba, 1), "read")?;
                flip(data_in(&mut body, &data)?);
                blocksum::check_read(DRIVER, lba, 1, &body).map(<[u8]>::to_vec)
            }
        };
        let (outcome, note) = match got {
            Err(e) if e.is_corruption() => (Outcome::CorruptionDetected, e.to_string()),
            Err(e) => return Err(format!("{} bit flip in victim block {lba}: {e}", place.name())),
            Ok(d) if d == data => (Outcome::Recovered, "flip masked".into()),
            Ok(_) => (Outcome::CorruptionSilent, "the flipped block was returned as valid data".into()),
        };
        write(self.client()?, &block_data(lba, 0))?;
        Ok((outcome, Handling::Ignored, None, note))
    }

    /// Flips `bit` of block `lba` in the device's backing file (the data,
    /// not the tag table: a flipped tag is caught the same way, see
    /// `storage_core::integrity`'s tests).
    fn flip_in_file(&self, lba: u64, bit: u32) -> Result<(), String> {
        let off = (lba + 1) * BLOCK_SIZE as u64 + u64::from(bit / 8);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.disk)
            .map_err(|e| format!("{}: {e}", self.disk.display()))?;
        let mut b = [0u8];
        f.seek(SeekFrom::Start(off))
            .and_then(|_| f.read_exact(&mut b))
            .map_err(|e| format!("{}: {e}", self.disk.display()))?;
        b[0] ^= 1 << (bit % 8);
        f.seek(SeekFrom::Start(off)).and_then(|_| f.write_all(&b)).map_err(|e| format!("{}: {e}", self.disk.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hang_verdicts_sum_every_driver_s_starved_and_hung_counts() {
        let text = "# TYPE reinc_driver_starved_total counter\n\
                    reinc_driver_starved_total{driver=\"a\"} 3\n\
                    reinc_driver_starved_total{driver=\"b\"} 4\n\
                    reinc_driver_crashes_total{driver=\"a\",cause=\"hung\"} 2\n\
                    reinc_driver_crashes_total{driver=\"a\",cause=\"SIGSEGV\"} 9\n\
                    reinc_driver_crashes_total{driver=\"b\",cause=\"hung\"} 1\n";
        assert_eq!(HangVerdicts::from_metrics(text), HangVerdicts { starved: 7, hung: 3 });
        assert_eq!(HangVerdicts::from_metrics(""), HangVerdicts::default());
    }
}
