//! The misbehave client: counter requests to the misbehaving driver, 4 in
//! flight, each reply's counter one above the last; on an order from the
//! injector it sends one request that makes the driver misbehave, and
//! reports how that request ended.

use super::Shared;
use crate::misbehave::{self, Misbehaviour};
use reinc_client::{Client, client_socket};
use reinc_proto::CallError;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Instant;

/// A request to the misbehave client: misbehave this way, tell me the outcome.
pub(crate) type MisOrder = (Misbehaviour, mpsc::Sender<MisResult>);

/// How one misbehaviour ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MisResult {
    /// A correct reply.
    Replied,
    /// The reply's end-to-end checksum failed.
    ChecksumFailed,
    /// A checksum-valid reply whose counter is wrong.
    WrongValue,
    /// `Poisoned`.
    Poisoned,
}

pub(crate) fn misbehave_load(shared: &Shared, runtime: &Path, orders: &mpsc::Receiver<MisOrder>) -> u64 {
    let mut client = match Client::connect(&client_socket(runtime)) {
        Ok(c) => c,
        Err(e) => {
            shared.fail(format!("misbehave client: {e}"));
            return 0;
        }
    };
    let mut nonce = 0u64;
    let mut counter: Option<u64> = None;
    // The last reply seen, for the report of a wrong one.
    let mut last: Option<(u64, misbehave::Reply)> = None;
    let mut faults: HashMap<u64, (Misbehaviour, mpsc::Sender<MisResult>)> = HashMap::new();
    let mut answered = 0;
    loop {
        while !shared.stopped() && client.in_flight() < 4 {
            let fault = orders.try_recv().ok();
            nonce += 1;
            let body = misbehave::request(nonce, fault.as_ref().map(|o| o.0));
            match client.submit("misbehave_driver", &body) {
                Ok(seq) => {
                    if let Some(o) = fault {
                        faults.insert(seq, o);
                    }
                }
                Err(e) => {
                    shared.unknown("misbehave client", &e);
                    return answered;
                }
            }
        }
        if client.in_flight() == 0 {
            return answered;
        }
        let Some(c) = shared.wait(&mut client, "misbehave client") else { return answered };
        let fault = faults.remove(&c.seq);
        // What was wrong with this reply's counter, if it was.
        let mut wrong = None;
        let result = match (c.result, fault.as_ref().map(|f| f.0)) {
            (Err(CallError::Poisoned), Some(Misbehaviour::Poison)) => MisResult::Poisoned,
            (Err(e), _) => {
                shared.fail(format!("misbehave_driver: seq {} failed with {e:?} ({fault:?})", c.seq));
                return answered;
            }
            (Ok(body), _) => match misbehave::parse_reply(&body) {
                Err(_) => MisResult::ChecksumFailed,
                Ok(r) => {
                    {
                        let mut w = shared.mis_watch.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        if r.generation > w.0 && w.1.is_none() {
                            w.1 = Some(Instant::now());
                        }
                    }
                    let want = counter.map_or(r.counter, |k| k + 1);
                    counter = Some(r.counter);
                    let prev = last.replace((c.seq, r));
                    if r.counter == want {
                        MisResult::Replied
                    } else {
                        wrong = Some(format!(
                            "counter {} where {want} was due (generation {}, nonce {}; the reply before: {prev:?})",
                            r.counter, r.generation, r.nonce
                        ));
                        MisResult::WrongValue
                    }
                }
            },
        };
        if let Some(k) = counter.as_mut().filter(|_| result == MisResult::ChecksumFailed) {
            // The request executed (its commit is in); only its reply was corrupted.
            *k += 1;
        }
        answered += 1;
        shared.completions.fetch_add(1, Ordering::Relaxed);
        match fault {
            Some((_, tx)) => {
                let _ = tx.send(result);
            }
            None if result != MisResult::Replied => {
                shared.fail(format!(
                    "misbehave_driver: seq {} (a normal request) got {result:?}: lost or repeated execution{}",
                    c.seq,
                    wrong.map(|w| format!(": {w}")).unwrap_or_default()
                ));
                return answered;
            }
            None => {}
        }
    }
}
