//! Client library and the control protocol of the reinc supervisor.
//!
//! (The client library proper follows in the next commit.)
#![forbid(unsafe_code)]

pub mod control;
