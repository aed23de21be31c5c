//! Behaviour of the handler and the restore, against the model.

extern crate std;

use std::vec::Vec;

use proptest::prelude::*;

use crate::model::Write;
use crate::*;

fn pin(n: u8) -> Pin {
    Pin::new(n).unwrap()
}

fn gpio() -> Gpio<GpioModel> {
    Gpio::new(GpioModel::new(), PinSet::ALL)
}

/// Runs `req`, commits its state like the supervisor would, returns the reply.
fn run<R: GpioRegisters>(g: &mut Gpio<R>, state: &mut GpioState, req: GpioRequest) -> GpioReply {
    let h = g.handle(state, &req);
    if let Some(s) = h.commit {
        *state = s;
    }
    h.reply
}

#[test]
fn invalid_pin_is_refused_without_any_register_write() {
    let mut g = gpio();
    let state = GpioState::default();
    for bad in [54u8, 63, 200, 255] {
        let reqs = [
            GpioRequest::SetDirection { pin: bad, dir: Direction::Output },
            GpioRequest::SetLevel { pin: bad, level: Level::High },
            GpioRequest::Toggle { pin: bad },
            GpioRequest::Read { pin: bad },
            GpioRequest::ConfigureEdge { pin: bad, detect: Detect::RISING },
        ];
        for req in reqs {
            let h = g.handle(&state, &req);
            assert_eq!(h.reply, GpioReply::Error(GpioError::InvalidPin { pin: bad }), "{req:?}");
            assert_eq!(h.commit, None);
            assert_eq!(h.effect, None);
        }
    }
    let h = g.handle(&state, &GpioRequest::ClearEvents(AtLeastOnce(PinSet::from_bits(1).unwrap())));
    assert!(h.effect.is_some(), "a valid clear does write");
    g.regs_mut().clear_log();
    // A deserialised pin set is not trusted: bit 54 and up are refused.
    let forged: PinSet = postcard::from_bytes(&postcard::to_allocvec(&(1u64 << 60)).unwrap()).unwrap();
    let h = g.handle(&state, &GpioRequest::ClearEvents(AtLeastOnce(forged)));
    assert_eq!(h.reply, GpioReply::Error(GpioError::InvalidPinSet { bits: 1 << 60 }));
    assert_eq!(g.regs().write_count(), 0, "refused requests must not write: {:?}", g.regs().log());
}

#[test]
fn pin_outside_allowed_set_is_refused_but_readable() {
    let allowed = PinSet::EMPTY.with(pin(17), true).with(pin(27), true);
    let mut g = Gpio::new(GpioModel::new(), allowed);
    let state = GpioState::default();
    let h = g.handle(&state, &GpioRequest::SetDirection { pin: 14, dir: Direction::Output });
    assert_eq!(h.reply, GpioReply::Error(GpioError::PinNotAllowed { pin: 14 }));
    let h = g.handle(&state, &GpioRequest::ClearEvents(AtLeastOnce(pin(14).as_set())));
    assert_eq!(h.reply, GpioReply::Error(GpioError::PinNotAllowed { pin: 14 }));
    assert_eq!(g.regs().write_count(), 0);
    let h = g.handle(&state, &GpioRequest::Read { pin: 14 });
    assert!(matches!(h.reply, GpioReply::Level { pin: 14, .. }));
}

#[test]
fn set_direction_changes_only_that_pins_field() {
    let mut g = gpio();
    let mut state = GpioState::default();
    // GPIO10..19 share GPFSEL1; put a neighbour in an alternate function first.
    g.regs_mut().write_fsel(1, Function::Alt0.field() << pin(14).fsel_shift());
    let reply = run(&mut g, &mut state, GpioRequest::SetDirection { pin: 17, dir: Direction::Output });
    assert_eq!(reply, GpioReply::DirectionSet { pin: 17, dir: Direction::Output });
    assert_eq!(g.regs().function(pin(17)), Function::Output);
    assert_eq!(g.regs().function(pin(14)), Function::Alt0, "neighbour in the same GPFSEL kept");
    assert_eq!(state.direction(pin(17)), Some(Direction::Output));
    assert_eq!(state.direction(pin(14)), None);
}

#[test]
fn set_level_drives_the_output_and_reads_back() {
    let mut g = gpio();
    let mut state = GpioState::default();
    for n in [0u8, 17, 31, 32, 47, 53] {
        run(&mut g, &mut state, GpioRequest::SetDirection { pin: n, dir: Direction::Output });
        for level in [Level::High, Level::Low, Level::High] {
            assert_eq!(
                run(&mut g, &mut state, GpioRequest::SetLevel { pin: n, level }),
                GpioReply::LevelSet { pin: n, level }
            );
            let read = run(&mut g, &mut state, GpioRequest::Read { pin: n });
            assert_eq!(read, GpioReply::Level { pin: n, level, function: Function::Output }, "pin {n}");
        }
    }
    // GPSET/GPCLR carry only the pin's own bit: no read-modify-write of levels.
    g.regs_mut().clear_log();
    run(&mut g, &mut state, GpioRequest::SetLevel { pin: 40, level: Level::High });
    assert_eq!(g.regs().log(), &[Write::Set(Bank::B1, 1 << 8)]);
}

#[test]
fn input_pin_reads_the_external_level() {
    let mut g = gpio();
    let mut state = GpioState::default();
    run(&mut g, &mut state, GpioRequest::SetDirection { pin: 4, dir: Direction::Input });
    g.regs_mut().drive(pin(4), Level::High);
    assert_eq!(
        run(&mut g, &mut state, GpioRequest::Read { pin: 4 }),
        GpioReply::Level { pin: 4, level: Level::High, function: Function::Input }
    );
}

#[test]
fn toggle_is_resolved_against_committed_level() {
    let mut g = gpio();
    let mut state = GpioState::default();
    run(&mut g, &mut state, GpioRequest::SetDirection { pin: 17, dir: Direction::Output });
    run(&mut g, &mut state, GpioRequest::SetLevel { pin: 17, level: Level::Low });
    // The device disagrees with the committed state (someone poked it); the
    // toggle still targets the inverse of the *committed* level.
    g.regs_mut().set(Bank::B0, 1 << 17);
    let h = g.handle(&state, &GpioRequest::Toggle { pin: 17 });
    assert_eq!(h.effect, Some(Effect::Level { pin: pin(17), level: Level::High }));
    assert_eq!(h.reply, GpioReply::LevelSet { pin: 17, level: Level::High });
    state = h.commit.unwrap();
    assert_eq!(
        run(&mut g, &mut state, GpioRequest::Toggle { pin: 17 }),
        GpioReply::LevelSet { pin: 17, level: Level::Low }
    );
    assert_eq!(g.regs().pin_level(pin(17)), Level::Low);
}

#[test]
fn toggle_without_committed_level_is_refused() {
    let mut g = gpio();
    let mut state = GpioState::default();
    run(&mut g, &mut state, GpioRequest::SetDirection { pin: 17, dir: Direction::Output });
    g.regs_mut().clear_log();
    let h = g.handle(&state, &GpioRequest::Toggle { pin: 17 });
    assert_eq!(h.reply, GpioReply::Error(GpioError::LevelUnknown { pin: 17 }));
    assert_eq!(g.regs().write_count(), 0);
}

#[test]
fn replay_after_crash_before_reply_gives_same_reply_and_pins() {
    let mut g = gpio();
    let mut state = GpioState::default();
    run(&mut g, &mut state, GpioRequest::SetDirection { pin: 17, dir: Direction::Output });
    run(&mut g, &mut state, GpioRequest::SetLevel { pin: 17, level: Level::High });
    // The driver applies the toggle, then dies before its reply (no commit).
    let first = g.handle(&state, &GpioRequest::Toggle { pin: 17 });
    // The new instance restores the last committed state, then the replay.
    g.restore(&state).unwrap();
    let replay = g.handle(&state, &GpioRequest::Toggle { pin: 17 });
    assert_eq!(first, replay);
    assert_eq!(g.regs().pin_level(pin(17)), Level::Low, "toggled exactly once");
}

#[test]
fn unchanged_state_commits_nothing() {
    let mut g = gpio();
    let mut state = GpioState::default();
    let first = g.handle(&state, &GpioRequest::SetLevel { pin: 5, level: Level::High });
    assert!(first.commit.is_some());
    state = first.commit.unwrap();
    let again = g.handle(&state, &GpioRequest::SetLevel { pin: 5, level: Level::High });
    assert_eq!(again.commit, None);
    assert!(again.effect.is_some(), "the absolute write still happens");
    assert_eq!(g.handle(&state, &GpioRequest::Read { pin: 5 }).commit, None);
}

#[test]
fn restore_after_crash_reapplies_directions_and_levels() {
    let mut g = gpio();
    let mut state = GpioState::default();
    run(&mut g, &mut state, GpioRequest::SetDirection { pin: 17, dir: Direction::Output });
    run(&mut g, &mut state, GpioRequest::SetLevel { pin: 17, level: Level::High });
    run(&mut g, &mut state, GpioRequest::SetDirection { pin: 42, dir: Direction::Output });
    run(&mut g, &mut state, GpioRequest::SetLevel { pin: 42, level: Level::Low });
    run(&mut g, &mut state, GpioRequest::SetDirection { pin: 4, dir: Direction::Input });
    run(&mut g, &mut state, GpioRequest::ConfigureEdge { pin: 4, detect: Detect::RISING | Detect::FALLING });
    // The checkpoint travels as bytes through the supervisor.
    let bytes = postcard::to_allocvec(&state).unwrap();
    let checkpoint: GpioState = postcard::from_bytes(&bytes).unwrap();

    g.regs_mut().reset();
    let trace = g.restore(&checkpoint).unwrap();
    assert_eq!(trace, Trace::Restored { pins: pin(17).as_set().union(pin(42).as_set()).union(pin(4).as_set()) });
    let m = g.regs();
    assert_eq!((m.function(pin(17)), m.pin_level(pin(17))), (Function::Output, Level::High));
    assert_eq!((m.function(pin(42)), m.pin_level(pin(42))), (Function::Output, Level::Low));
    assert_eq!(m.function(pin(4)), Function::Input);
    assert_eq!(m.detect(DetectKind::Rising, Bank::B0), 1 << 4);
    assert_eq!(m.detect(DetectKind::Falling, Bank::B0), 1 << 4);
    assert_eq!(m.detect(DetectKind::High, Bank::B0), 0);
    // And the blink goes on from the committed level.
    assert_eq!(
        run(&mut g, &mut state, GpioRequest::Toggle { pin: 17 }),
        GpioReply::LevelSet { pin: 17, level: Level::Low }
    );
}

#[test]
fn restore_sets_latches_before_switching_pins_to_output() {
    let mut g = gpio();
    let mut state = GpioState::default();
    run(&mut g, &mut state, GpioRequest::SetDirection { pin: 17, dir: Direction::Output });
    run(&mut g, &mut state, GpioRequest::SetLevel { pin: 17, level: Level::High });
    g.regs_mut().reset();
    g.regs_mut().clear_log();
    g.restore(&state).unwrap();
    let log = g.regs().log();
    let first_fsel = log.iter().position(|w| matches!(w, Write::Fsel { .. })).unwrap();
    let set = log.iter().position(|w| *w == Write::Set(Bank::B0, 1 << 17)).unwrap();
    assert!(set < first_fsel, "latch must be high before the pin drives: {log:?}");
}

#[test]
fn restore_leaves_unmanaged_pins_alone() {
    let mut g = gpio();
    let mut state = GpioState::default();
    run(&mut g, &mut state, GpioRequest::SetDirection { pin: 17, dir: Direction::Output });
    run(&mut g, &mut state, GpioRequest::SetLevel { pin: 17, level: Level::High });
    // The kernel owns GPIO14/15 (UART) in ALT0 and keeps latch bits of others.
    g.regs_mut().write_fsel(1, (Function::Alt0.field() << 12) | (Function::Alt0.field() << 15));
    g.regs_mut().set(Bank::B0, 1 << 22);
    g.regs_mut().clear_log();
    g.restore(&state).unwrap();
    let m = g.regs();
    assert_eq!(m.function(pin(14)), Function::Alt0);
    assert_eq!(m.function(pin(15)), Function::Alt0);
    assert_eq!(m.latch(pin(22)), Level::High);
    assert_eq!(m.function(pin(17)), Function::Output);
    for w in m.log() {
        match *w {
            Write::Set(_, mask) | Write::Clear(_, mask) => assert_eq!(mask, 1 << 17, "{w:?}"),
            Write::Fsel { index, .. } => assert_eq!(index, 1),
            other => panic!("unexpected write {other:?}"),
        }
    }
    // Restoring onto a device that already matches writes no GPFSEL at all.
    g.regs_mut().clear_log();
    g.restore(&state).unwrap();
    assert!(!g.regs().log().iter().any(|w| matches!(w, Write::Fsel { .. })), "{:?}", g.regs().log());
}

#[test]
fn corrupt_checkpoint_is_refused_without_writing() {
    let mut g = gpio();
    // Forge checkpoints field by field through their postcard encoding:
    // (directions, outputs, levels, high, detects, detect[6]).
    let forge =
        |fields: [u64; 11]| -> GpioState { postcard::from_bytes(&postcard::to_allocvec(&fields).unwrap()).unwrap() };
    let mut f = [0u64; 11];
    f[0] = 1 << 54;
    assert_eq!(g.restore(&forge(f)), Err(StateError::InvalidPins { what: "directions", bits: 1 << 54 }));
    let mut f = [0u64; 11];
    f[1] = 1 << 3; // output without a direction
    assert!(matches!(g.restore(&forge(f)), Err(StateError::Inconsistent { .. })));
    let mut f = [0u64; 11];
    f[3] = 1; // high without a level
    assert!(matches!(g.restore(&forge(f)), Err(StateError::Inconsistent { .. })));
    let mut f = [0u64; 11];
    f[7] = 1 << 9; // GPHEN without "detects"
    assert!(matches!(g.restore(&forge(f)), Err(StateError::Inconsistent { .. })));
    assert_eq!(g.regs().write_count(), 0);
}

#[test]
fn checkpoint_managing_a_forbidden_pin_is_refused() {
    let mut free = gpio();
    let mut state = GpioState::default();
    run(&mut free, &mut state, GpioRequest::SetLevel { pin: 14, level: Level::High });
    let mut fenced = Gpio::new(GpioModel::new(), pin(17).as_set());
    assert_eq!(fenced.restore(&state), Err(StateError::PinNotAllowed { pin: 14 }));
    assert_eq!(fenced.regs().write_count(), 0);
    let msg = std::format!("{}", StateError::PinNotAllowed { pin: 14 });
    assert!(msg.contains("gpio_driver") && msg.contains("14"), "{msg}");
}

#[test]
fn rising_edge_latches_an_event_and_clear_events_clears_it() {
    let mut g = gpio();
    let mut state = GpioState::default();
    run(&mut g, &mut state, GpioRequest::SetDirection { pin: 23, dir: Direction::Input });
    let reply = run(&mut g, &mut state, GpioRequest::ConfigureEdge { pin: 23, detect: Detect::RISING });
    assert_eq!(reply, GpioReply::EdgeConfigured { pin: 23, detect: Detect::RISING });
    assert_eq!(state.detect(pin(23)), Some(Detect::RISING));
    assert_eq!(run(&mut g, &mut state, GpioRequest::ReadEvents), GpioReply::Events { pending: PinSet::EMPTY });
    g.regs_mut().drive(pin(23), Level::High);
    let one = pin(23).as_set();
    assert_eq!(run(&mut g, &mut state, GpioRequest::ReadEvents), GpioReply::Events { pending: one });
    // Reading does not clear (GPEDS is write-1-to-clear).
    assert_eq!(run(&mut g, &mut state, GpioRequest::ReadEvents), GpioReply::Events { pending: one });
    let req = GpioRequest::ClearEvents(AtLeastOnce(one));
    assert_eq!(req.replay(), Replay::AtLeastOnce);
    assert_eq!(run(&mut g, &mut state, req), GpioReply::EventsCleared { pins: one });
    assert_eq!(run(&mut g, &mut state, GpioRequest::ReadEvents), GpioReply::Events { pending: PinSet::EMPTY });
    // A falling edge is not configured: nothing latches.
    g.regs_mut().drive(pin(23), Level::Low);
    assert_eq!(run(&mut g, &mut state, GpioRequest::ReadEvents), GpioReply::Events { pending: PinSet::EMPTY });
}

#[test]
fn configure_edge_is_absolute() {
    let mut g = gpio();
    let mut state = GpioState::default();
    run(&mut g, &mut state, GpioRequest::ConfigureEdge { pin: 33, detect: Detect::RISING | Detect::ASYNC_FALLING });
    run(&mut g, &mut state, GpioRequest::ConfigureEdge { pin: 33, detect: Detect::FALLING });
    let m = g.regs();
    assert_eq!(m.detect(DetectKind::Rising, Bank::B1), 0, "previous configuration replaced, not merged");
    assert_eq!(m.detect(DetectKind::AsyncFalling, Bank::B1), 0);
    assert_eq!(m.detect(DetectKind::Falling, Bank::B1), 1 << 1);
    assert_eq!(state.detect(pin(33)), Some(Detect::FALLING));
}

#[test]
fn detect_flags_with_unknown_bits_are_refused() {
    let mut g = gpio();
    let forged: Detect = postcard::from_bytes(&postcard::to_allocvec(&0x81u8).unwrap()).unwrap();
    let h = g.handle(&GpioState::default(), &GpioRequest::ConfigureEdge { pin: 3, detect: forged });
    assert_eq!(h.reply, GpioReply::Error(GpioError::InvalidDetect { bits: 0x81 }));
    assert_eq!(g.regs().write_count(), 0);
}

#[test]
fn messages_roundtrip_through_postcard() {
    let reqs = [
        GpioRequest::SetDirection { pin: 17, dir: Direction::Output },
        GpioRequest::Toggle { pin: 53 },
        GpioRequest::ConfigureEdge { pin: 2, detect: Detect::HIGH | Detect::LOW },
        GpioRequest::ClearEvents(AtLeastOnce(PinSet::ALL)),
    ];
    for r in reqs {
        let back: GpioRequest = postcard::from_bytes(&postcard::to_allocvec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
    let reply = GpioReply::Error(GpioError::InvalidPin { pin: 99 });
    let back: GpioReply = postcard::from_bytes(&postcard::to_allocvec(&reply).unwrap()).unwrap();
    assert_eq!(back, reply);
}

#[test]
fn error_messages_name_the_device_and_pin() {
    let msg = std::format!("{}", GpioError::InvalidPin { pin: 60 });
    assert!(msg.contains("GPIO pin 60") && msg.contains("0..=53"), "{msg}");
}

#[test]
fn trace_entries_map_to_driver_events() {
    let t = Trace::Applied(Effect::Level { pin: pin(17), level: Level::High });
    assert_eq!(t.event(), reinc_ringbuf::Event::Driver { code: 0x6102, a: 17, b: Level::High as u64 });
    let t = Trace::Refused(GpioError::InvalidPin { pin: 70 });
    assert_eq!(t.event(), reinc_ringbuf::Event::Driver { code: 0x6106, a: 70, b: 0 });
}

fn request() -> impl Strategy<Value = GpioRequest> {
    // Mostly valid pins, some invalid ones, so refusals interleave with effects.
    let p = prop_oneof![8 => 0u8..54, 1 => 54u8..=255];
    let level = prop_oneof![Just(Level::Low), Just(Level::High)];
    let dir = prop_oneof![Just(Direction::Input), Just(Direction::Output)];
    prop_oneof![
        (p.clone(), dir).prop_map(|(pin, dir)| GpioRequest::SetDirection { pin, dir }),
        (p.clone(), level).prop_map(|(pin, level)| GpioRequest::SetLevel { pin, level }),
        p.clone().prop_map(|pin| GpioRequest::Toggle { pin }),
        p.clone().prop_map(|pin| GpioRequest::Read { pin }),
        (p, 0u8..64).prop_map(|(pin, d)| GpioRequest::ConfigureEdge { pin, detect: Detect::from_bits_truncate(d) }),
    ]
}

fn device_snapshot(m: &GpioModel) -> Vec<(Function, Level)> {
    (0..PIN_COUNT).map(|n| (m.function(pin(n)), m.latch(pin(n)))).collect()
}

proptest! {
    /// The supervisor's replay contract: crash anywhere (after the effect,
    /// before the reply), restore the last commit, replay the unanswered
    /// request, and the device and every reply end up exactly as in a run
    /// without crashes.
    #[test]
    fn replay_after_crashes_matches_a_crash_free_run(
        reqs in proptest::collection::vec(request(), 1..40),
        crashes in proptest::collection::vec(any::<bool>(), 40),
    ) {
        let mut clean = gpio();
        let mut clean_state = GpioState::default();
        let clean_replies: Vec<GpioReply> =
            reqs.iter().map(|r| run(&mut clean, &mut clean_state, *r)).collect();

        let mut g = gpio();
        let mut state = GpioState::default();
        let mut replies = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            if crashes[i] {
                let _lost = g.handle(&state, r); // effect applied, reply lost
                g.restore(&state).unwrap();      // new instance
            }
            replies.push(run(&mut g, &mut state, *r));
        }
        prop_assert_eq!(replies, clean_replies);
        prop_assert_eq!(state, clean_state);
        prop_assert_eq!(device_snapshot(g.regs()), device_snapshot(clean.regs()));
    }
}

/// The host path end to end: reinc-uio maps a file standing in for the GPIO
/// page and hands out the typed block (owned, as the driver keeps it); the
/// handler's writes land at the datasheet offsets. (A file has no device
/// logic: GPSET is plain storage here.)
#[cfg(feature = "uio")]
#[test]
fn typed_block_from_reinc_uio_drives_the_handler() {
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    file.as_file().set_len(4096).expect("size");
    let block =
        reinc_uio::Mapping::file(file.path(), 0, 4096).expect("map").into_block::<RegisterBlock>(0).expect("fits");
    let mut g = Gpio::new(block, PinSet::ALL);
    let mut state = GpioState::default();
    run(&mut g, &mut state, GpioRequest::SetDirection { pin: 17, dir: Direction::Output });
    run(&mut g, &mut state, GpioRequest::SetLevel { pin: 17, level: Level::High });
    let view = reinc_uio::Mapping::file(file.path(), 0, 4096).expect("map");
    assert_eq!(view.read32(0x04).unwrap(), Function::Output.field() << pin(17).fsel_shift(), "GPFSEL1");
    assert_eq!(view.read32(0x1C).unwrap(), 1 << 17, "GPSET0");
    let small = reinc_uio::Mapping::file(file.path(), 0, 0xB0).expect("map");
    let err = small.block::<RegisterBlock>(0).expect_err("0xB0 < 0xB4");
    assert!(std::format!("{err}").contains("RegisterBlock"), "{err}");
}
