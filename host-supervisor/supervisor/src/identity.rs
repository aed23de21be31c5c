//! Session ids that never repeat across supervisor lifetimes.
//!
//! # Why
//! A request id is `(session, seq)`, and several things remember ids beyond
//! one lifetime of the supervisor: the device-side watermark (a storage
//! region records the id of the write it applied last), the journal, and a
//! client that resumes after the supervisor restarted. Ids that restart at 1
//! made a new supervisor's first write carry the very id of the previous
//! supervisor's last one, and the watermark skipped it as a replay (issue 13,
//! item 1).
//!
//! # Shape
//! Each lifetime draws a random 64-bit epoch from the kernel
//! ([`Epoch::random`], `/dev/urandom`) and numbers its sessions
//! `epoch + 1, epoch + 2, …` (wrapping, skipping 0, which the client
//! library uses for "no session yet"). Within a lifetime the ids are
//! distinct; two lifetimes collide only if their ranges overlap, with
//! probability about (sessions of both) / 2^64.
//!
//! # Designs rejected
//! - A persisted counter: it needs a writable state directory even for
//!   drivers that persist nothing, one more fsync on the session path (or a
//!   reserved block of ids), and it repeats ids when the directory is lost
//!   or restored from a backup; a random epoch needs nothing on disk.
//! - Hashing each id (`splitmix(epoch ^ n)`): as unique, but consecutive ids
//!   of a lifetime are no longer recognisable as such in logs.
//! - A 32-bit random epoch inside a 32-bit id: a birthday collision after
//!   about 65 000 lifetimes is too likely for ids stored on devices.

use reinc_proto::ClientId;
use std::io::Read;

/// The random part of every session id of one supervisor lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch(pub u64);

/// The kernel's random source could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read 8 random bytes from {path} for the session-id epoch: {source}")]
pub struct EpochError {
    /// The device read.
    pub path: &'static str,
    /// Why.
    pub source: std::io::Error,
}

impl Epoch {
    /// A fresh epoch from `/dev/urandom` (never blocks once the kernel's
    /// pool is initialised, which it is long before a supervisor starts).
    ///
    /// # Errors
    /// [`EpochError`] naming the device.
    pub fn random() -> Result<Self, EpochError> {
        const PATH: &str = "/dev/urandom";
        let mut b = [0u8; 8];
        std::fs::File::open(PATH)
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(|source| EpochError { path: PATH, source })?;
        Ok(Self(u64::from_le_bytes(b)))
    }
}

/// Hands out the session ids of one lifetime.
#[derive(Debug, Clone)]
pub struct SessionIds {
    epoch: Epoch,
    issued: u64,
}

impl SessionIds {
    /// Ids `epoch + 1, epoch + 2, …`. `Epoch(0)` gives 1, 2, 3 (the core
    /// tests use it for readable ids).
    #[must_use]
    pub fn new(epoch: Epoch) -> Self {
        Self { epoch, issued: 0 }
    }

    /// The epoch of this lifetime.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The next id for which `taken` is false (ids recovered from a journal
    /// are taken), never 0.
    pub fn next(&mut self, taken: impl Fn(ClientId) -> bool) -> ClientId {
        loop {
            self.issued = self.issued.wrapping_add(1);
            let id = ClientId(self.epoch.0.wrapping_add(self.issued));
            if id.0 != 0 && !taken(id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_epoch_skip_zero_and_taken_ones() {
        let mut ids = SessionIds::new(Epoch(u64::MAX - 1));
        assert_eq!(ids.next(|_| false), ClientId(u64::MAX));
        // Wrapping past zero skips it: 0 means "no session" to clients.
        assert_eq!(ids.next(|_| false), ClientId(1));
        assert_eq!(ids.next(|c| c == ClientId(2)), ClientId(3));
        let mut zero = SessionIds::new(Epoch(0));
        assert_eq!([zero.next(|_| false), zero.next(|_| false)], [ClientId(1), ClientId(2)]);
    }

    #[test]
    fn two_lifetimes_number_their_sessions_apart() {
        let (a, b) = (Epoch::random().unwrap(), Epoch::random().unwrap());
        assert_ne!(a, b, "two draws of 64 random bits were equal");
        let mut ia = SessionIds::new(a);
        let mut ib = SessionIds::new(b);
        assert_ne!(ia.next(|_| false), ib.next(|_| false));
    }
}
