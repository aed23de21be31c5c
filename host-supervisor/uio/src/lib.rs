//! Linux UIO layer: sysfs discovery, bounds-checked mappings, interrupts.
//!
//! (Skeleton: filled in by its issue.)
#![forbid(unsafe_code)]
