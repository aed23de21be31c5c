//! `gpio_driver`: the Raspberry Pi's BCM2835 GPIO block over Linux UIO, run
//! by the shared driver loop under the reinc supervisor.
//!
//! # Why this binary exists
//! It is the driver whose state a user can *see*: pin directions and output
//! levels. Killed at any point, its successor re-applies the committed pin
//! state from the supervisor's checkpoint before it answers a single request,
//! so an LED keeps the level (and, driven by a client, the rhythm) it had:
//!
//! ```text
//! [SUP] gpio_driver crashed (SIGSEGV)
//! [SUP] restarting gpio_driver
//! [driver] mapped 0x3f200000 size=0x1000 (gpio_driver: uio0 (reinc-gpio), /dev/uio0 map 0)
//! [driver] gpio_driver gen2: restored pins from the checkpoint: 17=out/high 27=out/low
//! ```
//!
//! All register logic is `gpio_core` (`#![no_std]`: requests, committed
//! state, restore), the protocol is `reinc-runtime`, the kernel interface is
//! `reinc-uio`; this crate wires them ([`driver`]) and parses arguments.
//!
//! ```text
//! gpio_driver --device SELECTOR --pins N[,N...] [--sysfs DIR] [--dev DIR]
//! ```
//! `SELECTOR` is a reinc-uio selector, normally `name:reinc-gpio` (the
//! `linux,uio-name` of the device-tree node in `dts/`). `--pins` is the
//! allowed list: the only pins this instance may change (reads are allowed
//! on every pin). On a real Pi the kernel's pin controller shares the block,
//! so list only the header pins you wire, never the UART (14, 15) or SD card
//! (48..53) pins. The supervisor appends `--device` from the config's
//! `device` key.
//!
//! # Designs rejected
//! - Restoring from what the registers show at start ("read back the pins"):
//!   after a crash the block may have been changed by someone else; only the
//!   committed state says what the clients were told.
//! - Allowing every pin by default: one typo in a client would reconfigure
//!   the kernel's UART or SD pins. An explicit list is required.
//! - `/dev/gpiomem` instead of UIO: Raspberry Pi OS only, and no interrupt
//!   path; the UIO node is the same mechanism the timer driver needs anyway.
//! - The character-device GPIO API (libgpiod): the kernel would own the pin
//!   state and lose it with the process's line handles, which defeats the
//!   point of restoring from a checkpoint, and it does not exist on the
//!   bare-metal side that shares gpio_core.
#![forbid(unsafe_code)]

mod driver;

use driver::{Device, GpioDriver, GpioDriverError, Source, pin_list};
use gpio_core::{Pin, PinSet, RegisterBlock};
use reinc_uio::{Block, DeviceArgs, MappedBlock, parse_device_args};
use std::process::ExitCode;
use tracing::info;

/// Command-line arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Args {
    uio: DeviceArgs,
    pins: PinSet,
}

const USAGE: &str = "usage: gpio_driver --device SELECTOR --pins N[,N...] [--sysfs DIR] [--dev DIR]";

/// Parses `17,27,22` into a pin set: every entry a BCM2835 pin, no
/// duplicates, not empty.
fn parse_pins(text: &str) -> Result<PinSet, String> {
    let mut set = PinSet::EMPTY;
    for part in text.split(',').map(str::trim) {
        let n: u8 = part.parse().map_err(|_| format!("--pins: `{part}` is not a pin number; {USAGE}"))?;
        let pin = Pin::new(n).map_err(|e| format!("--pins: {e}"))?;
        if set.contains(pin) {
            return Err(format!("--pins: pin {n} is listed twice"));
        }
        set = set.with(pin, true);
    }
    Ok(set)
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut pins = None;
    let uio = parse_device_args(args, USAGE, "name:reinc-gpio", |flag, value| {
        match flag {
            "--pins" => pins = Some(parse_pins(&value("a comma-separated pin list such as 17,27")?)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let pins = pins.ok_or(format!("--pins is required (the pins this driver may change); {USAGE}"))?;
    Ok(Args { uio, pins })
}

/// The GPIO block through Linux UIO: map 0 of the selected device.
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

    fn open(&mut self) -> Result<Device<Block<RegisterBlock>>, GpioDriverError> {
        let device =
            self.args.uio.find().map_err(|source| GpioDriverError::Discover { selector: self.selector(), source })?;
        let what = device.describe();
        let map0 = MappedBlock::<RegisterBlock>::uio_map(&device, 0)
            .map_err(|source| GpioDriverError::Map { device: what.clone(), source })?;
        info!("[driver] {}", map0.mapped_line(&self.name, &what));
        Ok(Device { what, regs: map0.block })
    }
}

fn main() -> ExitCode {
    reinc_runtime::run_driver(|name| {
        let args = parse_args(std::env::args().skip(1)).map_err(|e| format!("gpio_driver: {e}"))?;
        let pins = args.pins;
        info!("[driver] {name}: may change GPIO pins {}", pin_list(pins));
        Ok(GpioDriver::new(UioSource { args, name: name.to_owned() }, pins))
    })
}

#[cfg(test)]
mod tests;
