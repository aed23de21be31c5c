//! A storage client with pipelining (8 in flight) over its own block range:
//! random reads and writes through `reinc_client::blocksum`, every reply
//! checked against its model of the range (the version of every block).

use super::{RANGE, Shared, block_data};
use reinc_client::{Client, blocksum, client_socket};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;
use storage_core::BLOCK_SIZE;

/// What a storage load client leaves behind.
#[derive(Debug, Default)]
pub(crate) struct StorageOut {
    pub(crate) session: u64,
    pub(crate) model: BTreeMap<u64, u32>,
    pub(crate) writes: BTreeSet<u64>,
    pub(crate) answered: u64,
}

pub(crate) fn storage_load(shared: &Shared, runtime: &Path, first_lba: u64, seed: u64) -> StorageOut {
    let mut out = StorageOut::default();
    let mut client = match Client::connect(&client_socket(runtime)) {
        Ok(c) => c,
        Err(e) => {
            shared.fail(format!("storage client: {e}"));
            return out;
        }
    };
    out.session = client.session().0;
    let mut rng = crate::schedule::Rng::new(seed);
    // seq -> (lba, Some(version) for a write, expected version for a read)
    let mut expect: HashMap<u64, (u64, bool, u32)> = HashMap::new();
    let mut versions: BTreeMap<u64, u32> = BTreeMap::new();
    loop {
        while !shared.stopped() && client.in_flight() < 8 {
            let lba = first_lba + rng.below(RANGE);
            let write = rng.below(10) < 6;
            let (body, v) = if write {
                let v = versions.get(&lba).copied().unwrap_or(0) + 1;
                versions.insert(lba, v);
                (blocksum::write_body(lba, &block_data(lba, v)), v)
            } else {
                (blocksum::read_body(lba, 1), versions.get(&lba).copied().unwrap_or(0))
            };
            match client.submit("storage_driver", &body) {
                Ok(seq) => {
                    expect.insert(seq, (lba, write, v));
                    if write {
                        out.writes.insert(seq);
                    }
                }
                Err(e) => {
                    shared.unknown(&format!("storage client c{}", out.session), &e);
                    return out;
                }
            }
        }
        if client.in_flight() == 0 {
            break;
        }
        let Some(c) = shared.wait(&mut client, &format!("storage client c{}", out.session)) else { return out };
        let now = Instant::now();
        let Some((lba, write, v)) = expect.remove(&c.seq) else {
            shared.fail(format!("storage client c{}: seq {} answered twice", out.session, c.seq));
            return out;
        };
        let body = match c.result {
            Ok(b) => b,
            Err(e) => {
                shared.fail(format!(
                    "storage_driver: c{}:{} failed with {e:?} (not expected for this driver)",
                    out.session, c.seq
                ));
                return out;
            }
        };
        out.answered += 1;
        shared.completions.fetch_add(1, Ordering::Relaxed);
        // Nothing is injected into these blocks: a checksum error is a failure too.
        let checked = if write {
            blocksum::check_write("storage_driver", lba, 1, &body).map(|()| {
                shared.storage_replies.lock().map(|mut m| m.insert((out.session, c.seq), now)).ok();
                true
            })
        } else {
            blocksum::check_read("storage_driver", lba, 1, &body).map(|d| {
                let want = if v == 0 { vec![0; BLOCK_SIZE] } else { block_data(lba, v) };
                d == want.as_slice()
            })
        };
        let ok = match checked {
            Ok(ok) => ok,
            Err(e) => {
                shared.fail(format!("c{}:{}: {e}", out.session, c.seq));
                return out;
            }
        };
        if !ok {
            shared.fail(format!(
                "storage_driver: c{}:{} ({} of block {lba}, version {v}) got a wrong reply: the device differs from the model",
                out.session,
                c.seq,
                if write { "write" } else { "read" }
            ));
            return out;
        }
    }
    out.model = versions;
    out
}
