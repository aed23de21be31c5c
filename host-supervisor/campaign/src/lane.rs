//! One lane of a campaign: a supervisor in a private directory with its
//! drivers ([`specs`]), the load threads of [`crate::load`], the injector of
//! [`crate::inject`] walking the lane's share of the schedule, and the final
//! checks (exactly once by the exec logs and the superblock, device equal to
//! the model). Lanes share nothing but the cores.

use crate::inject::Injector;
use crate::load::{self, DISK_BLOCKS, NET_SLOTS, RANGE, Shared, block_data};
use crate::run::{Bins, HangVerdicts, KernelStall, Lanes, Options, RunResult};
use crate::schedule::{Fault, Target};
use crate::{CampaignError, Violation};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reinc_bench::rig::{DriverSpec, config_text};
use reinc_client::control::{ControlRequest, ControlResponse, DriverStatus};
use reinc_client::{CONTROL_TIMEOUT, Client, ControlConn, blocksum, client_socket, control_socket};
use reinc_proto::CrashKind;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use storage_core::BLOCK_SIZE;

/// How long any single fault may take to resolve before it is a failure.
pub(crate) const FAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// A wait longer than this is reported while it lasts ([`Sup::wait`]):
/// far above any recovery seen (p99.9 tens of ms), far below the timeout.
pub(crate) const SLOW: Duration = Duration::from_secs(3);
/// How long a wait goes on past [`FAULT_TIMEOUT`] while the instance is
/// held in the kernel (`D`): stalls of 3–48 s were seen on these VMs
/// (`RunResult::kernel_stalls`); one past this is a failure.
const KERNEL_STALL_LIMIT: Duration = Duration::from_secs(120);

/// Incremental reader of an exec log: `(generation, client, seq)` lines.
#[derive(Debug)]
pub(crate) struct ExecTail {
    pub(crate) path: PathBuf,
    pub(crate) offset: u64,
    pub(crate) partial: String,
}

impl ExecTail {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path, offset: 0, partial: String::new() }
    }
    pub(crate) fn read_new(&mut self) -> Vec<(u32, u64, u64)> {
        let Ok(mut f) = std::fs::File::open(&self.path) else { return Vec::new() };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut s = String::new();
        let n = f.read_to_string(&mut s).unwrap_or(0);
        self.offset += n as u64;
        self.partial.push_str(&s);
        let mut out = Vec::new();
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            if let Some(e) = parse_exec_line(&line) {
                out.push(e);
            }
        }
        out
    }
}

pub(crate) fn parse_exec_line(l: &str) -> Option<(u32, u64, u64)> {
    let mut it = l.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.trim_start_matches('c').parse().ok()?, it.next()?.parse().ok()?))
}

/// The supervisor under test, and what its earlier lifetimes counted.
///
/// A supervisor-kill fault ([`Sup::kill_and_restart`]) ends one lifetime
/// and starts the next on the same config and runtime directory, as
/// systemd's `Restart=always` would; the status and metrics a lifetime
/// reports start from zero, so the figures of the lifetimes before are
/// kept here and added at the end.
#[derive(Debug)]
pub(crate) struct Sup {
    pub(crate) child: Child,
    pub(crate) runtime: PathBuf,
    pub(crate) log: PathBuf,
    exe: PathBuf,
    config: PathBuf,
    /// Lifetimes ended by the campaign's SIGKILL.
    pub(crate) kills: u32,
    /// Driver restarts counted by the lifetimes killed.
    past_restarts: BTreeMap<String, u32>,
    /// Hang verdicts of the lifetimes killed.
    past_verdicts: HangVerdicts,
    /// The control connection the status polls reuse (reopened after a
    /// supervisor restart): a connection per poll, every millisecond while
    /// the injector waits, cost the supervisor an accept and a peer check
    /// each time and the campaign a 1 MiB buffer.
    control: Mutex<Option<ControlConn>>,
    /// The fault the injector handles now (for [`Self::stalls`]).
    pub(crate) fault_index: usize,
    /// Waits held up by the kernel, waited out ([`Sup::wait`]).
    pub(crate) stalls: Vec<KernelStall>,
}

/// Starts a supervisor on `config` and `runtime`, its output appended to `log`.
fn spawn_supervisor(exe: &Path, config: &Path, runtime: &Path, log: &Path) -> Result<Child, String> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
    Command::new(exe)
        .arg("--config")
        .arg(config)
        .arg("--runtime-dir")
        .arg(runtime)
        // The supervisor's `[SUP]` lines (restarts and their reasons) are kept;
        // drivers say only warnings.
        .env("RUST_LOG", "warn,reinc_supervisor=info")
        // Drivers inherit the environment: with RUST_BACKTRACE set, every
        // injected panic spends ~100 ms symbolising a backtrace, which is
        // the shell's setting, not the supervisor's recovery.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{}: {e}", exe.display()))
}

/// The drivers the load uses, which must be running before a fault.
pub(crate) const LOAD_TARGETS: [Target; 4] = [Target::Storage, Target::Net, Target::Null, Target::Misbehave];

impl Sup {
    fn start(exe: &Path, config: &Path, runtime: &Path, log: &Path) -> Result<Self, String> {
        let child = spawn_supervisor(exe, config, runtime, log)?;
        Ok(Self {
            child,
            runtime: runtime.to_owned(),
            log: log.to_owned(),
            exe: exe.to_owned(),
            config: config.to_owned(),
            kills: 0,
            past_restarts: BTreeMap::new(),
            past_verdicts: HangVerdicts::default(),
            control: Mutex::new(None),
            fault_index: 0,
            stalls: Vec::new(),
        })
    }

    /// Waits until every load driver runs and every init-crash driver is
    /// quarantined again: the state a lane starts its faults in.
    /// Returns when the load drivers were all running.
    pub(crate) fn wait_ready(&mut self, timeout: Duration) -> Result<Instant, String> {
        for t in LOAD_TARGETS {
            self.wait(t.driver(), timeout, running)?;
        }
        let load_running = Instant::now();
        for k in INIT_KINDS {
            self.wait(&init_driver(k), timeout, |s| s.state.name() == "quarantined")?;
        }
        Ok(load_running)
    }

    /// Driver restarts and hang verdicts of this lifetime, from its status
    /// and metrics.
    fn lifetime_counts(&self) -> (BTreeMap<String, u32>, HangVerdicts) {
        let restarts = self.status().unwrap_or_default().into_iter().map(|s| (s.name, s.restarts)).collect();
        let verdicts = match self.control(&ControlRequest::Metrics) {
            Ok(ControlResponse::Metrics(text)) => HangVerdicts::from_metrics(&text),
            _ => HangVerdicts::default(),
        };
        (restarts, verdicts)
    }

    /// Restarts and hang verdicts over every lifetime so far.
    pub(crate) fn total_counts(&self) -> (BTreeMap<String, u32>, HangVerdicts) {
        let (mut restarts, mut verdicts) = self.lifetime_counts();
        for (k, v) in &self.past_restarts {
            *restarts.entry(k.clone()).or_default() += v;
        }
        verdicts.starved += self.past_verdicts.starved;
        verdicts.hung += self.past_verdicts.hung;
        (restarts, verdicts)
    }

    /// SIGKILLs the supervisor, reaps it, and starts the next one on the
    /// same config and runtime directory at once. Returns the moment of
    /// the kill and the moment the new one was spawned.
    pub(crate) fn kill_and_restart(&mut self) -> Result<(Instant, Instant), String> {
        self.alive()?;
        let (restarts, verdicts) = self.lifetime_counts();
        for (k, v) in restarts {
            *self.past_restarts.entry(k).or_default() += v;
        }
        self.past_verdicts.starved += verdicts.starved;
        self.past_verdicts.hung += verdicts.hung;
        let pid = self.child.id();
        let t0 = Instant::now();
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).map_err(|e| format!("SIGKILL supervisor {pid}: {e}"))?;
        match self.child.wait() {
            Ok(st) if st.signal() == Some(Signal::SIGKILL as i32) => {}
            Ok(st) => return Err(format!("the supervisor (pid {pid}) ended {st} before the SIGKILL; {}", self.tail())),
            Err(e) => return Err(format!("waitpid on the supervisor {pid}: {e}")),
        }
        self.kills += 1;
        self.child = spawn_supervisor(&self.exe, &self.config, &self.runtime, &self.log)?;
        Ok((t0, Instant::now()))
    }

    /// One control request over the kept connection; a broken one (the
    /// supervisor was restarted) is reopened once. A timeout is not retried:
    /// the supervisor is there and does not answer, and a second wait would
    /// only double it.
    fn ask(&self, req: &ControlRequest) -> Result<ControlResponse, reinc_client::ClientError> {
        let mut conn = self.control.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = conn.as_mut() {
            match c.request(req) {
                Ok(r) => return Ok(r),
                Err(e @ reinc_client::ClientError::Timeout { .. }) => {
                    *conn = None;
                    return Err(e);
                }
                Err(_) => {}
            }
        }
        *conn = None;
        let mut c = ControlConn::connect(&control_socket(&self.runtime), CONTROL_TIMEOUT)?;
        let r = c.request(req)?;
        *conn = Some(c);
        Ok(r)
    }

    pub(crate) fn status(&self) -> Result<Vec<DriverStatus>, String> {
        match self.ask(&ControlRequest::Status) {
            Ok(ControlResponse::Status(rows)) => Ok(rows),
            Ok(other) => Err(format!("unexpected status answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
    pub(crate) fn driver(&self, name: &str) -> Result<DriverStatus, String> {
        self.status()?.into_iter().find(|r| r.name == name).ok_or_else(|| format!("no driver {name}"))
    }
    pub(crate) fn control(&self, req: &ControlRequest) -> Result<ControlResponse, String> {
        self.ask(req).map_err(|e| e.to_string())
    }
    pub(crate) fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(st)) => Err(format!("the supervisor (pid {}) exited: {st}; {}", self.child.id(), self.tail())),
            Err(e) => Err(format!("waitpid on the supervisor: {e}")),
        }
    }
    pub(crate) fn tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!("log {}:\n{}", self.log.display(), lines[lines.len().saturating_sub(12)..].join("\n"))
    }
    /// Waits until `name` satisfies `f`; the supervisor must stay alive.
    pub(crate) fn wait(
        &mut self,
        name: &str,
        timeout: Duration,
        f: impl Fn(&DriverStatus) -> bool,
    ) -> Result<DriverStatus, String> {
        let started = Instant::now();
        let mut deadline = started + timeout;
        let mut slow = None;
        // The instance's kernel stack, once it was seen held in the kernel.
        let mut held: Option<String> = None;
        loop {
            self.alive()?;
            let (last, pid) = match self.driver(name) {
                Ok(s) if f(&s) => {
                    if let Some(at) = slow {
                        eprintln!(
                            "campaign: {}: {name} met its condition after {:.1} s, {:.1} s after the slow report: \
                             the stall ended on its own",
                            self.runtime.display(),
                            started.elapsed().as_secs_f64(),
                            Instant::now().saturating_duration_since(at).as_secs_f64()
                        );
                    }
                    if let Some(stack) = held {
                        let seconds = started.elapsed().as_secs_f64();
                        self.stalls.push(KernelStall { fault_index: self.fault_index, seconds, stack });
                    }
                    return Ok(s);
                }
                Ok(s) => (format!("{s:?}"), s.pid),
                Err(e) => (e, None),
            };
            if slow.is_none() && started.elapsed() > SLOW {
                // While it is still stuck: where the instance is, and every
                // task blocked in the kernel (the holder of what it waits
                // for may be one), with kernel stacks.
                slow = Some(Instant::now());
                held = pid.and_then(held_in_kernel);
                let procs = pid.map_or_else(String::new, |p| format!("{name} {}; ", where_is(p)));
                eprintln!(
                    "campaign: {}: {name} slow, condition not met in {SLOW:?}; last status {last}; {procs}\
                     blocked tasks: [{}]",
                    self.runtime.display(),
                    blocked_tasks().join("; ")
                );
            }
            if Instant::now() > deadline {
                // An instance the kernel holds in uninterruptible sleep
                // cannot die, SIGKILL or not, and the supervisor rightly
                // waits for its death: wait on (bounded), and count it.
                let in_kernel = pid.and_then(held_in_kernel);
                if let Some(stack) = in_kernel
                    && started.elapsed() < KERNEL_STALL_LIMIT
                {
                    held.get_or_insert(stack);
                    deadline += timeout;
                    continue;
                }
                // Where the instance and the supervisor are, from outside:
                // a zombie not reaped, a task stuck in the kernel, or running.
                let procs = pid.map_or_else(String::new, |p| format!("{name} {}; ", where_is(p)));
                return Err(format!(
                    "{name}: condition not met in {:?}; last status {last}; {procs}supervisor {}; \
                     blocked tasks: [{}]; {}",
                    started.elapsed(),
                    where_is(self.child.id()),
                    blocked_tasks().join("; "),
                    self.tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Sup {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `reinc-nbd` on the lane's storage driver; killed on drop.
#[derive(Debug)]
struct NbdFront {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl NbdFront {
    /// Starts it on `socket` and waits for its URI line (it listens then).
    fn start(exe: &Path, runtime: &Path, socket: &Path, log: &Path) -> Result<Self, String> {
        use std::io::BufRead;
        let err = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Command::new(exe)
            .arg("--runtime-dir")
            .arg(runtime)
            .arg("--socket")
            .arg(socket)
            .args(["--window", "8"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e}", exe.display()))?;
        let mut line = String::new();
        let out = child.stdout.take().ok_or("reinc-nbd has no stdout")?;
        std::io::BufReader::new(out).read_line(&mut line).map_err(|e| format!("reinc-nbd stdout: {e}"))?;
        let front = Self { child, socket: socket.to_owned(), log: log.to_owned() };
        if !line.starts_with("nbd+unix://") {
            return Err(format!("reinc-nbd did not come up: {line:?}; log {}", log.display()));
        }
        Ok(front)
    }
}

impl Drop for NbdFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn running(s: &DriverStatus) -> bool {
    s.state.name() == "running"
}

pub(crate) const INIT_KINDS: [CrashKind; 6] = crate::schedule::KINDS;

pub(crate) fn init_driver(kind: CrashKind) -> String {
    format!("init_{}", kind.name())
}

/// The lane's drivers. With `standby`, the journaled load drivers (storage,
/// net, misbehave) keep a hot standby, so a crash promotes a waiting
/// instance instead of spawning one (which lanes: [`Options::standby`]).
/// The bench driver never does: its
/// exec-fails fault counts failing launches up to its quarantine, which a
/// promotion would skip.
pub(crate) fn specs(bins: &Bins, dir: &Path, bench_copy: &Path, standby: bool) -> Vec<DriverSpec> {
    // Every driver: fast heartbeats, immediate restarts, no quarantine for
    // the main drivers: the supervisor's config floor allows at most 64
    // restarts a second, and the campaign's faults (about 50 a second over
    // all drivers) stay below 64 restarts of one driver within 1 s; `over`
    // replaces a default.
    let fast = |mut s: DriverSpec, over: &[(&str, String)]| {
        let defaults: [(&str, String); 11] = [
            ("heartbeat-interval-ms", "20".into()),
            ("heartbeat-misses", "3".into()),
            ("backoff-base-ms", "0".into()),
            ("backoff-cap-ms", "0".into()),
            ("jitter-percent", "0".into()),
            ("healthy-after-ms", "1".into()),
            ("max-restarts", "64".into()),
            ("restart-window-ms", "1000".into()),
            ("init-timeout-ms", "2000".into()),
            ("shutdown-timeout-ms", "500".into()),
            ("window", "8".into()),
        ];
        for (k, v) in defaults.iter().chain(over.iter().filter(|(k, _)| !defaults.iter().any(|(d, _)| d == k))) {
            let v = over.iter().find(|(o, _)| o == k).map_or(v, |(_, x)| x);
            s = s.set(k, v);
        }
        s
    };
    let p = |x: &Path| x.to_string_lossy().into_owned();
    // Durability, per driver, for the supervisor-kill faults: a driver whose
    // client checks exactly-once against a model is journaled, so what its
    // clients were told, its accepted requests and its committed state
    // survive the supervisor; the bench driver stays in memory (see below).
    let journal = || ("durability", "\"journal\"".to_owned());
    let standby = || ("standby", standby.to_string());
    let mut v = vec![
        fast(
            DriverSpec::new("storage_driver", &bins.storage_driver).args(&[
                "--file",
                &p(&dir.join("disk.img")),
                "--blocks",
                &DISK_BLOCKS.to_string(),
            ]),
            &[
                ("exec-log", format!("{:?}", p(&dir.join("storage.exec.log")))),
                ("poison-after", "1000".into()),
                journal(),
                standby(),
            ],
        ),
        fast(
            DriverSpec::new("net_driver", &bins.net_driver).args(&[
                "--file",
                &p(&dir.join("net.img")),
                "--slots",
                &NET_SLOTS.to_string(),
            ]),
            &[
                ("exec-log", format!("{:?}", p(&dir.join("net.exec.log")))),
                ("poison-after", "1000".into()),
                journal(),
                standby(),
            ],
        ),
        // A spawn failure is retried with a backoff, not in a tight loop;
        // up to 200 ms, so the 64 restarts that quarantine it take ~12 s of
        // failing launches (an injector starved by a loaded host restores
        // the x bit long before).
        //
        // `durability = "memory"`, the default, on purpose: the lane's one
        // memory driver. Its sessions are journaled (other drivers
        // journal), so after a supervisor kill its client resumes without
        // an error, and the new supervisor, which never heard of the
        // calls that were in flight to it, runs them (again, perhaps):
        // what memory durability promises, nothing across the
        // supervisor's own crash. Its null commits have no effect to
        // count, so its client checks every reply and no count.
        fast(
            DriverSpec::new("bench_driver", bench_copy),
            &[("backoff-base-ms", "2".into()), ("backoff-cap-ms", "200".into()), ("poison-after", "1000".into())],
        ),
        fast(
            DriverSpec::new("misbehave_driver", &bins.misbehave_driver).args(&["--markers", &p(&dir.join("markers"))]),
            // It speaks the driver protocol by hand, without reinc-runtime,
            // so it does not sandbox itself (and must not be killed for that).
            // Journaled: its client checks that the counter rises by one per
            // answer, which a new supervisor must continue, not restart.
            &[("poison-after", "3".into()), ("sandbox", "false".into()), journal(), standby()],
        ),
    ];
    for kind in INIT_KINDS {
        v.push(fast(
            DriverSpec::new(init_driver(kind), &bins.bench_driver),
            &[
                ("fault", format!("\"init:1:{}\"", kind.name())),
                ("max-restarts", "2".into()),
                ("restart-window-ms", "600000".into()),
                ("init-timeout-ms", "100".into()),
            ],
        ));
    }
    v
}

/// Where a lane's supervisor keeps its state (the journal): on tmpfs
/// (`/dev/shm`) when there is one, else in the lane's directory.
///
/// The campaign's faults are process faults: the page cache outlives every
/// one of them, the supervisor's SIGKILL included, so an `fdatasync` adds
/// nothing it could observe, while on a disk it would cap the journal
/// drivers (one request in doubt each, an `fdatasync` per batch) at a few
/// hundred requests a second, a twentieth of the load the other faults run
/// under. The journal's writer thread, group commit and the answers held
/// for it are the same code either way. Power loss is not a campaign fault
/// (`cargo xtask bench` measures the journal on the disk).
fn state_dir(dir: &Path, lane: usize) -> PathBuf {
    let shm = Path::new("/dev/shm");
    match (shm.is_dir(), dir.parent().and_then(Path::file_name)) {
        (true, Some(run)) => shm.join(format!("{}-lane{lane}-state", run.to_string_lossy())),
        _ => dir.join("state"),
    }
}

/// Runs lane `lane` of a campaign: its supervisor, load and faults; returns
/// what it measured and when its fault phase started and ended.
pub(crate) fn run_lane(
    bins: &Bins,
    opts: &Options,
    lane: usize,
    lanes: &Lanes,
) -> Result<(RunResult, Instant, Instant), CampaignError> {
    let dir = &opts.work.join(format!("lane{lane}"));
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| CampaignError::io(dir.display(), e))?;
    let bench_copy = dir.join("bench-driver-exec");
    std::fs::copy(&bins.bench_driver, &bench_copy).map_err(|e| CampaignError::io(bench_copy.display(), e))?;
    let config = dir.join("supervisor.toml");
    let state = state_dir(dir, lane);
    let _ = std::fs::remove_dir_all(&state);
    std::fs::write(&config, config_text(&state, &specs(bins, dir, &bench_copy, opts.standby.lane(lane))))
        .map_err(|e| CampaignError::io(config.display(), e))?;
    let log = dir.join("supervisor.log");
    let runtime = dir.join("run");
    let mut sup = Sup::start(&bins.supervisor, &config, &runtime, &log).map_err(CampaignError::Setup)?;
    sup.wait_ready(Duration::from_secs(20)).map_err(CampaignError::Setup)?;

    let shared = Arc::new(Shared::default());
    let t_start = lanes.epoch;
    let (mis_tx, mis_rx) = mpsc::channel::<load::misbehave::MisOrder>();
    let spawn_storage = |i: u64| {
        let (s, rt) = (shared.clone(), runtime.clone());
        std::thread::spawn(move || load::storage::storage_load(&s, &rt, i * RANGE, opts_seed(i)))
    };
    pub(crate) fn opts_seed(i: u64) -> u64 {
        0x5107_A6E0 + i
    }
    let storage_threads = [spawn_storage(0), spawn_storage(1)];
    let net_thread = {
        let (s, rt) = (shared.clone(), runtime.clone());
        std::thread::spawn(move || load::net::net_load(&s, &rt))
    };
    let bench_thread = {
        let (s, rt) = (shared.clone(), runtime.clone());
        std::thread::spawn(move || load::bench::bench_load(&s, &rt))
    };
    let mis_thread = {
        let (s, rt) = (shared.clone(), runtime.clone());
        std::thread::spawn(move || load::misbehave::misbehave_load(&s, &rt, &mis_rx))
    };
    let mut front = NbdFront::start(&bins.nbd, &runtime, &dir.join("nbd.sock"), &dir.join("nbd.log"))
        .map_err(CampaignError::Setup)?;
    let nbd_thread = {
        let (s, sock) = (shared.clone(), front.socket.clone());
        std::thread::spawn(move || load::nbd::nbd_load(&s, &sock, 0x0DB0_5EED ^ opts_seed(lane as u64)))
    };
    let blk_thread = {
        let (s, rt, d, drvctl) = (shared.clone(), runtime.clone(), dir.clone(), bins.drvctl.clone());
        std::thread::spawn(move || load::blk::blk_load(&s, &drvctl, &rt, &d))
    };
    let sampler = {
        let s = shared.clone();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let (mut last_t, mut last_n) = (Instant::now(), 0u64);
            while !s.stopped() {
                std::thread::sleep(Duration::from_millis(250));
                let (now, n) = (Instant::now(), s.completions.load(Ordering::Relaxed));
                let dt = (now - last_t).as_secs_f64();
                v.push(((now - t_start).as_secs_f64(), (n - last_n) as f64 / dt));
                (last_t, last_n) = (now, n);
            }
            v
        })
    };

    let n_lanes = opts.lanes.max(1);
    let keep = |f: &Fault| opts.supervisor_kills || !matches!(f, Fault::SupervisorKill { .. });
    let schedule: Vec<(usize, Fault)> = crate::schedule::schedule_where(opts.seed, opts.faults, keep)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % n_lanes == lane)
        .collect();
    let mut inj = Injector {
        sup: &mut sup,
        shared: &shared,
        mis: mis_tx,
        client: None,
        storage_tail: ExecTail::new(dir.join("storage.exec.log")),
        net_tail: ExecTail::new(dir.join("net.exec.log")),
        bench_copy: &bench_copy,
        disk: dir.join("disk.img"),
        victim_version: 0,
        t_start,
    };
    let mut records = Vec::with_capacity(schedule.len());
    let t_faults = Instant::now();
    let mut last_progress = Instant::now();
    for &(i, ref fault) in &schedule {
        if shared.stopped() || lanes.stop.load(Ordering::SeqCst) {
            break;
        }
        shared.fault_index.store(i, Ordering::SeqCst);
        match inj.apply(i, fault) {
            Ok(r) => records.push(r),
            Err(what) => {
                shared.fail(format!("fault #{i} {fault:?}: {what}"));
                break;
            }
        }
        let done = lanes.done.fetch_add(1, Ordering::Relaxed) + 1;
        if lane == 0 && last_progress.elapsed() > Duration::from_secs(10) {
            last_progress = Instant::now();
            let rate = done as f64 / t_faults.elapsed().as_secs_f64();
            eprintln!("campaign: {done} of {} faults ({rate:.0}/s)", opts.faults);
        }
    }
    if shared.stopped() {
        lanes.stop.store(true, Ordering::SeqCst);
    }
    let t_end = Instant::now();
    let fault_seconds = (t_end - t_faults).as_secs_f64();
    let violation_during = shared.violation.lock().ok().and_then(|v| v.clone());
    shared.stop.store(true, Ordering::SeqCst);
    drop(inj);

    let join_err = |what: &str| CampaignError::Setup(format!("the {what} thread panicked"));
    let storage: Vec<load::storage::StorageOut> = storage_threads
        .into_iter()
        .map(|t| t.join().map_err(|_| join_err("storage client")))
        .collect::<Result<_, _>>()?;
    let net = net_thread.join().map_err(|_| join_err("net client"))?;
    let bench = bench_thread.join().map_err(|_| join_err("bench client"))?;
    let mis = mis_thread.join().map_err(|_| join_err("misbehave client"))?;
    let blk_rounds = blk_thread.join().map_err(|_| join_err("drvctl blk"))?;
    let nbd = nbd_thread.join().map_err(|_| join_err("NBD client"))?;
    // The front end must have lived through every fault, supervisor kills
    // included (it resumes its sessions).
    if let Ok(Some(st)) = front.child.try_wait() {
        shared.fail(format!("reinc-nbd exited during the run: {st}; log {}", front.log.display()));
    }
    drop(front);
    let throughput = sampler.join().map_err(|_| join_err("sampler"))?;

    let mut answered = BTreeMap::new();
    answered.insert("storage_driver".into(), storage.iter().map(|s| s.answered).sum());
    answered.insert("net_driver".into(), net.answered);
    answered.insert("bench_driver".into(), bench);
    answered.insert("misbehave_driver".into(), mis);
    let (restarts, hang_verdicts) = sup.total_counts();

    let mut checks = Vec::new();
    let mut violation = shared.violation.lock().ok().and_then(|v| v.clone()).or(violation_during);
    if violation.is_none() {
        let fault_index = records.len();
        if let Err(what) = final_checks(&mut sup, dir, &storage, &net, &nbd, &mut checks) {
            violation = Some(Violation { fault_index, what });
        }
    }
    // The supervisor must still be alive, and stop cleanly.
    let supervisor_exit = match sup.alive() {
        Err(e) => {
            violation.get_or_insert(Violation { fault_index: records.len(), what: e.clone() });
            e
        }
        Ok(()) => {
            let _ = kill(Pid::from_raw(sup.child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match sup.child.try_wait() {
                    Ok(Some(st)) if st.success() => break format!("alive throughout; SIGTERM at the end: {st}"),
                    Ok(Some(st)) => {
                        let e = format!("the supervisor ended badly after SIGTERM: {st}");
                        violation.get_or_insert(Violation { fault_index: records.len(), what: e.clone() });
                        break e;
                    }
                    _ if Instant::now() > deadline => {
                        let e = "the supervisor ignored SIGTERM for 15 s".to_owned();
                        violation.get_or_insert(Violation { fault_index: records.len(), what: e.clone() });
                        break e;
                    }
                    _ => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    };
    if violation.is_none() {
        checks.push(format!("ok  supervisor       {supervisor_exit}"));
    }
    match violation.as_mut() {
        None => {
            let _ = std::fs::remove_dir_all(&state);
        }
        Some(v) => {
            v.what.push_str(&format!(" (the supervisor's state, with its journal, is kept in {})", state.display()))
        }
    }
    let refused = shared.blk_refused_at_connect.load(Ordering::Relaxed);
    if violation.is_none() && refused > 0 {
        checks.push(format!(
            "ok  definite       {refused} drvctl blk runs refused at connect while a supervisor was being replaced (nothing submitted), started again"
        ));
    }
    let quarantined = shared.bench_quarantined.load(Ordering::Relaxed);
    if violation.is_none() && quarantined > 0 {
        checks.push(format!(
            "ok  definite       {quarantined} bench calls answered DriverFailed while an exec-fails fault quarantined it"
        ));
    }
    Ok((
        RunResult {
            seed: opts.seed,
            planned: opts.faults,
            records,
            throughput,
            fault_seconds,
            answered,
            blk_rounds,
            checks,
            violation,
            supervisor_exit,
            restarts,
            hang_verdicts,
            lanes: 1,
            supervisor_kills: sup.kills,
            standby: opts.standby,
            kills_scheduled: opts.supervisor_kills,
            nbd_requests: nbd.requests,
            kernel_stalls: std::mem::take(&mut sup.stalls),
        },
        t_faults,
        t_end,
    ))
}

pub(crate) fn exec_entries(path: &Path) -> Vec<(u32, u64, u64)> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(parse_exec_line).collect()
}

/// After the load stopped: the device equals the model, every effectful
/// request executed exactly once.
pub(crate) fn final_checks(
    sup: &mut Sup,
    dir: &Path,
    storage: &[load::storage::StorageOut],
    net: &load::net::NetOut,
    nbd: &load::nbd::NbdOut,
    checks: &mut Vec<String>,
) -> Result<(), String> {
    for t in [Target::Storage, Target::Net] {
        sup.wait(t.driver(), FAULT_TIMEOUT, running)?;
    }
    // Exactly once, by the exec logs.
    for (name, log, sessions) in [
        ("storage_driver", "storage.exec.log", storage.iter().map(|s| (s.session, &s.writes)).collect::<Vec<_>>()),
        ("net_driver", "net.exec.log", vec![(net.session, &net.sends)]),
    ] {
        let entries = exec_entries(&dir.join(log));
        let mut seen: HashMap<(u64, u64), u32> = HashMap::new();
        for (g, c, s) in &entries {
            if let Some(g0) = seen.insert((*c, *s), *g) {
                return Err(format!("{name}: request c{c}:{s} executed twice (generations {g0} and {g})"));
            }
        }
        let mut answered = 0;
        for (session, effectful) in sessions {
            let logged: BTreeSet<u64> = seen.keys().filter(|(c, _)| *c == session).map(|(_, s)| *s).collect();
            if &logged != effectful {
                let lost: Vec<_> = effectful.difference(&logged).take(5).collect();
                let extra: Vec<_> = logged.difference(effectful).take(5).collect();
                return Err(format!(
                    "{name}: session c{session}: {} answered, {} executed (answered, not executed: {lost:?}; executed, not answered: {extra:?})",
                    effectful.len(),
                    logged.len()
                ));
            }
            answered += effectful.len();
        }
        checks.push(format!(
            "ok  exactly once    {name}: {} executions in the exec log, no request twice; the {answered} the model clients sent all once",
            seen.len()
        ));
        if name == "storage_driver" {
            let bytes = std::fs::read(dir.join("disk.img")).map_err(|e| format!("disk.img: {e}"))?;
            let sb = storage_core::Superblock::decode(&bytes[..BLOCK_SIZE])
                .map_err(|e| format!("disk.img superblock: {e:?}"))?
                .ok_or("disk.img has no superblock")?;
            // Bit-flip victims are rewritten by the injector: those writes are in the log too.
            if sb.applied_count != seen.len() as u64 {
                return Err(format!(
                    "storage superblock applied_count {} != {} distinct executions in the exec log",
                    sb.applied_count,
                    seen.len()
                ));
            }
            checks.push(format!("ok  applied_count   superblock says {}, equal to the exec log", sb.applied_count));
        }
    }
    // The device equals the model: read back through the supervisor and from the file.
    let mut client = Client::connect(&client_socket(&sup.runtime)).map_err(|e| format!("final read client: {e}"))?;
    let bytes = std::fs::read(dir.join("disk.img")).map_err(|e| format!("disk.img: {e}"))?;
    let mut blocks = 0;
    let mut ranges: Vec<(u64, u64, &BTreeMap<u64, u32>)> =
        storage.iter().enumerate().map(|(i, s)| (i as u64 * RANGE, RANGE, &s.model)).collect();
    ranges.push((load::NBD_LBA, load::NBD_BLOCKS, &nbd.model));
    for (first, count, model) in ranges {
        for lba in first..first + count {
            let want = model.get(&lba).map_or_else(|| vec![0; BLOCK_SIZE], |v| block_data(lba, *v));
            let got = client
                .call("storage_driver", &blocksum::read_body(lba, 1))
                .map_err(|e| format!("final read of block {lba}: {e}"))?
                .map_err(|e| format!("final read of block {lba}: {e:?}"))?;
            match blocksum::check_read("storage_driver", lba, 1, &got) {
                Ok(d) if d == want.as_slice() => {}
                other => return Err(format!("block {lba} read back differs from the model: {other:?}")),
            }
            let off = (lba as usize + 1) * BLOCK_SIZE;
            if bytes.get(off..off + BLOCK_SIZE) != Some(want.as_slice()) {
                return Err(format!("block {lba} in disk.img differs from the model"));
            }
            blocks += 1;
        }
    }
    checks.push(format!(
        "ok  device = model  {blocks} blocks read back through the supervisor and from disk.img, all equal to the model"
    ));
    Ok(())
}

/// A process as `/proc` shows it: its state letter (`Z` for a zombie not
/// reaped, `D` for uninterruptible sleep, `T` stopped), the kernel function
/// it sleeps in, and its threads' states; or that it is gone.
fn where_is(pid: u32) -> String {
    let Some(state) = state_of(pid) else {
        return format!("pid {pid}: gone");
    };
    let wchan = reinc_procfs::wchan(pid).unwrap_or_default();
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|t| {
                    let tid = t.file_name().to_string_lossy().into_owned();
                    let s = state_of(tid.parse().ok()?)?;
                    let w = std::fs::read_to_string(t.path().join("wchan")).unwrap_or_default();
                    // A task in the kernel: where, as its kernel stack says.
                    // and the system call it is in (number, arguments).
                    let stack = if s == 'D' {
                        let call = std::fs::read_to_string(t.path().join("syscall")).unwrap_or_default();
                        format!(":[{}]:syscall [{}]", kernel_stack(&t.path()), call.trim())
                    } else {
                        String::new()
                    };
                    Some(format!("{tid}:{s}:{w}{stack}"))
                })
                .collect()
        })
        .unwrap_or_default();
    // Which signals wait for it and which it blocks: a SIGCHLD pending
    // while a zombie child waits tells a lost wake-up from a lost signal.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let masks: Vec<String> = status
        .lines()
        .filter(|l| ["SigPnd:", "ShdPnd:", "SigBlk:"].iter().any(|k| l.starts_with(k)))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let children = children_of(pid);
    // What it has open, so that a system call's descriptor argument names a file.
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let target = std::fs::read_link(e.path()).ok()?;
                    Some(format!("{}={}", e.file_name().to_string_lossy(), target.display()))
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "pid {pid}: state {state}, wchan {wchan:?}, threads [{}], {}, children [{}], fds [{}]",
        threads.join(" "),
        masks.join(" "),
        children.join(" "),
        fds.join(" ")
    )
}

/// The kernel stack of `pid` if it is in uninterruptible sleep (`D`),
/// where a pending SIGKILL cannot end it; `None` otherwise.
fn held_in_kernel(pid: u32) -> Option<String> {
    (state_of(pid)? == 'D').then(|| kernel_stack(Path::new(&format!("/proc/{pid}"))))
}

/// The function names of a task's kernel stack (`/proc/…/stack`, root
/// only), innermost first; empty where the kernel does not show it.
fn kernel_stack(task: &Path) -> String {
    let text = std::fs::read_to_string(task.join("stack")).unwrap_or_default();
    let frames: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|f| f.split('+').next().unwrap_or(f))
        .take(12)
        .collect();
    frames.join("<")
}

/// Every task of the machine in uninterruptible sleep (`D`), with its
/// command and kernel stack: whoever holds what a stuck task waits for is
/// often among them.
fn blocked_tasks() -> Vec<String> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return out };
    // Numeric entries only: `self` and `thread-self` would list this
    // process's tasks a second time.
    for p in procs.flatten().filter(|p| p.file_name().to_string_lossy().parse::<u32>().is_ok()) {
        let Ok(tasks) = std::fs::read_dir(p.path().join("task")) else { continue };
        for t in tasks.flatten() {
            let tid = t.file_name().to_string_lossy().parse().ok();
            if tid.and_then(state_of) != Some('D') {
                continue;
            }
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            out.push(format!(
                "{}/{} {}: {}",
                p.file_name().to_string_lossy(),
                t.file_name().to_string_lossy(),
                comm.trim(),
                kernel_stack(&t.path())
            ));
        }
    }
    out
}

/// `pid`'s children with their state letters (`1234:Z` for a zombie not
/// reaped yet), from every thread's `children` list.
fn children_of(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for child in list.split_whitespace() {
            let state = child.parse().ok().and_then(state_of);
            out.push(state.map_or_else(|| format!("{child}:gone"), |c| format!("{child}:{c}")));
        }
    }
    out
}

/// The state letter of process or thread `id` (`/proc/<id>/stat`, which
/// the kernel also answers for a thread id), as `reinc_procfs` reads it.
fn state_of(id: u32) -> Option<char> {
    reinc_procfs::stat(id).map(|s| s.state)
}

#[cfg(test)]
mod tests {
    use super::{blocked_tasks, kernel_stack, where_is};

    #[test]
    fn a_kernel_stack_is_function_names_only() {
        // This thread, reading its own stack, is in the kernel's reader of it.
        let me = std::path::PathBuf::from(format!("/proc/self/task/{}", nix::unistd::gettid()));
        let stack = kernel_stack(&me);
        // Empty where the kernel hides stacks (not root, no CONFIG_STACKTRACE).
        if !stack.is_empty() {
            assert!(stack.contains("proc_pid_stack"), "{stack}");
            assert!(!stack.contains('+') && !stack.contains("0x"), "{stack}");
        }
        // No task of this test is blocked; others may be, each named as
        // `pid/tid comm: stack` with numeric ids.
        for t in blocked_tasks() {
            let ids = t.split_whitespace().next().unwrap_or_default();
            let (pid, tid) = ids.split_once('/').unwrap_or_default();
            assert!(pid.parse::<u32>().is_ok() && tid.parse::<u32>().is_ok(), "{t}");
        }
    }

    #[test]
    fn where_is_names_the_state_of_a_live_process_and_a_gone_one() {
        let me = where_is(std::process::id());
        assert!(me.contains("state R") || me.contains("state S"), "{me}");
        assert!(me.contains("threads ["), "{me}");
        assert!(me.contains("SigBlk: "), "{me}");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited, not reaped yet: a zombie (waited for, not slept for, so
        // that a loaded machine cannot make it fail).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !where_is(pid).contains("state Z") && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(where_is(pid).contains("state Z"), "{}", where_is(pid));
        // The parent's view names it too, as a zombie.
        let mine = where_is(std::process::id());
        assert!(mine.contains(&format!("{pid}:Z")), "{mine}");
        child.wait().unwrap();
        assert_eq!(where_is(pid), format!("pid {pid}: gone"));
    }
}
