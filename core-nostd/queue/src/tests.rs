//! Every behaviour is checked over each storage kind: an inline array (the
//! firmware form), a boxed slice sized at run time (the supervisor's form),
//! and a borrowed slice (a firmware static).
extern crate std;

use super::*;
use proptest::prelude::*;
use reinc_proto::ClientId;
use std::boxed::Box;
use std::vec::Vec;

fn id(seq: u64) -> RequestId {
    RequestId { client: ClientId(1), seq }
}

fn boxed<P>(capacity: usize) -> Box<[Slot<P>]> {
    (0..capacity).map(|_| Slot::EMPTY).collect()
}

trait Storage<P>: AsRef<[Slot<P>]> + AsMut<[Slot<P>]> {}
impl<P, S: AsRef<[Slot<P>]> + AsMut<[Slot<P>]>> Storage<P> for S {}

fn ids<S: Storage<u32>>(q: &RequestQueue<u32, S>) -> Vec<(u64, bool)> {
    q.iter().map(|(e, f)| (e.id.seq, f)).collect()
}

/// One `#[test]` per storage kind for each `check(queue)`, with `$cap` slots.
macro_rules! over_every_storage {
    ($($name:ident($cap:literal) => $check:ident;)*) => {$(
        mod $name {
            use super::*;
            #[test]
            fn array() {
                $check(ArrayQueue::<u32, $cap>::new_const());
            }
            #[test]
            fn boxed_slice() {
                $check(RequestQueue::new(boxed::<u32>($cap)));
            }
            #[test]
            fn borrowed_slice() {
                let mut store = [const { Slot::<u32>::EMPTY }; $cap];
                $check(RequestQueue::new(&mut store[..]));
            }
        }
    )*};
}

over_every_storage! {
    fifo_order_and_window(8) => fifo_order_and_window;
    full_queue_is_backpressure_and_hands_the_payload_back(2) => full_queue_is_backpressure;
    duplicate_id_is_refused_even_when_full(1) => duplicate_refused_when_full;
    reply_out_of_order_is_refused_without_change(4) => reply_out_of_order_refused;
    rewind_replays_from_head_in_order(8) => rewind_replays_from_head;
    drop_head_only_between_instances(4) => drop_head_between_instances;
    drain_empties_oldest_first(4) => drain_oldest_first;
    order_survives_the_ring_wrapping_many_times(3) => order_survives_wrapping;
}

fn fifo_order_and_window<S: Storage<u32>>(mut q: RequestQueue<u32, S>) {
    for s in 0..5 {
        q.push(id(s), s as u32, 0).unwrap();
    }
    assert_eq!(q.forward_next(2).map(|e| e.id), Some(id(0)));
    assert_eq!(q.forward_next(2).map(|e| e.id), Some(id(1)));
    assert!(q.forward_next(2).is_none(), "window of 2 is full");
    assert_eq!(q.in_flight(), 2);
    assert_eq!(q.complete(id(0)).unwrap().payload, 0);
    assert_eq!(q.forward_next(2).map(|e| e.id), Some(id(2)));
    assert_eq!(ids(&q), [(1, true), (2, true), (3, false), (4, false)]);
}

fn full_queue_is_backpressure<S: Storage<u32>>(mut q: RequestQueue<u32, S>) {
    assert_eq!(q.capacity(), 2);
    q.push(id(0), 0, 0).unwrap();
    q.push(id(1), 1, 0).unwrap();
    assert_eq!(q.push(id(2), 42, 0), Err(QueueError::Full { capacity: 2, payload: 42 }));
    assert_eq!(q.len(), 2);
    assert_eq!(ids(&q), [(0, false), (1, false)], "the refused push changed nothing");
}

fn duplicate_refused_when_full<S: Storage<u32>>(mut q: RequestQueue<u32, S>) {
    q.push(id(7), 0, 0).unwrap();
    assert_eq!(q.push(id(7), 9, 0), Err(QueueError::Duplicate { id: id(7), payload: 9 }));
}

fn reply_out_of_order_refused<S: Storage<u32>>(mut q: RequestQueue<u32, S>) {
    q.push(id(0), 0, 0).unwrap();
    q.push(id(1), 1, 0).unwrap();
    assert_eq!(q.complete(id(0)), Err(CompleteError::NothingInFlight { got: id(0) }));
    q.forward_next(4);
    q.forward_next(4);
    assert_eq!(q.complete(id(1)), Err(CompleteError::OutOfOrder { expected: id(0), got: id(1) }));
    assert_eq!(ids(&q), [(0, true), (1, true)]);
}

fn rewind_replays_from_head<S: Storage<u32>>(mut q: RequestQueue<u32, S>) {
    for s in 0..4 {
        q.push(id(s), 0, 0).unwrap();
    }
    q.forward_next(3);
    q.forward_next(3);
    q.complete(id(0)).unwrap();
    assert_eq!(q.rewind(), 3);
    assert_eq!(q.in_flight(), 0);
    let replayed: Vec<u64> = core::iter::from_fn(|| q.forward_next(8).map(|e| e.id.seq)).collect();
    assert_eq!(replayed, [1, 2, 3]);
}

fn drop_head_between_instances<S: Storage<u32>>(mut q: RequestQueue<u32, S>) {
    q.push(id(0), 0, 0).unwrap();
    q.push(id(1), 0, 0).unwrap();
    q.forward_next(1);
    assert!(q.drop_head().is_none(), "head is in flight to a live instance");
    assert_eq!(q.blame_head().map(|e| (e.id, e.crashes)), Some((id(0), 1)));
    q.rewind();
    let dropped = q.drop_head().unwrap();
    assert_eq!((dropped.id, dropped.crashes), (id(0), 1));
    assert_eq!(q.head().map(|e| e.id), Some(id(1)));
}

fn drain_oldest_first<S: Storage<u32>>(mut q: RequestQueue<u32, S>) {
    for s in 0..3 {
        q.push(id(s), 0, 0).unwrap();
    }
    q.forward_next(4);
    let drained: Vec<u64> = q.drain().map(|e| e.id.seq).collect();
    assert_eq!(drained, [0, 1, 2]);
    assert!(q.is_empty());
    assert_eq!(q.in_flight(), 0);
}

/// Capacity 3, pushed and answered far past the end of the storage: the
/// ring's head and tail wrap, and order, window and replay still hold.
fn order_survives_wrapping<S: Storage<u32>>(mut q: RequestQueue<u32, S>) {
    let (mut next_push, mut next_reply) = (0u64, 0u64);
    for round in 0..20 {
        while q.push(id(next_push), next_push as u32, 0).is_ok() {
            next_push += 1;
        }
        assert_eq!(q.len(), 3);
        if round % 3 == 0 {
            assert_eq!(q.rewind(), 3, "a crash keeps every entry");
        }
        // Already in flight stay so; the window of 2 is topped up in order.
        let first_new = next_reply + q.in_flight() as u64;
        let sent: Vec<u64> = core::iter::from_fn(|| q.forward_next(2).map(|e| e.id.seq)).collect();
        assert_eq!(sent, (first_new..next_reply + 2).collect::<Vec<_>>());
        assert_eq!(q.complete(id(next_reply)).unwrap().payload, next_reply as u32);
        next_reply += 1;
    }
    assert_eq!(ids(&q), [(next_reply, true), (next_reply + 1, false)]);
}

/// The hash index across many clients and a ring that has wrapped: every
/// queued id is found, every answered one is gone and may be queued again.
#[test]
fn duplicates_are_found_in_a_deep_wrapped_queue() {
    let rid = |n: u64| RequestId { client: ClientId(n % 13), seq: n / 13 };
    let mut q = RequestQueue::new(boxed::<u64>(1_000));
    for n in 0..1_000 {
        q.push(rid(n), n, 0).unwrap();
    }
    q.rewind();
    for n in 0..600 {
        let e = q.forward_next(1).map(|e| e.id);
        assert_eq!(e, Some(rid(n)));
        assert_eq!(q.complete(rid(n)).unwrap().payload, n);
    }
    for n in 1_000..1_600 {
        q.push(rid(n), n, 0).unwrap();
    }
    for n in 0..1_600 {
        assert_eq!(q.contains(rid(n)), n >= 600, "{:?}", rid(n));
    }
    assert!(matches!(q.push(rid(1_234), 0, 0), Err(QueueError::Duplicate { .. })));
    let queued: Vec<u64> = q.iter().map(|(e, _)| e.payload).collect();
    assert_eq!(queued, (600..1_600).collect::<Vec<_>>());
    q.forward_next(1);
    q.complete(rid(600)).unwrap();
    q.push(rid(0), 0, 0).expect("an answered id may be queued again");
    assert!(q.contains(rid(0)) && !q.contains(rid(600)));
}

#[test]
fn capacity_is_the_storage_length() {
    assert_eq!(RequestQueue::new(boxed::<u32>(10_000)).capacity(), 10_000);
    assert_eq!(ArrayQueue::<u32, 5>::default().capacity(), 5);
    let mut q = RequestQueue::new(boxed::<u32>(0));
    assert_eq!(q.push(id(0), 3, 0), Err(QueueError::Full { capacity: 0, payload: 3 }));
}

#[test]
fn new_empties_storage_left_by_an_earlier_queue() {
    let mut q = RequestQueue::new(boxed::<u32>(4));
    q.push(id(0), 0, 0).unwrap();
    q.push(id(1), 1, 0).unwrap();
    let storage = q.slots;
    let mut q = RequestQueue::new(storage);
    assert!(q.is_empty());
    for s in 0..4 {
        q.push(id(s), 0, 0).unwrap();
    }
    assert_eq!(q.len(), 4, "every slot is free again");
}

#[test]
fn a_static_array_queue_needs_no_allocator() {
    // The firmware form: a `static` initialised at compile time.
    static QUEUE: ArrayQueue<u8, 16> = RequestQueue::new_const();
    assert_eq!((QUEUE.capacity(), QUEUE.len()), (16, 0));
}

#[derive(Debug, Clone)]
enum Op {
    Push(u8),
    Forward(u8),
    ReplyHead,
    Crash,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![(0u8..40).prop_map(Op::Push), (1u8..6).prop_map(Op::Forward), Just(Op::ReplyHead), Just(Op::Crash),]
}

/// Against a model: every accepted id is answered exactly once, in
/// acceptance order, whatever the interleaving of crashes and forwards.
fn completes_once_in_order<S: AsRef<[Slot<u8>]> + AsMut<[Slot<u8>]>>(
    mut q: RequestQueue<u8, S>,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let cap = q.capacity();
    let mut model: std::collections::VecDeque<u8> = std::collections::VecDeque::new();
    let mut accepted = Vec::new();
    let mut completed = Vec::new();
    for op in ops {
        match op {
            Op::Push(s) => match q.push(id(u64::from(s)), s, 0) {
                Ok(()) => {
                    model.push_back(s);
                    accepted.push(s);
                }
                Err(QueueError::Duplicate { .. }) => prop_assert!(model.contains(&s)),
                Err(QueueError::Full { .. }) => prop_assert_eq!(model.len(), cap),
            },
            Op::Forward(w) => {
                q.forward_next(usize::from(w));
            }
            Op::ReplyHead => {
                if let Some(h) = model.front().copied() {
                    match q.complete(id(u64::from(h))) {
                        Ok(e) => {
                            prop_assert_eq!(e.payload, h);
                            model.pop_front();
                            completed.push(h);
                        }
                        Err(CompleteError::NothingInFlight { .. }) => prop_assert_eq!(q.in_flight(), 0),
                        Err(e) => prop_assert!(false, "unexpected {e:?}"),
                    }
                }
            }
            Op::Crash => {
                prop_assert_eq!(q.rewind(), model.len());
            }
        }
        prop_assert!(q.in_flight() <= q.len());
        prop_assert_eq!(q.len(), model.len());
        for s in 0..40u8 {
            prop_assert_eq!(q.contains(id(u64::from(s))), model.contains(&s), "index disagrees on {}", s);
        }
    }
    completed.extend(q.drain().map(|e| e.payload));
    prop_assert_eq!(completed, accepted);
    Ok(())
}

proptest! {
    #[test]
    fn every_accepted_request_completes_once_in_order_array(ops in proptest::collection::vec(arb_op(), 0..200)) {
        completes_once_in_order(ArrayQueue::<u8, 8>::new_const(), ops)?;
    }

    #[test]
    fn every_accepted_request_completes_once_in_order_boxed(
        cap in 1usize..12,
        ops in proptest::collection::vec(arb_op(), 0..200),
    ) {
        completes_once_in_order(RequestQueue::new(boxed::<u8>(cap)), ops)?;
    }
}
