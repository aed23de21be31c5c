//! The system timer driver task: the firmware twin of
//! `host-supervisor/timer_driver/src/driver.rs`, owning compare channel 3
//! and its interrupt.

use super::{crash, encode};
use crate::{board, sys};
use reinc_firmware_rpi3::jefe::{BODY_MAX, CHECKPOINT_MAX};
use reinc_proto::CrashPoint;
use timer_core::{Channel, Step, Timer, TimerError, TimerReply, TimerRequest, TimerState};

/// The system timer driver, owning compare channel 3 and its interrupt.
pub fn timer_main() -> ! {
    let mut cp = [0u8; CHECKPOINT_MAX];
    let init = sys::init(&mut cp);
    let generation = init.generation;
    let mut state: TimerState = match init.checkpoint {
        None => TimerState::default(),
        Some(bytes) => match postcard::from_bytes(bytes) {
            Ok(s) => s,
            Err(e) => panic!("timer gen{generation}: checkpoint of {} bytes does not decode: {e}", bytes.len()),
        },
    };
    let served = Channel::C3;
    let mut timer = Timer::new(board::systimer());
    if let Some(kind) = init.crash {
        crash(kind, CrashPoint::Init, &"init");
    }
    sys::trace(timer.restore(&state).event());
    // Always re-enable after restoring: a predecessor may have died with
    // the line masked.
    sys::irq_enable();
    sys::ready();
    let mut body = [0u8; BODY_MAX];
    loop {
        let req = sys::recv(&mut body);
        let (id, crash_plan) = (req.id, req.crash);
        let at = |p: CrashPoint| crash_plan.filter(|(q, _)| *q == p).map(|(_, k)| k);
        if let Some(k) = at(CrashPoint::BeforeEffect) {
            crash(k, CrashPoint::BeforeEffect, &id);
        }
        let request = postcard::from_bytes::<TimerRequest>(req.body).ok();
        // An interrupt that fired while no Wait was parked left the line
        // masked: consume it and unmask first (timer_driver does the same).
        if sys::poll_irq() {
            sys::trace(timer.acknowledge_channel(served).event());
            sys::irq_enable();
        }
        let (reply, new) = match request {
            None => {
                let len = u32::try_from(req.body.len()).unwrap_or(u32::MAX);
                (TimerReply::Error(TimerError::MalformedRequest { len }), state)
            }
            Some(r) => match r.channel().map(Channel::new) {
                Some(Ok(ch)) if ch != served => {
                    let error = TimerError::ChannelNotServed { channel: ch.number(), served: served.number() };
                    (TimerReply::Error(error), state)
                }
                _ => {
                    let mut handled = timer.handle(&state, &r);
                    loop {
                        sys::trace(handled.trace.event());
                        match handled.step {
                            Step::Reply(reply) => break (reply, handled.commit.unwrap_or(state)),
                            Step::WaitForInterrupt { channel, .. } => {
                                sys::wait_irq();
                                // Clear the match (the line's level) before
                                // unmasking, or it fires again at once.
                                sys::trace(timer.acknowledge_channel(channel).event());
                                sys::irq_enable();
                                handled = timer.handle(&state, &TimerRequest::Wait { channel: channel.number() });
                            }
                        }
                    }
                }
            },
        };
        if let Some(k) = at(CrashPoint::AfterEffect) {
            crash(k, CrashPoint::AfterEffect, &id);
        }
        let (mut rb, mut cb) = ([0u8; BODY_MAX], [0u8; CHECKPOINT_MAX]);
        sys::reply(id, encode(&reply, &mut rb), encode(&new, &mut cb));
        state = new;
        if let Some(k) = at(CrashPoint::AfterReply) {
            crash(k, CrashPoint::AfterReply, &id);
        }
    }
}
