//! The storage core's trace (Hubris style: one `Trace` enum per module, kept
//! in a small ring inside [`crate::Storage`]; the host driver also forwards
//! each entry to the runtime's shared ring as [`Event::Driver`]).

use crate::{Effect, Outcome, StorageError, StorageReply, StorageRequest};
use reinc_ringbuf::Event;

/// Entries kept by [`crate::Storage::trace`].
pub const TRACE_SLOTS: usize = 32;

reinc_ringbuf::trace_legend! {
    /// The trace codes, one table with `TRACE_LEGEND`: `Trace` emits only
    /// these constants (the host driver registers the legend as its
    /// `TRACE_LEGEND`). A test checks that every variant's code is named.
    pub mod code, pub const TRACE_LEGEND = "storage" {
        FORMATTED = 0x5101 => "formatted"("blocks", ""),
        OPENED = 0x5102 => "opened"("applied_count", ""),
        APPLIED = 0x5103 => "applied"("lba", "blocks"),
        ALREADY_APPLIED = 0x5104 => "already_applied"("lba", "blocks"),
        READ = 0x5105 => "read"("lba", "blocks"),
        REFUSED = 0x5106 => "refused"("error", "detail"),
        IO_FAILED = 0x5107 => "io_failed"("off", ""),
    }
}

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
            // A zero request is a write for the trace too (at most
            // MAX_ZERO_BLOCKS = 8192 blocks, which fits).
            (_, StorageReply::Zeroed { lba, blocks }, effect) => {
                let blocks = u16::try_from(blocks).unwrap_or(u16::MAX);
                Some(if effect == Effect::Applied {
                    Self::Applied { lba, blocks }
                } else {
                    Self::AlreadyApplied { lba, blocks }
                })
            }
            _ => None,
        }
    }

    /// As a runtime trace event: the variant's `code` constant, `a`/`b` its fields
    /// (for `Refused`, `a` is the error's number).
    #[must_use]
    pub fn event(&self) -> Event {
        let (code, a, b) = match *self {
            Self::Formatted { blocks } => (code::FORMATTED, blocks, 0),
            Self::Opened { applied_count } => (code::OPENED, applied_count, 0),
            Self::Applied { lba, blocks } => (code::APPLIED, lba, u64::from(blocks)),
            Self::AlreadyApplied { lba, blocks } => (code::ALREADY_APPLIED, lba, u64::from(blocks)),
            Self::Read { lba, blocks } => (code::READ, lba, u64::from(blocks)),
            Self::Refused(e) => {
                let (n, detail) = match e {
                    StorageError::BadRequest => (1, 0),
                    StorageError::Empty => (2, 0),
                    StorageError::Unaligned { len } => (3, u64::from(len)),
                    StorageError::TooLarge { blocks } => (4, u64::from(blocks)),
                    StorageError::OutOfRange { lba, .. } => (5, lba),
                    StorageError::NoSpace { cursor, .. } => (6, cursor),
                    StorageError::BulkTooLarge { blocks } => (7, u64::from(blocks)),
                    StorageError::NoPool => (8, 0),
                    StorageError::PoolRange { pool_offset, .. } => (9, pool_offset),
                    StorageError::PoolFault => (10, 0),
                    StorageError::Corrupt { lba, .. } => (11, lba),
                    StorageError::Tags { len, .. } => (12, u64::from(len)),
                };
                (code::REFUSED, n, detail)
            }
            Self::IoFailed { off } => (code::IO_FAILED, off, 0),
        };
        Event::Driver { code, a, b }
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
