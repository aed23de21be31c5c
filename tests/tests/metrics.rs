//! `drvctl metrics`: Prometheus text that a parser accepts, with the figures
//! of what really happened (a crash by SIGSEGV, its replay and recovery
//! time, the journal's syncs, a supervisor restart).

use nix::sys::signal::Signal;
use reinc_tests::{Reply, Rig, reply, write_req};
use std::collections::BTreeMap;

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the text exposition format 0.0.4 strictly enough to catch what a
/// scraper would reject; returns the samples and each family's type.
fn parse(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    let valid = |n: &str| {
        !n.is_empty()
            && n.chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut f = rest.splitn(3, ' ');
            let (kw, name, arg) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap_or(""));
            assert!(valid(name), "bad family name in {line:?}");
            match kw {
                "HELP" => assert!(!arg.is_empty(), "empty help: {line:?}"),
                "TYPE" => {
                    assert!(["counter", "gauge", "histogram"].contains(&arg), "type {arg:?}");
                    assert!(types.insert(name.to_owned(), arg.to_owned()).is_none(), "{name} typed twice");
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (head, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match head.split_once('{') {
            None => (head, BTreeMap::new()),
            Some((n, rest)) => {
                let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                let mut m = BTreeMap::new();
                for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
                    assert!(valid(k), "bad label name in {line:?}");
                    m.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (n, m)
            }
        };
        assert!(valid(name), "bad metric name in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.get(*f).is_some_and(|t| t == "histogram")))
            .unwrap_or(name);
        let t = types.get(family).unwrap_or_else(|| panic!("{name} sampled before its # TYPE"));
        if t == "counter" {
            assert!(name.ends_with("_total"), "counter {name} must end in _total");
        }
        samples.push((name.to_owned(), labels, value));
    }
    // Histograms: cumulative buckets, +Inf equals the count.
    for (family, _) in types.iter().filter(|(_, t)| *t == "histogram") {
        let buckets: Vec<&Sample> = samples.iter().filter(|s| s.0 == format!("{family}_bucket")).collect();
        let mut by_series: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (_, l, v) in buckets {
            let key: Vec<String> = l.iter().filter(|(k, _)| *k != "le").map(|(k, v)| format!("{k}={v}")).collect();
            by_series.entry(key.join(",")).or_default().push(*v);
        }
        for (series, counts) in by_series {
            assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{family}{{{series}}} buckets not cumulative: {counts:?}");
            let count = samples
                .iter()
                .find(|s| {
                    s.0 == format!("{family}_count") && {
                        let key: Vec<String> = s.1.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        key.join(",") == series
                    }
                })
                .map(|s| s.2);
            assert_eq!(count, counts.last().copied(), "{family}{{{series}}}: +Inf bucket != count");
        }
    }
    (samples, types)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .unwrap_or_else(|| panic!("no {name}{labels:?}"))
        .2
}

fn metrics(rig: &Rig) -> (Vec<Sample>, BTreeMap<String, String>) {
    let out = rig.drvctl(&["metrics"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    parse(&String::from_utf8(out.stdout).unwrap())
}

#[test]
fn drvctl_metrics_counts_a_crash_its_replay_recovery_and_the_journal() {
    let mut rig = Rig::new("metrics", &[("durability", "\"journal\"")]);
    rig.start();
    let mut c = rig.client();
    rig.inject("after-effect:1:segv");
    assert_eq!(reply(&c.call("storage_driver", &write_req(3, 1, 9)).unwrap().unwrap()), Reply::Written(3, 1));
    assert!(
        rig.wait_status(std::time::Duration::from_secs(10), |s| s.restarts == 1 && s.state.name() == "running")
            .is_some()
    );
    let (s, types) = metrics(&rig);
    let d = [("driver", "storage_driver")];
    assert_eq!(value(&s, "reinc_driver_restarts_total", &d), 1.0);
    assert_eq!(value(&s, "reinc_driver_crashes_total", &[("driver", "storage_driver"), ("cause", "SIGSEGV")]), 1.0);
    assert_eq!(value(&s, "reinc_driver_replayed_requests_total", &d), 1.0);
    assert_eq!(value(&s, "reinc_driver_recovery_seconds_count", &d), 1.0);
    assert!(value(&s, "reinc_driver_recovery_seconds_sum", &d) > 0.0);
    assert_eq!(value(&s, "reinc_driver_quarantines_total", &d), 0.0);
    assert_eq!(value(&s, "reinc_driver_queue_depth", &d), 0.0);
    assert_eq!(value(&s, "reinc_driver_up", &d), 1.0);
    assert!(value(&s, "reinc_journal_sync_seconds_count", &[]) >= 2.0, "session and answer records synced");
    assert!(value(&s, "reinc_journal_batch_records_total", &[]) >= 3.0);
    assert_eq!(value(&s, "reinc_supervisor_starts_total", &[]), 1.0);
    assert!(value(&s, "reinc_supervisor_ready_seconds", &[]) > 0.0);
    assert_eq!(types["reinc_journal_sync_seconds"], "histogram");

    // A new lifetime: the journal counts it, and what it recovered.
    let _ = rig.stop_supervisor(Signal::SIGKILL);
    rig.start();
    let (s, _) = metrics(&rig);
    assert_eq!(value(&s, "reinc_supervisor_starts_total", &[]), 2.0);
    assert_eq!(value(&s, "reinc_recovered_sessions", &[]), 1.0);
    assert!(value(&s, "reinc_supervisor_recovery_seconds", &[]) > 0.0);
}

#[test]
fn a_memory_only_supervisor_reports_the_same_families() {
    let mut rig = Rig::new("metrics-mem", &[]);
    rig.start();
    let (s, types) = metrics(&rig);
    assert_eq!(value(&s, "reinc_journal_records_total", &[]), 0.0);
    assert_eq!(value(&s, "reinc_supervisor_starts_total", &[]), 0.0);
    assert!(types.len() >= 20, "{types:?}");
}
