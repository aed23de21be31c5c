//! The GPIO driver task: the firmware twin of
//! `host-supervisor/gpio_driver/src/driver.rs`. It restores the committed
//! pins (`Gpio::restore`), then serves requests with `Gpio::handle`, the same
//! core calls on the same postcard bodies, on `sys` instead of
//! `reinc-runtime`.

use super::{crash, encode, log};
use crate::kernel::BLINK_PIN;
use crate::{board, sys};
use gpio_core::{Gpio, GpioError, GpioReply, GpioRequest, GpioState, Pin, PinSet};
use reinc_firmware_rpi3::jefe::{BODY_MAX, CHECKPOINT_MAX};
use reinc_firmware_rpi3::text;
use reinc_proto::CrashPoint;

/// The GPIO driver: restore the committed pins, then serve requests.
pub fn gpio_main() -> ! {
    let mut cp = [0u8; CHECKPOINT_MAX];
    let init = sys::init(&mut cp);
    let generation = init.generation;
    let mut state: GpioState = match init.checkpoint {
        None => GpioState::default(),
        Some(bytes) => match postcard::from_bytes(bytes) {
            Ok(s) => s,
            Err(e) => panic!("gpio gen{generation}: checkpoint of {} bytes does not decode: {e}", bytes.len()),
        },
    };
    let allowed = PinSet::EMPTY.with(Pin::new(BLINK_PIN).expect("a BCM2835 pin"), true);
    let mut gpio = Gpio::new(board::gpio(), allowed);
    if let Some(kind) = init.crash {
        crash(kind, CrashPoint::Init, &"init");
    }
    match gpio.restore(&state) {
        Ok(trace) => sys::trace(trace.event()),
        Err(e) => panic!("gpio gen{generation}: {e}"),
    }
    if state.managed().is_empty() {
        log!("[driver] gpio gen{generation}: fresh start, no pin state to restore");
    } else {
        log!("[driver] gpio gen{generation}: restored pins from the checkpoint: {}", text::pins(&state));
    }
    sys::ready();
    let mut body = [0u8; BODY_MAX];
    loop {
        let req = sys::recv(&mut body);
        let (id, crash_plan) = (req.id, req.crash);
        let at = |p: CrashPoint| crash_plan.filter(|(q, _)| *q == p).map(|(_, k)| k);
        if let Some(k) = at(CrashPoint::BeforeEffect) {
            crash(k, CrashPoint::BeforeEffect, &id);
        }
        let (reply, new) = match postcard::from_bytes::<GpioRequest>(req.body) {
            Ok(request) => {
                let handled = gpio.handle(&state, &request);
                sys::trace(handled.trace.event());
                (handled.reply, handled.commit.unwrap_or(state))
            }
            Err(_) => {
                let len = u32::try_from(req.body.len()).unwrap_or(u32::MAX);
                (GpioReply::Error(GpioError::MalformedRequest { len }), state)
            }
        };
        if let Some(k) = at(CrashPoint::AfterEffect) {
            crash(k, CrashPoint::AfterEffect, &id);
        }
        let (mut rb, mut cb) = ([0u8; BODY_MAX], [0u8; CHECKPOINT_MAX]);
        sys::reply(id, encode(&reply, &mut rb), encode(&new, &mut cb));
        state = new;
        if let Some(k) = at(CrashPoint::AfterReply) {
            crash(k, CrashPoint::AfterReply, &id);
        }
    }
}
