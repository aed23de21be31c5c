//! The runtime's trace: an in-memory ring plus, when the supervisor gave us a
//! memfd, the shared ring it reads after our death.
//!
//! The shared ring is written with plain stores into a mapping of the memfd
//! ([`reinc_uio::WriteOnlyArea`]): a record costs no system call. A
//! descriptor that cannot be mapped that way (not a memfd sealed against
//! shrinking, e.g. a test's temporary file) is written with `pwrite`, which
//! is slower (two or three calls per record) but says the same thing.

use reinc_ringbuf::shared::{RING_BYTES, Sink, Writer};
use reinc_ringbuf::{Event, Legend, Ringbuf};
use reinc_uio::WriteOnlyArea;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::time::Instant;

/// Slots of the in-memory ring.
pub const LOCAL_SLOTS: usize = 128;

/// Where the shared ring's bytes go. A failed write is logged once and
/// otherwise ignored: losing trace must never take the driver down.
#[derive(Debug)]
pub(crate) struct TraceSink {
    to: To,
    failed: bool,
}

#[derive(Debug)]
enum To {
    Mapped(WriteOnlyArea),
    File(File),
}

impl TraceSink {
    /// Maps `file` when it is a sealed memfd of at least the ring's size,
    /// else keeps it for `pwrite`.
    fn new(file: File) -> Self {
        let to = match file.try_clone().map(OwnedFd::from) {
            Ok(fd) => match WriteOnlyArea::adopt(fd, "trace memfd", RING_BYTES) {
                Ok(area) if area.len() == RING_BYTES => To::Mapped(area),
                Ok(area) => {
                    tracing::debug!("[driver] trace memfd holds {} bytes, not {RING_BYTES}: using pwrite", area.len());
                    To::File(file)
                }
                Err(e) => {
                    tracing::debug!("[driver] {e}: using pwrite");
                    To::File(file)
                }
            },
            Err(e) => {
                tracing::debug!("[driver] trace memfd: dup: {e}: using pwrite");
                To::File(file)
            }
        };
        Self { to, failed: false }
    }

    /// Whether records are stored into a mapping (no system call each).
    #[cfg(test)]
    fn is_mapped(&self) -> bool {
        matches!(self.to, To::Mapped(_))
    }
}

impl Sink for TraceSink {
    fn write_at(&mut self, off: usize, bytes: &[u8]) {
        let res = match &mut self.to {
            To::Mapped(area) => area.write(off, bytes).map_err(|e| e.to_string()),
            To::File(file) => i64::try_from(off)
                .map_err(|_| nix::Error::EOVERFLOW)
                .and_then(|off| nix::sys::uio::pwrite(&*file, bytes, off))
                .map_err(|e| e.to_string())
                .and_then(|n| if n == bytes.len() { Ok(()) } else { Err(format!("short write of {n}")) }),
        };
        if let Err(e) = res
            && !self.failed
        {
            tracing::warn!("[driver] trace memfd write of {} bytes at {off} failed: {e}", bytes.len());
            self.failed = true;
        }
    }
}

/// Records runtime and driver events.
#[derive(Debug)]
pub struct Tracer {
    start: Instant,
    local: Ringbuf<Event, LOCAL_SLOTS>,
    shared: Option<Writer<TraceSink>>,
}

impl Tracer {
    /// A tracer writing to `memfd` too, when given (it is formatted now, with
    /// `legend` when the legend fits the shared format).
    pub(crate) fn new(memfd: Option<File>, legend: &Legend) -> Self {
        if let Err(problem) = legend.check() {
            tracing::warn!(
                "[driver] trace legend of subsystem {:?} does not fit the trace ring ({problem:?}); \
                 driver events will print in hex",
                legend.subsystem
            );
        }
        let shared = memfd.map(|file| Writer::with_legend(TraceSink::new(file), legend));
        Self { start: Instant::now(), local: Ringbuf::new(), shared }
    }

    /// Records `event`.
    pub fn record(&mut self, event: Event) {
        self.local.record(event);
        if let Some(w) = &mut self.shared {
            let micros = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
            w.record(micros, event);
        }
    }

    /// The in-memory ring (newest `LOCAL_SLOTS` distinct events).
    #[must_use]
    pub fn local(&self) -> &Ringbuf<Event, LOCAL_SLOTS> {
        &self.local
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_memfd_is_mapped_and_anything_else_falls_back_to_pwrite() {
        let pool = reinc_uio::SharedPool::create("trace", RING_BYTES).unwrap();
        let memfd = File::from(pool.fd().try_clone_to_owned().unwrap());
        assert!(TraceSink::new(memfd).is_mapped());
        let small = reinc_uio::SharedPool::create("small", 4096).unwrap();
        assert!(!TraceSink::new(File::from(small.fd().try_clone_to_owned().unwrap())).is_mapped());
        let file = tempfile::tempfile().unwrap();
        file.set_len(RING_BYTES as u64).unwrap();
        assert!(!TraceSink::new(file).is_mapped());
    }
}
