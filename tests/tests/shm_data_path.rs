//! The shared-memory data path end to end (client library → supervisor →
//! storage_driver): bulk requests name ranges of a session's sealed memfd,
//! the supervisor only routes its descriptor (at attach, and to every new
//! instance before the replay), a replay after a driver crash reads the
//! same pinned bytes and applies each write exactly once, and bad ranges or
//! bad pools are definite answers that crash nothing.

use nix::sys::memfd::{MFdFlags, memfd_create};
use reinc_client::SharedPool;
use reinc_proto::{CallError, ClientToSup};
use reinc_tests::{Answer, RawConn, Reply, Rig, assert_no_duplicate_execution, reply, request};
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::time::Duration;
use storage_core::{BLOCK_SIZE, BulkRequest, StorageError, StorageRequest};

const T: Duration = Duration::from_secs(10);
/// Blocks per bulk request here (8 KiB), and slots in the test pool.
const BLOCKS: u32 = 16;
const SLOTS: usize = 8;
const SLOT: usize = BLOCKS as usize * BLOCK_SIZE;

fn bulk(req: BulkRequest) -> Vec<u8> {
    request(&StorageRequest::Bulk(req))
}

fn data(lba: u64, round: u8) -> Vec<u8> {
    (0..SLOT).map(|i| (i as u8).wrapping_mul(7) ^ (lba as u8) ^ round.wrapping_mul(0x3B)).collect()
}

/// Every crash point and kind, the crash landing on a bulk write in the
/// middle of 8 in flight: every write is answered once, applied once, and
/// the device holds the pool's bytes; bulk reads then return them.
#[test]
fn bulk_writes_replayed_after_a_crash_read_the_pinned_pool_and_apply_once() {
    bulk_replay("shm-replay", &[]);
}

/// The same where each crash promotes a hot standby (CONTRACTS.md §9): it
/// gets the session's pool behind its `Init`, before the replay needs it.
#[test]
fn bulk_writes_replayed_by_a_promoted_standby_read_the_pool_it_got_behind_init() {
    let rig = bulk_replay("shm-replay-standby", &[("standby", "true")]);
    assert_eq!(rig.sup_lines("promoting the standby of storage_driver").len(), 5, "log:\n{}", rig.log());
}

fn bulk_replay(tag: &str, overrides: &[(&str, &str)]) -> Rig {
    let mut rig = Rig::new(tag, overrides);
    rig.start();
    let mut c = rig.client();
    let pool = SharedPool::create("shm-test", SLOT * SLOTS * 2).unwrap();
    c.attach_pool("storage_driver", &pool).unwrap();
    let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let first = rig.status().generation;
    let plans = ["before-effect:3:segv", "after-effect:3:kill", "after-reply:3:abrt", "after-effect:5:panic"];
    for (i, plan) in plans.into_iter().enumerate() {
        let round = i as u8 + 1;
        let generation = first + i as u32 + 1;
        rig.inject(plan);
        let mut expected = BTreeMap::new();
        for slot in 0..SLOTS {
            let lba = slot as u64 * u64::from(BLOCKS);
            let bytes = data(lba, round);
            pool.copy_in((slot * SLOT) as u64, &bytes).unwrap();
            let pool_offset = (slot * SLOT) as u64;
            let seq =
                c.submit("storage_driver", &bulk(BulkRequest::WriteFrom { lba, blocks: BLOCKS, pool_offset })).unwrap();
            expected.insert(seq, Reply::Written(lba, BLOCKS as u16));
            model.insert(lba, bytes);
        }
        while c.in_flight() > 0 {
            let done = c.wait().unwrap();
            let body = done.result.unwrap_or_else(|e| panic!("{plan}: seq {} failed: {e}", done.seq));
            let want = expected.remove(&done.seq).unwrap_or_else(|| panic!("{plan}: seq {} answered twice", done.seq));
            assert_eq!(reply(&body), want, "{plan}");
        }
        let st = rig.wait_status(T, |s| s.state.name() == "running" && s.generation == generation);
        assert!(st.is_some(), "{plan}: the driver crashed once and came back; log:\n{}", rig.log());
        for (lba, bytes) in &model {
            for b in 0..u64::from(BLOCKS) {
                let at = (b as usize) * BLOCK_SIZE;
                assert_eq!(rig.disk_block(lba + b), bytes[at..at + BLOCK_SIZE], "{plan}: lba {}", lba + b);
            }
        }
    }
    assert_eq!(rig.superblock().applied_count, 4 * SLOTS as u64, "each bulk write applied exactly once");
    assert_no_duplicate_execution(&rig.exec_log());
    // Bulk reads, with a crash among them too, into the second half of the pool.
    rig.inject("after-effect:2:segv");
    let mut reads = BTreeMap::new();
    for slot in 0..SLOTS {
        let lba = slot as u64 * u64::from(BLOCKS);
        let pool_offset = ((SLOTS + slot) * SLOT) as u64;
        let seq =
            c.submit("storage_driver", &bulk(BulkRequest::ReadInto { lba, blocks: BLOCKS, pool_offset })).unwrap();
        reads.insert(seq, (lba, pool_offset));
    }
    while c.in_flight() > 0 {
        let done = c.wait().unwrap();
        let (lba, off) = reads.remove(&done.seq).expect("answered once");
        assert_eq!(reply(&done.result.unwrap()), Reply::Filled(lba, BLOCKS));
        let mut got = vec![0u8; SLOT];
        pool.copy_out(off, &mut got).unwrap();
        assert!(got == model[&lba], "lba {lba}: the pool holds what the device holds");
    }
    rig
}

/// A range outside the pool, a session that attached none, and a pool that
/// is not a shrink-sealed memfd: each is a definite answer, nothing is
/// written, and the driver does not crash.
#[test]
fn bad_ranges_and_bad_pools_are_definite_errors_and_crash_nothing() {
    let mut rig = Rig::new("shm-bad", &[]);
    rig.start();
    let generation = rig.status().generation;

    // No pool attached: NoPool.
    let mut c = rig.client();
    let w = bulk(BulkRequest::WriteFrom { lba: 0, blocks: 1, pool_offset: 0 });
    assert_eq!(reply(&c.call("storage_driver", &w).unwrap().unwrap()), Reply::Error(StorageError::NoPool));

    // A range past the end of the pool, and one that overflows.
    let pool = SharedPool::create("shm-bad", 4 * BLOCK_SIZE).unwrap();
    c.attach_pool("storage_driver", &pool).unwrap();
    let past = bulk(BulkRequest::WriteFrom { lba: 0, blocks: 5, pool_offset: 0 });
    assert_eq!(
        reply(&c.call("storage_driver", &past).unwrap().unwrap()),
        Reply::Error(StorageError::PoolRange {
            pool_offset: 0,
            len: 5 * BLOCK_SIZE as u64,
            pool: 4 * BLOCK_SIZE as u64
        })
    );
    let wrap = bulk(BulkRequest::ReadInto { lba: 0, blocks: 1, pool_offset: u64::MAX });
    assert!(matches!(
        reply(&c.call("storage_driver", &wrap).unwrap().unwrap()),
        Reply::Error(StorageError::PoolRange { .. })
    ));

    // An unsealed memfd and a descriptor-less attach, on a raw connection:
    // refused by the supervisor, which never passes them on.
    let raw = RawConn::connect(&rig);
    raw.send(&ClientToSup::Hello { resume: None });
    assert!(matches!(raw.recv(), Answer::Welcome(_)));
    let unsealed = memfd_create("unsealed", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
    nix::unistd::ftruncate(&unsealed, 4096).unwrap();
    raw.send_with_fd(&ClientToSup::AttachPool { driver: "storage_driver" }, unsealed.as_fd());
    assert_eq!(raw.recv(), Answer::PoolRefused("storage_driver".into(), CallError::BadPool));
    raw.send(&ClientToSup::AttachPool { driver: "storage_driver" });
    assert_eq!(raw.recv(), Answer::PoolRefused("storage_driver".into(), CallError::BadPool));
    let sealed = SharedPool::create("raw", 4096).unwrap();
    raw.send_with_fd(&ClientToSup::AttachPool { driver: "no_such_driver" }, sealed.fd());
    assert_eq!(raw.recv(), Answer::PoolRefused("no_such_driver".into(), CallError::UnknownDriver));
    // The client that kept its memfd unsealed truncates it: nobody mapped it.
    nix::unistd::ftruncate(&unsealed, 0).unwrap();
    // And a sealed pool cannot be truncated by its client at all.
    assert_eq!(nix::unistd::ftruncate(pool.fd(), 0), Err(nix::errno::Errno::EPERM));

    // Before a Hello there is no session to attach to.
    let early = RawConn::connect(&rig);
    early.send_with_fd(&ClientToSup::AttachPool { driver: "storage_driver" }, sealed.fd());
    assert_eq!(early.recv(), Answer::PoolRefused("storage_driver".into(), CallError::NoSession));

    // Still the first instance, nothing written, and the pool path works.
    assert_eq!(rig.status().generation, generation, "no crash; log:\n{}", rig.log());
    assert_eq!(rig.superblock().applied_count, 0);
    pool.copy_in(0, &[0x5A; BLOCK_SIZE]).unwrap();
    let ok = bulk(BulkRequest::WriteFrom { lba: 3, blocks: 1, pool_offset: 0 });
    assert_eq!(reply(&c.call("storage_driver", &ok).unwrap().unwrap()), Reply::Written(3, 1));
    assert_eq!(rig.disk_block(3), vec![0x5A; BLOCK_SIZE]);
}

/// `drvctl blk` through the pool, with the driver killed mid-transfer: the
/// data reads back identical and no request ran twice.
#[test]
fn blk_through_the_pool_survives_a_driver_crash() {
    let mut rig = Rig::new("shm-blk", &[]);
    rig.start();
    rig.inject("after-effect:3:kill");
    let w = rig.drvctl(&["blk", "write", "--bs", "32K", "--count", "16"]);
    let wout = String::from_utf8_lossy(&w.stdout).to_string();
    assert!(w.status.success(), "{}\nlog:\n{}", String::from_utf8_lossy(&w.stderr), rig.log());
    assert!(wout.contains("data through a shared pool"), "{wout}");
    let r = rig.drvctl(&["blk", "read", "--bs", "32K", "--count", "16"]);
    let rout = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let crc = |s: &str| s.lines().find(|l| l.starts_with("crc32 ")).map(|l| l[6..16].to_string());
    assert!(crc(&wout).is_some());
    assert_eq!(crc(&wout), crc(&rout), "write:\n{wout}\nread:\n{rout}");
    assert_eq!(rig.status().generation, 2, "the write crashed the driver once");
    assert_eq!(rig.superblock().applied_count, 16);
    assert_no_duplicate_execution(&rig.exec_log());
}

/// `drvctl blk read` through the pool checks each record where it lands,
/// against the tags the writer computed (the driver checks nothing on this
/// path): a byte flipped in the device file is a definite error naming the
/// block, the driver does not crash, and the records around it read back.
#[test]
fn blk_through_the_pool_names_a_block_damaged_on_the_device() {
    use std::os::unix::fs::FileExt;
    let mut rig = Rig::new("shm-blk-damage", &[]);
    rig.start();
    let w = rig.drvctl(&["blk", "write", "--bs", "32K", "--count", "4"]);
    let wout = String::from_utf8_lossy(&w.stdout).to_string();
    assert!(w.status.success() && wout.contains("data through a shared pool"), "{wout}\nlog:\n{}", rig.log());
    // Block 70 is in the second 32 KiB record, request 1 (blocks 64..128).
    let disk = std::fs::OpenOptions::new().read(true).write(true).open(rig.disk()).unwrap();
    let at = 71 * BLOCK_SIZE as u64 + 9;
    let mut byte = [0u8; 1];
    disk.read_exact_at(&mut byte, at).unwrap();
    disk.write_all_at(&[byte[0] ^ 0x10], at).unwrap();
    let r = rig.drvctl(&["blk", "read", "--bs", "32K", "--count", "4"]);
    let err = String::from_utf8_lossy(&r.stderr).to_string();
    assert!(!r.status.success(), "a damaged block must not read as data");
    assert!(
        err.contains(
            "request 1: storage_driver: the read at 64 returned damaged data: block 70 does not match its checksum"
        ),
        "{err}"
    );
    // The other records are intact, and the driver is the same instance.
    for offset in ["0", "65536", "98304"] {
        let ok = rig.drvctl(&["blk", "read", "--bs", "32K", "--count", "1", "--offset", offset]);
        assert!(ok.status.success(), "offset {offset}: {}", String::from_utf8_lossy(&ok.stderr));
    }
    assert_eq!(rig.status().generation, 1, "nothing crashed; log:\n{}", rig.log());
}
