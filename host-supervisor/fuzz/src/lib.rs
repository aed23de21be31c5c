//! Fuzzing that runs on the stable toolchain: every decoder a peer can
//! reach, the checkpoint and journal readers, the config parser and the NBD
//! front end's handshake, driven with mutated inputs from committed corpora.
//!
//! # Why this crate exists
//! The supervisor takes bytes from clients (`client.sock`), operators
//! (`control.sock`), drivers (their channel), the disk (checkpoints) and
//! the config file. The unit and property tests check the cases someone
//! thought of; a fuzzer looks for the ones nobody did. A finding is a panic
//! (a crash of the supervisor) or a broken invariant asserted by a target.
//!
//! # Shape
//! [`TARGETS`] are `fn(&[u8]) -> Outcome`. A target decodes its input and,
//! where the decoded value can go further, feeds it to a fresh
//! [`reinc_supervisor::core::Supervisor`] (client and driver frames are read
//! as a sequence: one length byte, then that many bytes, repeated), so the
//! rules behind the decoders are fuzzed too. The [`Outcome`] is a short label
//! of what happened (`"Call/Failed(Busy)"`); the engine ([`fuzz`]) keeps every
//! input that produced a label it had not seen, which gives it a crude but
//! real feedback signal without compiler instrumentation, and those inputs
//! are what `corpus/<target>/` holds.
//!
//! # Designs rejected
//! - cargo-fuzz (libFuzzer) as the CI fuzzer: it needs a nightly toolchain,
//!   and the project's machines cannot fetch toolchains; the targets here
//!   are plain functions, so a `fuzz_target!` wrapper for local nightly runs
//!   is a few lines if wanted.
//! - cargo-afl: needs nightly-only instrumentation too, and a fork server.
//! - Only proptest: generation from strategies finds what the strategies
//!   describe; byte-level mutation of real frames finds framing and
//!   length-field bugs that well-typed generation never produces.

use reinc_client::control::ControlRequest;
use reinc_policy::Millis;
use reinc_proto::{ClientToSup, DriverFrame, Generation};
use reinc_supervisor::config::DriverConfig;
use reinc_supervisor::core::{Action, ConnId, DriverId, Event, Supervisor};
use std::collections::BTreeSet;
use std::path::Path;

/// What one input did, as a short label (the engine's feedback).
pub type Outcome = String;

/// A fuzz target.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its name (and its corpus directory under `corpus/`).
    pub name: &'static str,
    /// Runs one input; panics on a finding.
    pub run: fn(&[u8]) -> Outcome,
}

/// Every target.
pub const TARGETS: [Target; 8] = [
    Target { name: "client_frames", run: client_frames },
    Target { name: "control_frame", run: control_frame },
    Target { name: "driver_frames", run: driver_frames },
    Target { name: "checkpoint", run: checkpoint },
    Target { name: "config", run: config },
    Target { name: "journal", run: journal::file },
    Target { name: "journal_records", run: journal::records },
    Target { name: "nbd_handshake", run: nbd::handshake },
];

pub mod journal;
pub mod nbd;

/// Splits `data` into frames: a length byte, then that many bytes (the last
/// frame takes what is left).
fn frames(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        out.push(&tail[..n]);
        rest = &tail[n..];
        if out.len() >= 64 {
            break;
        }
    }
    out
}

/// A supervisor with one running driver, as the daemon would have it.
fn running() -> Supervisor {
    let mut d = DriverConfig::new("storage_driver", "/bin/false");
    d.queue_depth = 8;
    d.window = 2;
    let mut sup = Supervisor::new(vec![(d, None)], 7, 4, 16);
    let acts = sup.handle(Millis(0), Event::Start);
    assert!(acts.iter().any(|a| matches!(a, Action::Spawn { .. })));
    sup.handle(Millis(0), Event::Spawned { driver: DriverId(0), generation: Generation(1), pid: 100 });
    let ready = reinc_proto::FromDriver::Ready;
    sup.handle(Millis(1), Event::FromDriver { driver: DriverId(0), frame_gen: Generation(1), msg: ready });
    sup
}

fn label(acts: &[Action]) -> String {
    let kinds: BTreeSet<String> = acts
        .iter()
        .map(|a| match a {
            Action::ToClient { msg, .. } => format!("{msg:?}").split([' ', '{', '(']).next().unwrap_or("").to_owned(),
            Action::ToDriver { msg, .. } => format!("to-driver {:?}", std::mem::discriminant(msg)),
            Action::Say(_) => "say".into(),
            other => format!("{other:?}").split([' ', '{', '(']).next().unwrap_or("").to_owned(),
        })
        .collect();
    kinds.into_iter().collect::<Vec<_>>().join("+")
}

/// Client frames, decoded and fed to a supervisor as one connection.
pub fn client_frames(data: &[u8]) -> Outcome {
    let mut sup = running();
    sup.handle(Millis(2), Event::ClientConnected { conn: ConnId(1) });
    let mut out = Vec::new();
    for (i, f) in frames(data).into_iter().enumerate() {
        let now = Millis(10 + i as u64);
        let l = match reinc_proto::decode::<ClientToSup<'_>>(f) {
            Ok(ClientToSup::Hello { resume }) => {
                format!("hello:{}", label(&sup.handle(now, Event::Hello { conn: ConnId(1), resume })))
            }
            Ok(ClientToSup::Call { seq, driver, body, acked_below }) => {
                let e = Event::Call { conn: ConnId(1), seq, driver, body, acked_below };
                format!("call:{}", label(&sup.handle(now, e)))
            }
            // Pools are the daemon's (a descriptor, not core state).
            Ok(ClientToSup::AttachPool { .. }) => "attach-pool".to_owned(),
            Ok(ClientToSup::Bye) => format!("bye:{}", label(&sup.handle(now, Event::Bye { conn: ConnId(1) }))),
            Err(e) => format!("err:{e:?}").split([' ', '{']).next().unwrap_or("").to_owned(),
        };
        out.push(l);
    }
    sup.handle(Millis(100_000_000), Event::ClientGone { conn: ConnId(1) });
    sup.handle(Millis(200_000_000), Event::Tick);
    distinct(out)
}

/// One control request, decoded and carried out.
pub fn control_frame(data: &[u8]) -> Outcome {
    match reinc_proto::decode::<ControlRequest>(data) {
        Ok(req) => {
            let mut sup = running();
            let (resp, acts) = sup.control(Millis(5), &req);
            let shown = format!("{resp:?}");
            // A response must always fit the control socket's frame.
            let frame = reinc_proto::encode_vec(&resp);
            assert!(frame.is_ok() || shown.len() > reinc_proto::MAX_FRAME, "a small response did not encode: {shown}");
            format!("{}:{}", shown.split(['(', ' ']).next().unwrap_or(""), label(&acts))
        }
        Err(e) => format!("err:{e:?}").split([' ', '{']).next().unwrap_or("").to_owned(),
    }
}

/// Driver frames, decoded and fed to a supervisor as the running instance's.
pub fn driver_frames(data: &[u8]) -> Outcome {
    let mut sup = running();
    let mut out = Vec::new();
    for (i, f) in frames(data).into_iter().enumerate() {
        let now = Millis(10 + i as u64 * 100);
        let l = match reinc_proto::decode::<DriverFrame<'_>>(f) {
            Ok(fr) => {
                let e = Event::FromDriver { driver: DriverId(0), frame_gen: fr.generation, msg: fr.msg };
                format!("frame:{}", label(&sup.handle(now, e)))
            }
            Err(e) => format!("err:{e:?}").split([' ', '{']).next().unwrap_or("").to_owned(),
        };
        out.push(l);
    }
    distinct(out)
}

/// The set of per-frame labels (order and repetition are not a new behaviour).
fn distinct(labels: Vec<String>) -> Outcome {
    labels.into_iter().collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>().join(",")
}

/// The checkpoint reader: anything it accepts re-encodes to the same bytes.
pub fn checkpoint(data: &[u8]) -> Outcome {
    use reinc_supervisor::checkpoint;
    match checkpoint::decode(Path::new("fuzz.ckpt"), data) {
        Ok(payload) => {
            assert_eq!(checkpoint::encode(&payload), data, "accepted a checkpoint that does not round-trip");
            assert!(payload.len() <= reinc_proto::MAX_CHECKPOINT);
            "ok".into()
        }
        Err(e) => format!("{e:?}").split([' ', '{']).next().unwrap_or("").to_owned(),
    }
}

/// The config parser: every problem is listed, and an accepted config obeys
/// the documented bounds.
pub fn config(data: &[u8]) -> Outcome {
    use reinc_supervisor::config::{self, FaultPolicyConfig, MAX_QUEUE_DEPTH, MAX_RESTARTS_PER_SECOND};
    let text = String::from_utf8_lossy(data);
    match config::parse(&text) {
        Ok(c) => {
            for d in &c.drivers {
                assert!((1..=MAX_QUEUE_DEPTH).contains(&d.queue_depth));
                assert!(d.init_timeout.0 >= config::MIN_INIT_TIMEOUT_MS);
                if let FaultPolicyConfig::Restart(b) = d.fault_policy {
                    assert!(u64::from(b.max_restarts) * 1000 <= MAX_RESTARTS_PER_SECOND * b.window.0);
                }
            }
            format!("ok:{}", c.drivers.len())
        }
        Err(problems) => {
            assert!(!problems.is_empty());
            // The first problem's kind ("unknown field", "must be", "is
            // required"...): bounded, unlike keys, which the input names.
            let kind: Vec<&str> = problems[0].message.split_whitespace().take(2).collect();
            format!("problems:{}", kind.join(" "))
        }
    }
}

/// A small xorshift generator (deterministic from `--seed`).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded (0 becomes 1).
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// Largest input the engine makes.
pub const MAX_INPUT: usize = 4096;

/// Mutates `input` in place: one to eight of bit flips, byte sets (random or
/// interesting values), inserts, deletes, duplications and splices from
/// `corpus`.
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    const INTERESTING: [u8; 8] = [0, 1, 0x7F, 0x80, 0xFF, 0xFE, 2, 0x40];
    for _ in 0..=rng.below(8) {
        let len = input.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = if rng.below(2) == 0 { rng.next() as u8 } else { INTERESTING[rng.below(8)] };
            }
            2 if len < MAX_INPUT => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                input.drain(i..i + n);
            }
            4 if len > 0 && len < MAX_INPUT / 2 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let copy: Vec<u8> = input[i..i + n].to_vec();
                let at = rng.below(input.len() + 1);
                input.splice(at..at, copy);
            }
            5 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let at = rng.below(len + 1);
                    input.truncate(at);
                    input.extend_from_slice(&other[from..]);
                }
            }
            _ => input.truncate(rng.below(len + 1)),
        }
    }
    input.truncate(MAX_INPUT);
}

/// What a run found.
#[derive(Debug)]
pub struct Report {
    /// Inputs run.
    pub runs: u64,
    /// Distinct outcomes seen.
    pub outcomes: BTreeSet<Outcome>,
    /// Inputs that produced a new outcome (to add to the corpus), in the order
    /// found.
    pub new_inputs: Vec<Vec<u8>>,
    /// The first input that panicked, with the panic message.
    pub crash: Option<(Vec<u8>, String)>,
}

/// Runs `target` over `corpus` (each input once), then on mutations of it
/// until `runs` inputs or `deadline`, whichever comes first.
pub fn fuzz(target: &Target, mut corpus: Vec<Vec<u8>>, seed: u64, runs: u64, deadline: std::time::Instant) -> Report {
    let mut rng = Rng::new(seed);
    let mut report = Report { runs: 0, outcomes: BTreeSet::new(), new_inputs: Vec::new(), crash: None };
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut queue: Vec<Vec<u8>> = corpus.clone();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    while report.runs < runs && std::time::Instant::now() < deadline {
        let (input, replay) = match queue.pop() {
            Some(seed_input) => (seed_input, true),
            None => {
                let mut m = corpus[rng.below(corpus.len())].clone();
                mutate(&mut rng, &mut m, &corpus);
                (m, false)
            }
        };
        report.runs += 1;
        match std::panic::catch_unwind(|| (target.run)(&input)) {
            Ok(outcome) => {
                if report.outcomes.insert(outcome) && !replay {
                    report.new_inputs.push(input.clone());
                    corpus.push(input);
                }
            }
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panic".into());
                report.crash = Some((input, msg));
                break;
            }
        }
    }
    std::panic::set_hook(hook);
    report
}

/// Valid inputs to start a target from when it has no corpus yet.
#[must_use]
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    use reinc_proto::{ClientId, FromDriver, RequestId, encode_vec};
    let framed = |parts: &[Vec<u8>]| {
        let mut out = Vec::new();
        for p in parts {
            out.push(u8::try_from(p.len()).expect("seed frames are short"));
            out.extend_from_slice(p);
        }
        out
    };
    let hello = encode_vec(&ClientToSup::Hello { resume: None }).unwrap();
    let call = |seq, acked_below| {
        encode_vec(&ClientToSup::Call { seq, driver: "storage_driver", body: &[1, 2, 3], acked_below }).unwrap()
    };
    let frame = |msg| encode_vec(&DriverFrame { generation: Generation(1), msg }).unwrap();
    let id = RequestId { client: ClientId(1), seq: 1 };
    match target {
        "client_frames" => vec![
            framed(&[hello.clone(), call(1, 0), call(2, 1), call(1, 0)]),
            framed(&[hello.clone(), hello, call(5, 9)]),
        ],
        "control_frame" => [
            ControlRequest::Status,
            ControlRequest::Restart { driver: "storage_driver".into() },
            ControlRequest::Stop { driver: "storage_driver".into() },
            ControlRequest::DumpQueue { driver: "storage_driver".into() },
            ControlRequest::Inject { driver: "storage_driver".into(), plan: "after-effect:2:segv".parse().unwrap() },
        ]
        .iter()
        .map(|r| encode_vec(r).unwrap())
        .collect(),
        "driver_frames" => vec![
            framed(&[
                frame(FromDriver::Pong { nonce: 1 }),
                frame(FromDriver::Reply { id, commit: Some(&[7]), body: &[8] }),
            ]),
            framed(&[frame(FromDriver::Fatal { reason: "device gone" }), frame(FromDriver::Ready)]),
        ],
        "checkpoint" => vec![reinc_supervisor::checkpoint::encode(b"state"), reinc_supervisor::checkpoint::encode(&[])],
        "config" => vec![
            include_bytes!("../../supervisor/reinc.example.toml").to_vec(),
            b"[supervisor]\nmax-sessions = 4\n[[driver]]\nname = \"x\"\nexec = \"/bin/true\"\nwindow = 2\n".to_vec(),
        ],
        "journal" => journal::seeds().0,
        "journal_records" => journal::seeds().1,
        "nbd_handshake" => nbd::seeds(),
        _ => Vec::new(),
    }
}

/// Reads every file of `dir` as one input.
#[must_use]
pub fn load_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// The committed corpus directory of `target`.
#[must_use]
pub fn corpus_dir(target: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo test` replays every committed corpus input: a finding fixed
    /// once stays fixed.
    #[test]
    fn every_committed_corpus_input_runs_clean() {
        for t in TARGETS {
            let corpus = load_corpus(&corpus_dir(t.name));
            assert!(!corpus.is_empty(), "{}: no committed corpus", t.name);
            for input in &corpus {
                (t.run)(input);
            }
        }
    }

    #[test]
    fn a_short_run_of_each_target_finds_nothing() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        for t in TARGETS {
            let r = fuzz(&t, load_corpus(&corpus_dir(t.name)), 1, 300, deadline);
            assert!(r.crash.is_none(), "{}: {:?}", t.name, r.crash);
        }
    }
}
