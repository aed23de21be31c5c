//! `reinc-nbd`: an NBD server in front of a supervised storage driver.
//!
//! # Why this crate exists
//! The product promises that a driver crash is invisible to the driver's
//! clients, and that must hold for clients nobody here wrote: `nbdcopy`,
//! `nbdinfo`, `qemu-img`, `qemu-io`, the kernel's NBD client. It is a
//! front end for standard clients: a client of the
//! supervisor (through `reinc-client`) that speaks the NBD protocol to the
//! outside. Each NBD connection is one `reinc-client` session with its own
//! shared pool (a sealed memfd, [`bulk`]): a `WRITE`'s payload is read from
//! the NBD socket straight into a pool slot, a `READ`'s data is `pread` by
//! the storage driver into one and sent from there, and the storage request
//! (`storage_core::BulkRequest`, up to 4 MiB, so one per NBD request)
//! carries only the slot's range. Only when the supervisor refuses the pool
//! does the connection fall back to bytes in the messages, split into
//! storage requests of at most 32 KiB
//! ([`storage_core::MAX_BLOCKS_PER_REQUEST`] blocks). Either way requests
//! are pipelined without waiting, and the NBD reply goes out when the last
//! of them is answered. A storage_driver crash therefore looks to the NBD
//! client like latency: the supervisor gives the new instance the pool and
//! replays the unanswered storage requests, the slots stay pinned until
//! answered so the replay sees the same bytes, the storage core's watermark
//! keeps each write applied exactly
//! once, and the NBD reply carries the right data and no error.
//!
//! ```text
//! reinc-nbd --runtime-dir DIR [--driver storage_driver] (--socket PATH | --tcp PORT)
//!           [--export-name NAME] [--read-only] [--max-request BYTES] [--window N] [--max-connections N]
//!           [--wait-supervisor SECS] [--simple-replies]        (reinc-nbd --help says more)
//! ```
//!
//! Tested with clients nobody here wrote: `tests/tests/nbd_clients.rs`
//! (`nbdcopy`, `nbdinfo`, `qemu-img`, `qemu-io` on the host, the driver
//! killed mid-transfer) and `qemu/guest/src/bin/nbd-suite.rs` (the Linux
//! kernel's own NBD client on `/dev/nbd0` in the x86 guest, dd-style I/O
//! through SIGSEGV, SIGKILL and a hang); bad input in
//! `tests/tests/nbd_bad_input.rs`.
//!
//! # Protocol
//! Implemented from the NBD protocol specification (`doc/proto.md` of
//! NetworkBlockDevice/nbd), in [`proto`] (pure, unit-tested) and [`server`]
//! (the I/O):
//! - fixed newstyle handshake (plain newstyle clients are refused), with
//!   `NO_ZEROES`;
//! - options `NBD_OPT_GO`, `INFO`, `LIST`, `ABORT`, `EXPORT_NAME` and
//!   `STRUCTURED_REPLY` (unless `--simple-replies`); every other option,
//!   `STARTTLS` included, gets `NBD_REP_ERR_UNSUP` and the negotiation
//!   goes on;
//! - `NBD_INFO_EXPORT` and `NBD_INFO_BLOCK_SIZE`: minimum 512 (the storage
//!   block), preferred 32 KiB (one storage request on the message path), maximum `--max-request`
//!   (2 MiB by default);
//! - transmission flags `HAS_FLAGS`, `SEND_FLUSH`, `SEND_FUA`,
//!   `CAN_MULTI_CONN`, `SEND_TRIM` and `SEND_WRITE_ZEROES` (not on a
//!   read-only export), and `READ_ONLY` with `--read-only`. `TRIM` and
//!   `WRITE_ZEROES` (with `FUA`; `NO_HOLE` accepted, zeros are always
//!   written) become `storage_core::StorageRequest::Zero` requests of up to
//!   4 MiB each, exactly once like writes; a trimmed range then reads as
//!   zeros, which the spec allows;
//! - `READ`, `WRITE` (with `FUA`), `FLUSH`, `DISC`. `FUA` is accepted on
//!   every command, as the spec requires once it is advertised, and means
//!   something only on a write. Replies go out in completion order, so
//!   requests pipeline;
//! - simple replies, or, for a client that negotiated them, structured
//!   replies to `READ` (`OFFSET_DATA`, `ERROR`, `ERROR_OFFSET`): a read
//!   alone in flight then streams in 128 KiB pieces as the driver fills
//!   them, and a damaged block fails only its piece, with a message
//!   (`src/server/engine.rs`, "Reads in structured replies"). Writes and flushes
//!   keep simple replies, which the spec allows for replies without data.
//!   Not `NBD_FLAG_SEND_DF`: a read is never promised in one chunk.
//!
//! Bad input: an unaligned offset or length, a zero length, a length above
//! the maximum, an unknown command or flag, or a flush with an offset gets
//! `EINVAL`; a read past the end `EINVAL`, a write past the end `ENOSPC`; a
//! write to a read-only export `EPERM`. A refused write's payload is read and
//! discarded (up to 32 MiB, the spec's default maximum; beyond that the
//! server cannot tell payload from garbage and hard-disconnects). Malformed
//! handshakes (bad client flags, bad option magic, options over 8 KiB,
//! `EXPORT_NAME` of an unknown export) and a bad request magic end that one
//! connection, as the spec allows; nothing else is affected.
//!
//! # Durability: what `FLUSH` and `FUA` promise
//! A `WRITE` is answered once every storage request of it has been answered,
//! that is, once the storage driver has `pwrite`n it into its file and the
//! supervisor has committed the reply. From then on the data survives a crash
//! of the storage driver, of this front end and of the supervisor (the page
//! cache outlives all three), but not a power loss, unless the driver runs
//! with `--sync-data`. `FLUSH` is a [`storage_core::StorageRequest::Flush`],
//! which the driver answers after `fdatasync` of its file; requests run in
//! FIFO order, so it covers every write submitted before it, from any
//! connection (hence `CAN_MULTI_CONN`). A `WRITE` with `FUA` is answered only
//! after a flush submitted right behind its chunks. So `FLUSH` and `FUA` mean
//! what the spec says: on permanent storage.
//!
//! # When this front end itself dies
//! The NBD connection breaks: an NBD client sees a disconnect, as with any
//! NBD server that dies. What is defined:
//! - every write the client saw acknowledged is in the storage driver's file
//!   (an acknowledgement is only sent after the storage driver's reply), so a
//!   restarted `reinc-nbd` serves it; nothing is cached here;
//! - writes in flight (sent, not acknowledged) may or may not have been
//!   applied, as NBD allows for any server. Storage requests the supervisor
//!   had accepted still run, exactly once, in FIFO order, before anything a
//!   later session submits;
//! - a client that reconnects and resends what was unacknowledged (qemu's NBD
//!   client with `reconnect-delay`, tested) loses nothing: the resent writes
//!   are absolute, so applying one a second time
//!   stores the same bytes. Across a front-end death a resent write is a new
//!   storage request (a new session), so it is at-least-once, not
//!   exactly-once as within one session.
//!
//! `reinc-nbd` is restarted by whatever started it (systemd, a shell loop,
//! the tests). A stale socket file left by a dead instance is replaced.
//! `tests/tests/nbd_frontend_death.rs` kills it with SIGKILL under 16
//! pipelined writes (every acknowledged write is read back after the
//! restart, every unacknowledged one is old or new per storage request) and
//! under `qemu-img convert` with `reconnect-delay` (it exits 0 with every
//! byte right).
//!
//! Why "every accepted storage request runs before anything a later session
//! submits": the supervisor reads a dead connection's queued frames before
//! it sees the hang-up, and the new front end's session needs a `Hello`
//! round trip through the same event loop first. That ordering is the
//! supervisor's (one FIFO per driver); the front end adds nothing to it.
//!
//! # Performance
//! `cargo xtask bench` (section 7) compares `nbdcopy` through this server
//! with nbdkit's file plugin, `qemu-nbd` and direct I/O on the same file.
//! Through the shared pool a byte is copied as often as through nbdkit
//! (socket → slot, slot → file; file → slot, slot → socket), and what is
//! left is one supervisor round trip per NBD request; the bench reports
//! the measured ratios (README, "Benchmarks").
//!
//! # Designs rejected
//! - **The `nbd` crate** (crates.io, 0.3.1, the only NBD server crate there):
//!   its server answers `NBD_OPT_GO` and `NBD_OPT_INFO` with
//!   `NBD_REP_ERR_UNSUP` (so no block-size constraints can be advertised and
//!   clients fall back to `EXPORT_NAME`), drops the connection on any option
//!   it does not know instead of answering `NBD_REP_ERR_UNSUP`, and serves
//!   one request at a time over a `Read + Write + Seek` backend, so nothing
//!   could be pipelined onto the supervisor. Structured replies are off
//!   there, as here, which would have been fine. Fixing all that is a
//!   rewrite of its server half; the protocol subset needed is small.
//! - **The server inside the supervisor** (an NBD listener in its epoll
//!   loop): it would save one socket hop per 32 KiB, but it puts a network
//!   protocol parser, per-connection buffers of up to megabytes and a slow
//!   peer's backpressure into the one process whose crash loses every
//!   session, and the supervisor would have to know what a storage request
//!   is. As a separate process on `reinc-client` the front end is an ordinary
//!   client: bounded by the same per-session limits, replaceable, and its
//!   crash costs its own NBD connections only.
//! - **One thread per connection doing blocking calls**: one 32 KiB request
//!   in flight per connection; NBD clients pipeline, and so must the front
//!   end. Here a reader thread and the engine thread share a connection, and
//!   up to `--window` storage requests are in flight on it.
//! - **Bytes in the messages (the first design)**: every 32 KiB crossed
//!   two sockets each way, copied and postcard-encoded at every hop, and a
//!   1 MiB NBD request was 32 storage requests; it reached 0.07–0.75× of
//!   nbdkit. It remains the fallback when no pool can be attached.
//! - **Simple replies only** (the first design): a read's header carries
//!   its one error, so no byte of it could leave before its last byte was
//!   in the pool, and a read alone in flight cost the driver's work plus
//!   the socket's in series (0.66–0.73 of nbdkit at 1 in flight). Simple
//!   replies stay for clients that do not ask (the Linux kernel's).
//! - **Streaming simple replies**: sending the header with error 0 before
//!   the last piece is answered commits to success; a later failure could
//!   only be a hard disconnect, which the kernel client turns into a dead
//!   device.
#![forbid(unsafe_code)]

pub mod bulk;
pub mod client;
pub mod proto;
pub mod server;
