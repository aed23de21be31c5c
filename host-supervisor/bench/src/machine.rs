//! The machine description every report starts with, and `/proc` readers
//! for a process's memory and CPU time.

use std::path::Path;
use std::time::Duration;

/// What the figures were measured on.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo`.
    pub cpu: String,
    /// Online CPUs.
    pub cores: usize,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// `MemTotal` in MiB.
    pub memory_mib: u64,
    /// Filesystem type of the directory persisted checkpoints go to.
    pub state_fs: String,
    /// 1-minute load average when the run started (other tenants' work
    /// shows here; the ratios are meant to survive it, absolute times not).
    pub load_at_start: f64,
}

impl Machine {
    /// Reads the description; unknown fields say `unknown`.
    #[must_use]
    pub fn describe(state_dir: &Path) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            cpu: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned()),
            memory_mib: kib_field(&meminfo, "MemTotal:").unwrap_or(0) / 1024,
            state_fs: filesystem_of(state_dir).unwrap_or_else(|| "unknown".into()),
            load_at_start: load_average().unwrap_or(f64::NAN),
        }
    }
}

/// The 1-minute load average (`/proc/loadavg`).
#[must_use]
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// A `Key:   123 kB` field of `/proc/meminfo` or `/proc/PID/status`, in KiB.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key))?.split_whitespace().next()?.parse().ok()
}

/// The filesystem type of the mount holding `dir` (longest matching mount
/// point in `/proc/self/mounts`).
fn filesystem_of(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(point).then(|| (point.len(), fstype.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, t)| t)
}

/// Resident memory of `pid` in KiB (`VmRSS`).
#[must_use]
pub fn rss_kib(pid: u32) -> Option<u64> {
    kib_field(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?, "VmRSS:")
}

/// CPU time consumed so far by `pid`: from `/proc/PID/schedstat`
/// (nanoseconds on a CPU), else from `/proc/PID/stat` (user + system, in
/// clock ticks of 10 ms: too coarse for an idle supervisor).
#[must_use]
pub fn cpu_time(pid: u32) -> Option<Duration> {
    if let Some(ns) = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
    {
        return Some(Duration::from_nanos(ns));
    }
    Some(reinc_procfs::stat(pid)?.cpu_time(clock_ticks()))
}

/// The children of `pid`: the union of `/proc/PID/task/TID/children` over
/// its threads (each file lists the children that thread forked).
#[must_use]
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| text.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().map_or(100, |t| t as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_and_cpu_model_parse() {
        assert_eq!(kib_field("MemTotal:       24684544 kB\nMemFree: 1 kB\n", "MemTotal:"), Some(24_684_544));
        assert_eq!(kib_field("VmRSS:\t  3120 kB\n", "VmRSS:"), Some(3120));
        assert_eq!(cpu_model("processor\t: 0\nmodel name\t: AMD EPYC\n").as_deref(), Some("AMD EPYC"));
        assert_eq!(cpu_model("processor\t: 0\n"), None);
    }

    #[test]
    fn a_spawned_child_is_listed_among_the_children() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let listed = children(std::process::id()).contains(&child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(listed);
    }

    #[test]
    fn this_process_has_rss_and_cpu_time() {
        let me = std::process::id();
        assert!(rss_kib(me).is_some_and(|k| k > 0));
        assert!(cpu_time(me).is_some());
    }
}
