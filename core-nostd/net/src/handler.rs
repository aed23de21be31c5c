//! The replay-safe handler: requests, replies and errors, the committed
//! [`NetState`], and [`Net::handle`], which resolves `Send` and `Recv`
//! against the committed counters (the crate documentation says why that
//! makes them replay-safe).

use crate::regs::{HEADER_BYTES, Header, HeaderError, MTU, SLOT_BYTES, SLOT_FIXED, region_bytes, slot_crc};
use crate::trace::{TRACE_SLOTS, Trace};
use reinc_proto::RequestId;
use reinc_region::{Effect, Region};
use reinc_ringbuf::Ringbuf;
use serde::{Deserialize, Serialize};

/// A client request (postcard-encoded in `ToDriver::Request::body`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetRequest<'a> {
    /// Transmits one packet (it loops back to the receive side).
    Send {
        /// The packet, 1..=[`MTU`] bytes.
        #[serde(borrow)]
        data: &'a [u8],
    },
    /// Takes the oldest packet not yet received.
    Recv,
    /// Asks for the counters.
    Stats,
}

/// The reply to a [`NetRequest`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetReply<'a> {
    /// The packet is queued; `seq` is its transmit sequence number.
    Sent {
        /// Transmit sequence number (0-based).
        seq: u64,
    },
    /// The oldest queued packet.
    Packet {
        /// Its transmit sequence number.
        seq: u64,
        /// Its bytes.
        #[serde(borrow)]
        data: &'a [u8],
    },
    /// Nothing to receive.
    Empty,
    /// Counters.
    Stats {
        /// Packets sent, ever.
        sent: u64,
        /// Packets received, ever.
        received: u64,
        /// Packets waiting to be received.
        queued: u64,
        /// Slots in the ring.
        capacity: u32,
        /// Largest packet.
        mtu: u32,
    },
    /// Refused; nothing changed. Deterministic.
    Error(NetError),
}

/// Why a request was refused.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The body is not a postcard [`NetRequest`].
    #[error("request is not a valid net request")]
    BadRequest,
    /// A zero-length packet.
    #[error("packet is empty")]
    Empty,
    /// The packet exceeds the MTU.
    #[error("packet of {len} bytes exceeds the MTU of {mtu}")]
    TooLarge {
        /// Its length.
        len: u32,
        /// The MTU.
        mtu: u32,
    },
    /// Every slot holds a packet not yet received.
    #[error("all {capacity} slots hold unreceived packets")]
    Full {
        /// Slots in the ring.
        capacity: u32,
    },
    /// The slot of packet `seq` fails its checksum: the device is damaged.
    #[error("slot of packet {seq} fails its checksum")]
    Corrupt {
        /// The packet's sequence number.
        seq: u64,
    },
}

/// The committed state: the supervisor's checkpoint.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetState {
    /// Packets sent (the next `Send` uses slot `tx % slots`).
    pub tx: u64,
    /// Packets received (the next `Recv` reads slot `rx % slots`).
    pub rx: u64,
}

/// The result of [`Net::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome<'r> {
    /// The new committed state.
    pub state: NetState,
    /// The reply (packet data borrows the caller's buffer).
    pub reply: NetReply<'r>,
    /// What happened at the device.
    pub effect: Effect,
}

/// Why a region cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError<E: core::fmt::Debug + core::fmt::Display> {
    /// Zero slots requested.
    #[error("a loopback ring needs at least one slot")]
    NoSlots,
    /// The region is too small.
    #[error("region holds {have} bytes, {need} needed for {slots} slots")]
    TooSmall {
        /// Region size.
        have: u64,
        /// Needed.
        need: u64,
        /// Requested slots.
        slots: u32,
    },
    /// The header is unusable.
    #[error("header: {0}")]
    Header(#[from] HeaderError),
    /// The region failed.
    #[error("region I/O: {0}")]
    Io(E),
}

/// A host failure: the instance must die and the request be replayed.
#[derive(Debug, thiserror::Error)]
#[error("region I/O at byte offset {off}: {source}")]
pub struct HandleError<E: core::fmt::Debug + core::fmt::Display> {
    /// Offset of the failed access.
    pub off: u64,
    /// The region's error.
    pub source: E,
}

/// A checkpoint that does not fit this ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint tx={tx} rx={rx} is impossible for a ring of {slots} slots")]
pub struct StateError {
    /// Checkpoint tx.
    pub tx: u64,
    /// Checkpoint rx.
    pub rx: u64,
    /// Slots.
    pub slots: u32,
}

/// Decodes a request body; malformed bodies are [`NetError::BadRequest`].
///
/// # Errors
/// [`NetError::BadRequest`].
pub fn decode_request(body: &[u8]) -> Result<NetRequest<'_>, NetError> {
    match postcard::take_from_bytes::<NetRequest<'_>>(body) {
        Ok((req, [])) => Ok(req),
        _ => Err(NetError::BadRequest),
    }
}

/// The loopback device: a region plus its cached header.
#[derive(Debug)]
pub struct Net<R: Region> {
    pub(crate) region: R,
    header: Header,
    trace: Ringbuf<Trace, TRACE_SLOTS>,
}

impl<R: Region> Net<R> {
    /// Opens `region` as a ring of `slots` slots, formatting an all-zero one.
    ///
    /// # Errors
    /// [`OpenError`]; a foreign or differently sized region is left untouched.
    pub fn open(mut region: R, slots: u32) -> Result<Self, OpenError<R::Error>> {
        if slots == 0 {
            return Err(OpenError::NoSlots);
        }
        let need = region_bytes(slots);
        if region.size() < need {
            return Err(OpenError::TooSmall { have: region.size(), need, slots });
        }
        let mut b = [0u8; HEADER_BYTES];
        region.read_at(0, &mut b).map_err(OpenError::Io)?;
        let mut trace = Ringbuf::new();
        let header = match Header::decode(&b)? {
            Some(h) if h.slots != slots => return Err(HeaderError::Geometry { found: h.slots, expected: slots }.into()),
            Some(h) => {
                trace.record(Trace::Opened { applied_count: h.applied_count });
                h
            }
            None => {
                let h = Header { slots, last_applied: None, last_base: 0, applied_count: 0 };
                region.write_at(0, &h.encode()).map_err(OpenError::Io)?;
                trace.record(Trace::Formatted { slots });
                h
            }
        };
        Ok(Self { region, header, trace })
    }

    /// What this device did lately (Hubris-style ring, newest last).
    #[must_use]
    pub fn trace(&self) -> &Ringbuf<Trace, TRACE_SLOTS> {
        &self.trace
    }

    /// The cached header (the watermark).
    #[must_use]
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Slots in the ring.
    #[must_use]
    pub fn slots(&self) -> u32 {
        self.header.slots
    }

    /// Checks a restored checkpoint.
    ///
    /// # Errors
    /// [`StateError`] when `rx > tx` or more packets are queued than slots exist.
    pub fn check_state(&self, s: &NetState) -> Result<(), StateError> {
        match s.tx.checked_sub(s.rx) {
            Some(q) if q <= u64::from(self.header.slots) => Ok(()),
            _ => Err(StateError { tx: s.tx, rx: s.rx, slots: self.header.slots }),
        }
    }

    /// Handles one request against the committed `state` (deterministic;
    /// a replay of the last applied `Send` skips its write).
    ///
    /// `reply_buf` must hold [`MTU`] bytes for `Recv`.
    ///
    /// # Errors
    /// [`HandleError`] when the region fails.
    pub fn handle<'r>(
        &mut self,
        state: &NetState,
        id: RequestId,
        req: &NetRequest<'_>,
        reply_buf: &'r mut [u8; MTU],
    ) -> Result<Outcome<'r>, HandleError<R::Error>> {
        match self.decide(state, id, req, reply_buf) {
            Ok(out) => {
                if let Some(t) = Trace::of(&out) {
                    self.trace.record(t);
                }
                Ok(out)
            }
            Err(e) => {
                self.trace.record(Trace::IoFailed { off: e.off });
                Err(e)
            }
        }
    }

    fn decide<'r>(
        &mut self,
        state: &NetState,
        id: RequestId,
        req: &NetRequest<'_>,
        reply_buf: &'r mut [u8; MTU],
    ) -> Result<Outcome<'r>, HandleError<R::Error>> {
        let slots = self.header.slots;
        let plain = |reply| Ok(Outcome { state: *state, reply, effect: Effect::None });
        match *req {
            NetRequest::Stats => plain(NetReply::Stats {
                sent: state.tx,
                received: state.rx,
                queued: state.tx - state.rx,
                capacity: slots,
                mtu: MTU as u32,
            }),
            NetRequest::Send { data } => {
                if data.is_empty() {
                    return plain(NetReply::Error(NetError::Empty));
                }
                if data.len() > MTU {
                    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
                    return plain(NetReply::Error(NetError::TooLarge { len, mtu: MTU as u32 }));
                }
                if state.tx - state.rx >= u64::from(slots) {
                    return plain(NetReply::Error(NetError::Full { capacity: slots }));
                }
                let effect = self.apply(id, state.tx, data)?;
                let next = NetState { tx: state.tx + 1, ..*state };
                Ok(Outcome { state: next, reply: NetReply::Sent { seq: state.tx }, effect })
            }
            NetRequest::Recv => {
                if state.rx == state.tx {
                    return plain(NetReply::Empty);
                }
                let seq = state.rx;
                let off = self.slot_offset(seq);
                let mut fixed = [0u8; SLOT_FIXED];
                self.region.read_at(off, &mut fixed).map_err(|source| HandleError { off, source })?;
                let len = usize::from(u16::from_le_bytes([fixed[0], fixed[1]]));
                let stored = u32::from_le_bytes([fixed[2], fixed[3], fixed[4], fixed[5]]);
                if len == 0 || len > MTU {
                    return plain(NetReply::Error(NetError::Corrupt { seq }));
                }
                let data = &mut reply_buf[..len];
                let doff = off + SLOT_FIXED as u64;
                self.region.read_at(doff, data).map_err(|source| HandleError { off: doff, source })?;
                if slot_crc(&fixed[0..2], data) != stored {
                    return plain(NetReply::Error(NetError::Corrupt { seq }));
                }
                let next = NetState { rx: state.rx + 1, ..*state };
                Ok(Outcome { state: next, reply: NetReply::Packet { seq, data }, effect: Effect::None })
            }
        }
    }

    fn slot_offset(&self, seq: u64) -> u64 {
        HEADER_BYTES as u64 + (seq % u64::from(self.header.slots)) * SLOT_BYTES as u64
    }

    /// Writes packet `seq` (the committed `tx`) to its slot, then advances the
    /// watermark, unless `id` on this same `tx` is the watermark already.
    fn apply(&mut self, id: RequestId, seq: u64, data: &[u8]) -> Result<Effect, HandleError<R::Error>> {
        let watermark = self.header.watermark();
        if watermark.is_replay(id, seq) {
            return Ok(Effect::AlreadyApplied);
        }
        let len = (data.len() as u16).to_le_bytes();
        let mut fixed = [0u8; SLOT_FIXED];
        fixed[0..2].copy_from_slice(&len);
        fixed[2..6].copy_from_slice(&slot_crc(&len, data).to_le_bytes());
        let off = self.slot_offset(seq);
        self.region.write_at(off, &fixed).map_err(|source| HandleError { off, source })?;
        let doff = off + SLOT_FIXED as u64;
        self.region.write_at(doff, data).map_err(|source| HandleError { off: doff, source })?;
        let next = Header::new(self.header.slots, watermark.advanced(id, seq));
        self.region.write_at(0, &next.encode()).map_err(|source| HandleError { off: 0, source })?;
        self.header = next;
        Ok(Effect::Applied)
    }
}
