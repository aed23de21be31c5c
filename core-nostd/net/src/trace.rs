//! The loopback core's trace (Hubris style: one `Trace` enum per module, kept
//! in a small ring inside [`crate::Net`]; the host driver also forwards each
//! entry to the runtime's shared ring as [`Event::Driver`]).

use crate::{Effect, NetError, NetReply, Outcome};
use reinc_ringbuf::Event;

/// Entries kept by [`crate::Net::trace`].
pub const TRACE_SLOTS: usize = 32;

reinc_ringbuf::trace_legend! {
    /// The trace codes, one table with `TRACE_LEGEND`: `Trace` emits only
    /// these constants (the host driver registers the legend as its
    /// `TRACE_LEGEND`). A test checks that every variant's code is named.
    pub mod code, pub const TRACE_LEGEND = "net" {
        FORMATTED = 0x4E01 => "formatted"("slots", ""),
        OPENED = 0x4E02 => "opened"("applied_count", ""),
        SENT = 0x4E03 => "sent"("seq", ""),
        ALREADY_SENT = 0x4E04 => "already_sent"("seq", ""),
        RECEIVED = 0x4E05 => "received"("seq", "len"),
        EMPTY = 0x4E06 => "empty"("", ""),
        REFUSED = 0x4E07 => "refused"("error", "detail"),
        IO_FAILED = 0x4E08 => "io_failed"("off", ""),
    }
}

/// One thing the loopback core did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trace {
    /// A blank region was formatted.
    Formatted {
        /// Slots.
        slots: u32,
    },
    /// A formatted region was opened.
    Opened {
        /// Its `applied_count`.
        applied_count: u64,
    },
    /// Packet `seq` written and the watermark advanced.
    Sent {
        /// Transmit sequence number.
        seq: u64,
    },
    /// A replay of the watermarked `Send`: nothing written.
    AlreadySent {
        /// Transmit sequence number.
        seq: u64,
    },
    /// Packet `seq` delivered.
    Received {
        /// Its sequence number.
        seq: u64,
        /// Its length.
        len: u16,
    },
    /// `Recv` found nothing.
    Empty,
    /// A request was refused.
    Refused(NetError),
    /// The region failed at this byte offset.
    IoFailed {
        /// Offset.
        off: u64,
    },
}

impl Trace {
    /// The entry an outcome deserves (none for `Stats`).
    #[must_use]
    pub fn of(out: &Outcome<'_>) -> Option<Self> {
        match (out.reply, out.effect) {
            (NetReply::Sent { seq }, Effect::Applied) => Some(Self::Sent { seq }),
            (NetReply::Sent { seq }, _) => Some(Self::AlreadySent { seq }),
            (NetReply::Packet { seq, data }, _) => {
                Some(Self::Received { seq, len: u16::try_from(data.len()).unwrap_or(u16::MAX) })
            }
            (NetReply::Empty, _) => Some(Self::Empty),
            (NetReply::Error(e), _) => Some(Self::Refused(e)),
            (NetReply::Stats { .. }, _) => None,
        }
    }

    /// As a runtime trace event: code `0x4ENN`, where `NN` is the variant
    /// (1 Formatted, 2 Opened, 3 Sent, 4 AlreadySent, 5 Received, 6 Empty,
    /// 7 Refused with `a` = the error's number, 8 IoFailed), `a`/`b` its fields.
    #[must_use]
    pub fn event(&self) -> Event {
        let (code, a, b) = match *self {
            Self::Formatted { slots } => (code::FORMATTED, u64::from(slots), 0),
            Self::Opened { applied_count } => (code::OPENED, applied_count, 0),
            Self::Sent { seq } => (code::SENT, seq, 0),
            Self::AlreadySent { seq } => (code::ALREADY_SENT, seq, 0),
            Self::Received { seq, len } => (code::RECEIVED, seq, u64::from(len)),
            Self::Empty => (code::EMPTY, 0, 0),
            Self::Refused(e) => {
                let (n, detail) = match e {
                    NetError::BadRequest => (1, 0),
                    NetError::Empty => (2, 0),
                    NetError::TooLarge { len, .. } => (3, u64::from(len)),
                    NetError::Full { capacity } => (4, u64::from(capacity)),
                    NetError::Corrupt { seq } => (5, seq),
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
            | Trace::Sent { .. }
            | Trace::AlreadySent { .. }
            | Trace::Received { .. }
            | Trace::Empty
            | Trace::Refused(_)
            | Trace::IoFailed { .. } => t,
        }
    }

    #[test]
    fn every_trace_code_is_named_in_the_legend() {
        let all = [
            Trace::Formatted { slots: 1 },
            Trace::Opened { applied_count: 1 },
            Trace::Sent { seq: 1 },
            Trace::AlreadySent { seq: 1 },
            Trace::Received { seq: 1, len: 1 },
            Trace::Empty,
            Trace::Refused(NetError::BadRequest),
            Trace::IoFailed { off: 1 },
        ];
        for t in all.map(sample) {
            let Event::Driver { code, .. } = t.event() else { panic!("{t:?} is not a driver event") };
            assert!(TRACE_LEGEND.get(code).is_some(), "{t:?}: code {code:#06x} missing from TRACE_LEGEND");
        }
        assert_eq!(TRACE_LEGEND.entries.len(), all.len(), "legend has codes no Trace variant uses");
    }
}
