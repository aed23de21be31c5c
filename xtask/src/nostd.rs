//! Builds every `core-nostd` crate for a bare-metal target, proving they need
//! neither `std` nor an allocator.

use crate::util::{self, Result};

/// The bare-metal target every `core-nostd` crate must build for.
pub const TARGET: &str = "thumbv7em-none-eabihf";

/// The `core-nostd` packages (folder name -> package name is in each Cargo.toml).
pub fn packages() -> Result<Vec<String>> {
    let dir = util::workspace_root().join("core-nostd");
    let mut pkgs = Vec::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| util::Error::Other(format!("{}: {e}", dir.display())))?;
    for entry in entries {
        let manifest =
            entry.map_err(|e| util::Error::Other(format!("{}: {e}", dir.display())))?.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("name = \"").and_then(|r| r.strip_suffix('"')))
            .ok_or_else(|| util::Error::Other(format!("{}: no package name", manifest.display())))?;
        pkgs.push(name.to_string());
    }
    pkgs.sort();
    Ok(pkgs)
}

/// Adds the target with rustup (idempotent), then builds each core for it
/// on its own, so a failure names the crate. Returns one check per crate.
pub fn build_each() -> crate::test::Count {
    let mut count = crate::test::Count::default();
    let pkgs = match crate::test::ensure_rust_target(TARGET).and_then(|()| packages()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("xtask: no_std builds: {e}");
            count.failed = 1;
            return count;
        }
    };
    for p in pkgs {
        match util::run(util::cargo().args(["build", "--target", TARGET, "-p", &p])) {
            Ok(()) => count.passed += 1,
            Err(e) => {
                eprintln!("xtask: no_std build of {p} for {TARGET} failed: {e}");
                count.failed += 1;
            }
        }
    }
    count
}
