//! Fixed-capacity FIFO of in-flight requests, keyed by request id.
//!
//! (Skeleton: filled in by its issue.)
#![no_std]
#![forbid(unsafe_code)]
