//! What every UIO driver binary does before its device logic: read
//! `--device SELECTOR [--sysfs DIR] [--dev DIR]` among its own flags, find
//! the device, map its register block and say so in one log line.
//!
//! `edu_driver`, `gpio_driver` and `timer_driver` had each grown a copy of
//! this, and the supervisor's configs, the QEMU suites and the process tests
//! depend on its exact flags, error texts and the
//! `[driver] mapped 0x… size=0x… (name: device, file)` line, so it lives once
//! here. Each driver keeps its own flags (through a callback), its own error
//! type and its own usage text.
//!
//! Designs rejected: a derive-based parser (clap): a large dependency for
//! four flags, and its error texts would differ from the ones the tests and
//! the supervisor's `drvctl status` show; a builder that owns the whole
//! command line: the drivers' own flags carry their own range checks, which
//! belong with the driver.

use crate::map::{Block, Mapping, RegisterBlock};
use crate::sysfs::{Selector, Sysfs, UioDevice};
use crate::{Result, UioError};
use std::path::PathBuf;

/// Where the driver's device is: `--device SELECTOR [--sysfs DIR] [--dev DIR]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceArgs {
    /// The parsed selector.
    pub device: Selector,
    /// The selector as written, for messages before the device is found.
    pub device_text: String,
    /// The sysfs root (`/sys` unless `--sysfs`; a fixture tree in tests).
    pub sysfs: PathBuf,
    /// Where the device nodes are (`/dev` unless `--dev`).
    pub dev: PathBuf,
}

/// Takes the value of the flag being parsed; `what` says what it should be
/// (`"milliseconds"`), for the error when it is missing.
pub type Value<'a> = dyn FnMut(&str) -> std::result::Result<String, String> + 'a;

/// Parses a UIO driver's command line: the device flags here, every other
/// flag through `own`, which returns `Ok(false)` for a flag it does not know.
/// `usage` ends every error about the command line; `example` is a selector
/// shown when `--device` has no value.
///
/// # Errors
/// A message naming the flag: a missing value (`--sysfs needs a directory;
/// usage…`), a bad selector (`--device: …`), an unknown flag, a missing
/// `--device`, or whatever `own` said.
pub fn parse_device_args(
    args: impl IntoIterator<Item = String>,
    usage: &str,
    example: &str,
    mut own: impl FnMut(&str, &mut Value<'_>) -> std::result::Result<bool, String>,
) -> std::result::Result<DeviceArgs, String> {
    let (mut device, mut sysfs, mut dev) = (None, None, None);
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |what: &str| it.next().ok_or(format!("{arg} needs {what}; {usage}"));
        match arg.as_str() {
            "--device" => {
                let text = value(&format!("a selector such as {example}"))?;
                let sel = text.parse::<Selector>().map_err(|e| format!("--device: {e}"))?;
                device = Some((sel, text));
            }
            "--sysfs" => sysfs = Some(PathBuf::from(value("a directory")?)),
            "--dev" => dev = Some(PathBuf::from(value("a directory")?)),
            other => {
                if !own(other, &mut value)? {
                    return Err(format!("unknown argument {other:?}; {usage}"));
                }
            }
        }
    }
    let (device, device_text) = device.ok_or(format!("--device is required; {usage}"))?;
    Ok(DeviceArgs {
        device,
        device_text,
        sysfs: sysfs.unwrap_or_else(|| "/sys".into()),
        dev: dev.unwrap_or_else(|| "/dev".into()),
    })
}

impl DeviceArgs {
    /// Finds the selected device under `--sysfs`/`--dev`.
    ///
    /// # Errors
    /// What discovery said (no such device, a malformed sysfs entry).
    pub fn find(&self) -> Result<UioDevice> {
        Sysfs::new(&self.sysfs, &self.dev).find(&self.device)
    }
}

/// A driver's register block, mapped, with what its start-up line reports.
#[derive(Debug)]
pub struct MappedBlock<T> {
    /// The register block.
    pub block: Block<T>,
    phys: u64,
    len: usize,
    file: String,
}

impl<T: RegisterBlock> MappedBlock<T> {
    /// UIO map `index` of `device`, with the block at the map's page offset
    /// (sysfs `offset`: a register block need not start on a page).
    ///
    /// # Errors
    /// No such map, the open or mmap error, an offset that does not fit
    /// `usize`, or a map too small for `T`.
    pub fn uio_map(device: &UioDevice, index: u32) -> Result<Self> {
        let offset = device.map(index)?.offset;
        let mapping = Mapping::uio_map(device, index)?;
        let offset = usize::try_from(offset).map_err(|_| UioError::BadMapRange {
            what: mapping.describe().to_owned(),
            offset,
            len: mapping.len() as u64,
            why: "offset too large",
        })?;
        Self::at(mapping, offset)
    }

    /// PCI BAR `bar` of `device`, with the block at its start.
    ///
    /// # Errors
    /// Not a PCI device or no such memory BAR, the open or mmap error, or a
    /// BAR too small for `T`.
    pub fn pci_bar(device: &UioDevice, bar: u8) -> Result<Self> {
        Self::at(Mapping::pci_bar(device, bar)?, 0)
    }

    fn at(mapping: Mapping, offset: usize) -> Result<Self> {
        let (phys, len, file) = (mapping.phys_addr().unwrap_or(0), mapping.len(), mapping.describe().to_owned());
        Ok(Self { block: mapping.into_block::<T>(offset)?, phys, len, file })
    }

    /// `mapped 0x3f200000 size=0x1000 (gpio: uio0 (reinc-gpio), /dev/uio0 map 0)`:
    /// the physical address sysfs reports, the mapping's size, the driver's
    /// configured name, the device and the file mapped. Drivers log it after
    /// `[driver] `; the QEMU suites look for it.
    #[must_use]
    pub fn mapped_line(&self, driver: &str, device: &str) -> String {
        format!("mapped {:#x} size={:#x} ({driver}: {device}, {})", self.phys, self.len, self.file)
    }
}
