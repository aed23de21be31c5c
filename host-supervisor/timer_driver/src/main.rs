//! `timer_driver`: the Raspberry Pi's BCM2835 system timer over Linux UIO,
//! run by the shared driver loop under the reinc supervisor.
//!
//! # Why this binary exists
//! Clients need deadlines that are kept by hardware, not by a sleeping
//! process: "arm channel 3 for t", then a `Wait` request that the driver
//! completes when the compare channel's interrupt arrives through
//! `/dev/uioN` (genirq: block in `read()`/`poll()`, clear the match, re-enable
//! with `write(1)`). That is what paces the blink demo without sleeps or busy
//! waiting. All register logic is `timer_core` (`#![no_std]`), the protocol
//! is `reinc-runtime`, the kernel interface is `reinc-uio`; this crate wires
//! them ([`driver`]) and parses arguments.
//!
//! ```text
//! timer_driver --device SELECTOR [--channel 1|3] [--grace-ms N] [--sysfs DIR] [--dev DIR]
//! ```
//! `SELECTOR` is normally `name:reinc-systimer` (see `dts/`). `--channel`
//! names the compare channel whose interrupt the device tree gave the UIO
//! node (3 by default; 1 with the overlay's `timer_irq=1` on 32-bit kernels,
//! whose clock events own channel 3). Requests naming the other ARM channel
//! are refused: the driver never touches a channel it does not own.
//! `--grace-ms` (default 200) is how long after a deadline a missing
//! interrupt is tolerated before the counter completes the `Wait` anyway.
//!
//! # The interrupt cycle
//! `Wait` → core says "not yet" → the runtime polls the UIO fd (still
//! answering heartbeats) → on wake: read the event count, clear the channel's
//! match bit, `write(1)`, run `Wait` again, which completes because the
//! counter has passed the deadline. A new instance always re-enables after
//! restoring: a dead predecessor may have left the interrupt disabled. An
//! interrupt that fires while no `Wait` is parked (the deadline passed
//! before the `Wait` arrived) leaves genirq masked; the next request of any
//! kind consumes that event and unmasks first, so the following deadline
//! interrupts again.
//!
//! # Designs rejected
//! - `timerfd`/`nanosleep` in the driver: the point is the hardware
//!   channel, which also exists for bare-metal firmware sharing timer_core.
//! - Completing `Wait` with an error when the interrupt is late: a lost
//!   interrupt would become a client-visible failure although the deadline
//!   verifiably passed; the counter decides instead, after a grace period.
//! - Serving both ARM channels: the UIO node carries one interrupt, and on
//!   32-bit kernels the other channel is the kernel's clock.
#![forbid(unsafe_code)]

mod driver;

use driver::{Device, Source, TimerDriver, TimerDriverError};
use reinc_uio::{Block, DeviceArgs, Irq, MappedBlock, parse_device_args};
use std::process::ExitCode;
use std::time::Duration;
use timer_core::{Channel, RegisterBlock};
use tracing::info;

/// Command-line arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Args {
    uio: DeviceArgs,
    channel: Channel,
    grace: Duration,
}

const USAGE: &str = "usage: timer_driver --device SELECTOR [--channel 1|3] [--grace-ms N] [--sysfs DIR] [--dev DIR]";

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let (mut channel, mut grace) = (Channel::C3, Duration::from_millis(200));
    let uio = parse_device_args(args, USAGE, "name:reinc-systimer", |flag, value| {
        match flag {
            "--channel" => {
                let v = value("1 or 3")?;
                let n: u8 = v.parse().map_err(|_| format!("--channel {v:?} is not a number; {USAGE}"))?;
                channel = Channel::new(n).map_err(|e| format!("--channel: {e}"))?;
            }
            "--grace-ms" => {
                let v = value("milliseconds")?;
                let ms: u64 = v.parse().map_err(|_| format!("--grace-ms {v:?} is not a number; {USAGE}"))?;
                if !(1..=60_000).contains(&ms) {
                    return Err(format!("--grace-ms {ms} is out of range (1..=60000); {USAGE}"));
                }
                grace = Duration::from_millis(ms);
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(Args { uio, channel, grace })
}

/// The system timer through Linux UIO: map 0 and the device's interrupt.
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

    fn open(&mut self) -> Result<Device<Block<RegisterBlock>>, TimerDriverError> {
        let device =
            self.args.uio.find().map_err(|source| TimerDriverError::Discover { selector: self.selector(), source })?;
        let what = device.describe();
        let map0 = MappedBlock::<RegisterBlock>::uio_map(&device, 0)
            .map_err(|source| TimerDriverError::Map { device: what.clone(), source })?;
        info!("[driver] {}", map0.mapped_line(&self.name, &what));
        let irq = Irq::open(&device).map_err(|source| TimerDriverError::Irq { device: what.clone(), source })?;
        Ok(Device { what, regs: map0.block, irq })
    }
}

fn main() -> ExitCode {
    reinc_runtime::run_driver(|name| {
        let args = parse_args(std::env::args().skip(1)).map_err(|e| format!("timer_driver: {e}"))?;
        let (channel, grace) = (args.channel, args.grace);
        Ok(TimerDriver::new(UioSource { args, name: name.to_owned() }, channel, grace))
    })
}

#[cfg(test)]
mod tests;
