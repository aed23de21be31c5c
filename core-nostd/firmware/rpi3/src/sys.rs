//! The safe syscall wrappers tasks call (the numbers and codes are the
//! library's `abi`). Every wrapper passes only slices it borrows for the
//! duration of the call, all of them locals on the task's own stack, which
//! is the only memory the kernel accepts.

pub use reinc_firmware_rpi3::abi::*;
use reinc_firmware_rpi3::jefe::FaultKind;
use reinc_proto::{CrashPoint, RequestId};

use crate::arch::svc;

/// Prints one line on the console.
pub fn log(line: &str) {
    let _ = svc(LOG, [line.as_ptr() as u64, line.len() as u64, 0, 0, 0, 0]);
}

/// Reports a panic; the kernel never resumes the task.
pub fn panicked(msg: &str) -> ! {
    let _ = svc(PANIC, [msg.as_ptr() as u64, msg.len() as u64, 0, 0, 0, 0]);
    unreachable!("the kernel does not resume a task that panicked")
}

/// What a new driver instance starts from.
#[derive(Debug)]
pub struct Init<'a> {
    /// The committed state, `None` on a fresh start.
    pub checkpoint: Option<&'a [u8]>,
    /// This instance's generation.
    pub generation: u32,
    /// Crash while restoring (an `init` fault plan).
    pub crash: Option<FaultKind>,
}

/// Asks for this instance's start: the checkpoint is copied into `buf`.
pub fn init(buf: &mut [u8]) -> Init<'_> {
    let [len, generation, crash, _] = svc(INIT, [buf.as_mut_ptr() as u64, buf.len() as u64, 0, 0, 0, 0]);
    let checkpoint = if len == u64::MAX { None } else { Some(&buf[..len as usize]) };
    Init { checkpoint, generation: generation as u32, crash: kind_of(crash) }
}

/// Records `event` in this instance's trace ring, which the kernel keeps
/// (and prints) after the task died, like the Linux runtime's memfd ring.
pub fn trace(event: reinc_ringbuf::Event) {
    let mut b = [0u8; 48];
    if let Ok(bytes) = postcard::to_slice(&event, &mut b) {
        let _ = svc(TRACE, [bytes.as_ptr() as u64, bytes.len() as u64, 0, 0, 0, 0]);
    }
}

/// Restored; ready for requests (and the replay).
pub fn ready() {
    let _ = svc(READY, [0; 6]);
}

/// One request handed to a driver.
#[derive(Debug)]
pub struct Request<'a> {
    /// Its id.
    pub id: RequestId,
    /// The postcard body.
    pub body: &'a [u8],
    /// Crash at this point, this way (an armed fault plan).
    pub crash: Option<(CrashPoint, FaultKind)>,
}

/// Blocks until the next request; its body is copied into `buf`.
pub fn recv(buf: &mut [u8]) -> Request<'_> {
    let [len, client, seq, crash] = svc(RECV, [buf.as_mut_ptr() as u64, buf.len() as u64, 0, 0, 0, 0]);
    let crash = match (point_of(crash >> 8), kind_of(crash & 0xff)) {
        (Some(p), Some(k)) => Some((p, k)),
        _ => None,
    };
    let id = RequestId { client: reinc_proto::ClientId(client), seq };
    Request { id, body: &buf[..len as usize], crash }
}

/// Answers `id` with `reply`; `commit` is the new committed state.
pub fn reply(id: RequestId, reply: &[u8], commit: &[u8]) {
    let args =
        [reply.as_ptr() as u64, reply.len() as u64, commit.as_ptr() as u64, commit.len() as u64, id.client.0, id.seq];
    let _ = svc(REPLY, args);
}

/// Blocks until the task's interrupt fired.
pub fn wait_irq() {
    let _ = svc(WAIT_IRQ, [0; 6]);
}

/// True (once) if the interrupt fired since it was last consumed.
#[must_use]
pub fn poll_irq() -> bool {
    svc(POLL_IRQ, [0; 6])[0] != 0
}

/// Unmasks the task's interrupt line.
pub fn irq_enable() {
    let _ = svc(IRQ_ENABLE, [0; 6]);
}

/// Why a client call did not get a driver's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// The driver is quarantined.
    DriverFailed,
    /// Backpressure.
    Busy,
    /// The request was refused.
    Refused,
}

fn status(code: u64) -> Result<(), CallError> {
    match code {
        STATUS_OK => Ok(()),
        STATUS_BUSY => Err(CallError::Busy),
        STATUS_DRIVER_FAILED => Err(CallError::DriverFailed),
        _ => Err(CallError::Refused),
    }
}

/// Queues `body` for `driver`.
///
/// # Errors
/// The kernel refused it.
pub fn send(driver: usize, body: &[u8]) -> Result<(), CallError> {
    status(svc(SEND, [driver as u64, body.as_ptr() as u64, body.len() as u64, 0, 0, 0])[0])
}

/// Collects `driver`'s reply into `buf`; `None` when `block` is false and
/// no reply came yet.
pub fn take_reply(driver: usize, buf: &mut [u8], block: bool) -> Option<Result<&[u8], CallError>> {
    let [code, len, _, _] =
        svc(TAKE_REPLY, [driver as u64, buf.as_mut_ptr() as u64, buf.len() as u64, u64::from(block), 0, 0]);
    if code == STATUS_NONE_YET {
        return None;
    }
    Some(status(code).map(|()| &buf[..len as usize]))
}

/// Arms `plan` in `driver` (in every later instance too with `every_instance`).
pub fn inject(driver: usize, plan: reinc_proto::FaultPlan, every_instance: bool) {
    let args = [
        driver as u64,
        point_code(plan.point),
        u64::from(plan.on_request),
        kind_code(FaultKind::Plan(plan.kind)),
        u64::from(every_instance),
        0,
    ];
    let _ = svc(INJECT, args);
}

/// Arms a stack overflow in `driver` at `point` of its `on_request`-th request.
pub fn inject_stack_overflow(driver: usize, point: CrashPoint, on_request: u32) {
    let args = [driver as u64, point_code(point), u64::from(on_request), kind_code(FaultKind::StackOverflow), 0, 0];
    let _ = svc(INJECT, args);
}

/// Revives a quarantined driver.
pub fn revive(driver: usize) {
    let _ = svc(REVIVE, [driver as u64, 0, 0, 0, 0, 0]);
}

/// Microseconds since reset.
#[must_use]
pub fn now_us() -> u64 {
    svc(NOW, [0; 6])[1]
}

/// Ends the run.
pub fn finish() -> ! {
    let _ = svc(FINISH, [0; 6]);
    unreachable!("the kernel resets the board on finish")
}
