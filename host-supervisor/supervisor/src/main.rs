//! The reincarnation server: launches, watches, restarts drivers and replays their requests.
//!
//! (Skeleton: filled in by its issue.)
#![forbid(unsafe_code)]

fn main() {
    eprintln!("supervisor: not built yet");
    std::process::exit(2);
}
