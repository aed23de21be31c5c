//! Section 8, the supervisor's own crash: journal throughput at
//! 1, 8 and 64 in flight against the disk's own limit, and recovery after a
//! SIGKILL of the supervisor against the spawn floor.
//!
//! # The floor of the journal rows
//! "Raw appends plus `fdatasync` with the same batching": during each
//! measurement the supervisor's own counters (`drvctl metrics`) give the
//! records and bytes it wrote per batch and the requests per batch; the
//! floor then appends batches of exactly that size to a file in the same
//! directory with one `pwrite` and one `fdatasync` each, for the same time,
//! and counts the requests those batches would have carried. So the ratio
//! is what the supervisor's work around the disk costs, not how fast the
//! disk is.

use crate::report::{Goal, Row};
use crate::rig::{Bins, DriverSpec, Supervisor};
use crate::stats::percentiles;
use crate::{BenchError, NULL_COMMIT, floors};
use reinc_client::control::{ControlRequest, ControlResponse};
use reinc_client::{Client, control_request, control_socket};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use storage_core::BLOCK_SIZE;

use super::rows::Budget;

/// Alternating rounds per depth.
const ROUNDS: usize = 4;

/// The journal counters of a running supervisor.
#[derive(Debug, Clone, Copy, Default)]
struct JournalCounters {
    batches: f64,
    records: f64,
    bytes: f64,
}

fn counters(sup: &Supervisor) -> Result<JournalCounters, BenchError> {
    let text = match control_request(&control_socket(&sup.runtime), &ControlRequest::Metrics) {
        Ok(ControlResponse::Metrics(t)) => t,
        Ok(other) => return Err(BenchError::Setup(format!("unexpected metrics answer {other:?}"))),
        Err(e) => return Err(BenchError::Client(e.to_string())),
    };
    let get = |name: &str| -> Result<f64, BenchError> {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.parse().ok()))
            .ok_or_else(|| BenchError::Setup(format!("drvctl metrics has no {name}")))
    };
    Ok(JournalCounters {
        batches: get("reinc_journal_batches_total")?,
        records: get("reinc_journal_batch_records_total")?,
        bytes: get("reinc_journal_bytes_total")?,
    })
}

/// Keeps `depth` calls in flight for `dur`, then lets them finish; returns
/// the calls completed and the time taken, the drain included (so that the
/// journal's counters around it cover exactly these calls).
fn pipelined(
    client: &mut Client,
    drivers: &[&str],
    depth: usize,
    dur: Duration,
) -> Result<(u64, Duration), BenchError> {
    let cerr = |e: reinc_client::ClientError| BenchError::Client(e.to_string());
    let body = [NULL_COMMIT];
    let start = Instant::now();
    let mut next = 0usize;
    let mut submit = |client: &mut Client| -> Result<(), BenchError> {
        client.submit(drivers[next % drivers.len()], &body).map_err(cerr)?;
        next += 1;
        Ok(())
    };
    for _ in 0..depth {
        submit(client)?;
    }
    let mut done = 0u64;
    while client.in_flight() > 0 {
        let c = client.wait().map_err(cerr)?;
        c.result.map_err(|e| BenchError::Reply { driver: drivers[0].into(), what: format!("call failed: {e}") })?;
        done += 1;
        if start.elapsed() < dur {
            submit(client)?;
        }
    }
    Ok((done, start.elapsed()))
}

/// An append-only file like the journal: kept open across rounds, grown by
/// appends, each batch covered by one `fdatasync`.
struct RawLog {
    file: std::fs::File,
    len: u64,
}

impl RawLog {
    fn create(path: &Path) -> Result<Self, BenchError> {
        let file = std::fs::File::create(path).map_err(|e| BenchError::io(path.display(), e))?;
        Ok(Self { file, len: 0 })
    }

    /// Appends batches of `batch_bytes` with one `fdatasync` each for `dur`;
    /// returns batches per second.
    fn appends(&mut self, batch_bytes: usize, dur: Duration) -> Result<f64, BenchError> {
        let buf = vec![0x5au8; batch_bytes.max(1)];
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < dur {
            self.file
                .write_all_at(&buf, self.len)
                .and_then(|()| self.file.sync_data())
                .map_err(|e| BenchError::io("raw journal floor", e))?;
            self.len += buf.len() as u64;
            n += 1;
        }
        Ok(n as f64 / start.elapsed().as_secs_f64())
    }
}

/// The journal throughput rows: one journal driver at 1, 8 and 64 in
/// flight, and eight sharing the journal (group commit across drivers).
fn throughput(bins: &Bins, dir: &Path, b: &Budget) -> Result<Vec<Row>, BenchError> {
    const GROUP: usize = 8;
    let names: Vec<String> = std::iter::once("j".to_owned()).chain((0..GROUP).map(|i| format!("g{i}"))).collect();
    let specs: Vec<DriverSpec> = names
        .iter()
        .map(|n| {
            DriverSpec::new(n.as_str(), &bins.null_driver)
                .set("init-timeout-ms", 60_000)
                .set("durability", "\"journal\"")
        })
        .collect();
    let sup = Supervisor::start(bins, dir, &specs, Duration::from_secs(20))?;
    let mut client = sup.client()?;
    pipelined(&mut client, &["j"], 8, b.tput / 4)?; // warm-up
    let group: Vec<&str> = names[1..].iter().map(String::as_str).collect();
    let mut rows = Vec::new();
    let cases: [(String, Vec<&str>, usize); 4] = [
        ("journal commits, 1 in flight".into(), vec!["j"], 1),
        ("journal commits, 8 in flight".into(), vec!["j"], 8),
        ("journal commits, 64 in flight".into(), vec!["j"], 64),
        (format!("journal commits, 64 in flight over {GROUP} journal drivers"), group, 64),
    ];
    for (name, drivers, depth) in cases {
        // Rounds alternate between the supervisor and its floor, so that a
        // slow patch of the shared disk hits both sides of the ratio alike.
        let (mut calls, mut secs, mut floor_calls) = (0u64, 0.0f64, 0.0f64);
        let (mut batches, mut records, mut bytes) = (0.0f64, 0.0f64, 0.0f64);
        let mut raw = RawLog::create(&dir.join(format!("floor-{}.journal", rows.len())))?;
        for _ in 0..ROUNDS {
            let before = counters(&sup)?;
            let (n, took) = pipelined(&mut client, &drivers, depth, b.tput)?;
            secs += took.as_secs_f64();
            let after = counters(&sup)?;
            let round_batches = (after.batches - before.batches).max(1.0);
            let per_batch_bytes = ((after.bytes - before.bytes) / round_batches).round() as usize;
            let floor_rate = raw.appends(per_batch_bytes, took)?;
            floor_calls += floor_rate * (n as f64 / round_batches);
            calls += n;
            batches += round_batches;
            records += after.records - before.records;
            bytes += after.bytes - before.bytes;
        }
        let rate = calls as f64 / secs;
        let floor = floor_calls / ROUNDS as f64;
        rows.push(
            Row::new(8, &name, rate, "req/s", "raw appends + fdatasync, same batches", floor)
                .goal(Goal::RatioAtLeast(0.8))
                .note(format!(
                    "durability = \"journal\", every reply commits state; {:.1} records ({:.0} B) and {:.2} requests \
                     per fdatasync; a journal driver has one request in doubt, forwarded once its acceptance is \
                     durable: two syncs per request at depth 1, one from depth 2, and drivers share each sync",
                    records / batches,
                    bytes / batches,
                    calls as f64 / batches
                )),
        );
    }
    Ok(rows)
}

/// Recovery after a supervisor SIGKILL: kill -> first reply from the new
/// supervisor (respawned at once, as `Restart=always` does), against the
/// fork+exec floor of the driver.
fn recovery(bins: &Bins, dir: &Path, b: &Budget) -> Result<Vec<Row>, BenchError> {
    let floor_args = floors::storage_floor_args(dir)?;
    let mut spawn = floors::spawn_to_first_message(&bins.storage_driver, &floor_args, "storage_driver", 3)?;
    spawn.clear();
    let disk = dir.join("disk.img");
    let spec = DriverSpec::new("storage_driver", &bins.storage_driver)
        .args(&["--file", &disk.to_string_lossy(), "--blocks", "1024"])
        .set("durability", "\"journal\"");
    let mut sup = Supervisor::start(bins, dir, &[spec], Duration::from_secs(10))?;
    let mut client = sup.client()?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let (stop2, done2) = (Arc::clone(&stop), Arc::clone(&done));
    let streamer = std::thread::spawn(move || -> Result<Vec<Instant>, BenchError> {
        let cerr = |e: reinc_client::ClientError| BenchError::Client(e.to_string());
        let mut times = Vec::new();
        let mut k = 0u64;
        let mut submit = |client: &mut Client| -> Result<(), BenchError> {
            let data = [(k % 251) as u8; BLOCK_SIZE];
            let body = reinc_client::blocksum::write_body(k % 1024, &data);
            client.submit("storage_driver", &body).map_err(cerr)?;
            k += 1;
            Ok(())
        };
        for _ in 0..8 {
            submit(&mut client)?;
        }
        while client.in_flight() > 0 {
            let c = client.wait().map_err(cerr)?;
            c.result.map_err(|e| BenchError::Reply { driver: "storage_driver".into(), what: e.to_string() })?;
            times.push(Instant::now());
            done2.fetch_add(1, Ordering::SeqCst);
            if !stop2.load(Ordering::SeqCst) {
                submit(&mut client)?;
            }
        }
        Ok(times)
    });
    let result = (|| -> Result<Vec<Instant>, BenchError> {
        let mut kills = Vec::new();
        for _ in 0..b.kills {
            // Let the load run, then kill and respawn at once.
            let before = done.load(Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(10);
            while done.load(Ordering::SeqCst) < before + 20 {
                if Instant::now() > deadline {
                    return Err(BenchError::Timeout(format!("replies between supervisor kills; {}", sup.tail())));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            kills.push(sup.kill_and_respawn(bins)?);
            spawn.extend(floors::spawn_to_first_message(&bins.storage_driver, &floor_args, "storage_driver", 1)?);
        }
        // The replies after the last kill.
        let last = done.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        while done.load(Ordering::SeqCst) < last + 20 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(kills)
    })();
    stop.store(true, Ordering::SeqCst);
    let kills = result?;
    let times = streamer.join().map_err(|_| BenchError::Setup("the streaming client panicked".into()))??;
    let mut rec = Vec::with_capacity(kills.len());
    for t in &kills {
        let i = times.partition_point(|x| x <= t);
        if let Some(first) = times.get(i) {
            rec.push(*first - *t);
        }
    }
    let r = percentiles(&rec);
    let s = percentiles(&spawn);
    let ms = |us: f64| us / 1000.0;
    let note = format!(
        "{} SIGKILLs of the supervisor under 8 one-block journal writes in flight, each followed at once by a new \
         supervisor (kill, reap, spawn: what Restart=always does); includes the new supervisor's start, journal \
         recovery, the driver's launch and the client's reconnect backoff (5 ms first)",
        rec.len()
    );
    Ok(vec![
        Row::new(
            8,
            "supervisor recovery p50 (SIGKILL -> first reply of the new one)",
            ms(r.p50_us),
            "ms",
            "fork+exec to first message p50",
            ms(s.p50_us),
        )
        .note(note),
        Row::new(8, "supervisor recovery p99", ms(r.p99_us), "ms", "fork+exec to first message p99", ms(s.p99_us)),
    ])
}

/// Section 8's rows.
///
/// # Errors
/// The first experiment that fails.
pub fn rows(bins: &Bins, dir: &Path, b: &Budget) -> Result<Vec<Row>, BenchError> {
    // A run that failed earlier may have left its journals behind.
    let _ = std::fs::remove_dir_all(dir);
    let mut rows = throughput(bins, &dir.join("journal"), b)?;
    rows.extend(recovery(bins, &dir.join("sup-recovery"), b)?);
    Ok(rows)
}
