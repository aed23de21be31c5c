//! With the default budgets the supervisor's memory stays bounded whatever
//! clients do: readers that never read, and readers that never acknowledge.

use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, recv, send, socket};
use reinc_proto::{ClientToSup, SupToClient};
use reinc_tests::{Rig, read_req};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

/// The target of issue 16: the supervisor's RSS with the default limits.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// `VmHWM` (peak RSS) and `VmRSS` of `pid`, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn raw(rig: &Rig) -> OwnedFd {
    let addr = UnixAddr::new(&reinc_client::client_socket(&rig.runtime)).unwrap();
    let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).unwrap();
    connect(fd.as_raw_fd(), &addr).unwrap();
    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(10, 0))
        .unwrap();
    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::SendTimeout, &nix::sys::time::TimeVal::new(10, 0))
        .unwrap();
    fd
}

fn put(fd: &OwnedFd, msg: &ClientToSup<'_>) -> bool {
    send(fd.as_raw_fd(), &reinc_proto::encode_vec(msg).unwrap(), MsgFlags::MSG_NOSIGNAL).is_ok()
}

fn hello(fd: &OwnedFd) {
    assert!(put(fd, &ClientToSup::Hello { resume: None }));
    let mut buf = vec![0u8; 256];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    assert!(matches!(reinc_proto::decode::<SupToClient<'_>>(&buf[..n]), Ok(SupToClient::Welcome { .. })));
}

#[test]
fn slow_readers_and_clients_that_never_acknowledge_stay_within_64_mib() {
    let mut rig = Rig::new("mem-budget", &[]);
    rig.start();
    let pid = rig.supervisor_pid().as_raw() as u32;
    let read = read_req(0, storage_core::MAX_BLOCKS_PER_REQUEST); // 32 KiB replies
    // Eight slow readers: each asks for 250 replies of 32 KiB (7.8 MiB) and
    // reads none of them.
    let slow: Vec<std::thread::JoinHandle<u64>> = (0..8)
        .map(|_| {
            let fd = raw(&rig);
            hello(&fd);
            let read = read.clone();
            std::thread::spawn(move || {
                let mut sent = 0;
                for seq in 1..=250u64 {
                    if !put(&fd, &ClientToSup::Call { seq, driver: "storage_driver", body: &read, acked_below: 0 }) {
                        break; // disconnected for not reading
                    }
                    sent += 1;
                    // Paced to what a debug-build storage driver serves
                    // (about 400 reads of 32 KiB a second for all eight),
                    // so the calls are accepted, not answered Busy, and the
                    // replies pile up.
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(Duration::from_secs(2));
                drop(fd);
                sent
            })
        })
        .collect();
    let sent: u64 = slow.into_iter().map(|t| t.join().unwrap()).sum();
    // Eight clients that read every reply but never acknowledge one
    // (acked_below stays 0): the dedup table would keep all 200 of each.
    let never_ack: Vec<std::thread::JoinHandle<()>> = (0..8)
        .map(|_| {
            let fd = raw(&rig);
            hello(&fd);
            let read = read.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; reinc_proto::MAX_FRAME];
                for seq in 1..=200u64 {
                    assert!(put(
                        &fd,
                        &ClientToSup::Call { seq, driver: "storage_driver", body: &read, acked_below: 0 }
                    ));
                    loop {
                        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).expect("reply");
                        match reinc_proto::decode::<SupToClient<'_>>(&buf[..n]).unwrap() {
                            SupToClient::Reply { seq: s, .. } if s == seq => break,
                            SupToClient::Failed { seq: s, error: reinc_proto::CallError::Busy } if s == seq => {
                                std::thread::sleep(Duration::from_millis(2));
                                assert!(put(
                                    &fd,
                                    &ClientToSup::Call { seq, driver: "storage_driver", body: &read, acked_below: 0 }
                                ));
                            }
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    for t in never_ack {
        t.join().unwrap();
    }
    let (peak, now) = rss_kib(pid);
    eprintln!("supervisor VmHWM {peak} KiB, VmRSS {now} KiB; slow readers sent {sent} calls");
    assert!(peak <= RSS_LIMIT_KIB, "peak RSS {peak} KiB exceeds {RSS_LIMIT_KIB} KiB\n{}", rig.log());
    assert!(!rig.sup_lines("does not read its replies").is_empty(), "{}", rig.log());
    assert!(rig.sup_lines("does not read its replies").len() <= 2, "one summary line, not one per client");
    // Still serving.
    let mut c = rig.client();
    assert!(c.call("storage_driver", &read_req(0, 1)).unwrap().is_ok());
}
