//! The host-side contract between the supervisor, the driver runtime, the
//! client library and `drvctl`: the names they must agree on, in one place.
//!
//! - [`env`](mod@env): every `REINC_*` environment variable, both the launch contract
//!   the supervisor sets for a driver (CONTRACTS.md §1) and the ones the
//!   client side reads.
//! - [`paths`]: the runtime directory and the socket files in it.
//! - [`control`]: the `drvctl` ↔ supervisor control protocol.
//!
//! The driver ↔ supervisor and client ↔ supervisor *wire* types stay in
//! `reinc-proto`: drivers and firmware speak them too. This crate adds only
//! what exists on a Linux host with a supervisor process.
//!
//! # Why this crate exists
//! Each of these used to live with one of its users: the launch variables as
//! constants of `reinc-runtime` (and spelt out again in the supervisor), the
//! control types and socket names in `reinc-client`, so the supervisor
//! depended on the client library to learn its own protocol. A name changed
//! on one side compiled and failed at run time. Here each name is defined
//! once, and the crates on both sides of it depend on this small crate and
//! on nothing of each other.
//!
//! # Designs rejected
//! - **A sibling of `core-nostd/proto` (or a module of it).** The control
//!   messages are owned (`String`, `Vec`), the runtime directory follows
//!   Linux conventions (`$XDG_RUNTIME_DIR`, the uid), and none of it means
//!   anything to firmware. A `core-nostd` crate must build for
//!   `thumbv7em-none-eabihf` without an allocator, so most of it would sit
//!   behind `std` features, and the wire crate every firmware links would
//!   grow host-only surface. A std crate here depends on `reinc-proto` for
//!   the framing and the fault plan instead.
//! - **Keeping it in `reinc-client`, with the supervisor depending on the
//!   client.** The daemon linked the client's reconnect machinery to get a
//!   few enums, the runtime could not share the names without a client
//!   dependency in every driver, and a change to the client rebuilt the
//!   supervisor. The client re-exports [`control`] because its own
//!   signatures (`control_request`) use those types.
#![forbid(unsafe_code)]

pub mod control;
pub mod env;
pub mod paths;
