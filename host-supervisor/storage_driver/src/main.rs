//! Host driver binary for the storage core over a file-backed region.
//!
//! (Skeleton: filled in by its issue.)
#![forbid(unsafe_code)]

fn main() {
    eprintln!("storage_driver: not built yet");
    std::process::exit(2);
}
