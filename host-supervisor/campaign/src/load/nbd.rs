//! The NBD client: `reinc-nbd` in front of the storage driver, driven
//! through `reinc_nbd::client` with up to 8 pipelined reads, writes and
//! write-zeroes of 1–4 blocks in its own block range (`NBD_LBA..NBD_LBA+NBD_BLOCKS`), every
//! reply checked against its model of the range.
//!
//! A driver crash must be invisible through the front end: any NBD error
//! or disconnect is a violation. Across a supervisor kill `reinc-nbd`, a
//! client of the supervisor, resumes its session (the storage driver
//! journals), so the NBD connection stays up and sees only latency.
//! Requests in flight never overlap: the model then predicts every read
//! whatever order the server completes them in. Lanes with an odd seed ask
//! for structured replies, so reads come back in chunks there and simple
//! elsewhere (the kernel's client never asks).

use super::{NBD_BLOCKS, NBD_LBA, Shared, block_data};
use reinc_nbd::client::NbdClient;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering;
use storage_core::BLOCK_SIZE;

/// What the NBD client leaves behind.
#[derive(Debug, Default)]
pub(crate) struct NbdOut {
    /// Version of every block written (absent: never written, zeros).
    pub(crate) model: BTreeMap<u64, u32>,
    /// NBD requests answered.
    pub(crate) requests: u64,
}

/// One NBD request in flight.
#[derive(Debug)]
struct InFlight {
    lba: u64,
    blocks: u64,
    /// `None` for a write; for a read, the versions expected.
    read: Option<Vec<u32>>,
}

pub(crate) fn nbd_load(shared: &Shared, socket: &Path, seed: u64) -> NbdOut {
    let mut out = NbdOut::default();
    let mut c = match NbdClient::connect_with(socket, seed % 2 == 1) {
        Ok(c) => c,
        Err(e) => {
            shared.fail(format!("NBD client: {e}"));
            return out;
        }
    };
    let mut rng = crate::schedule::Rng::new(seed);
    let mut flight: HashMap<u64, InFlight> = HashMap::new();
    let mut cookie = 0u64;
    // The last version written to each block (gone from the model once
    // zeroed).
    let mut written: BTreeMap<u64, u32> = BTreeMap::new();
    loop {
        while !shared.stopped() && flight.len() < 8 {
            let blocks = 1 + rng.below(4);
            let lba = NBD_LBA + rng.below(NBD_BLOCKS - blocks + 1);
            if flight.values().any(|f| lba < f.lba + f.blocks && f.lba < lba + blocks) {
                continue;
            }
            cookie += 1;
            let offset = lba * BLOCK_SIZE as u64;
            let roll = rng.below(10);
            let sent = if roll == 0 {
                // One in ten: WRITE_ZEROES, a storage zero request, which
                // must apply exactly once like any write.
                for b in lba..lba + blocks {
                    // Absent from the model: reads as zeros.
                    out.model.remove(&b);
                }
                flight.insert(cookie, InFlight { lba, blocks, read: None });
                c.send_write_zeroes(cookie, offset, (blocks as usize * BLOCK_SIZE) as u32)
            } else if roll < 6 {
                let mut data = Vec::with_capacity(blocks as usize * BLOCK_SIZE);
                for b in lba..lba + blocks {
                    // Versions never repeat, zeroed or not: a write lost
                    // behind a zero cannot pass for an older one.
                    let v = written.get(&b).copied().unwrap_or(0) + 1;
                    written.insert(b, v);
                    out.model.insert(b, v);
                    data.extend_from_slice(&block_data(b, v));
                }
                flight.insert(cookie, InFlight { lba, blocks, read: None });
                c.send_write(cookie, offset, &data)
            } else {
                let want = (lba..lba + blocks).map(|b| out.model.get(&b).copied().unwrap_or(0)).collect();
                flight.insert(cookie, InFlight { lba, blocks, read: Some(want) });
                c.send_read(cookie, offset, (blocks as usize * BLOCK_SIZE) as u32)
            };
            if let Err(e) = sent {
                shared.fail(format!("NBD client: {e}"));
                return out;
            }
        }
        if flight.is_empty() {
            break;
        }
        let lengths = |cookie: u64| {
            let f = flight.get(&cookie).filter(|f| f.read.is_some())?;
            Some((f.lba * BLOCK_SIZE as u64, f.blocks as usize * BLOCK_SIZE))
        };
        let r = match c.next_reply(lengths) {
            Ok(r) => r,
            Err(e) => {
                shared.fail(format!("NBD client: {e} ({} requests in flight)", flight.len()));
                return out;
            }
        };
        let Some(f) = flight.remove(&r.cookie) else {
            shared.fail(format!("NBD client: a reply for cookie {}, which is not in flight", r.cookie));
            return out;
        };
        let what = if f.read.is_some() { "read" } else { "write" };
        if r.errno != 0 {
            shared.fail(format!(
                "NBD {what} of blocks {}..{} failed with errno {}: a storage driver fault reached an NBD client",
                f.lba,
                f.lba + f.blocks,
                r.errno
            ));
            return out;
        }
        if let Some(want) = f.read {
            let Some(data) = r.data else {
                shared.fail(format!(
                    "NBD client: the read of blocks {}..{} came without data",
                    f.lba,
                    f.lba + f.blocks
                ));
                return out;
            };
            for (i, (b, v)) in (f.lba..f.lba + f.blocks).zip(want).enumerate() {
                let expect = if v == 0 { vec![0; BLOCK_SIZE] } else { block_data(b, v) };
                if data[i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE] != expect[..] {
                    shared.fail(format!(
                        "NBD read of block {b} (version {v}) differs from the model: the device differs, or a write was lost"
                    ));
                    return out;
                }
            }
        }
        out.requests += 1;
        shared.completions.fetch_add(1, Ordering::Relaxed);
    }
    if let Err(e) = c.disconnect() {
        shared.fail(format!("NBD client: {e}"));
    }
    out
}
