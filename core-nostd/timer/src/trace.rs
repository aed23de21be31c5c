//! Post-mortem trace of the timer core: the [`Trace`] entries and, from one
//! table, their ring-buffer codes and [`TRACE_LEGEND`].

use crate::handler::{Effect, TimerError};
use crate::regs::{Channel, Match};

/// Post-mortem trace entries of the timer core (Hubris style).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trace {
    /// An effect reached the device.
    Applied(Effect),
    /// A read-only request was answered.
    Observed,
    /// A `Wait` found its deadline not yet reached.
    Blocked(Channel),
    /// A request was refused before any register write.
    Refused(TimerError),
    /// An interrupt was acknowledged: these match bits were cleared.
    Acknowledged(Match),
    /// A checkpoint was re-applied.
    Restored {
        /// Channels re-armed.
        armed: Match,
    },
}

impl Trace {
    /// The entry as a generic driver event for the shared trace ring: `code`
    /// is `0x7100 + kind`.
    #[must_use]
    pub fn event(&self) -> reinc_ringbuf::Event {
        let (code, a, b) = match *self {
            Trace::Applied(Effect::Arm { channel, at }) => (code::ARM, u64::from(channel.number()), at),
            Trace::Applied(Effect::ClearMatch(channel)) => (code::CLEAR_MATCH, u64::from(channel.number()), 0),
            Trace::Observed => (code::OBSERVED, 0, 0),
            Trace::Blocked(channel) => (code::BLOCKED, u64::from(channel.number()), 0),
            Trace::Refused(e) => (code::REFUSED, e.channel().map_or(u64::MAX, u64::from), 0),
            Trace::Acknowledged(m) => (code::ACKNOWLEDGED, u64::from(m.bits()), 0),
            Trace::Restored { armed } => (code::RESTORED, u64::from(armed.bits()), 0),
        };
        reinc_ringbuf::Event::Driver { code, a, b }
    }
}

reinc_ringbuf::trace_legend! {
    /// The trace codes, one table with `TRACE_LEGEND`: `Trace` emits only
    /// these constants (the host driver registers the legend as its
    /// `TRACE_LEGEND`). A test checks that every variant's code is named.
    pub mod code, pub const TRACE_LEGEND = "timer" {
        ARM = 0x7101 => "arm"("channel", "at"),
        CLEAR_MATCH = 0x7102 => "clear_match"("channel", ""),
        OBSERVED = 0x7103 => "observed"("", ""),
        BLOCKED = 0x7104 => "blocked"("channel", ""),
        REFUSED = 0x7105 => "refused"("channel", ""),
        ACKNOWLEDGED = 0x7106 => "acknowledged"("match", ""),
        RESTORED = 0x7107 => "restored"("armed", ""),
    }
}

#[cfg(test)]
mod legend_tests {
    use super::*;

    /// Fails to compile when a variant is added, so the sample list below grows with the enum.
    fn sample(t: Trace) -> Trace {
        match t {
            Trace::Applied(Effect::Arm { .. } | Effect::ClearMatch(_))
            | Trace::Observed
            | Trace::Blocked(_)
            | Trace::Refused(_)
            | Trace::Acknowledged(_)
            | Trace::Restored { .. } => t,
        }
    }

    #[test]
    fn every_trace_code_is_named_in_the_legend() {
        let channel = Channel::new(1).unwrap();
        let all = [
            Trace::Applied(Effect::Arm { channel, at: 1 }),
            Trace::Applied(Effect::ClearMatch(channel)),
            Trace::Observed,
            Trace::Blocked(channel),
            Trace::Refused(TimerError::InvalidChannel { channel: 9 }),
            Trace::Acknowledged(Match::empty()),
            Trace::Restored { armed: Match::empty() },
        ];
        for t in all.map(sample) {
            let reinc_ringbuf::Event::Driver { code, .. } = t.event() else { panic!("{t:?} is not a driver event") };
            assert!(TRACE_LEGEND.get(code).is_some(), "{t:?}: code {code:#06x} missing from TRACE_LEGEND");
        }
        assert_eq!(TRACE_LEGEND.entries.len(), all.len(), "legend has codes no Trace variant uses");
    }
}
