//! `cargo xtask demo`: the main job (filled in by the replay issue).

use crate::util::{self, Result};

/// Flags: none yet.
pub fn run(_args: &[String]) -> Result {
    Err(util::Error::Other("the demo is not built yet (see the replay issue)".into()))
}
