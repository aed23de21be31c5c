//! Section 3: restart against the ideal supervisor, and recovery (kill ->
//! first replayed reply) with and without a hot standby, against fork+exec.

use super::{Budget, check_ok, mib, storage_spec};
use crate::BenchError;
use crate::floors::{self};
use crate::machine::{self};
use crate::report::{Goal, Row};
use crate::rig::{Bins, DriverSpec, Supervisor};
use crate::stats::percentiles;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reinc_client::Client;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use storage_core::{BLOCK_SIZE, StorageReply};

/// Section 3: SIGKILL under a streaming workload, kill → first replayed
/// reply; with `standby`, every kill promotes a hot standby (CONTRACTS.md §9).
pub(super) fn recovery(bins: &Bins, dir: &Path, b: &Budget, standby: bool) -> Result<Vec<Row>, BenchError> {
    let floor_args = floors::storage_floor_args(dir)?;
    let spawn_once = || floors::spawn_to_first_message(&bins.storage_driver, &floor_args, "storage_driver", 1);
    for _ in 0..3 {
        spawn_once()?;
    }
    let mut spawn_samples = Vec::with_capacity(b.spawns);

    // Kills are paced KILL_SPACING apart, as restart_at_once requires.
    const KILL_SPACING: Duration = Duration::from_millis(20);
    let spec = storage_spec(bins, dir, 1024).restart_at_once().set("standby", standby);
    let sup = Supervisor::start(bins, dir, &[spec], Duration::from_secs(10))?;
    let standby_rss = if standby { Some(standby_memory(&sup)?) } else { None };
    let mut client = sup.client()?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let (stop2, done2) = (stop.clone(), done.clone());
    let streamer = std::thread::spawn(move || -> Result<Vec<Instant>, BenchError> {
        let cerr = |e: reinc_client::ClientError| BenchError::Client(e.to_string());
        let mut times = Vec::new();
        let mut k = 0u64;
        let mut submit = |client: &mut Client| -> Result<(), BenchError> {
            let data = [(k % 251) as u8; BLOCK_SIZE];
            client.submit("storage_driver", &reinc_client::blocksum::write_body(k % 1024, &data)).map_err(cerr)?;
            k += 1;
            Ok(())
        };
        for _ in 0..8 {
            submit(&mut client)?;
        }
        while client.in_flight() > 0 {
            let body = check_ok("storage_driver", client.wait().map_err(cerr)?)?;
            times.push(Instant::now());
            done2.fetch_add(1, Ordering::SeqCst);
            if !matches!(postcard::from_bytes::<StorageReply<'_>>(&body), Ok(StorageReply::Written { .. })) {
                return Err(BenchError::Reply {
                    driver: "storage_driver".into(),
                    what: "a write was not Written".into(),
                });
            }
            if !stop2.load(Ordering::SeqCst) {
                submit(&mut client)?;
            }
        }
        Ok(times)
    });
    let result = (|| -> Result<Vec<Instant>, BenchError> {
        let mut kills = Vec::with_capacity(b.kills);
        for _ in 0..b.kills {
            let st = sup.driver("storage_driver")?;
            let pid = st.pid.ok_or_else(|| BenchError::Setup("storage_driver has no pid".into()))?;
            let pid = Pid::from_raw(pid as i32);
            // Freeze it, let replies it already sent arrive, then kill: every
            // reply after the kill comes from the next instance.
            kill(pid, Signal::SIGSTOP).map_err(|e| BenchError::io("SIGSTOP storage_driver", e.into()))?;
            std::thread::sleep(Duration::from_millis(3));
            let before = done.load(Ordering::SeqCst);
            let t = Instant::now();
            kill(pid, Signal::SIGKILL).map_err(|e| BenchError::io("SIGKILL storage_driver", e.into()))?;
            kills.push(t);
            let deadline = t + Duration::from_secs(10);
            while done.load(Ordering::SeqCst) == before {
                if Instant::now() > deadline {
                    return Err(BenchError::Timeout(format!("a reply after killing storage_driver; {}", sup.tail())));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            // One floor sample per kill, under the same streaming load, so
            // that the ratio compares like with like on a noisy machine.
            if spawn_samples.len() < b.spawns {
                spawn_samples.extend(spawn_once()?);
            }
            std::thread::sleep(Duration::from_millis(3).max(KILL_SPACING.saturating_sub(t.elapsed())));
        }
        while spawn_samples.len() < b.spawns {
            spawn_samples.extend(spawn_once()?);
        }
        Ok(kills)
    })();
    stop.store(true, Ordering::SeqCst);
    let times = streamer.join().map_err(|_| BenchError::Setup("the streaming client panicked".into()))??;
    let kills = result?;
    let restarts = sup.driver("storage_driver")?.restarts;
    let mut rec = Vec::with_capacity(kills.len());
    for t in &kills {
        let i = times.partition_point(|x| x <= t);
        if let Some(first) = times.get(i) {
            rec.push(*first - *t);
        }
    }
    let r = percentiles(&rec);
    let spawn = percentiles(&spawn_samples);
    let ms = |us: f64| us / 1000.0;
    let note = format!(
        "{} SIGKILLs ({restarts} restarts seen), 8 one-block writes in flight; driver SIGSTOPped 3 ms before each kill so \
         that in-transit replies are not counted; one floor sample after each recovery, under the same load",
        kills.len()
    );
    let (with, goal) = if standby { (", hot standby", 0.5) } else { ("", 1.2) };
    let mut rows = vec![
        Row::new(
            3,
            &format!("recovery p50{with} (kill -> first replayed reply)"),
            ms(r.p50_us),
            "ms",
            "fork+exec to first message p50",
            ms(spawn.p50_us),
        )
        .goal(Goal::RatioAtMost(goal))
        .note(note),
        Row::new(
            3,
            &format!("recovery p99{with}"),
            ms(r.p99_us),
            "ms",
            "fork+exec to first message p99",
            ms(spawn.p99_us),
        )
        .goal(Goal::ValueAtMost(10.0)),
    ];
    if let Some((standby_kib, running_kib)) = standby_rss {
        rows.push(
            Row::new(
                3,
                "standby RSS (storage_driver, waiting)",
                mib(standby_kib),
                "MiB",
                "running instance RSS",
                mib(running_kib),
            )
            .note("read before the kills: what keeping a standby costs in memory, per driver"),
        );
    }
    Ok(rows)
}

/// RSS (KiB) of the standby and of the running instance under `sup` (one
/// driver), once the standby is launched and past its start-up.
fn standby_memory(sup: &Supervisor) -> Result<(u64, u64), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running = sup.driver("storage_driver")?.pid;
        let standby = machine::children(sup.pid()).into_iter().find(|&p| Some(p) != running);
        // Settled: the standby has answered pings for a while, and its RSS no longer grows.
        if let (Some(r), Some(s)) = (running, standby) {
            std::thread::sleep(Duration::from_millis(300));
            if let (Some(sk), Some(rk)) = (machine::rss_kib(s), machine::rss_kib(r)) {
                return Ok((sk, rk));
            }
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(format!("a standby of storage_driver; {}", sup.tail())));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Section 3: SIGKILL until the restarted instance's first message, under
/// reinc and under the ideal supervisor ([`floors::run_ideal_supervisor`]),
/// the same driver binary in both, kill by kill interleaved so that a burst
/// of other load on the machine hits both sides alike.
pub(super) fn restart_vs_ideal(bins: &Bins, dir: &Path, b: &Budget) -> Result<Vec<Row>, BenchError> {
    // Paced as restart_at_once requires.
    const KILL_SPACING: Duration = Duration::from_millis(20);
    const WARM_UP: usize = 3;
    let wait = Duration::from_secs(10);
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir.display(), e))?;
    let reinc_ann = floors::Announcements::bind(&dir.join("reinc.sock"))?;
    let ideal_ann = floors::Announcements::bind(&dir.join("ideal.sock"))?;
    let announce = |a: &floors::Announcements| a.path().to_string_lossy().into_owned();
    let spec =
        DriverSpec::new("null", &bins.null_driver).args(&["--announce", &announce(&reinc_ann)]).restart_at_once();
    let sup = Supervisor::start(bins, &dir.join("sup"), &[spec], wait)?;
    let (mut reinc_pid, _) = reinc_ann.next(wait)?;
    let _ideal =
        floors::IdealSupervisor::start(&bins.harness, &bins.null_driver, &["--announce".into(), announce(&ideal_ann)])?;
    let (mut ideal_pid, _) = ideal_ann.next(wait)?;
    let (mut ours, mut ideal) = (Vec::with_capacity(b.spawns), Vec::with_capacity(b.spawns));
    for i in 0..b.spawns + WARM_UP {
        let (d, p) = reinc_ann
            .kill_until_next(reinc_pid, wait)
            .map_err(|e| BenchError::Setup(format!("restart under reinc: {e}; {}", sup.tail())))?;
        reinc_pid = p;
        let (e, q) = ideal_ann.kill_until_next(ideal_pid, wait)?;
        ideal_pid = q;
        if i >= WARM_UP {
            ours.push(d);
            ideal.push(e);
        }
        std::thread::sleep(KILL_SPACING);
    }
    let restarts = sup.driver("null")?.restarts;
    let (r, f) = (percentiles(&ours), percentiles(&ideal));
    let ms = |us: f64| us / 1000.0;
    Ok(vec![
        Row::new(
            3,
            "restart p50 (SIGKILL -> new instance's first message)",
            ms(r.p50_us),
            "ms",
            "ideal supervisor (fork+exec, waitpid, again) p50",
            ms(f.p50_us),
        )
        .note(format!(
            "{} SIGKILLs each ({restarts} reinc restarts seen), interleaved; reinc-bench-driver sends its pid to the \
             harness as its first act in both; no client load",
            ours.len()
        )),
        Row::new(3, "restart p99", ms(r.p99_us), "ms", "ideal supervisor p99", ms(f.p99_us)),
    ])
}
