//! A client that pipelines more replies than `out-bytes-per-connection` and
//! reads them steadily is slowed down (the supervisor stops reading its
//! requests while its replies are over budget), not disconnected; only a
//! client that stops reading altogether is cut off.
//!
//! Issue #12/#16: `reinc-nbd --window 256` keeps 256 reads of 32 KiB (8 MiB)
//! in flight, four times the 2 MiB budget, and was disconnected as a slow
//! reader although it read every reply.

use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, recv, send, socket};
use reinc_proto::{ClientToSup, SupToClient};
use reinc_tests::{Rig, read_req, wait_for};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

/// Replies of 32 KiB kept in flight: 8 MiB, four times the default budget.
const DEPTH: u64 = 256;

fn raw(rig: &Rig) -> OwnedFd {
    let addr = UnixAddr::new(&reinc_client::client_socket(&rig.runtime)).unwrap();
    let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).unwrap();
    connect(fd.as_raw_fd(), &addr).unwrap();
    let t = nix::sys::time::TimeVal::new(20, 0);
    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &t).unwrap();
    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::SendTimeout, &t).unwrap();
    fd
}

fn put(fd: &OwnedFd, msg: &ClientToSup<'_>) -> nix::Result<usize> {
    send(fd.as_raw_fd(), &reinc_proto::encode_vec(msg).unwrap(), MsgFlags::MSG_NOSIGNAL)
}

fn hello(fd: &OwnedFd) {
    put(fd, &ClientToSup::Hello { resume: None }).unwrap();
    let mut buf = vec![0u8; 256];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    assert!(matches!(reinc_proto::decode::<SupToClient<'_>>(&buf[..n]), Ok(SupToClient::Welcome { .. })));
}

/// Sends `DEPTH` reads of 32 KiB from a thread (its sends block while the
/// supervisor does not take them: that is the backpressure); returns how
/// many were sent before a send failed.
fn pipeline(fd: &Arc<OwnedFd>) -> std::thread::JoinHandle<u64> {
    let fd = Arc::clone(fd);
    std::thread::spawn(move || {
        let read = read_req(0, storage_core::MAX_BLOCKS_PER_REQUEST);
        for seq in 1..=DEPTH {
            let call = ClientToSup::Call { seq, driver: "storage_driver", body: &read, acked_below: 0 };
            if put(&fd, &call).is_err() {
                return seq - 1;
            }
        }
        DEPTH
    })
}

#[test]
fn a_client_reading_steadily_behind_a_deep_pipeline_is_slowed_not_disconnected() {
    let mut rig = Rig::new("flow-steady", &[]);
    rig.start();
    let fd = Arc::new(raw(&rig));
    hello(&fd);
    let sender = pipeline(&fd);
    let mut buf = vec![0u8; reinc_proto::MAX_FRAME];
    let mut answered = std::collections::BTreeSet::new();
    let mut paced = true;
    while (answered.len() as u64) < DEPTH {
        let n = match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) => panic!("disconnected after {} of {DEPTH} replies\n{}", answered.len(), rig.log()),
            Ok(n) => n,
            Err(e) => panic!("recv after {} of {DEPTH} replies: {e}\n{}", answered.len(), rig.log()),
        };
        match reinc_proto::decode::<SupToClient<'_>>(&buf[..n]).unwrap() {
            SupToClient::Reply { seq, body } => {
                assert!(body.len() >= 32 * 1024, "a whole 32 KiB read, got {} bytes", body.len());
                assert!(answered.insert(seq), "seq {seq} answered twice");
            }
            other => panic!("unexpected {other:?} after {} replies", answered.len()),
        }
        // Slow but steady, four replies a second, while the driver still
        // has calls of this client to answer: its replies pile up far
        // beyond the 2 MiB budget (the driver answers tens a second). Then
        // the rest as fast as they come.
        if paced {
            paced = !sender.is_finished() || rig.status().queue_depth > 0;
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    assert_eq!(sender.join().unwrap(), DEPTH, "every call was sent");
    assert!(rig.sup_lines("does not read its replies").is_empty(), "{}", rig.log());
    assert!(rig.sup_lines("disconnecting it").is_empty(), "{}", rig.log());
}

#[test]
fn a_client_that_stops_reading_is_still_disconnected() {
    let mut rig = Rig::new("flow-stalled", &[]);
    rig.start();
    let fd = Arc::new(raw(&rig));
    hello(&fd);
    let sender = pipeline(&fd);
    // It never reads: once its replies are over the budget and it has made
    // no progress for a while, it is cut off.
    assert!(
        rig.wait_sup_lines("does not read its replies", 1, Duration::from_secs(30)),
        "no slow-reader line\n{}",
        rig.log()
    );
    let _ = sender.join().unwrap();
    // What was queued for it is dropped: reading it to the end finds EOF.
    let mut buf = vec![0u8; reinc_proto::MAX_FRAME];
    let end = wait_for(Duration::from_secs(20), || match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
        Ok(0) | Err(_) => Some(()),
        Ok(_) => None,
    });
    assert!(end.is_some(), "the connection stayed open");
    // Still serving others.
    let mut c = rig.client();
    assert!(c.call("storage_driver", &read_req(0, 1)).unwrap().is_ok());
}

#[test]
fn reinc_nbd_with_a_deep_window_reads_through_without_eio() {
    use reinc_tests::nbd::{NbdServer, RawNbd, pattern, rig_with_blocks, spec};
    // 8 MiB of disk, read as eight pipelined 1 MiB NBD reads: 256 storage
    // reads of 32 KiB in flight at once with --window 256.
    let mut rig = rig_with_blocks("flow-nbd", 16 * 1024, &[]);
    rig.start();
    let data = pattern(8 << 20, 12);
    let nbd = NbdServer::start(&rig, &["--window", "256", "--max-request", "1048576"]);
    let (mut c, _) = RawNbd::go(&nbd.socket);
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        assert_eq!(c.write(100 + i as u64, (i as u64) << 20, chunk), 0, "write {i}");
    }
    for i in 0..8u64 {
        c.request(spec::READ, 0, i, i << 20, 1 << 20, &[]);
    }
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..8 {
        // A slow consumer: reinc-nbd's writes to it block, so it stops
        // reading its replies from the supervisor for a while, most of all
        // before the first (the driver meanwhile answers far more than the
        // 2 MiB budget).
        std::thread::sleep(Duration::from_millis(if i == 0 { 2000 } else { 300 }));
        let (errno, cookie) = c.reply();
        assert_eq!(errno, 0, "read {cookie} failed\n{}\n{}", nbd.log(), rig.log());
        let got = c.read_n(1 << 20).expect("read payload");
        assert!(got == data[(cookie as usize) << 20..((cookie as usize) + 1) << 20], "read {cookie}: wrong data");
        assert!(seen.insert(cookie));
    }
    assert!(rig.sup_lines("does not read its replies").is_empty(), "{}", rig.log());
}
