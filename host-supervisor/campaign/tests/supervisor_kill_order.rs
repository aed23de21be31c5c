//! A client pipelining to one journal driver sees its answers in execution
//! order across SIGKILLs of the supervisor.
//!
//! The misbehaving driver, asked for nothing but normal requests, is the
//! sharpest witness: its whole state is a counter committed with every
//! reply, so the counters of one client's answers, in the order they
//! arrive, must rise by exactly one. A skip followed by a step back is an
//! answer overtaken by a later one; that is what the campaign's seed 15
//! found (the answer to call N lost with the dead supervisor's connection
//! and resent from the dedup table after call N+1's, which was still
//! running at the resume and was pushed at once).
//!
//! The harness plays systemd: SIGKILL at a random moment (0 to 30 ms
//! apart, so many land during recovery and replay), a new supervisor at
//! once on the same config and state directory. `REINC_ORDER_KILLS`
//! (default 300) sets the number of kills, `REINC_ORDER_SEED` the seed.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reinc_campaign::misbehave;
use reinc_client::{Client, client_socket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn spawn(sup: &Path, config: &Path, runtime: &Path, log: &Path) -> Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open the supervisor log");
    let err = out.try_clone().expect("clone the log descriptor");
    Command::new(sup)
        .arg("--config")
        .arg(config)
        .arg("--runtime-dir")
        .arg(runtime)
        .env("RUST_LOG", "warn,reinc_supervisor=info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn the supervisor")
}

/// Normal requests, 4 in flight, until `stop`; checks that each answer's
/// counter is one above the one before it. Returns the answers counted.
fn client(path: &Path, stop: &AtomicBool) -> Result<u64, String> {
    let mut c = Client::connect(path).map_err(|e| e.to_string())?;
    let mut last: Option<(u64, misbehave::Reply)> = None;
    let (mut nonce, mut answered) = (0, 0);
    loop {
        while !stop.load(Ordering::Relaxed) && c.in_flight() < 4 {
            nonce += 1;
            c.submit("misbehave_driver", &misbehave::request(nonce, None)).map_err(|e| e.to_string())?;
        }
        if c.in_flight() == 0 {
            return Ok(answered);
        }
        let done = c.wait().map_err(|e| e.to_string())?;
        let body = done.result.map_err(|e| format!("seq {}: {e:?}", done.seq))?;
        let r = misbehave::parse_reply(&body).map_err(|e| format!("seq {}: {e:?}", done.seq))?;
        if let Some((seq, prev)) = last
            && r.counter != prev.counter + 1
        {
            return Err(format!(
                "seq {} answered with counter {} right after seq {seq} with {} ({} reconnects)",
                done.seq,
                r.counter,
                prev.counter,
                c.reconnects()
            ));
        }
        last = Some((done.seq, r));
        answered += 1;
    }
}

#[test]
fn answers_to_one_client_keep_execution_order_across_supervisor_sigkills() {
    let kills = env("REINC_ORDER_KILLS", 300);
    let mut x = env("REINC_ORDER_SEED", {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
        t.as_nanos() as u64
    }) | 1;
    eprintln!("supervisor_kill_order: {kills} kills, REINC_ORDER_SEED={x}");
    let supervisor = reinc_tests::bins().supervisor.clone();
    // The journal on tmpfs when there is one, as the campaign has it: a
    // disk's fdatasync would slow the load a hundredfold, not change it.
    let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = base.join(format!("reinc-kill-order-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test directory");
    let config = dir.join("supervisor.toml");
    std::fs::write(
        &config,
        format!(
            "[supervisor]\nstate-dir = \"{d}/state\"\n\n[[driver]]\nname = \"misbehave_driver\"\nexec = \"{exe}\"\n\
             args = [\"--markers\", \"{d}/markers\"]\nheartbeat-interval-ms = 20\nheartbeat-misses = 3\n\
             backoff-base-ms = 0\nbackoff-cap-ms = 0\nhealthy-after-ms = 1\nmax-restarts = 64\n\
             restart-window-ms = 1000\nwindow = 8\nsandbox = false\ndurability = \"journal\"\n",
            d = dir.display(),
            exe = env!("CARGO_BIN_EXE_reinc-misbehave-driver"),
        ),
    )
    .expect("write the config");
    let (runtime, log) = (dir.join("run"), dir.join("supervisor.log"));
    let mut sup = spawn(&supervisor, &config, &runtime, &log);
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (path, stop) = (client_socket(&runtime), Arc::clone(&stop));
        // The first connect may come before the socket exists.
        std::thread::spawn(move || {
            for _ in 0..500 {
                if path.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            client(&path, &stop)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut done = 0;
    while done < kills && !load.is_finished() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_micros(x % 30_000));
        kill(Pid::from_raw(sup.id() as i32), Signal::SIGKILL).expect("SIGKILL the supervisor");
        let st = sup.wait().expect("wait for the supervisor");
        assert_eq!(st.code(), None, "kill {done}: the supervisor exited on its own ({st})");
        sup = spawn(&supervisor, &config, &runtime, &log);
        done += 1;
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let result = load.join().expect("client thread");
    let _ = kill(Pid::from_raw(sup.id() as i32), Signal::SIGTERM);
    let _ = sup.wait();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    match result {
        Ok(n) => {
            eprintln!("supervisor_kill_order: {n} answers in order over {done} kills");
            assert_eq!(done, kills, "the client ended early");
            assert!(n > kills, "the load must run between the kills ({n} answers)");
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(e) => panic!(
            "after {done} kills: {e}; the journals (supervisor --dump-journal) are in {}/state; log tail:\n{}",
            dir.display(),
            log_text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        ),
    }
}
