//! Cross-crate integration and fault-injection tests, grouped by behaviour.
//!
//! (Skeleton: filled in by its issue.)
#![forbid(unsafe_code)]
