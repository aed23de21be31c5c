//! Checks of the workspace's shape that no compiler or unit test can make,
//! run as one lint each by `cargo xtask test` (rust-analyzer's "tidy").
//!
//! [`host_binaries_hash_with_simd`]: every host binary that links
//! `crc32fast` (block tags, checkpoint and trace-ring checksums of the
//! no_std cores) gets its `std` feature, i.e. run-time CPU detection. Cargo
//! unifies features per build, so a workspace build hides the defect: only
//! a driver built on its own (`cargo build -p storage_driver`) hashed with
//! the table fallback, 0.80 GB/s instead of 9.8 GB/s with PCLMULQDQ. The
//! check asks `cargo tree` for each binary package alone, which is how a
//! user building one driver resolves it.
//!
//! Rejected: a unit test in the runtime crate. It is compiled in the same
//! unified build that hides the defect, and crc32fast exposes no way to ask
//! which backend it chose.

use crate::util::{self, Error, Result};
use std::path::Path;

/// Packages under `host-supervisor/` that build a binary.
fn host_binary_packages(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("host-supervisor");
    let mut names = Vec::new();
    let entries = std::fs::read_dir(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
    for e in entries {
        let e = e.map_err(|source| Error::Io { path: dir.clone(), source })?;
        let manifest = e.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        let doc: toml::Table =
            text.parse().map_err(|err| Error::Other(format!("{}: not valid TOML: {err}", manifest.display())))?;
        let Some(name) = doc.get("package").and_then(|p| p.get("name")).and_then(|n| n.as_str()) else {
            continue;
        };
        let src = e.path().join("src");
        if doc.contains_key("bin") || src.join("main.rs").is_file() || src.join("bin").is_dir() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Whether `cargo tree -e normal,features -i crc32fast` output, for one
/// package alone, shows crc32fast linked without its `std` feature.
fn lacks_std(tree: &str) -> bool {
    let linked = tree.lines().any(|l| l.trim_start().starts_with("crc32fast v"));
    linked && !tree.lines().any(|l| l.contains("crc32fast feature \"std\""))
}

/// Fails naming every host binary package that, built alone, would link
/// crc32fast without run-time CPU detection.
///
/// # Errors
/// [`Error::Other`] naming the packages, or a `cargo tree` failure.
pub fn host_binaries_hash_with_simd() -> Result {
    let root = util::workspace_root();
    let mut bad = Vec::new();
    for name in host_binary_packages(&root)? {
        let out = util::raw_output(
            util::cargo().args(["tree", "-q", "-p", &name, "-e", "normal,features"]).args(["-i", "crc32fast"]),
        )?;
        // "did not match any packages": this binary does not link crc32fast.
        if out.status.success() && lacks_std(&String::from_utf8_lossy(&out.stdout)) {
            bad.push(name);
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "built alone, {} link crc32fast without its \"std\" feature (table CRC, ~12x slower): depend on \
             reinc-runtime or enable crc32fast/std in their Cargo.toml",
            bad.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_without_the_std_feature_is_caught_and_one_with_it_passes() {
        let without = "crc32fast v1.5.4\n└── reinc-region v0.1.0\n    └── storage_driver v0.1.0\n";
        assert!(lacks_std(without));
        let with =
            "crc32fast v1.5.4\n├── reinc-region v0.1.0\n└── crc32fast feature \"std\"\n    └── reinc-runtime v0.1.0\n";
        assert!(!lacks_std(with));
        assert!(!lacks_std(""), "a package that does not link crc32fast needs nothing");
    }

    #[test]
    fn the_host_binaries_include_the_drivers_and_not_the_libraries() {
        let names = host_binary_packages(&util::workspace_root()).unwrap();
        for driver in ["storage_driver", "net_driver", "edu_driver", "reinc-supervisor"] {
            assert!(names.iter().any(|n| n == driver), "{driver} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n == "reinc-uio"), "reinc-uio is a library: {names:?}");
    }
}
