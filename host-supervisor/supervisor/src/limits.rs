//! Limits on what a peer can make the supervisor spend, and the helpers that
//! keep a peer's input from inflating the supervisor's own output.
//!
//! Every figure a peer controls (a name, a frame, a session, a connection)
//! has a bound here or in [`crate::config`], with a defined answer when it is
//! reached, so that no input grows memory, CPU or log volume without limit.

/// The byte and count budgets of `[supervisor]` (every key optional).
///
/// The defaults keep the supervisor's own memory well under 64 MiB under the
/// attacks of issue 16 (a client that never acknowledges, slow readers, a
/// flood of connections): 16 MiB of cached replies and 16 MiB of unsent
/// frames at most, whoever the peers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `session-idle-timeout-ms`: a session without a connection for this
    /// long is forgotten (its cached replies freed; resuming it then gets
    /// `NoSession`).
    pub session_idle_ms: u64,
    /// `dedup-bytes-per-session`: cached reply bytes per session. Beyond it
    /// the oldest are forgotten and their seqs expire (a retry of one is
    /// answered `Expired`, never executed again), as with `dedup-per-session`.
    pub dedup_bytes_per_session: usize,
    /// `dedup-bytes-total`: cached reply bytes over all sessions; beyond it
    /// the session holding the most gives up its oldest.
    pub dedup_bytes_total: usize,
    /// `max-connections`: client plus control connections open at once;
    /// one more is accepted and closed at once.
    pub max_connections: usize,
    /// `out-bytes-per-connection`: bytes queued for a client beyond which
    /// the supervisor stops reading its requests until it has read half of
    /// them (backpressure, see [`crate::outbound`]). Replies to requests
    /// already accepted are still queued: the client is entitled to them.
    pub out_bytes_per_connection: usize,
    /// `out-bytes-total`: queued bytes over all connections beyond which
    /// no client with unsent replies has its requests read.
    pub out_bytes_total: usize,
    /// `out-stall-timeout-ms`: a client with unsent replies that takes none
    /// of them for this long is disconnected (it may resume and get its
    /// replies from the dedup table).
    pub out_stall_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            session_idle_ms: 600_000,
            dedup_bytes_per_session: 1 << 20,
            dedup_bytes_total: 16 << 20,
            max_connections: 512,
            out_bytes_per_connection: 2 << 20,
            out_bytes_total: 16 << 20,
            out_stall_ms: 5_000,
        }
    }
}

/// The longest piece of a peer-supplied name quoted back in a message.
pub const MAX_QUOTED_NAME: usize = 64;

/// `name` quoted for a message: in full up to [`MAX_QUOTED_NAME`] bytes,
/// otherwise its start and its length. A 69 KB driver name must get "no
/// driver named …", not a response too large to send.
#[must_use]
pub fn quoted(name: &str) -> String {
    if name.len() <= MAX_QUOTED_NAME {
        return format!("{name:?}");
    }
    let mut end = MAX_QUOTED_NAME;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &name[..end], name.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_name_is_quoted_by_its_start_and_length() {
        assert_eq!(quoted("storage_driver"), "\"storage_driver\"");
        let long = "x".repeat(69_000);
        let q = quoted(&long);
        assert!(q.len() < 100, "{q}");
        assert!(q.ends_with("… (69000 bytes)"), "{q}");
        // Never cut inside a character.
        let wide = "é".repeat(100);
        assert!(quoted(&wide).starts_with("\"éé"));
    }
}
