//! `durability = "journal"`: what a client was told survives a SIGKILL of
//! the supervisor itself; a torn or corrupt journal is refused or cut as
//! configured.

use nix::sys::signal::Signal;
use reinc_tests::{Reply, Rig, read_req, reply, request, wait_for, write_req};
use std::fs;
use std::time::Duration;
use storage_core::{BLOCK_SIZE, StorageRequest};

const T: Duration = Duration::from_secs(10);

fn journal_rig(tag: &str) -> Rig {
    Rig::new(tag, &[("durability", "\"journal\"")])
}

fn journal_path(rig: &Rig) -> std::path::PathBuf {
    rig.dir.join("state/supervisor.journal")
}

fn append(c: &mut reinc_client::Client, fill: u8) -> Reply {
    reply(&c.call("storage_driver", &request(&StorageRequest::Append { data: &[fill; BLOCK_SIZE] })).unwrap().unwrap())
}

#[test]
fn a_resumed_session_gets_the_same_answers_after_a_supervisor_sigkill() {
    let mut rig = journal_rig("jnl-resume");
    rig.start();
    let mut c = rig.client();
    assert_eq!(append(&mut c, 0x11), Reply::Appended(0, 1));
    assert_eq!(append(&mut c, 0x22), Reply::Appended(1, 1));
    let _ = rig.stop_supervisor(Signal::SIGKILL);
    rig.start();
    assert!(
        rig.sup_lines("recovered 1 sessions, 0 accepted requests and 1 committed states from").len() == 1,
        "{}",
        rig.log()
    );
    // The same session goes on: its next call is resumed, not refused.
    assert_eq!(append(&mut c, 0x33), Reply::Appended(2, 1));
    assert_eq!(c.reconnects(), 1);
    assert_eq!(rig.disk_block(1), vec![0x22; BLOCK_SIZE]);
    assert_eq!(rig.superblock().applied_count, 3, "every append applied exactly once");
}

#[test]
fn a_client_in_the_middle_of_a_transfer_sees_only_latency_when_the_supervisor_is_sigkilled() {
    let mut rig = journal_rig("jnl-blk");
    rig.set_disk_blocks(16 * 1024);
    rig.start();
    let count = (8u64 * 1024 * 1024 / 32768).to_string();
    let mut child = std::process::Command::new(&reinc_tests::bins().drvctl)
        .arg("--runtime-dir")
        .arg(&rig.runtime)
        .args(["blk", "write", "--bs", "32768", "--count", &count])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = wait_for(T, || {
        (fs::read_to_string(rig.dir.join("exec.log")).unwrap_or_default().lines().count() >= 8).then_some(())
    });
    assert!(started.is_some(), "blk write did not start; log:\n{}", rig.log());
    assert!(child.try_wait().unwrap().is_none(), "finished before the kill");
    let _ = rig.stop_supervisor(Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(1500));
    rig.start();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stderr: {}\nlog:\n{}", String::from_utf8_lossy(&out.stderr), rig.log());
    assert!(stdout.contains("1 reconnects"), "{stdout}");
    // Read it back: the data is what drvctl wrote.
    let back = rig.drvctl(&["blk", "read", "--bs", "32768", "--count", &count]);
    let crc = |s: &str| s.lines().find(|l| l.starts_with("crc32")).map(|l| l.split(',').next().unwrap().to_owned());
    assert_eq!(crc(&String::from_utf8_lossy(&back.stdout)), crc(&stdout));
    reinc_tests::assert_no_duplicate_execution(&rig.exec_log());
}

#[test]
fn a_torn_journal_is_refused_naming_the_file_and_offset_or_cut_when_configured() {
    let mut rig = journal_rig("jnl-torn");
    rig.start();
    let mut c = rig.client();
    assert_eq!(append(&mut c, 0x11), Reply::Appended(0, 1));
    let st = rig.stop_supervisor(Signal::SIGTERM);
    assert!(st.success(), "{st:?}\n{}", rig.log());
    let path = journal_path(&rig);
    let mut bytes = fs::read(&path).unwrap();
    // A batch whose write was cut short: half a record at the end.
    let len = bytes.len() as u64;
    bytes.extend_from_slice(&[0x30, 0, 0, 0, 1, 2]);
    fs::write(&path, &bytes).unwrap();
    rig.spawn();
    let mut child = rig.child.take().unwrap();
    let st = wait_for(T, || child.try_wait().ok().flatten()).expect("refuses and exits");
    assert_eq!(st.code(), Some(1));
    let log = rig.log();
    assert!(log.contains(&format!("journal {}: torn tail at offset {len}", path.display())), "{log}");
    assert!(log.contains("journal-recovery = \"truncate\""), "{log}");

    rig.set_supervisor_key("journal-recovery", "\"truncate\"");
    rig.start();
    assert_eq!(rig.sup_lines("truncated at the last valid record").len(), 1, "{}", rig.log());
    let mut c = rig.client();
    assert_eq!(append(&mut c, 0x22), Reply::Appended(1, 1));
    let r = reply(&c.call("storage_driver", &read_req(0, 1)).unwrap().unwrap());
    assert_eq!(r, Reply::Data(vec![0x11; BLOCK_SIZE]));
    let _ = write_req;
}

/// `supervisor --dump-journal FILE` from outside: the previous lifetime's
/// journal is kept next to the new one and reads as text; a file that is
/// not a journal is refused with an error naming it, and changes nothing.
#[test]
fn the_previous_lifetimes_journal_is_kept_and_dumps_record_by_record() {
    let mut rig = journal_rig("jnl-dump");
    rig.start();
    let mut c = rig.client();
    assert_eq!(append(&mut c, 0x11), Reply::Appended(0, 1));
    let _ = rig.stop_supervisor(Signal::SIGKILL);
    rig.start();
    let prev = rig.dir.join("state/supervisor.journal.prev");
    let dump = |file: &std::path::Path| {
        let out = std::process::Command::new(&reinc_tests::bins().supervisor)
            .arg("--dump-journal")
            .arg(file)
            .output()
            .expect("run supervisor --dump-journal");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, text, err) = dump(&prev);
    assert_eq!(code, Some(0), "{err}");
    assert!(text.contains(" answered storage_driver ") && text.contains(": reply "), "{text}");
    assert!(text.lines().last().is_some_and(|l| l.starts_with("end: ")), "{text}");
    // The new journal starts with the folded image: one snapshot.
    let (code, text, _) = dump(&journal_path(&rig));
    assert_eq!(code, Some(0));
    assert!(text.starts_with("@16 snapshot: lifetimes 2, 1 sessions, 1 journal drivers"), "{text}");
    let bogus = rig.dir.join("supervisor.toml");
    let before = fs::read(&bogus).unwrap();
    let (code, text, err) = dump(&bogus);
    assert_eq!((code, text.as_str()), (Some(1), ""));
    assert_eq!(
        err.trim(),
        format!("supervisor: journal {}: not a version-2 reinc journal (bad header)", bogus.display())
    );
    assert_eq!(fs::read(&bogus).unwrap(), before);
}
