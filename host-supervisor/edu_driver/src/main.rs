//! `edu_driver`: QEMU's edu PCI device over Linux UIO, run by the shared
//! driver loop under the reinc supervisor.
//!
//! # Why this binary exists
//! It is the driver that owns *real* hardware: registers mapped from the PCI
//! BAR, factorials completed by the device's interrupt through `/dev/uioN`.
//! Killed at any point, its successor must find the device in whatever state
//! the predecessor left it (an interrupt pending and unacknowledged, INTx
//! masked by the kernel, a computation running) and still answer every
//! replayed request exactly once. All register logic is `edu_core`
//! (`#![no_std]`), the protocol is `reinc-runtime`, the kernel interfaces are
//! `reinc-uio`; this crate wires them ([`driver`]) and parses arguments.
//!
//! ```text
//! edu_driver --device SELECTOR [--irq-timeout-ms N] [--sysfs DIR] [--dev DIR]
//! ```
//! `SELECTOR` is a reinc-uio selector: `pci:1234:11e8@0` (the first edu by PCI
//! address), `uio3`, `name:NAME[@N]`. `--sysfs`/`--dev` move discovery to a
//! fixture tree (tests). The supervisor appends `--device` from the config's
//! `device` key.
//!
//! # Per instance
//! - `Init`: find the device, map BAR0 through sysfs `resource0` (UIO map 0 of
//!   `uio_pci_generic` is not necessarily BAR 0), log
//!   `[driver] mapped 0xfea00000 size=0x100000 (…)` with the physical address
//!   sysfs reports, recover the device, unmask INTx, answer `Ready`.
//! - Each request: `EduHandler::start`; an interrupt-completed factorial parks
//!   the loop on the `/dev/uioN` fd (pings are still answered); on wake-up the
//!   event count is consumed, the core acknowledges the device, and INTx is
//!   unmasked again through PCI config space.
//! - A missing device or a refused mapping is `Fatal` naming the device; the
//!   instance exits 1 and the supervisor's restart policy takes over.
//!
//! # Designs rejected
//! - Polling the status register for completion: burns the CPU the other
//!   drivers and the supervisor share, and proves nothing about interrupts.
//! - Completing a request with an error after an interrupt timeout: the
//!   client would see a transient device hiccup as a failure. The instance
//!   dies instead, and the replay on a recovered device answers the request
//!   (bounded by the supervisor's poison limit).
//! - Mapping the device in `main` before the protocol starts: a mapping
//!   error would then be an exit status without a reason. Opening on `Init`
//!   turns it into `Fatal { reason }`, which the supervisor logs and shows in
//!   `drvctl status`.
#![forbid(unsafe_code)]

mod driver;

use driver::{Device, EduDriver, EduDriverError, Source};
use edu_core::{EduHandler, PollBudget, RegisterBlock};
use reinc_uio::{Block, DeviceArgs, Irq, MappedBlock, parse_device_args};
use std::process::ExitCode;
use std::time::Duration;
use tracing::info;

/// Command-line arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Args {
    uio: DeviceArgs,
    irq_timeout: Duration,
}

const USAGE: &str = "usage: edu_driver --device SELECTOR [--irq-timeout-ms N] [--sysfs DIR] [--dev DIR]";

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut irq_timeout = Duration::from_secs(2);
    let uio = parse_device_args(args, USAGE, "pci:1234:11e8@0", |flag, value| {
        match flag {
            "--irq-timeout-ms" => {
                let v = value("milliseconds")?;
                let ms: u64 = v.parse().map_err(|e| format!("--irq-timeout-ms {v:?}: {e}; {USAGE}"))?;
                if !(1..=600_000).contains(&ms) {
                    return Err(format!("--irq-timeout-ms {ms} is out of range (1..=600000); {USAGE}"));
                }
                irq_timeout = Duration::from_millis(ms);
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(Args { uio, irq_timeout })
}

/// The device through Linux UIO.
#[derive(Debug)]
struct UioSource {
    args: Args,
    name: String,
}

impl Source for UioSource {
    type Regs = Block<RegisterBlock>;

    fn selector(&self) -> String {
        self.args.uio.device_text.clone()
    }

    fn open(&mut self) -> Result<Device<Block<RegisterBlock>>, EduDriverError> {
        let device =
            self.args.uio.find().map_err(|source| EduDriverError::Discover { selector: self.selector(), source })?;
        let what = device.describe();
        let bar0 = MappedBlock::<RegisterBlock>::pci_bar(&device, 0)
            .map_err(|source| EduDriverError::Map { device: what.clone(), source })?;
        info!("[driver] {}", bar0.mapped_line(&self.name, &what));
        let irq = Irq::open(&device).map_err(|source| EduDriverError::Irq { device: what.clone(), source })?;
        Ok(Device { what, handler: EduHandler::new(bar0.block, PollBudget::default()), irq })
    }
}

fn main() -> ExitCode {
    reinc_runtime::run_driver(|name| {
        let args = parse_args(std::env::args().skip(1)).map_err(|e| format!("edu_driver: {e}"))?;
        let irq_timeout = args.irq_timeout;
        Ok(EduDriver::new(UioSource { args, name: name.to_owned() }, irq_timeout))
    })
}

#[cfg(test)]
mod tests;
