//! Guest-side programs for the QEMU suites.
//!
//! (Skeleton: filled in by its issue.)
#![forbid(unsafe_code)]

fn main() {
    eprintln!("reinc-guest: not built yet");
    std::process::exit(2);
}
