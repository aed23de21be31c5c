//! The shared-memory data path of one NBD connection: its pool, and the
//! slots that the reader thread (write payloads) and the engine (read
//! data) take from it.
//!
//! A write's payload goes from the NBD socket straight into a pool slot
//! (one `read` into the mapping), and the storage driver `pwrite`s it from
//! there; a read's data is `pread` by the driver into a slot and goes out
//! to the NBD socket with one `writev` (reply header + slot). The
//! supervisor sees a few dozen bytes per NBD request, and one storage
//! request covers up to [`storage_core::MAX_BULK_BLOCKS`] blocks instead of
//! 32 KiB. A slot is given back only when the storage request that names
//! it is answered (committed), so a replay after a driver crash reads or
//! fills the same bytes (`reinc_client::pool`, "Pinning").
//!
//! # Two sets of slots, and why
//! Write slots are taken by the reader (it blocks when none is free: the
//! client's own socket then fills, which is the backpressure) and given back
//! by the engine; read slots are taken and given back by the engine alone.
//! With one shared set, reads waiting for a slot behind writes that hold
//! every slot, while those writes wait behind the reads to be started,
//! would deadlock; split, each set only ever waits for calls in flight.
//!
//! # Design rejected
//! - Copying the payload into a `Vec` in the reader and into the pool in
//!   the engine: an extra copy of every byte, which is what this path exists
//!   to avoid.

use reinc_client::pool::Slots;
use reinc_client::{Client, SharedPool};
use std::sync::{Condvar, Mutex};

/// Slots per set (write, read): as many NBD requests of each kind as can
/// be in flight on one connection.
pub const SLOTS: usize = 16;

/// A connection's pool, and its slots.
#[derive(Debug)]
pub struct ConnPool {
    /// The memfd, mapped.
    pub pool: SharedPool,
    /// Bytes per slot: the export's maximum request.
    pub slot: usize,
    /// Write slots, and whether the connection is closing (the reader must
    /// not wait for a slot that will never be given back).
    write: Mutex<(Slots, bool)>,
    freed: Condvar,
    /// Engine-only.
    read: Mutex<Slots>,
}

impl ConnPool {
    /// Creates a pool of 2 × [`SLOTS`] slots of `slot` bytes and attaches it
    /// to `client`'s session for `driver`.
    ///
    /// # Errors
    /// Why there is no pool (the connection then uses the message path).
    pub fn attach(client: &mut Client, driver: &str, slot: usize) -> Result<Self, String> {
        let pool = SharedPool::create("reinc-nbd", slot * 2 * SLOTS).map_err(|e| e.to_string())?;
        client.attach_pool(driver, &pool).map_err(|e| e.to_string())?;
        Ok(Self {
            pool,
            slot,
            write: Mutex::new((Slots::new(slot, SLOTS), false)),
            freed: Condvar::new(),
            read: Mutex::new(Slots::new(slot, SLOTS)),
        })
    }

    /// Byte offset of write slot `i`.
    #[must_use]
    pub fn write_offset(&self, i: usize) -> u64 {
        (i * self.slot) as u64
    }

    /// Byte offset of read slot `i` (after the write slots).
    #[must_use]
    pub fn read_offset(&self, i: usize) -> u64 {
        ((SLOTS + i) * self.slot) as u64
    }

    /// A write slot, waiting until one is free (reader thread); `None` once
    /// the connection is closing.
    pub fn take_write(&self) -> Option<usize> {
        let mut s = self.write.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if s.1 {
                return None;
            }
            if let Some(i) = s.0.take() {
                return Some(i);
            }
            s = self.freed.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Gives write slot `i` back (engine, once its call is answered; or the
    /// reader, if the payload never arrived).
    pub fn give_write(&self, i: usize) {
        self.write.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.give_back(i);
        self.freed.notify_one();
    }

    /// The connection is closing: a reader waiting for a slot gives up.
    pub fn close(&self) {
        self.write.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1 = true;
        self.freed.notify_all();
    }

    /// A read slot if one is free (engine).
    pub fn take_read(&self) -> Option<usize> {
        self.read.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// Read slots free now.
    #[must_use]
    pub fn free_reads(&self) -> usize {
        self.read.lock().unwrap_or_else(std::sync::PoisonError::into_inner).free()
    }

    /// Gives read slot `i` back (engine, once its data is sent).
    pub fn give_read(&self, i: usize) {
        self.read.lock().unwrap_or_else(std::sync::PoisonError::into_inner).give_back(i);
    }
}
