//! The shared pools of the client sessions this driver serves
//! (`ToDriver::AttachPool`), validated and mapped once, looked up per
//! request by the request's [`ClientId`].
//!
//! Every descriptor is checked by [`SharedPool::adopt`] (a memfd, sealed
//! against shrinking, within [`MAX_POOL_BYTES`]); one that fails is logged
//! and remembered as refused, so the session's bulk requests get a definite
//! "no pool" answer instead of crashing the driver. At most [`MAX_POOLS`]
//! are kept: beyond that a new session's pool is refused the same way.
//!
//! # Design rejected
//! - Looking the pool up by a number in the request: the session is already
//!   in the request id, which the supervisor stamps and a client cannot
//!   forge, so a client can never name another session's pool.

use reinc_proto::ClientId;
use reinc_uio::SharedPool;
use std::collections::HashMap;
use std::os::fd::OwnedFd;

/// Largest pool a driver maps (1 GiB).
pub const MAX_POOL_BYTES: usize = 1 << 30;
/// Most sessions with a pool at once.
pub const MAX_POOLS: usize = 512;

/// The pools, by session.
#[derive(Debug, Default)]
pub struct Pools {
    map: HashMap<ClientId, SharedPool>,
}

impl Pools {
    /// The pool of session `client`, if it attached one that was accepted.
    #[must_use]
    pub fn get(&self, client: ClientId) -> Option<&SharedPool> {
        self.map.get(&client)
    }

    /// Sessions with a pool.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No pools at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Adopts `fd` as the pool of `client` (replacing an earlier one). On
    /// refusal the session is left without a pool and the reason returned.
    ///
    /// # Errors
    /// Why the descriptor was refused, naming the driver and session.
    pub fn attach(&mut self, driver: &str, client: ClientId, fd: Option<OwnedFd>) -> Result<usize, String> {
        self.map.remove(&client);
        let Some(fd) = fd else {
            return Err(format!("driver {driver}: AttachPool for session {client} came without a descriptor"));
        };
        if self.map.len() >= MAX_POOLS {
            return Err(format!("driver {driver}: pool of session {client} refused: {MAX_POOLS} pools already mapped"));
        }
        let pool = SharedPool::adopt(fd, format!("pool of session {client}"), MAX_POOL_BYTES)
            .map_err(|e| format!("driver {driver}: {e}"))?;
        let len = pool.len();
        self.map.insert(client, pool);
        Ok(len)
    }

    /// Unmaps the pool of `client`; whether it had one.
    pub fn detach(&mut self, client: ClientId) -> bool {
        self.map.remove(&client).is_some()
    }
}
