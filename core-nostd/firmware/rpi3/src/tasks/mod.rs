//! The tasks, one file each, as a Linux driver has its `driver.rs`:
//! - `gpio.rs` and `timer.rs`, the two drivers, the firmware twins of
//!   `host-supervisor/gpio_driver/src/driver.rs` and
//!   `host-supervisor/timer_driver/src/driver.rs`: the same core calls with
//!   the same postcard bodies, on `sys` instead of `reinc-runtime`;
//! - `blink.rs`, the client: `host-supervisor/gpio_driver/src/bin/blink.rs`'s
//!   loop, grown into the guest suite's scenario (faults, a storm, a revive);
//! - the idle task and the fault injection the drivers share, here.

use reinc_firmware_rpi3::jefe::FaultKind;
use reinc_firmware_rpi3::text;
use reinc_proto::{CrashKind, CrashPoint};
use serde::Serialize;

use crate::{arch, sys};

fn log(args: core::fmt::Arguments<'_>) {
    sys::log(&text::line(args));
}

macro_rules! log {
    ($($t:tt)*) => { log(format_args!($($t)*)) };
}

// After the macro, so that the task files can use `log!`.
mod blink;
mod gpio;
mod timer;

pub use blink::blink_main;
pub use gpio::gpio_main;
pub use timer::timer_main;

/// Dies the way the armed plan says, at `point` of request `what`.
fn crash(kind: FaultKind, point: CrashPoint, what: &dyn core::fmt::Display) -> ! {
    static WORD: u64 = 0;
    match kind {
        FaultKind::Plan(CrashKind::Segv) => {
            let v = arch::load_unmapped();
            panic!("a load from {:#x} returned {v:#x} instead of faulting", arch::UNMAPPED)
        }
        FaultKind::Plan(CrashKind::Abrt) => {
            let v = arch::load_misaligned(&WORD);
            panic!("a misaligned exclusive load returned {v:#x} instead of faulting")
        }
        FaultKind::Plan(CrashKind::Hang) => loop {
            // Spins without a syscall: only the kernel's hang detection,
            // on its compare-1 interrupt, gets this task off the CPU.
            core::hint::spin_loop();
        },
        FaultKind::StackOverflow => {
            let depth = deeper(0);
            panic!("recursed {depth} frames without reaching the stack's guard page")
        }
        FaultKind::Plan(k) => panic!("injected fault: {} at {} of {what}", k.name(), point.name()),
    }
}

/// Recursion that uses 256 bytes of stack per frame and cannot be turned
/// into a loop (each frame reads its buffer after the call returns).
fn deeper(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 32]);
    if depth > 1_000_000 {
        return depth;
    }
    deeper(depth + 1) + core::hint::black_box(frame)[31]
}

fn encode<'a, T: Serialize>(value: &T, buf: &'a mut [u8]) -> &'a [u8] {
    let cap = buf.len();
    match postcard::to_slice(value, buf) {
        Ok(b) => b,
        Err(e) => panic!("encoding into {cap} bytes: {e}"),
    }
}

/// Runs when nothing else can.
pub fn idle_main() -> ! {
    loop {
        arch::wait_for_interrupt();
    }
}
