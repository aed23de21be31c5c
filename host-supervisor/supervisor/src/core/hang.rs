//! The hang verdict: a driver that missed `heartbeat-misses` pings in a row
//! hung, or it only waited for a CPU.
//!
//! # Why
//! A heartbeat proves that the driver's loop runs. On a loaded machine (a
//! Raspberry Pi building something, a CI runner with other tenants, eight
//! supervisors on two cores in the reliability campaign) a healthy driver can
//! sit on the run queue for longer than `interval × misses`. Killing it then
//! costs a restart and the replay of its queue; and when the same request is
//! in flight at three such kills, it is poisoned although nothing is wrong
//! with it. The campaign found exactly that (seed 15, fault 44 972, 20 ms
//! heartbeats at load average 50), and
//! `tests/tests/starvation.rs` reproduces it with a driver given the idle
//! scheduling policy on a CPU that two threads keep busy.
//!
//! # The rule
//! At the first unanswered ping the core asks the daemon for the instance's
//! scheduling figures ([`Action::ProbeSched`], answered by [`Event::Sched`]
//! from `/proc/<pid>/stat` and `/proc/<pid>/schedstat`), and again when the
//! misses reach the limit. Over that window the instance was **starved** if
//! it ran less than half of it *and* it waited for a CPU: either the waits
//! that ended fill at least half the window, or it is runnable (`R`) right
//! now, i.e. waiting still (the kernel adds a wait to `schedstat` only when
//! it ends). Anything else is a hang:
//! - asleep without answering (blocked in a read, a lock, a sleep): it
//!   neither ran nor waited;
//! - stopped (`SIGSTOP`, a debugger): state `T`;
//! - spinning: it ran;
//! - no figures (the kernel has no `schedstat`, or the process is gone).
//!
//! A starved instance keeps running and gets one more interval before the
//! next verdict, for at most `starved-grace-ms` in all from its first
//! starved verdict; past that it is killed as hung, starved or not. Every
//! starved verdict counts in `reinc_driver_starved_total` (`drvctl
//! metrics`); a `[SUP]` line says so at the first verdict of an episode, at
//! most once per 10 s per driver. `starved-grace-ms = 0`
//! turns the probe off: every verdict is "hung", as before this module.
//!
//! # Designs rejected
//! - Longer heartbeats by default: they slow the detection of real hangs
//!   everywhere to cover load that only some machines have.
//! - Counting a hang kill less towards poisoning: a request that really
//!   hangs every instance must still be poisoned, and the kill itself (a
//!   restart, a replay) is already the harm.
//! - Reading `/proc` in the core, or deciding in the daemon: the core stays
//!   pure ([`crate::core`]), and the daemon only reports figures.
//! - A sample at every ping, for a baseline that is always fresh: one `/proc`
//!   read per heartbeat per driver, for the rare case of a miss.
//! - `heartbeat-misses = 1`: its first miss is its verdict, so there is no
//!   baseline to compare with, and the verdict is "hung".

use super::{Action, DriverId, Phase, SchedSample, Supervisor};
use reinc_policy::Millis;
use reinc_proto::Generation;

/// Per instance: what the verdict compares with, and the grace used.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct HangWatch {
    /// Figures at the start of the window of misses.
    base: Option<(Millis, SchedSample)>,
    /// A verdict probe is out.
    pending: bool,
    /// First starved verdict of the current episode of misses.
    starved_since: Option<Millis>,
}

impl HangWatch {
    /// A ping was answered: the episode is over.
    pub(super) fn reset(&mut self) {
        *self = Self::default();
    }

    /// The misses reached the limit: whether to ask for figures before
    /// killing (probing is on and there is a baseline to compare with).
    pub(super) fn wants_verdict(&mut self, grace: Millis) -> bool {
        if grace == Millis::ZERO || self.base.is_none() {
            return false;
        }
        self.pending = true;
        true
    }
}

/// How a starved window looked, for the `[SUP]` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Starved {
    pub(super) window_ms: u64,
    pub(super) ran_ms: u64,
    pub(super) waited_ms: u64,
}

/// The rule of the module docs over the window from `base` to `now`:
/// `Some` if the instance was starved, `None` if it hung.
pub(super) fn starved(base: (Millis, SchedSample), now: Millis, cur: SchedSample) -> Option<Starved> {
    let window_ns = now.since(base.0).0.saturating_mul(1_000_000);
    let ran = cur.ran_ns.saturating_sub(base.1.ran_ns);
    let waited = cur.waited_ns.saturating_sub(base.1.waited_ns);
    let waiting = cur.runnable || waited.saturating_mul(2) >= window_ns;
    (window_ns > 0 && ran.saturating_mul(2) < window_ns && waiting).then_some(Starved {
        window_ms: window_ns / 1_000_000,
        ran_ms: ran / 1_000_000,
        waited_ms: waited / 1_000_000,
    })
}

impl Supervisor {
    /// [`super::Event::Sched`]: a baseline, or the figures for a verdict.
    pub(super) fn on_sched(
        &mut self,
        now: Millis,
        id: DriverId,
        generation: Generation,
        sample: Option<SchedSample>,
        out: &mut Vec<Action>,
    ) {
        let d = &mut self.drivers[id.0];
        if !matches!(d.phase, Phase::Running { .. }) {
            return;
        }
        let (grace, allowed, name) = (d.cfg.starved_grace, d.cfg.heartbeat_misses, d.cfg.name.clone());
        let Some(inst) = d.instance.as_mut().filter(|i| i.generation == generation && i.killed_for.is_none()) else {
            return;
        };
        let watch = &mut inst.hang;
        if !std::mem::take(&mut watch.pending) {
            if inst.missed > 0 {
                watch.base = sample.map(|s| (now, s));
            }
            return;
        }
        let verdict = match (watch.base, sample) {
            (Some(base), Some(cur)) => starved(base, now, cur).map(|s| (s, cur)),
            _ => None,
        };
        let missed = inst.missed;
        match verdict {
            Some((s, cur)) if watch.starved_since.is_none_or(|t| now.since(t) < grace) => {
                let first = watch.starved_since.is_none();
                watch.starved_since.get_or_insert(now);
                watch.base = Some((now, cur));
                inst.missed = allowed.saturating_sub(1);
                let (say, total) = self.count_starved(id, now);
                if first && say {
                    out.push(Action::Say(format!(
                        "{name} missed {missed} heartbeats waiting for a CPU (ran {} ms and waited {} ms of the \
                         last {} ms): starved, not hung; it gets up to {grace} more ({total} such verdicts so far)",
                        s.ran_ms, s.waited_ms, s.window_ms
                    )));
                }
            }
            Some(_) => {
                let reason = format!("hung (missed {missed} heartbeats; starved of CPU for over {grace})");
                self.kill_hung(id, reason, out);
            }
            None => self.kill_hung(id, format!("hung (missed {missed} heartbeats)"), out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(runnable: bool, ran_ms: u64, waited_ms: u64) -> SchedSample {
        SchedSample { runnable, ran_ns: ran_ms * 1_000_000, waited_ns: waited_ms * 1_000_000 }
    }

    #[test]
    fn waiting_for_a_cpu_without_running_is_starvation() {
        let base = (Millis(1_000), at(false, 50, 10));
        // Runnable now (still waiting), barely ran.
        assert_eq!(
            starved(base, Millis(1_060), at(true, 51, 10)),
            Some(Starved { window_ms: 60, ran_ms: 1, waited_ms: 0 })
        );
        // Not runnable now, but the waits that ended fill the window.
        assert!(starved(base, Millis(1_060), at(false, 55, 50)).is_some());
    }

    #[test]
    fn sleeping_stopped_or_spinning_is_a_hang() {
        let base = (Millis(1_000), at(false, 50, 10));
        // Asleep (or stopped): neither ran nor waited.
        assert_eq!(starved(base, Millis(1_060), at(false, 50, 10)), None);
        // Spinning: runnable, and it ran most of the window.
        assert_eq!(starved(base, Millis(1_060), at(true, 100, 15)), None);
        // No time passed: nothing to judge.
        assert_eq!(starved(base, Millis(1_000), at(true, 50, 10)), None);
    }
}
