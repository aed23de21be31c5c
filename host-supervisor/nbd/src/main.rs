//! `reinc-nbd`: serve a supervised storage driver over NBD (see the crate doc).
#![forbid(unsafe_code)]

use clap::{ArgGroup, Parser};
use reinc_nbd::server::{Config, DEFAULT_MAX_REQUEST, Listen, Server, SocketFile, discover_export, unix_path};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Serve a supervised storage driver over NBD (see the crate doc).
#[derive(Debug, Parser)]
#[command(name = "reinc-nbd", version, about, long_about = None)]
#[command(group(ArgGroup::new("listen").required(true).args(["socket", "tcp"])))]
struct Cli {
    /// The supervisor's runtime directory (its client.sock) [default: the supervisor's default]
    #[arg(long, value_name = "DIR", conflicts_with = "supervisor_socket")]
    runtime_dir: Option<PathBuf>,
    /// The supervisor's client socket itself
    #[arg(long, value_name = "PATH")]
    supervisor_socket: Option<PathBuf>,
    /// The storage driver's configured name
    #[arg(long, value_name = "NAME", default_value = "storage_driver")]
    driver: String,
    /// Listen on this Unix socket
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Listen on this TCP port of 127.0.0.1 (0: the kernel picks one; the URI line says which)
    #[arg(long, value_name = "PORT")]
    tcp: Option<u16>,
    /// The export's name [default: the driver's name]; the empty name selects it too
    #[arg(long, value_name = "NAME")]
    export_name: Option<String>,
    /// Refuse writes, trims and zeroes with EPERM
    #[arg(long)]
    read_only: bool,
    /// Largest payload of one NBD request, advertised as the maximum block size: a multiple of 512 up to 32 MiB
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_REQUEST, value_parser = parse_max_request)]
    max_request: u32,
    /// Storage requests in flight per connection (1..=1024) [default: 32]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    window: Option<u16>,
    /// Concurrent NBD connections; more are closed at once [default: 16]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,
    /// Seconds to wait for the supervisor and the driver at start-up
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    wait_supervisor: u64,
    /// Refuse structured replies (every reply simple, as the kernel's client gets anyway)
    #[arg(long)]
    simple_replies: bool,
}

fn parse_max_request(s: &str) -> Result<u32, String> {
    let block = storage_core::BLOCK_SIZE as u32;
    match s.parse::<u32>() {
        Ok(n) if n >= block && n.is_multiple_of(block) && n <= 32 << 20 => Ok(n),
        _ => Err(format!("{s:?} is not a multiple of {block} up to 32 MiB")),
    }
}

#[derive(Debug)]
struct Args {
    config: Config,
    listen: Listen,
    wait: Duration,
}

impl Cli {
    fn into_args(self) -> Args {
        let supervisor = match (self.supervisor_socket, self.runtime_dir) {
            (Some(s), _) => s,
            (None, Some(r)) => reinc_client::client_socket(&r),
            (None, None) => reinc_client::client_socket(&reinc_client::default_runtime_dir()),
        };
        let listen = match (self.socket, self.tcp) {
            (Some(p), _) => Listen::Unix(p),
            // The group makes one of the two required.
            (None, port) => Listen::Tcp(port.unwrap_or(0)),
        };
        let mut config = Config::new(supervisor, &self.driver);
        if let Some(n) = self.export_name {
            config.export_name = n;
        }
        config.read_only = self.read_only;
        config.structured_replies = !self.simple_replies;
        config.max_request = self.max_request;
        if let Some(w) = self.window {
            config.window = usize::from(w);
        }
        if let Some(m) = self.max_connections {
            config.max_connections = m as usize;
        }
        Args { config, listen, wait: Duration::from_secs(self.wait_supervisor) }
    }
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
    // Usage errors exit 2 with clap's message; --help and --version exit 0.
    let args = Cli::parse().into_args();
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
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn args(s: &str) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("reinc-nbd").chain(s.split_whitespace())).map(Cli::into_args)
    }

    #[test]
    fn arguments_parse_and_errors_name_the_flag() {
        let a = args("--runtime-dir /r --socket /s.sock --read-only --window 8").unwrap();
        assert_eq!(a.config.supervisor, PathBuf::from("/r/client.sock"));
        assert_eq!(a.listen, Listen::Unix("/s.sock".into()));
        assert!(a.config.read_only);
        assert!(a.config.structured_replies, "offered unless --simple-replies");
        assert_eq!(a.config.window, 8);
        assert_eq!(a.wait, Duration::from_secs(10));
        let a = args("--socket /s.sock --simple-replies --wait-supervisor 3").unwrap();
        assert!(!a.config.structured_replies);
        assert_eq!(a.wait, Duration::from_secs(3));
        assert_eq!(a.config.export_name, "storage_driver");
        assert_eq!(args("--tcp 0 --driver disk2").unwrap().config.export_name, "disk2");
        let e = |s: &str| args(s).unwrap_err();
        assert_eq!(e("--runtime-dir /r").kind(), ErrorKind::MissingRequiredArgument);
        assert!(e("--tcp 0 --max-request 1000").to_string().contains("--max-request"), "names the flag");
        assert!(e("--tcp 0 --max-request 1000").to_string().contains("not a multiple of 512"));
        assert!(e("--tcp 0 --window 0").to_string().contains("--window"));
        assert!(e("--tcp 0 --window 2000").to_string().contains("--window"));
        assert!(e("--tcp 0 --max-connections 0").to_string().contains("--max-connections"));
        assert!(e("--tcp lots").to_string().contains("--tcp"));
        assert_eq!(e("--tcp 0 --fast").kind(), ErrorKind::UnknownArgument);
        assert_eq!(e("--tcp 0 --socket /s").kind(), ErrorKind::ArgumentConflict, "one listener");
        assert_eq!(e("--tcp 0 --runtime-dir /r --supervisor-socket /s").kind(), ErrorKind::ArgumentConflict);
        assert_eq!(e("--tcp 0 --fast").exit_code(), 2, "a usage error exits 2");
    }

    #[test]
    fn the_command_line_is_consistent_and_documents_every_option() {
        Cli::command().debug_assert();
        let help = Cli::command().render_long_help().to_string();
        for flag in ["--socket", "--tcp", "--simple-replies", "--max-request", "--window", "--read-only"] {
            assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
        }
    }
}
