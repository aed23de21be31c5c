//! `reinc-nbd`: serve a supervised storage driver over NBD (see the crate doc).
#![forbid(unsafe_code)]

use reinc_nbd::server::{Config, DEFAULT_MAX_REQUEST, Listen, Server, SocketFile, discover_export, unix_path};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: reinc-nbd [--runtime-dir DIR | --supervisor-socket PATH] [--driver NAME] \
(--socket PATH | --tcp PORT) [--export-name NAME] [--read-only] [--max-request BYTES] [--window N] \
[--max-connections N] [--wait-supervisor SECS] [--simple-replies]";

#[derive(Debug)]
struct Args {
    config: Config,
    listen: Listen,
    wait: Duration,
}

fn number<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    let v = v.ok_or(format!("{flag} needs a value; {USAGE}"))?;
    v.parse().map_err(|e| format!("{flag} {v:?}: {e}; {USAGE}"))
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut it = args.into_iter();
    let (mut runtime, mut socket, mut driver, mut listen, mut name) = (None, None, None, None, None);
    let (mut read_only, mut max_request, mut window, mut max_conn, mut wait) = (false, None, None, None, 10u64);
    let mut simple = false;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runtime-dir" => {
                runtime = Some(PathBuf::from(it.next().ok_or(format!("--runtime-dir needs a path; {USAGE}"))?))
            }
            "--supervisor-socket" => {
                socket = Some(PathBuf::from(it.next().ok_or(format!("--supervisor-socket needs a path; {USAGE}"))?));
            }
            "--driver" => driver = Some(it.next().ok_or(format!("--driver needs a name; {USAGE}"))?),
            "--socket" => {
                listen = Some(Listen::Unix(PathBuf::from(it.next().ok_or(format!("--socket needs a path; {USAGE}"))?)));
            }
            "--tcp" => listen = Some(Listen::Tcp(number("--tcp", it.next())?)),
            "--export-name" => name = Some(it.next().ok_or(format!("--export-name needs a name; {USAGE}"))?),
            "--read-only" => read_only = true,
            "--simple-replies" => simple = true,
            "--max-request" => max_request = Some(number::<u32>("--max-request", it.next())?),
            "--window" => window = Some(number::<usize>("--window", it.next())?),
            "--max-connections" => max_conn = Some(number::<usize>("--max-connections", it.next())?),
            "--wait-supervisor" => wait = number("--wait-supervisor", it.next())?,
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    let supervisor = match (socket, runtime) {
        (Some(s), _) => s,
        (None, Some(r)) => reinc_client::client_socket(&r),
        (None, None) => reinc_client::client_socket(&reinc_client::default_runtime_dir()),
    };
    let listen = listen.ok_or(format!("--socket PATH or --tcp PORT is required; {USAGE}"))?;
    let driver = driver.unwrap_or_else(|| "storage_driver".into());
    let mut config = Config::new(supervisor, &driver);
    if let Some(n) = name {
        config.export_name = n;
    }
    config.read_only = read_only;
    config.structured_replies = !simple;
    let max_request = max_request.unwrap_or(DEFAULT_MAX_REQUEST);
    let block = storage_core::BLOCK_SIZE as u32;
    if max_request < block || !max_request.is_multiple_of(block) || max_request > 32 << 20 {
        return Err(format!("--max-request {max_request}: a multiple of {block} up to 32 MiB; {USAGE}"));
    }
    config.max_request = max_request;
    if let Some(w) = window {
        if w == 0 || w > 1024 {
            return Err(format!("--window {w}: 1..=1024; {USAGE}"));
        }
        config.window = w;
    }
    if let Some(m) = max_conn {
        if m == 0 {
            return Err(format!("--max-connections must be at least 1; {USAGE}"));
        }
        config.max_connections = m;
    }
    Ok(Args { config, listen, wait: Duration::from_secs(wait) })
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .without_time()
        .with_target(false)
        .with_level(false)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("reinc-nbd: {e}");
            return ExitCode::from(2);
        }
    };
    // The supervisor may still be starting (both started by one script).
    let deadline = Instant::now() + args.wait;
    let export = loop {
        match discover_export(&args.config) {
            Ok(e) => break e,
            Err(e) if Instant::now() >= deadline => {
                eprintln!("reinc-nbd: {e}");
                return ExitCode::FAILURE;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let server = match Server::bind(args.config.clone(), export, &args.listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("reinc-nbd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _socket = unix_path(&args.listen).map(|p| SocketFile(p.to_path_buf()));
    let e = server.export();
    tracing::info!(
        "[nbd] serving {} ({} bytes{}) of driver {} at {}",
        e.name,
        e.size,
        if e.read_only { ", read-only" } else { "" },
        args.config.driver,
        server.uri()
    );
    // The URI on stdout, for scripts (and a TCP port chosen by the kernel).
    println!("{}", server.uri());
    match server.serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("reinc-nbd: accepting connections: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(s.split_whitespace().map(String::from))
    }

    #[test]
    fn arguments_parse_and_errors_name_the_flag() {
        let a = args("--runtime-dir /r --socket /s.sock --read-only --window 8").unwrap();
        assert_eq!(a.config.supervisor, PathBuf::from("/r/client.sock"));
        assert_eq!(a.listen, Listen::Unix("/s.sock".into()));
        assert!(a.config.read_only);
        assert!(a.config.structured_replies, "offered unless --simple-replies");
        assert_eq!(a.config.window, 8);
        let a = args("--socket /s.sock --simple-replies").unwrap();
        assert!(!a.config.structured_replies);
        assert_eq!(a.config.export_name, "storage_driver");
        assert_eq!(args("--tcp 0 --driver disk2").unwrap().config.export_name, "disk2");
        assert!(args("--runtime-dir /r").unwrap_err().starts_with("--socket PATH or --tcp PORT is required"));
        assert!(args("--tcp 0 --max-request 1000").unwrap_err().starts_with("--max-request 1000"));
        assert!(args("--tcp 0 --window 0").unwrap_err().starts_with("--window 0"));
        assert!(args("--tcp lots").unwrap_err().starts_with("--tcp \"lots\""));
        assert!(args("--tcp 0 --fast").unwrap_err().starts_with("unknown argument \"--fast\""));
    }
}
