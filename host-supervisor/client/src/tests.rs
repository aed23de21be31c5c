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

/// `(seq, driver)` of a Call frame.
fn call_to(frame: &[u8]) -> (u64, String) {
    match reinc_proto::decode::<ClientToSup<'_>>(frame).unwrap() {
        ClientToSup::Call { seq, driver, .. } => (seq, driver.to_owned()),
        other => panic!("expected a call, got {other:?}"),
    }
}

#[test]
fn busy_calls_are_resent_in_seq_order_and_later_calls_to_that_driver_wait_behind_them() {
    let (l, path) = listener("busy-order");
    let server = std::thread::spawn(move || {
        let a = Fake::accept(&l);
        let _ = a.recv();
        a.send(&SupToClient::Welcome { client: ClientId(1) });
        let first: Vec<u64> = (0..3).map(|_| call_ids(&a.recv()).0).collect();
        assert_eq!(first, [1, 2, 3]);
        // Busy answers may come in any order.
        a.send(&SupToClient::Failed { seq: 3, error: CallError::Busy });
        a.send(&SupToClient::Failed { seq: 2, error: CallError::Busy });
        a.send(&SupToClient::Reply { seq: 1, body: b"1" });
        // A call to another driver is not held back; the new call to "d"
        // goes out behind the resends of 2 and 3, in seq order.
        let next: Vec<(u64, String)> = (0..4).map(|_| call_to(&a.recv())).collect();
        let d = |s: u64| (s, "d".to_owned());
        assert_eq!(next, [(5, "e".to_owned()), d(2), d(3), d(4)]);
        for seq in [5, 2, 3, 4] {
            a.send(&SupToClient::Reply { seq, body: b"ok" });
        }
    });
    let mut c = Client::connect(&path).unwrap();
    for _ in 0..3 {
        c.submit("d", b"x").unwrap();
    }
    assert_eq!(c.wait().unwrap(), Completion { seq: 1, result: Ok(b"1".to_vec()) });
    assert_eq!(c.submit("d", b"x").unwrap(), 4);
    assert_eq!(c.submit("e", b"y").unwrap(), 5);
    let mut done: Vec<u64> = (0..4).map(|_| c.wait().unwrap().seq).collect();
    done.sort_unstable();
    assert_eq!(done, [2, 3, 4, 5]);
    server.join().unwrap();
    let _ = std::fs::remove_file(path);
}

#[test]
fn without_retry_busy_a_busy_call_is_returned_and_nothing_waits_behind_it() {
    let (l, path) = listener("busy-return");
    let server = std::thread::spawn(move || {
        let a = Fake::accept(&l);
        let _ = a.recv();
        a.send(&SupToClient::Welcome { client: ClientId(1) });
        assert_eq!(call_ids(&a.recv()), (1, 1));
        a.send(&SupToClient::Failed { seq: 1, error: CallError::Busy });
        // The abandoned call is acknowledged, so the supervisor lifts its barrier.
        assert_eq!(call_ids(&a.recv()), (2, 2));
        a.send(&SupToClient::Reply { seq: 2, body: b"ok" });
    });
    let mut c = Client::connect(&path).unwrap();
    c.retry_busy = false;
    assert_eq!(c.call("d", b"x").unwrap(), Err(CallError::Busy));
    assert_eq!(c.call("d", b"x").unwrap(), Ok(b"ok".to_vec()));
    server.join().unwrap();
    let _ = std::fs::remove_file(path);
}

/// Issue 13, item 3: a supervisor killed while a client reconnects accepts
/// the connection (its listening socket lives until the process is gone) and
/// then resets it; for a while after, the socket refuses or is missing. All
/// of that means "the supervisor is restarting": the client keeps trying
/// within its window and resumes its session with the new supervisor.
#[test]
fn reconnect_rides_out_a_reset_a_refusal_and_a_missing_socket() {
    let (l, path) = listener("restarting");
    let p2 = path.clone();
    let server = std::thread::spawn(move || {
        let a = Fake::accept(&l);
        let _ = a.recv();
        a.send(&SupToClient::Welcome { client: ClientId(9) });
        assert_eq!(call_ids(&a.recv()), (1, 1));
        drop(a); // the supervisor dies with call 1 unanswered
        // The dying supervisor accepts the reconnect and resets it.
        let b = Fake::accept(&l);
        drop(b);
        // Gone: first a stale socket file that refuses, then no file at all.
        drop(l);
        std::thread::sleep(Duration::from_millis(100));
        std::fs::remove_file(&p2).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // The new supervisor resumes the session (its journal knows it).
        let (l2, _) = listener("restarting");
        let c = Fake::accept(&l2);
        assert_eq!(
            reinc_proto::decode::<ClientToSup<'_>>(&c.recv()).unwrap(),
            ClientToSup::Hello { resume: Some(ClientId(9)) }
        );
        c.send(&SupToClient::Welcome { client: ClientId(9) });
        assert_eq!(call_ids(&c.recv()), (1, 1));
        c.send(&SupToClient::Reply { seq: 1, body: b"done" });
    });
    let mut c = Client::connect(&path).unwrap();
    let seq = c.submit("d", b"x").unwrap();
    assert_eq!(c.wait().unwrap(), Completion { seq, result: Ok(b"done".to_vec()) });
    assert!(c.reconnects() >= 1);
    server.join().unwrap();
    let _ = std::fs::remove_file(path);
}

/// The window is configurable, and when it passes the error says so and
/// names the socket and the last error.
#[test]
fn reconnect_gives_up_after_its_window_naming_the_socket() {
    let (l, path) = listener("window");
    let server = std::thread::spawn(move || {
        let a = Fake::accept(&l);
        let _ = a.recv();
        a.send(&SupToClient::Welcome { client: ClientId(2) });
        let _ = a.recv();
        drop(a);
        drop(l);
    });
    let mut c = Client::connect(&path).unwrap();
    c.reconnect_timeout = Duration::from_millis(300);
    c.submit("d", b"x").unwrap();
    server.join().unwrap();
    let _ = std::fs::remove_file(&path);
    let started = Instant::now();
    let err = c.wait().unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()) && msg.contains("300ms"), "{msg}");
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(5), "{waited:?}");
}

/// A session the new supervisor does not know is harmless while nothing is
/// unanswered: the client opens a new one instead of failing.
#[test]
fn an_idle_client_whose_session_is_forgotten_opens_a_new_one() {
    let (l, path) = listener("idle-lost");
    let server = std::thread::spawn(move || {
        let a = Fake::accept(&l);
        let _ = a.recv();
        a.send(&SupToClient::Welcome { client: ClientId(4) });
        assert_eq!(call_ids(&a.recv()), (1, 1));
        a.send(&SupToClient::Reply { seq: 1, body: b"one" });
        drop(a);
        let b = Fake::accept(&l);
        assert_eq!(
            reinc_proto::decode::<ClientToSup<'_>>(&b.recv()).unwrap(),
            ClientToSup::Hello { resume: Some(ClientId(4)) }
        );
        b.send(&SupToClient::Failed { seq: 0, error: CallError::NoSession });
        let c = Fake::accept(&l);
        assert_eq!(reinc_proto::decode::<ClientToSup<'_>>(&c.recv()).unwrap(), ClientToSup::Hello { resume: None });
        c.send(&SupToClient::Welcome { client: ClientId(5) });
        assert_eq!(call_ids(&c.recv()).0, 2);
        c.send(&SupToClient::Reply { seq: 2, body: b"two" });
    });
    let mut c = Client::connect(&path).unwrap();
    assert_eq!(c.call("d", b"x").unwrap(), Ok(b"one".to_vec()));
    // Let the server drop the connection before the next call goes out.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.call("d", b"y").unwrap(), Ok(b"two".to_vec()));
    assert_eq!(c.session(), ClientId(5));
    server.join().unwrap();
    let _ = std::fs::remove_file(path);
}

/// A supervisor disconnects a client that does not read its replies (its
/// outgoing queue is bounded). After a reconnect the client resends every
/// unanswered call, and answers from the dedup table come back at once: a
/// client that sent them all before reading was disconnected again, and
/// again (the full bench's replay of 10 000 calls hit it). It now reads
/// while it resends.
#[test]
fn resending_thousands_after_a_reconnect_reads_the_answers_as_they_come() {
    const N: u64 = 3000;
    let (l, path) = listener("resend-many");
    let server = std::thread::spawn(move || {
        let a = Fake::accept(&l);
        let _ = a.recv();
        a.send(&SupToClient::Welcome { client: ClientId(6) });
        for _ in 0..N {
            let _ = a.recv();
        }
        drop(a); // every call accepted, none answered: the connection is lost
        let mut connections = 1;
        let mut answered = std::collections::BTreeSet::new();
        while answered.len() < N as usize {
            let b = Fake::accept(&l);
            connections += 1;
            let _ = b.recv();
            b.send(&SupToClient::Welcome { client: ClientId(6) });
            // Answer each call at once, like dedup hits, through a bounded
            // outgoing queue; a client that lets it overflow (does not read
            // its replies) is disconnected, as the supervisor does.
            let mut buf = vec![0u8; MAX_FRAME];
            let mut out: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
            'conn: loop {
                let mut flags = PollFlags::POLLIN;
                if !out.is_empty() {
                    flags |= PollFlags::POLLOUT;
                }
                let mut fds = [PollFd::new(b.0.as_fd(), flags)];
                if poll(&mut fds, PollTimeout::from(5000u16)).unwrap_or(0) == 0 {
                    break;
                }
                let ready = fds[0].revents().unwrap_or(PollFlags::empty());
                if ready.contains(PollFlags::POLLIN) {
                    match recv(b.0.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                        Ok(0) | Err(_) if !ready.contains(PollFlags::POLLOUT) => break,
                        Ok(n) if n > 0 => {
                            let (seq, _) = call_ids(&buf[..n]);
                            out.push_back(reinc_proto::encode_vec(&SupToClient::Reply { seq, body: b"ok" }).unwrap());
                            answered.insert(seq);
                        }
                        _ => {}
                    }
                }
                while let Some(f) = out.front() {
                    match send(b.0.as_raw_fd(), f, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL) {
                        Ok(_) => {
                            out.pop_front();
                        }
                        Err(Errno::EAGAIN) => break,
                        Err(_) => break 'conn,
                    }
                }
                if out.len() > 64 {
                    break; // "does not read its replies; disconnecting it"
                }
                if answered.len() == N as usize && out.is_empty() {
                    break;
                }
            }
            assert!(
                connections < 10,
                "the client keeps being disconnected for not reading ({} answered)",
                answered.len()
            );
        }
        connections
    });
    let mut c = Client::connect(&path).unwrap();
    for _ in 0..N {
        c.submit("d", b"x").unwrap();
    }
    let mut done = 0;
    while c.in_flight() > 0 {
        assert_eq!(c.wait().unwrap().result, Ok(b"ok".to_vec()));
        done += 1;
    }
    assert_eq!(done, N);
    let connections = server.join().unwrap();
    assert!(connections <= 3, "{connections} connections");
    let _ = std::fs::remove_file(path);
}

/// `drvctl blk read` against a driver that predates the client-checked bulk
/// form (`StorageRequest::BulkTagged`): it cannot decode those requests and
/// refuses them `BadRequest` before running anything, and the transfer
/// sends them again in the driver-checked form and completes, each record
/// answered once.
#[test]
fn blk_falls_back_to_driver_checked_requests_for_a_driver_that_does_not_know_the_tagged_form() {
    use crate::blk::{self, BlkOptions, Direction};
    use nix::sys::socket::{ControlMessageOwned, recvmsg};
    use std::os::unix::fs::FileExt;
    use storage_core::{BLOCK_SIZE, BulkRequest, StorageError, StorageReply, StorageRequest};
    const RECORDS: u64 = 4;
    const BLOCKS: u32 = 16;

    let (l, path) = listener("blk-fallback");
    let server = std::thread::spawn(move || {
        let a = Fake::accept(&l);
        assert_eq!(reinc_proto::decode::<ClientToSup<'_>>(&a.recv()).unwrap(), ClientToSup::Hello { resume: None });
        a.send(&SupToClient::Welcome { client: ClientId(3) });
        // AttachPool with its memfd, reached through /proc like any file.
        let mut buf = vec![0u8; MAX_FRAME];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(a.0.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()).unwrap();
        let fd = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .expect("AttachPool carries the pool");
        let pool = std::fs::OpenOptions::new().write(true).open(format!("/proc/self/fd/{fd}")).unwrap();
        a.send(&SupToClient::PoolAttached { driver: "storage_driver" });
        let (mut refused, mut filled) = (0, std::collections::BTreeSet::new());
        while (filled.len() as u64) < RECORDS {
            let frame = a.recv();
            let ClientToSup::Call { seq, body, .. } = reinc_proto::decode::<ClientToSup<'_>>(&frame).unwrap() else {
                panic!("expected a call")
            };
            let reply = match postcard::from_bytes::<StorageRequest<'_>>(body).unwrap() {
                StorageRequest::BulkTagged { .. } => {
                    refused += 1;
                    StorageReply::Error(StorageError::BadRequest)
                }
                StorageRequest::Bulk(BulkRequest::ReadInto { lba, blocks, pool_offset }) => {
                    let mut data = vec![0u8; blocks as usize * BLOCK_SIZE];
                    blk::pattern_blocks(lba, &mut data);
                    pool.write_all_at(&data, pool_offset).unwrap();
                    assert!(filled.insert(lba), "block {lba} read twice");
                    StorageReply::Filled { lba, blocks }
                }
                other => panic!("unexpected {other:?}"),
            };
            a.send(&SupToClient::Reply { seq, body: &postcard::to_allocvec(&reply).unwrap() });
        }
        refused
    });
    let mut opts = BlkOptions::new(Direction::Read, u64::from(BLOCKS) * BLOCK_SIZE as u64, RECORDS);
    opts.window = 2;
    let report = blk::run(&path, &opts).unwrap();
    let refused = server.join().unwrap();
    let mut want = vec![0u8; (RECORDS * u64::from(BLOCKS)) as usize * BLOCK_SIZE];
    blk::pattern_blocks(0, &mut want);
    assert_eq!(report.crc32, crc32fast::hash(&want), "the data of the driver-checked reads");
    assert_eq!(refused, 2, "only the first window went in the tagged form");
}
