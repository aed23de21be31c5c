//! The one error type of the UIO layer. Every message names the file, device
//! or mapping involved, so a log line alone says what to look at.

use std::io;
use std::path::PathBuf;

/// Anything that can go wrong in discovery, mapping or interrupt handling.
#[derive(Debug, thiserror::Error)]
pub enum UioError {
    /// A sysfs or device file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `<sysfs>/class/uio` does not exist.
    #[error("{path}: no such directory (is the uio module loaded?)")]
    NoUioClass {
        /// The directory looked for.
        path: PathBuf,
    },
    /// A sysfs file holds something that does not parse.
    #[error("{path}: malformed {what}: {content:?}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it should have held ("hex u64", "decimal u32", "PCI address", ...).
        what: &'static str,
        /// What it held (trimmed, shortened).
        content: String,
    },
    /// A symlink that must resolve does not.
    #[error("{path}: broken symlink: {source}")]
    BadSymlink {
        /// The symlink.
        path: PathBuf,
        /// Why it does not resolve.
        #[source]
        source: io::Error,
    },
    /// No device matches a selector (or the index is past the matches).
    #[error("no UIO device {selector} under {root} (found {found})")]
    NotFound {
        /// The selector, as the user wrote it.
        selector: String,
        /// The sysfs root searched.
        root: PathBuf,
        /// How many devices matched the name or id (before the index).
        found: usize,
    },
    /// A device selector string does not parse.
    #[error("invalid UIO device selector {input:?}: {why} (expected name:NAME[@N], pci:VVVV:DDDD[@N] or uioN)")]
    BadSelector {
        /// The input.
        input: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The device has no UIO map with that index.
    #[error("{device}: no UIO map {index} (the device has {count})")]
    NoSuchMap {
        /// The device (`uioN (name)`).
        device: String,
        /// The map asked for.
        index: u32,
        /// How many maps it has.
        count: usize,
    },
    /// A PCI BAR was asked of a device that is not PCI, or that BAR is absent.
    #[error("{device}: no PCI BAR {bar}: {why}")]
    NoSuchBar {
        /// The device.
        device: String,
        /// The BAR asked for.
        bar: u8,
        /// Why.
        why: &'static str,
    },
    /// A mapping of zero bytes, or larger than the file behind it.
    #[error("{what}: cannot map {len:#x} bytes at offset {offset:#x}: {why}")]
    BadMapRange {
        /// What was to be mapped.
        what: String,
        /// Offset in the file.
        offset: u64,
        /// Length asked for.
        len: u64,
        /// Why.
        why: &'static str,
    },
    /// `mmap` failed.
    #[error("{what}: mmap of {len:#x} bytes at offset {offset:#x} failed: {source}")]
    Map {
        /// What was to be mapped.
        what: String,
        /// Offset in the file.
        offset: u64,
        /// Length asked for.
        len: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A register access past the end of a mapping.
    #[error("{mapping}: {width}-byte access at offset {offset:#x} is out of bounds (mapping is {len:#x} bytes)")]
    OutOfBounds {
        /// The mapping.
        mapping: String,
        /// Byte offset.
        offset: usize,
        /// Access width in bytes.
        width: usize,
        /// Mapping length.
        len: usize,
    },
    /// A register access not aligned to its width.
    #[error("{mapping}: {width}-byte access at offset {offset:#x} is misaligned")]
    Misaligned {
        /// The mapping.
        mapping: String,
        /// Byte offset.
        offset: usize,
        /// Access width (and required alignment) in bytes.
        width: usize,
    },
    /// A typed register block does not fit the mapping at that offset.
    #[error(
        "{mapping}: register block {block} needs {need:#x} bytes at offset {offset:#x}, but the mapping is {len:#x} bytes"
    )]
    BlockTooLarge {
        /// The mapping.
        mapping: String,
        /// The block's type name.
        block: &'static str,
        /// Its size.
        need: usize,
        /// Where it was asked for.
        offset: usize,
        /// Mapping length.
        len: usize,
    },
    /// A typed register block would be misaligned at that offset.
    #[error("{mapping}: register block {block} at offset {offset:#x} is not {align}-byte aligned")]
    BlockMisaligned {
        /// The mapping.
        mapping: String,
        /// The block's type name.
        block: &'static str,
        /// Where it was asked for.
        offset: usize,
        /// Its alignment.
        align: usize,
    },
    /// Reading the interrupt event count returned a wrong size or end of file.
    #[error("{path}: read {got} bytes of the 4-byte interrupt event count")]
    ShortEventRead {
        /// The device node.
        path: PathBuf,
        /// Bytes read.
        got: usize,
    },
    /// `poll` reported an error or hang-up on the device node (device removed).
    #[error("{path}: poll reported {revents} (device removed, or it has no interrupt)")]
    PollError {
        /// The device node.
        path: PathBuf,
        /// The reported events.
        revents: String,
    },
    /// The device is `uio_pci_generic` but has no PCI identity to reach its config space.
    #[error("{device}: uio_pci_generic device without a PCI parent; cannot re-enable INTx")]
    NoPciConfig {
        /// The device.
        device: String,
    },
}

impl UioError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = UioError> = std::result::Result<T, E>;
