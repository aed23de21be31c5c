//! BCM2835 system timer register block and compare-channel handler.
//!
//! (Skeleton: filled in by its issue.)
#![no_std]
#![forbid(unsafe_code)]
