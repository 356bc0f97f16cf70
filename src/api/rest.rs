//! The resource routes of the documented API (docs/api.md, docs/openapi.yaml):
//! `GET /v1/node`, `GET /v1/vms`, `GET /v1/vms/{vm}`, `POST /v1/vms/{vm}/{start,stop,restart,
//! migrate,resume,reset}`, `GET /v1/actions/{id}`. An action is answered at once (202) with its id;
//! its steps are followed from its journal. One action per VM at a time: a second gets 409
//! naming the first.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use crate::actions::journal::{self, Record};
use crate::actions::{ActionKind, ActionReport, ActionRequest, Engine};
use crate::api::server::{json_error, json_response, parse, Resp};
use crate::collect::{Outcome, Snapshot};

/// What may be asked of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Start,
    Stop,
    Restart,
    Migrate,
    Reset,
    Create,
    Grow,
    ActivateDisks,
    DeactivateDisks,
    Remove,
    Resume,
}

impl Verb {
    pub fn parse(s: &str) -> Option<Verb> {
        Some(match s {
            "start" => Verb::Start,
            "stop" => Verb::Stop,
            "restart" => Verb::Restart,
            "migrate" => Verb::Migrate,
            "reset" => Verb::Reset,
            "create" => Verb::Create,
            "grow" => Verb::Grow,
            "activate-disks" => Verb::ActivateDisks,
            "deactivate-disks" => Verb::DeactivateDisks,
            "remove" => Verb::Remove,
            "resume" => Verb::Resume,
            _ => return None,
        })
    }

    pub fn template(self) -> &'static str {
        match self {
            Verb::Start => "/v1/vms/{vm}/start",
            Verb::Stop => "/v1/vms/{vm}/stop",
            Verb::Restart => "/v1/vms/{vm}/restart",
            Verb::Migrate => "/v1/vms/{vm}/migrate",
            Verb::Reset => "/v1/vms/{vm}/reset",
            Verb::Create => "/v1/vms/{vm}/create",
            Verb::Grow => "/v1/vms/{vm}/grow",
            Verb::ActivateDisks => "/v1/vms/{vm}/activate-disks",
            Verb::DeactivateDisks => "/v1/vms/{vm}/deactivate-disks",
            Verb::Remove => "/v1/vms/{vm}/remove",
            Verb::Resume => "/v1/vms/{vm}/resume",
        }
    }

    fn kind(self) -> Option<ActionKind> {
        Some(match self {
            Verb::Start => ActionKind::Start,
            Verb::Stop => ActionKind::Stop,
            Verb::Restart => ActionKind::Restart,
            Verb::Migrate => ActionKind::Migrate,
            Verb::Create => ActionKind::Create,
            Verb::Grow => ActionKind::Grow,
            Verb::ActivateDisks => ActionKind::ActivateDisks,
            Verb::DeactivateDisks => ActionKind::DeactivateDisks,
            Verb::Remove => ActionKind::Remove,
            Verb::Resume => ActionKind::Resume,
            Verb::Reset => return None,
        })
    }
}

/// The body of start, stop, restart and reset (may be empty).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainBody {
    #[serde(default)]
    pub dry_run: bool,
}

/// The body of migrate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateBody {
    pub to: String,
    /// Refuse unless the VM is stopped (a cold migration moves its definition only).
    #[serde(default)]
    pub cold: bool,
    #[serde(default)]
    pub dry_run: bool,
}

/// The body of create.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub size: String,
    #[serde(default)]
    pub vg: Option<String>,
    /// An image file on the agent's node.
    #[serde(default)]
    pub from_image: Option<String>,
    /// The domain XML.
    pub xml: String,
    #[serde(default)]
    pub dry_run: bool,
}

/// The body of grow.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrowBody {
    pub disk: String,
    pub size: String,
    #[serde(default)]
    pub dry_run: bool,
}

/// The body of remove (may be empty).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveBody {
    #[serde(default)]
    pub keep_disks: bool,
    #[serde(default)]
    pub dry_run: bool,
}

/// `202 Accepted`: the action runs; follow it at `href`.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub id: String,
    pub action: String,
    pub vm: String,
    pub node: String,
    pub state: &'static str,
    pub href: String,
}

/// One step as the journal tells it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepState {
    pub step: String,
    /// running, done, failed, undoing, undone, undo_failed
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/actions/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct ActionStatus {
    pub id: String,
    pub action: String,
    pub vm: String,
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// running (this agent is at it), recovering (an unfinished journal recovery owns), finished.
    pub state: &'static str,
    /// completed, refused, rolled_back, failed, incomplete (once finished).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    pub message: String,
    /// The plan's steps in order.
    pub plan: Vec<String>,
    pub steps: Vec<StepState>,
    /// Once finished, for an action this agent ran since it started: its full report (step
    /// durations, rollback, notes, the node holding the lock of a refused start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<ActionReport>,
}

struct Tracked {
    vm: String,
    action: String,
    report: Option<ActionReport>,
}

/// Actions started through the API in this process: which VM each one holds, and the reports of
/// the last `KEEP` (refusals have no journal: their report is their only record).
#[derive(Default)]
pub struct ActionTable {
    by_id: HashMap<String, Tracked>,
    order: VecDeque<String>,
    inflight: HashMap<String, String>,
}

const KEEP: usize = 200;

impl ActionTable {
    fn running_on(&self, vm: &str) -> Option<&String> {
        self.inflight.get(vm)
    }
}

/// The journal of an action still in `journal/` for `vm`, with its id.
fn unfinished_of(state_dir: &str, vm: &str) -> Option<(String, journal::ReadJournal)> {
    let p = journal::journal_dir(state_dir).join(format!("{vm}.json"));
    let j = journal::read(&p).ok()?;
    match j.header() {
        Some(Record::Header { id, .. }) => Some((id.clone(), j)),
        _ => None,
    }
}

/// Start an action (or plan it, or reset the watchdog) on `vm`.
pub(crate) async fn act(
    engine: &Arc<Engine>,
    table: &Arc<Mutex<ActionTable>>,
    watchdog: Option<&Arc<crate::watchdog::Watchdog>>,
    vm: &str,
    verb: Verb,
    body: &[u8],
    audit: &mut crate::api::server::Audit,
) -> Resp {
    let empty = body.iter().all(u8::is_ascii_whitespace);
    use crate::actions::lifecycle::Params;
    let mut lifecycle = Params::default();
    let (dry_run, to, cold) = match verb {
        Verb::Migrate => match parse::<MigrateBody>(body) {
            Ok(b) => (b.dry_run, Some(b.to), b.cold),
            Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
        },
        Verb::Create => match parse::<CreateBody>(body) {
            Ok(b) => {
                lifecycle = Params {
                    size: Some(b.size),
                    vg: b.vg,
                    from_image: b.from_image,
                    xml: Some(b.xml),
                    ..Default::default()
                };
                (b.dry_run, None, false)
            }
            Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
        },
        Verb::Grow => match parse::<GrowBody>(body) {
            Ok(b) => {
                lifecycle = Params {
                    size: Some(b.size),
                    disk: Some(b.disk),
                    ..Default::default()
                };
                (b.dry_run, None, false)
            }
            Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
        },
        Verb::Remove if !empty => match parse::<RemoveBody>(body) {
            Ok(b) => {
                lifecycle.keep_disks = b.keep_disks;
                (b.dry_run, None, false)
            }
            Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
        },
        _ if empty => (false, None, false),
        _ => match parse::<PlainBody>(body) {
            Ok(b) => (b.dry_run, None, false),
            Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
        },
    };
    if let Some(to) = &to {
        if let Err(e) = crate::lock::validate_name(crate::lock::NameKind::Vm, to) {
            return json_error(StatusCode::BAD_REQUEST, format!("to: {e}"));
        }
    }
    let Some(kind) = verb.kind() else {
        // reset: the watchdog forgets the VM's attempts and give-up.
        let Some(w) = watchdog else {
            return json_error(
                StatusCode::CONFLICT,
                "the watchdog does not run on this agent ([watchdog] enabled = false, or libvirt disabled)".into(),
            );
        };
        if dry_run {
            audit.result = Some("planned".into());
            return json_response(
                StatusCode::OK,
                serde_json::json!({"vm": vm, "result": "planned", "message": "the watchdog would forget this VM's restart attempts and give-up"}).to_string().into_bytes(),
            );
        }
        let msg = w.reset(vm);
        audit.result = Some("completed".into());
        return json_response(
            StatusCode::OK,
            serde_json::json!({"vm": vm, "result": "completed", "message": msg})
                .to_string()
                .into_bytes(),
        );
    };
    let req = ActionRequest {
        action: kind,
        vm: vm.to_string(),
        to,
        dry_run,
        lifecycle,
    };
    if cold {
        match engine.virsh().state(vm).await {
            Ok(st) if st.active() => {
                return json_error(
                    StatusCode::CONFLICT,
                    format!("{vm} runs on {}: a cold migration needs it stopped (`vmwarden ctl stop {vm}`), or leave out cold for a live one", engine.node),
                )
            }
            _ => {}
        }
    }
    if dry_run {
        let rep = engine.run(req).await;
        audit.result = Some(rep.result.clone());
        return match serde_json::to_vec(&rep) {
            Ok(j) => json_response(StatusCode::OK, j),
            Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
    }
    let id = {
        let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
        let running = t
            .running_on(vm)
            .cloned()
            .or_else(|| unfinished_of(&engine.cfg.cluster.state_dir, vm).map(|(id, _)| id));
        if let Some(other) = running {
            audit.result = Some("conflict".into());
            return json_error(
                StatusCode::CONFLICT,
                format!("{vm} already has an action running: {other} — follow it with GET /v1/actions/{other} (`vmwarden ctl` waits for it), then ask again"),
            );
        }
        if engine.is_busy(vm) {
            audit.result = Some("conflict".into());
            return json_error(
                StatusCode::CONFLICT,
                format!("{vm} is busy on this node (an action of the watchdog, a peer's lock step or recovery): ask again in a moment"),
            );
        }
        let id = crate::actions::new_action_id(vm, kind);
        t.inflight.insert(vm.to_string(), id.clone());
        t.by_id.insert(
            id.clone(),
            Tracked {
                vm: vm.to_string(),
                action: kind.as_str().to_string(),
                report: None,
            },
        );
        t.order.push_back(id.clone());
        while t.order.len() > KEEP {
            if let Some(old) = t.order.pop_front() {
                if t.by_id.get(&old).is_some_and(|x| x.report.is_some()) {
                    t.by_id.remove(&old);
                } else {
                    t.order.push_back(old);
                    break;
                }
            }
        }
        id
    };
    audit.action_id = Some(id.clone());
    audit.result = Some("accepted".into());
    let (engine2, table2, id2) = (engine.clone(), table.clone(), id.clone());
    tokio::spawn(async move {
        let vm = req.vm.clone();
        let rep = engine2
            .run_with_id(req, crate::actions::Origin::Operator, Some(id2.clone()))
            .await;
        tracing::info!(
            target: "vmwarden::audit",
            action_id = %id2,
            vm = %vm,
            result = %rep.result,
            "action finished"
        );
        let mut t = table2.lock().unwrap_or_else(|p| p.into_inner());
        t.inflight.remove(&vm);
        if let Some(x) = t.by_id.get_mut(&id2) {
            x.report = Some(rep);
        }
    });
    let acc = Accepted {
        href: format!("/v1/actions/{id}"),
        id,
        action: kind.as_str().into(),
        vm: vm.into(),
        node: engine.node.clone(),
        state: "running",
    };
    match serde_json::to_vec(&acc) {
        Ok(j) => json_response(StatusCode::ACCEPTED, j),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Steps, result and message from a journal's records.
fn from_journal(j: &journal::ReadJournal, state: &'static str) -> Option<ActionStatus> {
    let Some(Record::Header {
        id,
        action,
        vm,
        node,
        to,
        steps,
        ..
    }) = j.header()
    else {
        return None;
    };
    let mut out = ActionStatus {
        id: id.clone(),
        action: action.clone(),
        vm: vm.clone(),
        node: node.clone(),
        to: to.clone(),
        state,
        result: None,
        message: String::new(),
        plan: steps.clone(),
        steps: Vec::new(),
        report: None,
    };
    let mut set = |step: &str, st: &'static str, error: Option<String>| match out
        .steps
        .iter_mut()
        .rev()
        .find(|s| s.step == step)
    {
        Some(s) if st != "undoing" => {
            s.state = st;
            s.error = error;
        }
        _ => out.steps.push(StepState {
            step: step.to_string(),
            state: st,
            error,
        }),
    };
    let mut end = None;
    for r in &j.records {
        match r {
            Record::Begin { step } => set(step, "running", None),
            Record::Done { step } => set(step, "done", None),
            Record::Failed { step, error } => set(step, "failed", Some(error.clone())),
            Record::Undo { step } => set(&format!("undo {step}"), "running", None),
            Record::Undone { step, error } => set(
                &format!("undo {step}"),
                if error.is_some() { "failed" } else { "done" },
                error.clone(),
            ),
            Record::Incomplete { reason } => end = Some(("incomplete".to_string(), reason.clone())),
            Record::Recovery { observed, decision } => {
                end = Some((
                    "incomplete".to_string(),
                    format!("recovery: {observed}: {decision}"),
                ))
            }
            Record::End { result, message } => end = Some((result.clone(), message.clone())),
            Record::Header { .. } => {}
        }
    }
    if let Some((result, message)) = end {
        out.message = message;
        if state == "finished" {
            out.result = Some(result);
        }
    }
    Some(out)
}

fn report_status(id: &str, rep: &ActionReport, journal: Option<ActionStatus>) -> ActionStatus {
    let mut steps: Vec<StepState> = rep
        .steps
        .iter()
        .map(|s| StepState {
            step: s.step.clone(),
            state: if s.ok { "done" } else { "failed" },
            error: s.error.clone(),
        })
        .collect();
    steps.extend(rep.rollback.iter().map(|s| StepState {
        step: format!("undo {}", s.step),
        state: if s.ok { "done" } else { "failed" },
        error: s.error.clone(),
    }));
    ActionStatus {
        id: id.to_string(),
        action: rep.action.clone(),
        vm: rep.vm.clone(),
        node: rep.node.clone(),
        to: journal.as_ref().and_then(|j| j.to.clone()),
        state: "finished",
        result: Some(rep.result.clone()),
        message: rep.message.clone(),
        plan: journal
            .map(|j| j.plan)
            .unwrap_or_else(|| rep.plan.iter().map(|p| p.step.clone()).collect()),
        steps,
        report: Some(rep.clone()),
    }
}

/// The finished journals in `done/` of `vm`'s actions, newest first.
fn done_journals(state_dir: &str) -> Vec<PathBuf> {
    let dir = journal::journal_dir(state_dir).join("done");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v.reverse();
    v
}

fn header_id(p: &Path) -> Option<String> {
    match journal::read(p).ok()?.header() {
        Some(Record::Header { id, .. }) => Some(id.clone()),
        _ => None,
    }
}

/// `GET /v1/actions/{id}`.
pub fn action_status(engine: &Engine, table: &Mutex<ActionTable>, id: &str) -> Resp {
    let state_dir = &engine.cfg.cluster.state_dir;
    let tracked = {
        let t = table.lock().unwrap_or_else(|p| p.into_inner());
        t.by_id
            .get(id)
            .map(|x| (x.vm.clone(), x.action.clone(), x.report.clone()))
    };
    let status = match tracked {
        Some((vm, action, None)) => Some(
            unfinished_of(state_dir, &vm)
                .filter(|(jid, _)| jid == id)
                .and_then(|(_, j)| from_journal(&j, "running"))
                .unwrap_or(ActionStatus {
                    id: id.to_string(),
                    action,
                    vm,
                    node: engine.node.clone(),
                    to: None,
                    state: "running",
                    result: None,
                    message: "planning".into(),
                    plan: Vec::new(),
                    steps: Vec::new(),
                    report: None,
                }),
        ),
        Some((vm, _, Some(rep))) => {
            let j = done_journals(state_dir)
                .into_iter()
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(&format!("-{vm}.json")))
                })
                .find(|p| header_id(p).as_deref() == Some(id))
                .and_then(|p| journal::read(&p).ok())
                .and_then(|j| from_journal(&j, "finished"));
            Some(report_status(id, &rep, j))
        }
        None => {
            // Not started by this process (before a restart, by the watchdog, or by `ctl` over
            // the synchronous route): the journals.
            journal::unfinished(state_dir)
                .iter()
                .filter_map(|p| journal::read(p).ok())
                .find(|j| matches!(j.header(), Some(Record::Header { id: h, .. }) if h == id))
                .and_then(|j| {
                    let vm = match j.header() {
                        Some(Record::Header { vm, .. }) => vm.clone(),
                        _ => String::new(),
                    };
                    from_journal(
                        &j,
                        if engine.is_busy(&vm) {
                            "running"
                        } else {
                            "recovering"
                        },
                    )
                })
                .or_else(|| {
                    done_journals(state_dir)
                        .iter()
                        .find(|p| header_id(p).as_deref() == Some(id))
                        .and_then(|p| journal::read(p).ok())
                        .and_then(|j| from_journal(&j, "finished"))
                })
        }
    };
    match status {
        Some(s) => match serde_json::to_vec(&s) {
            Ok(j) => json_response(StatusCode::OK, j),
            Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        None => json_error(
            StatusCode::NOT_FOUND,
            format!("no action {id:?} on this node (the last 200 finished journals are kept)"),
        ),
    }
}

/// One VM as this node sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VmInfo {
    pub name: String,
    pub node: String,
    /// libvirt's state word (running, paused, shutoff, ...) and its reason.
    pub state: String,
    pub reason: String,
    /// A qemu process exists for it here.
    pub active: bool,
    /// The lock this node holds on it: exclusive, shared, none, unknown (several LVs: the
    /// weakest), or "" when it has no lockable disk.
    pub lock: String,
    /// The watchdog's intent (run / stop) and status word (Ganeti's), when it runs.
    #[serde(default)]
    pub intent: Option<String>,
    #[serde(default)]
    pub status_word: Option<String>,
    /// The action running on it through the API, if any.
    #[serde(default)]
    pub action: Option<String>,
}

fn lock_word(map: &crate::node::NodeMap, d: &crate::node::DomainMap) -> String {
    if let Some(l) = &map.leases {
        return match l.mode(&d.name) {
            Some(m) if m.as_str() == "ex" => "exclusive".into(),
            Some(_) => "shared".into(),
            None if !matches!(l.sanlock, crate::node::Observed::No(_)) => "none".into(),
            None => "unknown".into(),
        };
    }
    let modes: Vec<&'static str> = d
        .disks
        .iter()
        .filter_map(|k| k.lv)
        .filter_map(|i| map.lvs.get(i))
        .map(|lv| match lv.lock.as_str() {
            "ex" => "exclusive",
            "sh" => "shared",
            "un" | "none" => "none",
            _ => "unknown",
        })
        .collect();
    ["unknown", "none", "shared", "exclusive"]
        .iter()
        .find(|w| modes.contains(w))
        .map(|w| w.to_string())
        .unwrap_or_default()
}

/// `GET /v1/vms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmListReply {
    pub node: String,
    pub vms: Vec<VmInfo>,
}

pub fn vms(
    snap: &Snapshot,
    cfg: &crate::config::Config,
    node: &str,
    watchdog: Option<&Arc<crate::watchdog::Watchdog>>,
    table: &Mutex<ActionTable>,
) -> Result<Vec<VmInfo>, String> {
    match &snap.libvirt.outcome {
        Outcome::Ok(_) => {}
        Outcome::Disabled => {
            return Err("libvirt is disabled on this agent ([libvirt] enabled = false)".into())
        }
        Outcome::Absent(why) | Outcome::Failed(why) => {
            return Err(format!("libvirt could not be read: {why}"))
        }
    }
    let map = crate::node::NodeMap::build_with_leases(snap, cfg.lease_lockspace().as_deref());
    let views = watchdog.map(|w| w.views()).unwrap_or_default();
    let t = table.lock().unwrap_or_else(|p| p.into_inner());
    Ok(map
        .domains
        .iter()
        .map(|d| {
            let v = views.iter().find(|v| v.vm == d.name);
            VmInfo {
                name: d.name.clone(),
                node: node.to_string(),
                state: d.state.name().into_owned(),
                reason: d.state.reason().into_owned(),
                active: d.state.is_active(),
                lock: lock_word(&map, d),
                intent: v
                    .and_then(|v| v.intent)
                    .and_then(|i| serde_json::to_value(i).ok())
                    .and_then(|i| i.as_str().map(str::to_string)),
                status_word: v.map(|v| v.status_word.to_string()),
                action: t.running_on(&d.name).cloned(),
            }
        })
        .collect())
}

/// `GET /v1/node`: from the one judgment of this collection (peers asked included).
pub fn node_status(
    obs: &crate::collect::Observation,
    cfg: &crate::config::Config,
    node: &str,
    watchdog: Option<&Arc<crate::watchdog::Watchdog>>,
    table: &Mutex<ActionTable>,
) -> serde_json::Value {
    fn outcome<T>(o: &Outcome<T>) -> serde_json::Value {
        match o {
            Outcome::Ok(_) => serde_json::json!({"status": "ok"}),
            Outcome::Absent(w) => serde_json::json!({"status": "absent", "detail": w}),
            Outcome::Failed(w) => serde_json::json!({"status": "failed", "detail": w}),
            Outcome::Disabled => serde_json::json!({"status": "disabled"}),
        }
    }
    let snap = &obs.snapshot;
    let report = &obs.invariants;
    let running: Vec<String> = {
        let t = table.lock().unwrap_or_else(|p| p.into_inner());
        t.inflight.values().cloned().collect()
    };
    serde_json::json!({
        "node": node,
        "version": env!("CARGO_PKG_VERSION"),
        "collectors": {
            "drbd": outcome(&snap.drbd.outcome),
            "lvm": outcome(&snap.lvm.outcome),
            "sanlock": outcome(&snap.sanlock.outcome),
            "libvirt": outcome(&snap.libvirt.outcome),
        },
        "violations": report.violations.iter().map(|v| serde_json::json!({
            "invariant": v.invariant, "vm": v.domain, "subject": v.subject, "message": v.message,
        })).collect::<Vec<_>>(),
        "not_checked": report.not_checked.iter().map(|n| serde_json::json!({
            "invariant": n.invariant, "why": n.why,
        })).collect::<Vec<_>>(),
        "watchdog": watchdog.map(|w| serde_json::json!({"vms": w.views()})),
        "actions_running": running,
        "peers": cfg.cluster.peers.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        "peers_up": obs.peers.iter().map(|p| serde_json::json!({
            "peer": p.node, "up": p.active.is_ok(), "error": p.active.as_ref().err(),
        })).collect::<Vec<_>>(),
    })
}

/// A path segment percent-decoded; `None` when the result is not UTF-8 or the escape is bad.
pub fn decode_segment(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments() {
        assert_eq!(decode_segment("vm1").as_deref(), Some("vm1"));
        assert_eq!(decode_segment("a%20b").as_deref(), Some("a b"));
        assert_eq!(decode_segment("%2e%2e").as_deref(), Some(".."));
        assert_eq!(decode_segment("%ff"), None);
        assert_eq!(decode_segment("%g1"), None);
        assert_eq!(decode_segment("%"), None);
    }

    #[test]
    fn journal_steps() {
        let j = journal::ReadJournal {
            path: "x".into(),
            bad_lines: 0,
            complete_lines: 3,
            records: vec![
                Record::Header {
                    id: "vm1-start-1".into(),
                    action: "start".into(),
                    vm: "vm1".into(),
                    node: "n1".into(),
                    to: None,
                    live: false,
                    started_unix: 1,
                    steps: vec![
                        "start_preflight".into(),
                        "lock_exclusive".into(),
                        "virsh_start".into(),
                    ],
                    disks: vec![],
                },
                Record::Begin {
                    step: "start_preflight".into(),
                },
                Record::Done {
                    step: "start_preflight".into(),
                },
                Record::Begin {
                    step: "lock_exclusive".into(),
                },
                Record::Done {
                    step: "lock_exclusive".into(),
                },
                Record::Begin {
                    step: "virsh_start".into(),
                },
                Record::Failed {
                    step: "virsh_start".into(),
                    error: "boom".into(),
                },
                Record::Undo {
                    step: "lock_exclusive".into(),
                },
                Record::Undone {
                    step: "lock_exclusive".into(),
                    error: None,
                },
                Record::End {
                    result: "rolled_back".into(),
                    message: "virsh start failed".into(),
                },
            ],
        };
        let s = from_journal(&j, "finished").unwrap();
        let got: Vec<(&str, &str)> = s.steps.iter().map(|x| (x.step.as_str(), x.state)).collect();
        assert_eq!(
            got,
            [
                ("start_preflight", "done"),
                ("lock_exclusive", "done"),
                ("virsh_start", "failed"),
                ("undo lock_exclusive", "done")
            ]
        );
        assert_eq!(s.result.as_deref(), Some("rolled_back"));
        assert_eq!(s.plan.len(), 3);
        // While running: no result yet.
        let r = from_journal(&j, "running").unwrap();
        assert!(r.result.is_none());
    }
}
