//! What happens when the NBD front end itself dies (or the supervisor behind
//! it), and what FLUSH promises.
//!
//! The contract (crate doc of `reinc-nbd`): an NBD client sees a disconnect;
//! every write it saw acknowledged is on the storage driver's device, so a
//! restarted `reinc-nbd` serves it; an unacknowledged write is either applied
//! or not, chunk by chunk, never torn inside a storage block; a client that
//! reconnects and resends (qemu's `reconnect-delay`) finishes its job with
//! the right bytes. The supervisor and the driver do not notice.

use nix::sys::signal::Signal;
use reinc_tests::nbd::{NbdServer, RawNbd, applied_count, export_bytes, pattern, require_tool, rig_with_blocks, spec};
use reinc_tests::{Rig, assert_no_duplicate_execution, wait_for};
use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

const BLOCKS: u64 = 16384;
const SIZE: usize = 8 << 20;
const T: Duration = Duration::from_secs(60);
/// One storage request, the unit that is applied or not: through the shared
/// pool a whole NBD write (up to 4 MiB) is one.
const CHUNK: usize = 65536;

/// Five missed heartbeats (500 ms) before a hang verdict, so that a busy
/// machine does not add restarts the tests do not expect.
const PATIENT: [(&str, &str); 1] = [("heartbeat-misses", "5")];

fn setup(tag: &str) -> (Rig, NbdServer) {
    setup_with(tag, &[])
}

fn setup_with(tag: &str, nbd_args: &[&str]) -> (Rig, NbdServer) {
    let mut rig = rig_with_blocks(tag, BLOCKS, &PATIENT);
    rig.start();
    let nbd = NbdServer::start(&rig, nbd_args);
    (rig, nbd)
}

#[test]
fn acknowledged_writes_survive_the_front_end_killed_mid_stream() {
    let (rig, mut nbd) = setup("nbd-death-acked");
    const LEN: usize = 65536;
    const WRITES: u64 = (SIZE / LEN) as u64;
    let data = |i: u64| pattern(LEN, 1000 + i);
    let (mut c, _) = RawNbd::go(&nbd.socket);
    // Keep 16 writes in flight; SIGKILL the front end after 40 acks.
    let (mut sent, mut acked) = (0u64, BTreeMap::new());
    while acked.len() < 40 {
        while sent < WRITES && sent - acked.len() as u64 <= 16 {
            c.request(spec::WRITE, 0, sent, sent * LEN as u64, LEN as u32, &data(sent));
            sent += 1;
        }
        let (errno, cookie) = c.reply();
        assert_eq!(errno, 0, "write {cookie}");
        acked.insert(cookie, ());
    }
    let in_flight = sent - acked.len() as u64;
    assert!(in_flight > 0, "writes were in flight at the kill");
    nbd.kill(Signal::SIGKILL);
    // The client sees a disconnect (after any replies already on the wire).
    let mut rest = Vec::new();
    let end = std::io::Read::read_to_end(&mut c.s, &mut rest);
    assert!(
        end.is_ok() || end.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the connection ends: {end:?}"
    );
    // The supervisor and the driver did not notice.
    let st = rig.status();
    assert_eq!((st.state.name(), st.generation), ("running", 1));
    nbd.restart();
    let (mut c, _) = RawNbd::go(&nbd.socket);
    for i in 0..sent {
        let got = c.read(i, i * LEN as u64, LEN as u32).expect("read back");
        if acked.contains_key(&i) {
            assert!(got == data(i), "acknowledged write {i} is on the device");
        } else {
            // Unacknowledged: each storage request of it ran or did not.
            for (k, part) in got.chunks(CHUNK).enumerate() {
                let new = &data(i)[k * CHUNK..(k + 1) * CHUNK];
                assert!(part == new || part.iter().all(|&b| b == 0), "write {i} chunk {k} is old or new, not torn");
            }
        }
    }
    assert!(export_bytes(&rig, sent * LEN as u64, LEN).iter().all(|&b| b == 0), "nothing beyond what was sent");
    let distinct = assert_no_duplicate_execution(&rig.exec_log()) as u64;
    assert_eq!(applied_count(&rig), distinct);
    assert!(distinct >= 40, "every acknowledged write ran (one bulk storage request each)");
}

#[test]
fn qemu_img_with_reconnect_delay_rides_out_a_front_end_restart() {
    // 32 KiB NBD requests (qemu honours the advertised maximum), so the
    // copy is 256 storage requests and the kill lands in its middle.
    let (rig, mut nbd) = setup_with("nbd-death-qemu", &["--max-request", "32768"]);
    let src = rig.dir.join("src.bin");
    let data = pattern(SIZE, 77);
    fs::write(&src, &data).unwrap();
    let target = format!(
        "driver=raw,file.driver=nbd,file.server.type=unix,file.server.path={},file.export=storage_driver,\
         file.reconnect-delay=30",
        nbd.socket.display()
    );
    let mut child = Command::new(require_tool("qemu-img", "qemu-utils"))
        .args(["convert", "-n", "-f", "raw", "--target-image-opts"])
        .arg(&src)
        .arg(&target)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qemu-img");
    let base = applied_count(&rig);
    let running = wait_for(T, || {
        let done = child.try_wait().ok().flatten().is_some();
        (done || applied_count(&rig) >= base + 40).then_some(!done)
    });
    assert_eq!(running, Some(true), "qemu-img was still copying when the front end died");
    nbd.kill(Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "qemu-img waits for the server to come back");
    nbd.restart();
    let st = wait_for(T, || child.try_wait().ok().flatten());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(st.is_some_and(|s| s.success()), "qemu-img: {stderr}\nreinc-nbd log:\n{}", nbd.log());
    assert!(export_bytes(&rig, 0, SIZE) == data, "every byte arrived despite the restart");
    let st = rig.status();
    assert_eq!((st.state.name(), st.generation), ("running", 1), "the driver never noticed");
    assert_no_duplicate_execution(&rig.exec_log());
}

#[test]
fn flush_and_fua_are_answered_after_a_driver_crash_in_the_middle_of_them() {
    let (rig, nbd) = setup("nbd-death-flush");
    let (mut c, _) = RawNbd::go(&nbd.socket);
    let d = pattern(CHUNK, 5);
    // Write (request 1 of this instance), then the flush (request 2) dies.
    rig.inject("before-effect:2:segv");
    c.request(spec::WRITE, 0, 1, 0, CHUNK as u32, &d);
    c.request(spec::FLUSH, 0, 2, 0, 0, &[]);
    let mut replies = [c.reply(), c.reply()];
    replies.sort_unstable();
    assert_eq!(replies, [(0, 1), (0, 2)], "write and flush both succeed");
    // FUA: the write's chunk, then the flush behind it, which hangs.
    rig.inject("after-effect:2:hang");
    let e = pattern(CHUNK, 6);
    c.request(spec::WRITE, spec::FLAG_FUA, 3, CHUNK as u64, CHUNK as u32, &e);
    assert_eq!(c.reply(), (0, 3), "a FUA write is answered once its flush ran on the new instance");
    assert_eq!(export_bytes(&rig, 0, 2 * CHUNK), [d, e].concat());
    let st = rig.wait_status(T, |s| s.generation >= 3 && s.state.name() == "running");
    assert!(st.is_some(), "two deaths, two restarts; log:\n{}", rig.log());
    assert_eq!(applied_count(&rig), 2, "two writes applied once each; flushes are not writes");
}

#[test]
fn a_supervisor_restart_is_invisible_to_connections_with_nothing_in_flight() {
    let (mut rig, mut nbd) = setup("nbd-death-sup");
    let (mut idle, _) = RawNbd::go(&nbd.socket);
    let (mut busy, _) = RawNbd::go(&nbd.socket);
    let data = pattern(CHUNK, 9);
    assert_eq!(busy.write(1, 0, &data), 0);
    // Nothing is unanswered on either connection: the client library
    // reconnects to the new supervisor and opens a new session, which loses
    // nothing, so the NBD clients see only latency.
    let _ = rig.stop_supervisor(Signal::SIGKILL);
    rig.start();
    for (c, what) in [(&mut idle, "an idle connection"), (&mut busy, "a connection that wrote")] {
        c.s.set_read_timeout(Some(Duration::from_secs(45))).unwrap();
        assert_eq!(c.read(7, 0, 512), Ok(data[..512].to_vec()), "{what}: the right bytes after the restart");
    }
    assert!(nbd.alive(), "reinc-nbd outlives the supervisor; log:\n{}", nbd.log());
    let (mut c, n) = RawNbd::go(&nbd.socket);
    assert_eq!(n.size, SIZE as u64);
    assert_eq!(c.read(2, 0, CHUNK as u32), Ok(data), "an acknowledged write survived the restart too");
}

#[test]
fn a_session_failure_under_a_full_request_queue_frees_the_connection_slot() {
    // Regression: the reader thread blocked on the full job queue was joined
    // while the queue's receiver was still alive, so the connection never
    // ended and its --max-connections slot was never given back.
    // No heartbeat verdict while the driver is frozen.
    let mut rig = rig_with_blocks("nbd-death-queue", BLOCKS, &[("heartbeat-interval-ms", "60000")]);
    rig.start();
    let nbd = NbdServer::start(&rig, &["--max-connections", "1"]);
    let (mut c, _) = RawNbd::go(&nbd.socket);
    // Freeze the driver: the supervisor accepts, nothing is answered, the
    // engine's window fills, then the job queue, and the reader waits on it.
    let pid = rig.status().pid.expect("driver pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    let writer = {
        let mut s = c.s.try_clone().unwrap();
        std::thread::spawn(move || {
            let data = pattern(CHUNK, 3);
            for i in 0..64u64 {
                let mut h = 0x2560_9513u32.to_be_bytes().to_vec();
                h.extend_from_slice(&[0, 0, 0, 1]);
                h.extend_from_slice(&i.to_be_bytes());
                h.extend_from_slice(&(i * CHUNK as u64).to_be_bytes());
                h.extend_from_slice(&(CHUNK as u32).to_be_bytes());
                if std::io::Write::write_all(&mut s, &h)
                    .and_then(|()| std::io::Write::write_all(&mut s, &data))
                    .is_err()
                {
                    return;
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let _ = rig.stop_supervisor(Signal::SIGKILL);
    rig.start();
    // The session is lost: the connection ends (EIO replies, then EOF).
    let mut rest = Vec::new();
    c.s.set_read_timeout(Some(Duration::from_secs(45))).unwrap();
    let _ = std::io::Read::read_to_end(&mut c.s, &mut rest);
    drop(c);
    let _ = writer.join();
    // The only connection slot is free again.
    let served = wait_for(Duration::from_secs(20), || {
        let mut c = RawNbd::try_connect(&nbd.socket)?;
        c.flags();
        c.option(spec::OPT_LIST, &[]);
        (c.try_opt_reply()?.1 == spec::REP_SERVER).then_some(())
    });
    assert!(served.is_some(), "a new connection is served; reinc-nbd log:\n{}", nbd.log());
}
