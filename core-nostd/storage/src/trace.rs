//! The storage core's trace (Hubris style: one `Trace` enum per module, kept
//! in a small ring inside [`crate::Storage`]; the host driver also forwards
//! each entry to the runtime's shared ring as [`Event::Driver`]).

use crate::{Effect, Outcome, StorageError, StorageReply, StorageRequest};
use reinc_ringbuf::{Event, Legend, LegendEntry};

/// Entries kept by [`crate::Storage::trace`].
pub const TRACE_SLOTS: usize = 32;

/// Names of the codes of [`Trace::event`], for the shared trace ring (the
/// host driver registers it as its `TRACE_LEGEND`). A test checks that every
/// variant's code is here.
pub const TRACE_LEGEND: Legend = Legend {
    subsystem: "storage",
    entries: &[
        LegendEntry::new(0x5101, "formatted", "blocks", ""),
        LegendEntry::new(0x5102, "opened", "applied_count", ""),
        LegendEntry::new(0x5103, "applied", "lba", "blocks"),
        LegendEntry::new(0x5104, "already_applied", "lba", "blocks"),
        LegendEntry::new(0x5105, "read", "lba", "blocks"),
        LegendEntry::new(0x5106, "refused", "error", "detail"),
        LegendEntry::new(0x5107, "io_failed", "off", ""),
    ],
};
const _: () = assert!(TRACE_LEGEND.check().is_ok());

/// One thing the storage core did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trace {
    /// A blank region was formatted.
    Formatted {
        /// Data blocks.
        blocks: u64,
    },
    /// A formatted region was opened.
    Opened {
        /// Its `applied_count`.
        applied_count: u64,
    },
    /// Data written and the watermark advanced.
    Applied {
        /// First block.
        lba: u64,
        /// Blocks.
        blocks: u16,
    },
    /// A replay of the watermarked request: nothing written.
    AlreadyApplied {
        /// First block.
        lba: u64,
        /// Blocks.
        blocks: u16,
    },
    /// Blocks read.
    Read {
        /// First block.
        lba: u64,
        /// Blocks.
        blocks: u16,
    },
    /// A request was refused.
    Refused(StorageError),
    /// The region failed at this byte offset (`u64::MAX`: reply buffer too small).
    IoFailed {
        /// Offset.
        off: u64,
    },
}

impl Trace {
    /// The entry a request's outcome deserves (none for `Nop`/`Geometry`).
    #[must_use]
    pub fn of(req: &StorageRequest<'_>, out: &Outcome<'_>) -> Option<Self> {
        match (*req, out.reply, out.effect) {
            (_, StorageReply::Error(e), _) => Some(Self::Refused(e)),
            (StorageRequest::Read { lba, blocks }, _, _) => Some(Self::Read { lba, blocks }),
            (_, StorageReply::Written { lba, blocks } | StorageReply::Appended { lba, blocks }, Effect::Applied) => {
                Some(Self::Applied { lba, blocks })
            }
            (_, StorageReply::Written { lba, blocks } | StorageReply::Appended { lba, blocks }, _) => {
                Some(Self::AlreadyApplied { lba, blocks })
            }
            _ => None,
        }
    }

    /// As a runtime trace event: code `0x51NN`, where `NN` is the variant
    /// (1 Formatted, 2 Opened, 3 Applied, 4 AlreadyApplied, 5 Read,
    /// 6 Refused with `a` = the error's number, 7 IoFailed), `a`/`b` its fields.
    #[must_use]
    pub fn event(&self) -> Event {
        let (code, a, b) = match *self {
            Self::Formatted { blocks } => (1, blocks, 0),
            Self::Opened { applied_count } => (2, applied_count, 0),
            Self::Applied { lba, blocks } => (3, lba, u64::from(blocks)),
            Self::AlreadyApplied { lba, blocks } => (4, lba, u64::from(blocks)),
            Self::Read { lba, blocks } => (5, lba, u64::from(blocks)),
            Self::Refused(e) => {
                let (n, detail) = match e {
                    StorageError::BadRequest => (1, 0),
                    StorageError::Empty => (2, 0),
                    StorageError::Unaligned { len } => (3, u64::from(len)),
                    StorageError::TooLarge { blocks } => (4, u64::from(blocks)),
                    StorageError::OutOfRange { lba, .. } => (5, lba),
                    StorageError::NoSpace { cursor, .. } => (6, cursor),
                };
                (6, n, detail)
            }
            Self::IoFailed { off } => (7, off, 0),
        };
        Event::Driver { code: 0x5100 | code, a, b }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails to compile when a variant is added, so the sample list below grows with the enum.
    fn sample(t: Trace) -> Trace {
        match t {
            Trace::Formatted { .. }
            | Trace::Opened { .. }
            | Trace::Applied { .. }
            | Trace::AlreadyApplied { .. }
            | Trace::Read { .. }
            | Trace::Refused(_)
            | Trace::IoFailed { .. } => t,
        }
    }

    #[test]
    fn every_trace_code_is_named_in_the_legend() {
        let all = [
            Trace::Formatted { blocks: 1 },
            Trace::Opened { applied_count: 1 },
            Trace::Applied { lba: 1, blocks: 1 },
            Trace::AlreadyApplied { lba: 1, blocks: 1 },
            Trace::Read { lba: 1, blocks: 1 },
            Trace::Refused(StorageError::BadRequest),
            Trace::IoFailed { off: 1 },
        ];
        for t in all.map(sample) {
            let Event::Driver { code, .. } = t.event() else { panic!("{t:?} is not a driver event") };
            assert!(TRACE_LEGEND.get(code).is_some(), "{t:?}: code {code:#06x} missing from TRACE_LEGEND");
        }
        assert_eq!(TRACE_LEGEND.entries.len(), all.len(), "legend has codes no Trace variant uses");
    }
}
