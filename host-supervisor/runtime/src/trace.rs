//! The runtime's trace: an in-memory ring plus, when the supervisor gave us a
//! memfd, the shared ring it reads after our death.

use reinc_ringbuf::shared::{Sink, Writer};
use reinc_ringbuf::{Event, Legend, Ringbuf};
use std::fs::File;
use std::time::Instant;

/// Slots of the in-memory ring.
pub const LOCAL_SLOTS: usize = 128;

/// `pwrite` into the trace memfd. A failed write is logged once and otherwise
/// ignored: losing trace must never take the driver down.
#[derive(Debug)]
pub(crate) struct FileSink {
    file: File,
    failed: bool,
}

impl Sink for FileSink {
    fn write_at(&mut self, off: usize, bytes: &[u8]) {
        let res = i64::try_from(off)
            .map_err(|_| nix::Error::EOVERFLOW)
            .and_then(|off| nix::sys::uio::pwrite(&self.file, bytes, off));
        match res {
            Ok(n) if n == bytes.len() => {}
            other => {
                if !self.failed {
                    tracing::warn!("[driver] trace memfd write of {} bytes at {off} failed: {other:?}", bytes.len());
                    self.failed = true;
                }
            }
        }
    }
}

/// Records runtime and driver events.
#[derive(Debug)]
pub struct Tracer {
    start: Instant,
    local: Ringbuf<Event, LOCAL_SLOTS>,
    shared: Option<Writer<FileSink>>,
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
        let shared = memfd.map(|file| Writer::with_legend(FileSink { file, failed: false }, legend));
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
