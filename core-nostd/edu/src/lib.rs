//! Register block and replay-safe request handler for QEMU's edu PCI device.
//!
//! (Skeleton: filled in by its issue.)
#![no_std]
#![forbid(unsafe_code)]
