//! Behaviour of the counter read, the handler and the restore, against the model.

extern crate std;

use std::vec::Vec;

use proptest::prelude::*;

use crate::*;

fn timer(now: u64) -> Timer<TimerModel> {
    Timer::new(TimerModel::new(now))
}

/// Runs `req` and commits like the supervisor; returns the step.
fn run<R: TimerRegisters>(t: &mut Timer<R>, state: &mut TimerState, req: TimerRequest) -> Step {
    let h = t.handle(state, &req);
    if let Some(s) = h.commit {
        *state = s;
    }
    h.step
}

fn reply(step: Step) -> TimerReply {
    match step {
        Step::Reply(r) => r,
        Step::WaitForInterrupt { .. } => panic!("expected a reply, got {step:?}"),
    }
}

#[test]
fn counter_read_is_consistent_across_a_low_word_carry() {
    let mut m = TimerModel::new(0xFFFF_FFFE);
    m.set_ticks_per_read(1);
    // A naive CHI-then-CLO read here would see hi=0 then lo=0 (after the
    // carry) and report a time 2^32 µs in the past.
    let v = read_counter(&m).unwrap();
    assert!(v >= 0x1_0000_0000, "{v:#x} is before the carry that already happened");
    assert!(v <= m.now());
}

#[test]
fn unstable_counter_gives_up_with_an_error() {
    let mut m = TimerModel::new(5);
    m.set_unstable_high(true);
    assert_eq!(read_counter(&m), Err(TimerError::CounterUnstable));
    let mut t = Timer::new(m);
    let h = t.handle(&TimerState::default(), &TimerRequest::ArmIn { channel: 3, micros: 10 });
    assert_eq!(h.step, Step::Reply(TimerReply::Error(TimerError::CounterUnstable)));
    assert_eq!(t.regs().write_count(), 0);
}

#[test]
fn gpu_and_nonexistent_channels_are_refused_without_writes() {
    let mut t = timer(1000);
    let state = TimerState::default();
    for (ch, err) in [
        (0, TimerError::ChannelReserved { channel: 0 }),
        (2, TimerError::ChannelReserved { channel: 2 }),
        (4, TimerError::InvalidChannel { channel: 4 }),
        (255, TimerError::InvalidChannel { channel: 255 }),
    ] {
        for req in [
            TimerRequest::Arm { channel: ch, at: 2000 },
            TimerRequest::ArmIn { channel: ch, micros: 5 },
            TimerRequest::Wait { channel: ch },
            TimerRequest::Disarm { channel: ch },
        ] {
            let h = t.handle(&state, &req);
            assert_eq!(h.step, Step::Reply(TimerReply::Error(err)), "{req:?}");
            assert_eq!(h.commit, None);
        }
    }
    assert_eq!(t.regs().write_count(), 0);
    let msg = std::format!("{}", TimerError::ChannelReserved { channel: 2 });
    assert!(msg.contains("channel 2") && msg.contains("GPU"), "{msg}");
}

#[test]
fn arm_in_resolves_against_the_counter_and_commits_an_absolute_deadline() {
    let mut t = timer(10_000);
    let mut state = TimerState::default();
    let r = reply(run(&mut t, &mut state, TimerRequest::ArmIn { channel: 3, micros: 500 }));
    assert_eq!(r, TimerReply::Armed { channel: 3, at: 10_500, already_due: false });
    assert_eq!(state.deadline(Channel::C3), Some(10_500));
    assert_eq!(t.regs().compare(Channel::C3), 10_500);
    assert_eq!(state.deadline(Channel::C1), None);
}

#[test]
fn wait_blocks_until_the_deadline_interrupt_then_fires() {
    let mut t = timer(0x7_0000_0000);
    let mut state = TimerState::default();
    run(&mut t, &mut state, TimerRequest::ArmIn { channel: 3, micros: 500 });
    let at = 0x7_0000_0000 + 500;
    assert_eq!(
        run(&mut t, &mut state, TimerRequest::Wait { channel: 3 }),
        Step::WaitForInterrupt { channel: Channel::C3, at }
    );
    t.regs_mut().advance(499);
    assert!(!t.regs().irq_line(Channel::C3));
    assert!(matches!(run(&mut t, &mut state, TimerRequest::Wait { channel: 3 }), Step::WaitForInterrupt { .. }));
    t.regs_mut().advance(1);
    assert!(t.regs().irq_line(Channel::C3), "compare match raises the interrupt line");
    assert_eq!(t.acknowledge(), Trace::Acknowledged(Match::M3));
    assert!(!t.regs().irq_line(Channel::C3), "acknowledge drops the line before re-enable");
    let r = reply(run(&mut t, &mut state, TimerRequest::Wait { channel: 3 }));
    assert_eq!(r, TimerReply::Fired { channel: 3, at, fires: 1 });
    assert_eq!(state.deadline(Channel::C3), None);
    assert_eq!(
        reply(run(&mut t, &mut state, TimerRequest::Wait { channel: 3 })),
        TimerReply::Error(TimerError::NotArmed { channel: 3 })
    );
}

#[test]
fn repeated_deadlines_deliver_growing_fire_counts() {
    let mut t = timer(123);
    let mut state = TimerState::default();
    for n in 1..=5u64 {
        run(&mut t, &mut state, TimerRequest::ArmIn { channel: 1, micros: 1000 });
        assert!(matches!(run(&mut t, &mut state, TimerRequest::Wait { channel: 1 }), Step::WaitForInterrupt { .. }));
        t.regs_mut().advance(1000);
        assert!(t.regs().irq_line(Channel::C1));
        t.acknowledge();
        let r = reply(run(&mut t, &mut state, TimerRequest::Wait { channel: 1 }));
        assert!(matches!(r, TimerReply::Fired { channel: 1, fires, .. } if fires == n), "{r:?}");
    }
    assert_eq!(state.fires(Channel::C1), 5);
    assert_eq!(state.fires(Channel::C3), 0);
}

#[test]
fn replay_of_wait_after_crash_completes_with_the_same_reply() {
    let mut t = timer(0);
    let mut state = TimerState::default();
    run(&mut t, &mut state, TimerRequest::ArmIn { channel: 3, micros: 50 });
    t.regs_mut().advance(60);
    // The driver completes the wait (clearing M3), then dies before its reply.
    let first = t.handle(&state, &TimerRequest::Wait { channel: 3 });
    assert!(!t.regs().irq_line(Channel::C3));
    // The new instance restores the last commit (still armed) and replays.
    t.restore(&state);
    let replay = t.handle(&state, &TimerRequest::Wait { channel: 3 });
    assert_eq!(first, replay, "no interrupt needed: the counter is past the deadline");
    assert_eq!(replay.step, Step::Reply(TimerReply::Fired { channel: 3, at: 50, fires: 1 }));
}

#[test]
fn past_deadline_is_reported_already_due_and_wait_completes_at_once() {
    let mut t = timer(1_000_000);
    let mut state = TimerState::default();
    let r = reply(run(&mut t, &mut state, TimerRequest::Arm { channel: 3, at: 999_000 }));
    assert_eq!(r, TimerReply::Armed { channel: 3, at: 999_000, already_due: true });
    assert!(!t.regs().irq_line(Channel::C3), "no match will come for a past deadline");
    let r = reply(run(&mut t, &mut state, TimerRequest::Wait { channel: 3 }));
    assert_eq!(r, TimerReply::Fired { channel: 3, at: 999_000, fires: 1 });
}

#[test]
fn deadline_matching_while_being_armed_is_not_lost() {
    let mut m = TimerModel::new(1000);
    m.set_ticks_per_read(1); // time passes during the handler's own reads
    let mut t = Timer::new(m);
    let mut state = TimerState::default();
    let r = reply(run(&mut t, &mut state, TimerRequest::ArmIn { channel: 1, micros: 1 }));
    let TimerReply::Armed { at, already_due, .. } = r else { panic!("{r:?}") };
    // Either the match latched (interrupt pending) or the reply says it is due:
    // never neither, which would leave a Wait blocked forever.
    assert!(t.regs().irq_line(Channel::C1) || already_due, "at={at}");
    t.acknowledge();
    assert!(matches!(reply(run(&mut t, &mut state, TimerRequest::Wait { channel: 1 })), TimerReply::Fired { .. }));
}

#[test]
fn deadline_beyond_the_compare_range_is_refused() {
    let mut t = timer(10);
    let at = 10 + MAX_AHEAD_MICROS + 1;
    let h = t.handle(&TimerState::default(), &TimerRequest::Arm { channel: 3, at });
    assert_eq!(h.step, Step::Reply(TimerReply::Error(TimerError::DeadlineTooFar { channel: 3, at, now: 10 })));
    assert_eq!(t.regs().write_count(), 0);
    let h = t.handle(&TimerState::default(), &TimerRequest::Arm { channel: 3, at: 10 + MAX_AHEAD_MICROS });
    assert!(matches!(h.step, Step::Reply(TimerReply::Armed { .. })));
}

#[test]
fn gpu_matches_are_never_cleared() {
    let mut t = timer(0);
    let mut state = TimerState::default();
    t.regs_mut().set_gpu_compare(0, 10);
    t.regs_mut().set_gpu_compare(2, 20);
    run(&mut t, &mut state, TimerRequest::ArmIn { channel: 3, micros: 30 });
    t.regs_mut().advance(40);
    assert_eq!(t.regs().raw_status(), 0b1101);
    t.acknowledge();
    run(&mut t, &mut state, TimerRequest::Wait { channel: 3 });
    run(&mut t, &mut state, TimerRequest::Disarm { channel: 1 });
    assert_eq!(t.regs().raw_status(), 0b0101, "M0 and M2 still latched for the GPU");
    assert!(t.regs().cs_writes().iter().all(|w| w & 0b0101 == 0), "{:?}", t.regs().cs_writes());
}

#[test]
fn restore_rewrites_compare_registers_of_armed_channels() {
    let mut t = timer(5_000);
    let mut state = TimerState::default();
    run(&mut t, &mut state, TimerRequest::ArmIn { channel: 1, micros: 100 });
    let checkpoint: TimerState = postcard::from_bytes(&postcard::to_allocvec(&state).unwrap()).unwrap();
    t.regs_mut().scramble_arm_compares();
    assert_eq!(t.restore(&checkpoint), Trace::Restored { armed: Match::M1 });
    assert_eq!(t.regs().compare(Channel::C1), 5_100);
    t.regs_mut().advance(100);
    assert!(t.regs().irq_line(Channel::C1), "the restored deadline still interrupts");
}

#[test]
fn disarm_forgets_the_deadline() {
    let mut t = timer(0);
    let mut state = TimerState::default();
    run(&mut t, &mut state, TimerRequest::Arm { channel: 3, at: 77 });
    let r = reply(run(&mut t, &mut state, TimerRequest::Disarm { channel: 3 }));
    assert_eq!(r, TimerReply::Disarmed { channel: 3, was: Some(77) });
    assert_eq!(state.deadline(Channel::C3), None);
    let again = t.handle(&state, &TimerRequest::Disarm { channel: 3 });
    assert_eq!(again.commit, None, "disarming twice changes nothing");
}

#[test]
fn status_reports_deadlines_fires_and_match_bits() {
    let mut t = timer(0);
    let mut state = TimerState::default();
    run(&mut t, &mut state, TimerRequest::Arm { channel: 1, at: 10 });
    t.regs_mut().advance(20);
    let r = reply(run(&mut t, &mut state, TimerRequest::Status));
    assert_eq!(
        r,
        TimerReply::Status {
            counter: 20,
            channels: [
                ChannelStatus { channel: 1, deadline: Some(10), fires: 0, matched: true },
                ChannelStatus { channel: 3, deadline: None, fires: 0, matched: false },
            ]
        }
    );
}

#[test]
fn messages_roundtrip_through_postcard() {
    for r in [
        TimerRequest::Now,
        TimerRequest::Arm { channel: 3, at: u64::MAX },
        TimerRequest::ArmIn { channel: 1, micros: 7 },
    ] {
        let back: TimerRequest = postcard::from_bytes(&postcard::to_allocvec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
    let e = TimerReply::Error(TimerError::DeadlineTooFar { channel: 3, at: 1, now: 2 });
    let back: TimerReply = postcard::from_bytes(&postcard::to_allocvec(&e).unwrap()).unwrap();
    assert_eq!(back, e);
}

#[test]
fn trace_entries_map_to_driver_events() {
    let t = Trace::Applied(Effect::Arm { channel: Channel::C3, at: 99 });
    assert_eq!(t.event(), reinc_ringbuf::Event::Driver { code: 0x7101, a: 3, b: 99 });
}

proptest! {
    #[test]
    fn counter_read_never_goes_backwards_or_ahead(start in any::<u64>().prop_map(|s| s % (u64::MAX / 2)), ticks in 0u64..4) {
        let mut m = TimerModel::new(start);
        m.set_ticks_per_read(ticks);
        let v = read_counter(&m).unwrap();
        prop_assert!(v >= start && v <= m.now(), "start={start:#x} read={v:#x} now={:#x}", m.now());
    }

    /// With the clock standing still while a request runs (the model only
    /// moves when told), crash-before-reply plus replay must give exactly the
    /// replies and state of a run without crashes.
    #[test]
    fn replay_after_crashes_matches_a_crash_free_run(
        steps in proptest::collection::vec(
            (prop_oneof![
                Just(TimerRequest::Now),
                (0u8..5, 0u32..3000).prop_map(|(channel, micros)| TimerRequest::ArmIn { channel, micros }),
                (0u8..5, 0u64..6000).prop_map(|(channel, at)| TimerRequest::Arm { channel, at }),
                (0u8..5).prop_map(|channel| TimerRequest::Wait { channel }),
                (0u8..5).prop_map(|channel| TimerRequest::Disarm { channel }),
                Just(TimerRequest::Status),
            ], 0u64..1500, any::<bool>()),
            1..40,
        ),
    ) {
        let mut clean = timer(0);
        let mut clean_state = TimerState::default();
        let mut g = timer(0);
        let mut state = TimerState::default();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (req, advance, crash) in steps {
            clean.regs_mut().advance(advance);
            g.regs_mut().advance(advance);
            clean.acknowledge();
            g.acknowledge();
            a.push(run(&mut clean, &mut clean_state, req));
            if crash {
                let _lost = g.handle(&state, &req);
                g.restore(&state);
            }
            b.push(run(&mut g, &mut state, req));
        }
        prop_assert_eq!(a, b);
        prop_assert_eq!(state, clean_state);
    }
}

/// The host path end to end: reinc-uio maps a file standing in for the timer
/// page and hands out the typed block (owned, as the driver keeps it).
#[cfg(feature = "uio")]
#[test]
fn typed_block_from_reinc_uio_drives_the_handler() {
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    file.as_file().set_len(4096).expect("size");
    let view = reinc_uio::Mapping::file(file.path(), 0, 4096).expect("map");
    view.write32(0x04, 1_000).unwrap(); // CLO
    view.write32(0x08, 2).unwrap(); // CHI
    let block =
        reinc_uio::Mapping::file(file.path(), 0, 4096).expect("map").into_block::<RegisterBlock>(0).expect("fits");
    let mut t = Timer::new(block);
    let mut state = TimerState::default();
    let r = reply(run(&mut t, &mut state, TimerRequest::ArmIn { channel: 3, micros: 500 }));
    assert_eq!(r, TimerReply::Armed { channel: 3, at: (2 << 32) + 1_500, already_due: false });
    assert_eq!(view.read32(0x18).unwrap(), 1_500, "C3");
    assert_eq!(view.read32(0x00).unwrap(), Match::M3.bits(), "CS: stale M3 cleared (written) before arming");
}

#[test]
fn acknowledging_one_channel_leaves_the_other_channels_match_pending() {
    let mut t = timer(1000);
    let mut state = TimerState::default();
    run(&mut t, &mut state, TimerRequest::ArmIn { channel: 1, micros: 10 });
    run(&mut t, &mut state, TimerRequest::ArmIn { channel: 3, micros: 10 });
    t.regs_mut().advance(10);
    assert!(t.regs().irq_line(Channel::C1) && t.regs().irq_line(Channel::C3));
    assert_eq!(t.acknowledge_channel(Channel::C3), Trace::Acknowledged(Match::M3));
    assert!(!t.regs().irq_line(Channel::C3), "the owned channel's line drops");
    assert!(t.regs().irq_line(Channel::C1), "the other ARM channel (the kernel's, on 32-bit) keeps its match");
    assert_eq!(t.acknowledge_channel(Channel::C3), Trace::Acknowledged(Match::empty()), "idempotent");
}

#[test]
fn requests_name_their_channel_unvalidated() {
    assert_eq!(TimerRequest::Wait { channel: 7 }.channel(), Some(7));
    assert_eq!(TimerRequest::Arm { channel: 1, at: 5 }.channel(), Some(1));
    assert_eq!(TimerRequest::ArmIn { channel: 3, micros: 5 }.channel(), Some(3));
    assert_eq!(TimerRequest::Disarm { channel: 0 }.channel(), Some(0));
    assert_eq!(TimerRequest::Now.channel(), None);
    assert_eq!(TimerRequest::Status.channel(), None);
}
