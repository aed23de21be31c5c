//! A driver's log, rate-limited: a peer must not be able to turn requests
//! into an unbounded stream of log lines.
//!
//! Two connections sending malformed bodies used to make `storage_driver`
//! write 300 000 WARN lines (31.5 MB) in 10 s, one per request. Every line a
//! driver logs through `tracing` now passes a token bucket ([`RATE`] lines a
//! second, bursts of [`BURST`]); what does not fit is counted, and the next
//! line that does is preceded by one summary:
//! `[driver] NAME: suppressed N log lines in the last 2.1s (rate limit 50/s)`.
//!
//! The limit is per process, i.e. per driver instance: the source of the
//! lines. (The supervisor's own per-connection lines are summarized where
//! they are produced: refused connections and slow clients.)
//!
//! # Designs rejected
//! - Piping every driver's stderr through the supervisor to limit it there:
//!   one more descriptor and buffer per driver in the event loop, and a
//!   driver compromised enough to write to fd 2 directly could as well write
//!   to any other file it can open; the sandbox, not the log path, is what
//!   contains that.
//! - Per-callsite limits: a flood from one callsite and a flood from three
//!   are the same flood for whoever reads the log.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines per second let through in the long run.
pub const RATE: u32 = 50;
/// Lines let through at once after a quiet period.
pub const BURST: u32 = 200;

/// The token bucket and what it dropped.
#[derive(Debug)]
pub struct Limiter {
    tokens: f64,
    last: Instant,
    suppressed: u64,
    since: Option<Instant>,
}

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Write it, after a summary of `suppressed` lines dropped over `over`
    /// when that is `Some`.
    Yes(Option<(u64, Duration)>),
    /// Drop it (counted).
    No,
}

impl Limiter {
    /// A full bucket at `now`.
    #[must_use]
    pub fn new(now: Instant) -> Self {
        Self { tokens: f64::from(BURST), last: now, suppressed: 0, since: None }
    }

    /// Decides about one line at `now`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * f64::from(RATE)).min(f64::from(BURST));
        if self.tokens < 1.0 {
            self.suppressed += 1;
            self.since.get_or_insert(now);
            return Admit::No;
        }
        self.tokens -= 1.0;
        let summary = self.since.take().map(|t| (std::mem::take(&mut self.suppressed), now.duration_since(t)));
        Admit::Yes(summary)
    }
}

/// A `tracing_subscriber` writer for stderr that applies one [`Limiter`].
#[derive(Debug)]
pub struct LimitedStderr {
    name: String,
    limiter: Mutex<Limiter>,
}

impl LimitedStderr {
    /// For the driver `name` (used in the summary line).
    #[must_use]
    pub fn new(name: String) -> Self {
        Self { name, limiter: Mutex::new(Limiter::new(Instant::now())) }
    }
}

/// One event's bytes, written or dropped as a whole.
#[derive(Debug)]
pub struct LineWriter<'a> {
    owner: &'a LimitedStderr,
    buf: Vec<u8>,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter<'_> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let admit = self.owner.limiter.lock().map_or(Admit::Yes(None), |mut l| l.admit(Instant::now()));
        let mut err = std::io::stderr().lock();
        match admit {
            Admit::No => {}
            Admit::Yes(summary) => {
                if let Some((n, over)) = summary {
                    let _ = writeln!(
                        err,
                        "[driver] {}: suppressed {n} log lines in the last {:.1}s (rate limit {RATE}/s)",
                        self.owner.name,
                        over.as_secs_f64()
                    );
                }
                let _ = err.write_all(&self.buf);
            }
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LimitedStderr {
    type Writer = LineWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { owner: self, buf: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gets_the_burst_then_the_rate_and_one_summary() {
        let t0 = Instant::now();
        let mut l = Limiter::new(t0);
        // 10 000 lines in one instant: the burst passes, the rest is counted.
        let passed = (0..10_000).filter(|_| l.admit(t0) != Admit::No).count();
        assert_eq!(passed, BURST as usize);
        // One second later: one summary of everything dropped, then the rate.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.admit(t1), Admit::Yes(Some((10_000 - u64::from(BURST), Duration::from_secs(1)))));
        let more = (0..1_000).filter(|_| l.admit(t1) != Admit::No).count();
        assert_eq!(more, RATE as usize - 1);
    }

    #[test]
    fn a_quiet_driver_is_never_limited() {
        let t0 = Instant::now();
        let mut l = Limiter::new(t0);
        for i in 0..10_000u32 {
            let t = t0 + Duration::from_millis(u64::from(i) * 25); // 40 lines a second
            assert_eq!(l.admit(t), Admit::Yes(None));
        }
    }
}
