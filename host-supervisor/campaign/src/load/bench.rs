//! The bench-driver client: null commits, 4 in flight; every reply must be
//! `[0]`, or a definite `DriverFailed` while an exec-fails fault has the
//! driver quarantined.

use super::Shared;
use reinc_client::{Client, client_socket};
use reinc_proto::CallError;
use std::path::Path;
use std::sync::atomic::Ordering;

pub(crate) fn bench_load(shared: &Shared, runtime: &Path) -> u64 {
    let mut client = match Client::connect(&client_socket(runtime)) {
        Ok(c) => c,
        Err(e) => {
            shared.fail(format!("bench client: {e}"));
            return 0;
        }
    };
    let mut answered = 0;
    loop {
        while !shared.stopped() && client.in_flight() < 4 {
            if let Err(e) = client.submit("bench_driver", &[reinc_bench::NULL_COMMIT]) {
                shared.unknown("bench client", &e);
                return answered;
            }
        }
        if client.in_flight() == 0 {
            return answered;
        }
        let Some(c) = shared.wait(&mut client, "bench client") else { return answered };
        match c {
            c if c.result.as_deref() == Ok(&[0u8][..]) => {
                answered += 1;
                shared.completions.fetch_add(1, Ordering::Relaxed);
            }
            // Quarantine as designed: definite, nothing left unknown.
            c if c.result == Err(CallError::DriverFailed) && shared.exec_fault.load(Ordering::SeqCst) => {
                answered += 1;
                shared.bench_quarantined.fetch_add(1, Ordering::Relaxed);
            }
            c => {
                shared.fail(format!("bench_driver: seq {} answered {:?}, expected [0]", c.seq, c.result));
                return answered;
            }
        }
    }
}
