//! The NBD half of the rig: `reinc-nbd` as a process in front of a [`Rig`]'s
//! supervisor, the host NBD tools, and a raw NBD client for bad input.
//!
//! The raw client encodes the protocol by hand from the specification
//! (`doc/proto.md` of NetworkBlockDevice/nbd), not with `reinc-nbd`'s codec,
//! so that a test disagrees with the server when the server is wrong.

use crate::{Rig, bins, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A `reinc-nbd` process serving the rig's storage driver on a Unix socket.
#[derive(Debug)]
pub struct NbdServer {
    /// The process, while running.
    pub child: Option<Child>,
    /// Its listening socket.
    pub socket: PathBuf,
    /// The `nbd+unix://` URI it printed.
    pub uri: String,
    log: PathBuf,
    args: Vec<String>,
    runtime: PathBuf,
}

impl NbdServer {
    /// Starts `reinc-nbd` with `extra` arguments and waits for its URI line.
    ///
    /// # Panics
    /// If it does not come up within 10 s.
    #[must_use]
    pub fn start(rig: &Rig, extra: &[&str]) -> Self {
        let mut s = Self {
            child: None,
            socket: rig.dir.join("nbd.sock"),
            uri: String::new(),
            log: rig.dir.join("nbd.log"),
            args: extra.iter().map(|s| (*s).to_string()).collect(),
            runtime: rig.runtime.clone(),
        };
        s.restart();
        s
    }

    /// Starts the process again (after [`kill`](Self::kill)), same arguments.
    ///
    /// # Panics
    /// If it does not come up within 10 s.
    pub fn restart(&mut self) {
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("open nbd log");
        let mut child = Command::new(&bins().nbd)
            .arg("--runtime-dir")
            .arg(&self.runtime)
            .arg("--socket")
            .arg(&self.socket)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .env_remove("RUST_LOG")
            .spawn()
            .expect("spawn reinc-nbd");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout piped");
        let n = BufReader::new(out).read_line(&mut line).unwrap_or(0);
        assert!(n > 0 && line.starts_with("nbd+unix://"), "reinc-nbd did not come up; log:\n{}", self.log());
        self.uri = line.trim().to_string();
        self.child = Some(child);
    }

    /// The process id.
    ///
    /// # Panics
    /// If it is not running.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("reinc-nbd running").id()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Sends `sig` and reaps the process.
    ///
    /// # Panics
    /// If it does not exit within 10 s.
    pub fn kill(&mut self, sig: Signal) {
        let mut c = self.child.take().expect("reinc-nbd running");
        let _ = kill(Pid::from_raw(c.id() as i32), sig);
        assert!(wait_for(Duration::from_secs(10), || c.try_wait().ok().flatten()).is_some(), "reinc-nbd ignored {sig}");
    }

    /// What the server logged so far.
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Looks up a host tool on `PATH`.
#[must_use]
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Looks up a host tool the NBD tests need; `cargo xtask test` installs them
/// (libnbd-bin, qemu-utils), so a missing one is a failure, not a skip.
///
/// # Panics
/// If the tool is not installed.
#[must_use]
pub fn require_tool(name: &str, package: &str) -> PathBuf {
    tool(name).unwrap_or_else(|| {
        panic!("{name} is not installed: apt-get install --no-install-recommends --no-remove {package}")
    })
}

/// Runs a host tool with a deadline, returning its output.
///
/// # Panics
/// If it cannot be started or runs over `timeout` (it is killed).
#[must_use]
pub fn run_tool(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn tool");
    let pid = child.id();
    if wait_for(timeout, || child.try_wait().ok().flatten()).is_none() {
        let _ = child.kill();
        let out = child.wait_with_output().expect("reap tool");
        panic!("{cmd:?} (pid {pid}) ran over {timeout:?}; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    child.wait_with_output().expect("collect tool output")
}

/// Deterministic pseudo-random bytes (xorshift64), for data to copy.
#[must_use]
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Command codes and errnos, from the specification.
pub mod spec {
    /// `NBD_CMD_READ`.
    pub const READ: u16 = 0;
    /// `NBD_CMD_WRITE`.
    pub const WRITE: u16 = 1;
    /// `NBD_CMD_DISC`.
    pub const DISC: u16 = 2;
    /// `NBD_CMD_FLUSH`.
    pub const FLUSH: u16 = 3;
    /// `NBD_CMD_TRIM`.
    pub const TRIM: u16 = 4;
    /// `NBD_CMD_WRITE_ZEROES`.
    pub const WRITE_ZEROES: u16 = 6;
    /// `NBD_CMD_FLAG_FUA`.
    pub const FLAG_FUA: u16 = 1;
    /// `NBD_OPT_EXPORT_NAME`.
    pub const OPT_EXPORT_NAME: u32 = 1;
    /// `NBD_OPT_ABORT`.
    pub const OPT_ABORT: u32 = 2;
    /// `NBD_OPT_LIST`.
    pub const OPT_LIST: u32 = 3;
    /// `NBD_OPT_STARTTLS`.
    pub const OPT_STARTTLS: u32 = 5;
    /// `NBD_OPT_INFO`.
    pub const OPT_INFO: u32 = 6;
    /// `NBD_OPT_GO`.
    pub const OPT_GO: u32 = 7;
    /// `NBD_OPT_STRUCTURED_REPLY`.
    pub const OPT_STRUCTURED_REPLY: u32 = 8;
    /// `NBD_REP_ACK`.
    pub const REP_ACK: u32 = 1;
    /// `NBD_REPLY_FLAG_DONE`.
    pub const REPLY_FLAG_DONE: u16 = 1;
    /// `NBD_REPLY_TYPE_NONE`.
    pub const REPLY_TYPE_NONE: u16 = 0;
    /// `NBD_REPLY_TYPE_OFFSET_DATA`.
    pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
    /// `NBD_REPLY_TYPE_ERROR`.
    pub const REPLY_TYPE_ERROR: u16 = 0x8001;
    /// `NBD_REPLY_TYPE_ERROR_OFFSET`.
    pub const REPLY_TYPE_ERROR_OFFSET: u16 = 0x8002;
    /// `EIO`.
    pub const EIO: u32 = 5;
    /// `NBD_REP_SERVER`.
    pub const REP_SERVER: u32 = 2;
    /// `NBD_REP_INFO`.
    pub const REP_INFO: u32 = 3;
    /// `NBD_REP_ERR_UNSUP`.
    pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
    /// `NBD_REP_ERR_INVALID`.
    pub const REP_ERR_INVALID: u32 = 0x8000_0003;
    /// `NBD_REP_ERR_UNKNOWN`.
    pub const REP_ERR_UNKNOWN: u32 = 0x8000_0006;
    /// Transmission flag `NBD_FLAG_READ_ONLY`.
    pub const FLAG_READ_ONLY: u16 = 1 << 1;
    /// `EPERM`.
    pub const EPERM: u32 = 1;
    /// `EINVAL`.
    pub const EINVAL: u32 = 22;
    /// `ENOSPC`.
    pub const ENOSPC: u32 = 28;
}

/// An option reply: (option, type, payload).
pub type OptReply = (u32, u32, Vec<u8>);

/// A hand-written NBD client over a Unix socket, for feeding the server
/// what real clients never send.
#[derive(Debug)]
pub struct RawNbd {
    /// The socket.
    pub s: UnixStream,
}

/// What `NBD_OPT_GO` told the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Export size in bytes.
    pub size: u64,
    /// Transmission flags.
    pub flags: u16,
    /// (min, preferred, max) block sizes.
    pub block: (u32, u32, u32),
}

impl RawNbd {
    /// Connects and reads the greeting, checking its magic.
    ///
    /// # Panics
    /// If the server does not greet as fixed newstyle.
    #[must_use]
    pub fn connect(socket: &Path) -> Self {
        let s = UnixStream::connect(socket).expect("connect to reinc-nbd");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut c = Self { s };
        let g = c.read_n(18).expect("greeting");
        assert_eq!(&g[..16], b"NBDMAGICIHAVEOPT", "newstyle greeting");
        assert_eq!(u16::from_be_bytes([g[16], g[17]]) & 1, 1, "fixed newstyle advertised");
        c
    }

    /// Connects and checks the greeting; `None` if the server refuses or
    /// closes the connection instead.
    #[must_use]
    pub fn try_connect(socket: &Path) -> Option<Self> {
        let s = UnixStream::connect(socket).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut c = Self { s };
        let g = c.read_n(18)?;
        (&g[..16] == b"NBDMAGICIHAVEOPT").then_some(c)
    }

    /// One option reply, or `None` if the connection ended first.
    pub fn try_opt_reply(&mut self) -> Option<OptReply> {
        let h = self.read_n(20)?;
        let opt = u32::from_be_bytes(h[8..12].try_into().ok()?);
        let ty = u32::from_be_bytes(h[12..16].try_into().ok()?);
        let len = u32::from_be_bytes(h[16..20].try_into().ok()?) as usize;
        Some((opt, ty, self.read_n(len)?))
    }

    /// Reads exactly `n` bytes (`None` on EOF or error).
    pub fn read_n(&mut self, n: usize) -> Option<Vec<u8>> {
        let mut b = vec![0; n];
        self.s.read_exact(&mut b).ok().map(|()| b)
    }

    /// True if the server closed the connection (EOF within the timeout).
    pub fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.s.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    /// Sends raw bytes (errors ignored: the server may have closed).
    pub fn send(&mut self, b: &[u8]) {
        let _ = self.s.write_all(b);
    }

    /// Sends the client flags (fixed newstyle + no zeroes).
    pub fn flags(&mut self) {
        self.send(&3u32.to_be_bytes());
    }

    /// Sends one option.
    pub fn option(&mut self, opt: u32, data: &[u8]) {
        let mut b = b"IHAVEOPT".to_vec();
        b.extend_from_slice(&opt.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.send(&b);
    }

    /// Reads one option reply, checking its magic.
    ///
    /// # Panics
    /// On EOF or a wrong magic.
    pub fn opt_reply(&mut self) -> OptReply {
        let h = self.read_n(20).expect("option reply header");
        assert_eq!(u64::from_be_bytes(h[..8].try_into().unwrap()), 0x0003_e889_0455_65a9, "option reply magic");
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let ty = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
        (opt, ty, self.read_n(len).expect("option reply payload"))
    }

    /// The payload of `INFO`/`GO` for `name`, asking for the block size.
    #[must_use]
    pub fn info_payload(name: &str) -> Vec<u8> {
        let mut p = (name.len() as u32).to_be_bytes().to_vec();
        p.extend_from_slice(name.as_bytes());
        p.extend_from_slice(&[0, 1, 0, 3]);
        p
    }

    /// Sends `opt` (INFO or GO) and collects the info items up to the ACK.
    ///
    /// # Panics
    /// If the server answers anything but info items and an ACK.
    pub fn info(&mut self, opt: u32, name: &str) -> Negotiated {
        self.option(opt, &Self::info_payload(name));
        let mut n = Negotiated { size: 0, flags: 0, block: (0, 0, 0) };
        loop {
            let (o, ty, p) = self.opt_reply();
            assert_eq!(o, opt);
            match ty {
                spec::REP_ACK => return n,
                spec::REP_INFO if p[..2] == [0, 0] => {
                    n.size = u64::from_be_bytes(p[2..10].try_into().unwrap());
                    n.flags = u16::from_be_bytes([p[10], p[11]]);
                }
                spec::REP_INFO if p[..2] == [0, 3] => {
                    let v = |i: usize| u32::from_be_bytes(p[i..i + 4].try_into().unwrap());
                    n.block = (v(2), v(6), v(10));
                }
                spec::REP_INFO => {}
                other => panic!("unexpected reply {other:#x} to option {opt}: {:?}", String::from_utf8_lossy(&p)),
            }
        }
    }

    /// Connects, negotiates and enters transmission with `NBD_OPT_GO` on the
    /// default export.
    #[must_use]
    pub fn go(socket: &Path) -> (Self, Negotiated) {
        let mut c = Self::connect(socket);
        c.flags();
        let n = c.info(spec::OPT_GO, "");
        (c, n)
    }

    /// Sends one request header (and `payload` right after it).
    pub fn request(&mut self, kind: u16, flags: u16, cookie: u64, offset: u64, length: u32, payload: &[u8]) {
        let mut b = 0x2560_9513u32.to_be_bytes().to_vec();
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&cookie.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&length.to_be_bytes());
        b.extend_from_slice(payload);
        self.send(&b);
    }

    /// Reads one simple reply header: (errno, cookie).
    ///
    /// # Panics
    /// On EOF or a wrong magic.
    pub fn reply(&mut self) -> (u32, u64) {
        let h = self.read_n(16).expect("simple reply header");
        assert_eq!(u32::from_be_bytes(h[..4].try_into().unwrap()), 0x6744_6698, "simple reply magic");
        (u32::from_be_bytes(h[4..8].try_into().unwrap()), u64::from_be_bytes(h[8..16].try_into().unwrap()))
    }

    /// Writes `data` at `offset` and waits for its reply; returns the errno.
    pub fn write(&mut self, cookie: u64, offset: u64, data: &[u8]) -> u32 {
        self.request(spec::WRITE, 0, cookie, offset, data.len() as u32, data);
        let (e, c) = self.reply();
        assert_eq!(c, cookie, "reply to the write's cookie");
        e
    }

    /// Reads `len` bytes at `offset`: the data, or the errno.
    ///
    /// # Panics
    /// If the reply is for another cookie.
    pub fn read(&mut self, cookie: u64, offset: u64, len: u32) -> Result<Vec<u8>, u32> {
        self.request(spec::READ, 0, cookie, offset, len, &[]);
        let (e, c) = self.reply();
        assert_eq!(c, cookie, "reply to the read's cookie");
        if e != 0 {
            return Err(e);
        }
        Ok(self.read_n(len as usize).expect("read payload"))
    }

    /// Connects, asks for structured replies (checking the ACK) and enters
    /// transmission with `NBD_OPT_GO` on the default export.
    ///
    /// # Panics
    /// If the server does not acknowledge structured replies.
    #[must_use]
    pub fn go_structured(socket: &Path) -> (Self, Negotiated) {
        let mut c = Self::connect(socket);
        c.flags();
        c.option(spec::OPT_STRUCTURED_REPLY, &[]);
        let (o, ty, p) = c.opt_reply();
        assert_eq!((o, ty, p.len()), (spec::OPT_STRUCTURED_REPLY, spec::REP_ACK, 0), "structured replies acknowledged");
        let n = c.info(spec::OPT_GO, "");
        (c, n)
    }

    /// Reads one structured reply chunk, checking its magic and that its
    /// payload fits the type.
    ///
    /// # Panics
    /// On EOF, a wrong magic, or a malformed payload.
    pub fn chunk(&mut self) -> Chunk {
        let h = self.read_n(20).expect("structured reply chunk header");
        assert_eq!(u32::from_be_bytes(h[..4].try_into().unwrap()), 0x668e_33ef, "structured reply magic");
        let flags = u16::from_be_bytes([h[4], h[5]]);
        let kind = u16::from_be_bytes([h[6], h[7]]);
        let cookie = u64::from_be_bytes(h[8..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
        let p = self.read_n(len).expect("chunk payload");
        let done = flags & spec::REPLY_FLAG_DONE != 0;
        let body = match kind {
            spec::REPLY_TYPE_NONE => {
                assert!(len == 0 && done, "NONE must be empty and final");
                ChunkBody::None
            }
            spec::REPLY_TYPE_OFFSET_DATA => {
                assert!(len >= 9, "OFFSET_DATA of {len} bytes");
                ChunkBody::Data { offset: u64::from_be_bytes(p[..8].try_into().unwrap()), data: p[8..].to_vec() }
            }
            spec::REPLY_TYPE_ERROR | spec::REPLY_TYPE_ERROR_OFFSET => {
                let errno = u32::from_be_bytes(p[..4].try_into().unwrap());
                let mlen = u16::from_be_bytes([p[4], p[5]]) as usize;
                let message = String::from_utf8(p[6..6 + mlen].to_vec()).expect("an error message in UTF-8");
                let offset = (kind == spec::REPLY_TYPE_ERROR_OFFSET).then(|| {
                    assert_eq!(len, 6 + mlen + 8, "ERROR_OFFSET length");
                    u64::from_be_bytes(p[6 + mlen..].try_into().unwrap())
                });
                assert!(offset.is_some() || len == 6 + mlen, "ERROR length");
                assert_ne!(errno, 0, "an error chunk with errno 0");
                ChunkBody::Error { errno, message, offset }
            }
            other => panic!("unexpected chunk type {other:#x}"),
        };
        Chunk { cookie, done, body }
    }

    /// Every chunk of the reply to `cookie`, up to the one marked done.
    ///
    /// # Panics
    /// As [`chunk`](Self::chunk), or if a chunk of another reply arrives.
    pub fn chunks(&mut self, cookie: u64) -> Vec<Chunk> {
        let mut all = Vec::new();
        loop {
            let c = self.chunk();
            assert_eq!(c.cookie, cookie, "a chunk of another reply");
            let done = c.done;
            all.push(c);
            if done {
                return all;
            }
        }
    }
}

/// One structured reply chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The request's cookie.
    pub cookie: u64,
    /// `NBD_REPLY_FLAG_DONE`.
    pub done: bool,
    /// What it says.
    pub body: ChunkBody,
}

/// A chunk's payload, by type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkBody {
    /// `NBD_REPLY_TYPE_NONE`.
    None,
    /// `NBD_REPLY_TYPE_OFFSET_DATA`.
    Data {
        /// Export offset of the data.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// `NBD_REPLY_TYPE_ERROR` (no offset) or `ERROR_OFFSET`.
    Error {
        /// The error value.
        errno: u32,
        /// The message for a human.
        message: String,
        /// Where, for `ERROR_OFFSET`.
        offset: Option<u64>,
    },
}

/// A rig whose storage device holds `blocks` data blocks instead of
/// [`crate::DISK_BLOCKS`], for transfers large enough to kill a driver in
/// the middle of.
///
/// # Panics
/// If the config cannot be rewritten.
#[must_use]
pub fn rig_with_blocks(tag: &str, blocks: u64, overrides: &[(&str, &str)]) -> Rig {
    let rig = Rig::new(tag, overrides);
    let text = fs::read_to_string(&rig.config).expect("read config");
    let from = format!("\"--blocks\", \"{}\"", crate::DISK_BLOCKS);
    assert!(text.contains(&from), "the rig's config names its block count");
    fs::write(&rig.config, text.replacen(&from, &format!("\"--blocks\", \"{blocks}\""), 1)).expect("write config");
    rig
}

/// The superblock's `applied_count`, reading only block 0 of the disk.
///
/// # Panics
/// If the disk has no valid superblock.
#[must_use]
pub fn applied_count(rig: &Rig) -> u64 {
    let mut b = vec![0u8; storage_core::BLOCK_SIZE];
    let mut f = fs::File::open(rig.disk()).expect("open disk");
    f.read_exact(&mut b).expect("read block 0");
    storage_core::Superblock::decode(&b).expect("valid superblock").expect("formatted").applied_count
}

/// The bytes NBD clients see at `offset..offset + len` of the export, read
/// straight from the storage driver's file (block 0 is the superblock).
///
/// # Panics
/// If the file is too short.
#[must_use]
pub fn export_bytes(rig: &Rig, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(rig.disk()).expect("open disk");
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, offset + storage_core::BLOCK_SIZE as u64).expect("read export bytes");
    b
}
