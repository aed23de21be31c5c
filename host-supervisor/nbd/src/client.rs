//! A minimal NBD client over a Unix socket: fixed newstyle handshake with
//! `NBD_OPT_GO` on the default export (optionally asking for structured
//! replies first), then pipelined requests, and replies simple or, for
//! reads under structured replies, in chunks ([`NbdClient::next_reply`]).
//!
//! # Why it exists
//! Two programs in this workspace drive `reinc-nbd` as a well-behaved client
//! and check what comes back: the bench's NBD recovery row and the
//! reliability campaign's NBD load. Both need exactly this subset and
//! typed errors (not panics); it lives beside [`crate::proto`], whose
//! constants and [`Request`] encoder it uses, so that it cannot drift from
//! the server. The test suite's `RawNbd` (`tests/src/nbd.rs`) is a different
//! tool: it feeds the server what real clients never send, and panics on
//! anything unexpected, as a test should.

use crate::proto::{self, Request};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Something went wrong talking NBD to the server at `socket`.
#[derive(Debug, thiserror::Error)]
pub enum NbdClientError {
    /// Connecting, reading or writing failed.
    #[error("NBD server at {socket}: {what}: {source}")]
    Io {
        /// The server's socket.
        socket: PathBuf,
        /// What the client was doing.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The server said something the protocol does not allow here.
    #[error("NBD server at {socket}: {what}")]
    Protocol {
        /// The server's socket.
        socket: PathBuf,
        /// What was wrong.
        what: String,
    },
}

/// One connection in the transmission phase.
#[derive(Debug)]
pub struct NbdClient {
    stream: UnixStream,
    socket: PathBuf,
    /// The export's size in bytes, from `NBD_INFO_EXPORT`.
    pub size: u64,
    /// The transmission flags, from `NBD_INFO_EXPORT`.
    pub flags: u16,
    /// The server acknowledged structured replies.
    pub structured: bool,
    /// Reads answered in chunks so far, by cookie: (bytes covered, data, errno).
    partial: HashMap<u64, (Vec<bool>, Vec<u8>, u32)>,
}

/// A whole reply, from [`NbdClient::next_reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// The request's cookie.
    pub cookie: u64,
    /// 0, or the (first) errno the server reports.
    pub errno: u32,
    /// A successful read's data.
    pub data: Option<Vec<u8>>,
}

/// A simple reply's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// 0, or the errno the server reports.
    pub errno: u32,
    /// The request's cookie.
    pub cookie: u64,
}

impl NbdClient {
    /// Connects to `socket`, negotiates fixed newstyle with `NO_ZEROES`, and
    /// enters transmission with `NBD_OPT_GO` on the default export.
    ///
    /// # Errors
    /// [`NbdClientError`] naming the socket and the step that failed.
    pub fn connect(socket: &Path) -> Result<Self, NbdClientError> {
        Self::connect_with(socket, false)
    }

    /// [`connect`](Self::connect), asking for structured replies first when
    /// `structured` ([`structured`](Self::structured) says whether the
    /// server agreed).
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub fn connect_with(socket: &Path, structured: bool) -> Result<Self, NbdClientError> {
        let stream = UnixStream::connect(socket).map_err(|source| NbdClientError::Io {
            socket: socket.to_owned(),
            what: "connect",
            source,
        })?;
        let mut c =
            Self { stream, socket: socket.to_owned(), size: 0, flags: 0, structured: false, partial: HashMap::new() };
        let mut g = [0u8; 18];
        c.read(&mut g, "greeting")?;
        if u64::from_be_bytes(g[..8].try_into().expect("8 bytes")) != proto::NBDMAGIC
            || u64::from_be_bytes(g[8..16].try_into().expect("8 bytes")) != proto::IHAVEOPT
        {
            return Err(c.protocol("the greeting is not fixed newstyle".into()));
        }
        c.write(&(proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES).to_be_bytes(), "client flags")?;
        if structured {
            let mut opt = proto::IHAVEOPT.to_be_bytes().to_vec();
            opt.extend_from_slice(&proto::OPT_STRUCTURED_REPLY.to_be_bytes());
            opt.extend_from_slice(&0u32.to_be_bytes());
            c.write(&opt, "NBD_OPT_STRUCTURED_REPLY")?;
            let mut h = [0u8; 20];
            c.read(&mut h, "option reply")?;
            let len = u32::from_be_bytes(h[16..20].try_into().expect("4 bytes"));
            if u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) != proto::REPLY_MAGIC
                || len > proto::MAX_OPTION_LEN
            {
                return Err(c.protocol("a bad reply to NBD_OPT_STRUCTURED_REPLY".into()));
            }
            let mut p = vec![0u8; len as usize];
            c.read(&mut p, "option reply payload")?;
            c.structured = u32::from_be_bytes(h[12..16].try_into().expect("4 bytes")) == proto::REP_ACK;
        }
        let mut opt = proto::IHAVEOPT.to_be_bytes().to_vec();
        opt.extend_from_slice(&proto::OPT_GO.to_be_bytes());
        // Name length 0 (the default export), no information requests.
        opt.extend_from_slice(&6u32.to_be_bytes());
        opt.extend_from_slice(&[0; 6]);
        c.write(&opt, "NBD_OPT_GO")?;
        loop {
            let mut h = [0u8; 20];
            c.read(&mut h, "option reply")?;
            if u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) != proto::REPLY_MAGIC {
                return Err(c.protocol("bad option reply magic".into()));
            }
            let ty = u32::from_be_bytes(h[12..16].try_into().expect("4 bytes"));
            let len = u32::from_be_bytes(h[16..20].try_into().expect("4 bytes"));
            if len > proto::MAX_OPTION_LEN {
                return Err(c.protocol(format!("an option reply of {len} bytes")));
            }
            let mut p = vec![0u8; len as usize];
            c.read(&mut p, "option reply payload")?;
            match ty {
                proto::REP_ACK => return Ok(c),
                proto::REP_INFO if p.len() >= 12 && p[..2] == proto::INFO_EXPORT.to_be_bytes() => {
                    c.size = u64::from_be_bytes(p[2..10].try_into().expect("8 bytes"));
                    c.flags = u16::from_be_bytes([p[10], p[11]]);
                }
                proto::REP_INFO => {}
                other => return Err(c.protocol(format!("NBD_OPT_GO answered {other:#x}"))),
            }
        }
    }

    fn read(&mut self, b: &mut [u8], what: &'static str) -> Result<(), NbdClientError> {
        self.stream.read_exact(b).map_err(|source| NbdClientError::Io { socket: self.socket.clone(), what, source })
    }

    fn write(&mut self, b: &[u8], what: &'static str) -> Result<(), NbdClientError> {
        self.stream.write_all(b).map_err(|source| NbdClientError::Io { socket: self.socket.clone(), what, source })
    }

    fn protocol(&self, what: String) -> NbdClientError {
        NbdClientError::Protocol { socket: self.socket.clone(), what }
    }

    /// Sends `NBD_CMD_WRITE` of `data` at byte `offset`, without waiting.
    ///
    /// # Errors
    /// The socket failed.
    pub fn send_write(&mut self, cookie: u64, offset: u64, data: &[u8]) -> Result<(), NbdClientError> {
        let length = u32::try_from(data.len()).map_err(|_| self.protocol("a write above 4 GiB".into()))?;
        let r = Request { flags: 0, kind: proto::CMD_WRITE, cookie, offset, length };
        self.write(&r.encode(), "write request")?;
        self.write(data, "write payload")
    }

    /// Sends `NBD_CMD_WRITE_ZEROES` of `length` bytes at byte `offset`,
    /// without waiting (a simple reply answers it).
    ///
    /// # Errors
    /// The socket failed.
    pub fn send_write_zeroes(&mut self, cookie: u64, offset: u64, length: u32) -> Result<(), NbdClientError> {
        let r = Request { flags: 0, kind: proto::CMD_WRITE_ZEROES, cookie, offset, length };
        self.write(&r.encode(), "write-zeroes request")
    }

    /// Sends `NBD_CMD_READ` of `length` bytes at byte `offset`, without
    /// waiting; the data follows its reply ([`read_data`](Self::read_data)).
    ///
    /// # Errors
    /// The socket failed.
    pub fn send_read(&mut self, cookie: u64, offset: u64, length: u32) -> Result<(), NbdClientError> {
        let r = Request { flags: 0, kind: proto::CMD_READ, cookie, offset, length };
        self.write(&r.encode(), "read request")
    }

    /// The next simple reply's header. For a successful read, its data
    /// follows: read it with [`read_data`](Self::read_data) before the next reply.
    ///
    /// # Errors
    /// The socket failed, or the reply's magic is wrong.
    pub fn reply(&mut self) -> Result<Reply, NbdClientError> {
        let mut h = [0u8; 16];
        self.read(&mut h, "reply")?;
        if u32::from_be_bytes(h[..4].try_into().expect("4 bytes")) != proto::SIMPLE_REPLY_MAGIC {
            return Err(self.protocol("bad simple reply magic".into()));
        }
        Ok(Reply {
            errno: u32::from_be_bytes(h[4..8].try_into().expect("4 bytes")),
            cookie: u64::from_be_bytes(h[8..16].try_into().expect("8 bytes")),
        })
    }

    /// Reads a successful read's data into `buf` (its whole length).
    ///
    /// # Errors
    /// The socket failed.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<(), NbdClientError> {
        self.read(buf, "read data")
    }

    /// The next whole reply: a simple one (with a read's data when
    /// `read_len(cookie)` names its length), or, under structured replies,
    /// a read's chunks up to the one marked done, put together. Chunks of
    /// other reads that arrive meanwhile are kept for their turn.
    ///
    /// # Errors
    /// The socket failed, or the server broke the protocol: a bad magic, a
    /// chunk outside its read or of an unknown type, or a read declared done
    /// without every byte.
    pub fn next_reply(&mut self, read_len: impl Fn(u64) -> Option<(u64, usize)>) -> Result<Completed, NbdClientError> {
        loop {
            let mut magic = [0u8; 4];
            self.read(&mut magic, "reply")?;
            if u32::from_be_bytes(magic) == proto::SIMPLE_REPLY_MAGIC {
                let mut rest = [0u8; 12];
                self.read(&mut rest, "reply")?;
                let errno = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
                let cookie = u64::from_be_bytes(rest[4..12].try_into().expect("8 bytes"));
                let data = match read_len(cookie) {
                    Some((_, len)) if errno == 0 => {
                        let mut d = vec![0u8; len];
                        self.read(&mut d, "read data")?;
                        Some(d)
                    }
                    _ => None,
                };
                return Ok(Completed { cookie, errno, data });
            }
            if u32::from_be_bytes(magic) != proto::STRUCTURED_REPLY_MAGIC || !self.structured {
                return Err(self.protocol(format!("bad reply magic {:#x}", u32::from_be_bytes(magic))));
            }
            let mut h = [0u8; 16];
            self.read(&mut h, "chunk header")?;
            let flags = u16::from_be_bytes([h[0], h[1]]);
            let kind = u16::from_be_bytes([h[2], h[3]]);
            let cookie = u64::from_be_bytes(h[4..12].try_into().expect("8 bytes"));
            let len = u32::from_be_bytes(h[12..16].try_into().expect("4 bytes")) as usize;
            let Some((offset, want)) = read_len(cookie) else {
                return Err(self.protocol(format!("a chunk for cookie {cookie}, which is no read in flight")));
            };
            if len > want + 8 + 6 + proto::MAX_ERROR_MESSAGE {
                return Err(self.protocol(format!("a chunk of {len} bytes for a read of {want}")));
            }
            let mut p = vec![0u8; len];
            self.read(&mut p, "chunk payload")?;
            let entry = self.partial.entry(cookie).or_insert_with(|| (vec![false; want], vec![0u8; want], 0));
            match kind {
                proto::REPLY_TYPE_OFFSET_DATA if len >= 9 => {
                    let at = u64::from_be_bytes(p[..8].try_into().expect("8 bytes"));
                    let n = len - 8;
                    let Some(start) = at.checked_sub(offset).map(|s| s as usize).filter(|s| s + n <= want) else {
                        return Err(self.protocol(format!("a chunk at {at} outside the read at {offset}")));
                    };
                    if entry.0[start..start + n].iter().any(|c| *c) {
                        return Err(self.protocol(format!("overlapping chunks at {at} of read {cookie}")));
                    }
                    entry.0[start..start + n].fill(true);
                    entry.1[start..start + n].copy_from_slice(&p[8..]);
                }
                proto::REPLY_TYPE_ERROR | proto::REPLY_TYPE_ERROR_OFFSET if len >= 6 => {
                    let errno = u32::from_be_bytes(p[..4].try_into().expect("4 bytes"));
                    if entry.2 == 0 {
                        entry.2 = errno.max(1);
                    }
                }
                proto::REPLY_TYPE_NONE if len == 0 => {}
                other => return Err(self.protocol(format!("an unexpected chunk type {other:#x}"))),
            }
            if flags & proto::REPLY_FLAG_DONE != 0 {
                let (covered, data, errno) = self.partial.remove(&cookie).expect("entry made above");
                if errno == 0 && covered.iter().any(|c| !c) {
                    let got = covered.iter().filter(|c| **c).count();
                    return Err(self.protocol(format!("read {cookie} done with {got} of {want} bytes")));
                }
                return Ok(Completed { cookie, errno, data: (errno == 0).then_some(data) });
            }
        }
    }

    /// Sends `NBD_CMD_DISC`; the server finishes what is in flight and closes.
    ///
    /// # Errors
    /// The socket failed.
    pub fn disconnect(mut self) -> Result<(), NbdClientError> {
        let r = Request { flags: 0, kind: proto::CMD_DISC, cookie: 0, offset: 0, length: 0 };
        self.write(&r.encode(), "disconnect")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fresh directory named `tag` with a Unix socket listening in it.
    fn listen(tag: &str) -> (std::path::PathBuf, std::path::PathBuf, UnixListener) {
        let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let sock = dir.join("nbd.sock");
        let listener = UnixListener::bind(&sock).expect("bind");
        (dir, sock, listener)
    }

    /// Plays the server side with the server's own encoders ([`proto`]).
    fn serve(listener: &UnixListener) -> Vec<Request> {
        let (mut s, _) = listener.accept().expect("accept");
        s.write_all(&proto::greeting()).expect("greeting");
        let mut flags = [0u8; 4];
        s.read_exact(&mut flags).expect("client flags");
        assert!(proto::client_flags(flags).expect("valid client flags"), "no zeroes asked for");
        let mut h = [0u8; proto::OPTION_HEADER_LEN];
        s.read_exact(&mut h).expect("option header");
        let (opt, len) = proto::option_header(&h).expect("valid option");
        assert_eq!((opt, len), (proto::OPT_GO, 6));
        let mut p = vec![0u8; len as usize];
        s.read_exact(&mut p).expect("option payload");
        let mut export = proto::INFO_EXPORT.to_be_bytes().to_vec();
        export.extend_from_slice(&(1u64 << 20).to_be_bytes());
        export.extend_from_slice(&proto::TFLAG_HAS_FLAGS.to_be_bytes());
        s.write_all(&proto::option_reply(opt, proto::REP_INFO, &export)).expect("info");
        s.write_all(&proto::option_reply(opt, proto::REP_ACK, &[])).expect("ack");
        let mut seen = Vec::new();
        for _ in 0..3 {
            let mut r = [0u8; proto::REQUEST_LEN];
            s.read_exact(&mut r).expect("request");
            let r = Request::decode(&r).expect("request magic");
            if r.kind == proto::CMD_WRITE {
                let mut payload = vec![0u8; r.length as usize];
                s.read_exact(&mut payload).expect("payload");
            }
            seen.push(r);
        }
        // Out of order, as a pipelining server may answer: the read last.
        s.write_all(&proto::simple_reply(0, seen[1].cookie)).expect("reply");
        s.write_all(&proto::simple_reply(proto::EIO, seen[2].cookie)).expect("reply");
        s.write_all(&proto::simple_reply(0, seen[0].cookie)).expect("reply");
        s.write_all(&[7u8; 512]).expect("read data");
        seen
    }

    #[test]
    fn go_reads_the_export_and_pipelined_replies_come_back_by_cookie() {
        let (dir, sock, listener) = listen("reinc-nbd-client");
        let server = std::thread::spawn(move || serve(&listener));
        let mut c = NbdClient::connect(&sock).expect("negotiated");
        assert_eq!((c.size, c.flags), (1 << 20, proto::TFLAG_HAS_FLAGS));
        c.send_read(10, 4096, 512).expect("read");
        c.send_write(11, 0, &[1u8; 1024]).expect("write");
        c.send_write(12, 512, &[2u8; 512]).expect("write");
        assert_eq!(c.reply().expect("reply"), Reply { errno: 0, cookie: 11 });
        assert_eq!(c.reply().expect("reply"), Reply { errno: proto::EIO, cookie: 12 });
        assert_eq!(c.reply().expect("reply"), Reply { errno: 0, cookie: 10 });
        let mut data = [0u8; 512];
        c.read_data(&mut data).expect("data");
        assert_eq!(data, [7u8; 512]);
        let seen = server.join().expect("server");
        let shape: Vec<_> = seen.iter().map(|r| (r.kind, r.cookie, r.offset, r.length)).collect();
        assert_eq!(
            shape,
            [(proto::CMD_READ, 10, 4096, 512), (proto::CMD_WRITE, 11, 0, 1024), (proto::CMD_WRITE, 12, 512, 512)]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn structured_reads_come_back_whole_whatever_the_order_of_their_chunks() {
        let (dir, sock, listener) = listen("reinc-nbd-client-sr");
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            s.write_all(&proto::greeting()).expect("greeting");
            let mut flags = [0u8; 4];
            s.read_exact(&mut flags).expect("client flags");
            for _ in 0..2 {
                let mut h = [0u8; proto::OPTION_HEADER_LEN];
                s.read_exact(&mut h).expect("option header");
                let (opt, len) = proto::option_header(&h).expect("valid option");
                let mut p = vec![0u8; len as usize];
                s.read_exact(&mut p).expect("option payload");
                if opt == proto::OPT_GO {
                    let mut export = proto::INFO_EXPORT.to_be_bytes().to_vec();
                    export.extend_from_slice(&(1u64 << 20).to_be_bytes());
                    export.extend_from_slice(&proto::TFLAG_HAS_FLAGS.to_be_bytes());
                    s.write_all(&proto::option_reply(opt, proto::REP_INFO, &export)).expect("info");
                }
                assert!(opt == proto::OPT_STRUCTURED_REPLY || opt == proto::OPT_GO, "option {opt}");
                s.write_all(&proto::option_reply(opt, proto::REP_ACK, &[])).expect("ack");
            }
            // Read 1 (1024 bytes at 4096) in two chunks, the second first,
            // with read 2's error and a write's simple reply in between.
            s.write_all(&proto::offset_data_head(false, 1, 4096 + 512, 512)).expect("chunk");
            s.write_all(&[2u8; 512]).expect("data");
            s.write_all(&proto::error_chunk(true, 2, proto::EIO, "block 9 damaged", Some(0))).expect("error");
            s.write_all(&proto::simple_reply(0, 3)).expect("write reply");
            s.write_all(&proto::offset_data_head(true, 1, 4096, 512)).expect("chunk");
            s.write_all(&[1u8; 512]).expect("data");
            // Read 4 declared done without its second half: a violation.
            s.write_all(&proto::offset_data_head(true, 4, 0, 512)).expect("chunk");
            s.write_all(&[4u8; 512]).expect("data");
        });
        let mut c = NbdClient::connect_with(&sock, true).expect("negotiated");
        assert!(c.structured);
        let reads = |cookie: u64| match cookie {
            1 => Some((4096, 1024)),
            2 => Some((0, 512)),
            4 => Some((0, 1024)),
            _ => None,
        };
        assert_eq!(c.next_reply(reads).unwrap(), Completed { cookie: 2, errno: proto::EIO, data: None });
        assert_eq!(c.next_reply(reads).unwrap(), Completed { cookie: 3, errno: 0, data: None });
        let mut want = vec![1u8; 512];
        want.extend_from_slice(&[2u8; 512]);
        assert_eq!(c.next_reply(reads).unwrap(), Completed { cookie: 1, errno: 0, data: Some(want) });
        match c.next_reply(reads) {
            Err(e @ NbdClientError::Protocol { .. }) => assert!(e.to_string().contains("512 of 1024"), "{e}"),
            other => panic!("a short structured read must be a protocol error, got {other:?}"),
        }
        server.join().expect("server");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_server_that_is_not_newstyle_is_a_protocol_error_naming_the_socket() {
        let (dir, sock, listener) = listen("reinc-nbd-client-old");
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            s.write_all(&[0u8; 18]).expect("not a greeting");
        });
        match NbdClient::connect(&sock) {
            Err(e @ NbdClientError::Protocol { .. }) => assert!(e.to_string().contains("nbd.sock"), "{e}"),
            other => panic!("expected a protocol error, got {other:?}"),
        }
        server.join().expect("server");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
