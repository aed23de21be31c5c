//! The exec log (`REINC_EXEC_LOG`, tests only): one line
//! `<generation> <client> <seq>` per request whose device effect was applied.
//!
//! Lines are appended with `O_APPEND`, one `write` each, so they survive the
//! process dying right after. The line is written right after the device
//! watermark advanced; a kill between those two steps would lose it, and the
//! replay that follows sees the watermark and skips the effect. To keep the
//! log equal to the device's count in that case, a skipped (already applied)
//! effect appends its line only when the log has none for that request id:
//! the log then says "applied once", stamped with the generation that noticed.

use reinc_proto::{Generation, RequestId};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// An exec log could not be written.
#[derive(Debug, thiserror::Error)]
#[error("exec log {}: {source}", path.display())]
pub struct ExecLogError {
    /// The log's path.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

/// Appends execution lines.
#[derive(Debug)]
pub(crate) struct ExecLog {
    path: PathBuf,
}

impl ExecLog {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path }
    }

    fn err(&self, source: std::io::Error) -> ExecLogError {
        ExecLogError { path: self.path.clone(), source }
    }

    /// The effect of `id` was applied by this instance.
    pub(crate) fn applied(&self, generation: Generation, id: RequestId) -> Result<(), ExecLogError> {
        let line = format!("{} {} {}\n", generation.0, id.client.0, id.seq);
        let mut f = OpenOptions::new().create(true).append(true).open(&self.path).map_err(|e| self.err(e))?;
        f.write_all(line.as_bytes()).map_err(|e| self.err(e))
    }

    /// The effect of `id` had been applied by an earlier instance: log it only
    /// if that instance died before logging it.
    pub(crate) fn already_applied(&self, generation: Generation, id: RequestId) -> Result<(), ExecLogError> {
        if !logged(&self.path, id).map_err(|e| self.err(e))? {
            self.applied(generation, id)?;
        }
        Ok(())
    }
}

/// Bytes read per step of the backward scan.
const SCAN_CHUNK: usize = 64 * 1024;

/// How far back the scan looks. Every line written after the one sought
/// belongs to a request behind it in the driver's FIFO (it is unanswered, so
/// nothing behind it has been answered and left the queue): at most the
/// largest queue depth (65 536) of lines of at most 43 bytes, under 3 MiB.
/// This holds while one driver writes one log, as configured by `exec-log`.
const SCAN_LIMIT: u64 = 4 * 1024 * 1024;

/// Whether the log at `path` has a line for `id`.
///
/// The log grows by one line per applied effect and is read by every
/// replayed request whose effect was already applied, inside the driver's
/// single-threaded loop (heartbeats wait meanwhile). A forward scan made that
/// O(log size) per replay: on a long fault campaign (a 17 MB log) each scan
/// outlasted the heartbeat timeout, so the replaying instance was declared
/// hung and killed, and the next one scanned again, in a loop. The line a
/// replay looks for was written by the instance that just died, so it is near
/// the end: scan backwards and stop at the first match. The answer is the
/// same. A line that is really missing (the instance died between its
/// effect and the log write) costs a scan of the last [`SCAN_LIMIT`] bytes,
/// not of the whole log, which also outlasted the heartbeat timeout.
fn logged(path: &Path, id: RequestId) -> std::io::Result<bool> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    Ok(logged_in(&mut f, len, id, SCAN_CHUNK, SCAN_LIMIT)?.0)
}

/// [`logged`] over the last `limit` of `len` bytes of `r`, reading `chunk`
/// bytes at a time from the end; also returns how many bytes it read.
fn logged_in(
    r: &mut (impl Read + Seek),
    len: u64,
    id: RequestId,
    chunk: usize,
    limit: u64,
) -> std::io::Result<(bool, u64)> {
    let (client, seq) = (id.client.0.to_string(), id.seq.to_string());
    let matches = |line: &[u8]| {
        let line = String::from_utf8_lossy(line);
        let mut fields = line.split_ascii_whitespace().skip(1);
        fields.next() == Some(client.as_str()) && fields.next() == Some(seq.as_str())
    };
    // `carry`: the start of a line whose beginning lies in an earlier chunk.
    let (mut end, mut carry, mut read) = (len, Vec::new(), 0u64);
    let floor = len.saturating_sub(limit);
    while end > floor {
        let start = end.saturating_sub(chunk as u64).max(floor);
        let mut buf = vec![0u8; (end - start) as usize];
        r.seek(SeekFrom::Start(start))?;
        r.read_exact(&mut buf)?;
        read += buf.len() as u64;
        buf.extend_from_slice(&carry);
        let whole = if start == 0 || start == floor {
            carry = Vec::new();
            &buf[..]
        } else {
            match buf.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    carry = buf[..i].to_vec();
                    &buf[i + 1..]
                }
                None => {
                    carry = buf;
                    end = start;
                    continue;
                }
            }
        };
        if whole.split(|b| *b == b'\n').rev().any(matches) {
            return Ok((true, read));
        }
        end = start;
    }
    Ok((false, read))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reinc_proto::ClientId;

    fn id(seq: u64) -> RequestId {
        RequestId { client: ClientId(4), seq }
    }

    #[test]
    fn applied_effects_append_one_line_each() {
        let dir = tempfile::tempdir().unwrap();
        let log = ExecLog::new(dir.path().join("exec.log"));
        log.applied(Generation(1), id(1)).unwrap();
        log.applied(Generation(2), id(2)).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("exec.log")).unwrap(), "1 4 1\n2 4 2\n");
    }

    #[test]
    fn already_applied_effect_is_logged_only_if_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exec.log");
        let log = ExecLog::new(path.clone());
        log.applied(Generation(1), id(7)).unwrap();
        log.already_applied(Generation(2), id(7)).unwrap();
        log.already_applied(Generation(2), id(8)).unwrap();
        log.already_applied(Generation(3), id(8)).unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "1 4 7\n2 4 8\n");
    }

    #[test]
    fn backward_scan_finds_every_line_across_chunk_boundaries_and_no_missing_one() {
        let text: String = (0..300u64).map(|s| format!("{} 4 {s}\n", s % 7)).collect();
        for chunk in [1, 5, 7, 64, 100_000] {
            let mut r = std::io::Cursor::new(text.as_bytes());
            for s in 0..300 {
                assert!(
                    logged_in(&mut r, text.len() as u64, id(s), chunk, u64::MAX).unwrap().0,
                    "seq {s}, chunk {chunk}"
                );
            }
            for s in [300, 3000, 30] {
                let other = RequestId { client: ClientId(5), seq: s };
                assert!(!logged_in(&mut r, text.len() as u64, other, chunk, u64::MAX).unwrap().0);
            }
            assert!(!logged_in(&mut r, text.len() as u64, id(301), chunk, u64::MAX).unwrap().0);
        }
    }

    #[test]
    fn finding_a_recent_line_reads_only_the_tail_of_a_long_log() {
        // Regression: a replay in a long campaign scanned a 17 MB log from the
        // start, outlasted the heartbeat timeout and was killed, in a loop.
        let text: String = (0..1_000_000u64).map(|s| format!("3 4 {s}\n")).collect();
        let mut r = std::io::Cursor::new(text.as_bytes());
        let (found, read) = logged_in(&mut r, text.len() as u64, id(999_990), SCAN_CHUNK, SCAN_LIMIT).unwrap();
        assert!(found && read <= SCAN_CHUNK as u64, "read {read} of {} bytes", text.len());
        // A missing line (death between effect and log write) reads the bounded tail only.
        let (found, read) = logged_in(&mut r, text.len() as u64, id(2_000_000), SCAN_CHUNK, SCAN_LIMIT).unwrap();
        assert!(!found && read <= SCAN_LIMIT, "read {read} of {} bytes", text.len());
        // Lines within the limit are found wherever the chunks fall.
        let len = text.len() as u64;
        for s in [999_999, 900_000, 800_001] {
            assert!(logged_in(&mut r, len, id(s), 1000, SCAN_LIMIT).unwrap().0, "seq {s}");
        }
    }

    #[test]
    fn unwritable_log_reports_its_path() {
        let log = ExecLog::new(PathBuf::from("/nonexistent-dir/exec.log"));
        let err = log.applied(Generation(1), id(1)).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/exec.log"), "{err}");
    }
}
