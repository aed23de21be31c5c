//! `reinc-bench run` refuses bad arguments with a usage error (exit 2) that
//! says what was wrong, before it measures anything.

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reinc-bench")).args(args).output().expect("reinc-bench runs");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn only_with_a_word_that_names_no_section_lists_the_sections() {
    let dir = std::env::temp_dir().join(format!("reinc-bench-cli-{}", std::process::id()));
    let (code, err) = run(&["run", "--only", "no-such-section", "--out", &dir.to_string_lossy()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("\"no-such-section\" names no section"), "{err}");
    assert!(err.contains("3. recovery time") && err.contains("7. NBD front end"), "{err}");
}

#[test]
fn only_without_a_word_is_a_usage_error() {
    let (code, err) = run(&["run", "--out", "/nonexistent", "--only"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--only needs a word"), "{err}");
}
