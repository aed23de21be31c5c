//! `cargo xtask dist`: the release folder of the operator-facing binaries,
//! with their man pages and shell completions.
//!
//! ```text
//! target/dist/
//!   bin/supervisor  bin/drvctl
//!   man/supervisor.1  man/drvctl.1  man/drvctl-<command>.1 ...
//!   completions/{supervisor,drvctl}.bash  _supervisor _drvctl  {supervisor,drvctl}.fish
//! ```
//! The binaries are built in release mode and then asked to write their own
//! documents (`drvctl generate-docs DIR`, `supervisor --generate-docs DIR`,
//! both hidden from `--help`), so the man pages and completions come from the
//! very clap definitions that parse the command line, and cannot drift from
//! them. Each expected file is checked to exist and be non-empty.
//!
//! # Rejected alternatives
//! - Generating the documents here, with `clap_mangen` and `clap_complete`
//!   as xtask dependencies: the xtask would have to link the supervisor and
//!   the client to reach their definitions, and every first `cargo xtask`
//!   would compile clap and the whole daemon.
//! - A `build.rs` in each crate writing the documents: build scripts cannot
//!   see the binary's own types without moving them into a library, and
//!   writing outside `OUT_DIR` is discouraged.

use std::path::{Path, PathBuf};

use crate::util::{self, Error, IoContext, Result};

/// Packages and the binaries taken from them, with the argument that makes
/// each binary write its documents into a directory given after it.
pub const BINARIES: &[(&str, &str, &str)] =
    &[("reinc-supervisor", "supervisor", "--generate-docs"), ("reinc-client", "drvctl", "generate-docs")];

const USAGE: &str = "\
usage: cargo xtask dist [--out DIR]

Builds supervisor and drvctl (release) into DIR/bin, and has them write their
man pages into DIR/man and their bash, zsh and fish completions into
DIR/completions (default DIR: target/dist).
";

/// Entry point of the subcommand.
pub fn run(args: &[String]) -> Result {
    match util::out_dir_arg(args, USAGE, "target/dist")? {
        Some(out) => build(&out),
        None => Ok(()),
    }
}

/// The `cargo build` arguments.
fn cargo_args() -> Vec<String> {
    let mut args: Vec<String> = vec!["build".into(), "--release".into()];
    for (package, _, _) in BINARIES {
        args.extend(["-p".into(), (*package).into()]);
    }
    for (_, bin, _) in BINARIES {
        args.extend(["--bin".into(), (*bin).into()]);
    }
    args
}

/// The files the binaries must have written under `out`: each binary's
/// top-level man page and its completions for bash, zsh and fish.
fn expected_files(out: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for (_, bin, _) in BINARIES {
        files.push(out.join("man").join(format!("{bin}.1")));
        for name in [format!("{bin}.bash"), format!("_{bin}"), format!("{bin}.fish")] {
            files.push(out.join("completions").join(name));
        }
    }
    files
}

/// Fails naming the first expected file that is missing or empty.
fn verify(out: &Path) -> Result {
    for f in expected_files(out) {
        let meta = std::fs::metadata(&f).at(&f)?;
        if meta.len() == 0 {
            return Err(Error::Other(format!("{}: written empty", f.display())));
        }
    }
    Ok(())
}

fn build(out: &Path) -> Result {
    util::run(util::cargo().args(cargo_args()))?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::workspace_root().join("target"));
    let built = target_dir.join("release");
    let bin_dir = out.join("bin");
    util::create_dir_all(&bin_dir)?;
    for (_, bin, generate) in BINARIES {
        let to = bin_dir.join(bin);
        std::fs::copy(built.join(bin), &to).at(&to)?;
        util::output(std::process::Command::new(&to).arg(generate).arg(out))?;
    }
    verify(out)?;
    let pages = std::fs::read_dir(out.join("man")).at(&out.join("man"))?.count();
    println!("dist: {} ready:", out.display());
    println!("  bin/: {}", BINARIES.iter().map(|(_, b, _)| *b).collect::<Vec<_>>().join(" "));
    println!("  man/: {pages} pages (e.g. man -l {})", out.join("man/drvctl.1").display());
    println!("  completions/: bash, zsh (_NAME), fish");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_builds_both_binaries_in_release() {
        assert_eq!(
            cargo_args().join(" "),
            "build --release -p reinc-supervisor -p reinc-client --bin supervisor --bin drvctl"
        );
    }

    #[test]
    fn verify_names_a_missing_or_empty_document() {
        let dir = std::env::temp_dir().join(format!("xtask-dist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for f in expected_files(&dir) {
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, "x").unwrap();
        }
        verify(&dir).unwrap();
        let zsh = dir.join("completions/_drvctl");
        std::fs::write(&zsh, "").unwrap();
        assert!(verify(&dir).unwrap_err().to_string().contains("_drvctl: written empty"));
        std::fs::remove_file(&zsh).unwrap();
        assert!(verify(&dir).unwrap_err().to_string().starts_with(&zsh.display().to_string()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
