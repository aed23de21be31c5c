//! The supervisor survives its own crash: SIGKILLs at random moments under
//! pipelined load from several clients, restarted at once as systemd's
//! `Restart=always` would. Nothing a client was told is lost, nothing runs
//! twice, and every client finishes with its data intact.
//!
//! `REINC_CRASH_KILLS` (default 50) sets the number of SIGKILLs and
//! `REINC_CRASH_SEED` the seed of the kill times (printed, to replay a run).
//!
//! The x86 guest runs its counterpart on a real kernel:
//! `fifty_supervisor_sigkills_under_load_lose_and_duplicate_nothing` in
//! `qemu/guest/src/bin/supervised-suite.rs`.

use nix::sys::signal::Signal;
use reinc_client::Client;
use reinc_tests::{Reply, Rig, assert_no_duplicate_execution, read_req, reply, wait_for, write_req};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use storage_core::BLOCK_SIZE;

const CLIENTS: u64 = 3;
/// Requests each client keeps in flight.
const DEPTH: usize = 4;
/// Blocks of the device each client owns (one write per block).
const BLOCKS_PER_CLIENT: u64 = 20_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The fill byte of client `k`'s `n`-th write: never 0 (a block never
/// written reads as zeros).
fn fill(k: u64, n: u64) -> u8 {
    (1 + (k * 7 + n * 13) % 255) as u8
}

/// One client: pipelined writes to its own blocks until `stop`, then drains
/// its calls; returns every acknowledged `(lba, fill)`.
fn client(
    path: std::path::PathBuf,
    k: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> Result<Vec<(u64, u8)>, String> {
    let mut c = Client::connect(&path).map_err(|e| format!("client {k}: {e}"))?;
    let mut inflight: BTreeMap<u64, (u64, u8)> = BTreeMap::new();
    let mut done = Vec::new();
    let mut n = 0u64;
    loop {
        while !stop.load(Ordering::Relaxed) && inflight.len() < DEPTH && n < BLOCKS_PER_CLIENT {
            let lba = k * BLOCKS_PER_CLIENT + n;
            let f = fill(k, n);
            let seq = c.submit("storage_driver", &write_req(lba, 1, f)).map_err(|e| format!("client {k}: {e}"))?;
            inflight.insert(seq, (lba, f));
            n += 1;
        }
        if inflight.is_empty() {
            return Ok(done);
        }
        let comp = c.wait().map_err(|e| format!("client {k}: {e}"))?;
        let Some((lba, f)) = inflight.remove(&comp.seq) else { continue };
        let body = comp.result.map_err(|e| format!("client {k}: write {lba}: {e}"))?;
        if reply(&body) != Reply::Written(lba, 1) {
            return Err(format!("client {k}: write {lba}: {:?}", reply(&body)));
        }
        done.push((lba, f));
        acked.fetch_add(1, Ordering::Relaxed);
    }
}

struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn fifty_supervisor_sigkills_under_load_lose_nothing_and_run_nothing_twice() {
    let kills = env("REINC_CRASH_KILLS", 50);
    let seed = env("REINC_CRASH_SEED", {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        t.as_nanos() as u64 | 1
    });
    eprintln!("supervisor_crash: {kills} kills, REINC_CRASH_SEED={seed}");
    let mut rng = Xorshift(seed | 1);
    // journal-recovery stays "refuse": a SIGKILL in the middle of a batch's
    // write must leave nothing the next supervisor takes for damage.
    let mut rig = Rig::new("sup-crash", &[("durability", "\"journal\"")]);
    rig.set_disk_blocks(CLIENTS * BLOCKS_PER_CLIENT);
    rig.start();

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let path = reinc_client::client_socket(&rig.runtime);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let (p, s, a) = (path.clone(), Arc::clone(&stop), Arc::clone(&acked));
            std::thread::spawn(move || client(p, k, s, a))
        })
        .collect();
    assert!(wait_for(Duration::from_secs(10), || (acked.load(Ordering::Relaxed) > 0).then_some(())).is_some());

    // The harness plays systemd: kill at a random moment, restart at once.
    let started = Instant::now();
    let mut acked_at_kill = Vec::new();
    for i in 0..kills {
        // Mostly soon after the restart (during recovery and replay), every
        // fifth kill after the load has run for a while.
        let ms = if i % 5 == 4 { 100 + rng.below(200) } else { rng.below(60) };
        std::thread::sleep(Duration::from_millis(ms));
        acked_at_kill.push(acked.load(Ordering::Relaxed));
        let st = rig.stop_supervisor(Signal::SIGKILL);
        assert_eq!(st.code(), None, "kill {i}: the supervisor exited on its own ({st:?}); log:\n{}", rig.log());
        rig.spawn();
    }
    let killing = started.elapsed();
    rig.wait_status(Duration::from_secs(10), |s| s.state.name() == "running").expect("the last supervisor runs");
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for (k, t) in threads.into_iter().enumerate() {
        match t.join().expect("client thread") {
            Ok(done) => acknowledged.extend(done),
            Err(e) => panic!("client {k} failed: {e}; log:\n{}", rig.log()),
        }
    }
    let progress = acked_at_kill.windows(2).filter(|w| w[1] > w[0]).count();
    eprintln!(
        "supervisor_crash: {} writes acknowledged over {kills} kills in {killing:?}; load advanced between {progress} \
         pairs of kills",
        acknowledged.len()
    );
    // Every fifth kill waits 100-300 ms: the load must at least move then.
    assert!(progress >= kills as usize / 10, "the kills must land under load, not on an idle supervisor");

    // 0 acknowledged writes lost: every one reads back.
    let mut c = rig.client();
    for (lba, f) in &acknowledged {
        let got = reply(&c.call("storage_driver", &read_req(*lba, 1)).unwrap().unwrap());
        assert_eq!(got, Reply::Data(vec![*f; BLOCK_SIZE]), "acknowledged write of block {lba} lost");
    }
    // 0 executed twice: each request id applied once, whatever the lifetime.
    let log = rig.exec_log();
    let distinct = assert_no_duplicate_execution(&log);
    assert!(distinct >= acknowledged.len(), "{distinct} applied < {} acknowledged", acknowledged.len());
    // A driver killed between its effect and its log line applied one more.
    assert!(rig.superblock().applied_count >= log.len() as u64);
    assert!(rig.sup_lines("recovered ").len() >= kills as usize / 2, "recovery ran after the kills");
}
