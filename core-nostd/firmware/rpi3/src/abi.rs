//! The syscall ABI between tasks and the kernel: syscall numbers, status
//! codes and the wire codes of fault plans. `svc #0`, number in x8,
//! arguments in x0..x5, results in x0..x3.

use crate::jefe::FaultKind;
use reinc_proto::{CrashKind, CrashPoint};

/// Print one line.
pub const LOG: u64 = 1;
/// The task panicked (from the panic handler); never returns.
pub const PANIC: u64 = 2;
/// A driver's start: its checkpoint, generation and init crash plan.
pub const INIT: u64 = 3;
/// The driver restored its checkpoint and serves requests.
pub const READY: u64 = 4;
/// Block until the next request (replays first).
pub const RECV: u64 = 5;
/// Answer the request in flight, with the new committed state.
pub const REPLY: u64 = 6;
/// Block until the task's interrupt fired.
pub const WAIT_IRQ: u64 = 7;
/// Consume a fired interrupt without blocking.
pub const POLL_IRQ: u64 = 8;
/// Unmask the task's interrupt (UIO's `write(1)`).
pub const IRQ_ENABLE: u64 = 9;
/// Client: queue a request to a driver.
pub const SEND: u64 = 10;
/// Client: collect a driver's reply (blocking or not).
pub const TAKE_REPLY: u64 = 11;
/// Client: arm a fault plan in a driver (`drvctl inject`).
pub const INJECT: u64 = 12;
/// Client: the operator's revive of a quarantined driver.
pub const REVIVE: u64 = 13;
/// Milliseconds and microseconds since reset.
pub const NOW: u64 = 14;
/// Client: the scenario is over; print the final state and reset.
pub const FINISH: u64 = 15;
/// A driver records a trace event (postcard `reinc_ringbuf::Event`).
pub const TRACE: u64 = 16;

/// The request was queued / the reply is here.
pub const STATUS_OK: u64 = 0;
/// Backpressure: a request to that driver is still outstanding.
pub const STATUS_BUSY: u64 = 1;
/// The driver is quarantined: a definite failure.
pub const STATUS_DRIVER_FAILED: u64 = 2;
/// Refused (duplicate id, oversized body).
pub const STATUS_REFUSED: u64 = 3;
/// No reply yet (non-blocking collect).
pub const STATUS_NONE_YET: u64 = 4;

/// Wire code of a crash point (0 is "no crash").
#[must_use]
pub fn point_code(p: CrashPoint) -> u64 {
    match p {
        CrashPoint::Init => 1,
        CrashPoint::BeforeEffect => 2,
        CrashPoint::AfterEffect => 3,
        CrashPoint::AfterReply => 4,
    }
}

/// The crash point of a wire code.
#[must_use]
pub fn point_of(code: u64) -> Option<CrashPoint> {
    [CrashPoint::Init, CrashPoint::BeforeEffect, CrashPoint::AfterEffect, CrashPoint::AfterReply]
        .into_iter()
        .find(|p| point_code(*p) == code)
}

/// Wire code of a fault kind. Only the kinds a task can do to itself in
/// firmware have one: `kill` and `exit` have no bare-metal meaning (nothing
/// outside the task kills it, and a task has nothing to exit to). `hang`
/// spins without trapping, which the kernel's hang detection catches; a
/// stack overflow recurses into the stack's guard page.
#[must_use]
pub fn kind_code(k: FaultKind) -> u64 {
    match k {
        FaultKind::Plan(CrashKind::Segv) => 1,
        FaultKind::Plan(CrashKind::Abrt) => 2,
        FaultKind::Plan(CrashKind::Panic) => 3,
        FaultKind::Plan(CrashKind::Hang) => 4,
        FaultKind::StackOverflow => 5,
        FaultKind::Plan(CrashKind::Kill | CrashKind::Exit) => 0,
    }
}

/// The fault kind of a wire code.
#[must_use]
pub fn kind_of(code: u64) -> Option<FaultKind> {
    let plan = [CrashKind::Segv, CrashKind::Abrt, CrashKind::Panic, CrashKind::Hang].map(FaultKind::Plan);
    plan.into_iter().chain([FaultKind::StackOverflow]).find(|k| kind_code(*k) == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_codes_round_trip_and_zero_means_no_crash() {
        for p in [CrashPoint::Init, CrashPoint::BeforeEffect, CrashPoint::AfterEffect, CrashPoint::AfterReply] {
            assert_eq!(point_of(point_code(p)), Some(p));
            assert_ne!(point_code(p), 0);
        }
        let kinds = [CrashKind::Segv, CrashKind::Abrt, CrashKind::Panic, CrashKind::Hang].map(FaultKind::Plan);
        for k in kinds.into_iter().chain([FaultKind::StackOverflow]) {
            assert_eq!(kind_of(kind_code(k)), Some(k));
        }
        assert_eq!((point_of(0), kind_of(0)), (None, None));
    }

    #[test]
    fn kinds_a_task_cannot_do_to_itself_have_no_code() {
        for k in [CrashKind::Kill, CrashKind::Exit].map(FaultKind::Plan) {
            assert_eq!(kind_of(kind_code(k)), None, "{k:?}");
        }
    }

    #[test]
    fn syscall_numbers_are_distinct() {
        let all = [
            LOG, PANIC, INIT, READY, RECV, REPLY, WAIT_IRQ, POLL_IRQ, IRQ_ENABLE, SEND, TAKE_REPLY, INJECT, REVIVE,
            NOW, FINISH, TRACE,
        ];
        for (i, a) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|b| b != a), "syscall {a} is used twice");
        }
    }
}
