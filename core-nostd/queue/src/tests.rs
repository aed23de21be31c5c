extern crate std;

use super::*;
use proptest::prelude::*;
use reinc_proto::ClientId;
use std::vec::Vec;

fn id(seq: u64) -> RequestId {
    RequestId { client: ClientId(1), seq }
}

fn ids<const N: usize>(q: &RequestQueue<u32, N>) -> Vec<(u64, bool)> {
    q.iter().map(|(e, f)| (e.id.seq, f)).collect()
}

#[test]
fn fifo_order_and_window() {
    let mut q: RequestQueue<u32, 8> = RequestQueue::new();
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

#[test]
fn full_queue_is_backpressure_and_hands_the_payload_back() {
    let mut q: RequestQueue<u32, 2> = RequestQueue::new();
    q.push(id(0), 0, 0).unwrap();
    q.push(id(1), 1, 0).unwrap();
    assert_eq!(q.push(id(2), 42, 0), Err(QueueError::Full { capacity: 2, payload: 42 }));
    assert_eq!(q.len(), 2);
}

#[test]
fn duplicate_id_is_refused_even_when_full() {
    let mut q: RequestQueue<u32, 1> = RequestQueue::new();
    q.push(id(7), 0, 0).unwrap();
    assert_eq!(q.push(id(7), 9, 0), Err(QueueError::Duplicate { id: id(7), payload: 9 }));
}

#[test]
fn reply_out_of_order_is_refused_without_change() {
    let mut q: RequestQueue<u32, 4> = RequestQueue::new();
    q.push(id(0), 0, 0).unwrap();
    q.push(id(1), 1, 0).unwrap();
    assert_eq!(q.complete(id(0)), Err(CompleteError::NothingInFlight { got: id(0) }));
    q.forward_next(4);
    q.forward_next(4);
    assert_eq!(q.complete(id(1)), Err(CompleteError::OutOfOrder { expected: id(0), got: id(1) }));
    assert_eq!(ids(&q), [(0, true), (1, true)]);
}

#[test]
fn rewind_replays_from_head_in_order() {
    let mut q: RequestQueue<u32, 8> = RequestQueue::new();
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

#[test]
fn drop_head_only_between_instances() {
    let mut q: RequestQueue<u32, 4> = RequestQueue::new();
    q.push(id(0), 0, 0).unwrap();
    q.push(id(1), 0, 0).unwrap();
    q.forward_next(1);
    assert!(q.drop_head().is_none(), "head is in flight to a live instance");
    q.head_mut().unwrap().crashes += 1;
    q.rewind();
    let dropped = q.drop_head().unwrap();
    assert_eq!((dropped.id, dropped.crashes), (id(0), 1));
    assert_eq!(q.head().map(|e| e.id), Some(id(1)));
}

#[test]
fn drain_empties_oldest_first() {
    let mut q: RequestQueue<u32, 4> = RequestQueue::new();
    for s in 0..3 {
        q.push(id(s), 0, 0).unwrap();
    }
    q.forward_next(4);
    let drained: Vec<u64> = q.drain().map(|e| e.id.seq).collect();
    assert_eq!(drained, [0, 1, 2]);
    assert!(q.is_empty());
    assert_eq!(q.in_flight(), 0);
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

proptest! {
    /// Against a model: every accepted id is answered exactly once, in
    /// acceptance order, whatever the interleaving of crashes and forwards.
    #[test]
    fn every_accepted_request_completes_once_in_order(ops in proptest::collection::vec(arb_op(), 0..200)) {
        let mut q: RequestQueue<u8, 8> = RequestQueue::new();
        let mut model: std::collections::VecDeque<u8> = std::collections::VecDeque::new();
        let mut accepted = Vec::new();
        let mut completed = Vec::new();
        for op in ops {
            match op {
                Op::Push(s) => match q.push(id(u64::from(s)), s, 0) {
                    Ok(()) => { model.push_back(s); accepted.push(s); }
                    Err(QueueError::Duplicate { .. }) => prop_assert!(model.contains(&s)),
                    Err(QueueError::Full { .. }) => prop_assert_eq!(model.len(), 8),
                },
                Op::Forward(w) => { q.forward_next(usize::from(w)); }
                Op::ReplyHead => {
                    if let Some(h) = model.front().copied() {
                        match q.complete(id(u64::from(h))) {
                            Ok(e) => { prop_assert_eq!(e.payload, h); model.pop_front(); completed.push(h); }
                            Err(CompleteError::NothingInFlight { .. }) => prop_assert_eq!(q.in_flight(), 0),
                            Err(e) => prop_assert!(false, "unexpected {e:?}"),
                        }
                    }
                }
                Op::Crash => { prop_assert_eq!(q.rewind(), model.len()); }
            }
            prop_assert!(q.in_flight() <= q.len());
            prop_assert_eq!(q.len(), model.len());
        }
        completed.extend(q.drain().map(|e| e.payload));
        prop_assert_eq!(completed, accepted);
    }
}
