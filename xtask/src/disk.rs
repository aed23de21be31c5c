//! The free-space check that opens `cargo xtask test`.
//!
//! A cold run writes several GiB: the build output under `target/` (debug,
//! release, the guests' and the firmware's targets) and the kernel cache
//! (downloaded `.deb` files, a kernel source tree, a built module). A disk
//! that fills half-way does not fail politely: rustc and the linker report
//! `No space left on device` for some temporary file, every later stage fails
//! the same way, and the run's summary counts dozens of failures that all
//! have one cause. So the suite first compares what it still has to write
//! with what the filesystem has free, and refuses with one message that names
//! the directories, the amounts, and what to do.
//!
//! What it "still has to write" is the measured peak of a cold run (the
//! constants below) minus what is already there, so a warm clone with a warm
//! cache needs almost nothing. Directories on the same filesystem add up.
//!
//! Rejected:
//! - a safety margin on top of the measured peak: it would refuse machines
//!   on which the suite fits, and the peak is already a maximum over the run;
//! - watching free space during the run: by the time it is low, a stage has
//!   already failed;
//! - a statvfs binding: this crate has no libc dependency and forbids
//!   `unsafe`; `df` and `du` (coreutils, on every Debian machine) answer the
//!   same questions.

use crate::util::{self, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Peak size of `target/` during a cold `cargo xtask test` (`du -sb`,
/// sampled every 20 s over a cold run on the 2-core CI machine type:
/// 2 875 MiB, rounded up to the next 100 MiB for what falls between samples).
pub const TARGET_PEAK: u64 = 2_900 * MIB;
/// Peak size of the kernel cache during the same run, from empty (684 MiB,
/// rounded up likewise; it ends at 444 MiB once the kernel source is gone).
pub const CACHE_PEAK: u64 = 700 * MIB;

const MIB: u64 = 1 << 20;

/// One directory the suite writes into and how much it needs at most.
#[derive(Debug, Clone)]
pub struct Need {
    /// What the directory is for, as the message says it.
    pub what: &'static str,
    /// The directory (it may not exist yet).
    pub dir: PathBuf,
    /// Its peak size during a cold run.
    pub peak: u64,
}

/// A directory's filesystem: its mount point and free bytes, from `df`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fs {
    pub mount: String,
    pub avail: u64,
}

/// Checks that every filesystem has room for what its directories still need;
/// the error names each directory, the amounts and the remedy.
pub fn check(needs: &[Need]) -> Result {
    let mut rows = Vec::new();
    for need in needs {
        let probe = existing_ancestor(&need.dir);
        let fs = filesystem(&probe)?;
        let used = if need.dir.exists() { used_bytes(&need.dir) } else { 0 };
        rows.push((need.clone(), fs, used));
    }
    match shortfall(&rows) {
        None => Ok(()),
        Some(msg) => Err(util::Error::Other(msg)),
    }
}

/// The message when some filesystem is too small for what its directories
/// still need, else `None`. Pure, for tests: `rows` holds each need with its
/// filesystem and what the directory already holds.
pub fn shortfall(rows: &[(Need, Fs, u64)]) -> Option<String> {
    let mut by_mount: BTreeMap<&str, (u64, Vec<String>, u64)> = BTreeMap::new();
    for (need, fs, used) in rows {
        let more = need.peak.saturating_sub(*used);
        let entry = by_mount.entry(fs.mount.as_str()).or_insert((fs.avail, Vec::new(), 0));
        entry.2 += more;
        entry.1.push(format!("{} ({}) needs about {} more", need.dir.display(), need.what, gib(more)));
    }
    let short: Vec<String> = by_mount
        .iter()
        .filter(|(_, (avail, _, more))| more > avail)
        .map(|(mount, (avail, lines, more))| {
            format!(
                "the filesystem at {mount} has {} free and needs {}:\n    {}",
                gib(*avail),
                gib(*more),
                lines.join("\n    ")
            )
        })
        .collect();
    if short.is_empty() {
        return None;
    }
    Some(format!(
        "not enough disk space for `cargo xtask test`; nothing was built or changed.\n{}\n\
         Free some space there, or point CARGO_TARGET_DIR and REINC_CACHE_DIR at a larger disk.",
        short.join("\n")
    ))
}

/// `n` bytes as GiB with one decimal.
fn gib(n: u64) -> String {
    // Display only: the precision lost in the cast is far below 0.1 GiB.
    #[allow(clippy::cast_precision_loss)]
    let g = n as f64 / (1u64 << 30) as f64;
    format!("{g:.1} GiB")
}

/// `dir` or its nearest existing parent (what `df` can be asked about).
fn existing_ancestor(dir: &Path) -> PathBuf {
    let mut p = dir;
    loop {
        if p.exists() {
            return p.to_path_buf();
        }
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => return PathBuf::from("."),
        }
    }
}

/// The mount point and free bytes of the filesystem holding `path`.
fn filesystem(path: &Path) -> Result<Fs> {
    let mut cmd = Command::new("df");
    cmd.args(["--output=avail,target", "-B1"]).arg(path);
    let out = util::output(&mut cmd)?;
    parse_df(&out).ok_or_else(|| util::Error::Other(format!("cannot read `df` output for {}: {out:?}", path.display())))
}

/// Parses `df --output=avail,target -B1`: a header line, then `avail mount`.
fn parse_df(out: &str) -> Option<Fs> {
    let line = out.lines().nth(1)?.trim();
    let (avail, mount) = line.split_once(char::is_whitespace)?;
    Some(Fs { mount: mount.trim().to_owned(), avail: avail.parse().ok()? })
}

/// Bytes under `dir` (`du -sb`); 0 when `du` fails, which can only make the
/// check stricter.
fn used_bytes(dir: &Path) -> u64 {
    let mut cmd = Command::new("du");
    cmd.arg("-sb").arg(dir);
    util::output(&mut cmd).ok().and_then(|out| out.split_whitespace().next().and_then(|n| n.parse().ok())).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(what: &'static str, dir: &str, peak: u64) -> Need {
        Need { what, dir: PathBuf::from(dir), peak }
    }

    fn fs(mount: &str, avail: u64) -> Fs {
        Fs { mount: mount.to_owned(), avail }
    }

    #[test]
    fn disk_check_passes_when_everything_fits() {
        let rows = [(need("build output", "/w/target", 7 * MIB), fs("/", 8 * MIB), 0)];
        assert_eq!(shortfall(&rows), None);
    }

    #[test]
    fn disk_check_names_directories_amounts_and_remedy_when_short() {
        let rows = [
            (need("build output", "/w/target", 6 << 30), fs("/", 5 << 30), 0),
            (need("kernel cache", "/c/reinc", 1 << 30), fs("/", 5 << 30), 0),
        ];
        let msg = shortfall(&rows).expect("7 GiB needed on a filesystem with 5 free");
        assert!(msg.contains("has 5.0 GiB free and needs 7.0 GiB"), "{msg}");
        assert!(msg.contains("/w/target (build output) needs about 6.0 GiB more"), "{msg}");
        assert!(msg.contains("/c/reinc (kernel cache) needs about 1.0 GiB more"), "{msg}");
        assert!(msg.contains("CARGO_TARGET_DIR"), "{msg}");
    }

    #[test]
    fn disk_check_counts_what_is_already_there() {
        // A warm clone: target/ already holds its peak, so 1 GiB free is enough.
        let rows = [(need("build output", "/w/target", 6 << 30), fs("/", 1 << 30), 6 << 30)];
        assert_eq!(shortfall(&rows), None);
    }

    #[test]
    fn disk_check_keeps_filesystems_apart() {
        // The cache on a roomy disk does not excuse a full one under target/.
        let rows = [
            (need("build output", "/w/target", 6 << 30), fs("/w", 1 << 30), 0),
            (need("kernel cache", "/c/reinc", 1 << 30), fs("/c", 100 << 30), 0),
        ];
        let msg = shortfall(&rows).expect("/w is short");
        assert!(msg.contains("the filesystem at /w has 1.0 GiB free"), "{msg}");
        assert!(!msg.contains("/c/reinc"), "{msg}");
    }

    #[test]
    fn df_output_parses_avail_and_mount() {
        let out = "      Avail Mounted on\n85546897408 /\n";
        assert_eq!(parse_df(out), Some(fs("/", 85_546_897_408)));
        let spaced = "Avail Mounted on\n12 /mnt/my disk\n";
        assert_eq!(parse_df(spaced), Some(fs("/mnt/my disk", 12)));
        assert_eq!(parse_df("Avail Mounted on\n"), None);
    }

    #[test]
    fn df_answers_for_a_directory_that_does_not_exist_yet() {
        let fs = filesystem(&existing_ancestor(Path::new("/tmp/reinc-no-such-dir/a/b"))).expect("df on /tmp");
        assert!(!fs.mount.is_empty());
    }
}
