//! Random SIGKILLs against a pipelining "supervisor": every write is answered
//! once, counted once in the superblock and the exec log, and the disk equals
//! a model, whatever instant the kills land on (including between a data
//! write and its watermark, which no injected fault point can reach).

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reinc_proto::{ClientId, FromDriver, Generation, RequestId, ToDriver};
use reinc_runtime::testing::{DriverProcess, Options};
use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::time::Duration;
use storage_core::{BLOCK_SIZE, StorageReply, StorageRequest, StorageState, Superblock};

const BIN: &str = env!("CARGO_BIN_EXE_storage_driver");
const BLOCKS: u64 = 64;
const REQUESTS: u64 = 1500;
const WINDOW: usize = 6;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Pending {
    seq: u64,
    append: bool,
    lba: u64,
    data: Vec<u8>,
}

impl Pending {
    fn body(&self) -> Vec<u8> {
        let req = if self.append {
            StorageRequest::Append { data: &self.data }
        } else {
            StorageRequest::Write { lba: self.lba, data: &self.data }
        };
        postcard::to_allocvec(&req).unwrap()
    }
}

fn id(seq: u64) -> RequestId {
    RequestId { client: ClientId(5), seq }
}

#[test]
fn random_kills_never_lose_or_duplicate_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    let log = dir.path().join("exec.log");
    let args = ["--file", disk.to_str().unwrap(), "--blocks", "64"];
    let mut rng = Rng(0x5EED_CAFE_F00D_0001);
    let mut model = vec![0u8; BLOCKS as usize * BLOCK_SIZE];
    let mut committed = StorageState::default();
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let (mut next_seq, mut answered, mut generation, mut kills, mut interrupted) = (1u64, 0u64, 0u32, 0u32, 0u32);
    // Appends are planned against the cursor they will see, so none is refused.
    let mut planned_cursor = 0u64;

    while answered < REQUESTS {
        generation += 1;
        let mut d = DriverProcess::spawn(
            Path::new(BIN),
            "storage_driver",
            &args,
            Options { exec_log: Some(log.clone()), ..Options::default() },
        );
        let ckpt = postcard::to_allocvec(&committed).unwrap();
        // Sends may fail once the killer struck; the next recv then sees EOF.
        let _ = d.try_send(&ToDriver::Init { generation: Generation(generation), checkpoint: Some(&ckpt) });
        for p in &queue {
            let _ = d.try_send(&ToDriver::Request { id: id(p.seq), body: &p.body() });
        }
        let killer = (kills < 150).then(|| {
            kills += 1;
            let pid = Pid::from_raw(i32::try_from(d.pid()).unwrap());
            let delay = Duration::from_micros(rng.below(2500));
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = kill(pid, Signal::SIGKILL);
            })
        });
        loop {
            while queue.len() < WINDOW && next_seq <= REQUESTS {
                let blocks = 1 + rng.below(2);
                let append = rng.below(4) == 0 && planned_cursor + blocks <= BLOCKS;
                let lba = if append { planned_cursor } else { rng.below(BLOCKS - blocks + 1) };
                planned_cursor += if append { blocks } else { 0 };
                let data = vec![(next_seq % 251) as u8 + 1; blocks as usize * BLOCK_SIZE];
                let p = Pending { seq: next_seq, append, lba, data };
                let _ = d.try_send(&ToDriver::Request { id: id(p.seq), body: &p.body() });
                queue.push_back(p);
                next_seq += 1;
            }
            if queue.is_empty() {
                break;
            }
            let frame = d.recv(|f| {
                assert_eq!(f.generation, Generation(generation), "stale frames are never sent");
                match f.msg {
                    FromDriver::Ready => None,
                    FromDriver::Reply { id, commit, body } => Some((
                        id,
                        commit.map(|c| postcard::from_bytes::<StorageState>(c).unwrap()),
                        postcard::from_bytes::<StorageReply<'_>>(body).map(|r| format!("{r:?}")).unwrap(),
                        postcard::from_bytes::<StorageReply<'_>>(body).ok().and_then(|r| match r {
                            StorageReply::Written { lba, .. } | StorageReply::Appended { lba, .. } => Some(lba),
                            _ => None,
                        }),
                    )),
                    other => panic!("unexpected {other:?}"),
                }
            });
            let Some(msg) = frame else {
                interrupted += 1; // the instance died with requests pending: relaunch and replay
                break;
            };
            let Some((rid, commit, text, lba)) = msg else { continue };
            let p = queue.pop_front().expect("a reply for a pending request");
            assert_eq!(rid, id(p.seq), "replies come in request order");
            let lba = lba.unwrap_or_else(|| panic!("request {} refused: {text}", p.seq));
            assert_eq!(lba, p.lba, "request {} landed where planned", p.seq);
            committed = commit.expect("every write commits");
            let at = lba as usize * BLOCK_SIZE;
            model[at..at + p.data.len()].copy_from_slice(&p.data);
            answered += 1;
        }
        if let Some(k) = killer {
            k.join().unwrap();
        }
        drop(d);
    }

    let bytes = std::fs::read(&disk).unwrap();
    let sb = Superblock::decode(&bytes[..BLOCK_SIZE]).unwrap().unwrap();
    assert_eq!(sb.applied_count, REQUESTS, "each write counted once on the device");
    assert_eq!(committed.writes, REQUESTS);
    // The data blocks; the block checksum table follows them (storage_core::integrity).
    assert!(bytes[BLOCK_SIZE..BLOCK_SIZE + model.len()] == model[..], "disk equals the model");
    let lines = std::fs::read_to_string(&log).unwrap();
    let ids: Vec<&str> = lines.lines().map(|l| l.split_once(' ').unwrap().1).collect();
    assert_eq!(ids.len() as u64, REQUESTS, "one exec-log line per write");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len(), "no write executed twice");
    // How many kills land mid-stream depends on the machine's speed; a few
    // always do, since each instance is killed within 2.5 ms of its launch.
    assert!(
        interrupted >= 3,
        "only {interrupted} of {generation} instances ({kills} kills) died with requests pending"
    );
}
