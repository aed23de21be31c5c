//! Built-in fault injection: deciding when a plan fires, and dying as told.

use nix::sys::signal::{SigSet, Signal, raise};
use reinc_proto::{CrashKind, CrashPoint, FaultPlan};

/// The plans armed in one instance.
///
/// - The launch plan (`REINC_FAULT`) counts requests from the start of the
///   instance, so `after-effect:3:segv` kills every instance launched with it
///   on its 3rd request (and `init:…` at every Init).
/// - An injected plan (`ToDriver::Inject`, `drvctl inject`) is one-shot and
///   counts from the moment it arrives: `before-effect:1:kill` means "the next
///   request". Counting from instance start would make a live injection into a
///   long-running instance silently never fire.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    launch: Option<FaultPlan>,
    /// The injected plan and the request count when it was armed.
    injected: Option<(FaultPlan, u32)>,
}

/// Why an injected plan was not armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ArmError {
    /// `init` plans only make sense at launch.
    #[error("an init fault can only be armed at launch (REINC_FAULT); this instance is past Init")]
    InitTooLate,
}

impl Faults {
    pub(crate) fn new(launch: Option<FaultPlan>) -> Self {
        Self { launch, injected: None }
    }

    /// The plan armed at launch.
    pub(crate) fn launch(&self) -> Option<FaultPlan> {
        self.launch
    }

    /// Arms a one-shot plan relative to `handled` requests so far (replacing
    /// any earlier injected plan).
    pub(crate) fn inject(&mut self, plan: FaultPlan, handled: u32) -> Result<(), ArmError> {
        if plan.point == CrashPoint::Init {
            return Err(ArmError::InitTooLate);
        }
        self.injected = Some((plan, handled));
        Ok(())
    }

    /// The plan that fires at `point` of the `nth` request (1-based; ignored
    /// for [`CrashPoint::Init`]), if any. An injected plan is disarmed when it fires.
    pub(crate) fn check(&mut self, point: CrashPoint, nth: u32) -> Option<FaultPlan> {
        if let Some(p) = self.launch
            && p.point == point
            && (point == CrashPoint::Init || p.on_request == nth)
        {
            return Some(p);
        }
        if let Some((p, base)) = self.injected
            && p.point == point
            && nth.checked_sub(base) == Some(p.on_request)
        {
            self.injected = None;
            return Some(p);
        }
        None
    }
}

/// Dies by `sig` (SIGSEGV or SIGBUS), even if the signal is blocked by the
/// runtime's signal mask. Never returns.
pub(crate) fn die_by_signal(sig: Signal) -> ! {
    let mut set = SigSet::empty();
    set.add(sig);
    let _ = set.thread_unblock();
    // std installs a SIGSEGV/SIGBUS handler (stack-overflow detection) that,
    // for a fault outside a guard page, restores the default action and
    // returns. A raised (not faulting) signal then does not come back by
    // itself, so the second raise is the fatal one.
    let _ = raise(sig);
    let _ = raise(sig);
    // Someone ignores it: still die, visibly.
    std::process::abort()
}

/// Dies the way `plan` says. Never returns.
pub(crate) fn die(plan: FaultPlan) -> ! {
    match plan.kind {
        CrashKind::Segv => die_by_signal(Signal::SIGSEGV),
        CrashKind::Kill => {
            let _ = raise(Signal::SIGKILL);
        }
        CrashKind::Abrt => {
            let _ = raise(Signal::SIGABRT);
        }
        CrashKind::Panic => panic!("injected fault {plan}"),
        CrashKind::Exit => std::process::exit(1),
        CrashKind::Hang => loop {
            // Stop servicing everything, without spinning: only a signal
            // (the supervisor's SIGKILL after missed heartbeats) ends this.
            nix::unistd::pause();
        },
    }
    // A signal was blocked or ignored by someone: still die, visibly.
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> FaultPlan {
        text.parse().unwrap()
    }

    #[test]
    fn launch_plan_fires_on_its_request_every_time_it_is_asked() {
        let mut f = Faults::new(Some(plan("after-effect:2:segv")));
        assert_eq!(f.check(CrashPoint::AfterEffect, 1), None);
        assert_eq!(f.check(CrashPoint::BeforeEffect, 2), None);
        assert_eq!(f.check(CrashPoint::AfterEffect, 2), Some(plan("after-effect:2:segv")));
        assert_eq!(f.check(CrashPoint::AfterEffect, 3), None);
    }

    #[test]
    fn launch_init_plan_ignores_the_request_count() {
        let mut f = Faults::new(Some(plan("init:5:abrt")));
        assert_eq!(f.check(CrashPoint::Init, 0), Some(plan("init:5:abrt")));
    }

    #[test]
    fn injected_plan_counts_from_arming_and_fires_once() {
        let mut f = Faults::new(None);
        f.inject(plan("before-effect:1:kill"), 10).unwrap();
        assert_eq!(f.check(CrashPoint::BeforeEffect, 10), None);
        assert_eq!(f.check(CrashPoint::BeforeEffect, 11), Some(plan("before-effect:1:kill")));
        assert_eq!(f.check(CrashPoint::BeforeEffect, 11), None, "one-shot");
    }

    #[test]
    fn injected_init_plan_is_refused() {
        let mut f = Faults::new(None);
        assert_eq!(f.inject(plan("init:1:segv"), 0), Err(ArmError::InitTooLate));
        assert_eq!(f.check(CrashPoint::Init, 0), None);
    }

    #[test]
    fn a_new_injection_replaces_the_previous_one() {
        let mut f = Faults::new(None);
        f.inject(plan("after-reply:1:exit"), 0).unwrap();
        f.inject(plan("after-effect:2:panic"), 0).unwrap();
        assert_eq!(f.check(CrashPoint::AfterReply, 1), None);
        assert_eq!(f.check(CrashPoint::AfterEffect, 2), Some(plan("after-effect:2:panic")));
    }
}
