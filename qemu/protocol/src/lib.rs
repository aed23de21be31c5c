//! What the QEMU guest and `cargo xtask qemu-test` agree on.
//!
//! # Why it exists
//! Two programs on two sides of a serial console must agree on two things:
//! - the **boot plan**: what the guest's PID 1 does before it runs the suites
//!   (which kernel modules to load with which parameters, which PCI ids to bind
//!   to which driver, how many `/dev/uioN` to wait for, which suite programs to
//!   run, how to halt). The xtask renders it from the machine profile
//!   (`qemu/machines.toml`) into `/etc/reinc/plan` inside the initramfs;
//! - the **result markers** the guest prints on its console, one line per test
//!   plus a closing summary, which the xtask parses live.
//!
//! Keeping both in one dependency-free crate means the format has exactly one
//! definition and one set of tests, used by both sides.
//!
//! # Designs rejected
//! - Kernel command-line parameters for the plan (`reinc.module=…`): module
//!   parameters and bind ids contain spaces and `=`, and the command line is
//!   also the kernel's, so quoting gets fragile. A file in the initramfs has
//!   no such limits.
//! - TOML for the plan: it would pull a parser into a static PID 1 for seven
//!   directives. The line format below is trivially parsed and reports the line
//!   of any error.
//! - Making the xtask depend on the guest crate for these definitions: that
//!   would compile the guest's UIO and `nix` dependencies into every `cargo
//!   xtask` invocation.
#![forbid(unsafe_code)]

use std::fmt;

/// Where the xtask puts the plan inside the initramfs.
pub const PLAN_PATH: &str = "/etc/reinc/plan";

/// Prefix of a per-test result line.
pub const TEST_MARKER: &str = "GUEST-TEST";
/// Prefix of the closing line printed once every suite has run.
pub const SUMMARY_MARKER: &str = "GUEST-SUMMARY";
/// Prefix of a setup failure outside any test (module load, binding, a suite
/// that could not start). It always makes the run fail.
pub const ERROR_MARKER: &str = "GUEST-ERROR";
/// Prefix of a transcript line of a guest demo (`cargo xtask demo --guest`):
/// the xtask prints the rest of the line as it arrives.
pub const DEMO_LINE_MARKER: &str = "GUEST-DEMO";
/// Prefix of a guest demo's `key=value` facts, which the xtask verifies.
pub const DEMO_FACT_MARKER: &str = "GUEST-FACT";
/// Prefix of a figure line of the guest campaign leg (`campaign-suite`),
/// which `cargo xtask campaign --guest` echoes.
pub const CAMPAIGN_MARKER: &str = "GUEST-CAMPAIGN";
/// Kernel command-line (so PID-1 environment) variable: the guest campaign
/// leg's seed.
pub const CAMPAIGN_SEED_VAR: &str = "REINC_CAMPAIGN_SEED";
/// Kernel command-line variable: the guest campaign leg's fault count.
pub const CAMPAIGN_FAULTS_VAR: &str = "REINC_CAMPAIGN_FAULTS";
/// Faults of the guest leg's smoke, which `qemu-test` runs when neither
/// variable is set: the coverage walk (44 faults) and a few random ones.
pub const CAMPAIGN_SMOKE_FAULTS: usize = 52;

/// A module to load, in plan order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Absolute path of the `.ko` inside the guest.
    pub path: String,
    /// Module parameters, passed verbatim to `finit_module` (may be empty).
    pub params: String,
}

/// Writes `id` into `/sys/bus/pci/drivers/<driver>/new_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// PCI driver name, e.g. `uio_pci_generic`.
    pub driver: String,
    /// What `new_id` receives, e.g. `1234 11e8`.
    pub id: String,
}

/// How the guest ends once everything ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// `reboot(RB_POWER_OFF)`: machines with ACPI power-off (q35).
    PowerOff,
    /// `reboot(RB_AUTOBOOT)`: machines without power-off; QEMU's
    /// `-no-reboot` turns the reset into an exit (raspi3b with its watchdog).
    Reboot,
}

impl Halt {
    fn as_str(self) -> &'static str {
        match self {
            Halt::PowerOff => "poweroff",
            Halt::Reboot => "reboot",
        }
    }
}

/// Everything the guest's PID 1 does, in this order: load `modules`, write
/// each `binds`, wait until `uio_devices` `/dev/uioN` exist, run each of
/// `suites`, print the summary, then `halt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The machine profile's name, echoed in the guest's log lines.
    pub machine: String,
    /// Modules, loaded in order (`uio` before `uio_pci_generic`).
    pub modules: Vec<Module>,
    /// PCI id bindings, written after every module loaded.
    pub binds: Vec<Bind>,
    /// How many `/dev/uioN` must appear before the suites start.
    pub uio_devices: usize,
    /// Absolute paths of suite programs inside the guest.
    pub suites: Vec<String>,
    /// How to end.
    pub halt: Halt,
}

/// A plan file that cannot be understood; names the line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// A directive the parser does not know.
    #[error("{PLAN_PATH} line {line}: unknown directive `{directive}`")]
    UnknownDirective { line: usize, directive: String },
    /// A directive with missing or malformed arguments.
    #[error("{PLAN_PATH} line {line}: `{directive}` {problem}")]
    BadArguments { line: usize, directive: &'static str, problem: String },
    /// A required directive is absent.
    #[error("{PLAN_PATH}: missing `{0}` directive")]
    Missing(&'static str),
}

impl Plan {
    /// The file contents the guest parses with [`Plan::parse`].
    pub fn render(&self) -> String {
        let mut s = String::from("# reinc guest plan, written by `cargo xtask qemu-test`; one directive per line\n");
        s += &format!("machine {}\n", self.machine);
        for m in &self.modules {
            if m.params.is_empty() {
                s += &format!("module {}\n", m.path);
            } else {
                s += &format!("module {} {}\n", m.path, m.params);
            }
        }
        for b in &self.binds {
            s += &format!("bind {} {}\n", b.driver, b.id);
        }
        s += &format!("wait-uio {}\n", self.uio_devices);
        for suite in &self.suites {
            s += &format!("suite {suite}\n");
        }
        s += &format!("halt {}\n", self.halt.as_str());
        s
    }

    /// Parses a plan; blank lines and `#` comments are ignored.
    pub fn parse(text: &str) -> Result<Plan, PlanError> {
        let mut machine = None;
        let mut modules = Vec::new();
        let mut binds = Vec::new();
        let mut uio_devices = None;
        let mut suites = Vec::new();
        let mut halt = None;
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (directive, rest) = trimmed.split_once(char::is_whitespace).unwrap_or((trimmed, ""));
            let rest = rest.trim();
            let bad = |directive: &'static str, problem: &str| PlanError::BadArguments {
                line,
                directive,
                problem: problem.to_string(),
            };
            match directive {
                "machine" => {
                    if rest.is_empty() || rest.contains(char::is_whitespace) {
                        return Err(bad("machine", "needs exactly one name"));
                    }
                    machine = Some(rest.to_string());
                }
                "module" => {
                    let (path, params) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                    if !path.starts_with('/') {
                        return Err(bad("module", "needs an absolute path to a .ko file"));
                    }
                    modules.push(Module { path: path.to_string(), params: params.trim().to_string() });
                }
                "bind" => {
                    let Some((driver, id)) = rest.split_once(char::is_whitespace) else {
                        return Err(bad("bind", "needs a driver name and an id"));
                    };
                    binds.push(Bind { driver: driver.to_string(), id: id.trim().to_string() });
                }
                "wait-uio" => {
                    let n = rest.parse().map_err(|_| bad("wait-uio", "needs a device count"))?;
                    uio_devices = Some(n);
                }
                "suite" => {
                    if !rest.starts_with('/') || rest.contains(char::is_whitespace) {
                        return Err(bad("suite", "needs one absolute program path"));
                    }
                    suites.push(rest.to_string());
                }
                "halt" => {
                    halt = Some(match rest {
                        "poweroff" => Halt::PowerOff,
                        "reboot" => Halt::Reboot,
                        _ => return Err(bad("halt", "must be `poweroff` or `reboot`")),
                    });
                }
                other => return Err(PlanError::UnknownDirective { line, directive: other.to_string() }),
            }
        }
        Ok(Plan {
            machine: machine.ok_or(PlanError::Missing("machine"))?,
            modules,
            binds,
            uio_devices: uio_devices.ok_or(PlanError::Missing("wait-uio"))?,
            suites,
            halt: halt.ok_or(PlanError::Missing("halt"))?,
        })
    }
}

/// A test's verdict as printed by the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The test passed.
    Ok,
    /// The test failed, with a one-line reason.
    Fail(String),
}

/// One marker line recognised on the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// `GUEST-TEST ok <name>` or `GUEST-TEST FAIL <name>: <reason>`.
    Test { name: String, verdict: Verdict },
    /// `GUEST-SUMMARY passed=<n> failed=<m>`: the guest's own count.
    Summary { passed: usize, failed: usize },
    /// `GUEST-ERROR <message>`.
    Error(String),
}

impl fmt::Display for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Marker::Test { name, verdict: Verdict::Ok } => write!(f, "{TEST_MARKER} ok {}", clean_name(name)),
            Marker::Test { name, verdict: Verdict::Fail(reason) } => {
                write!(f, "{TEST_MARKER} FAIL {}: {}", clean_name(name), one_line(reason))
            }
            Marker::Summary { passed, failed } => write!(f, "{SUMMARY_MARKER} passed={passed} failed={failed}"),
            Marker::Error(msg) => write!(f, "{ERROR_MARKER} {}", one_line(msg)),
        }
    }
}

/// Test names are one token: whitespace would split them, and a trailing `:`
/// would be read as the reason separator.
fn clean_name(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_whitespace() { '_' } else { c }).collect();
    let s = s.trim_end_matches(':').to_string();
    if s.is_empty() { "unnamed".to_string() } else { s }
}

/// Reasons and messages must stay on one console line.
fn one_line(s: &str) -> String {
    s.split(['\n', '\r']).map(str::trim).filter(|p| !p.is_empty()).collect::<Vec<_>>().join(" / ")
}

impl Marker {
    /// Finds a marker in one console line. Markers may follow other text on
    /// the same line (a kernel message can interleave with the guest's
    /// output), so the marker is searched, not only matched at the start.
    /// A line that names a marker but is malformed yields `None`; the xtask
    /// notices the consequences (a missing summary or a count mismatch).
    pub fn parse(line: &str) -> Option<Marker> {
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(rest) = after(line, TEST_MARKER) {
            let (word, rest) = rest.split_once(' ')?;
            let rest = rest.trim_start();
            return match word {
                "ok" => {
                    let name = rest.split_whitespace().next()?;
                    Some(Marker::Test { name: name.to_string(), verdict: Verdict::Ok })
                }
                "FAIL" => {
                    let (name, reason) = match rest.split_once(": ") {
                        Some((n, r)) if !n.contains(char::is_whitespace) => (n, r.trim()),
                        _ => (rest.split_whitespace().next()?.trim_end_matches(':'), ""),
                    };
                    if name.is_empty() {
                        return None;
                    }
                    Some(Marker::Test { name: name.to_string(), verdict: Verdict::Fail(reason.to_string()) })
                }
                _ => None,
            };
        }
        if let Some(rest) = after(line, SUMMARY_MARKER) {
            let mut passed = None;
            let mut failed = None;
            for field in rest.split_whitespace() {
                match field.split_once('=') {
                    Some(("passed", n)) => passed = n.parse().ok(),
                    Some(("failed", n)) => failed = n.parse().ok(),
                    _ => {}
                }
            }
            return Some(Marker::Summary { passed: passed?, failed: failed? });
        }
        if let Some(rest) = after(line, ERROR_MARKER) {
            return Some(Marker::Error(rest.trim().to_string()));
        }
        None
    }
}

/// The text after `marker ` in `line`, if the marker occurs as a word of its
/// own (not the tail of a longer word such as `NOT-GUEST-TEST`).
fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let at = line.find(marker)?;
    if line[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_') {
        return None;
    }
    line[at + marker.len()..].strip_prefix(' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_plan() -> Plan {
        Plan {
            machine: "x86".into(),
            modules: vec![
                Module { path: "/lib/modules/uio.ko".into(), params: String::new() },
                Module { path: "/lib/modules/uio_pdrv_genirq.ko".into(), params: "of_id=generic-uio".into() },
            ],
            binds: vec![Bind { driver: "uio_pci_generic".into(), id: "1234 11e8".into() }],
            uio_devices: 2,
            suites: vec!["/bin/edu-suite".into()],
            halt: Halt::PowerOff,
        }
    }

    #[test]
    fn plan_round_trips_through_its_text_form() {
        let plan = sample_plan();
        assert_eq!(Plan::parse(&plan.render()), Ok(plan));
    }

    #[test]
    fn plan_error_names_the_line_and_directive() {
        let text = "machine x86\nwait-uio 2\nhalt poweroff\n\nfrobnicate now\n";
        let err = Plan::parse(text).unwrap_err();
        assert_eq!(err, PlanError::UnknownDirective { line: 5, directive: "frobnicate".into() });
        assert!(err.to_string().contains("line 5"), "{err}");
    }

    #[test]
    fn plan_rejects_relative_module_path_and_bad_count() {
        let err = Plan::parse("machine x\nmodule uio.ko\n").unwrap_err();
        assert!(matches!(err, PlanError::BadArguments { line: 2, directive: "module", .. }), "{err:?}");
        let err = Plan::parse("machine x\nwait-uio two\n").unwrap_err();
        assert!(matches!(err, PlanError::BadArguments { line: 2, directive: "wait-uio", .. }), "{err:?}");
    }

    #[test]
    fn plan_without_halt_is_refused() {
        assert_eq!(Plan::parse("machine x86\nwait-uio 0\n"), Err(PlanError::Missing("halt")));
    }

    #[test]
    fn markers_round_trip_through_display() {
        for m in [
            Marker::Test { name: "edu::identify".into(), verdict: Verdict::Ok },
            Marker::Test { name: "edu::factorial".into(), verdict: Verdict::Fail("got 7, want 120".into()) },
            Marker::Summary { passed: 11, failed: 1 },
            Marker::Error("cannot load /lib/modules/uio.ko: ENOEXEC".into()),
        ] {
            assert_eq!(Marker::parse(&m.to_string()), Some(m.clone()), "{m}");
        }
    }

    #[test]
    fn multi_line_reason_is_folded_onto_one_line() {
        let m = Marker::Test { name: "a b:".into(), verdict: Verdict::Fail("first\nsecond\r\n".into()) };
        assert_eq!(m.to_string(), "GUEST-TEST FAIL a_b: first / second");
    }

    #[test]
    fn marker_after_interleaved_kernel_text_is_found() {
        let line = "[    1.234567] random: crng init done\rGUEST-TEST ok edu::liveness\r";
        assert_eq!(Marker::parse(line), Some(Marker::Test { name: "edu::liveness".into(), verdict: Verdict::Ok }));
    }

    #[test]
    fn fail_without_reason_still_names_the_test() {
        assert_eq!(
            Marker::parse("GUEST-TEST FAIL edu::dma"),
            Some(Marker::Test { name: "edu::dma".into(), verdict: Verdict::Fail(String::new()) })
        );
    }

    #[test]
    fn malformed_markers_are_not_results() {
        assert_eq!(Marker::parse("GUEST-TEST maybe edu::x"), None);
        assert_eq!(Marker::parse("GUEST-SUMMARY passed=3"), None);
        assert_eq!(Marker::parse("NOT-GUEST-TEST ok x"), None);
        assert_eq!(Marker::parse("plain console text"), None);
    }
}
