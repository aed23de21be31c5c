//! Real NBD clients nobody here wrote (`nbdcopy`, `nbdinfo`, `qemu-img`,
//! `qemu-io`) through `reinc-nbd` and the supervised storage driver, with the
//! driver killed by SIGSEGV, SIGKILL and hangs during and between transfers.
//! Every client exits 0, the bytes are right, and every storage write is
//! applied exactly once (exec log and superblock).
//!
//! The tools come from Debian's libnbd-bin and qemu-utils; `cargo xtask test`
//! installs them. A missing tool fails the test with the command to run.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reinc_tests::nbd::{NbdServer, applied_count, export_bytes, pattern, require_tool, rig_with_blocks, run_tool};
use reinc_tests::{Rig, assert_no_duplicate_execution, wait_for};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// An 8 MiB export: 256 storage requests per full copy.
const BLOCKS: u64 = 16384;
const SIZE: usize = 8 << 20;
const T: Duration = Duration::from_secs(90);

/// nbdcopy's requests here: 32 KiB, within every server setup below
/// (nbdcopy does not shrink its requests to the advertised maximum).
const NBDCOPY_REQUEST: &str = "--request-size=32768";

fn setup(tag: &str) -> (Rig, NbdServer) {
    setup_with(tag, &[])
}

/// For the mid-transfer crash tests: NBD requests of at most 32 KiB, so an
/// 8 MiB transfer is 256 storage requests and a fault armed for the k-th
/// lands in its middle (through the shared pool one NBD request is one
/// storage request, and clients send up to the advertised maximum).
fn setup_small_requests(tag: &str) -> (Rig, NbdServer) {
    setup_with(tag, &["--max-request", "32768"])
}

fn setup_with(tag: &str, nbd_args: &[&str]) -> (Rig, NbdServer) {
    // Five missed heartbeats (500 ms) before a hang verdict: these tests
    // run three supervisors and their clients at once.
    let mut rig = rig_with_blocks(tag, BLOCKS, &[("heartbeat-misses", "5")]);
    rig.start();
    let nbd = NbdServer::start(&rig, nbd_args);
    (rig, nbd)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    /// `nbdcopy FILE URI --flush`, 4 connections (multi-conn) by default.
    NbdcopyIn,
    /// `nbdcopy URI FILE`.
    NbdcopyOut,
    /// `nbdcopy --request-size=1M --requests=1 URI FILE`: each read alone in
    /// flight, so under structured replies it streams in 128 KiB pieces.
    NbdcopyOutOneAtATime,
    /// `qemu-img convert -n FILE URI` (ends with a flush).
    QemuImgIn,
    /// `qemu-img convert URI FILE`.
    QemuImgOut,
    /// `qemu-io -c 'write -P BYTE 0 8M' URI`.
    QemuIoIn,
}

impl Tool {
    fn writes(self) -> bool {
        matches!(self, Self::NbdcopyIn | Self::QemuImgIn | Self::QemuIoIn)
    }

    /// The command, and the bytes the export must hold afterwards (for a
    /// write) or that were read out into `dst` (for a read).
    fn command(self, uri: &str, src: &Path, dst: &Path, byte: u8) -> Command {
        let mut c = match self {
            Self::NbdcopyIn | Self::NbdcopyOut | Self::NbdcopyOutOneAtATime => {
                Command::new(require_tool("nbdcopy", "libnbd-bin"))
            }
            Self::QemuImgIn | Self::QemuImgOut => Command::new(require_tool("qemu-img", "qemu-utils")),
            Self::QemuIoIn => Command::new(require_tool("qemu-io", "qemu-utils")),
        };
        match self {
            Self::NbdcopyIn => c.arg(NBDCOPY_REQUEST).arg("--flush").arg(src).arg(uri),
            Self::NbdcopyOut => c.arg(NBDCOPY_REQUEST).arg(uri).arg(dst),
            Self::NbdcopyOutOneAtATime => {
                c.args(["--request-size=1048576", "--requests=1", "--connections=1"]).arg(uri).arg(dst)
            }
            Self::QemuImgIn => c.args(["convert", "-n", "-f", "raw", "-O", "raw"]).arg(src).arg(uri),
            Self::QemuImgOut => c.args(["convert", "-f", "raw", "-O", "raw"]).arg(uri).arg(dst),
            Self::QemuIoIn => c.args(["-f", "raw", "-c"]).arg(format!("write -P {byte} 0 {SIZE}")).arg(uri),
        };
        c
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// A plan armed in the live instance before the transfer starts; it fires
    /// on that instance's k-th request, so in the middle of the transfer.
    Inject(&'static str),
    /// A real signal from outside, once the transfer has applied 40 writes.
    Signal(Signal),
}

fn wait_child(mut child: Child, what: &str) -> Output {
    if wait_for(T, || child.try_wait().ok().flatten()).is_none() {
        let _ = child.kill();
        let out = child.wait_with_output().expect("reap");
        panic!("{what} hung; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    child.wait_with_output().expect("collect output")
}

fn logs(rig: &Rig, nbd: &NbdServer) -> String {
    format!("supervisor log:\n{}\nreinc-nbd log:\n{}", rig.log(), nbd.log())
}

/// Fills the export with fresh data through an unfaulted nbdcopy.
fn fill(rig: &Rig, nbd: &NbdServer, seed: u64) -> Vec<u8> {
    let data = pattern(SIZE, seed);
    let src = rig.dir.join("fill.bin");
    fs::write(&src, &data).expect("write source");
    let out =
        run_tool(Command::new(require_tool("nbdcopy", "libnbd-bin")).arg(NBDCOPY_REQUEST).arg(&src).arg(&nbd.uri), T);
    assert!(out.status.success(), "fill: {}", String::from_utf8_lossy(&out.stderr));
    assert!(export_bytes(rig, 0, SIZE) == data, "fill reached the device");
    data
}

/// One transfer by `tool` while `fault` hits the storage driver; checks the
/// exit status, the bytes, one crash and one restart.
fn faulted_transfer(rig: &Rig, nbd: &NbdServer, tool: Tool, fault: Fault, seed: u64) {
    let name = format!("{tool:?} under {fault:?}");
    let (src, dst) = (rig.dir.join("src.bin"), rig.dir.join("dst.bin"));
    let _ = fs::remove_file(&dst);
    let byte = (seed as u8) | 1;
    let want = match tool {
        Tool::QemuIoIn => vec![byte; SIZE],
        Tool::NbdcopyIn | Tool::QemuImgIn => {
            let d = pattern(SIZE, seed);
            fs::write(&src, &d).expect("write source");
            d
        }
        Tool::NbdcopyOut | Tool::NbdcopyOutOneAtATime | Tool::QemuImgOut => fill(rig, nbd, seed),
    };
    let before = rig.status();
    let applied_before = applied_count(rig);
    if let Fault::Inject(plan) = fault {
        rig.inject(plan);
    }
    let mut child = tool
        .command(&nbd.uri, &src, &dst, byte)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    if let Fault::Signal(sig) = fault {
        assert!(tool.writes(), "external signals are timed by write progress");
        let progressed = wait_for(T, || {
            let done = child.try_wait().ok().flatten().is_some();
            (done || applied_count(rig) >= applied_before + 40).then_some(!done)
        });
        assert_eq!(progressed, Some(true), "{name}: the transfer ended before the signal could hit it");
        let pid = before.pid.expect("driver pid");
        kill(Pid::from_raw(pid as i32), sig).expect("signal the driver");
    }
    let out = wait_child(child, &name);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: client failed ({}): {stderr}\n{}", out.status, logs(rig, nbd));
    assert!(!stderr.to_lowercase().contains("error"), "{name}: client reported an error: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("failed"), "{name}: {stdout}");
    let got = if tool.writes() { export_bytes(rig, 0, SIZE) } else { fs::read(&dst).expect("read copy") };
    assert!(got.len() == want.len() && got == want, "{name}: the bytes differ from what was written");
    // At least once: on a loaded machine a heartbeat may also be missed.
    let after = rig.wait_status(T, |s| s.generation > before.generation && s.state.name() == "running");
    assert!(after.is_some(), "{name}: the driver did not crash and restart; {}", logs(rig, nbd));
    assert!(nbd_alive(nbd), "{name}: reinc-nbd must not notice");
}

fn nbd_alive(nbd: &NbdServer) -> bool {
    !reinc_tests::process_gone(nbd.pid())
}

/// Every storage write executed once: no id twice in the exec log, and the
/// device's own counter agrees.
fn assert_exactly_once(rig: &Rig) {
    let distinct = assert_no_duplicate_execution(&rig.exec_log()) as u64;
    assert_eq!(applied_count(rig), distinct, "superblock applied_count = distinct writes in the exec log");
}

/// `[SUP]` lines of deaths (crashes, and hangs: "failed (hung …)") and replays.
fn crash_lines(rig: &Rig) -> (usize, usize) {
    let deaths = rig.sup_lines("storage_driver crashed (").len() + rig.sup_lines("storage_driver failed (hung").len();
    (deaths, rig.sup_lines("replaying").len())
}

#[test]
fn nbdinfo_reports_the_export_and_its_constraints() {
    let (_rig, nbd) = setup("nbd-info");
    let out = run_tool(Command::new(require_tool("nbdinfo", "libnbd-bin")).arg("--json").arg(&nbd.uri), T);
    assert!(out.status.success(), "nbdinfo: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nbdinfo --json");
    assert_eq!(v["protocol"], "newstyle-fixed");
    assert_eq!(v["structured"], true, "libnbd asks for structured replies and reinc-nbd acknowledges them");
    let e = &v["exports"][0];
    assert_eq!(e["export-name"], "storage_driver");
    assert_eq!(e["export-size"], SIZE as u64);
    assert_eq!((e["block_size_minimum"].as_u64(), e["block_size_preferred"].as_u64()), (Some(512), Some(32768)));
    assert_eq!(e["block_size_maximum"], 2 << 20);
    for (key, want) in [
        ("can_flush", true),
        ("can_fua", true),
        ("can_multi_conn", true),
        ("is_read_only", false),
        ("can_trim", true),
        ("can_zero", true),
    ] {
        assert_eq!(e[key], want, "{key}");
    }
    let list = run_tool(
        Command::new(require_tool("nbdinfo", "libnbd-bin"))
            .arg("--list")
            .arg(format!("nbd+unix://?socket={}", nbd.socket.display())),
        T,
    );
    assert!(list.status.success() && String::from_utf8_lossy(&list.stdout).contains("export=\"storage_driver\""));
}

#[test]
fn nbdcopy_qemu_img_and_qemu_io_copy_in_and_out_byte_exact() {
    let (rig, nbd) = setup("nbd-copy");
    let dst = rig.dir.join("out.bin");
    // nbdcopy in with 4 connections x 16 requests, out with one connection.
    let data = pattern(SIZE, 11);
    let src = rig.dir.join("in.bin");
    fs::write(&src, &data).unwrap();
    let nbdcopy = require_tool("nbdcopy", "libnbd-bin");
    let out = run_tool(Command::new(&nbdcopy).args(["-C", "4", "-R", "16"]).arg(&src).arg(&nbd.uri), T);
    assert!(out.status.success(), "nbdcopy in: {}", String::from_utf8_lossy(&out.stderr));
    assert!(export_bytes(&rig, 0, SIZE) == data);
    let out = run_tool(Command::new(&nbdcopy).args(["-C", "1"]).arg(&nbd.uri).arg(&dst), T);
    assert!(out.status.success(), "nbdcopy out: {}", String::from_utf8_lossy(&out.stderr));
    assert!(fs::read(&dst).unwrap() == data);
    // qemu-img compares, converts in and out.
    let qemu_img = require_tool("qemu-img", "qemu-utils");
    let out = run_tool(Command::new(&qemu_img).args(["compare", "-f", "raw", "-F", "raw"]).arg(&src).arg(&nbd.uri), T);
    assert!(out.status.success(), "qemu-img compare: {}", String::from_utf8_lossy(&out.stdout));
    let data2 = pattern(SIZE, 12);
    fs::write(&src, &data2).unwrap();
    let out =
        run_tool(Command::new(&qemu_img).args(["convert", "-n", "-f", "raw", "-O", "raw"]).arg(&src).arg(&nbd.uri), T);
    assert!(out.status.success(), "qemu-img convert in: {}", String::from_utf8_lossy(&out.stderr));
    assert!(export_bytes(&rig, 0, SIZE) == data2);
    let _ = fs::remove_file(&dst);
    let out = run_tool(Command::new(&qemu_img).args(["convert", "-f", "raw", "-O", "raw"]).arg(&nbd.uri).arg(&dst), T);
    assert!(out.status.success(), "qemu-img convert out: {}", String::from_utf8_lossy(&out.stderr));
    assert!(fs::read(&dst).unwrap() == data2);
    // qemu-io writes a pattern with FUA and verifies it, unaligned to 32 KiB.
    let qemu_io = require_tool("qemu-io", "qemu-utils");
    let out = run_tool(
        Command::new(&qemu_io)
            .args(["-f", "raw", "-c", "write -P 0x5a -f 4608 1m", "-c", "read -P 0x5a 4608 1m"])
            .arg(&nbd.uri),
        T,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !stdout.contains("failed"), "qemu-io: {stdout}");
    assert!(export_bytes(&rig, 4608, 1 << 20).iter().all(|&b| b == 0x5a));
    assert_eq!(export_bytes(&rig, 0, 4608), data2[..4608], "bytes before the pattern untouched");
    assert_exactly_once(&rig);
}

#[test]
fn qemu_io_write_zeroes_and_discard_and_a_sparse_qemu_img_convert_leave_zeros() {
    let (rig, nbd) = setup("nbd-zero-clients");
    let data = fill(&rig, &nbd, 21);
    let applied = applied_count(&rig);
    // Zeroes and a discard, each one NBD request (the export advertises both).
    let qemu_io = require_tool("qemu-io", "qemu-utils");
    let out = run_tool(
        Command::new(&qemu_io)
            .args(["-f", "raw", "-c", "write -z 1m 1m", "-c", "discard 3m 512k", "-c", "read -P 0 1m 1m"])
            .arg(&nbd.uri),
        T,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !stdout.contains("failed"), "qemu-io: {stdout}{}", logs(&rig, &nbd));
    let mut want = data.clone();
    want[1 << 20..2 << 20].fill(0);
    want[3 << 20..(3 << 20) + (512 << 10)].fill(0);
    assert!(export_bytes(&rig, 0, SIZE) == want, "zeroed and discarded ranges read as zeros, the rest unchanged");
    assert_eq!(applied_count(&rig), applied + 2, "one storage zero request each, no data written");
    // The zero path, not zeros written as data: those blocks' tags say
    // "never written" (0); a written block of zeros has a non-zero tag.
    let block = |byte: usize| (byte / storage_core::BLOCK_SIZE) as u64;
    assert_eq!(stored_tag(&rig, block(1 << 20)), 0, "write -z went as WRITE_ZEROES");
    assert_eq!(stored_tag(&rig, block(3 << 20)), 0, "discard went as TRIM");
    assert_ne!(stored_tag(&rig, block(0)), 0, "a written block keeps its tag");
    // A sparse image converted in: qemu-img writes its holes as zeroes.
    let mut sparse = pattern(SIZE, 22);
    sparse[(2 << 20)..(6 << 20)].fill(0);
    let src = rig.dir.join("sparse.bin");
    fs::write(&src, &sparse).unwrap();
    let qemu_img = require_tool("qemu-img", "qemu-utils");
    let out =
        run_tool(Command::new(&qemu_img).args(["convert", "-n", "-f", "raw", "-O", "raw"]).arg(&src).arg(&nbd.uri), T);
    assert!(out.status.success(), "qemu-img convert: {}", String::from_utf8_lossy(&out.stderr));
    assert!(export_bytes(&rig, 0, SIZE) == sparse);
    assert_eq!(stored_tag(&rig, (4 << 20) / storage_core::BLOCK_SIZE as u64), 0, "the hole went as WRITE_ZEROES");
    assert_exactly_once(&rig);
}

/// The end-to-end checksum the storage driver's file holds for block `lba`
/// (0: never written, which vouches for zeros).
fn stored_tag(rig: &Rig, lba: u64) -> u32 {
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(rig.disk()).expect("open disk");
    let mut t = [0u8; 4];
    f.read_exact_at(&mut t, storage_core::integrity::tag_offset(BLOCKS, lba)).expect("read the tag");
    u32::from_le_bytes(t)
}

#[test]
fn driver_crashes_mid_transfer_are_invisible_to_nbdcopy() {
    let (rig, nbd) = setup_small_requests("nbd-crash-nbdcopy");
    let (c0, r0) = crash_lines(&rig);
    let mut seed = 100;
    let mut cases = 0;
    for tool in [Tool::NbdcopyIn, Tool::NbdcopyOut] {
        for fault in [
            Fault::Inject("after-effect:60:segv"),
            Fault::Inject("before-effect:90:kill"),
            Fault::Inject("after-effect:40:hang"),
        ] {
            seed += 1;
            cases += 1;
            faulted_transfer(&rig, &nbd, tool, fault, seed);
        }
    }
    for sig in [Signal::SIGSEGV, Signal::SIGKILL, Signal::SIGSTOP] {
        seed += 1;
        cases += 1;
        faulted_transfer(&rig, &nbd, Tool::NbdcopyIn, Fault::Signal(sig), seed);
    }
    let (c1, r1) = crash_lines(&rig);
    assert!(c1 - c0 >= cases && r1 - r0 >= cases, "[SUP] lines show every crash and replay; {}", logs(&rig, &nbd));
    assert!(rig.sup_lines("crashed (SIGSEGV)").len() >= 2, "SIGSEGV named in the log");
    assert_exactly_once(&rig);
}

#[test]
fn driver_crashes_mid_read_while_it_streams_in_pieces_are_invisible_to_nbdcopy() {
    // 1 MiB reads one at a time: 8 pieces each (structured replies), so a
    // fault on the k-th storage request lands inside a read whose first
    // pieces have already gone out.
    let (rig, nbd) = setup("nbd-crash-pieces");
    let (c0, r0) = crash_lines(&rig);
    let mut seed = 300;
    let faults = ["after-effect:20:segv", "before-effect:27:kill", "after-effect:35:hang", "before-effect:12:abrt"];
    for fault in faults {
        seed += 1;
        faulted_transfer(&rig, &nbd, Tool::NbdcopyOutOneAtATime, Fault::Inject(fault), seed);
    }
    let (c1, r1) = crash_lines(&rig);
    assert!(c1 - c0 >= faults.len() && r1 - r0 >= faults.len(), "[SUP] lines show every crash; {}", logs(&rig, &nbd));
    assert!(nbd.log().contains("structured replies"), "nbdcopy negotiated structured replies:\n{}", nbd.log());
    assert!(!nbd.log().contains("simple replies"), "every connection used them:\n{}", nbd.log());
}

#[test]
fn driver_crashes_mid_transfer_are_invisible_to_qemu_img_and_qemu_io() {
    let (rig, nbd) = setup_small_requests("nbd-crash-qemu");
    let mut seed = 200;
    for tool in [Tool::QemuImgIn, Tool::QemuImgOut, Tool::QemuIoIn] {
        for fault in [
            Fault::Inject("after-effect:60:segv"),
            Fault::Inject("before-effect:90:kill"),
            Fault::Inject("after-effect:40:hang"),
        ] {
            seed += 1;
            faulted_transfer(&rig, &nbd, tool, fault, seed);
        }
    }
    for sig in [Signal::SIGSEGV, Signal::SIGSTOP] {
        seed += 1;
        faulted_transfer(&rig, &nbd, Tool::QemuImgIn, Fault::Signal(sig), seed);
    }
    assert_exactly_once(&rig);
}

#[test]
fn driver_killed_between_transfers_is_invisible() {
    let (rig, nbd) = setup("nbd-between");
    let data = fill(&rig, &nbd, 300);
    for sig in [Signal::SIGSEGV, Signal::SIGKILL, Signal::SIGSTOP] {
        let before = rig.status();
        kill(Pid::from_raw(before.pid.expect("pid") as i32), sig).expect("signal the driver");
        // The next client may arrive while the driver is still down.
        let dst: PathBuf = rig.dir.join("between.bin");
        let _ = fs::remove_file(&dst);
        let out = run_tool(Command::new(require_tool("nbdcopy", "libnbd-bin")).arg(&nbd.uri).arg(&dst), T);
        assert!(out.status.success(), "nbdcopy after {sig}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(fs::read(&dst).unwrap() == data, "data after {sig}");
        let out = run_tool(
            Command::new(require_tool("qemu-img", "qemu-utils"))
                .args(["compare", "-f", "raw", "-F", "raw"])
                .arg(&dst)
                .arg(&nbd.uri),
            T,
        );
        assert!(out.status.success(), "qemu-img compare after {sig}");
        let st = rig.wait_status(T, |s| s.generation > before.generation && s.state.name() == "running");
        assert!(st.is_some(), "restarted after {sig}; {}", logs(&rig, &nbd));
    }
    assert!(nbd_alive(&nbd));
    assert_exactly_once(&rig);
}

/// Kills the child on drop, so a failed assertion leaves no server behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tcp_on_loopback_serves_nbdcopy_too() {
    let (rig, _unix) = setup("nbd-tcp");
    let mut child = KillOnDrop(
        Command::new(&reinc_tests::bins().nbd)
            .arg("--runtime-dir")
            .arg(&rig.runtime)
            .args(["--tcp", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn reinc-nbd --tcp 0"),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.0.stdout.take().unwrap()), &mut line).unwrap();
    let uri = line.trim();
    assert!(uri.starts_with("nbd://127.0.0.1:") && uri.ends_with("/storage_driver"), "TCP URI: {uri:?}");
    let data = pattern(SIZE, 21);
    let src = rig.dir.join("tcp.bin");
    fs::write(&src, &data).unwrap();
    let out = run_tool(Command::new(require_tool("nbdcopy", "libnbd-bin")).arg(&src).arg(uri), T);
    assert!(out.status.success(), "nbdcopy over TCP: {}", String::from_utf8_lossy(&out.stderr));
    assert!(export_bytes(&rig, 0, SIZE) == data);
}
