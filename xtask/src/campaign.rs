//! `cargo xtask campaign [--faults N] [--seed S] [--lanes L] [--out DIR]`: the
//! fault-injection campaign under live load, and its reliability report.
//!
//! Builds the supervisor, `drvctl`, `storage_driver`, `net_driver`, the
//! bench driver, `reinc-nbd` and the campaign (`host-supervisor/campaign`, which holds
//! the schedule, the models, the misbehaving driver and the report) in
//! release, then runs `reinc-campaign run`. The report goes to
//! `target/campaign/report.{md,json}` with SVG plots next to it. The exit
//! status is non-zero if any invariant failed; the failure names the seed and
//! fault index that reproduce it.
//!
//! [`smoke`] is the stage `cargo xtask test` runs: 2 000 faults with a fixed
//! seed, asserting the invariants and no timing.

use crate::util::{self, Result};
use std::path::PathBuf;
use std::process::Command;

/// The packages whose binaries the campaign runs.
const PACKAGES: [&str; 7] =
    ["reinc-supervisor", "reinc-client", "storage_driver", "net_driver", "reinc-bench", "reinc-campaign", "reinc-nbd"];

/// Faults of the CI smoke campaign.
pub const SMOKE_FAULTS: usize = 2000;
/// Its seed (fixed, so CI runs the same schedule every time).
pub const SMOKE_SEED: u64 = 20_090_629;

/// Flags: `--faults N`, `--seed S`, `--lanes L`, `--out DIR`.
pub fn run(args: &[String]) -> Result {
    let mut pass = Vec::new();
    let mut out = crate::bench::target_dir().join("campaign");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--faults" | "--seed" | "--lanes" => {
                let v = it.next().ok_or_else(|| util::Error::Usage(format!("{a} needs a value")))?;
                pass.extend([a.clone(), v.clone()]);
            }
            "--out" => {
                out = PathBuf::from(it.next().ok_or_else(|| util::Error::Usage("--out needs a directory".into()))?);
            }
            other => {
                return Err(util::Error::Usage(format!(
                    "`cargo xtask campaign` takes --faults N, --seed S, --lanes L, --out DIR; got `{other}`"
                )));
            }
        }
    }
    let mut build = util::cargo();
    build.args(["build", "--release", "--bins"]);
    for p in PACKAGES {
        build.args(["-p", p]);
    }
    util::run(&mut build)?;
    let bins = crate::bench::target_dir().join("release");
    let mut campaign = Command::new(bins.join("reinc-campaign"));
    campaign.arg("run").arg("--bins").arg(&bins).arg("--out").arg(&out).args(&pass);
    util::run(&mut campaign)
}

/// The `cargo xtask test` stage: [`SMOKE_FAULTS`] faults, seed [`SMOKE_SEED`].
pub fn smoke() -> Result {
    let out = crate::bench::target_dir().join("campaign-smoke");
    run(&[
        "--faults".into(),
        SMOKE_FAULTS.to_string(),
        "--seed".into(),
        SMOKE_SEED.to_string(),
        "--out".into(),
        out.to_string_lossy().into_owned(),
    ])
}
