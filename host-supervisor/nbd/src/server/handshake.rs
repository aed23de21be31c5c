//! The fixed newstyle handshake, the server's side: options until `GO` or
//! `EXPORT_NAME` enter transmission. Generic over the stream, so that the
//! fuzzer drives it over bytes in memory.

use crate::proto::{
    self, Export, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO, OPT_INFO, OPT_LIST, OPT_STRUCTURED_REPLY, OPTION_HEADER_LEN,
    ProtocolError, REP_ACK, REP_ERR_INVALID, REP_ERR_UNKNOWN, REP_ERR_UNSUP, REP_INFO, REP_SERVER,
};
use std::io::{self, Read, Write};

/// Options accepted per handshake before the server gives up on the client.
pub const MAX_OPTIONS: usize = 256;

/// Why a handshake ended the connection.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The socket failed (a timeout included).
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// The client broke the protocol.
    #[error("protocol violation, hard disconnect: {0}")]
    Protocol(#[from] ProtocolError),
    /// The client kept negotiating without ever entering transmission.
    #[error("too many options ({MAX_OPTIONS}) without entering transmission")]
    TooManyOptions,
}

fn read_opt<S: Read>(s: &mut S) -> io::Result<Option<[u8; OPTION_HEADER_LEN]>> {
    let mut h = [0u8; OPTION_HEADER_LEN];
    match s.read_exact(&mut h) {
        Ok(()) => Ok(Some(h)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a handshake agreed on, for the transmission phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Negotiated {
    /// The client asked for structured replies and got them: every `READ`
    /// is answered in structured reply chunks.
    pub structured: bool,
}

/// The fixed newstyle handshake on `s` (the server's side): `Some` to enter
/// transmission, `None` when the client aborted or left. `peer` only names
/// the client in log lines. With `offer_structured`, `STRUCTURED_REPLY` is
/// acknowledged; without, it gets `NBD_REP_ERR_UNSUP` and replies stay
/// simple.
///
/// Generic over the stream so that it runs over bytes in memory too: the
/// fuzzer (`host-supervisor/fuzz`, target `nbd_handshake`) drives it with a
/// reader of its input and a writer that checks every reply.
///
/// # Errors
/// [`HandshakeError`]: the socket failed, the client broke the protocol, or it
/// sent more than [`MAX_OPTIONS`] options.
pub fn handshake<S: Read + Write>(
    s: &mut S,
    export: &Export,
    peer: &str,
    offer_structured: bool,
) -> Result<Option<Negotiated>, HandshakeError> {
    s.write_all(&proto::greeting())?;
    let mut f = [0u8; 4];
    s.read_exact(&mut f)?;
    let no_zeroes = proto::client_flags(f)?;
    let mut agreed = Negotiated::default();
    for _ in 0..MAX_OPTIONS {
        let Some(h) = read_opt(s)? else {
            tracing::info!("[nbd] {peer}: left during the handshake");
            return Ok(None);
        };
        let (opt, len) = proto::option_header(&h)?;
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data)?;
        let mut reply = |rep: u32, payload: &[u8]| s.write_all(&proto::option_reply(opt, rep, payload));
        match opt {
            OPT_EXPORT_NAME => {
                let name = String::from_utf8_lossy(&data).into_owned();
                if !export.matches(&name) {
                    return Err(ProtocolError::UnknownExport(name).into());
                }
                s.write_all(&export.export_name_reply(no_zeroes))?;
                return Ok(Some(agreed));
            }
            OPT_ABORT => {
                // The client may already have closed; a failed ack is fine.
                let _ = reply(REP_ACK, &[]);
                return Ok(None);
            }
            OPT_LIST if len != 0 => reply(REP_ERR_INVALID, b"NBD_OPT_LIST takes no data")?,
            OPT_LIST => {
                reply(REP_SERVER, &proto::rep_server(&export.name))?;
                reply(REP_ACK, &[])?;
            }
            OPT_INFO | OPT_GO => match proto::info_request(&data) {
                None => reply(REP_ERR_INVALID, b"malformed NBD_OPT_INFO/GO payload")?,
                Some(r) if !export.matches(&r.name) => {
                    reply(REP_ERR_UNKNOWN, format!("no export named {:?}", r.name).as_bytes())?;
                }
                Some(r) => {
                    reply(REP_INFO, &export.info_export())?;
                    if r.items.contains(&proto::INFO_BLOCK_SIZE) {
                        reply(REP_INFO, &export.info_block_size())?;
                    }
                    reply(REP_ACK, &[])?;
                    if opt == OPT_GO {
                        return Ok(Some(agreed));
                    }
                }
            },
            OPT_STRUCTURED_REPLY if offer_structured && len != 0 => {
                reply(REP_ERR_INVALID, b"NBD_OPT_STRUCTURED_REPLY takes no data")?;
            }
            OPT_STRUCTURED_REPLY if offer_structured => {
                reply(REP_ACK, &[])?;
                agreed.structured = true;
            }
            // STARTTLS, meta contexts, extended headers and anything
            // unknown (and STRUCTURED_REPLY when not offered): not
            // supported, the client carries on.
            _ => reply(REP_ERR_UNSUP, format!("option {opt} is not supported").as_bytes())?,
        }
    }
    Err(HandshakeError::TooManyOptions)
}
