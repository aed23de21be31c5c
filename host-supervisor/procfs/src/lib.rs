//! `/proc/<pid>/stat` and `/proc/<pid>/schedstat`, read one way for everyone.
//!
//! # Why this crate exists
//! The tests, the benchmarks and the xtask's demo all ask the same two
//! questions of a process they started: is it gone, and how much CPU has it
//! used? Each used to carry its own parser, and they disagreed: for a stat
//! line they could not parse, one copy answered "alive" and two answered
//! "gone". This crate is the one copy.
//!
//! The supervisor asks a third question of a driver that stops answering
//! heartbeats: did it hang, or did it only wait for a CPU? [`sched`] reads
//! what it needs for that: the state, the time on a CPU and the time spent
//! waiting on a run queue, both in nanoseconds (`schedstat`). And a fourth
//! of an instance it killed that does not die: where in the kernel is it
//! stuck? [`wchan`] names the function.
//!
//! # The answer for a line that cannot be parsed
//! **Not gone.** The file exists, so the kernel still has the process; and
//! every caller asks "gone?" to *prove absence* (an old instance was killed,
//! no driver outlived its supervisor, no orphan is left). An unreadable
//! state must make such a check fail loudly, never pass by accident. Only a
//! missing file, or the zombie (`Z`) and dead (`X`) states, count as gone.
//!
//! # Designs rejected
//! - The `procfs` crate: a large dependency for one line of one file, and
//!   the xtask keeps its dependencies few.
//! - `kill(pid, 0)`: needs libc or nix, and answers "alive" for a zombie,
//!   which is exactly the case a reaping test must see as gone.
#![forbid(unsafe_code)]

use std::time::Duration;

/// What this crate reads of one `/proc/<pid>/stat` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Field 3: `R`, `S`, `D`, `Z`, `T`, `X`, …
    pub state: char,
    /// Fields 14 and 15, in clock ticks.
    pub utime: u64,
    pub stime: u64,
}

impl Stat {
    /// Parses a stat line. The command (field 2) may contain spaces and
    /// parentheses, so fields are counted from the last `") "`.
    #[must_use]
    pub fn parse(line: &str) -> Option<Stat> {
        let rest = line.rsplit_once(") ")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let state = f.first()?.chars().next()?;
        // `rest` starts at field 3, so fields 14 and 15 are at 11 and 12.
        Some(Stat { state, utime: f.get(11)?.parse().ok()?, stime: f.get(12)?.parse().ok()? })
    }

    /// Zombie or dead: the process no longer runs.
    #[must_use]
    pub fn is_gone(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }

    /// User plus system time, given the clock's ticks per second
    /// (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
    #[must_use]
    pub fn cpu_time(&self, ticks_per_second: u64) -> Duration {
        Duration::from_micros((self.utime + self.stime) * 1_000_000 / ticks_per_second.max(1))
    }
}

/// `/proc/<pid>/stat`, parsed; `None` if it cannot be read or parsed.
#[must_use]
pub fn stat(pid: u32) -> Option<Stat> {
    Stat::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// How much a process ran and waited to run: `/proc/<pid>/schedstat` and the
/// state from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sched {
    /// Field 3 of `stat`: `R` is running or runnable, i.e. ready to run.
    pub state: char,
    /// Time on a CPU, in nanoseconds (`schedstat` field 1).
    pub ran_ns: u64,
    /// Time runnable but waiting for a CPU, in nanoseconds (`schedstat`
    /// field 2). The kernel adds a wait when it ends, so a wait still going
    /// on is not in it: a process that is `R` and barely ran is waiting now.
    pub waited_ns: u64,
}

impl Sched {
    /// Parses a `schedstat` line (`ran waited timeslices`).
    #[must_use]
    pub fn parse(state: char, schedstat: &str) -> Option<Sched> {
        let mut f = schedstat.split_whitespace();
        let ran_ns = f.next()?.parse().ok()?;
        let waited_ns = f.next()?.parse().ok()?;
        Some(Sched { state, ran_ns, waited_ns })
    }
}

/// The scheduling figures of `pid`; `None` if either file cannot be read
/// or parsed (a kernel without `CONFIG_SCHED_INFO` has no `schedstat`).
#[must_use]
pub fn sched(pid: u32) -> Option<Sched> {
    let state = stat(pid)?.state;
    Sched::parse(state, &std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?)
}

/// True if `pid` no longer runs: no `/proc/<pid>`, or a zombie nobody reaped
/// yet. A stat line that cannot be parsed is *not* gone (see the crate doc).
#[must_use]
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(line) => gone_from_stat(&line),
    }
}

/// Where in the kernel `pid` sleeps (`/proc/<pid>/wchan`): a function
/// name, or `None` if it runs, is gone, or the kernel does not say.
#[must_use]
pub fn wchan(pid: u32) -> Option<String> {
    wchan_from(&std::fs::read_to_string(format!("/proc/{pid}/wchan")).ok()?)
}

fn wchan_from(text: &str) -> Option<String> {
    let w = text.trim();
    (!w.is_empty() && w != "0").then(|| w.to_owned())
}

fn gone_from_stat(line: &str) -> bool {
    Stat::parse(line).is_some_and(|s| s.is_gone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ODD: &str = "42 (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 1 0 5 1000 50";

    #[test]
    fn fields_are_counted_after_a_command_with_parentheses() {
        let s = Stat::parse(ODD).unwrap();
        assert_eq!((s.state, s.utime, s.stime), ('S', 250, 150));
        assert_eq!(s.cpu_time(100), Duration::from_secs(4));
    }

    #[test]
    fn zombies_and_dead_processes_are_gone() {
        assert!(gone_from_stat(&ODD.replace(") S ", ") Z ")));
        assert!(gone_from_stat(&ODD.replace(") S ", ") X ")));
        assert!(!gone_from_stat(ODD));
    }

    #[test]
    fn an_unparsable_stat_line_is_not_proof_of_absence() {
        assert!(!gone_from_stat("garbage"));
        assert!(!gone_from_stat("42 (x) "));
        assert_eq!(Stat::parse("garbage"), None);
    }

    #[test]
    fn schedstat_gives_ran_and_waited_nanoseconds() {
        assert_eq!(
            Sched::parse('R', "179269939 8878374 356\n"),
            Some(Sched { state: 'R', ran_ns: 179_269_939, waited_ns: 8_878_374 })
        );
        assert_eq!(Sched::parse('S', "12"), None);
        assert_eq!(Sched::parse('S', "a b c"), None);
        // The main thread of the test harness waits for this one: it has
        // run, and it is not running now.
        let me = sched(std::process::id()).expect("this kernel has schedstat");
        assert!(me.ran_ns > 0);
        assert_ne!(me.state, 'Z');
        assert_eq!(sched(4_194_305), None);
    }

    #[test]
    fn a_wchan_is_a_function_name_or_nothing() {
        assert_eq!(wchan_from("do_epoll_wait"), Some("do_epoll_wait".into()));
        assert_eq!(wchan_from("0"), None);
        assert_eq!(wchan_from(""), None);
        assert_eq!(wchan(4_194_305), None);
    }

    #[test]
    fn this_process_runs_and_a_missing_one_is_gone() {
        let me = std::process::id();
        assert!(!process_gone(me));
        assert!(stat(me).is_some_and(|s| !s.is_gone()));
        // Beyond the default pid_max (4194304 is the largest possible).
        assert!(process_gone(4_194_305));
    }
}
