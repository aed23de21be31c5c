//! Host driver binary for QEMU's edu device over UIO.
//!
//! (Skeleton: filled in by its issue.)
#![forbid(unsafe_code)]

fn main() {
    eprintln!("edu_driver: not built yet");
    std::process::exit(2);
}
