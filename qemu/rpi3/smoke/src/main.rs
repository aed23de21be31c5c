//! Phase-1 smoke probe: gpio-core and timer-core driving QEMU raspi3b's
//! BCM2837 GPIO block and system timer through reinc-uio, as gpio_driver and
//! timer_driver will. Prints one `PROBE PASS|FAIL <what>` line per check.
//! The rpi3 guest suite of `cargo xtask qemu-test --machine rpi3` (phase 2)
//! supersedes it; see ../README.md.
use std::time::Duration;

use gpio_core::{Direction, Gpio, GpioReply, GpioRequest, GpioState, Level, PinSet};
use reinc_uio::{IrqWait, Mapping, Sysfs};
use timer_core::{Step, Timer, TimerReply, TimerRequest, TimerState};

fn check(ok: bool, what: &str) {
    println!("PROBE {} {what}", if ok { "PASS" } else { "FAIL" });
}

fn main() {
    let devices = Sysfs::system().devices().expect("discovery");
    for d in &devices {
        println!("PROBE dev {} maps={:?}", d.describe(), d.maps);
    }
    let gdev = devices.iter().find(|d| d.name == "reinc-gpio").expect("reinc-gpio");
    let tdev = devices.iter().find(|d| d.name == "reinc-systimer").expect("reinc-systimer");
    check(gdev.maps[0].addr == 0x3f20_0000 && gdev.maps[0].size == 0x1000, "gpio map 0x3f200000/0x1000");
    check(tdev.maps[0].addr == 0x3f00_3000 && tdev.maps[0].size == 0x1000, "timer map 0x3f003000/0x1000");

    let pins = [5u8, 6, 17, 22, 27, 40];
    let allowed = pins.iter().fold(PinSet::EMPTY, |s, p| s.with(gpio_core::Pin::new(*p).unwrap(), true));
    let block = Mapping::uio_map(gdev, 0).unwrap().into_block::<gpio_core::RegisterBlock>(0).unwrap();
    let mut g = Gpio::new(block, allowed);
    let mut state = GpioState::default();
    let run = |g: &mut Gpio<_>, st: &mut GpioState, r| {
        let h = g.handle(st, &r);
        if let Some(s) = h.commit {
            *st = s;
        }
        h.reply
    };
    let mut ok = true;
    for &p in &pins {
        run(&mut g, &mut state, GpioRequest::SetDirection { pin: p, dir: Direction::Output });
        for level in [Level::High, Level::Low, Level::High] {
            run(&mut g, &mut state, GpioRequest::SetLevel { pin: p, level });
            let r = run(&mut g, &mut state, GpioRequest::Read { pin: p });
            ok &= matches!(r, GpioReply::Level { level: l, .. } if l == level);
        }
    }
    check(ok, "direction/level round trips on 6 pins");
    let r = run(&mut g, &mut state, GpioRequest::SetLevel { pin: 60, level: Level::High });
    check(matches!(r, GpioReply::Error(gpio_core::GpioError::InvalidPin { pin: 60 })), "pin 60 refused");
    let r = run(&mut g, &mut state, GpioRequest::SetLevel { pin: 14, level: Level::High });
    check(matches!(r, GpioReply::Error(gpio_core::GpioError::PinNotAllowed { pin: 14 })), "pin 14 (UART) fenced off");
    run(&mut g, &mut state, GpioRequest::SetLevel { pin: 17, level: Level::Low });
    let r = run(&mut g, &mut state, GpioRequest::Toggle { pin: 17 });
    check(r == GpioReply::LevelSet { pin: 17, level: Level::High }, "toggle resolved against committed level");
    drop(g); // the "crash"
    // Something else reconfigures pin 17 while the driver is down.
    let other = Mapping::uio_map(gdev, 0).unwrap().into_block::<gpio_core::RegisterBlock>(0).unwrap();
    let mut intruder = Gpio::new(other, PinSet::ALL);
    let mut scratch = GpioState::default();
    run(&mut intruder, &mut scratch, GpioRequest::SetLevel { pin: 17, level: Level::Low });
    run(&mut intruder, &mut scratch, GpioRequest::SetDirection { pin: 17, dir: Direction::Input });
    let block = Mapping::uio_map(gdev, 0).unwrap().into_block::<gpio_core::RegisterBlock>(0).unwrap();
    let mut g2 = Gpio::new(block, allowed);
    g2.restore(&state).expect("restore");
    let r = run(&mut g2, &mut state, GpioRequest::Read { pin: 17 });
    check(
        r == GpioReply::Level { pin: 17, level: Level::High, function: gpio_core::Function::Output },
        &format!("restore brings pin 17 back to output/high ({r:?})"),
    );

    let tblock = Mapping::uio_map(tdev, 0).unwrap().into_block::<timer_core::RegisterBlock>(0).unwrap();
    let mut irq = reinc_uio::Irq::open(tdev).unwrap();
    irq.reenable().unwrap();
    let mut t = Timer::new(tblock);
    let mut ts = TimerState::default();
    check(irq.wait(Some(Duration::from_millis(100))).unwrap() == IrqWait::TimedOut, "no interrupt when nothing armed");
    let mut counts = Vec::new();
    for n in 1..=4u64 {
        let h = t.handle(&ts, &TimerRequest::ArmIn { channel: 3, micros: 20_000 });
        ts = h.commit.unwrap_or(ts);
        loop {
            let h = t.handle(&ts, &TimerRequest::Wait { channel: 3 });
            match h.step {
                Step::WaitForInterrupt { .. } => {
                    match irq.wait(Some(Duration::from_secs(2))).unwrap() {
                        IrqWait::Fired { count, .. } => counts.push(count),
                        IrqWait::TimedOut => {
                            check(false, "timer interrupt within 2 s");
                            return;
                        }
                    }
                    t.acknowledge();
                    irq.reenable().unwrap();
                }
                Step::Reply(r) => {
                    ts = h.commit.unwrap_or(ts);
                    check(
                        matches!(r, TimerReply::Fired { fires, .. } if fires == n),
                        &format!("wait {n} fired: {r:?}"),
                    );
                    break;
                }
            }
        }
    }
    check(counts.windows(2).all(|w| w[1] > w[0]), &format!("event counts grow: {counts:?}"));
}
