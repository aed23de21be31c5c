//! The driver over edu_core's behavioural model, run by the real runtime loop
//! in a thread: this test plays the supervisor on the IPC socket and the
//! kernel on a socketpair that stands in for `/dev/uioN` (event counts in,
//! re-enable writes out).

use super::*;
use edu_core::model::EduModel;
use edu_core::{
    Completion as Mode, EduError, EduRegisters, EduReply, EduRequest, EduState, IrqBits, ReadReg, Status, WriteReg,
};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, setsockopt, socketpair, sockopt};
use nix::sys::time::TimeVal;
use reinc_proto::{ClientId, DriverFrame, FromDriver, Generation, RequestId, ToDriver, decode, encode_vec};
use reinc_runtime::{Config, Exit, Runtime};
use reinc_uio::{Reenable, Selector};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// The model behind a lock, so the test can let time pass on the device
/// while the driver thread owns its register access. Raising the line
/// delivers an event count to the fake `/dev/uioN`, as the kernel would.
#[derive(Debug, Clone)]
struct SharedModel {
    model: Arc<Mutex<EduModel>>,
    kernel: Arc<OwnedFd>,
    /// (line edges already turned into events, the kernel's event count)
    events: Arc<Mutex<(u32, u32)>>,
}

impl SharedModel {
    fn with<T>(&self, f: impl FnOnce(&mut EduModel) -> T) -> T {
        let out = f(&mut self.model.lock().unwrap());
        self.deliver();
        out
    }

    /// Sends one event count per new low-to-high edge of the line.
    fn deliver(&self) {
        let raises = self.model.lock().unwrap().line_raises();
        let mut events = self.events.lock().unwrap();
        while events.0 < raises {
            events.0 += 1;
            events.1 += 1;
            send(self.kernel.as_raw_fd(), &events.1.to_ne_bytes(), MsgFlags::MSG_NOSIGNAL).unwrap();
        }
    }

    /// An interrupt the device did not raise (another device on a shared line).
    fn foreign_interrupt(&self) {
        let mut events = self.events.lock().unwrap();
        events.1 += 1;
        send(self.kernel.as_raw_fd(), &events.1.to_ne_bytes(), MsgFlags::MSG_NOSIGNAL).unwrap();
    }
}

impl EduRegisters for SharedModel {
    fn read(&mut self, reg: ReadReg) -> u32 {
        self.with(|m| m.read(reg))
    }
    fn write(&mut self, reg: WriteReg, value: u32) {
        self.with(|m| m.write(reg, value));
    }
}

#[derive(Debug)]
struct ModelSource(Option<Device<SharedModel>>);

impl Source for ModelSource {
    type Regs = SharedModel;
    fn selector(&self) -> String {
        "model".into()
    }
    fn open(&mut self) -> Result<Device<SharedModel>, EduDriverError> {
        Ok(self.0.take().expect("opened once per instance"))
    }
}

/// One driver instance in a thread, with both ends the test plays.
struct Harness {
    sup: OwnedFd,
    kernel: Arc<OwnedFd>,
    model: SharedModel,
    thread: Option<JoinHandle<Exit>>,
    buf: Vec<u8>,
}

fn pair() -> (OwnedFd, OwnedFd) {
    let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap();
    setsockopt(&a, sockopt::ReceiveTimeout, &TimeVal::new(5, 0)).unwrap();
    (a, b)
}

impl Harness {
    fn start(model: EduModel, irq_timeout: Duration) -> Self {
        let (sup, drv) = pair();
        let (kernel, node) = pair();
        nix::fcntl::fcntl(&node, nix::fcntl::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
        let kernel = Arc::new(kernel);
        let model = SharedModel {
            model: Arc::new(Mutex::new(model)),
            kernel: kernel.clone(),
            events: Arc::new(Mutex::new((0, 0))),
        };
        // Edges from before the driver existed were never seen by this fd.
        model.events.lock().unwrap().0 = model.model.lock().unwrap().line_raises();
        let irq = Irq::from_fd(node, "/dev/uio-model", 0, Reenable::IrqControl);
        let dev =
            Device { what: "uio9 (model)".into(), handler: EduHandler::new(model.clone(), PollBudget(1000)), irq };
        let driver = EduDriver::new(ModelSource(Some(dev)), irq_timeout);
        let config =
            Config { name: "edu_test".into(), ipc: drv, trace: None, fault: None, exec_log: None, stop_signals: None };
        let thread = std::thread::spawn(move || Runtime::new(config, driver).run());
        Self { sup, kernel, model, thread: Some(thread), buf: vec![0; reinc_proto::MAX_FRAME] }
    }

    fn send(&self, msg: &ToDriver<'_>) {
        send(self.sup.as_raw_fd(), &encode_vec(msg).unwrap(), MsgFlags::MSG_NOSIGNAL).unwrap();
    }

    fn recv(&mut self) -> FromDriverOwned {
        let n = recv(self.sup.as_raw_fd(), &mut self.buf, MsgFlags::empty()).expect("driver frame within 5 s");
        let frame: DriverFrame<'_> = decode(&self.buf[..n]).unwrap();
        assert_eq!(frame.generation, Generation(1), "every frame carries the Init generation");
        match frame.msg {
            FromDriver::Ready => FromDriverOwned::Ready,
            FromDriver::Pong { nonce } => FromDriverOwned::Pong(nonce),
            FromDriver::Fatal { reason } => FromDriverOwned::Fatal(reason.to_owned()),
            FromDriver::Reply { id, commit, body } => FromDriverOwned::Reply {
                id,
                commit: commit.map(|c| postcard::from_bytes(c).unwrap()),
                reply: postcard::from_bytes(body).unwrap(),
            },
        }
    }

    fn init(&mut self) {
        self.send(&ToDriver::Init { generation: Generation(1), checkpoint: None });
        assert_eq!(self.recv(), FromDriverOwned::Ready);
    }

    fn request(&self, seq: u64, req: &EduRequest) -> RequestId {
        let id = RequestId { client: ClientId(7), seq };
        self.send(&ToDriver::Request { id, body: &postcard::to_allocvec(req).unwrap() });
        id
    }

    /// Waits until the driver has started a factorial with IRQ_ON_DONE.
    fn until_computing(&self) {
        let end = Instant::now() + Duration::from_secs(5);
        while !self.model.model.lock().unwrap().status().contains(Status::COMPUTING | Status::IRQ_ON_DONE) {
            assert!(Instant::now() < end, "the driver never started the computation");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Re-enable writes the driver made to the fake node so far.
    fn reenables(&self) -> usize {
        let mut n = 0;
        let mut b = [0u8; 8];
        while let Ok(got) = recv(self.kernel.as_raw_fd(), &mut b, MsgFlags::MSG_DONTWAIT) {
            assert_eq!(&b[..got], &1u32.to_ne_bytes(), "irqcontrol takes the u32 1");
            n += 1;
        }
        n
    }

    fn finish(mut self) -> Exit {
        drop(std::mem::replace(&mut self.sup, pair().0));
        self.thread.take().unwrap().join().unwrap()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum FromDriverOwned {
    Ready,
    Pong(u64),
    Fatal(String),
    Reply { id: RequestId, commit: Option<EduState>, reply: EduReply },
}

#[test]
fn factorial_completes_by_interrupt_and_reenables_after_it() {
    let mut h = Harness::start(EduModel::new(), Duration::from_secs(5));
    h.init();
    assert_eq!(h.reenables(), 1, "INTx is unmasked once at start");
    let id = h.request(1, &EduRequest::Factorial { n: 5, completion: Mode::Interrupt });
    h.until_computing();
    h.model.with(EduModel::finish_computation);
    let reply = h.recv();
    let state = EduState { factorials: 1, irqs_handled: 1 };
    assert_eq!(
        reply,
        FromDriverOwned::Reply { id, commit: Some(state), reply: EduReply::Factorial { n: 5, value: 120 } }
    );
    assert_eq!(h.reenables(), 1, "unmasked again after the interrupt");
    assert!(h.model.with(|m| m.irq_status()).is_empty(), "the device was acknowledged");
    assert_eq!(h.finish(), Exit::SupervisorGone);
}

#[test]
fn start_acknowledges_what_a_dead_predecessor_left_pending() {
    // The predecessor started 7! with IRQ_ON_DONE and died; a software raise
    // is also still pending, so the line is asserted.
    let mut model = EduModel::new().with_latency(50);
    model.write(WriteReg::IrqRaise, IrqBits::FACTORIAL.bits() | 0x100);
    model.write(WriteReg::Status, Status::IRQ_ON_DONE.bits());
    model.write(WriteReg::Factorial, 7);
    let mut h = Harness::start(model, Duration::from_secs(5));
    h.init();
    let (status, pending) = h.model.with(|m| (m.status(), m.irq_status()));
    assert!(pending.is_empty(), "leftover interrupt bits acknowledged, got {pending:?}");
    assert!(!status.intersects(Status::COMPUTING | Status::IRQ_ON_DONE), "computation finished quietly: {status:?}");
    // The replayed request is recomputed from scratch on the clean device.
    let id = h.request(1, &EduRequest::Factorial { n: 7, completion: Mode::Interrupt });
    h.until_computing();
    h.model.with(EduModel::finish_computation);
    let FromDriverOwned::Reply { id: got, reply, .. } = h.recv() else { panic!("expected a reply") };
    assert_eq!((got, reply), (id, EduReply::Factorial { n: 7, value: 5040 }));
    h.finish();
}

#[test]
fn an_interrupt_that_is_not_ours_keeps_the_request_waiting() {
    let mut h = Harness::start(EduModel::new().with_latency(u32::MAX), Duration::from_secs(5));
    h.init();
    h.reenables();
    let id = h.request(1, &EduRequest::Factorial { n: 4, completion: Mode::Interrupt });
    h.until_computing();
    h.model.foreign_interrupt();
    h.send(&ToDriver::Ping { nonce: 9 });
    assert_eq!(h.recv(), FromDriverOwned::Pong(9), "still waiting, still answering heartbeats");
    assert_eq!(h.reenables(), 1, "unmasked after the foreign interrupt");
    // Now the device really finishes (event count 2).
    h.model.with(|m| {
        *m = m.clone().with_latency(3);
        m.finish_computation();
    });
    let FromDriverOwned::Reply { id: got, reply, .. } = h.recv() else { panic!("expected a reply") };
    assert_eq!((got, reply), (id, EduReply::Factorial { n: 4, value: 24 }));
    h.finish();
}

#[test]
fn malformed_body_is_answered_with_an_error_and_the_driver_goes_on() {
    let mut h = Harness::start(EduModel::new(), Duration::from_secs(5));
    h.init();
    let bad = RequestId { client: ClientId(7), seq: 1 };
    h.send(&ToDriver::Request { id: bad, body: &[0xff, 0xff, 0xff] });
    assert_eq!(
        h.recv(),
        FromDriverOwned::Reply { id: bad, commit: None, reply: EduReply::Error(EduError::MalformedRequest { len: 3 }) }
    );
    let id = h.request(2, &EduRequest::Factorial { n: 12, completion: Mode::Polling });
    let state = EduState { factorials: 1, irqs_handled: 0 };
    assert_eq!(
        h.recv(),
        FromDriverOwned::Reply { id, commit: Some(state), reply: EduReply::Factorial { n: 12, value: 479_001_600 } }
    );
    let id = h.request(3, &EduRequest::Factorial { n: 13, completion: Mode::Interrupt });
    assert_eq!(
        h.recv(),
        FromDriverOwned::Reply { id, commit: None, reply: EduReply::Error(EduError::FactorialTooLarge { n: 13 }) },
        "a bad request is a committed, final answer"
    );
    h.finish();
}

#[test]
fn lost_interrupt_kills_the_instance_with_a_reason_naming_the_device() {
    let mut h = Harness::start(EduModel::new().with_latency(u32::MAX), Duration::from_millis(50));
    h.init();
    h.request(1, &EduRequest::Factorial { n: 3, completion: Mode::Interrupt });
    let FromDriverOwned::Fatal(reason) = h.recv() else { panic!("expected Fatal") };
    assert!(reason.contains("uio9 (model)") && reason.contains("no interrupt arrived"), "{reason}");
    let status = h.model.with(|m| m.status());
    assert!(!status.contains(Status::IRQ_ON_DONE), "the wait was abandoned cleanly: {status:?}");
    assert!(matches!(h.thread.take().unwrap().join().unwrap(), Exit::Failed(_)));
}

#[test]
fn device_that_is_not_edu_is_fatal_at_init() {
    let mut h = Harness::start(EduModel::new().with_id(0x1234_5678), Duration::from_secs(1));
    h.send(&ToDriver::Init { generation: Generation(1), checkpoint: None });
    let FromDriverOwned::Fatal(reason) = h.recv() else { panic!("expected Fatal") };
    assert!(reason.contains("uio9 (model)") && reason.contains("0x12345678"), "{reason}");
}

#[test]
fn arguments_parse_and_errors_name_the_flag() {
    let args = |s: &str| parse_args(s.split_whitespace().map(String::from));
    let a = args("--device pci:1234:11e8@1 --irq-timeout-ms 250").unwrap();
    assert_eq!(a.uio.device, Selector::Pci { vendor: 0x1234, device: 0x11e8, index: 1 });
    assert_eq!(
        (a.irq_timeout, a.uio.sysfs.as_path(), a.uio.dev.as_path()),
        (Duration::from_millis(250), "/sys".as_ref(), "/dev".as_ref())
    );
    assert!(args("").unwrap_err().starts_with("--device is required"));
    assert!(args("--device pci:zz").unwrap_err().starts_with("--device: invalid UIO device selector \"pci:zz\""));
    assert!(args("--device uio0 --irq-timeout-ms 0").unwrap_err().contains("out of range"));
    assert!(args("--device uio0 --irq-timeout-ms").unwrap_err().starts_with("--irq-timeout-ms needs"));
    assert!(args("--device uio0 --fast").unwrap_err().starts_with("unknown argument \"--fast\""));
}
