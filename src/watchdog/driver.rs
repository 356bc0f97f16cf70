//! The watchdog's driver: the effects around the pure policy. It observes libvirt (the same
//! probe the exporter uses, one read-only connection of its own) every `reconcile_seconds` and at
//! once when woken (a lifecycle event, the end of a backoff, a reset), computes each managed VM's
//! status, asks the policy, and acts only through the action engine's `start` — so every lock
//! rule, the journal, `--dry-run` semantics and the hook apply to restarts too. What the policy
//! remembers is persisted in `STATE_DIR/watchdog.json` (attempts survive an agent restart).
//! A VM paused on an I/O error is resumed (with `resume_after_io_error`) through the resume
//! action, once a collection of the node (DRBD, lvm, sanlock — made only while such a VM exists)
//! shows its storage path healthy (storage.rs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::actions::{ActionKind, ActionRequest, Engine, Origin};
use crate::config::Config;
use crate::probe::libvirt::{LibvirtDomain, LibvirtProbe};

use super::intent::{self, Intent, Want};
use super::policy::{self, Decision, PolicyConfig, ResumeOutcome, StartOutcome, VmRecord};
use super::status::{self, Status, StopCause};
use super::storage::{self, PathHealth};
use crate::node::NodeMap;
use crate::probe::libvirt::{DomainState, PausedReason};

/// One VM as the watchdog sees it (metrics, `vmwarden ctl status`).
#[derive(Debug, Clone, Serialize)]
pub struct VmView {
    pub vm: String,
    pub status: Status,
    pub status_word: &'static str,
    pub intent: Option<Want>,
    /// What the policy decided last (human words).
    pub decision: String,
    pub attempts: u32,
    pub gave_up: bool,
    pub restarts: u64,
    pub elsewhere: Option<String>,
    /// Paused on an I/O error and not resumed by the watchdog until `vmwarden ctl reset`: its
    /// lock was lost while paused, or it gave up resuming it.
    pub resume_stuck: bool,
}

#[derive(Default)]
struct Inner {
    records: BTreeMap<String, VmRecord>,
    views: BTreeMap<String, VmView>,
    /// How a VM stopped (or is stopping), from a lifecycle event, and when it was heard.
    causes: BTreeMap<String, (StopCause, f64)>,
    /// Earliest time each VM wants to be looked at again (end of a backoff).
    wake_at: BTreeMap<String, f64>,
    /// Restarts by result, for the metrics: (vm, result) → count.
    results: BTreeMap<(String, &'static str), u64>,
    /// Resumes after an I/O error by result: (vm, result) → count.
    resume_results: BTreeMap<(String, &'static str), u64>,
    /// When each VM was first seen down (ERROR_down), for the settle delay.
    down_since: BTreeMap<String, f64>,
    /// The qemu pid of each VM last seen running here (libvirt's pid file).
    qemu_pids: BTreeMap<String, u32>,
}

/// A restart waits until the VM's last qemu is gone, at most this long after the VM was seen
/// going down: a dying qemu still holds its disk image lock until it has exited (seen in the lab:
/// a restart at once failed with "Failed to get write lock"), and a failed start would waste an
/// attempt. When the pid is not known (the agent never saw it run) the whole delay is waited.
const SETTLE_SECONDS: f64 = 0.5;

/// How long a shutdown whose initiator only the lifecycle event can tell waits for that event
/// (it may arrive just after a reconcile saw the VM shut off) before it is taken as on purpose.
const EVENT_GRACE_SECONDS: f64 = 2.0;

pub struct Watchdog {
    cfg: Config,
    policy: PolicyConfig,
    engine: Arc<Engine>,
    probe: LibvirtProbe,
    inner: Mutex<Inner>,
    wake: tokio::sync::Notify,
    path: PathBuf,
    notifier: crate::notify::Notifier,
    /// The storage collection for VMs paused on an I/O error (its own, so its failures are
    /// logged once).
    storage: crate::collect::Collector,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watchdog")
    }
}

/// Where the agent keeps what the policy remembers (attempts, give-ups) across restarts.
pub fn memory_path(cfg: &Config) -> PathBuf {
    std::path::Path::new(&cfg.cluster.state_dir).join("watchdog.json")
}

/// The persisted memory; none yet is an empty memory, an unreadable one an error saying so.
pub fn load_memory(path: &std::path::Path) -> Result<BTreeMap<String, VmRecord>, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            format!(
                "{}: not readable as the watchdog's memory ({e})",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(format!("{}: cannot read it ({e})", path.display())),
    }
}

/// Whether the watchdog manages `d` and with which intent (`Ok(None)`: managed, none recorded
/// yet); `Err(why)` when it is not the watchdog's.
fn managed_intent(cfg: &Config, d: &LibvirtDomain) -> Result<Option<Intent>, &'static str> {
    if cfg.watchdog.exclude.iter().any(|x| x == &d.name) {
        return Err("excluded in [watchdog] exclude");
    }
    let disks = crate::probe::libvirt::lockable_sources(&d.disks);
    match crate::actions::vmlocks::VmLocks::for_vm(cfg, &d.name, &disks) {
        Ok(Some(_)) => {}
        _ => return Err("no disk vmwarden can lock"),
    }
    match &d.intent {
        Some(i) if !i.managed => Err("opted out (managed=\"no\")"),
        Some(i) => Ok(Some(i.clone())),
        None => Ok(None),
    }
}

/// The watchdog's view of the domains here as another process sees it (`vmwarden check`): the
/// intent in each domain's metadata, libvirt's state and reason, and the agent's persisted
/// memory (attempts, give-up). The lifecycle events only the agent hears are missing, so a
/// shutdown whose initiator is unknown is judged as the agent judges it before its event.
pub fn offline_views(
    cfg: &Config,
    domains: &[LibvirtDomain],
    memory: &BTreeMap<String, VmRecord>,
) -> Vec<VmView> {
    let mut out: Vec<VmView> = domains
        .iter()
        .map(|d| {
            let rec = memory.get(&d.name).cloned().unwrap_or_default();
            let (status, want, decision) = match managed_intent(cfg, d) {
                Err(why) => (Status::Unmanaged, None, why.to_string()),
                Ok(None) if cfg.watchdog.adopt == "running" && d.state.is_active() => (
                    Status::Running,
                    None,
                    "runs without intent: the agent adopts it as \"should run\"".into(),
                ),
                Ok(None) => (Status::Unmanaged, None, "no intent recorded".into()),
                Ok(Some(i)) => {
                    let st = status::compute(
                        i.want,
                        i.by == "guest",
                        &d.state,
                        None,
                        cfg.watchdog.user_shutdown,
                    );
                    let why = if rec.gave_up_at.is_some() {
                        format!(
                            "given up after {} attempts: `vmwarden ctl reset {}`",
                            rec.attempts.len(),
                            d.name
                        )
                    } else if st == Status::ErrorDown {
                        "should run: the watchdog restarts it".into()
                    } else if st == Status::PausedIoError {
                        match (&rec.lock_lost, rec.resume_gave_up_at) {
                            (Some(why), _) => format!("paused on an I/O error: never resumed: {why}"),
                            (None, Some(_)) => format!(
                                "paused on an I/O error: gave up resuming after {} resumes: `vmwarden ctl reset {}`",
                                rec.resumes.len(),
                                d.name
                            ),
                            (None, None) if cfg.watchdog.resume_after_io_error => {
                                "paused on an I/O error: resumed once its storage path is healthy".into()
                            }
                            (None, None) => {
                                "paused on an I/O error: left paused (resume_after_io_error = false)".into()
                            }
                        }
                    } else if let Some(n) = &rec.elsewhere {
                        format!("its lock is held on node {n}")
                    } else {
                        String::new()
                    };
                    (st, Some(i.want), why)
                }
            };
            VmView {
                vm: d.name.clone(),
                status,
                status_word: status.as_str(),
                intent: want,
                decision,
                attempts: rec.attempts.len() as u32,
                gave_up: rec.gave_up_at.is_some(),
                restarts: rec.restarts,
                resume_stuck: status == Status::PausedIoError
                    && (rec.lock_lost.is_some() || rec.resume_gave_up_at.is_some()),
                elsewhere: rec.elsewhere,
            }
        })
        .collect();
    out.sort_by(|a, b| a.vm.cmp(&b.vm));
    out
}

/// Wait until `pid` (the VM's last qemu) has exited — a zombie has closed its files, so its
/// image locks are gone — or until `deadline` (unix seconds), whichever comes first. An unknown
/// pid waits until the deadline.
async fn settle(pid: Option<u32>, deadline: f64) {
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                // The state follows the command name in parentheses, which may contain spaces.
                let after = s.rsplit_once(')')?.1;
                after
                    .split_whitespace()
                    .next()
                    .map(|st| st != "Z" && st != "X")
            })
            .unwrap_or(false)
    };
    loop {
        let left = deadline - now();
        if left <= 0.0 || pid.is_some_and(|p| !alive(p)) {
            return;
        }
        tokio::time::sleep(Duration::from_secs_f64(left.min(0.01))).await;
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Watchdog {
    /// Must be called inside the tokio runtime (the notifier starts its sender task).
    pub fn new(cfg: Config, engine: Arc<Engine>) -> Arc<Watchdog> {
        let notifier = match crate::notify::Notifier::start(&cfg.notify.email) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("watchdog: email notifications are off: {e}");
                crate::notify::Notifier::disabled()
            }
        };
        let path = memory_path(&cfg);
        let records = match load_memory(&path) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("{e}; starting with no attempts counted");
                BTreeMap::new()
            }
        };
        Arc::new(Watchdog {
            policy: PolicyConfig::from_config(&cfg.watchdog),
            probe: LibvirtProbe::new(cfg.libvirt.clone()),
            engine,
            inner: Mutex::new(Inner {
                records,
                ..Default::default()
            }),
            wake: tokio::sync::Notify::new(),
            path,
            notifier,
            storage: crate::collect::Collector::new(cfg.clone()),
            cfg,
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Look again now (a lifecycle event arrived, or an operator reset a VM).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// A lifecycle event said how `vm` stopped or is stopping (better than libvirt's shut-off
    /// reason). A plain "shutdown" does not overwrite who asked for it, heard just before.
    pub fn stopped(&self, vm: &str, cause: StopCause) {
        {
            let mut g = self.inner();
            let keep = cause == StopCause::Shutdown
                && g.causes.get(vm).is_some_and(|(c, _)| {
                    matches!(c, StopCause::ShutdownGuest | StopCause::ShutdownHost)
                });
            if !keep {
                g.causes.insert(vm.to_string(), (cause, now()));
            }
        }
        self.poke();
    }

    /// The VM started again: what stopped it last time no longer applies.
    fn started(&self, vm: &str) {
        self.inner().causes.remove(vm);
        self.poke();
    }

    /// The watchdog's view of every VM it saw, sorted by name.
    pub fn views(&self) -> Vec<VmView> {
        self.inner().views.values().cloned().collect()
    }

    /// Restart results per VM: (vm, result, count).
    pub fn results(&self) -> Vec<(String, &'static str, u64)> {
        self.inner()
            .results
            .iter()
            .map(|((vm, r), n)| (vm.clone(), *r, *n))
            .collect()
    }

    /// Resumes per VM: (vm, result, count).
    pub fn resume_results(&self) -> Vec<(String, &'static str, u64)> {
        self.inner()
            .resume_results
            .iter()
            .map(|((vm, r), n)| (vm.clone(), *r, *n))
            .collect()
    }

    /// `vmwarden ctl reset VM`: forget attempts and give-up; look again at once.
    pub fn reset(&self, vm: &str) -> String {
        let msg = {
            let mut g = self.inner();
            let rec = g.records.entry(vm.to_string()).or_default();
            let before = rec.attempts.len() + rec.resumes.len();
            let gave_up = rec.gave_up_at.is_some() || rec.resume_gave_up_at.is_some();
            let lock_lost = rec.lock_lost.is_some();
            policy::reset(rec);
            format!(
                "{vm}: watchdog reset ({before} attempts forgotten{}{})",
                if gave_up { ", no longer given up" } else { "" },
                if lock_lost {
                    ", the lock lost while paused forgotten: judged anew"
                } else {
                    ""
                }
            )
        };
        self.persist();
        tracing::warn!("{msg}");
        self.poke();
        msg
    }

    fn persist(&self) {
        let text = match serde_json::to_vec_pretty(&self.inner().records) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("watchdog memory cannot be encoded: {e}");
                return;
            }
        };
        let tmp = self.path.with_extension("json.tmp");
        let r = std::fs::write(&tmp, &text).and_then(|_| std::fs::rename(&tmp, &self.path));
        if let Err(e) = r {
            tracing::warn!(
                "cannot save the watchdog's memory in {}: {e} — attempts are kept in memory only",
                self.path.display()
            );
        }
    }

    /// The notifier's counters (metrics).
    pub fn notify_stats(&self) -> Arc<crate::notify::NotifyStats> {
        self.notifier.stats()
    }

    /// Follow libvirt's lifecycle events: a stop's detail says why it stopped (better than the
    /// shut-off reason: a guest's own poweroff vs a host-initiated shutdown), and every event or
    /// reconnection wakes the loop, so a crash is acted on at once instead of at the next
    /// reconcile.
    pub async fn follow_events(self: Arc<Self>) {
        use super::events::{EventItem, EventStream, LifecycleKind};
        let mut stream = match EventStream::start(&self.cfg.libvirt.uri) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    "watchdog: no libvirt lifecycle events ({e}); reconciling every {} s only",
                    self.cfg.watchdog.reconcile_seconds
                );
                return;
            }
        };
        // Who asked for a shutdown, from the Shutdown event that precedes Stopped/shutdown.
        let mut shutdown_by: BTreeMap<String, &'static str> = BTreeMap::new();
        while let Some(item) = stream.receiver().recv().await {
            let ev = match item {
                EventItem::Event(ev) => ev,
                EventItem::Connected => {
                    self.poke();
                    continue;
                }
                EventItem::Lost(_) => continue,
            };
            let cause = match (ev.kind, ev.detail_text) {
                // Who asked is known now, seconds before the Stopped event (qemu runs with
                // -no-shutdown): recorded at once, so a reconcile in between knows it.
                (LifecycleKind::Shutdown, who @ ("guest" | "host")) => {
                    shutdown_by.insert(ev.domain.clone(), who);
                    Some(if who == "guest" {
                        StopCause::ShutdownGuest
                    } else {
                        StopCause::ShutdownHost
                    })
                }
                (LifecycleKind::Stopped, "shutdown") => {
                    Some(match shutdown_by.remove(&ev.domain) {
                        Some("guest") => StopCause::ShutdownGuest,
                        Some(_) => StopCause::ShutdownHost,
                        None => StopCause::Shutdown,
                    })
                }
                (LifecycleKind::Stopped, "destroyed") => Some(StopCause::Destroyed),
                (LifecycleKind::Stopped, "crashed" | "failed") => Some(StopCause::Crashed),
                (LifecycleKind::Crashed, _) => Some(StopCause::Crashed),
                (LifecycleKind::Stopped, "migrated") => Some(StopCause::Migrated),
                (LifecycleKind::Stopped, "saved") => Some(StopCause::Saved),
                (LifecycleKind::Stopped, "from snapshot") => Some(StopCause::FromSnapshot),
                (LifecycleKind::Started, _) => {
                    shutdown_by.remove(&ev.domain);
                    self.started(&ev.domain);
                    continue;
                }
                _ => None,
            };
            tracing::debug!(vm = %ev.domain, "lifecycle event {} / {}", ev.kind.as_str(), ev.detail_text);
            match cause {
                Some(c) => self.stopped(&ev.domain, c),
                None => self.poke(),
            }
        }
    }

    fn notice(&self, vm: &str, kind: crate::notify::NoticeKind, what: String, attempts: u32) {
        let _ = self.notifier.notify(crate::notify::Notice {
            vm: vm.to_string(),
            node: self.cfg.node_name(),
            kind,
            what_happened: what,
            attempts,
            reset_command: crate::notify::Notice::reset_command_for(vm),
        });
    }

    /// The loop: a pass, then wait for the reconcile period, a wake-up time or a poke.
    pub async fn run(self: Arc<Self>) {
        let period = Duration::from_secs_f64(self.cfg.watchdog.reconcile_seconds);
        let timeout = Duration::from_secs_f64(self.cfg.agent.collector_timeout_seconds);
        tracing::info!(
            "watchdog: reconciling every {:.1} s (adopt = {:?}, user_shutdown = {})",
            period.as_secs_f64(),
            self.cfg.watchdog.adopt,
            self.cfg.watchdog.user_shutdown
        );
        let mut failing = false;
        loop {
            match self.probe.probe(timeout).await {
                Ok(p) => {
                    if failing {
                        tracing::warn!("watchdog: libvirt answers again");
                        failing = false;
                    }
                    self.pass(&p.value.domains).await;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(
                            "watchdog: cannot look at libvirt ({e}); retrying every {:.1} s",
                            period.as_secs_f64()
                        );
                        failing = true;
                    }
                }
            }
            let next_wake = self
                .inner()
                .wake_at
                .values()
                .copied()
                .fold(f64::INFINITY, f64::min);
            let until_wake = (next_wake - now()).max(0.0);
            let pause = period.min(Duration::from_secs_f64(until_wake.min(3600.0)));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// One look at every domain.
    async fn pass(&self, domains: &[LibvirtDomain]) {
        let mut changed = false;
        // The storage path matters only for a VM paused on an I/O error, and only with the
        // resume on: collected then, once per pass.
        let map = if self.cfg.watchdog.resume_after_io_error
            && domains
                .iter()
                .any(|d| d.state == DomainState::Paused(PausedReason::IoError))
        {
            let snap = self.storage.collect().await;
            Some(NodeMap::build_with_leases(
                &snap,
                self.cfg.lease_lockspace().as_deref(),
            ))
        } else {
            None
        };
        for d in domains {
            changed |= self.evaluate(d, map.as_ref()).await;
        }
        // Domains gone from this node (migrated away, undefined): forget their view.
        let names: std::collections::BTreeSet<&str> =
            domains.iter().map(|d| d.name.as_str()).collect();
        {
            let mut g = self.inner();
            g.views.retain(|k, _| names.contains(k.as_str()));
            g.causes.retain(|k, _| names.contains(k.as_str()));
            g.qemu_pids.retain(|k, _| names.contains(k.as_str()));
            let before = g.records.len();
            g.records.retain(|k, _| names.contains(k.as_str()));
            changed |= g.records.len() != before;
        }
        if changed {
            self.persist();
        }
    }

    /// Evaluate one domain; true when the persisted memory changed.
    async fn evaluate(&self, d: &LibvirtDomain, map: Option<&NodeMap>) -> bool {
        let vm = d.name.as_str();
        let t = now();
        let mut intent = match managed_intent(&self.cfg, d) {
            Ok(i) => i,
            Err(why) => {
                self.set_view(vm, Status::Unmanaged, None, why.to_string());
                return false;
            }
        };
        if intent.is_none() && self.cfg.watchdog.adopt == "running" && d.state.is_active() {
            let i = Intent::new(Want::Run, "adopted");
            match intent::record(&self.engine.virsh(), vm, &i, true).await {
                Ok(()) => {
                    tracing::info!(
                        vm,
                        "watchdog: adopted a running VM without intent as \"should run\""
                    );
                    intent = Some(i);
                }
                Err(e) => tracing::warn!(vm, "watchdog: cannot record the adopted intent: {e}"),
            }
        }
        let Some(intent) = intent else {
            self.set_view(vm, Status::Unmanaged, None, "no intent recorded".into());
            return false;
        };
        if d.state.is_active() {
            if let Some(pid) = crate::actions::plan_qemu_pid(&self.cfg, vm) {
                self.inner().qemu_pids.insert(vm.to_string(), pid);
            }
        }
        // A cause heard while the VM still runs is kept for the stop that follows (a shutdown
        // in progress); one older than that belongs to a run before this one.
        let cause = {
            let mut g = self.inner();
            if d.state.is_active() {
                if g.causes.get(vm).is_some_and(|(_, at)| t - at > 30.0) {
                    g.causes.remove(vm);
                }
                None
            } else {
                g.causes.get(vm).map(|(c, _)| *c)
            }
        };
        // A shutdown seen only through its shut-off reason: who asked is in the Shutdown event,
        // which may be on its way. Wait for it a moment before calling it on purpose.
        if cause.is_none()
            && intent.want == Want::Run
            && matches!(
                d.state,
                crate::probe::libvirt::DomainState::Shutoff(
                    crate::probe::libvirt::ShutoffReason::Shutdown
                )
            )
        {
            let since = *self.inner().down_since.entry(vm.to_string()).or_insert(t);
            if t - since < EVENT_GRACE_SECONDS {
                self.inner()
                    .wake_at
                    .insert(vm.to_string(), since + EVENT_GRACE_SECONDS);
                self.set_view(
                    vm,
                    Status::ErrorDown,
                    Some(intent.want),
                    "shut down: waiting for libvirt's event to say who asked".into(),
                );
                return false;
            }
        }
        let st = status::compute(
            intent.want,
            intent.by == "guest",
            &d.state,
            cause,
            self.cfg.watchdog.user_shutdown,
        );
        // A VM an action owns is that action's: look, never act.
        if self.engine.owned_by_action(vm) {
            self.set_view(vm, st, Some(intent.want), "an action owns it".into());
            return false;
        }
        // Stopped on purpose: record it in the intent so it stays down (after a reboot too).
        if matches!(st, Status::AdminDown | Status::UserDown) && intent.want == Want::Run {
            let by = if st == Status::UserDown {
                "guest"
            } else {
                "operator"
            };
            let stop = Intent::new(Want::Stop, by);
            let why = cause
                .map(|c| c.as_str().to_string())
                .unwrap_or_else(|| d.state.reason().into_owned());
            match intent::record(&self.engine.virsh(), vm, &stop, false).await {
                Ok(()) => tracing::warn!(
                    vm,
                    "watchdog: {} ({why}): left down, intent recorded as \"should be stopped\" — `vmwarden ctl start {vm}` brings it back",
                    st.as_str(),
                ),
                Err(e) => tracing::warn!(vm, "watchdog: cannot record the stop intent: {e}"),
            }
        }
        let decision = {
            let mut g = self.inner();
            if st == Status::ErrorDown {
                g.down_since.entry(vm.to_string()).or_insert(t);
            } else {
                g.down_since.remove(vm);
            }
            let rec = g.records.entry(vm.to_string()).or_default();
            let before = rec.clone();
            let d = if st == Status::PausedIoError {
                let health = match map {
                    Some(m) => storage::judge(m, vm),
                    None => PathHealth::Waiting(vec!["its storage was not collected".into()]),
                };
                policy::decide_paused_io(
                    &self.policy,
                    rec,
                    &health,
                    self.cfg.watchdog.resume_after_io_error,
                    t,
                )
            } else {
                policy::decide(&self.policy, rec, st, t)
            };
            let record_changed = *rec != before;
            if let Decision::Wait { until } | Decision::ResumeWait { until } = d {
                g.wake_at.insert(vm.to_string(), until);
            } else {
                g.wake_at.remove(vm);
            }
            (d, record_changed)
        };
        let (decision, record_changed) = decision;
        let mut changed = !matches!(
            decision,
            Decision::Nothing
                | Decision::Wait { .. }
                | Decision::GivenUp
                | Decision::Elsewhere { .. }
                | Decision::LeftPaused
                | Decision::ResumeWait { .. }
                | Decision::StorageWait { .. }
                | Decision::LockLost { .. }
                | Decision::ResumeGivenUp
        ) || record_changed;
        let previous = self.inner().views.get(vm).map(|v| v.decision.clone());
        let words = match &decision {
            Decision::Nothing => String::new(),
            Decision::Restart { attempt } => {
                let (since, old_qemu) = {
                    let g = self.inner();
                    (
                        g.down_since.get(vm).copied().unwrap_or(t),
                        g.qemu_pids.get(vm).copied(),
                    )
                };
                settle(old_qemu, since + SETTLE_SECONDS).await;
                tracing::warn!(
                    vm,
                    "watchdog: {} — restarting (attempt {attempt} of {})",
                    st.as_str(),
                    self.policy.max_attempts
                );
                let outcome = self.restart(vm).await;
                let result = match &outcome {
                    StartOutcome::Started => "started",
                    StartOutcome::RunsElsewhere { .. } => "elsewhere",
                    StartOutcome::Failed(_) => "failed",
                };
                match &outcome {
                    StartOutcome::Started => tracing::warn!(vm, "watchdog: restarted (attempt {attempt})"),
                    StartOutcome::RunsElsewhere { node } => tracing::warn!(vm, "watchdog: not restarted: it runs on node {node} (its lock is held there); not fighting it"),
                    StartOutcome::Failed(e) => tracing::warn!(vm, "watchdog: restart attempt {attempt} failed: {e}"),
                }
                if *attempt > 1 {
                    self.notice(
                        vm,
                        crate::notify::NoticeKind::Restarted {
                            attempt: *attempt,
                            in_window: Duration::from_secs_f64(self.policy.window),
                        },
                        format!(
                            "{} on node {} ({}); restart attempt {attempt}: {result}",
                            st.as_str(),
                            self.cfg.node_name(),
                            cause.map(|c| c.as_str()).unwrap_or("stopped")
                        ),
                        *attempt,
                    );
                }
                let mut g = self.inner();
                *g.results.entry((vm.to_string(), result)).or_default() += 1;
                let rec = g.records.entry(vm.to_string()).or_default();
                policy::started(rec, &outcome);
                if let StartOutcome::Failed(_) = outcome {
                    let n = rec.attempts.len();
                    let last = rec.attempts.last().copied().unwrap_or(t);
                    let until = last + self.policy.backoff(n);
                    g.wake_at.insert(vm.to_string(), until);
                }
                changed = true;
                format!("restart attempt {attempt}: {result}")
            }
            Decision::Wait { until } => format!("next restart in {:.1} s", (until - t).max(0.0)),
            Decision::GiveUp { attempts } => {
                tracing::error!(
                    vm,
                    "watchdog: gave up after {attempts} restarts within {:.0} s; `vmwarden ctl reset {vm}` to try again",
                    self.policy.window
                );
                self.notice(
                    vm,
                    crate::notify::NoticeKind::GaveUp,
                    format!(
                        "{vm} kept dying on node {}: {attempts} restarts within {:.0} s; the watchdog gave up and leaves it down",
                        self.cfg.node_name(),
                        self.policy.window
                    ),
                    *attempts,
                );
                format!("gave up after {attempts} attempts")
            }
            Decision::GivenUp => format!("given up: `vmwarden ctl reset {vm}`"),
            Decision::Elsewhere { node } => format!("runs on node {node}: not fought"),
            Decision::Stable => {
                tracing::info!(vm, "watchdog: stable again, restart count reset");
                "stable: attempts reset".into()
            }
            Decision::WindowPassed => {
                self.poke();
                "window passed: trying again".into()
            }
            Decision::LeftPaused => {
                "paused on an I/O error: left paused (resume_after_io_error = false)".into()
            }
            Decision::Resume { attempt } => {
                tracing::warn!(
                    vm,
                    "watchdog: paused on an I/O error and its storage path is healthy again — resuming (attempt {attempt} of {})",
                    self.policy.max_attempts
                );
                let outcome = self.resume(vm).await;
                let result = match &outcome {
                    ResumeOutcome::Resumed => "resumed",
                    ResumeOutcome::Failed(_) => "failed",
                };
                match &outcome {
                    ResumeOutcome::Resumed => {
                        tracing::warn!(vm, "watchdog: resumed (attempt {attempt})")
                    }
                    ResumeOutcome::Failed(e) => {
                        tracing::warn!(vm, "watchdog: resume attempt {attempt} failed: {e}")
                    }
                }
                let mut g = self.inner();
                *g.resume_results
                    .entry((vm.to_string(), result))
                    .or_default() += 1;
                let rec = g.records.entry(vm.to_string()).or_default();
                policy::resumed(rec, &outcome);
                if let ResumeOutcome::Failed(_) = outcome {
                    let n = rec.resumes.len();
                    let last = rec.resumes.last().copied().unwrap_or(t);
                    let until = last + self.policy.backoff(n);
                    g.wake_at.insert(vm.to_string(), until);
                }
                changed = true;
                format!("resume attempt {attempt}: {result}")
            }
            Decision::ResumeWait { until } => format!(
                "paused on an I/O error, storage healthy: next resume in {:.1} s",
                (until - t).max(0.0)
            ),
            Decision::StorageWait { why } => {
                let words = format!("paused on an I/O error: waits for its storage: {why}");
                if previous.as_deref() != Some(words.as_str()) {
                    tracing::warn!(vm, "watchdog: {words}");
                }
                words
            }
            Decision::LockLost { why } => {
                let words = format!(
                    "paused on an I/O error: never resumed: {why}. If {vm} runs nowhere else, take its lock (`vmwarden lock exclusive {vm}`) and `vmwarden ctl resume {vm}`; else `virsh destroy {vm}` here"
                );
                if previous.as_deref() != Some(words.as_str()) {
                    tracing::error!(vm, "watchdog: {words}");
                }
                words
            }
            Decision::ResumeGiveUp { attempts } => {
                tracing::error!(
                    vm,
                    "watchdog: paused on an I/O error again after {attempts} resumes within {:.0} s: gave up resuming it; `vmwarden ctl reset {vm}` to try again",
                    self.policy.window
                );
                format!("gave up resuming after {attempts} resumes: `vmwarden ctl reset {vm}`")
            }
            Decision::ResumeGivenUp => {
                format!("paused on an I/O error, resume given up: `vmwarden ctl reset {vm}`")
            }
        };
        self.set_view(vm, st, Some(intent.want), words);
        changed
    }

    /// One action of the watchdog, through the same engine as every operator's (locks, journal,
    /// hook), marked as the watchdog's.
    async fn act(&self, action: ActionKind, vm: &str) -> crate::actions::ActionReport {
        let req = ActionRequest {
            action,
            vm: vm.to_string(),
            to: None,
            dry_run: false,
            lifecycle: Default::default(),
        };
        self.engine.run_as(req, Origin::Watchdog).await
    }

    async fn restart(&self, vm: &str) -> StartOutcome {
        let rep = self.act(ActionKind::Start, vm).await;
        if rep.result == "completed" {
            return StartOutcome::Started;
        }
        match rep.held_by_node {
            Some(node) => StartOutcome::RunsElsewhere { node },
            None => StartOutcome::Failed(format!("{}: {}", rep.result, rep.message)),
        }
    }

    async fn resume(&self, vm: &str) -> ResumeOutcome {
        let rep = self.act(ActionKind::Resume, vm).await;
        if rep.result == "completed" {
            ResumeOutcome::Resumed
        } else {
            ResumeOutcome::Failed(format!("{}: {}", rep.result, rep.message))
        }
    }

    fn set_view(&self, vm: &str, st: Status, want: Option<Want>, decision: String) {
        let mut g = self.inner();
        let rec = g.records.get(vm).cloned().unwrap_or_default();
        let keep = g
            .views
            .get(vm)
            .filter(|v| decision.is_empty() && v.status == st)
            .map(|v| v.decision.clone());
        g.views.insert(
            vm.to_string(),
            VmView {
                vm: vm.to_string(),
                status: st,
                status_word: st.as_str(),
                intent: want,
                decision: keep.unwrap_or(decision),
                attempts: rec.attempts.len() as u32,
                gave_up: rec.gave_up_at.is_some(),
                restarts: rec.restarts,
                resume_stuck: st == Status::PausedIoError
                    && (rec.lock_lost.is_some() || rec.resume_gave_up_at.is_some()),
                elsewhere: rec.elsewhere,
            },
        );
    }
}
