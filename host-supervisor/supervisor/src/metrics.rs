//! `drvctl metrics`: the supervisor's counters as Prometheus text
//! (exposition format 0.0.4), the format node_exporter's textfile
//! collector reads (`drvctl metrics > /var/lib/node_exporter/reinc.prom.$$
//! && mv … reinc.prom`).
//!
//! # Designs rejected
//! - An HTTP `/metrics` endpoint: a listening TCP socket in a daemon that
//!   otherwise only has Unix sockets, for what the textfile collector
//!   already does; the control socket keeps its peer-credential rules.
//! - The `prometheus` crate: a registry, a global and a dependency tree for
//!   a dozen families rendered on request.

use std::fmt::Write as _;

/// Upper bounds (seconds) of the latency histograms' buckets.
pub const BUCKETS: [f64; 12] = [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];

/// A cumulative histogram over [`BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    /// Records one observation of `secs`.
    pub fn observe(&mut self, secs: f64) {
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    /// Observations so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Builds the text, one metric family at a time.
#[derive(Debug, Default)]
pub struct Text(String);

/// `{k="v",…}`, with values escaped as the format asks.
fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl Text {
    /// Starts a family: `# HELP` and `# TYPE`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    /// One sample.
    pub fn sample(&mut self, name: &str, l: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{name}{} {value}", labels(l));
    }

    /// The samples of a histogram family (after [`Text::family`]).
    pub fn histogram(&mut self, name: &str, l: &[(&str, &str)], h: &Histogram) {
        for (i, le) in BUCKETS.iter().enumerate() {
            let le = le.to_string();
            let mut with = l.to_vec();
            with.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &with, h.counts[i]);
        }
        let mut with = l.to_vec();
        with.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &with, h.count);
        self.sample(&format!("{name}_sum"), l, h.sum);
        self.sample(&format!("{name}_count"), l, h.count);
    }

    /// The finished text.
    #[must_use]
    pub fn finish(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let mut h = Histogram::default();
        for s in [0.0002, 0.003, 0.003, 7.0] {
            h.observe(s);
        }
        let mut t = Text::default();
        t.family("x_seconds", "histogram", "test");
        t.histogram("x_seconds", &[("driver", "a\"b")], &h);
        let text = t.finish();
        assert!(text.contains("x_seconds_bucket{driver=\"a\\\"b\",le=\"0.0001\"} 0\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{driver=\"a\\\"b\",le=\"0.0005\"} 1\n"));
        assert!(text.contains("x_seconds_bucket{driver=\"a\\\"b\",le=\"0.005\"} 3\n"));
        assert!(text.contains("x_seconds_bucket{driver=\"a\\\"b\",le=\"5\"} 3\n"));
        assert!(text.contains("x_seconds_bucket{driver=\"a\\\"b\",le=\"+Inf\"} 4\n"));
        assert!(text.contains("x_seconds_count{driver=\"a\\\"b\"} 4\n"));
    }
}
