//! The BCM2837's fixed addresses (ARM physical view, identity-mapped by
//! `arch::enable_mmu` as device memory) and the few registers the kernel
//! owns itself: the PL011 console, the interrupt controller and the
//! watchdog. The GPIO block and the system timer are reached only through
//! gpio_core's and timer_core's own register modules.
//!
//! Addresses: BCM2835 ARM Peripherals (bus 0x7Exx_xxxx = ARM 0x3Fxx_xxxx on
//! the BCM2836/7): interrupt controller §7.5 (base 0x7E00_B000, registers
//! from +0x200), system timer §12, GPIO §6, PL011 UART §13, and the power
//! manager's watchdog (PM_RSTC +0x1c, PM_WDOG +0x24, as Linux's
//! `bcm2835_wdt` uses them). In GPU bank 1, bits 0..3 are the system
//! timer's compare channels (TIMER0..3 in the kernel's `brcm,bcm2835-armctrl-ic`
//! binding). On the BCM2836/7 that controller sits behind the per-core
//! local controller at 0x4000_0000, whose GPU routing register (+0x0c)
//! resets to core 0: the core this image runs on, so nothing is set there.

use core::ptr::NonNull;

use gpio_core::Bcm2835Gpio;
use timer_core::Bcm2835Timer;

/// GPIO block.
pub const GPIO: usize = 0x3f20_0000;
/// System timer.
pub const SYSTIMER: usize = 0x3f00_3000;
/// PL011 UART0 (QEMU's `-serial` / `-nographic` console).
const UART0: usize = 0x3f20_1000;
/// Interrupt controller, at its IRQ registers.
const IC: usize = 0x3f00_b200;
/// Power manager (watchdog).
const PM: usize = 0x3f10_0000;

/// GPU interrupt bank 1 bit of system timer compare channel 1 (the kernel's).
pub const IRQ_TIMER1: u32 = 1 << 1;
/// GPU interrupt bank 1 bit of system timer compare channel 3 (the timer task's).
pub const IRQ_TIMER3: u32 = 1 << 3;

fn write32(addr: usize, value: u32) {
    // SAFETY: every caller passes one of the register addresses above,
    // which `arch::enable_mmu` maps as device memory; a 32-bit aligned
    // volatile store is how these registers are written.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}

fn read32(addr: usize) -> u32 {
    // SAFETY: as `write32`; none of these registers has a read side effect.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

/// The GPIO block through gpio_core's register module.
#[must_use]
pub fn gpio() -> Bcm2835Gpio<'static> {
    let base = NonNull::new(GPIO as *mut u8).expect("non-null address");
    // SAFETY: GPIO is the BCM2837 GPIO block, identity-mapped as device
    // memory for the whole run and never treated as plain memory; views may
    // coexist (gpio_core's contract), each access is one volatile load or
    // store.
    unsafe { Bcm2835Gpio::from_raw(base, 0x1000) }.expect("the GPIO block is page-aligned and a page long")
}

/// The system timer through timer_core's register module.
#[must_use]
pub fn systimer() -> Bcm2835Timer<'static> {
    let base = NonNull::new(SYSTIMER as *mut u8).expect("non-null address");
    // SAFETY: as `gpio`, for the system timer block.
    unsafe { Bcm2835Timer::from_raw(base, 0x1000) }.expect("the timer block is page-aligned and a page long")
}

/// Writes `s` to the PL011, waiting while its FIFO is full.
pub fn console_write(s: &[u8]) {
    for &b in s {
        if b == b'\n' {
            put(b'\r');
        }
        put(b);
    }
}

fn put(b: u8) {
    const FR_TXFF: u32 = 1 << 5;
    while read32(UART0 + 0x18) & FR_TXFF != 0 {}
    write32(UART0, u32::from(b));
}

/// Enables GPU bank-1 interrupts (`Enable IRQs 1`; writing 0 bits changes nothing).
pub fn irq_enable(mask: u32) {
    write32(IC + 0x10, mask);
}

/// Disables GPU bank-1 interrupts (`Disable IRQs 1`).
pub fn irq_disable(mask: u32) {
    write32(IC + 0x1c, mask);
}

/// Pending GPU bank-1 interrupts (`IRQ pending 1`).
#[must_use]
pub fn irq_pending() -> u32 {
    read32(IC + 0x04)
}

/// Resets the board through the watchdog (QEMU's `-no-reboot` then exits).
pub fn reset() -> ! {
    const PASSWORD: u32 = 0x5a00_0000;
    const RSTC_FULL_RESET: u32 = 0x20;
    write32(PM + 0x24, PASSWORD | 10);
    let rstc = read32(PM + 0x1c);
    write32(PM + 0x1c, PASSWORD | (rstc & !0x30) | RSTC_FULL_RESET);
    loop {
        crate::arch::wait_for_interrupt();
    }
}
