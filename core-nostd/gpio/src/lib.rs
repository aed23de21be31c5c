//! BCM2835 GPIO register block and replay-safe pin handler.
//!
//! (Skeleton: filled in by its issue.)
#![no_std]
#![forbid(unsafe_code)]
