//! The compare-channel request handler, its committed state and restore.

use serde::{Deserialize, Serialize};

use crate::regs::{Channel, Match, TimerRegisters};
use crate::trace::Trace;

/// Why a request was refused or failed; nothing was written to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TimerError {
    /// Channel 0 or 2.
    #[error("system timer channel {channel} belongs to the VideoCore GPU; the ARM may use channels 1 and 3")]
    ChannelReserved {
        /// The channel asked for.
        channel: u8,
    },
    /// Channel above 3.
    #[error("system timer channel {channel} does not exist (the BCM2835 system timer has channels 0..=3)")]
    InvalidChannel {
        /// The channel asked for.
        channel: u8,
    },
    /// `Wait` on a channel with no committed deadline.
    #[error("system timer channel {channel} is not armed; send Arm or ArmIn before Wait")]
    NotArmed {
        /// The channel asked for.
        channel: u8,
    },
    /// The deadline is more than 2^32-1 µs ahead and would alias in the
    /// 32-bit compare register.
    #[error("system timer channel {channel}: deadline {at} is more than 2^32-1 µs after the counter ({now})")]
    DeadlineTooFar {
        /// The channel asked for.
        channel: u8,
        /// The deadline asked for.
        at: u64,
        /// The counter when it was checked.
        now: u64,
    },
    /// `ArmIn` past the end of the 64-bit counter (half a million years).
    #[error("system timer: deadline overflows the 64-bit counter")]
    CounterOverflow,
    /// CHI kept changing between reads: the device is not behaving.
    #[error("system timer counter unstable: CHI changed in each of its consistency reads")]
    CounterUnstable,
    /// The channel exists and is the ARM's, but this driver instance does
    /// not own it: its UIO device carries another channel's interrupt, and
    /// the other ARM channel may belong to the kernel (a 32-bit kernel's
    /// clock events use channel 3).
    #[error("system timer channel {channel} is not served here; this timer_driver owns channel {served} only")]
    ChannelNotServed {
        /// The channel asked for.
        channel: u8,
        /// The channel this driver owns.
        served: u8,
    },
    /// The request body did not decode as a `TimerRequest`; nothing was done.
    #[error("system timer request of {len} bytes is malformed (not a postcard TimerRequest)")]
    MalformedRequest {
        /// The body's length.
        len: u32,
    },
}

impl TimerError {
    /// The channel the error is about, if any.
    #[must_use]
    pub const fn channel(&self) -> Option<u8> {
        match *self {
            TimerError::ChannelReserved { channel }
            | TimerError::InvalidChannel { channel }
            | TimerError::NotArmed { channel }
            | TimerError::DeadlineTooFar { channel, .. }
            | TimerError::ChannelNotServed { channel, .. } => Some(channel),
            TimerError::CounterOverflow | TimerError::CounterUnstable | TimerError::MalformedRequest { .. } => None,
        }
    }
}

/// How many times [`read_counter`] retries when CHI changes under it.
pub const COUNTER_READ_ATTEMPTS: usize = 3;

/// The furthest ahead a deadline may be: compare registers match the 32-bit
/// CLO only, so anything further would fire early, at an aliased time.
pub const MAX_AHEAD_MICROS: u64 = u32::MAX as u64;

/// Reads the 64-bit free-running counter (µs since reset).
///
/// CHI, then CLO, then CHI again: if the two CHI reads agree, no carry
/// happened between them and the pair is consistent; otherwise CLO wrapped
/// and the read is retried. A carry happens once every 71.6 minutes, so a
/// second attempt always succeeds on working hardware; the loop is bounded so
/// that a broken device yields an error rather than a hang.
///
/// # Errors
/// [`TimerError::CounterUnstable`] after [`COUNTER_READ_ATTEMPTS`] inconsistent reads.
pub fn read_counter<R: TimerRegisters>(regs: &R) -> Result<u64, TimerError> {
    for _ in 0..COUNTER_READ_ATTEMPTS {
        let hi = regs.counter_high();
        let lo = regs.counter_low();
        if regs.counter_high() == hi {
            return Ok((u64::from(hi) << 32) | u64::from(lo));
        }
    }
    Err(TimerError::CounterUnstable)
}

/// A client request to the timer driver (postcard-encoded in the request body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimerRequest {
    /// Read the counter. The reply reflects the time the request ran, so a
    /// replayed `Now` reports a later time (it has no effect to repeat).
    Now,
    /// Arm `channel` to fire when the counter reaches `at` (absolute; replaces
    /// any previous deadline of the channel).
    Arm {
        /// 1 or 3.
        channel: u8,
        /// Counter value (µs) to fire at.
        at: u64,
    },
    /// Arm `channel` to fire `micros` from now. Relative, so the handler
    /// resolves it against the counter it reads and commits the absolute
    /// deadline. A replay after a crash re-reads the counter and so anchors a
    /// little later; the reply carries the deadline actually armed.
    ArmIn {
        /// 1 or 3.
        channel: u8,
        /// Delay in µs.
        micros: u32,
    },
    /// Complete once `channel`'s committed deadline has passed. Until then the
    /// handler asks the runtime to wait for the channel's interrupt and run
    /// the request again; completion is decided by the counter, not by the
    /// match bit, so a replay after a crash that had already cleared the bit
    /// still completes, with the same reply.
    Wait {
        /// 1 or 3.
        channel: u8,
    },
    /// Forget `channel`'s deadline and clear its match bit.
    Disarm {
        /// 1 or 3.
        channel: u8,
    },
    /// Counter, deadlines, fire counts and match bits of both channels.
    Status,
}

impl TimerRequest {
    /// The channel number the request names, if it names one (`Now` and
    /// `Status` do not). Unvalidated: it is what the client sent.
    #[must_use]
    pub const fn channel(&self) -> Option<u8> {
        match *self {
            TimerRequest::Arm { channel, .. }
            | TimerRequest::ArmIn { channel, .. }
            | TimerRequest::Wait { channel }
            | TimerRequest::Disarm { channel } => Some(channel),
            TimerRequest::Now | TimerRequest::Status => None,
        }
    }
}

/// The driver's answer (postcard-encoded in the reply body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimerReply {
    /// Answer to `Now`.
    Now {
        /// Counter value, µs.
        counter: u64,
    },
    /// `Arm`/`ArmIn` applied.
    Armed {
        /// The channel.
        channel: u8,
        /// The absolute deadline committed.
        at: u64,
        /// The deadline had already passed when the compare register was
        /// written, so no interrupt will come; a `Wait` completes at once.
        already_due: bool,
    },
    /// A `Wait` completed.
    Fired {
        /// The channel.
        channel: u8,
        /// The deadline that passed.
        at: u64,
        /// How many waits on this channel have completed, this one included.
        fires: u64,
    },
    /// `Disarm` applied.
    Disarmed {
        /// The channel.
        channel: u8,
        /// The deadline that was forgotten, if any.
        was: Option<u64>,
    },
    /// Answer to `Status`.
    Status {
        /// Counter value, µs.
        counter: u64,
        /// Channel 1, then channel 3.
        channels: [ChannelStatus; 2],
    },
    /// The request was refused; nothing was written.
    Error(TimerError),
}

/// One channel in a [`TimerReply::Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelStatus {
    /// 1 or 3.
    pub channel: u8,
    /// The committed deadline.
    pub deadline: Option<u64>,
    /// Completed waits.
    pub fires: u64,
    /// The channel's M bit in CS (its interrupt line).
    pub matched: bool,
}

/// The committed state: per ARM channel, the armed deadline and how many
/// waits completed. Fixed size; it is the checkpoint the supervisor keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TimerState {
    deadlines: [Option<u64>; 2],
    fires: [u64; 2],
}

impl TimerState {
    /// The committed deadline of `ch`.
    #[must_use]
    pub fn deadline(&self, ch: Channel) -> Option<u64> {
        self.deadlines[ch.slot()]
    }

    /// Completed waits on `ch`.
    #[must_use]
    pub fn fires(&self, ch: Channel) -> u64 {
        self.fires[ch.slot()]
    }

    fn with_deadline(mut self, ch: Channel, at: Option<u64>) -> Self {
        self.deadlines[ch.slot()] = at;
        self
    }
}

/// A device effect the handler applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The channel's stale match was cleared and its compare register written.
    Arm {
        /// The channel.
        channel: Channel,
        /// The deadline (its low 32 bits were written).
        at: u64,
    },
    /// The channel's match bit was cleared (write 1 to CS).
    ClearMatch(Channel),
}

/// What the runtime does next with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send this reply (with the commit, if any).
    Reply(TimerReply),
    /// Nothing to send yet: wait for the channel's interrupt (or a timeout),
    /// acknowledge it with [`crate::Timer::acknowledge`], re-enable the
    /// interrupt, and run the same request again.
    WaitForInterrupt {
        /// The channel whose interrupt completes the request.
        channel: Channel,
        /// Its deadline.
        at: u64,
    },
}

/// The outcome of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handled {
    /// What reached the device, if anything.
    pub effect: Option<Effect>,
    /// The new committed state, `None` when unchanged.
    pub commit: Option<TimerState>,
    /// Reply now, or wait for an interrupt and run the request again.
    pub step: Step,
    /// For the trace ring.
    pub trace: Trace,
}

impl Handled {
    fn refused(e: TimerError) -> Self {
        Handled { effect: None, commit: None, step: Step::Reply(TimerReply::Error(e)), trace: Trace::Refused(e) }
    }

    fn observed(reply: TimerReply) -> Self {
        Handled { effect: None, commit: None, step: Step::Reply(reply), trace: Trace::Observed }
    }
}

/// The system timer core over a register block.
#[derive(Debug)]
pub struct Timer<R> {
    regs: R,
}

impl<R: TimerRegisters> Timer<R> {
    /// A core over `regs`.
    pub fn new(regs: R) -> Self {
        Self { regs }
    }

    /// The register block (tests inspect the model through this).
    pub fn regs(&self) -> &R {
        &self.regs
    }

    /// The register block, mutably (tests move the model's clock with this).
    pub fn regs_mut(&mut self) -> &mut R {
        &mut self.regs
    }

    /// Handles one request against the committed `state`.
    ///
    /// Effects are absolute (a compare value, a write-1-to-clear of the
    /// channel's own match bit), and relative requests are resolved inside
    /// the handler into the absolute deadline that is committed.
    pub fn handle(&mut self, state: &TimerState, req: &TimerRequest) -> Handled {
        match self.try_handle(state, req) {
            Ok(h) => h,
            Err(e) => Handled::refused(e),
        }
    }

    fn try_handle(&mut self, state: &TimerState, req: &TimerRequest) -> Result<Handled, TimerError> {
        Ok(match *req {
            TimerRequest::Now => Handled::observed(TimerReply::Now { counter: read_counter(&self.regs)? }),
            TimerRequest::Arm { channel, at } => {
                let channel = Channel::new(channel)?;
                let now = read_counter(&self.regs)?;
                self.arm(state, channel, at, now)?
            }
            TimerRequest::ArmIn { channel, micros } => {
                let channel = Channel::new(channel)?;
                let now = read_counter(&self.regs)?;
                let at = now.checked_add(u64::from(micros)).ok_or(TimerError::CounterOverflow)?;
                self.arm(state, channel, at, now)?
            }
            TimerRequest::Wait { channel } => {
                let channel = Channel::new(channel)?;
                let at = state.deadline(channel).ok_or(TimerError::NotArmed { channel: channel.number() })?;
                if read_counter(&self.regs)? < at {
                    return Ok(Handled {
                        effect: None,
                        commit: None,
                        step: Step::WaitForInterrupt { channel, at },
                        trace: Trace::Blocked(channel),
                    });
                }
                self.regs.clear_match(channel.match_bit());
                let mut new = state.with_deadline(channel, None);
                new.fires[channel.slot()] = state.fires(channel).wrapping_add(1);
                let effect = Effect::ClearMatch(channel);
                Handled {
                    effect: Some(effect),
                    commit: Some(new),
                    step: Step::Reply(TimerReply::Fired { channel: channel.number(), at, fires: new.fires(channel) }),
                    trace: Trace::Applied(effect),
                }
            }
            TimerRequest::Disarm { channel } => {
                let channel = Channel::new(channel)?;
                self.regs.clear_match(channel.match_bit());
                let new = state.with_deadline(channel, None);
                let effect = Effect::ClearMatch(channel);
                Handled {
                    effect: Some(effect),
                    commit: (new != *state).then_some(new),
                    step: Step::Reply(TimerReply::Disarmed { channel: channel.number(), was: state.deadline(channel) }),
                    trace: Trace::Applied(effect),
                }
            }
            TimerRequest::Status => {
                let counter = read_counter(&self.regs)?;
                let cs = self.regs.status();
                let status = |ch: Channel| ChannelStatus {
                    channel: ch.number(),
                    deadline: state.deadline(ch),
                    fires: state.fires(ch),
                    matched: cs.contains(ch.match_bit()),
                };
                Handled::observed(TimerReply::Status { counter, channels: [status(Channel::C1), status(Channel::C3)] })
            }
        })
    }

    /// Clears the stale match, writes the compare register, then checks that
    /// the deadline was still ahead when the write landed. Clearing *before*
    /// writing matters: the other order could clear a genuine match of a
    /// very near deadline and lose its interrupt.
    fn arm(&mut self, state: &TimerState, channel: Channel, at: u64, now: u64) -> Result<Handled, TimerError> {
        if at > now && at - now > MAX_AHEAD_MICROS {
            return Err(TimerError::DeadlineTooFar { channel: channel.number(), at, now });
        }
        self.regs.clear_match(channel.match_bit());
        self.regs.write_compare(channel, at as u32);
        let after = read_counter(&self.regs)?;
        let already_due = after >= at && !self.regs.status().contains(channel.match_bit());
        let new = state.with_deadline(channel, Some(at));
        let effect = Effect::Arm { channel, at };
        Ok(Handled {
            effect: Some(effect),
            commit: (new != *state).then_some(new),
            step: Step::Reply(TimerReply::Armed { channel: channel.number(), at, already_due }),
            trace: Trace::Applied(effect),
        })
    }

    /// Acknowledges an interrupt: clears the match bits of the ARM channels
    /// that are set, and returns them. Call it after `read()` on the UIO
    /// device returned and *before* re-enabling the interrupt (write 1): the
    /// match bit is the interrupt line's level, so re-enabling first would
    /// fire again at once. Idempotent, and it needs no committed state,
    /// because a `Wait` completes by the counter, not by the bit.
    pub fn acknowledge(&mut self) -> Trace {
        let set = self.regs.status().intersection(Match::LINUX);
        if !set.is_empty() {
            self.regs.clear_match(set);
        }
        Trace::Acknowledged(set)
    }

    /// Like [`Timer::acknowledge`], but clears `channel`'s match bit only.
    /// This is what a driver that owns one channel calls: on a 32-bit kernel
    /// the other ARM channel (3) drives the kernel's clock events, and
    /// clearing its match would swallow the kernel's interrupt.
    pub fn acknowledge_channel(&mut self, channel: Channel) -> Trace {
        let set = self.regs.status().intersection(channel.match_bit());
        if !set.is_empty() {
            self.regs.clear_match(set);
        }
        Trace::Acknowledged(set)
    }

    /// Re-applies a committed state when a new driver instance starts: the
    /// compare register of every armed channel is rewritten (absolute). Match
    /// bits are left as they are: one latched while the driver was down is a
    /// pending interrupt the new instance will receive once it enables the
    /// interrupt, and a deadline that passed is completed by the counter.
    pub fn restore(&mut self, state: &TimerState) -> Trace {
        let mut armed = Match::empty();
        for ch in Channel::ALL {
            if let Some(at) = state.deadline(ch) {
                self.regs.write_compare(ch, at as u32);
                armed |= ch.match_bit();
            }
        }
        Trace::Restored { armed }
    }
}
