//! Limits on what a peer can make the supervisor spend, and the helpers that
//! keep a peer's input from inflating the supervisor's own output.
//!
//! Every figure a peer controls (a name, a frame, a session, a connection)
//! has a bound here or in [`crate::config`], with a defined answer when it is
//! reached, so that no input grows memory, CPU or log volume without limit.

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
