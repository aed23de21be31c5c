//! Built-in fault injection: where and how a driver instance should crash.
//!
//! Plans travel in [`crate::ToDriver::Inject`] (`drvctl inject`) or in the
//! driver's environment as text, `POINT:K:KIND`, e.g. `after-effect:3:segv`
//! ("crash with SIGSEGV on the 3rd request, after its device effect and before
//! its reply").

use core::fmt;
use core::str::FromStr;
use serde::{Deserialize, Serialize};

/// Where in the handling of a request the crash happens.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    /// While handling `Init`, before answering `Ready` (`k` is ignored).
    Init,
    /// After the request arrived, before any device effect.
    BeforeEffect,
    /// After the device effect, before the reply (and its commit) is sent.
    AfterEffect,
    /// After the reply was sent.
    AfterReply,
}

/// How the instance dies.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashKind {
    /// `SIGSEGV`.
    Segv,
    /// `SIGKILL`.
    Kill,
    /// `SIGABRT`.
    Abrt,
    /// A Rust panic (the process exits with status 101).
    Panic,
    /// `exit(1)`.
    Exit,
    /// Stops answering anything (a hang), so only heartbeats can detect it.
    Hang,
}

/// A fault to inject: on the `on_request`-th request this instance handles
/// (1-based), at `point`, die by `kind`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultPlan {
    /// Where.
    pub point: CrashPoint,
    /// Which request (1-based count of requests handled by this instance).
    pub on_request: u32,
    /// How.
    pub kind: CrashKind,
}

/// A fault plan's text could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FaultPlanError {
    /// Not three `:`-separated fields.
    #[error("expected POINT:K:KIND, e.g. after-effect:3:segv")]
    Shape,
    /// Unknown point.
    #[error("unknown crash point (init, before-effect, after-effect, after-reply)")]
    Point,
    /// `K` is not a positive integer.
    #[error("K must be a positive integer")]
    Count,
    /// Unknown kind.
    #[error("unknown crash kind (segv, kill, abrt, panic, exit, hang)")]
    Kind,
}

impl CrashPoint {
    /// The point's name in plan text.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::BeforeEffect => "before-effect",
            Self::AfterEffect => "after-effect",
            Self::AfterReply => "after-reply",
        }
    }
}

impl CrashKind {
    /// The kind's name in plan text.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Segv => "segv",
            Self::Kill => "kill",
            Self::Abrt => "abrt",
            Self::Panic => "panic",
            Self::Exit => "exit",
            Self::Hang => "hang",
        }
    }
}

impl FromStr for CrashPoint {
    type Err = FaultPlanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Init, Self::BeforeEffect, Self::AfterEffect, Self::AfterReply]
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or(FaultPlanError::Point)
    }
}

impl FromStr for CrashKind {
    type Err = FaultPlanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.strip_prefix("sig").or_else(|| s.strip_prefix("SIG")).unwrap_or(s);
        [Self::Segv, Self::Kill, Self::Abrt, Self::Panic, Self::Exit, Self::Hang]
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or(FaultPlanError::Kind)
    }
}

impl FromStr for FaultPlan {
    type Err = FaultPlanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.trim().split(':');
        let (Some(point), Some(k), Some(kind), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(FaultPlanError::Shape);
        };
        let on_request: u32 = k.parse().map_err(|_| FaultPlanError::Count)?;
        if on_request == 0 {
            return Err(FaultPlanError::Count);
        }
        Ok(Self { point: point.parse()?, on_request, kind: kind.parse()? })
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.point.name(), self.on_request, self.kind.name())
    }
}
