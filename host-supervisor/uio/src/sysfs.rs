//! Discovery: what `<sysfs>/class/uio/uioN` says about each UIO device.
//!
//! Layout read (Linux `Documentation/driver-api/uio-howto.rst`):
//! ```text
//! class/uio/uioN/name, version, event          driver name, version, interrupt count
//! class/uio/uioN/maps/mapM/{addr,size,offset}  hex, e.g. 0x00000000fea00000
//! class/uio/uioN/maps/mapM/name                optional
//! class/uio/uioN/device -> the parent device   PCI if its `subsystem` links to bus/pci
//! <pci dev>/{vendor,device,subsystem_vendor,subsystem_device}   hex ids
//! <pci dev>/resource                           "start end flags" per BAR
//! <pci dev>/{config,resourceN}, driver ->      config space, BAR files, bound driver
//! ```
//! Every malformed value is a [`UioError`] naming the file; nothing is guessed.

use crate::error::{Result, UioError};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where the kernel's files are: the sysfs root (default `/sys`) and the
/// device-node directory (default `/dev`). Tests point both into a tempdir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysfs {
    root: PathBuf,
    dev: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Self::system()
    }
}

/// A PCI address `domain:bus:device.function`, ordered numerically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    /// Domain (segment).
    pub domain: u32,
    /// Bus.
    pub bus: u8,
    /// Device (slot), 0..32.
    pub device: u8,
    /// Function, 0..8.
    pub function: u8,
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{}", self.domain, self.bus, self.device, self.function)
    }
}

impl FromStr for PciAddress {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (domain, rest) = s.split_once(':').ok_or(())?;
        let (bus, rest) = rest.split_once(':').ok_or(())?;
        let (device, function) = rest.split_once('.').ok_or(())?;
        let hex = |t: &str, max_len| {
            if t.is_empty() || t.len() > max_len || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(());
            }
            u32::from_str_radix(t, 16).map_err(|_| ())
        };
        let (domain, bus, device) = (hex(domain, 8)?, hex(bus, 2)?, hex(device, 2)?);
        if device >= 32 || function.len() != 1 {
            return Err(());
        }
        let function = function.parse::<u8>().map_err(|_| ())?;
        if function >= 8 {
            return Err(());
        }
        Ok(Self { domain, bus: bus as u8, device: device as u8, function })
    }
}

/// One memory BAR as listed in the PCI device's `resource` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciBar {
    /// BAR number, 0..6.
    pub index: u8,
    /// Physical start address.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Resource flags (`IORESOURCE_*`).
    pub flags: u64,
    /// The sysfs file that maps it (`resourceN`).
    pub path: PathBuf,
}

impl PciBar {
    /// `IORESOURCE_MEM`: a memory BAR (the only kind that can be mapped).
    pub const IORESOURCE_MEM: u64 = 0x200;

    /// Whether this BAR is memory (not I/O ports).
    #[must_use]
    pub fn is_memory(&self) -> bool {
        self.flags & Self::IORESOURCE_MEM != 0
    }
}

/// The PCI identity of a UIO device whose parent is a PCI function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciIdentity {
    /// `0000:00:03.0`.
    pub address: PciAddress,
    /// Vendor id (edu: 0x1234).
    pub vendor: u16,
    /// Device id (edu: 0x11e8).
    pub device: u16,
    /// Subsystem vendor id.
    pub subsystem_vendor: u16,
    /// Subsystem device id.
    pub subsystem_device: u16,
    /// The bound kernel driver (`uio_pci_generic`), from the `driver` symlink.
    pub driver: Option<String>,
    /// The PCI device directory (resolved).
    pub dir: PathBuf,
    /// Its config-space file.
    pub config: PathBuf,
    /// The BARs with a non-zero size, in BAR order.
    pub bars: Vec<PciBar>,
}

/// One memory map of a UIO device (`maps/mapM`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UioMap {
    /// M.
    pub index: u32,
    /// The map's name, when the driver gave one.
    pub name: Option<String>,
    /// Physical address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Offset of the device memory within the first mapped page.
    pub offset: u64,
}

/// Everything sysfs says about one UIO device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UioDevice {
    /// N of `uioN`.
    pub number: u32,
    /// The UIO driver's name for it (`uio_pci_generic`, a device-tree node name, ...).
    pub name: String,
    /// The UIO driver's version string.
    pub version: String,
    /// Interrupts so far (the `event` counter at discovery time).
    pub event_count: u32,
    /// Memory maps, in index order.
    pub maps: Vec<UioMap>,
    /// The PCI identity, when the parent is a PCI function.
    pub pci: Option<PciIdentity>,
    /// `<sysfs>/class/uio/uioN`.
    pub sysfs_dir: PathBuf,
    /// `<dev>/uioN`.
    pub dev_node: PathBuf,
}

impl UioDevice {
    /// `uio0 (uio_pci_generic, PCI 0000:00:03.0)`: how the device is named in errors and logs.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.pci {
            Some(p) => format!("uio{} ({}, PCI {})", self.number, self.name, p.address),
            None => format!("uio{} ({})", self.number, self.name),
        }
    }

    /// The map with index `index`.
    ///
    /// # Errors
    /// [`UioError::NoSuchMap`].
    pub fn map(&self, index: u32) -> Result<&UioMap> {
        self.maps.iter().find(|m| m.index == index).ok_or_else(|| UioError::NoSuchMap {
            device: self.describe(),
            index,
            count: self.maps.len(),
        })
    }
}

fn read_trimmed(path: &Path) -> Result<String> {
    let s = fs::read_to_string(path).map_err(|e| UioError::io(path, e))?;
    Ok(s.trim_end_matches(['\n', '\r']).trim().to_owned())
}

fn malformed(path: &Path, what: &'static str, content: &str) -> UioError {
    let content: String = content.chars().take(64).collect();
    UioError::Malformed { path: path.to_owned(), what, content }
}

/// Parses `0x…` (the prefix is required: sysfs always writes it).
fn parse_hex(path: &Path, s: &str) -> Result<u64> {
    s.strip_prefix("0x")
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(|| malformed(path, "hex number (0x...)", s))
}

fn read_hex(path: &Path) -> Result<u64> {
    parse_hex(path, &read_trimmed(path)?)
}

fn read_hex_u16(path: &Path) -> Result<u16> {
    let s = read_trimmed(path)?;
    let v = parse_hex(path, &s)?;
    u16::try_from(v).map_err(|_| malformed(path, "16-bit hex id", &s))
}

/// Entries `prefixN` of `dir`, as (N, path), sorted by N. Other names are ignored.
fn numbered_entries(dir: &Path, prefix: &str) -> Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| UioError::io(dir, e))? {
        let entry = entry.map_err(|e| UioError::io(dir, e))?;
        let name = entry.file_name();
        let Some(n) = name.to_str().and_then(|s| s.strip_prefix(prefix)).and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        out.push((n, entry.path()));
    }
    out.sort_by_key(|(n, _)| *n);
    Ok(out)
}

impl Sysfs {
    /// The running system: `/sys` and `/dev`.
    #[must_use]
    pub fn system() -> Self {
        Self { root: PathBuf::from("/sys"), dev: PathBuf::from("/dev") }
    }

    /// A sysfs tree at `root` with device nodes in `dev` (fixtures, chroots).
    pub fn new(root: impl Into<PathBuf>, dev: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), dev: dev.into() }
    }

    /// The sysfs root.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every UIO device, sorted by N.
    ///
    /// # Errors
    /// [`UioError::NoUioClass`] without `class/uio`; the first malformed entry
    /// otherwise (strict: a half-understood device is not offered).
    pub fn devices(&self) -> Result<Vec<UioDevice>> {
        let class = self.root.join("class/uio");
        if !class.is_dir() {
            return Err(UioError::NoUioClass { path: class });
        }
        let mut devices = Vec::new();
        for (number, dir) in numbered_entries(&class, "uio")? {
            let dev = self.device_at(number, &dir)?;
            tracing::debug!(device = %dev.describe(), maps = dev.maps.len(), "found UIO device");
            devices.push(dev);
        }
        Ok(devices)
    }

    /// Reads one device directory (`class/uio/uioN`).
    fn device_at(&self, number: u32, dir: &Path) -> Result<UioDevice> {
        let name = read_trimmed(&dir.join("name"))?;
        let version = read_trimmed(&dir.join("version"))?;
        let event_path = dir.join("event");
        let event = read_trimmed(&event_path)?;
        let event_count = event.parse::<u32>().map_err(|_| malformed(&event_path, "decimal u32", &event))?;
        let maps = read_maps(&dir.join("maps"))?;
        let pci = read_parent(&dir.join("device"))?;
        Ok(UioDevice {
            number,
            name,
            version,
            event_count,
            maps,
            pci,
            sysfs_dir: dir.to_owned(),
            dev_node: self.dev.join(format!("uio{number}")),
        })
    }

    /// The device selected by `selector`.
    ///
    /// # Errors
    /// Discovery errors, or [`UioError::NotFound`] with the number of devices
    /// that matched the name or PCI id.
    pub fn find(&self, selector: &Selector) -> Result<UioDevice> {
        let devices = self.devices()?;
        select(&devices, selector, &self.root).cloned()
    }
}

fn read_maps(maps_dir: &Path) -> Result<Vec<UioMap>> {
    // A device may have no memory maps at all (no `maps` directory).
    if !maps_dir.exists() {
        return Ok(Vec::new());
    }
    let mut maps = Vec::new();
    for (index, dir) in numbered_entries(maps_dir, "map")? {
        let name_path = dir.join("name");
        let name = match fs::read_to_string(&name_path) {
            Ok(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(UioError::io(name_path, e)),
        };
        let offset_path = dir.join("offset");
        // `offset` appeared in Linux 3.x; older kernels mean 0.
        let offset = if offset_path.exists() { read_hex(&offset_path)? } else { 0 };
        maps.push(UioMap {
            index,
            name,
            addr: read_hex(&dir.join("addr"))?,
            size: read_hex(&dir.join("size"))?,
            offset,
        });
    }
    Ok(maps)
}

/// The PCI identity behind a `device` symlink, `None` if the parent is not PCI.
fn read_parent(link: &Path) -> Result<Option<PciIdentity>> {
    if fs::symlink_metadata(link).is_err() {
        return Ok(None); // no parent link at all: a virtual device
    }
    let dir = fs::canonicalize(link).map_err(|e| UioError::BadSymlink { path: link.to_owned(), source: e })?;
    let subsystem = dir.join("subsystem");
    let is_pci = fs::read_link(&subsystem).ok().and_then(|t| t.file_name().map(|n| n == "pci")).unwrap_or(false);
    if !is_pci {
        return Ok(None);
    }
    let bdf = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    let address = bdf.parse::<PciAddress>().map_err(|()| malformed(link, "PCI address (dddd:bb:dd.f)", &bdf))?;
    let driver_link = dir.join("driver");
    let driver = match fs::read_link(&driver_link) {
        Ok(t) => t.file_name().and_then(|n| n.to_str()).map(str::to_owned),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(UioError::BadSymlink { path: driver_link, source: e }),
    };
    Ok(Some(PciIdentity {
        address,
        vendor: read_hex_u16(&dir.join("vendor"))?,
        device: read_hex_u16(&dir.join("device"))?,
        subsystem_vendor: read_hex_u16(&dir.join("subsystem_vendor"))?,
        subsystem_device: read_hex_u16(&dir.join("subsystem_device"))?,
        driver,
        config: dir.join("config"),
        bars: read_bars(&dir)?,
        dir,
    }))
}

/// Parses `<pci dev>/resource`: one `start end flags` line per resource; the
/// first six are the BARs. Missing file: no BARs known.
fn read_bars(dir: &Path) -> Result<Vec<PciBar>> {
    let path = dir.join("resource");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(UioError::io(path, e)),
    };
    let mut bars = Vec::new();
    for (index, line) in text.lines().take(6).enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [start, end, flags] = fields[..] else {
            return Err(malformed(&path, "resource line (start end flags)", line));
        };
        let (start, end, flags) = (parse_hex(&path, start)?, parse_hex(&path, end)?, parse_hex(&path, flags)?);
        if start == 0 && end == 0 {
            continue;
        }
        if end < start {
            return Err(malformed(&path, "resource line with end >= start", line));
        }
        let index = index as u8;
        bars.push(PciBar { index, start, size: end - start + 1, flags, path: dir.join(format!("resource{index}")) });
    }
    Ok(bars)
}

/// How to pick one UIO device.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Selector {
    /// The `index`-th device (by N) whose UIO name is `name`.
    Name {
        /// The UIO name.
        name: String,
        /// Which of the matches, 0-based.
        index: usize,
    },
    /// The `index`-th device (by PCI address) with this vendor:device id.
    Pci {
        /// Vendor id.
        vendor: u16,
        /// Device id.
        device: u16,
        /// Which of the matches, 0-based.
        index: usize,
    },
    /// `uioN` exactly.
    Number(u32),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name { name, index } => write!(f, "named {name:?} at index {index}"),
            Self::Pci { vendor, device, index } => write!(f, "with PCI id {vendor:04x}:{device:04x} at index {index}"),
            Self::Number(n) => write!(f, "uio{n}"),
        }
    }
}

impl FromStr for Selector {
    type Err = UioError;

    /// `name:NAME[@N]`, `pci:VVVV:DDDD[@N]` (hex ids) or `uioN`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why| UioError::BadSelector { input: s.to_owned(), why };
        let split_index = |t: &str| -> Result<(String, usize)> {
            match t.rsplit_once('@') {
                Some((head, idx)) => {
                    Ok((head.to_owned(), idx.parse().map_err(|_| bad("index after @ is not a number"))?))
                }
                None => Ok((t.to_owned(), 0)),
            }
        };
        if let Some(rest) = s.strip_prefix("name:") {
            // Names may contain '@' (device-tree style `gpio@7e200000`): only a
            // numeric suffix after the last '@' is an index.
            let (name, index) = match rest.rsplit_once('@').map(|(h, i)| (h, i.parse::<usize>())) {
                Some((head, Ok(index))) => (head.to_owned(), index),
                _ => (rest.to_owned(), 0),
            };
            if name.is_empty() {
                return Err(bad("empty name"));
            }
            Ok(Self::Name { name, index })
        } else if let Some(rest) = s.strip_prefix("pci:") {
            let (ids, index) = split_index(rest)?;
            let (v, d) = ids.split_once(':').ok_or_else(|| bad("PCI id must be VVVV:DDDD"))?;
            let hex = |t: &str| {
                if t.is_empty() || t.len() > 4 {
                    return Err(bad("PCI ids are 1 to 4 hex digits"));
                }
                u16::from_str_radix(t, 16).map_err(|_| bad("PCI ids are hex"))
            };
            Ok(Self::Pci { vendor: hex(v)?, device: hex(d)?, index })
        } else if let Some(n) = s.strip_prefix("uio") {
            Ok(Self::Number(n.parse().map_err(|_| bad("uioN needs a number"))?))
        } else {
            Err(bad("unknown selector kind"))
        }
    }
}

/// Picks the device `selector` names among `devices` (as returned by
/// [`Sysfs::devices`]); `root` is only used in the error message.
///
/// # Errors
/// [`UioError::NotFound`], saying how many devices matched before the index.
pub fn select<'a>(devices: &'a [UioDevice], selector: &Selector, root: &Path) -> Result<&'a UioDevice> {
    let (matches, index): (Vec<&UioDevice>, usize) = match selector {
        // By N: the kernel's numbering order.
        Selector::Name { name, index } => (devices.iter().filter(|d| &d.name == name).collect(), *index),
        // By PCI address: stable even if uio numbers change between boots.
        Selector::Pci { vendor, device, index } => {
            let mut m: Vec<(PciAddress, &UioDevice)> = devices
                .iter()
                .filter_map(|d| {
                    d.pci.as_ref().filter(|p| p.vendor == *vendor && p.device == *device).map(|p| (p.address, d))
                })
                .collect();
            m.sort_by_key(|(addr, _)| *addr);
            (m.into_iter().map(|(_, d)| d).collect(), *index)
        }
        Selector::Number(n) => (devices.iter().filter(|d| d.number == *n).collect(), 0),
    };
    let found = matches.len();
    matches.get(index).copied().ok_or_else(|| UioError::NotFound {
        selector: selector.to_string(),
        root: root.to_owned(),
        found,
    })
}
