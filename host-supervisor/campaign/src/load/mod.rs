//! The live load: one module per client, each with the model that predicts
//! every reply it gets, and what they share with the injector ([`Shared`]).
//!
//! The storage device is split into disjoint block ranges so that each
//! range has one owner whose model predicts it: the two storage clients own
//! `0..RANGE` and `RANGE..2*RANGE`, the injector's bit flips
//! `VICTIM..VICTIM+RANGE`, `drvctl blk` `BLK_LBA..BLK_LBA+BLK_BLOCKS`, the
//! NBD client `NBD_LBA..NBD_LBA+NBD_BLOCKS`.

use crate::Violation;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;
use storage_core::BLOCK_SIZE;

pub mod bench;
pub mod blk;
pub mod misbehave;
pub mod nbd;
pub mod net;
pub mod storage;

/// Blocks of the storage device.
pub(crate) const DISK_BLOCKS: u64 = 1024;
/// Blocks each storage load client owns (client `i` owns `i*RANGE..`).
pub(crate) const RANGE: u64 = 256;
/// Block range the injector owns for device bit flips.
pub(crate) const VICTIM: u64 = 512;
/// Block range `drvctl blk` uses.
pub(crate) const BLK_LBA: u64 = 768;
/// Blocks per `drvctl blk` run.
pub(crate) const BLK_BLOCKS: u64 = 64;
/// Block range the NBD client uses, through `reinc-nbd`.
pub(crate) const NBD_LBA: u64 = 896;
/// Blocks of it.
pub(crate) const NBD_BLOCKS: u64 = 128;
/// Net ring slots.
pub(crate) const NET_SLOTS: u32 = 64;

/// State shared by the injector and the load threads.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    pub(crate) completions: AtomicU64,
    pub(crate) fault_index: AtomicUsize,
    pub(crate) violation: Mutex<Option<Violation>>,
    /// Reply times of effectful requests (storage writes, net sends), by
    /// `(client, seq)`; cleared at every fault.
    pub(crate) storage_replies: Mutex<HashMap<(u64, u64), Instant>>,
    pub(crate) net_replies: Mutex<HashMap<(u64, u64), Instant>>,
    /// The misbehave client's first reply from a generation above `.0`.
    pub(crate) mis_watch: Mutex<(u32, Option<Instant>)>,
    /// An exec-fails fault is under way: the bench driver may be
    /// quarantined for it (when its launches keep failing for longer than
    /// the restart policy allows), and its callers then get a definite
    /// `DriverFailed`.
    pub(crate) exec_fault: AtomicBool,
    /// Bench calls answered `DriverFailed` that way.
    pub(crate) bench_quarantined: AtomicU64,
    /// `drvctl blk` runs refused at connect while a supervisor was being
    /// replaced, and started again.
    pub(crate) blk_refused_at_connect: AtomicU64,
}

impl Shared {
    pub(crate) fn fail(&self, what: String) {
        let mut v = self.violation.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if v.is_none() {
            *v = Some(Violation { fault_index: self.fault_index.load(Ordering::SeqCst), what });
        }
        self.stop.store(true, Ordering::SeqCst);
    }
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    /// A client error of `who`: every call it has in flight now has an
    /// unknown outcome, which the campaign counts as a violation.
    pub(crate) fn unknown(&self, who: &str, e: &reinc_client::ClientError) {
        self.fail(format!("{who}: unknown outcome: {e}"));
    }
    /// `client`'s next completion; `None` after [`Shared::unknown`].
    pub(crate) fn wait(&self, client: &mut reinc_client::Client, who: &str) -> Option<reinc_client::Completion> {
        client.wait().map_err(|e| self.unknown(who, &e)).ok()
    }
}

/// Data of storage block `lba` at write `version` of it.
#[must_use]
pub fn block_data(lba: u64, version: u32) -> Vec<u8> {
    (0..BLOCK_SIZE as u64)
        .map(|i| (lba.wrapping_mul(31) ^ u64::from(version).wrapping_mul(0x9E37) ^ i.wrapping_mul(7)) as u8)
        .collect()
}
