//! The control socket (`drvctl`) and systemd: answering control requests
//! (the trace rings and the daemon's own metrics are answered here, the
//! rest by the core), and `READY=1` / `STATUS=` / the watchdog.
//!
//! Control responses are sent directly, not queued: drvctl waits for each
//! answer, and a trace ring exceeds the data path's frame limit.

use super::Daemon;
use super::io::hung_up;
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv, send};
use reinc_client::control::{ControlRequest, ControlResponse};
use reinc_proto::MAX_FRAME;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Instant;
use tracing::debug;

impl Daemon {
    pub(super) fn on_control_readable(&mut self, id: u64) {
        loop {
            let Some(peer) = self.controls.get(&id) else { return };
            let n = match recv(peer.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC) {
                Ok(n) if n > 0 || !hung_up(&peer.fd) => n,
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                _ => {
                    // EOF or error: drvctl is done.
                    let peer = self.controls.remove(&id).expect("present");
                    self.reg.unwatch(&peer);
                    return;
                }
            };
            let resp = if n > MAX_FRAME {
                ControlResponse::Error(format!("control request of {n} bytes is too large"))
            } else {
                match reinc_proto::decode::<ControlRequest>(&self.buf[..n]) {
                    Ok(req) => self.control(&req),
                    Err(e) => ControlResponse::Error(format!("bad control request: {e}")),
                }
            };
            let frame = match reinc_proto::encode_vec(&resp) {
                Ok(f) => f,
                Err(_) => match reinc_proto::encode_vec(&ControlResponse::Error("response too large".into())) {
                    Ok(f) => f,
                    Err(_) => return,
                },
            };
            // Control responses may exceed MAX_FRAME (a trace ring); the
            // socket carries up to the kernel's limit, so send directly.
            let Some(peer) = self.controls.get(&id) else { return };
            if let Err(e) = send(peer.fd.as_raw_fd(), &frame, MsgFlags::MSG_NOSIGNAL) {
                debug!("control reply: {e}");
            }
        }
    }

    pub(super) fn control(&mut self, req: &ControlRequest) -> ControlResponse {
        let now = self.now();
        if let ControlRequest::Trace { driver } = req {
            let Some(id) = self.core.driver_id(driver) else {
                return ControlResponse::Error(format!(
                    "no driver named {} is configured",
                    crate::limits::quoted(driver)
                ));
            };
            if let Some(ring) = self.last_trace.get(&id) {
                return ControlResponse::Trace(ring.clone());
            }
            if let Some(t) = self.live.get(&id).and_then(|l| l.trace.as_ref()) {
                let mut ring = vec![0u8; reinc_ringbuf::shared::RING_BYTES];
                if t.read_exact_at(&mut ring, 0).is_ok() {
                    return ControlResponse::Trace(ring);
                }
            }
            return ControlResponse::Error(format!("{driver} has no trace yet"));
        }
        let (mut resp, acts) = self.core.control(now, req);
        self.execute(acts);
        if let ControlResponse::Metrics(text) = &mut resp {
            text.push_str(&self.daemon_metrics());
        }
        resp
    }

    /// The families only the daemon can fill.
    pub(super) fn daemon_metrics(&self) -> String {
        use crate::metrics::Text;
        let s = &self.stats;
        let mut t = Text::default();
        t.family("reinc_journal_sync_seconds", "histogram", "Time to make one journal batch durable (fdatasync).");
        t.histogram("reinc_journal_sync_seconds", &[], &s.journal_sync);
        t.family("reinc_journal_batches_total", "counter", "Journal batches written (one fdatasync each).");
        t.sample("reinc_journal_batches_total", &[], s.journal_batches);
        t.family("reinc_journal_batch_records_total", "counter", "Records written in journal batches.");
        t.sample("reinc_journal_batch_records_total", &[], s.journal_batch_records);
        t.family("reinc_journal_bytes_total", "counter", "Bytes written to the journal.");
        t.sample("reinc_journal_bytes_total", &[], s.journal_bytes);
        t.family(
            "reinc_supervisor_recovery_seconds",
            "gauge",
            "Time spent reading and restoring the journal at start.",
        );
        t.sample("reinc_supervisor_recovery_seconds", &[], s.recovery.as_secs_f64());
        t.family(
            "reinc_supervisor_ready_seconds",
            "gauge",
            "Time from start until every driver had settled (READY=1).",
        );
        t.sample("reinc_supervisor_ready_seconds", &[], s.ready_after.map_or(f64::NAN, |d| d.as_secs_f64()));
        t.family("reinc_supervisor_uptime_seconds", "gauge", "Time since this supervisor started.");
        t.sample("reinc_supervisor_uptime_seconds", &[], self.started.elapsed().as_secs_f64());
        t.finish()
    }

    /// `READY=1` once every driver has settled, `STATUS=` when the picture
    /// changes, and the watchdog ping; all from the event loop.
    pub(super) fn tell_systemd(&mut self) {
        if self.stats.ready_after.is_none() {
            let rows = self.core.status(self.now());
            if rows.iter().all(|r| matches!(r.state.name(), "running" | "quarantined" | "stopped")) {
                self.stats.ready_after = Some(self.started.elapsed());
            }
        }
        if !self.notify.active() {
            return;
        }
        self.notify.ping_if_due(Instant::now());
        let rows = self.core.status(self.now());
        let running = rows.iter().filter(|r| r.state.name() == "running").count();
        let quarantined = rows.iter().filter(|r| r.state.name() == "quarantined").count();
        let status = format!("{running} of {} drivers running, {quarantined} quarantined", rows.len());
        let settled = rows.iter().all(|r| matches!(r.state.name(), "running" | "quarantined" | "stopped"));
        if settled && !self.ready_sent {
            self.ready_sent = true;
            self.notify.send(&format!("READY=1\nSTATUS={status}\nMAINPID={}", std::process::id()));
            self.last_status = status;
        } else if self.ready_sent && status != self.last_status {
            self.notify.send(&format!("STATUS={status}"));
            self.last_status = status;
        }
    }
}
