//! The steps of each action: what each runs, what undoes it, and which are commits (after them
//! the action can only be finished forward).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::outcome::{decide_migration_commit, Commit, SourceAfter};
use super::{state_refusal, ActionError, ActionKind, ActionRequest, Ctx};
use crate::api::peer::PeerOp;
use crate::config::Config;
use crate::lock::{Held, LockOp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// start: defined here, not running, something to lock, not running on a peer.
    StartPreflight,
    LockExclusive,
    VirshStart,
    /// sanlock backend: tie the lease to qemu's pid so it cannot outlive the VM.
    AttachLease,
    /// stop: ACPI power button.
    AcpiShutdown,
    /// wait for the guest to power off, destroy it after the timeout (commit).
    WaitOrDestroy,
    ReleaseLock,
    /// migrate: runs here, lock exclusive here, target reachable, sees the disks, DRBD UpToDate.
    MigratePreflight,
    SourceToShared,
    TargetAcquireShared,
    /// `virsh migrate --live` (commit).
    LibvirtMigrate,
    SourceRelease,
    TargetToExclusive,
    /// stopped VM: check, then move its definition (`virsh migrate --offline`, commit).
    ColdPreflight,
    OfflineMigrate,
    /// resume: paused here (I/O error or user), lock exclusive here, storage path healthy.
    ResumePreflight,
    /// `virsh resume`.
    VirshResume,
    /// create, grow, disks, remove (lifecycle/).
    Life(super::lifecycle::LStep),
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::StartPreflight => "start_preflight",
            Step::LockExclusive => "lock_exclusive",
            Step::VirshStart => "virsh_start",
            Step::AttachLease => "attach_lease",
            Step::AcpiShutdown => "acpi_shutdown",
            Step::WaitOrDestroy => "wait_or_destroy",
            Step::ReleaseLock => "release_lock",
            Step::MigratePreflight => "preflight",
            Step::SourceToShared => "source_to_shared",
            Step::TargetAcquireShared => "target_acquire_shared",
            Step::LibvirtMigrate => "libvirt_migrate",
            Step::SourceRelease => "source_release",
            Step::TargetToExclusive => "target_to_exclusive",
            Step::ColdPreflight => "cold_preflight",
            Step::OfflineMigrate => "libvirt_migrate_offline",
            Step::ResumePreflight => "resume_preflight",
            Step::VirshResume => "virsh_resume",
            Step::Life(l) => l.name(),
        }
    }

    /// Once done, the action cannot be undone past this step.
    pub fn commits(self) -> bool {
        if let Step::Life(l) = self {
            return l.commits();
        }
        matches!(
            self,
            Step::WaitOrDestroy | Step::LibvirtMigrate | Step::OfflineMigrate
        )
    }

    /// After a commit these must succeed (retried; else the journal stays for recovery).
    pub fn forward_only(self) -> bool {
        if let Step::Life(l) = self {
            return l.forward_only();
        }
        matches!(
            self,
            Step::ReleaseLock | Step::SourceRelease | Step::TargetToExclusive
        )
    }

    /// Whether the step changes anything (the preflights only look).
    pub fn changes(self) -> bool {
        if let Step::Life(l) = self {
            return l.changes();
        }
        !matches!(
            self,
            Step::StartPreflight
                | Step::MigratePreflight
                | Step::ColdPreflight
                | Step::ResumePreflight
        )
    }

    /// What stays of a step that changed something and has no undo, for the operator.
    pub fn cannot_undo(self) -> &'static str {
        match self {
            Step::AcpiShutdown => {
                "the guest was asked to power off (ACPI) and may still do so; its lock is released when it does"
            }
            Step::AttachLease => "the lease was tied to qemu's process",
            Step::VirshResume => "the guest was resumed",
            Step::Life(l) => l.cannot_undo(),
            _ => "it has no undo",
        }
    }

    pub fn has_undo(self) -> bool {
        if let Step::Life(l) = self {
            return l.has_undo();
        }
        matches!(
            self,
            Step::LockExclusive
                | Step::VirshStart
                | Step::SourceToShared
                | Step::TargetAcquireShared
        )
    }

    fn locks<'c>(ctx: &'c Ctx<'_>) -> Result<&'c super::VmLocks, ActionError> {
        ctx.locks.as_ref().ok_or_else(|| {
            ActionError::Refused(format!(
                "{} has no disk vmwarden can lock (lock backend {:?}; disks {:?}): it would run unprotected — put its disks on LVs of the shared VG, or use the sanlock backend with a lease for it",
                ctx.vm, ctx.engine.cfg.lock.backend, ctx.disks
            ))
        })
    }

    fn peer<'c>(ctx: &'c Ctx<'_>) -> Result<&'c crate::config::Peer, ActionError> {
        ctx.peer
            .as_ref()
            .ok_or_else(|| ActionError::Refused("no migration target".into()))
    }

    pub(crate) async fn run(self, ctx: &Ctx<'_>) -> Result<(), ActionError> {
        let e = ctx.engine;
        let virsh = e.virsh();
        let vm = ctx.vm.as_str();
        match self {
            Step::StartPreflight => {
                // The lock decides; asking the peers gives a friendlier refusal, and finds a VM
                // already running on several nodes (started behind vmwarden's back), which no
                // start may touch: the refusal names every node it runs on. Asked while libvirt
                // answers here: a watchdog restart waits for both.
                let peers = async {
                    let mut active = Vec::new();
                    let mut maintenance = None;
                    for p in &e.cfg.cluster.peers {
                        if let Ok(r) = e
                            .call_peer(p, PeerOp::Status, vm, &ctx.disks, &ctx.id)
                            .await
                        {
                            // Disks activated for maintenance there: the lock refuses the
                            // start; the marker says why.
                            if let Some(m) = r.maintenance {
                                maintenance.get_or_insert((p.name.clone(), m));
                            }
                            if r.active {
                                active.push((p.name.clone(), r.state));
                            }
                        }
                    }
                    (active, maintenance)
                };
                let (st, (elsewhere, maintenance)) = tokio::join!(virsh.state(vm), peers);
                let st = st?;
                if !st.defined() {
                    return Err(ActionError::Refused(format!(
                        "{vm} is not defined on {} (`virsh list --all`)",
                        e.node
                    )));
                }
                let mut running_on = Vec::new();
                if st.active() {
                    running_on.push(e.node.clone());
                }
                running_on.extend(elsewhere.iter().map(|(n, _)| n.clone()));
                if let Some(v) = crate::invariants::running_on_several(vm, &running_on) {
                    let node = running_on
                        .iter()
                        .find(|n| **n != e.node)
                        .cloned()
                        .unwrap_or_default();
                    return Err(ActionError::HeldElsewhere {
                        node,
                        message: format!("refusing to start {vm}: {} [{}]", v.message, v.invariant),
                    });
                }
                if st.active() {
                    return Err(state_refusal(vm, &e.node, &st, "nothing to start"));
                }
                Self::locks(ctx)?;
                // Disks activated for maintenance here: the lock is ours, so only the marker
                // can refuse (a peer's start is refused by the lock, worded below).
                if let Some(m) = super::lifecycle::maintenance_refusal(&e.cfg.cluster.state_dir, vm)
                {
                    return Err(ActionError::Refused(m));
                }
                if let Some((node, message)) = maintenance {
                    return Err(ActionError::HeldElsewhere { node, message });
                }
                if let Some((node, state)) = elsewhere.into_iter().next() {
                    return Err(ActionError::HeldElsewhere {
                        message: format!(
                            "{vm} already runs on node {node} ({state}); stop it there or migrate it"
                        ),
                        node,
                    });
                }
                Ok(())
            }
            Step::LockExclusive => Ok(Self::locks(ctx)?.apply(LockOp::AcquireExclusive).await?),
            Step::VirshStart => {
                // Intent "should run" first, in the definition the start copies to the live XML:
                // the watchdog brings it back if it dies. Not recorded is not fatal here (the
                // watchdog then leaves the VM alone, the safe side).
                if ctx.origin != super::Origin::Watchdog {
                    let intent = crate::watchdog::intent::Intent::new(
                        crate::watchdog::intent::Want::Run,
                        "ctl",
                    );
                    if let Err(err) =
                        crate::watchdog::intent::record(&virsh, vm, &intent, false).await
                    {
                        tracing::warn!(vm, "could not record the intent to run: {err}");
                    }
                }
                virsh.run(&["start", vm], virsh.timeout).await?;
                Ok(())
            }
            Step::AttachLease => {
                let locks = Self::locks(ctx)?;
                match qemu_pid(&e.cfg, vm) {
                    Some(pid) => Ok(locks.attach_vm(pid).await?),
                    None if e.cfg.lock.backend == "sanlock" => Err(ActionError::Refused(format!(
                        "{vm} started but its qemu pid file is missing in {}",
                        e.cfg.actions.qemu_pid_dir
                    ))),
                    None => Ok(()),
                }
            }
            Step::AcpiShutdown => {
                let st = virsh.state(vm).await?;
                // Intent "should be stopped" before anything stops: the watchdog must never take
                // this stop for a crash. Not recorded, not stopped.
                let intent = crate::watchdog::intent::Intent::new(
                    crate::watchdog::intent::Want::Stop,
                    "ctl",
                );
                if st.defined() {
                    crate::watchdog::intent::record(&virsh, vm, &intent, st.active()).await?;
                }
                if !st.active() {
                    return Ok(());
                }
                match virsh.run(&["shutdown", vm], virsh.timeout).await {
                    Ok(_) => Ok(()),
                    // It stopped meanwhile: what we wanted.
                    Err(_) if !virsh.state(vm).await?.active() => Ok(()),
                    Err(err) => Err(err.into()),
                }
            }
            Step::WaitOrDestroy => {
                let limit = Duration::from_secs_f64(e.cfg.actions.shutdown_timeout_seconds);
                let t0 = Instant::now();
                while t0.elapsed() < limit {
                    if !virsh.state(vm).await?.active() {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                tracing::warn!(
                    vm,
                    "did not power off within {limit:?} after ACPI shutdown: destroying it"
                );
                if let Err(err) = virsh.run(&["destroy", vm], virsh.timeout).await {
                    if virsh.state(vm).await?.active() {
                        return Err(err.into());
                    }
                }
                // destroy returns once qemu is gone; make sure before the lock goes.
                let st = virsh.state(vm).await?;
                if st.active() {
                    return Err(state_refusal(
                        vm,
                        &e.node,
                        &st,
                        "still running after destroy",
                    ));
                }
                Ok(())
            }
            Step::ReleaseLock | Step::SourceRelease => {
                // The migration's commit has just seen the VM gone from here (and the hook
                // refuses to start it on the shared lock meanwhile): no second look needed.
                let seen_gone = self == Step::SourceRelease
                    && ctx
                        .gone_after_migrate
                        .load(std::sync::atomic::Ordering::SeqCst);
                if !seen_gone {
                    let st = virsh.state(vm).await?;
                    if st.active() {
                        return Err(state_refusal(vm, &e.node, &st, "its lock must stay"));
                    }
                }
                Ok(Self::locks(ctx)?.apply(LockOp::Release).await?)
            }
            Step::MigratePreflight => {
                let peer = Self::peer(ctx)?;
                // The first step: the state read while planning, under this action's busy mark,
                // moments ago.
                let st = &ctx.state;
                if st.state != "running" {
                    return Err(state_refusal(
                        vm,
                        &e.node,
                        st,
                        "only a running VM can be live-migrated (a stopped one moves with a cold migration)",
                    ));
                }
                let locks = Self::locks(ctx)?;
                // Three independent reads — the lock here, the VM on the target, the target's
                // hypervisor (each a few tens of ms: sanlock/lvm, a peer call, `virsh` on both
                // nodes) — asked at once and judged in this order. Only the compatibility check
                // writes anything: notes in the report.
                let status_req = crate::api::peer::PeerRequest {
                    op: PeerOp::Status,
                    vm: vm.to_string(),
                    disks: ctx.disks.clone(),
                    action_id: ctx.id.clone(),
                    platform: None,
                    action: None,
                    // The target judges the DRBD under the disks there (refused below).
                    drbd: true,
                };
                let (held, status, compat) = tokio::join!(
                    locks.mode(),
                    e.call_peer_with(peer, &status_req),
                    super::compat::preflight(ctx, peer),
                );
                let held = held?;
                if held != Held::Exclusive {
                    return Err(ActionError::Refused(format!(
                        "{vm} runs here but its lock ({}) is {} here, not exclusive: fix that first (`vmwarden check`)",
                        locks.targets(),
                        held.as_str()
                    )));
                }
                let r = status?;
                if r.active {
                    return Err(ActionError::Refused(format!(
                        "{vm} is already active on {} ({})",
                        peer.name, r.state
                    )));
                }
                if !r.missing_disks.is_empty() {
                    return Err(ActionError::Refused(format!(
                        "{} does not see {vm}'s disks {:?}",
                        peer.name, r.missing_disks
                    )));
                }
                if !r.drbd_problems.is_empty() {
                    return Err(ActionError::Refused(format!(
                        "DRBD under {vm}'s disks cannot serve it on {}: {}",
                        peer.name,
                        r.drbd_problems.join("; ")
                    )));
                }
                // Can the target's hypervisor run this guest (CPU, machine type)?
                compat
            }
            Step::SourceToShared => Ok(Self::locks(ctx)?.apply(LockOp::ConvertToShared).await?),
            Step::TargetAcquireShared => {
                e.call_peer(
                    Self::peer(ctx)?,
                    PeerOp::AcquireShared,
                    vm,
                    &ctx.disks,
                    &ctx.id,
                )
                .await?;
                Ok(())
            }
            Step::LibvirtMigrate => {
                let peer = Self::peer(ctx)?;
                let args = migrate_args(&e.cfg, peer, vm, true);
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                let limit = Duration::from_secs_f64(e.cfg.actions.migrate_timeout_seconds);
                let migrated = virsh.run(&a, limit).await;
                super::pause_point(&e.cfg, "migrate", "libvirt_migrate.commit").await;
                // The commit is what libvirt did: where the domain is now on this node. The
                // target is asked only when that alone would roll back (is it active there
                // too?), and its silence never turns a migration that happened into a rollback.
                let (state, active) = e.active_here(vm).await?;
                let here = SourceAfter::from_state(&state, active);
                let virsh_error = migrated.as_ref().err().map(|e| e.to_string());
                let target_active = if here == SourceAfter::Gone || virsh_error.is_none() {
                    None
                } else {
                    e.call_peer(peer, PeerOp::Status, vm, &ctx.disks, &ctx.id)
                        .await
                        .ok()
                        .map(|r| r.active)
                };
                match decide_migration_commit(vm, virsh_error.as_deref(), &here, target_active) {
                    Commit::Committed => {
                        ctx.gone_after_migrate
                            .store(true, std::sync::atomic::Ordering::SeqCst);
                        if let Some(err) = &virsh_error {
                            tracing::warn!(
                                vm,
                                "`virsh migrate` failed ({err}) but {vm} no longer runs here ({state}): the migration happened; going forward"
                            );
                        }
                        Ok(())
                    }
                    Commit::NotMigrated(err) => Err(ActionError::Refused(format!(
                        "{err} ({vm} still {state} on {})",
                        e.node
                    ))),
                    Commit::Unsettled(why) => Err(ActionError::Unsettled(why)),
                }
            }
            Step::TargetToExclusive => {
                e.call_peer(
                    Self::peer(ctx)?,
                    PeerOp::ConvertToExclusive,
                    vm,
                    &ctx.disks,
                    &ctx.id,
                )
                .await?;
                Ok(())
            }
            Step::ColdPreflight => {
                let peer = Self::peer(ctx)?;
                let st = virsh.state(vm).await?;
                if !st.defined() || st.active() {
                    return Err(state_refusal(
                        vm,
                        &e.node,
                        &st,
                        "a cold migration needs a VM defined and stopped here",
                    ));
                }
                let r = e
                    .call_peer(peer, PeerOp::Status, vm, &ctx.disks, &ctx.id)
                    .await?;
                if r.state != "undefined" {
                    return Err(ActionError::Refused(format!(
                        "{vm} is already defined on {} ({})",
                        peer.name, r.state
                    )));
                }
                if !r.missing_disks.is_empty() {
                    return Err(ActionError::Refused(format!(
                        "{} does not see {vm}'s disks {:?}",
                        peer.name, r.missing_disks
                    )));
                }
                Ok(())
            }
            Step::OfflineMigrate => {
                let args = migrate_args(&e.cfg, Self::peer(ctx)?, vm, false);
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                virsh.run(&a, virsh.timeout).await?;
                Ok(())
            }
            Step::ResumePreflight => {
                let st = virsh.state(vm).await?;
                // Only a guest frozen by an I/O error or by a user: a pause of a migration, a
                // save or a snapshot belongs to that operation.
                if st.state != "paused" || !matches!(st.reason.as_str(), "I/O error" | "user") {
                    return Err(state_refusal(
                        vm,
                        &e.node,
                        &st,
                        "only a VM paused on an I/O error or by a user is resumed",
                    ));
                }
                let locks = Self::locks(ctx)?;
                let held = locks.mode().await?;
                if held != Held::Exclusive {
                    return Err(ActionError::Refused(format!(
                        "{vm} is paused here but its lock ({}) is {} here, not exclusive: never resumed without it (another node may run {vm}; check with `vmwarden ctl status {vm}`)",
                        locks.targets(),
                        held.as_str()
                    )));
                }
                // The same judgment as the watchdog's, on a collection of its own.
                let collector = crate::collect::Collector::new(e.cfg.clone());
                let snap = collector.collect().await;
                let map = crate::node::NodeMap::build_with_leases(
                    &snap,
                    e.cfg.lease_lockspace().as_deref(),
                );
                match crate::watchdog::storage::judge(&map, vm) {
                    crate::watchdog::storage::PathHealth::Healthy => Ok(()),
                    crate::watchdog::storage::PathHealth::Waiting(why) => {
                        Err(ActionError::Refused(format!(
                            "{vm}'s storage path is not healthy yet: {}",
                            why.join("; ")
                        )))
                    }
                    crate::watchdog::storage::PathHealth::LockNotHeld(why) => {
                        Err(ActionError::Refused(format!(
                            "{vm} is never resumed without its lock exclusive here: {why}"
                        )))
                    }
                }
            }
            Step::VirshResume => {
                virsh.run(&["resume", vm], virsh.timeout).await?;
                Ok(())
            }
            Step::Life(l) => l.run(ctx).await,
        }
    }

    pub(crate) async fn undo(self, ctx: &Ctx<'_>) -> Result<(), ActionError> {
        let e = ctx.engine;
        let vm = ctx.vm.as_str();
        match self {
            Step::LockExclusive => Ok(Self::locks(ctx)?.apply(LockOp::Release).await?),
            Step::VirshStart => {
                let virsh = e.virsh();
                if virsh.state(vm).await?.active() {
                    virsh.run(&["destroy", vm], virsh.timeout).await?;
                }
                Ok(())
            }
            Step::SourceToShared => Ok(Self::locks(ctx)?.apply(LockOp::ConvertToExclusive).await?),
            Step::TargetAcquireShared => {
                e.call_peer(Self::peer(ctx)?, PeerOp::Release, vm, &ctx.disks, &ctx.id)
                    .await?;
                Ok(())
            }
            Step::Life(l) => l.undo(ctx).await,
            _ => Ok(()),
        }
    }

    /// The concrete commands (does, undo) for the plan printout.
    fn describe(self, ctx: &Ctx<'_>) -> (Vec<String>, Vec<String>) {
        let e = ctx.engine;
        let v = e.virsh();
        let vm = ctx.vm.as_str();
        let virsh = |args: &[&str]| v.cmd(args).display();
        let locks = |op| {
            ctx.locks
                .as_ref()
                .map(|l| l.describe(op))
                .unwrap_or_else(|| vec!["(no lockable disk: refused)".into()])
        };
        let peer = ctx.peer.as_ref();
        let pname = peer.map(|p| p.name.as_str()).unwrap_or("?");
        let on_peer = |what: &str| {
            vec![format!(
                "POST {}/v1/peer {what} {vm} (node {pname})",
                peer.map(|p| p.url.as_str()).unwrap_or("?")
            )]
        };
        match self {
            Step::StartPreflight => (
                vec![
                    virsh(&["domstate", "--reason", vm]),
                    "ask every peer whether it runs the VM".into(),
                ],
                vec![],
            ),
            Step::LockExclusive => (locks(LockOp::AcquireExclusive), locks(LockOp::Release)),
            Step::VirshStart => (
                vec![
                    intent_cmd(&v, vm, crate::watchdog::intent::Want::Run, false),
                    virsh(&["start", vm]),
                ],
                vec![virsh(&["destroy", vm])],
            ),
            Step::AttachLease => (
                vec![if e.cfg.lock.backend == "sanlock" {
                    format!(
                        "move the lease to a holder watching qemu ({}/{vm}.pid)",
                        e.cfg.actions.qemu_pid_dir
                    )
                } else {
                    "nothing (lvmlockd: the lock follows the LV's activation)".into()
                }],
                vec![],
            ),
            Step::AcpiShutdown => (
                vec![
                    intent_cmd(&v, vm, crate::watchdog::intent::Want::Stop, true),
                    virsh(&["shutdown", vm]),
                ],
                vec![],
            ),
            Step::WaitOrDestroy => (
                vec![
                    format!(
                        "wait up to {} s for power-off ({})",
                        e.cfg.actions.shutdown_timeout_seconds,
                        virsh(&["domstate", "--reason", vm])
                    ),
                    format!("then, if still running: {}", virsh(&["destroy", vm])),
                ],
                vec![],
            ),
            Step::ReleaseLock | Step::SourceRelease => (locks(LockOp::Release), vec![]),
            Step::MigratePreflight => (
                vec![
                    virsh(&["domstate", "--reason", vm]),
                    format!("lock held exclusive here ({})", ctx.locks.as_ref().map(|l| l.targets()).unwrap_or_default()),
                    format!("node {pname}: agent answers, VM not active there, disks {:?} visible, DRBD UpToDate", ctx.disks),
                    format!(
                        "compatibility with node {pname}: the guest's CPU (mode, model, features) and machine type from {} against `virsh domcapabilities`, `virsh capabilities` and `virsh version` here and on {pname} ({}); refused if {pname} cannot run it, a note if it cannot tell",
                        virsh(&["dumpxml", vm]),
                        on_peer("capabilities").join("")
                    ),
                ],
                vec![],
            ),
            Step::SourceToShared => (locks(LockOp::ConvertToShared), locks(LockOp::ConvertToExclusive)),
            Step::TargetAcquireShared => (on_peer("acquire_shared"), on_peer("release")),
            Step::LibvirtMigrate => (
                vec![peer
                    .map(|p| v.cmd(&migrate_args(&e.cfg, p, vm, true).iter().map(String::as_str).collect::<Vec<_>>()).display())
                    .unwrap_or_default()],
                vec!["none: libvirt rolls a failed migration back itself; after success the action only goes forward".into()],
            ),
            Step::TargetToExclusive => (on_peer("convert_to_exclusive"), vec![]),
            Step::ColdPreflight => (
                vec![
                    virsh(&["domstate", "--reason", vm]),
                    format!("node {pname}: VM not defined there, disks visible"),
                ],
                vec![],
            ),
            Step::OfflineMigrate => (
                vec![peer
                    .map(|p| v.cmd(&migrate_args(&e.cfg, p, vm, false).iter().map(String::as_str).collect::<Vec<_>>()).display())
                    .unwrap_or_default()],
                vec![],
            ),
            Step::ResumePreflight => (
                vec![
                    virsh(&["domstate", "--reason", vm]),
                    format!(
                        "lock held exclusive here ({})",
                        ctx.locks.as_ref().map(|l| l.targets()).unwrap_or_default()
                    ),
                    "storage path healthy (a collection: DRBD under the disks UpToDate and connected, the lockspace started or live, the lock exclusive here)".into(),
                ],
                vec![],
            ),
            Step::VirshResume => (vec![virsh(&["resume", vm])], vec![]),
            Step::Life(l) => l.describe(ctx),
        }
    }
}

/// The `virsh metadata` command that records an intent (for plan printouts).
pub(crate) fn intent_cmd(
    v: &super::virsh::Virsh,
    vm: &str,
    want: crate::watchdog::intent::Want,
    live: bool,
) -> String {
    use crate::watchdog::intent::{Intent, KEY, NS};
    let xml = Intent::new(want, "ctl").to_xml();
    let mut a = vec![
        "metadata", vm, "--uri", NS, "--key", KEY, "--set", &xml, "--config",
    ];
    if live {
        a.push("--live");
    }
    v.cmd(&a).display()
}

/// `migrate --live --persistent --undefinesource [extra] VM URI [MIGRATE_URI]` (or `--offline`).
/// The definition moves with the VM, so a stale copy cannot be started on the source.
pub fn migrate_args(cfg: &Config, peer: &crate::config::Peer, vm: &str, live: bool) -> Vec<String> {
    let mut a: Vec<String> = vec!["migrate".into()];
    a.push(if live { "--live" } else { "--offline" }.into());
    a.extend(["--persistent".into(), "--undefinesource".into()]);
    a.extend(cfg.actions.migrate_extra_args.iter().cloned());
    a.push(vm.into());
    a.push(peer.libvirt_uri.clone());
    if live && !peer.migrate_uri.is_empty() {
        a.push(peer.migrate_uri.clone());
    }
    a
}

/// qemu's pid for a running domain, from libvirt's pid file.
pub fn qemu_pid(cfg: &Config, vm: &str) -> Option<u32> {
    let p = std::path::Path::new(&cfg.actions.qemu_pid_dir).join(format!("{vm}.pid"));
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlannedStep {
    pub step: String,
    pub does: Vec<String>,
    pub undo: Vec<String>,
}

pub struct Plan {
    pub steps: Vec<Step>,
    pub live: bool,
    action: ActionKind,
}

impl Plan {
    pub(crate) fn build(ctx: &Ctx<'_>, req: &ActionRequest) -> Result<Plan, ActionError> {
        use Step::*;
        let start = [StartPreflight, LockExclusive, VirshStart, AttachLease];
        let stop = [AcpiShutdown, WaitOrDestroy, ReleaseLock];
        let (steps, live) = match req.action {
            ActionKind::Start => (start.to_vec(), false),
            ActionKind::Stop => (stop.to_vec(), false),
            ActionKind::Resume => (vec![ResumePreflight, VirshResume], false),
            ActionKind::Restart => ([&stop[..], &start[..]].concat(), false),
            // Live when it runs, cold when stopped: decided now, shown by --dry-run.
            ActionKind::Migrate => {
                let live = ctx.state.active();
                (Plan::for_migration(live), live)
            }
            k => (super::lifecycle::plan(ctx, k)?, false),
        };
        Ok(Plan {
            steps,
            live,
            action: req.action,
        })
    }

    /// Migration plans depend on the VM's state: live if active, cold if not.
    pub(crate) fn for_migration(live: bool) -> Vec<Step> {
        use Step::*;
        if live {
            vec![
                MigratePreflight,
                SourceToShared,
                TargetAcquireShared,
                LibvirtMigrate,
                SourceRelease,
                TargetToExclusive,
            ]
        } else {
            vec![ColdPreflight, OfflineMigrate]
        }
    }

    pub(crate) fn describe(&self, ctx: &Ctx<'_>) -> Vec<PlannedStep> {
        self.steps
            .iter()
            .map(|s| {
                let (does, undo) = s.describe(ctx);
                PlannedStep {
                    step: s.name().into(),
                    does,
                    undo,
                }
            })
            .collect()
    }

    pub(crate) fn success_message(&self, ctx: &Ctx<'_>) -> String {
        let node = &ctx.engine.node;
        match self.action {
            ActionKind::Start => format!("{} runs on {node} with its lock exclusive", ctx.vm),
            ActionKind::Stop => format!("{} is stopped on {node} and its lock released", ctx.vm),
            ActionKind::Restart => format!("{} was stopped and started again on {node}", ctx.vm),
            ActionKind::Resume => format!("{} was resumed on {node}", ctx.vm),
            ActionKind::Migrate => {
                let to = ctx.peer.as_ref().map(|p| p.name.as_str()).unwrap_or("?");
                if self.live {
                    format!(
                        "{} runs on {to} with its lock exclusive there; nothing held on {node}",
                        ctx.vm
                    )
                } else {
                    format!("{} (stopped) is now defined on {to}", ctx.vm)
                }
            }
            k => super::lifecycle::success_message(ctx, k),
        }
    }
}
