//! The NBD wire format: pure encoders, decoders and the request checks, with
//! no I/O, so that every rule is unit-tested byte for byte.
//!
//! Source: the NBD protocol specification (`doc/proto.md` of
//! NetworkBlockDevice/nbd). Only what the server speaks is here: the fixed
//! newstyle handshake, options `EXPORT_NAME`, `ABORT`, `LIST`, `INFO`, `GO`
//! and `STRUCTURED_REPLY` (everything else is answered
//! `NBD_REP_ERR_UNSUP`), simple replies, and the structured reply chunks a
//! `READ` is answered with once a client negotiated them (`OFFSET_DATA`,
//! `ERROR`, `ERROR_OFFSET`, `NONE`).

/// `NBDMAGIC`, the first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: newstyle negotiation, and the magic of every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// Structured reply flag: the last chunk of its reply.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
/// Chunk type: nothing (only as the last chunk).
pub const REPLY_TYPE_NONE: u16 = 0;
/// Chunk type: data at an offset.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Chunk type: the request failed, no offset.
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;
/// Chunk type: the request failed at an offset.
pub const REPLY_TYPE_ERROR_OFFSET: u16 = (1 << 15) | 2;
/// Bytes of a structured reply chunk's header.
pub const CHUNK_HEADER_LEN: usize = 20;
/// Bytes of an `OFFSET_DATA` chunk before its data: the header and the offset.
pub const OFFSET_DATA_HEAD_LEN: usize = CHUNK_HEADER_LEN + 8;
/// The longest error message a chunk carries (the spec's string limit).
pub const MAX_ERROR_MESSAGE: usize = 4096;

/// Handshake flag: fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the 124 zero bytes after `EXPORT_NAME` may be omitted.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: no zeroes.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Option: choose an export and enter transmission (no error reply possible).
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option: abort negotiation.
pub const OPT_ABORT: u32 = 2;
/// Option: list exports.
pub const OPT_LIST: u32 = 3;
/// Option: TLS (refused: this server speaks only over 127.0.0.1 and Unix sockets).
pub const OPT_STARTTLS: u32 = 5;
/// Option: describe an export.
pub const OPT_INFO: u32 = 6;
/// Option: describe an export and enter transmission.
pub const OPT_GO: u32 = 7;
/// Option: structured replies (accepted unless the server is told not to).
pub const OPT_STRUCTURED_REPLY: u32 = 8;

/// Option reply: done.
pub const REP_ACK: u32 = 1;
/// Option reply: one export of a `LIST`.
pub const REP_SERVER: u32 = 2;
/// Option reply: one `NBD_INFO_*` item.
pub const REP_INFO: u32 = 3;
/// Option error: unknown option.
pub const REP_ERR_UNSUP: u32 = (1 << 31) | 1;
/// Option error: known but refused by policy.
pub const REP_ERR_POLICY: u32 = (1 << 31) | 2;
/// Option error: syntactically invalid.
pub const REP_ERR_INVALID: u32 = (1 << 31) | 3;
/// Option error: no such export.
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) | 6;

/// Info item: size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// Info item: block-size constraints.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flag: always set.
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: writes are refused.
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: `FLUSH` is supported.
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: the `FUA` command flag is supported.
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: `TRIM` is supported.
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag: `WRITE_ZEROES` is supported.
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag: flush and FUA are visible across connections.
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Command: read.
pub const CMD_READ: u16 = 0;
/// Command: write.
pub const CMD_WRITE: u16 = 1;
/// Command: disconnect (no reply).
pub const CMD_DISC: u16 = 2;
/// Command: flush.
pub const CMD_FLUSH: u16 = 3;
/// Command: trim (the range's contents may be discarded).
pub const CMD_TRIM: u16 = 4;
/// Command: write zeroes (no payload).
pub const CMD_WRITE_ZEROES: u16 = 6;
/// Command flag: force unit access (the write is durable when answered).
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag of `WRITE_ZEROES`: do not punch a hole (zeros are always
/// written here, so it is accepted and changes nothing).
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;

/// `EPERM`: write to a read-only export.
pub const EPERM: u32 = 1;
/// `EIO`: the storage driver failed the request (quarantined, stopped).
pub const EIO: u32 = 5;
/// `EINVAL`: malformed or out-of-range request.
pub const EINVAL: u32 = 22;
/// `ENOSPC`: a write beyond the end of the export.
pub const ENOSPC: u32 = 28;
/// `ESHUTDOWN`: the server is going away.
pub const ESHUTDOWN: u32 = 108;

/// What an error value of the spec means, for error chunks and logs.
#[must_use]
pub fn errno_name(errno: u32) -> &'static str {
    match errno {
        EPERM => "EPERM (a write to a read-only export)",
        EIO => "EIO (the storage request failed)",
        EINVAL => "EINVAL (a request that breaks the export's constraints or is not supported)",
        ENOSPC => "ENOSPC (a write past the end of the export)",
        ESHUTDOWN => "ESHUTDOWN (the server is going away)",
        _ => "an error",
    }
}

/// Longest option payload accepted; the spec caps strings at 4096 bytes,
/// and `INFO`/`GO` add a length and a list of info types.
pub const MAX_OPTION_LEN: u32 = 8192;
/// Bytes of a transmission request header.
pub const REQUEST_LEN: usize = 28;
/// Bytes of an option header (magic, option, length).
pub const OPTION_HEADER_LEN: usize = 16;

/// A protocol violation that ends the connection (hard disconnect).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The client flags lack fixed newstyle or carry unknown bits.
    #[error("client flags {0:#010x}: not fixed newstyle, or unknown bits set")]
    ClientFlags(u32),
    /// An option header without `IHAVEOPT`.
    #[error("option magic {0:#018x} is not IHAVEOPT")]
    OptionMagic(u64),
    /// An option longer than [`MAX_OPTION_LEN`].
    #[error("option {option} carries {len} bytes, more than the {MAX_OPTION_LEN} accepted")]
    OptionTooLong {
        /// The option.
        option: u32,
        /// Its length.
        len: u32,
    },
    /// A request header without the request magic.
    #[error("request magic {0:#010x} is wrong")]
    RequestMagic(u32),
    /// `EXPORT_NAME` named an export that does not exist (the option has no
    /// error reply, so the spec requires a disconnect).
    #[error("NBD_OPT_EXPORT_NAME asked for unknown export {0:?}")]
    UnknownExport(String),
}

/// The server's first 18 bytes.
#[must_use]
pub fn greeting() -> [u8; 18] {
    let mut b = [0u8; 18];
    b[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[16..].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    b
}

/// The client's flags, checked: fixed newstyle is required (old clients
/// that speak plain newstyle would not understand option replies).
///
/// Returns whether the client asked for no zeroes.
///
/// # Errors
/// [`ProtocolError::ClientFlags`].
pub fn client_flags(b: [u8; 4]) -> Result<bool, ProtocolError> {
    let f = u32::from_be_bytes(b);
    if f & FLAG_C_FIXED_NEWSTYLE == 0 || f & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(ProtocolError::ClientFlags(f));
    }
    Ok(f & FLAG_C_NO_ZEROES != 0)
}

/// An option header: (option, payload length).
///
/// # Errors
/// [`ProtocolError::OptionMagic`] or [`ProtocolError::OptionTooLong`].
pub fn option_header(b: &[u8; OPTION_HEADER_LEN]) -> Result<(u32, u32), ProtocolError> {
    let magic = u64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
    if magic != IHAVEOPT {
        return Err(ProtocolError::OptionMagic(magic));
    }
    let option = u32::from_be_bytes(b[8..12].try_into().expect("4 bytes"));
    let len = u32::from_be_bytes(b[12..16].try_into().expect("4 bytes"));
    if len > MAX_OPTION_LEN {
        return Err(ProtocolError::OptionTooLong { option, len });
    }
    Ok((option, len))
}

/// One option reply.
#[must_use]
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + data.len());
    b.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&reply.to_be_bytes());
    b.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// The payload of `NBD_REP_SERVER` for one export.
#[must_use]
pub fn rep_server(name: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + name.len());
    b.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b
}

/// The payload of an `INFO`/`GO` option: export name and requested items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    /// The export asked for.
    pub name: String,
    /// The `NBD_INFO_*` items asked for.
    pub items: Vec<u16>,
}

/// Decodes the payload of `INFO`/`GO`; `None` if it is malformed (the
/// server answers `NBD_REP_ERR_INVALID`).
#[must_use]
pub fn info_request(data: &[u8]) -> Option<InfoRequest> {
    let name_len = usize::try_from(u32::from_be_bytes(data.get(..4)?.try_into().ok()?)).ok()?;
    let name = std::str::from_utf8(data.get(4..4usize.checked_add(name_len)?)?).ok()?.to_owned();
    let rest = &data[4 + name_len..];
    let n = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
    let list = &rest[2..];
    if list.len() != n * 2 {
        return None;
    }
    let items = list.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
    Some(InfoRequest { name, items })
}

/// The block-size constraints a server advertises (`NBD_INFO_BLOCK_SIZE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSize {
    /// Every offset and length is a multiple of this (a power of two).
    pub min: u32,
    /// The size that avoids read-modify-write and splitting overhead.
    pub preferred: u32,
    /// The largest payload of one request.
    pub max: u32,
}

/// One export as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Its name (`LIST`, `INFO`, `GO`); the empty name also selects it.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Writes are refused with `EPERM`.
    pub read_only: bool,
    /// The constraints.
    pub block: BlockSize,
}

impl Export {
    /// True if `name` selects this export (its name, or the default "").
    #[must_use]
    pub fn matches(&self, name: &str) -> bool {
        name.is_empty() || name == self.name
    }

    /// The transmission flags.
    #[must_use]
    pub fn flags(&self) -> u16 {
        let base = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_CAN_MULTI_CONN;
        if self.read_only {
            base | TFLAG_READ_ONLY
        } else {
            base | TFLAG_SEND_FUA | TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES
        }
    }

    /// The `NBD_INFO_EXPORT` payload.
    #[must_use]
    pub fn info_export(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(12);
        b.extend_from_slice(&INFO_EXPORT.to_be_bytes());
        b.extend_from_slice(&self.size.to_be_bytes());
        b.extend_from_slice(&self.flags().to_be_bytes());
        b
    }

    /// The `NBD_INFO_BLOCK_SIZE` payload.
    #[must_use]
    pub fn info_block_size(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(14);
        b.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        for v in [self.block.min, self.block.preferred, self.block.max] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b
    }

    /// The reply to `EXPORT_NAME`: size, flags, and 124 zeroes unless the
    /// client negotiated no zeroes.
    #[must_use]
    pub fn export_name_reply(&self, no_zeroes: bool) -> Vec<u8> {
        let mut b = Vec::with_capacity(134);
        b.extend_from_slice(&self.size.to_be_bytes());
        b.extend_from_slice(&self.flags().to_be_bytes());
        if !no_zeroes {
            b.extend_from_slice(&[0u8; 124]);
        }
        b
    }

    /// Checks a request against the export: what to do, or the error to
    /// answer with. A `WRITE`'s payload must be consumed either way (the
    /// caller decides whether it can afford to, see [`Command::Refuse`]).
    #[must_use]
    pub fn check(&self, r: &Request) -> Command {
        let refuse = |errno| Command::Refuse { errno };
        // With `SEND_FUA` advertised the spec makes `FUA` valid on every
        // command ("the server MUST accept all commands with this bit set,
        // even by ignoring the bit"); it means something only on a write.
        let known_flags = CMD_FLAG_FUA;
        match r.kind {
            CMD_DISC => Command::Disconnect,
            CMD_FLUSH if r.offset != 0 || r.length != 0 || r.flags & !known_flags != 0 => refuse(EINVAL),
            CMD_FLUSH => Command::Flush,
            // TRIM and WRITE_ZEROES become storage zero requests (a trimmed
            // range may read as anything, so zeros are right for it too).
            // They carry no payload, so the maximum block size does not
            // bound them.
            CMD_READ | CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES => {
                let payload = matches!(r.kind, CMD_READ | CMD_WRITE);
                let allowed = if r.kind == CMD_WRITE_ZEROES { known_flags | CMD_FLAG_NO_HOLE } else { known_flags };
                if r.flags & !allowed != 0 {
                    return refuse(EINVAL);
                }
                if r.kind != CMD_READ && self.read_only {
                    return refuse(EPERM);
                }
                let min = u64::from(self.block.min);
                if r.length == 0 || (payload && r.length > self.block.max) {
                    return refuse(EINVAL);
                }
                if !r.offset.is_multiple_of(min) || !u64::from(r.length).is_multiple_of(min) {
                    return refuse(EINVAL);
                }
                match r.offset.checked_add(u64::from(r.length)) {
                    Some(end) if end <= self.size => {}
                    // Out of range: the spec names ENOSPC for writes, EINVAL otherwise.
                    _ => return refuse(if r.kind == CMD_READ { EINVAL } else { ENOSPC }),
                }
                let (offset, length, fua) = (r.offset, r.length, r.flags & CMD_FLAG_FUA != 0);
                match r.kind {
                    CMD_READ => Command::Read { offset, length },
                    CMD_WRITE => Command::Write { offset, length, fua },
                    _ => Command::Zero { offset, length, fua },
                }
            }
            // CACHE, BLOCK_STATUS… are not advertised.
            _ => refuse(EINVAL),
        }
    }
}

/// A transmission request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: u16,
    /// Command type.
    pub kind: u16,
    /// The client's cookie (handle), echoed in the reply.
    pub cookie: u64,
    /// Byte offset.
    pub offset: u64,
    /// Byte length (of the payload, for a write).
    pub length: u32,
}

impl Request {
    /// Decodes a request header.
    ///
    /// # Errors
    /// [`ProtocolError::RequestMagic`].
    pub fn decode(b: &[u8; REQUEST_LEN]) -> Result<Self, ProtocolError> {
        let magic = u32::from_be_bytes(b[..4].try_into().expect("4 bytes"));
        if magic != REQUEST_MAGIC {
            return Err(ProtocolError::RequestMagic(magic));
        }
        Ok(Self {
            flags: u16::from_be_bytes([b[4], b[5]]),
            kind: u16::from_be_bytes([b[6], b[7]]),
            cookie: u64::from_be_bytes(b[8..16].try_into().expect("8 bytes")),
            offset: u64::from_be_bytes(b[16..24].try_into().expect("8 bytes")),
            length: u32::from_be_bytes(b[24..28].try_into().expect("4 bytes")),
        })
    }

    /// Encodes a request header (tests and the bench's raw client).
    #[must_use]
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

/// What the server does with a checked request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Read `length` bytes at `offset`.
    Read {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        length: u32,
    },
    /// Write the payload at `offset`; with `fua`, durable before the reply.
    Write {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        length: u32,
        /// Force unit access.
        fua: bool,
    },
    /// Zero `length` bytes at `offset` (`WRITE_ZEROES` or `TRIM`); with
    /// `fua`, durable before the reply.
    Zero {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        length: u32,
        /// Force unit access.
        fua: bool,
    },
    /// Make every answered write durable.
    Flush,
    /// Finish what is in flight and close.
    Disconnect,
    /// Answer with this error (after consuming a write's payload).
    Refuse {
        /// The errno.
        errno: u32,
    },
}

/// A simple reply header.
#[must_use]
pub fn simple_reply(errno: u32, cookie: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&errno.to_be_bytes());
    b[8..].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// A structured reply chunk's header: `length` bytes of payload follow.
#[must_use]
pub fn chunk_header(flags: u16, kind: u16, cookie: u64, length: u32) -> [u8; CHUNK_HEADER_LEN] {
    let mut b = [0u8; CHUNK_HEADER_LEN];
    b[..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..20].copy_from_slice(&length.to_be_bytes());
    b
}

/// What goes before `len` bytes of data at export offset `offset` in an
/// `OFFSET_DATA` chunk (the last of its reply with `done`).
///
/// # Panics
/// If `len` does not fit a chunk (more than 4 GiB − 9; requests here are at
/// most `--max-request`).
#[must_use]
pub fn offset_data_head(done: bool, cookie: u64, offset: u64, len: usize) -> [u8; OFFSET_DATA_HEAD_LEN] {
    let length = u32::try_from(len + 8).expect("a chunk of at most one request");
    let mut b = [0u8; OFFSET_DATA_HEAD_LEN];
    let flags = if done { REPLY_FLAG_DONE } else { 0 };
    b[..CHUNK_HEADER_LEN].copy_from_slice(&chunk_header(flags, REPLY_TYPE_OFFSET_DATA, cookie, length));
    b[CHUNK_HEADER_LEN..].copy_from_slice(&offset.to_be_bytes());
    b
}

/// An error chunk: `ERROR_OFFSET` at `offset` when there is one, `ERROR`
/// otherwise; `message` (cut to [`MAX_ERROR_MESSAGE`] bytes on a character
/// boundary) is for a human. `errno` must not be 0.
#[must_use]
pub fn error_chunk(done: bool, cookie: u64, errno: u32, message: &str, offset: Option<u64>) -> Vec<u8> {
    let mut cut = message.len().min(MAX_ERROR_MESSAGE);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    let message = &message.as_bytes()[..cut];
    let kind = if offset.is_some() { REPLY_TYPE_ERROR_OFFSET } else { REPLY_TYPE_ERROR };
    // cut <= 4096, so the payload fits u32 and the message length u16.
    let payload = 6 + cut + if offset.is_some() { 8 } else { 0 };
    let flags = if done { REPLY_FLAG_DONE } else { 0 };
    let mut b = chunk_header(flags, kind, cookie, payload as u32).to_vec();
    b.extend_from_slice(&errno.to_be_bytes());
    b.extend_from_slice(&(cut as u16).to_be_bytes());
    b.extend_from_slice(message);
    if let Some(o) = offset {
        b.extend_from_slice(&o.to_be_bytes());
    }
    b
}

/// The last chunk of a reply that has nothing more to say.
#[must_use]
pub fn done_chunk(cookie: u64) -> [u8; CHUNK_HEADER_LEN] {
    chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0)
}

/// One storage request of a split NBD request: `blocks` blocks at `lba`,
/// covering bytes `at..at + blocks * block` of the NBD request's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// First block.
    pub lba: u64,
    /// Blocks.
    pub blocks: u16,
    /// Byte offset inside the NBD request.
    pub at: usize,
}

/// Splits a checked byte range (aligned to `block`) into storage requests of
/// at most `max_blocks` blocks each, in order.
pub fn chunks(offset: u64, length: u32, block: u32, max_blocks: u16) -> impl Iterator<Item = Chunk> {
    let block = u64::from(block);
    let first = offset / block;
    let total = u64::from(length) / block;
    let step = u64::from(max_blocks.max(1));
    (0..total.div_ceil(step)).map(move |i| {
        let done = i * step;
        let blocks = (total - done).min(step) as u16;
        Chunk { lba: first + done, blocks, at: usize::try_from(done * block).unwrap_or(usize::MAX) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(read_only: bool) -> Export {
        Export {
            name: "disk".into(),
            size: 1 << 20,
            read_only,
            block: BlockSize { min: 512, preferred: 32768, max: 1 << 21 },
        }
    }

    fn req(kind: u16, flags: u16, offset: u64, length: u32) -> Request {
        Request { flags, kind, cookie: 0xc0de, offset, length }
    }

    #[test]
    fn greeting_is_nbdmagic_ihaveopt_and_fixed_newstyle_no_zeroes() {
        let g = greeting();
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(&g[16..], &[0, 3]);
    }

    #[test]
    fn client_flags_require_fixed_newstyle_and_refuse_unknown_bits() {
        assert_eq!(client_flags([0, 0, 0, 1]), Ok(false));
        assert_eq!(client_flags([0, 0, 0, 3]), Ok(true));
        assert_eq!(client_flags([0, 0, 0, 0]), Err(ProtocolError::ClientFlags(0)));
        assert_eq!(client_flags([0, 0, 0, 2]), Err(ProtocolError::ClientFlags(2)));
        assert_eq!(client_flags([0x80, 0, 0, 1]), Err(ProtocolError::ClientFlags(0x8000_0001)));
    }

    #[test]
    fn option_header_checks_magic_and_length() {
        let mut h = [0u8; 16];
        h[..8].copy_from_slice(b"IHAVEOPT");
        h[8..12].copy_from_slice(&OPT_GO.to_be_bytes());
        h[12..].copy_from_slice(&10u32.to_be_bytes());
        assert_eq!(option_header(&h), Ok((OPT_GO, 10)));
        h[12..].copy_from_slice(&(MAX_OPTION_LEN + 1).to_be_bytes());
        assert_eq!(option_header(&h), Err(ProtocolError::OptionTooLong { option: OPT_GO, len: MAX_OPTION_LEN + 1 }));
        h[..8].copy_from_slice(b"IHAVEOPX");
        assert!(matches!(option_header(&h), Err(ProtocolError::OptionMagic(_))));
    }

    #[test]
    fn option_reply_layout_matches_the_spec() {
        let r = option_reply(OPT_LIST, REP_SERVER, &rep_server("ab"));
        let mut want = REPLY_MAGIC.to_be_bytes().to_vec();
        want.extend_from_slice(&[0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 6, 0, 0, 0, 2, b'a', b'b']);
        assert_eq!(r, want);
    }

    #[test]
    fn info_request_decodes_and_rejects_malformed_payloads() {
        let mut p = vec![0, 0, 0, 4];
        p.extend_from_slice(b"disk");
        p.extend_from_slice(&[0, 2, 0, 0, 0, 3]);
        assert_eq!(info_request(&p), Some(InfoRequest { name: "disk".into(), items: vec![0, 3] }));
        assert_eq!(info_request(&[0, 0, 0, 0, 0, 0]), Some(InfoRequest { name: String::new(), items: vec![] }));
        assert_eq!(info_request(&p[..p.len() - 1]), None, "item list shorter than its count");
        assert_eq!(info_request(&[0, 0, 0, 9, b'x']), None, "name longer than the payload");
        assert_eq!(info_request(&[0xff, 0xff, 0xff, 0xff]), None, "huge name length");
        assert_eq!(info_request(&[0, 0, 0, 1, 0xff, 0, 0]), None, "name is not UTF-8");
        assert_eq!(info_request(&[]), None);
    }

    #[test]
    fn info_items_and_export_name_reply_carry_size_flags_and_block_sizes() {
        let e = export(false);
        let flags = TFLAG_HAS_FLAGS
            | TFLAG_SEND_FLUSH
            | TFLAG_SEND_FUA
            | TFLAG_SEND_TRIM
            | TFLAG_SEND_WRITE_ZEROES
            | TFLAG_CAN_MULTI_CONN;
        assert_eq!(e.flags(), flags);
        assert_eq!(export(true).flags(), TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_CAN_MULTI_CONN | TFLAG_READ_ONLY);
        let mut want = vec![0, 0];
        want.extend_from_slice(&(1u64 << 20).to_be_bytes());
        want.extend_from_slice(&flags.to_be_bytes());
        assert_eq!(e.info_export(), want);
        assert_eq!(e.info_block_size(), [0, 3, 0, 0, 2, 0, 0, 0, 0x80, 0, 0, 0x20, 0, 0]);
        assert_eq!(e.export_name_reply(true).len(), 10);
        let full = e.export_name_reply(false);
        assert_eq!(full.len(), 134);
        assert!(full[10..].iter().all(|&b| b == 0));
        assert!(e.matches("") && e.matches("disk") && !e.matches("other"));
    }

    #[test]
    fn request_round_trips_and_wrong_magic_is_refused() {
        let r = req(CMD_WRITE, CMD_FLAG_FUA, 4096, 512);
        assert_eq!(Request::decode(&r.encode()), Ok(r));
        let mut b = r.encode();
        b[0] ^= 1;
        assert!(matches!(Request::decode(&b), Err(ProtocolError::RequestMagic(_))));
    }

    #[test]
    fn reads_and_writes_in_range_and_aligned_are_accepted() {
        let e = export(false);
        assert_eq!(e.check(&req(CMD_READ, 0, 0, 4096)), Command::Read { offset: 0, length: 4096 });
        assert_eq!(
            e.check(&req(CMD_WRITE, CMD_FLAG_FUA, (1 << 20) - 512, 512)),
            Command::Write { offset: (1 << 20) - 512, length: 512, fua: true }
        );
        assert_eq!(e.check(&req(CMD_FLUSH, 0, 0, 0)), Command::Flush);
        assert_eq!(e.check(&req(CMD_DISC, 0, 0, 0)), Command::Disconnect);
    }

    #[test]
    fn trim_and_write_zeroes_become_zero_requests_past_the_maximum_too() {
        let e = export(false);
        assert_ne!(e.flags() & TFLAG_SEND_TRIM, 0);
        assert_ne!(e.flags() & TFLAG_SEND_WRITE_ZEROES, 0);
        let zero = |offset, length, fua| Command::Zero { offset, length, fua };
        assert_eq!(e.check(&req(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE, 0, 1 << 20)), zero(0, 1 << 20, false));
        assert_eq!(e.check(&req(CMD_TRIM, CMD_FLAG_FUA, 4096, 512)), zero(4096, 512, true));
        let ro = export(true);
        assert_eq!(ro.flags() & (TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES), 0, "not advertised read-only");
        assert_eq!(ro.check(&req(CMD_TRIM, 0, 0, 512)), Command::Refuse { errno: EPERM });
        assert_eq!(e.check(&req(CMD_WRITE_ZEROES, 0, (1 << 20) - 512, 1024)), Command::Refuse { errno: ENOSPC });
    }

    #[test]
    fn fua_is_accepted_on_every_command_and_means_something_only_on_a_write() {
        // The spec: with SEND_FUA advertised the server MUST accept the bit
        // on all commands; clients are known to set it on reads and flushes.
        let e = export(false);
        assert_eq!(e.check(&req(CMD_READ, CMD_FLAG_FUA, 0, 512)), Command::Read { offset: 0, length: 512 });
        assert_eq!(e.check(&req(CMD_FLUSH, CMD_FLAG_FUA, 0, 0)), Command::Flush);
        let einval = Command::Refuse { errno: EINVAL };
        assert_eq!(e.check(&req(CMD_FLUSH, CMD_FLAG_FUA | 1 << 5, 0, 0)), einval, "an unknown flag beside it");
    }

    #[test]
    fn out_of_range_is_einval_for_reads_and_enospc_for_writes() {
        let e = export(false);
        let refuse = |errno| Command::Refuse { errno };
        assert_eq!(e.check(&req(CMD_READ, 0, 1 << 20, 512)), refuse(EINVAL));
        assert_eq!(e.check(&req(CMD_WRITE, 0, 1 << 20, 512)), refuse(ENOSPC));
        assert_eq!(e.check(&req(CMD_WRITE, 0, (1 << 20) - 512, 1024)), refuse(ENOSPC));
        // An offset near u64::MAX must not wrap around into range.
        assert_eq!(e.check(&req(CMD_READ, 0, u64::MAX - 511, 512)), refuse(EINVAL));
        assert_eq!(e.check(&req(CMD_WRITE, 0, u64::MAX - 511, 512)), refuse(ENOSPC));
    }

    #[test]
    fn block_size_violations_and_oversized_requests_are_einval() {
        let e = export(false);
        let einval = Command::Refuse { errno: EINVAL };
        assert_eq!(e.check(&req(CMD_READ, 0, 100, 512)), einval, "unaligned offset");
        assert_eq!(e.check(&req(CMD_WRITE, 0, 0, 100)), einval, "unaligned length");
        assert_eq!(e.check(&req(CMD_READ, 0, 0, 0)), einval, "zero length");
        assert_eq!(e.check(&req(CMD_READ, 0, 0, (1 << 21) + 512)), einval, "over the maximum");
        assert_eq!(e.check(&req(CMD_READ, 1 << 2, 0, 512)), einval, "DF, not advertised");
        assert_eq!(e.check(&req(CMD_WRITE, 1 << 5, 0, 512)), einval, "unknown flag");
        assert_eq!(e.check(&req(CMD_FLUSH, 0, 512, 0)), einval, "flush with an offset");
        assert_eq!(e.check(&req(CMD_TRIM, 0, 100, 512)), einval, "an unaligned TRIM");
        assert_eq!(e.check(&req(CMD_WRITE_ZEROES, 0, 0, 0)), einval, "an empty WRITE_ZEROES");
        assert_eq!(e.check(&req(CMD_TRIM, CMD_FLAG_NO_HOLE, 0, 512)), einval, "NO_HOLE is WRITE_ZEROES' flag");
        assert_eq!(e.check(&req(5, 0, 0, 512)), einval, "CACHE is not advertised");
        assert_eq!(e.check(&req(77, 0, 0, 0)), einval, "unknown command");
    }

    #[test]
    fn writes_to_a_read_only_export_are_eperm_reads_are_served() {
        let e = export(true);
        assert_eq!(e.check(&req(CMD_WRITE, 0, 0, 512)), Command::Refuse { errno: EPERM });
        assert_eq!(e.check(&req(CMD_READ, 0, 0, 512)), Command::Read { offset: 0, length: 512 });
    }

    #[test]
    fn structured_chunks_have_the_specified_layout() {
        let cookie = 0x0102_0304_0506_0708;
        let h = offset_data_head(true, cookie, 0x10_0000, 512);
        assert_eq!(
            h,
            [0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 2, 8, 0, 0, 0, 0, 0, 0x10, 0, 0],
            "magic, DONE, OFFSET_DATA, cookie, length 8 + 512, offset"
        );
        assert_eq!(offset_data_head(false, cookie, 0, 4)[4..6], [0, 0], "not the last chunk");
        let e = error_chunk(true, cookie, EIO, "bad", Some(4096));
        assert_eq!(
            e,
            [
                0x66, 0x8e, 0x33, 0xef, 0, 1, 0x80, 2, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 17, 0, 0, 0, 5, 0, 3, b'b',
                b'a', b'd', 0, 0, 0, 0, 0, 0, 0x10, 0
            ],
            "ERROR_OFFSET: errno, message length, message, offset"
        );
        let e = error_chunk(false, cookie, EINVAL, "", None);
        assert_eq!(e[4..8], [0, 0, 0x80, 1], "ERROR, not the last chunk");
        assert_eq!(e[16..], [0, 0, 0, 6, 0, 0, 0, 22, 0, 0], "length 6, errno, an empty message");
        assert_eq!(done_chunk(cookie), chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0));
    }

    #[test]
    fn error_messages_are_cut_to_the_spec_limit_on_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_MESSAGE);
        let e = error_chunk(true, 1, EIO, &long, None);
        let len = u16::from_be_bytes([e[24], e[25]]) as usize;
        assert!((MAX_ERROR_MESSAGE - 1..=MAX_ERROR_MESSAGE).contains(&len), "{len}");
        assert!(std::str::from_utf8(&e[26..26 + len]).is_ok(), "still UTF-8");
        assert_eq!(u32::from_be_bytes(e[16..20].try_into().unwrap()) as usize, 6 + len);
    }

    #[test]
    fn simple_reply_layout() {
        let r = simple_reply(EINVAL, 0x0102_0304_0506_0708);
        assert_eq!(r, [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 22, 1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn chunks_cover_the_range_in_order_without_gaps() {
        let c: Vec<Chunk> = chunks(512 * 10, 512 * 130, 512, 64).collect();
        assert_eq!(
            c,
            [
                Chunk { lba: 10, blocks: 64, at: 0 },
                Chunk { lba: 74, blocks: 64, at: 64 * 512 },
                Chunk { lba: 138, blocks: 2, at: 128 * 512 },
            ]
        );
        assert_eq!(chunks(0, 512, 512, 64).count(), 1);
        let mib: Vec<Chunk> = chunks(1 << 20, 1 << 20, 512, 64).collect();
        assert_eq!(mib.len(), 32);
        assert!(mib.iter().all(|c| c.blocks == 64));
    }
}
