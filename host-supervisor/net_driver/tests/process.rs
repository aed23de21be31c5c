//! `net_driver` as a real process, with this test playing the supervisor.

use net_core::{HEADER_BYTES, Header, NetReply, NetRequest, NetState};
use reinc_proto::{ClientId, FromDriver, Generation, RequestId, ToDriver};
use reinc_runtime::testing::{DriverProcess, Options, describe};
use std::path::{Path, PathBuf};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_net_driver");

fn spawn(ring: &Path, opts: Options) -> DriverProcess {
    DriverProcess::spawn(Path::new(BIN), "net_driver", &["--file", ring.to_str().unwrap(), "--slots", "8"], opts)
}

fn id(seq: u64) -> RequestId {
    RequestId { client: ClientId(9), seq }
}

fn init(d: &mut DriverProcess, generation: u32, state: Option<NetState>) {
    let ckpt = state.map(|s| postcard::to_allocvec(&s).unwrap());
    d.send(&ToDriver::Init { generation: Generation(generation), checkpoint: ckpt.as_deref() });
    assert_eq!(d.recv(|f| (f.generation, f.msg == FromDriver::Ready)), Some((Generation(generation), true)));
}

/// Sends `req` as request `seq`; returns (commit, reply body) or `None` if the driver died.
fn call(d: &mut DriverProcess, seq: u64, req: &NetRequest<'_>) -> Option<(Option<NetState>, Vec<u8>)> {
    let body = postcard::to_allocvec(req).unwrap();
    d.send(&ToDriver::Request { id: id(seq), body: &body });
    d.recv(|f| match f.msg {
        FromDriver::Reply { id: got, commit, body } => {
            assert_eq!(got, id(seq));
            (commit.map(|c| postcard::from_bytes(c).unwrap()), body.to_vec())
        }
        other => panic!("expected a reply to {seq}, got {other:?}"),
    })
}

fn header(ring: &PathBuf) -> Header {
    let bytes = std::fs::read(ring).unwrap();
    Header::decode(bytes[..HEADER_BYTES].try_into().unwrap()).unwrap().unwrap()
}

#[test]
fn packets_loop_back_through_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    let mut d = spawn(&ring, Options::default());
    init(&mut d, 1, None);
    let (s, body) = call(&mut d, 1, &NetRequest::Send { data: b"ping" }).unwrap();
    assert_eq!(s, Some(NetState { tx: 1, rx: 0 }));
    assert_eq!(postcard::from_bytes::<NetReply<'_>>(&body).unwrap(), NetReply::Sent { seq: 0 });
    let (s, body) = call(&mut d, 2, &NetRequest::Recv).unwrap();
    assert_eq!(s, Some(NetState { tx: 1, rx: 1 }));
    assert_eq!(postcard::from_bytes::<NetReply<'_>>(&body).unwrap(), NetReply::Packet { seq: 0, data: b"ping" });
    let (s, body) = call(&mut d, 3, &NetRequest::Recv).unwrap();
    assert_eq!((s, postcard::from_bytes::<NetReply<'_>>(&body).unwrap()), (None, NetReply::Empty));
    d.close();
    assert_eq!(d.wait_for(Duration::from_secs(10)).map(describe).as_deref(), Some("exit 0"));
}

#[test]
fn send_replayed_after_a_crash_after_its_effect_is_queued_once() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    let log = dir.path().join("exec.log");
    let opts = || Options { exec_log: Some(log.clone()), ..Options::default() };
    let mut d = spawn(&ring, Options { fault: Some("after-effect:1:segv".into()), ..opts() });
    init(&mut d, 1, None);
    assert_eq!(call(&mut d, 1, &NetRequest::Send { data: b"only once" }), None);
    assert_eq!(d.wait_for(Duration::from_secs(10)).map(describe).as_deref(), Some("SIGSEGV"));

    let mut d = spawn(&ring, opts());
    init(&mut d, 2, None);
    let (s, body) = call(&mut d, 1, &NetRequest::Send { data: b"only once" }).unwrap();
    assert_eq!(
        (s, postcard::from_bytes::<NetReply<'_>>(&body).unwrap()),
        (Some(NetState { tx: 1, rx: 0 }), NetReply::Sent { seq: 0 })
    );
    let (_, body) = call(&mut d, 2, &NetRequest::Stats).unwrap();
    let stats = postcard::from_bytes::<NetReply<'_>>(&body).unwrap();
    assert!(matches!(stats, NetReply::Stats { sent: 1, received: 0, queued: 1, capacity: 8, .. }), "{stats:?}");
    assert_eq!(header(&ring).applied_count, 1);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "1 9 1\n");
}

#[test]
fn impossible_checkpoint_is_fatal_at_init() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    let mut d = spawn(&ring, Options::default());
    let ckpt = postcard::to_allocvec(&NetState { tx: 100, rx: 1 }).unwrap();
    d.send(&ToDriver::Init { generation: Generation(3), checkpoint: Some(&ckpt) });
    let reason = d.expect_fatal();
    assert!(reason.contains("ring") && reason.contains("tx=100 rx=1"), "{reason}");
    assert_eq!(d.wait_for(Duration::from_secs(10)).map(describe).as_deref(), Some("exit 1"));
}
