//! Progress for the long steps: downloads, unpacking, builds.
//!
//! On a terminal a step redraws one line in place, as cargo does: bytes so
//! far, the total, the rate and an ETA. When stderr is not a terminal (CI
//! logs) it prints a plain line at most every [`PLAIN_EVERY`], so a log gets a
//! handful of readable lines instead of carriage-return spam. Every step ends
//! with one summary line either way.
//!
//! A step whose size is known is watched from outside: [`watch`] runs a
//! command and samples a measure (e.g. the bytes in a download directory)
//! while it runs. The formatting is pure and unit-tested; only [`Progress`]
//! touches stderr.
//!
//! Rejected: parsing apt's or dpkg's own progress output (it differs between
//! versions, and apt prints none when not on a terminal), and the
//! `indicatif` crate (a dependency tree compiled before every first `cargo
//! xtask` for one line of output).

use std::io::{IsTerminal, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{self, Error, Result};

/// How often a plain (non-terminal) progress line is printed at most.
pub const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// How often a terminal line is redrawn.
const TTY_EVERY: Duration = Duration::from_millis(200);

/// One long step's progress reporter.
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: Option<u64>,
    started: Instant,
    last_print: Option<Instant>,
    tty: bool,
}

impl Progress {
    /// A reporter for `label`, of `total` bytes when known.
    pub fn new(label: impl Into<String>, total: Option<u64>) -> Progress {
        Progress::with_tty(label, total, std::io::stderr().is_terminal())
    }

    fn with_tty(label: impl Into<String>, total: Option<u64>, tty: bool) -> Progress {
        Progress { label: label.into(), total, started: Instant::now(), last_print: None, tty }
    }

    /// Reports `done` bytes so far; prints only when it is time to.
    pub fn update(&mut self, done: u64) {
        let now = Instant::now();
        if let Some(line) = self.line_due(now, done) {
            let mut err = std::io::stderr().lock();
            if self.tty {
                let _ = write!(err, "\r\x1b[2K{line}");
            } else {
                let _ = writeln!(err, "{line}");
            }
            let _ = err.flush();
        }
    }

    /// The line to print at `now`, if one is due.
    fn line_due(&mut self, now: Instant, done: u64) -> Option<String> {
        let every = if self.tty { TTY_EVERY } else { PLAIN_EVERY };
        match self.last_print {
            Some(last) if now.duration_since(last) < every => return None,
            // A plain log gets no line for steps shorter than one period.
            None if !self.tty && now.duration_since(self.started) < every => return None,
            _ => {}
        }
        self.last_print = Some(now);
        Some(format!("xtask: {}", status_line(&self.label, done, self.total, now.duration_since(self.started))))
    }

    /// Ends the step with one summary line.
    pub fn finish(&self, done: u64) {
        let elapsed = self.started.elapsed();
        let clear = if self.tty && self.last_print.is_some() { "\r\x1b[2K" } else { "" };
        eprintln!("{clear}xtask: {}", finished_line(&self.label, done, elapsed));
    }
}

/// `label  12.3 MiB / 70.0 MiB  4.1 MiB/s  ETA 14 s` (what is known of it).
pub fn status_line(label: &str, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    if done == 0 && total.is_none() {
        return format!("{label}  {} elapsed", duration(elapsed.as_secs()));
    }
    let rate = rate(done, elapsed);
    let mut s = format!("{label}  {}", bytes(done));
    if let Some(total) = total {
        s.push_str(&format!(" / {}", bytes(total)));
    }
    if let Some(rate) = rate {
        s.push_str(&format!("  {}/s", bytes(rate)));
    }
    match (total, rate) {
        (Some(total), Some(rate)) if rate > 0 && total > done => {
            s.push_str(&format!("  ETA {}", duration((total - done) / rate)))
        }
        _ => s.push_str(&format!("  {} elapsed", duration(elapsed.as_secs()))),
    }
    s
}

/// `label: 70.0 MiB in 14 s (5.0 MiB/s)`, or without bytes for steps that
/// measure none.
pub fn finished_line(label: &str, done: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if done == 0 {
        return format!("{label}: done in {secs:.1} s");
    }
    match rate(done, elapsed) {
        Some(r) => format!("{label}: {} in {secs:.1} s ({}/s)", bytes(done), bytes(r)),
        None => format!("{label}: {} in {secs:.1} s", bytes(done)),
    }
}

fn rate(done: u64, elapsed: Duration) -> Option<u64> {
    let ms = elapsed.as_millis() as u64;
    (ms >= 500 && done > 0).then(|| done.saturating_mul(1000) / ms)
}

/// Bytes the way cargo prints them: B, KiB, MiB, GiB with one decimal.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// `42 s`, `3 min 05 s`.
pub fn duration(secs: u64) -> String {
    if secs < 60 { format!("{secs} s") } else { format!("{} min {:02} s", secs / 60, secs % 60) }
}

/// Runs `cmd` to completion, reporting `measure()` (bytes done so far) as the
/// progress of `label` of `total` bytes; fails like [`util::run`].
pub fn watch(cmd: &mut Command, label: &str, total: Option<u64>, measure: impl Fn() -> u64) -> Result {
    let what = util::describe(cmd);
    eprintln!("$ {what}");
    let mut child = cmd.spawn().map_err(|source| Error::Spawn { what: what.clone(), source })?;
    let mut progress = Progress::new(label, total);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {
                progress.update(measure());
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(source) => return Err(Error::Spawn { what, source }),
        }
    };
    progress.finish(measure());
    if status.success() { Ok(()) } else { Err(Error::Command { what, status: status.to_string() }) }
}

/// Bytes in the regular files directly under `dir` (and its `partial/`, where
/// apt keeps unfinished downloads), minus `baseline`.
pub fn dir_bytes(dir: &std::path::Path, baseline: u64) -> u64 {
    let sum = |d: &std::path::Path| -> u64 {
        std::fs::read_dir(d)
            .map(|it| it.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
            .unwrap_or(0)
    };
    (sum(dir) + sum(&dir.join("partial"))).saturating_sub(baseline)
}

/// Bytes in the regular files anywhere under `dir` (for unpacking).
pub fn tree_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units_with_one_decimal() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(70 * 1024 * 1024), "70.0 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn status_line_shows_rate_and_eta_when_the_total_is_known() {
        let line = status_line("kernel", 10 << 20, Some(70 << 20), Duration::from_secs(5));
        assert_eq!(line, "kernel  10.0 MiB / 70.0 MiB  2.0 MiB/s  ETA 30 s");
        let unknown = status_line("source", 10 << 20, None, Duration::from_secs(125));
        assert!(unknown.ends_with("2 min 05 s elapsed"), "{unknown}");
        assert_eq!(status_line("tar", 0, None, Duration::from_secs(12)), "tar  12 s elapsed", "a step without bytes");
        let start = status_line("x", 0, Some(100), Duration::from_millis(10));
        assert_eq!(start, "x  0 B / 100 B  0 s elapsed", "no rate before anything arrived");
    }

    #[test]
    fn plain_logs_get_a_line_per_period_and_none_for_short_steps() {
        let mut p = Progress::with_tty("dl", Some(100), false);
        let t0 = p.started;
        assert_eq!(p.line_due(t0 + Duration::from_secs(1), 10), None, "short steps print only their summary");
        assert!(p.line_due(t0 + PLAIN_EVERY, 50).is_some());
        assert_eq!(p.line_due(t0 + PLAIN_EVERY + Duration::from_secs(3), 60), None, "at most one line per period");
        let next = p.line_due(t0 + PLAIN_EVERY * 2, 70).expect("next period");
        assert!(!next.contains('\r'), "plain lines carry no carriage returns: {next:?}");
    }

    #[test]
    fn terminals_redraw_often() {
        let mut p = Progress::with_tty("dl", Some(100), true);
        let t0 = p.started;
        assert!(p.line_due(t0 + Duration::from_millis(1), 1).is_some(), "a terminal sees the step at once");
        assert_eq!(p.line_due(t0 + Duration::from_millis(50), 2), None);
        assert!(p.line_due(t0 + Duration::from_millis(300), 3).is_some());
    }

    #[test]
    fn finished_line_summarises_bytes_and_time() {
        assert_eq!(finished_line("kernel", 0, Duration::from_millis(2500)), "kernel: done in 2.5 s");
        assert_eq!(finished_line("kernel", 10 << 20, Duration::from_secs(4)), "kernel: 10.0 MiB in 4.0 s (2.5 MiB/s)");
    }

    #[test]
    fn watch_reports_the_exit_status_of_the_command() {
        watch(&mut Command::new("true"), "ok step", None, || 0).expect("true succeeds");
        let e = watch(&mut Command::new("false"), "bad step", None, || 0).expect_err("false fails");
        assert!(e.to_string().contains("`false` failed"), "{e}");
    }
}
