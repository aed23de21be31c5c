//! Bad input to the NBD front end, from outside the process over raw
//! sockets: malformed handshakes, unknown options, out-of-range and
//! misaligned requests, oversized requests, writes to a read-only export and
//! clients that vanish mid-request. Each gets the error the NBD spec names or
//! a clean disconnect of that one connection; neither `reinc-nbd` nor the
//! supervisor goes down, and no accepted write is lost.

use reinc_tests::nbd::{NbdServer, RawNbd, pattern, spec};
use reinc_tests::{DISK_BLOCKS, Rig, assert_no_duplicate_execution, wait_for};
use std::time::Duration;
use storage_core::BLOCK_SIZE;

const SIZE: u64 = DISK_BLOCKS * BLOCK_SIZE as u64;

fn setup(tag: &str, extra: &[&str]) -> (Rig, NbdServer) {
    // Five missed heartbeats before a hang verdict: the driver must not be
    // restarted by a busy machine, since the tests check it never was.
    let mut rig = Rig::new(tag, &[("heartbeat-misses", "5")]);
    rig.start();
    let nbd = NbdServer::start(&rig, extra);
    (rig, nbd)
}

/// The server still negotiates and reads, and the driver never crashed.
fn still_serving(rig: &Rig, nbd: &mut NbdServer, after: &str) {
    assert!(nbd.alive(), "reinc-nbd died after {after}; log:\n{}", nbd.log());
    let (mut c, n) = RawNbd::go(&nbd.socket);
    assert_eq!(n.size, SIZE, "after {after}");
    assert!(c.read(0xfeed, 0, 512).is_ok(), "a read works after {after}");
    let st = rig.status();
    assert_eq!((st.state.name(), st.generation), ("running", 1), "driver untouched after {after}");
}

#[test]
fn malformed_handshakes_end_only_their_own_connection() {
    let (rig, mut nbd) = setup("nbd-bad-hs", &[]);
    // A client that connects and says nothing must not hold anyone up.
    let _silent = RawNbd::connect(&nbd.socket);
    type Case = (&'static str, fn(&mut RawNbd));
    let cases: [Case; 7] = [
        ("plain newstyle client flags (no FIXED_NEWSTYLE)", |c| c.send(&0u32.to_be_bytes())),
        ("unknown client flag bits", |c| c.send(&0x8000_0001u32.to_be_bytes())),
        ("an option without IHAVEOPT", |c| {
            c.flags();
            c.send(b"IHAVEOPXxxxxxxxxxxxxxxxx");
        }),
        ("an option claiming 1 GiB of data", |c| {
            c.flags();
            let mut h = b"IHAVEOPT".to_vec();
            h.extend_from_slice(&spec::OPT_GO.to_be_bytes());
            h.extend_from_slice(&(1u32 << 30).to_be_bytes());
            c.send(&h);
        }),
        ("EXPORT_NAME of an export that does not exist", |c| {
            c.flags();
            c.option(spec::OPT_EXPORT_NAME, b"no-such-export");
        }),
        ("a request header before any option", |c| {
            c.flags();
            c.request(spec::READ, 0, 1, 0, 512, &[]);
        }),
        ("random bytes instead of flags and options", |c| c.send(&pattern(4096, 7))),
    ];
    for (what, send) in cases {
        let mut c = RawNbd::connect(&nbd.socket);
        send(&mut c);
        assert!(c.closed_by_server(), "{what}: the server closes the connection");
        still_serving(&rig, &mut nbd, what);
    }
    // A client that leaves in the middle of an option header.
    let mut c = RawNbd::connect(&nbd.socket);
    c.flags();
    c.send(b"IHAVE");
    drop(c);
    still_serving(&rig, &mut nbd, "a client leaving mid-option");
}

#[test]
fn unknown_options_are_refused_and_negotiation_continues() {
    let (rig, mut nbd) = setup("nbd-bad-opt", &[]);
    let mut c = RawNbd::connect(&nbd.socket);
    c.flags();
    for (opt, data, want) in [
        (99u32, &b""[..], spec::REP_ERR_UNSUP),
        (spec::OPT_STARTTLS, b"", spec::REP_ERR_UNSUP),
        (spec::OPT_LIST, b"junk", spec::REP_ERR_INVALID),
        (spec::OPT_INFO, &[0, 0, 0, 9, b'x'][..], spec::REP_ERR_INVALID),
        (spec::OPT_GO, &[0, 0, 0, 4, b'n', b'o', b'p', b'e', 0, 0][..], spec::REP_ERR_UNKNOWN),
    ] {
        c.option(opt, data);
        let (o, ty, _) = c.opt_reply();
        assert_eq!((o, ty), (opt, want), "option {opt} with {} bytes", data.len());
    }
    // The negotiation is still alive: LIST, INFO, then GO.
    c.option(spec::OPT_LIST, &[]);
    let (_, ty, p) = c.opt_reply();
    assert_eq!(ty, spec::REP_SERVER);
    assert_eq!(&p[4..], b"storage_driver", "LIST names the export");
    assert_eq!(c.opt_reply().1, spec::REP_ACK);
    let info = c.info(spec::OPT_INFO, "storage_driver");
    assert_eq!(info.size, SIZE);
    assert_eq!(info.block, (512, 32768, 2 << 20), "block sizes: storage block, one storage request, --max-request");
    assert_eq!(info.flags & spec::FLAG_READ_ONLY, 0);
    let go = c.info(spec::OPT_GO, "");
    assert_eq!(go, info, "GO on the default export describes the same export");
    assert!(c.read(1, SIZE - 512, 512).is_ok());
    // ABORT is acknowledged and ends the connection.
    let mut a = RawNbd::connect(&nbd.socket);
    a.flags();
    a.option(spec::OPT_ABORT, &[]);
    assert_eq!(a.opt_reply().1, spec::REP_ACK);
    assert!(a.closed_by_server());
    still_serving(&rig, &mut nbd, "unknown options");
}

#[test]
fn out_of_range_requests_get_einval_or_enospc_and_write_nothing() {
    let (rig, mut nbd) = setup("nbd-bad-range", &[]);
    let (mut c, _) = RawNbd::go(&nbd.socket);
    let block = vec![0xAB; 512];
    assert_eq!(c.read(1, SIZE, 512), Err(spec::EINVAL), "read at the end");
    assert_eq!(c.read(2, SIZE - 512, 1024), Err(spec::EINVAL), "read straddling the end");
    assert_eq!(c.read(3, u64::MAX - 511, 512), Err(spec::EINVAL), "read whose end wraps around");
    assert_eq!(c.write(4, SIZE, &block), spec::ENOSPC, "write at the end");
    assert_eq!(c.write(5, SIZE - 512, &[0xAB; 1024]), spec::ENOSPC, "write straddling the end");
    assert_eq!(c.write(6, u64::MAX - 511, &block), spec::ENOSPC, "write whose end wraps around");
    assert_eq!(rig.superblock().applied_count, 0, "no refused write reached the device");
    // The last block itself is in range.
    assert_eq!(c.write(7, SIZE - 512, &block), 0);
    assert_eq!(c.read(8, SIZE - 512, 512), Ok(block));
    assert_eq!(rig.superblock().applied_count, 1);
    still_serving(&rig, &mut nbd, "out-of-range requests");
}

#[test]
fn requests_breaking_block_size_constraints_or_the_maximum_get_einval() {
    let (rig, mut nbd) = setup("nbd-bad-size", &["--max-request", "65536"]);
    let (mut c, n) = RawNbd::go(&nbd.socket);
    assert_eq!(n.block, (512, 32768, 65536));
    let einval = Err(spec::EINVAL);
    assert_eq!(c.read(1, 100, 512), einval, "unaligned offset");
    assert_eq!(c.read(2, 0, 100), einval, "unaligned length");
    assert_eq!(c.read(3, 0, 0), einval, "zero length");
    assert_eq!(c.read(4, 0, 65536 + 512), einval, "over the advertised maximum");
    // Refused writes: the payload is consumed, the next request is parsed
    // from the right place.
    assert_eq!(c.write(5, 256, &[1; 512]), spec::EINVAL, "unaligned write");
    assert_eq!(c.write(6, 0, &vec![2; 65536 + 512]), spec::EINVAL, "write over the maximum");
    for (kind, flags, offset, len, what) in [
        (77u16, 0u16, 0u64, 0u32, "unknown command"),
        (spec::TRIM, 0, 100, 512, "an unaligned TRIM"),
        (spec::TRIM, 0, 0, 0, "an empty TRIM"),
        (5, 0, 0, 512, "CACHE, not advertised"),
        (spec::FLUSH, 0, 512, 0, "FLUSH with an offset"),
        (spec::READ, 1 << 2, 0, 512, "DF on a read, not advertised"),
        (spec::READ, 1 << 9, 0, 512, "unknown command flag"),
    ] {
        c.request(kind, flags, 100, offset, len, &[]);
        assert_eq!(c.reply(), (spec::EINVAL, 100), "{what}");
    }
    assert_eq!(rig.superblock().applied_count, 0, "nothing refused was written");
    // A valid write at the maximum, with FUA, then a flush.
    let data = pattern(65536, 3);
    c.request(spec::WRITE, spec::FLAG_FUA, 9, 4096, 65536, &data);
    assert_eq!(c.reply(), (0, 9));
    c.request(spec::FLUSH, 0, 10, 0, 0, &[]);
    assert_eq!(c.reply(), (0, 10));
    assert_eq!(c.read(11, 4096, 65536), Ok(data.clone()));
    // FUA is valid on every command once SEND_FUA is advertised (the spec:
    // the server MUST accept it, even by ignoring it).
    c.request(spec::FLUSH, spec::FLAG_FUA, 13, 0, 0, &[]);
    assert_eq!(c.reply(), (0, 13), "FUA on a flush");
    c.request(spec::READ, spec::FLAG_FUA, 14, 4096, 512, &[]);
    assert_eq!(c.reply(), (0, 14), "FUA on a read");
    assert_eq!(c.read_n(512).as_deref(), Some(&data[..512]), "FUA on a read returns the data");
    assert_eq!(rig.superblock().applied_count, 1, "64 KiB = one bulk storage request (shared pool), applied once");
    // A write too long to drain is answered, then the connection ends.
    c.request(spec::WRITE, 0, 12, 0, 64 << 20, &[]);
    assert_eq!(c.reply(), (spec::EINVAL, 12));
    assert!(c.closed_by_server(), "a 64 MiB refused payload is not drained");
    // A bad request magic ends the connection.
    let (mut c, _) = RawNbd::go(&nbd.socket);
    c.send(&[0xde, 0xad, 0xbe, 0xef]);
    c.send(&[0; 24]);
    assert!(c.closed_by_server(), "bad request magic");
    still_serving(&rig, &mut nbd, "oversized and misaligned requests");
}

#[test]
fn writes_to_a_read_only_export_get_eperm() {
    let (rig, mut nbd) = setup("nbd-bad-ro", &["--read-only"]);
    let (mut c, n) = RawNbd::go(&nbd.socket);
    assert_ne!(n.flags & spec::FLAG_READ_ONLY, 0, "READ_ONLY advertised");
    assert_eq!(c.write(1, 0, &[9; 4096]), spec::EPERM);
    assert_eq!(c.read(2, 0, 4096), Ok(vec![0; 4096]), "the write changed nothing; its payload was drained");
    c.request(spec::FLUSH, 0, 3, 0, 0, &[]);
    assert_eq!(c.reply(), (0, 3), "FLUSH is harmless on a read-only export");
    for (kind, cookie) in [(spec::TRIM, 4u64), (spec::WRITE_ZEROES, 5)] {
        c.request(kind, 0, cookie, 0, 4096, &[]);
        assert_eq!(c.reply(), (spec::EPERM, cookie), "TRIM and WRITE_ZEROES change the export too");
    }
    assert_eq!(rig.superblock().applied_count, 0);
    still_serving(&rig, &mut nbd, "writes to a read-only export");
}

#[test]
fn a_client_vanishing_mid_request_loses_no_accepted_write() {
    let (rig, mut nbd) = setup("nbd-bad-vanish", &[]);
    const N: u64 = 8;
    const LEN: u32 = 32768;
    let data = |i: u64| pattern(LEN as usize, 100 + i);
    let (mut c, _) = RawNbd::go(&nbd.socket);
    for i in 0..N {
        c.request(spec::WRITE, 0, i, i * u64::from(LEN), LEN, &data(i));
    }
    // The ninth write's payload is cut off: it was never accepted.
    let ninth = data(N);
    c.request(spec::WRITE, 0, N, N * u64::from(LEN), LEN, &ninth[..LEN as usize / 2]);
    drop(c);
    let chunks = N * u64::from(LEN) / 32768;
    let applied = wait_for(Duration::from_secs(10), || {
        let n = rig.superblock().applied_count;
        (n >= chunks).then_some(n)
    });
    assert_eq!(applied, Some(chunks), "every complete write applied; log:\n{}", nbd.log());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rig.superblock().applied_count, chunks, "the cut-off write is never applied");
    // Reads in flight when their client vanishes are dropped harmlessly.
    let (mut r, _) = RawNbd::go(&nbd.socket);
    for i in 0..N {
        r.request(spec::READ, 0, i, i * u64::from(LEN), LEN, &[]);
    }
    drop(r);
    let (mut c, _) = RawNbd::go(&nbd.socket);
    for i in 0..N {
        assert!(c.read(i, i * u64::from(LEN), LEN) == Ok(data(i)), "write {i} is on the device");
    }
    assert_eq!(c.read(N, N * u64::from(LEN), LEN), Ok(vec![0; LEN as usize]), "the cut-off write is not");
    assert_eq!(assert_no_duplicate_execution(&rig.exec_log()) as u64, chunks);
    still_serving(&rig, &mut nbd, "clients vanishing mid-request");
}

#[test]
fn connections_over_the_limit_are_refused_and_logged_at_most_once_a_second() {
    let (rig, mut nbd) = setup("nbd-bad-conns", &["--max-connections", "2"]);
    let (mut a, _) = RawNbd::go(&nbd.socket);
    let (_b, _) = RawNbd::go(&nbd.socket);
    let t = std::time::Instant::now();
    let mut refused = 0;
    for _ in 0..300 {
        if RawNbd::try_connect(&nbd.socket).is_none() {
            refused += 1;
        }
    }
    assert_eq!(refused, 300, "a third connection is closed before the greeting");
    let secs = t.elapsed().as_secs() + 1;
    let lines = nbd.log().lines().filter(|l| l.contains("refused")).count() as u64;
    assert!(lines <= secs + 1, "{lines} refusal lines in {secs} s: the log is rate-limited");
    // The connections inside the limit were never disturbed.
    assert!(a.read(1, 0, 512).is_ok());
    drop(a);
    let c = wait_for(Duration::from_secs(10), || RawNbd::try_connect(&nbd.socket));
    let mut c = c.expect("a freed slot is reused");
    c.flags();
    assert_eq!(c.info(spec::OPT_GO, "").size, SIZE);
    assert!(c.read(2, 0, 512).is_ok());
    assert!(nbd.alive());
    assert_eq!(rig.status().generation, 1);
}

#[test]
fn running_out_of_descriptors_pauses_accept_instead_of_spinning() {
    // Regression: EMFILE from accept was retried at once, forever, at 100 %
    // CPU, while the connection that cannot be accepted waits in the backlog.
    let mut rig = Rig::new("nbd-bad-emfile", &[]);
    rig.start();
    let socket = rig.dir.join("nbd.sock");
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=16:16")
        .arg(&reinc_tests::bins().nbd)
        .arg("--runtime-dir")
        .arg(&rig.runtime)
        .arg("--socket")
        .arg(&socket)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prlimit reinc-nbd (util-linux)");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert!(line.starts_with("nbd+unix://"), "reinc-nbd came up: {line:?}");
    let pid = child.id();
    // Silent clients: each accepted one holds a descriptor for the whole
    // handshake timeout. Twenty of them are more than the limit leaves, so
    // the rest wait in the listen backlog while accept fails with EMFILE.
    let silent: Vec<_> = (0..20)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).expect("connect (the backlog takes it)"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = reinc_tests::cpu_time(pid);
    std::thread::sleep(Duration::from_secs(1));
    let spent = reinc_tests::cpu_time(pid) - before;
    let _ = child.kill();
    let _ = child.wait();
    drop(silent);
    assert!(spent < Duration::from_millis(100), "reinc-nbd spent {spent:?} of CPU in 1 s while out of descriptors");
}
