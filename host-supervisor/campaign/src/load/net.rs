//! The net client: alternating sends and receives on the loopback ring,
//! pipelined (8 in flight); every send's transmit counter must equal the
//! sends before it (exactly once), every receive the next packet sent.

use super::Shared;
use net_core::{NetReply, NetRequest};
use reinc_client::{Client, client_socket};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

pub(crate) fn net_body(r: &NetRequest<'_>) -> Vec<u8> {
    postcard::to_allocvec(r).unwrap_or_default()
}

/// What the net client leaves behind.
#[derive(Debug, Default)]
pub(crate) struct NetOut {
    pub(crate) session: u64,
    pub(crate) sends: BTreeSet<u64>,
    pub(crate) answered: u64,
}

pub(crate) fn net_load(shared: &Shared, runtime: &Path) -> NetOut {
    let mut out = NetOut::default();
    let mut client = match Client::connect(&client_socket(runtime)) {
        Ok(c) => c,
        Err(e) => {
            shared.fail(format!("net client: {e}"));
            return out;
        }
    };
    out.session = client.session().0;
    let packet = |i: u64| -> Vec<u8> { (0..(16 + i % 48)).map(|k| (i ^ (k * 13)) as u8).collect() };
    // seq -> Some(i): Send of packet i; None: Recv expecting the next packet.
    let mut expect: HashMap<u64, Option<u64>> = HashMap::new();
    let (mut next_send, mut next_recv, mut send_turn) = (0u64, 0u64, true);
    let mut recv_queue: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
    loop {
        while !shared.stopped() && client.in_flight() < 8 {
            let (body, what) = if send_turn {
                next_send += 1;
                (net_body(&NetRequest::Send { data: &packet(next_send - 1) }), Some(next_send - 1))
            } else {
                (net_body(&NetRequest::Recv), None)
            };
            send_turn = !send_turn;
            match client.submit("net_driver", &body) {
                Ok(seq) => {
                    expect.insert(seq, what);
                    match what {
                        Some(_) => {
                            out.sends.insert(seq);
                        }
                        None => recv_queue.push_back(seq),
                    }
                }
                Err(e) => {
                    shared.unknown(&format!("net client c{}", out.session), &e);
                    return out;
                }
            }
        }
        if client.in_flight() == 0 {
            break;
        }
        let Some(c) = shared.wait(&mut client, &format!("net client c{}", out.session)) else { return out };
        let now = Instant::now();
        let Some(what) = expect.remove(&c.seq) else {
            shared.fail(format!("net client c{}: seq {} answered twice", out.session, c.seq));
            return out;
        };
        let body = match c.result {
            Ok(b) => b,
            Err(e) => {
                shared.fail(format!("net_driver: c{}:{} failed with {e:?}", out.session, c.seq));
                return out;
            }
        };
        out.answered += 1;
        shared.completions.fetch_add(1, Ordering::Relaxed);
        let ok = match (what, postcard::from_bytes::<NetReply<'_>>(&body)) {
            // Exactly once: the transmit counter equals the number of sends before this one.
            (Some(i), Ok(NetReply::Sent { seq })) => {
                shared.net_replies.lock().map(|mut m| m.insert((out.session, c.seq), now)).ok();
                seq == i
            }
            (None, Ok(NetReply::Packet { seq, data })) => {
                let ok = seq == next_recv && data == packet(next_recv).as_slice();
                next_recv += 1;
                ok
            }
            _ => false,
        };
        if !ok {
            shared.fail(format!(
                "net_driver: c{}:{} got a reply that differs from the model (sends {next_send}, receives {next_recv}): {:?}",
                out.session,
                c.seq,
                postcard::from_bytes::<NetReply<'_>>(&body)
            ));
            return out;
        }
    }
    out
}
