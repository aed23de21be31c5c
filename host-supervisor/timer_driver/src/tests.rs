//! The driver over timer_core's simulated-clock model, run by the real
//! runtime loop in a thread. The test plays the supervisor on the IPC socket
//! and a genirq kernel on a socketpair standing in for `/dev/uioN`: it
//! delivers an event count when the channel's line is high and the interrupt
//! enabled, then disables it until the driver writes 1.

use super::*;
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};
use reinc_proto::{ClientId, FromDriver, Generation, RequestId, ToDriver};
use reinc_runtime::testing::{InProcess, LoopOptions};
use reinc_uio::Reenable;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use timer_core::{Match, Timer, TimerError, TimerModel, TimerRegisters, TimerReply, TimerRequest, TimerState};

/// The timer model behind a lock, shared by the driver thread and the test.
#[derive(Debug, Clone)]
struct Hw(Arc<Mutex<TimerModel>>);

impl Hw {
    fn new(now: u64) -> Self {
        Self(Arc::new(Mutex::new(TimerModel::new(now))))
    }
    fn with<T>(&self, f: impl FnOnce(&mut TimerModel) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }
}

impl TimerRegisters for Hw {
    fn status(&self) -> Match {
        self.with(|m| m.status())
    }
    fn clear_match(&mut self, m: Match) {
        self.with(|t| t.clear_match(m));
    }
    fn counter_low(&self) -> u32 {
        self.with(|m| m.counter_low())
    }
    fn counter_high(&self) -> u32 {
        self.with(|m| m.counter_high())
    }
    fn compare(&self, ch: Channel) -> u32 {
        self.with(|m| m.compare(ch))
    }
    fn write_compare(&mut self, ch: Channel, value: u32) {
        self.with(|m| m.write_compare(ch, value));
    }
}

/// The kernel side of one open `/dev/uioN` (uio_pdrv_genirq semantics).
struct Kernel {
    fd: OwnedFd,
    count: u32,
    enabled: bool,
    reenables: u32,
}

impl Kernel {
    /// Takes every `write(1)` the driver made: each enables the interrupt.
    fn drain_reenables(&mut self) {
        let mut buf = [0u8; 8];
        while let Ok(n) = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            assert_eq!(&buf[..n], &1u32.to_ne_bytes(), "irqcontrol takes the u32 1");
            self.enabled = true;
            self.reenables += 1;
        }
    }

    /// Waits (up to 5 s) until the driver has re-enabled `total` times.
    fn await_reenables(&mut self, total: u32) {
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while self.reenables < total {
            assert!(std::time::Instant::now() < end, "only {} re-enable(s), expected {total}", self.reenables);
            std::thread::sleep(Duration::from_millis(1));
            self.drain_reenables();
        }
    }

    /// Raises the interrupt if the channel's line is high and it is enabled.
    fn tick(&mut self, hw: &Hw, ch: Channel) -> bool {
        self.drain_reenables();
        if self.enabled && hw.with(|m| m.irq_line(ch)) {
            self.count += 1;
            self.enabled = false;
            send(self.fd.as_raw_fd(), &self.count.to_ne_bytes(), MsgFlags::MSG_NOSIGNAL).unwrap();
            return true;
        }
        false
    }
}

#[derive(Debug)]
struct ModelSource(Option<Device<Hw>>);

impl Source for ModelSource {
    type Regs = Hw;
    fn selector(&self) -> String {
        "name:model-systimer".into()
    }
    fn open(&mut self) -> Result<Device<Hw>, TimerDriverError> {
        Ok(self.0.take().expect("opened once per instance"))
    }
}

struct Instance {
    lp: InProcess,
    kernel: Kernel,
    seq: u64,
    checkpoint: Option<Vec<u8>>,
}

fn start(hw: &Hw, generation: u32, checkpoint: Option<Vec<u8>>, grace: Duration) -> Result<Instance, String> {
    let (kernel, node) =
        socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK)
            .unwrap();
    let irq = Irq::from_fd(node, "/dev/uio-model", 0, Reenable::IrqControl);
    let dev = Device { what: "uio8 (model-systimer)".into(), regs: hw.clone(), irq };
    let driver = TimerDriver::new(ModelSource(Some(dev)), Channel::C3, grace);
    let mut lp = InProcess::start("timer", driver, LoopOptions::default());
    lp.send(&ToDriver::Init { generation: Generation(generation), checkpoint: checkpoint.as_deref() });
    let answer = lp
        .recv(|f| match f.msg {
            FromDriver::Ready => Ok(()),
            FromDriver::Fatal { reason } => Err(reason.to_owned()),
            other => panic!("unexpected answer to Init: {other:?}"),
        })
        .expect("an answer to Init");
    answer?;
    let kernel = Kernel { fd: kernel, count: 0, enabled: false, reenables: 0 };
    Ok(Instance { lp, kernel, seq: 0, checkpoint })
}

impl Instance {
    fn submit_raw(&mut self, body: &[u8]) -> RequestId {
        self.seq += 1;
        let id = RequestId { client: ClientId(1), seq: self.seq };
        self.lp.send(&ToDriver::Request { id, body });
        id
    }

    fn submit(&mut self, req: TimerRequest) -> RequestId {
        self.submit_raw(&postcard::to_allocvec(&req).unwrap())
    }

    /// The next frame must be the reply to `id`; applies its commit.
    fn reply(&mut self, id: RequestId) -> TimerReply {
        let (reply, commit) = self
            .lp
            .recv(|f| match f.msg {
                FromDriver::Reply { id: rid, commit, body } => {
                    assert_eq!(rid, id);
                    (postcard::from_bytes::<TimerReply>(body).unwrap(), commit.map(<[u8]>::to_vec))
                }
                other => panic!("expected the reply to {id}, got {other:?}"),
            })
            .expect("a reply");
        if let Some(c) = commit {
            self.checkpoint = Some(c);
        }
        reply
    }

    fn call(&mut self, req: TimerRequest) -> TimerReply {
        let id = self.submit(req);
        self.reply(id)
    }

    /// A ping answered proves every earlier frame was taken by the loop (a
    /// `Wait` before it is parked, not finished).
    fn sync(&mut self, nonce: u64) {
        self.lp.send(&ToDriver::Ping { nonce });
        let got = self.lp.recv(|f| f.msg.clone().into_pong()).expect("a pong");
        assert_eq!(got, Some(nonce), "the next frame is the pong: nothing was answered meanwhile");
    }

    fn crash(self) -> Option<Vec<u8>> {
        self.lp.finish();
        self.checkpoint
    }
}

trait IntoPong {
    fn into_pong(self) -> Option<u64>;
}

impl IntoPong for FromDriver<'_> {
    fn into_pong(self) -> Option<u64> {
        match self {
            FromDriver::Pong { nonce } => Some(nonce),
            _ => None,
        }
    }
}

const GRACE: Duration = Duration::from_secs(30);

#[test]
fn wait_completes_on_the_interrupt_after_acknowledging_and_reenabling() {
    let hw = Hw::new(5_000_000);
    let mut t = start(&hw, 1, None, GRACE).unwrap();
    t.kernel.drain_reenables();
    assert_eq!(t.kernel.reenables, 1, "Init re-enables the interrupt");
    for n in 1..=3u64 {
        let armed = t.call(TimerRequest::ArmIn { channel: 3, micros: 1000 });
        let TimerReply::Armed { at, already_due: false, .. } = armed else { panic!("{armed:?}") };
        let id = t.submit(TimerRequest::Wait { channel: 3 });
        t.sync(n);
        hw.with(|m| m.advance(999));
        assert!(!t.kernel.tick(&hw, Channel::C3), "no interrupt before the deadline");
        hw.with(|m| m.advance(1));
        assert!(t.kernel.tick(&hw, Channel::C3), "the match raises the interrupt");
        assert_eq!(t.reply(id), TimerReply::Fired { channel: 3, at, fires: n });
        assert!(!hw.with(|m| m.irq_line(Channel::C3)), "match cleared");
        t.kernel.drain_reenables();
        assert_eq!(t.kernel.reenables, 1 + n as u32, "one write(1) per interrupt");
    }
}

#[test]
fn the_channel_not_owned_is_refused_without_touching_the_device() {
    let hw = Hw::new(0);
    let mut t = start(&hw, 1, None, GRACE).unwrap();
    let before = hw.with(|m| m.write_count());
    assert_eq!(
        t.call(TimerRequest::ArmIn { channel: 1, micros: 10 }),
        TimerReply::Error(TimerError::ChannelNotServed { channel: 1, served: 3 })
    );
    assert_eq!(
        t.call(TimerRequest::Disarm { channel: 1 }),
        TimerReply::Error(TimerError::ChannelNotServed { channel: 1, served: 3 })
    );
    assert_eq!(
        t.call(TimerRequest::Wait { channel: 2 }),
        TimerReply::Error(TimerError::ChannelReserved { channel: 2 })
    );
    assert_eq!(hw.with(|m| m.write_count()), before, "no register written");
    assert_eq!(t.crash(), None, "nothing committed");
}

#[test]
fn malformed_body_is_answered_and_the_driver_keeps_serving() {
    let hw = Hw::new(42);
    let mut t = start(&hw, 1, None, GRACE).unwrap();
    let id = t.submit_raw(&[0xfe, 0xfe]);
    assert_eq!(t.reply(id), TimerReply::Error(TimerError::MalformedRequest { len: 2 }));
    assert_eq!(t.call(TimerRequest::Now), TimerReply::Now { counter: 42 });
}

#[test]
fn restart_rewrites_the_compare_and_a_match_latched_while_down_completes_the_wait() {
    let hw = Hw::new(1_000);
    let mut a = start(&hw, 1, None, GRACE).unwrap();
    let TimerReply::Armed { at, .. } = a.call(TimerRequest::ArmIn { channel: 3, micros: 500 }) else { panic!() };
    let checkpoint = a.crash();
    // While no driver runs, the compare register is lost...
    hw.with(TimerModel::scramble_arm_compares);
    let mut b = start(&hw, 2, checkpoint, GRACE).unwrap();
    assert_eq!(hw.with(|m| m.compare(Channel::C3)), at as u32, "the committed deadline is re-armed");
    // ...and the deadline passes before the replayed Wait arrives.
    hw.with(|m| m.advance(600));
    assert!(b.kernel.tick(&hw, Channel::C3), "the latched match interrupts once re-enabled");
    assert_eq!(b.call(TimerRequest::Wait { channel: 3 }), TimerReply::Fired { channel: 3, at, fires: 1 });
    // The stale event was consumed by that Wait; the next one waits for its own.
    b.call(TimerRequest::ArmIn { channel: 3, micros: 100 });
    let id = b.submit(TimerRequest::Wait { channel: 3 });
    b.sync(7);
    // Init's write(1), then the one after consuming the stale event.
    b.kernel.await_reenables(2);
    hw.with(|m| m.advance(100));
    assert!(b.kernel.tick(&hw, Channel::C3), "re-enabled after the stale event, so the new match interrupts");
    assert!(matches!(b.reply(id), TimerReply::Fired { fires: 2, .. }));
}

#[test]
fn interrupt_that_fired_before_its_wait_is_unmasked_by_the_next_request() {
    let hw = Hw::new(0);
    let mut t = start(&hw, 1, None, GRACE).unwrap();
    let TimerReply::Armed { at, .. } = t.call(TimerRequest::ArmIn { channel: 3, micros: 100 }) else { panic!() };
    hw.with(|m| m.advance(100));
    assert!(t.kernel.tick(&hw, Channel::C3), "the deadline interrupts with no Wait parked; genirq masks it");
    assert_eq!(t.call(TimerRequest::Wait { channel: 3 }), TimerReply::Fired { channel: 3, at, fires: 1 });
    t.kernel.drain_reenables();
    assert_eq!(t.kernel.reenables, 2, "Init's write(1), then the one for the event found at the Wait");
    assert!(t.kernel.enabled, "unmasked before the next deadline is armed");
    t.call(TimerRequest::ArmIn { channel: 3, micros: 100 });
    let id = t.submit(TimerRequest::Wait { channel: 3 });
    t.sync(3);
    hw.with(|m| m.advance(100));
    assert!(t.kernel.tick(&hw, Channel::C3), "the next deadline interrupts");
    assert!(matches!(t.reply(id), TimerReply::Fired { fires: 2, .. }));
}

#[test]
fn lost_interrupt_is_covered_by_the_counter_after_the_grace_period() {
    let hw = Hw::new(0);
    let mut t = start(&hw, 1, None, Duration::from_millis(50)).unwrap();
    let TimerReply::Armed { at, .. } = t.call(TimerRequest::ArmIn { channel: 3, micros: 1000 }) else { panic!() };
    let id = t.submit(TimerRequest::Wait { channel: 3 });
    t.sync(1);
    hw.with(|m| m.advance(2000)); // the deadline passes; the kernel never delivers
    assert_eq!(t.reply(id), TimerReply::Fired { channel: 3, at, fires: 1 });
}

#[test]
fn checkpoint_arming_the_other_channel_is_fatal_and_names_both() {
    let hw = Hw::new(0);
    // A checkpoint from a timer_driver configured with --channel 1.
    let mut other = Timer::new(hw.clone());
    let state = TimerState::default();
    let h = other.handle(&state, &TimerRequest::ArmIn { channel: 1, micros: 10 });
    let checkpoint = postcard::to_allocvec(&h.commit.unwrap()).unwrap();
    let reason = start(&hw, 2, Some(checkpoint), GRACE).err().expect("fatal");
    assert!(reason.contains("channel 1") && reason.contains("channel 3"), "{reason}");
}

fn args(list: &[&str]) -> Result<Args, String> {
    parse_args(list.iter().map(|s| s.to_string()))
}

#[test]
fn arguments_default_to_channel_3_and_refuse_gpu_channels() {
    let a = args(&["--device", "name:reinc-systimer"]).unwrap();
    assert_eq!((a.channel, a.grace), (Channel::C3, Duration::from_millis(200)));
    assert_eq!(args(&["--device", "uio1", "--channel", "1"]).unwrap().channel, Channel::C1);
    assert!(args(&["--device", "uio1", "--channel", "2"]).unwrap_err().contains("GPU"));
    assert!(args(&["--device", "uio1", "--channel", "x"]).unwrap_err().contains("not a number"));
    assert!(args(&["--device", "uio1", "--grace-ms", "0"]).unwrap_err().contains("out of range"));
    assert!(args(&["--channel", "3"]).unwrap_err().contains("--device is required"));
}
