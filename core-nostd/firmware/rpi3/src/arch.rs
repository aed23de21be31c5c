//! The CPU layer, and with `board` the only `unsafe` code of the image:
//! boot (park cores 1..3, EL2 → EL1, FP on, `.bss`), the exception vectors
//! with the full-context save and restore, the MMU, system registers, and
//! the `svc` call that tasks use.
//!
//! # The trap frame
//! Every exception from a task is taken on SP_EL1 at the top of the kernel
//! stack (the kernel keeps nothing on its stack between traps), and the
//! vector stores a [`Frame`] there: x0..x30, SP_EL0, ELR_EL1, SPSR_EL1,
//! q0..q31, FPCR and FPSR. The kernel edits the frame (a syscall's results,
//! or another task's saved context) and the same code restores it and
//! `eret`s. Tasks run at EL1t (SPSel = 0, on SP_EL0), the kernel at EL1h,
//! so the vector group tells who trapped: "current EL with SP0" is a task,
//! "current EL with SPx" is the kernel itself (always fatal).

use core::arch::{asm, global_asm};

/// Size of [`Frame`], used by the assembly.
pub const FRAME_SIZE: usize = 800;

/// A task's saved context (layout shared with the assembly below).
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct Frame {
    /// x0..x30.
    pub x: [u64; 31],
    /// The task's stack pointer.
    pub sp_el0: u64,
    /// Where the task resumes.
    pub elr: u64,
    /// The task's PSTATE (EL1t, interrupts on).
    pub spsr: u64,
    /// q0..q31.
    pub q: [u128; 32],
    /// FPCR.
    pub fpcr: u64,
    /// FPSR.
    pub fpsr: u64,
}

const _: () = assert!(size_of::<Frame>() == FRAME_SIZE);
const _: () = assert!(core::mem::offset_of!(Frame, sp_el0) == 248);
const _: () = assert!(core::mem::offset_of!(Frame, elr) == 256);
const _: () = assert!(core::mem::offset_of!(Frame, q) == 272);
const _: () = assert!(core::mem::offset_of!(Frame, fpcr) == 784);

impl core::fmt::Debug for Frame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Frame(elr={:#x} sp={:#x})", self.elr, self.sp_el0)
    }
}

impl Frame {
    /// A fresh context: every register zero, entering `entry` at EL1t with
    /// interrupts enabled, on an empty stack whose top is `stack_top`.
    #[must_use]
    pub const fn fresh(entry: u64, stack_top: u64) -> Frame {
        Frame { x: [0; 31], sp_el0: stack_top, elr: entry, spsr: SPSR_EL1T, q: [0; 32], fpcr: 0, fpsr: 0 }
    }
}

/// PSTATE of a task: EL1 with SP_EL0 (M = 0b0100), D, A, I, F all clear.
pub const SPSR_EL1T: u64 = 0b0100;

/// Trap kinds passed by the vectors.
pub mod kind {
    /// Synchronous exception (svc, abort, …) from a task.
    pub const TASK_SYNC: u64 = 0;
    /// IRQ while a task ran.
    pub const TASK_IRQ: u64 = 1;
    /// FIQ while a task ran (never routed here).
    pub const TASK_FIQ: u64 = 2;
    /// SError from a task.
    pub const TASK_SERROR: u64 = 3;
}

global_asm!(
    r#"
.section .text.boot, "ax"
.global _start
_start:
    mrs     x19, CurrentEL
    mrs     x1, mpidr_el1
    and     x1, x1, #3
    cbz     x1, 2f
1:  wfe                         // cores 1..3: parked for good
    b       1b
2:  lsr     x0, x19, #2
    cmp     x0, #3
    b.ne    8f
    // EL3 (QEMU starts an ELF image here): lower ELs are non-secure and
    // AArch64, FP is not trapped; then the EL2 setup below, and one eret
    // straight to EL1h.
    mov     x0, #0x431          // SCR_EL3: RW, HCE off, SMD off, RES1, NS
    msr     scr_el3, x0
    msr     cptr_el3, xzr
    mov     x0, #(1 << 31)
    msr     hcr_el2, x0
    mov     x0, #0x33ff
    msr     cptr_el2, x0
    mov     x0, #3
    msr     cnthctl_el2, x0
    msr     cntvoff_el2, xzr
    mov     x0, #0x3c5
    msr     spsr_el3, x0
    adr     x0, 3f
    msr     elr_el3, x0
    eret
8:  cmp     x0, #2
    b.ne    3f
    // EL2 (the Pi's firmware and QEMU's Linux boot path start here): EL1
    // is AArch64, no traps of FP or timers, then drop to EL1h with every
    // interrupt masked.
    mov     x0, #(1 << 31)
    msr     hcr_el2, x0
    mov     x0, #0x33ff
    msr     cptr_el2, x0
    mov     x0, #3
    msr     cnthctl_el2, x0
    msr     cntvoff_el2, xzr
    mov     x0, #0x3c5
    msr     spsr_el2, x0
    adr     x0, 3f
    msr     elr_el2, x0
    eret
3:  mov     x0, #(3 << 20)      // CPACR_EL1.FPEN: FP/SIMD at EL1 untrapped
    msr     cpacr_el1, x0
    isb
    ldr     x0, =__kernel_stack_top
    mov     sp, x0
    ldr     x0, =__bss_start
    ldr     x1, =__bss_end
4:  cmp     x0, x1
    b.hs    5f
    str     xzr, [x0], #8
    b       4b
5:  lsr     x0, x19, #2
    bl      reinc_kernel_main
    b       1b

.macro SAVE_FRAME
    sub     sp, sp, #800
    stp     x0, x1, [sp, #0]
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x0, sp_el0
    stp     x30, x0, [sp, #240]
    mrs     x0, elr_el1
    mrs     x1, spsr_el1
    stp     x0, x1, [sp, #256]
    add     x0, sp, #272
    stp     q0, q1, [x0, #0]
    stp     q2, q3, [x0, #32]
    stp     q4, q5, [x0, #64]
    stp     q6, q7, [x0, #96]
    stp     q8, q9, [x0, #128]
    stp     q10, q11, [x0, #160]
    stp     q12, q13, [x0, #192]
    stp     q14, q15, [x0, #224]
    stp     q16, q17, [x0, #256]
    stp     q18, q19, [x0, #288]
    stp     q20, q21, [x0, #320]
    stp     q22, q23, [x0, #352]
    stp     q24, q25, [x0, #384]
    stp     q26, q27, [x0, #416]
    stp     q28, q29, [x0, #448]
    stp     q30, q31, [x0, #480]
    mrs     x1, fpcr
    mrs     x2, fpsr
    add     x0, x0, #512
    stp     x1, x2, [x0]
.endm

.section .text.vectors, "ax"
.balign 2048
.global __vectors
__vectors:
    // Current EL with SP0: traps from tasks.
    .balign 0x80
    b       __task_sync
    .balign 0x80
    b       __task_irq
    .balign 0x80
    b       __task_fiq
    .balign 0x80
    b       __task_serror
    // Current EL with SPx: the kernel itself faulted.
    .balign 0x80
    b       __kernel_trap
    .balign 0x80
    b       __kernel_trap
    .balign 0x80
    b       __kernel_trap
    .balign 0x80
    b       __kernel_trap
    // Lower EL (AArch64, AArch32): nothing runs there.
    .balign 0x80
    b       __kernel_trap
    .balign 0x80
    b       __kernel_trap
    .balign 0x80
    b       __kernel_trap
    .balign 0x80
    b       __kernel_trap
    .balign 0x80
    b       __kernel_trap
    .balign 0x80
    b       __kernel_trap
    .balign 0x80
    b       __kernel_trap
    .balign 0x80
    b       __kernel_trap

__task_sync:
    SAVE_FRAME
    mov     x0, #0
    b       __task_common
__task_irq:
    SAVE_FRAME
    mov     x0, #1
    b       __task_common
__task_fiq:
    SAVE_FRAME
    mov     x0, #2
    b       __task_common
__task_serror:
    SAVE_FRAME
    mov     x0, #3
    b       __task_common
__task_common:
    mov     x1, sp
    bl      reinc_task_trap
    // fall through: resume whatever task the kernel put in the frame

.global __restore_frame
__restore_frame:
    add     x0, sp, #272
    ldp     q0, q1, [x0, #0]
    ldp     q2, q3, [x0, #32]
    ldp     q4, q5, [x0, #64]
    ldp     q6, q7, [x0, #96]
    ldp     q8, q9, [x0, #128]
    ldp     q10, q11, [x0, #160]
    ldp     q12, q13, [x0, #192]
    ldp     q14, q15, [x0, #224]
    ldp     q16, q17, [x0, #256]
    ldp     q18, q19, [x0, #288]
    ldp     q20, q21, [x0, #320]
    ldp     q22, q23, [x0, #352]
    ldp     q24, q25, [x0, #384]
    ldp     q26, q27, [x0, #416]
    ldp     q28, q29, [x0, #448]
    ldp     q30, q31, [x0, #480]
    add     x0, x0, #512
    ldp     x1, x2, [x0]
    msr     fpcr, x1
    msr     fpsr, x2
    ldp     x0, x1, [sp, #256]
    msr     elr_el1, x0
    msr     spsr_el1, x1
    ldp     x30, x0, [sp, #240]
    msr     sp_el0, x0
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #800
    eret

__kernel_trap:
    SAVE_FRAME
    mov     x0, sp
    bl      reinc_kernel_trap
6:  wfe
    b       6b

// x0: a Frame in static memory. Resets SP_EL1 to the top of the kernel
// stack, copies the frame there and resumes it.
.global __enter_first_task
__enter_first_task:
    ldr     x1, =__kernel_stack_top
    mov     sp, x1
    sub     sp, sp, #800
    mov     x2, sp
    mov     x3, #50
7:  ldp     x4, x5, [x0], #16
    stp     x4, x5, [x2], #16
    subs    x3, x3, #1
    b.ne    7b
    b       __restore_frame
"#
);

unsafe extern "C" {
    fn __enter_first_task(frame: *const Frame) -> !;
    static __vectors: u8;
    static __kernel_stack_top: u8;
    static __kernel_stack_guard: u8;
    static __image_start: u8;
    static __image_end: u8;
}

#[unsafe(no_mangle)]
extern "C" fn reinc_kernel_main(boot_el: u64) -> ! {
    crate::kernel::main(boot_el)
}

#[unsafe(no_mangle)]
extern "C" fn reinc_task_trap(kind: u64, frame: &mut Frame) {
    crate::kernel::on_task_trap(kind, frame);
}

#[unsafe(no_mangle)]
extern "C" fn reinc_kernel_trap(frame: &Frame) -> ! {
    crate::kernel::on_kernel_trap(frame, esr(), far())
}

/// Points VBAR_EL1 at the vector table.
pub fn install_vectors() {
    // SAFETY: `__vectors` is the 2 KiB-aligned table above, whose every
    // entry saves a complete frame before calling Rust; writing VBAR_EL1 at
    // EL1 with interrupts masked changes nothing else.
    unsafe { asm!("msr vbar_el1, {0}", "isb", in(reg) &raw const __vectors, options(nostack)) }
}

/// Resumes `frame` as the first task. The kernel stack starts over.
pub fn enter_first_task(frame: Frame) -> ! {
    let p = FIRST_FRAME.with(|f| {
        *f = frame;
        f as *const Frame
    });
    // SAFETY: `p` points into a static (not into the kernel stack that the
    // routine resets), holding a task context from `Frame::fresh` whose
    // entry and stack are the task's own.
    unsafe { __enter_first_task(p) }
}

/// ESR_EL1: why the last synchronous exception happened.
#[must_use]
pub fn esr() -> u64 {
    let v: u64;
    // SAFETY: reading a system register at EL1 has no side effect.
    unsafe { asm!("mrs {0}, esr_el1", out(reg) v, options(nomem, nostack)) }
    v
}

/// FAR_EL1: the faulting address of the last abort.
#[must_use]
pub fn far() -> u64 {
    let v: u64;
    // SAFETY: reading a system register at EL1 has no side effect.
    unsafe { asm!("mrs {0}, far_el1", out(reg) v, options(nomem, nostack)) }
    v
}

/// True when running on SP_EL0, i.e. in a task rather than in the kernel.
#[must_use]
pub fn in_task() -> bool {
    let v: u64;
    // SAFETY: reading SPSel has no side effect.
    unsafe { asm!("mrs {0}, spsel", out(reg) v, options(nomem, nostack)) }
    v & 1 == 0
}

/// Waits for an interrupt (the idle task).
pub fn wait_for_interrupt() {
    // SAFETY: `wfi` only pauses the core until an interrupt is pending.
    unsafe { asm!("wfi", options(nomem, nostack)) }
}

/// The image's first and last address, for the boot line.
#[must_use]
pub fn image_bounds() -> (usize, usize) {
    (&raw const __image_start as usize, &raw const __image_end as usize)
}

/// Top of the kernel stack.
#[must_use]
pub fn kernel_stack_top() -> usize {
    &raw const __kernel_stack_top as usize
}

/// A translation table (4 KiB granule).
#[repr(C, align(4096))]
struct Table([u64; 512]);

/// Level 1 (4 GiB in 1 GiB entries), level 2 (the first GiB in 2 MiB
/// blocks) and level 3 (the first 2 MiB, where the image lives, in 4 KiB
/// pages, so that single pages can stay unmapped).
static TABLES: TrapCell<(Table, Table, Table)> = TrapCell::new((Table([0; 512]), Table([0; 512]), Table([0; 512])));

/// First address of the peripherals (BCM2837 ARM view).
const PERIPHERALS: u64 = 0x3f00_0000;
/// Block/table descriptor type bits.
const BLOCK: u64 = 0b01;
const TABLE: u64 = 0b11;
/// Level-3 page descriptor type bits.
const PAGE_DESC: u64 = 0b11;
/// AttrIndx 0 (normal write-back), inner shareable, access flag.
const NORMAL: u64 = (0b11 << 8) | (1 << 10);
/// AttrIndx 1 (Device-nGnRnE), access flag, never executable.
const DEVICE: u64 = (1 << 2) | (1 << 10) | (1 << 53) | (1 << 54);

/// The first address nothing is mapped at: an injected `segv` loads here.
pub const UNMAPPED: u64 = 0x8000_0000;

/// Identity map, then MMU and caches on:
/// - 0..0x20_0000: RAM in 4 KiB pages, except page 0 and the guard page
///   below each stack (the tasks' and the kernel's), which stay unmapped;
/// - 0x20_0000..0x3f00_0000: RAM, normal memory, 2 MiB blocks;
/// - 0x3f00_0000..0x4000_0000: the peripherals, device memory;
/// - 0x4000_0000..0x8000_0000: the local peripherals, device memory;
/// - [`UNMAPPED`] and above: nothing (a translation fault).
pub fn enable_mmu() {
    let guards = [task_stack_guard(0), task_stack_guard(1), task_stack_guard(2), task_stack_guard(3)];
    let l1_addr = TABLES.with(|(l1, l2, l3)| {
        for (i, e) in l2.0.iter_mut().enumerate() {
            let pa = (i as u64) << 21;
            *e = pa | BLOCK | if pa >= PERIPHERALS { DEVICE } else { NORMAL };
        }
        for (i, e) in l3.0.iter_mut().enumerate() {
            let pa = (i * PAGE) as u64;
            // Unmapped: page 0 (null pointers) and every stack's guard page.
            let guard = pa == 0 || pa == kernel_stack_guard() || guards.contains(&pa);
            *e = if guard { 0 } else { pa | PAGE_DESC | NORMAL };
        }
        assert!(guards.iter().all(|g| (*g as usize) < 512 * PAGE), "the stacks lie in the first 2 MiB");
        l2.0[0] = (&raw const l3.0) as u64 | TABLE;
        l1.0[0] = (&raw const l2.0) as u64 | TABLE;
        l1.0[1] = 0x4000_0000 | BLOCK | DEVICE;
        (&raw const l1.0) as u64
    });
    let mair: u64 = 0xff; // attr0: normal WB RA WA; attr1 (0x00): Device-nGnRnE
    // T0SZ = 32 (4 GiB, walks start at level 1), inner/outer WB WA,
    // inner shareable, 4 KiB granule, TTBR1 walks disabled, 32-bit PA.
    let tcr: u64 = 32 | (1 << 8) | (1 << 10) | (0b11 << 12) | (1 << 23);
    // RES1 bits, M (MMU), C (data cache), SA (SP alignment), I (icache).
    let sctlr: u64 = 0x30d0_0800 | 1 | (1 << 2) | (1 << 3) | (1 << 12);
    // SAFETY: the tables identity-map the running code, its data and stack
    // with the attributes above, so execution continues at the next
    // instruction after the MMU comes on; the barriers order the table
    // writes before the walk and flush stale translations.
    unsafe {
        asm!(
            "dsb ish",
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr}",
            "isb",
            "tlbi vmalle1",
            "dsb ish",
            "isb",
            "msr sctlr_el1, {sctlr}",
            "isb",
            mair = in(reg) mair,
            tcr = in(reg) tcr,
            ttbr = in(reg) l1_addr,
            sctlr = in(reg) sctlr,
            options(nostack),
        );
    }
}

/// A system call from a task: `svc #0` with the number in x8 and up to six
/// arguments; x0..x3 come back.
#[must_use]
pub fn svc(number: u64, args: [u64; 6]) -> [u64; 4] {
    let (r0, r1, r2, r3);
    // SAFETY: the kernel's syscall handler saves and restores every
    // register but x0..x3 (declared as outputs); it reads and writes only
    // buffers inside the calling task's stack (checked), which the
    // wrappers in `sys` pass as live slices for the whole call. Memory is
    // not declared untouched, so the compiler assumes the kernel wrote them.
    unsafe {
        asm!(
            "svc #0",
            inlateout("x0") args[0] => r0,
            inlateout("x1") args[1] => r1,
            inlateout("x2") args[2] => r2,
            inlateout("x3") args[3] => r3,
            in("x4") args[4],
            in("x5") args[5],
            in("x8") number,
            options(nostack),
        );
    }
    [r0, r1, r2, r3]
}

/// The part of task `t`'s stack that `ptr..ptr + len` names, if it lies
/// entirely inside that stack. Every buffer a task passes to a syscall is
/// on its own stack (the `sys` wrappers are called with locals), so this is
/// the whole set of memory the kernel will touch for it.
fn task_range(t: usize, ptr: u64, len: u64) -> Option<(usize, usize)> {
    let top = task_stack_top(t);
    let bottom = top - STACK_SIZE as u64;
    let end = ptr.checked_add(len)?;
    (ptr >= bottom && end <= top).then_some((ptr as usize, len as usize))
}

/// Copies `ptr..ptr + len` of task `t` into `dst`; `None` if the range is
/// not inside the task's stack or longer than `dst`.
#[must_use]
pub fn copy_from_task(t: usize, ptr: u64, len: u64, dst: &mut [u8]) -> Option<usize> {
    let (p, n) = task_range(t, ptr, len)?;
    if n > dst.len() {
        return None;
    }
    // SAFETY: the range is inside task `t`'s stack, which no Rust reference
    // covers (stacks are reached only through the task's SP), and the task
    // is stopped while the kernel runs, so the bytes are not being written.
    let src = unsafe { core::slice::from_raw_parts(p as *const u8, n) };
    dst[..n].copy_from_slice(src);
    Some(n)
}

/// Copies `src` into `ptr..ptr + cap` of task `t`; `None` if the range is
/// not inside the task's stack or `src` does not fit.
#[must_use]
pub fn copy_to_task(t: usize, ptr: u64, cap: u64, src: &[u8]) -> Option<usize> {
    let (p, n) = task_range(t, ptr, cap)?;
    if src.len() > n {
        return None;
    }
    // SAFETY: as in `copy_from_task`; the task is blocked in the syscall
    // that named this buffer, so nothing else reads or writes it now.
    let dst = unsafe { core::slice::from_raw_parts_mut(p as *mut u8, src.len()) };
    dst.copy_from_slice(src);
    Some(src.len())
}

/// An injected `segv`: a load from an address no translation maps.
pub fn load_unmapped() -> u32 {
    // SAFETY: not memory-safe by design: it faults. The translation fault
    // is taken before anything is read, and the kernel never resumes the
    // faulting task (it restarts it from a fresh stack).
    unsafe { core::ptr::read_volatile(UNMAPPED as *const u32) }
}

/// An injected `abrt`: an exclusive load from a misaligned address, which
/// is an alignment fault whatever SCTLR_EL1.A says.
pub fn load_misaligned(word: &u64) -> u32 {
    let v: u32;
    let addr = (word as *const u64 as u64) + 2;
    // SAFETY: the address is inside `word`, a live u64; the exclusive load
    // faults on the misalignment before it reads, and the kernel never
    // resumes the task.
    unsafe { asm!("ldxr {v:w}, [{a}]", v = out(reg) v, a = in(reg) addr, options(nostack)) }
    v
}

/// Kernel state that only trap handlers (and the boot path, before the
/// first task) touch.
///
/// Sound because the image runs on one core (cores 1..3 are parked at
/// boot) and the kernel runs with interrupts masked, so two `with` calls
/// can only overlap by re-entry, which the flag turns into a kernel panic
/// instead of two `&mut` to the same value.
pub struct TrapCell<T> {
    value: core::cell::UnsafeCell<T>,
    busy: core::sync::atomic::AtomicBool,
}

// SAFETY: see the type's doc: one core, interrupts masked in the kernel,
// re-entry refused, so the value is never reached from two contexts at once.
unsafe impl<T> Sync for TrapCell<T> {}

impl<T> core::fmt::Debug for TrapCell<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("TrapCell")
    }
}

impl<T> TrapCell<T> {
    /// A cell holding `value`.
    pub const fn new(value: T) -> Self {
        Self { value: core::cell::UnsafeCell::new(value), busy: core::sync::atomic::AtomicBool::new(false) }
    }

    /// Runs `f` on the value.
    ///
    /// # Panics
    /// On re-entry (a kernel bug).
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        use core::sync::atomic::Ordering;
        assert!(!self.busy.swap(true, Ordering::Acquire), "kernel state entered twice");
        // SAFETY: `busy` was false, so no other `&mut` to the value exists
        // (type doc); it is released below before anyone else can enter.
        let r = f(unsafe { &mut *self.value.get() });
        self.busy.store(false, Ordering::Release);
        r
    }
}

/// Each task's stack size.
pub const STACK_SIZE: usize = 16 * 1024;
/// The translation granule: guard pages are one page.
pub const PAGE: usize = 4096;

/// One task's stack, above a guard page that `enable_mmu` leaves unmapped:
/// a task that overflows its stack takes a translation fault (and is
/// restarted) instead of writing into the next task's stack.
#[repr(C, align(4096))]
struct StackSlot {
    guard: [u8; PAGE],
    stack: [u8; STACK_SIZE],
}

#[repr(C, align(4096))]
struct Stacks([StackSlot; 4]);

/// The tasks' stacks. Only reached through the stack pointers handed to
/// tasks and the kernel's checked copies, never through a Rust reference.
#[unsafe(link_section = ".stacks")]
static mut TASK_STACKS: Stacks = Stacks([const { StackSlot { guard: [0; PAGE], stack: [0; STACK_SIZE] } }; 4]);

fn slot_base(t: usize) -> u64 {
    assert!(t < 4, "four task stacks");
    (&raw const TASK_STACKS) as u64 + (t * size_of::<StackSlot>()) as u64
}

/// The top of task `t`'s stack (empty, 16-byte aligned).
#[must_use]
pub fn task_stack_top(t: usize) -> u64 {
    slot_base(t) + size_of::<StackSlot>() as u64
}

/// The guard page below task `t`'s stack.
#[must_use]
pub fn task_stack_guard(t: usize) -> u64 {
    slot_base(t)
}

/// The guard page below the kernel stack.
#[must_use]
pub fn kernel_stack_guard() -> u64 {
    &raw const __kernel_stack_guard as u64
}

/// Whether a read of `addr` at EL1 translates (`AT S1E1R`), without
/// touching the address: how the boot checks that guard pages are unmapped.
#[must_use]
pub fn is_mapped(addr: u64) -> bool {
    let par: u64;
    // SAFETY: address translation only computes PAR_EL1; it never accesses
    // `addr`, and a failed translation is reported in PAR_EL1.F, not raised.
    unsafe { asm!("at s1e1r, {a}", "isb", "mrs {p}, par_el1", a = in(reg) addr, p = out(reg) par, options(nostack)) }
    par & 1 == 0
}

static FIRST_FRAME: TrapCell<Frame> = TrapCell::new(Frame::fresh(0, 0));
