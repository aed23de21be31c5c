//! Identifiers that cross process boundaries.

use core::fmt;
use serde::{Deserialize, Serialize};

/// A client session, assigned by the supervisor in `Welcome`.
///
/// Unique across every lifetime of the supervisor, not only within one
/// (design brief, "Identity across lifetimes"): the device-side watermark,
/// the journal and a resuming client all remember ids beyond one lifetime.
/// The supervisor folds a random 64-bit epoch, drawn at start, into every
/// id it assigns, so two lifetimes collide only with probability about
/// (sessions of both) / 2^64. 64 bits since protocol version 2; a `u32`
/// counter that restarted at 1 was what let a new supervisor's first write
/// be taken for a replay of the old one's last.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

/// The id of one request: unique per client session, and the key of the
/// supervisor's dedup table.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId {
    /// The session that sent it.
    pub client: ClientId,
    /// The client's sequence number.
    pub seq: u64,
}

/// The generation of a driver instance. It grows by one at every launch, so a
/// frame from a dead instance is recognisably stale (like Hubris task ids).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Generation(pub u32);

impl Generation {
    /// The generation after this one (wrapping: 2^32 restarts will not happen,
    /// and equality is all that matters).
    #[must_use]
    pub fn next(self) -> Self {
        Self(self.0.wrapping_add(1))
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.client, self.seq)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gen{}", self.0)
    }
}
