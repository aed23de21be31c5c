//! The injector: applies one fault of the schedule at a time to its lane's
//! supervisor and drivers, and waits for its outcome (a new generation
//! running, a reply, a quarantine) before the next, so every outcome and
//! recovery time is attributable to one fault index.

use crate::lane::{ExecTail, FAULT_TIMEOUT, Sup, init_driver, running};
use crate::load::misbehave::{MisOrder, MisResult};
use crate::load::{RANGE, Shared, VICTIM, block_data};
use crate::misbehave::Misbehaviour;
use crate::schedule::{Fault, FlipPlace, Target};
use crate::{Handling, Outcome, Record};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reinc_client::control::{ControlRequest, ControlResponse};
use reinc_client::{Client, blocksum, client_socket};
use reinc_proto::CallError;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use storage_core::BLOCK_SIZE;

/// What the supervisor says when a fault is injected into a driver between
/// two instances.
pub(crate) const NO_INSTANCE: &str = "has no running instance";
/// How often a fault is applied again to the next instance after that.
pub(crate) const REAPPLY: u32 = 20;

/// The bytes of `data` inside an encoded request or reply `body`.
pub(crate) fn data_in<'b>(body: &'b mut [u8], data: &[u8]) -> Result<&'b mut [u8], String> {
    let at = body.windows(data.len()).position(|w| w == data).ok_or("the block is not in the message body")?;
    Ok(&mut body[at..at + data.len()])
}

pub(crate) struct Injector<'a> {
    pub(crate) sup: &'a mut Sup,
    pub(crate) shared: &'a Shared,
    pub(crate) mis: mpsc::Sender<MisOrder>,
    pub(crate) client: Option<Client>,
    pub(crate) storage_tail: ExecTail,
    pub(crate) net_tail: ExecTail,
    pub(crate) bench_copy: &'a Path,
    pub(crate) disk: PathBuf,
    pub(crate) victim_version: u32,
    pub(crate) t_start: Instant,
}

impl Injector<'_> {
    pub(crate) fn client(&mut self) -> Result<&mut Client, String> {
        if self.client.is_none() {
            self.client = Some(Client::connect(&client_socket(&self.sup.runtime)).map_err(|e| e.to_string())?);
        }
        self.client.as_mut().ok_or_else(|| "no client".into())
    }

    pub(crate) fn apply(&mut self, index: usize, fault: &Fault) -> Result<Record, String> {
        self.sup.fault_index = index;
        let at_ms = self.t_start.elapsed().as_secs_f64() * 1000.0;
        let mut restart_us = None;
        let (outcome, handling, recovery_us, note) = match *fault {
            Fault::Inject { target, point, kind, k } => {
                let plan = format!("{}:{k}:{}", point.name(), kind.name())
                    .parse()
                    .map_err(|e| format!("plan {point:?}:{k}:{kind:?}: {e}"))?;
                let (r, h) = self.crash(target, |s, _| {
                    match s.control(&ControlRequest::Inject { driver: target.driver().into(), plan })? {
                        ControlResponse::Done(_) => Ok(()),
                        other => Err(format!("inject {plan} into {}: {other:?}", target.driver())),
                    }
                })?;
                (Outcome::Recovered, h, r, String::new())
            }
            Fault::Signal { target, signal, delay_us } => {
                let (r, h) = self.crash(target, |_, pid| {
                    std::thread::sleep(Duration::from_micros(u64::from(delay_us)));
                    kill(Pid::from_raw(pid as i32), signal.signal()).map_err(|e| match e {
                        // Gone (and reaped) since the status: the next instance gets it.
                        nix::errno::Errno::ESRCH => format!("{} {NO_INSTANCE} (pid {pid} is gone)", target.driver()),
                        e => format!("kill -{} {pid} ({}): {e}", signal.signal(), target.driver()),
                    })
                })?;
                (Outcome::Recovered, h, r, String::new())
            }
            Fault::InitCrash { kind } => {
                let name = init_driver(kind);
                let before = self.sup.driver(&name)?.restarts;
                self.sup.control(&ControlRequest::Restart { driver: name.clone() })?;
                self.sup.wait(&name, FAULT_TIMEOUT, |s| s.restarts > before && s.state.name() == "quarantined")?;
                // A client of a quarantined driver gets a definite error, at once.
                match self
                    .client()?
                    .call(&name, &[reinc_bench::NULL_COMMIT])
                    .map_err(|e| format!("{name}: unknown outcome: {e}"))?
                {
                    Err(CallError::DriverFailed) => {}
                    other => return Err(format!("{name} is quarantined, yet a call got {other:?}")),
                }
                (Outcome::Quarantined, Handling::Quarantined, None, "caller got DriverFailed".into())
            }
            Fault::Misbehave(m) => self.misbehave(m)?,
            Fault::ExecFails => self.exec_fails()?,
            Fault::StorageBitFlip { bit, place } => self.storage_bit_flip(index, bit, place)?,
            Fault::SupervisorKill { delay_us } => {
                let (first_reply, running, note) = self.supervisor_kill(delay_us)?;
                restart_us = Some(running);
                (Outcome::Recovered, Handling::Restarted, first_reply, note)
            }
        };
        Ok(Record {
            index,
            fault: *fault,
            class: fault.class(),
            at_ms,
            outcome,
            handling,
            recovery_us,
            restart_us,
            note,
        })
    }

    pub(crate) fn clear_watches(&self) {
        if let Ok(mut m) = self.shared.storage_replies.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.shared.net_replies.lock() {
            m.clear();
        }
    }

    /// Applies a crash fault to `target`, waits for the next generation to
    /// run and measures recovery: from the fault to the first reply of a
    /// request the new instance executed.
    ///
    /// An instance that died on its own between the status and the fault
    /// (a heartbeat missed on a loaded host) cannot take the fault: the
    /// supervisor says it has no running instance, and the fault is applied
    /// to the next one (at most [`REAPPLY`] times).
    pub(crate) fn crash(
        &mut self,
        target: Target,
        mut apply: impl FnMut(&Sup, u32) -> Result<(), String>,
    ) -> Result<(Option<u64>, Handling), String> {
        let mut tries = 0;
        let (g, t0) = loop {
            let st = self.sup.wait(target.driver(), FAULT_TIMEOUT, |s| running(s) && s.pid.is_some())?;
            let (g, pid) = (st.generation, st.pid.unwrap_or(0));
            self.before_crash(g);
            let t0 = Instant::now();
            match apply(self.sup, pid) {
                Err(e) if e.contains(NO_INSTANCE) && tries < REAPPLY => tries += 1,
                Err(e) => return Err(e),
                Ok(()) => break (g, t0),
            }
        };
        self.sup.wait(target.driver(), FAULT_TIMEOUT, |s| running(s) && s.generation > g)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut candidates: Vec<(u64, u64)> = Vec::new();
        let recovery = loop {
            let first = match target {
                Target::Storage | Target::Net => {
                    let (tail, map) = if target == Target::Storage {
                        (&mut self.storage_tail, &self.shared.storage_replies)
                    } else {
                        (&mut self.net_tail, &self.shared.net_replies)
                    };
                    candidates.extend(tail.read_new().into_iter().filter(|e| e.0 > g).map(|e| (e.1, e.2)));
                    let m = map.lock().map_err(|_| "reply map poisoned".to_owned())?;
                    candidates.iter().filter_map(|k| m.get(k).copied()).min()
                }
                Target::Misbehave => self.shared.mis_watch.lock().ok().and_then(|w| w.1),
                Target::Null => None,
            };
            if let Some(t) = first {
                break Some(t.saturating_duration_since(t0).as_micros() as u64);
            }
            if target == Target::Null || Instant::now() > deadline || self.shared.stopped() {
                break None;
            }
            std::thread::sleep(Duration::from_micros(300));
        };
        Ok((recovery, Handling::Restarted))
    }

    /// SIGKILLs the lane's supervisor after `delay_us` under load and starts
    /// the next at once ([`Sup::kill_and_restart`]); waits until every load
    /// driver runs again (and every init-crash driver is quarantined again).
    /// Returns the recovery (kill → the first reply of a request executed by
    /// a driver of the new supervisor, by the exec logs of storage and net),
    /// kill → the load drivers running, and a note.
    ///
    /// The invariants are the load's and the final checks': the model
    /// clients resume their sessions and see latency only, the exec logs
    /// and the superblock count each execution once over both lifetimes.
    fn supervisor_kill(&mut self, delay_us: u32) -> Result<(Option<u64>, u64, String), String> {
        self.sup.wait_ready(FAULT_TIMEOUT)?;
        self.before_crash(0);
        std::thread::sleep(Duration::from_micros(u64::from(delay_us)));
        let (t0, spawned) = self.sup.kill_and_restart()?;
        // From here the exec logs' new lines are the new drivers' (the old
        // ones died with their supervisor, by PDEATHSIG).
        self.storage_tail.read_new();
        self.net_tail.read_new();
        let running = self.sup.wait_ready(FAULT_TIMEOUT)?.saturating_duration_since(t0);
        let deadline = Instant::now() + Duration::from_secs(5);
        // Requests executed by the new drivers, storage's and net's.
        let mut candidates: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
        let first = loop {
            let mut best: Option<Instant> = None;
            for (i, (tail, map)) in
                [(&mut self.storage_tail, &self.shared.storage_replies), (&mut self.net_tail, &self.shared.net_replies)]
                    .into_iter()
                    .enumerate()
            {
                candidates[i].extend(tail.read_new().into_iter().map(|e| (e.1, e.2)));
                let m = map.lock().map_err(|_| "reply map poisoned".to_owned())?;
                best = best.into_iter().chain(candidates[i].iter().filter_map(|k| m.get(k).copied())).min();
            }
            if best.is_some() || Instant::now() > deadline || self.shared.stopped() {
                break best;
            }
            std::thread::sleep(Duration::from_micros(300));
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let note = format!(
            "new supervisor spawned {:.1} ms after the SIGKILL; its load drivers running {:.1} ms after it",
            ms(spawned - t0),
            ms(running)
        );
        Ok((
            first.map(|t: Instant| t.saturating_duration_since(t0).as_micros() as u64),
            running.as_micros() as u64,
            note,
        ))
    }

    /// Catches up on the exec logs, so only new entries are looked at, and
    /// watches for replies of generations above `g`.
    pub(crate) fn before_crash(&mut self, g: u32) {
        self.storage_tail.read_new();
        self.net_tail.read_new();
        self.clear_watches();
        if let Ok(mut w) = self.shared.mis_watch.lock() {
            *w = (g, None);
        }
    }

    pub(crate) fn misbehave(&mut self, m: Misbehaviour) -> Result<(Outcome, Handling, Option<u64>, String), String> {
        let name = Target::Misbehave.driver();
        let st = self.sup.wait(name, FAULT_TIMEOUT, |s| running(s) && s.pid.is_some())?;
        let g = st.generation;
        let (tx, rx) = mpsc::channel();
        self.mis.send((m, tx)).map_err(|_| "the misbehave client is gone".to_owned())?;
        let deadline = Instant::now() + FAULT_TIMEOUT;
        let result = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => break r,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline && !self.shared.stopped() => {
                    self.sup.alive()?;
                }
                Err(_) => {
                    return Err(format!("{}: no outcome within {FAULT_TIMEOUT:?}; {}", m.name(), self.sup.tail()));
                }
            }
        };
        // Was the instance killed for it? A checked state flip is caught at
        // the next request; give the load a moment to send one.
        let expect_restart = !matches!(
            m,
            Misbehaviour::WrongGeneration
                | Misbehaviour::Flood
                | Misbehaviour::ReplyBitFlip
                | Misbehaviour::StateBitFlipUnchecked
        );
        let wait = if expect_restart { Duration::from_secs(5) } else { Duration::from_millis(20) };
        let t = Instant::now();
        let restarted = loop {
            let s = self.sup.driver(name)?;
            if s.generation > g && running(&s) {
                break true;
            }
            if t.elapsed() > wait {
                break false;
            }
            std::thread::sleep(Duration::from_micros(500));
        };
        self.sup.wait(name, FAULT_TIMEOUT, running)?;
        let handling = match result {
            MisResult::Poisoned => Handling::Poisoned,
            _ if restarted => Handling::Restarted,
            _ => Handling::Ignored,
        };
        let last = self.sup.driver(name)?.last_failure.unwrap_or_default();
        let (outcome, note) = match (m, result) {
            (_, MisResult::Poisoned) => (Outcome::Quarantined, "request poisoned; caller got Poisoned".to_owned()),
            (_, MisResult::ChecksumFailed) => {
                (Outcome::CorruptionDetected, "client's end-to-end crc32 caught it".into())
            }
            (Misbehaviour::StateBitFlipUnchecked, MisResult::WrongValue) => (
                Outcome::CorruptionSilent,
                "checksum computed over the flipped state; only the campaign's model saw it".into(),
            ),
            (Misbehaviour::StateBitFlipChecked, MisResult::Replied) if restarted => {
                (Outcome::CorruptionDetected, format!("driver's state crc32 caught it; {last}"))
            }
            (Misbehaviour::StateBitFlipChecked, _) => (Outcome::CorruptionSilent, "state flip not caught".into()),
            (_, MisResult::WrongValue) => return Err(format!("{}: a reply with a wrong counter", m.name())),
            (_, MisResult::Replied) => (Outcome::Recovered, if restarted { last } else { String::new() }),
        };
        Ok((outcome, handling, None, note))
    }

    pub(crate) fn exec_fails(&mut self) -> Result<(Outcome, Handling, Option<u64>, String), String> {
        let name = Target::Null.driver();
        let st = self.sup.wait(name, FAULT_TIMEOUT, |s| running(s) && s.pid.is_some())?;
        let set_mode = |mode: u32| {
            std::fs::set_permissions(self.bench_copy, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("chmod {mode:o} {}: {e}", self.bench_copy.display()))
        };
        self.shared.exec_fault.store(true, Ordering::SeqCst);
        set_mode(0o644)?;
        let t0 = Instant::now();
        kill(Pid::from_raw(st.pid.unwrap_or(0) as i32), Signal::SIGKILL).map_err(|e| format!("kill {name}: {e}"))?;
        let failed = self.sup.wait(name, FAULT_TIMEOUT, |s| {
            s.generation > st.generation && s.last_failure.as_deref().is_some_and(|f| f.contains("spawn failed"))
        });
        set_mode(0o755)?;
        let failed = failed?;
        let s = self.sup.wait(name, FAULT_TIMEOUT, |s| running(s) || s.state.name() == "quarantined")?;
        let note = failed.last_failure.unwrap_or_default();
        if s.state.name() == "quarantined" {
            self.sup.control(&ControlRequest::Restart { driver: name.into() })?;
            self.sup.wait(name, FAULT_TIMEOUT, running)?;
            self.shared.exec_fault.store(false, Ordering::SeqCst);
            return Ok((
                Outcome::Quarantined,
                Handling::Quarantined,
                None,
                format!("{note}; callers got DriverFailed"),
            ));
        }
        self.shared.exec_fault.store(false, Ordering::SeqCst);
        let back = format!("{note}; running again {:.1} ms after the kill", t0.elapsed().as_secs_f64() * 1000.0);
        Ok((Outcome::Recovered, Handling::Restarted, None, back))
    }

    /// Writes a known block in the victim range and flips one bit of it:
    /// in the device's file after the write (then reads it back through the
    /// driver), in the write request's data after its checksums were
    /// computed, or in the read reply's data before the client checks it.
    /// Then restores the block, so the device matches the injector's model.
    pub(crate) fn storage_bit_flip(
        &mut self,
        index: usize,
        bit: u32,
        place: FlipPlace,
    ) -> Result<(Outcome, Handling, Option<u64>, String), String> {
        const DRIVER: &str = "storage_driver";
        self.sup.wait(DRIVER, FAULT_TIMEOUT, running)?;
        let lba = VICTIM + (index as u64 % RANGE);
        self.victim_version += 1;
        let data = block_data(lba, self.victim_version);
        let flip = |b: &mut [u8]| b[bit as usize / 8] ^= 1 << (bit % 8);
        let call = |c: &mut Client, body: &[u8], what: &str| -> Result<Vec<u8>, String> {
            c.call(DRIVER, body)
                .map_err(|e| format!("{what} of victim block {lba}: unknown outcome: {e}"))?
                .map_err(|e| format!("{what} of victim block {lba}: {e:?}"))
        };
        let write = |c: &mut Client, d: &[u8]| -> Result<(), String> {
            let body = call(c, &blocksum::write_body(lba, d), "write")?;
            blocksum::check_write(DRIVER, lba, 1, &body).map_err(|e| e.to_string())
        };
        // What the client got for the damaged block: data (silent if it is
        // not the data written), or a definite error.
        let got: Result<Vec<u8>, blocksum::BlockError> = match place {
            FlipPlace::Device => {
                write(self.client()?, &data)?;
                self.flip_in_file(lba, bit)?;
                let body = call(self.client()?, &blocksum::read_body(lba, 1), "read")?;
                blocksum::check_read(DRIVER, lba, 1, &body).map(<[u8]>::to_vec)
            }
            FlipPlace::Request => {
                let mut body = blocksum::write_body(lba, &data);
                flip(data_in(&mut body, &data)?);
                let reply = call(self.client()?, &body, "write")?;
                match blocksum::check_write(DRIVER, lba, 1, &reply) {
                    Err(e) => Err(e),
                    Ok(()) => {
                        let body = call(self.client()?, &blocksum::read_body(lba, 1), "read")?;
                        blocksum::check_read(DRIVER, lba, 1, &body).map(<[u8]>::to_vec)
                    }
                }
            }
            FlipPlace::Reply => {
                write(self.client()?, &data)?;
                let mut body = call(self.client()?, &blocksum::read_body(lba, 1), "read")?;
                flip(data_in(&mut body, &data)?);
                blocksum::check_read(DRIVER, lba, 1, &body).map(<[u8]>::to_vec)
            }
        };
        let (outcome, note) = match got {
            Err(e) if e.is_corruption() => (Outcome::CorruptionDetected, e.to_string()),
            Err(e) => return Err(format!("{} bit flip in victim block {lba}: {e}", place.name())),
            Ok(d) if d == data => (Outcome::Recovered, "flip masked".into()),
            Ok(_) => (Outcome::CorruptionSilent, "the flipped block was returned as valid data".into()),
        };
        write(self.client()?, &block_data(lba, 0))?;
        Ok((outcome, Handling::Ignored, None, note))
    }

    /// Flips `bit` of block `lba` in the device's backing file (the data,
    /// not the tag table: a flipped tag is caught the same way, see
    /// `storage_core::integrity`'s tests).
    pub(crate) fn flip_in_file(&self, lba: u64, bit: u32) -> Result<(), String> {
        let off = (lba + 1) * BLOCK_SIZE as u64 + u64::from(bit / 8);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.disk)
            .map_err(|e| format!("{}: {e}", self.disk.display()))?;
        let mut b = [0u8];
        f.seek(SeekFrom::Start(off))
            .and_then(|_| f.read_exact(&mut b))
            .map_err(|e| format!("{}: {e}", self.disk.display()))?;
        b[0] ^= 1 << (bit % 8);
        f.seek(SeekFrom::Start(off)).and_then(|_| f.write_all(&b)).map_err(|e| format!("{}: {e}", self.disk.display()))
    }
}
