//! `vmwarden lock`: one lock operation by hand, through the same backend code the actions use —
//! for maintenance (activate an LV to repair it), for proving a backend on a real cluster, and
//! for the storage lab. It refuses what would break the one-instance rule: giving up or sharing
//! the lock of a VM that runs here, or touching a VM an unfinished action owns.

use crate::config::Config;
use crate::lock::{validate_name, LockError, LockOp, NameKind, VolumeLock};

use super::virsh::Virsh;

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

/// `VG/LV` (lvmlockd backend; the VM name defaults to the LV's) or `VM` (sanlock backend).
pub fn lock_for_target(
    cfg: &Config,
    target: &str,
    vm: Option<&str>,
) -> Result<VolumeLock, ManualError> {
    match (cfg.lock.backend.as_str(), target.split_once('/')) {
        ("sanlock", None) => Ok(VolumeLock::for_vm(cfg, target, "", "")?),
        ("sanlock", Some(_)) => Err(ManualError::Refused(format!(
            "lock.backend is \"sanlock\": name the VM whose lease to lock, not {target:?}"
        ))),
        (_, Some((vg, lv))) => {
            let vm = vm.unwrap_or(lv);
            Ok(VolumeLock::for_vm(cfg, vm, vg, lv)?)
        }
        (_, None) => Err(ManualError::Refused(format!(
            "lock.backend is {:?}: name the LV as VG/LV, not {target:?}",
            cfg.lock.backend
        ))),
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
    let lock = lock_for_target(cfg, target, vm)?;
    let op = match op {
        ManualOp::Status => return Ok(lock.mode().await?.as_str().to_string()),
        ManualOp::Op(op) => op,
    };
    if dry_run {
        return Ok(format!("would run: {}", lock.describe(op)));
    }
    let vm_name = match &lock {
        VolumeLock::Lvmlockd(_) => {
            vm.unwrap_or_else(|| target.rsplit('/').next().unwrap_or(target))
        }
        VolumeLock::Sanlock(_) => target,
    };
    if super::journal::in_migration(&cfg.cluster.state_dir).contains(vm_name)
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
    match lock.apply(op).await {
        Ok(()) => Ok(format!(
            "{}: {}",
            lock.target(),
            lock.mode().await?.as_str()
        )),
        Err(e) => Err(match super::name_holder(cfg, &e) {
            Some(text) => ManualError::Refused(text),
            None => ManualError::Lock(e),
        }),
    }
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
        let l = lock_for_target(&cfg("lvmlockd"), "vg1/lv1", None).unwrap();
        assert_eq!(l.target(), "lv1's LV vg1/lv1");
        let l = lock_for_target(&cfg("lvmlockd"), "vg1/lv1", Some("web")).unwrap();
        assert_eq!(l.target(), "web's LV vg1/lv1");
        let e = lock_for_target(&cfg("lvmlockd"), "lv1", None).unwrap_err();
        assert!(e.to_string().contains("VG/LV"), "{e}");
        let e = lock_for_target(&cfg("sanlock"), "vg1/lv1", None).unwrap_err();
        assert!(e.to_string().contains("name the VM"), "{e}");
        let e = lock_for_target(&cfg("lvmlockd"), "vg1/-aey", None).unwrap_err();
        assert!(e.to_string().contains("invalid"), "{e}");
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
