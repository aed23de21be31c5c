//! Chaos: a client streams ≥ 10 000 mixed requests with ≥ 8 in flight while
//! another thread SIGKILLs the driver at random ≥ 50 times. Nothing is lost,
//! nothing executes twice, and the device ends equal to a model.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reinc_tests::{Reply, Rig, assert_no_duplicate_execution, read_req, reply, request, write_req};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};
use storage_core::{BLOCK_SIZE, StorageRequest};

const REQUESTS: u64 = 10_000;
const KILLS: u32 = 50;
const IN_FLIGHT: usize = 12;
const LBAS: u64 = 128;

/// xorshift64: reproducible randomness without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn block(lba: u64, fill: u8) -> Vec<u8> {
    (0..BLOCK_SIZE).map(|i| fill ^ (i as u8) ^ (lba as u8)).collect()
}

#[test]
fn chaos_random_kills_lose_nothing_and_duplicate_nothing() {
    chaos("chaos", &[]);
}

/// The same with a hot standby (CONTRACTS.md §9): kills land on promoted
/// standbys, on instances whose next standby is not launched yet, and on
/// ones whose standby is still starting.
#[test]
fn chaos_with_a_standby_loses_nothing_and_duplicates_nothing() {
    let rig = chaos("chaos-standby", &[("standby", "true")]);
    assert!(!rig.sup_lines("promoting the standby of storage_driver").is_empty(), "log:\n{}", rig.log());
}

fn chaos(tag: &str, extra: &[(&str, &str)]) -> Rig {
    let mut keys = vec![
        ("backoff-base-ms", "1"),
        ("backoff-cap-ms", "10"),
        ("healthy-after-ms", "200"),
        ("max-restarts", "64"),
        ("restart-window-ms", "1000"),
        ("window", "8"),
    ];
    keys.extend_from_slice(extra);
    let mut rig = Rig::new(tag, &keys);
    rig.start();
    let seed = std::env::var("REINC_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5EED_1234_u64);
    eprintln!("chaos seed {seed} (set REINC_CHAOS_SEED to reproduce)");

    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicU32::new(0));
    let killer = {
        let (stop, kills) = (stop.clone(), kills.clone());
        let runtime = rig.runtime.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(seed ^ 0xABCD);
            let mut last = None;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10 + rng.next() % 40));
                let sock = reinc_client::control_socket(&runtime);
                let Ok(reinc_client::control::ControlResponse::Status(rows)) =
                    reinc_client::control_request(&sock, &reinc_client::control::ControlRequest::Status)
                else {
                    continue;
                };
                let Some(pid) = rows[0].pid.filter(|_| rows[0].state.name() == "running") else { continue };
                if last == Some(pid) {
                    continue;
                }
                if kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok() {
                    last = Some(pid);
                    kills.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let t0 = Instant::now();
    let mut client = rig.client();
    let mut rng = Rng(seed);
    let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut expected: BTreeMap<u64, Reply> = BTreeMap::new();
    let (mut sent, mut done, mut writes, mut max_in_flight) = (0u64, 0u64, 0u64, 0usize);
    while done < REQUESTS || kills.load(Ordering::Relaxed) < KILLS {
        assert!(t0.elapsed() < Duration::from_secs(120), "chaos did not finish; log:\n{}", rig.log());
        while client.in_flight() < IN_FLIGHT {
            let lba = rng.next() % LBAS;
            let (body, want) = match rng.next() % 10 {
                0..=4 => {
                    let data = block(lba, rng.next() as u8);
                    model.insert(lba, data.clone());
                    writes += 1;
                    (request(&StorageRequest::Write { lba, data: &data }), Reply::Written(lba, 1))
                }
                5..=8 => {
                    // FIFO order per driver: a read sees exactly the writes
                    // submitted before it.
                    let want = model.get(&lba).cloned().unwrap_or_else(|| vec![0; BLOCK_SIZE]);
                    (read_req(lba, 1), Reply::Data(want))
                }
                _ => (request(&StorageRequest::Nop), Reply::Nop),
            };
            let seq = client.submit("storage_driver", &body).unwrap();
            expected.insert(seq, want);
            sent += 1;
        }
        max_in_flight = max_in_flight.max(client.in_flight());
        let c = client.wait().unwrap();
        let body = c.result.unwrap_or_else(|e| panic!("seq {} failed: {e}; log:\n{}", c.seq, rig.log()));
        let want = expected.remove(&c.seq).unwrap_or_else(|| panic!("seq {} answered twice", c.seq));
        assert_eq!(reply(&body), want, "seq {}", c.seq);
        done += 1;
    }
    while client.in_flight() > 0 {
        let c = client.wait().unwrap();
        let want = expected.remove(&c.seq).expect("answered once");
        assert_eq!(reply(&c.result.unwrap()), want);
        done += 1;
    }
    stop.store(true, Ordering::Relaxed);
    killer.join().unwrap();
    let kills = kills.load(Ordering::Relaxed);
    eprintln!(
        "chaos: {done} requests ({writes} writes), {kills} kills, {} restarts, {:?}",
        rig.status().restarts,
        t0.elapsed()
    );

    assert!(expected.is_empty(), "lost: {:?}", expected.keys().collect::<Vec<_>>());
    assert_eq!(done, sent);
    assert!(done >= REQUESTS && kills >= KILLS);
    assert!(max_in_flight >= 8);
    // The device equals the model, block by block.
    for lba in 0..LBAS {
        let want = model.get(&lba).cloned().unwrap_or_else(|| vec![0; BLOCK_SIZE]);
        assert!(rig.disk_block(lba) == want, "block {lba} differs from the model");
    }
    // Every write executed exactly once, by the exec log and by the device.
    let log = rig.exec_log();
    assert_eq!(assert_no_duplicate_execution(&log) as u64, writes);
    assert_eq!(rig.superblock().applied_count, writes);
    let st = rig.wait_status(Duration::from_secs(10), |s| s.restarts >= kills && s.state.name() == "running");
    assert!(st.is_some(), "every kill is followed by a restart; log:\n{}", rig.log());
    rig
}

#[test]
fn many_writes_of_the_same_block_replayed_stay_in_order() {
    // A smaller, deterministic variant: one block rewritten 200 times while
    // the driver is killed mid-stream; the last write wins.
    let mut rig = Rig::new("chaos-order", &[]);
    rig.start();
    let mut c = rig.client();
    for round in 0..4u8 {
        rig.inject(&format!("after-effect:{}:kill", 20 + u32::from(round)));
        for i in 0..50u8 {
            c.submit("storage_driver", &write_req(7, 1, round.wrapping_mul(50).wrapping_add(i))).unwrap();
        }
        while c.in_flight() > 0 {
            assert!(c.wait().unwrap().result.is_ok());
        }
    }
    assert_eq!(rig.disk_block(7), vec![3u8.wrapping_mul(50).wrapping_add(49); BLOCK_SIZE]);
    assert_eq!(rig.superblock().applied_count, 200);
    assert_eq!(rig.status().generation, 5);
}
