//! Small helpers shared by the subcommands: running commands, locating the
//! workspace and the per-user cache, errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// An xtask failure, phrased for the user: every variant names the file,
/// command or machine involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command-line usage.
    #[error("{0}")]
    Usage(String),
    /// A command ran and failed.
    #[error("`{what}` failed ({status})")]
    Command { what: String, status: String },
    /// A command could not be started at all.
    #[error("cannot start `{what}`: {source}")]
    Spawn { what: String, source: std::io::Error },
    /// A file or directory operation failed.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// Something must be installed and this process cannot do it.
    #[error("{what} is missing and cannot be installed from here ({why}); run as root:\n    {command}")]
    NeedsInstall { what: String, why: String, command: String },
    /// apt would remove or downgrade an installed package to install
    /// `packages`; the xtask refuses and names the command a user may run.
    #[error(
        "installing {packages} ({what}) would {conflicts}; the xtask never removes or downgrades a package. \
         If that is acceptable to you, run it yourself:\n    {command}"
    )]
    WouldRemove { what: String, packages: String, conflicts: String, command: String },
    /// `apt-get download` failed (possibly stale package lists).
    #[error("download failed: {0}")]
    Download(Box<Error>),
    /// The QEMU suites ran and at least one test (or a boot) failed.
    #[error("{failed} QEMU guest test(s) failed")]
    GuestFailures { failed: usize },
    /// `cargo xtask test` ran every stage and something failed; its closing
    /// `total: N passed, N failed` line already said so.
    #[error("{failed} check(s) failed")]
    SuiteFailures { failed: usize },
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Other(String),
}

pub type Result<T = ()> = std::result::Result<T, Error>;

/// Attaches a path to an I/O error.
pub trait IoContext<T> {
    /// Turns an `io::Error` into [`Error::Io`] naming `path`.
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|source| Error::Io { path: path.to_path_buf(), source })
    }
}

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives inside the workspace").to_path_buf()
}

/// Parses the `[--out DIR]` command line of a packaging subcommand
/// (`build-pi`, `dist`): `Some(DIR)` (`default` under the workspace root if
/// not given), or `None` after printing `usage` for `--help`.
///
/// # Errors
/// [`Error::Usage`] for `--out` without a value or any other flag.
pub fn out_dir_arg(args: &[String], usage: &str, default: &str) -> Result<Option<PathBuf>> {
    let mut out = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => {
                out = Some(PathBuf::from(
                    it.next().ok_or_else(|| Error::Usage(format!("`--out` needs a directory\n\n{usage}")))?,
                ));
            }
            "--help" | "-h" => {
                print!("{usage}");
                return Ok(None);
            }
            other => return Err(Error::Usage(format!("unknown flag `{other}`\n\n{usage}"))),
        }
    }
    Ok(Some(out.unwrap_or_else(|| workspace_root().join(default))))
}

/// The cargo that runs us (so `cargo +toolchain xtask` stays consistent).
///
/// Under CI (`CI` set and not empty) incremental compilation is off unless
/// `CARGO_INCREMENTAL` says otherwise: CI builds a fresh clone once, so the
/// incremental caches (1.5 of the 4.9 GiB of a cold debug test build, with
/// full debuginfo) are disk spent for nothing.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    if ci && std::env::var_os("CARGO_INCREMENTAL").is_none() {
        c.env("CARGO_INCREMENTAL", "0");
    }
    c
}

/// Runs `cmd`, echoing it first, and fails if it does not exit 0.
pub fn run(cmd: &mut Command) -> Result {
    let what = describe(cmd);
    eprintln!("$ {what}");
    let status = cmd.status().map_err(|source| Error::Spawn { what: what.clone(), source })?;
    if status.success() { Ok(()) } else { Err(Error::Command { what, status: status.to_string() }) }
}

/// Runs `cmd` quietly and returns its stdout; fails (with its stderr) if it
/// does not exit 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = raw_output(cmd)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(Error::Command { what: describe(cmd), status: format!("{}: {}", out.status, stderr.trim()) })
    }
}

/// Runs `cmd` quietly and returns everything, whatever its exit status.
pub fn raw_output(cmd: &mut Command) -> Result<Output> {
    cmd.output().map_err(|source| Error::Spawn { what: describe(cmd), source })
}

/// A shell-like rendering of `cmd` for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Whether `program` is found on `PATH`.
pub fn on_path(program: &str) -> bool {
    find_on_path(program).is_some()
}

/// The first `PATH` entry holding `program`.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|dir| dir.join(program)).find(|p| p.is_file())
}

/// The per-user cache, outside any clone so that a fresh clone reuses it:
/// `$REINC_CACHE_DIR`, else `$XDG_CACHE_HOME/reinc`, else `~/.cache/reinc`.
pub fn cache_dir() -> Result<PathBuf> {
    cache_dir_from(|k| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from))
}

fn cache_dir_from(var: impl Fn(&str) -> Option<PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = var("REINC_CACHE_DIR") {
        return Ok(dir);
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return Ok(dir.join("reinc"));
    }
    var("HOME")
        .map(|home| home.join(".cache").join("reinc"))
        .ok_or_else(|| Error::Other("no cache directory: set REINC_CACHE_DIR (or HOME)".into()))
}

/// The effective user id, read from `/proc/self/status` (this crate has no
/// libc binding and forbids `unsafe`).
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_effective_uid(&status)
}

fn parse_effective_uid(status: &str) -> Option<u32> {
    // "Uid:\t<real>\t<effective>\t<saved>\t<fs>"
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Creates `dir` and its parents.
pub fn create_dir_all(dir: &Path) -> Result {
    std::fs::create_dir_all(dir).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_prefers_reinc_variable_then_xdg_then_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| PathBuf::from(v))
        };
        let all = env(&[("REINC_CACHE_DIR", "/c"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(cache_dir_from(all).unwrap(), PathBuf::from("/c"));
        let xdg = env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(cache_dir_from(xdg).unwrap(), PathBuf::from("/x/reinc"));
        let home = env(&[("HOME", "/h")]);
        assert_eq!(cache_dir_from(home).unwrap(), PathBuf::from("/h/.cache/reinc"));
        assert!(cache_dir_from(env(&[])).is_err());
    }

    #[test]
    fn effective_uid_is_the_second_uid_field() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_effective_uid(status), Some(0));
        assert_eq!(parse_effective_uid("Name:\tx\n"), None);
    }
}
