//! Cross-crate integration and fault-injection tests, grouped by behaviour.
//!
//! # Why this crate exists
//! The supervisor core is tested without processes in its own crate. What
//! only real processes can show lives here: a driver really dies by SIGSEGV,
//! SIGKILL, SIGABRT, panic, `exit(1)` or a hang and comes back with a new pid
//! and generation; replay across a real crash executes every write exactly
//! once on a real file; a storm really does not spin the CPU; a supervisor
//! killed with SIGKILL really leaves no driver behind. Tests are grouped by
//! behaviour: `tests/restart.rs`, `replay.rs`, `checkpoint.rs`, `storm.rs`,
//! `bad_input.rs`, `chaos.rs`, `sockets.rs`, `backpressure.rs`; the NBD
//! front end in `nbd_clients.rs` (real host clients), `nbd_bad_input.rs` and
//! `nbd_frontend_death.rs`, with their rig in [`nbd`]; and for the
//! supervisor's own crash `supervisor_restart.rs` (ids and cursors across
//! lifetimes, reconnects), `journal.rs` and `supervisor_crash.rs` (50
//! SIGKILLs under load).
//!
//! This library is the shared rig: it finds (or builds) the `supervisor`,
//! `drvctl` and `storage_driver` executables, writes a config into a private
//! temporary directory, runs the supervisor with its log captured, and offers
//! typed helpers for storage requests, the exec log and the superblock.
//!
//! # Finding the executables
//! A test cannot use `CARGO_BIN_EXE_*` of other packages, so the binaries are
//! looked up next to the test executable (`target/<profile>/`). If one is
//! missing or older than the sources it is built from, they are built once
//! per test process into a separate target directory (`target/reinc-tests`):
//! the outer `cargo test` holds the lock of its own target directory while
//! tests run, so building there would wait forever. `cargo xtask test` runs
//! `cargo build --workspace --bins` first, so normally nothing is rebuilt.
//!
//! # Designs rejected
//! - Running the daemon in-process: SIGKILL of the supervisor, its CPU time
//!   and its exit status are part of what is tested.
//! - Fixed sleeps: every wait polls a condition with a deadline, so the tests
//!   are as fast as the machine allows and fail with a message, not a hang.
#![forbid(unsafe_code)]

pub mod nbd;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reinc_client::control::{ControlRequest, ControlResponse, DriverStatus};
use reinc_client::{Client, control_request, control_socket};
use reinc_proto::{ClientId, RequestId};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};
use storage_core::{BLOCK_SIZE, StorageError, StorageReply, StorageRequest, Superblock};

/// Paths of the executables under test.
#[derive(Debug)]
pub struct Bins {
    /// The daemon.
    pub supervisor: PathBuf,
    /// The CLI.
    pub drvctl: PathBuf,
    /// The file-backed storage driver.
    pub storage_driver: PathBuf,
    /// The NBD front end.
    pub nbd: PathBuf,
}

const BIN_NAMES: [&str; 4] = ["supervisor", "drvctl", "storage_driver", "reinc-nbd"];
const SOURCE_DIRS: [&str; 11] = [
    "core-nostd/proto",
    "core-nostd/policy",
    "core-nostd/queue",
    "core-nostd/storage",
    "core-nostd/ringbuf",
    "host-supervisor/supervisor",
    "host-supervisor/client",
    "host-supervisor/runtime",
    "host-supervisor/sandbox",
    "host-supervisor/storage_driver",
    "host-supervisor/nbd",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

fn newest_source(dir: &Path, newest: &mut SystemTime) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            newest_source(&p, newest);
        } else if p.extension().is_some_and(|x| x == "rs" || x == "toml")
            && let Ok(m) = e.metadata().and_then(|m| m.modified())
        {
            *newest = (*newest).max(m);
        }
    }
}

fn fresh(dir: &Path, sources: SystemTime) -> bool {
    BIN_NAMES.iter().all(|b| fs::metadata(dir.join(b)).and_then(|m| m.modified()).is_ok_and(|t| t >= sources))
}

/// The executables, built if needed (once per test process).
///
/// # Panics
/// If they cannot be found or built.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/<test> -> target/<profile>
        let profile_dir = exe.parent().and_then(Path::parent).expect("target layout").to_path_buf();
        let root = workspace_root();
        let mut sources = SystemTime::UNIX_EPOCH;
        for d in SOURCE_DIRS {
            newest_source(&root.join(d), &mut sources);
        }
        let dir = if fresh(&profile_dir, sources) {
            profile_dir
        } else {
            let target = profile_dir.parent().expect("target dir").join("reinc-tests");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            eprintln!("reinc-tests: building supervisor, drvctl, storage_driver, reinc-nbd into {}", target.display());
            let status = Command::new(cargo)
                .current_dir(&root)
                .args(["build", "--quiet", "--bins", "-p", "reinc-supervisor", "-p", "reinc-client", "-p"])
                .args(["storage_driver", "-p", "reinc-nbd"])
                .arg("--target-dir")
                .arg(&target)
                .status()
                .expect("run cargo build");
            assert!(status.success(), "cargo build of the test binaries failed");
            target.join("debug")
        };
        Bins {
            supervisor: dir.join("supervisor"),
            drvctl: dir.join("drvctl"),
            storage_driver: dir.join("storage_driver"),
            nbd: dir.join("reinc-nbd"),
        }
    })
}

/// Polls `f` every 10 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `cmd` (a supervisor expected to stop by itself, e.g. refusing its
/// state) with stdin and stdout closed; returns (exit code, stderr). A
/// process still running after 10 s is killed and reported as `None`.
pub fn run_to_exit(mut cmd: Command) -> (Option<i32>, String) {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let status = wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten());
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    (status.and_then(|s| s.code()), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The default driver settings of a rig: fast heartbeats and small backoffs
/// so that tests run quickly, jitter off so delays are exact.
pub const DEFAULTS: [(&str, &str); 11] = [
    ("heartbeat-interval-ms", "100"),
    ("heartbeat-misses", "3"),
    ("backoff-base-ms", "5"),
    ("backoff-cap-ms", "40"),
    ("jitter-percent", "0"),
    ("healthy-after-ms", "2000"),
    ("max-restarts", "64"),
    ("restart-window-ms", "60000"),
    ("init-timeout-ms", "5000"),
    ("shutdown-timeout-ms", "1000"),
    ("poison-after", "100"),
];

/// A supervisor with one `storage_driver`, in a private directory.
#[derive(Debug)]
pub struct Rig {
    /// The private directory (removed on drop).
    pub dir: PathBuf,
    /// The supervisor's runtime directory (sockets).
    pub runtime: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// The supervisor process, while running.
    pub child: Option<Child>,
    log: PathBuf,
    starts: u32,
}

/// Data blocks of the rig's storage device.
pub const DISK_BLOCKS: u64 = 1024;

impl Rig {
    /// Writes a config with [`DEFAULTS`] overridden by `overrides`
    /// (`key`, TOML value). Does not start anything.
    ///
    /// # Panics
    /// If the directory cannot be created.
    #[must_use]
    pub fn new(tag: &str, overrides: &[(&str, &str)]) -> Self {
        let b = bins();
        let dir = std::env::temp_dir().join(format!("reinc-{tag}-{}-{}", std::process::id(), unique()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create test dir");
        let mut keys: BTreeMap<&str, String> = DEFAULTS.iter().map(|(k, v)| (*k, (*v).to_string())).collect();
        for (k, v) in overrides {
            keys.insert(k, (*v).to_string());
        }
        let mut text = format!(
            "[supervisor]\nstate-dir = \"{d}/state\"\n\n[[driver]]\nname = \"storage_driver\"\nexec = \"{exe}\"\n\
             args = [\"--file\", \"{d}/disk.img\", \"--blocks\", \"{DISK_BLOCKS}\"]\nexec-log = \"{d}/exec.log\"\n",
            d = dir.display(),
            exe = b.storage_driver.display()
        );
        for (k, v) in keys {
            text.push_str(&format!("{k} = {v}\n"));
        }
        let config = dir.join("supervisor.toml");
        fs::write(&config, text).expect("write config");
        Self { runtime: dir.join("run"), log: dir.join("supervisor.log"), dir, config, child: None, starts: 0 }
    }

    /// Adds a second storage driver named `name` (own backing file, same
    /// defaults) after the first in start order.
    ///
    /// # Panics
    /// If the config cannot be written.
    pub fn add_driver(&self, name: &str) {
        let mut text = fs::read_to_string(&self.config).expect("read config");
        text.push_str(&format!(
            "\n[[driver]]\nname = \"{name}\"\nexec = \"{exe}\"\nargs = [\"--file\", \"{d}/{name}.img\", \"--blocks\", \"64\"]\n",
            exe = bins().storage_driver.display(),
            d = self.dir.display()
        ));
        for (k, v) in DEFAULTS {
            text.push_str(&format!("{k} = {v}\n"));
        }
        fs::write(&self.config, text).expect("write config");
    }

    /// Gives the first storage driver a device of `blocks` data blocks
    /// instead of [`DISK_BLOCKS`].
    ///
    /// # Panics
    /// If the config cannot be rewritten.
    pub fn set_disk_blocks(&self, blocks: u64) {
        let text = fs::read_to_string(&self.config).expect("read config");
        let text =
            text.replacen(&format!("\"--blocks\", \"{DISK_BLOCKS}\"]"), &format!("\"--blocks\", \"{blocks}\"]"), 1);
        fs::write(&self.config, text).expect("write config");
    }

    /// Sets `key = value` (a TOML value) in the `[supervisor]` table.
    ///
    /// # Panics
    /// If the config cannot be rewritten.
    pub fn set_supervisor_key(&self, key: &str, value: &str) {
        let text = fs::read_to_string(&self.config).expect("read config");
        let text = text.replacen("[supervisor]\n", &format!("[supervisor]\n{key} = {value}\n"), 1);
        fs::write(&self.config, text).expect("write config");
    }

    /// Status of every driver, in start order.
    ///
    /// # Panics
    /// If the supervisor does not answer.
    #[must_use]
    pub fn all_status(&self) -> Vec<DriverStatus> {
        match self.control(&ControlRequest::Status) {
            ControlResponse::Status(rows) => rows,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Starts the supervisor and waits until the driver is running.
    ///
    /// # Panics
    /// If it does not come up within 10 s.
    pub fn start(&mut self) {
        self.spawn();
        let st = self.wait_status(Duration::from_secs(10), |s| s.state.name() == "running");
        assert!(st.is_some(), "supervisor did not come up; log:\n{}", self.log());
    }

    /// Waits until the driver is running (after a `spawn`).
    ///
    /// # Panics
    /// If it does not come up within 10 s.
    pub fn start_wait(&mut self) {
        let st = self.wait_status(Duration::from_secs(10), |s| s.state.name() == "running");
        assert!(st.is_some(), "supervisor did not come up; log:\n{}", self.log());
    }

    /// Starts the supervisor without waiting.
    ///
    /// # Panics
    /// If it cannot be spawned.
    pub fn spawn(&mut self) {
        self.spawn_with_env(&[]);
    }

    /// Starts the supervisor without waiting, with `env` added to its
    /// environment (e.g. systemd's `NOTIFY_SOCKET`).
    ///
    /// # Panics
    /// If it cannot be spawned.
    pub fn spawn_with_env(&mut self, env: &[(&str, &str)]) {
        self.spawn_command(Command::new(&bins().supervisor), Stdio::null(), env);
    }

    /// Starts the supervisor as systemd does with one descriptor from its
    /// fd store: `fd` as descriptor 3, `LISTEN_FDS=1`,
    /// `LISTEN_FDNAMES=name` and `LISTEN_PID` the supervisor's own pid.
    /// `std` can neither place a descriptor at 3 nor know the pid before
    /// the fork, so a shell does both: it moves its stdin to 3 and execs.
    ///
    /// # Panics
    /// If it cannot be spawned.
    pub fn spawn_with_listen_fd(&mut self, fd: std::os::fd::OwnedFd, name: &str, env: &[(&str, &str)]) {
        let mut sh = Command::new("/bin/sh");
        sh.arg("-c")
            .arg("exec 3<&0 0</dev/null; LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
            .arg(&bins().supervisor)
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", name);
        self.spawn_command(sh, Stdio::from(fd), env);
    }

    fn spawn_command(&mut self, mut cmd: Command, stdin: Stdio, env: &[(&str, &str)]) {
        self.starts += 1;
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("open log");
        let child = cmd
            .arg("--config")
            .arg(&self.config)
            .arg("--runtime-dir")
            .arg(&self.runtime)
            .stdin(stdin)
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .spawn()
            .expect("spawn supervisor");
        self.child = Some(child);
    }

    /// The supervisor's pid.
    ///
    /// # Panics
    /// If it is not running.
    #[must_use]
    pub fn supervisor_pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("supervisor running").id() as i32)
    }

    /// Everything the supervisor (and its drivers) logged so far.
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of the log that start with `[SUP] ` and contain `needle`.
    #[must_use]
    pub fn sup_lines(&self, needle: &str) -> Vec<String> {
        self.log().lines().filter(|l| l.starts_with("[SUP] ") && l.contains(needle)).map(String::from).collect()
    }

    /// Waits until at least `n` `[SUP]` lines contain `needle`.
    #[must_use]
    pub fn wait_sup_lines(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        wait_for(timeout, || (self.sup_lines(needle).len() >= n).then_some(())).is_some()
    }

    /// One control request.
    ///
    /// # Panics
    /// If the control socket does not answer.
    #[must_use]
    pub fn control(&self, req: &ControlRequest) -> ControlResponse {
        control_request(&control_socket(&self.runtime), req).expect("control socket answers")
    }

    /// Arms a one-shot fault (`POINT:K:KIND`) in the running instance.
    ///
    /// # Panics
    /// If the plan does not parse or the supervisor refuses it.
    pub fn inject(&self, plan: &str) {
        let plan = plan.parse().expect("fault plan");
        let resp = self.control(&ControlRequest::Inject { driver: "storage_driver".into(), plan });
        assert!(matches!(resp, ControlResponse::Done(_)), "inject {plan}: {resp:?}");
    }

    /// The storage driver's status, if the supervisor answers.
    #[must_use]
    pub fn try_status(&self) -> Option<DriverStatus> {
        match control_request(&control_socket(&self.runtime), &ControlRequest::Status).ok()? {
            ControlResponse::Status(rows) => rows.into_iter().find(|r| r.name == "storage_driver"),
            _ => None,
        }
    }

    /// The storage driver's status.
    ///
    /// # Panics
    /// If the supervisor does not answer.
    #[must_use]
    pub fn status(&self) -> DriverStatus {
        self.try_status().expect("status")
    }

    /// Waits until the status satisfies `f`.
    pub fn wait_status(&self, timeout: Duration, f: impl Fn(&DriverStatus) -> bool) -> Option<DriverStatus> {
        wait_for(timeout, || self.try_status().filter(|s| f(s)))
    }

    /// A new client session.
    ///
    /// # Panics
    /// If the client socket does not answer.
    #[must_use]
    pub fn client(&self) -> Client {
        Client::connect(&reinc_client::client_socket(&self.runtime)).expect("client connects")
    }

    /// Runs `drvctl` against this supervisor.
    ///
    /// # Panics
    /// If it cannot be run.
    #[must_use]
    pub fn drvctl(&self, args: &[&str]) -> Output {
        Command::new(&bins().drvctl).arg("--runtime-dir").arg(&self.runtime).args(args).output().expect("run drvctl")
    }

    /// The backing file of the storage driver.
    #[must_use]
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.img")
    }

    /// The superblock of the storage driver's file.
    ///
    /// # Panics
    /// If the file has no valid superblock.
    #[must_use]
    pub fn superblock(&self) -> Superblock {
        let bytes = fs::read(self.disk()).expect("read disk");
        Superblock::decode(&bytes[..BLOCK_SIZE]).expect("valid superblock").expect("formatted")
    }

    /// Data block `lba` as stored in the file (block 0 is the superblock).
    ///
    /// # Panics
    /// If the file is too short.
    #[must_use]
    pub fn disk_block(&self, lba: u64) -> Vec<u8> {
        let bytes = fs::read(self.disk()).expect("read disk");
        let off = (lba as usize + 1) * BLOCK_SIZE;
        bytes[off..off + BLOCK_SIZE].to_vec()
    }

    /// The exec log: one `(generation, request id)` per applied write.
    #[must_use]
    pub fn exec_log(&self) -> Vec<(u32, RequestId)> {
        let text = fs::read_to_string(self.dir.join("exec.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let g = it.next()?.parse().ok()?;
                let c = it.next()?.trim_start_matches('c').parse().ok()?;
                let s = it.next()?.parse().ok()?;
                Some((g, RequestId { client: ClientId(c), seq: s }))
            })
            .collect()
    }

    /// Sends `sig` to the supervisor and waits for it to exit.
    ///
    /// # Panics
    /// If it does not exit within 10 s.
    pub fn stop_supervisor(&mut self, sig: Signal) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("supervisor running");
        let _ = kill(Pid::from_raw(child.id() as i32), sig);
        let st = wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten());
        match st {
            Some(s) => s,
            None => {
                let _ = child.kill();
                panic!("supervisor ignored {sig}; log:\n{}", self.log());
            }
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            if wait_for(Duration::from_secs(5), || c.try_wait().ok().flatten()).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::env::var_os("REINC_KEEP_TEST_DIRS").is_none() && !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub use reinc_procfs::process_gone;

/// CPU time (user + system) consumed so far by `pid`.
///
/// # Panics
/// If `/proc/<pid>/stat` cannot be read.
#[must_use]
pub fn cpu_time(pid: u32) -> Duration {
    let stat = reinc_procfs::stat(pid).unwrap_or_else(|| panic!("/proc/{pid}/stat unreadable"));
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
    stat.cpu_time(hz)
}

/// An owned storage reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `Nop`.
    Nop,
    /// `Geometry`.
    Geometry(u64),
    /// `Data`.
    Data(Vec<u8>),
    /// `Written`.
    Written(u64, u16),
    /// `Appended`.
    Appended(u64, u16),
    /// `Flushed`.
    Flushed,
    /// `Error`.
    Error(StorageError),
    /// `Filled` (a bulk read): lba, blocks.
    Filled(u64, u32),
    /// `FilledTagged` (a client-checked bulk read): lba, blocks, the
    /// stored tags.
    FilledTagged(u64, u32, Vec<u8>),
    /// `Zeroed`: lba, blocks.
    Zeroed(u64, u32),
}

/// Decodes a storage reply body.
///
/// # Panics
/// If it is not a storage reply.
#[must_use]
pub fn reply(body: &[u8]) -> Reply {
    match postcard::from_bytes::<StorageReply<'_>>(body).expect("storage reply") {
        StorageReply::Nop => Reply::Nop,
        StorageReply::Geometry { blocks, .. } => Reply::Geometry(blocks),
        StorageReply::Data(d) => Reply::Data(d.to_vec()),
        // The tags are the blocksum helper's to check (reinc_client::blocksum).
        StorageReply::DataChecked { data, .. } => Reply::Data(data.to_vec()),
        StorageReply::Written { lba, blocks } => Reply::Written(lba, blocks),
        StorageReply::Appended { lba, blocks } => Reply::Appended(lba, blocks),
        StorageReply::Flushed => Reply::Flushed,
        StorageReply::Error(e) => Reply::Error(e),
        StorageReply::Filled { lba, blocks } => Reply::Filled(lba, blocks),
        StorageReply::FilledTagged { lba, blocks, tags } => Reply::FilledTagged(lba, blocks, tags.to_vec()),
        StorageReply::Zeroed { lba, blocks } => Reply::Zeroed(lba, blocks),
    }
}

/// Encodes a storage request.
///
/// # Panics
/// Never for valid requests.
#[must_use]
pub fn request(r: &StorageRequest<'_>) -> Vec<u8> {
    postcard::to_allocvec(r).expect("encode")
}

/// A write of `blocks` blocks at `lba`, each filled with `fill`.
#[must_use]
pub fn write_req(lba: u64, blocks: usize, fill: u8) -> Vec<u8> {
    request(&StorageRequest::Write { lba, data: &vec![fill; blocks * BLOCK_SIZE] })
}

/// A read of `blocks` blocks at `lba`.
#[must_use]
pub fn read_req(lba: u64, blocks: u16) -> Vec<u8> {
    request(&StorageRequest::Read { lba, blocks })
}

/// Asserts that every request id appears at most once in the exec log, and
/// returns how many distinct ids it holds.
///
/// # Panics
/// On a duplicate execution.
pub fn assert_no_duplicate_execution(log: &[(u32, RequestId)]) -> usize {
    let mut seen: BTreeMap<RequestId, Vec<u32>> = BTreeMap::new();
    for (g, id) in log {
        seen.entry(*id).or_default().push(*g);
    }
    let dups: Vec<_> = seen.iter().filter(|(_, gs)| gs.len() > 1).collect();
    assert!(dups.is_empty(), "requests executed more than once (id -> generations): {dups:?}");
    seen.len()
}

/// A raw `SOCK_SEQPACKET` connection to the client socket, for feeding the
/// supervisor frames the client library would never send.
#[derive(Debug)]
pub struct RawConn {
    fd: std::os::fd::OwnedFd,
}

impl RawConn {
    /// Connects to the rig's client socket.
    ///
    /// # Panics
    /// If the socket does not answer.
    #[must_use]
    pub fn connect(rig: &Rig) -> Self {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, setsockopt, socket, sockopt};
        use std::os::fd::AsRawFd;
        let addr = UnixAddr::new(&reinc_client::client_socket(&rig.runtime)).expect("socket path");
        let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).expect("socket");
        connect(fd.as_raw_fd(), &addr).expect("connect");
        setsockopt(&fd, sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(10, 0)).expect("timeout");
        Self { fd }
    }

    /// Sends raw bytes as one frame.
    ///
    /// # Panics
    /// If sending fails.
    pub fn send_raw(&self, bytes: &[u8]) {
        use std::os::fd::AsRawFd;
        nix::sys::socket::send(self.fd.as_raw_fd(), bytes, nix::sys::socket::MsgFlags::MSG_NOSIGNAL).expect("send");
    }

    /// Sends a client message.
    pub fn send(&self, msg: &reinc_proto::ClientToSup<'_>) {
        self.send_raw(&reinc_proto::encode_vec(msg).expect("encode"));
    }

    /// Receives one frame and decodes it as an owned (debug-printed) answer.
    ///
    /// # Panics
    /// On timeout or a frame that does not decode.
    #[must_use]
    pub fn recv(&self) -> Answer {
        use std::os::fd::AsRawFd;
        let mut buf = vec![0u8; reinc_proto::MAX_FRAME];
        let n = nix::sys::socket::recv(self.fd.as_raw_fd(), &mut buf, nix::sys::socket::MsgFlags::empty())
            .expect("recv (timeout?)");
        match reinc_proto::decode::<reinc_proto::SupToClient<'_>>(&buf[..n]).expect("supervisor frame decodes") {
            reinc_proto::SupToClient::Welcome { client } => Answer::Welcome(client),
            reinc_proto::SupToClient::Reply { seq, body } => Answer::Reply(seq, body.to_vec()),
            reinc_proto::SupToClient::Failed { seq, error } => Answer::Failed(seq, error),
            reinc_proto::SupToClient::Rejected { error } => Answer::Rejected(error),
            reinc_proto::SupToClient::PoolAttached { driver } => Answer::PoolAttached(driver.to_owned()),
            reinc_proto::SupToClient::PoolRefused { driver, error } => Answer::PoolRefused(driver.to_owned(), error),
        }
    }

    /// Sends a client message with `fd` as its `SCM_RIGHTS` descriptor.
    ///
    /// # Panics
    /// If sending fails.
    pub fn send_with_fd(&self, msg: &reinc_proto::ClientToSup<'_>, fd: std::os::fd::BorrowedFd<'_>) {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        use std::os::fd::AsRawFd;
        let bytes = reinc_proto::encode_vec(msg).expect("encode");
        let fds = [fd.as_raw_fd()];
        sendmsg::<()>(
            self.fd.as_raw_fd(),
            &[std::io::IoSlice::new(&bytes)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .expect("sendmsg");
    }
}

/// An owned `SupToClient`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Welcome.
    Welcome(ClientId),
    /// Reply.
    Reply(u64, Vec<u8>),
    /// Failed.
    Failed(u64, reinc_proto::CallError),
    /// Rejected.
    Rejected(reinc_proto::WireError),
    /// PoolAttached (driver).
    PoolAttached(String),
    /// PoolRefused (driver, why).
    PoolRefused(String, reinc_proto::CallError),
}
