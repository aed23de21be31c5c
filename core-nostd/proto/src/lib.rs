//! The wire protocol spoken between clients, the supervisor and drivers.
//!
//! # Why this crate exists
//! Every message that crosses a process boundary is defined here, once, so the
//! supervisor, the driver runtime, the client library and bare-metal firmware
//! all agree on the bytes. It is `#![no_std]` and needs no allocator: messages
//! borrow their payloads (`&[u8]`, `&str`) from the receive buffer, which is
//! what postcard's zero-copy deserialisation gives us.
//!
//! # Shape of a frame
//! A frame is one `SOCK_SEQPACKET` message (the transport keeps boundaries, so
//! there is no length prefix): the protocol version as a postcard varint,
//! followed by one postcard-encoded message. [`decode`] checks the size, then
//! the version, then the message, and refuses trailing bytes, so a peer from a
//! different protocol version gets [`WireError::UnknownVersion`] instead of a
//! confusing decode of the wrong shape.
//!
//! # Channels
//! - supervisor → driver: [`ToDriver`]; driver → supervisor: [`DriverFrame`]
//!   wrapping a [`FromDriver`] with the sender's [`Generation`].
//! - client → supervisor: [`ClientToSup`]; supervisor → client: [`SupToClient`].
//!
//! # Contracts carried by these types (CONTRACTS.md §3, §4)
//! - Every request has a [`RequestId`] `(client, seq)`.
//! - A driver's [`FromDriver::Reply`] carries its state commit. The supervisor
//!   applies the commit before forwarding the reply ("commit-with-reply"), so
//!   the only requests ever replayed are those without a reply.
//! - A driver instance stamps every frame with the generation it was given in
//!   [`ToDriver::Init`]; frames from any other generation are dropped.
//!
//! # Designs rejected
//! - Length-prefixed frames on a stream socket: `SOCK_SEQPACKET` gives atomic
//!   message boundaries and makes a torn frame impossible, so we use it.
//! - A self-describing format (CBOR, JSON): larger and slower, and every peer is
//!   built from this crate anyway; postcard with an explicit version is enough.
//! - One enum for all directions: separate enums make it impossible for a
//!   driver to send a client message, by type.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(any(feature = "alloc", test))]
extern crate alloc;

mod fault;
mod ids;
mod wire;

pub use fault::{CrashKind, CrashPoint, FaultPlan, FaultPlanError};
pub use ids::{ClientId, Generation, RequestId};
#[cfg(any(feature = "alloc", test))]
pub use wire::encode_vec;
pub use wire::{MAX_BODY, MAX_CHECKPOINT, MAX_FRAME, PROTOCOL_VERSION, WireError, decode, encode};

use serde::{Deserialize, Serialize};

/// Supervisor → driver.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ToDriver<'a> {
    /// The first message every new driver instance receives. The instance
    /// restores `checkpoint` (the last committed state, `None` for a fresh
    /// start), re-applies it to its device, and answers [`FromDriver::Ready`].
    /// Every frame it sends from then on carries `generation`.
    Init {
        /// This instance's generation.
        generation: Generation,
        /// Postcard-encoded driver state, at most [`MAX_CHECKPOINT`] bytes.
        #[serde(borrow)]
        checkpoint: Option<&'a [u8]>,
    },
    /// One client request. Requests are delivered in FIFO order; after a
    /// restart the unanswered ones are delivered again, in the same order.
    Request {
        /// The client's id for this request.
        id: RequestId,
        /// The driver-specific request, postcard-encoded by the client.
        body: &'a [u8],
    },
    /// Heartbeat probe; the driver answers [`FromDriver::Pong`] from its event loop.
    Ping {
        /// Echoed back in the pong.
        nonce: u64,
    },
    /// Arm a one-shot fault in this instance (`drvctl inject`).
    Inject(FaultPlan),
    /// Finish the current request, then exit 0.
    Shutdown,
    /// The bulk-data pool of the client session `client` comes with this
    /// frame, as one `SCM_RIGHTS` descriptor (a sealed memfd): requests of
    /// that session name byte ranges in it instead of carrying the bytes.
    /// Replaces an earlier pool of the session. The supervisor sends it when
    /// the client attaches it and again to every new instance, after `Init`
    /// and before the replay, so a replayed request finds its pool. The
    /// driver validates the descriptor (memfd, `F_SEAL_SHRINK`, size) and
    /// every range in a request against it; a frame without a descriptor, or
    /// a descriptor that fails, leaves the session without a pool, and its
    /// bulk requests get a definite error. Appended in protocol version 2.
    AttachPool {
        /// The session the pool belongs to.
        client: ClientId,
    },
    /// The session `client` is gone: unmap its pool. Sent only once no
    /// request of the session is queued or in flight. Appended in
    /// protocol version 2.
    DetachPool {
        /// The session.
        client: ClientId,
    },
}

/// Driver → supervisor, as sent on the wire: every message carries the
/// sender's generation so that frames from an old instance can be dropped.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DriverFrame<'a> {
    /// The generation from the [`ToDriver::Init`] this instance received
    /// (`Generation(0)` before that).
    pub generation: Generation,
    /// The message.
    #[serde(borrow)]
    pub msg: FromDriver<'a>,
}

/// Driver → supervisor.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum FromDriver<'a> {
    /// The checkpoint from `Init` is restored and applied to the device;
    /// requests may flow.
    Ready,
    /// The answer to one request, with the state it commits.
    ///
    /// The supervisor makes `commit` the driver's checkpoint (and persists it
    /// when configured) *before* it forwards `body` to the client.
    Reply {
        /// Must be the id of the oldest request this instance has not answered.
        id: RequestId,
        /// The new committed state, postcard-encoded; `None` when unchanged.
        #[serde(borrow)]
        commit: Option<&'a [u8]>,
        /// The driver-specific reply, postcard-encoded, forwarded verbatim.
        body: &'a [u8],
    },
    /// Answer to [`ToDriver::Ping`].
    Pong {
        /// The probe's nonce.
        nonce: u64,
    },
    /// The driver cannot run (device missing, mapping refused, corrupt
    /// checkpoint); it exits right after sending this. The supervisor records
    /// `reason` as the failure reason.
    Fatal {
        /// Human-readable reason naming the device or file involved.
        reason: &'a str,
    },
}

/// Client → supervisor.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ClientToSup<'a> {
    /// Opens a session, or resumes one after a reconnect. Must be the first
    /// message on a connection.
    ///
    /// After a resume the client must resend every call it has no answer
    /// for, lowest `seq` first: the answer to a call accepted on an earlier
    /// connection is sent only once it is resent here, so that answers come
    /// in the order of the resends (an answer lost with the old connection
    /// is never overtaken by a later one).
    Hello {
        /// `Some(id)` to resume the session `id` (its cached replies answer
        /// retried requests); `None` for a new session.
        resume: Option<ClientId>,
    },
    /// Calls a driver. `seq` must be unique within the session; a retried
    /// `seq` is answered from the supervisor's dedup table, never re-executed.
    Call {
        /// The request's sequence number within this session.
        seq: u64,
        /// The driver's configured name.
        driver: &'a str,
        /// The driver-specific request, postcard-encoded.
        body: &'a [u8],
        /// The client will never retry any `seq` below this, so the
        /// supervisor may forget their cached replies (Raft-style sessions).
        acked_below: u64,
    },
    /// Attaches this session's bulk-data pool for `driver`: a sealed memfd,
    /// sent as one `SCM_RIGHTS` descriptor with this frame. The supervisor
    /// keeps the descriptor (it never maps it) and passes it to every
    /// instance of the driver (`ToDriver::AttachPool`). Answered
    /// [`SupToClient::PoolAttached`] or [`SupToClient::PoolRefused`]. The
    /// client must not reuse a pool range until the call that names it is
    /// answered: replay reads the same bytes again. Appended in protocol
    /// version 2.
    AttachPool {
        /// The driver's configured name.
        driver: &'a str,
    },
    /// The client is done with its session for good: no resume will come.
    /// Calls still running finish (they were accepted), and the session, its
    /// cached replies and its pools are then forgotten at once instead of
    /// after `session-idle-timeout-ms`. No answer; the client closes the
    /// connection after it. Appended in protocol version 2; a supervisor
    /// that predates it answers `Rejected`, which a closing client ignores.
    Bye,
}

/// Supervisor → client.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum SupToClient<'a> {
    /// Answer to [`ClientToSup::Hello`].
    Welcome {
        /// The session id to present when resuming.
        client: ClientId,
    },
    /// The driver's reply to the call `seq`.
    Reply {
        /// The call's sequence number.
        seq: u64,
        /// The driver-specific reply, postcard-encoded.
        body: &'a [u8],
    },
    /// The call `seq` was not executed, or cannot be answered.
    Failed {
        /// The call's sequence number.
        seq: u64,
        /// Why.
        error: CallError,
    },
    /// A frame from the client could not be decoded; nothing was accepted.
    Rejected {
        /// What was wrong with it.
        error: WireError,
    },
    /// Answer to [`ClientToSup::AttachPool`]: the pool is kept and passed
    /// to the driver. Appended in protocol version 2.
    PoolAttached {
        /// The driver.
        driver: &'a str,
    },
    /// Answer to [`ClientToSup::AttachPool`]: the pool was not kept (no
    /// descriptor, not a shrink-sealed memfd, unknown driver, not allowed).
    /// Appended in protocol version 2.
    PoolRefused {
        /// The driver.
        driver: &'a str,
        /// Why.
        error: CallError,
    },
}

/// Why a call failed. Every variant is definite: the request was either never
/// executed, or (for [`CallError::Poisoned`]) is known to crash the driver.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The driver's request queue is full; retry later (backpressure).
    #[error("driver queue is full (busy)")]
    Busy,
    /// No driver of that name is configured.
    #[error("no such driver")]
    UnknownDriver,
    /// The driver is quarantined or stopped; its pending requests fail with
    /// this until an operator revives it.
    #[error("driver failed (quarantined or stopped)")]
    DriverFailed,
    /// The request crashed the driver every time it was attempted, and was
    /// dropped from the queue after the configured number of attempts.
    #[error("request crashed the driver repeatedly and was dropped (poisoned)")]
    Poisoned,
    /// `Call` before `Hello`, or `resume` named an unknown session.
    #[error("no such client session")]
    NoSession,
    /// `seq` is below the session's `acked_below`: its reply was discarded
    /// and it must not be executed again.
    #[error("request id expired from the dedup table")]
    Expired,
    /// The request body is larger than [`MAX_BODY`].
    #[error("request too large")]
    TooLarge,
    /// The supervisor is shutting down.
    #[error("supervisor shutting down")]
    ShuttingDown,
    /// `Hello` for a new session, but the session table is full of sessions
    /// with a live connection (detached ones are evicted first); retry once a
    /// client has left. Since protocol version 2.
    #[error("the supervisor's session table is full (every session has a live connection)")]
    SessionsFull,
    /// The caller's uid and gid are not in the driver's `allow-uids` /
    /// `allow-gids`; the call was not executed. Since protocol version 2.
    #[error("not allowed to call this driver (allow-uids / allow-gids)")]
    NotAllowed,
    /// `AttachPool` came without exactly one descriptor, or with one that is
    /// not a memfd sealed against shrinking. Appended in protocol version 2.
    #[error("the pool descriptor is missing or is not a memfd sealed against shrinking (F_SEAL_SHRINK)")]
    BadPool,
}

#[cfg(test)]
mod tests;
