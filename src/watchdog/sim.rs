//! A deterministic simulator of the watchdog's policy, in the manner of Proxmox's HA tester: a
//! script of events on a simulated clock drives the same pure code the agent runs (status.rs,
//! policy.rs), with the driver's own rules (event-driven evaluation, a reconcile every
//! `reconcile` seconds, wake-ups at the end of a backoff, intent "stop" recorded for a VM stopped
//! on purpose), and writes one log line per decision. `tests/sim/<case>/script` is compared with
//! `tests/sim/<case>/expected.log` (tests/watchdog_sim.rs).
//!
//! Script lines (`#` starts a comment):
//! - `set KEY VALUE`: max_attempts, window, backoff_initial, backoff_max, stable, reconcile,
//!   user_shutdown (true/false)
//! - `vm NAME run|stop|none running|stopped`: a VM with its intent (none: no intent) and state
//! - `at T CMD [ARGS]`: advance the clock to T (evaluating as the agent would), then:
//!   `crash VM`, `destroy VM`, `shutdown-guest VM`, `shutdown-host VM`, `pause-ioerror VM`,
//!   `resume VM`, `libvirtd-restart` (events are lost until the next reconcile; what was shut
//!   off is now "shut off (unknown)"),
//!   `host-reboot` (every VM shut off, reason unknown; the agent restarts), `agent-restart`
//!   (the policy's memory reloaded from what it persisted), `lock-held VM NODE` (its next start is
//!   refused: it runs on NODE), `migrate-away VM`, `crashloop VM SECONDS` (each start crashes that
//!   long after; 0 ends it), `start-fails VM N`, `reset VM`, `end` (just advance)
//! - the storage path of a VM (its disk is LV `vg0/VM` of a shared VG on DRBD `r0/0` with one
//!   peer `n2`; judged by the agent's own storage.rs on a node map built from it at every
//!   evaluation; changes are seen by the next reconcile, as the agent's collection sees them):
//!   `drbd VM STATE` (the local disk state: UpToDate, Failed, Diskless, …), `drbd-peer VM
//!   up|down`, `lockspace VM started|stopped`, `lock VM ex|sh|un`, and `ioloop VM SECONDS` (each
//!   resume pauses again on an I/O error that long after; 0 ends it). `set resume_after_io_error
//!   true` turns the resume on.

use std::collections::BTreeMap;

use crate::probe::libvirt::{DomainState, PausedReason, RunningReason, ShutoffReason};

use crate::node::{DiskMap, DomainMap, DrbdRef, LvRef, NodeMap, Observed};
use crate::probe::drbd::DiskState;
use crate::probe::lvm::{LockMode, LvLock};

use super::intent::Want;
use super::policy::{
    decide, decide_paused_io, reset, resumed, started, Decision, PolicyConfig, ResumeOutcome,
    StartOutcome, VmRecord,
};
use super::status::{compute, Status, StopCause};

#[derive(Debug, Clone)]
struct SimVm {
    want: Option<Want>,
    by_guest: bool,
    state: DomainState,
    cause: Option<StopCause>,
    crashloop: f64,
    crash_at: Option<f64>,
    lock_held_by: Option<String>,
    start_fails: u32,
    last_status: Option<Status>,
    last_decision: Option<String>,
    drbd: DiskState,
    peer_up: bool,
    lockspace: bool,
    lock: LockMode,
    ioloop: f64,
    pause_at: Option<f64>,
}

impl SimVm {
    /// The node map the agent's collection would show for this VM.
    fn map(&self, name: &str) -> NodeMap {
        NodeMap {
            domains: vec![DomainMap {
                name: name.to_string(),
                state: self.state,
                disks: vec![DiskMap {
                    target: "vda".into(),
                    source: Some(format!("/dev/vg0/{name}")),
                    lv: Some(0),
                    drbd: vec![DrbdRef {
                        minor: 0,
                        resource: "r0".into(),
                        volume: 0,
                        disk_state: self.drbd.clone(),
                        client: false,
                        io_suspended: false,
                        peers: vec![("n2".into(), self.peer_up, DiskState::UpToDate)],
                    }],
                }],
            }],
            lvs: vec![LvRef {
                vg: "vg0".into(),
                name: name.to_string(),
                uuid: format!("uuid-{name}"),
                shared_vg: true,
                lock: LvLock::Known(self.lock),
                drbd_minors: vec![0],
            }],
            libvirt: Observed::Yes,
            lvm: Observed::Yes,
            drbd: Observed::Yes,
            lockd_unknown: None,
            drbd_split_brain: vec![],
            leases: None,
            lockd_started: Some(if self.lockspace {
                vec!["vg0".into()]
            } else {
                vec![]
            }),
        }
    }
}

pub struct Sim {
    cfg: PolicyConfig,
    user_shutdown: bool,
    resume_after_io_error: bool,
    reconcile: f64,
    now: f64,
    next_reconcile: f64,
    events_lost: bool,
    vms: BTreeMap<String, SimVm>,
    records: BTreeMap<String, VmRecord>,
    wakeups: Vec<(f64, String)>,
    log: Vec<String>,
}

impl Default for Sim {
    fn default() -> Self {
        Sim {
            cfg: PolicyConfig {
                max_attempts: 5,
                window: 3600.0,
                backoff_initial: 1.0,
                backoff_max: 60.0,
                stable: 300.0,
            },
            user_shutdown: false,
            resume_after_io_error: false,
            reconcile: 5.0,
            now: 0.0,
            next_reconcile: 0.0,
            events_lost: false,
            vms: BTreeMap::new(),
            records: BTreeMap::new(),
            wakeups: Vec::new(),
            log: Vec::new(),
        }
    }
}

/// Run a script; the log, or the first error with its line number.
pub fn run(script: &str) -> Result<String, String> {
    let mut sim = Sim::default();
    for (i, raw) in script.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        sim.line(line)
            .map_err(|e| format!("line {}: {e}: {raw:?}", i + 1))?;
    }
    Ok(sim.log.join("\n") + "\n")
}

fn num(s: Option<&&str>) -> Result<f64, String> {
    s.ok_or("a number is missing")?
        .parse::<f64>()
        .map_err(|e| e.to_string())
}

impl Sim {
    fn line(&mut self, line: &str) -> Result<(), String> {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["set", key, value] => self.set(key, value),
            ["vm", name, want, state] => {
                let want = match *want {
                    "run" => Some(Want::Run),
                    "stop" => Some(Want::Stop),
                    "none" => None,
                    _ => return Err("intent is run, stop or none".into()),
                };
                let state = match *state {
                    "running" => DomainState::Running(RunningReason::Booted),
                    "stopped" => DomainState::Shutoff(ShutoffReason::Shutdown),
                    _ => return Err("state is running or stopped".into()),
                };
                self.vms.insert(
                    name.to_string(),
                    SimVm {
                        want,
                        by_guest: false,
                        state,
                        cause: None,
                        crashloop: 0.0,
                        crash_at: None,
                        lock_held_by: None,
                        start_fails: 0,
                        last_status: None,
                        last_decision: None,
                        drbd: DiskState::UpToDate,
                        peer_up: true,
                        lockspace: true,
                        lock: LockMode::Ex,
                        ioloop: 0.0,
                        pause_at: None,
                    },
                );
                Ok(())
            }
            ["at", t, cmd @ ..] => {
                let t = num(Some(t))?;
                if t < self.now {
                    return Err("time goes backwards".into());
                }
                self.advance(t);
                self.command(cmd)
            }
            _ => Err("unknown line".into()),
        }
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let v = || value.parse::<f64>().map_err(|e| e.to_string());
        match key {
            "max_attempts" => self.cfg.max_attempts = v()? as u32,
            "window" => self.cfg.window = v()?,
            "backoff_initial" => self.cfg.backoff_initial = v()?,
            "backoff_max" => self.cfg.backoff_max = v()?,
            "stable" => self.cfg.stable = v()?,
            "reconcile" => self.reconcile = v()?,
            "user_shutdown" => self.user_shutdown = value == "true",
            "resume_after_io_error" => self.resume_after_io_error = value == "true",
            _ => return Err(format!("unknown setting {key}")),
        }
        Ok(())
    }

    fn vm(&mut self, name: Option<&&str>) -> Result<(String, &mut SimVm), String> {
        let name = name.ok_or("a VM name is missing")?.to_string();
        let vm = self
            .vms
            .get_mut(&name)
            .ok_or_else(|| format!("no VM {name}"))?;
        Ok((name, vm))
    }

    fn stop(
        &mut self,
        name: Option<&&str>,
        reason: ShutoffReason,
        cause: StopCause,
    ) -> Result<String, String> {
        let lost = self.events_lost;
        let (name, vm) = self.vm(name)?;
        vm.state = DomainState::Shutoff(reason);
        // Without the event only the shut-off reason is known.
        vm.cause = (!lost).then_some(cause);
        vm.crash_at = None;
        Ok(name)
    }

    fn command(&mut self, cmd: &[&str]) -> Result<(), String> {
        let name = match cmd {
            ["crash", rest @ ..] => {
                Some(self.stop(rest.first(), ShutoffReason::Crashed, StopCause::Crashed)?)
            }
            ["destroy", rest @ ..] => {
                Some(self.stop(rest.first(), ShutoffReason::Destroyed, StopCause::Destroyed)?)
            }
            ["shutdown-guest", rest @ ..] => Some(self.stop(
                rest.first(),
                ShutoffReason::Shutdown,
                StopCause::ShutdownGuest,
            )?),
            ["shutdown-host", rest @ ..] => Some(self.stop(
                rest.first(),
                ShutoffReason::Shutdown,
                StopCause::ShutdownHost,
            )?),
            ["pause-ioerror", rest @ ..] => {
                let (n, vm) = self.vm(rest.first())?;
                vm.state = DomainState::Paused(PausedReason::IoError);
                Some(n)
            }
            ["resume", rest @ ..] => {
                let (n, vm) = self.vm(rest.first())?;
                vm.state = DomainState::Running(RunningReason::Unpaused);
                Some(n)
            }
            ["libvirtd-restart"] => {
                self.log(format!(
                    "{:>7.1} - libvirtd restarts: events are lost until the next reconcile",
                    self.now
                ));
                // A restarted libvirtd knows no reason for what was already shut off.
                for vm in self.vms.values_mut() {
                    if !vm.state.is_active() {
                        vm.state = DomainState::Shutoff(ShutoffReason::Unknown);
                        vm.cause = None;
                    }
                }
                self.events_lost = true;
                None
            }
            ["host-reboot"] => {
                self.log(format!(
                    "{:>7.1} - host reboots: every VM shut off, the agent restarts",
                    self.now
                ));
                for vm in self.vms.values_mut() {
                    vm.state = DomainState::Shutoff(ShutoffReason::Unknown);
                    vm.cause = None;
                    vm.crash_at = None;
                }
                self.agent_restart()?;
                self.events_lost = true;
                None
            }
            ["agent-restart"] => {
                self.log(format!(
                    "{:>7.1} - the agent restarts (its memory is reloaded)",
                    self.now
                ));
                self.agent_restart()?;
                None
            }
            ["lock-held", vm, node] => {
                let (n, v) = self.vm(Some(vm))?;
                v.lock_held_by = Some(node.to_string());
                let _ = n;
                None
            }
            ["migrate-away", vm] => {
                let (n, _) = self.vm(Some(vm))?;
                self.vms.remove(&n);
                self.records.remove(&n);
                self.log(format!(
                    "{:>7.1} {n} migrated away: no longer defined here",
                    self.now
                ));
                None
            }
            ["crashloop", vm, secs] => {
                let s = num(Some(secs))?;
                let (_, v) = self.vm(Some(vm))?;
                v.crashloop = s;
                None
            }
            ["drbd", vm, state] => {
                let (_, v) = self.vm(Some(vm))?;
                v.drbd = DiskState::from_drbd(state);
                None
            }
            ["drbd-peer", vm, updown] => {
                let (_, v) = self.vm(Some(vm))?;
                v.peer_up = match *updown {
                    "up" => true,
                    "down" => false,
                    _ => return Err("drbd-peer VM up|down".into()),
                };
                None
            }
            ["lockspace", vm, st] => {
                let (_, v) = self.vm(Some(vm))?;
                v.lockspace = match *st {
                    "started" => true,
                    "stopped" => false,
                    _ => return Err("lockspace VM started|stopped".into()),
                };
                None
            }
            ["lock", vm, mode] => {
                let (_, v) = self.vm(Some(vm))?;
                v.lock = match *mode {
                    "ex" => LockMode::Ex,
                    "sh" => LockMode::Sh,
                    "un" => LockMode::Un,
                    _ => return Err("lock VM ex|sh|un".into()),
                };
                None
            }
            ["ioloop", vm, secs] => {
                let s = num(Some(secs))?;
                let (_, v) = self.vm(Some(vm))?;
                v.ioloop = s;
                None
            }
            ["start-fails", vm, n] => {
                let k = num(Some(n))? as u32;
                let (_, v) = self.vm(Some(vm))?;
                v.start_fails = k;
                None
            }
            ["reset", vm] => {
                let (n, _) = self.vm(Some(vm))?;
                reset(self.records.entry(n.clone()).or_default());
                self.log(format!("{:>7.1} {n} reset by the operator", self.now));
                Some(n)
            }
            ["end"] => None,
            _ => return Err("unknown command".into()),
        };
        if let Some(n) = name {
            if !self.events_lost {
                self.eval(&n);
            }
        }
        Ok(())
    }

    /// What the agent persisted is all a restarted agent knows.
    fn agent_restart(&mut self) -> Result<(), String> {
        let text = serde_json::to_string(&self.records).map_err(|e| e.to_string())?;
        self.records = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        self.wakeups.clear();
        self.next_reconcile = self.now;
        Ok(())
    }

    fn log(&mut self, line: String) {
        self.log.push(line);
    }

    /// Advance to `t`: scheduled crashes, wake-ups and reconciles in time order.
    fn advance(&mut self, t: f64) {
        loop {
            let crash = self
                .vms
                .iter()
                .filter_map(|(n, v)| v.crash_at.map(|c| (c, n.clone())))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let pause = self
                .vms
                .iter()
                .filter_map(|(n, v)| v.pause_at.map(|c| (c, n.clone())))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let wake = self
                .wakeups
                .iter()
                .cloned()
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let mut next = self.next_reconcile;
            if let Some((c, _)) = &crash {
                next = next.min(*c);
            }
            if let Some((w, _)) = &wake {
                next = next.min(*w);
            }
            if let Some((p, _)) = &pause {
                next = next.min(*p);
            }
            if next > t {
                self.now = t;
                return;
            }
            self.now = next;
            if let Some((c, n)) = crash.filter(|(c, _)| *c <= next) {
                let _ = c;
                let lost = self.events_lost;
                if let Some(v) = self.vms.get_mut(&n) {
                    v.state = DomainState::Shutoff(ShutoffReason::Crashed);
                    v.cause = (!lost).then_some(StopCause::Crashed);
                    v.crash_at = None;
                }
                if !lost {
                    self.eval(&n);
                }
                continue;
            }
            if let Some((_, n)) = pause.filter(|(p, _)| *p <= next) {
                // qemu pauses the guest on the I/O error; libvirt's Suspended event wakes the
                // agent.
                let lost = self.events_lost;
                if let Some(v) = self.vms.get_mut(&n) {
                    v.state = DomainState::Paused(PausedReason::IoError);
                    v.pause_at = None;
                }
                if !lost {
                    self.eval(&n);
                }
                continue;
            }
            if let Some((w, n)) = wake.filter(|(w, _)| *w <= next) {
                self.wakeups.retain(|(x, m)| !(*x == w && *m == n));
                self.eval(&n);
                continue;
            }
            // Reconcile: every VM, from libvirt's state alone where no event said more.
            self.events_lost = false;
            self.next_reconcile = self.now + self.reconcile;
            let names: Vec<String> = self.vms.keys().cloned().collect();
            for n in names {
                self.eval(&n);
            }
        }
    }

    fn eval(&mut self, name: &str) {
        let Some(vm) = self.vms.get(name).cloned() else {
            return;
        };
        let status = match vm.want {
            None => Status::Unmanaged,
            Some(w) => compute(w, vm.by_guest, &vm.state, vm.cause, self.user_shutdown),
        };
        let health = (status == Status::PausedIoError && self.resume_after_io_error)
            .then(|| super::storage::judge(&vm.map(name), name));
        let rec = self.records.entry(name.to_string()).or_default();
        let d = match &health {
            Some(h) => decide_paused_io(&self.cfg, rec, h, true, self.now),
            None => decide(&self.cfg, rec, status, self.now),
        };
        let mut text = match &d {
            Decision::Nothing => String::new(),
            Decision::Restart { attempt } => format!("restart (attempt {attempt})"),
            Decision::Wait { until } => format!("wait until {until:.1}"),
            Decision::GiveUp { attempts } => format!("give up after {attempts} attempts"),
            Decision::GivenUp => "given up".into(),
            Decision::Elsewhere { node } => format!("runs on {node}: not fought"),
            Decision::Stable => "stable: attempts reset".into(),
            Decision::WindowPassed => "window passed: trying again".into(),
            Decision::LeftPaused => "left paused (resume_after_io_error = false)".into(),
            Decision::Resume { attempt } => format!("resume (attempt {attempt}) -> resumed"),
            Decision::ResumeWait { until } => format!("next resume at {until:.1}"),
            Decision::StorageWait { why } => format!("waits for its storage: {why}"),
            Decision::LockLost { why } => format!("never resumed: {why}"),
            Decision::ResumeGiveUp { attempts } => {
                format!("give up resuming after {attempts} resumes")
            }
            Decision::ResumeGivenUp => format!("resume given up: `vmwarden ctl reset {name}`"),
        };
        if let Decision::ResumeWait { until } = d {
            if !self.wakeups.iter().any(|(w, n)| *w == until && n == name) {
                self.wakeups.push((until, name.to_string()));
            }
        }
        if let Decision::Resume { .. } = d {
            resumed(rec, &ResumeOutcome::Resumed);
            let now = self.now;
            if let Some(v) = self.vms.get_mut(name) {
                v.state = DomainState::Running(RunningReason::Unpaused);
                v.pause_at = (v.ioloop > 0.0).then_some(now + v.ioloop);
            }
        }
        if let Decision::Wait { until } = d {
            if !self.wakeups.iter().any(|(w, n)| *w == until && n == name) {
                self.wakeups.push((until, name.to_string()));
            }
        }
        if d == Decision::WindowPassed {
            self.wakeups.push((self.now, name.to_string()));
        }
        if let Decision::Restart { .. } = d {
            let outcome = if let Some(node) = vm.lock_held_by.clone() {
                StartOutcome::RunsElsewhere { node }
            } else if vm.start_fails > 0 {
                StartOutcome::Failed("start failed".into())
            } else {
                StartOutcome::Started
            };
            started(rec, &outcome);
            text.push_str(match &outcome {
                StartOutcome::Started => " -> started",
                StartOutcome::RunsElsewhere { .. } => " -> refused: its lock is held elsewhere",
                StartOutcome::Failed(_) => " -> start failed",
            });
            let now = self.now;
            if let Some(v) = self.vms.get_mut(name) {
                match outcome {
                    StartOutcome::Started => {
                        v.state = DomainState::Running(RunningReason::Booted);
                        v.cause = None;
                        v.crash_at = (v.crashloop > 0.0).then_some(now + v.crashloop);
                    }
                    StartOutcome::Failed(_) => {
                        v.start_fails -= 1;
                        v.state = DomainState::Shutoff(ShutoffReason::Failed);
                        v.cause = Some(StopCause::Failed);
                        // A failed start is seen at once; the next attempt waits its backoff.
                        let n = rec.attempts.len();
                        let until = now + self.cfg.backoff(n);
                        self.wakeups.push((until, name.to_string()));
                    }
                    StartOutcome::RunsElsewhere { .. } => {}
                }
            }
        }
        // The driver records "stop" for a VM stopped on purpose, so it stays down for good.
        if matches!(status, Status::AdminDown | Status::UserDown) && vm.want == Some(Want::Run) {
            if let Some(v) = self.vms.get_mut(name) {
                v.want = Some(Want::Stop);
                v.by_guest = status == Status::UserDown;
            }
            text = format!(
                "intent recorded: stop{}",
                if text.is_empty() {
                    String::new()
                } else {
                    format!("; {text}")
                }
            );
        }
        let changed = self.vms.get(name).and_then(|v| v.last_status) != Some(status);
        let repeated =
            self.vms.get(name).and_then(|v| v.last_decision.clone()) == Some(text.clone());
        if changed || (!text.is_empty() && !repeated) {
            let line = format!("{:>7.1} {name} {} {text}", self.now, status.as_str());
            self.log(line.trim_end().to_string());
        }
        if let Some(v) = self.vms.get_mut(name) {
            v.last_status = Some(status);
            v.last_decision = Some(text);
        }
    }
}
