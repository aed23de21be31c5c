//! The cross-process trace ring: fixed slots in a byte area (a memfd on Linux).
//!
//! # Layout (all integers little-endian)
//! ```text
//! header  [0..64)     magic "RTRC" | format u16 (2) | slot bytes u16 | slots u32 | cursor u32
//!                      | legend offset u32 | legend bytes u32 | zero
//! legend  [64..2112)   magic "RLGD" | entries u16 | entry bytes u16 | crc32 u32 | subsystem [16] | zero [4]
//!                      | entry i at 32 + i*48: code u16 | name [18] | a name [14] | b name [14]
//! slot i  [2112 + i*64 .. +64)
//!         seq u32 | count u32 | len u16 | crc32 u32
//!         | postcard (micros u64, last_micros - micros u64, Event) | zero
//! ```
//! Names are ASCII, padded with zero bytes. The legend's CRC covers its
//! subsystem and its used entries; it is written once, before the header, so
//! a reader that sees the magic of the header sees a complete legend, and one
//! torn by a writer that died while formatting fails its CRC and is ignored
//! ([`legend`]): the records then print with hex driver codes, as in format 1
//! (which had no legend area and is refused as another geometry).
//!
//! `cursor` is the number of records committed; record `s` lives in slot
//! `s % SLOTS`. The writer writes a slot, then advances the cursor, so the
//! reader accepts record `s` only when its slot holds sequence `s` and the CRC
//! (over the slot's fixed fields and payload) matches: a slot torn by a dying
//! writer, or one still holding an older record, is skipped. The slot at the
//! cursor itself is accepted when complete (the writer died between the slot
//! and the cursor update).
//!
//! A repetition of the newest event rewrites the newest slot with a higher
//! count; if that rewrite is torn, the newest record is lost, never garbled.

use crate::legend::{ARG_MAX, LEGEND_ENTRIES, Legend, NAME_MAX, SUBSYSTEM_MAX, fmt_named};
use crate::{Event, Record};
use core::fmt;

/// Magic number at offset 0.
pub const MAGIC: [u8; 4] = *b"RTRC";
/// Format version at offset 4.
pub const FORMAT_VERSION: u16 = 2;
/// Size of the header.
pub const HEADER_BYTES: usize = 64;
/// Magic number at the start of the legend area.
pub const LEGEND_MAGIC: [u8; 4] = *b"RLGD";
/// Size of the legend's own header.
const LEGEND_HEADER: usize = 32;
/// Size of one legend entry.
pub const LEGEND_ENTRY_BYTES: usize = 2 + NAME_MAX + 2 * ARG_MAX;
/// Size of the legend area, right after the header.
pub const LEGEND_BYTES: usize = LEGEND_HEADER + LEGEND_ENTRIES * LEGEND_ENTRY_BYTES;
/// Offset of slot 0.
pub const SLOTS_OFF: usize = HEADER_BYTES + LEGEND_BYTES;
/// Size of one slot.
pub const SLOT_BYTES: usize = 64;
/// Number of slots.
pub const SLOTS: usize = 256;
/// Size of the whole ring: what the supervisor allocates for each driver.
pub const RING_BYTES: usize = SLOTS_OFF + SLOTS * SLOT_BYTES;
const _: () = assert!(LEGEND_BYTES == 2048);

const SLOT_FIXED: usize = 14;
/// Largest encoded `(micros, Event)` a slot holds.
pub const MAX_PAYLOAD: usize = SLOT_BYTES - SLOT_FIXED;
const CURSOR_OFF: usize = 12;

/// Where the writer puts its bytes: a memfd through `pwrite`, a RAM buffer in
/// firmware. Writes never fail from the writer's point of view: tracing must
/// not take a driver down, so a sink that can fail reports it out of band.
pub trait Sink {
    /// Writes `bytes` at byte offset `off` of the ring area.
    fn write_at(&mut self, off: usize, bytes: &[u8]);
}

/// A RAM ring area (firmware, tests). Writes beyond its end are dropped.
impl Sink for &mut [u8] {
    fn write_at(&mut self, off: usize, bytes: &[u8]) {
        let Some(end) = off.checked_add(bytes.len()) else { return };
        if let Some(dst) = self.get_mut(off..end) {
            dst.copy_from_slice(bytes);
        }
    }
}

/// Writes records into a [`Sink`] in the shared format.
#[derive(Debug)]
pub struct Writer<S: Sink> {
    sink: S,
    next_seq: u32,
    newest: Option<Record>,
}

impl<S: Sink> Writer<S> {
    /// Formats the area with no legend; see [`Writer::with_legend`].
    pub fn new(sink: S) -> Self {
        Self::with_legend(sink, &Legend::EMPTY)
    }

    /// Formats the area (zeroes it, writes `legend` then the header) and
    /// returns a writer positioned at sequence 0. A legend that fails
    /// [`Legend::check`] is not written (its codes print in hex).
    pub fn with_legend(mut sink: S, legend: &Legend) -> Self {
        const ZERO: [u8; 1024] = [0; 1024];
        let mut off = 0;
        while off < RING_BYTES {
            let n = (RING_BYTES - off).min(ZERO.len());
            sink.write_at(off, &ZERO[..n]);
            off += n;
        }
        let mut header = [0u8; HEADER_BYTES];
        header[0..4].copy_from_slice(&MAGIC);
        header[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[6..8].copy_from_slice(&(SLOT_BYTES as u16).to_le_bytes());
        header[8..12].copy_from_slice(&(SLOTS as u32).to_le_bytes());
        header[16..20].copy_from_slice(&(HEADER_BYTES as u32).to_le_bytes());
        header[20..24].copy_from_slice(&(LEGEND_BYTES as u32).to_le_bytes());
        if !legend.entries.is_empty() && legend.check().is_ok() {
            let mut area = [0u8; LEGEND_BYTES];
            encode_legend(legend, &mut area);
            sink.write_at(HEADER_BYTES, &area);
        }
        sink.write_at(0, &header);
        Self { sink, next_seq: 0, newest: None }
    }

    /// Appends `event` at time `micros`, or counts it when it repeats the newest record.
    pub fn record(&mut self, micros: u64, event: Event) {
        if let Some(r) = &mut self.newest
            && r.event == event
            && r.count < u32::MAX
        {
            r.count += 1;
            r.last_micros = micros.max(r.micros);
            let r = *r;
            self.write_slot(&r);
            return;
        }
        let r = Record { seq: self.next_seq, count: 1, micros, last_micros: micros, event };
        self.write_slot(&r);
        self.next_seq = self.next_seq.wrapping_add(1);
        self.newest = Some(r);
        self.sink.write_at(CURSOR_OFF, &self.next_seq.to_le_bytes());
    }

    /// Number of records written (the header cursor).
    #[must_use]
    pub fn cursor(&self) -> u32 {
        self.next_seq
    }

    /// The sink, e.g. to read a RAM ring back.
    #[must_use]
    pub fn sink(&self) -> &S {
        &self.sink
    }

    fn write_slot(&mut self, r: &Record) {
        let mut slot = [0u8; SLOT_BYTES];
        // The payload always fits: the largest event is ~25 bytes; a failure
        // would be a bug in this crate, and the slot then holds an empty payload
        // that the reader rejects as undecodable rather than crashing.
        let payload = (r.micros, r.last_micros - r.micros, r.event);
        let len = postcard::to_slice(&payload, &mut slot[SLOT_FIXED..]).map_or(0, |p| p.len());
        slot[0..4].copy_from_slice(&r.seq.to_le_bytes());
        slot[4..8].copy_from_slice(&r.count.to_le_bytes());
        slot[8..10].copy_from_slice(&(len as u16).to_le_bytes());
        let crc = slot_crc(&slot, len);
        slot[10..14].copy_from_slice(&crc.to_le_bytes());
        let idx = r.seq as usize % SLOTS;
        self.sink.write_at(SLOTS_OFF + idx * SLOT_BYTES, &slot);
    }
}

fn put_name(dst: &mut [u8], name: &str) {
    dst[..name.len()].copy_from_slice(name.as_bytes());
}

/// `legend` has passed [`Legend::check`]: every name fits its field.
fn encode_legend(legend: &Legend, area: &mut [u8; LEGEND_BYTES]) {
    area[0..4].copy_from_slice(&LEGEND_MAGIC);
    area[4..6].copy_from_slice(&(legend.entries.len() as u16).to_le_bytes());
    area[6..8].copy_from_slice(&(LEGEND_ENTRY_BYTES as u16).to_le_bytes());
    put_name(&mut area[12..12 + SUBSYSTEM_MAX], legend.subsystem);
    for (i, e) in legend.entries.iter().enumerate() {
        let off = LEGEND_HEADER + i * LEGEND_ENTRY_BYTES;
        let entry = &mut area[off..off + LEGEND_ENTRY_BYTES];
        entry[0..2].copy_from_slice(&e.code.to_le_bytes());
        put_name(&mut entry[2..2 + NAME_MAX], e.name);
        put_name(&mut entry[2 + NAME_MAX..2 + NAME_MAX + ARG_MAX], e.a);
        put_name(&mut entry[2 + NAME_MAX + ARG_MAX..], e.b);
    }
    let crc = legend_crc(area, legend.entries.len());
    area[8..12].copy_from_slice(&crc.to_le_bytes());
}

fn legend_crc(area: &[u8], entries: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&area[4..8]);
    h.update(&area[12..LEGEND_HEADER + entries * LEGEND_ENTRY_BYTES]);
    h.finalize()
}

/// Why the legend of a ring area is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LegendError {
    /// The area itself is not a ring of this format.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The driver registered no legend.
    #[error("trace area has no legend (the driver registered none)")]
    Missing,
    /// Magic present but geometry, CRC or names wrong (torn or foreign).
    #[error("trace legend is corrupt ({0}); driver events print in hex")]
    Corrupt(&'static str),
}

/// A legend read back from a ring area; names borrow the area.
#[derive(Debug, Clone, Copy)]
pub struct LegendView<'a> {
    subsystem: &'a str,
    entries: &'a [u8],
}

/// A name field: ASCII graphic bytes, then zero padding.
fn name_field(field: &[u8], may_be_empty: bool) -> Option<&str> {
    let len = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    let (name, pad) = field.split_at(len);
    if pad.iter().any(|&c| c != 0) || !name.iter().all(u8::is_ascii_graphic) || (name.is_empty() && !may_be_empty) {
        return None;
    }
    core::str::from_utf8(name).ok()
}

fn entry_names(entry: &[u8]) -> Option<(u16, [&str; 3])> {
    let code = u16::from_le_bytes([entry[0], entry[1]]);
    let name = name_field(&entry[2..2 + NAME_MAX], false)?;
    let a = name_field(&entry[2 + NAME_MAX..2 + NAME_MAX + ARG_MAX], true)?;
    let b = name_field(&entry[2 + NAME_MAX + ARG_MAX..LEGEND_ENTRY_BYTES], true)?;
    Some((code, [name, a, b]))
}

/// Reads and validates the legend of a ring area.
///
/// # Errors
/// [`LegendError`]; callers fall back to hex driver codes.
pub fn legend(buf: &[u8]) -> Result<LegendView<'_>, LegendError> {
    cursor(buf)?;
    let area = buf.get(HEADER_BYTES..SLOTS_OFF).ok_or(FormatError::Short)?;
    if area[0..4] != LEGEND_MAGIC {
        return Err(LegendError::Missing);
    }
    let entries = u16::from_le_bytes([area[4], area[5]]) as usize;
    let entry_bytes = u16::from_le_bytes([area[6], area[7]]) as usize;
    if entries > LEGEND_ENTRIES || entry_bytes != LEGEND_ENTRY_BYTES {
        return Err(LegendError::Corrupt("entry count or size"));
    }
    if legend_crc(area, entries) != u32::from_le_bytes([area[8], area[9], area[10], area[11]]) {
        return Err(LegendError::Corrupt("crc mismatch"));
    }
    let subsystem = name_field(&area[12..12 + SUBSYSTEM_MAX], false).ok_or(LegendError::Corrupt("subsystem name"))?;
    let entries = &area[LEGEND_HEADER..LEGEND_HEADER + entries * LEGEND_ENTRY_BYTES];
    if entries.chunks_exact(LEGEND_ENTRY_BYTES).any(|e| entry_names(e).is_none()) {
        return Err(LegendError::Corrupt("entry name"));
    }
    Ok(LegendView { subsystem, entries })
}

impl<'a> LegendView<'a> {
    /// The subsystem name, e.g. `"storage"`.
    #[must_use]
    pub fn subsystem(&self) -> &'a str {
        self.subsystem
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len() / LEGEND_ENTRY_BYTES
    }

    /// True when the legend names no code.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `[name, a name, b name]` of `code` (argument names may be `""`).
    #[must_use]
    pub fn lookup(&self, code: u16) -> Option<[&'a str; 3]> {
        self.entries.chunks_exact(LEGEND_ENTRY_BYTES).filter_map(entry_names).find(|(c, _)| *c == code).map(|(_, n)| n)
    }
}

/// A [`Record`] printed with the names of a legend, when there is one and it
/// has the record's code; otherwise exactly as [`Record`]'s `Display`.
#[derive(Debug, Clone, Copy)]
pub struct Described<'a> {
    record: &'a Record,
    legend: Option<&'a LegendView<'a>>,
}

/// `record`, printed with `legend`'s names (e.g. from [`legend`]`(area).ok()`).
#[must_use]
pub fn describe<'a>(record: &'a Record, legend: Option<&'a LegendView<'a>>) -> Described<'a> {
    Described { record, legend }
}

struct EventWith<'a>(&'a Event, Option<&'a LegendView<'a>>);

impl fmt::Display for EventWith<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Event::Driver { code, a, b }, Some(l)) = (self.0, self.1)
            && let Some(names) = l.lookup(*code)
        {
            return fmt_named(f, l.subsystem, names, *a, *b);
        }
        self.0.fmt(f)
    }
}

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.record.fmt_with(f, &EventWith(&self.record.event, self.legend))
    }
}

fn slot_crc(slot: &[u8; SLOT_BYTES], len: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&slot[0..10]);
    h.update(&slot[SLOT_FIXED..SLOT_FIXED + len]);
    h.finalize()
}

/// Why a ring area cannot be decoded at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Shorter than the header.
    #[error("trace area is shorter than its {HEADER_BYTES}-byte header")]
    Short,
    /// No magic: never formatted by a writer (or not a trace ring).
    #[error("trace area has no RTRC magic (never written)")]
    Magic,
    /// Another format version, slot size or slot count.
    #[error(
        "trace area has format {version}, {slots} slots of {slot_bytes} bytes \
         (expected format {FORMAT_VERSION}, {SLOTS} slots of {SLOT_BYTES} bytes)"
    )]
    Geometry {
        /// Format version found.
        version: u16,
        /// Slot size found.
        slot_bytes: u16,
        /// Slot count found.
        slots: u32,
    },
}

/// Checks the header and returns the cursor (records committed).
///
/// # Errors
/// [`FormatError`] when the area is not a ring of this format.
pub fn cursor(buf: &[u8]) -> Result<u32, FormatError> {
    let h = buf.get(..HEADER_BYTES).ok_or(FormatError::Short)?;
    if h[0..4] != MAGIC {
        return Err(FormatError::Magic);
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    let slot_bytes = u16::from_le_bytes([h[6], h[7]]);
    let slots = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != FORMAT_VERSION || slot_bytes as usize != SLOT_BYTES || slots as usize != SLOTS {
        return Err(FormatError::Geometry { version, slot_bytes, slots });
    }
    Ok(u32::from_le_bytes([h[12], h[13], h[14], h[15]]))
}

/// The records of a ring area, oldest first. An area that is not a ring
/// yields nothing (use [`cursor`] to tell why); torn or stale slots are skipped.
#[must_use]
pub fn records(buf: &[u8]) -> Records<'_> {
    match cursor(buf) {
        Ok(c) => Records { buf, next: c.saturating_sub(SLOTS as u32), last: c, done: false },
        Err(_) => Records { buf, next: 1, last: 0, done: true },
    }
}

/// Iterator returned by [`records`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    buf: &'a [u8],
    next: u32,
    last: u32,
    done: bool,
}

impl Iterator for Records<'_> {
    type Item = Record;
    fn next(&mut self) -> Option<Record> {
        while !self.done && self.next <= self.last {
            let seq = self.next;
            if seq == u32::MAX {
                self.done = true;
            } else {
                self.next += 1;
            }
            if let Some(r) = decode_slot(self.buf, seq) {
                return Some(r);
            }
        }
        None
    }
}

fn decode_slot(buf: &[u8], seq: u32) -> Option<Record> {
    let off = SLOTS_OFF + (seq as usize % SLOTS) * SLOT_BYTES;
    let slot: &[u8; SLOT_BYTES] = buf.get(off..off + SLOT_BYTES)?.try_into().ok()?;
    let found = u32::from_le_bytes([slot[0], slot[1], slot[2], slot[3]]);
    let count = u32::from_le_bytes([slot[4], slot[5], slot[6], slot[7]]);
    let len = u16::from_le_bytes([slot[8], slot[9]]) as usize;
    let crc = u32::from_le_bytes([slot[10], slot[11], slot[12], slot[13]]);
    if found != seq || count == 0 || len > MAX_PAYLOAD || slot_crc(slot, len) != crc {
        return None;
    }
    let (micros, delta, event): (u64, u64, Event) = postcard::from_bytes(&slot[SLOT_FIXED..SLOT_FIXED + len]).ok()?;
    Some(Record { seq, count, micros, last_micros: micros.saturating_add(delta), event })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::{LegendEntry, LegendProblem};
    use reinc_proto::{ClientId, CrashKind, CrashPoint, FaultPlan, Generation, RequestId};
    use std::{format, string::String, vec, vec::Vec};

    fn id(seq: u64) -> RequestId {
        RequestId { client: ClientId(1), seq }
    }

    fn ring() -> Vec<u8> {
        vec![0xAA; RING_BYTES]
    }

    #[test]
    fn records_come_back_oldest_first() {
        let mut area = ring();
        let mut w = Writer::new(&mut area[..]);
        w.record(5, Event::Init { generation: Generation(3), restored: false });
        w.record(9, Event::Ready);
        w.record(12, Event::RequestStart { id: id(1), nth: 1 });
        let got: Vec<Record> = records(&area).collect();
        assert_eq!(got.len(), 3);
        let init = Event::Init { generation: Generation(3), restored: false };
        assert_eq!(got[0], Record { seq: 0, count: 1, micros: 5, last_micros: 5, event: init });
        assert_eq!(got[2].event, Event::RequestStart { id: id(1), nth: 1 });
        assert_eq!(cursor(&area), Ok(3));
    }

    #[test]
    fn repeated_events_fold_into_one_counted_record() {
        let mut area = ring();
        let mut w = Writer::new(&mut area[..]);
        w.record(1, Event::Ready);
        for t in 2..12 {
            w.record(t, Event::Ping);
        }
        w.record(20, Event::Eof);
        let got: Vec<(Event, u32, u64, u64)> =
            records(&area).map(|r| (r.event, r.count, r.micros, r.last_micros)).collect();
        assert_eq!(got, [(Event::Ready, 1, 1, 1), (Event::Ping, 10, 2, 11), (Event::Eof, 1, 20, 20)]);
    }

    #[test]
    fn wraparound_keeps_the_newest_slots() {
        let mut area = ring();
        let mut w = Writer::new(&mut area[..]);
        let total = SLOTS as u64 * 2 + 7;
        for n in 0..total {
            w.record(n, Event::Driver { code: 1, a: n, b: 0 });
        }
        let got: Vec<Record> = records(&area).collect();
        assert_eq!(got.len(), SLOTS);
        assert_eq!(got[0].seq as u64, total - SLOTS as u64);
        assert_eq!(got.last().unwrap().event, Event::Driver { code: 1, a: total - 1, b: 0 });
        assert!(got.windows(2).all(|p| p[1].seq == p[0].seq + 1));
    }

    #[test]
    fn torn_newest_slot_is_skipped_and_the_rest_survive() {
        let mut area = ring();
        let mut w = Writer::new(&mut area[..]);
        for n in 0..5u64 {
            w.record(n, Event::Effect { id: id(n) });
        }
        // Half of the slot of record 4 is garbage, as after a death mid-write.
        let off = SLOTS_OFF + 4 * SLOT_BYTES;
        area[off + 12..off + SLOT_BYTES].fill(0x5A);
        let seqs: Vec<u32> = records(&area).map(|r| r.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3]);
    }

    #[test]
    fn slot_written_before_cursor_update_is_still_read() {
        let mut area = ring();
        let mut w = Writer::new(&mut area[..]);
        w.record(1, Event::Ready);
        w.record(2, Event::Reply { id: id(7), committed: true });
        // Roll the cursor back: the process died after the slot, before the cursor.
        area[CURSOR_OFF..CURSOR_OFF + 4].copy_from_slice(&1u32.to_le_bytes());
        let got: Vec<Event> = records(&area).map(|r| r.event).collect();
        assert_eq!(got, [Event::Ready, Event::Reply { id: id(7), committed: true }]);
    }

    #[test]
    fn stale_slot_from_the_previous_lap_is_not_mistaken_for_a_new_record() {
        let mut area = ring();
        let mut w = Writer::new(&mut area[..]);
        for n in 0..(SLOTS as u64 + 1) {
            w.record(n, Event::Driver { code: 2, a: n, b: 0 });
        }
        // Cursor = SLOTS + 1; slot of seq SLOTS+1 holds seq 1 (previous lap), which must not appear twice.
        let got: Vec<u32> = records(&area).map(|r| r.seq).collect();
        assert_eq!(got.len(), SLOTS);
        assert_eq!(got[0], 1);
    }

    #[test]
    fn unformatted_or_foreign_area_yields_nothing_with_a_reason() {
        let area = ring();
        assert_eq!(records(&area).count(), 0);
        assert_eq!(cursor(&area), Err(FormatError::Magic));
        assert_eq!(cursor(&area[..10]), Err(FormatError::Short));
        let mut other = ring();
        Writer::new(&mut other[..]);
        other[8..12].copy_from_slice(&8u32.to_le_bytes());
        assert!(matches!(cursor(&other), Err(FormatError::Geometry { slots: 8, .. })));
        let msg = format!("{}", cursor(&other).unwrap_err());
        assert_eq!(msg, "trace area has format 2, 8 slots of 64 bytes (expected format 2, 256 slots of 64 bytes)");
        assert_eq!(records(&other).count(), 0);
    }

    #[test]
    fn writer_reformats_a_ring_left_by_a_previous_instance() {
        let mut area = ring();
        let mut w = Writer::new(&mut area[..]);
        for n in 0..10 {
            w.record(n, Event::Driver { code: 3, a: n, b: 0 });
        }
        let mut w = Writer::new(&mut area[..]);
        w.record(0, Event::Ready);
        let got: Vec<Event> = records(&area).map(|r| r.event).collect();
        assert_eq!(got, [Event::Ready]);
    }

    #[test]
    fn largest_events_fit_a_slot_and_display_reads_well() {
        let mut area = ring();
        let mut w = Writer::new(&mut area[..]);
        let big = Event::Driver { code: u16::MAX, a: u64::MAX, b: u64::MAX };
        let plan = FaultPlan { point: CrashPoint::AfterEffect, on_request: u32::MAX, kind: CrashKind::Segv };
        let start = Event::RequestStart { id: RequestId { client: ClientId(u64::MAX), seq: u64::MAX }, nth: u32::MAX };
        let half = u64::MAX / 2;
        w.record(half, big);
        w.record(u64::MAX, big); // largest first time and largest delta at once
        w.record(u64::MAX, Event::Fault { plan });
        w.record(u64::MAX, start);
        let got: Vec<Record> = records(&area).collect();
        assert_eq!(got.iter().map(|r| r.event).collect::<Vec<_>>(), [big, Event::Fault { plan }, start]);
        assert_eq!((got[0].count, got[0].micros, got[0].last_micros), (2, half, u64::MAX));
        let r = Record { seq: 12, count: 1, micros: 1_002_345, last_micros: 1_002_345, event: Event::Ready };
        assert_eq!(format!("{r}"), "#12 +1.002345s ready");
        let r = Record { seq: 13, count: 40, micros: 1_002_345, last_micros: 9_000_001, event: Event::Ping };
        assert_eq!(format!("{r}"), "#13 +1.002345s ping x40 (last +9.000001s)");
        assert_eq!(format!("{}", Event::Fault { plan }), "FAULT after-effect:4294967295:segv");
    }

    const LEGEND: Legend = Legend {
        subsystem: "storage",
        entries: &[LegendEntry::new(0x5103, "applied", "lba", "blocks"), LegendEntry::new(0x5106, "refused", "", "")],
    };

    fn described(area: &[u8]) -> Vec<String> {
        let legend = legend(area).ok();
        records(area).map(|r| format!("{}", describe(&r, legend.as_ref()))).collect()
    }

    #[test]
    fn legend_names_driver_events_and_unknown_codes_stay_hex() {
        let mut area = ring();
        let mut w = Writer::with_legend(&mut area[..], &LEGEND);
        w.record(35_521, Event::Driver { code: 0x5103, a: 0x1d00, b: 0x40 });
        w.record(35_522, Event::Driver { code: 0x5106, a: 0, b: 3 });
        w.record(35_523, Event::Driver { code: 0x5199, a: 1, b: 2 });
        w.record(35_524, Event::Ready);
        assert_eq!(
            described(&area),
            [
                "#0 +0.035521s storage: applied lba=0x1d00 blocks=0x40",
                "#1 +0.035522s storage: refused b=0x3",
                "#2 +0.035523s driver event 0x5199 a=0x1 b=0x2",
                "#3 +0.035524s ready",
            ]
        );
        let view = legend(&area).unwrap();
        assert_eq!((view.subsystem(), view.len()), ("storage", 2));
        assert_eq!(view.lookup(0x5103), Some(["applied", "lba", "blocks"]));
    }

    #[test]
    fn ring_without_legend_prints_hex_and_says_why() {
        let mut area = ring();
        let mut w = Writer::new(&mut area[..]);
        w.record(1, Event::Driver { code: 0x5103, a: 1, b: 2 });
        assert_eq!(legend(&area).unwrap_err(), LegendError::Missing);
        assert_eq!(described(&area), ["#0 +0.000001s driver event 0x5103 a=0x1 b=0x2"]);
        assert_eq!(legend(&ring()).unwrap_err(), LegendError::Format(FormatError::Magic));
    }

    #[test]
    fn corrupt_legend_is_ignored_and_records_still_read() {
        let mut area = ring();
        let mut w = Writer::with_legend(&mut area[..], &LEGEND);
        w.record(1, Event::Driver { code: 0x5103, a: 1, b: 2 });
        let hex = ["#0 +0.000001s driver event 0x5103 a=0x1 b=0x2"];
        // A flipped byte in a name: the CRC catches it.
        let name = HEADER_BYTES + 32 + 2;
        let mut torn = area.clone();
        torn[name] ^= 0x20;
        assert_eq!(legend(&torn).unwrap_err(), LegendError::Corrupt("crc mismatch"));
        assert_eq!(described(&torn), hex);
        // An entry count beyond the area, or garbage everywhere: refused, no panic.
        let mut big = area.clone();
        big[HEADER_BYTES + 4..HEADER_BYTES + 6].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(legend(&big).unwrap_err(), LegendError::Corrupt("entry count or size"));
        let mut junk = area.clone();
        junk[HEADER_BYTES + 4..SLOTS_OFF].fill(0xFF);
        assert!(matches!(legend(&junk), Err(LegendError::Corrupt(_))));
        assert_eq!(described(&junk), hex);
        // A valid CRC over a non-ASCII name is still refused.
        let mut bad = area.clone();
        bad[name] = 0xC3;
        let crc = legend_crc(&bad[HEADER_BYTES..SLOTS_OFF], 2);
        bad[HEADER_BYTES + 8..HEADER_BYTES + 12].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(legend(&bad).unwrap_err(), LegendError::Corrupt("entry name"));
    }

    #[test]
    fn legend_that_does_not_fit_is_refused_by_check_and_not_written() {
        const LONG: Legend =
            Legend { subsystem: "x", entries: &[LegendEntry::new(1, "a_name_longer_than_18", "", "")] };
        const DUP: Legend =
            Legend { subsystem: "x", entries: &[LegendEntry::new(1, "a", "", ""), LegendEntry::new(1, "b", "", "")] };
        const SPACE: Legend = Legend { subsystem: "x", entries: &[LegendEntry::new(1, "a", "lb a", "")] };
        assert_eq!(LONG.check(), Err(LegendProblem::BadName(0)));
        assert_eq!(DUP.check(), Err(LegendProblem::DuplicateCode(1)));
        assert_eq!(SPACE.check(), Err(LegendProblem::BadName(0)));
        assert_eq!(LEGEND.check(), Ok(()));
        let mut area = ring();
        Writer::with_legend(&mut area[..], &DUP);
        assert_eq!(legend(&area).unwrap_err(), LegendError::Missing);
    }

    #[test]
    fn full_legend_round_trips() {
        const fn entries() -> [LegendEntry; LEGEND_ENTRIES] {
            let mut e = [LegendEntry::new(0, "n", "", ""); LEGEND_ENTRIES];
            let mut i = 0;
            while i < LEGEND_ENTRIES {
                e[i] = LegendEntry::new(i as u16, "eighteen_bytes_nam", "fourteen_bytes", "fourteen_bytes");
                i += 1;
            }
            e
        }
        const E: [LegendEntry; LEGEND_ENTRIES] = entries();
        const FULL: Legend = Legend { subsystem: "sixteen_bytes_ss", entries: &E };
        assert_eq!(FULL.check(), Ok(()));
        let mut area = ring();
        let mut w = Writer::with_legend(&mut area[..], &FULL);
        w.record(0, Event::Driver { code: LEGEND_ENTRIES as u16 - 1, a: 1, b: 2 });
        assert_eq!(
            described(&area),
            ["#0 +0.000000s sixteen_bytes_ss: eighteen_bytes_nam fourteen_bytes=0x1 fourteen_bytes=0x2"]
        );
    }
}
