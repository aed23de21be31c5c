//! The shared driver event loop every driver binary runs.
//!
//! (Skeleton: filled in by its issue.)
#![forbid(unsafe_code)]
