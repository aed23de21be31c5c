//! The report: rows with their floors and ratios, the targets, the
//! machine; rendered as a terminal table, Markdown and JSON.

use crate::machine::Machine;
use crate::stats::Line;
use serde::Serialize;
use std::fmt::Write as _;

/// A target from the issue, evaluated on a row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// As the issue states it, e.g. `ratio <= 2.5`.
    pub text: String,
    /// Whether this run met it.
    pub met: bool,
}

/// How a target is checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// `value / floor <= x`.
    RatioAtMost(f64),
    /// `value / floor >= x`.
    RatioAtLeast(f64),
    /// `value <= x` (in the row's unit).
    ValueAtMost(f64),
}

/// One measured figure against its floor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The section (1..=6: the supervisor and the storage path; 7: the NBD
    /// front end; 8: the supervisor's own crash and its journal).
    pub section: u8,
    /// What was measured.
    pub name: String,
    /// The figure; `None` if it could not be measured (see `note`).
    pub value: Option<f64>,
    /// Its unit.
    pub unit: String,
    /// What the floor is.
    pub floor_name: String,
    /// The floor, same unit.
    pub floor: Option<f64>,
    /// `value / floor`.
    pub ratio: Option<f64>,
    /// The target, if it sets one for this row.
    pub target: Option<Target>,
    /// How it was measured, or why it was not.
    pub note: String,
}

impl Row {
    /// A measured row.
    #[must_use]
    pub fn new(section: u8, name: &str, value: f64, unit: &str, floor_name: &str, floor: f64) -> Self {
        Self {
            section,
            name: name.into(),
            value: Some(value),
            unit: unit.into(),
            floor_name: floor_name.into(),
            floor: Some(floor),
            ratio: Some(value / floor),
            target: None,
            note: String::new(),
        }
    }

    /// A row that could not be measured, and why.
    #[must_use]
    pub fn unmeasured(section: u8, name: &str, unit: &str, why: &str) -> Self {
        Self {
            section,
            name: name.into(),
            value: None,
            unit: unit.into(),
            floor_name: String::new(),
            floor: None,
            ratio: None,
            target: Some(Target { text: "measured".into(), met: false }),
            note: why.into(),
        }
    }

    /// Attaches the target.
    #[must_use]
    pub fn goal(mut self, goal: Goal) -> Self {
        let (text, met) = match goal {
            Goal::RatioAtMost(x) => (format!("ratio <= {x}"), self.ratio.is_some_and(|r| r <= x)),
            Goal::RatioAtLeast(x) => (format!("ratio >= {x}"), self.ratio.is_some_and(|r| r >= x)),
            Goal::ValueAtMost(x) => (format!("<= {x} {}", self.unit), self.value.is_some_and(|v| v <= x)),
        };
        self.target = Some(Target { text, met });
        self
    }

    /// Attaches a note.
    #[must_use]
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `quick` or `full`.
    pub mode: String,
    /// Where it ran.
    pub machine: Machine,
    /// Every figure.
    pub rows: Vec<Row>,
    /// Replay drain time (ms) against queue length: the least-squares line.
    pub replay_fit: Option<Line>,
    /// Wall time of the run, seconds.
    pub duration_secs: f64,
    /// Free-form observations (gaps, caveats).
    pub notes: Vec<String>,
}

/// The sections, for headings and the completeness check.
pub const SECTIONS: [&str; 8] = [
    "Request round trip",
    "Throughput",
    "Recovery time",
    "Checkpoint cost",
    "Scale",
    "Storage path",
    "NBD front end (reinc-nbd)",
    "Supervisor crash (journal)",
];

fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if !x.is_finite() => "-".into(),
        Some(x) if x.abs() >= 1000.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    }
}

fn verdict(t: Option<&Target>) -> String {
    match t {
        None => String::new(),
        Some(t) => format!("{} {}", t.text, if t.met { "(met)" } else { "(NOT met)" }),
    }
}

impl Report {
    /// Problems that make the run unusable even as a smoke test: a section
    /// with no row, a measured value or floor that is not a positive finite
    /// number, an unmeasured row with no explanation. Asserts no performance
    /// figure.
    #[must_use]
    pub fn sanity_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (i, s) in SECTIONS.iter().enumerate() {
            if !self.rows.iter().any(|r| usize::from(r.section) == i + 1) {
                p.push(format!("section {} ({s}) has no row", i + 1));
            }
        }
        let positive = |x: Option<f64>| x.is_some_and(|v| v.is_finite() && v > 0.0);
        for r in &self.rows {
            match r.value {
                Some(_) if !positive(r.value) => p.push(format!("{}: value {:?} is not positive", r.name, r.value)),
                Some(_) if !positive(r.floor) => p.push(format!("{}: floor {:?} is not positive", r.name, r.floor)),
                None if r.note.is_empty() => p.push(format!("{}: not measured and no reason given", r.name)),
                _ => {}
            }
        }
        p
    }

    /// Rows whose target was not met.
    pub fn gaps(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.target.as_ref().is_some_and(|t| !t.met))
    }

    /// A plain-text table for the terminal.
    #[must_use]
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{:<44} {:>11} {:<7} {:>11}  {:<34} {:>8}  target",
            "measurement", "value", "unit", "floor", "floor is", "ratio"
        );
        for (i, s) in SECTIONS.iter().enumerate() {
            let _ = writeln!(t, "-- {}. {s}", i + 1);
            for r in self.rows.iter().filter(|r| usize::from(r.section) == i + 1) {
                let _ = writeln!(
                    t,
                    "{:<44} {:>11} {:<7} {:>11}  {:<34} {:>8}  {}",
                    r.name,
                    num(r.value),
                    r.unit,
                    num(r.floor),
                    r.floor_name,
                    num(r.ratio),
                    verdict(r.target.as_ref())
                );
            }
        }
        t
    }

    /// The Markdown report.
    #[must_use]
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut t = String::new();
        let _ = writeln!(t, "# reinc benchmark report ({} run)\n", self.mode);
        let _ = writeln!(
            t,
            "Machine: {} · {} cores · Linux {} · {} MiB RAM · checkpoints on {} · load average {:.2} at start\n",
            m.cpu, m.cores, m.kernel, m.memory_mib, m.state_fs, m.load_at_start
        );
        let _ = writeln!(
            t,
            "Every figure is compared with a floor measured in the same run; `ratio` = value / floor. \
             Run took {:.0} s.\n",
            self.duration_secs
        );
        for (i, s) in SECTIONS.iter().enumerate() {
            let _ = writeln!(t, "## {}. {s}\n", i + 1);
            let _ = writeln!(t, "| measurement | value | unit | floor | floor is | ratio | target | notes |");
            let _ = writeln!(t, "|---|---:|---|---:|---|---:|---|---|");
            for r in self.rows.iter().filter(|r| usize::from(r.section) == i + 1) {
                let _ = writeln!(
                    t,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.name,
                    num(r.value),
                    r.unit,
                    num(r.floor),
                    r.floor_name,
                    num(r.ratio),
                    verdict(r.target.as_ref()),
                    r.note.replace('|', "/")
                );
            }
            if i == 4
                && let Some(l) = &self.replay_fit
            {
                let _ = writeln!(
                    t,
                    "\nReplay drain time (first to last replayed reply) = {:.3} ms + {:.2} µs × queue length (R² = {:.4}).",
                    l.intercept,
                    l.slope * 1000.0,
                    l.r2
                );
            }
            t.push('\n');
        }
        let gaps: Vec<&Row> = self.gaps().collect();
        let _ = writeln!(t, "## Targets not met\n");
        if gaps.is_empty() {
            let _ = writeln!(t, "None.");
        }
        for r in gaps {
            if r.value.is_none() {
                let _ = writeln!(t, "- {}: not measured: {}", r.name, r.note);
                continue;
            }
            let _ = writeln!(
                t,
                "- {}: {} {} against {} ({}); target {}",
                r.name,
                num(r.value),
                r.unit,
                num(r.floor),
                r.floor_name,
                r.target.as_ref().map_or("", |x| x.text.as_str())
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(t, "\n## Notes\n");
            for n in &self.notes {
                let _ = writeln!(t, "- {n}");
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            cpu: "test cpu".into(),
            cores: 2,
            kernel: "6.1".into(),
            memory_mib: 1024,
            state_fs: "ext4".into(),
            load_at_start: 0.5,
        }
    }

    fn report(rows: Vec<Row>) -> Report {
        Report { mode: "quick".into(), machine: machine(), rows, replay_fit: None, duration_secs: 1.0, notes: vec![] }
    }

    fn all_sections() -> Vec<Row> {
        (1..=SECTIONS.len() as u8).map(|s| Row::new(s, &format!("row {s}"), 2.0, "µs", "floor", 1.0)).collect()
    }

    #[test]
    fn goals_compare_ratio_or_value_and_report_misses() {
        let r = Row::new(1, "rtt", 30.0, "µs", "relay", 10.0);
        assert!(!r.clone().goal(Goal::RatioAtMost(2.5)).target.unwrap().met);
        assert!(r.clone().goal(Goal::RatioAtLeast(2.5)).target.unwrap().met);
        assert!(!r.goal(Goal::ValueAtMost(10.0)).target.unwrap().met);
        let rep = report(vec![Row::new(3, "p99", 12.0, "ms", "spawn", 1.0).goal(Goal::ValueAtMost(10.0))]);
        assert_eq!(rep.gaps().count(), 1);
        assert!(rep.markdown().contains("## Targets not met\n\n- p99: 12.0 ms"));
    }

    #[test]
    fn sanity_flags_missing_sections_and_non_positive_figures_only() {
        assert!(report(all_sections()).sanity_problems().is_empty());
        let mut rows = all_sections();
        rows.retain(|r| r.section != 4);
        rows.push(Row::new(1, "zero", 0.0, "µs", "f", 1.0));
        rows.push(Row::new(1, "nan floor", 1.0, "µs", "f", f64::NAN));
        rows.push(Row::unmeasured(5, "replay 10000", "ms", ""));
        let p = report(rows).sanity_problems();
        assert_eq!(p.len(), 4, "{p:#?}");
        // An explained unmeasured row is a reported gap, not a broken run.
        let mut rows = all_sections();
        rows.push(Row::unmeasured(5, "replay 10000", "ms", "queue capacity is 1024"));
        let rep = report(rows);
        assert!(rep.sanity_problems().is_empty());
        assert_eq!(rep.gaps().count(), 1);
        assert!(rep.markdown().contains("- replay 10000: not measured: queue capacity is 1024\n"));
    }

    #[test]
    fn markdown_names_the_machine_and_every_section() {
        let md = report(all_sections()).markdown();
        assert!(md.contains("test cpu · 2 cores · Linux 6.1 · 1024 MiB RAM"));
        for s in SECTIONS {
            assert!(md.contains(s), "{s}");
        }
        let json = serde_json::to_value(report(all_sections())).unwrap();
        assert_eq!(json["rows"].as_array().unwrap().len(), SECTIONS.len());
        assert_eq!(json["rows"][0]["ratio"], 2.0);
    }
}
