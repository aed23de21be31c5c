//! The request and reply format of `reinc-misbehave-driver`, shared by the
//! driver and the campaign's client.
//!
//! A request is 10 bytes: `[op, kind, nonce (u64 LE)]`. `op` 0 is a normal
//! request; `op` 1 asks the driver to misbehave in the way `kind` names
//! ([`Misbehaviour`]), once per request id (a marker file makes the replay
//! after a restart behave normally, except for [`Misbehaviour::Poison`]).
//!
//! Every reply is 24 bytes: the committed counter after the request (u64
//! LE), the generation of the instance that executed it (u32 LE), the
//! request's nonce (u64 LE), and a crc32 of those 20 bytes: an end-to-end
//! checksum computed before any injected bit flip.

/// One way the driver misbehaves without (necessarily) dying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Misbehaviour {
    /// A frame that does not decode.
    Malformed,
    /// The reply, then the same reply again.
    SecondReply,
    /// A reply stamped with another generation, then the real one.
    WrongGeneration,
    /// A reply for a request id that was never sent to it.
    WrongId,
    /// A frame larger than the protocol's limit.
    Oversized,
    /// Thousands of unsolicited frames (pongs nobody asked for), then the reply.
    Flood,
    /// Stops reading its socket (and so answers no heartbeat) but stays alive.
    StopReading,
    /// A bit flipped in the reply body after its checksum was computed.
    ReplyBitFlip,
    /// A bit flipped in the in-memory state after it was committed; the
    /// state's own checksum is checked before every request.
    StateBitFlipChecked,
    /// A bit flipped in the new state before its checksum is computed.
    StateBitFlipUnchecked,
    /// Opens descriptors until `EMFILE`, then needs one more.
    FdExhaustion,
    /// Lowers `RLIMIT_AS` and then allocates past it.
    MemoryLimit,
    /// Crashes (SIGSEGV) on every attempt, so the supervisor poisons it.
    Poison,
}

impl Misbehaviour {
    /// Every kind, in wire order.
    pub const ALL: [Self; 13] = [
        Self::Malformed,
        Self::SecondReply,
        Self::WrongGeneration,
        Self::WrongId,
        Self::Oversized,
        Self::Flood,
        Self::StopReading,
        Self::ReplyBitFlip,
        Self::StateBitFlipChecked,
        Self::StateBitFlipUnchecked,
        Self::FdExhaustion,
        Self::MemoryLimit,
        Self::Poison,
    ];

    /// The kind's wire byte.
    #[must_use]
    pub fn code(self) -> u8 {
        Self::ALL.iter().position(|k| *k == self).map_or(u8::MAX, |i| i as u8)
    }

    /// The kind with wire byte `code`.
    #[must_use]
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// A short name for reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed-frame",
            Self::SecondReply => "second-reply",
            Self::WrongGeneration => "wrong-generation",
            Self::WrongId => "wrong-request-id",
            Self::Oversized => "oversized-frame",
            Self::Flood => "frame-flood",
            Self::StopReading => "stops-reading",
            Self::ReplyBitFlip => "reply-bit-flip",
            Self::StateBitFlipChecked => "state-bit-flip-checked",
            Self::StateBitFlipUnchecked => "state-bit-flip-unchecked",
            Self::FdExhaustion => "fd-exhaustion",
            Self::MemoryLimit => "rlimit-as",
            Self::Poison => "poison-request",
        }
    }
}

/// Length of a request body.
pub const REQUEST_LEN: usize = 10;
/// Length of a reply body.
pub const REPLY_LEN: usize = 24;

/// A request body: normal (`fault` `None`) or asking for a misbehaviour.
#[must_use]
pub fn request(nonce: u64, fault: Option<Misbehaviour>) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    if let Some(f) = fault {
        b[0] = 1;
        b[1] = f.code();
    }
    b[2..].copy_from_slice(&nonce.to_le_bytes());
    b
}

/// Parses a request body: `(nonce, fault)`.
#[must_use]
pub fn parse_request(body: &[u8]) -> Option<(u64, Option<Misbehaviour>)> {
    if body.len() != REQUEST_LEN {
        return None;
    }
    let nonce = u64::from_le_bytes(body[2..].try_into().ok()?);
    match body[0] {
        0 => Some((nonce, None)),
        1 => Some((nonce, Some(Misbehaviour::from_code(body[1])?))),
        _ => None,
    }
}

/// A reply body with its checksum.
#[must_use]
pub fn reply(counter: u64, generation: u32, nonce: u64) -> [u8; REPLY_LEN] {
    let mut b = [0u8; REPLY_LEN];
    b[..8].copy_from_slice(&counter.to_le_bytes());
    b[8..12].copy_from_slice(&generation.to_le_bytes());
    b[12..20].copy_from_slice(&nonce.to_le_bytes());
    let crc = crc32fast::hash(&b[..20]);
    b[20..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// A decoded reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The committed counter after the request.
    pub counter: u64,
    /// The generation that executed it.
    pub generation: u32,
    /// The request's nonce.
    pub nonce: u64,
}

/// Why a reply body is not a valid reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Not [`REPLY_LEN`] bytes.
    #[error("misbehave reply of {0} bytes, expected {REPLY_LEN}")]
    Length(usize),
    /// The end-to-end checksum does not match: the body was corrupted.
    #[error("misbehave reply checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The crc in the body.
        stored: u32,
        /// The crc of the body's bytes.
        computed: u32,
    },
}

/// Decodes and checks a reply body.
///
/// # Errors
/// [`ReplyError`] if it is short or its checksum fails.
pub fn parse_reply(body: &[u8]) -> Result<Reply, ReplyError> {
    let b: &[u8; REPLY_LEN] = body.try_into().map_err(|_| ReplyError::Length(body.len()))?;
    let stored = u32::from_le_bytes([b[20], b[21], b[22], b[23]]);
    let computed = crc32fast::hash(&b[..20]);
    if stored != computed {
        return Err(ReplyError::Checksum { stored, computed });
    }
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    Ok(Reply { counter: u64_at(0), generation: u32::from_le_bytes([b[8], b[9], b[10], b[11]]), nonce: u64_at(12) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_misbehaviour_round_trips_through_its_wire_byte() {
        for k in Misbehaviour::ALL {
            assert_eq!(Misbehaviour::from_code(k.code()), Some(k));
            assert_eq!(parse_request(&request(7, Some(k))), Some((7, Some(k))));
        }
        assert_eq!(parse_request(&request(9, None)), Some((9, None)));
        assert_eq!(parse_request(&[2; REQUEST_LEN]), None);
        assert_eq!(parse_request(&[0; 3]), None);
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_reply_is_detected_by_its_checksum() {
        let good = reply(41, 3, 99);
        assert_eq!(parse_reply(&good), Ok(Reply { counter: 41, generation: 3, nonce: 99 }));
        for bit in 0..REPLY_LEN * 8 {
            let mut bad = good;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(parse_reply(&bad).is_err(), "bit {bit}");
        }
    }
}
