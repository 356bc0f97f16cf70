//! Recovery of unfinished journals (an agent that crashed or was killed mid-action). Nothing is
//! re-run from the journal: the journal says *what* was being done; libvirt and the locks say
//! *where it got*, and only that decides whether to finish or roll back.
//!
//! - start / stop / restart: the VM runs here → its lock must be exclusive here (taken again if
//!   needed, lease tied to qemu); it does not → release the lock here. Never starts or stops it.
//! - live migration: runs on the source only → roll back (target releases, source back to ex);
//!   on the target only → finish (source releases, target sh→ex); on both (a libvirt migration
//!   still running) or the target unreachable → wait and try again later; on neither → release
//!   both sides.

use std::path::Path;

use super::journal::{self, Journal, Record};
use super::{ActionError, Engine};
use crate::lock::{Held, LockOp};
use crate::peer::PeerOp;

pub(super) async fn recover_all(engine: &Engine) -> usize {
    let mut left = 0;
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
        ..
    }) = read.header().cloned()
    else {
        return Err(ActionError::Refused(format!(
            "{}: no header line; move it away after checking the VM by hand",
            path.display()
        )));
    };
    let Some(_g) = engine.try_busy(&vm) else {
        return Ok(false);
    };
    if read.ended() {
        // Crashed between End and the move to done/: only the move is left.
        Journal::reopen(path)?.finish("completed", "closed by recovery")?;
        return Ok(true);
    }
    let virsh = engine.virsh();
    let here = virsh.state(&vm).await?;
    let locks = super::VmLocks::for_vm(&engine.cfg, &vm, &disks)?;
    let interrupted = read.interrupted_step().unwrap_or_default();
    let done = read.done_steps().join(",");
    let mut j = Journal::reopen(path)?;
    let (observed, decision, result);
    match (action.as_str(), live) {
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
            let there = engine
                .call_peer(&peer, PeerOp::Status, &vm, &disks, &id)
                .await?;
            observed = format!(
                "{vm} {here} on {}, {} on {}; done: [{done}]; interrupted in: {interrupted:?}",
                engine.node, there.state, peer.name
            );
            match (here.active(), there.active) {
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
                    if let Some(l) = &locks {
                        l.apply(LockOp::Release).await?;
                    }
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
                    if let Some(l) = &locks {
                        l.apply(LockOp::Release).await?;
                    }
                    result = "failed";
                }
            }
        }
        _ => {
            observed = format!(
                "{vm} {here} on {}; done: [{done}]; interrupted in: {interrupted:?}",
                engine.node
            );
            if here.active() {
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
    let message = format!("recovered after an agent crash: {observed} → {decision}");
    tracing::warn!(id = %id, "{message}");
    engine.stats.observe(&action, result, 0.0);
    j.finish(result, &message)?;
    Ok(true)
}

/// The VM runs here: make its lock exclusive here (whatever was left of it) and tie the lease to
/// its qemu.
async fn keep_exclusive(
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
