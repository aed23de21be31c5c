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
//! `dd` and prints records, bytes, time, throughput and the data's CRC-32;
//! the transfer is [`reinc_client::blk`].
//!
//! A lost connection (the supervisor restarting) is retried with backoff for
//! `REINC_RECONNECT_TIMEOUT_MS` (default 30 000) before `drvctl` gives up.
#![forbid(unsafe_code)]

use reinc_client::blk::{self, BlkOptions, Direction};
use reinc_client::control::{ControlRequest, ControlResponse, DriverStatus};
use reinc_client::{
    CONTROL_TIMEOUT, Client, ClientError, control_request_timeout, control_socket, default_runtime_dir,
};
use reinc_proto::FaultPlan;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use storage_core::{BLOCK_SIZE, StorageReply, StorageRequest};

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

fn blk(dir: &std::path::Path, args: &[String]) -> Result<(), Fail> {
    let direction = match args.first().map(String::as_str) {
        Some("write") => Direction::Write,
        Some("read") => Direction::Read,
        _ => return Err(Fail::Usage("blk needs read or write".into())),
    };
    let (mut bs, mut count) = (None, None);
    let mut opts = BlkOptions::new(direction, 0, 0);
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1);
        match args[i].as_str() {
            "--pad" => {
                opts.pad = true;
                i += 1;
                continue;
            }
            "--bs" => bs = Some(num(v, "--bs")?),
            "--count" => count = Some(num(v, "--count")?),
            "--offset" => opts.offset = num(v, "--offset")?,
            "--file" => opts.file = v.map(PathBuf::from),
            "--driver" => opts.driver = v.cloned().ok_or_else(|| Fail::Usage("missing --driver value".into()))?,
            "--window" => opts.window = num(v, "--window")? as usize,
            o => return Err(Fail::Usage(format!("unknown blk option {o:?}"))),
        }
        i += 2;
    }
    opts.bs = bs.ok_or_else(|| Fail::Usage("--bs is required".into()))?;
    opts.count = count.ok_or_else(|| Fail::Usage("--count is required".into()))?;
    match blk::run(&reinc_client::client_socket(dir), &opts) {
        Ok(report) => {
            println!("{report}");
            Ok(())
        }
        Err(e) if e.is_usage() => Err(Fail::Usage(e.to_string())),
        Err(e) => Err(Fail::Run(e.to_string())),
    }
}
