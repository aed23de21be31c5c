//! `reinc-campaign run [--faults N] [--seed S] [--lanes L] [--no-supervisor-kills] [--out DIR]
//! --bins DIR`: runs a campaign (see the library doc) and writes its report
//! into `--out`. Exit status 0 only if every fault was applied and every
//! invariant held. The command line is clap's, so `--help` is generated.
//!
//! # Designs rejected
//! - The hand-written parser this replaced: its usage string was kept in
//!   step with the flags by hand, and `--help` did not exist.
#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand};
use reinc_campaign::CampaignError;
use reinc_campaign::run::{Bins, Options, Standby};
use std::path::PathBuf;
use std::process::ExitCode;

/// Fault-injection campaign under live load, with a reliability report (normally run through
/// `cargo xtask campaign`)
#[derive(Debug, Parser)]
#[command(name = "reinc-campaign", version, max_term_width = 100)]
#[command(after_help = "Exit status: 0 only if every fault was applied and every invariant held, 1 otherwise, \
                        2 for a wrong command line or a setup failure.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a campaign and write its report
    Run(RunArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Faults in the schedule
    #[arg(long, default_value_t = 2000, value_name = "N")]
    faults: usize,
    /// The schedule's seed [default: a fresh one, printed so the run can be repeated]
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Independent supervisors side by side (fault i runs in lane i mod L)
    #[arg(long, default_value_t = reinc_campaign::run::DEFAULT_LANES, value_name = "L",
          value_parser = at_least_one)]
    lanes: usize,
    /// Leave the supervisor-kill fault class out of the schedule
    #[arg(long)]
    no_supervisor_kills: bool,
    /// Which lanes keep a hot standby of their journaled load drivers: none, odd or all
    #[arg(long, default_value = "odd", value_name = "WHICH")]
    standby: Standby,
    /// Where report.md, report.json and the plots go
    #[arg(long, default_value = "target/campaign", value_name = "DIR")]
    out: PathBuf,
    /// The directory holding the supervisor, the drivers and drvctl
    #[arg(long, value_name = "DIR")]
    bins: PathBuf,
}

/// A lane count: a positive integer.
fn at_least_one(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn main_inner(args: RunArgs) -> Result<bool, CampaignError> {
    let RunArgs { faults, seed, lanes, no_supervisor_kills, standby, out, bins } = args;
    let supervisor_kills = !no_supervisor_kills;
    let bins = Bins::in_dir(&bins)?;
    // No seed given: a fresh one, printed, so the run can be repeated.
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let work = std::env::temp_dir().join(format!("reinc-campaign-{}", std::process::id()));
    let options = Options { faults, seed, work: work.clone(), lanes, supervisor_kills, standby };
    let command = options.repeat(faults);
    eprintln!("campaign: {faults} faults, seed {seed} (repeat with `{command}`)");
    let machine = reinc_bench::machine::Machine::describe(&std::env::temp_dir());
    let result = reinc_campaign::run::run(&bins, &options)?;
    let md = reinc_campaign::report::write(&out, &command, &machine, &result)?;
    let ok = result.violation.is_none() && result.records.len() == faults;
    if ok {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!("campaign: the run's directory (config, supervisor log, device files) is kept in {}", work.display());
    }
    for l in md
        .lines()
        .filter(|l| l.starts_with("**Result") || l.starts_with("| fault phase") || l.starts_with("| 1 000 000"))
    {
        println!("{l}");
    }
    if let Some(v) = &result.violation {
        println!("FAILED at fault index {}: {}", v.fault_index, v.what);
    }
    println!("report: {}", out.join("report.md").display());
    Ok(ok)
}

fn main() -> ExitCode {
    // Wrong arguments: clap prints the error and the usage and exits with 2.
    let Command::Run(args) = Cli::parse().command;
    match main_inner(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("reinc-campaign: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn run(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(["reinc-campaign", "run"].iter().chain(args))?;
        let Command::Run(a) = cli.command;
        Ok(a)
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_flags_parse_and_bad_values_are_usage_errors() {
        let a = run(&["--bins", "/b"]).unwrap();
        assert_eq!((a.faults, a.seed, a.lanes, a.no_supervisor_kills, a.standby), (2000, None, 4, false, Standby::Odd));
        assert_eq!(a.out, PathBuf::from("target/campaign"));
        let a =
            run(&["--bins", "/b", "--faults", "9", "--seed", "7", "--lanes", "2", "--no-supervisor-kills"]).unwrap();
        assert_eq!((a.faults, a.seed, a.lanes, a.no_supervisor_kills), (9, Some(7), 2, true));
        assert_eq!(run(&["--bins", "/b", "--standby", "all"]).unwrap().standby, Standby::All);
        for bad in [
            &["--bins", "/b", "--lanes", "0"][..],
            &["--bins", "/b", "--faults", "x"],
            &["--faults", "3"],
            &["--bins", "/b", "--standby", "some"],
        ] {
            assert_eq!(run(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
    }
}
