//! Killed instances that do not die: said, with where they are stuck.
//!
//! After a SIGKILL the supervisor waits for the exit before it relaunches
//! or replays anything: until then the old instance may still finish the
//! system call it is in (a `pwrite` to the device, say), and a replay to a
//! new instance would race it. That wait is right, but it used to be
//! silent. A task in uninterruptible sleep (`D`) keeps its SIGKILL pending
//! for as long as the kernel keeps it there; seen on the campaign's 2-core
//! VM, where every process mapping or unmapping libc (dying drivers in
//! `exit_mmap`, starting ones in `__mmap_region`) queued on libc's
//! `i_mmap` lock for 3–20 s at a time.
//! So a killed instance still there [`FIRST`] later is reported with its
//! state and kernel function (`/proc/<pid>/stat`, `wchan`), and again every
//! [`AGAIN`]: the user sees why recovery is slow, and that it is not the
//! supervisor.
//!
//! A zombie found here has a SIGCHLD not seen yet (just died) or lost: it
//! is reaped at once, and said so.
//!
//! # Designs rejected
//! - Relaunching without waiting for the death: the replay would race the
//!   old instance's last system call (see above).
//! - A core deadline and event for it: the core already decides the kill;
//!   what the process does in the kernel afterwards is the adapter's to see.

use super::Daemon;
use std::time::{Duration, Instant};
use tracing::warn;

/// The first report, this long after the SIGKILL (recoveries take
/// milliseconds; a second is far outside them).
pub(super) const FIRST: Duration = Duration::from_secs(1);
/// Then one more report this often while it lasts.
pub(super) const AGAIN: Duration = Duration::from_secs(10);

/// A SIGKILL sent to an instance, and how often its not dying was said.
#[derive(Debug, Clone, Copy)]
pub(super) struct Killed {
    pub(super) at: Instant,
    pub(super) reports: u32,
}

impl Killed {
    pub(super) fn new(at: Instant) -> Self {
        Self { at, reports: 0 }
    }

    /// When the next report is due.
    pub(super) fn due(&self) -> Instant {
        self.at + FIRST + AGAIN * self.reports
    }
}

/// The line for an instance not dead `after` its SIGKILL, in state `state`
/// (`None`: no longer in `/proc`) sleeping in kernel function `wchan`.
pub(super) fn line(who: &str, pid: i32, after: Duration, state: Option<char>, wchan: Option<&str>) -> String {
    let secs = after.as_secs_f64();
    let at = wchan.map_or_else(String::new, |w| format!(", in {w}"));
    let how = match state {
        Some('D') => format!(
            "it is in uninterruptible sleep in the kernel (D{at}), where SIGKILL waits; \
             nothing is relaunched or replayed until it is gone"
        ),
        // Its SIGCHLD may only be unread yet (it died just now), or lost.
        Some('Z') => "it is a zombie not reaped yet (no SIGCHLD seen for it); reaping it now".into(),
        Some(s) => format!("it is in state {s}{at}; nothing is relaunched or replayed until it is gone"),
        None => "it is gone; reaping it now".into(),
    };
    format!("[SUP] {who} (pid {pid}) has not died {secs:.1} s after SIGKILL: {how}")
}

impl Daemon {
    /// Reports killed instances that are still there (see the module doc);
    /// returns when the next report is due, for the loop's timeout.
    pub(super) fn check_dying(&mut self) -> Option<Instant> {
        if self.dying.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut reap = false;
        for (key @ (driver, generation), k) in &mut self.dying {
            if k.due() > now {
                continue;
            }
            k.reports += 1;
            let Some(l) = self.live.get(key) else { continue };
            let pid = l.pid.as_raw();
            let raw = u32::try_from(pid).unwrap_or_default();
            let state = reinc_procfs::stat(raw).map(|s| s.state);
            reap |= matches!(state, None | Some('Z' | 'X'));
            let who = format!("{} {generation}", self.core.config(*driver).name);
            warn!("{}", line(&who, pid, now - k.at, state, reinc_procfs::wchan(raw).as_deref()));
        }
        if reap {
            self.reap();
        }
        // Gone meanwhile (reaped): nothing more to watch.
        self.dying.retain(|key, _| self.live.contains_key(key));
        self.dying.values().map(Killed::due).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_come_a_second_after_the_kill_then_every_ten() {
        let t = Instant::now();
        let mut k = Killed::new(t);
        assert_eq!(k.due(), t + FIRST);
        k.reports = 1;
        assert_eq!(k.due(), t + FIRST + AGAIN);
        k.reports = 3;
        assert_eq!(k.due(), t + FIRST + AGAIN * 3);
    }

    #[test]
    fn the_line_says_where_the_instance_is_stuck_and_what_waits() {
        let d = line(
            "net_driver gen43",
            8065,
            Duration::from_millis(1500),
            Some('D'),
            Some("unlink_file_vma_batch_process"),
        );
        assert_eq!(
            d,
            "[SUP] net_driver gen43 (pid 8065) has not died 1.5 s after SIGKILL: it is in uninterruptible sleep \
             in the kernel (D, in unlink_file_vma_batch_process), where SIGKILL waits; nothing is relaunched or \
             replayed until it is gone"
        );
        let z = line("x gen1", 7, FIRST, Some('Z'), None);
        assert!(z.contains("zombie") && z.contains("reaping it now"), "{z}");
        let r = line("x gen1", 7, FIRST, Some('R'), None);
        assert!(r.contains("state R;"), "{r}");
        assert!(line("x gen1", 7, FIRST, None, None).contains("gone; reaping"));
    }
}
