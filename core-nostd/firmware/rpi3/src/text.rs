//! Console text shared by the kernel and the tasks: fixed-size lines (no
//! allocator) and the pin-state notation of the Linux `gpio_driver`'s
//! restore line (`17=out/high`).

use core::fmt::Write;
use gpio_core::{Direction, GpioState, Level, Pin};

/// One console line. Longer text is cut, never a reason to fail.
pub type Line = heapless::String<200>;

/// Formats into a [`Line`], cutting what does not fit.
#[must_use]
pub fn line(args: core::fmt::Arguments<'_>) -> Line {
    let mut l = Cut(Line::new());
    let _ = l.write_fmt(args);
    l.0
}

struct Cut(Line);

impl Write for Cut {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for c in s.chars() {
            if self.0.push(c).is_err() {
                return Err(core::fmt::Error);
            }
        }
        Ok(())
    }
}

/// `17=out/high 22=in`: every pin the state manages, `none` if it manages
/// none.
#[must_use]
pub fn pins(state: &GpioState) -> heapless::String<96> {
    let mut s = heapless::String::new();
    for p in state.managed().iter() {
        let dir = match state.direction(p) {
            Some(Direction::Output) => "out",
            Some(Direction::Input) => "in",
            None => "-",
        };
        let level = match state.level(p) {
            Some(Level::High) => "/high",
            Some(Level::Low) => "/low",
            None => "",
        };
        let sep = if s.is_empty() { "" } else { " " };
        let _ = write!(s, "{sep}{}={dir}{level}", p.number());
    }
    if s.is_empty() {
        let _ = s.push_str("none");
    }
    s
}

/// The committed level of `pin` as `0`/`1`, or `-` when none is committed.
#[must_use]
pub fn level_digit(state: &GpioState, pin: Pin) -> char {
    match state.level(pin) {
        Some(Level::High) => '1',
        Some(Level::Low) => '0',
        None => '-',
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpio_core::{Gpio, GpioModel, GpioRequest, PinSet};

    #[test]
    fn pins_use_the_linux_restore_line_notation() {
        let mut gpio = Gpio::new(GpioModel::new(), PinSet::EMPTY.with(Pin::new(17).unwrap(), true));
        let s0 = GpioState::default();
        assert_eq!(pins(&s0).as_str(), "none");
        let s1 = gpio.handle(&s0, &GpioRequest::SetLevel { pin: 17, level: Level::High }).commit.unwrap();
        let s2 = gpio.handle(&s1, &GpioRequest::SetDirection { pin: 17, dir: Direction::Output }).commit.unwrap();
        assert_eq!(pins(&s2).as_str(), "17=out/high");
        assert_eq!(level_digit(&s2, Pin::new(17).unwrap()), '1');
        assert_eq!(level_digit(&s0, Pin::new(17).unwrap()), '-');
    }

    #[test]
    fn long_lines_are_cut_not_lost() {
        let l = line(format_args!("{:>300}", "x"));
        assert_eq!(l.len(), 200);
    }
}
