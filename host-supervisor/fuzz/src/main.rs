//! `reinc-fuzz`: run the fuzz targets of [`reinc_fuzz`].
//!
//! ```text
//! reinc-fuzz [TARGET|all] [--seconds S] [--runs N] [--seed N] [--save]
//! ```
//! Each target starts from its committed corpus (`corpus/<target>/`) and runs
//! mutations until the time or run budget is spent. `--save` adds the inputs
//! that produced a new outcome to the corpus. A finding is written to
//! `fuzz-crash-<target>` in the working directory and the exit status is 1.
#![forbid(unsafe_code)]

use reinc_fuzz::{TARGETS, corpus_dir, fuzz, load_corpus};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// New inputs saved per target and run with `--save`.
const MAX_SAVED: usize = 32;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut which = "all".to_owned();
    let (mut seconds, mut runs, mut seed, mut save) = (5.0f64, u64::MAX, 0x5EED_u64, false);
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1);
        match args[i].as_str() {
            "--seconds" => seconds = v.and_then(|s| s.parse().ok()).unwrap_or(seconds),
            "--runs" => runs = v.and_then(|s| s.parse().ok()).unwrap_or(runs),
            "--seed" => seed = v.and_then(|s| s.parse().ok()).unwrap_or(seed),
            "--save" => {
                save = true;
                i += 1;
                continue;
            }
            t if !t.starts_with("--") => {
                which = t.to_owned();
                i += 1;
                continue;
            }
            other => {
                eprintln!("reinc-fuzz: unknown option {other}");
                return ExitCode::from(2);
            }
        }
        i += 2;
    }
    let targets: Vec<_> = TARGETS.iter().filter(|t| which == "all" || t.name == which).collect();
    if targets.is_empty() {
        eprintln!("reinc-fuzz: no target {which:?}; targets: {}", TARGETS.map(|t| t.name).join(", "));
        return ExitCode::from(2);
    }
    let mut failed = false;
    for t in targets {
        let dir = corpus_dir(t.name);
        let mut corpus = load_corpus(&dir);
        if corpus.is_empty() {
            corpus = reinc_fuzz::seeds(t.name);
        }
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let r = fuzz(t, corpus.clone(), seed, runs, deadline);
        println!(
            "{}: {} runs, {} outcomes, corpus {} (+{} new)",
            t.name,
            r.runs,
            r.outcomes.len(),
            corpus.len(),
            r.new_inputs.len()
        );
        if save {
            let _ = std::fs::create_dir_all(&dir);
            // The seeds, and the first new-outcome inputs found: a corpus
            // small enough to commit and to replay in `cargo test`.
            for input in corpus.iter().chain(r.new_inputs.iter().take(MAX_SAVED)) {
                let name = format!("{:016x}", fnv(input));
                let _ = std::fs::write(dir.join(name), input);
            }
        }
        if let Some((input, msg)) = r.crash {
            let path = format!("fuzz-crash-{}", t.name);
            let _ = std::fs::write(&path, &input);
            eprintln!("{}: FINDING: {msg}\n  input ({} bytes) written to {path}", t.name, input.len());
            failed = true;
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// FNV-1a, for corpus file names.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
