//! The supervisor's TOML configuration: one `[supervisor]` table and one
//! `[[driver]]` table per driver.
//!
//! ```toml
//! [supervisor]
//! state-dir = "/var/lib/reinc"        # persisted checkpoints, the journal
//! journal-recovery = "refuse"         # or "truncate" at the last valid record
//!
//! [[driver]]
//! name = "storage_driver"
//! exec = "target/debug/storage_driver"
//! args = ["--file", "/tmp/disk.img", "--blocks", "4096"]
//! backoff-base-ms = 100
//! max-restarts = 5
//! restart-window-ms = 10000
//! durability = "journal"             # or "memory" (default)
//! ```
//!
//! `standby = true` keeps a hot standby of the driver: a second process,
//! launched and past its start-up but holding no device, promoted at once
//! when the running instance dies (CONTRACTS.md §9). It needs a restart
//! policy (`fault-policy = "restart"`, the default): under `"stop"` nothing
//! would ever promote it.
//!
//! `persist-checkpoint = true` (a checkpoint file per driver, written on the
//! event loop before each reply) still works but is deprecated:
//! `durability = "journal"` keeps the committed state together with the
//! sessions, the accepted requests and the dedup replies, with group commit
//! off the event loop. The two cannot be combined.
//!
//! # Every error at once
//! serde stops at the first error, which turns fixing a config file into a
//! loop of edit-and-retry. So the file is first parsed into a `toml::Value`;
//! then every key of every table is deserialized *on its own* (a one-key
//! table into the all-`Option` schema struct, with `deny_unknown_fields` and
//! kebab-case), so each unknown key and each type error is reported, with its
//! driver and key; finally the range checks run over what parsed. All
//! problems come back together in one [`ConfigError`].

use reinc_policy::{BackoffConfig, MAX_RESTARTS_IN_WINDOW, Millis};
use reinc_proto::FaultPlan;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Upper bound on `queue-depth` (and on `window`).
///
/// Each driver's queue is allocated once, at start, with exactly
/// `queue-depth` slots of `size_of::<reinc_queue::Slot<Vec<u8>>>()` bytes
/// (64 on 64-bit targets: the entry and the duplicate index's two links;
/// the request bodies are separate allocations made only while queued). The
/// bound keeps one typo from costing gigabytes: at the maximum a driver's
/// slots take 4 MiB.
pub const MAX_QUEUE_DEPTH: usize = 65_536;

/// Shortest `init-timeout-ms`: a driver needs a few ms to exec and map its
/// device, so anything shorter only turns every launch into a failure (and,
/// with no backoff, into a restart storm).
pub const MIN_INIT_TIMEOUT_MS: u64 = 100;

/// Default `starved-grace-ms`: how long a driver that only waits for a CPU
/// may miss its heartbeats before it is killed anyway.
pub const DEFAULT_STARVED_GRACE_MS: u64 = 2_000;

/// Shortest `heartbeat-interval-ms`: every ping is a wake-up of both processes.
pub const MIN_HEARTBEAT_INTERVAL_MS: u64 = 10;

/// The highest sustained restart rate a configuration may allow, per driver
/// and second (systemd's start limit, Hubris' minimum run time). The restart
/// policy quarantines a driver with more than `max-restarts` restarts within
/// `restart-window-ms`, so a driver can be relaunched at most
/// `max-restarts / restart-window` times a second for ever; the config check
/// keeps that ratio at or below this, whatever the backoff. With
/// `restart-window-ms = 1` and no backoff a driver was relaunched 1 358 times
/// a second and never quarantined.
pub const MAX_RESTARTS_PER_SECOND: u64 = 64;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Supervisor-wide settings.
    pub supervisor: SupervisorConfig,
    /// The drivers, in start order.
    pub drivers: Vec<DriverConfig>,
}

/// `[supervisor]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// Where persisted checkpoints live (`<state-dir>/<driver>.ckpt`).
    pub state_dir: PathBuf,
    /// Where `client.sock` and `control.sock` are created (default: see
    /// [`default_runtime_dir`]).
    pub runtime_dir: Option<PathBuf>,
    /// Client sessions kept for resumption.
    pub max_sessions: usize,
    /// Cached replies kept per client session (dedup table).
    pub dedup_per_session: usize,
    /// Permission bits of `client.sock` (`client-socket-mode`, an octal
    /// string; default `"0660"`). Whoever can write the socket can call every
    /// driver, so "other" gets nothing by default.
    pub client_socket_mode: u32,
    /// What a torn or corrupt journal does at start (`journal-recovery`).
    pub journal_recovery: JournalRecovery,
    /// Journal bytes written since the last snapshot before the next one
    /// compacts it (`journal-compact-bytes`, default 4 MiB).
    pub journal_compact_bytes: u64,
    /// Byte and count budgets ([`crate::limits::Limits`]).
    pub limits: crate::limits::Limits,
}

/// How durable a driver's answers are (`durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DurabilityMode {
    /// The supervisor survives the driver's crash, not its own (default).
    #[default]
    Memory,
    /// Accepted requests, answers (the dedup table) and the committed state
    /// are in the write-ahead journal before a client sees an answer; a
    /// restarted supervisor recovers them.
    Journal,
}

/// What to do with a torn or corrupt journal (`journal-recovery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JournalRecovery {
    /// Refuse to start, naming the file and the offset (default).
    #[default]
    Refuse,
    /// Cut the journal at the last valid record and start from there.
    Truncate,
}

/// What a driver's fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPolicyConfig {
    /// [`reinc_policy::BackoffRestart`].
    Restart(BackoffConfig),
    /// [`reinc_policy::StopOnFault`].
    Stop,
}

/// What to do when the persisted checkpoint file is torn or corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorruptCheckpoint {
    /// Refuse to start (the supervisor exits with an error naming the file).
    Refuse,
    /// Log the error and start the driver from its initial state.
    StartFresh,
}

/// One `[[driver]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverConfig {
    /// Unique name; also `REINC_DRIVER_NAME`.
    pub name: String,
    /// The executable.
    pub exec: PathBuf,
    /// Its arguments (with `--device SELECTOR` appended when `device` is set).
    pub args: Vec<String>,
    /// The device the driver owns, as a selector the driver understands.
    pub device: Option<String>,
    /// Fault plan armed in every instance (`REINC_FAULT`).
    pub fault: Option<FaultPlan>,
    /// Execution log for tests (`REINC_EXEC_LOG`).
    pub exec_log: Option<PathBuf>,
    /// Restart or stop on fault.
    pub fault_policy: FaultPolicyConfig,
    /// Time between heartbeat pings.
    pub heartbeat_interval: Millis,
    /// Unanswered pings in a row that mean "hung".
    pub heartbeat_misses: u32,
    /// How long a driver that misses its heartbeats only because it waits
    /// for a CPU is left running (`core/hang.rs`); zero: never.
    pub starved_grace: Millis,
    /// Time allowed from launch to `Ready`.
    pub init_timeout: Millis,
    /// Time between SIGTERM and SIGKILL when stopping.
    pub shutdown_timeout: Millis,
    /// Accepted-but-unanswered requests before clients get `Busy`.
    pub queue_depth: usize,
    /// Requests sent to the driver before their replies (pipelining).
    pub window: usize,
    /// Crashes attributed to one request before it is dropped as poisoned.
    pub poison_after: u32,
    /// Persist the checkpoint to `<state-dir>/<name>.ckpt`.
    pub persist_checkpoint: bool,
    /// What a torn or corrupt persisted checkpoint does.
    pub on_corrupt_checkpoint: CorruptCheckpoint,
    /// `durability = "memory" | "journal"`.
    pub durability: DurabilityMode,
    /// User, group, capabilities, sandbox, environment and client allow-list
    /// ([`crate::privileges`]).
    pub privileges: crate::privileges::Privileges,
    /// Keep a hot standby instance, promoted on a crash (CONTRACTS.md §9).
    pub standby: bool,
}

impl DriverConfig {
    /// A driver with every optional figure at its default (for tests and
    /// embedding).
    #[must_use]
    pub fn new(name: &str, exec: impl Into<PathBuf>) -> Self {
        let d = DriverToml::default();
        finish_driver(name.to_owned(), exec.into(), d, &mut Vec::new())
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The table: `supervisor`, `driver "NAME"` or `driver #N`.
    pub table: String,
    /// The key, when one is to blame.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{}: `{k}`: {}", self.table, self.message),
            None => write!(f, "{}: {}", self.table, self.message),
        }
    }
}

/// A configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file has one or more problems; all of them are listed.
    #[error("config file {path} has {} problem(s):\n{}", problems.len(), list(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct SupervisorToml {
    state_dir: Option<PathBuf>,
    runtime_dir: Option<PathBuf>,
    max_sessions: Option<u64>,
    dedup_per_session: Option<u64>,
    client_socket_mode: Option<String>,
    journal_recovery: Option<RecoveryName>,
    journal_compact_bytes: Option<u64>,
    session_idle_timeout_ms: Option<u64>,
    dedup_bytes_per_session: Option<u64>,
    dedup_bytes_total: Option<u64>,
    max_connections: Option<u64>,
    out_bytes_per_connection: Option<u64>,
    out_bytes_total: Option<u64>,
    out_stall_timeout_ms: Option<u64>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum RecoveryName {
    Refuse,
    Truncate,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum DurabilityName {
    Memory,
    Journal,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct TopToml {
    supervisor: Option<toml::Value>,
    driver: Option<Vec<toml::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct DriverToml {
    name: Option<String>,
    exec: Option<PathBuf>,
    args: Option<Vec<String>>,
    device: Option<String>,
    fault: Option<String>,
    exec_log: Option<PathBuf>,
    fault_policy: Option<FaultPolicyName>,
    backoff_base_ms: Option<u64>,
    backoff_cap_ms: Option<u64>,
    jitter_percent: Option<u64>,
    healthy_after_ms: Option<u64>,
    max_restarts: Option<u64>,
    restart_window_ms: Option<u64>,
    heartbeat_interval_ms: Option<u64>,
    heartbeat_misses: Option<u64>,
    starved_grace_ms: Option<u64>,
    init_timeout_ms: Option<u64>,
    shutdown_timeout_ms: Option<u64>,
    queue_depth: Option<u64>,
    window: Option<u64>,
    poison_after: Option<u64>,
    persist_checkpoint: Option<bool>,
    on_corrupt_checkpoint: Option<CorruptName>,
    durability: Option<DurabilityName>,
    user: Option<toml::Value>,
    group: Option<toml::Value>,
    capabilities: Option<Vec<String>>,
    sandbox: Option<bool>,
    seccomp: Option<bool>,
    env: Option<Vec<String>>,
    allow_uids: Option<Vec<u32>>,
    allow_gids: Option<Vec<u32>>,
    standby: Option<bool>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum FaultPolicyName {
    Restart,
    Stop,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum CorruptName {
    Refuse,
    StartFresh,
}

/// Deserializes `table` key by key into `T`, recording one problem per bad
/// key, then as a whole. Returns `None` if any key was bad.
fn per_key<T: DeserializeOwned + Default>(value: &toml::Value, table: &str, problems: &mut Vec<Problem>) -> Option<T> {
    let Some(map) = value.as_table() else {
        problems.push(Problem { table: table.into(), key: None, message: "must be a table".into() });
        return None;
    };
    // Keep the keys that are fine on their own, so the range checks still
    // run over them.
    let mut good = toml::map::Map::new();
    for (k, v) in map {
        let mut one = toml::map::Map::new();
        one.insert(k.clone(), v.clone());
        match toml::Value::Table(one).try_into::<T>() {
            Ok(_) => {
                good.insert(k.clone(), v.clone());
            }
            Err(e) => {
                problems.push(Problem { table: table.into(), key: Some(k.clone()), message: clean(&e.to_string()) })
            }
        }
    }
    match toml::Value::Table(good).try_into::<T>() {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(Problem { table: table.into(), key: None, message: clean(&e.to_string()) });
            None
        }
    }
}

fn clean(msg: &str) -> String {
    msg.trim().replace('\n', " ")
}

/// Reads and validates a configuration file.
///
/// # Errors
/// [`ConfigError`], listing every problem found.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    parse_checked(&text, true).map_err(|problems| ConfigError::Invalid { path: path.into(), problems })
}

/// Parses and validates configuration text (without looking at the files it
/// names; [`load`] checks those too).
///
/// # Errors
/// Every problem found.
pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    parse_checked(text, false)
}

/// [`parse`], and with `files` also checks that every `exec` is a regular,
/// executable file, reported with the other problems.
fn parse_checked(text: &str, files: bool) -> Result<Config, Vec<Problem>> {
    let mut problems = Vec::new();
    let value: toml::Value = match toml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Err(vec![Problem { table: "file".into(), key: None, message: clean(&e.to_string()) }]);
        }
    };
    // The top level is checked key by key too, so one stray key does not
    // hide the problems in the tables.
    let mut top = TopToml::default();
    if let Some(map) = value.as_table() {
        for (k, v) in map {
            let mut one = toml::map::Map::new();
            one.insert(k.clone(), v.clone());
            match toml::Value::Table(one).try_into::<TopToml>() {
                Ok(t) => {
                    top.supervisor = top.supervisor.or(t.supervisor);
                    top.driver = top.driver.or(t.driver);
                }
                Err(e) => problems.push(Problem {
                    table: "top level".into(),
                    key: Some(k.clone()),
                    message: clean(&e.to_string()),
                }),
            }
        }
    }
    let sup = top
        .supervisor
        .as_ref()
        .and_then(|v| per_key::<SupervisorToml>(v, "supervisor", &mut problems))
        .unwrap_or_default();
    let supervisor = SupervisorConfig {
        state_dir: sup.state_dir.clone().unwrap_or_else(|| PathBuf::from("/var/lib/reinc")),
        runtime_dir: sup.runtime_dir.clone(),
        max_sessions: count(sup.max_sessions, 256, 1, 1 << 16, "supervisor", "max-sessions", &mut problems),
        dedup_per_session: count(
            sup.dedup_per_session,
            1024,
            1,
            1 << 20,
            "supervisor",
            "dedup-per-session",
            &mut problems,
        ),
        client_socket_mode: match sup.client_socket_mode.as_deref().map(parse_mode) {
            None => DEFAULT_CLIENT_SOCKET_MODE,
            Some(Ok(m)) => m,
            Some(Err(message)) => {
                problems.push(Problem { table: "supervisor".into(), key: Some("client-socket-mode".into()), message });
                DEFAULT_CLIENT_SOCKET_MODE
            }
        },
        journal_recovery: match sup.journal_recovery {
            None | Some(RecoveryName::Refuse) => JournalRecovery::Refuse,
            Some(RecoveryName::Truncate) => JournalRecovery::Truncate,
        },
        journal_compact_bytes: count(
            sup.journal_compact_bytes,
            4 << 20,
            64 << 10,
            1 << 40,
            "supervisor",
            "journal-compact-bytes",
            &mut problems,
        ) as u64,
        limits: limits(&sup, &mut problems),
    };
    let mut drivers = Vec::new();
    let mut names = BTreeSet::new();
    let tables = top.driver.unwrap_or_default();
    if tables.is_empty() && problems.is_empty() {
        problems.push(Problem {
            table: "top level".into(),
            key: Some("driver".into()),
            message: "no [[driver]] configured".into(),
        });
    }
    for (i, t) in tables.iter().enumerate() {
        // Name the table by its `name` when it has a usable one.
        let label = match t.get("name").and_then(toml::Value::as_str) {
            Some(n) => format!("driver \"{n}\""),
            None => format!("driver #{}", i + 1),
        };
        let Some(d) = per_key::<DriverToml>(t, &label, &mut problems) else { continue };
        let name = match d.name.clone() {
            Some(n) if valid_name(&n) => n,
            Some(_) => {
                problems.push(Problem {
                    table: label.clone(),
                    key: Some("name".into()),
                    message: "must be 1-64 characters of [A-Za-z0-9_-]".into(),
                });
                continue;
            }
            None => {
                problems.push(Problem {
                    table: label.clone(),
                    key: Some("name".into()),
                    message: "is required".into(),
                });
                continue;
            }
        };
        if !names.insert(name.clone()) {
            problems.push(Problem {
                table: label.clone(),
                key: Some("name".into()),
                message: "is used by another driver".into(),
            });
        }
        match d.exec.clone() {
            Some(exec) => {
                let checked = if exec.as_os_str().is_empty() {
                    Err("must not be empty".to_owned())
                } else if files {
                    check_executable(&exec)
                } else {
                    Ok(())
                };
                if let Err(message) = checked {
                    problems.push(Problem { table: label.clone(), key: Some("exec".into()), message });
                }
                drivers.push(finish_driver(name, exec, d, &mut problems));
            }
            None => {
                problems.push(Problem {
                    table: label.clone(),
                    key: Some("exec".into()),
                    message: "is required".into(),
                });
                // Still check the rest of the table.
                finish_driver(name, PathBuf::new(), d, &mut problems);
            }
        }
    }
    if problems.is_empty() { Ok(Config { supervisor, drivers }) } else { Err(problems) }
}

/// The budgets of `[supervisor]`, range-checked: a budget must hold at
/// least one frame, a total at least its per-peer figure.
fn limits(sup: &SupervisorToml, problems: &mut Vec<Problem>) -> crate::limits::Limits {
    let d = crate::limits::Limits::default();
    let frame = reinc_proto::MAX_FRAME as u64;
    let mut n =
        |v, default: usize, min: u64, max: u64, key| count(v, default as u64, min, max, "supervisor", key, problems);
    let per_session =
        n(sup.dedup_bytes_per_session, d.dedup_bytes_per_session, frame, 1 << 30, "dedup-bytes-per-session");
    let dedup_total = n(sup.dedup_bytes_total, d.dedup_bytes_total, frame, 1 << 34, "dedup-bytes-total");
    let per_conn =
        n(sup.out_bytes_per_connection, d.out_bytes_per_connection, frame, 1 << 30, "out-bytes-per-connection");
    let out_total = n(sup.out_bytes_total, d.out_bytes_total, frame, 1 << 34, "out-bytes-total");
    let l = crate::limits::Limits {
        session_idle_ms: n(
            sup.session_idle_timeout_ms,
            d.session_idle_ms as usize,
            100,
            7 * 86_400_000,
            "session-idle-timeout-ms",
        ) as u64,
        dedup_bytes_per_session: per_session,
        dedup_bytes_total: dedup_total,
        max_connections: n(sup.max_connections, d.max_connections, 1, 1 << 16, "max-connections"),
        out_bytes_per_connection: per_conn,
        out_bytes_total: out_total,
        out_stall_ms: n(sup.out_stall_timeout_ms, d.out_stall_ms as usize, 100, 600_000, "out-stall-timeout-ms") as u64,
    };
    if l.dedup_bytes_total < l.dedup_bytes_per_session {
        problems.push(Problem {
            table: "supervisor".into(),
            key: Some("dedup-bytes-total".into()),
            message: format!("({}) must not be below dedup-bytes-per-session ({per_session})", l.dedup_bytes_total),
        });
    }
    if l.out_bytes_total < l.out_bytes_per_connection {
        problems.push(Problem {
            table: "supervisor".into(),
            key: Some("out-bytes-total".into()),
            message: format!("({}) must not be below out-bytes-per-connection ({per_conn})", l.out_bytes_total),
        });
    }
    l
}

/// Default of `client-socket-mode`: owner and group may call drivers.
pub const DEFAULT_CLIENT_SOCKET_MODE: u32 = 0o660;

/// Parses a socket mode written like chmod's: 3 or 4 octal digits, at most
/// `0777` (set-id and sticky bits mean nothing on a socket).
fn parse_mode(s: &str) -> Result<u32, String> {
    let bad =
        || format!("must be an octal mode of 3 or 4 digits between \"0000\" and \"0777\" (like \"0660\"), got {s:?}");
    if !(3..=4).contains(&s.len()) || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad());
    }
    let m = u32::from_str_radix(s, 8).map_err(|_| bad())?;
    if m > 0o777 {
        return Err(bad());
    }
    Ok(m)
}

/// `exec` must name a regular file that this user may execute. A name
/// without `/` is looked up in `$PATH`, as `Command` does.
fn check_executable(exec: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let candidates: Vec<PathBuf> = if exec.components().count() == 1 && !exec.is_absolute() {
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).map(|d| d.join(exec)).collect()).unwrap_or_default()
    } else {
        vec![exec.to_path_buf()]
    };
    let mut last = format!("{} does not exist", exec.display());
    for c in &candidates {
        match std::fs::metadata(c) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => last = format!("{}: {e}", c.display()),
            Ok(m) if !m.is_file() => last = format!("{} is not a regular file", c.display()),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => last = format!("{} is not executable", c.display()),
            Ok(_) => match nix::unistd::access(c, nix::unistd::AccessFlags::X_OK) {
                Ok(()) => return Ok(()),
                Err(e) => last = format!("{} is not executable by this user: {e}", c.display()),
            },
        }
    }
    if candidates.len() > 1 && last.ends_with("does not exist") {
        last = format!("{} is not found in $PATH", exec.display());
    }
    Err(last)
}

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn count(
    v: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
    table: &str,
    key: &str,
    problems: &mut Vec<Problem>,
) -> usize {
    let v = v.unwrap_or(default);
    if !(min..=max).contains(&v) {
        problems.push(Problem {
            table: table.into(),
            key: Some(key.into()),
            message: format!("must be between {min} and {max}, got {v}"),
        });
        return default as usize;
    }
    v as usize
}

fn finish_driver(name: String, exec: PathBuf, d: DriverToml, problems: &mut Vec<Problem>) -> DriverConfig {
    let label = format!("driver \"{name}\"");
    let mut bad = |key: &str, message: String| {
        problems.push(Problem { table: label.clone(), key: Some(key.into()), message });
    };
    let fault = match d.fault.as_deref().map(str::parse::<FaultPlan>) {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            bad("fault", e.to_string());
            None
        }
        None => None,
    };
    let ms = |v: Option<u64>, default: u64| Millis(v.unwrap_or(default));
    let backoff = BackoffConfig {
        base: ms(d.backoff_base_ms, 100),
        cap: ms(d.backoff_cap_ms, 10_000),
        jitter_percent: u8::try_from(d.jitter_percent.unwrap_or(20)).unwrap_or(u8::MAX),
        healthy_after: ms(d.healthy_after_ms, 30_000),
        max_restarts: u32::try_from(d.max_restarts.unwrap_or(5)).unwrap_or(u32::MAX),
        window: ms(d.restart_window_ms, 60_000),
    };
    if backoff.jitter_percent > 100 {
        bad("jitter-percent", format!("must be between 0 and 100, got {}", d.jitter_percent.unwrap_or(0)));
    }
    if backoff.cap < backoff.base {
        bad("backoff-cap-ms", format!("({}) must not be below backoff-base-ms ({})", backoff.cap.0, backoff.base.0));
    }
    if backoff.max_restarts as usize > MAX_RESTARTS_IN_WINDOW {
        bad("max-restarts", format!("must be at most {MAX_RESTARTS_IN_WINDOW}, got {}", d.max_restarts.unwrap_or(0)));
    }
    if backoff.window.0 == 0 {
        bad("restart-window-ms", "must be positive".into());
    } else if u64::from(backoff.max_restarts).saturating_mul(1000) > MAX_RESTARTS_PER_SECOND * backoff.window.0
        && backoff.max_restarts as usize <= MAX_RESTARTS_IN_WINDOW
    {
        let need = (u64::from(backoff.max_restarts) * 1000).div_ceil(MAX_RESTARTS_PER_SECOND);
        bad(
            "restart-window-ms",
            format!(
                "({}) allows max-restarts = {} restarts in it for ever, more than {MAX_RESTARTS_PER_SECOND} a second: \
                 use at least {need} ms (or fewer max-restarts)",
                backoff.window.0, backoff.max_restarts
            ),
        );
    }
    let mut at_least = |key: &str, v: Option<u64>, default: u64, min: u64, max: u64| -> u64 {
        let v = v.unwrap_or(default);
        if !(min..=max).contains(&v) {
            bad(key, format!("must be between {min} and {max}, got {v}"));
            return default;
        }
        v
    };
    let heartbeat_interval =
        Millis(at_least("heartbeat-interval-ms", d.heartbeat_interval_ms, 1_000, MIN_HEARTBEAT_INTERVAL_MS, 3_600_000));
    let init_timeout = Millis(at_least("init-timeout-ms", d.init_timeout_ms, 5_000, MIN_INIT_TIMEOUT_MS, 3_600_000));
    let mut positive = |key: &str, v: Option<u64>, default: u64, max: u64| -> u64 {
        let v = v.unwrap_or(default);
        if v == 0 || v > max {
            bad(key, format!("must be between 1 and {max}, got {v}"));
            return default;
        }
        v
    };
    let heartbeat_misses = positive("heartbeat-misses", d.heartbeat_misses, 3, 1_000) as u32;
    let shutdown_timeout = Millis(positive("shutdown-timeout-ms", d.shutdown_timeout_ms, 2_000, 3_600_000));
    let queue_depth = positive("queue-depth", d.queue_depth, 256, MAX_QUEUE_DEPTH as u64) as usize;
    let window = positive("window", d.window, 8, MAX_QUEUE_DEPTH as u64) as usize;
    let poison_after = positive("poison-after", d.poison_after, 3, 1_000) as u32;
    let starved_grace = Millis(d.starved_grace_ms.unwrap_or(DEFAULT_STARVED_GRACE_MS));
    if starved_grace.0 > 3_600_000 {
        bad("starved-grace-ms", format!("must be between 0 and 3600000, got {}", starved_grace.0));
    }
    let durability = match d.durability {
        None | Some(DurabilityName::Memory) => DurabilityMode::Memory,
        Some(DurabilityName::Journal) => DurabilityMode::Journal,
    };
    if durability == DurabilityMode::Journal && d.persist_checkpoint == Some(true) {
        bad(
            "persist-checkpoint",
            "durability = \"journal\" already keeps the committed state in the journal; drop persist-checkpoint \
             (deprecated)"
                .into(),
        );
    }
    if d.window.is_some_and(|w| w > 0) && window > queue_depth {
        bad("window", format!("({window}) must not exceed queue-depth ({queue_depth}): only queued requests are sent"));
    }
    let standby = d.standby.unwrap_or(false);
    if standby && matches!(d.fault_policy, Some(FaultPolicyName::Stop)) {
        bad(
            "standby",
            "a standby is promoted only when the driver is restarted, and fault-policy = \"stop\" never restarts \
             it: drop `standby`, or use fault-policy = \"restart\""
                .into(),
        );
    }
    let privileges = privileges(&d, &mut bad);
    let mut args = d.args.unwrap_or_default();
    if let Some(dev) = &d.device {
        args.push("--device".into());
        args.push(dev.clone());
    }
    DriverConfig {
        name,
        exec,
        args,
        device: d.device,
        fault,
        exec_log: d.exec_log,
        fault_policy: match d.fault_policy.unwrap_or(FaultPolicyName::Restart) {
            FaultPolicyName::Restart => FaultPolicyConfig::Restart(backoff),
            FaultPolicyName::Stop => FaultPolicyConfig::Stop,
        },
        heartbeat_interval,
        heartbeat_misses,
        starved_grace: if starved_grace.0 > 3_600_000 { Millis(DEFAULT_STARVED_GRACE_MS) } else { starved_grace },
        init_timeout,
        shutdown_timeout,
        queue_depth,
        window,
        poison_after,
        persist_checkpoint: d.persist_checkpoint.unwrap_or(false),
        on_corrupt_checkpoint: match d.on_corrupt_checkpoint.unwrap_or(CorruptName::Refuse) {
            CorruptName::Refuse => CorruptCheckpoint::Refuse,
            CorruptName::StartFresh => CorruptCheckpoint::StartFresh,
        },
        durability,
        privileges,
        standby,
    }
}

/// The least-privilege keys of a driver, resolved and checked.
fn privileges(d: &DriverToml, bad: &mut impl FnMut(&str, String)) -> crate::privileges::Privileges {
    let mut p = crate::privileges::Privileges::default();
    if let Some(u) = &d.user {
        match crate::privileges::resolve_user(u) {
            Ok((uid, gid)) => {
                p.uid = Some(uid);
                p.gid = gid;
            }
            Err(m) => bad("user", m),
        }
    }
    if let Some(g) = &d.group {
        match crate::privileges::resolve_group(g) {
            Ok(gid) => p.gid = Some(gid),
            Err(m) => bad("group", m),
        }
    }
    if p.uid.is_some() && p.gid.is_none() {
        bad("group", "is required when `user` is a number (no primary group to take)".into());
    }
    for c in d.capabilities.iter().flatten() {
        match reinc_sandbox::capability(c) {
            Ok(_) => p.capabilities.push(c.clone()),
            Err(e) => bad("capabilities", e.to_string()),
        }
    }
    p.sandbox = d.sandbox.unwrap_or(true);
    p.seccomp = d.seccomp.unwrap_or(true);
    if let Some(env) = &d.env {
        for k in env {
            if k.is_empty() || k.contains('=') || k.starts_with(reinc_control::env::RESERVED_PREFIX) {
                bad(
                    "env",
                    format!("{k:?} is not a variable name the driver may inherit (REINC_* are set by the supervisor)"),
                );
            }
        }
        p.env = env.clone();
    }
    p.allow_uids = d.allow_uids.iter().flatten().copied().collect();
    p.allow_gids = d.allow_gids.iter().flatten().copied().collect();
    p
}

/// The default directory for `client.sock` and `control.sock`. The rule
/// lives in the contract crate, because clients must find the sockets
/// without reading this config: `$REINC_RUNTIME_DIR`, else `/run/reinc` for
/// root, else `$XDG_RUNTIME_DIR/reinc`, else `/tmp/reinc-$UID`.
pub use reinc_control::paths::default_runtime_dir;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("[[driver]]\nname = \"storage_driver\"\nexec = \"/bin/true\"\n").unwrap();
        assert_eq!(c.drivers.len(), 1);
        let d = &c.drivers[0];
        assert_eq!(d.heartbeat_misses, 3);
        assert_eq!(d.window, 8);
        assert!(matches!(d.fault_policy, FaultPolicyConfig::Restart(b) if b.max_restarts == 5));
        assert_eq!(d, &DriverConfig::new("storage_driver", "/bin/true"));
    }

    #[test]
    fn standby_is_off_by_default_and_refused_with_a_stop_policy() {
        assert!(!DriverConfig::new("x", "/x").standby);
        let c = parse("[[driver]]\nname = \"a\"\nexec = \"/a\"\nstandby = true\n").unwrap();
        assert!(c.drivers[0].standby);
        let text = "[[driver]]\nname = \"a\"\nexec = \"/a\"\nstandby = true\nfault-policy = \"stop\"\n\
                    [[driver]]\nname = \"b\"\nexec = \"/b\"\nstandby = \"yes\"\n";
        let problems = parse(text).unwrap_err();
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text[0].starts_with("driver \"a\": `standby`: a standby is promoted only when"), "{text:?}");
        assert!(text[1].starts_with("driver \"b\": `standby`:"), "{text:?}");
    }

    #[test]
    fn every_problem_is_reported_with_driver_and_key() {
        let text = r#"
            bogus-top = 1
            [supervisor]
            max-sessions = 0
            [[driver]]
            name = "a"
            exec = "/bin/a"
            jitter-percent = 150
            heartbeat-misses = "three"
            colour = "red"
            [[driver]]
            name = "b"
            fault = "during:1:segv"
            [[driver]]
            name = "a"
            exec = "/bin/a2"
            backoff-base-ms = 500
            backoff-cap-ms = 100
        "#;
        let problems = parse(text).unwrap_err();
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let has = |table: &str, key: &str| problems.iter().any(|p| p.table == table && p.key.as_deref() == Some(key));
        assert!(has("top level", "bogus-top"), "{shown:#?}");
        assert!(has("supervisor", "max-sessions"), "{shown:#?}");
        assert!(has("driver \"a\"", "heartbeat-misses"), "{shown:#?}");
        assert!(has("driver \"a\"", "colour"), "{shown:#?}");
        assert!(has("driver \"b\"", "exec"), "{shown:#?}");
        assert!(has("driver \"a\"", "name"), "duplicate name: {shown:#?}");
        assert!(has("driver \"a\"", "backoff-cap-ms"), "{shown:#?}");
        assert!(has("driver \"a\"", "jitter-percent"), "{shown:#?}");
        assert!(has("driver \"b\"", "fault"), "{shown:#?}");
        assert_eq!(problems.len(), 9, "{shown:#?}");
    }

    #[test]
    fn range_problems_in_one_driver_are_all_listed() {
        let text =
            "[[driver]]\nname = \"x\"\nexec = \"/x\"\njitter-percent = 101\nwindow = 0\nfault = \"init:1:melt\"\n";
        let problems = parse(text).unwrap_err();
        let keys: BTreeSet<_> = problems.iter().filter_map(|p| p.key.clone()).collect();
        assert_eq!(keys, ["fault", "jitter-percent", "window"].into_iter().map(String::from).collect());
    }

    #[test]
    fn queue_depth_accepts_up_to_the_maximum_and_reports_beyond_it_with_the_rest() {
        let with = |depth: u64| parse(&format!("[[driver]]\nname = \"x\"\nexec = \"/x\"\nqueue-depth = {depth}\n"));
        assert_eq!(with(10_000).unwrap().drivers[0].queue_depth, 10_000);
        assert_eq!(with(MAX_QUEUE_DEPTH as u64).unwrap().drivers[0].queue_depth, MAX_QUEUE_DEPTH);
        for bad in [0, MAX_QUEUE_DEPTH as u64 + 1] {
            let text = format!(
                "[supervisor]\nmax-sessions = 0\n[[driver]]\nname = \"x\"\nexec = \"/x\"\nqueue-depth = {bad}\nwindow = 0\n"
            );
            let problems = parse(&text).unwrap_err();
            let keys: BTreeSet<_> = problems.iter().filter_map(|p| p.key.clone()).collect();
            assert_eq!(keys, ["max-sessions", "queue-depth", "window"].into_iter().map(String::from).collect());
            let shown = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
            assert!(shown.contains(&format!("must be between 1 and {MAX_QUEUE_DEPTH}, got {bad}")), "{shown}");
            assert!(shown.contains("driver \"x\""), "{shown}");
        }
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_queue_slot_costs_what_max_queue_depth_documents() {
        assert_eq!(size_of::<reinc_queue::Slot<Vec<u8>>>(), 64);
    }

    #[test]
    fn syntax_error_names_the_line() {
        let problems = parse("[[driver]\nname = 1").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("line 1"), "{}", problems[0]);
    }

    #[test]
    fn example_config_parses_and_states_the_defaults() {
        let c = parse(include_str!("../reinc.example.toml")).unwrap();
        let d = &c.drivers[0];
        let mut defaults = DriverConfig::new("storage_driver", "target/debug/storage_driver");
        defaults.args = d.args.clone();
        assert_eq!(d, &defaults, "the example must document the real defaults");
        assert_eq!((c.supervisor.max_sessions, c.supervisor.dedup_per_session), (256, 1024));
        assert_eq!(c.supervisor.client_socket_mode, DEFAULT_CLIENT_SOCKET_MODE);
        assert_eq!(c.supervisor.limits, crate::limits::Limits::default(), "the example must state the budgets");
        let minimal = parse("[[driver]]\nname = \"x\"\nexec = \"/x\"\n").unwrap();
        assert_eq!(minimal.supervisor.client_socket_mode, DEFAULT_CLIENT_SOCKET_MODE);
        assert_eq!(
            (c.supervisor.journal_recovery, c.supervisor.journal_compact_bytes),
            (minimal.supervisor.journal_recovery, minimal.supervisor.journal_compact_bytes)
        );
    }

    #[test]
    fn durability_and_journal_keys_parse_and_the_journal_excludes_persist_checkpoint() {
        let c = parse(
            "[supervisor]\njournal-recovery = \"truncate\"\n[[driver]]\nname = \"x\"\nexec = \"/x\"\n\
             durability = \"journal\"\n",
        )
        .unwrap();
        assert_eq!(c.supervisor.journal_recovery, JournalRecovery::Truncate);
        assert_eq!(c.drivers[0].durability, DurabilityMode::Journal);
        assert_eq!(DriverConfig::new("y", "/y").durability, DurabilityMode::Memory);
        let p = parse(
            "[supervisor]\njournal-recovery = \"maybe\"\n[[driver]]\nname = \"x\"\nexec = \"/x\"\n\
             durability = \"journal\"\npersist-checkpoint = true\n[[driver]]\nname = \"z\"\nexec = \"/z\"\n\
             durability = \"disk\"\n",
        )
        .unwrap_err();
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(p.len(), 3, "{text:?}");
        assert!(text[0].starts_with("supervisor: `journal-recovery`: unknown variant `maybe`"), "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("driver \"x\": `persist-checkpoint`: durability = \"journal\"")));
        assert!(text.iter().any(|t| t.starts_with("driver \"z\": `durability`: unknown variant `disk`")), "{text:?}");
    }

    #[test]
    fn client_socket_mode_is_an_octal_string() {
        let with = |v: &str| {
            parse(&format!("[supervisor]\nclient-socket-mode = {v}\n[[driver]]\nname = \"x\"\nexec = \"/x\"\n"))
        };
        assert_eq!(with("\"0600\"").unwrap().supervisor.client_socket_mode, 0o600);
        assert_eq!(with("\"666\"").unwrap().supervisor.client_socket_mode, 0o666);
        assert_eq!(with("\"0000\"").unwrap().supervisor.client_socket_mode, 0);
        for bad in ["\"0680\"", "\"rw-rw----\"", "\"04777\"", "\"1777\"", "\"60\"", "\"\"", "0o660", "432"] {
            let problems = with(bad).unwrap_err();
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert_eq!(
                (problems[0].table.as_str(), problems[0].key.as_deref()),
                ("supervisor", Some("client-socket-mode"))
            );
        }
    }

    #[test]
    fn a_bad_client_socket_mode_is_reported_with_the_other_problems() {
        let text = "[supervisor]\nclient-socket-mode = \"999\"\nmax-sessions = 0\n[[driver]]\nname = \"x\"\nexec = \"/x\"\nwindow = 0\n";
        let problems = parse(text).unwrap_err();
        let keys: BTreeSet<_> = problems.iter().filter_map(|p| p.key.clone()).collect();
        assert_eq!(keys, ["client-socket-mode", "max-sessions", "window"].into_iter().map(String::from).collect());
        let shown = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        assert!(shown.contains("supervisor: `client-socket-mode`: must be an octal mode"), "{shown}");
    }

    #[test]
    fn starved_grace_defaults_to_two_seconds_and_zero_turns_it_off() {
        let c = parse("[[driver]]\nname = \"x\"\nexec = \"/x\"\n").unwrap();
        assert_eq!(c.drivers[0].starved_grace, Millis(DEFAULT_STARVED_GRACE_MS));
        let c = parse("[[driver]]\nname = \"x\"\nexec = \"/x\"\nstarved-grace-ms = 0\n").unwrap();
        assert_eq!(c.drivers[0].starved_grace, Millis::ZERO);
        let problems = parse("[[driver]]\nname = \"x\"\nexec = \"/x\"\nstarved-grace-ms = 3600001\n").unwrap_err();
        let shown = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        assert!(shown.contains("`starved-grace-ms`: must be between 0 and 3600000, got 3600001"), "{shown}");
    }

    #[test]
    fn empty_config_has_no_driver() {
        let problems = parse("").unwrap_err();
        assert_eq!(problems[0].key.as_deref(), Some("driver"));
    }

    #[test]
    fn device_selector_becomes_an_argument() {
        let c = parse("[[driver]]\nname = \"e\"\nexec = \"/e\"\nargs = [\"-v\"]\ndevice = \"uio0\"\n").unwrap();
        assert_eq!(c.drivers[0].args, ["-v", "--device", "uio0"]);
    }

    #[test]
    fn absurd_values_are_refused_with_the_floor_named() {
        let text = "[[driver]]\nname = \"x\"\nexec = \"/x\"\ninit-timeout-ms = 1\nheartbeat-interval-ms = 1\n\
                    queue-depth = 4\nwindow = 8\nrestart-window-ms = 1\nbackoff-base-ms = 0\nbackoff-cap-ms = 0\n";
        let problems = parse(text).unwrap_err();
        let shown = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        let keys: BTreeSet<_> = problems.iter().filter_map(|p| p.key.clone()).collect();
        assert_eq!(
            keys,
            ["heartbeat-interval-ms", "init-timeout-ms", "restart-window-ms", "window"]
                .into_iter()
                .map(String::from)
                .collect(),
            "{shown}"
        );
        assert!(shown.contains(&format!("`init-timeout-ms`: must be between {MIN_INIT_TIMEOUT_MS} and")), "{shown}");
        assert!(shown.contains("`window`: (8) must not exceed queue-depth (4)"), "{shown}");
        assert!(shown.contains("more than 64 a second: use at least 79 ms"), "{shown}");
    }

    #[test]
    fn no_accepted_config_allows_more_than_the_restart_rate_floor() {
        for max in 0..=MAX_RESTARTS_IN_WINDOW as u64 {
            for window in [1u64, 10, 15, 16, 100, 999, 1_000, 60_000] {
                let text = format!(
                    "[[driver]]\nname = \"x\"\nexec = \"/x\"\nmax-restarts = {max}\nrestart-window-ms = {window}\n\
                     backoff-base-ms = 0\nbackoff-cap-ms = 0\nhealthy-after-ms = 1\n"
                );
                if let Ok(c) = parse(&text) {
                    let FaultPolicyConfig::Restart(b) = c.drivers[0].fault_policy else { unreachable!() };
                    // Sustained launches per second before quarantine.
                    assert!(u64::from(b.max_restarts) * 1000 <= MAX_RESTARTS_PER_SECOND * b.window.0, "{max}/{window}");
                }
            }
        }
        // What the rigs use stays valid.
        let ok = "[[driver]]\nname = \"x\"\nexec = \"/x\"\nmax-restarts = 64\nrestart-window-ms = 1000\n";
        assert!(parse(ok).is_ok());
    }

    #[test]
    fn load_checks_that_every_exec_is_an_executable_file_with_the_other_problems() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("reinc-cfg-exec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("a-dir")).unwrap();
        std::fs::write(d.join("plain"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(d.join("plain"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = |n: &str| d.join(n).display().to_string();
        let text = format!(
            "[[driver]]\nname = \"missing\"\nexec = \"{}\"\n[[driver]]\nname = \"dir\"\nexec = \"{}\"\n\
             [[driver]]\nname = \"noexec\"\nexec = \"{}\"\n[[driver]]\nname = \"empty\"\nexec = \"\"\n\
             [[driver]]\nname = \"fine\"\nexec = \"/bin/sh\"\n[[driver]]\nname = \"path\"\nexec = \"sh\"\n\
             [[driver]]\nname = \"nopath\"\nexec = \"no-such-reinc-driver\"\nwindow = 0\n",
            e("nope"),
            e("a-dir"),
            e("plain")
        );
        let file = d.join("c.toml");
        std::fs::write(&file, &text).unwrap();
        let err = load(&file).unwrap_err().to_string();
        for needle in [
            format!("driver \"missing\": `exec`: {} does not exist", e("nope")),
            format!("driver \"dir\": `exec`: {} is not a regular file", e("a-dir")),
            format!("driver \"noexec\": `exec`: {} is not executable", e("plain")),
            "driver \"empty\": `exec`: must not be empty".into(),
            "driver \"nopath\": `exec`: no-such-reinc-driver is not found in $PATH".into(),
            "driver \"nopath\": `window`".into(),
        ] {
            assert!(err.contains(&needle), "missing {needle:?} in\n{err}");
        }
        assert!(err.contains("has 6 problem(s)"), "{err}");
        // parse() alone does not look at files (except the empty path).
        assert_eq!(parse(&text).unwrap_err().len(), 2);
        std::fs::remove_dir_all(d).unwrap();
    }
}
