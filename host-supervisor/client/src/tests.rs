//! The client's half of exactly-once, against a scripted fake supervisor.

use super::*;
use nix::sys::socket::{Backlog, bind, listen};
use std::os::unix::net::UnixListener;

fn listener(tag: &str) -> (UnixListener, PathBuf) {
    let path = std::env::temp_dir().join(format!("reinc-client-{tag}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).unwrap();
    bind(fd.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
    listen(&fd, Backlog::new(4).unwrap()).unwrap();
    (UnixListener::from(fd), path)
}

/// One end of a fake supervisor connection.
struct Fake(OwnedFd);

impl Fake {
    fn accept(l: &UnixListener) -> Self {
        Self(OwnedFd::from(l.accept().unwrap().0))
    }
    fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_FRAME];
        let n = recv(self.0.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        buf.truncate(n);
        buf
    }
    fn send(&self, m: &SupToClient<'_>) {
        send(self.0.as_raw_fd(), &reinc_proto::encode_vec(m).unwrap(), MsgFlags::MSG_NOSIGNAL).unwrap();
    }
}

/// `(seq, acked_below)` of a Call frame.
fn call_ids(frame: &[u8]) -> (u64, u64) {
    match reinc_proto::decode::<ClientToSup<'_>>(frame).unwrap() {
        ClientToSup::Call { seq, acked_below, .. } => (seq, acked_below),
        other => panic!("expected a call, got {other:?}"),
    }
}

#[test]
fn reconnect_resumes_the_session_and_resends_unanswered_calls_with_the_same_seq() {
    let (l, path) = listener("resume");
    let server = std::thread::spawn(move || {
        let a = Fake::accept(&l);
        assert_eq!(reinc_proto::decode::<ClientToSup<'_>>(&a.recv()).unwrap(), ClientToSup::Hello { resume: None });
        a.send(&SupToClient::Welcome { client: ClientId(7) });
        assert_eq!(call_ids(&a.recv()), (1, 1));
        assert_eq!(call_ids(&a.recv()), (2, 1));
        a.send(&SupToClient::Reply { seq: 1, body: b"one" });
        drop(a); // the connection is lost with call 2 unanswered

        let b = Fake::accept(&l);
        let frame = b.recv();
        let hello = reinc_proto::decode::<ClientToSup<'_>>(&frame).unwrap();
        assert_eq!(hello, ClientToSup::Hello { resume: Some(ClientId(7)) });
        b.send(&SupToClient::Welcome { client: ClientId(7) });
        // Only the unanswered call, under its original seq; 1 is acknowledged.
        assert_eq!(call_ids(&b.recv()), (2, 2));
        b.send(&SupToClient::Reply { seq: 2, body: b"two" });
        // A duplicate answer (e.g. from the dedup table) is ignored.
        b.send(&SupToClient::Reply { seq: 2, body: b"two" });
    });
    let mut c = Client::connect(&path).unwrap();
    assert_eq!(c.session(), ClientId(7));
    let s1 = c.submit("d", b"a").unwrap();
    let s2 = c.submit("d", b"b").unwrap();
    assert_eq!(c.wait().unwrap(), Completion { seq: s1, result: Ok(b"one".to_vec()) });
    assert_eq!(c.wait().unwrap(), Completion { seq: s2, result: Ok(b"two".to_vec()) });
    assert_eq!(c.reconnects(), 1);
    assert!(matches!(c.wait(), Err(ClientError::Idle)));
    server.join().unwrap();
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_forgotten_session_is_reported_not_silently_replaced() {
    let (l, path) = listener("lost");
    let server = std::thread::spawn(move || {
        let a = Fake::accept(&l);
        let _ = a.recv();
        a.send(&SupToClient::Welcome { client: ClientId(3) });
        let _ = a.recv();
        drop(a);
        let b = Fake::accept(&l);
        let _ = b.recv();
        b.send(&SupToClient::Failed { seq: 0, error: CallError::NoSession });
    });
    let mut c = Client::connect(&path).unwrap();
    c.submit("d", b"x").unwrap();
    match c.wait() {
        Err(ClientError::SessionLost { client, pending, .. }) => assert_eq!((client, pending), (ClientId(3), 1)),
        other => panic!("expected SessionLost, got {other:?}"),
    }
    server.join().unwrap();
    let _ = std::fs::remove_file(path);
}

#[test]
fn busy_calls_are_resent_with_the_same_seq() {
    let (l, path) = listener("busy");
    let server = std::thread::spawn(move || {
        let a = Fake::accept(&l);
        let _ = a.recv();
        a.send(&SupToClient::Welcome { client: ClientId(1) });
        assert_eq!(call_ids(&a.recv()).0, 1);
        a.send(&SupToClient::Failed { seq: 1, error: CallError::Busy });
        assert_eq!(call_ids(&a.recv()).0, 1);
        a.send(&SupToClient::Reply { seq: 1, body: b"ok" });
    });
    let mut c = Client::connect(&path).unwrap();
    assert_eq!(c.call("d", b"x").unwrap(), Ok(b"ok".to_vec()));
    server.join().unwrap();
    let _ = std::fs::remove_file(path);
}
