//! The guest half of `cargo xtask demo --guest`: the seeds' outcome, on the
//! kernel's own block layer, with the real busybox `dd`, `kill` and
//! `sha256sum`.
//!
//! It attaches `/dev/nbd0` to `reinc-nbd` in front of the supervised
//! `storage_driver` (the same setup as `nbd-suite`), writes 10 MiB of a known
//! pattern, drops the page cache, and runs the literal `dd if=/dev/nbd0
//! of=/dev/null bs=1M count=10`. Once the block layer has counted 3 MiB read
//! from `/dev/nbd0` (`/sys/block/nbd0/stat`), and while dd is still running,
//! it sends the real `kill -SEGV` to the driver from outside. Then it hashes
//! what dd read (`dd … | sha256sum` without dropping the page cache, so
//! mostly from the pages the interrupted dd filled; the bytes fetched from
//! the device again are counted and printed).
//!
//! Every transcript line goes to stdout behind
//! [`reinc_guest_protocol::DEMO_LINE_MARKER`], as it happens, with the
//! supervisor's own `[SUP]` lines forwarded from its log. The facts the
//! xtask verifies follow behind [`reinc_guest_protocol::DEMO_FACT_MARKER`],
//! and the program checks them itself too, as one `GUEST-TEST`.
#![deny(unsafe_code)]

use std::cell::Cell;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use reinc_guest::harness::{Context, Failure};
use reinc_guest::sup::{running, status, wait_status};
use reinc_guest_protocol::{DEMO_FACT_MARKER, DEMO_LINE_MARKER, Marker, Verdict};

#[path = "../nbd_attach.rs"]
mod nbd_attach;
use nbd_attach::{Attached, DEVICE, STORAGE, Side};

const MIB: usize = 1 << 20;
const COUNT: usize = 10;
/// The kill is sent once this much has been read from /dev/nbd0.
const KILL_AFTER: u64 = 3 << 20;
const PATTERN: &str = "/tmp/demo-pattern.bin";

/// Prints transcript lines, forwarding the supervisor's `[SUP]` lines as
/// they appear in its log.
struct Transcript<'a> {
    nbd: &'a Attached,
    seen: Cell<usize>,
}

impl Transcript<'_> {
    fn say(&self, line: &str) {
        self.pump();
        println!("{DEMO_LINE_MARKER} {line}");
    }

    fn pump(&self) {
        let new = self.nbd.sup.lines_from(self.seen.get());
        self.seen.set(self.seen.get() + new.len());
        for l in new.iter().filter(|l| l.starts_with("[SUP]")) {
            println!("{DEMO_LINE_MARKER} {l}");
        }
    }

    /// Forwards log lines for `d`, or until `until` holds.
    fn settle(&self, d: Duration, until: impl Fn(&Attached) -> bool) {
        let end = Instant::now() + d;
        while Instant::now() < end && !until(self.nbd) {
            self.pump();
            std::thread::sleep(Duration::from_millis(10));
        }
        self.pump();
    }
}

fn fact(key: &str, value: impl std::fmt::Display) {
    println!("{DEMO_FACT_MARKER} {key}={value}");
}

fn demo(nbd: &Attached) -> Result<(), Failure> {
    let t = Transcript { nbd, seen: Cell::new(0) };
    let first = status(STORAGE)?;
    let pid = first.pid.ok_or_else(|| Failure::check("storage_driver has no pid"))?;
    t.settle(Duration::from_secs(2), |n| n.sup.count_logged("[SUP] Launching storage_driver") > 0);
    fact("launched_pid", pid);

    let total = (COUNT * MIB) as u64;
    std::fs::write(PATTERN, nbd_attach::pattern(COUNT * MIB, 7)).context(|| format!("write {PATTERN}"))?;
    let written = nbd_attach::sha256_file(PATTERN)?;
    let (iff, of, count) = (format!("if={PATTERN}"), format!("of={DEVICE}"), format!("count={COUNT}"));
    nbd_attach::dd(&[&iff, &of, "bs=1M", &count, "conv=fsync"], None, || Ok(()), || {})?.ensure_ok(total)?;
    nbd_attach::drop_caches()?;
    t.say(&format!(
        "# setup: 10 MiB of a known pattern written with dd to {DEVICE} (sha256 {}…), page cache dropped",
        &written[..16]
    ));
    fact("sha256_written", &written);

    t.say(&format!("$ dd if={DEVICE} of=/dev/null bs=1M count={COUNT}"));
    let iff = format!("if={DEVICE}");
    let run = nbd_attach::dd(
        &[&iff, "of=/dev/null", "bs=1M", &count],
        Some((Side::Read, KILL_AFTER)),
        || {
            t.say(&format!("$ kill -SEGV {pid}"));
            nbd_attach::kill("SEGV", pid)
        },
        || t.pump(),
    )?;
    let fired = run.fired.ok_or_else(|| Failure::check("dd finished before 3 MiB were counted; no kill sent"))?;
    t.say(&format!(
        "# that kill was sent from outside (busybox kill) while dd was {}: the kernel had read {:.1} of {COUNT} MiB \
         from {DEVICE}",
        if fired.dd_running { "still running" } else { "ALREADY DONE" },
        fired.at_bytes as f64 / MIB as f64
    ));
    fact("killed_pid", pid);
    fact("killed_at_bytes", fired.at_bytes);
    fact("dd_running_at_kill", u8::from(fired.dd_running));
    let bytes = run.bytes_copied().unwrap_or(0);
    fact("dd_status", run.status.code().map_or(-1, |c| c));
    fact("dd_bytes", bytes);
    if run.status.success() && bytes == total {
        t.say(&format!("{COUNT} MB read successfully"));
    } else {
        t.say(&format!("dd FAILED: {} ({:?})", run.status, run.stderr.trim()));
    }
    t.say(&format!("# dd said: {}", run.stderr.trim().replace('\n', " / ")));
    let after = wait_status(STORAGE, "restarted", |s| running(s) && s.generation == first.generation + 1)?;
    t.settle(Duration::from_secs(2), |n| n.sup.count_logged("[SUP] replaying") > 0);
    fact("new_pid", after.pid.unwrap_or(0));

    t.say(&format!("$ dd if={DEVICE} bs=1M count={COUNT} | sha256sum"));
    let (read, again, fetched) = nbd_attach::sha256_of_nbd0(COUNT)?;
    t.say(&format!("{read}  -"));
    t.say(&format!(
        "# {fetched} of those bytes came from {DEVICE} again, the rest from the page cache the interrupted dd filled; \
         sha256 written {}",
        if read == written { "= read" } else { "!= read" }
    ));
    fact("sha256_read", &read);
    fact("reread_status", again.status.code().map_or(-1, |c| c));
    fact("reread_fetched_bytes", fetched);
    let bad = nbd_attach::kernel_complaints()?;
    t.say(&format!(
        "# kernel log (/dev/kmsg): {}",
        if bad.is_empty() { "no I/O error, no nbd complaint".to_string() } else { format!("{bad:?}") }
    ));
    fact("kmsg_complaints", bad.len());
    t.pump();

    // The guest's own verdict; the xtask verifies the facts independently.
    let ok = run.status.success()
        && bytes == total
        && fired.dd_running
        && read == written
        && bad.is_empty()
        && after.pid != Some(pid)
        && nbd.sup.logged("[SUP] storage_driver crashed (SIGSEGV)")
        && nbd.sup.logged("[SUP] replaying");
    if ok { Ok(()) } else { Err(Failure::check("a demo check failed (see the facts above)")) }
}

fn main() -> ExitCode {
    reinc_guest::init_logging();
    let name = "nbd-demo::dd_through_a_kill_segv_mid_transfer".to_string();
    let verdict = match nbd_attach::attach() {
        Err(e) => Verdict::Fail(format!("setup: {e}")),
        Ok(nbd) => {
            let v = match demo(&nbd) {
                Ok(()) => Verdict::Ok,
                Err(f) => Verdict::Fail(f.to_string()),
            };
            let _ = nbd_attach::kernel_nbd::disconnect(&nbd.ctl);
            let _ = nbd.sup.stop();
            let mut server = nbd.server;
            let _ = server.kill();
            let _ = server.wait();
            v
        }
    };
    let code = if verdict == Verdict::Ok { ExitCode::SUCCESS } else { ExitCode::from(1) };
    println!("{}", Marker::Test { name, verdict });
    code
}
