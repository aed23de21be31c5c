//! What the core counts for `drvctl metrics` ([`crate::metrics`]): crashes
//! by cause (signals by name), quarantines, replayed requests, and how long
//! each driver took from a crash to `Ready` again.

use super::{DriverId, ExitStatus, Supervisor, signal_name};
use crate::metrics::{Histogram, Text};
use reinc_policy::Millis;
use std::collections::BTreeMap;

/// Per-driver counters.
#[derive(Debug, Default, Clone)]
pub(super) struct DriverCounters {
    crashes: BTreeMap<String, u64>,
    quarantines: u64,
    replayed: u64,
    recovery: Histogram,
    down_since: Option<Millis>,
    starved: u64,
    starved_said: Option<Millis>,
}

/// At most one `[SUP]` line per driver in this long for starved verdicts.
const STARVED_SAY_EVERY: Millis = Millis(10_000);

/// The cause label of an instance's end.
pub(super) fn cause(killed_for: Option<&str>, fatal: bool, status: Option<ExitStatus>) -> String {
    match (killed_for, fatal, status) {
        (Some(k), _, _) if k.starts_with("hung") => "hung".into(),
        (Some(_), _, _) => "killed".into(),
        (None, true, _) => "fatal".into(),
        (None, false, Some(ExitStatus::Signal(s))) => signal_name(s),
        (None, false, Some(ExitStatus::Code(c))) => format!("exit {c}"),
        (None, false, None) => "spawn failed".into(),
    }
}

impl Supervisor {
    fn counters(&mut self, id: DriverId) -> &mut DriverCounters {
        if self.counters.len() <= id.0 {
            self.counters.resize_with(id.0 + 1, DriverCounters::default);
        }
        &mut self.counters[id.0]
    }

    /// An instance of `id` failed at `now`.
    pub(super) fn count_crash(&mut self, id: DriverId, now: Millis, cause: String) {
        let c = self.counters(id);
        *c.crashes.entry(cause).or_default() += 1;
        c.down_since.get_or_insert(now);
    }

    /// A hang verdict found `id` starved of CPU at `now`; true if that is
    /// worth a `[SUP]` line (the first, then one per [`STARVED_SAY_EVERY`]).
    pub(super) fn count_starved(&mut self, id: DriverId, now: Millis) -> (bool, u64) {
        let c = self.counters(id);
        c.starved += 1;
        let say = c.starved_said.is_none_or(|t| now.since(t) >= STARVED_SAY_EVERY);
        if say {
            c.starved_said = Some(now);
        }
        (say, c.starved)
    }

    /// `id` was quarantined.
    pub(super) fn count_quarantine(&mut self, id: DriverId) {
        self.counters(id).quarantines += 1;
    }

    /// An instance of `id` became ready at `now`, with `replayed` requests
    /// to replay.
    pub(super) fn count_ready(&mut self, id: DriverId, now: Millis, replayed: usize) {
        let c = self.counters(id);
        c.replayed += replayed as u64;
        if let Some(t) = c.down_since.take() {
            c.recovery.observe(now.since(t).0 as f64 / 1000.0);
        }
    }

    /// Renders the core's families into `t`.
    pub fn render_metrics(&self, now: Millis, t: &mut Text) {
        let rows = self.status(now);
        let empty = DriverCounters::default();
        let of = |i: usize| self.counters.get(i).unwrap_or(&empty);
        t.family("reinc_driver_restarts_total", "counter", "Driver restarts in this supervisor lifetime.");
        for r in &rows {
            t.sample("reinc_driver_restarts_total", &[("driver", &r.name)], r.restarts);
        }
        t.family(
            "reinc_driver_crashes_total",
            "counter",
            "Driver instances that failed, by cause (a signal by name, exit N, hung, killed, fatal).",
        );
        for (i, r) in rows.iter().enumerate() {
            for (cause, n) in &of(i).crashes {
                t.sample("reinc_driver_crashes_total", &[("driver", &r.name), ("cause", cause)], n);
            }
        }
        t.family("reinc_driver_quarantines_total", "counter", "Times a driver was quarantined.");
        for (i, r) in rows.iter().enumerate() {
            t.sample("reinc_driver_quarantines_total", &[("driver", &r.name)], of(i).quarantines);
        }
        t.family(
            "reinc_driver_starved_total",
            "counter",
            "Hang verdicts that found the driver waiting for a CPU, not hung; it was left running.",
        );
        for (i, r) in rows.iter().enumerate() {
            t.sample("reinc_driver_starved_total", &[("driver", &r.name)], of(i).starved);
        }
        t.family("reinc_driver_replayed_requests_total", "counter", "Requests replayed to a new driver instance.");
        for (i, r) in rows.iter().enumerate() {
            t.sample("reinc_driver_replayed_requests_total", &[("driver", &r.name)], of(i).replayed);
        }
        t.family(
            "reinc_driver_recovery_seconds",
            "histogram",
            "Time from a driver's failure to its next instance being ready.",
        );
        for (i, r) in rows.iter().enumerate() {
            t.histogram("reinc_driver_recovery_seconds", &[("driver", &r.name)], &of(i).recovery);
        }
        t.family("reinc_driver_queue_depth", "gauge", "Accepted, unanswered requests.");
        for r in &rows {
            t.sample("reinc_driver_queue_depth", &[("driver", &r.name)], r.queue_depth);
        }
        t.family("reinc_driver_in_flight", "gauge", "Requests forwarded to the driver and not answered.");
        for r in &rows {
            t.sample("reinc_driver_in_flight", &[("driver", &r.name)], r.in_flight);
        }
        t.family("reinc_driver_up", "gauge", "1 while the driver is running.");
        for r in &rows {
            t.sample("reinc_driver_up", &[("driver", &r.name)], u8::from(r.state.name() == "running"));
        }
        t.family("reinc_driver_quarantined", "gauge", "1 while the driver is quarantined.");
        for r in &rows {
            t.sample("reinc_driver_quarantined", &[("driver", &r.name)], u8::from(r.state.name() == "quarantined"));
        }
        t.family("reinc_sessions", "gauge", "Client sessions known (attached or waiting to be resumed).");
        t.sample("reinc_sessions", &[], self.sessions.len());
        let j = self.journal_stats();
        t.family("reinc_journal_records_total", "counter", "Journal records written in this lifetime.");
        t.sample("reinc_journal_records_total", &[], j.records);
        t.family("reinc_journal_snapshots_total", "counter", "Journal compactions (snapshots) in this lifetime.");
        t.sample("reinc_journal_snapshots_total", &[], j.snapshots);
        t.family("reinc_journal_held_answers", "gauge", "Answers waiting for their journal record to be durable.");
        t.sample("reinc_journal_held_answers", &[], j.held);
        t.family(
            "reinc_recovered_requests",
            "gauge",
            "Accepted requests this supervisor recovered from the journal at start and replayed.",
        );
        t.sample("reinc_recovered_requests", &[], j.recovered_requests);
        t.family("reinc_recovered_sessions", "gauge", "Sessions this supervisor recovered from the journal at start.");
        t.sample("reinc_recovered_sessions", &[], j.recovered_sessions);
        t.family(
            "reinc_supervisor_starts_total",
            "counter",
            "Supervisor lifetimes recorded in the journal, this one included (0 without a journal driver).",
        );
        t.sample("reinc_supervisor_starts_total", &[], j.lifetimes);
    }
}
