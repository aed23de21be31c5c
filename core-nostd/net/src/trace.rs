//! The loopback core's trace (Hubris style: one `Trace` enum per module, kept
//! in a small ring inside [`crate::Net`]; the host driver also forwards each
//! entry to the runtime's shared ring as [`Event::Driver`]).

use crate::{Effect, NetError, NetReply, Outcome};
use reinc_ringbuf::Event;

/// Entries kept by [`crate::Net::trace`].
pub const TRACE_SLOTS: usize = 32;

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
            Self::Formatted { slots } => (1, u64::from(slots), 0),
            Self::Opened { applied_count } => (2, applied_count, 0),
            Self::Sent { seq } => (3, seq, 0),
            Self::AlreadySent { seq } => (4, seq, 0),
            Self::Received { seq, len } => (5, seq, u64::from(len)),
            Self::Empty => (6, 0, 0),
            Self::Refused(e) => {
                let (n, detail) = match e {
                    NetError::BadRequest => (1, 0),
                    NetError::Empty => (2, 0),
                    NetError::TooLarge { len, .. } => (3, u64::from(len)),
                    NetError::Full { capacity } => (4, u64::from(capacity)),
                    NetError::Corrupt { seq } => (5, seq),
                };
                (7, n, detail)
            }
            Self::IoFailed { off } => (8, off, 0),
        };
        Event::Driver { code: 0x4E00 | code, a, b }
    }
}
