//! Recovery of unfinished journals (an agent that crashed or was killed mid-action, or an action
//! its agent left incomplete). Nothing is re-run from the journal: the journal says *what* was
//! being done; libvirt and the locks say *where it got*, and only that decides whether to finish
//! or roll back.
//!
//! - start / stop / restart: the VM runs here → its lock must be exclusive here (taken again if
//!   needed, lease tied to qemu); it does not → release the lock here. Never starts or stops it.
//! - live migration (the source's journal): the VM is gone from the source → forward: the source
//!   releases at once (no peer needed), then the target takes its lock exclusively (or, if it
//!   runs nowhere, releases); it runs on the source only → roll back (target releases, source
//!   back to ex); active on both (a libvirt migration still running) or the target
//!   unreachable when it is needed → wait and try again.
//! - resume: what libvirt shows decides, nothing is replayed and no lock is touched (a resume
//!   changes none): running → it was resumed (completed); still paused or gone → failed, left
//!   as it is (the watchdog judges it again, from its storage and lock).
//! - the target's side (an incoming marker, no journal here): the VM runs here and its lock is
//!   shared → convert it to exclusive. The lock manager allows that only once the source holds
//!   nothing, so this finishes a migration whose source already let go even when the source's
//!   agent cannot reach this one.
//!
//! Cadence ([`run_loop`]): a pass at start-up, at once when an action ends incomplete, every
//! [`RETRY`] while anything is left, else every [`IDLE`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::journal::{self, Journal, Record};
use super::{ActionError, Engine};
use crate::api::peer::PeerOp;
use crate::lock::{Held, LockOp};

/// Between passes while a journal or an incoming migration is left.
pub const RETRY: Duration = Duration::from_secs(3);
/// Between passes when nothing was left (a new unfinished journal wakes the loop itself).
pub const IDLE: Duration = Duration::from_secs(30);

/// The agent's recovery loop.
pub async fn run_loop(engine: Arc<Engine>) {
    loop {
        let left = recover_all(&engine).await;
        let pause = if left > 0 { RETRY } else { IDLE };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = engine.recovery_wake.notified() => {}
        }
    }
}

pub(super) async fn recover_all(engine: &Engine) -> usize {
    let mut left = settle_incoming_all(engine).await;
    for path in journal::unfinished(&engine.cfg.cluster.state_dir) {
        match recover_one(engine, &path).await {
            Ok(true) => {}
            Ok(false) => left += 1,
            Err(e) => {
                left += 1;
                tracing::warn!(
                    journal = %path.display(),
                    "cannot recover yet (retrying): {e}"
                );
            }
        }
    }
    left
}

/// A journal without a header: when no record was ever completely written (the state directory
/// was full or read-only when the action began, or the agent died creating it) and it is old
/// enough that no one is still writing it, nothing ran under it: close it. Anything else is
/// for a human.
fn abandoned(
    engine: &Engine,
    path: &Path,
    read: &journal::ReadJournal,
) -> Result<bool, ActionError> {
    let for_a_human = || {
        ActionError::Refused(format!(
            "{}: no header line; move it away after checking the VM by hand",
            path.display()
        ))
    };
    if !read.never_began() {
        return Err(for_a_human());
    }
    let vm = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let age = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    // A creator writes the header right after creating the file; ten seconds is far past that.
    if !age.is_some_and(|a| a >= std::time::Duration::from_secs(10)) {
        return Ok(false);
    }
    let Some(_g) = engine.try_busy(&vm) else {
        return Ok(false);
    };
    tracing::warn!(vm, journal = %path.display(), "closing a journal whose header was never written (no step ran under it; was the state directory full or read-only?)");
    Journal::reopen(path)?.finish(
        "abandoned",
        "no step ran: the journal's header was never written",
    )?;
    Ok(true)
}

/// Ok(true): finished; Ok(false): busy in this process (an action is running), leave it.
async fn recover_one(engine: &Engine, path: &Path) -> Result<bool, ActionError> {
    let read = journal::read(path)?;
    let Some(Record::Header {
        id,
        action,
        vm,
        to,
        live,
        disks,
        started_unix,
        ..
    }) = read.header().cloned()
    else {
        return abandoned(engine, path, &read);
    };
    let Some(_g) = engine.try_busy(&vm) else {
        return Ok(false);
    };
    // Held now: no action of this process can finish it meanwhile. Gone since it was listed:
    // an action finished it before letting go of the VM.
    if !path.exists() {
        engine.stats.unfinished_end(&vm);
        return Ok(true);
    }
    engine.stats.unfinished_begin(&vm, &action, started_unix);
    if read.ended() {
        // Crashed between End and the move to done/: only the move is left.
        Journal::reopen(path)?.finish("completed", "closed by recovery")?;
        engine.stats.unfinished_end(&vm);
        return Ok(true);
    }
    let locks = super::VmLocks::for_vm(&engine.cfg, &vm, &disks)?;
    let progress = read.progress();
    let left_incomplete = read.left_incomplete();
    let mut j = Journal::reopen(path)?;
    let (observed, decision, result);
    let (here, here_active) = engine.active_here(&vm).await?;
    // Without libvirt here nothing is decided: a missing pid file is not proof enough that no
    // qemu of the VM runs, and the locks are only ever changed on what libvirt shows.
    if here.state == "unknown" {
        return Err(ActionError::Refused(format!(
            "{vm} is {here} on {}: waiting until libvirt answers",
            engine.node
        )));
    }
    let life = super::lifecycle::recover(
        engine,
        &action,
        &vm,
        &disks,
        &read,
        &here,
        here_active,
        locks.as_ref(),
        &mut j,
    )
    .await;
    match (action.as_str(), live) {
        _ if life.is_some() => {
            let Some(r) = life else {
                return Ok(false);
            };
            (observed, decision, result) = r?;
        }
        ("migrate", true) => {
            let peer = to
                .as_deref()
                .and_then(|t| engine.cfg.peer(t))
                .cloned()
                .ok_or_else(|| {
                    ActionError::Refused(format!(
                        "{}: migration target {to:?} is not a configured peer",
                        path.display()
                    ))
                })?;
            if !here_active {
                // Gone from the source: whatever else is true, nothing here needs the lock.
                // Released first, without the peer, so the target can take it exclusively
                // (its own recovery does when this node cannot reach it).
                if let Some(l) = &locks {
                    l.apply(LockOp::Release).await?;
                }
            }
            let there = engine
                .call_peer(&peer, PeerOp::Status, &vm, &disks, &id)
                .await
                .map_err(|e| {
                    ActionError::Refused(format!(
                        "{vm} is {here} on {}; {progress}; the target is needed now and cannot be asked: {e}",
                        engine.node
                    ))
                })?;
            observed = format!(
                "{vm} {here} on {}, {} on {}; {progress}",
                engine.node, there.state, peer.name
            );
            match (here_active, there.active) {
                (true, false) => {
                    decision = "roll back: the VM runs on the source".to_string();
                    j.write(&Record::Recovery {
                        observed: observed.clone(),
                        decision: decision.clone(),
                    })?;
                    engine
                        .call_peer(&peer, PeerOp::Release, &vm, &disks, &id)
                        .await?;
                    keep_exclusive(engine, locks.as_ref(), &vm).await?;
                    result = "rolled_back";
                }
                (false, true) => {
                    decision = "finish: the VM runs on the target".to_string();
                    j.write(&Record::Recovery {
                        observed: observed.clone(),
                        decision: decision.clone(),
                    })?;
                    engine
                        .call_peer(&peer, PeerOp::ConvertToExclusive, &vm, &disks, &id)
                        .await?;
                    result = "completed";
                }
                (true, true) => {
                    return Err(ActionError::Refused(format!(
                        "{observed}: a libvirt migration is still in progress or was left half-done; waiting for libvirt to settle (check `virsh domjobinfo {vm}` on both nodes)"
                    )));
                }
                (false, false) => {
                    decision = "the VM runs nowhere: release the locks on both nodes".to_string();
                    j.write(&Record::Recovery {
                        observed: observed.clone(),
                        decision: decision.clone(),
                    })?;
                    engine
                        .call_peer(&peer, PeerOp::Release, &vm, &disks, &id)
                        .await?;
                    result = "failed";
                }
            }
        }
        ("resume", _) => {
            observed = format!("{vm} {here} on {}; {progress}", engine.node);
            (decision, result) = if here.state == "running" {
                ("the VM runs: it was resumed".to_string(), "completed")
            } else {
                (
                    "the VM does not run: left as it is (never resumed from the journal)"
                        .to_string(),
                    "failed",
                )
            };
            j.write(&Record::Recovery {
                observed: observed.clone(),
                decision: decision.clone(),
            })?;
        }
        _ => {
            observed = format!("{vm} {here} on {}; {progress}", engine.node);
            if here_active {
                decision = "the VM runs here: keep its lock exclusive".to_string();
                j.write(&Record::Recovery {
                    observed: observed.clone(),
                    decision: decision.clone(),
                })?;
                keep_exclusive(engine, locks.as_ref(), &vm).await?;
                result = if action == "start" {
                    "completed"
                } else {
                    "failed"
                };
            } else {
                decision = "the VM does not run here: release its lock".to_string();
                j.write(&Record::Recovery {
                    observed: observed.clone(),
                    decision: decision.clone(),
                })?;
                if let Some(l) = &locks {
                    l.apply(LockOp::Release).await?;
                }
                result = if action == "stop" {
                    "completed"
                } else {
                    "failed"
                };
            }
        }
    }
    let why = match &left_incomplete {
        Some(_) => "finished by recovery (the action was left incomplete)",
        None => "recovered after an agent crash (it stopped mid-action)",
    };
    let message = format!("{why}: {observed} → {decision}");
    tracing::warn!(id = %id, "{message}");
    engine.stats.observe(&action, result, 0.0);
    j.finish(result, &message)?;
    engine.stats.unfinished_end(&vm);
    Ok(true)
}

/// The target's side of every incoming migration declared here. Returns how many are left to
/// retry soon (the VM runs here on a shared lock the source has not let go of yet).
async fn settle_incoming_all(engine: &Engine) -> usize {
    let mut left = 0;
    for vm in journal::incoming_vms(&engine.cfg.cluster.state_dir) {
        match settle_incoming(engine, &vm).await {
            Ok(true) => {}
            Ok(false) => left += 1,
            Err(e) => {
                left += 1;
                tracing::warn!(
                    vm,
                    "incoming migration: cannot settle it yet (retrying): {e}"
                );
            }
        }
    }
    left
}

/// Ok(true): nothing (more) to do here; Ok(false): retry soon.
async fn settle_incoming(engine: &Engine, vm: &str) -> Result<bool, ActionError> {
    let sd = &engine.cfg.cluster.state_dir;
    if journal::incoming(sd, vm).is_none()
        || crate::lock::validate_name(crate::lock::NameKind::Vm, vm).is_err()
    {
        return Ok(true);
    }
    let Some(_g) = engine.try_busy(vm) else {
        return Ok(false);
    };
    let virsh = engine.virsh();
    let st = virsh.state(vm).await?;
    // Only a VM libvirt shows running here is ours to finish; anything else (the migration not
    // there yet, rolled back, never started) is the source's journal to settle.
    if !st.active() || st.incoming_migration() || st.state == "paused" {
        return Ok(true);
    }
    // One attempt per pass, no retry budget: while the source still holds its share this is
    // refused at once, and the pass must not hold the VM busy against the source's own call.
    let mut cfg = engine.cfg.clone();
    cfg.lock.convert_retry_attempts = 1;
    let disks = virsh.disks(vm).await?;
    let Some(locks) = super::VmLocks::for_vm(&cfg, vm, &disks)? else {
        journal::set_incoming(sd, vm, None)?;
        return Ok(true);
    };
    match locks.mode().await? {
        Held::Exclusive => {
            journal::set_incoming(sd, vm, None)?;
            Ok(true)
        }
        // Runs here with no lock at all: not a migration's to fix; `vmwarden check` says so.
        Held::None => Ok(true),
        Held::Shared => match locks.apply(LockOp::ConvertToExclusive).await {
            Ok(()) => {
                if let Some(pid) = super::plan::qemu_pid(&engine.cfg, vm) {
                    if let Err(e) = locks.attach_vm(pid).await {
                        tracing::warn!(vm, "could not tie the lease to qemu {pid}: {e}");
                    }
                }
                journal::set_incoming(sd, vm, None)?;
                tracing::warn!(
                    vm,
                    "incoming migration finished here: the VM runs on this node and the source let go of its lock, so it is exclusive here now"
                );
                Ok(true)
            }
            Err(e) => {
                tracing::debug!(
                    vm,
                    "incoming migration: the source still holds the lock: {e}"
                );
                Ok(false)
            }
        },
    }
}

/// The VM runs here: make its lock exclusive here (whatever was left of it) and tie the lease to
/// its qemu.
pub(super) async fn keep_exclusive(
    engine: &Engine,
    locks: Option<&super::VmLocks>,
    vm: &str,
) -> Result<(), ActionError> {
    let Some(l) = locks else {
        return Ok(());
    };
    match l.mode().await? {
        Held::Exclusive => {}
        Held::Shared => l.apply(LockOp::ConvertToExclusive).await?,
        Held::None => l.apply(LockOp::AcquireExclusive).await?,
    }
    if let Some(pid) = super::plan::qemu_pid(&engine.cfg, vm) {
        l.attach_vm(pid).await?;
    }
    Ok(())
}
