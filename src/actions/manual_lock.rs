//! `vmwarden lock`: one lock operation by hand, through the same backend code the actions use —
//! for maintenance (activate an LV to repair it), for proving a backend on a real cluster, and
//! for the storage lab. It refuses what would break the one-instance rule: giving up or sharing
//! the lock of a VM that runs here, or touching a VM an unfinished action owns.

use crate::config::Config;
use crate::lock::{validate_name, LockError, LockOp, NameKind, VolumeLock};

use super::virsh::Virsh;
use super::vmlocks::VmLocks;

/// What `vmwarden lock` was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManualOp {
    Op(LockOp),
    Status,
}

/// The refusal or failure of a manual lock operation, as the operator should read it.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    #[error("{0}")]
    Lock(#[from] LockError),
    #[error("{0}")]
    Refused(String),
}

/// What the operator named: one lock, or (lvmlockd backend) a VM whose LVs libvirt knows.
#[derive(Debug)]
pub enum Named {
    Lock(VolumeLock),
    VmOnLvs(String),
}

/// `VG/LV` (lvmlockd; the VM name defaults to the LV's), `VM` (sanlock: its lease; lvmlockd: the
/// LVs its disks are on).
pub fn parse_target(cfg: &Config, target: &str, vm: Option<&str>) -> Result<Named, ManualError> {
    match (cfg.lock.backend.as_str(), target.split_once('/')) {
        ("sanlock", None) => Ok(Named::Lock(VolumeLock::for_vm(cfg, target, "", "")?)),
        ("sanlock", Some(_)) => Err(ManualError::Refused(format!(
            "lock.backend is \"sanlock\": name the VM whose lease to lock, not {target:?}"
        ))),
        (_, Some((vg, lv))) => {
            let vm = vm.unwrap_or(lv);
            Ok(Named::Lock(VolumeLock::for_vm(cfg, vm, vg, lv)?))
        }
        (_, None) => {
            validate_name(NameKind::Vm, target)?;
            Ok(Named::VmOnLvs(target.to_string()))
        }
    }
}

/// The locks `target` names (`.vm`: the VM they belong to).
async fn resolve(cfg: &Config, target: &str, vm: Option<&str>) -> Result<VmLocks, ManualError> {
    match parse_target(cfg, target, vm)? {
        Named::Lock(l) => {
            let vm_name = match &l {
                VolumeLock::Lvmlockd(_) => {
                    vm.unwrap_or_else(|| target.rsplit('/').next().unwrap_or(target))
                }
                VolumeLock::Sanlock(_) => target,
            };
            Ok(VmLocks {
                vm: vm_name.to_string(),
                locks: vec![l],
            })
        }
        Named::VmOnLvs(name) => {
            let disks = Virsh::from_config(cfg).disks(&name).await.map_err(|e| {
                ManualError::Refused(format!(
                    "cannot read VM {name}'s disks from libvirt ({e}): name the LV as VG/LV instead"
                ))
            })?;
            match VmLocks::for_vm(cfg, &name, &disks)? {
                Some(l) => Ok(l),
                None => Err(ManualError::Refused(format!(
                    "VM {name} has no disk on an LV ({disks:?}): nothing for lvmlockd to lock"
                ))),
            }
        }
    }
}

/// Why giving up or sharing `vm`'s lock here is unsafe right now, if it is.
async fn unsafe_to_weaken(cfg: &Config, vm: &str) -> Option<String> {
    match Virsh::from_config(cfg).state(vm).await {
        Ok(s) if s.active() => Some(format!(
            "VM {vm} is {s} here: its lock must stay exclusive while it runs — stop or migrate it \
             (`vmwarden ctl stop {vm}`, `vmwarden ctl migrate {vm} --to NODE`)"
        )),
        Ok(_) => None,
        // Without libvirt, lvmlockd still refuses to deactivate an LV qemu holds open; a sanlock
        // lease has no such guard, so its state must be known.
        Err(e) if cfg.lock.backend == "sanlock" => Some(format!(
            "cannot tell whether VM {vm} runs here ({e}); its lease is left alone — fix libvirt access or \
             pass --force if you are sure it does not run"
        )),
        Err(e) => {
            tracing::warn!(vm, "cannot ask libvirt whether the VM runs here ({e}); lvm guards open LVs");
            None
        }
    }
}

/// Run (or with `dry_run`, describe) one manual lock operation; returns what to print.
pub async fn run(
    cfg: &Config,
    op: ManualOp,
    target: &str,
    vm: Option<&str>,
    dry_run: bool,
    force: bool,
) -> Result<String, ManualError> {
    if let Some(v) = vm {
        validate_name(NameKind::Vm, v)?;
    }
    let locks = resolve(cfg, target, vm).await?;
    let op = match op {
        ManualOp::Status => return status_text(&locks).await,
        ManualOp::Op(op) => op,
    };
    if dry_run {
        return Ok(format!("would run: {}", locks.describe(op).join("; ")));
    }
    let vm_name = locks.vm.as_str();
    if super::journal::in_migration(cfg).contains(vm_name)
        || super::journal::unfinished(&cfg.cluster.state_dir)
            .iter()
            .any(|p| p.file_stem().is_some_and(|s| s == vm_name))
    {
        return Err(ManualError::Refused(format!(
            "an unfinished vmwarden action owns VM {vm_name} (journal in {}/journal): let the agent recover it \
             (`vmwarden ctl status {vm_name}`) before touching its lock",
            cfg.cluster.state_dir
        )));
    }
    if matches!(op, LockOp::Release | LockOp::ConvertToShared) && !force {
        if let Some(why) = unsafe_to_weaken(cfg, vm_name).await {
            return Err(ManualError::Refused(why));
        }
    }
    match locks.apply(op).await {
        Ok(()) => modes_text(&locks).await,
        Err(e) => Err(match super::name_holder(cfg, &e) {
            Some(text) => ManualError::Refused(text),
            None => ManualError::Lock(e),
        }),
    }
}

/// One lock: its mode alone (`exclusive`), as scripts read it; several: `TARGET: mode` lines.
async fn status_text(locks: &VmLocks) -> Result<String, ManualError> {
    match locks.locks.as_slice() {
        [one] => Ok(one.mode().await?.as_str().to_string()),
        _ => modes_text(locks).await,
    }
}

/// `TARGET: mode`, a line per lock.
async fn modes_text(locks: &VmLocks) -> Result<String, ManualError> {
    let mut out = Vec::new();
    for (target, mode) in locks.modes().await {
        out.push(format!("{target}: {}", mode?.as_str()));
    }
    Ok(out.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(backend: &str) -> Config {
        let mut c = Config::load(None).unwrap();
        c.lock.backend = backend.into();
        c
    }

    #[test]
    fn target_must_match_backend() {
        let target =
            |backend: &str, t: &str, vm: Option<&str>| match parse_target(&cfg(backend), t, vm) {
                Ok(Named::Lock(l)) => Ok(l.target()),
                Ok(Named::VmOnLvs(vm)) => Ok(format!("the LVs of {vm}")),
                Err(e) => Err(e.to_string()),
            };
        assert_eq!(
            target("lvmlockd", "vg1/lv1", None).unwrap(),
            "lv1's LV vg1/lv1"
        );
        assert_eq!(
            target("lvmlockd", "vg1/lv1", Some("web")).unwrap(),
            "web's LV vg1/lv1"
        );
        // A VM name under lvmlockd: its LVs, looked up in libvirt when it runs.
        assert_eq!(target("lvmlockd", "web", None).unwrap(), "the LVs of web");
        let e = target("lvmlockd", "-web", None).unwrap_err();
        assert!(e.contains("invalid"), "{e}");
        let e = target("sanlock", "vg1/lv1", None).unwrap_err();
        assert!(e.contains("name the VM"), "{e}");
        let e = target("lvmlockd", "vg1/-aey", None).unwrap_err();
        assert!(e.contains("invalid"), "{e}");
    }

    #[tokio::test]
    async fn dry_run_prints_the_command() {
        let out = run(
            &cfg("lvmlockd"),
            ManualOp::Op(LockOp::ConvertToShared),
            "vg1/lv1",
            None,
            true,
            false,
        )
        .await
        .unwrap();
        assert!(out.contains("lvchange -asy vg1/lv1"), "{out}");
    }
}
