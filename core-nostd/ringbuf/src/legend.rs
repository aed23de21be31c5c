//! Names for the device-specific [`Event::Driver`] codes of one driver.
//!
//! A device core declares its legend as a `const` next to its `Trace` enum;
//! the runtime writes it once into the shared trace area
//! ([`crate::shared::Writer::with_legend`]), so that the supervisor and
//! `drvctl trace`, which know nothing about the driver, can print
//! `storage: applied lba=0x1d00 blocks=0x40` instead of
//! `driver event 0x5103 a=0x1d00 b=0x40`.
//!
//! A core writes its table once, with [`trace_legend!`](crate::trace_legend):
//! the macro makes both the code constants that `Trace::event` must use and
//! the legend, so a code cannot be emitted under one number and named under
//! another. (Rejected: hand-kept legends next to hand-written codes, the way
//! five cores drifted apart; a proc-macro deriving both from the `Trace` enum,
//! a build-time dependency for every no_std core.)

use crate::Event;
use core::fmt;

/// Longest subsystem name (`"storage"`), in bytes.
pub const SUBSYSTEM_MAX: usize = 16;
/// Longest event name, in bytes.
pub const NAME_MAX: usize = 18;
/// Longest argument name, in bytes.
pub const ARG_MAX: usize = 14;
/// Most entries a legend holds.
pub const LEGEND_ENTRIES: usize = 42;

/// Declares a core's trace codes and its [`Legend`] from one table.
///
/// ```
/// reinc_ringbuf::trace_legend! {
///     /// The codes of the storage trace.
///     pub mod code, pub const LEGEND = "storage" {
///         APPLIED = 0x5103 => "applied"("lba", "blocks"),
///         READ = 0x5105 => "read"("lba", "blocks"),
///     }
/// }
/// let event = reinc_ringbuf::Event::Driver { code: code::APPLIED, a: 8, b: 1 };
/// assert_eq!(LEGEND.get(code::READ).map(|e| e.name), Some("read"));
/// # let _ = event;
/// ```
///
/// It expands to `mod code { pub const APPLIED: u16 = 0x5103; … }`, the
/// `const LEGEND: Legend` naming each of them, and a compile-time
/// [`Legend::check`] (duplicate codes, over-long names, too many entries are
/// build errors).
#[macro_export]
macro_rules! trace_legend {
    (
        $(#[$mod_meta:meta])*
        $mod_vis:vis mod $codes:ident, $legend_vis:vis const $legend:ident = $subsystem:literal {
            $( $name:ident = $code:literal => $label:literal ($a:literal, $b:literal) ),+ $(,)?
        }
    ) => {
        $(#[$mod_meta])*
        $mod_vis mod $codes {
            $(
                #[doc = concat!("`", $label, "` (a = `", $a, "`, b = `", $b, "`).")]
                pub const $name: u16 = $code;
            )+
        }
        #[doc = concat!("Names of the `", $subsystem, "` trace codes (the constants of `", stringify!($codes), "`), for the shared trace ring.")]
        $legend_vis const $legend: $crate::Legend = $crate::Legend {
            subsystem: $subsystem,
            entries: &[ $( $crate::LegendEntry::new($codes::$name, $label, $a, $b) ),+ ],
        };
        const _: () = assert!($legend.check().is_ok(), "trace legend fails Legend::check");
    };
}

/// The name of one event code and of its two arguments (`""`: unnamed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegendEntry {
    /// The [`Event::Driver`] code.
    pub code: u16,
    /// Short name, e.g. `"applied"`.
    pub name: &'static str,
    /// Name of `a`, e.g. `"lba"`; `""` when `a` carries nothing worth a name.
    pub a: &'static str,
    /// Name of `b`.
    pub b: &'static str,
}

impl LegendEntry {
    /// An entry (for `const` tables).
    #[must_use]
    pub const fn new(code: u16, name: &'static str, a: &'static str, b: &'static str) -> Self {
        Self { code, name, a, b }
    }
}

/// A driver's legend: its subsystem name and one entry per event code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Legend {
    /// Printed before each event name, e.g. `"storage"`.
    pub subsystem: &'static str,
    /// The codes and their names.
    pub entries: &'static [LegendEntry],
}

/// Why a [`Legend`] cannot be written into the shared area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegendProblem {
    /// More than [`LEGEND_ENTRIES`] entries.
    TooManyEntries,
    /// A name is empty (event or subsystem) or too long, or has a byte that
    /// is not printable ASCII without spaces. Holds the entry's index
    /// (`usize::MAX`: the subsystem).
    BadName(usize),
    /// Two entries share this code.
    DuplicateCode(u16),
}

const fn name_ok(s: &str, max: usize, may_be_empty: bool) -> bool {
    let b = s.as_bytes();
    if b.len() > max || (b.is_empty() && !may_be_empty) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_graphic() {
            return false;
        }
        i += 1;
    }
    true
}

impl Legend {
    /// No names: every driver event prints in hex.
    pub const EMPTY: Legend = Legend { subsystem: "", entries: &[] };

    /// Checks that the legend fits the shared format; `const`, so a core can
    /// assert it at compile time (`const _: () = assert!(LEGEND.check().is_ok());`).
    ///
    /// # Errors
    /// The first [`LegendProblem`] found.
    pub const fn check(&self) -> Result<(), LegendProblem> {
        if self.entries.len() > LEGEND_ENTRIES {
            return Err(LegendProblem::TooManyEntries);
        }
        if !self.entries.is_empty() && !name_ok(self.subsystem, SUBSYSTEM_MAX, false) {
            return Err(LegendProblem::BadName(usize::MAX));
        }
        let mut i = 0;
        while i < self.entries.len() {
            let e = &self.entries[i];
            if !name_ok(e.name, NAME_MAX, false) || !name_ok(e.a, ARG_MAX, true) || !name_ok(e.b, ARG_MAX, true) {
                return Err(LegendProblem::BadName(i));
            }
            let mut j = i + 1;
            while j < self.entries.len() {
                if self.entries[j].code == e.code {
                    return Err(LegendProblem::DuplicateCode(e.code));
                }
                j += 1;
            }
            i += 1;
        }
        Ok(())
    }

    /// The entry of `code`, if any.
    #[must_use]
    pub fn get(&self, code: u16) -> Option<&LegendEntry> {
        self.entries.iter().find(|e| e.code == code)
    }
}

/// Writes `subsystem: name a_name=0x.. b_name=0x..`; an unnamed argument is
/// printed as `a=0x..` only when it is not zero.
pub(crate) fn fmt_named(
    f: &mut fmt::Formatter<'_>,
    subsystem: &str,
    [name, a_name, b_name]: [&str; 3],
    a: u64,
    b: u64,
) -> fmt::Result {
    write!(f, "{subsystem}: {name}")?;
    for (label, fallback, v) in [(a_name, "a", a), (b_name, "b", b)] {
        if !label.is_empty() {
            write!(f, " {label}={v:#x}")?;
        } else if v != 0 {
            write!(f, " {fallback}={v:#x}")?;
        }
    }
    Ok(())
}

/// An [`Event`] printed with a legend's names (hex when the code is unknown).
#[derive(Debug, Clone, Copy)]
pub struct NamedEvent<'a> {
    pub(crate) event: &'a Event,
    pub(crate) legend: &'a Legend,
}

impl Legend {
    /// `event`, printed with this legend's names.
    #[must_use]
    pub fn name<'a>(&'a self, event: &'a Event) -> NamedEvent<'a> {
        NamedEvent { event, legend: self }
    }
}

impl fmt::Display for NamedEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.event {
            Event::Driver { code, a, b } => match self.legend.get(*code) {
                Some(e) => fmt_named(f, self.legend.subsystem, [e.name, e.a, e.b], *a, *b),
                None => self.event.fmt(f),
            },
            other => other.fmt(f),
        }
    }
}
