//! The libvirt qemu hook: `vmwarden hook qemu DOMAIN OP SUBOP [EXTRA]` with the domain XML on
//! stdin, installed as /etc/libvirt/hooks/qemu (a symlink to the vmwarden binary works: called
//! as `.../hooks/qemu`, vmwarden acts as the hook). It makes plain `virsh start` and `virsh
//! migrate` as safe as `vmwarden ctl`:
//!
//! - `prepare begin` (before qemu starts): the VM's lock must be held here — exclusive (a start;
//!   taken now if needed, and a refusal aborts the start, naming the holder) or shared (the
//!   incoming end of a migration vmwarden orchestrates).
//! - `migrate begin` (incoming migration, on the target): the lock is taken shared. That only
//!   works when the source has converted its lock to shared, i.e. in a migration vmwarden runs:
//!   a plain `virsh migrate` is refused because the source holds the lock exclusively.
//! - `started begin`: the sanlock lease is tied to qemu's pid.
//! - `release end` (qemu is gone): the lock is released.
//!
//! Domains without a lockable disk (lvmlockd backend and no disk on an LV) are not vmwarden's:
//! the hook lets them pass, and says so in libvirt's log.

use crate::actions::vmlocks::VmLocks;
use crate::config::Config;
use crate::lock::{validate_name, Held, LockOp, NameKind};

/// Disk sources (device `disk` or `lun`) from the domain XML libvirt passes on stdin.
pub fn disk_sources(xml: &str) -> Vec<String> {
    crate::probe::libvirt::xml::parse_domain_xml(xml)
        .value
        .disks
        .into_iter()
        .filter(|d| d.device == "disk" || d.device == "lun")
        .filter_map(|d| d.source)
        .filter(|s| s.starts_with('/'))
        .collect()
}

/// Run the hook; `Err(message)` makes libvirt abort the operation (for the ops that can be
/// aborted) and shows the message to whoever ran it.
pub async fn qemu(
    cfg: &Config,
    domain: &str,
    op: &str,
    subop: &str,
    xml: &str,
) -> Result<(), String> {
    let acts = matches!(
        (op, subop),
        ("prepare", "begin") | ("migrate", "begin") | ("started", "begin") | ("release", "end")
    );
    if !acts {
        return Ok(());
    }
    validate_name(NameKind::Vm, domain).map_err(|e| e.to_string())?;
    let disks = disk_sources(xml);
    let locks = match VmLocks::for_vm(cfg, domain, &disks) {
        Ok(Some(l)) => l,
        Ok(None) => {
            eprintln!("vmwarden hook: {domain} has no disk vmwarden locks ({disks:?}): not managed, allowed");
            return Ok(());
        }
        Err(e) => return Err(format!("vmwarden: {domain}: {e}")),
    };
    match (op, subop) {
        ("prepare", "begin") => match locks.mode().await.map_err(|e| e.to_string())? {
            Held::Exclusive | Held::Shared => Ok(()),
            Held::None => locks
                .apply(LockOp::AcquireExclusive)
                .await
                .map_err(|e| {
                    let why = crate::actions::name_holder(cfg, &e).unwrap_or_else(|| e.to_string());
                    format!("vmwarden refuses to start {domain} here: {why}")
                }),
        },
        ("migrate", "begin") => match locks.mode().await.map_err(|e| e.to_string())? {
            Held::Shared => Ok(()),
            Held::Exclusive => Err(format!(
                "vmwarden: {domain}'s lock is held exclusively on this node: it cannot be migrated in"
            )),
            Held::None => locks.apply(LockOp::AcquireShared).await.map_err(|e| {
                format!(
                    "vmwarden refuses this incoming migration of {domain}: {e} — live migrations must go through `vmwarden ctl migrate {domain} --to NODE`, which hands the lock over"
                )
            }),
        },
        ("started", "begin") => {
            if let Some(pid) = crate::actions::plan_qemu_pid(cfg, domain) {
                if let Err(e) = locks.attach_vm(pid).await {
                    eprintln!("vmwarden hook: could not tie {domain}'s lease to qemu {pid}: {e}");
                }
            }
            Ok(())
        }
        ("release", "end") => {
            if let Err(e) = locks.apply(LockOp::Release).await {
                // Nothing to abort any more: say it loudly; `vmwarden check` shows the leak.
                eprintln!("vmwarden hook: {domain} stopped but its lock could not be released: {e}");
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_of_disks_only() {
        let xml = "<domain><name>a</name><devices>
          <disk type='block' device='disk'><source dev='/dev/vg1/a'/><target dev='vda'/></disk>
          <disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='sda'/></disk>
          <disk type='file' device='disk'><source file='/srv/b.raw'/><target dev='vdb'/></disk>
        </devices></domain>";
        assert_eq!(disk_sources(xml), vec!["/dev/vg1/a", "/srv/b.raw"]);
        assert!(disk_sources("not xml").is_empty());
    }
}
