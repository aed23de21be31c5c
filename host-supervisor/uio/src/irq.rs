//! Interrupts: block on `/dev/uioN` with a timeout, count missed events, and
//! re-enable the way the device's kernel driver requires.
//!
//! The kernel counts interrupts per device; `read()` of `/dev/uioN` returns
//! the 4-byte count once it differs from what this file descriptor last saw,
//! and `poll()` reports the fd readable in that case. So:
//! - [`Irq::wait`] blocks in `poll()` (never spins), then reads the count;
//! - the fd is non-blocking, so [`Irq::consume`] can read after an external
//!   `poll` (the driver runtime polls this fd together with its IPC socket);
//! - a jump of more than one in the count means interrupts were coalesced or
//!   missed: [`missed_between`].
//!
//! Re-enabling is chosen from the device ([`Reenable::for_device`]), never by
//! the caller:
//! - genirq-style drivers (`uio_pdrv_genirq`, ...) implement `irqcontrol`:
//!   write the u32 `1` to `/dev/uioN`;
//! - `uio_pci_generic` has no `irqcontrol` (`write` fails with ENOSYS). Its
//!   handler masks INTx by setting bit 10 (INTx Disable) of the PCI command
//!   register; re-enable clears that bit by read-modify-write of the 16-bit
//!   command register at offset 4 of sysfs `config`. Acknowledge the device
//!   first, or the still-asserted line fires again at once.

use crate::error::{Result, UioError};
use crate::sysfs::UioDevice;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// PCI command register offset in config space.
pub const PCI_COMMAND: u64 = 4;
/// INTx Disable bit of the PCI command register.
pub const PCI_COMMAND_INTX_DISABLE: u16 = 1 << 10;

/// How interrupts are re-enabled after one fired.
#[derive(Debug)]
pub enum Reenable {
    /// Write the u32 `1` to the device node (`irqcontrol`, genirq style).
    IrqControl,
    /// Clear INTx Disable in the PCI command register through this config file.
    PciIntx {
        /// The open sysfs `config` file.
        config: File,
        /// Its path, for errors.
        path: PathBuf,
    },
}

impl Reenable {
    /// The flavour `device` needs: `PciIntx` when it is bound to
    /// `uio_pci_generic` (by its PCI `driver` link or its UIO name),
    /// `IrqControl` otherwise. Opens the config file now, so a permission
    /// problem shows at start, not at the first interrupt.
    ///
    /// # Errors
    /// [`UioError::NoPciConfig`] for a `uio_pci_generic` name without a PCI
    /// parent; the open error naming `config`.
    pub fn for_device(device: &UioDevice) -> Result<Self> {
        let pci_generic = device.name == "uio_pci_generic"
            || device.pci.as_ref().and_then(|p| p.driver.as_deref()) == Some("uio_pci_generic");
        if !pci_generic {
            return Ok(Self::IrqControl);
        }
        let pci = device.pci.as_ref().ok_or_else(|| UioError::NoPciConfig { device: device.describe() })?;
        Self::pci_config(&pci.config)
    }

    /// `PciIntx` over the config-space file at `path`.
    ///
    /// # Errors
    /// The open error naming `path`.
    pub fn pci_config(path: &Path) -> Result<Self> {
        let config = OpenOptions::new().read(true).write(true).open(path).map_err(|e| UioError::io(path, e))?;
        Ok(Self::PciIntx { config, path: path.to_owned() })
    }

    /// `irqcontrol` or `pci-intx`, for logs.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::IrqControl => "irqcontrol",
            Self::PciIntx { .. } => "pci-intx",
        }
    }
}

/// What a wait saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IrqWait {
    /// The event count moved.
    Fired {
        /// The kernel's event count now.
        count: u32,
        /// Interrupts between the previous observation and this one that were
        /// not seen individually (`count - last - 1`, never negative).
        missed: u32,
    },
    /// The timeout passed with no interrupt.
    TimedOut,
}

/// Interrupts that happened but were not observed one by one, between an
/// observed count `last` and the new count `count`. The counter is a wrapping
/// u32; a count equal to `last` (no progress) gives 0.
#[must_use]
pub const fn missed_between(last: u32, count: u32) -> u32 {
    count.wrapping_sub(last).saturating_sub(1)
}

/// The interrupt side of one UIO device.
#[derive(Debug)]
pub struct Irq {
    file: File,
    path: PathBuf,
    last: u32,
    reenable: Reenable,
}

impl AsFd for Irq {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Irq {
    /// Opens `/dev/uioN` of `device` (non-blocking, close-on-exec), with the
    /// re-enable flavour the device needs. The starting count is the sysfs
    /// `event` counter read just before opening, so an interrupt that lands in
    /// between is reported by the first wait rather than lost.
    ///
    /// # Errors
    /// Errors reading `event` or opening the node or the PCI config file.
    pub fn open(device: &UioDevice) -> Result<Self> {
        let event_path = device.sysfs_dir.join("event");
        let text = fs::read_to_string(&event_path).map_err(|e| UioError::io(&event_path, e))?;
        let last = text.trim().parse::<u32>().map_err(|_| UioError::Malformed {
            path: event_path.clone(),
            what: "decimal u32",
            content: text.trim().chars().take(64).collect(),
        })?;
        let reenable = Reenable::for_device(device)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&device.dev_node)
            .map_err(|e| UioError::io(&device.dev_node, e))?;
        tracing::debug!(device = %device.describe(), reenable = reenable.name(), last, "interrupts opened");
        Ok(Self { file, path: device.dev_node.clone(), last, reenable })
    }

    /// An `Irq` over any file descriptor that behaves like a UIO node (reads
    /// give 4-byte counts; for `IrqControl`, writes take a u32). For tests
    /// (a socketpair) and unusual setups. The fd must be non-blocking for
    /// [`Irq::consume`] to return `None` instead of blocking.
    pub fn from_fd(fd: OwnedFd, path: impl Into<PathBuf>, last: u32, reenable: Reenable) -> Self {
        Self { file: File::from(fd), path: path.into(), last, reenable }
    }

    /// The event count last observed.
    #[must_use]
    pub fn last_count(&self) -> u32 {
        self.last
    }

    /// The re-enable flavour in use.
    #[must_use]
    pub fn reenable_flavour(&self) -> &Reenable {
        &self.reenable
    }

    /// The device node.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Blocks until an interrupt or until `timeout` passes (`None`: forever).
    /// Never busy-waits; `EINTR` restarts the wait with the remaining time.
    ///
    /// # Errors
    /// Poll/read errors naming the device node; [`UioError::PollError`] when the
    /// device reports an error or hang-up (removed).
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<IrqWait> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let remaining = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    // Round up so a sub-millisecond remainder still sleeps.
                    let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, remaining) {
                Ok(0) => return Ok(IrqWait::TimedOut),
                Ok(_) => {
                    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                    if !revents.contains(PollFlags::POLLIN) {
                        return Err(UioError::PollError { path: self.path.clone(), revents: format!("{revents:?}") });
                    }
                    if let Some(w) = self.consume()? {
                        return Ok(w);
                    }
                    // Readable but nothing to read (raced with another reader): wait again.
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(UioError::io(&self.path, io::Error::from(e))),
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(IrqWait::TimedOut);
            }
        }
    }

    /// Reads the event count without blocking, after a `poll` said the fd is
    /// readable. `None` if no new interrupt is there.
    ///
    /// # Errors
    /// [`UioError::ShortEventRead`] for a read that is not 4 bytes (or end of
    /// file); other read errors naming the device node.
    pub fn consume(&mut self) -> Result<Option<IrqWait>> {
        let mut buf = [0u8; 4];
        loop {
            return match (&self.file).read(&mut buf) {
                Ok(4) => {
                    let count = u32::from_ne_bytes(buf);
                    let missed = missed_between(self.last, count);
                    if missed > 0 {
                        tracing::debug!(path = %self.path.display(), last = self.last, count, missed, "missed interrupts");
                    }
                    self.last = count;
                    Ok(Some(IrqWait::Fired { count, missed }))
                }
                Ok(got) => Err(UioError::ShortEventRead { path: self.path.clone(), got }),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(UioError::io(&self.path, e)),
            };
        }
    }

    /// Re-enables the interrupt after it fired (and after the device was
    /// acknowledged), in the device's flavour. Also the way to unmask after a
    /// restart, when a dead predecessor left INTx disabled.
    ///
    /// # Errors
    /// The write / config-space error naming the file.
    pub fn reenable(&self) -> Result<()> {
        match &self.reenable {
            Reenable::IrqControl => {
                let n = (&self.file).write(&1u32.to_ne_bytes()).map_err(|e| UioError::io(&self.path, e))?;
                if n != 4 {
                    return Err(UioError::io(
                        &self.path,
                        io::Error::other(format!("irqcontrol write took {n} of 4 bytes")),
                    ));
                }
            }
            Reenable::PciIntx { config, path } => {
                let mut cmd = [0u8; 2];
                config.read_exact_at(&mut cmd, PCI_COMMAND).map_err(|e| UioError::io(path, e))?;
                let old = u16::from_le_bytes(cmd);
                let new = old & !PCI_COMMAND_INTX_DISABLE;
                if new != old {
                    config.write_all_at(&new.to_le_bytes(), PCI_COMMAND).map_err(|e| UioError::io(path, e))?;
                }
                tracing::trace!(path = %path.display(), old = format_args!("{old:#06x}"), new = format_args!("{new:#06x}"), "INTx re-enabled");
            }
        }
        Ok(())
    }
}
