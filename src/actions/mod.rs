//! Actions: start, stop, restart and migrate a VM, each a plan of named steps.
//!
//! A plan is built first (and is all `--dry-run` shows: the steps with their concrete commands and
//! what undoes each). Running it writes every step to the journal (fsync'ed) *before* the step
//! runs. On a failure the steps done so far are undone in reverse — except across a *commit*
//! (a libvirt migration that happened, a VM that was powered off): what follows a commit is
//! finished forward (retried), and if it cannot be, the journal stays open and the agent's
//! recovery (recover.rs) finishes it from what libvirt and the locks show.
//!
//! Live migration: preflight → source ex→sh → target sh → `virsh migrate --live` → source
//! release → target sh→ex. The target's part is asked of its agent over HTTP (api/peer.rs).

pub mod compat;
pub mod journal;
pub mod lifecycle;
pub mod manual_lock;
pub mod outcome;
mod plan;
mod recover;
pub mod stats;
pub mod virsh;
pub mod vmlocks;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::api::peer::{PeerOp, PeerReply, PeerRequest};
use crate::config::{Config, Peer};
use crate::lock::{validate_name, LockError, LockOp, NameKind};
use crate::secret::Secret;

use journal::{Journal, Record};
pub use plan::{qemu_pid as plan_qemu_pid, Plan, PlannedStep, Step};
use virsh::{DomState, Virsh};
use vmlocks::VmLocks;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Start,
    Stop,
    Restart,
    Migrate,
    Create,
    Grow,
    ActivateDisks,
    DeactivateDisks,
    Remove,
    /// `virsh resume` of a VM paused on an I/O error (or by a user), once its storage path is
    /// healthy and its lock exclusive here.
    Resume,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Start => "start",
            ActionKind::Stop => "stop",
            ActionKind::Restart => "restart",
            ActionKind::Migrate => "migrate",
            ActionKind::Create => "create",
            ActionKind::Grow => "grow",
            ActionKind::ActivateDisks => "activate_disks",
            ActionKind::DeactivateDisks => "deactivate_disks",
            ActionKind::Remove => "remove",
            ActionKind::Resume => "resume",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    pub action: ActionKind,
    pub vm: String,
    /// Migration target (a peer's name).
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    /// create, grow, remove: their arguments (lifecycle::Params).
    #[serde(default, skip_serializing_if = "lifecycle::Params::is_empty")]
    pub lifecycle: lifecycle::Params,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub step: String,
    pub ok: bool,
    pub seconds: f64,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionReport {
    pub id: String,
    pub action: String,
    pub vm: String,
    pub node: String,
    /// planned (dry run), completed, refused (nothing changed), rolled_back, failed (done up to
    /// a commit, the rest undone), incomplete (journal kept; recovery finishes it).
    pub result: String,
    pub ok: bool,
    pub message: String,
    pub plan: Vec<PlannedStep>,
    pub steps: Vec<StepReport>,
    pub rollback: Vec<StepReport>,
    pub seconds: f64,
    /// The node where the VM runs or whose host holds its lock, when that is why the action was
    /// refused (the watchdog does not fight it; a client can say where to look).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by_node: Option<String>,
    /// What the steps want the operator to know although they passed (the migration
    /// preflight's compatibility check: what it compared, or why it cannot tell).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl ActionReport {
    /// Human-readable, for `vmwarden ctl`.
    pub fn text(&self) -> String {
        let mut s = String::new();
        if self.result == "planned" {
            s.push_str(&format!(
                "plan for {} of {} on {} (dry run: nothing was changed)\n",
                self.action, self.vm, self.node
            ));
            for (i, p) in self.plan.iter().enumerate() {
                s.push_str(&format!("{:>2}. {}\n", i + 1, p.step));
                for c in &p.does {
                    s.push_str(&format!("      run:  {c}\n"));
                }
                for c in &p.undo {
                    s.push_str(&format!("      undo: {c}\n"));
                }
            }
            return s;
        }
        for st in &self.steps {
            s.push_str(&format!(
                "  {} {} ({:.2} s){}\n",
                if st.ok { "ok  " } else { "FAIL" },
                st.step,
                st.seconds,
                st.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        for st in &self.rollback {
            s.push_str(&format!(
                "  {} undo {} ({:.2} s){}\n",
                if st.ok { "ok  " } else { "FAIL" },
                st.step,
                st.seconds,
                st.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        for n in &self.notes {
            s.push_str(&format!("  note: {n}\n"));
        }
        s.push_str(&format!(
            "{} {} on {}: {} in {:.2} s — {}\n",
            self.action, self.vm, self.node, self.result, self.seconds, self.message
        ));
        s
    }
}

/// Why a step failed, as the operator reads it.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("{0}")]
    Refused(String),
    /// Refused because the VM runs on, or its lock is held by, another node (named).
    #[error("{message}")]
    HeldElsewhere { node: String, message: String },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Virsh(#[from] virsh::VirshError),
    #[error(transparent)]
    Peer(#[from] crate::api::peer::PeerError),
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    /// Whether the step happened cannot be told yet (a migration libvirt may still be
    /// finishing): nothing is undone, the journal stays and recovery decides from what it sees.
    #[error("{0}")]
    Unsettled(String),
}

/// The agent's action engine: one per agent, shared by the HTTP handlers and recovery.
pub struct Engine {
    pub cfg: Config,
    pub node: String,
    secret: Secret,
    /// VMs with an action, a peer call or a recovery in progress in this process.
    busy: Mutex<HashSet<String>>,
    pub stats: Arc<stats::ActionStats>,
    /// Wakes the recovery loop at once (an action just ended incomplete).
    recovery_wake: tokio::sync::Notify,
}

/// Marks a VM busy while alive.
struct BusyGuard<'a> {
    engine: &'a Engine,
    vm: String,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut b) = self.engine.busy.lock() {
            b.remove(&self.vm);
        }
    }
}

/// Test-only fault point: `VMWARDEN_FAULT_AFTER_STEP=ACTION:STEP` makes the agent kill itself
/// with SIGKILL right after STEP of ACTION is journaled done — a crash at the worst moment, for
/// the recovery tests. Never set it in production.
fn fault_point(action: &str, step: &str) {
    if let Ok(f) = std::env::var("VMWARDEN_FAULT_AFTER_STEP") {
        if f == format!("{action}:{step}") {
            tracing::error!("VMWARDEN_FAULT_AFTER_STEP={f}: killing this agent (test fault point)");
            // SAFETY: kill(2) on our own pid; nothing to clean up, that is the point.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}

enum FailureKind {
    Unsettled,
}

/// Everything one action needs.
/// Who asked for an action. Every caller goes through the same plan and checks; the origin only
/// spares the watchdog what it already knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `vmwarden ctl`, the API, a peer.
    Operator,
    /// The watchdog restarting a VM whose recorded intent is already "should run": the start
    /// does not rewrite that intent (a `virsh metadata` round trip on the way to a restart).
    Watchdog,
}

pub(crate) struct Ctx<'a> {
    pub engine: &'a Engine,
    pub origin: Origin,
    pub vm: String,
    pub disks: Vec<String>,
    pub locks: Option<VmLocks>,
    pub peer: Option<Peer>,
    pub id: String,
    /// The VM's state here when the action was planned.
    pub state: DomState,
    /// Set by a live migration's commit: the VM was seen gone from this node.
    pub gone_after_migrate: std::sync::atomic::AtomicBool,
    /// Notes for the report (ActionReport::notes).
    pub notes: Mutex<Vec<String>>,
    /// Lifecycle actions: their disk, sizes, XML (worked out before planning).
    pub life: lifecycle::Prep,
}

impl Engine {
    pub fn new(cfg: Config, secret: Secret) -> Engine {
        let node = cfg.node_name();
        Engine {
            cfg,
            node,
            secret,
            busy: Mutex::new(HashSet::new()),
            stats: Arc::new(stats::ActionStats::new()),
            recovery_wake: tokio::sync::Notify::new(),
        }
    }

    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    pub fn virsh(&self) -> Virsh {
        Virsh::from_config(&self.cfg)
    }

    fn peer_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.cfg.actions.peer_timeout_seconds)
    }

    fn try_busy(&self, vm: &str) -> Option<BusyGuard<'_>> {
        let mut b = self.busy.lock().ok()?;
        b.insert(vm.to_string()).then(|| BusyGuard {
            engine: self,
            vm: vm.to_string(),
        })
    }

    /// Whether an action, peer call or recovery holds `vm` in this process right now.
    pub fn is_busy(&self, vm: &str) -> bool {
        self.busy.lock().map(|b| b.contains(vm)).unwrap_or(true)
    }

    /// Whether an action, peer call or recovery holds `vm` in this process, or an unfinished
    /// journal or incoming migration owns it: the watchdog leaves such a VM alone.
    pub fn owned_by_action(&self, vm: &str) -> bool {
        let busy = self.busy.lock().map(|b| b.contains(vm)).unwrap_or(true);
        let sd = &self.cfg.cluster.state_dir;
        busy || journal::incoming(sd, vm).is_some()
            || journal::unfinished(sd)
                .iter()
                .any(|p| p.file_stem().is_some_and(|s| s == vm))
    }

    /// Wait (bounded) until `vm` is free in this process, then hold it.
    async fn wait_busy(&self, vm: &str, max: Duration) -> Option<BusyGuard<'_>> {
        let until = Instant::now() + max;
        loop {
            if let Some(g) = self.try_busy(vm) {
                return Some(g);
            }
            if Instant::now() > until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Call `op` on a peer's agent.
    pub(crate) async fn call_peer(
        &self,
        peer: &Peer,
        op: PeerOp,
        vm: &str,
        disks: &[String],
        id: &str,
    ) -> Result<PeerReply, ActionError> {
        let req = PeerRequest {
            op,
            vm: vm.to_string(),
            disks: disks.to_vec(),
            action_id: id.to_string(),
            platform: None,
            action: None,
            drbd: false,
        };
        self.call_peer_with(peer, &req).await
    }

    /// Send `req` to a peer's agent; a reply that is not ok is a refusal naming the peer.
    pub(crate) async fn call_peer_with(
        &self,
        peer: &Peer,
        req: &PeerRequest,
    ) -> Result<PeerReply, ActionError> {
        let reply: PeerReply = crate::api::peer::call(
            &peer.url,
            "/v1/peer",
            &self.secret,
            req,
            self.peer_timeout(),
        )
        .await?;
        if !reply.ok {
            return Err(ActionError::Refused(format!(
                "node {}: {}",
                peer.name,
                reply.error.clone().unwrap_or_else(|| "refused".into())
            )));
        }
        Ok(reply)
    }

    /// Name the node behind a sanlock host id in a lock refusal.
    pub fn explain(&self, e: ActionError) -> ActionError {
        match e {
            ActionError::Lock(l) => {
                match (name_holder(&self.cfg, &l), holder_node(&self.cfg, &l)) {
                    (Some(message), Some(node)) => ActionError::HeldElsewhere { node, message },
                    (Some(text), None) => ActionError::Refused(text),
                    _ => ActionError::Lock(l),
                }
            }
            e => e,
        }
    }

    /// Whether a qemu process for `vm` exists here: libvirt's answer, or — when libvirtd cannot
    /// be asked (stopped, hung) — qemu's pid file and the process itself. Then the state is
    /// `unknown (libvirtd not answering; …)`, active when qemu runs: nothing that asks may take
    /// a running qemu for a stopped VM.
    pub(crate) async fn active_here(&self, vm: &str) -> Result<(DomState, bool), ActionError> {
        match self.virsh().state(vm).await {
            Ok(s) => {
                let a = s.active();
                Ok((s, a))
            }
            Err(e) => match plan::qemu_pid(&self.cfg, vm) {
                Some(pid) if std::path::Path::new(&format!("/proc/{pid}")).exists() => {
                    tracing::warn!(
                        vm,
                        "libvirt cannot be asked ({e}); qemu {pid} of the VM runs here"
                    );
                    Ok((
                        DomState::parse(&format!(
                            "unknown (libvirtd not answering; qemu {pid} runs)"
                        )),
                        true,
                    ))
                }
                _ => {
                    tracing::warn!(
                        vm,
                        "libvirt cannot be asked ({e}); no qemu process of the VM runs here"
                    );
                    Ok((
                        DomState::parse("unknown (libvirtd not answering; no qemu process)"),
                        false,
                    ))
                }
            },
        }
    }

    /// Wake the recovery loop now (an action was left incomplete).
    pub fn wake_recovery(&self) {
        self.recovery_wake.notify_one();
    }

    /// Plan and (unless dry-run) run an action. Never panics; every outcome is a report.
    pub async fn run(&self, req: ActionRequest) -> ActionReport {
        self.run_as(req, Origin::Operator).await
    }

    /// [`Engine::run`] on behalf of `origin`.
    pub async fn run_as(&self, req: ActionRequest, origin: Origin) -> ActionReport {
        self.run_with_id(req, origin, None).await
    }

    /// [`Engine::run_as`] under a journal id chosen by the caller (the API answers with it
    /// before the action is done); `None`: one is made.
    pub async fn run_with_id(
        &self,
        req: ActionRequest,
        origin: Origin,
        id: Option<String>,
    ) -> ActionReport {
        let t0 = Instant::now();
        let mut rep = ActionReport {
            action: req.action.as_str().to_string(),
            vm: req.vm.clone(),
            node: self.node.clone(),
            ..Default::default()
        };
        let refuse = |mut rep: ActionReport, msg: String| {
            rep.result = "refused".into();
            rep.message = msg;
            rep.seconds = t0.elapsed().as_secs_f64();
            rep
        };
        if let Err(e) = validate_name(NameKind::Vm, &req.vm) {
            return refuse(rep, e.to_string());
        }
        // grow runs where the VM runs: asked of that node's agent when it runs elsewhere.
        if let Some(rep) = lifecycle::forward_grow(self, &req).await {
            return rep;
        }
        let Some(guard) = self.try_busy(&req.vm) else {
            return refuse(
                rep,
                format!(
                    "another action on {} is running on this node; wait for it",
                    req.vm
                ),
            );
        };
        let ctx = match self.context(&req, origin, id).await {
            Ok(c) => c,
            Err(e) => {
                let e = self.explain(e);
                rep.held_by_node = held_by(&e);
                return refuse(rep, e.to_string());
            }
        };
        let plan = match Plan::build(&ctx, &req) {
            Ok(p) => p,
            Err(e) => return refuse(rep, e.to_string()),
        };
        rep.plan = plan.describe(&ctx);
        if req.dry_run {
            rep.result = "planned".into();
            rep.ok = true;
            rep.message = format!("{} steps", rep.plan.len());
            rep.seconds = t0.elapsed().as_secs_f64();
            return rep;
        }
        let mut rep = self.execute(&ctx, &req, plan, rep, t0).await;
        if let Ok(mut n) = ctx.notes.lock() {
            rep.notes = std::mem::take(&mut *n);
        }
        self.stats.observe(&rep.action, &rep.result, rep.seconds);
        if rep.result != "incomplete" {
            self.stats.unfinished_end(&req.vm);
        }
        // Recovery takes the VM over at once: free it first, or the pass would find it busy.
        drop(guard);
        if rep.result == "incomplete" {
            self.wake_recovery();
        }
        rep
    }

    async fn context(
        &self,
        req: &ActionRequest,
        origin: Origin,
        id: Option<String>,
    ) -> Result<Ctx<'_>, ActionError> {
        let virsh = self.virsh();
        // Both at once (two `virsh` round trips on the way to every action, a restart too); the
        // disks count only for a domain that is defined here.
        let (state, disks) = tokio::join!(virsh.state(&req.vm), virsh.disks(&req.vm));
        let state = state?;
        let mut disks = if state.defined() { disks? } else { Vec::new() };
        let mut life = lifecycle::Prep::default();
        if lifecycle::is_lifecycle(req.action) {
            let (prep, new_disks) = lifecycle::prepare(self, req, &state).await?;
            if let Some(d) = new_disks {
                disks = d;
            }
            life = prep;
        }
        let peer = match (&req.action, &req.to) {
            (ActionKind::Migrate, Some(to)) => {
                Some(self.cfg.peer(to).cloned().ok_or_else(|| {
                    ActionError::Refused(format!(
                        "{to} is not a peer of this node ([cluster] peers: {})",
                        self.cfg
                            .cluster
                            .peers
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?)
            }
            (ActionKind::Migrate, None) => {
                return Err(ActionError::Refused(
                    "migrate needs a target node (--to NODE)".into(),
                ))
            }
            _ => None,
        };
        let locks = VmLocks::for_vm(&self.cfg, &req.vm, &disks)?;
        Ok(Ctx {
            engine: self,
            origin,
            vm: req.vm.clone(),
            disks,
            locks,
            peer,
            state,
            gone_after_migrate: std::sync::atomic::AtomicBool::new(false),
            notes: Mutex::new(Vec::new()),
            life,
            id: id.unwrap_or_else(|| new_action_id(&req.vm, req.action)),
        })
    }

    async fn execute(
        &self,
        ctx: &Ctx<'_>,
        req: &ActionRequest,
        plan: Plan,
        mut rep: ActionReport,
        t0: Instant,
    ) -> ActionReport {
        rep.id = ctx.id.clone();
        let started_unix = journal::now_unix();
        let header = Record::Header {
            id: ctx.id.clone(),
            action: req.action.as_str().into(),
            vm: ctx.vm.clone(),
            node: self.node.clone(),
            to: req.to.clone(),
            live: plan.live,
            started_unix,
            steps: plan.steps.iter().map(|s| s.name().to_string()).collect(),
            disks: ctx.disks.clone(),
        };
        let mut j = match Journal::create(&self.cfg.cluster.state_dir, &ctx.vm, header) {
            Ok(j) => j,
            Err(e) => {
                rep.result = "refused".into();
                rep.message = e.to_string();
                rep.seconds = t0.elapsed().as_secs_f64();
                return rep;
            }
        };
        // Seen as unfinished until its journal is finished (by this action or, if it ends
        // incomplete, by recovery): vmwarden_action_unfinished_start_time_seconds.
        self.stats
            .unfinished_begin(&ctx.vm, req.action.as_str(), started_unix);
        tracing::info!(id = %ctx.id, "{} {}: {} steps", rep.action, ctx.vm, plan.steps.len());
        let mut done: Vec<Step> = Vec::new();
        let mut committed = false;
        let mut failure: Option<(Step, String)> = None;
        let mut failure_kind: Option<FailureKind> = None;
        for step in &plan.steps {
            if let Err(e) = j.write(&Record::Begin {
                step: step.name().into(),
            }) {
                failure = Some((*step, e.to_string()));
                break;
            }
            pause_point(&self.cfg, req.action.as_str(), step.name()).await;
            let ts = Instant::now();
            let mut r = step.run(ctx).await;
            // Steps after a commit must finish: retry them a few times before giving up.
            if r.is_err() && committed && step.forward_only() {
                for attempt in 1..=3 {
                    tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                    r = step.run(ctx).await;
                    if r.is_ok() {
                        break;
                    }
                }
            }
            let r = r.map_err(|e| self.explain(e));
            rep.steps.push(StepReport {
                step: step.name().into(),
                ok: r.is_ok(),
                seconds: ts.elapsed().as_secs_f64(),
                error: r.as_ref().err().map(|e| e.to_string()),
            });
            match r {
                Ok(()) => {
                    let _ = j.write(&Record::Done {
                        step: step.name().into(),
                    });
                    tracing::info!(id = %ctx.id, step = step.name(), "done");
                    fault_point(req.action.as_str(), step.name());
                    done.push(*step);
                    committed |= step.commits();
                }
                Err(e) => {
                    if matches!(e, ActionError::Unsettled(_)) {
                        failure_kind = Some(FailureKind::Unsettled);
                    }
                    rep.held_by_node = held_by(&e);
                    let msg = e.to_string();
                    tracing::warn!(id = %ctx.id, step = step.name(), "failed: {msg}");
                    let _ = j.write(&Record::Failed {
                        step: step.name().into(),
                        error: msg.clone(),
                    });
                    failure = Some((*step, msg));
                    break;
                }
            }
        }
        rep.seconds = t0.elapsed().as_secs_f64();
        let Some((failed, why)) = failure else {
            rep.ok = true;
            rep.result = "completed".into();
            rep.message = plan.success_message(ctx);
            if let Err(e) = j.finish("completed", &rep.message) {
                tracing::error!("closing the journal of {}: {e}", ctx.id);
            }
            return rep;
        };
        // A step that cannot tell whether it happened (the migration commit when libvirt has not
        // settled): no undo — recovery decides from what it sees.
        let unsettled = matches!(failure_kind, Some(FailureKind::Unsettled));
        if unsettled || (committed && failed.forward_only()) {
            let (result, message) = if unsettled {
                ("incomplete", format!("{} could not be decided: {why} — nothing was undone; the journal is kept and the agent's recovery finishes or rolls it back from what libvirt and the locks show (every 3 s)", failed.name()))
            } else {
                outcome::conclude(&ctx.vm, &done, committed, failed, &why, false)
            };
            rep.result = result.into();
            rep.message = message;
            if let Err(e) = j.write(&Record::Incomplete {
                reason: rep.message.clone(),
            }) {
                tracing::error!("journal of {}: {e}", ctx.id);
            }
            return rep;
        }
        // Undo what was done since the last commit, newest first.
        for step in done.iter().rev() {
            if step.commits() {
                break;
            }
            if !step.has_undo() {
                continue;
            }
            let _ = j.write(&Record::Undo {
                step: step.name().into(),
            });
            let ts = Instant::now();
            let r = step.undo(ctx).await;
            let err = r.err().map(|e| e.to_string());
            let _ = j.write(&Record::Undone {
                step: step.name().into(),
                error: err.clone(),
            });
            rep.rollback.push(StepReport {
                step: step.name().into(),
                ok: err.is_none(),
                seconds: ts.elapsed().as_secs_f64(),
                error: err,
            });
        }
        rep.seconds = t0.elapsed().as_secs_f64();
        let undo_failed = rep.rollback.iter().any(|s| !s.ok);
        let (result, message) =
            outcome::conclude(&ctx.vm, &done, committed, failed, &why, undo_failed);
        rep.result = result.into();
        rep.message = message;
        if undo_failed {
            if let Err(e) = j.write(&Record::Incomplete {
                reason: rep.message.clone(),
            }) {
                tracing::error!("journal of {}: {e}", ctx.id);
            }
            return rep;
        }
        if let Err(e) = j.finish(&rep.result, &rep.message) {
            tracing::error!("closing the journal of {}: {e}", ctx.id);
        }
        rep
    }

    /// The target's side of a migration, and status questions from peers.
    pub async fn handle_peer(&self, req: PeerRequest) -> PeerReply {
        let mut rep = PeerReply {
            node: self.node.clone(),
            ..Default::default()
        };
        if let Err(e) = validate_name(NameKind::Vm, &req.vm) {
            rep.error = Some(e.to_string());
            return rep;
        }
        if req.op == PeerOp::Capabilities {
            // About this node's hypervisor, not the VM: no busy mark, no lock.
            let platform = req.platform.clone().unwrap_or_default();
            rep.caps = Some(compat::gather(&self.virsh(), &platform).await);
            rep.ok = true;
            return rep;
        }
        if req.op == PeerOp::Act {
            // Runs its own action (which takes the VM's busy mark itself).
            return lifecycle::peer_act(self, req, rep).await;
        }
        if req.op == PeerOp::Status {
            rep.maintenance = lifecycle::maintenance_refusal(&self.cfg.cluster.state_dir, &req.vm);
            let sd = &self.cfg.cluster.state_dir;
            rep.owned_by_action = self.is_busy(&req.vm)
                || journal::incoming(sd, &req.vm).is_some()
                || journal::unfinished(sd)
                    .iter()
                    .any(|p| p.file_stem().is_some_and(|s| s == req.vm.as_str()));
        }
        let Some(_g) = self.wait_busy(&req.vm, self.peer_timeout()).await else {
            rep.error = Some(format!("{} is busy with another action here", req.vm));
            return rep;
        };
        let (state, active) = match self.active_here(&req.vm).await {
            Ok(s) => s,
            Err(e) => {
                rep.error = Some(e.to_string());
                return rep;
            }
        };
        rep.state = state.to_string();
        rep.active = active;
        let locks = match VmLocks::for_vm(&self.cfg, &req.vm, &req.disks) {
            Ok(l) => l,
            Err(e) => {
                rep.error = Some(e.to_string());
                return rep;
            }
        };
        let sd = &self.cfg.cluster.state_dir;
        let result: Result<(), ActionError> = async {
            if req.op == PeerOp::Undefine {
                return lifecycle::peer_undefine(self, &req.vm, active).await;
            }
            let Some(locks) = &locks else {
                if req.op == PeerOp::Status {
                    return Ok(());
                }
                return Err(ActionError::Refused(format!(
                    "{}: no lockable disk among {:?}",
                    req.vm, req.disks
                )));
            };
            match req.op {
                PeerOp::Status => Ok(()),
                PeerOp::AcquireShared => {
                    if state.active() && !state.incoming_migration() {
                        return Err(ActionError::Refused(format!(
                            "{} already runs here ({state}): refusing to join its lock for an incoming migration",
                            req.vm
                        )));
                    }
                    // Declared before the lock is joined: the hook lets libvirt's incoming
                    // migration in only for a migration declared here.
                    journal::set_incoming(sd, &req.vm, Some(&req.action_id))?;
                    let r = locks.apply(LockOp::AcquireShared).await;
                    if r.is_err() {
                        let _ = journal::set_incoming(sd, &req.vm, None);
                    }
                    Ok(r?)
                }
                PeerOp::ConvertToExclusive => {
                    // A qemu of the VM runs here (libvirt says so, or libvirtd is down and qemu's
                    // process is alive). The lock itself refuses while the source still holds it.
                    if !active || state.incoming_migration() {
                        return Err(ActionError::Refused(format!(
                            "{} does not run here ({state}): refusing to take its lock exclusively",
                            req.vm
                        )));
                    }
                    locks.apply(LockOp::ConvertToExclusive).await?;
                    if let Some(pid) = plan::qemu_pid(&self.cfg, &req.vm) {
                        if let Err(e) = locks.attach_vm(pid).await {
                            tracing::warn!(vm = %req.vm, "could not tie the lease to qemu {pid}: {e}");
                        }
                    }
                    journal::set_incoming(sd, &req.vm, None)?;
                    Ok(())
                }
                // Answered before the VM's busy mark (above).
                PeerOp::Capabilities | PeerOp::Act | PeerOp::Undefine => Ok(()),
                PeerOp::Release => {
                    if active {
                        return Err(ActionError::Refused(format!(
                            "{} runs here ({state}): its lock stays",
                            req.vm
                        )));
                    }
                    locks.apply(LockOp::Release).await?;
                    journal::set_incoming(sd, &req.vm, None)?;
                    Ok(())
                }
            }
        }
        .await;
        // Only a status reports the lock and the disks: the other operations verified what they
        // changed, and each lock read costs two lvm commands on the migration path.
        if req.op == PeerOp::Status {
            // Under lvmlockd an LV this node has not activated has no /dev node yet; lvm knowing
            // it (its lock mode could be read, which looks it up in the VG) is what "seen" means.
            let mut lvs_known = false;
            if let Some(l) = &locks {
                rep.lock = match l.mode().await {
                    Ok(m) => {
                        lvs_known = self.cfg.lock.backend == "lvmlockd";
                        m.as_str().to_string()
                    }
                    Err(e) => format!("unknown: {e}"),
                };
            }
            rep.missing_disks = req
                .disks
                .iter()
                .filter(|d| {
                    let seen = std::path::Path::new(d).exists()
                        || (lvs_known && vmlocks::lv_of_path(d).is_some());
                    !seen
                })
                .cloned()
                .collect();
            if req.drbd && self.cfg.drbd.enabled {
                let (drbd, lvm) = crate::collect::collect_storage(&self.cfg).await;
                rep.drbd_problems = crate::node::drbd_problems_under(&drbd, &lvm, &req.disks);
            }
        }
        match result {
            Ok(()) => rep.ok = true,
            Err(e) => rep.error = Some(self.explain(e).to_string()),
        }
        if req.op != PeerOp::Status {
            tracing::info!(vm = %req.vm, action = %req.action_id, op = ?req.op, ok = rep.ok, "peer request");
        }
        rep
    }

    /// Where a VM is, on this node and every peer (`vmwarden ctl status VM`).
    pub async fn cluster_status(&self, vm: &str) -> Vec<PeerReply> {
        let disks = self.virsh().disks(vm).await.unwrap_or_default();
        let mut out = vec![
            self.handle_peer(PeerRequest {
                op: PeerOp::Status,
                vm: vm.to_string(),
                disks: disks.clone(),
                action_id: String::new(),
                platform: None,
                action: None,
                drbd: false,
            })
            .await,
        ];
        for p in &self.cfg.cluster.peers {
            match self.call_peer(p, PeerOp::Status, vm, &disks, "").await {
                Ok(r) => out.push(r),
                Err(e) => out.push(PeerReply {
                    node: p.name.clone(),
                    error: Some(e.to_string()),
                    ..Default::default()
                }),
            }
        }
        out
    }

    /// Finish or roll back every unfinished journal and incoming migration once. Returns how
    /// many are still unfinished.
    pub async fn recover_all(&self) -> usize {
        recover::recover_all(self).await
    }

    /// The agent's recovery loop (start-up pass, woken by incomplete actions, then on cadence).
    pub async fn recovery_loop(self: Arc<Self>) {
        recover::run_loop(self).await
    }
}

/// `VM-ACTION-MILLIS`: the journal id of a new action.
pub fn new_action_id(vm: &str, action: ActionKind) -> String {
    format!(
        "{vm}-{}-{}",
        action.as_str(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    )
}

/// The node holding the lock a refusal is about, when sanlock named its host and that host is
/// this node's or a peer's.
fn holder_node(cfg: &Config, e: &LockError) -> Option<String> {
    match e {
        LockError::HeldByOtherHost {
            host_id: Some(h), ..
        } => node_of_host(cfg, *h),
        _ => None,
    }
}

/// A lock refusal with the holder's node name when its host id is a known node:
/// `... is locked by host 1 — ... [host 1 is node n1]`.
pub fn name_holder(cfg: &Config, e: &LockError) -> Option<String> {
    let LockError::HeldByOtherHost {
        host_id: Some(h), ..
    } = e
    else {
        return None;
    };
    node_of_host(cfg, *h).map(|n| format!("{e} [host {h} is node {n}]"))
}

fn held_by(e: &ActionError) -> Option<String> {
    match e {
        ActionError::HeldElsewhere { node, .. } => Some(node.clone()),
        _ => None,
    }
}

/// The node whose sanlock host id is `host_id` (this node or a configured peer).
pub fn node_of_host(cfg: &Config, host_id: u64) -> Option<String> {
    if cfg.cluster.host_id == host_id {
        Some(cfg.node_name())
    } else {
        cfg.cluster
            .peers
            .iter()
            .find(|p| p.host_id == host_id)
            .map(|p| p.name.clone())
    }
}

/// Test-only pause: `VMWARDEN_TEST_PAUSE_BEFORE_STEP=ACTION:STEP` makes the agent create
/// `STATE_DIR/paused-STEP` before STEP and wait (at most 120 s) until that file is removed, so a
/// test can break something at exactly that point. Never set it in production.
pub(crate) async fn pause_point(cfg: &Config, action: &str, step: &str) {
    let Ok(p) = std::env::var("VMWARDEN_TEST_PAUSE_BEFORE_STEP") else {
        return;
    };
    if p != format!("{action}:{step}") {
        return;
    }
    let flag = std::path::Path::new(&cfg.cluster.state_dir).join(format!("paused-{step}"));
    if std::fs::write(&flag, b"remove this file to continue\n").is_err() {
        return;
    }
    tracing::warn!(
        "VMWARDEN_TEST_PAUSE_BEFORE_STEP={p}: waiting for {} to go",
        flag.display()
    );
    let t0 = Instant::now();
    while flag.exists() && t0.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn state_refusal(vm: &str, node: &str, state: &DomState, want: &str) -> ActionError {
    ActionError::Refused(format!("{vm} is {state} on {node}; {want}"))
}
