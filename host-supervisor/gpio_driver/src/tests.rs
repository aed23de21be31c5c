//! The driver over gpio_core's behavioural model, run by the real runtime
//! loop in a thread (`reinc_runtime::testing::InProcess`); the test plays the
//! supervisor, including "restart with the last commit as checkpoint".

use super::*;
use gpio_core::model::GpioModel;
use gpio_core::{Bank, DetectKind, Direction, Function, GpioError, GpioRegisters, GpioReply, GpioRequest, Level};
use reinc_proto::{ClientId, FromDriver, Generation, RequestId, ToDriver};
use reinc_runtime::testing::{InProcess, LoopOptions};
use reinc_uio::Selector;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The model behind a lock, so the test can inspect (or tamper with) the
/// pins while a driver thread owns its register access, and hand the same
/// "hardware" to the next instance.
#[derive(Debug, Clone, Default)]
struct Shared(Arc<Mutex<GpioModel>>);

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut GpioModel) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }
}

impl GpioRegisters for Shared {
    fn fsel(&self, index: usize) -> u32 {
        self.with(|m| m.fsel(index))
    }
    fn write_fsel(&mut self, index: usize, value: u32) {
        self.with(|m| m.write_fsel(index, value));
    }
    fn set(&mut self, bank: Bank, mask: u32) {
        self.with(|m| m.set(bank, mask));
    }
    fn clear(&mut self, bank: Bank, mask: u32) {
        self.with(|m| m.clear(bank, mask));
    }
    fn level(&self, bank: Bank) -> u32 {
        self.with(|m| m.level(bank))
    }
    fn events(&self, bank: Bank) -> u32 {
        self.with(|m| m.events(bank))
    }
    fn clear_events(&mut self, bank: Bank, mask: u32) {
        self.with(|m| m.clear_events(bank, mask));
    }
    fn detect(&self, kind: DetectKind, bank: Bank) -> u32 {
        self.with(|m| m.detect(kind, bank))
    }
    fn write_detect(&mut self, kind: DetectKind, bank: Bank, value: u32) {
        self.with(|m| m.write_detect(kind, bank, value));
    }
}

#[derive(Debug)]
struct ModelSource(Shared);

impl Source for ModelSource {
    type Regs = Shared;
    fn selector(&self) -> String {
        "name:model-gpio".into()
    }
    fn open(&mut self) -> Result<Device<Shared>, GpioDriverError> {
        Ok(Device { what: "uio9 (model-gpio)".into(), regs: self.0.clone() })
    }
}

fn pins(list: &[u8]) -> PinSet {
    list.iter().fold(PinSet::EMPTY, |s, n| s.with(Pin::new(*n).unwrap(), true))
}

fn pin(n: u8) -> Pin {
    Pin::new(n).unwrap()
}

/// One instance plus what the test, as supervisor, has committed so far.
struct Instance {
    lp: InProcess,
    generation: Generation,
    seq: u64,
    checkpoint: Option<Vec<u8>>,
}

impl Instance {
    /// Starts an instance over `hw` and sends `Init` with `checkpoint`;
    /// returns the instance or the `Fatal` reason.
    fn start(hw: &Shared, allowed: &[u8], generation: u32, checkpoint: Option<Vec<u8>>) -> Result<Self, String> {
        let driver = GpioDriver::new(ModelSource(hw.clone()), pins(allowed));
        let mut lp = InProcess::start("gpio", driver, LoopOptions::default());
        let generation = Generation(generation);
        lp.send(&ToDriver::Init { generation, checkpoint: checkpoint.as_deref() });
        let answer = lp.recv(|f| match f.msg {
            FromDriver::Ready => Ok(()),
            FromDriver::Fatal { reason } => Err(reason.to_owned()),
            other => panic!("unexpected answer to Init: {other:?}"),
        });
        answer.expect("an answer to Init")?;
        Ok(Self { lp, generation, seq: 0, checkpoint })
    }

    /// Sends raw `body`, returns the decoded reply; applies the commit like
    /// the supervisor does.
    fn call_raw(&mut self, body: &[u8]) -> GpioReply {
        self.seq += 1;
        let id = RequestId { client: ClientId(1), seq: self.seq };
        self.lp.send(&ToDriver::Request { id, body });
        let (reply, commit) = self
            .lp
            .recv(|f| {
                assert_eq!(f.generation, self.generation, "frames carry the instance's generation");
                match f.msg {
                    FromDriver::Reply { id: rid, commit, body } => {
                        assert_eq!(rid, id);
                        (postcard::from_bytes::<GpioReply>(body).unwrap(), commit.map(<[u8]>::to_vec))
                    }
                    other => panic!("expected a reply, got {other:?}"),
                }
            })
            .expect("a reply");
        if let Some(c) = commit {
            self.checkpoint = Some(c);
        }
        reply
    }

    fn call(&mut self, req: GpioRequest) -> GpioReply {
        self.call_raw(&postcard::to_allocvec(&req).unwrap())
    }

    /// Ends the instance (as if it died) and returns the last commit.
    fn crash(self) -> Option<Vec<u8>> {
        self.lp.finish();
        self.checkpoint
    }
}

#[test]
fn restart_restores_directions_and_levels_from_the_checkpoint() {
    let hw = Shared::default();
    let mut a = Instance::start(&hw, &[17, 22, 27], 1, None).unwrap();
    a.call(GpioRequest::SetLevel { pin: 17, level: Level::High });
    a.call(GpioRequest::SetDirection { pin: 17, dir: Direction::Output });
    a.call(GpioRequest::SetDirection { pin: 27, dir: Direction::Output });
    a.call(GpioRequest::SetLevel { pin: 27, level: Level::Low });
    a.call(GpioRequest::SetDirection { pin: 22, dir: Direction::Input });
    let checkpoint = a.crash();
    // While no driver runs, something resets the block and drives pin 27 high.
    hw.with(|m| {
        m.reset();
        m.write_fsel(2, 0b001 << 21); // pin 27 output
        m.set(Bank::B0, 1 << 27);
        m.write_fsel(2, m.fsel(2) | (0b001 << 6)); // pin 22 output
    });
    let _b = Instance::start(&hw, &[17, 22, 27], 2, checkpoint).unwrap();
    hw.with(|m| {
        assert_eq!((m.function(pin(17)), m.pin_level(pin(17))), (Function::Output, Level::High), "pin 17");
        assert_eq!((m.function(pin(27)), m.pin_level(pin(27))), (Function::Output, Level::Low), "pin 27");
        assert_eq!(m.function(pin(22)), Function::Input, "pin 22");
    });
}

#[test]
fn toggle_after_a_restart_is_resolved_against_the_committed_level() {
    let hw = Shared::default();
    let mut a = Instance::start(&hw, &[17], 1, None).unwrap();
    a.call(GpioRequest::SetDirection { pin: 17, dir: Direction::Output });
    assert_eq!(
        a.call(GpioRequest::SetLevel { pin: 17, level: Level::High }),
        GpioReply::LevelSet { pin: 17, level: Level::High }
    );
    let checkpoint = a.crash();
    let mut b = Instance::start(&hw, &[17], 2, checkpoint).unwrap();
    assert_eq!(b.call(GpioRequest::Toggle { pin: 17 }), GpioReply::LevelSet { pin: 17, level: Level::Low });
    assert_eq!(hw.with(|m| m.pin_level(pin(17))), Level::Low);
}

#[test]
fn invalid_and_fenced_pins_are_refused_without_a_register_write() {
    let hw = Shared::default();
    let mut a = Instance::start(&hw, &[17], 1, None).unwrap();
    hw.with(GpioModel::clear_log);
    assert_eq!(
        a.call(GpioRequest::SetLevel { pin: 60, level: Level::High }),
        GpioReply::Error(GpioError::InvalidPin { pin: 60 })
    );
    assert_eq!(
        a.call(GpioRequest::SetDirection { pin: 14, dir: Direction::Output }),
        GpioReply::Error(GpioError::PinNotAllowed { pin: 14 }),
        "the UART pin is not in --pins"
    );
    assert_eq!(a.call(GpioRequest::Toggle { pin: 17 }), GpioReply::Error(GpioError::LevelUnknown { pin: 17 }));
    assert_eq!(hw.with(|m| m.write_count()), 0, "no register was written");
    assert_eq!(a.crash(), None, "nothing was committed");
}

#[test]
fn malformed_body_is_answered_with_an_error_and_the_driver_keeps_serving() {
    let hw = Shared::default();
    let mut a = Instance::start(&hw, &[17], 1, None).unwrap();
    assert_eq!(a.call_raw(&[0xff, 0xff, 0xff]), GpioReply::Error(GpioError::MalformedRequest { len: 3 }));
    assert_eq!(a.call_raw(&[]), GpioReply::Error(GpioError::MalformedRequest { len: 0 }));
    assert_eq!(
        a.call(GpioRequest::SetDirection { pin: 17, dir: Direction::Output }),
        GpioReply::DirectionSet { pin: 17, dir: Direction::Output }
    );
    assert_eq!(
        a.call(GpioRequest::Read { pin: 17 }),
        GpioReply::Level { pin: 17, level: Level::Low, function: Function::Output }
    );
}

#[test]
fn checkpoint_naming_a_pin_no_longer_allowed_is_fatal_and_names_it() {
    let hw = Shared::default();
    let mut a = Instance::start(&hw, &[17, 27], 1, None).unwrap();
    a.call(GpioRequest::SetDirection { pin: 27, dir: Direction::Output });
    let checkpoint = a.crash();
    hw.with(GpioModel::clear_log);
    let reason = Instance::start(&hw, &[17], 2, checkpoint).err().expect("restart with a narrower --pins fails");
    assert!(reason.contains("pin 27") && reason.contains("uio9 (model-gpio)"), "{reason}");
    assert_eq!(hw.with(|m| m.write_count()), 0, "nothing was written before refusing");
}

#[test]
fn corrupt_checkpoint_is_fatal() {
    let hw = Shared::default();
    let reason = Instance::start(&hw, &[17], 1, Some(vec![0xff; 3])).err().expect("fatal");
    assert!(reason.contains("checkpoint"), "{reason}");
}

fn args(list: &[&str]) -> Result<Args, String> {
    parse_args(list.iter().map(|s| s.to_string()))
}

#[test]
fn arguments_need_a_device_and_an_explicit_list_of_real_distinct_pins() {
    let a = args(&["--device", "name:reinc-gpio", "--pins", "17, 27,22"]).unwrap();
    assert_eq!(a.pins, pins(&[17, 22, 27]));
    assert_eq!(a.uio.device, Selector::Name { name: "reinc-gpio".into(), index: 0 });
    assert_eq!(a.uio.sysfs, PathBuf::from("/sys"));
    assert!(args(&["--device", "name:reinc-gpio"]).unwrap_err().contains("--pins is required"));
    assert!(args(&["--pins", "17"]).unwrap_err().contains("--device is required"));
    assert!(args(&["--device", "name:g", "--pins", "54"]).unwrap_err().contains("54"));
    assert!(args(&["--device", "name:g", "--pins", "17,17"]).unwrap_err().contains("twice"));
    assert!(args(&["--device", "name:g", "--pins", ""]).unwrap_err().contains("not a pin number"));
    assert!(args(&["--device", "name:g", "--pins", "17", "--bogus"]).unwrap_err().contains("--bogus"));
}
