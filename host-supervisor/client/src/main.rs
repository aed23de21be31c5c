//! Client library and the drvctl command-line tool.
//!
//! (Skeleton: filled in by its issue.)
#![forbid(unsafe_code)]

fn main() {
    eprintln!("drvctl: not built yet");
    std::process::exit(2);
}
