//! Sections 4 and 5: checkpoint cost, the supervisor's memory and CPU with
//! 1, 16 and 128 drivers, and replay time against queue length.

use super::{Budget, Shared, check_ok, default_queue_depth, mib, null_spec, pipelined};
use crate::floors::RawPath;
use crate::machine::{self};
use crate::report::{Goal, Row};
use crate::rig::{Bins, DriverSpec, Supervisor};
use crate::stats::{self, fit_line};
use crate::{BenchError, NULL_COMMIT, NULL_NOP};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;
use std::time::{Duration, Instant};

/// Section 4: commit-with-reply in memory and persisted, against no commit.
pub(super) fn checkpoint_cost(bins: &Bins, dir: &Path, b: &Budget) -> Result<Vec<Row>, BenchError> {
    let specs = [null_spec(bins, "mem"), null_spec(bins, "disk").set("persist-checkpoint", true)];
    let sup = Supervisor::start(bins, dir, &specs, Duration::from_secs(10))?;
    let mut client = sup.client()?;
    let mem = ["mem".to_owned()];
    let disk = ["disk".to_owned()];
    pipelined(&mut client, &mem, &[NULL_NOP], 8, b.ckpt / 4)?;
    let none = pipelined(&mut client, &mem, &[NULL_NOP], 8, b.ckpt)?;
    let in_mem = pipelined(&mut client, &mem, &[NULL_COMMIT], 8, b.ckpt)?;
    let persisted = pipelined(&mut client, &disk, &[NULL_COMMIT], 8, b.ckpt)?;
    let ckpt = sup.dir.join("state").join("disk.ckpt");
    if !ckpt.is_file() {
        return Err(BenchError::Setup(format!("{} was not written by the persisted run", ckpt.display())));
    }
    Ok(vec![
        Row::new(4, "commits in memory, 8 in flight", in_mem, "req/s", "no commits, 8 in flight", none)
            .note("reinc-bench-driver; every reply carries a 72-byte state"),
        Row::new(4, "commits persisted, 8 in flight", persisted, "req/s", "no commits, 8 in flight", none)
            .note("temp file + fsync + rename + fsync(dir) per reply"),
    ])
}

/// Section 5: supervisor RSS and CPU with 1, 16, 128 drivers.
pub(super) fn scale(bins: &Bins, dir: &Path, b: &Budget, shared: &Shared) -> Result<Vec<Row>, BenchError> {
    // Floor for memory: what a minimal Rust process of this harness costs.
    let bare = RawPath::direct(&bins.harness)?;
    let bare_pid = bare.helper_pids()[0];
    std::thread::sleep(Duration::from_millis(50));
    let bare_rss = machine::rss_kib(bare_pid).ok_or_else(|| BenchError::Setup("no RSS for the echo helper".into()))?;
    drop(bare);
    let mut rows = Vec::new();
    let mut idle_cpu_1 = None;
    let queue_slots = default_queue_depth();
    for n in [1usize, 16, 128] {
        let names: Vec<String> = (0..n).map(|i| format!("null{i:03}")).collect();
        let specs: Vec<DriverSpec> = names.iter().map(|nm| null_spec(bins, nm)).collect();
        let d = dir.join(format!("n{n}"));
        let sup = Supervisor::start(bins, &d, &specs, Duration::from_secs(120))?;
        let pid = sup.pid();
        let sample = |what: &str| {
            Ok::<_, BenchError>((
                machine::cpu_time(pid)
                    .ok_or_else(|| BenchError::Setup(format!("no CPU time for the supervisor ({what})")))?,
                Instant::now(),
            ))
        };
        std::thread::sleep(Duration::from_millis(300));
        let (c0, t0) = sample("idle")?;
        std::thread::sleep(b.idle);
        let (c1, t1) = sample("idle")?;
        let idle_pct = (c1 - c0).as_secs_f64() / (t1 - t0).as_secs_f64() * 100.0;
        let idle_rss = machine::rss_kib(pid).unwrap_or(0);
        let mut client = sup.client()?;
        // Under load until every driver's queue ring (queue-depth slots,
        // the default here) has been cycled at least once, so every slot and
        // the allocator's buffers for request bodies have been used; a
        // shorter run could flatter the RSS figure.
        let cycled = (n * (queue_slots + 64)) as f64;
        let (c2, t2) = sample("load")?;
        let mut requests = 0.0;
        while requests < cycled || t2.elapsed() < b.load {
            requests += pipelined(&mut client, &names, &[NULL_NOP], 64, b.load)? * b.load.as_secs_f64();
        }
        let (c3, t3) = sample("load")?;
        let load_rss = machine::rss_kib(pid).unwrap_or(0);
        let rate = requests / (t3 - t2).as_secs_f64();
        let load_pct = (c3 - c2).as_secs_f64() / (t3 - t2).as_secs_f64() * 100.0;
        let cpu_per_req = (c3 - c2).as_secs_f64() * 1e6 / requests.max(1.0);
        let floor_idle = *idle_cpu_1.get_or_insert(idle_pct);
        let rss_goal = |r: Row| if n == 128 { r.goal(Goal::ValueAtMost(10.0)) } else { r };
        rows.push(rss_goal(Row::new(
            5,
            &format!("supervisor RSS, {n} drivers idle"),
            mib(idle_rss),
            "MiB",
            "bare Rust process RSS",
            mib(bare_rss),
        )));
        rows.push(rss_goal(
            Row::new(
                5,
                &format!("supervisor RSS, {n} drivers under load"),
                mib(load_rss),
                "MiB",
                "bare Rust process RSS",
                mib(bare_rss),
            )
            .note(format!(
                "after {:.0} requests per driver: each {queue_slots}-slot queue ring cycled",
                requests / n as f64
            )),
        ));
        rows.push(
            Row::new(5, &format!("supervisor CPU, {n} drivers idle"), idle_pct, "% CPU", "1 driver idle", floor_idle)
                .note("heartbeat every 1 s per driver (default)"),
        );
        rows.push(
            Row::new(
                5,
                &format!("supervisor CPU per request, {n} drivers"),
                cpu_per_req,
                "us",
                "raw relay CPU per message",
                shared.relay_cpu_per_msg_us,
            )
            .note(format!("{load_pct:.0}% CPU at {rate:.0} req/s, 64 in flight round robin")),
        );
        drop(sup);
    }
    Ok(rows)
}

/// Queue lengths of the replay rows. The drain's per-request cost is the
/// slope of a least-squares line through them, which one descheduled
/// repetition (or one short drain) cannot move much.
const REPLAY_LENGTHS: [usize; 5] = [100, 300, 1_000, 3_000, 10_000];

/// Section 5: replay time against queue length.
pub(super) fn replay(
    bins: &Bins,
    dir: &Path,
    b: &Budget,
    shared: &Shared,
) -> Result<(Vec<Row>, Option<stats::Line>), BenchError> {
    // The queue must hold the longest backlog; its slots are allocated at
    // start, so the depth is exactly that, not the maximum allowed.
    let max = reinc_supervisor::config::MAX_QUEUE_DEPTH;
    let cap = REPLAY_LENGTHS.iter().copied().filter(|&n| n <= max).max().unwrap_or(1);
    let spec = null_spec(bins, "null")
        .set("queue-depth", cap)
        .set("backoff-base-ms", 0)
        .set("backoff-cap-ms", 0)
        .set("healthy-after-ms", 1)
        // The floor of config::MAX_RESTARTS_PER_SECOND; the replays here
        // restart far less often than that.
        .set("restart-window-ms", 1000)
        .set("max-restarts", 64)
        .set("poison-after", 1000)
        .set("heartbeat-interval-ms", 60_000);
    let sup = Supervisor::start(bins, dir, &[spec], Duration::from_secs(10))?;
    let mut client = sup.client()?;
    let cerr = |e: reinc_client::ClientError| BenchError::Client(e.to_string());
    let mut rows = Vec::new();
    let mut points = Vec::new();
    for n in REPLAY_LENGTHS {
        if n > cap {
            rows.push(Row::unmeasured(
                5,
                &format!("replay {n} queued"),
                "ms",
                &format!("cannot queue {n}: the supervisor's largest queue-depth is MAX_QUEUE_DEPTH = {max}"),
            ));
            continue;
        }
        // Total: kill -> last reply (restart included). Drain: first ->
        // last replayed reply, the replay proper, without the restart's
        // fork+exec jitter; its minimum over the repetitions is the least
        // disturbed by other work on the machine (noise only adds time).
        let (mut totals, mut drains) = (Vec::new(), Vec::new());
        for _ in 0..b.replay_reps {
            let pid = sup.driver("null")?.pid.ok_or_else(|| BenchError::Setup("null driver has no pid".into()))?;
            let pid = Pid::from_raw(pid as i32);
            kill(pid, Signal::SIGSTOP).map_err(|e| BenchError::io("SIGSTOP null driver", e.into()))?;
            for _ in 0..n {
                client.submit("null", &[NULL_COMMIT]).map_err(cerr)?;
            }
            sup.wait_status(Duration::from_secs(30), |rows| rows[0].queue_depth as usize == n)?;
            let t0 = Instant::now();
            kill(pid, Signal::SIGKILL).map_err(|e| BenchError::io("SIGKILL null driver", e.into()))?;
            let mut first = None;
            while client.in_flight() > 0 {
                check_ok("null", client.wait().map_err(cerr)?)?;
                first.get_or_insert_with(Instant::now);
            }
            totals.push(t0.elapsed());
            drains.push(first.map_or(Duration::ZERO, |f| f.elapsed()));
            // Let the new instance settle before the next freeze.
            sup.wait_status(Duration::from_secs(10), |rows| rows[0].state.name() == "running")?;
        }
        totals.sort();
        let ms = totals[totals.len() / 2].as_secs_f64() * 1e3;
        let drain_ms = drains.iter().min().copied().unwrap_or_default().as_secs_f64() * 1e3;
        // n - 1 intervals between the first and the last reply.
        points.push(((n - 1) as f64, drain_ms));
        let floor_ms = n as f64 / shared.relay_tput8 * 1e3;
        rows.push(
            Row::new(
                5,
                &format!("replay {n} queued (kill -> last reply)"),
                ms,
                "ms",
                &format!("{n} msgs via raw relay, 8 in flight"),
                floor_ms,
            )
            .note(format!(
                "median of {}; restart included; drain (first -> last reply) {drain_ms:.2} ms at best; window 8",
                totals.len()
            )),
        );
    }
    let fit = fit_line(&points);
    rows.extend(drain_rows(&points, shared));
    Ok((rows, fit))
}

/// The replay drain's per-request cost as slopes of least-squares lines
/// (ms against replayed intervals): over every length, against the raw
/// relay's time per message; and over the long queues against the short
/// ones, which is 1 if the replay is linear in the queue length. A slope
/// through three or more lengths is what a single descheduled drain of 100
/// requests used to swing by a factor of two.
fn drain_rows(points: &[(f64, f64)], shared: &Shared) -> Vec<Row> {
    let mut rows = Vec::new();
    let Some(all) = fit_line(points) else { return rows };
    let relay_us = 1e6 / shared.relay_tput8;
    rows.push(
        Row::new(
            5,
            "replay drain cost per request (fitted slope)",
            all.slope * 1e3,
            "us/req",
            "raw relay time per message, 8 in flight",
            relay_us,
        )
        .note(format!("least squares over {} queue lengths, R^2 = {:.4}", points.len(), all.r2)),
    );
    let split = REPLAY_LENGTHS[REPLAY_LENGTHS.len() / 2] as f64;
    let short: Vec<_> = points.iter().copied().filter(|p| p.0 <= split - 1.0).collect();
    let long: Vec<_> = points.iter().copied().filter(|p| p.0 >= split - 1.0).collect();
    if let (Some(s), Some(l)) = (fit_line(&short), fit_line(&long)) {
        rows.push(
            Row::new(
                5,
                &format!(
                    "replay drain slope, {} to {} queued",
                    split as usize,
                    REPLAY_LENGTHS[REPLAY_LENGTHS.len() - 1]
                ),
                l.slope * 1e3,
                "us/req",
                &format!("same, {} to {} queued", REPLAY_LENGTHS[0], split as usize),
                s.slope * 1e3,
            )
            .goal(Goal::RatioAtMost(1.5))
            .note(format!("ratio ~1 means linear; {} and {} lengths", long.len(), short.len())),
        );
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_slopes_are_one_for_a_linear_replay_and_more_for_a_superlinear_one() {
        let shared = Shared { relay_tput8: 100_000.0, relay_cpu_per_msg_us: 1.0 };
        // 20 µs per request plus 0.4 ms of fixed cost, at x = n - 1.
        let linear: Vec<(f64, f64)> =
            REPLAY_LENGTHS.iter().map(|&n| ((n - 1) as f64, 0.4 + 0.02 * (n - 1) as f64)).collect();
        let rows = drain_rows(&linear, &shared);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!((rows[0].value.unwrap() - 20.0).abs() < 1e-6 && (rows[0].floor.unwrap() - 10.0).abs() < 1e-9);
        assert!((rows[1].ratio.unwrap() - 1.0).abs() < 1e-6, "{:?}", rows[1]);
        assert!(rows[1].target.as_ref().unwrap().met);
        // One drain of the short queues descheduled for 3 ms moves the
        // short slope, but the verdict stays: still under the 1.5 bar.
        let mut hit = linear.clone();
        hit[0].1 += 3.0;
        assert!(drain_rows(&hit, &shared)[1].target.as_ref().unwrap().met);
        // Cost growing with the queue (x^1.5) is flagged.
        let superlinear: Vec<(f64, f64)> =
            REPLAY_LENGTHS.iter().map(|&n| ((n - 1) as f64, 0.001 * ((n - 1) as f64).powf(1.5))).collect();
        let r = drain_rows(&superlinear, &shared);
        assert!(!r[1].target.as_ref().unwrap().met, "{:?}", r[1]);
        assert!(drain_rows(&linear[..1], &shared).is_empty());
    }
}
