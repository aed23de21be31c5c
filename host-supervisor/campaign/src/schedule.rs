//! The seeded, deterministic fault schedule.
//!
//! A schedule is a pure function of `(seed, count)`: [`schedule`] draws
//! every fault from a SplitMix64 stream seeded with `seed`, so the same
//! `--seed S --faults N` gives the same faults in the same order, and the
//! first `N` faults of a longer run are the faults of a shorter one (a
//! failure at fault index `i` reproduces with `--faults i+1`). Timing (when
//! in a driver's life a fault lands) comes from the live system and is not
//! part of the schedule.
//!
//! The first faults of every schedule walk the whole cross product once
//! (every crash point × every kind on every runtime driver, every init
//! kind, every signal, every misbehaviour, every resource fault, a
//! supervisor kill), so even a short run covers every class; the rest are drawn at random with weights.

use crate::misbehave::Misbehaviour;
use reinc_proto::{CrashKind, CrashPoint};

/// SplitMix64: small, fast, and every seed (0 included) gives a good stream.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A stream seeded with `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// One element of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// The drivers built on `reinc-runtime`, which take `drvctl inject` plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Target {
    /// `storage_driver` (file-backed block device).
    Storage,
    /// `net_driver` (loopback packet ring).
    Net,
    /// `reinc-bench-driver` (no device; state-only commits).
    Null,
    /// `reinc-misbehave-driver`.
    Misbehave,
}

impl Target {
    /// The configured driver name.
    #[must_use]
    pub fn driver(self) -> &'static str {
        match self {
            Self::Storage => "storage_driver",
            Self::Net => "net_driver",
            Self::Null => "bench_driver",
            Self::Misbehave => "misbehave_driver",
        }
    }
}

/// An external signal sent to a driver at a random moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum ExternalSignal {
    /// SIGKILL.
    Kill,
    /// SIGSEGV (sent, not a real fault).
    Segv,
    /// SIGBUS.
    Bus,
    /// SIGSTOP: the driver freezes; only the heartbeat can tell.
    Stop,
}

impl ExternalSignal {
    /// Every signal.
    pub const ALL: [Self; 4] = [Self::Kill, Self::Segv, Self::Bus, Self::Stop];

    /// The signal.
    #[must_use]
    pub fn signal(self) -> nix::sys::signal::Signal {
        use nix::sys::signal::Signal;
        match self {
            Self::Kill => Signal::SIGKILL,
            Self::Segv => Signal::SIGSEGV,
            Self::Bus => Signal::SIGBUS,
            Self::Stop => Signal::SIGSTOP,
        }
    }
}

/// One fault of the campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Fault {
    /// `drvctl inject`: crash at `point` of the `k`-th next request, by `kind`.
    Inject {
        /// Which driver.
        target: Target,
        /// Where (never `Init`: see [`Fault::InitCrash`]).
        point: CrashPoint,
        /// How.
        kind: CrashKind,
        /// On which request after arming (1-based).
        k: u32,
    },
    /// A driver launched with `fault = "init:1:KIND"` crashes at every Init:
    /// revived by an operator restart, it must end quarantined again.
    InitCrash {
        /// How it dies.
        kind: CrashKind,
    },
    /// `kill(2)` of the driver's pid after `delay_us` microseconds.
    Signal {
        /// Which driver.
        target: Target,
        /// Which signal.
        signal: ExternalSignal,
        /// Random moment: a delay before the signal.
        delay_us: u32,
    },
    /// The misbehaving driver is asked to misbehave.
    Misbehave(Misbehaviour),
    /// The bench driver's executable is unusable for its next launch.
    ExecFails,
    /// SIGKILL of the lane's supervisor after `delay_us` microseconds under
    /// load; a new one starts at once on the same config and runtime
    /// directory (systemd's `Restart=always`), recovers its journal and
    /// relaunches the drivers (the old ones died with it: PDEATHSIG).
    SupervisorKill {
        /// Random moment: a delay before the signal.
        delay_us: u32,
    },
    /// A bit flipped in a storage block: on the device, or in a request or
    /// reply on its way through the supervisor.
    StorageBitFlip {
        /// Which bit of the victim block.
        bit: u32,
        /// Where.
        place: FlipPlace,
    },
}

/// Where a storage bit flip lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum FlipPlace {
    /// In the device's backing file, after the block was written.
    Device,
    /// In a write request's data after the client computed its checksums
    /// (as if the supervisor's copy of it were damaged).
    Request,
    /// In a read reply's data before the client checks it (as if the
    /// supervisor's or the driver's copy were damaged after the driver read it).
    Reply,
}

impl FlipPlace {
    /// Every place.
    pub const ALL: [Self; 3] = [Self::Device, Self::Request, Self::Reply];

    /// Its name in fault classes.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Request => "request",
            Self::Reply => "reply",
        }
    }
}

/// The class (outcome-table row) of [`Fault::SupervisorKill`].
pub const SUPERVISOR_KILL: &str = "supervisor SIGKILL";

/// Crash points that can be armed in a live instance.
pub const LIVE_POINTS: [CrashPoint; 3] = [CrashPoint::BeforeEffect, CrashPoint::AfterEffect, CrashPoint::AfterReply];
/// Every crash kind.
pub const KINDS: [CrashKind; 6] =
    [CrashKind::Segv, CrashKind::Kill, CrashKind::Abrt, CrashKind::Panic, CrashKind::Exit, CrashKind::Hang];
/// Drivers that take injected plans.
pub const INJECT_TARGETS: [Target; 3] = [Target::Storage, Target::Net, Target::Null];
/// Drivers that get external signals.
pub const SIGNAL_TARGETS: [Target; 4] = [Target::Storage, Target::Net, Target::Null, Target::Misbehave];

impl Fault {
    /// The class it is reported under (one row of the outcome table).
    #[must_use]
    pub fn class(&self) -> String {
        match self {
            Self::Inject { point, kind, .. } => format!("inject {}:{}", point.name(), kind.name()),
            Self::InitCrash { kind } => format!("init crash loop:{}", kind.name()),
            Self::Signal { signal, .. } => format!("external {:?}", signal.signal()),
            Self::Misbehave(m) => format!("misbehave {}", m.name()),
            Self::ExecFails => "resource exec-fails".into(),
            Self::SupervisorKill { .. } => SUPERVISOR_KILL.into(),
            Self::StorageBitFlip { place, .. } => format!("swifi storage-{}-bit-flip", place.name()),
        }
    }

    /// The recovery-time CDF it belongs to (crash kind or signal), if any.
    #[must_use]
    pub fn recovery_kind(&self) -> Option<String> {
        match self {
            Self::Inject { kind, .. } => Some(kind.name().to_owned()),
            Self::Signal { signal, .. } => Some(format!("{:?}", signal.signal())),
            Self::SupervisorKill { .. } => Some(SUPERVISOR_KILL.into()),
            _ => None,
        }
    }

    /// The driver it hits.
    #[must_use]
    pub fn target(&self) -> Option<Target> {
        match self {
            Self::Inject { target, .. } | Self::Signal { target, .. } => Some(*target),
            Self::Misbehave(_) => Some(Target::Misbehave),
            Self::ExecFails => Some(Target::Null),
            Self::StorageBitFlip { .. } => Some(Target::Storage),
            Self::InitCrash { .. } | Self::SupervisorKill { .. } => None,
        }
    }
}

/// The cross product every schedule starts with.
fn coverage() -> Vec<Fault> {
    let mut v = Vec::new();
    for target in INJECT_TARGETS {
        for point in LIVE_POINTS {
            for kind in KINDS {
                v.push(Fault::Inject { target, point, kind, k: 1 });
            }
        }
    }
    for kind in KINDS {
        v.push(Fault::InitCrash { kind });
    }
    for target in SIGNAL_TARGETS {
        for signal in ExternalSignal::ALL {
            v.push(Fault::Signal { target, signal, delay_us: 0 });
        }
    }
    for m in Misbehaviour::ALL {
        v.push(Fault::Misbehave(m));
    }
    v.push(Fault::ExecFails);
    v.push(Fault::SupervisorKill { delay_us: 0 });
    for place in FlipPlace::ALL {
        v.push(Fault::StorageBitFlip { bit: 0, place });
    }
    v
}

/// One fault drawn at random. Weights favour the cheap crash faults (a
/// restart costs milliseconds) over the slow ones: a hang or SIGSTOP costs
/// the heartbeat timeout, an init crash loop several restarts, a
/// supervisor kill a journal recovery and the launch of every driver.
fn draw(rng: &mut Rng) -> Fault {
    let roll = rng.below(1000);
    match roll {
        0..=599 => {
            let kind = if rng.below(10) == 0 { CrashKind::Hang } else { rng.pick(&KINDS[..5]) };
            Fault::Inject {
                target: rng.pick(&INJECT_TARGETS),
                point: rng.pick(&LIVE_POINTS),
                kind,
                k: 1 + rng.below(3) as u32,
            }
        }
        600..=866 => {
            let signal = if rng.below(10) == 0 { ExternalSignal::Stop } else { rng.pick(&ExternalSignal::ALL[..3]) };
            Fault::Signal { target: rng.pick(&SIGNAL_TARGETS), signal, delay_us: rng.below(3000) as u32 }
        }
        867..=869 => Fault::SupervisorKill { delay_us: rng.below(20_000) as u32 },
        870..=979 => Fault::Misbehave(rng.pick(&Misbehaviour::ALL)),
        980..=987 => Fault::StorageBitFlip { bit: rng.below(64 * 8) as u32, place: rng.pick(&FlipPlace::ALL) },
        988..=994 => Fault::ExecFails,
        _ => Fault::InitCrash { kind: rng.pick(&KINDS) },
    }
}

/// The first `count` faults of the schedule for `seed`.
#[must_use]
pub fn schedule(seed: u64, count: usize) -> Vec<Fault> {
    schedule_where(seed, count, |_| true)
}

/// The first `count` faults of the schedule for `seed` that `keep` admits:
/// the same random stream as [`schedule`], with the refused faults left out
/// (so every other fault keeps its place relative to the rest).
#[must_use]
pub fn schedule_where(seed: u64, count: usize, keep: impl Fn(&Fault) -> bool) -> Vec<Fault> {
    let mut rng = Rng::new(seed);
    let mut v: Vec<Fault> = coverage();
    // The coverage walk in a seed-dependent order (Fisher–Yates).
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
    v.retain(|f| keep(f));
    v.truncate(count);
    while v.len() < count {
        let f = draw(&mut rng);
        if keep(&f) {
            v.push(f);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_schedule_without_supervisor_kills_is_the_same_schedule_with_them_left_out() {
        let all = schedule(20_090_629, 2000);
        let kill = |f: &Fault| matches!(f, Fault::SupervisorKill { .. });
        assert!(all.iter().any(kill), "the full schedule has supervisor kills");
        let without = schedule_where(20_090_629, 2000, |f| !kill(f));
        assert_eq!(without.len(), 2000);
        assert!(!without.iter().any(kill));
        let rest: Vec<Fault> = all.iter().filter(|f| !kill(f)).copied().collect();
        assert_eq!(without[..rest.len()], rest[..], "the other faults keep their order");
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_a_prefix_of_a_longer_one() {
        assert_eq!(schedule(42, 500), schedule(42, 500));
        assert_eq!(schedule(42, 300)[..], schedule(42, 500)[..300]);
        assert_ne!(schedule(42, 500), schedule(43, 500));
    }

    #[test]
    fn every_point_times_every_kind_is_in_the_first_faults_of_any_schedule() {
        let n = coverage().len();
        for seed in [0, 1, u64::MAX] {
            let s = schedule(seed, n);
            let injected: BTreeSet<(String, String)> = s
                .iter()
                .filter_map(|f| match f {
                    Fault::Inject { point, kind, .. } => Some((point.name().into(), kind.name().into())),
                    _ => None,
                })
                .collect();
            assert_eq!(injected.len(), LIVE_POINTS.len() * KINDS.len());
            let classes: BTreeSet<String> = s.iter().map(Fault::class).collect();
            for m in Misbehaviour::ALL {
                assert!(classes.contains(&format!("misbehave {}", m.name())), "{m:?}");
            }
            for k in KINDS {
                assert!(classes.contains(&format!("init crash loop:{}", k.name())));
            }
            assert!(classes.contains("resource exec-fails") && classes.contains("external SIGSTOP"));
        }
    }

    #[test]
    fn every_schedule_as_long_as_the_coverage_walk_kills_the_supervisor_and_random_faults_do_too() {
        let n = coverage().len();
        for seed in [0, 1, 20_090_629, u64::MAX] {
            let kills = schedule(seed, n).iter().filter(|f| matches!(f, Fault::SupervisorKill { .. })).count();
            assert_eq!(kills, 1, "seed {seed}: one supervisor kill in the coverage walk");
        }
        let drawn: Vec<u32> = schedule(7, 20_000)[n..]
            .iter()
            .filter_map(|f| match f {
                Fault::SupervisorKill { delay_us } => Some(*delay_us),
                _ => None,
            })
            .collect();
        // Weight 3 in 1000: about 60 of 20 000, at seeded random moments.
        assert!((30..=100).contains(&drawn.len()), "{} supervisor kills drawn", drawn.len());
        assert!(drawn.iter().collect::<BTreeSet<_>>().len() > drawn.len() / 2, "delays vary: {drawn:?}");
        assert_eq!(Fault::SupervisorKill { delay_us: 5 }.class(), SUPERVISOR_KILL);
    }

    #[test]
    fn random_faults_hit_every_class_with_a_positive_weight() {
        let s = schedule(7, 20_000);
        let classes: BTreeSet<String> = s[coverage().len()..].iter().map(Fault::class).collect();
        assert!(classes.contains("resource exec-fails"));
        assert!(classes.contains("swifi storage-device-bit-flip"));
        assert!(classes.contains("external SIGBUS"));
        assert!(classes.iter().any(|c| c.starts_with("init crash loop")));
        assert!(classes.iter().any(|c| c.ends_with(":hang")));
    }
}
