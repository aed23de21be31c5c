//! Bare-metal firmware for QEMU `raspi3b` (BCM2837): `gpio_core` and
//! `timer_core` run as supervised tasks, and a faulting task is reincarnated
//! by the same rules as a crashed driver process on Linux.
//!
//! # Why this crate exists
//! The README promises that a driver core links into the Linux host binary
//! *and* into bare-metal firmware. This image is the second half of that
//! promise: the very handler functions the Linux `gpio_driver` and
//! `timer_driver` call (`Gpio::handle`/`Gpio::restore`,
//! `Timer::handle`/`Timer::acknowledge_channel`/`Timer::restore`), with the
//! same postcard-encoded `GpioRequest`/`TimerRequest` bodies, and the same
//! supervision crates (`reinc-queue` for the FIFO of unanswered requests,
//! `reinc-policy` for backoff and quarantine, `reinc-proto`'s ids,
//! generations and fault plans, `reinc-ringbuf` for post-mortem traces),
//! all unchanged.
//!
//! # How the same core is wired twice
//! | | Linux (`host-supervisor/`) | this firmware |
//! |---|---|---|
//! | driver | a process: `gpio_driver`, `timer_driver` | a task with its own stack |
//! | registers | UIO `mmap` of `/dev/uioN` | the same register blocks at 0x3f200000 / 0x3f003000 |
//! | interrupt | `read()` on `/dev/uioN`, `write(1)` re-enables | IRQ 3 of the BCM2835 controller, masked by the kernel, re-enabled by the task |
//! | requests | postcard over `SOCK_SEQPACKET` | postcard bodies copied by `svc` |
//! | supervisor | `supervisor` daemon | the kernel's trap handlers ([`jefe`]) |
//! | crash | a signal, seen by `signalfd` | a panic (`svc`) or a synchronous exception |
//! | restart | fork+exec, `Init { checkpoint }` | stack and registers reset; the entry fetches the checkpoint (`init` syscall) |
//!
//! # Shape of the image (`src/main.rs`)
//! - Boot: core 0 runs, cores 1..3 are parked in `wfe`; EL3 or EL2 drops
//!   to EL1. The MMU identity-maps RAM as normal memory (the first 2 MiB in
//!   4 KiB pages, leaving page 0 and a guard page below every stack
//!   unmapped) and the peripherals as device memory; 0x4000_0000 up is the
//!   local peripherals, and everything from 0x8000_0000 is unmapped, which
//!   is where an injected "segv" loads.
//! - Kernel: runs only in exception handlers, on its own stack (EL1h), with
//!   interrupts masked. Tasks run at EL1t on their own stacks with
//!   interrupts enabled, so a trap from a task arrives on the "current EL,
//!   SP0" vectors and a trap from the kernel on the "SPx" ones: a fault is
//!   attributed to a task or to the kernel by the vector alone.
//! - Tasks, by priority: `timer` (timer_core, compare channel 3), `gpio`
//!   (gpio_core, pin 17), `blink` (the client, which is also the guest
//!   suite's scenario), `idle` (`wfi`). Every trap saves the whole context
//!   (x0..x30, SP_EL0, ELR, SPSR, q0..q31, FPCR/FPSR) and resumes the
//!   highest-priority runnable task.
//! - The kernel itself keeps its deadlines (backoff, hang detection) on
//!   compare channel 1, the other ARM channel, through timer_core's register
//!   module.
//!
//! # Reincarnation, jefe-style
//! A driver task that panics (the panic handler issues an `svc`) or takes a
//! synchronous exception (translation fault, alignment fault, …) never
//! returns to the faulting code. The kernel records the fault, counts it
//! against the request in flight, rewinds the task's FIFO and asks
//! `reinc-policy`:
//! - restart: once the delay has passed (at once the first time), the task's
//!   stack pointer is reset to the top of its stack, its registers are
//!   zeroed, and it starts again at its entry, which fetches the committed
//!   checkpoint and its new generation (`init`). It re-applies the checkpoint to the device
//!   (`restore`), says ready, and the kernel replays every unanswered
//!   request, in order;
//! - quarantine: every pending request gets a `DriverFailed` answer, and
//!   nothing runs the task until the revive command.
//!
//! The other driver task is not touched: it keeps its stack, its state and
//! its interrupt, and keeps serving its client throughout.
//!
//! Each instance's trace ring (`reinc-ringbuf`'s `Ringbuf`, filled with
//! the cores' own `Trace::event` entries plus the kernel's request, reply
//! and init events) lives in the kernel, so it survives the instance and
//! is printed at its fault, named with the core's `TRACE_LEGEND`: the
//! firmware's `drvctl trace`.
//!
//! A hang is detected without heartbeat messages: a driver that owes an
//! answer (it is starting, or holds a request) and has run for
//! `HANG_LIMIT` without a syscall is faulted like a crash. Compare channel 1
//! wakes the kernel at that deadline; time spent blocked in the kernel or
//! preempted by another task does not count.
//!
//! Faults are injected with `reinc-proto`'s [`FaultPlan`](reinc_proto::FaultPlan)
//! (`POINT:K:KIND`, the same plans as `drvctl inject`). In the firmware,
//! `panic` panics, `segv` loads from an unmapped address (a translation
//! fault, the MMU's SIGSEGV), `abrt` does an exclusive load from a
//! misaligned address (an alignment fault) and `hang` spins. `kill` and
//! `exit` have no meaning for a task and are refused. One more kind, which
//! `CrashKind` cannot name, is the firmware's own: a stack overflow, a
//! recursion that runs into the guard page below the task's stack.
//!
//! # What the console says
//! Besides human `[SUP] …` and `[driver] …` lines in the Linux style, the
//! firmware prints one `FW <event> key=value …` line per fact (a value with
//! spaces is quoted). The guest suite (`cargo xtask qemu-test --machine
//! rpi3-fw`, `xtask/src/firmware.rs`) derives every check from them; the
//! firmware decides no verdict itself.
//!
//! | event | keys |
//! |---|---|
//! | `boot` | `el` (the level the core started at), `image`, `kernel-stack-top` |
//! | `guard` | `task guard guard-mapped stack-bottom-mapped stack-top-mapped` (address translation at boot) |
//! | `policy-config` | `base-ms cap-ms jitter-percent healthy-ms max-restarts window-ms` |
//! | `phase` | `name`, and what it does: `toggles`, `period-us`, `plan`, `every-instance` |
//! | `launch` | `task gen at-ms`, and the checkpoint (gpio: `pin17 gplev0 state`) |
//! | `ready` | `task gen` (gpio: `pin17 gplev0 state`, GPLEV0 read after the restore) |
//! | `replay` / `replayed` | `task gen count` / `task gen id` |
//! | `commit` | `task gen id`; gpio: `pin17` (committed level) `gplev0` (read right after) `state`; timer: `fires deadline` |
//! | `irq` | `source=timer-c3 n` |
//! | `toggle` / `tick` | `phase n` and `level`/`fire at paced` (`irq`, or `late` when the deadline had passed when armed) |
//! | `inject` / `revive` | `task plan every-instance` / `task` |
//! | `fault` | `task gen kind` (`panic`, `translation-fault`, `alignment-fault`, `hang`, …), `esr far elr`, `msg` or `silent-ms`, `in-flight at-ms`, gpio: `pin17 gplev0 state` |
//! | `hang` | `task silent-ms limit-ms` (just before its `fault`) |
//! | `trace` | `task gen seq count event` (the dead instance's ring, oldest first, right after its `fault`) |
//! | `policy` | `task action=restart attempt delay-ms replay`, or `action=quarantine restarts-in-window` |
//! | `failed` / `answer` | `task id reason` / `phase task result` (what the client got) |
//! | `final` | per driver: `task state gen restarts queued`, gpio: `pin17 gplev0 state`, timer: `fires` |
//! | `end` / `fatal` | `status timer-irqs` / what killed the run |
//!
//! # Limits
//! - Tasks share one address space at EL1: a task that writes through a
//!   wild pointer can corrupt another task or the kernel. Each stack sits
//!   above an unmapped guard page (and page 0 is unmapped), so a stack
//!   overflow or a null access faults the task instead; the boot checks
//!   the guards by address translation, and the suite injects an overflow.
//!   The faults recovered are those the task takes itself: panics, aborts
//!   on unmapped or misaligned accesses, hangs.
//! - The kernel trusts a task's syscall pointers only inside that task's
//!   own stack (checked); anything else is a protocol fault of the task.
//! - One client (the blink task), one outstanding request per driver.
//! - QEMU 7.2 starts an ELF image on all four cores at EL3; the boot code
//!   parks cores 1..3 and drops from EL3 or EL2 (a real Pi's firmware) to
//!   EL1. Only the QEMU path has run; on a board the PL011 would also need
//!   its pins (GPIO 14/15, ALT0) and Bluetooth moved off it.
//!
//! # Designs rejected
//! - Embassy or RTIC: both give tasks that share one stack (async state
//!   machines, or run-to-completion handlers on the interrupt stack). A task
//!   that faults then has no state of its own to throw away: unwinding a
//!   half-run future or handler is exactly what `panic = "abort"` does not
//!   allow. A restart needs a task whose entire state is its stack and
//!   registers, plus the checkpoint held outside it, which is what Hubris's
//!   jefe restarts and what a few hundred lines of context switch give.
//! - Restarting by unwinding (`catch_unwind`-like) or by `longjmp` back into
//!   the task loop: it needs unwind tables in `no_std`, and any state the
//!   faulting code left behind on the stack or in registers would survive
//!   the fault. Resetting the stack pointer and every register discards it
//!   by construction; the only state carried over is the committed one.
//! - Tasks at EL0 with per-task page tables (full Hubris-style isolation):
//!   right for a product, but it needs user-accessible mappings of each
//!   task's stack and device, and syscalls for every register block. EL1t
//!   tasks already separate task faults from kernel faults by the vector,
//!   which is what reincarnation needs; memory isolation is left for later.
//! - Polling the timer instead of the interrupt: the point is the same
//!   interrupt cycle as UIO's (mask in the kernel, acknowledge the match,
//!   re-enable from the task).
//! - An allocator: every buffer is fixed (`reinc-queue`'s `ArrayQueue`,
//!   inline bodies and checkpoints), as every core-nostd crate must do without one.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod abi;
pub mod jefe;
pub mod text;
