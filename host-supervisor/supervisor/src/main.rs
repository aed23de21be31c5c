//! `supervisor`: the reincarnation server daemon.
//!
//! ```text
//! supervisor --config FILE [--runtime-dir DIR] [--check]
//! ```
//! `--check` validates the configuration (listing every problem) and exits.
//! User-facing lines are printed as `[SUP] …` on stderr; `RUST_LOG` adds
//! debug detail (`RUST_LOG=debug`).
#![forbid(unsafe_code)]

use reinc_supervisor::config::{self, default_runtime_dir};
use reinc_supervisor::daemon::Daemon;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: supervisor --config FILE [--runtime-dir DIR] [--check]";

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

    let mut config_path = None;
    let mut runtime_dir = None;
    let mut check = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => config_path = args.next().map(PathBuf::from),
            "--runtime-dir" => runtime_dir = args.next().map(PathBuf::from),
            "--check" => check = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("supervisor: unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(config_path) = config_path else {
        eprintln!("supervisor: --config is required\n{USAGE}");
        return ExitCode::from(2);
    };
    let cfg = match config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("supervisor: {e}");
            return ExitCode::from(2);
        }
    };
    if check {
        println!("{}: ok ({} drivers)", config_path.display(), cfg.drivers.len());
        return ExitCode::SUCCESS;
    }
    let runtime_dir = runtime_dir.or_else(|| cfg.supervisor.runtime_dir.clone()).unwrap_or_else(default_runtime_dir);
    let daemon = match Daemon::new(cfg, &runtime_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("supervisor: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!("[SUP] listening in {}", runtime_dir.display());
    match daemon.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("supervisor: {e}");
            ExitCode::from(1)
        }
    }
}
