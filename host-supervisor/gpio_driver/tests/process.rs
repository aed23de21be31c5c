//! `gpio_driver` as a process, launched the way the supervisor launches it,
//! over a fake UIO device: a sysfs tree in a temporary directory whose
//! `/dev/uio0` is a 4 KiB regular file, so the real discovery, mapping and
//! register-offset code runs and the test reads the "registers" back from
//! the file. (The real GPIO block is exercised in the rpi3 QEMU guest.)

use reinc_proto::{ClientId, FromDriver, Generation, RequestId, ToDriver};
use reinc_runtime::testing::{DriverProcess, Options, describe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gpio_core::{Direction, GpioReply, GpioRequest, Level};

const BIN: &str = env!("CARGO_BIN_EXE_gpio_driver");
const GPFSEL1: usize = 0x04;
const GPSET0: usize = 0x1c;
const GPCLR0: usize = 0x28;

/// A sysfs root with `class/uio/uio0` named `reinc-gpio`, map 0 at
/// 0x3f200000 of one page, and its device node, a zeroed 4 KiB file.
struct FakeUio {
    root: tempfile::TempDir,
}

impl FakeUio {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("class/uio/uio0");
        std::fs::create_dir_all(dir.join("maps/map0")).unwrap();
        for (file, text) in [("name", "reinc-gpio\n"), ("version", "devicetree\n"), ("event", "0\n")] {
            std::fs::write(dir.join(file), text).unwrap();
        }
        for (file, text) in [("addr", "0x000000003f200000\n"), ("size", "0x0000000000001000\n"), ("offset", "0x0\n")] {
            std::fs::write(dir.join("maps/map0").join(file), text).unwrap();
        }
        let fake = Self { root };
        fake.reset();
        fake
    }

    fn dir(&self) -> &str {
        self.root.path().to_str().unwrap()
    }

    fn node(&self) -> PathBuf {
        self.root.path().join("uio0")
    }

    /// Zeroes every "register", like a reset of the block.
    fn reset(&self) {
        std::fs::write(self.node(), vec![0u8; 4096]).unwrap();
    }

    fn word(&self, offset: usize) -> u32 {
        let bytes = std::fs::read(self.node()).unwrap();
        u32::from_ne_bytes(bytes[offset..offset + 4].try_into().unwrap())
    }

    fn spawn(&self, args: &[&str]) -> DriverProcess {
        let mut all = vec!["--sysfs", self.dir(), "--dev", self.dir()];
        all.extend_from_slice(args);
        DriverProcess::spawn(Path::new(BIN), "gpio_test", &all, Options::default())
    }
}

/// Sends `Init`; the answer's `Fatal` reason, if any.
fn init(p: &mut DriverProcess, generation: u32, checkpoint: Option<&[u8]>) -> Result<(), String> {
    p.send(&ToDriver::Init { generation: Generation(generation), checkpoint });
    p.recv(|f| match f.msg {
        FromDriver::Ready => Ok(()),
        FromDriver::Fatal { reason } => Err(reason.to_owned()),
        other => panic!("unexpected answer to Init: {other:?}"),
    })
    .expect("a frame before EOF")
}

/// One request; returns the reply and the commit, if any.
fn call(p: &mut DriverProcess, seq: u64, req: GpioRequest) -> (GpioReply, Option<Vec<u8>>) {
    let id = RequestId { client: ClientId(1), seq };
    let body = postcard::to_allocvec(&req).unwrap();
    p.send(&ToDriver::Request { id, body: &body });
    p.recv(|f| match f.msg {
        FromDriver::Reply { id: rid, commit, body } => {
            assert_eq!(rid, id);
            (postcard::from_bytes(body).unwrap(), commit.map(<[u8]>::to_vec))
        }
        other => panic!("expected a reply, got {other:?}"),
    })
    .expect("a reply before EOF")
}

#[test]
fn killed_process_is_replaced_by_one_that_rewrites_the_committed_pins() {
    let fake = FakeUio::new();
    let args = ["--device", "name:reinc-gpio", "--pins", "17,27"];
    let mut a = fake.spawn(&args);
    init(&mut a, 1, None).unwrap();
    let (r, _) = call(&mut a, 1, GpioRequest::SetDirection { pin: 17, dir: Direction::Output });
    assert_eq!(r, GpioReply::DirectionSet { pin: 17, dir: Direction::Output });
    assert_eq!(fake.word(GPFSEL1), 0b001 << 21, "GPFSEL1 field of pin 17 = output");
    let (r, _) = call(&mut a, 2, GpioRequest::SetLevel { pin: 17, level: Level::High });
    assert_eq!(r, GpioReply::LevelSet { pin: 17, level: Level::High });
    assert_eq!(fake.word(GPSET0), 1 << 17, "GPSET0 bit 17");
    let (_, checkpoint) = call(&mut a, 3, GpioRequest::SetLevel { pin: 27, level: Level::Low });
    assert_eq!(fake.word(GPCLR0), 1 << 27, "GPCLR0 bit 27");
    let checkpoint = checkpoint.expect("SetLevel commits");
    assert_eq!(describe(a.kill()), "SIGKILL");

    fake.reset();
    let mut b = fake.spawn(&args);
    init(&mut b, 2, Some(&checkpoint)).unwrap();
    assert_eq!(fake.word(GPFSEL1), 0b001 << 21, "direction of pin 17 restored before Ready");
    assert_eq!(fake.word(GPSET0), 1 << 17, "pin 17's committed high latch rewritten");
    assert_eq!(fake.word(GPCLR0), 1 << 27, "pin 27's committed low latch rewritten");
}

#[test]
fn missing_device_is_fatal_and_names_the_selector() {
    let fake = FakeUio::new();
    let mut p = fake.spawn(&["--device", "name:reinc-gpio@1", "--pins", "17"]);
    let reason = init(&mut p, 1, None).unwrap_err();
    assert!(reason.contains("GPIO device name:reinc-gpio@1"), "{reason}");
    assert_eq!(describe(p.wait_for(Duration::from_secs(10)).expect("exits after Fatal")), "exit 1");
}

#[test]
fn missing_pin_list_is_fatal_at_init_with_the_usage() {
    let fake = FakeUio::new();
    let mut p = fake.spawn(&["--device", "name:reinc-gpio"]);
    let reason = init(&mut p, 1, None).unwrap_err();
    assert!(reason.contains("--pins is required") && reason.contains("usage: gpio_driver"), "{reason}");
}
