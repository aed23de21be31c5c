//! Replay after crashes at every point, exactly-once execution, poison, and
//! dedup of retried requests.

use reinc_proto::{CallError, ClientToSup};
use reinc_tests::{Answer, RawConn, Reply, Rig, assert_no_duplicate_execution, read_req, reply, write_req};
use std::collections::BTreeMap;
use std::time::Duration;
use storage_core::BLOCK_SIZE;

const T: Duration = Duration::from_secs(10);
const PER_CASE: u64 = 6;

#[test]
fn crash_matrix_every_request_answered_once_and_executed_once() {
    let mut rig = Rig::new("matrix", &[]);
    rig.start();
    let mut client = rig.client();
    let mut model: BTreeMap<u64, u8> = BTreeMap::new();
    let mut writes = 0u64;
    let mut case = 0u64;
    for point in ["before-effect", "after-effect", "after-reply"] {
        for op in ["read", "write"] {
            for kind in ["segv", "kill", "abrt", "panic"] {
                let name = format!("{point}:{op}:{kind}");
                let base = case * PER_CASE;
                let fill = |i: u64| (base + i) as u8 ^ 0xA5;
                if op == "read" {
                    // Give the reads something to find.
                    for i in 0..PER_CASE {
                        let r = client.call("storage_driver", &write_req(base + i, 1, fill(i))).unwrap().unwrap();
                        assert_eq!(reply(&r), Reply::Written(base + i, 1));
                        model.insert(base + i, fill(i));
                        writes += 1;
                    }
                }
                let before = rig.status();
                rig.inject(&format!("{point}:3:{kind}"));
                let mut expected = BTreeMap::new();
                for i in 0..PER_CASE {
                    let lba = base + i;
                    let seq = if op == "write" {
                        let s = client.submit("storage_driver", &write_req(lba, 1, !fill(i))).unwrap();
                        model.insert(lba, !fill(i));
                        writes += 1;
                        expected.insert(s, Reply::Written(lba, 1));
                        s
                    } else {
                        let s = client.submit("storage_driver", &read_req(lba, 1)).unwrap();
                        expected.insert(s, Reply::Data(vec![model[&lba]; BLOCK_SIZE]));
                        s
                    };
                    let _ = seq;
                }
                let mut answered = 0;
                while client.in_flight() > 0 {
                    let c = client.wait().unwrap();
                    let body = c.result.unwrap_or_else(|e| panic!("{name}: seq {} failed: {e}", c.seq));
                    let want =
                        expected.remove(&c.seq).unwrap_or_else(|| panic!("{name}: seq {} answered twice", c.seq));
                    assert_eq!(reply(&body), want, "{name}: seq {}", c.seq);
                    answered += 1;
                }
                assert_eq!(answered, PER_CASE, "{name}");
                let after =
                    rig.wait_status(T, |s| s.generation == before.generation + 1 && s.state.name() == "running");
                assert!(after.is_some(), "{name}: the driver did not crash and restart once; log:\n{}", rig.log());
                for i in 0..PER_CASE {
                    assert_eq!(
                        rig.disk_block(base + i),
                        vec![model[&(base + i)]; BLOCK_SIZE],
                        "{name}: block {}",
                        base + i
                    );
                }
                assert_no_duplicate_execution(&rig.exec_log());
                case += 1;
            }
        }
    }
    let executed = assert_no_duplicate_execution(&rig.exec_log()) as u64;
    assert_eq!(executed, writes, "every write executed exactly once");
    assert_eq!(rig.superblock().applied_count, writes);
    assert_eq!(rig.status().restarts, case as u32);
    assert!(!rig.sup_lines("replaying").is_empty());
}

#[test]
fn poisoned_requests_are_answered_and_dropped_after_k_crashes() {
    // Every instance crashes on its first request: each request is poison.
    let mut rig = Rig::new("poison", &[("fault", "\"before-effect:1:segv\""), ("poison-after", "3")]);
    rig.start();
    let mut c = rig.client();
    let a = c.submit("storage_driver", &write_req(1, 1, 7)).unwrap();
    let b = c.submit("storage_driver", &write_req(2, 1, 8)).unwrap();
    let mut got = BTreeMap::new();
    for _ in 0..2 {
        let done = c.wait().unwrap();
        got.insert(done.seq, done.result);
    }
    assert_eq!(got[&a], Err(CallError::Poisoned));
    assert_eq!(got[&b], Err(CallError::Poisoned));
    let st = rig.wait_status(T, |s| s.state.name() == "running").unwrap();
    assert_eq!(st.restarts, 6, "three crashes per poisoned request");
    assert_eq!(st.queue_depth, 0);
    assert!(rig.exec_log().is_empty(), "a poisoned request never ran");
    assert_eq!(rig.sup_lines("(poisoned)").len(), 2, "{}", rig.log());
}

#[test]
fn retry_after_reconnect_is_answered_from_the_dedup_table() {
    let mut rig = Rig::new("dedup", &[]);
    rig.start();
    let body = write_req(5, 1, 0x33);
    let first = RawConn::connect(&rig);
    first.send(&ClientToSup::Hello { resume: None });
    let Answer::Welcome(client) = first.recv() else { panic!("no welcome") };
    first.send(&ClientToSup::Call { seq: 1, driver: "storage_driver", body: &body, acked_below: 0 });
    let Answer::Reply(1, original) = first.recv() else { panic!("no reply") };
    drop(first);
    let count = rig.superblock().applied_count;

    // The client "lost" the reply: it resumes and retries the same seq.
    let second = RawConn::connect(&rig);
    second.send(&ClientToSup::Hello { resume: Some(client) });
    assert_eq!(second.recv(), Answer::Welcome(client));
    second.send(&ClientToSup::Call { seq: 1, driver: "storage_driver", body: &body, acked_below: 0 });
    assert_eq!(second.recv(), Answer::Reply(1, original));
    assert_eq!(rig.superblock().applied_count, count, "the retry must not execute again");
    assert_eq!(rig.exec_log().len(), 1);

    // Once acknowledged, the id is expired, never re-executed.
    second.send(&ClientToSup::Call { seq: 2, driver: "storage_driver", body: &read_req(5, 1), acked_below: 2 });
    assert!(matches!(second.recv(), Answer::Reply(2, _)));
    second.send(&ClientToSup::Call { seq: 1, driver: "storage_driver", body: &body, acked_below: 2 });
    assert_eq!(second.recv(), Answer::Failed(1, CallError::Expired));
    assert_eq!(rig.exec_log().len(), 1);
}

#[test]
fn dump_queue_shows_requests_held_while_the_driver_is_down() {
    // Backing off for a long time after the second crash keeps requests queued.
    let mut rig = Rig::new("dump", &[("backoff-base-ms", "3000"), ("backoff-cap-ms", "3000")]);
    rig.start();
    rig.inject("before-effect:1:kill");
    let mut c = rig.client();
    c.call("storage_driver", &read_req(0, 1)).unwrap().unwrap();
    rig.wait_status(T, |s| s.generation == 2 && s.state.name() == "running").unwrap();
    rig.inject("before-effect:1:kill");
    let s1 = c.submit("storage_driver", &write_req(9, 1, 1)).unwrap();
    let s2 = c.submit("storage_driver", &read_req(9, 1)).unwrap();
    rig.wait_status(T, |s| s.state.name() == "backing-off").unwrap();
    let out = rig.drvctl(&["dump-queue", "storage_driver"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("2 queued request(s)"), "{text}");
    let id = |s: u64| format!("c{}:{s}", c.session().0);
    assert!(text.contains(&id(s1)) && text.contains(&id(s2)), "{text}");
    // And they are answered after the backoff, in order.
    assert_eq!(reply(&c.wait().unwrap().result.unwrap()), Reply::Written(9, 1));
    assert_eq!(reply(&c.wait().unwrap().result.unwrap()), Reply::Data(vec![1; BLOCK_SIZE]));
}

#[test]
fn blk_transfer_through_a_crash_reads_back_identical() {
    let mut rig = Rig::new("blk", &[]);
    rig.start();
    rig.inject("after-effect:5:segv");
    // 8 x 64 KiB = the whole 1024-block device: 8 requests of 64 KiB
    // through the shared pool (16 of 32 KiB in the messages without one).
    let w = rig.drvctl(&["blk", "write", "--bs", "64K", "--count", "8"]);
    let wout = String::from_utf8_lossy(&w.stdout).to_string();
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    assert!(wout.contains("524288 bytes (0.5 MB, 0.5 MiB) copied"), "{wout}");
    let r = rig.drvctl(&["blk", "read", "--bs", "64K", "--count", "8"]);
    let rout = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let crc = |s: &str| s.lines().find(|l| l.starts_with("crc32 ")).map(|l| l[6..16].to_string());
    assert_eq!(crc(&wout), crc(&rout), "write:\n{wout}\nread:\n{rout}");
    assert!(crc(&wout).is_some());
    assert_eq!(rig.status().generation, 2, "the write crashed the driver once");
    assert!(wout.contains("data through a shared pool"), "{wout}");
    assert_eq!(rig.superblock().applied_count, 8);
    assert_no_duplicate_execution(&rig.exec_log());
}

#[test]
fn drvctl_call_prints_decoded_storage_replies() {
    let mut rig = Rig::new("call", &[]);
    rig.start();
    let run = |args: &[&str]| {
        let out = rig.drvctl(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(run(&["call", "storage_driver", "geometry"]), "Geometry { blocks: 1024, block_size: 512 }");
    assert_eq!(run(&["call", "storage_driver", "write", "3", "171"]), "Written { lba: 3, blocks: 1 }");
    assert!(run(&["call", "storage_driver", "read", "3", "1"]).starts_with("Data: 512 bytes"));
    // Any driver, raw: postcard `Nop` is variant 0, and so is its reply.
    assert_eq!(run(&["call", "storage_driver", "--hex", "00"]), "00");
    let out = rig.drvctl(&["call", "no_such_driver", "nop"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such driver"));
}
