//! `reinc-campaign run [--faults N] [--seed S] [--lanes L] [--out DIR] --bins DIR`: runs
//! a campaign (see the library doc) and writes its report into `--out`.
//! Exit status 0 only if every fault was applied and every invariant held.
#![forbid(unsafe_code)]

use reinc_campaign::CampaignError;
use reinc_campaign::run::{Bins, Options};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str =
    "usage: reinc-campaign run [--faults N] [--seed S] [--lanes L] [--no-supervisor-kills] [--out DIR] --bins DIR";

fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, CampaignError> {
    let v = v.ok_or_else(|| CampaignError::Usage(format!("{flag} needs a value; {USAGE}")))?;
    v.parse().map_err(|_| CampaignError::Usage(format!("{flag} {v:?} is not valid; {USAGE}")))
}

fn main_inner() -> Result<bool, CampaignError> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("run") {
        return Err(CampaignError::Usage(USAGE.into()));
    }
    let (mut faults, mut seed, mut out, mut bins) = (2000usize, None, PathBuf::from("target/campaign"), None);
    let mut lanes = reinc_campaign::run::DEFAULT_LANES;
    let mut supervisor_kills = true;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--faults" => faults = value("--faults", args.next())?,
            "--seed" => seed = Some(value("--seed", args.next())?),
            "--out" => out = value("--out", args.next())?,
            "--lanes" => lanes = value("--lanes", args.next())?,
            "--no-supervisor-kills" => supervisor_kills = false,
            "--bins" => bins = Some(value::<PathBuf>("--bins", args.next())?),
            o => return Err(CampaignError::Usage(format!("unknown flag {o:?}; {USAGE}"))),
        }
    }
    let bins = Bins::in_dir(&bins.ok_or_else(|| CampaignError::Usage(format!("--bins is required; {USAGE}")))?)?;
    // No seed given: a fresh one, printed, so the run can be repeated.
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    if lanes == 0 {
        return Err(CampaignError::Usage(format!("--lanes must be at least 1; {USAGE}")));
    }
    let kills = if supervisor_kills { "" } else { " --no-supervisor-kills" };
    let command = format!("cargo xtask campaign --faults {faults} --seed {seed} --lanes {lanes}{kills}");
    eprintln!("campaign: {faults} faults, seed {seed} (repeat with `{command}`)");
    let work = std::env::temp_dir().join(format!("reinc-campaign-{}", std::process::id()));
    let machine = reinc_bench::machine::Machine::describe(&std::env::temp_dir());
    let result =
        reinc_campaign::run::run(&bins, &Options { faults, seed, work: work.clone(), lanes, supervisor_kills })?;
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
    match main_inner() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("reinc-campaign: {e}");
            ExitCode::from(2)
        }
    }
}
