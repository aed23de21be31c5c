//! Software loopback packet device core, with absolute idempotent effects.
//!
//! (Skeleton: filled in by its issue.)
#![no_std]
#![forbid(unsafe_code)]
