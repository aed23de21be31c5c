//! `drvctl`: operate the reinc supervisor and call its drivers.
//!
//! ```text
//! drvctl [--runtime-dir DIR] status [--json]
//! drvctl [--runtime-dir DIR] metrics
//! drvctl [--runtime-dir DIR] restart|stop|dump-queue|trace NAME
//! drvctl [--runtime-dir DIR] inject NAME POINT:K:KIND
//! drvctl [--runtime-dir DIR] call NAME (--hex HEX | nop | geometry | read LBA BLOCKS | write LBA BYTE | append BYTE)
//! drvctl [--runtime-dir DIR] blk read|write --bs SIZE --count N [--offset BYTES] [--file F] [--pad] [--driver NAME] [--window N]
//! ```
//! Options before the command: `--runtime-dir DIR`, and `--timeout SECS`:
//! how long each control request may wait for the supervisor (default
//! 10 s), and the limit for a whole `call` (default 10 s) or `blk` (none
//! unless given). A supervisor that does not answer is reported, never
//! waited for for ever.
//!
//! `blk` moves `count` blocks of `bs` bytes through the storage driver like
//! `dd`, split into requests of at most 32 KiB kept `window` deep in flight,
//! and prints records, bytes, time, throughput and the data's CRC-32. A
//! `write --file` shorter than `bs × count` is an error and nothing is
//! written, unless `--pad` asks for the rest to be zeros.
//!
//! A lost connection (the supervisor restarting) is retried with backoff for
//! `REINC_RECONNECT_TIMEOUT_MS` (default 30 000) before `drvctl` gives up.
#![forbid(unsafe_code)]

use reinc_client::control::{ControlRequest, ControlResponse, DriverStatus};
use reinc_client::{
    CONTROL_TIMEOUT, Client, ClientError, control_request_timeout, control_socket, default_runtime_dir,
};
use reinc_proto::{CallError, FaultPlan};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use storage_core::{BLOCK_SIZE, MAX_BLOCKS_PER_REQUEST, StorageReply, StorageRequest};

const USAGE: &str = "usage (options before the command: [--runtime-dir DIR] [--timeout SECS]):
  drvctl [--runtime-dir DIR] status [--json]
  drvctl [--runtime-dir DIR] metrics                    (Prometheus text, e.g. for node_exporter's textfile collector)
  drvctl [--runtime-dir DIR] restart|stop|dump-queue|trace NAME
  drvctl [--runtime-dir DIR] inject NAME POINT:K:KIND      (e.g. after-effect:3:segv)
  drvctl [--runtime-dir DIR] call NAME (--hex HEX | nop | geometry | read LBA BLOCKS | write LBA BYTE | append BYTE)
  drvctl [--runtime-dir DIR] blk read|write --bs SIZE --count N [--offset BYTES] [--file F] [--pad] [--driver NAME] [--window N]";

/// A failure to report, with the exit code.
#[derive(Debug)]
enum Fail {
    Usage(String),
    Run(String),
}

impl From<ClientError> for Fail {
    fn from(e: ClientError) -> Self {
        Self::Run(e.to_string())
    }
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut runtime_dir = None;
    let mut timeout = None;
    loop {
        match args.first().map(String::as_str) {
            Some("--runtime-dir") if args.len() >= 2 => runtime_dir = Some(PathBuf::from(args[1].clone())),
            Some("--timeout") if args.len() >= 2 => match args[1].parse::<f64>() {
                Ok(s) if s > 0.0 && s.is_finite() => timeout = Some(Duration::from_secs_f64(s)),
                _ => {
                    eprintln!("drvctl: bad --timeout {:?}: seconds, e.g. 2.5\n{USAGE}", args[1]);
                    return ExitCode::from(2);
                }
            },
            _ => break,
        }
        args.drain(..2);
    }
    if matches!(args.first().map(String::as_str), Some("help" | "--help" | "-h")) {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let runtime_dir = runtime_dir.unwrap_or_else(default_runtime_dir);
    // Control commands wait at most the timeout per request (default
    // CONTROL_TIMEOUT); `call` and `blk` as a whole, `blk` only if asked.
    let whole = match args.first().map(String::as_str) {
        Some("call") => Some(timeout.unwrap_or(CONTROL_TIMEOUT)),
        Some("blk") => timeout,
        _ => None,
    };
    if let Some(limit) = whole {
        let dir = runtime_dir.clone();
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            eprintln!(
                "drvctl: no answer from the supervisor at {} within {limit:?} (--timeout)",
                reinc_client::client_socket(&dir).display()
            );
            std::process::exit(1);
        });
    }
    match run(&runtime_dir, &args, timeout.unwrap_or(CONTROL_TIMEOUT)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Usage(m)) => {
            eprintln!("drvctl: {m}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Fail::Run(m)) => {
            eprintln!("drvctl: {m}");
            ExitCode::from(1)
        }
    }
}

fn run(dir: &std::path::Path, args: &[String], timeout: Duration) -> Result<(), Fail> {
    let ctl = |req: ControlRequest| -> Result<ControlResponse, Fail> {
        match control_request_timeout(&control_socket(dir), &req, timeout)? {
            ControlResponse::Error(e) => Err(Fail::Run(e)),
            r => Ok(r),
        }
    };
    let name = |i: usize| args.get(i).cloned().ok_or_else(|| Fail::Usage("missing driver NAME".into()));
    match args.first().map(String::as_str) {
        Some("status") => {
            let ControlResponse::Status(rows) = ctl(ControlRequest::Status)? else {
                return Err(Fail::Run("unexpected response".into()));
            };
            if args.get(1).map(String::as_str) == Some("--json") {
                println!("{}", serde_json::to_string_pretty(&rows).map_err(|e| Fail::Run(e.to_string()))?);
            } else {
                print_table(&rows);
            }
        }
        Some("metrics") => {
            let ControlResponse::Metrics(text) = ctl(ControlRequest::Metrics)? else {
                return Err(Fail::Run("unexpected response to metrics".into()));
            };
            print!("{text}");
        }
        Some("restart") => done(ctl(ControlRequest::Restart { driver: name(1)? })?),
        Some("stop") => done(ctl(ControlRequest::Stop { driver: name(1)? })?),
        Some("dump-queue") => {
            let driver = name(1)?;
            let ControlResponse::Queue(rows) = ctl(ControlRequest::DumpQueue { driver: driver.clone() })? else {
                return Err(Fail::Run("unexpected response".into()));
            };
            println!("{driver}: {} queued request(s)", rows.len());
            if !rows.is_empty() {
                println!("{:<14} {:>9} {:>9} {:>7} {:>8}", "ID", "AGE", "IN-FLIGHT", "CRASHES", "BYTES");
            }
            for r in rows {
                let age = format!("{}ms", r.age_ms);
                let id = r.id.to_string();
                println!(
                    "{id:<14} {age:>9} {:>9} {:>7} {:>8}",
                    if r.in_flight { "yes" } else { "no" },
                    r.crashes,
                    r.body_len
                );
            }
        }
        Some("trace") => {
            let driver = name(1)?;
            let ControlResponse::Trace(bytes) = ctl(ControlRequest::Trace { driver: driver.clone() })? else {
                return Err(Fail::Run("unexpected response".into()));
            };
            let legend = match reinc_ringbuf::shared::legend(&bytes) {
                Ok(l) => Some(l),
                Err(reinc_ringbuf::shared::LegendError::Missing) => None,
                Err(e) => {
                    eprintln!("{driver}: {e}");
                    None
                }
            };
            let mut n = 0;
            for r in reinc_ringbuf::shared::records(&bytes) {
                println!("{}", reinc_ringbuf::shared::describe(&r, legend.as_ref()));
                n += 1;
            }
            if n == 0 {
                println!("{driver}: trace ring is empty");
            }
        }
        Some("inject") => {
            let driver = name(1)?;
            let plan: FaultPlan = args
                .get(2)
                .ok_or_else(|| Fail::Usage("missing POINT:K:KIND".into()))?
                .parse()
                .map_err(|e| Fail::Usage(format!("bad fault plan: {e}")))?;
            done(ctl(ControlRequest::Inject { driver, plan })?);
        }
        Some("call") => call(dir, &name(1)?, &args[2..])?,
        Some("blk") => blk(dir, &args[1..])?,
        Some(other) => return Err(Fail::Usage(format!("unknown command {other:?}"))),
        None => return Err(Fail::Usage("missing command".into())),
    }
    Ok(())
}

fn done(r: ControlResponse) {
    if let ControlResponse::Done(m) = r {
        println!("{m}");
    }
}

fn print_table(rows: &[DriverStatus]) {
    println!(
        "{:<16} {:>8} {:>4} {:<12} {:>8} {:>9} {:>6} {:>6}  LAST FAILURE",
        "NAME", "PID", "GEN", "STATE", "RESTARTS", "UPTIME", "QUEUE", "FLIGHT"
    );
    for r in rows {
        let pid = r.pid.map_or("-".into(), |p| p.to_string());
        let up = r.uptime_ms.map_or("-".into(), |u| format!("{:.1}s", u as f64 / 1000.0));
        let state = match r.backoff_ms {
            Some(b) => format!("{} {b}ms", r.state),
            None => r.state.to_string(),
        };
        println!(
            "{:<16} {:>8} {:>4} {:<12} {:>8} {:>9} {:>6} {:>6}  {}",
            r.name,
            pid,
            r.generation,
            state,
            r.restarts,
            up,
            r.queue_depth,
            r.in_flight,
            notes(r)
        );
    }
}

/// The LAST FAILURE column: the instance's last failure, and a checkpoint
/// that cannot be persisted (its replies are held meanwhile).
fn notes(r: &DriverStatus) -> String {
    let mut parts = Vec::new();
    if let Some(f) = &r.last_failure {
        parts.push(f.clone());
    }
    if let Some(e) = &r.checkpoint_error {
        parts.push(format!("checkpoint not durable, {} replies held: {e}", r.held_replies));
    }
    if parts.is_empty() { "-".into() } else { parts.join("; ") }
}

fn num(s: Option<&String>, what: &str) -> Result<u64, Fail> {
    let s = s.ok_or_else(|| Fail::Usage(format!("missing {what}")))?;
    parse_size(s).ok_or_else(|| Fail::Usage(format!("bad {what}: {s:?}")))
}

/// `123`, `4k`, `32K`, `1M`, `2G` (powers of 1024).
fn parse_size(s: &str) -> Option<u64> {
    let (digits, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

fn call(dir: &std::path::Path, driver: &str, rest: &[String]) -> Result<(), Fail> {
    let op = rest.first().map(String::as_str);
    let block;
    let mut hex_body = Vec::new();
    let req = match op {
        Some("--hex") => {
            let h = rest.get(1).ok_or_else(|| Fail::Usage("missing HEX".into()))?;
            hex_body = from_hex(h).ok_or_else(|| Fail::Usage(format!("bad hex {h:?}")))?;
            None
        }
        Some("nop") => Some(StorageRequest::Nop),
        Some("geometry") => Some(StorageRequest::Geometry),
        Some("read") => Some(StorageRequest::Read {
            lba: num(rest.get(1), "LBA")?,
            blocks: u16::try_from(num(rest.get(2), "BLOCKS")?).map_err(|_| Fail::Usage("BLOCKS too large".into()))?,
        }),
        Some("write") => {
            let lba = num(rest.get(1), "LBA")?;
            block =
                [u8::try_from(num(rest.get(2), "BYTE")?).map_err(|_| Fail::Usage("BYTE > 255".into()))?; BLOCK_SIZE];
            Some(StorageRequest::Write { lba, data: &block })
        }
        Some("append") => {
            block =
                [u8::try_from(num(rest.get(1), "BYTE")?).map_err(|_| Fail::Usage("BYTE > 255".into()))?; BLOCK_SIZE];
            Some(StorageRequest::Append { data: &block })
        }
        _ => return Err(Fail::Usage("call needs --hex HEX or a storage operation".into())),
    };
    let body = match &req {
        Some(r) => postcard::to_allocvec(r).map_err(|e| Fail::Run(e.to_string()))?,
        None => hex_body.clone(),
    };
    let mut client = Client::connect(&reinc_client::client_socket(dir))?;
    match client.call(driver, &body)? {
        Ok(reply) => {
            if req.is_some() {
                match postcard::from_bytes::<StorageReply<'_>>(&reply) {
                    Ok(StorageReply::Data(d)) => {
                        println!(
                            "Data: {} bytes, crc32 {:#010x}, first bytes {}",
                            d.len(),
                            crc32fast::hash(d),
                            to_hex(&d[..d.len().min(16)])
                        )
                    }
                    Ok(r) => println!("{r:?}"),
                    Err(_) => println!("reply (not a storage reply): {}", to_hex(&reply)),
                }
            } else {
                println!("{}", to_hex(&reply));
            }
            Ok(())
        }
        Err(e) => Err(Fail::Run(format!("{driver}: {e}"))),
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Deterministic test data for block `lba` (used when `blk write` has no `--file`).
fn pattern(lba: u64, out: &mut [u8]) {
    let mut x = lba.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

fn blk(dir: &std::path::Path, args: &[String]) -> Result<(), Fail> {
    let write = match args.first().map(String::as_str) {
        Some("write") => true,
        Some("read") => false,
        _ => return Err(Fail::Usage("blk needs read or write".into())),
    };
    let (mut bs, mut count, mut offset, mut file, mut driver, mut window) =
        (None, None, 0u64, None, "storage_driver".to_string(), 16usize);
    let mut pad = false;
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1);
        match args[i].as_str() {
            "--pad" => {
                pad = true;
                i += 1;
                continue;
            }
            "--bs" => bs = Some(num(v, "--bs")?),
            "--count" => count = Some(num(v, "--count")?),
            "--offset" => offset = num(v, "--offset")?,
            "--file" => file = v.cloned(),
            "--driver" => driver = v.cloned().ok_or_else(|| Fail::Usage("missing --driver value".into()))?,
            "--window" => window = num(v, "--window")? as usize,
            o => return Err(Fail::Usage(format!("unknown blk option {o:?}"))),
        }
        i += 2;
    }
    let bs = bs.ok_or_else(|| Fail::Usage("--bs is required".into()))?;
    let count = count.ok_or_else(|| Fail::Usage("--count is required".into()))?;
    let b = BLOCK_SIZE as u64;
    if bs == 0 || bs % b != 0 || offset % b != 0 {
        return Err(Fail::Usage(format!("--bs and --offset must be multiples of {BLOCK_SIZE}")));
    }
    let total = bs.checked_mul(count).ok_or_else(|| Fail::Usage("--bs × --count overflows".into()))?;
    let first_lba = offset / b;
    let total_blocks = total / b;
    let per_req = u64::from(MAX_BLOCKS_PER_REQUEST);
    let mut source = match (&file, write) {
        (Some(f), true) => {
            let src = File::open(f).map_err(|e| Fail::Run(format!("{f}: {e}")))?;
            let meta = src.metadata().map_err(|e| Fail::Run(format!("{f}: {e}")))?;
            // A short regular file is known before anything is sent; a pipe
            // is checked as it is read (read_full).
            if meta.is_file() && meta.len() < total && !pad {
                return Err(Fail::Run(format!(
                    "{f} has {} bytes, less than --bs × --count = {total}; nothing written (--pad fills the rest \
                     with zeros)",
                    meta.len()
                )));
            }
            Some(src)
        }
        _ => None,
    };
    let mut sink = match (&file, write) {
        (Some(f), false) => Some(File::create(f).map_err(|e| Fail::Run(format!("{f}: {e}")))?),
        _ => None,
    };
    let mut client = Client::connect(&reinc_client::client_socket(dir))?;
    let started = Instant::now();
    let mut crc = crc32fast::Hasher::new();
    // seq -> (request index, blocks); completions are kept until in order.
    let mut inflight: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut done: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let requests = total_blocks.div_ceil(per_req);
    let (mut next_req, mut next_out) = (0u64, 0u64);
    let mut buf = vec![0u8; (per_req * b) as usize];
    while next_out < requests {
        while next_req < requests && inflight.len() < window.max(1) {
            let lba = first_lba + next_req * per_req;
            let blocks = per_req.min(total_blocks - next_req * per_req);
            let body = if write {
                let data = &mut buf[..(blocks * b) as usize];
                match &mut source {
                    Some(f) => read_full(f, data, pad)
                        .map_err(|e| Fail::Run(format!("{}: {e}", file.as_deref().unwrap_or(""))))?,
                    None => {
                        for (k, blk) in data.chunks_mut(BLOCK_SIZE).enumerate() {
                            pattern(lba + k as u64, blk);
                        }
                    }
                }
                crc.update(data);
                postcard::to_allocvec(&StorageRequest::Write { lba, data })
            } else {
                postcard::to_allocvec(&StorageRequest::Read { lba, blocks: blocks as u16 })
            }
            .map_err(|e| Fail::Run(e.to_string()))?;
            let seq = client.submit(&driver, &body)?;
            inflight.insert(seq, (next_req, blocks));
            next_req += 1;
        }
        let c = client.wait()?;
        let Some((idx, blocks)) = inflight.remove(&c.seq) else { continue };
        let reply = c.result.map_err(|e: CallError| Fail::Run(format!("{driver}: request {idx}: {e}")))?;
        let data = match postcard::from_bytes::<StorageReply<'_>>(&reply) {
            Ok(StorageReply::Data(d)) if !write && d.len() as u64 == blocks * b => d.to_vec(),
            Ok(StorageReply::Written { blocks: w, .. }) if write && u64::from(w) == blocks => Vec::new(),
            Ok(StorageReply::Error(e)) => return Err(Fail::Run(format!("{driver}: request {idx}: {e}"))),
            other => return Err(Fail::Run(format!("{driver}: request {idx}: unexpected reply {other:?}"))),
        };
        done.insert(idx, data);
        while let Some(d) = done.remove(&next_out) {
            if !write {
                crc.update(&d);
                if let Some(s) = &mut sink {
                    s.write_all(&d).map_err(|e| Fail::Run(format!("{}: {e}", file.as_deref().unwrap_or(""))))?;
                }
            }
            next_out += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = total as f64 / secs.max(1e-9);
    let dir_word = if write { "out" } else { "in" };
    println!("{count}+0 records {}", if write { "in" } else { "out" });
    println!("{count}+0 records {dir_word}");
    println!(
        "{total} bytes ({:.1} MB, {:.1} MiB) copied, {secs:.3} s, {:.1} MB/s",
        total as f64 / 1e6,
        total as f64 / (1 << 20) as f64,
        rate / 1e6
    );
    println!("crc32 {:#010x}, {requests} requests, {} reconnects", crc.finalize(), client.reconnects());
    Ok(())
}

/// Fills `out` from `f`; at end of file the rest is zeros with `pad`, an
/// error without.
fn read_full(f: &mut File, out: &mut [u8], pad: bool) -> std::io::Result<()> {
    let mut n = 0;
    while n < out.len() {
        let k = f.read(&mut out[n..])?;
        if k == 0 {
            if !pad {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "ended before --bs × --count bytes (--pad fills the rest with zeros)",
                ));
            }
            out[n..].fill(0);
            return Ok(());
        }
        n += k;
    }
    Ok(())
}
