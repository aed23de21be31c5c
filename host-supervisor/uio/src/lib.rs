//! Linux UIO layer: sysfs discovery, bounds-checked mappings, interrupts.
//!
//! # Why this crate exists
//! Every reinc driver owns its device through Linux UIO: registers are
//! `mmap`'d from `/dev/uioN` (or a PCI BAR's sysfs `resourceN`), interrupts
//! arrive as a 4-byte event count read from `/dev/uioN`. This crate is the one
//! place that talks to those kernel interfaces, and the only host crate with
//! `unsafe` (in [`map`] and [`shm`], every block with a `// SAFETY:` comment). Everything
//! above it, the runtime and the device cores, uses its safe API.
//!
//! # Pieces
//! - [`sysfs`]: enumerate `<root>/class/uio/uioN` (root is a parameter, so
//!   tests build fixture trees), read name, version, event count, maps and the
//!   PCI identity; pick a device by [`Selector`] (UIO name, PCI vendor:device
//!   plus index in PCI-address order, or `uioN`).
//! - [`map`]: [`Mapping`] over a UIO map, a PCI BAR or any file, with
//!   bounds- and alignment-checked volatile 8/16/32-bit access returning
//!   `Result`, and [`Mapping::block`] handing out a typed register block
//!   (`&T` where `T:` [`RegisterBlock`]) only when it fits; [`Mapping::into_block`]
//!   gives an owning [`Block`] for driver structs that cannot hold a borrow.
//! - [`irq`]: [`Irq`] waits in `poll()` with a timeout, reports missed
//!   interrupts from the count, and re-enables in the flavour the device
//!   needs (genirq `write(1)` or `uio_pci_generic`'s INTx-disable bit).
//! - [`shm`]: [`SharedPool`], the sealed memfd a client and a driver both
//!   map for bulk data (the supervisor only routes its descriptor); reached
//!   only through system calls on raw pointers, never by loads and stores.
//! - [`cli`]: what every driver binary does first: the `--device SELECTOR
//!   [--sysfs DIR] [--dev DIR]` flags ([`parse_device_args`]), finding the
//!   device, and mapping its register block with the `mapped 0x… size=0x…`
//!   start-up line ([`MappedBlock`]).
//!
//! # Typical use (edu over `uio_pci_generic`)
//! ```no_run
//! # fn main() -> Result<(), reinc_uio::UioError> {
//! use reinc_uio::{Irq, Mapping, Selector, Sysfs};
//! let dev = Sysfs::system().find(&"pci:1234:11e8@0".parse()?)?;
//! let bar0 = Mapping::pci_bar(&dev, 0)?;
//! let mut irq = Irq::open(&dev)?;
//! irq.reenable()?; // a predecessor may have left INTx masked
//! bar0.write32(0x60, 0x1)?; // raise a software interrupt
//! let woke = irq.wait(Some(std::time::Duration::from_secs(1)))?;
//! bar0.write32(0x64, 0x1)?; // acknowledge at the device, then unmask
//! irq.reenable()?;
//! # let _ = woke; Ok(()) }
//! ```
//!
//! # Designs rejected
//! - `&[u8]` / `&mut [u8]` over device memory (memmap2's `MmapMut`): lets the
//!   compiler merge, widen or elide accesses. We use `MmapRaw` and volatile
//!   raw-pointer accesses only.
//! - Asserting offsets (ixy.rs style `assert!(offset < len)`): a request with a
//!   bad offset would crash the driver. Out of range is an `Err` here.
//! - Letting the caller choose the re-enable method: it depends on the kernel
//!   driver bound to the device, which sysfs tells us; a wrong guess either
//!   fails with ENOSYS or silently never unmasks.
//! - Busy-waiting on the sysfs `event` file: wastes a core on 2-core machines
//!   and adds latency; `poll()` on the device node is the kernel's interface.
//! - A handwritten `mmap`/`munmap` pair: memmap2 already turns `MAP_FAILED`
//!   into an error and unmaps on drop; tying borrows to [`Mapping`] does the rest.
#![deny(unsafe_code)]

pub mod cli;
pub mod error;
pub mod irq;
#[allow(unsafe_code)]
pub mod map;
#[allow(unsafe_code)]
pub mod shm;
pub mod sysfs;

pub use cli::{DeviceArgs, MappedBlock, parse_device_args};
pub use error::{Result, UioError};
pub use irq::{Irq, IrqWait, Reenable, missed_between};
pub use map::{Block, Mapping, RegisterBlock};
pub use shm::{PoolError, SharedPool, WriteOnlyArea, sealed_memfd};
pub use sysfs::{PciAddress, PciBar, PciIdentity, Selector, Sysfs, UioDevice, UioMap, select};

#[cfg(test)]
#[allow(unsafe_code)] // implements RegisterBlock for a test block and writes through it
mod tests;
