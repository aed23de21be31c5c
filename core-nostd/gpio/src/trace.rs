//! Post-mortem trace of the GPIO core: the [`Trace`] entries and, from one
//! table, their ring-buffer codes and [`TRACE_LEGEND`].

use crate::GpioError;
use crate::handler::Effect;
use crate::pin::PinSet;

/// Post-mortem trace entries of the GPIO core (Hubris style): what the last
/// requests did to the device. The driver runtime records them in its trace
/// ring through [`Trace::event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trace {
    /// An effect reached the device.
    Applied(Effect),
    /// A read-only request was answered.
    Observed,
    /// A request was refused before any register access.
    Refused(GpioError),
    /// A checkpoint was re-applied to the device.
    Restored {
        /// Pins whose configuration was re-applied.
        pins: PinSet,
    },
}

impl Trace {
    /// The entry as a generic driver event for the shared trace ring: `code`
    /// is `0x6100 + kind`, `a` is the pin (or pin set), `b` the value written.
    #[must_use]
    pub fn event(&self) -> reinc_ringbuf::Event {
        let (code, a, b) = match *self {
            Trace::Applied(Effect::Direction { pin, dir }) => (code::DIRECTION, u64::from(pin.number()), dir as u64),
            Trace::Applied(Effect::Level { pin, level }) => (code::LEVEL, u64::from(pin.number()), level as u64),
            Trace::Applied(Effect::Detect { pin, detect }) => {
                (code::DETECT, u64::from(pin.number()), u64::from(detect.bits()))
            }
            Trace::Applied(Effect::ClearEvents(pins)) => (code::CLEAR_EVENTS, pins.bits(), 0),
            Trace::Observed => (code::OBSERVED, 0, 0),
            Trace::Refused(e) => (code::REFUSED, e.pin().map_or(u64::MAX, u64::from), 0),
            Trace::Restored { pins } => (code::RESTORED, pins.bits(), 0),
        };
        reinc_ringbuf::Event::Driver { code, a, b }
    }
}

reinc_ringbuf::trace_legend! {
    /// The trace codes, one table with `TRACE_LEGEND`: `Trace` emits only
    /// these constants (the host driver registers the legend as its
    /// `TRACE_LEGEND`). A test checks that every variant's code is named.
    pub mod code, pub const TRACE_LEGEND = "gpio" {
        DIRECTION = 0x6101 => "direction"("pin", "dir"),
        LEVEL = 0x6102 => "level"("pin", "level"),
        DETECT = 0x6103 => "detect"("pin", "detect"),
        CLEAR_EVENTS = 0x6104 => "clear_events"("pins", ""),
        OBSERVED = 0x6105 => "observed"("", ""),
        REFUSED = 0x6106 => "refused"("pin", ""),
        RESTORED = 0x6107 => "restored"("pins", ""),
    }
}

#[cfg(test)]
mod legend_tests {
    use super::*;
    use crate::pin::{Detect, Direction, Level, Pin};

    /// Fails to compile when a variant is added, so the sample list below grows with the enum.
    fn sample(t: Trace) -> Trace {
        match t {
            Trace::Applied(Effect::Direction { .. } | Effect::Level { .. } | Effect::Detect { .. })
            | Trace::Applied(Effect::ClearEvents(_))
            | Trace::Observed
            | Trace::Refused(_)
            | Trace::Restored { .. } => t,
        }
    }

    #[test]
    fn every_trace_code_is_named_in_the_legend() {
        let pin = Pin::new(4).unwrap();
        let pins = PinSet::from_bits(0b1_0000).unwrap();
        let all = [
            Trace::Applied(Effect::Direction { pin, dir: Direction::Output }),
            Trace::Applied(Effect::Level { pin, level: Level::High }),
            Trace::Applied(Effect::Detect { pin, detect: Detect::RISING }),
            Trace::Applied(Effect::ClearEvents(pins)),
            Trace::Observed,
            Trace::Refused(GpioError::InvalidPin { pin: 99 }),
            Trace::Restored { pins },
        ];
        for t in all.map(sample) {
            let reinc_ringbuf::Event::Driver { code, .. } = t.event() else { panic!("{t:?} is not a driver event") };
            assert!(TRACE_LEGEND.get(code).is_some(), "{t:?}: code {code:#06x} missing from TRACE_LEGEND");
        }
        assert_eq!(TRACE_LEGEND.entries.len(), all.len(), "legend has codes no Trace variant uses");
    }
}
