//! The experiments, one function per section of the issue, each returning
//! its rows (figure, floor, ratio, target), and [`run_all`], which runs the
//! sections in order ([`SECTIONS`]).
//!
//! One file per group of sections: `rows/rtt.rs` (1-2, round trip and
//! throughput), `rows/recovery.rs` (3, restart and recovery),
//! `rows/scale.rs` (4-5, checkpoints, scale, replay), `rows/storage.rs`
//! (6, `drvctl blk`); sections 7 and 8 are `crate::nbd` and
//! `crate::journal_rows`. What several of them use (the budget, the relay
//! figures of sections 1-2, pipelined calls, driver specs) stays here.

use crate::BenchError;
use crate::machine::{self, Machine};
use crate::report::Report;
use crate::rig::{Bins, DriverSpec};
use reinc_client::Client;
use std::path::Path;
use std::time::{Duration, Instant};
use storage_core::StorageRequest;

mod recovery;
mod rtt;
mod scale;
mod storage;

use recovery::{recovery, restart_vs_ideal};
use rtt::{round_trip_and_throughput, round_trip_pinned};
use scale::{checkpoint_cost, replay, scale};
use storage::storage;

/// How much of everything a run does.
#[derive(Debug, Clone)]
pub struct Budget {
    /// `quick` or `full`.
    pub mode: &'static str,
    /// Round trips per path.
    pub rtt_samples: usize,
    /// Time per throughput measurement.
    pub tput: Duration,
    /// Driver kills for the recovery figures.
    pub kills: usize,
    /// Bare spawns for the spawn floor.
    pub spawns: usize,
    /// Time per checkpoint-cost measurement.
    pub ckpt: Duration,
    /// Idle measurement window per scale step.
    pub idle: Duration,
    /// Load measurement window per scale step.
    pub load: Duration,
    /// Repetitions per replay length (median taken).
    pub replay_reps: usize,
    /// MiB moved through the storage path each way.
    pub storage_mib: u64,
    /// `--only WORD`: run only the sections whose name contains it.
    pub only: Option<String>,
}

impl Budget {
    /// The smoke-test budget (well under a minute).
    #[must_use]
    pub fn quick() -> Self {
        Self {
            mode: "quick",
            rtt_samples: 2_000,
            tput: Duration::from_millis(250),
            kills: 10,
            spawns: 10,
            ckpt: Duration::from_millis(250),
            idle: Duration::from_millis(1_200),
            load: Duration::from_millis(300),
            replay_reps: 3,
            storage_mib: 8,
            only: None,
        }
    }

    /// The full budget (a few minutes on two cores).
    #[must_use]
    pub fn full() -> Self {
        Self {
            mode: "full",
            rtt_samples: 50_000,
            tput: Duration::from_secs(3),
            kills: 200,
            spawns: 200,
            ckpt: Duration::from_secs(2),
            idle: Duration::from_secs(3),
            load: Duration::from_secs(2),
            replay_reps: 9,
            storage_mib: 128,
            only: None,
        }
    }
}

/// Figures one section measures for another.
#[derive(Debug, Default)]
struct Shared {
    /// Raw relay messages per second at 8 in flight.
    relay_tput8: f64,
    /// Relay helper CPU per message at 64 in flight, µs.
    relay_cpu_per_msg_us: f64,
}

/// The sections, in the order they run; `--only WORD` picks those whose
/// name contains WORD.
pub const SECTIONS: [&str; 11] = [
    "1-2. round trip and throughput",
    "1. round trip, every process on one CPU",
    "3. restart against the ideal supervisor",
    "3. recovery time",
    "3. recovery time with a hot standby",
    "4. checkpoint cost",
    "5. scale",
    "5. replay against queue length",
    "6. storage path",
    "7. NBD front end",
    "8. journal and supervisor recovery",
];

/// Checks an `--only` word before anything is measured.
///
/// # Errors
/// [`BenchError::Usage`] when it names no section, listing them.
pub fn check_only(word: &str) -> Result<(), BenchError> {
    if SECTIONS.iter().any(|s| s.contains(word)) {
        Ok(())
    } else {
        Err(BenchError::Usage(format!("--only {word:?} names no section; the sections are: {}", SECTIONS.join(", "))))
    }
}

/// Runs every section; `work` is a scratch directory (removed afterwards).
///
/// # Errors
/// The first experiment that fails, naming what failed.
pub fn run_all(bins: &Bins, work: &Path, budget: &Budget) -> Result<Report, BenchError> {
    let started = Instant::now();
    std::fs::create_dir_all(work).map_err(|e| BenchError::io(work.display(), e))?;
    let machine = Machine::describe(work);
    let mut shared = Shared::default();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    // A section runs when no `--only` word is given or its name contains
    // the word; sections 1-2 also run for 5, whose rows are ratios to them.
    let wanted = |name: &str| budget.only.as_deref().is_none_or(|w| name.contains(w));
    let [rtt, pinned, restart, recovery_s, standby_s, ckpt, scale_s, replay_s, storage_s, nbd_s, journal_s] = SECTIONS;
    let step = |name: &str| {
        let run = wanted(name) || (name == rtt && (wanted(scale_s) || wanted(replay_s)));
        if run {
            eprintln!("reinc-bench: {name} ({:.0} s)", started.elapsed().as_secs_f64());
        }
        run
    };
    let mut fit = None;
    if step(rtt) {
        rows.extend(round_trip_and_throughput(bins, &work.join("rtt"), budget, &mut shared)?);
    }
    if step(pinned) {
        rows.extend(round_trip_pinned(bins, &work.join("rtt-pinned"), budget)?);
    }
    if step(restart) {
        rows.extend(restart_vs_ideal(bins, &work.join("restart"), budget)?);
    }
    if step(recovery_s) {
        rows.extend(recovery(bins, &work.join("recovery"), budget, false)?);
    }
    if step(standby_s) {
        rows.extend(recovery(bins, &work.join("recovery-standby"), budget, true)?);
    }
    if step(ckpt) {
        rows.extend(checkpoint_cost(bins, &work.join("checkpoint"), budget)?);
    }
    if step(scale_s) {
        rows.extend(scale(bins, &work.join("scale"), budget, &shared)?);
    }
    if step(replay_s) {
        let (replay_rows, f) = replay(bins, &work.join("replay"), budget, &shared)?;
        rows.extend(replay_rows);
        fit = f;
    }
    if step(storage_s) {
        rows.extend(storage(bins, &work.join("storage"), budget)?);
    }
    if step(nbd_s) {
        rows.extend(crate::nbd::rows(bins, &work.join("nbd"), budget)?);
    }
    if step(journal_s) {
        rows.extend(crate::journal_rows::rows(bins, &work.join("supervisor-crash"), budget)?);
    }
    notes.push(format!(
        "Persisted checkpoints were written to a {} filesystem; each commit is write + fsync + rename + fsync(dir).",
        machine.state_fs
    ));
    notes.push(
        "The storage floor reads and writes the page cache (no root to drop caches); so does the driver, \
         whose file is hot after the write."
            .into(),
    );
    notes.push(format!(
        "Each driver's request queue is allocated at start with exactly its queue-depth slots ({} by default, \
         {} bytes each); supervisor RSS under load is read after every driver's queue ring has been cycled once, \
         so every slot and the allocator's body buffers have been used.",
        default_queue_depth(),
        size_of::<reinc_queue::Slot<Vec<u8>>>()
    ));
    notes.push(
        "Storage requests carry at most 32 KiB (MAX_BLOCKS_PER_REQUEST), so a 1 MiB dd block is 32 requests, each \
         crossing two sockets each way and decoded/encoded at every hop; the raw 32 KiB relay row is the ceiling of \
         that design, the direct rows are a memcpy from the page cache."
            .into(),
    );
    notes.push(format!(
        "Load average {:.2} at the start and {:.2} at the end on {} cores: other work on the machine moves \
         absolute figures (and p99s) from run to run; floors are measured interleaved with, or right next to, \
         what they are compared with.",
        machine.load_at_start,
        machine::load_average().unwrap_or(f64::NAN),
        machine.cores
    ));
    let _ = std::fs::remove_dir_all(work);
    Ok(Report {
        mode: budget.mode.into(),
        machine,
        rows,
        replay_fit: fit,
        duration_secs: started.elapsed().as_secs_f64(),
        notes,
    })
}

fn storage_body(req: &StorageRequest<'_>) -> Vec<u8> {
    postcard::to_allocvec(req).expect("storage requests always encode")
}

fn check_ok(driver: &str, c: reinc_client::Completion) -> Result<Vec<u8>, BenchError> {
    c.result.map_err(|e| BenchError::Reply { driver: driver.into(), what: format!("call {} failed: {e}", c.seq) })
}

/// Keeps `depth` calls in flight, round robin over `drivers`, for `dur`;
/// returns completed calls per second.
fn pipelined(
    client: &mut Client,
    drivers: &[String],
    body: &[u8],
    depth: usize,
    dur: Duration,
) -> Result<f64, BenchError> {
    let cerr = |e: reinc_client::ClientError| BenchError::Client(e.to_string());
    let mut next = 0usize;
    let mut submit = |client: &mut Client| -> Result<(), BenchError> {
        client.submit(&drivers[next % drivers.len()], body).map_err(cerr)?;
        next += 1;
        Ok(())
    };
    for _ in 0..depth {
        submit(client)?;
    }
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < dur {
        check_ok(&drivers[0], client.wait().map_err(cerr)?)?;
        done += 1;
        submit(client)?;
    }
    let secs = start.elapsed().as_secs_f64();
    while client.in_flight() > 0 {
        check_ok(&drivers[0], client.wait().map_err(cerr)?)?;
    }
    Ok(done as f64 / secs)
}

fn storage_spec(bins: &Bins, dir: &Path, blocks: u64) -> DriverSpec {
    let disk = dir.join("disk.img");
    DriverSpec::new("storage_driver", &bins.storage_driver).args(&[
        "--file",
        &disk.to_string_lossy(),
        "--blocks",
        &blocks.to_string(),
    ])
}

/// The supervisor's `queue-depth` when the config does not set it.
fn default_queue_depth() -> usize {
    reinc_supervisor::config::DriverConfig::new("x", "/x").queue_depth
}

fn null_spec(bins: &Bins, name: &str) -> DriverSpec {
    DriverSpec::new(name, &bins.null_driver).set("init-timeout-ms", 60_000)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_budget_is_smaller_in_every_dimension() {
        let (q, f) = (Budget::quick(), Budget::full());
        assert!(f.kills >= 200, "the issue asks for at least 200 kills");
        assert!(q.rtt_samples < f.rtt_samples && q.kills < f.kills && q.tput < f.tput);
        assert!(q.storage_mib < f.storage_mib && q.replay_reps <= f.replay_reps);
    }
}
