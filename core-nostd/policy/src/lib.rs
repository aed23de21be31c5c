//! Restart-policy and backoff arithmetic: a pure function of time passed in.
//!
//! (Skeleton: filled in by its issue.)
#![no_std]
#![forbid(unsafe_code)]
