//! The misbehaving driver does on the wire exactly what the campaign counts
//! it as doing. The test plays the supervisor: a `SOCK_SEQPACKET` pair, the
//! driver launched with the launch contract's environment, raw frames.

use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, setsockopt, socketpair, sockopt};
use nix::sys::time::TimeVal;
use nix::unistd::Pid;
use reinc_campaign::misbehave::{self, Misbehaviour};
use reinc_proto::{
    ClientId, DriverFrame, FromDriver, Generation, MAX_FRAME, RequestId, ToDriver, WireError, decode, encode_vec,
};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Driver {
    sock: OwnedFd,
    child: Child,
    markers: std::path::PathBuf,
    buf: Vec<u8>,
}

/// An owned view of one frame from the driver.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Ready(u32),
    Reply { generation: u32, id: RequestId, body: Vec<u8> },
    Pong(u64),
    Fatal(String),
    Garbage(WireError, usize),
}

impl Driver {
    fn launch(tag: &str) -> Self {
        let (ours, theirs) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).expect("socketpair");
        setsockopt(&ours, sockopt::ReceiveTimeout, &TimeVal::new(10, 0)).expect("timeout");
        let markers = std::env::temp_dir().join(format!("reinc-misbehave-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&markers);
        let child = Command::new(env!("CARGO_BIN_EXE_reinc-misbehave-driver"))
            .arg("--markers")
            .arg(&markers)
            .env("REINC_IPC_FD", "0")
            .env("REINC_DRIVER_NAME", "misbehave_test")
            .env("REINC_SUPERVISOR_PID", std::process::id().to_string())
            .env("RUST_LOG", "error")
            .stdin(Stdio::from(theirs))
            .spawn()
            .expect("spawn reinc-misbehave-driver");
        let mut d = Self { sock: ours, child, markers, buf: vec![0; MAX_FRAME + 1024] };
        d.send(&ToDriver::Init { generation: Generation(7), checkpoint: None });
        assert_eq!(d.recv(), Got::Ready(7));
        d
    }

    fn send(&self, msg: &ToDriver<'_>) {
        send(self.sock.as_raw_fd(), &encode_vec(msg).expect("encode"), MsgFlags::empty()).expect("send");
    }

    fn request(&self, seq: u64, nonce: u64, fault: Option<Misbehaviour>) {
        let body = misbehave::request(nonce, fault);
        self.send(&ToDriver::Request { id: RequestId { client: ClientId(1), seq }, body: &body });
    }

    fn recv(&mut self) -> Got {
        let n = recv(self.sock.as_raw_fd(), &mut self.buf, MsgFlags::MSG_TRUNC).expect("a frame from the driver");
        let frame = &self.buf[..n.min(self.buf.len())];
        match decode::<DriverFrame<'_>>(frame) {
            Ok(DriverFrame { generation, msg: FromDriver::Ready }) => Got::Ready(generation.0),
            Ok(DriverFrame { generation, msg: FromDriver::Reply { id, body, .. } }) => {
                Got::Reply { generation: generation.0, id, body: body.to_vec() }
            }
            Ok(DriverFrame { msg: FromDriver::Pong { nonce }, .. }) => Got::Pong(nonce),
            Ok(DriverFrame { msg: FromDriver::Fatal { reason }, .. }) => Got::Fatal(reason.to_owned()),
            Err(e) => Got::Garbage(e, n),
        }
    }

    fn reply(&mut self) -> (u32, RequestId, misbehave::Reply) {
        match self.recv() {
            Got::Reply { generation, id, body } => {
                (generation, id, misbehave::parse_reply(&body).expect("valid reply"))
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "the driver did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.markers);
    }
}

fn id(seq: u64) -> RequestId {
    RequestId { client: ClientId(1), seq }
}

#[test]
fn a_sent_sigsegv_kills_it_the_first_time() {
    // Regression: std's SIGSEGV handler swallowed the first sent SIGSEGV, so
    // the campaign's external SIGSEGV left the driver running.
    let mut d = Driver::launch("segv");
    kill(Pid::from_raw(d.child.id() as i32), Signal::SIGSEGV).expect("kill");
    assert_eq!(d.wait_exit().signal(), Some(Signal::SIGSEGV as i32));
}

#[test]
fn normal_requests_count_up_by_one_and_commit_each_reply() {
    let mut d = Driver::launch("normal");
    for seq in 1..=3 {
        d.request(seq, 100 + seq, None);
        let (g, rid, r) = d.reply();
        assert_eq!((g, rid, r.counter, r.generation, r.nonce), (7, id(seq), seq, 7, 100 + seq));
    }
}

#[test]
fn second_reply_wrong_generation_and_wrong_id_go_on_the_wire_once_per_request() {
    let mut d = Driver::launch("replies");
    d.request(1, 1, Some(Misbehaviour::SecondReply));
    assert_eq!(d.reply().1, id(1));
    assert_eq!(d.reply().1, id(1), "the same reply twice");
    d.request(2, 2, Some(Misbehaviour::WrongGeneration));
    let (g, rid, _) = d.reply();
    assert!(g != 7 && rid == id(2), "first a foreign generation: {g}");
    assert_eq!(d.reply().0, 7, "then the real one");
    d.request(3, 3, Some(Misbehaviour::WrongId));
    let (_, rid, _) = d.reply();
    assert_eq!(rid, id(1_000_003));
    // The replay of the same request id (after a restart) behaves.
    d.request(3, 3, Some(Misbehaviour::WrongId));
    assert_eq!(d.reply().1, id(3));
}

#[test]
fn malformed_oversized_and_flood_frames_are_what_they_say() {
    let mut d = Driver::launch("frames");
    d.request(1, 1, Some(Misbehaviour::Malformed));
    assert!(matches!(d.recv(), Got::Garbage(_, _)));
    assert_eq!(d.reply().1, id(1));
    d.request(2, 2, Some(Misbehaviour::Oversized));
    match d.recv() {
        Got::Garbage(WireError::Oversized { .. }, n) => assert!(n > MAX_FRAME),
        other => panic!("expected an oversized frame, got {other:?}"),
    }
    assert_eq!(d.reply().1, id(2));
    d.request(3, 3, Some(Misbehaviour::Flood));
    for _ in 0..4096 {
        assert!(matches!(d.recv(), Got::Pong(_)));
    }
    assert_eq!(d.reply().1, id(3));
}

#[test]
fn bit_flips_are_caught_by_the_reply_checksum_or_the_state_checksum_or_not_at_all() {
    let mut d = Driver::launch("flips");
    d.request(1, 5, Some(Misbehaviour::ReplyBitFlip));
    match d.recv() {
        Got::Reply { body, .. } => assert!(misbehave::parse_reply(&body).is_err(), "client checksum catches it"),
        other => panic!("{other:?}"),
    }
    d.request(2, 9, Some(Misbehaviour::StateBitFlipUnchecked));
    let (_, _, r) = d.reply();
    assert_ne!(r.counter, 2, "a checksum-valid reply with a wrong counter: silent");
    d.request(3, 9, Some(Misbehaviour::StateBitFlipChecked));
    let _ = d.reply();
    d.request(4, 1, None);
    match d.recv() {
        Got::Fatal(reason) => assert!(reason.contains("checksum"), "{reason}"),
        other => panic!("expected Fatal for the flipped state, got {other:?}"),
    }
    assert_eq!(d.wait_exit().code(), Some(1));
}

#[test]
fn resource_faults_end_in_fatal_or_sigabrt() {
    let mut d = Driver::launch("fds");
    d.request(1, 1, Some(Misbehaviour::FdExhaustion));
    match d.recv() {
        Got::Fatal(reason) => assert!(reason.contains("Too many open files"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let mut d = Driver::launch("as");
    d.request(1, 1, Some(Misbehaviour::MemoryLimit));
    assert_eq!(d.wait_exit().signal(), Some(Signal::SIGABRT as i32));
}
