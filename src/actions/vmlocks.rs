//! All the locks of one VM: one per LV its disks are on (lvmlockd), or its one lease (sanlock).
//! Operations apply to each in order (release in reverse); a multi-LV acquire that fails half way
//! gives back what it took.

use crate::config::Config;
use crate::lock::{Held, LockError, LockOp, VolumeLock};
use crate::node::split_dm_name;

#[derive(Debug, Clone)]
pub struct VmLocks {
    pub vm: String,
    pub locks: Vec<VolumeLock>,
}

/// `/dev/VG/LV` or `/dev/mapper/VG-LV` → (VG, LV).
pub fn lv_of_path(path: &str) -> Option<(String, String)> {
    if let Some(dm) = path.strip_prefix("/dev/mapper/") {
        return split_dm_name(dm);
    }
    let rest = path.strip_prefix("/dev/")?;
    let (vg, lv) = rest.split_once('/')?;
    if lv.contains('/') || vg.starts_with("drbd") || vg == "disk" {
        return None;
    }
    Some((vg.to_string(), lv.to_string()))
}

impl VmLocks {
    /// The locks guarding `vm`, whose disks are `disks` (source paths). `Ok(None)`: nothing to
    /// lock (lvmlockd backend and no disk on an LV) — the caller decides whether that is allowed.
    pub fn for_vm(cfg: &Config, vm: &str, disks: &[String]) -> Result<Option<VmLocks>, LockError> {
        let mut locks = Vec::new();
        match cfg.lock.backend.as_str() {
            "sanlock" => locks.push(VolumeLock::for_vm(cfg, vm, "", "")?),
            _ => {
                for d in disks {
                    if let Some((vg, lv)) = lv_of_path(d) {
                        let l = VolumeLock::for_vm(cfg, vm, &vg, &lv)?;
                        if !locks.iter().any(|x: &VolumeLock| x.target() == l.target()) {
                            locks.push(l);
                        }
                    }
                }
            }
        }
        Ok((!locks.is_empty()).then(|| VmLocks {
            vm: vm.to_string(),
            locks,
        }))
    }

    pub fn describe(&self, op: LockOp) -> Vec<String> {
        self.locks.iter().map(|l| l.describe(op)).collect()
    }

    pub fn targets(&self) -> String {
        self.locks
            .iter()
            .map(|l| l.target())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Apply `op` to every lock. Acquires that fail give back the locks this call took;
    /// releases go in reverse order and try every lock, returning the first error.
    pub async fn apply(&self, op: LockOp) -> Result<(), LockError> {
        if op == LockOp::Release {
            let mut first = None;
            for l in self.locks.iter().rev() {
                if let Err(e) = l.release().await {
                    first.get_or_insert(e);
                }
            }
            return first.map_or(Ok(()), Err);
        }
        let fresh = matches!(op, LockOp::AcquireExclusive | LockOp::AcquireShared);
        let mut taken: Vec<&VolumeLock> = Vec::new();
        for l in &self.locks {
            let was_free = fresh && l.mode().await? == Held::None;
            if let Err(e) = l.apply(op).await {
                for t in taken.iter().rev() {
                    if let Err(e2) = t.release().await {
                        tracing::warn!(error = %e2, "could not give back {} after a failed acquire", t.target());
                    }
                }
                return Err(e);
            }
            if was_free {
                taken.push(l);
            }
        }
        Ok(())
    }

    /// The mode held here: the common mode of all locks, or the weakest when they differ
    /// (a half-done operation): None < Shared < Exclusive.
    pub async fn mode(&self) -> Result<Held, LockError> {
        let mut weakest = Held::Exclusive;
        for l in &self.locks {
            let m = l.mode().await?;
            weakest = match (weakest, m) {
                (_, Held::None) | (Held::None, _) => Held::None,
                (_, Held::Shared) | (Held::Shared, _) => Held::Shared,
                _ => Held::Exclusive,
            };
        }
        Ok(weakest)
    }

    /// Modes of each lock, for status output: `vm1's LV vg/lv: exclusive`.
    pub async fn modes(&self) -> Vec<(String, Result<Held, LockError>)> {
        let mut out = Vec::new();
        for l in &self.locks {
            out.push((l.target(), l.mode().await));
        }
        out
    }

    /// Another host holding one of the locks (its sanlock host id), if sanlock can tell.
    pub async fn other_holder(&self) -> Option<u64> {
        for l in &self.locks {
            if let Some(h) = l.other_holder().await {
                return Some(h);
            }
        }
        None
    }

    /// Tie sanlock leases to the VM's qemu (no-op for lvmlockd).
    pub async fn attach_vm(&self, pid: u32) -> Result<(), LockError> {
        for l in &self.locks {
            l.attach_vm(pid).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lv_paths() {
        assert_eq!(
            lv_of_path("/dev/vg1/vm1"),
            Some(("vg1".into(), "vm1".into()))
        );
        assert_eq!(
            lv_of_path("/dev/mapper/my--vg-vm--1"),
            Some(("my-vg".into(), "vm-1".into()))
        );
        assert_eq!(lv_of_path("/dev/drbd/by-res/r0/0"), None);
        assert_eq!(lv_of_path("/dev/disk/by-id/x"), None);
        assert_eq!(lv_of_path("/var/lib/libvirt/images/a.qcow2"), None);
        assert_eq!(lv_of_path("/dev/sda"), None);
    }

    #[test]
    fn backends_pick_their_locks() {
        let cfg = Config::from_toml_str("", "t").unwrap();
        let disks = vec![
            "/dev/vg1/vm1".to_string(),
            "/tmp/x.raw".to_string(),
            "/dev/vg1/vm1".to_string(),
        ];
        let l = VmLocks::for_vm(&cfg, "vm1", &disks).unwrap().unwrap();
        assert_eq!(l.locks.len(), 1);
        assert!(l.describe(LockOp::AcquireExclusive)[0].contains("lvchange -aey vg1/vm1"));
        assert!(VmLocks::for_vm(&cfg, "vm1", &["/tmp/x.raw".into()])
            .unwrap()
            .is_none());
        let e = VmLocks::for_vm(&cfg, "vm1", &["/dev/vg1/-x".into()]).unwrap_err();
        assert!(e.to_string().contains("'-'"), "{e}");
        let cfg = Config::from_toml_str(
            "[lock]\nbackend = \"sanlock\"\n[lock.sanlock]\nleases = [{ vm = \"vm1\", offset = 1048576 }]\n",
            "t",
        )
        .unwrap();
        let l = VmLocks::for_vm(&cfg, "vm1", &[]).unwrap().unwrap();
        assert!(l.describe(LockOp::ConvertToShared)[0].contains("convert -r vmwarden:vm1:"));
        assert!(VmLocks::for_vm(&cfg, "vm2", &[]).is_err());
    }
}
