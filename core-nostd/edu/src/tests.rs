//! Behaviour of the edu core against the in-memory model.

use crate::model::{EduModel, MODEL_ID};
use crate::*;

fn reference_factorial(n: u32) -> u32 {
    (1..=n).product()
}

fn handler(model: EduModel) -> EduHandler<EduModel> {
    EduHandler::new(model, PollBudget(100))
}

/// Runs an interrupt-completed request the way the runtime does: start, let
/// the device work, see the line up, complete.
fn run_with_irq(h: &mut EduHandler<EduModel>, state: &EduState, req: &EduRequest) -> Step {
    match h.start(state, req) {
        Step::WaitIrq(p) => {
            h.edu().regs().finish_computation();
            assert!(h.edu().regs().irq_line(), "device should have raised its line for {req:?}");
            h.complete_after_irq(state, &p)
        }
        done => done,
    }
}

#[test]
fn register_offsets_match_edu_spec() {
    assert_eq!(ReadReg::Id.offset(), 0x00);
    assert_eq!(ReadReg::Liveness.offset(), 0x04);
    assert_eq!(ReadReg::Factorial.offset(), 0x08);
    assert_eq!(ReadReg::Status.offset(), 0x20);
    assert_eq!(ReadReg::IrqStatus.offset(), 0x24);
    assert_eq!(WriteReg::IrqRaise.offset(), 0x60);
    assert_eq!(WriteReg::IrqAck.offset(), 0x64);
    assert_eq!(ReadReg::DmaSrc.offset(), 0x80);
    assert_eq!(ReadReg::DmaCmd.offset(), 0x98);
    assert_eq!(core::mem::size_of::<RegisterBlock>(), 0x9c);
}

#[test]
fn identify_reports_version_from_id_register() {
    let mut h = handler(EduModel::new());
    let reply = h.start(&EduState::default(), &EduRequest::Identify);
    let Step::Done { reply: EduReply::Identity(id), .. } = reply else { panic!("{reply:?}") };
    assert_eq!((id.raw, id.major, id.minor), (0x0100_00ed, 1, 0));
}

#[test]
fn identify_refuses_a_device_that_is_not_edu() {
    let mut h = handler(EduModel::new().with_id(0x1234_5678));
    let step = h.start(&EduState::default(), &EduRequest::Identify);
    assert_eq!(
        step,
        Step::Done { reply: EduReply::Error(EduError::NotEdu { id: 0x1234_5678 }), state: EduState::default() }
    );
    assert_eq!(h.recover(), Err(EduError::NotEdu { id: 0x1234_5678 }));
}

#[test]
fn liveness_reads_back_the_inverse() {
    let mut h = handler(EduModel::new());
    for probe in [0, 1, 0xdead_beef, u32::MAX] {
        let step = h.start(&EduState::default(), &EduRequest::Liveness { probe });
        assert_eq!(step, Step::Done { reply: EduReply::Alive { probe, readback: !probe }, state: EduState::default() });
    }
}

#[test]
fn factorial_by_polling_matches_reference_and_counts() {
    let mut h = handler(EduModel::new().with_latency(7));
    let mut state = EduState::default();
    for n in 0..=MAX_FACTORIAL_N {
        let req = EduRequest::Factorial { n, completion: Completion::Polling };
        let Step::Done { reply, state: next } = h.start(&state, &req) else { panic!("polling must not wait") };
        assert_eq!(reply, EduReply::Factorial { n, value: reference_factorial(n) });
        assert_eq!(next.factorials, state.factorials + 1);
        state = next;
    }
    assert_eq!(state, EduState { factorials: 13, irqs_handled: 0 });
    assert!(!h.edu().regs().irq_line(), "polling mode must not raise the interrupt");
}

#[test]
fn factorial_polling_gives_up_on_a_wedged_device() {
    let mut h = handler(EduModel::new().with_latency(u32::MAX));
    let state = EduState::default();
    let step = h.start(&state, &EduRequest::Factorial { n: 5, completion: Completion::Polling });
    assert_eq!(step, Step::Done { reply: EduReply::Error(EduError::StillComputing { spins: 100 }), state });
}

#[test]
fn factorial_too_large_is_refused_without_touching_the_device() {
    let mut h = handler(EduModel::new());
    let state = EduState { factorials: 4, irqs_handled: 2 };
    let step = h.start(&state, &EduRequest::Factorial { n: 13, completion: Completion::Interrupt });
    assert_eq!(step, Step::Done { reply: EduReply::Error(EduError::FactorialTooLarge { n: 13 }), state });
    assert_eq!(h.edu().regs().accesses(), 0);
    assert!(EduError::FactorialTooLarge { n: 13 }.is_bad_request());
    assert!(!EduError::StillComputing { spins: 1 }.is_bad_request());
    assert!(EduError::MalformedRequest { len: 3 }.is_bad_request());
}

#[test]
fn factorial_by_interrupt_completes_after_the_irq_and_acks_it() {
    let mut h = handler(EduModel::new());
    let state = EduState::default();
    let req = EduRequest::Factorial { n: 10, completion: Completion::Interrupt };
    let Step::WaitIrq(pending) = h.start(&state, &req) else { panic!("interrupt mode must wait") };
    assert_eq!(pending, Pending::Factorial { n: 10 });
    assert!(h.edu().regs().status().contains(Status::IRQ_ON_DONE | Status::COMPUTING));
    h.edu().regs().finish_computation();
    assert!(h.edu().regs().irq_line());
    let step = h.complete_after_irq(&state, &pending);
    assert_eq!(
        step,
        Step::Done {
            reply: EduReply::Factorial { n: 10, value: 3_628_800 },
            state: EduState { factorials: 1, irqs_handled: 1 }
        }
    );
    assert!(!h.edu().regs().irq_line(), "the FACTORIAL bit must be acknowledged");
    assert!(!h.edu().regs().status().contains(Status::IRQ_ON_DONE), "IRQ_ON_DONE is cleared after use");
    assert_eq!(h.edu().regs().line_raises(), 1);
}

#[test]
fn interrupt_that_is_not_ours_keeps_waiting_and_changes_nothing() {
    let mut h = handler(EduModel::new().with_latency(1000));
    let state = EduState::default();
    let req = EduRequest::Factorial { n: 3, completion: Completion::Interrupt };
    let Step::WaitIrq(pending) = h.start(&state, &req) else { panic!() };
    // A spurious wake-up (shared INTx line) before the device finished.
    assert_eq!(h.complete_after_irq(&state, &pending), Step::WaitIrq(pending));
    h.edu().regs().finish_computation();
    let Step::Done { reply, .. } = h.complete_after_irq(&state, &pending) else { panic!() };
    assert_eq!(reply, EduReply::Factorial { n: 3, value: 6 });
}

#[test]
fn raise_then_ack_round_trip() {
    let mut h = handler(EduModel::new());
    let state = EduState { factorials: 2, irqs_handled: 5 };
    let req = EduRequest::RaiseIrq { bits: 0x40 };
    let Step::WaitIrq(pending) = h.start(&state, &req) else { panic!() };
    assert!(h.edu().regs().irq_line());
    assert_eq!(h.edu().regs().irq_status(), IrqBits::from_bits_retain(0x40));
    let step = h.complete_after_irq(&state, &pending);
    assert_eq!(
        step,
        Step::Done { reply: EduReply::IrqHandled { bits: 0x40 }, state: EduState { factorials: 2, irqs_handled: 6 } }
    );
    assert!(!h.edu().regs().irq_line());
}

#[test]
fn raise_with_no_bits_is_a_clear_error() {
    let mut h = handler(EduModel::new());
    let state = EduState::default();
    assert_eq!(
        h.start(&state, &EduRequest::RaiseIrq { bits: 0 }),
        Step::Done { reply: EduReply::Error(EduError::NoIrqBits), state }
    );
    assert!(!h.edu().regs().irq_line());
}

#[test]
fn abandon_undoes_the_interrupt_setup() {
    let mut h = handler(EduModel::new().with_latency(u32::MAX));
    let state = EduState::default();
    let Step::WaitIrq(p) = h.start(&state, &EduRequest::Factorial { n: 4, completion: Completion::Interrupt }) else {
        panic!()
    };
    let step = h.abandon(&state, &p);
    assert_eq!(step, Step::Done { reply: EduReply::Error(EduError::IrqTimeout { irq_status: 0 }), state });
    assert!(!h.edu().regs().status().contains(Status::IRQ_ON_DONE));
}

#[test]
fn replay_from_same_committed_state_gives_same_reply_and_device_state() {
    let requests = [
        EduRequest::Liveness { probe: 0x1234 },
        EduRequest::Factorial { n: 6, completion: Completion::Polling },
        EduRequest::Factorial { n: 8, completion: Completion::Interrupt },
        EduRequest::RaiseIrq { bits: 0x10 },
        EduRequest::Identify,
        EduRequest::Stats,
    ];
    let committed = EduState { factorials: 41, irqs_handled: 7 };
    for req in requests {
        // First execution: the driver applied the effect, then died before its
        // reply reached the supervisor. The new instance recovers and replays.
        let mut h = handler(EduModel::new());
        let first = run_with_irq(&mut h, &committed, &req);
        let device_after_first = h.edu().regs().clone();
        h.recover().expect("recover");
        let replay = run_with_irq(&mut h, &committed, &req);
        assert_eq!(first, replay, "replay of {req:?} must give the same reply and state");
        let (a, b) = (device_after_first, h.edu().regs().clone());
        assert_eq!(
            (a.status(), a.irq_status(), a.irq_line()),
            (b.status(), b.irq_status(), b.irq_line()),
            "replay of {req:?} must leave the device in the same state"
        );
        assert_eq!(
            EduRegisters::read(&mut a.clone(), ReadReg::Liveness),
            EduRegisters::read(&mut b.clone(), ReadReg::Liveness)
        );
    }
}

#[test]
fn crash_while_waiting_for_irq_then_replay_answers_once() {
    // Predecessor started an interrupt factorial and died before the interrupt.
    let committed = EduState { factorials: 3, irqs_handled: 3 };
    let req = EduRequest::Factorial { n: 12, completion: Completion::Interrupt };
    let mut dead = handler(EduModel::new().with_latency(50));
    assert!(matches!(dead.start(&committed, &req), Step::WaitIrq(_)));
    let mut h = handler(dead.edu().regs().clone());
    let rec = h.recover().expect("recover waits for the leftover computation");
    assert!(rec.was_computing && rec.irq_on_done_was_set);
    assert!(!h.edu().regs().irq_line(), "leftover computation must not leave an interrupt behind");
    let step = run_with_irq(&mut h, &committed, &req);
    assert_eq!(
        step,
        Step::Done {
            reply: EduReply::Factorial { n: 12, value: 479_001_600 },
            state: EduState { factorials: 4, irqs_handled: 4 }
        }
    );
}

#[test]
fn recover_clears_a_leftover_pending_interrupt() {
    let mut model = EduModel::new();
    // The dead predecessor: IRQ_ON_DONE on, its factorial finished and
    // interrupted, plus a raised software bit, none acknowledged.
    model.write(WriteReg::Status, Status::IRQ_ON_DONE.bits());
    model.write(WriteReg::Factorial, 4);
    model.finish_computation();
    model.write(WriteReg::IrqRaise, 0x20);
    assert!(model.irq_line());
    let mut h = handler(model);
    let rec = h.recover().expect("recover");
    assert_eq!(rec.acked, IrqBits::FACTORIAL | IrqBits::from_bits_retain(0x20));
    assert!(!rec.was_computing);
    assert!(rec.irq_on_done_was_set);
    assert!(!h.edu().regs().irq_line());
    assert_eq!(h.edu().regs().status(), Status::empty());
    // Idempotent: a second recover finds nothing.
    let again = h.recover().expect("recover");
    assert_eq!(again.acked, IrqBits::empty());
}

#[test]
fn recover_gives_up_on_a_device_that_never_finishes() {
    let mut model = EduModel::new().with_latency(u32::MAX);
    model.write(WriteReg::Factorial, 9);
    let mut h = handler(model);
    assert_eq!(h.recover(), Err(EduError::StillComputing { spins: 100 }));
}

#[test]
fn factorial_write_while_computing_is_ignored_by_the_model_like_qemu() {
    let mut m = EduModel::new().with_latency(10);
    m.write(WriteReg::Factorial, 3);
    m.write(WriteReg::Factorial, 5);
    m.finish_computation();
    assert_eq!(m.read(ReadReg::Factorial), 6);
}

#[test]
fn messages_round_trip_through_postcard() {
    let mut buf = [0u8; 64];
    let reqs = [
        EduRequest::Identify,
        EduRequest::Liveness { probe: 7 },
        EduRequest::Factorial { n: 12, completion: Completion::Interrupt },
        EduRequest::RaiseIrq { bits: 0x100 },
        EduRequest::Stats,
    ];
    for req in reqs {
        let bytes = postcard::to_slice(&req, &mut buf).expect("encode");
        assert_eq!(postcard::from_bytes::<EduRequest>(bytes).expect("decode"), req);
    }
    let replies = [
        EduReply::Factorial { n: 12, value: 479_001_600 },
        EduReply::Stats(EduState { factorials: u64::MAX, irqs_handled: 1 }),
        EduReply::Error(EduError::LivenessMismatch { probe: 1, got: 2 }),
        EduReply::Identity(Identity::from_raw(0x0100_00ed).expect("edu id")),
    ];
    for reply in replies {
        let bytes = postcard::to_slice(&reply, &mut buf).expect("encode");
        assert_eq!(postcard::from_bytes::<EduReply>(bytes).expect("decode"), reply);
    }
    let state = EduState { factorials: 3, irqs_handled: 9 };
    let bytes = postcard::to_slice(&state, &mut buf).expect("encode");
    assert_eq!(postcard::from_bytes::<EduState>(bytes).expect("decode"), state);
}

#[test]
fn truncated_request_is_rejected() {
    let mut buf = [0u8; 16];
    let bytes = postcard::to_slice(&EduRequest::Liveness { probe: u32::MAX }, &mut buf).expect("encode");
    let short = &bytes[..bytes.len() - 1];
    assert!(postcard::from_bytes::<EduRequest>(short).is_err());
}

#[test]
fn traces_are_drained_oldest_first_and_encode_for_the_runtime() {
    let mut h = handler(EduModel::new());
    let _ = h.start(&EduState::default(), &EduRequest::Identify);
    let _ = h.start(&EduState::default(), &EduRequest::Liveness { probe: 1 });
    let mut seen = [None; 4];
    let mut i = 0;
    h.edu().drain_traces(|t| {
        seen[i] = Some(t);
        i += 1;
    });
    assert_eq!(i, 2);
    assert_eq!(seen[0], Some(Trace::Identified { id: MODEL_ID }));
    assert_eq!(seen[1].map(|t| t.encode()), Some((2, 1, u64::from(!1u32))));
    let mut again = 0;
    h.edu().drain_traces(|_| again += 1);
    assert_eq!(again, 0);
}

/// The host path end to end: reinc-uio maps a file standing in for BAR0 and
/// hands out the typed block, which the handler drives through volatile
/// accesses. (A file has no device logic, so only plain storage is checked.)
#[cfg(feature = "uio")]
#[test]
fn typed_block_from_reinc_uio_drives_the_handler() {
    extern crate std;
    use std::io::Write;
    let mut file = tempfile::NamedTempFile::new().expect("tempfile");
    let mut bar = std::vec![0u8; 4096];
    bar[..4].copy_from_slice(&MODEL_ID.to_ne_bytes());
    file.write_all(&bar).expect("write");
    let map = reinc_uio::Mapping::file(file.path(), 0, 4096).expect("map");
    let regs = map.block::<RegisterBlock>(0).expect("block fits");
    let mut h = EduHandler::new(regs, PollBudget(10));
    let Step::Done { reply: EduReply::Identity(id), .. } = h.start(&EduState::default(), &EduRequest::Identify) else {
        panic!("identify")
    };
    assert_eq!(id.raw, MODEL_ID);
    let _ = h.start(&EduState::default(), &EduRequest::Liveness { probe: 0x55 });
    assert_eq!(map.read32(ReadReg::Liveness.offset()).expect("read"), 0x55, "plain memory stores, no inversion");
    let owned =
        reinc_uio::Mapping::file(file.path(), 0, 4096).expect("map").into_block::<RegisterBlock>(0).expect("fits");
    let mut owning = EduHandler::new(owned, PollBudget(10));
    assert!(owning.edu().identify().is_ok(), "the owning block is register access too");
    let small = reinc_uio::Mapping::file(file.path(), 0, 0x80).expect("map");
    let err = small.block::<RegisterBlock>(0).expect_err("0x80 < 0x9c");
    assert!(std::format!("{err}").contains("edu_core::regs::RegisterBlock"), "{err}");
}

mod properties {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn request() -> impl Strategy<Value = EduRequest> {
        prop_oneof![
            Just(EduRequest::Identify),
            any::<u32>().prop_map(|probe| EduRequest::Liveness { probe }),
            (0u32..=14, any::<bool>()).prop_map(|(n, irq)| EduRequest::Factorial {
                n,
                completion: if irq { Completion::Interrupt } else { Completion::Polling },
            }),
            (0u32..=0x1ff).prop_map(|bits| EduRequest::RaiseIrq { bits }),
            Just(EduRequest::Stats),
        ]
    }

    #[derive(Clone, Copy, Debug)]
    enum Crash {
        BeforeEffect,
        WhileWaitingForIrq,
        AfterEffectBeforeReply,
    }

    fn crash() -> impl Strategy<Value = Crash> {
        prop_oneof![Just(Crash::BeforeEffect), Just(Crash::WhileWaitingForIrq), Just(Crash::AfterEffectBeforeReply)]
    }

    /// Runs `reqs` like the supervisor would: each reply commits its state;
    /// at `crash_at` the driver dies at `kind`, a new instance recovers the
    /// device and the request is replayed from the last committed state.
    fn supervise(reqs: &[EduRequest], latency: u32, crash_at: Option<(usize, Crash)>) -> (Vec<EduReply>, EduState) {
        let mut h = handler(EduModel::new().with_latency(latency));
        h.recover().expect("fresh device recovers");
        let mut committed = EduState::default();
        let mut replies = Vec::new();
        for (i, req) in reqs.iter().enumerate() {
            if let Some((_, kind)) = crash_at.filter(|(at, _)| *at == i) {
                match kind {
                    Crash::BeforeEffect => {}
                    Crash::WhileWaitingForIrq => {
                        let _ = h.start(&committed, req);
                    }
                    Crash::AfterEffectBeforeReply => {
                        let _ = run_with_irq(&mut h, &committed, req);
                    }
                }
                // The successor gets the same device, in whatever state it was left.
                h = handler(h.edu().regs().clone());
                h.recover().expect("recover after crash");
            }
            let Step::Done { reply, state } = run_with_irq(&mut h, &committed, req) else {
                panic!("{req:?} did not complete after its interrupt")
            };
            committed = state;
            replies.push(reply);
        }
        (replies, committed)
    }

    proptest! {
        /// Whatever the crash point, clients see the same replies and the
        /// committed counters as a crash-free run: nothing lost, nothing doubled.
        #[test]
        fn replay_after_crash_is_indistinguishable(
            reqs in proptest::collection::vec(request(), 1..12),
            latency in 0u32..20,
            at in any::<prop::sample::Index>(),
            kind in crash(),
        ) {
            let clean = supervise(&reqs, latency, None);
            let crashed = supervise(&reqs, latency, Some((at.index(reqs.len()), kind)));
            prop_assert_eq!(&clean, &crashed);
            let factorials = clean.0.iter().filter(|r| matches!(r, EduReply::Factorial { .. })).count() as u64;
            prop_assert_eq!(clean.1.factorials, factorials);
        }
    }
}
