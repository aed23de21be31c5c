//! Sections 1 and 2: the request round trip (across cores and pinned to
//! one CPU) and throughput, against the raw two-hop relay.

use super::{Budget, Shared, pipelined, storage_body, storage_spec};
use crate::BenchError;
use crate::floors::{self, RawPath};
use crate::report::{Goal, Row};
use crate::rig::{Bins, Supervisor};
use crate::stats::{self, percentiles};
use nix::unistd::Pid;
use reinc_client::Client;
use std::path::Path;
use std::time::{Duration, Instant};
use storage_core::StorageRequest;

/// Rounds the measurements of sections 1 and 2 are split into, alternating
/// between the floors and the supervisor, so that a burst of load from
/// another tenant of the machine hits both sides of a ratio alike.
const ROUNDS: usize = 10;

/// Round trips of one raw hop, the raw relay and the supervisor (a storage
/// `Nop`), `samples` each, in [`ROUNDS`] interleaved rounds after a warm-up.
fn interleaved_rtt(
    raw: &mut RawPath,
    relay: &mut RawPath,
    client: &mut Client,
    samples: usize,
) -> Result<(stats::Percentiles, stats::Percentiles, stats::Percentiles), BenchError> {
    let nop = storage_body(&StorageRequest::Nop);
    let driver = "storage_driver";
    let mut sup_call = |n: usize| -> Result<Vec<Duration>, BenchError> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let r = client.call(driver, &nop).map_err(|e| BenchError::Client(e.to_string()))?;
            out.push(t.elapsed());
            r.map_err(|e| BenchError::Reply { driver: driver.into(), what: format!("Nop failed: {e}") })?;
        }
        Ok(out)
    };
    // Warm-up: page faults, first connections, CPU frequency.
    raw.round_trips(200)?;
    relay.round_trips(200)?;
    sup_call(200)?;
    let (mut raw_s, mut relay_s, mut sup_s) = (Vec::new(), Vec::new(), Vec::new());
    let per = (samples / ROUNDS).max(1);
    for _ in 0..ROUNDS {
        raw_s.extend(raw.round_trips(per)?);
        relay_s.extend(relay.round_trips(per)?);
        sup_s.extend(sup_call(per)?);
    }
    Ok((percentiles(&raw_s), percentiles(&relay_s), percentiles(&sup_s)))
}

/// Restores the calling thread's CPU affinity when dropped.
struct Pinned(nix::sched::CpuSet);

impl Pinned {
    /// Pins the calling thread, and so every process it starts from now on,
    /// to the first CPU it may run on.
    fn to_one_cpu() -> Result<(Self, usize), BenchError> {
        use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
        let me = Pid::from_raw(0);
        let old = sched_getaffinity(me).map_err(|e| BenchError::io("sched_getaffinity", e.into()))?;
        let cpu = (0..CpuSet::count())
            .find(|&c| old.is_set(c).unwrap_or(false))
            .ok_or_else(|| BenchError::Setup("no CPU in this process's affinity mask".into()))?;
        let mut one = CpuSet::new();
        one.set(cpu).map_err(|e| BenchError::io("CpuSet::set", e.into()))?;
        sched_setaffinity(me, &one).map_err(|e| BenchError::io(format!("pinning to CPU {cpu}"), e.into()))?;
        Ok((Self(old), cpu))
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = nix::sched::sched_setaffinity(Pid::from_raw(0), &self.0);
    }
}

/// Issue #18's targets for the request path: a round trip at most 1.25× the
/// raw two-hop relay (across cores and pinned to one CPU), and throughput
/// at 64 in flight at least 0.8× the relay. (The rows carried 2.5 and no
/// throughput goal before, from the first bench; they reported "met" for a
/// path the issue calls not lean enough.)
const ROUND_TRIP_TARGET: f64 = 1.25;
/// See [`ROUND_TRIP_TARGET`].
const THROUGHPUT_64_TARGET: f64 = 0.8;

/// Section 1 again with every process on one CPU: no cross-CPU wake-ups,
/// whose cost on a virtual machine swings with what the other vCPU is doing
/// (7 to 45 µs per wake-up was seen here), so this pair of figures compares
/// the software paths alone.
pub(super) fn round_trip_pinned(bins: &Bins, dir: &Path, b: &Budget) -> Result<Vec<Row>, BenchError> {
    let (pin, cpu) = Pinned::to_one_cpu()?;
    let mut raw = RawPath::direct(&bins.harness)?;
    let mut relay = RawPath::relay(&bins.harness)?;
    let sup = Supervisor::start(bins, dir, &[storage_spec(bins, dir, 1024)], Duration::from_secs(10))?;
    let mut client = sup.client()?;
    let (raw_rtt, relay_rtt, sup_rtt) = interleaved_rtt(&mut raw, &mut relay, &mut client, b.rtt_samples / 2)?;
    drop((raw, relay, client, sup));
    drop(pin);
    let on = format!("all processes on CPU {cpu}");
    Ok(vec![
        Row::new(
            1,
            "round trip p50, one CPU",
            sup_rtt.p50_us,
            "us",
            "raw two-hop relay p50, one CPU",
            relay_rtt.p50_us,
        )
        .goal(Goal::RatioAtMost(ROUND_TRIP_TARGET))
        .note(format!("{on}; {} samples each, {ROUNDS} interleaved rounds", sup_rtt.n)),
        Row::new(
            1,
            "round trip p99, one CPU",
            sup_rtt.p99_us,
            "us",
            "raw two-hop relay p99, one CPU",
            relay_rtt.p99_us,
        ),
        Row::new(
            1,
            "round trip p50 against one raw hop, one CPU",
            sup_rtt.p50_us,
            "us",
            "raw SOCK_SEQPACKET p50, one CPU",
            raw_rtt.p50_us,
        )
        .note(on),
    ])
}

/// Sections 1 and 2.
pub(super) fn round_trip_and_throughput(
    bins: &Bins,
    dir: &Path,
    b: &Budget,
    shared: &mut Shared,
) -> Result<Vec<Row>, BenchError> {
    let mut raw = RawPath::direct(&bins.harness)?;
    let mut relay = RawPath::relay(&bins.harness)?;
    // The supervisor's window is raised to 64 so that 64 in flight reach the
    // driver, as they reach the echo helper through the raw relay.
    let spec = storage_spec(bins, dir, 1024).set("window", 64);
    let sup = Supervisor::start(bins, dir, &[spec], Duration::from_secs(10))?;
    let mut client = sup.client()?;
    let nop = storage_body(&StorageRequest::Nop);
    let driver = "storage_driver";
    let (raw_rtt, relay_rtt, sup_rtt) = interleaved_rtt(&mut raw, &mut relay, &mut client, b.rtt_samples)?;
    drop(raw);
    let mut rows = vec![
        Row::new(
            1,
            "round trip p50 (Nop, client->sup->driver)",
            sup_rtt.p50_us,
            "us",
            "raw two-hop relay p50",
            relay_rtt.p50_us,
        )
        .goal(Goal::RatioAtMost(ROUND_TRIP_TARGET))
        .note(format!("{} samples each, one call at a time, {ROUNDS} interleaved rounds", sup_rtt.n)),
        Row::new(1, "round trip p99", sup_rtt.p99_us, "us", "raw two-hop relay p99", relay_rtt.p99_us),
        Row::new(
            1,
            "round trip p50 against one raw hop",
            sup_rtt.p50_us,
            "us",
            "raw SOCK_SEQPACKET p50",
            raw_rtt.p50_us,
        ),
        Row::new(
            1,
            "raw two-hop relay p50 (the floor itself)",
            relay_rtt.p50_us,
            "us",
            "raw SOCK_SEQPACKET p50",
            raw_rtt.p50_us,
        ),
    ];
    let names = [driver.to_owned()];
    let slice = b.tput / ROUNDS as u32;
    for depth in [1usize, 8, 64] {
        let (mut relay_rate, mut sup_rate) = (0.0, 0.0);
        let (mut relay_cpu, mut relay_msgs) = (Duration::ZERO, 0.0);
        for _ in 0..ROUNDS {
            let c0 = relay.relay_cpu();
            let r = relay.throughput(depth, floors::MSG_BYTES, slice)?;
            if let (Some(c0), Some(c1)) = (c0, relay.relay_cpu()) {
                relay_cpu += c1.saturating_sub(c0);
                relay_msgs += r * slice.as_secs_f64();
            }
            relay_rate += r / ROUNDS as f64;
            sup_rate += pipelined(&mut client, &names, &nop, depth, slice)? / ROUNDS as f64;
        }
        if depth == 8 {
            shared.relay_tput8 = relay_rate;
        }
        if depth == 64 {
            shared.relay_cpu_per_msg_us = relay_cpu.as_secs_f64() * 1e6 / relay_msgs.max(1.0);
        }
        let row = Row::new(
            2,
            &format!("throughput, {depth} in flight"),
            sup_rate,
            "req/s",
            &format!("raw relay, {depth} in flight"),
            relay_rate,
        )
        .note(format!("Nop; supervisor window = 64; {ROUNDS} interleaved rounds"));
        rows.push(if depth == 64 { row.goal(Goal::RatioAtLeast(THROUGHPUT_64_TARGET)) } else { row });
    }
    Ok(rows)
}
