//! `cargo xtask demo`: the main job of the README, on any Linux machine, no
//! root, no hardware.
//!
//! 1. Builds `supervisor`, `drvctl`, `storage_driver`, `net_driver` and the
//!    client workload (`reinc-bench demo-load`).
//! 2. Writes a config into a fresh temporary directory and starts the
//!    supervisor there (its own runtime directory, so it never meets another
//!    one), showing its `[SUP]` lines as they happen.
//! 3. Runs the workload: three packets through `net_driver`, then a dd-like
//!    write of `--size` bytes of a known pattern through `storage_driver`,
//!    pipelined through the client library; when 40 % is answered it looks
//!    the driver's pid up through the control socket and sends it a real
//!    `kill -SEGV`; then it reads everything back.
//! 4. Stops the supervisor with SIGTERM and checks that every driver process
//!    it launched is gone.
//! 5. Verifies ([`verify`], pure and unit-tested) and prints the summary:
//!    bytes, checksums, requests lost, requests executed twice (from the
//!    storage superblock's `applied_count` and from the driver's exec log),
//!    recovery time. Exits 0 only if every check holds.
//!
//! The workload lives in `host-supervisor/bench` because it needs the client
//! library, and this crate builds before, and without, the workspace's
//! crates.

use crate::util::{self, IoContext, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PACKAGES: [&str; 5] = ["reinc-supervisor", "reinc-client", "storage-driver", "net_driver", "reinc-bench"];

/// Command-line flags of `cargo xtask demo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Flags {
    /// `--size BYTES` (suffix k/M allowed): how much to write and read back
    /// through the storage driver. Default 8M.
    size: u64,
    /// `--keep`: keep the temporary directory (config, disk image, exec log,
    /// supervisor log) and print its path.
    keep: bool,
    /// `--debug`: build and run the dev-profile binaries instead of the
    /// release ones (unoptimised: restarts take tens of ms, and the driver
    /// works through most of its queue before the kill lands).
    debug: bool,
}

fn parse_size(s: &str) -> Option<u64> {
    let (digits, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

impl Flags {
    fn parse(args: &[String]) -> Result<Self> {
        let mut f = Self { size: 8 << 20, keep: false, debug: false };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--keep" => f.keep = true,
                "--debug" => f.debug = true,
                "--size" => {
                    let v = it.next().ok_or_else(|| util::Error::Usage("--size needs a value, e.g. 8M".into()))?;
                    f.size = parse_size(v).ok_or_else(|| util::Error::Usage(format!("--size {v:?}: not a size")))?;
                }
                other => {
                    return Err(util::Error::Usage(format!(
                        "`cargo xtask demo` takes --size BYTES, --keep, --debug; got `{other}`"
                    )));
                }
            }
        }
        // 64 requests at least, so that the kill lands mid-transfer.
        if f.size < 2 << 20 || f.size > 1 << 30 || !f.size.is_multiple_of(32 << 10) {
            return Err(util::Error::Usage(format!("--size {} must be a multiple of 32K between 2M and 1G", f.size)));
        }
        Ok(f)
    }
}

fn toml_str(s: &Path) -> String {
    format!("\"{}\"", s.to_string_lossy().replace('\\', "\\\\").replace('"', "\\\""))
}

/// The supervisor configuration of the demo.
fn config_text(bins: &Path, dir: &Path, blocks: u64) -> String {
    format!(
        "# Written by `cargo xtask demo`.\n\
         [supervisor]\nstate-dir = {state}\n\n\
         [[driver]]\nname = \"storage_driver\"\nexec = {storage}\n\
         args = [\"--file\", {disk}, \"--blocks\", \"{blocks}\"]\n\
         exec-log = {log}\n\n\
         [[driver]]\nname = \"net_driver\"\nexec = {net}\n\
         args = [\"--file\", {ring}, \"--slots\", \"64\"]\n",
        state = toml_str(&dir.join("state")),
        storage = toml_str(&bins.join("storage_driver")),
        disk = toml_str(&dir.join("disk.img")),
        log = toml_str(&dir.join("exec.log")),
        net = toml_str(&bins.join("net_driver")),
        ring = toml_str(&dir.join("net.ring")),
    )
}

/// The `key=value` pairs of the workload's `RESULT` line.
fn parse_result(line: &str) -> Option<BTreeMap<String, u64>> {
    let rest = line.strip_prefix("RESULT ")?;
    rest.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// Pids from `[SUP] Launching NAME (pid=N)` lines.
fn launched_pids(sup_lines: &[String]) -> Vec<(String, u32)> {
    sup_lines
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("[SUP] Launching ")?;
            let (name, pid) = rest.split_once(" (pid=")?;
            Some((name.to_owned(), pid.strip_suffix(')')?.parse().ok()?))
        })
        .collect()
}

/// One verified claim of the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Check {
    label: &'static str,
    ok: bool,
    detail: String,
}

/// What the run produced, for [`verify`].
#[derive(Debug, Clone, Default)]
struct Evidence {
    /// Requested size in bytes.
    size: u64,
    /// The workload's `RESULT` figures.
    result: BTreeMap<String, u64>,
    /// The storage driver's exec log.
    exec_log: String,
    /// Every `[SUP]` line.
    sup_lines: Vec<String>,
    /// Launched driver pids still alive after the supervisor stopped.
    leftovers: Vec<(String, u32)>,
}

/// Checks everything the summary claims. Pure.
fn verify(e: &Evidence) -> Vec<Check> {
    let r = |k: &str| e.result.get(k).copied().unwrap_or(0);
    let has = |needle: &str| e.sup_lines.iter().any(|l| l.contains(needle));
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    let mut out = Vec::new();
    let mut check = |label, ok, detail: String| out.push(Check { label, ok, detail });

    let replayed = e
        .sup_lines
        .iter()
        .filter_map(|l| l.strip_prefix("[SUP] replaying ")?.strip_suffix(" queued requests")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let killed = r("killed_pid");
    let lines_ok = has(&format!("[SUP] Launching storage_driver (pid={killed})"))
        && has("[SUP] storage_driver crashed (SIGSEGV)")
        && has("[SUP] restarting storage_driver")
        && replayed > 0;
    check(
        "supervisor",
        lines_ok,
        format!("saw the launch of pid {killed}, the SIGSEGV, the restart, and {replayed} requests replayed"),
    );
    let (w, rd) = (r("bytes_written"), r("bytes_read"));
    check(
        "bytes",
        w == e.size && rd == e.size,
        format!("{w} written, {rd} read back ({:.1} MiB each way)", mib(e.size)),
    );
    let (wc, rc, bad) = (r("write_crc"), r("read_crc"), r("bad_blocks"));
    check(
        "checksums",
        e.result.contains_key("write_crc") && wc == rc && bad == 0,
        format!(
            "crc32 {wc:#010x} written, {rc:#010x} read: {}; {bad} blocks differ from the pattern",
            if wc == rc { "match" } else { "MISMATCH" }
        ),
    );
    let sent = r("write_requests") + r("read_requests");
    let answered = r("write_replies") + r("read_replies");
    let lost = sent.saturating_sub(answered) + r("errors");
    check(
        "requests lost",
        sent > 0 && lost == 0,
        format!(
            "{lost}  ({} writes + {} reads sent, {answered} answered correctly)",
            r("write_requests"),
            r("read_requests")
        ),
    );
    // Execution count: every applied write appears once in the exec log and
    // bumps the superblock's applied_count once.
    let client = r("client");
    let mut per_seq: BTreeMap<u64, u32> = BTreeMap::new();
    for l in e.exec_log.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [_, c, s] = f[..]
            && c.parse::<u64>().ok() == Some(client)
            && let Ok(seq) = s.parse::<u64>()
        {
            *per_seq.entry(seq).or_default() += 1;
        }
    }
    let twice = per_seq.values().filter(|&&n| n > 1).count() as u64;
    let writes = r("write_replies");
    let applied = r("applied_delta");
    check(
        "executed twice",
        twice == 0 && per_seq.len() as u64 == writes && applied == writes,
        format!(
            "{twice}  (superblock applied_count +{applied} for {writes} writes answered; exec log: {} writes, none repeated)",
            per_seq.len()
        ),
    );
    let rec = r("recovery_us");
    check(
        "recovery time",
        rec > 0,
        format!("{:.1} ms  (kill -SEGV -> first reply executed by the new instance)", rec as f64 / 1000.0),
    );
    let new_pid = r("new_pid");
    check("restarted", new_pid != 0 && new_pid != killed, format!("storage_driver pid {killed} -> {new_pid}"));
    check("net_driver", r("net_packets") == 3, format!("{} packets sent and received back intact", r("net_packets")));
    let launched = launched_pids(&e.sup_lines).len();
    check(
        "no orphans",
        launched >= 3 && e.leftovers.is_empty(),
        if e.leftovers.is_empty() {
            format!("the supervisor and all {launched} driver instances it launched are gone")
        } else {
            format!("still running after the supervisor stopped: {:?}", e.leftovers)
        },
    );
    out
}

/// Kills and reaps the supervisor (if still running) and removes the
/// directory (unless kept), whatever happened.
struct Cleanup {
    dir: PathBuf,
    keep: bool,
    supervisor: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut c) = self.supervisor.take() {
            // Its drivers die with it (PR_SET_PDEATHSIG).
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.keep {
            println!("kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn step(what: &str) {
    println!("==> {what}");
}

/// Sends SIGTERM through `kill(1)` (this crate has no libc binding and
/// forbids `unsafe`) and waits up to 10 s; SIGKILL after that.
fn stop(child: &mut Child) -> Result<bool> {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Ok(st.success());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(false)
}

/// Flags: `--size BYTES`, `--keep`, `--debug` (see [`Flags`]).
/// `--guest` runs [`crate::demo_guest`] instead.
pub fn run(args: &[String]) -> Result {
    if args.iter().any(|a| a == "--guest") {
        return crate::demo_guest::run(args);
    }
    let flags = Flags::parse(args)?;
    println!("reinc demo: a supervised storage driver is killed with SIGSEGV in the middle of a transfer;");
    println!("the supervisor restarts it and replays what was in flight. The client sees only latency.");
    let profile = if flags.debug { "debug" } else { "release" };
    step(&format!("building the supervisor, drvctl, storage_driver, net_driver and the client workload ({profile})"));
    let mut build = util::cargo();
    build.args(["build", "--quiet", "--bins"]);
    if !flags.debug {
        build.arg("--release");
    }
    for p in PACKAGES {
        build.args(["-p", p]);
    }
    util::run(&mut build)?;
    let bins = crate::bench::target_dir().join(profile);

    let dir = std::env::temp_dir().join(format!("reinc-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    util::create_dir_all(&dir)?;
    let mut cleanup = Cleanup { dir: dir.clone(), keep: flags.keep, supervisor: None };
    let config = dir.join("supervisor.toml");
    std::fs::write(&config, config_text(&bins, &dir, flags.size / 512)).at(&config)?;
    let runtime = dir.join("run");

    step(&format!("starting the supervisor in {} (no root needed)", dir.display()));
    let mut sup = Command::new(bins.join("supervisor"))
        .arg("--config")
        .arg(&config)
        .arg("--runtime-dir")
        .arg(&runtime)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| util::Error::Spawn { what: "supervisor".into(), source })?;
    let stderr = sup.stderr.take();
    cleanup.supervisor = Some(sup);
    // Everything the supervisor and its drivers log; `[SUP]` lines are shown live.
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let reader = {
        let log = log.clone();
        let log_file = dir.join("supervisor.log");
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(log_file).ok();
            for line in BufReader::new(stderr.expect("piped")).lines().map_while(std::result::Result::ok) {
                if line.starts_with("[SUP]") {
                    println!("    {line}");
                }
                if let Some(f) = file.as_mut() {
                    use std::io::Write as _;
                    let _ = writeln!(f, "{line}");
                }
                log.lock().expect("log lock").push(line);
            }
        })
    };

    // Let both launches show before the workload's lines.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let names: Vec<String> = launched_pids(&log.lock().expect("log lock")).into_iter().map(|(n, _)| n).collect();
        if ["storage_driver", "net_driver"].iter().all(|d| names.iter().any(|n| n == d)) {
            break;
        }
        let exited = cleanup.supervisor.as_mut().and_then(|c| c.try_wait().ok().flatten());
        if exited.is_some() || Instant::now() > deadline {
            let all = log.lock().expect("log lock").join("\n");
            return Err(util::Error::Other(format!("the supervisor did not launch both drivers; its log:\n{all}")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    step("client workload through the client library (reinc-bench demo-load)");
    let mut load = Command::new(bins.join("reinc-bench"))
        .arg("demo-load")
        .arg("--runtime-dir")
        .arg(&runtime)
        .arg("--disk")
        .arg(dir.join("disk.img"))
        .arg("--exec-log")
        .arg(dir.join("exec.log"))
        .arg("--size")
        .arg(flags.size.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| util::Error::Spawn { what: "reinc-bench demo-load".into(), source })?;
    let mut result = None;
    for line in BufReader::new(load.stdout.take().expect("piped")).lines().map_while(std::result::Result::ok) {
        match parse_result(&line) {
            Some(r) => result = Some(r),
            None => println!("  {line}"),
        }
    }
    let load_status = load.wait().map_err(|source| util::Error::Spawn { what: "reinc-bench".into(), source })?;

    step("drvctl status");
    let status = util::raw_output(Command::new(bins.join("drvctl")).arg("--runtime-dir").arg(&runtime).arg("status"))?;
    for l in String::from_utf8_lossy(&status.stdout).lines() {
        println!("  {l}");
    }

    step("stopping the supervisor (SIGTERM)");
    let mut sup = cleanup.supervisor.take().expect("started above");
    let clean_exit = stop(&mut sup)?;
    let _ = reader.join();
    let sup_lines: Vec<String> =
        log.lock().expect("log lock").iter().filter(|l| l.starts_with("[SUP]")).cloned().collect();
    let leftovers =
        launched_pids(&sup_lines).into_iter().filter(|(_, pid)| !reinc_procfs::process_gone(*pid)).collect();

    let Some(result) = result.filter(|_| load_status.success()) else {
        let all = log.lock().expect("log lock").join("\n");
        return Err(util::Error::Other(format!(
            "the client workload failed ({load_status}); supervisor and driver log:\n{all}"
        )));
    };
    let exec_log_path = dir.join("exec.log");
    let evidence = Evidence {
        size: flags.size,
        result,
        exec_log: std::fs::read_to_string(&exec_log_path).at(&exec_log_path)?,
        sup_lines,
        leftovers,
    };
    step("summary");
    let checks = verify(&evidence);
    for c in &checks {
        println!("  {:<3} {:<15} {}", if c.ok { "ok" } else { "BAD" }, c.label, c.detail);
    }
    let failed: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.label).collect();
    if !clean_exit {
        return Err(util::Error::Other("the supervisor did not exit cleanly on SIGTERM".into()));
    }
    if failed.is_empty() {
        println!("demo verified: 0 requests lost, 0 executed twice, through a real SIGSEGV");
        Ok(())
    } else {
        Err(util::Error::Other(format!("demo verification failed: {}", failed.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Evidence {
        let mut result = BTreeMap::new();
        for (k, v) in [
            ("bytes_written", 4 << 20),
            ("bytes_read", 4 << 20),
            ("write_crc", 0xdead_beef),
            ("read_crc", 0xdead_beef),
            ("bad_blocks", 0),
            ("write_requests", 3),
            ("write_replies", 3),
            ("read_requests", 3),
            ("read_replies", 3),
            ("errors", 0),
            ("applied_delta", 3),
            ("client", 7),
            ("killed_pid", 100),
            ("new_pid", 200),
            ("recovery_us", 1500),
            ("net_packets", 3),
        ] {
            result.insert(k.to_owned(), v);
        }
        let sup_lines = [
            "[SUP] Launching storage_driver (pid=100)",
            "[SUP] Launching net_driver (pid=101)",
            "[SUP] storage_driver crashed (SIGSEGV)",
            "[SUP] restarting storage_driver",
            "[SUP] Launching storage_driver (pid=200)",
            "[SUP] replaying 5 queued requests",
        ]
        .map(String::from)
        .to_vec();
        // Seq 2 was applied by generation 1, its reply lost in the crash, and
        // answered by generation 2 without a second execution.
        let exec_log = "1 7 1\n1 7 2\n2 7 3\n1 9 1\n".into();
        Evidence { size: 4 << 20, result, exec_log, sup_lines, leftovers: vec![] }
    }

    fn failed(e: &Evidence) -> Vec<&'static str> {
        verify(e).into_iter().filter(|c| !c.ok).map(|c| c.label).collect()
    }

    #[test]
    fn a_clean_run_verifies() {
        assert_eq!(failed(&good()), Vec::<&str>::new());
    }

    #[test]
    fn a_write_logged_twice_is_a_double_execution() {
        let mut e = good();
        e.exec_log.push_str("2 7 2\n");
        assert_eq!(failed(&e), ["executed twice"]);
    }

    #[test]
    fn applied_count_disagreeing_with_replies_fails() {
        let mut e = good();
        e.result.insert("applied_delta".into(), 4);
        assert_eq!(failed(&e), ["executed twice"]);
    }

    #[test]
    fn lost_requests_mismatched_data_and_missing_lines_each_fail() {
        let mut e = good();
        e.result.insert("read_replies".into(), 2);
        assert_eq!(failed(&e), ["requests lost"]);
        let mut e = good();
        e.result.insert("read_crc".into(), 1);
        assert_eq!(failed(&e), ["checksums"]);
        let mut e = good();
        e.sup_lines.retain(|l| !l.contains("replaying"));
        assert_eq!(failed(&e), ["supervisor"]);
        let mut e = good();
        e.leftovers = vec![("net_driver".into(), 101)];
        assert_eq!(failed(&e), ["no orphans"]);
        let mut e = good();
        e.result.clear();
        assert!(failed(&e).len() >= 5);
    }

    #[test]
    fn result_line_and_launch_lines_parse() {
        let r = parse_result("RESULT a=1 b=22").unwrap();
        assert_eq!(r["b"], 22);
        assert!(parse_result("RESULT a=x").is_none());
        assert!(parse_result("writing 8 MiB").is_none());
        let pids = launched_pids(&good().sup_lines);
        assert_eq!(pids.len(), 3);
        assert_eq!(pids[1], ("net_driver".to_owned(), 101));
    }

    #[test]
    fn flags_parse_sizes_and_refuse_tiny_ones() {
        let v = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(Flags::parse(&[]).unwrap().size, 8 << 20);
        let f = Flags::parse(&v("--size 16M --keep")).unwrap();
        assert_eq!((f.size, f.keep, f.debug), (16 << 20, true, false));
        assert!(Flags::parse(&v("--size 64K")).is_err());
        assert!(Flags::parse(&v("--size 3000000")).is_err());
        assert!(Flags::parse(&v("--bogus")).is_err());
    }

    #[test]
    fn config_names_both_drivers_and_the_exec_log() {
        let t = config_text(Path::new("/b"), Path::new("/tmp/d"), 16384);
        assert!(t.contains("exec = \"/b/storage_driver\""));
        assert!(t.contains("exec = \"/b/net_driver\""));
        assert!(t.contains("\"--blocks\", \"16384\""));
        assert!(t.contains("exec-log = \"/tmp/d/exec.log\""));
    }
}
