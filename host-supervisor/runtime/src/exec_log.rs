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
use std::io::{BufRead, BufReader, Write};
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

fn logged(path: &Path, id: RequestId) -> std::io::Result<bool> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let (client, seq) = (id.client.0.to_string(), id.seq.to_string());
    for line in BufReader::new(f).lines() {
        let line = line?;
        let mut fields = line.split_ascii_whitespace().skip(1);
        if fields.next() == Some(&client) && fields.next() == Some(&seq) {
            return Ok(true);
        }
    }
    Ok(false)
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
    fn unwritable_log_reports_its_path() {
        let log = ExecLog::new(PathBuf::from("/nonexistent-dir/exec.log"));
        let err = log.applied(Generation(1), id(1)).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/exec.log"), "{err}");
    }
}
