//! Host driver binary for BCM2835 GPIO over UIO.
//!
//! (Skeleton: filled in by its issue.)
#![forbid(unsafe_code)]

fn main() {
    eprintln!("gpio_driver: not built yet");
    std::process::exit(2);
}
