//! `storage_driver` as a real process, with this test playing the supervisor:
//! the launch contract, every crash kind, and exactly-once across a crash.

use nix::sys::signal::Signal;
use reinc_proto::{ClientId, CrashKind, CrashPoint, FaultPlan, FromDriver, Generation, RequestId, ToDriver};
use reinc_runtime::testing::{DriverProcess, IpcFd, Options, describe};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use storage_core::{BLOCK_SIZE, StorageReply, StorageRequest, StorageState, Superblock};

const BIN: &str = env!("CARGO_BIN_EXE_storage_driver");
const BLOCKS: &str = "32";

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }
    fn disk(&self) -> PathBuf {
        self.dir.path().join("disk.img")
    }
    fn log(&self) -> PathBuf {
        self.dir.path().join("exec.log")
    }
    fn spawn(&self, opts: Options) -> DriverProcess {
        let disk = self.disk();
        DriverProcess::spawn(
            Path::new(BIN),
            "storage_driver",
            &["--file", disk.to_str().unwrap(), "--blocks", BLOCKS],
            opts,
        )
    }
    fn superblock(&self) -> Superblock {
        let bytes = std::fs::read(self.disk()).unwrap();
        Superblock::decode(&bytes[..BLOCK_SIZE]).unwrap().unwrap()
    }
    fn exec_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.log()).unwrap_or_default().lines().map(String::from).collect()
    }
}

fn id(seq: u64) -> RequestId {
    RequestId { client: ClientId(1), seq }
}

fn init(d: &mut DriverProcess, generation: u32, state: Option<StorageState>) {
    let ckpt = state.map(|s| postcard::to_allocvec(&s).unwrap());
    d.send(&ToDriver::Init { generation: Generation(generation), checkpoint: ckpt.as_deref() });
    let ready = d.recv(|f| (f.generation, f.msg == FromDriver::Ready));
    assert_eq!(ready, Some((Generation(generation), true)));
}

fn request(d: &DriverProcess, seq: u64, req: &StorageRequest<'_>) {
    let body = postcard::to_allocvec(req).unwrap();
    d.send(&ToDriver::Request { id: id(seq), body: &body });
}

/// The reply to `seq`: (commit, reply body) owned, or `None` if the driver died first.
fn reply(d: &mut DriverProcess, seq: u64) -> Option<(Option<StorageState>, Vec<u8>)> {
    d.recv(|f| match f.msg {
        FromDriver::Reply { id: got, commit, body } => {
            assert_eq!(got, id(seq));
            (commit.map(|c| postcard::from_bytes(c).unwrap()), body.to_vec())
        }
        other => panic!("expected a reply to {seq}, got {other:?}"),
    })
}

fn block(fill: u8) -> Vec<u8> {
    vec![fill; 2 * BLOCK_SIZE]
}

#[test]
fn launch_write_read_and_clean_exit_on_eof() {
    let dir = Dir::new();
    let mut d = dir.spawn(Options::default());
    init(&mut d, 3, None);
    let data = block(0xA5);
    request(&d, 1, &StorageRequest::Write { lba: 4, data: &data });
    let (commit, body) = reply(&mut d, 1).unwrap();
    assert_eq!(commit, Some(StorageState { append_cursor: 0, writes: 1 }));
    assert_eq!(postcard::from_bytes::<StorageReply<'_>>(&body).unwrap(), StorageReply::Written { lba: 4, blocks: 2 });
    request(&d, 2, &StorageRequest::Read { lba: 4, blocks: 2 });
    let (commit, body) = reply(&mut d, 2).unwrap();
    assert_eq!(commit, None);
    assert_eq!(postcard::from_bytes::<StorageReply<'_>>(&body).unwrap(), StorageReply::Data(&data));
    d.close();
    let status = d.wait_for(Duration::from_secs(10)).expect("exits on EOF");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn socket_inherited_by_number_is_adopted_too() {
    let dir = Dir::new();
    let mut d = dir.spawn(Options { ipc: Some(IpcFd::Inherited), ..Options::default() });
    init(&mut d, 1, None);
    request(&d, 1, &StorageRequest::Geometry);
    let (_, body) = reply(&mut d, 1).unwrap();
    let geo = postcard::from_bytes::<StorageReply<'_>>(&body).unwrap();
    assert_eq!(geo, StorageReply::Geometry { blocks: 32, block_size: 512 });
}

#[test]
fn malformed_request_body_gets_a_bad_request_reply() {
    let dir = Dir::new();
    let mut d = dir.spawn(Options::default());
    init(&mut d, 1, None);
    d.send(&ToDriver::Request { id: id(1), body: &[0xEE, 0xEE] });
    let (commit, body) = reply(&mut d, 1).unwrap();
    assert_eq!(commit, None);
    let err = postcard::from_bytes::<StorageReply<'_>>(&body).unwrap();
    assert_eq!(err, StorageReply::Error(storage_core::StorageError::BadRequest));
}

#[test]
fn orphaned_driver_exits_before_touching_anything() {
    let dir = Dir::new();
    let mut d = dir.spawn(Options { supervisor_pid: Some(1), ..Options::default() });
    let status = d.wait_for(Duration::from_secs(10)).expect("exits at once");
    assert_eq!(status.code(), Some(2));
    assert!(!dir.disk().exists(), "never opened its device");
}

#[test]
fn bad_arguments_are_reported_as_fatal_at_init() {
    let mut d = DriverProcess::spawn(Path::new(BIN), "storage_driver", &["--blocks", "8"], Options::default());
    d.send(&ToDriver::Init { generation: Generation(2), checkpoint: None });
    let reason = d.expect_fatal();
    assert!(reason.contains("--file is required"));
    assert_eq!(d.wait_for(Duration::from_secs(10)).unwrap().code(), Some(1));
}

#[test]
fn foreign_backing_file_is_refused_and_left_intact() {
    let dir = Dir::new();
    std::fs::write(dir.disk(), b"#!/bin/sh\necho precious\n").unwrap();
    let mut d = dir.spawn(Options::default());
    d.send(&ToDriver::Init { generation: Generation(1), checkpoint: None });
    let reason = d.expect_fatal();
    assert!(reason.contains("disk.img") && reason.contains("REINCBLK"), "{reason}");
    let bytes = std::fs::read(dir.disk()).unwrap();
    assert!(bytes.starts_with(b"#!/bin/sh\necho precious\n"));
}

/// Each crash kind kills the process the way its name says.
#[test]
fn every_crash_kind_dies_as_named() {
    let cases = [
        (CrashKind::Segv, "SIGSEGV"),
        (CrashKind::Kill, "SIGKILL"),
        (CrashKind::Abrt, "SIGABRT"),
        (CrashKind::Panic, "exit 101"),
        (CrashKind::Exit, "exit 1"),
    ];
    for (kind, want) in cases {
        let dir = Dir::new();
        let mut d = dir.spawn(Options::default());
        init(&mut d, 1, None);
        d.send(&ToDriver::Inject(FaultPlan { point: CrashPoint::BeforeEffect, on_request: 1, kind }));
        request(&d, 1, &StorageRequest::Nop);
        assert_eq!(reply(&mut d, 1), None, "{kind:?}: no reply");
        let status = d.wait_for(Duration::from_secs(10)).expect("dies");
        assert_eq!(describe(status), want, "{kind:?}");
    }
}

#[test]
fn hang_stops_answering_pings_until_killed() {
    let dir = Dir::new();
    let mut d = dir.spawn(Options { fault: Some("after-reply:1:hang".into()), ..Options::default() });
    init(&mut d, 1, None);
    request(&d, 1, &StorageRequest::Nop);
    assert!(reply(&mut d, 1).is_some(), "the reply precedes the hang");
    assert!(d.wait_for(Duration::from_millis(300)).is_none(), "still alive");
    let status = d.kill();
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
}

#[test]
fn init_fault_kills_before_ready() {
    let dir = Dir::new();
    let mut d = dir.spawn(Options { fault: Some("init:1:abrt".into()), ..Options::default() });
    d.send(&ToDriver::Init { generation: Generation(1), checkpoint: None });
    assert_eq!(d.recv(|_| ()), None, "no Ready");
    assert_eq!(describe(d.wait_for(Duration::from_secs(10)).unwrap()), "SIGABRT");
}

/// Crash at `point` while writing request 2, relaunch, replay: the device and
/// the exec log count request 2 exactly once, and the replayed reply is the
/// one the first attempt would have sent.
fn crash_and_replay(point: CrashPoint, kind: CrashKind) {
    let dir = Dir::new();
    let log = || Options { exec_log: Some(dir.log()), ..Options::default() };
    let data = block(0x3C);
    let write = StorageRequest::Append { data: &data };

    let mut d = dir.spawn(Options { fault: Some(format!("{}:2:{}", point.name(), kind.name())), ..log() });
    init(&mut d, 1, None);
    request(&d, 1, &write);
    let (s1, _) = reply(&mut d, 1).unwrap();
    request(&d, 2, &write);
    let first = reply(&mut d, 2);
    let status = d.wait_for(Duration::from_secs(10)).expect("crashed");
    assert_ne!(status.code(), Some(0), "{point:?}: {}", describe(status));
    // The supervisor replays request 2 only if it saw no reply.
    let committed = if point == CrashPoint::AfterReply {
        let (s2, _) = first.expect("reply sent before the crash");
        s2
    } else {
        assert_eq!(first, None, "{point:?}: no reply");
        let mut d = dir.spawn(log());
        init(&mut d, 2, s1);
        request(&d, 2, &write);
        let (s2, body) = reply(&mut d, 2).unwrap();
        let r = postcard::from_bytes::<StorageReply<'_>>(&body).unwrap();
        assert_eq!(r, StorageReply::Appended { lba: 2, blocks: 2 }, "{point:?}: same blocks as the first attempt");
        s2
    };
    assert_eq!(committed, Some(StorageState { append_cursor: 4, writes: 2 }));
    let sb = dir.superblock();
    assert_eq!(sb.applied_count, 2, "{point:?}: each write counted once");
    assert_eq!(sb.last_applied, Some(id(2)));
    let lines = dir.exec_lines();
    assert_eq!(lines.iter().filter(|l| l.ends_with(" 1 2")).count(), 1, "{point:?}: {lines:?}");
    assert_eq!(lines.len(), 2, "{point:?}: {lines:?}");
    let bytes = std::fs::read(dir.disk()).unwrap();
    assert!(bytes[3 * BLOCK_SIZE..5 * BLOCK_SIZE].iter().all(|&b| b == 0x3C));
}

#[test]
fn crash_before_effect_then_replay_applies_once() {
    crash_and_replay(CrashPoint::BeforeEffect, CrashKind::Segv);
}

#[test]
fn crash_after_effect_then_replay_skips_the_effect() {
    crash_and_replay(CrashPoint::AfterEffect, CrashKind::Kill);
}

#[test]
fn crash_after_reply_needs_no_replay() {
    crash_and_replay(CrashPoint::AfterReply, CrashKind::Abrt);
}

#[test]
fn trace_memfd_shows_the_fault_after_death() {
    let dir = Dir::new();
    let trace = tempfile::tempfile().unwrap();
    trace.set_len(reinc_ringbuf::shared::RING_BYTES as u64).unwrap();
    let opts = Options {
        trace: Some(trace.try_clone().unwrap()),
        fault: Some("after-effect:1:segv".into()),
        ..Options::default()
    };
    let mut d = dir.spawn(opts);
    init(&mut d, 4, None);
    request(&d, 1, &StorageRequest::Write { lba: 0, data: &block(1) });
    assert_eq!(reply(&mut d, 1), None);
    assert_eq!(describe(d.wait_for(Duration::from_secs(10)).unwrap()), "SIGSEGV");
    let mut area = vec![0u8; reinc_ringbuf::shared::RING_BYTES];
    nix::sys::uio::pread(&trace, &mut area, 0).unwrap();
    let events: Vec<String> = reinc_ringbuf::shared::records(&area).map(|r| r.event.to_string()).collect();
    let tail = &events[events.len() - 4..events.len() - 1];
    let applied = storage_core::Trace::Applied { lba: 0, blocks: 2 }.event().to_string();
    assert_eq!(tail, ["request c1:1 (#1)", applied.as_str(), "effect c1:1"], "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("FAULT after-effect:1:segv"), "{events:?}");
    // The driver registered its core's legend: readers name the storage event.
    let legend = reinc_ringbuf::shared::legend(&area).expect("storage_driver writes its trace legend");
    let named: Vec<String> = reinc_ringbuf::shared::records(&area)
        .filter(|r| matches!(r.event, reinc_ringbuf::Event::Driver { .. }))
        .map(|r| reinc_ringbuf::shared::describe(&r, Some(&legend)).to_string())
        .collect();
    assert!(named.last().is_some_and(|l| l.ends_with(" storage: applied lba=0x0 blocks=0x2")), "{named:?}");
}

#[test]
fn sigterm_is_an_orderly_shutdown() {
    let dir = Dir::new();
    let mut d = dir.spawn(Options::default());
    init(&mut d, 1, None);
    request(&d, 1, &StorageRequest::Write { lba: 0, data: &block(7) });
    assert!(reply(&mut d, 1).is_some());
    let pid = nix::unistd::Pid::from_raw(i32::try_from(d.pid()).unwrap());
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    let status = d.wait_for(Duration::from_secs(10)).expect("stops");
    assert_eq!(describe(status), "exit 0");
}

#[test]
fn sync_data_mode_writes_and_reads_back() {
    let dir = Dir::new();
    let disk = dir.disk();
    let args = ["--file", disk.to_str().unwrap(), "--blocks", BLOCKS, "--sync-data"];
    let mut d = DriverProcess::spawn(Path::new(BIN), "storage_driver", &args, Options::default());
    init(&mut d, 1, None);
    let data = block(0x11);
    request(&d, 1, &StorageRequest::Append { data: &data });
    let (commit, _) = reply(&mut d, 1).unwrap();
    assert_eq!(commit, Some(StorageState { append_cursor: 2, writes: 1 }));
    request(&d, 2, &StorageRequest::Read { lba: 0, blocks: 2 });
    let (_, body) = reply(&mut d, 2).unwrap();
    assert_eq!(postcard::from_bytes::<StorageReply<'_>>(&body).unwrap(), StorageReply::Data(&data));
    assert_eq!(dir.superblock().applied_count, 1);
}

/// One `kill -SEGV` (or `-BUS`) from outside, as an operator would send it,
/// kills the driver by that signal. std's stack-overflow handler would
/// otherwise swallow the first one sent.
#[test]
fn one_external_sigsegv_or_sigbus_kills_the_driver_by_it() {
    for (sig, want) in [(Signal::SIGSEGV, "SIGSEGV"), (Signal::SIGBUS, "SIGBUS")] {
        let dir = Dir::new();
        let mut d = dir.spawn(Options::default());
        init(&mut d, 1, None);
        let pid = nix::unistd::Pid::from_raw(d.pid() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
        let status = d.wait_for(Duration::from_secs(10)).expect("dies from the first signal");
        assert_eq!(describe(status), want);
    }
}
