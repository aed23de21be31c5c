//! The raspi3b image: boot, kernel, tasks. The design, how the cores are
//! wired here and on Linux, and the rejected alternatives are in the
//! library's crate doc (`src/lib.rs`); the host-testable supervision logic
//! is `src/jefe.rs`.
//!
//! `unsafe` lives in `arch` (CPU: boot, vectors, MMU, `svc`) and `board`
//! (fixed register addresses); the kernel and the tasks are safe code.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod arch;
#[allow(unsafe_code)]
mod board;
mod kernel;
mod sys;
mod tasks;

use reinc_firmware_rpi3::text;

/// A task's panic becomes a fault of that task (the kernel restarts it); a
/// panic of the kernel itself stops the board.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let msg = match info.location() {
        Some(l) => text::line(format_args!("{} at {}:{}", info.message(), l.file(), l.line())),
        None => text::line(format_args!("{}", info.message())),
    };
    if arch::in_task() { sys::panicked(&msg) } else { kernel::kernel_panic(&msg) }
}
