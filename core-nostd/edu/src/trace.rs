//! Post-mortem trace of the edu core: the [`Trace`] entries of the device
//! operations and, from one table, their ring-buffer codes and
//! [`TRACE_LEGEND`].

/// Post-mortem trace of device operations (Hubris style: one enum per module).
/// [`Trace::encode`] turns an entry into the runtime's generic
/// `Driver { code, a, b }` trace event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Trace {
    /// The id register was read.
    Identified {
        /// Its value.
        id: u32,
    },
    /// A liveness probe.
    Liveness {
        /// Written.
        probe: u32,
        /// Read back.
        got: u32,
    },
    /// A factorial was started.
    FactorialStart {
        /// The input.
        n: u32,
        /// Whether completion is signalled by interrupt.
        irq: bool,
    },
    /// A factorial result was read.
    FactorialDone {
        /// The input.
        n: u32,
        /// The result.
        value: u32,
    },
    /// A factorial result was read after its interrupt.
    FactorialIrqDone {
        /// The result.
        value: u32,
    },
    /// Interrupt bits were raised.
    Raised {
        /// The bits.
        bits: u32,
    },
    /// Interrupt bits were acknowledged.
    Acked {
        /// The bits.
        bits: u32,
    },
    /// A wait ran out of budget.
    SpinTimeout {
        /// Status reads spent.
        spins: u32,
    },
    /// The device was put into a known state.
    Recovered {
        /// Interrupt bits that were pending and got acknowledged.
        acked: u32,
        /// Whether a computation was running.
        was_computing: bool,
    },
}

impl Trace {
    /// `(code, a, b)` for the runtime's `Event::Driver` record.
    #[must_use]
    pub const fn encode(&self) -> (u16, u64, u64) {
        match *self {
            Self::Identified { id } => (code::IDENTIFIED, id as u64, 0),
            Self::Liveness { probe, got } => (code::LIVENESS, probe as u64, got as u64),
            Self::FactorialStart { n, irq } => (code::FACTORIAL_START, n as u64, irq as u64),
            Self::FactorialDone { n, value } => (code::FACTORIAL_DONE, n as u64, value as u64),
            Self::Raised { bits } => (code::RAISED, bits as u64, 0),
            Self::Acked { bits } => (code::ACKED, bits as u64, 0),
            Self::SpinTimeout { spins } => (code::SPIN_TIMEOUT, spins as u64, 0),
            Self::Recovered { acked, was_computing } => (code::RECOVERED, acked as u64, was_computing as u64),
            Self::FactorialIrqDone { value } => (code::FACTORIAL_IRQ_DONE, value as u64, 0),
        }
    }
}

reinc_ringbuf::trace_legend! {
    /// The trace codes, one table with `TRACE_LEGEND`: `Trace` emits only
    /// these constants (the host driver registers the legend as its
    /// `TRACE_LEGEND`). A test checks that every variant's code is named.
    pub mod code, pub const TRACE_LEGEND = "edu" {
        IDENTIFIED = 1 => "identified"("id", ""),
        LIVENESS = 2 => "liveness"("probe", "got"),
        FACTORIAL_START = 3 => "factorial_start"("n", "irq"),
        FACTORIAL_DONE = 4 => "factorial_done"("n", "value"),
        RAISED = 5 => "raised"("bits", ""),
        ACKED = 6 => "acked"("bits", ""),
        SPIN_TIMEOUT = 7 => "spin_timeout"("spins", ""),
        RECOVERED = 8 => "recovered"("acked", "was_computing"),
        FACTORIAL_IRQ_DONE = 9 => "factorial_irq_done"("value", ""),
    }
}

#[cfg(test)]
mod legend_tests {
    use super::*;

    /// Fails to compile when a variant is added, so the sample list below grows with the enum.
    fn sample(t: Trace) -> Trace {
        match t {
            Trace::Identified { .. }
            | Trace::Liveness { .. }
            | Trace::FactorialStart { .. }
            | Trace::FactorialDone { .. }
            | Trace::FactorialIrqDone { .. }
            | Trace::Raised { .. }
            | Trace::Acked { .. }
            | Trace::SpinTimeout { .. }
            | Trace::Recovered { .. } => t,
        }
    }

    #[test]
    fn every_trace_code_is_named_in_the_legend() {
        let all = [
            Trace::Identified { id: 1 },
            Trace::Liveness { probe: 1, got: 1 },
            Trace::FactorialStart { n: 1, irq: true },
            Trace::FactorialDone { n: 1, value: 1 },
            Trace::FactorialIrqDone { value: 1 },
            Trace::Raised { bits: 1 },
            Trace::Acked { bits: 1 },
            Trace::SpinTimeout { spins: 1 },
            Trace::Recovered { acked: 1, was_computing: true },
        ];
        for t in all.map(sample) {
            let (code, _, _) = t.encode();
            assert!(TRACE_LEGEND.get(code).is_some(), "{t:?}: code {code:#06x} missing from TRACE_LEGEND");
        }
        assert_eq!(TRACE_LEGEND.entries.len(), all.len(), "legend has codes no Trace variant uses");
    }
}
