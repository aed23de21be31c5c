//! Bulk requests (data in the session's shared pool) against `storage_driver`
//! as a real process, this test playing the supervisor: the pool reaches
//! every instance by `AttachPool` + `SCM_RIGHTS`, a replay after a crash
//! reads the same pinned bytes and applies them exactly once, and a client's
//! bad range or bad pool is a definite refusal, never a crash.

use reinc_proto::{ClientId, FromDriver, Generation, RequestId, ToDriver};
use reinc_runtime::testing::{DriverProcess, Options, describe};
use reinc_uio::SharedPool;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;
use storage_core::integrity::{TAG_BYTES, tag_offset, tags_into};
use storage_core::{BLOCK_SIZE, BulkRequest, StorageError, StorageReply, StorageRequest, StorageState, Superblock};

const BIN: &str = env!("CARGO_BIN_EXE_storage_driver");
const BLOCKS: u64 = 4096;
const CLIENT: ClientId = ClientId(77);

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }
    fn disk(&self) -> PathBuf {
        self.0.path().join("disk.img")
    }
    fn log(&self) -> PathBuf {
        self.0.path().join("exec.log")
    }
    fn spawn(&self, fault: Option<&str>) -> DriverProcess {
        let disk = self.disk();
        let blocks = BLOCKS.to_string();
        let opts = Options { exec_log: Some(self.log()), fault: fault.map(String::from), ..Options::default() };
        DriverProcess::spawn(
            Path::new(BIN),
            "storage_driver",
            &["--file", disk.to_str().unwrap(), "--blocks", &blocks],
            opts,
        )
    }
    fn superblock(&self) -> Superblock {
        let bytes = std::fs::read(self.disk()).unwrap();
        Superblock::decode(&bytes[..BLOCK_SIZE]).unwrap().unwrap()
    }
}

fn id(seq: u64) -> RequestId {
    RequestId { client: CLIENT, seq }
}

/// Init, then the pool (as the supervisor does for every new instance).
fn start(d: &mut DriverProcess, generation: u32, state: Option<StorageState>, pool: &SharedPool) {
    let ckpt = state.map(|s| postcard::to_allocvec(&s).unwrap());
    d.send(&ToDriver::Init { generation: Generation(generation), checkpoint: ckpt.as_deref() });
    assert_eq!(d.recv(|f| f.msg == FromDriver::Ready), Some(true));
    d.send_with_fd(&ToDriver::AttachPool { client: CLIENT }, pool.fd());
}

fn request(d: &DriverProcess, seq: u64, req: &StorageRequest<'_>) {
    let body = postcard::to_allocvec(req).unwrap();
    d.send(&ToDriver::Request { id: id(seq), body: &body });
}

fn reply(d: &mut DriverProcess, seq: u64) -> Option<(Option<StorageState>, StorageReply<'static>)> {
    d.recv(|f| match f.msg {
        FromDriver::Reply { id: got, commit, body } => {
            assert_eq!(got, id(seq));
            let r = match postcard::from_bytes::<StorageReply<'_>>(body).unwrap() {
                StorageReply::Written { lba, blocks } => StorageReply::Written { lba, blocks },
                StorageReply::Filled { lba, blocks } => StorageReply::Filled { lba, blocks },
                StorageReply::Error(e) => StorageReply::Error(e),
                StorageReply::Nop => StorageReply::Nop,
                other => panic!("unexpected reply {other:?}"),
            };
            (commit.map(|c| postcard::from_bytes(c).unwrap()), r)
        }
        other => panic!("expected a reply to {seq}, got {other:?}"),
    })
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) ^ (i >> 9) as u8).collect()
}

/// 1 MiB in one request: written from the pool, read back into another
/// range of it, and the file holds exactly those bytes.
#[test]
fn one_mebibyte_moves_through_the_pool_in_one_request() {
    let dir = Dir::new();
    let pool = SharedPool::create("bulk-test", 2 << 20).unwrap();
    let data = pattern(1 << 20, 3);
    pool.copy_in(0, &data).unwrap();
    let mut d = dir.spawn(None);
    start(&mut d, 1, None, &pool);
    let blocks = (data.len() / BLOCK_SIZE) as u32;
    request(&d, 1, &StorageRequest::Bulk(BulkRequest::WriteFrom { lba: 8, blocks, pool_offset: 0 }));
    let (state, r) = reply(&mut d, 1).unwrap();
    assert_eq!(r, StorageReply::Written { lba: 8, blocks: blocks as u16 });
    request(&d, 2, &StorageRequest::Bulk(BulkRequest::ReadInto { lba: 8, blocks, pool_offset: 1 << 20 }));
    assert_eq!(reply(&mut d, 2).unwrap().1, StorageReply::Filled { lba: 8, blocks });
    let mut back = vec![0u8; data.len()];
    pool.copy_out(1 << 20, &mut back).unwrap();
    assert!(back == data, "read back what was written");
    let file = std::fs::read(dir.disk()).unwrap();
    assert!(file[9 * BLOCK_SIZE..9 * BLOCK_SIZE + data.len()] == data[..], "lba 8 is file block 9");
    assert_eq!(state, Some(StorageState { append_cursor: 0, writes: 1 }));
}

/// The driver dies after writing the data (and watermark) but before its
/// reply; a new instance gets the same pool and the same request: it is
/// recognised as applied, answered the same, and counted once.
fn crash_then_replay(fault: &str, expect_replayed: bool, tagged: bool) {
    let dir = Dir::new();
    let pool = SharedPool::create("bulk-replay", 64 * BLOCK_SIZE).unwrap();
    let data = pattern(64 * BLOCK_SIZE, 9);
    pool.copy_in(0, &data).unwrap();
    let bulk = BulkRequest::WriteFrom { lba: 100, blocks: 64, pool_offset: 0 };
    let tags = tags_of(100, &data);
    let write = if tagged { StorageRequest::BulkTagged { req: bulk, tags: &tags } } else { StorageRequest::Bulk(bulk) };

    let mut d = dir.spawn(Some(fault));
    start(&mut d, 1, None, &pool);
    request(&d, 1, &write);
    assert_eq!(reply(&mut d, 1), None, "{fault}: died before replying");
    let status = d.wait_for(Duration::from_secs(10)).expect("crashed");
    assert_ne!(status.code(), Some(0), "{fault}: {}", describe(status));

    // The pinned bytes are still in the pool; the replay finds them there.
    let mut d = dir.spawn(None);
    start(&mut d, 2, None, &pool);
    request(&d, 1, &write);
    let (state, r) = reply(&mut d, 1).unwrap();
    assert_eq!(r, StorageReply::Written { lba: 100, blocks: 64 });
    assert_eq!(state, Some(StorageState { append_cursor: 0, writes: 1 }));
    let sb = dir.superblock();
    assert_eq!(sb.applied_count, 1, "{fault}: applied exactly once");
    assert_eq!(sb.last_applied, Some(id(1)));
    let lines: Vec<String> = std::fs::read_to_string(dir.log()).unwrap().lines().map(String::from).collect();
    assert_eq!(lines.len(), 1, "{fault}: one execution in the exec log: {lines:?}");
    // Exec log lines are "GENERATION CLIENT SEQ".
    let applied_by = if expect_replayed { "2 77 1" } else { "1 77 1" };
    assert_eq!(lines[0], applied_by, "{fault}: which generation applied it");
    let file = std::fs::read(dir.disk()).unwrap();
    assert!(file[101 * BLOCK_SIZE..165 * BLOCK_SIZE] == data[..]);
    let table = tag_offset(BLOCKS, 100) as usize;
    assert!(file[table..table + tags.len()] == tags[..], "{fault}: the tags of what the pool held");
}

#[test]
fn replay_after_crash_after_effect_reads_the_pinned_pool_and_applies_once() {
    crash_then_replay("after-effect:1:segv", false, false);
}

#[test]
fn replay_after_crash_before_effect_applies_the_pinned_bytes_once() {
    crash_then_replay("before-effect:1:kill", true, false);
}

#[test]
fn replay_of_a_tagged_write_after_crash_after_effect_applies_once() {
    crash_then_replay("after-effect:1:segv", false, true);
}

#[test]
fn replay_of_a_tagged_write_after_crash_before_effect_applies_the_pinned_bytes_once() {
    crash_then_replay("before-effect:1:abrt", true, true);
}

fn tags_of(lba: u64, data: &[u8]) -> Vec<u8> {
    let mut tags = vec![0u8; data.len() / BLOCK_SIZE * TAG_BYTES];
    tags_into(lba, data, &mut tags);
    tags
}

/// The client-checked form in the real driver: a 1 MiB write stores the
/// client's tags in the file's table as sent, and the tagged read answers
/// them, the data in the pool.
#[test]
fn one_mebibyte_tagged_write_and_read_carry_the_clients_tags() {
    let dir = Dir::new();
    let pool = SharedPool::create("bulk-tagged", 2 << 20).unwrap();
    let data = pattern(1 << 20, 5);
    pool.copy_in(0, &data).unwrap();
    let mut d = dir.spawn(None);
    start(&mut d, 1, None, &pool);
    let blocks = (data.len() / BLOCK_SIZE) as u32;
    let tags = tags_of(8, &data);
    let req = BulkRequest::WriteFrom { lba: 8, blocks, pool_offset: 0 };
    request(&d, 1, &StorageRequest::BulkTagged { req, tags: &tags });
    assert_eq!(reply(&mut d, 1).unwrap().1, StorageReply::Written { lba: 8, blocks: blocks as u16 });
    let req = BulkRequest::ReadInto { lba: 8, blocks, pool_offset: 1 << 20 };
    request(&d, 2, &StorageRequest::BulkTagged { req, tags: &[] });
    let stored = d.recv(|f| match f.msg {
        FromDriver::Reply { body, .. } => match postcard::from_bytes::<StorageReply<'_>>(body).unwrap() {
            StorageReply::FilledTagged { lba: 8, blocks: b, tags } if b == blocks => tags.to_vec(),
            other => panic!("unexpected reply {other:?}"),
        },
        other => panic!("expected a reply, got {other:?}"),
    });
    assert!(stored == Some(tags.clone()), "the tags as the client sent them");
    let mut back = vec![0u8; data.len()];
    pool.copy_out(1 << 20, &mut back).unwrap();
    assert!(back == data, "read back what was written");
    let file = std::fs::read(dir.disk()).unwrap();
    let table = tag_offset(BLOCKS, 8) as usize;
    assert!(file[table..table + tags.len()] == tags[..]);
}

/// Bad ranges from the client are refused, the driver keeps running, and
/// nothing is written.
#[test]
fn bad_pool_ranges_are_refused_without_crashing() {
    let dir = Dir::new();
    let pool = SharedPool::create("bulk-bad", 8 * BLOCK_SIZE).unwrap();
    let mut d = dir.spawn(None);
    start(&mut d, 1, None, &pool);
    let len = 8 * BLOCK_SIZE as u64;
    let cases = [
        (
            BulkRequest::WriteFrom { lba: 0, blocks: 9, pool_offset: 0 },
            StorageError::PoolRange { pool_offset: 0, len: 9 * BLOCK_SIZE as u64, pool: len },
        ),
        (
            BulkRequest::ReadInto { lba: 0, blocks: 1, pool_offset: len },
            StorageError::PoolRange { pool_offset: len, len: BLOCK_SIZE as u64, pool: len },
        ),
        (
            BulkRequest::ReadInto { lba: 0, blocks: 1, pool_offset: u64::MAX - 1 },
            StorageError::PoolRange { pool_offset: u64::MAX - 1, len: BLOCK_SIZE as u64, pool: len },
        ),
        (
            BulkRequest::WriteFrom { lba: BLOCKS, blocks: 1, pool_offset: 0 },
            StorageError::OutOfRange { lba: BLOCKS, blocks: 1, capacity: BLOCKS },
        ),
    ];
    for (seq, (req, want)) in cases.into_iter().enumerate() {
        let seq = seq as u64 + 1;
        request(&d, seq, &StorageRequest::Bulk(req));
        assert_eq!(reply(&mut d, seq).unwrap(), (None, StorageReply::Error(want)), "{req:?}");
    }
    request(&d, 99, &StorageRequest::Nop);
    assert_eq!(reply(&mut d, 99).unwrap().1, StorageReply::Nop, "still serving");
    assert_eq!(dir.superblock().applied_count, 0);
}

/// A pool that is not a shrink-sealed memfd (so the client could truncate
/// it under the driver's mapping and make it SIGBUS) is never mapped: the
/// session's bulk requests are refused, and the driver lives on.
#[test]
fn unsealed_or_foreign_pools_are_refused_and_the_driver_lives_on() {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let dir = Dir::new();
    let mut d = dir.spawn(None);
    let sealed = SharedPool::create("ok", 4 * BLOCK_SIZE).unwrap();
    start(&mut d, 1, None, &sealed);
    let w = StorageRequest::Bulk(BulkRequest::WriteFrom { lba: 0, blocks: 1, pool_offset: 0 });

    // A memfd the client keeps free to shrink.
    let unsealed = memfd_create("unsealed", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
    nix::unistd::ftruncate(&unsealed, 4 * BLOCK_SIZE as i64).unwrap();
    d.send_with_fd(&ToDriver::AttachPool { client: CLIENT }, unsealed.as_fd());
    request(&d, 1, &w);
    assert_eq!(reply(&mut d, 1).unwrap().1, StorageReply::Error(StorageError::NoPool));
    // The client truncates it now: the driver never mapped it, nothing happens.
    nix::unistd::ftruncate(&unsealed, 0).unwrap();

    // A plain file is no memfd.
    let file = tempfile::tempfile().unwrap();
    file.set_len(4096).unwrap();
    d.send_with_fd(&ToDriver::AttachPool { client: CLIENT }, file.as_fd());
    request(&d, 2, &w);
    assert_eq!(reply(&mut d, 2).unwrap().1, StorageReply::Error(StorageError::NoPool));

    // AttachPool without a descriptor.
    d.send(&ToDriver::AttachPool { client: CLIENT });
    request(&d, 3, &w);
    assert_eq!(reply(&mut d, 3).unwrap().1, StorageReply::Error(StorageError::NoPool));

    // A sealed pool cannot be truncated by its client at all.
    assert_eq!(nix::unistd::ftruncate(sealed.fd(), 0), Err(nix::errno::Errno::EPERM));
    // Another session's pool is not this session's: a detach, then refusal.
    d.send_with_fd(&ToDriver::AttachPool { client: CLIENT }, sealed.fd());
    request(&d, 4, &w);
    assert!(matches!(reply(&mut d, 4).unwrap().1, StorageReply::Written { .. }));
    d.send(&ToDriver::DetachPool { client: CLIENT });
    request(&d, 5, &w);
    assert_eq!(reply(&mut d, 5).unwrap().1, StorageReply::Error(StorageError::NoPool));
    assert!(d.wait_for(Duration::from_millis(50)).is_none(), "the driver is still running");
}
