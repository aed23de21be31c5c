//! Framing: version check, size limits and strict decoding.

use serde::{Deserialize, Serialize};

/// The protocol version every frame starts with.
///
/// 2: [`ClientId`](crate::ClientId) is 64 bits wide (it was 32), so that ids
/// stay unique across supervisor lifetimes. Small ids encode as before
/// (postcard varints), large ones would overflow a version-1 peer's `u32`.
/// Also in 2: [`crate::CallError::SessionsFull`] and
/// [`crate::CallError::NotAllowed`] were appended, and later the bulk-data
/// pool messages (`AttachPool`, `DetachPool`, `PoolAttached`, `PoolRefused`,
/// [`crate::CallError::BadPool`]): appended variants, so every existing
/// message keeps its bytes, and a peer without them refuses the new ones as
/// malformed instead of mis-decoding them.
pub const PROTOCOL_VERSION: u16 = 2;

/// Largest driver-specific request or reply body.
pub const MAX_BODY: usize = 64 * 1024;

/// Largest committed driver state (checkpoint).
pub const MAX_CHECKPOINT: usize = 4 * 1024;

/// Largest frame on any channel: a body, a checkpoint and the envelope.
pub const MAX_FRAME: usize = MAX_BODY + MAX_CHECKPOINT + 256;

/// Why a frame was refused.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame is longer than [`MAX_FRAME`].
    #[error("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit")]
    Oversized {
        /// The frame's length.
        len: u32,
    },
    /// The frame is empty or ends in the middle of a field.
    #[error("frame is truncated")]
    Truncated,
    /// The frame was produced by another protocol version.
    #[error("unknown protocol version {got} (this build speaks {PROTOCOL_VERSION})")]
    UnknownVersion {
        /// The version the frame claims.
        got: u16,
    },
    /// The bytes do not decode as the expected message.
    #[error("frame is malformed")]
    Malformed,
    /// A well-formed message was followed by extra bytes.
    #[error("{extra} unexpected trailing bytes after the message")]
    TrailingBytes {
        /// How many.
        extra: u32,
    },
    /// The output buffer is too small for the message (encoding only).
    #[error("message does not fit in the frame buffer")]
    BufferFull,
}

fn from_postcard(e: postcard::Error) -> WireError {
    match e {
        postcard::Error::DeserializeUnexpectedEnd => WireError::Truncated,
        postcard::Error::SerializeBufferFull => WireError::BufferFull,
        _ => WireError::Malformed,
    }
}

/// Encodes `msg` as a frame into `buf`, returning the used prefix.
///
/// # Errors
/// [`WireError::BufferFull`] if it does not fit, [`WireError::Oversized`] if
/// the frame would exceed [`MAX_FRAME`].
pub fn encode<'b, M: Serialize + ?Sized>(msg: &M, buf: &'b mut [u8]) -> Result<&'b mut [u8], WireError> {
    let out = postcard::to_slice(&(PROTOCOL_VERSION, msg), buf).map_err(from_postcard)?;
    if out.len() > MAX_FRAME {
        return Err(WireError::Oversized { len: out.len() as u32 });
    }
    Ok(out)
}

/// Encodes `msg` as a frame into a new vector.
///
/// # Errors
/// [`WireError::Oversized`] if the frame would exceed [`MAX_FRAME`].
#[cfg(any(feature = "alloc", test))]
pub fn encode_vec<M: Serialize + ?Sized>(msg: &M) -> Result<alloc::vec::Vec<u8>, WireError> {
    let out = postcard::to_allocvec(&(PROTOCOL_VERSION, msg)).map_err(from_postcard)?;
    if out.len() > MAX_FRAME {
        return Err(WireError::Oversized { len: out.len() as u32 });
    }
    Ok(out)
}

/// Decodes one frame. Checks, in order: size, version, message, no trailing
/// bytes. The message borrows its byte and string fields from `frame`.
///
/// # Errors
/// The first check that fails, as a [`WireError`].
pub fn decode<'a, M: Deserialize<'a>>(frame: &'a [u8]) -> Result<M, WireError> {
    if frame.len() > MAX_FRAME {
        return Err(WireError::Oversized { len: u32::try_from(frame.len()).unwrap_or(u32::MAX) });
    }
    let (version, rest) = postcard::take_from_bytes::<u16>(frame).map_err(from_postcard)?;
    if version != PROTOCOL_VERSION {
        return Err(WireError::UnknownVersion { got: version });
    }
    let (msg, rest) = postcard::take_from_bytes::<M>(rest).map_err(from_postcard)?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes { extra: rest.len() as u32 });
    }
    Ok(msg)
}
