//! `drvctl`: operate the reinc supervisor and call its drivers.
//!
//! ```text
//! drvctl status [--json]
//! drvctl metrics
//! drvctl restart|stop|dump-queue|trace NAME
//! drvctl inject NAME POINT:K:KIND
//! drvctl call NAME (--hex HEX | nop | geometry | read LBA BLOCKS | write LBA BYTE | append BYTE)
//! drvctl blk read|write --bs SIZE --count N [--offset BYTES] [--file F] [--pad] [--driver NAME] [--window N]
//! ```
//! `--runtime-dir DIR` and `--timeout SECS` go anywhere on the line.
//! `--timeout` is how long each control request may wait for the supervisor
//! (default 10 s), and the limit for a whole `call` (default 10 s) or `blk`
//! (none unless given). A supervisor that does not answer is reported, never
//! waited for for ever. `drvctl help COMMAND` (or `--help`) describes each
//! command; `cargo xtask dist` writes the same text as man pages, with shell
//! completions.
//!
//! `blk` is [`reinc_client::blk`]: a `dd`-like transfer through the storage
//! driver. A lost connection (the supervisor restarting) is retried with
//! backoff for `REINC_RECONNECT_TIMEOUT_MS` (default 30 000) before `drvctl`
//! gives up.
//!
//! Exit status: 0 on success, 1 when the supervisor or a driver refused or
//! could not be reached, 2 for a command line that is wrong.
//!
//! # Designs rejected
//! - The hand-written parser this replaces: options had fixed places
//!   (`--runtime-dir` only first), and the usage text, the man page and the
//!   completions would each be kept by hand. With clap's derive the doc
//!   comments below are the help, and the man pages and completions are
//!   generated from the same definition.
//! - `call --hex` as one more storage operation (`call NAME hex 00`): `--hex`
//!   works with any driver, the operations only with storage, and scripts
//!   already use `--hex`.
#![forbid(unsafe_code)]

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use reinc_client::blk::{self, BlkOptions, Direction};
use reinc_client::control::{ControlRequest, ControlResponse, DriverStatus};
use reinc_client::{
    CONTROL_TIMEOUT, Client, ClientError, control_request_timeout, control_socket, default_runtime_dir,
};
use reinc_proto::FaultPlan;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use storage_core::{BLOCK_SIZE, StorageReply, StorageRequest};

/// Operate the reinc supervisor and call its drivers.
#[derive(Debug, Parser)]
#[command(name = "drvctl", version, max_term_width = 100)]
#[command(after_help = "Exit status: 0 on success, 1 when the supervisor or a driver refused or could not be \
                        reached, 2 for a wrong command line.")]
struct Cli {
    /// The supervisor's runtime directory [default: $REINC_RUNTIME_DIR, else /run/reinc for root, else
    /// $XDG_RUNTIME_DIR/reinc, else /tmp/reinc-$UID]
    #[arg(long, global = true, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// How long each control request may wait, in seconds; also the limit for a whole `call` (default 10)
    /// or `blk` (none unless given)
    #[arg(long, global = true, value_name = "SECS", value_parser = parse_timeout)]
    timeout: Option<Duration>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every driver's pid, generation, state, restarts, uptime, queue and last failure
    Status {
        /// Print the rows as JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// The supervisor's metrics as Prometheus text (e.g. for node_exporter's textfile collector)
    Metrics,
    /// Restart a driver now; revives a quarantined or stopped one
    Restart(Driver),
    /// Stop a driver (SIGTERM, then SIGKILL); it stays down until `restart`
    Stop(Driver),
    /// A driver's accepted, unanswered requests, oldest first
    DumpQueue(Driver),
    /// A driver's trace ring, decoded (the last instance's, also after it died)
    Trace(Driver),
    /// Arm a one-shot fault in a driver's current instance
    Inject {
        /// The driver's configured name
        name: String,
        /// At which point of which request, and how to die, e.g. after-effect:3:segv
        #[arg(value_name = "POINT:K:KIND", value_parser = parse_plan)]
        plan: FaultPlan,
    },
    /// Send one request to a driver and print its reply
    Call(CallArgs),
    /// Move blocks through the storage driver like dd, and print dd's summary with the data's CRC-32
    Blk(BlkArgs),
}

/// The hidden command that writes the man pages and completions (for
/// `cargo xtask dist`). It is added to the parser but not to [`Cli`], so the
/// documents it writes do not mention it: clap_complete offers even hidden
/// subcommands.
const GENERATE_DOCS: &str = "generate-docs";

/// What the command line asks for.
#[derive(Debug)]
enum Invocation {
    /// A command for the supervisor or a driver.
    Run(Cli),
    /// Write the man pages and completions into this directory.
    GenerateDocs(PathBuf),
}

/// The parser: [`Cli`] plus the hidden [`GENERATE_DOCS`].
fn parser() -> clap::Command {
    Cli::command().subcommand(
        clap::Command::new(GENERATE_DOCS)
            .hide(true)
            .about("Write man pages into DIR/man and shell completions into DIR/completions")
            .arg(clap::Arg::new("dir").value_name("DIR").required(true).value_parser(clap::value_parser!(PathBuf))),
    )
}

fn parse_from<I: IntoIterator<Item = T>, T: Into<std::ffi::OsString> + Clone>(
    args: I,
) -> Result<Invocation, clap::Error> {
    let matches = parser().try_get_matches_from(args)?;
    if let Some((GENERATE_DOCS, sub)) = matches.subcommand() {
        let dir = sub.get_one::<PathBuf>("dir").cloned().unwrap_or_default();
        return Ok(Invocation::GenerateDocs(dir));
    }
    Cli::from_arg_matches(&matches).map(Invocation::Run)
}

#[derive(Debug, Args)]
struct Driver {
    /// The driver's configured name
    name: String,
}

#[derive(Debug, Args)]
struct CallArgs {
    /// The driver's configured name
    name: String,
    /// Send these bytes (hex) as the request body, to any driver, and print the reply in hex
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    hex: Option<HexBody>,
    #[command(subcommand)]
    op: Option<StorageOp>,
}

/// A request body given in hex.
#[derive(Debug, Clone)]
struct HexBody(Vec<u8>);

/// A storage driver request, encoded for the caller and its reply decoded.
#[derive(Debug, Subcommand)]
enum StorageOp {
    /// Do nothing; answers Nop
    Nop,
    /// The device's size: blocks and block size
    Geometry,
    /// Read BLOCKS blocks from LBA; prints the length, CRC-32 and first bytes
    Read {
        /// First block
        #[arg(value_parser = parse_size)]
        lba: u64,
        /// Blocks to read
        #[arg(value_parser = parse_u16)]
        blocks: u16,
    },
    /// Fill block LBA with BYTE
    Write {
        /// The block
        #[arg(value_parser = parse_size)]
        lba: u64,
        /// The fill byte, 0 to 255
        #[arg(value_parser = parse_u8)]
        byte: u8,
    },
    /// Append one block filled with BYTE
    Append {
        /// The fill byte, 0 to 255
        #[arg(value_parser = parse_u8)]
        byte: u8,
    },
}

#[derive(Debug, Args)]
struct BlkArgs {
    /// Which way: read from the device, or write to it
    #[arg(value_enum)]
    direction: Way,
    /// Bytes per record, a multiple of 512 (suffixes k, M, G: powers of 1024)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    bs: u64,
    /// Records to transfer
    #[arg(long, value_name = "N", value_parser = parse_size)]
    count: u64,
    /// Byte offset on the device, a multiple of 512
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "0")]
    offset: u64,
    /// Write from or read into this file [default: write a deterministic pattern; read only the CRC]
    #[arg(long, value_name = "F")]
    file: Option<PathBuf>,
    /// Writing from a file shorter than bs × count: fill the rest with zeros instead of failing
    #[arg(long)]
    pad: bool,
    /// The storage driver's configured name
    #[arg(long, value_name = "NAME", default_value = blk::DEFAULT_DRIVER)]
    driver: String,
    /// Requests kept in flight; through the shared pool also at most 4 MiB of records, but 2 records at least
    #[arg(long, value_name = "N", value_parser = parse_window, default_value_t = blk::DEFAULT_WINDOW)]
    window: usize,
}

/// `blk`'s direction on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Way {
    /// Device to file
    Read,
    /// File to device
    Write,
}

/// A run that failed after the command line was accepted: exit status 1.
#[derive(Debug)]
struct Fail(String);

impl From<ClientError> for Fail {
    fn from(e: ClientError) -> Self {
        Self(e.to_string())
    }
}

fn main() -> ExitCode {
    // Wrong arguments: clap prints the error and the usage and exits with 2.
    let cli = match parse_from(std::env::args_os()) {
        Ok(Invocation::Run(cli)) => cli,
        Ok(Invocation::GenerateDocs(out)) => return generate_docs(&out),
        Err(e) => e.exit(),
    };
    let runtime_dir = cli.runtime_dir.clone().unwrap_or_else(default_runtime_dir);
    // Control commands wait at most the timeout per request (default
    // CONTROL_TIMEOUT); `call` and `blk` as a whole, `blk` only if asked.
    let whole = match cli.command {
        Command::Call(_) => Some(cli.timeout.unwrap_or(CONTROL_TIMEOUT)),
        Command::Blk(_) => cli.timeout,
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
    match run(&runtime_dir, cli.command, cli.timeout.unwrap_or(CONTROL_TIMEOUT)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(m)) => {
            eprintln!("drvctl: {m}");
            ExitCode::from(1)
        }
    }
}

fn run(dir: &Path, command: Command, timeout: Duration) -> Result<(), Fail> {
    let ctl = |req: ControlRequest| -> Result<ControlResponse, Fail> {
        match control_request_timeout(&control_socket(dir), &req, timeout)? {
            ControlResponse::Error(e) => Err(Fail(e)),
            r => Ok(r),
        }
    };
    match command {
        Command::Status { json } => {
            let ControlResponse::Status(rows) = ctl(ControlRequest::Status)? else {
                return Err(Fail("unexpected response".into()));
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&rows).map_err(|e| Fail(e.to_string()))?);
            } else {
                print_table(&rows);
            }
        }
        Command::Metrics => {
            let ControlResponse::Metrics(text) = ctl(ControlRequest::Metrics)? else {
                return Err(Fail("unexpected response to metrics".into()));
            };
            print!("{text}");
        }
        Command::Restart(d) => done(ctl(ControlRequest::Restart { driver: d.name })?),
        Command::Stop(d) => done(ctl(ControlRequest::Stop { driver: d.name })?),
        Command::DumpQueue(Driver { name: driver }) => {
            let ControlResponse::Queue(rows) = ctl(ControlRequest::DumpQueue { driver: driver.clone() })? else {
                return Err(Fail("unexpected response".into()));
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
        Command::Trace(Driver { name: driver }) => {
            let ControlResponse::Trace(bytes) = ctl(ControlRequest::Trace { driver: driver.clone() })? else {
                return Err(Fail("unexpected response".into()));
            };
            print_trace(&driver, &bytes);
        }
        Command::Inject { name, plan } => done(ctl(ControlRequest::Inject { driver: name, plan })?),
        Command::Call(args) => call(dir, args)?,
        Command::Blk(args) => blk(dir, args)?,
    }
    Ok(())
}

/// `drvctl generate-docs DIR`: prints each file written.
fn generate_docs(out: &Path) -> ExitCode {
    match write_docs(out) {
        Ok(files) => {
            for path in files {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("drvctl: writing man pages and completions into {}: {e}", out.display());
            ExitCode::from(1)
        }
    }
}

/// Reports a clap-style usage error of the command `sub` for what the parser
/// cannot express, with that command's usage, and exits with status 2.
fn usage_error(sub: &str, kind: ErrorKind, message: impl std::fmt::Display) -> ! {
    let mut cli = Cli::command();
    cli.build();
    match cli.find_subcommand_mut(sub) {
        Some(cmd) => cmd.error(kind, message).exit(),
        None => cli.error(kind, message).exit(),
    }
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

fn print_trace(driver: &str, bytes: &[u8]) {
    let legend = match reinc_ringbuf::shared::legend(bytes) {
        Ok(l) => Some(l),
        Err(reinc_ringbuf::shared::LegendError::Missing) => None,
        Err(e) => {
            eprintln!("{driver}: {e}");
            None
        }
    };
    let mut n = 0;
    for r in reinc_ringbuf::shared::records(bytes) {
        println!("{}", reinc_ringbuf::shared::describe(&r, legend.as_ref()));
        n += 1;
    }
    if n == 0 {
        println!("{driver}: trace ring is empty");
    }
}

fn call(dir: &Path, args: CallArgs) -> Result<(), Fail> {
    let CallArgs { name: driver, hex, op } = args;
    let block;
    let req = match (hex, &op) {
        (Some(_), Some(_)) => {
            usage_error("call", ErrorKind::ArgumentConflict, "call takes --hex or a storage operation, not both")
        }
        (None, None) => {
            usage_error("call", ErrorKind::MissingRequiredArgument, "call needs --hex HEX or a storage operation")
        }
        (Some(HexBody(body)), None) => Err(body),
        (None, Some(op)) => Ok(match *op {
            StorageOp::Nop => StorageRequest::Nop,
            StorageOp::Geometry => StorageRequest::Geometry,
            StorageOp::Read { lba, blocks } => StorageRequest::Read { lba, blocks },
            StorageOp::Write { lba, byte } => {
                block = [byte; BLOCK_SIZE];
                StorageRequest::Write { lba, data: &block }
            }
            StorageOp::Append { byte } => {
                block = [byte; BLOCK_SIZE];
                StorageRequest::Append { data: &block }
            }
        }),
    };
    let body = match &req {
        Ok(r) => postcard::to_allocvec(r).map_err(|e| Fail(format!("{driver}: cannot encode {r:?}: {e}")))?,
        Err(raw) => raw.clone(),
    };
    let mut client = Client::connect(&reinc_client::client_socket(dir))?;
    let answer = client.call(&driver, &body);
    // One call per session: the supervisor may forget it at once.
    client.close();
    let reply = answer?.map_err(|e| Fail(format!("{driver}: {e}")))?;
    if req.is_err() {
        println!("{}", to_hex(&reply));
        return Ok(());
    }
    match postcard::from_bytes::<StorageReply<'_>>(&reply) {
        Ok(StorageReply::Data(d)) => println!(
            "Data: {} bytes, crc32 {:#010x}, first bytes {}",
            d.len(),
            crc32fast::hash(d),
            to_hex(&d[..d.len().min(16)])
        ),
        Ok(r) => println!("{r:?}"),
        Err(_) => println!("reply (not a storage reply): {}", to_hex(&reply)),
    }
    Ok(())
}

fn blk(dir: &Path, args: BlkArgs) -> Result<(), Fail> {
    let direction = match args.direction {
        Way::Read => Direction::Read,
        Way::Write => Direction::Write,
    };
    let opts = BlkOptions {
        direction,
        bs: args.bs,
        count: args.count,
        offset: args.offset,
        file: args.file,
        pad: args.pad,
        driver: args.driver,
        window: args.window,
    };
    match blk::run(&reinc_client::client_socket(dir), &opts) {
        Ok(report) => {
            println!("{report}");
            Ok(())
        }
        Err(e) if e.is_usage() => usage_error("blk", ErrorKind::InvalidValue, e),
        Err(e) => Err(Fail(e.to_string())),
    }
}

/// Writes drvctl's man pages (one per command) into `out/man` and its bash,
/// zsh and fish completions into `out/completions`; returns the files.
fn write_docs(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let (man, completions) = (out.join("man"), out.join("completions"));
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    clap_mangen::generate_to(Cli::command(), &man)?;
    let mut written: Vec<PathBuf> = std::fs::read_dir(&man)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
        written.push(clap_complete::generate_to(shell, &mut Cli::command(), "drvctl", &completions)?);
    }
    written.sort();
    Ok(written)
}

/// `123`, `4k`, `32K`, `1M`, `2G` (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a number (suffixes k, M, G: powers of 1024)");
    let (digits, mult) = match s.char_indices().last().ok_or_else(bad)? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    digits.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)).ok_or_else(bad)
}

fn parse_u16(s: &str) -> Result<u16, String> {
    let n = parse_size(s)?;
    u16::try_from(n).map_err(|_| format!("{n} is larger than {}", u16::MAX))
}

fn parse_u8(s: &str) -> Result<u8, String> {
    let n = parse_size(s)?;
    u8::try_from(n).map_err(|_| format!("{n} is larger than 255"))
}

fn parse_window(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    usize::try_from(n).map_err(|_| format!("{n} does not fit this machine's usize"))
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("{s:?} is not a positive number of seconds, e.g. 2.5")),
    }
}

fn parse_plan(s: &str) -> Result<FaultPlan, String> {
    s.parse().map_err(|e| format!("bad fault plan: {e}"))
}

fn parse_hex(s: &str) -> Result<HexBody, String> {
    from_hex(s).map(HexBody).ok_or_else(|| format!("bad hex {s:?}: an even number of hex digits"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        match parse_from(std::iter::once("drvctl").chain(args.iter().copied()))? {
            Invocation::Run(cli) => Ok(cli),
            Invocation::GenerateDocs(d) => panic!("{args:?} parsed as generate-docs {}", d.display()),
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        parser().debug_assert();
    }

    #[test]
    fn the_hidden_generator_is_parsed_but_not_listed() {
        let inv = parse_from(["drvctl", "generate-docs", "/out"]).unwrap();
        assert!(matches!(inv, Invocation::GenerateDocs(d) if d == Path::new("/out")));
        assert!(!parser().render_help().to_string().contains(GENERATE_DOCS));
    }

    #[test]
    fn global_options_are_accepted_anywhere_on_the_line() {
        for args in [
            &["--runtime-dir", "/r", "--timeout", "2.5", "status", "--json"][..],
            &["status", "--json", "--runtime-dir", "/r", "--timeout", "2.5"],
            &["--timeout", "2.5", "status", "--runtime-dir", "/r", "--json"],
        ] {
            let cli = parse(args).unwrap();
            assert_eq!(cli.runtime_dir.as_deref(), Some(Path::new("/r")), "{args:?}");
            assert_eq!(cli.timeout, Some(Duration::from_millis(2500)), "{args:?}");
            assert!(matches!(cli.command, Command::Status { json: true }), "{args:?}");
        }
        let cli = parse(&["blk", "write", "--bs", "64K", "--runtime-dir", "/r", "--count", "8"]).unwrap();
        assert_eq!(cli.runtime_dir.as_deref(), Some(Path::new("/r")));
        let Command::Blk(b) = cli.command else { panic!("not blk") };
        assert_eq!((b.bs, b.count, b.offset, b.window), (64 << 10, 8, 0, blk::DEFAULT_WINDOW));
        assert_eq!(b.driver, blk::DEFAULT_DRIVER);
    }

    #[test]
    fn blk_help_states_the_pool_budget_the_library_applies() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let help = cmd.find_subcommand_mut("blk").expect("blk").render_long_help().to_string();
        let budget = format!("at most {} MiB of records", blk::POOL_BYTES >> 20);
        assert!(help.contains(&budget), "{help}");
    }

    #[test]
    fn call_takes_hex_or_a_storage_operation() {
        let Command::Call(c) = parse(&["call", "storage_driver", "--hex", "00ff"]).unwrap().command else {
            panic!("not call")
        };
        assert_eq!(c.hex.map(|h| h.0), Some(vec![0, 0xff]));
        assert!(c.op.is_none());
        let Command::Call(c) = parse(&["call", "storage_driver", "read", "3", "1k"]).unwrap().command else {
            panic!("not call")
        };
        assert!(matches!(c.op, Some(StorageOp::Read { lba: 3, blocks: 1024 })));
        assert_eq!(parse(&["call", "d", "write", "3", "256"]).unwrap_err().kind(), ErrorKind::ValueValidation);
        assert_eq!(parse(&["call", "d", "--hex", "abc"]).unwrap_err().kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn bad_values_are_usage_errors_that_say_what_is_wrong() {
        let e = parse(&["inject", "storage_driver", "sideways:1:segv"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("bad fault plan"), "{e}");
        let e = parse(&["--timeout", "0", "status"]).unwrap_err();
        assert!(e.to_string().contains("not a positive number of seconds"), "{e}");
        let e = parse(&["frobnicate"]).unwrap_err();
        assert_eq!((e.kind(), e.exit_code()), (ErrorKind::InvalidSubcommand, 2));
        assert_eq!(parse(&["restart"]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
        assert_eq!(parse(&["blk", "write", "--count", "1"]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            parse(&["blk", "sideways", "--bs", "1", "--count", "1"]).unwrap_err().kind(),
            ErrorKind::InvalidValue
        );
    }

    #[test]
    fn sizes_take_binary_suffixes_and_refuse_overflow() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        for bad in ["", "k", "1.5k", "-1", "99999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    /// Every visible command and every long option appears in the man pages
    /// and in each shell's completions.
    #[test]
    fn generated_docs_cover_every_command_and_option() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_docs(dir.path()).unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let completions: Vec<String> = ["drvctl.bash", "_drvctl", "drvctl.fish"]
            .iter()
            .map(|f| dir.path().join("completions").join(f))
            .inspect(|p| assert!(written.contains(p), "{} not reported", p.display()))
            .map(read)
            .collect();
        let mut cmd = Cli::command();
        cmd.build();
        let top = read(dir.path().join("man/drvctl.1"));
        for long in ["runtime-dir", "timeout"] {
            assert!(top.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))), "--{long} missing from drvctl.1");
        }
        let mut checked = 0;
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            let name = sub.get_name();
            assert!(top.contains(&name.replace('-', "\\-")), "{name} missing from drvctl.1");
            let page = read(dir.path().join(format!("man/drvctl-{name}.1")));
            for shell in &completions {
                assert!(shell.contains(name), "{name} missing from a completion script");
            }
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                let Some(long) = arg.get_long() else { continue };
                let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(page.contains(&roff), "--{long} missing from drvctl-{name}.1");
                for shell in &completions {
                    assert!(shell.contains(long), "--{long} of {name} missing from a completion script");
                }
                checked += 1;
            }
        }
        assert!(checked >= 9, "only {checked} options checked");
        // The generator itself is not documented.
        assert!(!dir.path().join("man/drvctl-generate-docs.1").exists());
        assert!(completions.iter().all(|c| !c.contains("generate-docs")));
    }
}
