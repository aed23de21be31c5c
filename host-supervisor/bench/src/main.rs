//! `reinc-bench`: the benchmark harness and the demo's client workload.
//!
//! ```text
//! reinc-bench run [--quick] [--only WORD] --out DIR [--bins DIR]
//! reinc-bench demo-load --runtime-dir DIR --disk FILE --exec-log FILE --size BYTES [--kill-at PERCENT]
//! ```
//! `run` measures every row of the benchmark issue against its floor, prints
//! the table and writes `DIR/report.md` and `DIR/report.json`. `--quick` is
//! the smoke test: small budgets, and it fails only if a row is missing or a
//! figure is not a positive number — never on a performance figure. `--bins`
//! is where `supervisor`, `drvctl`, `storage_driver` and
//! `reinc-bench-driver` are (default: next to this executable). `--only WORD`
//! runs only the sections whose name contains WORD (`recovery`, `NBD`, …),
//! for working on one row; the report then has only their rows.
#![forbid(unsafe_code)]

use reinc_bench::rig::Bins;
use reinc_bench::rows::{Budget, run_all};
use reinc_bench::{BenchError, demo, floors};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage:
  reinc-bench run [--quick] [--only WORD] --out DIR [--bins DIR]
  reinc-bench demo-load --runtime-dir DIR --disk FILE --exec-log FILE --size BYTES [--kill-at PERCENT]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some(floors::ROLE_ECHO) => floors::run_echo(),
        Some(floors::ROLE_RELAY) => floors::run_relay(),
        Some(floors::ROLE_IDEAL) => floors::run_ideal_supervisor(&args[1..]),
        Some("run") => run(&args[1..]),
        Some("demo-load") => demo::DemoArgs::parse(&args[1..]).and_then(|a| demo::run(&a)).map(|r| println!("{r}")),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(BenchError::Usage(USAGE.into())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(BenchError::Usage(m)) => {
            eprintln!("reinc-bench: {m}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("reinc-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), BenchError> {
    let (mut quick, mut out, mut bins, mut only) = (false, None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => out = it.next().map(PathBuf::from),
            "--bins" => bins = it.next().map(PathBuf::from),
            "--only" => {
                only = Some(
                    it.next()
                        .cloned()
                        .ok_or_else(|| BenchError::Usage(format!("run: --only needs a word\n{USAGE}")))?,
                )
            }
            other => return Err(BenchError::Usage(format!("run: unknown argument {other:?}\n{USAGE}"))),
        }
    }
    let out = out.ok_or_else(|| BenchError::Usage(format!("run: --out DIR is required\n{USAGE}")))?;
    if let Some(w) = &only {
        reinc_bench::rows::check_only(w)?;
    }
    let bins_dir = match bins {
        Some(b) => b,
        None => std::env::current_exe()
            .map_err(|e| BenchError::io("current executable", e))?
            .parent()
            .map(PathBuf::from)
            .ok_or_else(|| BenchError::Setup("the executable has no directory".into()))?,
    };
    let bins = Bins::in_dir(&bins_dir)?;
    let partial = only.is_some();
    let budget = Budget { only, ..if quick { Budget::quick() } else { Budget::full() } };
    std::fs::create_dir_all(&out).map_err(|e| BenchError::io(out.display(), e))?;
    let report = run_all(&bins, &out.join("work"), &budget)?;
    print!("{}", report.table());
    let md = out.join("report.md");
    std::fs::write(&md, report.markdown()).map_err(|e| BenchError::io(md.display(), e))?;
    let json = out.join("report.json");
    let text = serde_json::to_string_pretty(&report).map_err(|e| BenchError::Setup(format!("report JSON: {e}")))?;
    std::fs::write(&json, text).map_err(|e| BenchError::io(json.display(), e))?;
    let gaps = report.gaps().count();
    println!(
        "reinc-bench: {} rows, {gaps} target(s) not met; wrote {} and {} ({:.0} s)",
        report.rows.len(),
        md.display(),
        json.display(),
        report.duration_secs
    );
    let problems = report.sanity_problems();
    // `--only` leaves the other sections out on purpose.
    if problems.is_empty() || partial {
        Ok(())
    } else {
        Err(BenchError::Setup(format!("the report is incomplete:\n  {}", problems.join("\n  "))))
    }
}
