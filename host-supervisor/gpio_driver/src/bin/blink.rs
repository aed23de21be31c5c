//! `blink`: the LED demo, a client of two supervised drivers. It toggles a
//! GPIO pin through `gpio_driver` once per period, and the period is kept by
//! the system timer's compare interrupt through `timer_driver`: every step
//! is an `Arm` at an absolute deadline followed by a `Wait` that the timer
//! driver completes when the interrupt arrives. No sleep, no busy loop.
//!
//! ```text
//! blink [--runtime-dir DIR] [--gpio NAME] [--timer NAME] [--pin N]
//!       [--channel 1|3] [--period-ms N] [--count N]
//! ```
//! Defaults: drivers `gpio_driver` and `timer_driver` (the names in
//! `qemu/rpi3/pi.toml`), pin 17, channel 3, 500 ms, `--count 0` = forever.
//! One line per toggle:
//! `blink: toggle 3 pin=17 level=High fire=3 at=12345678 paced=irq`
//! (`paced=late` when the deadline had already passed when it was armed, so
//! no interrupt paced that toggle).
//!
//! # Why deadlines are absolute
//! The next deadline is the previous one plus the period (`Arm { at }`), not
//! "period from now" (`ArmIn`), so the rhythm does not drift by the time the
//! toggle and the round trips take. When a deadline has already passed (the
//! GPIO driver was being restarted, say) the timer answers `already_due`,
//! the `Wait` completes at once, and blink catches up one toggle per call
//! until it is back on the grid; a gap longer than 10 periods is skipped.
//!
//! # Why `Toggle` and not `SetLevel`
//! `Toggle` is a relative request that gpio_core resolves against the
//! *committed* level, so when `gpio_driver` crashes in the middle and a
//! `Toggle` is replayed, the LED still alternates: the new instance restores
//! the committed level and the replay computes the same absolute level.
#![forbid(unsafe_code)]

use gpio_core::{Direction, GpioReply, GpioRequest, Level};
use reinc_client::{Client, client_socket, default_runtime_dir};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::process::ExitCode;
use timer_core::{TimerReply, TimerRequest};

const USAGE: &str = "usage: blink [--runtime-dir DIR] [--gpio NAME] [--timer NAME] [--pin N] [--channel 1|3] \
                     [--period-ms N] [--count N]";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Args {
    runtime_dir: PathBuf,
    gpio: String,
    timer: String,
    pin: u8,
    channel: u8,
    period_us: u64,
    count: u64,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        runtime_dir: default_runtime_dir(),
        gpio: "gpio_driver".into(),
        timer: "timer_driver".into(),
        pin: 17,
        channel: 3,
        period_us: 500_000,
        count: 0,
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |what: &str| it.next().ok_or(format!("{arg} needs {what}; {USAGE}"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("{arg} {v:?} is not a number; {USAGE}"));
        match arg.as_str() {
            "--runtime-dir" => a.runtime_dir = value("a directory")?.into(),
            "--gpio" => a.gpio = value("a driver name")?,
            "--timer" => a.timer = value("a driver name")?,
            "--pin" => {
                a.pin =
                    u8::try_from(number(value("a pin number")?)?).map_err(|_| format!("--pin is 0..=53; {USAGE}"))?
            }
            "--channel" => {
                a.channel =
                    u8::try_from(number(value("1 or 3")?)?).map_err(|_| format!("--channel is 1 or 3; {USAGE}"))?
            }
            "--period-ms" => {
                let ms = number(value("milliseconds")?)?;
                if !(1..=3_600_000).contains(&ms) {
                    return Err(format!("--period-ms {ms} is out of range (1..=3600000); {USAGE}"));
                }
                a.period_us = ms * 1000;
            }
            "--count" => a.count = number(value("a number of toggles (0: forever)")?)?,
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(a)
}

/// One call, decoded; every failure names the driver and the request.
fn call<Q: Serialize + std::fmt::Debug, A: DeserializeOwned>(
    client: &mut Client,
    driver: &str,
    req: &Q,
) -> Result<A, String> {
    let body = postcard::to_allocvec(req).map_err(|e| format!("encoding {req:?}: {e}"))?;
    let reply = client
        .call(driver, &body)
        .map_err(|e| format!("{driver}: {req:?}: {e}"))?
        .map_err(|e| format!("{driver}: {req:?} failed: {e}"))?;
    postcard::from_bytes(&reply).map_err(|e| format!("{driver}: reply to {req:?} does not decode: {e}"))
}

fn gpio(client: &mut Client, a: &Args, req: GpioRequest) -> Result<GpioReply, String> {
    match call(client, &a.gpio, &req)? {
        GpioReply::Error(e) => Err(format!("{}: {req:?} refused: {e}", a.gpio)),
        r => Ok(r),
    }
}

fn timer(client: &mut Client, a: &Args, req: TimerRequest) -> Result<TimerReply, String> {
    match call(client, &a.timer, &req)? {
        TimerReply::Error(e) => Err(format!("{}: {req:?} refused: {e}", a.timer)),
        r => Ok(r),
    }
}

fn run(a: &Args) -> Result<(), String> {
    let path = client_socket(&a.runtime_dir);
    let mut client = Client::connect(&path).map_err(|e| format!("connecting to {}: {e}", path.display()))?;
    gpio(&mut client, a, GpioRequest::SetLevel { pin: a.pin, level: Level::Low })?;
    gpio(&mut client, a, GpioRequest::SetDirection { pin: a.pin, dir: Direction::Output })?;
    let TimerReply::Now { counter } = timer(&mut client, a, TimerRequest::Now)? else {
        return Err(format!("{}: Now answered something else", a.timer));
    };
    let mut at = counter + a.period_us;
    let mut toggles = 0u64;
    while a.count == 0 || toggles < a.count {
        let armed = timer(&mut client, a, TimerRequest::Arm { channel: a.channel, at })?;
        // A deadline already passed when armed raises no interrupt: the
        // Wait completes at once. Said per toggle, so a test can count the
        // toggles the interrupt paced.
        let late = matches!(armed, TimerReply::Armed { already_due: true, .. });
        let fired = timer(&mut client, a, TimerRequest::Wait { channel: a.channel })?;
        let TimerReply::Fired { at: fired_at, fires, .. } = fired else {
            return Err(format!("{}: Wait answered {fired:?}", a.timer));
        };
        let GpioReply::LevelSet { level, .. } = gpio(&mut client, a, GpioRequest::Toggle { pin: a.pin })? else {
            return Err(format!("{}: Toggle answered something else", a.gpio));
        };
        toggles += 1;
        let paced = if late { "late" } else { "irq" };
        println!("blink: toggle {toggles} pin={} level={level:?} fire={fires} at={fired_at} paced={paced}", a.pin);
        at = fired_at + a.period_us;
        // Skip whole periods after a long outage instead of bursting.
        if let TimerReply::Now { counter } = timer(&mut client, a, TimerRequest::Now)?
            && counter > at + 10 * a.period_us
        {
            let skipped = (counter - at) / a.period_us;
            eprintln!("blink: {skipped} periods late; skipping them");
            at += (skipped + 1) * a.period_us;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("blink: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blink: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_blink_pin_17_twice_a_second_forever_on_channel_3() {
        let a = args(&[]).unwrap();
        assert_eq!((a.gpio.as_str(), a.timer.as_str(), a.pin, a.channel), ("gpio_driver", "timer_driver", 17, 3));
        assert_eq!((a.period_us, a.count), (500_000, 0));
    }

    #[test]
    fn flags_override_and_bad_values_are_named() {
        let a = args(&["--pin", "27", "--period-ms", "40", "--count", "30", "--runtime-dir", "/r"]).unwrap();
        assert_eq!((a.pin, a.period_us, a.count, a.runtime_dir), (27, 40_000, 30, PathBuf::from("/r")));
        assert!(args(&["--period-ms", "0"]).unwrap_err().contains("out of range"));
        assert!(args(&["--pin", "300"]).unwrap_err().contains("--pin"));
        assert!(args(&["--count", "x"]).unwrap_err().contains("not a number"));
        assert!(args(&["--fast"]).unwrap_err().contains("--fast"));
    }
}
