//! Client connections: decoding their frames into core events (after the
//! driver's allow-list, [`super::authz`]), sending the core's answers, and
//! their flow control ([`crate::outbound`]): a client whose unsent replies
//! are over the per-connection or total out-byte budget is not read until
//! it has caught up, and only one that takes none of its replies for
//! `out-stall-timeout-ms` (or leaves [`super::io::MAX_OUT_FRAMES`] frames
//! unread) is disconnected.
//!
//! Applying the allow-list in the core was rejected: credentials are a
//! property of the socket, which the core never sees.

use super::io::{SendError, flush, hung_up, queue_or_send};
use super::{Daemon, authz};
use crate::core::{ConnId, Event};
use crate::outbound::Change;
use nix::errno::Errno;
use std::time::Instant;

use reinc_proto::{ClientToSup, MAX_FRAME, SupToClient, WireError};
use std::os::fd::AsFd;
use tracing::{debug, warn};

impl Daemon {
    pub(super) fn on_client_readable(&mut self, conn: ConnId) {
        loop {
            let Some(peer) = self.clients.get(&conn) else { return };
            if !peer.flow.reads() {
                // Over its budget: its requests wait in the kernel. Only a
                // hang-up is taken note of.
                if hung_up(&peer.fd) {
                    self.drop_client(conn);
                }
                return;
            }
            // A frame may carry one descriptor (AttachPool); with any other
            // frame it is dropped (closed) at the end of this turn.
            let (n, fd) = match super::pools::recv_with_fd(peer.fd.as_fd(), &mut self.buf) {
                Ok((0, _)) if hung_up(&peer.fd) => {
                    self.drop_client(conn);
                    return;
                }
                // An empty frame (not EOF): decoded below, it is Truncated.
                Ok(got) => got,
                Err(Errno::EAGAIN) => return,
                // Reported once ahead of frames still queued (see drain_driver).
                Err(Errno::EINTR | Errno::ECONNRESET) => continue,
                Err(e) => {
                    warn!("recv from client {}: {e}", conn.0);
                    self.drop_client(conn);
                    return;
                }
            };
            let now = self.now();
            let buf = std::mem::take(&mut self.buf);
            let decoded = if n > MAX_FRAME {
                Err(WireError::Oversized { len: u32::try_from(n).unwrap_or(u32::MAX) })
            } else {
                reinc_proto::decode::<ClientToSup<'_>>(&buf[..n])
            };
            let acts = match decoded {
                Ok(ClientToSup::Hello { resume }) => self.core.handle(now, Event::Hello { conn, resume }),
                Ok(ClientToSup::Call { seq, driver, .. }) if !self.may_call(conn, driver) => {
                    self.deny(conn, seq, driver);
                    Vec::new()
                }
                Ok(ClientToSup::Call { seq, driver, body, acked_below }) => {
                    self.core.handle(now, Event::Call { conn, seq, driver, body, acked_below })
                }
                Ok(ClientToSup::AttachPool { driver }) => {
                    self.attach_pool(conn, driver, fd);
                    Vec::new()
                }
                Ok(ClientToSup::Bye) => self.core.handle(now, Event::Bye { conn }),
                Err(error) => {
                    debug!("client {} sent a bad frame: {error}", conn.0);
                    self.send_client(conn, &SupToClient::Rejected { error });
                    Vec::new()
                }
            };
            self.buf = buf;
            self.execute(acts);
        }
    }

    /// The allow-list of `driver` ([`authz::may_call`]); an unknown driver
    /// is the core's to answer.
    pub(super) fn may_call(&self, conn: ConnId, driver: &str) -> bool {
        let Some(id) = self.core.driver_id(driver) else { return true };
        authz::may_call(self.peers.get(&conn).copied().flatten(), &self.core.config(id).privileges)
    }

    /// Answers a call refused by the allow-list: definite, never queued.
    pub(super) fn deny(&mut self, conn: ConnId, seq: u64, driver: &str) {
        self.denied += 1;
        if self.denied == 1 || self.denied.is_multiple_of(1024) {
            let peer = self.peers.get(&conn).copied().flatten();
            warn!(
                "[SUP] client {} (uid {}, gid {}) may not call {driver}: not in its allow-uids/allow-gids; {} refused so far",
                conn.0,
                peer.map_or(u32::MAX, |p| p.uid),
                peer.map_or(u32::MAX, |p| p.gid),
                self.denied
            );
        }
        self.send_client(conn, &SupToClient::Failed { seq, error: reinc_proto::CallError::NotAllowed });
    }

    pub(super) fn drop_client(&mut self, conn: ConnId) {
        self.peers.remove(&conn);
        if let Some(peer) = self.clients.remove(&conn) {
            self.out_total -= peer.queued;
            self.reg.unwatch(&peer);
        }
        let now = self.now();
        let acts = self.core.handle(now, Event::ClientGone { conn });
        self.execute(acts);
    }

    pub(super) fn send_client(&mut self, conn: ConnId, msg: &SupToClient<'_>) {
        let Ok(frame) = reinc_proto::encode_vec(msg) else { return };
        let Some(peer) = self.clients.get_mut(&conn) else { return };
        let before = peer.queued;
        let sent = queue_or_send(peer, frame);
        self.out_total = self.out_total + peer.queued - before;
        match sent {
            Ok(n) => self.after_out(conn, n > 0),
            Err(SendError::Gone) => self.drop_client(conn),
            Err(SendError::Overflow) => self.drop_slow_client(conn, "does not read its replies"),
        }
    }

    /// After frames were queued for `conn` or sent from its queue: its flow
    /// (read or not), its `EPOLLIN`/`EPOLLOUT` interest, and, when the total
    /// crosses its budget, every other client's flow.
    fn after_out(&mut self, conn: ConnId, progressed: bool) {
        let limits = self.cfg.supervisor.limits;
        let now = Instant::now();
        let total = self.out_total;
        if let Some(peer) = self.clients.get_mut(&conn) {
            peer.flow.update(&limits, peer.queued, total, progressed, now);
            self.reg.update_out(peer);
        }
        let over = total > limits.out_bytes_total;
        let under = total <= limits.out_bytes_total / 2;
        if (over && !self.out_total_over) || (under && self.out_total_over) {
            self.out_total_over = over;
            for peer in self.clients.values_mut() {
                if peer.flow.update(&limits, peer.queued, total, false, now) != Change::None {
                    self.reg.update_out(peer);
                }
            }
        }
    }

    /// Disconnects every client that has held unsent replies without taking
    /// any for `out-stall-timeout-ms`; returns the earliest such deadline
    /// still ahead (for the event loop's timeout).
    pub(super) fn check_stalls(&mut self) -> Option<Instant> {
        let limits = self.cfg.supervisor.limits;
        let now = Instant::now();
        let stalled: Vec<ConnId> =
            self.clients.iter().filter(|(_, p)| p.flow.stalled(&limits, now)).map(|(c, _)| *c).collect();
        for conn in stalled {
            self.drop_slow_client(conn, "does not read its replies");
        }
        self.clients.values().filter_map(|p| p.flow.stall_deadline(&limits)).min()
    }

    /// Disconnects a client that does not read (it may resume and get its
    /// replies from the dedup table); one summary line per 64.
    pub(super) fn drop_slow_client(&mut self, conn: ConnId, why: &str) {
        let queued = self.clients.get(&conn).map_or(0, |p| p.queued);
        self.slow_dropped += 1;
        if self.slow_dropped == 1 || self.slow_dropped.is_multiple_of(64) {
            warn!(
                "[SUP] client {} {why} ({queued} bytes queued); disconnecting it (it may resume); {} so far",
                conn.0, self.slow_dropped
            );
        }
        self.drop_client(conn);
    }

    pub(super) fn flush_client(&mut self, conn: ConnId) {
        let Some(peer) = self.clients.get_mut(&conn) else { return };
        let before = peer.queued;
        let flushed = flush(peer);
        self.out_total = self.out_total + peer.queued - before;
        match flushed {
            Ok(n) => self.after_out(conn, n > 0),
            Err(()) => self.drop_client(conn),
        }
    }
}
