//! Small helpers shared by the subcommands: running commands, locating the
//! workspace, errors.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;

/// An xtask failure, with what was being done.
#[derive(Debug)]
pub enum Error {
    /// Bad command-line usage.
    Usage(String),
    /// A command ran and failed.
    Command { what: String, status: String },
    /// Anything else, already phrased for the user.
    Other(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Other(m) => f.write_str(m),
            Error::Command { what, status } => write!(f, "`{what}` failed ({status})"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T = ()> = std::result::Result<T, Error>;

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives inside the workspace").to_path_buf()
}

/// The cargo that runs us (so `cargo +toolchain xtask` stays consistent).
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// Runs `cmd`, echoing it first, and fails if it does not exit 0.
pub fn run(cmd: &mut Command) -> Result {
    let what = describe(cmd);
    eprintln!("$ {what}");
    let status = cmd.status().map_err(|e| Error::Other(format!("cannot start `{what}`: {e}")))?;
    if status.success() { Ok(()) } else { Err(Error::Command { what, status: status.to_string() }) }
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
