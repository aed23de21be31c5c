//! The NBD front end's handshake and request checks (`reinc-nbd`), fuzzed
//! as an NBD client would reach them: the input is every byte a client
//! sends, from its flags through its options and, if it gets there, its
//! transmission requests.
//!
//! The server's handshake ([`reinc_nbd::server::handshake`]) runs over an
//! in-memory stream whose reads come from the input and whose writes are
//! kept, and what it wrote is checked against the specification
//! (`doc/proto.md` of NetworkBlockDevice/nbd):
//! - it starts with the 18-byte fixed-newstyle greeting;
//! - every option reply has the reply magic, answers an option the client
//!   sent, in the order sent, with a known reply type and a length that
//!   matches its payload; an error reply's payload is a UTF-8 message;
//!   `NBD_INFO_EXPORT` carries the export's size and flags;
//! - transmission is entered only after `NBD_REP_ACK` to `NBD_OPT_GO` or
//!   after the `EXPORT_NAME` reply (size, flags, zeroes unless `NO_ZEROES`),
//!   and nothing follows either;
//! - an abort is acknowledged, and `TooManyOptions` only comes after
//!   [`MAX_OPTIONS`] options.
//!
//! In transmission, each 28-byte request goes through
//! [`Export::check`] against a writable and a read-only export; an accepted
//! `READ`/`WRITE` must be aligned, non-empty, within the maximum and inside
//! the export, and its split into storage requests must cover it exactly.

use crate::{Outcome, distinct};
use reinc_nbd::proto::{
    self, BlockSize, CMD_WRITE, Command, EINVAL, ENOSPC, EPERM, Export, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO,
    OPTION_HEADER_LEN, REP_ACK, REP_ERR_INVALID, REP_ERR_UNKNOWN, REP_ERR_UNSUP, REP_INFO, REP_SERVER, REPLY_MAGIC,
    REQUEST_LEN, Request,
};
use reinc_nbd::server::{HandshakeError, MAX_OPTIONS};
use std::io::{Read, Write};

/// A client connection in memory: reads come from the input, writes are
/// kept.
struct Wire<'a> {
    input: &'a [u8],
    at: usize,
    out: Vec<u8>,
}

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.input.len() - self.at);
        buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn export(read_only: bool) -> Export {
    Export {
        name: "disk".into(),
        size: 8 << 20,
        read_only,
        block: BlockSize { min: 512, preferred: 32 << 10, max: 2 << 20 },
    }
}

/// The options the client sent, as the server must have read them: the
/// 4 flag bytes, then `(option, length, payload)` headers, as far as the
/// input goes.
fn options_sent(input: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut at = 4;
    while input.len() >= at + OPTION_HEADER_LEN && out.len() < MAX_OPTIONS {
        let h: &[u8; OPTION_HEADER_LEN] = input[at..at + OPTION_HEADER_LEN].try_into().expect("16 bytes");
        let Ok((opt, len)) = proto::option_header(h) else { break };
        out.push(opt);
        at += OPTION_HEADER_LEN + len as usize;
    }
    out
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}

/// Runs one handshake over the input.
pub fn handshake(data: &[u8]) -> Outcome {
    let ex = export(false);
    let mut wire = Wire { input: data, at: 0, out: Vec::new() };
    let result = reinc_nbd::server::handshake(&mut wire, &ex, "fuzz", true);
    let out = std::mem::take(&mut wire.out);
    assert_eq!(out[..18], proto::greeting(), "the server did not start with the greeting");
    let sent = options_sent(data);
    let no_zeroes = data.len() >= 4 && be32(data) & proto::FLAG_C_NO_ZEROES != 0;
    let mut labels = Vec::new();
    // Replies, in order: each option gets zero or more SERVER/INFO replies,
    // then one final reply (an ACK or an error); `answered` counts the
    // options answered so far.
    let (mut at, mut answered, mut last) = (18usize, 0usize, None::<(u32, u32)>);
    let mut entered_by_name = false;
    let mut acked = Vec::new();
    while at < out.len() {
        let rest = &out[at..];
        if rest.len() < 20 || u64::from_be_bytes(rest[..8].try_into().expect("8")) != REPLY_MAGIC {
            // Only the EXPORT_NAME reply has no reply header, and it ends
            // the handshake.
            assert_eq!(sent.get(answered), Some(&OPT_EXPORT_NAME), "bytes that are no option reply");
            assert_eq!(rest, &ex.export_name_reply(no_zeroes)[..], "a wrong EXPORT_NAME reply");
            entered_by_name = true;
            break;
        }
        let (opt, rep, len) = (be32(&rest[8..]), be32(&rest[12..]), be32(&rest[16..]) as usize);
        let payload = rest.get(20..20 + len).expect("an option reply longer than what was written");
        assert_eq!(sent.get(answered), Some(&opt), "a reply to option {opt} out of order (options sent: {sent:?})");
        assert!(
            [REP_ACK, REP_SERVER, REP_INFO, REP_ERR_UNSUP, REP_ERR_INVALID, REP_ERR_UNKNOWN].contains(&rep),
            "unknown reply type {rep:#x}"
        );
        let is_final = rep == REP_ACK || rep & (1 << 31) != 0;
        if rep & (1 << 31) != 0 {
            assert!(std::str::from_utf8(payload).is_ok(), "an error message that is not UTF-8");
        }
        if rep == REP_ACK {
            assert!(payload.is_empty(), "an ACK with a payload");
        }
        if rep == REP_INFO && payload.get(..2) == Some(&proto::INFO_EXPORT.to_be_bytes()[..]) {
            assert_eq!(payload, &ex.info_export()[..], "NBD_INFO_EXPORT does not describe the export");
        }
        // The reply type only: with the option too, the set of labels of
        // one input grows combinatorially and stops being a useful signal.
        labels.push(format!("rep:{rep:x}"));
        if rep == REP_ACK {
            acked.push(opt);
        }
        last = Some((opt, rep));
        answered += usize::from(is_final);
        at += 20 + len;
    }
    if let Some((opt, rep)) = last.filter(|_| !entered_by_name) {
        assert!(rep == REP_ACK || rep & (1 << 31) != 0, "option {opt}'s replies end without a final one");
    }
    match &result {
        Ok(Some(agreed)) => {
            let by_go = last.is_some_and(|(o, r)| o == OPT_GO && r == REP_ACK);
            assert!(entered_by_name || by_go, "transmission without GO's ACK or the EXPORT_NAME reply");
            assert_eq!(
                agreed.structured,
                acked.contains(&proto::OPT_STRUCTURED_REPLY),
                "structured replies in transmission iff STRUCTURED_REPLY was acknowledged"
            );
            labels.push(if entered_by_name { "go:name" } else { "go" }.into());
            labels.extend(transmission(&data[wire.at..]));
        }
        Ok(None) => {
            assert!(!entered_by_name);
            // Either the client aborted (and was acknowledged) or it left
            // at an option boundary.
            let aborted = last == Some((OPT_ABORT, REP_ACK));
            assert!(aborted || wire.at == data.len(), "the handshake ended with input left and no abort");
            labels.push("left".into());
        }
        Err(HandshakeError::TooManyOptions) => {
            assert!(sent.len() >= MAX_OPTIONS, "TooManyOptions after {} options", sent.len());
            labels.push("too-many".into());
        }
        Err(HandshakeError::Protocol(e)) => {
            labels.push(format!("protocol:{e:?}").split([' ', '(', '{']).next().unwrap_or("").to_owned());
        }
        Err(HandshakeError::Io(e)) => labels.push(format!("io:{:?}", e.kind())),
    }
    distinct(labels)
}

/// Request headers (and write payloads) after the handshake.
fn transmission(mut rest: &[u8]) -> Vec<String> {
    let (rw, ro) = (export(false), export(true));
    let mut labels = Vec::new();
    for _ in 0..64 {
        let Some(h) = rest.get(..REQUEST_LEN) else { break };
        rest = &rest[REQUEST_LEN..];
        let r = match Request::decode(h.try_into().expect("28 bytes")) {
            Ok(r) => r,
            Err(_) => {
                labels.push("bad-magic".into());
                break;
            }
        };
        assert_eq!(Request::decode(&r.encode()), Ok(r), "a request header does not round-trip");
        for ex in [&rw, &ro] {
            let c = ex.check(&r);
            checked(ex, &r, c);
            labels.push(format!("{c:?}").split([' ', '{']).next().unwrap_or("").to_owned());
        }
        if r.kind == CMD_WRITE {
            rest = &rest[(r.length as usize).min(rest.len())..];
        }
    }
    labels
}

/// What an accepted request must satisfy.
fn checked(ex: &Export, r: &Request, c: Command) {
    let (offset, length) = match c {
        Command::Read { offset, length }
        | Command::Write { offset, length, .. }
        | Command::Zero { offset, length, .. } => (offset, length),
        Command::Refuse { errno } => {
            assert!([EINVAL, EPERM, ENOSPC].contains(&errno), "refused with errno {errno}");
            let writes = [CMD_WRITE, proto::CMD_TRIM, proto::CMD_WRITE_ZEROES].contains(&r.kind);
            assert!(errno != EPERM || (ex.read_only && writes), "EPERM for {r:?}");
            return;
        }
        Command::Flush | Command::Disconnect => return,
    };
    let changes = matches!(c, Command::Write { .. } | Command::Zero { .. });
    assert!(!(ex.read_only && changes), "a write, trim or zero accepted on a read-only export");
    let min = u64::from(ex.block.min);
    // Zeroing carries no payload: the maximum block size does not bound it.
    let max = if matches!(c, Command::Zero { .. }) { u32::MAX } else { ex.block.max };
    assert!(length > 0 && length <= max, "accepted length {length}");
    assert!(offset % min == 0 && u64::from(length) % min == 0, "accepted an unaligned {r:?}");
    assert!(offset + u64::from(length) <= ex.size, "accepted {r:?} past the end");
    // The storage requests it becomes cover it exactly, in order.
    let max_blocks = storage_core::MAX_BLOCKS_PER_REQUEST;
    let mut next = (offset / min, 0usize);
    for ch in proto::chunks(offset, length, ex.block.min, max_blocks) {
        assert_eq!((ch.lba, ch.at), next, "a gap or overlap in the split of {r:?}");
        assert!(ch.blocks >= 1 && ch.blocks <= max_blocks);
        next = (ch.lba + u64::from(ch.blocks), ch.at + usize::from(ch.blocks) * ex.block.min as usize);
    }
    assert_eq!(next.1, length as usize, "the split of {r:?} does not cover it");
}

/// Real handshakes, as clients send them.
#[must_use]
pub fn seeds() -> Vec<Vec<u8>> {
    let flags = |f: u32| f.to_be_bytes().to_vec();
    let opt = |o: u32, data: &[u8]| {
        let mut b = proto::IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&o.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        b
    };
    let info = |name: &str, items: &[u16]| {
        let mut b = (name.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&(items.len() as u16).to_be_bytes());
        for i in items {
            b.extend_from_slice(&i.to_be_bytes());
        }
        b
    };
    let req = |kind: u16, flags: u16, offset: u64, length: u32| {
        Request { flags, kind, cookie: 0x1122_3344, offset, length }.encode().to_vec()
    };
    let both = proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES;
    let cat = |parts: &[Vec<u8>]| parts.concat();
    vec![
        // qemu-nbd/qemu-img style: structured replies asked for, then GO with
        // block sizes, then a read, a write with FUA, a flush, a disconnect.
        cat(&[
            flags(both),
            opt(proto::OPT_STRUCTURED_REPLY, &[]),
            opt(OPT_GO, &info("disk", &[proto::INFO_BLOCK_SIZE])),
            req(proto::CMD_READ, 0, 0, 4096),
            req(CMD_WRITE, proto::CMD_FLAG_FUA, 512, 1024),
            vec![0x5a; 1024],
            req(proto::CMD_FLUSH, 0, 0, 0),
            req(proto::CMD_DISC, 0, 0, 0),
        ]),
        // nbdinfo --list: LIST, INFO of the default export, ABORT.
        cat(&[flags(both), opt(proto::OPT_LIST, &[]), opt(proto::OPT_INFO, &info("", &[])), opt(OPT_ABORT, &[])]),
        // The kernel's nbd-client (old style): EXPORT_NAME, zeroes wanted.
        cat(&[flags(proto::FLAG_C_FIXED_NEWSTYLE), opt(OPT_EXPORT_NAME, b"disk"), req(proto::CMD_READ, 0, 0, 512)]),
        // An unknown export, STARTTLS and an unknown option, then GO.
        cat(&[
            flags(both),
            opt(OPT_GO, &info("nope", &[])),
            opt(proto::OPT_STARTTLS, &[]),
            opt(0x4242, b"x"),
            opt(OPT_GO, &info("", &[])),
            req(proto::CMD_READ, 0, 8 << 20, 512),
            req(7, 0, 0, 512),
        ]),
    ]
}
