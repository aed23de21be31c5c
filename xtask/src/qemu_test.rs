//! `cargo xtask qemu-test`: boots each machine profile's QEMU guest on a real
//! Debian kernel and runs the guest suites against real kernel UIO.
//!
//! Per machine: install the emulator if missing, fetch the kernel (cached),
//! build the static guest programs, pack the initramfs, boot, and read the
//! console live. One readable line per test; the closing line is exactly
//! `N passed, N failed`. Any failed test, guest error, kernel panic, missing
//! summary, timeout or bad QEMU exit makes the command fail.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reinc_guest_protocol::Verdict;

use crate::apt::Qemu;
use crate::console::{Console, End, Event, Report, printable};
use crate::machines::{self, DtbPatch, KvmPolicy, Profile};
use crate::util::{self, Error, IoContext, Result};
use crate::{apt, busybox, initramfs, kernel, rpi};

const USAGE: &str = "\
usage: cargo xtask qemu-test [--machine NAME] [--verbose] [--timeout SECS]

Boots the QEMU guests of qemu/machines.toml and runs their test suites.

  --machine NAME   run only this profile (default: all, in file order); rpi3-fw
                   is the bare-metal firmware (xtask/src/firmware.rs), run last
  --verbose        echo the whole guest console
  --timeout SECS   override every profile's boot time limit

Kernels and the KVM probe verdict are cached in $REINC_CACHE_DIR, else
$XDG_CACHE_HOME/reinc, else ~/.cache/reinc. Missing Debian packages are
installed with apt-get when running as root.
";

/// Command-line flags.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// `--machine NAME`: run only this profile of `qemu/machines.toml`
    /// (default: every profile, in file order).
    pub machine: Option<String>,
    /// `--verbose`: echo the full guest console (kernel messages, guest
    /// logs), not just one line per test.
    pub verbose: bool,
    /// `--timeout SECS`: override every profile's boot time limit.
    pub timeout: Option<u64>,
}

impl Flags {
    /// Hand-written parsing (rust-analyzer xtask style).
    pub fn parse(args: &[String]) -> Result<Option<Flags>> {
        let mut flags = Flags::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
                _ => (arg.as_str(), None),
            };
            let mut value = |flag: &str| {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| Error::Usage(format!("`{flag}` needs a value\n\n{USAGE}")))
            };
            match name {
                "--machine" | "-m" => flags.machine = Some(value("--machine")?),
                "--verbose" | "-v" => flags.verbose = true,
                "--timeout" => {
                    let v = value("--timeout")?;
                    let secs = v
                        .parse()
                        .ok()
                        .filter(|&s| s > 0)
                        .ok_or_else(|| Error::Usage(format!("`--timeout` wants whole seconds > 0, got `{v}`")))?;
                    flags.timeout = Some(secs);
                }
                "--help" | "-h" => {
                    print!("{USAGE}");
                    return Ok(None);
                }
                other => return Err(Error::Usage(format!("unknown flag `{other}`\n\n{USAGE}"))),
            }
        }
        Ok(Some(flags))
    }
}

/// Entry point of the subcommand.
pub fn run(args: &[String]) -> Result {
    match Flags::parse(args)? {
        Some(flags) => run_with(&flags),
        None => Ok(()),
    }
}

/// Runs the selected machines and prints the closing `N passed, N failed`.
pub fn run_with(flags: &Flags) -> Result {
    let (_, failed) = run_counted(flags)?;
    if failed == 0 { Ok(()) } else { Err(Error::GuestFailures { failed }) }
}

/// Like [`run_with`], but returns `(passed, failed)` instead of failing, for
/// `cargo xtask test`'s overall tally. Errors only when no machine could be
/// selected at all (a bad profile file or `--machine` name).
pub fn run_counted(flags: &Flags) -> Result<(usize, usize)> {
    if flags.machine.as_deref() == Some(crate::firmware::MACHINE) {
        let (passed, failed) = crate::firmware::run_counted(flags.verbose, flags.timeout);
        println!("{passed} passed, {failed} failed");
        return Ok((passed, failed));
    }
    let profiles = machines::select(machines::load()?, flags.machine.as_deref())?;
    // Every kernel is chosen before anything boots, so that nothing a stage
    // does to the package lists can change another stage's kernel.
    println!("kernels for this run:");
    let kernels: Vec<Result<kernel::Resolved>> = profiles
        .iter()
        .map(|p| {
            let r = kernel::resolve(&p.kernel, &p.debian_arch);
            match &r {
                Ok(k) => println!("  {}: {k}", p.name),
                Err(e) => println!("  {}: cannot choose a kernel: {e}", p.name),
            }
            r
        })
        .collect();
    let mut passed = 0;
    let mut failed = 0;
    for (profile, kernel) in profiles.iter().zip(kernels) {
        let started = Instant::now();
        let report = match kernel.and_then(|k| run_machine(profile, &k, flags)) {
            Ok(report) => report,
            // Preparation errors (no kernel, build failure) are this machine's
            // failure, not a reason to skip the others silently.
            Err(e) => Report { tests: Vec::new(), problems: vec![format!("could not boot: {e}")], tail: Vec::new() },
        };
        for p in &report.problems {
            println!("  FAIL  {}: {p}", profile.name);
        }
        if !report.problems.is_empty() && !report.tail.is_empty() && !flags.verbose {
            println!("  last console lines of {}:", profile.name);
            for l in &report.tail {
                println!("    | {l}");
            }
        }
        println!(
            "{}: {} passed, {} failed in {:.1} s",
            profile.name,
            report.passed(),
            report.failed(),
            started.elapsed().as_secs_f64()
        );
        passed += report.passed();
        failed += report.failed();
    }
    if flags.machine.is_none() {
        let (p, f) = crate::firmware::run_counted(flags.verbose, flags.timeout);
        passed += p;
        failed += f;
    }
    println!("{passed} passed, {failed} failed");
    Ok((passed, failed))
}

/// Prepares and boots one machine, printing one line per guest test.
fn run_machine(profile: &Profile, resolved: &kernel::Resolved, flags: &Flags) -> Result<Report> {
    let mut console = Console::new();
    let name = &profile.name;
    let verbose = flags.verbose;
    let end = prepare_and_boot(profile, resolved, "initrd.cpio", flags.timeout, verbose, |line| {
        match line {
            Line::Console(line) => {
                if verbose {
                    println!("{name}| {}", printable(&line));
                }
                if let Some(ev) = console.feed(&line) {
                    print_event(&format!("{name} "), &ev);
                }
            }
            Line::Qemu(line) => {
                println!("{name}: qemu: {line}");
                console.feed(&format!("qemu: {line}"));
            }
        }
        console.summary_seen()
    })?;
    Ok(console.finish(end))
}

/// Prints one console event as a suite's result line (`  ok    {label}{test}`,
/// `  FAIL  …`, `  ERROR …`, `  PANIC …`); `label` prefixes the names
/// (`"x86 "`, or nothing when one machine runs alone).
pub(crate) fn print_event(label: &str, ev: &Event) {
    match ev {
        Event::Test(t) => match &t.verdict {
            Verdict::Ok => println!("  ok    {label}{}", t.name),
            Verdict::Fail(reason) => println!("  FAIL  {label}{}: {reason}", t.name),
        },
        Event::GuestError(e) => println!("  ERROR {label}guest: {e}"),
        Event::Panic(p) => println!("  PANIC {label}{p}"),
    }
}

/// Everything `qemu-test` does for one machine up to and including the boot,
/// shared with `cargo xtask demo --guest`: finds the emulator, fetches the
/// kernel (and busybox, if the profile has it), builds the guest programs,
/// packs the initramfs into the machine's work directory as `initrd_name`,
/// patches the device tree, picks the accelerator, and runs QEMU, handing
/// every output line to `on_line` (which returns true once the guest is
/// done; see [`run_qemu`]). `timeout` overrides the profile's limit.
pub(crate) fn prepare_and_boot(
    profile: &Profile,
    resolved: &kernel::Resolved,
    initrd_name: &str,
    timeout: Option<u64>,
    verbose: bool,
    on_line: impl FnMut(Line) -> bool,
) -> Result<End> {
    println!("{}: {}", profile.name, profile.description);
    let qemu = apt::ensure_qemu(&profile.qemu.binary, &profile.qemu.package)?;
    let kernel = kernel::fetch(&profile.kernel, &profile.debian_arch, resolved)?;
    let busybox = match &profile.guest.busybox {
        Some(spec) => Some(busybox::fetch(spec, &profile.debian_arch)?),
        None => None,
    };
    let programs = initramfs::build_programs(profile)?;
    let initrd = machines::work_dir(profile).join(initrd_name);
    initramfs::assemble(profile, &programs, &kernel, busybox.as_deref(), &initrd)?;
    let dtb = device_tree(profile, &kernel)?;
    let accel = choose_accel(profile, &qemu, &kernel.image, dtb.as_deref())?;
    let timeout = Duration::from_secs(timeout.unwrap_or(profile.timeout_secs));
    println!(
        "{}: booting {} under {accel} with {} (limit {} s)",
        profile.name,
        kernel.label,
        if profile.qemu.devices.is_empty() { "no extra device".to_string() } else { profile.qemu.devices.join(", ") },
        timeout.as_secs()
    );
    let boot_files = BootFiles { image: &kernel.image, initrd: Some(&initrd), dtb: dtb.as_deref() };
    let cmd = qemu_command(profile, &qemu, accel, &boot_files, None);
    if verbose {
        println!("$ {}", util::describe(&cmd));
    }
    run_qemu(cmd, timeout, on_line)
}

/// The profile's device tree, patched as it says (into the machine's work
/// directory, every run: the sources in `dts/` belong to the checkout).
fn device_tree(profile: &Profile, kernel: &kernel::Kernel) -> Result<Option<PathBuf>> {
    let (Some(spec), Some(packaged)) = (&profile.kernel.dtb, &kernel.dtb) else { return Ok(None) };
    match spec.patch {
        None => Ok(Some(packaged.clone())),
        Some(DtbPatch::Rpi3Uio) => {
            rpi::ensure_tools()?;
            let out = machines::work_dir(profile).join(rpi::PATCHED_DTB);
            util::create_dir_all(&machines::work_dir(profile))?;
            rpi::patch_dtb(packaged, &util::workspace_root().join("dts"), &out)?;
            println!(
                "{}: device tree {} patched with dts/{} (generic-uio nodes)",
                profile.name,
                spec.file,
                rpi::QEMU_DTSI
            );
            Ok(Some(out))
        }
    }
}

/// What QEMU boots.
struct BootFiles<'a> {
    image: &'a Path,
    initrd: Option<&'a Path>,
    dtb: Option<&'a Path>,
}

/// The QEMU command line for a profile.
fn qemu_command(profile: &Profile, qemu: &Qemu, accel: &str, files: &BootFiles<'_>, append: Option<&str>) -> Command {
    let mut cmd = qemu.command();
    cmd.args(&profile.qemu.args).args(["-accel", accel]).arg("-kernel").arg(files.image);
    if let Some(initrd) = files.initrd {
        cmd.arg("-initrd").arg(initrd);
    }
    if let Some(dtb) = files.dtb {
        cmd.arg("-dtb").arg(dtb);
    }
    let append = match append {
        Some(a) => a.to_string(),
        None => format!("console={} {}", profile.kernel.console, profile.kernel.append),
    };
    cmd.args(["-append", &append]);
    for d in &profile.qemu.devices {
        cmd.args(["-device", d]);
    }
    cmd
}

/// A line from QEMU's stdout (the guest console) or stderr (QEMU itself).
pub(crate) enum Line {
    Console(String),
    Qemu(String),
}

/// How long QEMU may take to exit once the guest printed its summary.
const HALT_GRACE: Duration = Duration::from_secs(15);

/// Runs QEMU with stdin closed, hands every output line to `on_line` as it
/// arrives, and kills QEMU once `timeout` has passed. When `on_line` first
/// says the guest is done, QEMU gets at most [`HALT_GRACE`] more to exit.
pub(crate) fn run_qemu(mut cmd: Command, timeout: Duration, mut on_line: impl FnMut(Line) -> bool) -> Result<End> {
    let what = util::describe(&cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn { what: what.clone(), source })?;
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let readers = [spawn_reader(out, tx.clone(), Line::Console), spawn_reader(err, tx, Line::Qemu)];
    let mut deadline = Instant::now() + timeout;
    let mut halting = false;
    let end = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if on_line(line) && !halting {
                    halting = true;
                    deadline = deadline.min(Instant::now() + HALT_GRACE);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                break if halting { End::NoHalt(HALT_GRACE) } else { End::TimedOut(timeout) };
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map_err(|source| Error::Spawn { what: what.clone(), source })?;
                break End::Exited(status.code());
            }
        }
    };
    for r in readers {
        let _ = r.join();
    }
    Ok(end)
}

fn spawn_reader(
    stream: impl Read + Send + 'static,
    tx: mpsc::Sender<Line>,
    wrap: fn(String) -> Line,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
                    if tx.send(wrap(line)).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// How long a KVM probe boot may take; a working KVM needs about a second.
const KVM_PROBE_LIMIT: Duration = Duration::from_secs(10);

/// Picks the accelerator: TCG, or KVM when the profile allows it and a probe
/// shows that KVM really runs a guest on this host. On nested VMs without
/// VT-x, `/dev/kvm` exists and QEMU starts, but the guest never runs, so the
/// device node proves nothing. The probe boots the profile's kernel under KVM
/// with no initramfs: a working KVM reaches the kernel's "VFS: Unable to
/// mount root fs" panic and QEMU exits (`panic=-1`, `-no-reboot`) within the
/// limit. The verdict is cached per host kernel, QEMU version and machine,
/// so only the first run on a machine pays for a failing probe.
fn choose_accel<'p>(profile: &'p Profile, qemu: &Qemu, image: &Path, dtb: Option<&Path>) -> Result<&'p str> {
    let tcg = profile.qemu.tcg.as_str();
    if profile.qemu.kvm == KvmPolicy::Never {
        return Ok(tcg);
    }
    if !Path::new("/dev/kvm").exists() {
        println!("{}: no /dev/kvm; using {tcg}", profile.name);
        return Ok(tcg);
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let qemu_version = qemu.version().unwrap_or_else(|_| "?".into());
    let key = format!("host {} / {qemu_version} / machine {}", host.trim(), profile.name);
    let cache = util::cache_dir()?.join("kvm-probe").join(&profile.name);
    if let Ok(text) = std::fs::read_to_string(&cache)
        && let Some(verdict) = text.strip_prefix(&format!("{key}\n"))
    {
        let works = verdict.trim() == "works";
        println!(
            "{}: KVM {} on this host (cached probe, {}); using {}",
            profile.name,
            if works { "runs guests" } else { "does not run guests" },
            cache.display(),
            if works { "kvm" } else { tcg }
        );
        return Ok(if works { "kvm" } else { tcg });
    }
    println!("{}: probing whether KVM really runs a guest here (up to {} s)", profile.name, KVM_PROBE_LIMIT.as_secs());
    let append = format!("console={} panic=-1", profile.kernel.console);
    let mut reached_panic = false;
    let probe = BootFiles { image, initrd: None, dtb };
    let end = run_qemu(qemu_command(profile, qemu, "kvm", &probe, Some(&append)), KVM_PROBE_LIMIT, |line| {
        if let Line::Console(l) = line {
            reached_panic |= l.contains("Kernel panic - not syncing");
        }
        false
    })?;
    let works = reached_panic && matches!(end, End::Exited(_));
    println!(
        "{}: KVM {}; using {}",
        profile.name,
        if works { "runs guests" } else { "does not run guests here (probe boot did not finish)" },
        if works { "kvm" } else { tcg }
    );
    util::create_dir_all(cache.parent().expect("has a parent"))?;
    std::fs::write(&cache, format!("{key}\n{}\n", if works { "works" } else { "fails" })).at(&cache)?;
    Ok(if works { "kvm" } else { tcg })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_parse_both_spellings_of_values() {
        let f = Flags::parse(&args(&["--machine", "x86", "--verbose"])).unwrap().unwrap();
        assert_eq!(f, Flags { machine: Some("x86".into()), verbose: true, timeout: None });
        let f = Flags::parse(&args(&["--machine=rpi3", "--timeout=30"])).unwrap().unwrap();
        assert_eq!(f, Flags { machine: Some("rpi3".into()), verbose: false, timeout: Some(30) });
        assert_eq!(Flags::parse(&[]).unwrap().unwrap(), Flags::default());
    }

    #[test]
    fn x86_command_line_is_the_checked_q35_one_with_two_edu_devices() {
        let profiles = machines::load().unwrap();
        let x86 = profiles.iter().find(|p| p.name == "x86").unwrap();
        let files = BootFiles { image: Path::new("/k/vmlinux"), initrd: Some(Path::new("/i/initrd.cpio")), dtb: None };
        let qemu = Qemu { binary: "qemu-system-x86_64".into(), data_dirs: Vec::new() };
        let cmd = qemu_command(x86, &qemu, "tcg", &files, None);
        assert_eq!(cmd.get_program(), "qemu-system-x86_64");
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let want = "-M q35 -m 256 -nographic -no-reboot -nic none -accel tcg -kernel /k/vmlinux \
                    -initrd /i/initrd.cpio -append CMDLINE -device edu -device edu";
        let want: Vec<String> = want
            .split_whitespace()
            .map(|a| if a == "CMDLINE" { "console=ttyS0 quiet panic=-1".to_string() } else { a.to_string() })
            .collect();
        assert_eq!(args, want);
    }

    #[test]
    fn rpi3_command_line_is_the_checked_raspi3b_one_with_the_patched_dtb() {
        let profiles = machines::load().unwrap();
        let rpi3 = profiles.iter().find(|p| p.name == "rpi3").unwrap();
        let files = BootFiles {
            image: Path::new("/k/vmlinuz"),
            initrd: Some(Path::new("/i/initrd.cpio")),
            dtb: Some(Path::new("/w/bcm2837-rpi-3-b-reinc.dtb")),
        };
        let qemu = Qemu { binary: "qemu-system-aarch64".into(), data_dirs: Vec::new() };
        let cmd = qemu_command(rpi3, &qemu, &rpi3.qemu.tcg, &files, None);
        assert_eq!(cmd.get_program(), "qemu-system-aarch64");
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let want = "-M raspi3b -m 1G -nographic -no-reboot -accel tcg,thread=single -kernel /k/vmlinuz \
                    -initrd /i/initrd.cpio -dtb /w/bcm2837-rpi-3-b-reinc.dtb -append CMDLINE";
        let want: Vec<String> =
            want.split_whitespace()
                .map(|a| {
                    if a == "CMDLINE" { "console=ttyAMA0 quiet loglevel=1 panic=-1".to_string() } else { a.to_string() }
                })
                .collect();
        assert_eq!(args, want);
        assert_eq!(rpi3.qemu.kvm, KvmPolicy::Never, "an emulated board: never KVM");
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        assert!(matches!(Flags::parse(&args(&["--machine"])), Err(Error::Usage(m)) if m.contains("needs a value")));
        assert!(matches!(Flags::parse(&args(&["--timeout", "0"])), Err(Error::Usage(_))));
        assert!(matches!(Flags::parse(&args(&["--fast"])), Err(Error::Usage(m)) if m.contains("--fast")));
    }
}
