//! Host driver binary for the software loopback packet device.
//!
//! (Skeleton: filled in by its issue.)
#![forbid(unsafe_code)]

fn main() {
    eprintln!("net_driver: not built yet");
    std::process::exit(2);
}
