//! Host driver binary for the BCM2835 system timer over UIO.
//!
//! (Skeleton: filled in by its issue.)
#![forbid(unsafe_code)]

fn main() {
    eprintln!("timer_driver: not built yet");
    std::process::exit(2);
}
