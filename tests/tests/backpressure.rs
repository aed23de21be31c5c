//! Backpressure: a full driver queue answers `Busy`, the client library
//! resends, and the driver still executes each session's calls in the order
//! they were submitted, each exactly once.

use reinc_client::Client;
use reinc_tests::{Reply, Rig, assert_no_duplicate_execution, reply, request};
use std::collections::BTreeMap;
use storage_core::{BLOCK_SIZE, StorageRequest};

/// Appends `n` blocks through `c` keeping `depth` calls in flight, so fresh
/// calls keep going out while earlier ones wait for their resend. Returns
/// the lba each append landed on, in submission order.
fn stream_appends(c: &mut Client, tag: u8, n: usize, depth: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut lba_of = BTreeMap::new();
    while lba_of.len() < n {
        while seqs.len() < n && c.in_flight() < depth {
            let fill = [tag.wrapping_add(seqs.len() as u8); BLOCK_SIZE];
            seqs.push(c.submit("storage_driver", &request(&StorageRequest::Append { data: &fill })).unwrap());
        }
        let done = c.wait().unwrap();
        let Reply::Appended(lba, 1) = reply(&done.result.expect("every call is executed, none fails")) else {
            panic!("unexpected reply to {}", done.seq)
        };
        assert!(lba_of.insert(done.seq, lba).is_none(), "{} answered twice", done.seq);
    }
    seqs.iter().map(|s| lba_of[s]).collect()
}

#[test]
fn pipelined_appends_into_a_tiny_queue_land_in_submission_order() {
    // Two slots, one in flight, two sessions 16 deep: most calls are
    // answered Busy at least once, while later calls keep arriving.
    let mut rig = Rig::new("busy-order", &[("queue-depth", "2"), ("window", "1")]);
    rig.start();
    const N: usize = 200;
    let sessions: Vec<_> = [0u8, 128]
        .into_iter()
        .map(|tag| {
            let mut c = rig.client();
            std::thread::spawn(move || (tag, stream_appends(&mut c, tag, N, 16)))
        })
        .collect();
    let mut all = Vec::new();
    for s in sessions {
        let (tag, lbas) = s.join().unwrap();
        assert!(lbas.windows(2).all(|w| w[0] < w[1]), "session {tag}: appends executed out of order: {lbas:?}");
        for (i, lba) in lbas.iter().enumerate() {
            assert_eq!(rig.disk_block(*lba), vec![tag.wrapping_add(i as u8); BLOCK_SIZE], "block {lba}");
        }
        all.extend(lbas);
    }
    all.sort_unstable();
    assert_eq!(all, (0..2 * N as u64).collect::<Vec<_>>(), "nothing lost, nothing twice");
    assert_eq!(assert_no_duplicate_execution(&rig.exec_log()), 2 * N);
    assert_eq!(rig.status().restarts, 0);
}
