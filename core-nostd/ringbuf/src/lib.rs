//! Trace ring buffer for post-mortem debugging.
//!
//! (Skeleton: filled in by its issue.)
#![no_std]
#![forbid(unsafe_code)]
